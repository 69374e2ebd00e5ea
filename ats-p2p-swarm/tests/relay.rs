//! Blind relays (npm `blind-relay` 1.6.1 over protomux): the codecs against the npm packages'
//! own bytes, our relay between two Rust peers (4 MiB each way through it, SHA-256 checked),
//! the npm relay between two Rust peers, our relay between two JS peers that use hyperdht's
//! `relayThrough`, and hostile input against our relay. Loopback only; every test bounds its
//! own time.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use ats_p2p_swarm::hyperdht::{Bootstrap, Connection, DhtConfig, DhtNode, HyperDht};
use ats_p2p_swarm::relay::messages::{PAIR, PROTOCOL, Pair, UNPAIR, Unpair};
use ats_p2p_swarm::relay::protomux::{Channel, Frame, decode_frame, encode_batch};
use ats_p2p_swarm::relay::{
    self, RelayLimits, RelayServer, RelayStats, RelayedPath, find_relays, pair_through, relay_token,
};
use ats_p2p_swarm::secret_stream::SecretStream;
use ats_p2p_swarm::udx::UdxStream;
use ats_p2p_swarm::{KeyPair, PublicKey};
use rand::RngCore;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::io::{BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Whole-test bound.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound for one line of JS output or one awaited condition.
const STEP: Duration = Duration::from_secs(60);
/// Bytes moved each way through a relay.
const PAYLOAD: usize = 4 << 20;

/// A bootstrap and three persistent Rust DHT nodes on 127.0.0.1.
struct Net {
    boot: Bootstrap,
    _nodes: Vec<DhtNode>,
}

impl Net {
    async fn start() -> Self {
        let boot = Bootstrap::spawn(SocketAddrV4::new(LOCAL, 0)).await.unwrap();
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let mut cfg = DhtConfig::new(LOCAL, vec![boot.addr()]);
            cfg.ephemeral = false;
            let n = DhtNode::bind(cfg).await.unwrap();
            n.bootstrapped().await.unwrap();
            nodes.push(n);
        }
        Self {
            boot,
            _nodes: nodes,
        }
    }

    fn bootstrap(&self) -> SocketAddrV4 {
        self.boot.addr()
    }

    async fn peer(&self) -> Arc<HyperDht> {
        let dht = HyperDht::bind(DhtConfig::new(LOCAL, vec![self.bootstrap()]))
            .await
            .unwrap();
        dht.dht().bootstrapped().await.unwrap();
        Arc::new(dht)
    }

    fn js(&self, role: &str, seed: [u8; 32], rest: &[String]) -> JsProc {
        let mut args = vec![
            role.to_owned(),
            self.bootstrap().to_string(),
            hex::encode(seed),
        ];
        args.extend_from_slice(rest);
        JsProc::spawn("relay-peer.js", &args)
    }
}

/// A node process printing one JSON line per event.
struct JsProc {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl JsProc {
    fn spawn(script: &str, args: &[String]) -> Self {
        let mut child = Command::new("node")
            .arg(script)
            .args(args)
            .current_dir(support::js_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            _child: child,
            stdin,
            lines,
        }
    }

    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(STEP, self.lines.next_line())
            .await
            .expect("js process silent")
            .unwrap()
            .expect("js process exited");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert!(v.get("error").is_none(), "js error: {v}");
        v
    }

    /// The npm relay's `stats` object.
    async fn relay_stats(&mut self) -> Value {
        self.stdin.write_all(b"stats\n").await.unwrap();
        self.next().await["stats"].clone()
    }
}

fn str_of(v: &Value) -> String {
    v.as_str().expect("string").to_owned()
}

/// Sends `len` random bytes and reads `len`; returns (sha sent, sha received) and the stream.
async fn exchange<S>(s: S, len: usize) -> (String, String, S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut data = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut data);
    let sent = hex::encode(Sha256::digest(&data));
    let (mut r, mut w) = tokio::io::split(s);
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.flush().await.unwrap();
        w
    });
    let mut got = vec![0u8; len];
    r.read_exact(&mut got).await.unwrap();
    let w = writer.await.unwrap();
    (sent, hex::encode(Sha256::digest(&got)), r.unsplit(w))
}

