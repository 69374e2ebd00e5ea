//! Fuzz target bodies, shared by `fuzz/` and by this crate's property tests
//! (`tests/fuzz_targets.rs`), so that CI runs the same checks on the stable toolchain.
//!
//! Each function takes arbitrary bytes, drives the entry point production uses for peer bytes,
//! and panics only if an invariant is broken. Not part of the API.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::SeedableRng as _;
use rand::rngs::StdRng;

use crate::KeyPair;
use crate::dht::{Message, RpcConfig, RpcNode, SocketKind};
use crate::encoding::{Reader, Writer};
use crate::hyperdht::crypto::ns;
use crate::hyperdht::messages::{
    Announce, Handshake as HandshakeMessage, Holepunch, HolepunchPayload, LookupReply,
    NoisePayload, PeerRecord, UdxInfo,
};
use crate::hyperdht::{Firewall, error_codes, responder};
use crate::hyperdht::{HyperDhtCore, store};
use crate::keys::PublicKey;
use crate::noise::{Handshake, NoiseConfig, NoiseHandshake};
use crate::relay::messages::{Pair, Unpair};
use crate::secret_stream::{Input as StreamInput, SecretStreamCore};
use crate::udx::packet::{HEADER_SIZE, Header, Packet, SACK_BLOCK_SIZE};
use crate::udx::{DEFAULT_RWND_MAX, Endpoint, RECV_SLACK, Routed, StreamConfig};

/// Reads the fuzz input as a byte cursor; reads past the end give zeros / empty slices.
#[derive(Debug)]
struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// compact encoding

/// Runs a program of [`Reader`] calls (chosen by the input) over the rest of the input and checks
/// each result: a successful read consumed exactly the bytes its value occupies, arrays respect
/// their caps and the bytes left, and every value read re-encodes with [`Writer`] to bytes that
/// read back to the same value.
pub fn compact_encoding(data: &[u8]) {
    let mut input = Cursor { data };
    let program_len = usize::from(input.byte() % 32);
    let program = input.take(program_len * 2).to_vec();
    let bytes = input.rest();
    let mut r = Reader::new(bytes);
    for op in program.chunks(2) {
        let (code, arg) = (op[0], op.get(1).copied().unwrap_or(0));
        let before = r.remaining();
        let rest = &bytes[bytes.len() - before..];
        let mut w = Writer::new();
        let consumed = |r: &Reader<'_>| before - r.remaining();
        match code % 13 {
            0 => {
                if let Ok(v) = r.u8() {
                    assert_eq!(consumed(&r), 1);
                    assert_eq!(
                        Reader::new(
                            {
                                w.u8(v);
                                w.into_vec()
                            }
                            .as_slice()
                        )
                        .u8(),
                        Ok(v)
                    );
                }
            }
            1 => {
                if let Ok(v) = r.u16() {
                    assert_eq!(consumed(&r), 2);
                    assert_eq!(
                        Reader::new(
                            {
                                w.u16(v);
                                w.into_vec()
                            }
                            .as_slice()
                        )
                        .u16(),
                        Ok(v)
                    );
                }
            }
            2 => {
                if let Ok(v) = r.u32() {
                    assert_eq!(consumed(&r), 4);
                    assert_eq!(
                        Reader::new(
                            {
                                w.u32(v);
                                w.into_vec()
                            }
                            .as_slice()
                        )
                        .u32(),
                        Ok(v)
                    );
                }
            }
            3 => {
                if let Ok(v) = r.u64() {
                    assert_eq!(consumed(&r), 8);
                    assert_eq!(
                        u64::from_le_bytes(rest[..8].try_into().unwrap_or_default()),
                        v
                    );
                }
            }
            4 | 5 => {
                let got = if code % 13 == 4 {
                    r.uint()
                } else {
                    r.uint32().map(u64::from)
                };
                if let Ok(v) = got {
                    let want = match rest[0] {
                        0xfd => 3,
                        0xfe => 5,
                        0xff => 9,
                        _ => 1,
                    };
                    assert_eq!(consumed(&r), want, "varint length");
                    let enc = {
                        w.uint(v);
                        w.into_vec()
                    };
                    // The writer picks the shortest form; the reader accepts every form.
                    assert!(enc.len() <= want, "writer's varint is not the shortest");
                    assert_eq!(Reader::new(&enc).uint(), Ok(v));
                }
            }
            6 => {
                if let Ok(v) = r.fixed32() {
                    assert_eq!(consumed(&r), 32);
                    assert_eq!(&v[..], &rest[..32]);
                }
            }
            7 | 8 => {
                let got = if code % 13 == 7 {
                    r.buffer()
                } else {
                    r.string().map(str::as_bytes)
                };
                if let Ok(v) = got {
                    let enc = {
                        w.buffer(v);
                        w.into_vec()
                    };
                    assert!(consumed(&r) >= enc.len(), "buffer consumed too little");
                    assert_eq!(Reader::new(&enc).buffer(), Ok(v));
                }
            }
            9 => {
                let cap = usize::from(arg);
                let min = usize::from(arg % 20);
                if let Ok(n) = r.array_len(cap, min) {
                    assert!(n <= cap);
                    assert!(
                        n.saturating_mul(min) <= r.remaining(),
                        "array_len trusts the peer"
                    );
                }
            }
            10 => {
                let cap = usize::from(arg % 80);
                if let Ok(v) = r.ipv4_array(cap) {
                    assert!(v.len() <= cap);
                    let enc = {
                        w.ipv4_array(&v);
                        w.into_vec()
                    };
                    assert_eq!(Reader::new(&enc).ipv4_array(cap), Ok(v));
                }
            }
            11 => {
                let cap = usize::from(arg % 80);
                if let Ok(v) = r.ipv6_array(cap) {
                    assert!(v.len() <= cap);
                    let enc = {
                        w.ipv6_array(&v);
                        w.into_vec()
                    };
                    assert_eq!(Reader::new(&enc).ipv6_array(cap), Ok(v));
                }
            }
            _ => {
                let n = usize::from(arg);
                if let Ok(v) = r.take(n) {
                    assert_eq!(v.len(), n);
                    assert_eq!(consumed(&r), n);
                } else {
                    assert!(n > before, "take failed with enough bytes");
                }
            }
        }
        assert!(r.remaining() <= before, "a read moved backwards");
    }
}

