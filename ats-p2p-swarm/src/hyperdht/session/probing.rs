//! Our punch, once the client punches (§3.8): the [`Strategy`] both NAT classes and the
//! client's verified address call for, the punch sockets, the probe schedule step by step (our
//! stream waiting on every birthday socket we probe from), and every probe from the client
//! echoed, until a first packet arrives on one of them or the budget is spent.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use tracing::debug;

use super::{ServerSession, SessionAction, SessionOutcome, SessionPath};
use crate::hyperdht::error_codes;
use crate::hyperdht::holepunch::{NatClass, Strategy};
use crate::hyperdht::punch::Hit;
use crate::hyperdht::schedule::{ProbeOp, ProbeSchedule};

/// How long a server keeps punching once the client asked it to (covers the longest client
/// budget: a JS client sprays random ports for ≈ 35 s).
pub const PUNCH_DURATION: Duration = Duration::from_secs(40);

impl ServerSession {
    /// Something a punch socket saw.
    pub(crate) fn handle_hit(&mut self, hit: Hit, now: Instant) {
        if self.done() || self.schedule.is_none() {
            return;
        }
        match hit {
            Hit::Probe { socket, from } => {
                // Non-initiator: answer every probe from the peer (JS echoes too).
                self.actions
                    .push_back(SessionAction::Probe(ProbeOp::Send { socket, to: from }));
                if socket != 0 && self.streams.insert(socket) {
                    self.actions
                        .push_back(SessionAction::CreateStreamOn { socket });
                }
            }
            Hit::FirstPacket {
                socket,
                local_id,
                from,
            } if local_id == self.params.local_id && self.streams.contains(&socket) => {
                self.finish(
                    SessionOutcome::Connected(SessionPath::Socket { socket, from }),
                    now,
                );
            }
            Hit::FirstPacket { .. } => {}
        }
    }

    /// Our stream could not be created on punch socket `socket`.
    pub(crate) fn handle_stream_failed(&mut self, socket: usize) {
        self.streams.remove(&socket);
    }

    /// A birthday socket could not be opened.
    pub(crate) fn handle_open_failed(&mut self) {
        self.sockets = self.sockets.saturating_sub(1).max(1);
        if let Some(s) = self.schedule.as_mut() {
            s.handle_open_failed();
        }
    }

    /// The punch sockets stopped reporting.
    pub(crate) fn handle_punch_closed(&mut self, now: Instant) {
        self.stop_punching(false, now);
    }

    /// The client punches and we do not yet: choose the strategy for both classes and the
    /// client's (verified) address, open the punch sockets and start the schedule, or fall back
    /// to the relay. `Err`: the abort code this round's answer must carry.
    pub(super) fn start_punching(
        &mut self,
        local: NatClass,
        peer: SocketAddrV4,
        now: Instant,
    ) -> Result<(), u64> {
        let mut remote_addrs = self.remote_addresses.clone();
        if !remote_addrs.contains(&peer) {
            remote_addrs.push(peer);
        }
        let verified = self.verified_host.and_then(|h| {
            remote_addrs
                .iter()
                .find(|a| *a.ip() == h && a.port() != 0)
                .or_else(|| remote_addrs.iter().find(|a| *a.ip() == h))
                .copied()
        });
        let remote_class = self.remote_class.unwrap_or(NatClass::Unknown);
        let strategy = Strategy::choose(local, remote_class, verified);
        debug!(?strategy, %peer, "server punching");
        match strategy {
            Strategy::Consistent | Strategy::RandomPorts { .. } | Strategy::Birthday { .. } => {
                if strategy.is_random() {
                    let ok = self
                        .params
                        .gate
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .try_begin(now);
                    if !ok {
                        self.start_relay("another random punch is running", now);
                        return Err(error_codes::TRY_LATER);
                    }
                    self.holds_gate = true;
                }
                let mut hosts: Vec<Ipv4Addr> = vec![*peer.ip()];
                for a in &remote_addrs {
                    if !hosts.contains(a.ip()) {
                        hosts.push(*a.ip());
                    }
                }
                self.actions.push_back(SessionAction::OpenPunch { hosts });
                self.schedule = Some(ProbeSchedule::new(strategy, remote_addrs));
                self.deadline = self.deadline.max(now + PUNCH_DURATION);
                self.schedule_next(now);
                Ok(())
            }
            _ => {
                self.start_relay("no punch strategy for these NATs", now);
                Err(error_codes::ABORTED)
            }
        }
    }

    /// The schedule's next step is due: its probes, then the step after it.
    pub(super) fn probe_step(&mut self, now: Instant) {
        self.next_step = None;
        if let Some(schedule) = self.schedule.as_mut() {
            for op in schedule.run_step(self.sockets, &mut rand::rngs::OsRng) {
                let opens = matches!(op, ProbeOp::OpenAndSend { .. });
                self.actions.push_back(SessionAction::Probe(op));
                if opens {
                    // Our stream waits on every socket we probe from: the client may answer
                    // a probe with its first UDX packet before any probe of its own reaches
                    // that socket, and that packet must find the stream.
                    let socket = self.sockets;
                    self.sockets += 1;
                    if self.streams.insert(socket) {
                        self.actions
                            .push_back(SessionAction::CreateStreamOn { socket });
                    }
                }
            }
        }
        self.schedule_next(now);
    }

    /// Plans the next probe step, or ends the punch when the budget is spent.
    fn schedule_next(&mut self, now: Instant) {
        let Some(schedule) = self.schedule.as_mut() else {
            return;
        };
        match schedule.next_wait() {
            Some(wait) => self.next_step = Some(now + wait),
            None => {
                let why = schedule.exhausted_reason();
                self.stop_punching(false, now);
                self.start_relay(&why, now);
            }
        }
    }

    pub(super) fn stop_punching(&mut self, connected: bool, now: Instant) {
        if self.schedule.take().is_some() {
            self.actions.push_back(SessionAction::ClosePunch);
        }
        self.next_step = None;
        self.streams.clear();
        if std::mem::take(&mut self.holds_gate) {
            self.params
                .gate
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .end(now, connected);
        }
    }
}