/// One peer's side of a relayed path: its key, its raw stream and the path.
struct Side {
    key_pair: KeyPair,
    raw: UdxStream,
    path: RelayedPath,
}

/// Pairs `a` (initiator) and `b` through `relay` with one fresh token and connects both raw
/// streams to the relay.
async fn pair_both(
    a: &Arc<HyperDht>,
    b: &Arc<HyperDht>,
    relay: PublicKey,
    seeds: (u8, u8),
) -> (Side, Side) {
    let (ka, kb) = (
        KeyPair::from_seed([seeds.0; 32]),
        KeyPair::from_seed([seeds.1; 32]),
    );
    let token = relay_token();
    let (ra, rb) = (relay::new_stream(a).unwrap(), relay::new_stream(b).unwrap());
    let (pa, pb) = tokio::join!(
        pair_through(a, &ka, &relay, true, token, ra.local_id()),
        pair_through(b, &kb, &relay, false, token, rb.local_id())
    );
    let (pa, pb) = (pa.unwrap(), pb.unwrap());
    assert_eq!(pa.relay_key(), relay);
    assert_ne!(pa.remote_stream_id(), pb.remote_stream_id());
    ra.connect(pa.remote_stream_id(), pa.relay_addr()).unwrap();
    rb.connect(pb.remote_stream_id(), pb.relay_addr()).unwrap();
    // A libudx relay connects each side on that side's first packet and drops what arrives
    // for a side not connected yet. A stand-alone XX responder would wait for message 1
    // forever, so both sides announce themselves with an empty UDX message (hyperdht's
    // peers need none: both write their secret-stream header at once).
    ra.send_message(&[]).unwrap();
    rb.send_message(&[]).unwrap();
    (
        Side {
            key_pair: ka,
            raw: ra,
            path: pa,
        },
        Side {
            key_pair: kb,
            raw: rb,
            path: pb,
        },
    )
}

/// Runs a stand-alone (XX) secret stream between the two relayed raw streams and moves `len`
/// bytes each way; asserts both directions' SHA-256. Returns the paths (still open).
async fn secret_exchange(a: Side, b: Side, len: usize) -> (RelayedPath, RelayedPath) {
    let (pka, pkb) = (a.key_pair.public_key(), b.key_pair.public_key());
    let (sa, sb) = tokio::join!(
        SecretStream::connect(a.raw, a.key_pair.clone(), Some(pkb)),
        SecretStream::accept(b.raw, b.key_pair.clone(), move |k: &PublicKey| *k == pka)
    );
    let (sa, sb) = (sa.unwrap(), sb.unwrap());
    assert_eq!(sa.remote_public_key(), pkb);
    let started = std::time::Instant::now();
    let ((s1, r1, _sa), (s2, r2, _sb)) = tokio::join!(exchange(sa, len), exchange(sb, len));
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "relayed {len} bytes each way in {secs:.3} s ({:.1} MB/s each way)",
        len as f64 / secs / 1e6
    );
    assert_eq!(s1, r2, "a -> b bytes differ");
    assert_eq!(s2, r1, "b -> a bytes differ");
    (a.path, b.path)
}