// ---------------------------------------------------------------------------------------------
// UDX

/// The stream id the fuzzed endpoint's connected stream has.
const UDX_LOCAL_ID: u32 = 5;

fn udx_peer() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9))
}

/// Parses the datagram as a UDX packet and checks what the parse promises.
fn check_packet_parse(bytes: &[u8]) {
    if let Ok(p) = Packet::parse(bytes) {
        assert!(bytes.len() >= HEADER_SIZE);
        assert_eq!(Header::decode(bytes), Some(p.header));
        let rest = bytes.len() - HEADER_SIZE;
        assert!(p.payload.len() <= rest);
        assert_eq!(
            p.payload.len(),
            rest - usize::from(p.header.data_offset),
            "payload does not start at data_offset"
        );
        assert!(p.sack_count() * SACK_BLOCK_SIZE <= rest);
        assert_eq!(p.sacks().count(), p.sack_count());
        assert_eq!(&p.header.to_bytes()[..], &bytes[..HEADER_SIZE]);
    }
}

/// An endpoint with stream 5 connected to the peer's stream 6, some data in flight.
fn udx_endpoint(now: Instant) -> Endpoint {
    let mut ep = Endpoint::new();
    if ep
        .create_stream(UDX_LOCAL_ID, StreamConfig::default(), now)
        .is_err()
    {
        unreachable!("a fresh endpoint has no stream 5");
    }
    assert!(ep.connect(UDX_LOCAL_ID, 6, udx_peer(), now));
    if let Some(s) = ep.stream(UDX_LOCAL_ID) {
        assert!(s.write(&[7u8; 8_000]).is_ok());
        let mut buf = Vec::new();
        while s.poll_transmit(now, &mut buf).is_some() {
            buf.clear();
        }
    }
    ep
}

