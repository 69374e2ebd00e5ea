//! Interop with the real JavaScript `udx-native` 1.21.3 (interop/js/udx-peer.js): 64 MiB each
//! way concurrently, SHA-256 checked, with either side connecting first; raw UDX, and the
//! secret stream (Noise XX) over UDX against `@hyperswarm/secret-stream` 6.9.2 in both roles.

// Helpers outside #[test] fns: a panic there is a failed test too.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use ats_p2p_swarm::secret_stream::SecretStream;
use ats_p2p_swarm::udx::{SocketEvent, UdxSocket, UdxStream};
use ats_p2p_swarm::{KeyPair, PublicKey};
use rand::RngCore;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::timeout;

const TEST_TIMEOUT: Duration = Duration::from_secs(120);
const N: usize = 64 * 1024 * 1024;

fn js_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../interop/js"));
    assert!(
        dir.join("node_modules/udx-native").exists(),
        "interop/js/node_modules is missing: run `npm ci --prefix interop/js` first"
    );
    dir
}

struct JsPeer {
    child: Child,
    stdin: ChildStdin,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl JsPeer {
    async fn spawn() -> (Self, u32, u16) {
        let dir = js_dir();
        let mut child = Command::new("node")
            .arg(dir.join("udx-peer.js"))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node is installed");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut p = Self {
            child,
            stdin,
            lines,
        };
        let hello = p.line().await;
        let id = u32::try_from(hello["id"].as_u64().unwrap()).unwrap();
        let port = u16::try_from(hello["port"].as_u64().unwrap()).unwrap();
        (p, id, port)
    }

    async fn line(&mut self) -> Value {
        let l = self
            .lines
            .next_line()
            .await
            .unwrap()
            .expect("js peer output");
        serde_json::from_str(&l).unwrap()
    }