/// Waits (bounded) until `cond` holds for the relay's stats.
async fn until_stats(relay: &RelayServer, what: &str, cond: impl Fn(&RelayStats) -> bool) {
    let ok = tokio::time::timeout(STEP, async {
        loop {
            if cond(&relay.stats()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "{what}: {:?}", relay.stats());
}

fn js_hex(v: &Value, key: &str) -> Vec<u8> {
    hex::decode(str_of(&v[key])).unwrap()
}

/// The pair/unpair messages and the protomux frames, byte for byte as npm `blind-relay` 1.6.1,
/// `protomux` 3.12.1 and `compact-encoding` 3.5.2 write them; and our decoder reads theirs.
#[tokio::test]
async fn codecs_match_the_npm_packages() {
    let v = support::run_js_json("relay-vectors.js").await;
    let (t1, t2, chan) = ([1u8; 32], [2u8; 32], [7u8; 32]);
    let p1 = Pair {
        is_initiator: true,
        token: t1,
        id: 70_000,
        seq: 0,
    };
    let p2 = Pair {
        is_initiator: false,
        token: t2,
        id: 5,
        seq: 300,
    };
    assert_eq!(p1.encode(), js_hex(&v, "pairInitiator"));
    assert_eq!(p2.encode(), js_hex(&v, "pairResponder"));
    assert_eq!(Pair::decode(&js_hex(&v, "pairResponder")).unwrap(), p2);
    assert_eq!(Unpair { token: t2 }.encode(), js_hex(&v, "unpair"));

    let ch = Channel::new(PROTOCOL, &chan);
    assert_eq!(ch.open_frame(), js_hex(&v, "muxOpen"));
    assert_eq!(ch.message_frame(PAIR, &p1.encode()), js_hex(&v, "muxPair"));
    let unpair = Unpair { token: t2 }.encode();
    assert_eq!(ch.message_frame(UNPAIR, &unpair), js_hex(&v, "muxUnpair"));
    assert_eq!(ch.clone().close().unwrap(), js_hex(&v, "muxClose"));
    let open = ch.open_frame();
    let mut msg = vec![0u8]; // uint type 0 (pair)
    msg.extend_from_slice(&p2.encode());
    let batch = encode_batch(&[(0, &open[1..]), (1, &msg)]);
    assert_eq!(batch, js_hex(&v, "muxBatch"));
    let frames = decode_frame(&batch).unwrap();
    assert_eq!(
        frames[0],
        Frame::Open {
            local_id: 1,
            protocol: PROTOCOL,
            id: &chan,
            handshake: &[]
        }
    );
    let Frame::Message {
        remote_id: 1,
        kind: PAIR,
        body,
    } = frames[1]
    else {
        panic!("{frames:?}")
    };
    assert_eq!(Pair::decode(body).unwrap(), p2);

    // What blind-relay's own Client writes for `pair(true, token, {id: 1234})`, then `unpair`.
    let writes = v["clientWrites"].as_array().unwrap();
    assert_eq!(writes.len(), 2, "{v}");
    assert_eq!(hex::decode(str_of(&writes[0])).unwrap(), ch.open_frame());
    let req = Pair {
        is_initiator: true,
        token: t1,
        id: 1234,
        seq: 0,
    };
    assert_eq!(
        hex::decode(str_of(&writes[1])).unwrap(),
        ch.message_frame(PAIR, &req.encode())
    );
    assert_eq!(
        js_hex(&v, "clientUnpair"),
        ch.message_frame(UNPAIR, &Unpair { token: t1 }.encode())
    );
}

/// Our relay between two Rust peers: found on the DHT, pairs them, carries a secret stream
/// (4 MiB each way, SHA-256 checked) it has no key for, and forgets the link on unpair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_relay_carries_two_rust_peers() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let net = Net::start().await;
        let rdht = net.peer().await;
        let relay = RelayServer::spawn(rdht.clone(), KeyPair::from_seed([90; 32]))
            .await
            .unwrap();
        let (a, b) = (net.peer().await, net.peer().await);
        let found = find_relays(&a).await.unwrap();
        assert!(
            found.contains(&relay.public_key()),
            "relay not found on its topic: {found:?}"
        );
        let (sa, sb) = pair_both(&a, &b, relay.public_key(), (91, 92)).await;
        let (pa, pb) = secret_exchange(sa, sb, PAYLOAD).await;
        let s = relay.stats();
        eprintln!("relay stats after 2 x {PAYLOAD} bytes: {s:?}");
        assert_eq!(s.pairings_matched, 1);
        assert_eq!(s.links_active, 1);
        assert!(
            s.bytes_forwarded > 2 * PAYLOAD as u64,
            "forwarded only {} bytes",
            s.bytes_forwarded
        );
        // The relay is blind by construction: the secret stream's keys come from an XX
        // handshake between the two peers; the relay only ever had its own session keys.
        assert!(!pa.is_closed() && !pb.is_closed());
        drop(pa);
        until_stats(&relay, "link removed after unpair", |s| s.links_active == 0).await;
        drop(pb);
        until_stats(&relay, "sessions closed", |s| s.sessions_active == 0).await;
        relay.close().await;
    })
    .await
    .expect("timed out");
}