/// Checks that the stream's buffers are bounded, drains its output and returns it.
fn udx_drain(ep: &mut Endpoint, now: Instant) {
    let Some(s) = ep.stream(UDX_LOCAL_ID) else {
        return;
    };
    assert!(s.recv_held() <= DEFAULT_RWND_MAX as usize + RECV_SLACK);
    assert!(s.recv_out_of_order() <= 65_536);
    let mut buf = Vec::new();
    let mut n = 0;
    while s.poll_transmit(now, &mut buf).is_some() {
        buf.clear();
        n += 1;
        assert!(n < 10_000, "poll_transmit does not terminate");
    }
    while s.poll_event().is_some() {}
    let mut sink = [0u8; 4096];
    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
}

/// Feeds a connected UDX endpoint (the production datagram router, [`Endpoint::handle_datagram`])
/// a sequence of datagrams, raw or with a valid header for its stream and fuzzer-chosen fields;
/// checks the packet parser's promises and that the stream's buffers stay bounded.
pub fn udx_packets(data: &[u8]) {
    let mut input = Cursor { data };
    let mut now = Instant::now();
    let mut ep = udx_endpoint(now);
    let mut packets = 0;
    while !input.is_empty() && packets < 256 {
        packets += 1;
        let kind = input.byte();
        let datagram = if kind & 1 == 0 {
            let len = usize::from(input.u16() % 1600);
            input.take(len).to_vec()
        } else {
            let h = Header {
                flags: input.byte(),
                data_offset: input.byte(),
                stream_id: if kind & 2 == 0 {
                    UDX_LOCAL_ID
                } else {
                    input.u32()
                },
                rwnd: input.u32(),
                seq: if kind & 4 == 0 {
                    u32::from(input.u16())
                } else {
                    input.u32()
                },
                ack: if kind & 8 == 0 {
                    u32::from(input.byte())
                } else {
                    input.u32()
                },
            };
            let len = usize::from(input.u16() % 1500);
            let mut d = h.to_bytes().to_vec();
            d.extend_from_slice(input.take(len));
            d
        };
        check_packet_parse(&datagram);
        if let Routed::Stream(id) = ep.handle_datagram(now, udx_peer(), &datagram) {
            assert_eq!(id, UDX_LOCAL_ID, "routed to a stream that does not exist");
        }
        if kind & 0x10 != 0 {
            now += Duration::from_millis(u64::from(kind >> 5) * 50);
            ep.handle_timeout(now);
        }
        udx_drain(&mut ep, now);
    }
}

// ---------------------------------------------------------------------------------------------
// DHT and HyperDHT messages

fn dht_peer(i: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, i), 6000)
}

/// A non-ephemeral node (it answers every command) with a public address.
fn dht_node(now: Instant) -> HyperDhtCore {
    let mut cfg = RpcConfig::new(vec![], 5000, [1; 32]);
    cfg.ephemeral = false;
    cfg.public_addr = Some(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 5000));
    let mut n = HyperDhtCore::new(RpcNode::new(cfg));
    n.handle_timeout(now);
    dht_drain(&mut n);
    n
}

fn dht_drain(n: &mut HyperDhtCore) {
    let mut sent = 0;
    while let Some(t) = n.poll_transmit() {
        sent += 1;
        assert!(sent < 10_000, "poll_transmit does not terminate");
        // What we send must decode (a reply always names its tid and addressee).
        assert!(
            Message::decode(&t.payload).is_ok(),
            "we sent an undecodable datagram"
        );
    }
    while n.poll_event().is_some() {}
}

/// Decodes the datagram as dht-rpc does and checks the round trip `decode(encode(m)) == m`.
fn check_dht_message(bytes: &[u8]) {
    if let Ok(m) = Message::decode(bytes) {
        let enc = match &m {
            Message::Request(r) => r.encode(),
            Message::Response(r) => r.encode(),
        };
        assert_eq!(
            Message::decode(&enc),
            Ok(m),
            "dht message does not round-trip"
        );
    }
}

