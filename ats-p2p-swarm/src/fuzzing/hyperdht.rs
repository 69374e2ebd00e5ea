//! HyperDHT message values (records, announces, handshakes, holepunches, payloads, blind-relay
//! pair/unpair) decoded and round-tripped.

use super::Cursor;
use crate::hyperdht::messages::{
    Announce, Handshake as HandshakeMessage, Holepunch, HolepunchPayload, LookupReply,
    NoisePayload, PeerRecord,
};
use crate::relay::messages::{Pair, Unpair};

/// `decode(encode(decode(b))) == decode(b)` for one HyperDHT message type.
macro_rules! round_trip {
    ($ty:ty, $bytes:expr) => {
        if let Ok(m) = <$ty>::decode($bytes) {
            assert_eq!(
                <$ty>::decode(&m.encode()),
                Ok(m),
                concat!(stringify!($ty), " does not round-trip")
            );
        }
    };
}

/// Decodes the input as the HyperDHT message type its first byte selects (peer records,
/// announces, lookup replies, handshake and holepunch values, the Noise and holepunch payloads,
/// blind-relay pair/unpair) and checks the round trip `decode(encode(m)) == m`.
pub fn hyperdht_messages(data: &[u8]) {
    let mut input = Cursor { data };
    let which = input.byte();
    let bytes = input.rest();
    match which % 9 {
        0 => round_trip!(PeerRecord, bytes),
        1 => round_trip!(Announce, bytes),
        2 => {
            if let Ok(reply) = LookupReply::decode(bytes) {
                // Stored records are re-sent as they were encoded (`encode_raw`).
                let records: Vec<Vec<u8>> = reply.peers.iter().map(PeerRecord::encode).collect();
                let raw: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
                let enc = LookupReply::encode_raw(&raw, reply.bump);
                assert_eq!(LookupReply::decode(&enc), Ok(reply));
            }
        }
        3 => round_trip!(HandshakeMessage, bytes),
        4 => round_trip!(Holepunch, bytes),
        5 => {
            if let Ok(mut m) = NoisePayload::decode(bytes) {
                // Only version 1 is decoded fully (and encoded): others carry the version only.
                if m.version == 1 {
                    // As hyperdht's encoder, ours writes version 1 for the udx, secret-stream and
                    // relay-through records whatever was read (found by this target: the input
                    // `fuzz/corpus/hyperdht_messages/sub_record_versions`).
                    if let Some(u) = m.udx.as_mut() {
                        u.version = 1;
                    }
                    if let Some(v) = m.secret_stream.as_mut() {
                        *v = 1;
                    }
                    if let Some(r) = m.relay_through.as_mut() {
                        r.version = 1;
                    }
                    assert_eq!(NoisePayload::decode(&m.encode()), Ok(m));
                }
            }
        }
        6 => round_trip!(HolepunchPayload, bytes),
        7 => round_trip!(Pair, bytes),
        _ => round_trip!(Unpair, bytes),
    }
}
