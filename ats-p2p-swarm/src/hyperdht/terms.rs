//! The terms both connect machines (the client's and the server's) and their drivers share: the
//! key firewall, the Noise payload version, the relay choice of one connection, and why a connect
//! failed.

use std::fmt;
use std::io;
use std::sync::Arc;

use super::driver::DhtError;
use super::holepunch::NatClass;
use crate::keys::PublicKey;
use crate::noise::NoiseError;
use crate::secret_stream::SecretStreamError;
use crate::udx::EndpointError;

/// The key firewall: returns `true` to accept a remote public key. Decided during the handshake.
pub type Firewall = Arc<dyn Fn(&PublicKey) -> bool + Send + Sync>;

/// Noise payload version.
pub(crate) const PAYLOAD_VERSION: u64 = 1;

/// Whether and through which blind relay this node may connect when no direct path exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RelayMode {
    /// Find relays announced on the DHT ([`crate::relay::RELAY_TOPIC`]).
    #[default]
    Auto,
    /// Always this relay.
    Pinned(PublicKey),
    /// Never relay (and refuse a relay the peer proposes).
    Disabled,
}

/// The relay of one connection attempt: which, the pairing token, and whether we are the
/// pairing initiator (the side that proposed it, hyperdht's rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RelayChoice {
    pub(crate) key: PublicKey,
    pub(crate) token: [u8; 32],
    pub(crate) initiator: bool,
}

impl RelayChoice {
    /// The relay both sides use: the peer's proposal if it made one, else ours.
    pub(crate) fn agree(
        mode: RelayMode,
        ours: Option<Self>,
        theirs: Option<&super::messages::RelayThroughInfo>,
    ) -> Option<Self> {
        if mode == RelayMode::Disabled {
            return None;
        }
        match theirs {
            Some(t) => Some(Self {
                key: PublicKey::from_bytes(t.public_key),
                token: t.token,
                initiator: false,
            }),
            None => ours,
        }
    }

    pub(crate) fn to_payload(self) -> super::messages::RelayThroughInfo {
        super::messages::RelayThroughInfo {
            version: 1,
            public_key: *self.key.as_bytes(),
            token: self.token,
        }
    }
}

/// What was found out about a peer that could not be reached (for the error message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoPathReason {
    /// Our NAT class, as sampled.
    pub local: NatClass,
    /// The peer's NAT class, as it said.
    pub remote: NatClass,
    /// Why the holepunch did not connect.
    pub punch: String,
    /// Why no relay carried the connection (`None`: a relay was not tried).
    pub relay: Option<String>,
}

impl fmt::Display for NoPathReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let both_random = self.local == NatClass::Random && self.remote == NatClass::Random;
        if both_random {
            write!(f, "both peers behind randomizing NATs")?;
        } else {
            write!(
                f,
                "holepunch failed ({}; our NAT {}, the peer's {})",
                self.punch, self.local, self.remote
            )?;
        }
        match &self.relay {
            Some(r) => write!(f, "; relay: {r}"),
            None => write!(f, "; no relay reachable: run a hub or pass --relay"),
        }
    }
}

/// Errors of connect / listen.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The DHT failed.
    #[error(transparent)]
    Dht(#[from] DhtError),
    /// UDX socket or stream error.
    #[error("udx: {0}")]
    Udx(#[from] EndpointError),
    /// Noise failed.
    #[error("noise: {0}")]
    Noise(#[from] NoiseError),
    /// Secret stream setup failed.
    #[error("secret stream: {0}")]
    SecretStream(#[from] SecretStreamError),
    /// I/O.
    #[error("io: {0}")]
    Io(#[from] io::Error),
    /// No DHT node answered the bootstrap: nothing can be found or announced.
    #[error("no DHT bootstrap node answered (check --bootstrap and the network)")]
    NoBootstrap,
    /// No node holds an announcement of this key.
    #[error("peer not found on the dht")]
    PeerNotFound,
    /// No relay answered the handshake (refused by the firewall, or unreachable).
    #[error("peer handshake timed out or was refused")]
    HandshakeFailed,
    /// The server's Noise payload was unusable or carried an error code.
    #[error("peer payload error (code {0})")]
    Payload(u64),
    /// No direct path answered, holepunching did not connect, and no relay carried it.
    #[error("no path to the peer: {0}")]
    NoPath(NoPathReason),
    /// The connection setup timed out.
    #[error("connection timed out")]
    Timeout,
}