/// Feeds a HyperDHT node (the production entry for every DHT datagram,
/// [`HyperDhtCore::handle_datagram`]) a sequence of datagrams from a few sources, with time
/// passing; checks each datagram's decode round trip, that everything the node sends decodes,
/// and that its tables stay bounded.
pub fn dht_messages(data: &[u8]) {
    let mut input = Cursor { data };
    let start = Instant::now();
    let mut now = start;
    let mut node = dht_node(now);
    let mut datagrams = 0;
    while !input.is_empty() && datagrams < 64 {
        datagrams += 1;
        let head = input.byte();
        let len = usize::from(input.u16() % 1500);
        let bytes = input.take(len);
        check_dht_message(bytes);
        let socket = if head & 1 == 0 {
            SocketKind::Server
        } else {
            SocketKind::Client
        };
        node.handle_datagram(now, socket, dht_peer(head >> 4), bytes);
        if head & 2 != 0 {
            now += Duration::from_millis(u64::from(head >> 2) * 100);
            node.handle_timeout(now);
        }
        dht_drain(&mut node);
    }
    assert!(node.dht().inflight_len() <= 16);
    let (targets, records, forwards) = node.store().sizes();
    assert!(targets <= store::MAX_TARGETS && records <= 3000 && forwards <= 3000);
    assert!(node.dht().table().len() <= 256 * 20);
}

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

// ---------------------------------------------------------------------------------------------
// Noise IK (HyperDHT handshakes)

/// The server's (responder's) fixed identity (derived once: key derivation costs).
fn server_keys() -> KeyPair {
    static KEYS: OnceLock<KeyPair> = OnceLock::new();
    KEYS.get_or_init(|| KeyPair::from_seed([0x51; 32])).clone()
}

/// The client's (initiator's) fixed identity.
fn client_keys() -> KeyPair {
    static KEYS: OnceLock<KeyPair> = OnceLock::new();
    KEYS.get_or_init(|| KeyPair::from_seed([0xc1; 32])).clone()
}

/// The initiator as `hyperdht::connect` builds it, with a fixed ephemeral key.
fn initiator() -> NoiseHandshake {
    let mut cfg = NoiseConfig::ik_initiator(
        client_keys(),
        &ns::peer_handshake(),
        server_keys().public_key(),
    );
    cfg.ephemeral_seed = Some([0xce; 32]);
    match NoiseHandshake::new(cfg) {
        Ok(hs) => hs,
        Err(e) => panic!("initiator: {e}"),
    }
}

/// The payload our fuzzed server answers with.
fn server_payload() -> NoisePayload {
    noise_payload(true, 7)
}

/// A version-1 Noise payload, with a UDX stream id or without one.
fn noise_payload(with_udx: bool, id: u32) -> NoisePayload {
    NoisePayload {
        version: 1,
        error: 0,
        firewall: 0,
        holepunch: None,
        addresses4: Vec::new(),
        addresses6: Vec::new(),
        udx: with_udx.then_some(UdxInfo {
            version: 1,
            reusable_socket: false,
            id: u64::from(id),
            seq: 0,
        }),
        secret_stream: Some(1),
        relay_through: None,
        relay_addresses: None,
    }
}

/// What the server does with msg1: exactly production's pure half of `hyperdht::server`
/// ([`responder::read_msg1`]: read msg1, ask the firewall before anything is answered, decode
/// the client's payload; then [`responder::Accepted::finish`] writes msg2). Returns the client's
/// payload, msg2 and the server's handshake, or `None` when refused or invalid. Checks that
/// the firewall is asked only about the real client's key, that a refused key is never
/// answered, and the error code the answer must carry.
fn respond(msg1: &[u8], allow: bool) -> Option<(NoisePayload, Vec<u8>, Handshake)> {
    let firewall: Firewall = Arc::new(move |key: &PublicKey| {
        // Only the holder of the client's secret key can make msg1 carry a key.
        assert_eq!(
            *key,
            client_keys().public_key(),
            "verdict for a key nobody sent"
        );
        allow
    });
    match responder::read_msg1(&server_keys(), msg1, &firewall) {
        Err(_) => None,
        Ok(responder::Msg1::Refused(key)) => {
            assert!(!allow, "an allowed key was refused");
            assert_eq!(key, client_keys().public_key());
            None
        }
        Ok(responder::Msg1::Accepted(accepted)) => {
            assert!(allow, "a refused key was accepted");
            let payload = accepted.payload.clone();
            let expected_error = if payload.version != 1 {
                error_codes::VERSION_MISMATCH
            } else if payload.udx.is_none_or(|u| u32::try_from(u.id).is_err()) {
                error_codes::ABORTED
            } else {
                error_codes::NONE
            };
            assert_eq!(accepted.answer_error(), expected_error);
            let (msg2, hs) = match accepted.finish(&server_payload()) {
                Ok(done) => done,
                Err(e) => panic!("msg2 after an accepted msg1: {e}"),
            };
            Some((payload, msg2, hs))
        }
    }
}

