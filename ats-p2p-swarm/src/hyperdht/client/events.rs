//! What crosses between [`ClientConnect`] and its shell: what starting a connect needs, the
//! actions the machine asks for, and the finished connect.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};

#[cfg(doc)]
use super::{ClientConnect, handshake_relays};
use crate::dht::UserRequest;
use crate::hyperdht::holepunch::RandomPunchGate;
use crate::hyperdht::messages::NoisePayload;
use crate::hyperdht::schedule::ProbeOp;
use crate::hyperdht::terms::{RelayChoice, RelayMode};
use crate::keys::{KeyPair, PublicKey};
use crate::noise;

/// Identifies one request the machine asked for; the shell passes it back with the answer.
pub(crate) type RequestId = u64;

/// Something [`ClientConnect`] asks its shell to do.
#[derive(Debug, Clone)]
pub(crate) enum ClientAction {
    /// Send this DHT request; answer with [`ClientConnect::handle_response`].
    Request {
        /// Passed back with the answer.
        id: RequestId,
        /// The request.
        req: UserRequest,
    },
    /// Classify our main socket's NAT, asking these nodes first; answer with
    /// [`ClientConnect::handle_nat`].
    SampleNat {
        /// DHT nodes near the server.
        nodes: Vec<SocketAddrV4>,
    },
    /// Open the punch sockets (only probes from `hosts` count); report what they see with
    /// [`ClientConnect::handle_hit`].
    OpenPunch {
        /// The peer's hosts.
        hosts: Vec<Ipv4Addr>,
    },
    /// Send a probe (or open a birthday socket and probe from it).
    Probe(ProbeOp),
    /// Close the punch sockets (the punch failed).
    ClosePunch,
    /// Pair our stream through this relay; answer with [`ClientConnect::handle_relay`].
    PairRelay(RelayChoice),
}

/// How the client reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientPath {
    /// A PING to this address answered (the server is reachable, or on our LAN / host).
    Direct(SocketAddrV4),
    /// A probe from the server arrived on punch socket `socket` from `from`.
    Holepunched {
        /// Index of the punch socket (0 = main).
        socket: usize,
        /// The server's punched address.
        from: SocketAddrV4,
    },
    /// The relay pairing succeeded.
    Relayed,
}

/// A finished connect: the Noise result, the server's stream id, and the path.
#[derive(Debug, Clone)]
pub(crate) struct ClientConnected {
    /// The Noise IK result (keys for the secret stream).
    pub(crate) handshake: noise::Handshake,
    /// The server's UDX stream id.
    pub(crate) remote_id: u32,
    /// How the server was reached.
    pub(crate) path: ClientPath,
}

/// What starting a connect needs.
#[derive(Clone)]
pub(crate) struct ClientParams {
    /// Our identity.
    pub(crate) key_pair: KeyPair,
    /// The server's key.
    pub(crate) remote: PublicKey,
    /// DHT nodes holding the server's record (from [`handshake_relays`]).
    pub(crate) relays: Vec<SocketAddrV4>,
    /// DHT nodes near the server (to sample our NAT with).
    pub(crate) nodes: Vec<SocketAddrV4>,
    /// Our Noise payload (addresses, UDX stream id, class when known).
    pub(crate) payload: NoisePayload,
    /// The relay we propose, if any.
    pub(crate) our_relay: Option<RelayChoice>,
    /// Whether we may relay.
    pub(crate) relay_mode: RelayMode,
    /// The node's random-punch limit, shared with its other punches.
    pub(crate) gate: Arc<Mutex<RandomPunchGate>>,
}