/// The npm `blind-relay` Server (on hyperdht, as its example) relays two Rust peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_relay_carries_two_rust_peers() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let net = Net::start().await;
        let seed = [100u8; 32];
        let mut js = net.js("relay", seed, &[]);
        let listening = js.next().await;
        let rpk = KeyPair::from_seed(seed).public_key();
        assert_eq!(str_of(&listening["listening"]), rpk.to_hex());
        let (a, b) = (net.peer().await, net.peer().await);
        let (sa, sb) = pair_both(&a, &b, rpk, (101, 102)).await;
        let (_pa, _pb) = secret_exchange(sa, sb, PAYLOAD).await;
        let stats = js.relay_stats().await;
        assert_eq!(stats["pairings"]["matched"], 1, "{stats}");
        assert_eq!(stats["streams"]["opened"], 2, "{stats}");
    })
    .await
    .expect("timed out");
}

/// Our relay carries two JS peers that use hyperdht's `relayThrough`, on the server's side
/// (the server is the pairing's initiator) or on the client's. The JS server's holepunching and
/// LAN shortcut are off, so the relay is the only path.
async fn relay_for_js_peers(relay_on_client: bool, seed: u8) {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let net = Net::start().await;
        let rdht = net.peer().await;
        let relay = RelayServer::spawn(rdht.clone(), KeyPair::from_seed([seed; 32]))
            .await
            .unwrap();
        let size = PAYLOAD.to_string();
        let sseed = [seed + 1; 32];
        let spk = KeyPair::from_seed(sseed).public_key();
        let rpk = relay.public_key().to_hex();
        let server_relay = if relay_on_client {
            "-".into()
        } else {
            rpk.clone()
        };
        let mut server = net.js("server", sseed, &[size.clone(), server_relay]);
        assert_eq!(str_of(&server.next().await["listening"]), spk.to_hex());
        let mut client_args = vec![size, spk.to_hex()];
        if relay_on_client {
            client_args.push(rpk);
        }
        let mut client = net.js("client", [seed + 2; 32], &client_args);
        assert_eq!(str_of(&client.next().await["connected"]), spk.to_hex());
        server.next().await; // connected
        let (c, s) = (client.next().await, server.next().await);
        assert_eq!(str_of(&c["sentSha"]), str_of(&s["recvSha"]));
        assert_eq!(str_of(&s["sentSha"]), str_of(&c["recvSha"]));
        let st = relay.stats();
        eprintln!("relay stats after JS peers (relay on client: {relay_on_client}): {st:?}");
        assert_eq!(st.pairings_matched, 1);
        assert!(
            st.bytes_forwarded > 2 * PAYLOAD as u64,
            "the JS peers did not use the relay: {st:?}"
        );
        relay.close().await;
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_relay_carries_two_js_peers() {
    relay_for_js_peers(false, 110).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_relay_carries_two_js_peers_client_side_relay() {
    relay_for_js_peers(true, 150).await;
}

/// Sends one protomux frame on a raw relay session.
async fn send(conn: &mut Connection, frame: &[u8]) {
    conn.send_message(frame).await.unwrap();
}

/// Hostile input: a flood of unmatched pair requests, a duplicate, an unknown unpair, a
/// malformed frame, garbage UDX packets to relay ids. Nothing panics, state stays within the
/// limits, and the relay still pairs a good couple afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_bounded() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let net = Net::start().await;
        let rdht = net.peer().await;
        let limits = RelayLimits::default();
        let relay = RelayServer::spawn(rdht.clone(), KeyPair::from_seed([120; 32]))
            .await
            .unwrap();
        let rpk = relay.public_key();
        let evil = net.peer().await;
        let ek = KeyPair::from_seed([121; 32]);

        // 1000 pending pair requests from one session: only the per-session limit is kept.
        let mut conn = evil.connect(&ek, &rpk).await.unwrap();
        let ch = Channel::new(PROTOCOL, ek.public_key().as_bytes());
        send(&mut conn, &ch.open_frame()).await;
        for i in 0..1000u32 {
            let p = Pair {
                is_initiator: true,
                token: relay_token(),
                id: i + 1,
                seq: 0,
            };
            send(&mut conn, &ch.message_frame(PAIR, &p.encode())).await;
        }
        let kept = limits.max_pending_per_session as u64;
        until_stats(&relay, "1000 pair requests handled", |s| {
            s.pairings_requested + s.pairings_refused == 1000
        })
        .await;
        let s = relay.stats();
        assert_eq!(
            (s.pending, s.pairings_refused),
            (kept, 1000 - kept),
            "{s:?}"
        );

        // A duplicate (same token, same side) from a second session, then an unknown unpair.
        let ek2 = KeyPair::from_seed([122; 32]);
        let mut conn2 = evil.connect(&ek2, &rpk).await.unwrap();
        let ch2 = Channel::new(PROTOCOL, ek2.public_key().as_bytes());
        send(&mut conn2, &ch2.open_frame()).await;
        let token = relay_token();
        let dup = Pair {
            is_initiator: false,
            token,
            id: 7,
            seq: 0,
        };
        send(&mut conn2, &ch2.message_frame(PAIR, &dup.encode())).await;
        send(&mut conn2, &ch2.message_frame(PAIR, &dup.encode())).await;
        let unknown = Unpair {
            token: relay_token(),
        };
        send(&mut conn2, &ch2.message_frame(UNPAIR, &unknown.encode())).await;
        until_stats(&relay, "duplicate seen", |s| s.pairings_duplicate == 1).await;
        assert_eq!(relay.stats().pending, kept + 1);

        // Malformed frames close the session that sent them (and only it).
        send(&mut conn2, &[1, 0, 0xff]).await; // pair with a truncated body
        until_stats(&relay, "malformed session closed", |s| s.malformed == 1).await;
        let ended = tokio::time::timeout(STEP, async {
            while let Ok(Some(_)) = conn2.recv_message().await {}
        })
        .await;
        assert!(ended.is_ok(), "the relay kept a malformed session open");
        until_stats(&relay, "malformed session's pairing dropped", |s| {
            s.pending == kept
        })
        .await;
        let ek3 = KeyPair::from_seed([123; 32]);
        let mut conn3 = evil.connect(&ek3, &rpk).await.unwrap();
        send(&mut conn3, &[0, 0, 0xff, 0xff]).await; // a batch cut short
        until_stats(&relay, "second malformed session", |s| s.malformed == 2).await;

        // A good pair works beside the flood; then garbage to its relay ids changes nothing.
        let (a, b) = (net.peer().await, net.peer().await);
        let (sa, sb) = pair_both(&a, &b, rpk, (124, 125)).await;
        let ids = [sa.path.remote_stream_id(), sb.path.remote_stream_id()];
        let relay_addr: SocketAddr = sa.path.relay_addr();
        let junk = tokio::net::UdpSocket::bind((LOCAL, 0)).await.unwrap();
        // (the two empty messages of `pair_both` are through first)
        until_stats(&relay, "probes forwarded", |s| s.packets_forwarded >= 2).await;
        let before = relay.stats();
        for i in 0..5000u32 {
            let id = ids[(i % 2) as usize];
            let mut pkt = vec![0xff, 1, 1, 0];
            pkt.extend_from_slice(&id.to_le_bytes());
            pkt.extend_from_slice(&[0xab; 100]);
            if i % 5 == 0 {
                pkt[2] = 0x10; // DESTROY from a stranger must not end the link
            }
            let _ = junk.send_to(&pkt, relay_addr).await;
            if i % 500 == 0 {
                let _ = junk.send_to(&[0xde, 0xad], relay_addr).await;
            }
        }
        until_stats(&relay, "garbage dropped", |s| {
            s.packets_dropped >= before.packets_dropped + 1000
        })
        .await;
        let after = relay.stats();
        assert_eq!(
            after.packets_forwarded, before.packets_forwarded,
            "{after:?}"
        );
        assert_eq!(after.links_active, 1);
        let (_pa, _pb) = secret_exchange(sa, sb, 256 * 1024).await;

        // Closing the flooding session frees its pending requests.
        drop(conn);
        until_stats(&relay, "flood session's requests freed", |s| s.pending == 0).await;
        // ... and a new couple still pairs and talks.
        let (sc, sd) = pair_both(&a, &b, rpk, (126, 127)).await;
        let (_pc, _pd) = secret_exchange(sc, sd, 256 * 1024).await;
        let s = relay.stats();
        eprintln!("relay stats after the hostile run: {s:?}");
        assert_eq!(s.pairings_matched, 2);
        assert_eq!(s.links_active, 2);
        relay.close().await;
    })
    .await
    .expect("timed out");
}