/// Noise IK as HyperDHT runs it. The first input byte picks the case (`byte & 3`), whether
/// the server's firewall allows the client (bit 2 clear) and whether the client's payload is
/// a well-formed Noise payload (bit 3 set) or raw bytes:
/// 0. the server (fixed static key) reads arbitrary bytes as msg1;
/// 1. a real msg1 carrying the payload, then fuzzer-chosen byte edits, truncation or
///    extension: an unmodified message with a decodable payload must complete the handshake
///    on both sides with equal keys, and any modification must be refused;
/// 2. (and 3) the client reads arbitrary bytes as msg2 after sending a real msg1.
///
/// Returns whether a handshake completed (so a test can show an honest input reaches the
/// success path).
pub fn noise_ik(data: &[u8]) -> bool {
    let mut input = Cursor { data };
    let case = input.byte();
    let allow = case & 4 == 0;
    match case & 3 {
        0 => {
            let msg1 = input.rest();
            if let Some((payload, _, _)) = respond(msg1, allow) {
                // Forging msg1 needs the client's secret key: fuzzing never succeeds.
                panic!("arbitrary msg1 accepted (payload {payload:?})");
            }
            false
        }
        1 => {
            let payload_len = usize::from(input.byte());
            let raw = input.take(payload_len);
            let payload = if case & 8 != 0 {
                let mut fields = Cursor { data: raw };
                let flags = fields.byte();
                noise_payload(flags & 1 == 0, fields.u32()).encode()
            } else {
                raw.to_vec()
            };
            let mut client = initiator();
            let msg1 = match client.write_message(&payload) {
                Ok(m) => m,
                Err(e) => panic!("msg1: {e}"),
            };
            let mut edited = msg1.clone();
            let edits = usize::from(input.byte() % 4);
            for _ in 0..edits {
                let pos = usize::from(input.u16());
                let xor = input.byte();
                if let Some(b) = edited.get_mut(pos % msg1.len()) {
                    *b ^= xor;
                }
            }
            match input.byte() % 4 {
                0 => {
                    let cut = usize::from(input.u16()) % (edited.len() + 1);
                    edited.truncate(cut);
                }
                1 => edited.extend_from_slice(input.take(8)),
                _ => {}
            }
            let decodable = NoisePayload::decode(&payload).ok();
            match respond(&edited, allow) {
                Some((got, msg2, server_hs)) => {
                    assert_eq!(edited, msg1, "a modified msg1 was accepted");
                    assert_eq!(Some(got), decodable, "payload changed in transit");
                    let reply = client.read_message(&msg2);
                    assert_eq!(reply, Ok(server_payload().encode()));
                    let client_hs = match client.into_handshake() {
                        Ok(hs) => hs,
                        Err(e) => panic!("client handshake: {e}"),
                    };
                    assert_eq!(client_hs.tx, server_hs.rx);
                    assert_eq!(client_hs.rx, server_hs.tx);
                    assert_eq!(client_hs.hash, server_hs.hash);
                    assert_eq!(server_hs.remote_public_key, client_keys().public_key());
                    true
                }
                None => {
                    assert!(
                        !allow || edited != msg1 || decodable.is_none(),
                        "an unmodified msg1 with a valid payload was refused"
                    );
                    false
                }
            }
        }
        _ => {
            let mut client = initiator();
            if client.write_message(b"").is_err() {
                panic!("msg1");
            }
            let msg2 = input.rest();
            if client.read_message(msg2).is_ok() {
                panic!("arbitrary msg2 accepted");
            }
            assert!(client.into_handshake().is_err());
            false
        }
    }
}

// ---------------------------------------------------------------------------------------------
// secret stream

