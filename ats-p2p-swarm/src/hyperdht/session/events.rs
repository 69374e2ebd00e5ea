//! What crosses between [`ServerSession`] and its shell: what a session needs to start, the
//! actions it asks for, and its end.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};

#[cfg(doc)]
use super::ServerSession;
use crate::dht::Id;
use crate::hyperdht::holepunch::RandomPunchGate;
#[cfg(doc)]
use crate::hyperdht::messages::HolepunchPayload;
use crate::hyperdht::messages::RelayInfo;
use crate::hyperdht::path::PathInfo;
use crate::hyperdht::schedule::ProbeOp;
use crate::hyperdht::terms::RelayChoice;

/// Identifies one PEER_HOLEPUNCH request the shell holds until the machine answers or drops it.
pub(crate) type RoundId = u64;

/// Something [`ServerSession`] asks its shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SessionAction {
    /// Answer PEER_HOLEPUNCH request `round` with this sealed payload.
    Answer {
        /// The request.
        round: RoundId,
        /// The sealed [`HolepunchPayload`].
        payload: Vec<u8>,
    },
    /// Forget request `round` without an answer (it was not for us, or was junk).
    Drop {
        /// The request.
        round: RoundId,
    },
    /// Classify our main socket's NAT with these nodes; answer with
    /// [`ServerSession::handle_nat`].
    SampleNat {
        /// The nodes we announced to.
        nodes: Vec<SocketAddrV4>,
    },
    /// Open the punch sockets (only probes from `hosts` count); report hits with
    /// [`ServerSession::handle_hit`].
    OpenPunch {
        /// The client's hosts.
        hosts: Vec<Ipv4Addr>,
    },
    /// Send a probe (socket 0, the main socket, works without punch sockets).
    Probe(ProbeOp),
    /// Create our stream on punch socket `socket` (so its first packet is reported there).
    CreateStreamOn {
        /// The punch socket.
        socket: usize,
    },
    /// Close the punch sockets (the punch stopped).
    ClosePunch,
    /// Pair our stream through this relay; answer with [`ServerSession::handle_relay`].
    PairRelay(RelayChoice),
}

/// Where the session's stream connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SessionPath {
    /// On the main socket, with this path.
    Main(PathInfo),
    /// On birthday socket `socket`, from `from` (holepunched).
    Socket {
        /// The punch socket the stream lives on.
        socket: usize,
        /// The client's punched address.
        from: SocketAddrV4,
    },
    /// Through the relay (the shell holds the pairing).
    Relayed,
}

/// The end of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SessionOutcome {
    /// The stream can connect on this path.
    Connected(SessionPath),
    /// No connection: why.
    Failed(String),
}

/// What a session needs to start.
#[derive(Debug, Clone)]
pub(crate) struct SessionParams {
    /// Keys the holepunch payloads (from the Noise handshake hash).
    pub(crate) secret: Id,
    /// Our stream's id on the main socket.
    pub(crate) local_id: u32,
    /// The nodes we announced to (holepunch relays and NAT samplers).
    pub(crate) relays: Vec<RelayInfo>,
    /// The relay both sides fall back to, if any.
    pub(crate) relay: Option<RelayChoice>,
    /// The node's random-punch limit, shared with its other punches.
    pub(crate) gate: Arc<Mutex<RandomPunchGate>>,
}
