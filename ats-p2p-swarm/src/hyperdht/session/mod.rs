//! One answered handshake on the server side until its stream connects, as a sans-io state
//! machine: [`ServerSession`] (npm `hyperdht` 6.34 `Server._onpeerholepunch` and the wait for the
//! client's first packet). The server's shell ([`super::server`]) feeds it the client's first
//! UDX packet, PEER_HOLEPUNCH rounds for its slot, the NAT sample, punch-socket hits, the relay
//! pairing and timer expiries, and executes its [`SessionAction`]s.
//!
//! - The client's first UDX packet on our main socket connects the stream (direct, LAN, or a
//!   consistent-NAT punch where the client reached our mapping).
//! - Each PEER_HOLEPUNCH round is answered: it classifies our NAT, verifies the client's address
//!   by token echo, and when the client punches, punches too by the [`Strategy`] both classes
//!   call for, echoing the client's probes; with birthday sockets the stream is created on the
//!   socket a probe reached and connects on its first packet there.
//! - When the punch fails or the client aborts, the agreed blind relay pairs the stream.
//!
//! One file per job: `events` what crosses to the shell, `first_packet` the direct path,
//! `rounds` the PEER_HOLEPUNCH answers, `probing` our punch, `relay` the fallback. This file
//! holds the machine itself: its state, its start, its timeouts and its end.

use std::collections::{HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::hyperdht::endpoint::random_bytes;
#[cfg(doc)]
use crate::hyperdht::holepunch::Strategy;
use crate::hyperdht::holepunch::{NatClass, NatSampler};
use crate::hyperdht::path::PathInfo;
use crate::hyperdht::schedule::ProbeSchedule;

mod events;
mod first_packet;
mod probing;
mod relay;
mod rounds;

pub(crate) use self::events::{RoundId, SessionAction, SessionOutcome, SessionParams, SessionPath};
pub use self::probing::PUNCH_DURATION;
use self::rounds::Queued;
pub(crate) use self::rounds::SESSION_QUEUE;

/// How long a server waits for the client's first UDX packet (JS waits 10 s).
pub const SERVER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One answered handshake, server side.
#[derive(Debug)]
pub(crate) struct ServerSession {
    params: SessionParams,
    actions: VecDeque<SessionAction>,
    outcome: Option<SessionOutcome>,
    finished: bool,
    deadline: Instant,
    token_secret: [u8; 32],
    /// Highest round seen.
    round: u64,
    remote_class: Option<NatClass>,
    remote_addresses: Vec<SocketAddrV4>,
    remote_punching: bool,
    verified_host: Option<Ipv4Addr>,
    /// A holepunch round arrived (a first packet from a public address is then punched).
    rounds_seen: bool,
    local: Option<NatSampler>,
    sampling: bool,
    queued: VecDeque<Queued>,
    schedule: Option<ProbeSchedule>,
    next_step: Option<Instant>,
    /// Punch sockets opened (main included).
    sockets: usize,
    holds_gate: bool,
    /// Birthday sockets our stream was created on.
    streams: HashSet<usize>,
    pairing: bool,
    /// A first packet that came while the relay pairing ran: the path if the pairing fails.
    first_while_pairing: Option<PathInfo>,
}

impl ServerSession {
    /// A session whose msg2 was just sent.
    pub(crate) fn new(params: SessionParams, now: Instant) -> Self {
        Self {
            params,
            actions: VecDeque::new(),
            outcome: None,
            finished: false,
            deadline: now + SERVER_CONNECT_TIMEOUT,
            token_secret: random_bytes(),
            round: 0,
            remote_class: None,
            remote_addresses: Vec::new(),
            remote_punching: false,
            verified_host: None,
            rounds_seen: false,
            local: None,
            sampling: false,
            queued: VecDeque::new(),
            schedule: None,
            next_step: None,
            sockets: 1,
            holds_gate: false,
            streams: HashSet::new(),
            pairing: false,
            first_while_pairing: None,
        }
    }

    /// The next thing to do.
    pub(crate) fn poll_action(&mut self) -> Option<SessionAction> {
        self.actions.pop_front()
    }

    /// When [`Self::handle_timeout`] wants to be called next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        Some(
            self.next_step
                .map_or(self.deadline, |s| s.min(self.deadline)),
        )
    }

    /// The end, once.
    pub(crate) fn poll_outcome(&mut self) -> Option<SessionOutcome> {
        self.outcome.take()
    }

    fn done(&self) -> bool {
        self.finished
    }

    /// Timer expiry: call at (or after) [`Self::poll_timeout`].
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.done() {
            return;
        }
        if now >= self.deadline {
            self.finish(
                SessionOutcome::Failed("the client never sent its first packet".into()),
                now,
            );
            return;
        }
        if self.next_step.is_some_and(|t| now >= t) {
            self.probe_step(now);
        }
    }

    fn finish(&mut self, outcome: SessionOutcome, now: Instant) {
        let connected = matches!(outcome, SessionOutcome::Connected(_));
        // The shell still needs the punch sockets to take the stream's: no ClosePunch here.
        self.schedule = None;
        self.next_step = None;
        if std::mem::take(&mut self.holds_gate) {
            self.params
                .gate
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .end(now, connected);
        }
        for q in std::mem::take(&mut self.queued) {
            self.actions
                .push_back(SessionAction::Drop { round: q.round });
        }
        self.finished = true;
        self.outcome = Some(outcome);
    }
}

#[cfg(test)]
mod tests;