/// The two sides of one completed IK handshake (computed once: it costs several DH operations).
fn handshakes() -> &'static (Handshake, Handshake) {
    static PAIR: OnceLock<(Handshake, Handshake)> = OnceLock::new();
    PAIR.get_or_init(|| {
        let mut client = initiator();
        let msg1 = client
            .write_message(&noise_payload(true, 1).encode())
            .unwrap_or_default();
        let Some((_, msg2, server)) = respond(&msg1, true) else {
            panic!("the reference handshake failed");
        };
        assert!(client.read_message(&msg2).is_ok());
        let Ok(client) = client.into_handshake() else {
            panic!("the reference handshake did not complete");
        };
        (client, server)
    })
}

/// A secret-stream receiver in production's configuration (HyperDHT: the IK handshake is done,
/// the default frame limit, `DEFAULT_MAX_FRAME_LEN`) fed a byte stream the input builds: optionally the
/// sender's real id+header frame and real encrypted messages of fuzzer-chosen contents (up to
/// 4 KiB with flag 2, so both cipher paths run), then
/// fuzzer-chosen byte edits and junk, delivered in fuzzer-chosen chunk sizes. Checks that the
/// messages delivered are always a prefix of those really sent (nothing forged, reordered or
/// altered gets through), and all of them when nothing was tampered with.
pub fn secret_stream(data: &[u8]) {
    let mut input = Cursor { data };
    let (client_hs, server_hs) = handshakes();
    let flags = input.byte();
    let mut sender =
        SecretStreamCore::from_handshake_with_rng(client_hs.clone(), StdRng::from_seed([1; 32]));
    let mut receiver =
        SecretStreamCore::from_handshake_with_rng(server_hs.clone(), StdRng::from_seed([2; 32]));
    let now = Instant::now();

    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut wire = Vec::new();
    if flags & 1 != 0 {
        // The sender's id+header frame, then its messages.
        let n = usize::from(input.byte() % 8);
        for _ in 0..n {
            let msg = if flags & 2 != 0 {
                // Long messages reach the fast ChaCha20-Poly1305 path (from
                // `FAST_PATH_MIN_LEN` bytes, lengths ≡ 0 or 8 mod 16): the fuzzer picks the
                // length and the first bytes, a fill does the rest.
                let len = usize::from(input.u16() % 4096);
                let prefix = usize::from(input.byte() % 65);
                let mut msg = input.take(len.min(prefix)).to_vec();
                msg.resize(len, 0xa5);
                msg
            } else {
                let len = usize::from(input.byte());
                input.take(len).to_vec()
            };
            assert!(sender.send(&msg, now).is_ok());
            if !msg.is_empty() {
                sent.push(msg);
            }
        }
        wire.extend_from_slice(sender.transmit());
    }
    let pristine = wire.clone();
    let edits = usize::from(input.byte() % 4);
    for _ in 0..edits {
        let pos = usize::from(input.u16());
        let xor = input.byte();
        let len = wire.len();
        if let Some(b) = wire.get_mut(pos % len.max(1)) {
            *b ^= xor;
        }
    }
    let chunk = usize::from(input.byte()) + 1;
    wire.extend_from_slice(input.rest());
    let tampered = wire.get(..pristine.len()) != Some(&pristine[..]);

    let mut delivered: Vec<Vec<u8>> = Vec::new();
    let mut rx = BytesMut::new();
    'feed: for piece in wire.chunks(chunk) {
        rx.extend_from_slice(piece);
        loop {
            match receiver.handle_input(&mut rx) {
                Ok(StreamInput::NeedMore) => break,
                Ok(StreamInput::Open) => {}
                Ok(StreamInput::Message(m)) => {
                    assert!(!m.is_empty(), "keep-alive delivered as a message");
                    delivered.push(m.to_vec());
                }
                Ok(StreamInput::Verdict(_)) => panic!("verdict after a finished handshake"),
                // Junk after the real messages may fail the stream, but only after every real
                // message came out (checked below).
                Err(_) => break 'feed,
            }
        }
    }
    assert!(
        delivered.len() <= sent.len() && delivered[..] == sent[..delivered.len()],
        "delivered messages that were not sent"
    );
    if !tampered {
        assert_eq!(
            delivered, sent,
            "untampered messages were not all delivered"
        );
    }
}