    async fn configure_with(&mut self, cfg: Value) {
        self.stdin
            .write_all(format!("{cfg}\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(self.line().await["ready"], true);
    }
}

async fn exchange<S: AsyncRead + AsyncWrite>(stream: S) -> ([u8; 32], usize, [u8; 32]) {
    let (mut r, mut w) = tokio::io::split(stream);
    let send = async {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = N;
        while left > 0 {
            let k = left.min(buf.len());
            rand::thread_rng().fill_bytes(&mut buf[..k]);
            h.update(&buf[..k]);
            w.write_all(&buf[..k]).await.unwrap();
            left -= k;
        }
        w.shutdown().await.unwrap();
        let out: [u8; 32] = h.finalize().into();
        out
    };
    let recv = async {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut n = 0;
        loop {
            let k = r.read(&mut buf).await.unwrap();
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k;
        }
        let out: [u8; 32] = h.finalize().into();
        (n, out)
    };
    let (sent, (n, got)) = tokio::join!(send, recv);
    (sent, n, got)
}

async fn check(js: &mut JsPeer, sent: [u8; 32], n: usize, got: [u8; 32]) -> Value {
    let report = js.line().await;
    assert_eq!(n, N, "rust received everything");
    assert_eq!(
        report["recv"].as_u64(),
        Some(N as u64),
        "js received everything"
    );
    assert_eq!(report["recvSha"].as_str(), Some(hex::encode(sent).as_str()));
    assert_eq!(report["sentSha"].as_str(), Some(hex::encode(got).as_str()));
    let _ = timeout(Duration::from_secs(5), js.child.wait()).await;
    report
}

/// Which side sends the first packet; the other connects through its firewall hook.
#[derive(Clone, Copy, PartialEq, Eq)]
enum First {
    Rust,
    Js,
}

/// Starts a JS peer configured with `cfg` (its remote id, port and mode are filled in here) and
/// returns it with our socket and a UDX stream connected to it, `first` sending first.
async fn connected_pair(first: First, mut cfg: Value) -> (JsPeer, UdxSocket, UdxStream) {
    const LOCAL_ID: u32 = 0x1234_5678;
    let (mut js, js_id, js_port) = JsPeer::spawn().await;
    let sock = UdxSocket::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut events = sock.take_events().unwrap();
    let stream = sock.create_stream(LOCAL_ID).unwrap();
    cfg["remoteId"] = LOCAL_ID.into();
    cfg["remotePort"] = sock.local_addr().port().into();
    cfg["mode"] = match first {
        First::Rust => "accept",
        First::Js => "connect",
    }
    .into();
    js.configure_with(cfg).await;
    let remote = match first {
        First::Rust => format!("127.0.0.1:{js_port}").parse().unwrap(),
        First::Js => {
            let SocketEvent::Firewall { local_id, from } = events.recv().await.unwrap() else {
                panic!("expected a firewall event");
            };
            assert_eq!(local_id, LOCAL_ID);
            assert_eq!(from.port(), js_port);
            from
        }
    };
    stream.connect(js_id, remote).unwrap();
    (js, sock, stream)
}

/// 64 MiB each way over a raw UDX stream.
async fn raw_exchange(first: First) {
    let (mut js, sock, stream) = connected_pair(first, serde_json::json!({ "send": N })).await;
    let (sent, n, got) = exchange(stream).await;
    check(&mut js, sent, n, got).await;
    sock.close().await;
}

/// The JS peer's key pair seed in the secret-stream tests (its public key is derived the same
/// way on both sides: Ed25519 from a 32-byte seed).
const JS_SEED: [u8; 32] = [0x5a; 32];

/// 64 MiB each way through the secret stream (Noise XX) over UDX; the side that sends the first
/// UDX packet is also the Noise initiator, as in hyperdht.
async fn secret_exchange(first: First) {
    let js_initiates = first == First::Js;
    let cfg = serde_json::json!({
        "send": N, "secure": { "initiator": js_initiates, "seed": hex::encode(JS_SEED) }
    });
    let (mut js, sock, stream) = connected_pair(first, cfg).await;
    let ours = KeyPair::generate();
    let js_key = KeyPair::from_seed(JS_SEED).public_key();
    let secure = if js_initiates {
        SecretStream::accept(stream, ours.clone(), move |pk: &PublicKey| *pk == js_key).await
    } else {
        SecretStream::connect(stream, ours.clone(), Some(js_key)).await
    }
    .unwrap();
    assert_eq!(secure.remote_public_key(), js_key);
    let (sent, n, got) = exchange(secure).await;
    let report = check(&mut js, sent, n, got).await;
    assert_eq!(
        report["remotePublicKey"].as_str(),
        Some(ours.public_key().to_hex().as_str())
    );
    sock.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_connects_first_js_accepts_through_its_firewall() {
    timeout(TEST_TIMEOUT, raw_exchange(First::Rust))
        .await
        .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_connects_first_rust_accepts_through_the_firewall_hook() {
    timeout(TEST_TIMEOUT, raw_exchange(First::Js))
        .await
        .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_stream_over_udx_rust_initiator_js_responder() {
    timeout(TEST_TIMEOUT, secret_exchange(First::Rust))
        .await
        .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_stream_over_udx_js_initiator_rust_responder() {
    timeout(TEST_TIMEOUT, secret_exchange(First::Js))
        .await
        .expect("test timed out");
}

#[tokio::test]
async fn messages_both_ways_and_js_heartbeats_are_answered() {
    timeout(TEST_TIMEOUT, async {
        let (mut js, js_id, js_port) = JsPeer::spawn().await;
        let sock = UdxSocket::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut events = sock.take_events().unwrap();
        let mut stream = sock.create_stream(9).unwrap();
        let port = sock.local_addr().port();
        js.configure_with(serde_json::json!({
            "remoteId": 9, "remotePort": port, "send": 100_000, "mode": "connect",
            "message": "from-js", "keepalive": 20
        }))
        .await;
        let SocketEvent::Firewall { from, .. } = events.recv().await.unwrap() else {
            panic!("expected a firewall event");
        };
        stream.connect(js_id, from).unwrap();
        assert_eq!(from.port(), js_port);
        stream.send_message(b"from-rust").unwrap();
        let m = timeout(Duration::from_secs(5), stream.recv_message())
            .await
            .expect("message from JS")
            .unwrap();
        assert_eq!(&m[..], b"from-js");
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 100_000);
        // JS has ended and is idle: its 20 ms heartbeats must be answered.
        let before = stream.stats().unwrap().packets_received;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let heartbeats = stream.stats().unwrap().packets_received - before;
        assert!(heartbeats >= 5, "heartbeats seen: {heartbeats}");
        stream.write_all(b"bye").await.unwrap();
        stream.shutdown().await.unwrap();
        let report = js.line().await;
        assert_eq!(report["recv"].as_u64(), Some(3));
        assert_eq!(report["messages"], serde_json::json!(["from-rust"]));
        assert_eq!(report["error"], Value::Null);
        sock.close().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn rust_destroy_resets_the_js_stream() {
    timeout(TEST_TIMEOUT, async {
        let (mut js, js_id, js_port) = JsPeer::spawn().await;
        let sock = UdxSocket::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut stream = sock.create_stream(11).unwrap();
        let port = sock.local_addr().port();
        js.configure_with(serde_json::json!({
            "remoteId": 11, "remotePort": port, "send": 0, "mode": "accept"
        }))
        .await;
        stream
            .connect(js_id, format!("127.0.0.1:{js_port}").parse().unwrap())
            .unwrap();
        stream.write_all(&[5u8; 1000]).await.unwrap();
        // Wait until JS acknowledged the bytes, then abort.
        while stream.stats().unwrap().packets_received == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stream.destroy();
        let report = js.line().await;
        assert_eq!(report["recv"].as_u64(), Some(1000));
        assert_eq!(report["error"], "ECONNRESET");
        sock.close().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn js_destroy_resets_the_rust_stream() {
    timeout(TEST_TIMEOUT, async {
        let (mut js, js_id, js_port) = JsPeer::spawn().await;
        let sock = UdxSocket::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut stream = sock.create_stream(12).unwrap();
        let port = sock.local_addr().port();
        js.configure_with(serde_json::json!({
            "remoteId": 12, "remotePort": port, "send": N, "mode": "accept",
            "destroyAfter": 1000
        }))
        .await;
        stream
            .connect(js_id, format!("127.0.0.1:{js_port}").parse().unwrap())
            .unwrap();
        stream.write_all(&[5u8; 1000]).await.unwrap();
        // JS is streaming 64 MiB at us when it destroys: reads drain, then fail with a reset.
        let mut buf = vec![0u8; 64 * 1024];
        let err = loop {
            match stream.read(&mut buf).await {
                Ok(0) => panic!("clean EOF instead of a reset"),
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        let report = js.line().await;
        assert_eq!(report["recv"].as_u64(), Some(1000));
        sock.close().await;
    })
    .await
    .expect("test timed out");
}
