//! Blind relays (npm `blind-relay` 1.6.1 over `protomux` 3.x, over a HyperDHT connection):
//! two peers that cannot holepunch meet through a relay that splices their encrypted UDX
//! streams. The relay never holds a key of the peers' secret stream, so it forwards ciphertext
//! it cannot read.
//!
//! On the wire (see `docs/relay.md`): each peer connects to the relay by key, both open a
//! protomux channel `"blind-relay"` whose id is the client's public key, and each sends
//! `pair {isInitiator, token, id: its raw stream id, seq: 0}`. When a token has both sides the
//! relay makes one relay stream id per side on its DHT socket, answers each peer with
//! `pair {isInitiator, token, id: relay stream id, seq: 0}`, and from then on forwards every
//! UDX packet that arrives for one side's id to the other side's peer, with only the header's
//! stream id rewritten (libudx `udx_stream_relay_to`). Each peer connects its raw stream to
//! `(relay address, relay stream id)` and runs the secret stream with the handshake it already
//! made with the other peer. `unpair {token}` (or closing the relay connection) ends it.
//!
//! - [`protomux`]: the mux codec and the state of one channel (sans-io).
//! - [`messages`]: `pair` / `unpair`.
//! - [`pairing`]: the relay's pairing table and its limits (sans-io).
//! - [`RelayServer`]: the relay; [`pair_through`]: the client.
//! - Forwarding itself lives in the UDX endpoint ([`crate::udx::Endpoint::create_relay`]).

mod client;
pub mod messages;
pub mod pairing;
pub mod protomux;
mod server;

use std::time::Duration;

use rand::RngCore;

pub use client::{RelayedPath, pair_through};
pub use messages::Token;
pub use pairing::RelayLimits;
pub use server::{ANNOUNCE_INTERVAL, RelayServer, RelayStats};

use crate::hyperdht::{ConnectError, DhtError, HyperDht};
use crate::keys::PublicKey;
use crate::udx::{EndpointError, UdxStream};

/// Where relays announce themselves: BLAKE2b-256 of `b"ats-p2p/relay/v1"`.
pub const RELAY_TOPIC: [u8; 32] = [
    0x29, 0xf4, 0x7e, 0x57, 0x6d, 0xdd, 0x01, 0x81, 0x7b, 0x47, 0x67, 0xee, 0xe0, 0x5f, 0x9b, 0x9a,
    0x90, 0xa4, 0xa3, 0x03, 0xa6, 0x27, 0x06, 0xef, 0x74, 0xed, 0x78, 0xd4, 0x7c, 0x2c, 0x1a, 0x48,
];

/// How long pairing through a relay may take, connection included (hyperdht: 15 s).
pub const RELAY_TIMEOUT: Duration = Duration::from_secs(15);

/// Most relays [`find_relays`] returns.
pub const MAX_FOUND_RELAYS: usize = 32;

/// Errors of the relay client and server.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The relay could not be reached (not on the DHT, handshake failed, no path).
    #[error("relay unreachable: {0}")]
    RelayUnreachable(#[source] ConnectError),
    /// The relay closed or rejected the blind-relay channel before answering.
    #[error("relay closed the channel")]
    ChannelClosed,
    /// The relay did not answer in [`RELAY_TIMEOUT`].
    #[error("relay did not pair within {RELAY_TIMEOUT:?}")]
    Timeout,
    /// The relay sent something malformed.
    #[error("relay protocol error: {0}")]
    Protocol(#[from] protomux::ProtomuxError),
    /// The relay connection failed.
    #[error("relay connection: {0}")]
    Io(#[from] std::io::Error),
    /// The relay server could not listen on its key.
    #[error("relay could not listen: {0}")]
    Listen(#[source] ConnectError),
    /// The DHT failed (lookup of relays).
    #[error("dht: {0}")]
    Dht(#[from] DhtError),
    /// A UDX stream could not be created.
    #[error("udx: {0}")]
    Udx(#[from] EndpointError),
}

/// A fresh random 32-byte pairing token (the initiator makes it and sends it to the peer).
pub fn relay_token() -> Token {
    let mut t = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut t);
    t
}

/// Looks up the relays announced on [`RELAY_TOPIC`] (deduplicated, at most
/// [`MAX_FOUND_RELAYS`]).
pub async fn find_relays(dht: &HyperDht) -> Result<Vec<PublicKey>, RelayError> {
    let mut found: Vec<PublicKey> = Vec::new();
    for r in dht.dht().lookup(RELAY_TOPIC).await? {
        for p in r.peers {
            let pk = PublicKey::from_bytes(p.public_key);
            if !found.contains(&pk) && found.len() < MAX_FOUND_RELAYS {
                found.push(pk);
            }
        }
    }
    Ok(found)
}

/// A new raw UDX stream (random id) on `dht`'s server socket: the socket relay connections
/// use, so the relay accepts its packets. Pass its [`UdxStream::local_id`] to [`pair_through`].
pub fn new_stream(dht: &HyperDht) -> Result<UdxStream, RelayError> {
    let socket = dht.server_socket();
    let mut last = None;
    for _ in 0..8 {
        let id = rand::rngs::OsRng.next_u32();
        match socket.create_stream(id) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(RelayError::Udx(last.unwrap_or(EndpointError::SocketClosed)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn relay_topic_is_the_hash_of_its_name() {
        assert_eq!(super::RELAY_TOPIC, crate::dht::hash(b"ats-p2p/relay/v1"));
    }
}
