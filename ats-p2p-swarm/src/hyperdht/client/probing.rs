//! Probing by the [`Strategy`] both NAT classes call for, after a good punch round: the probe
//! schedule step by step (birthday sockets for a random NAT, held under the node's
//! random-punch limit), until a probe from the server arrives or the schedule runs out.

use std::net::SocketAddrV4;
use std::time::Instant;

use super::{ClientAction, ClientConnect, ClientPath, Phase};
use crate::hyperdht::holepunch::{RandomPunchGate, Strategy};
use crate::hyperdht::punch::Hit;
use crate::hyperdht::schedule::{ProbeOp, ProbeSchedule};

impl ClientConnect {
    /// Something a punch socket saw.
    pub(crate) fn handle_hit(&mut self, hit: Hit, now: Instant) {
        let Hit::Probe { socket, from } = hit else {
            return;
        };
        match self.phase {
            Phase::Probing { .. } => self.punched(socket, from, now),
            Phase::Round { .. } | Phase::Pause { .. } if self.early_hit.is_none() => {
                self.early_hit = Some((socket, from));
            }
            _ => {}
        }
    }

    /// The punch sockets stopped reporting.
    pub(crate) fn handle_punch_closed(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Probing { .. }) {
            self.punch_failed("probe channel closed".into(), now);
        }
    }

    /// A birthday socket could not be opened.
    pub(crate) fn handle_open_failed(&mut self) {
        self.sockets = self.sockets.saturating_sub(1).max(1);
        if let Phase::Probing { schedule, .. } = &mut self.phase {
            schedule.handle_open_failed();
        }
    }

    /// Starts probing by `strategy` towards `remote_addrs` (the random-punch limit allowing).
    pub(super) fn start_probing(
        &mut self,
        strategy: Strategy,
        remote_addrs: Vec<SocketAddrV4>,
        now: Instant,
    ) {
        let holds_gate = strategy.is_random();
        if holds_gate && !self.lock_gate().try_begin(now) {
            let reason = self.with_punch("another random-NAT punch is running on this node".into());
            self.fallback(reason);
            return;
        }
        let mut schedule = ProbeSchedule::new(strategy, remote_addrs);
        let Some(wait) = schedule.next_wait() else {
            let why = schedule.exhausted_reason();
            self.phase = Phase::Probing {
                schedule,
                next: now,
                holds_gate,
            };
            self.punch_failed(why, now);
            return;
        };
        self.phase = Phase::Probing {
            schedule,
            next: now + wait,
            holds_gate,
        };
        if let Some((socket, from)) = self.early_hit.take() {
            self.punched(socket, from, now);
        }
    }

    /// The schedule's next step is due: its probes, or the punch failed when it ran out.
    pub(super) fn probe_step(&mut self, now: Instant) {
        let Phase::Probing { schedule, next, .. } = &mut self.phase else {
            return;
        };
        let ops = schedule.run_step(self.sockets, &mut rand::rngs::OsRng);
        match schedule.next_wait() {
            Some(wait) => *next = now + wait,
            None => {
                let why = schedule.exhausted_reason();
                self.punch_failed(why, now);
                return;
            }
        }
        for op in ops {
            if matches!(op, ProbeOp::OpenAndSend { .. }) {
                self.sockets += 1;
            }
            self.actions.push_back(ClientAction::Probe(op));
        }
    }

    fn lock_gate(&self) -> std::sync::MutexGuard<'_, RandomPunchGate> {
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release_gate(&mut self, connected: bool, now: Instant) {
        if let Phase::Probing { holds_gate, .. } = &mut self.phase
            && std::mem::take(holds_gate)
        {
            self.lock_gate().end(now, connected);
        }
    }

    fn punched(&mut self, socket: usize, from: SocketAddrV4, now: Instant) {
        self.release_gate(true, now);
        self.finish(ClientPath::Holepunched { socket, from });
    }

    fn punch_failed(&mut self, why: String, now: Instant) {
        self.release_gate(false, now);
        let reason = self.with_punch(why);
        self.fallback(reason);
    }
}