/// Sessions are bounded: over the limit a connection is closed at once, and sessions that hold
/// no pairing are closed when idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_bounded_and_idle_ones_closed() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let net = Net::start().await;
        let rdht = net.peer().await;
        let limits = RelayLimits {
            max_sessions: 2,
            idle_session: Duration::from_secs(1),
            ..RelayLimits::default()
        };
        let relay = RelayServer::spawn_with(rdht.clone(), KeyPair::from_seed([130; 32]), limits)
            .await
            .unwrap();
        let rpk = relay.public_key();
        let peer = net.peer().await;
        let mut conns = Vec::new();
        for i in 0..2u8 {
            let c = peer
                .connect(&KeyPair::from_seed([131 + i; 32]), &rpk)
                .await
                .unwrap();
            conns.push(c);
        }
        until_stats(&relay, "two sessions", |s| s.sessions_active == 2).await;
        let mut third = peer
            .connect(&KeyPair::from_seed([140; 32]), &rpk)
            .await
            .unwrap();
        until_stats(&relay, "third refused", |s| s.sessions_refused == 1).await;
        let ended = tokio::time::timeout(STEP, async {
            while let Ok(Some(_)) = third.recv_message().await {}
        })
        .await;
        assert!(ended.is_ok(), "refused connection stayed open");
        until_stats(&relay, "idle sessions closed", |s| s.sessions_active == 0).await;
        for mut c in conns {
            let ended = tokio::time::timeout(STEP, async {
                while let Ok(Some(_)) = c.recv_message().await {}
            })
            .await;
            assert!(ended.is_ok(), "idle session stayed open");
        }
        relay.close().await;
    })
    .await
    .expect("timed out");
}

proptest::proptest! {
    #![proptest_config(crate::common::proptest_config(256, 0x5eed_3006))]

    /// Arbitrary bytes never panic the frame decoder, the channel or the message decoders, and
    /// a batch never yields more than its limit.
    #[test]
    fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let mut ch = Channel::new(PROTOCOL, &[7; 32]);
        let _ = ch.handle_frame(&ch.clone().open_frame());
        if let Ok(frames) = decode_frame(&bytes) {
            proptest::prop_assert!(frames.len() <= relay::protomux::MAX_BATCH_MESSAGES);
        }
        let _ = ch.handle_frame(&bytes);
        let _ = Pair::decode(&bytes);
        let _ = Unpair::decode(&bytes);
    }
}
