//! The blind-relay messages (npm `blind-relay` 1.6.1), compact-encoded.
//!
//! - type 0 `pair`: `bitfield(7) flags (bit 0 isInitiator) ‖ fixed32 token ‖ uint id ‖ uint seq`
//! - type 1 `unpair`: `bitfield(7) flags (none defined) ‖ fixed32 token`
//!
//! A `bitfield(7)` is one byte on the wire; the decoder accepts the longer `fd`/`fe`/`ff`
//! forms too, as `compact-encoding-bitfield` does (they share the `uint` layout).

use crate::encoding::{DecodeError, Reader, Writer};

/// The protomux protocol name of the blind relay.
pub const PROTOCOL: &str = "blind-relay";
/// Message type of [`Pair`].
pub const PAIR: u64 = 0;
/// Message type of [`Unpair`].
pub const UNPAIR: u64 = 1;

/// A pairing token: 32 random bytes both peers know (the initiator made it).
pub type Token = [u8; 32];

/// `pair`: a request (client → relay: "my stream id is `id`") or the answer (relay → client:
/// "send to my stream `id`").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    /// Whether the sender is the pairing's initiator.
    pub is_initiator: bool,
    /// The pairing token.
    pub token: Token,
    /// A UDX stream id (the sender's).
    pub id: u32,
    /// The stream's initial sequence number (always 0 in practice).
    pub seq: u32,
}

/// `unpair`: cancel a pending pairing or tear down an active one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpair {
    /// The pairing token.
    pub token: Token,
}

impl Pair {
    /// The encoded message (without the protomux header).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(42);
        w.u8(u8::from(self.is_initiator)).raw(&self.token);
        w.uint(u64::from(self.id)).uint(u64::from(self.seq));
        w.into_vec()
    }

    /// Decodes a `pair` body. Ids and sequence numbers must fit 32 bits (UDX's).
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let flags = r.uint()?;
        Ok(Self {
            is_initiator: flags & 1 == 1,
            token: r.fixed32()?,
            id: r.uint32()?,
            seq: r.uint32()?,
        })
    }
}

impl Unpair {
    /// The encoded message (without the protomux header).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(33);
        w.u8(0).raw(&self.token);
        w.into_vec()
    }

    /// Decodes an `unpair` body.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        r.uint()?;
        Ok(Self {
            token: r.fixed32()?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pair_roundtrip_and_wide_flags() {
        let p = Pair {
            is_initiator: true,
            token: [3; 32],
            id: 70_000,
            seq: 0,
        };
        let b = p.encode();
        assert_eq!(b.len(), 1 + 32 + 5 + 1);
        assert_eq!(Pair::decode(&b).unwrap(), p);
        // a 2-byte bitfield form (0xfd + u16) decodes to the same flags
        let mut wide = vec![0xfd, 1, 0];
        wide.extend_from_slice(&b[1..]);
        assert_eq!(Pair::decode(&wide).unwrap(), p);
        assert!(Pair::decode(&b[..b.len() - 1]).is_err());
        let mut big = b[..33].to_vec();
        big.extend_from_slice(&[0xff, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(Pair::decode(&big), Err(DecodeError::OutOfRange));
    }

    #[test]
    fn unpair_roundtrip() {
        let u = Unpair { token: [9; 32] };
        assert_eq!(Unpair::decode(&u.encode()).unwrap(), u);
        assert!(Unpair::decode(&[0; 10]).is_err());
    }
}
