//! Interop with the real `@hyperswarm/secret-stream` 6.9.2 over TCP on 127.0.0.1
//! (`interop/js/secret-stream-peer.js`): bulk transfers both ways with Rust as initiator and as
//! responder, wrong-key handshakes failing on both sides, and the HyperDHT path (Noise IK with
//! `noise-handshake`, then `from_handshake` against `NoiseSecretStream({ handshake })`).
// Test helpers outside #[test] fns may unwrap too: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use ats_p2p_swarm::noise::{NoiseConfig, NoiseHandshake};
use ats_p2p_swarm::secret_stream::frame::MAX_FRAME_LEN;
use ats_p2p_swarm::secret_stream::{SecretStream, SecretStreamError};
use ats_p2p_swarm::{KeyPair, PublicKey};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(120);
const BULK: usize = 64 << 20;
/// hyperdht's `NS_PEER_HANDSHAKE`, the IK prologue.
const NS_PEER_HANDSHAKE: &str = "14d6d4b49214ab1033ed204976caa258bae9e1e8543b9ad1fd996a910b0c4e3a";

struct Peer {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Peer {
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new("node")
            .arg("secret-stream-peer.js")
            .args(args)
            .current_dir(common::js_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node is installed");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            _child: child,
            stdin,
            lines,
        }
    }

    /// The next line starting with `key`, skipping others; panics on EOF.
    async fn expect(&mut self, key: &str) -> String {
        let mut skipped = Vec::new();
        loop {
            let Some(line) = self.lines.next_line().await.unwrap() else {
                panic!("JS peer exited while we waited for {key}; it said {skipped:?}");
            };
            if let Some(rest) = line.strip_prefix(key) {
                return rest.trim().to_string();
            }
            assert!(
                !line.starts_with("TIMEOUT"),
                "JS peer timed out while we waited for {key}; it said {skipped:?}"
            );
            skipped.push(line);
        }
    }

    /// All remaining output.
    async fn rest(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(l) = self.lines.next_line().await.unwrap() {
            out.push(l);
        }
        out
    }

    async fn send_line(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
    }
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sends `BULK` bytes and reads everything concurrently; returns (sent sha, received len, sha).
async fn exchange(mut stream: SecretStream<TcpStream>) -> (String, usize, String) {
    // The JS peer writes each chunk (up to 1 MiB) as one message, as a generic Hyperswarm app
    // may: more than our writer sends and our default accepts, so take the protocol's maximum.
    stream.set_max_frame_len(MAX_FRAME_LEN);
    let (mut r, mut w) = tokio::io::split(stream);
    let send = async move {
        let block = pattern(1 << 20, 7);
        let mut h = Sha256::new();
        let mut sent = 0;
        let sizes = [100usize, 1 << 20, 5000, 65536, 1, 300_000];
        let mut k = 0;
        while sent < BULK {
            let n = sizes[k % sizes.len()].min(BULK - sent);
            let off = (k * 31) % ((1 << 20) - n + 1);
            k += 1;
            w.write_all(&block[off..off + n]).await.unwrap();
            h.update(&block[off..off + n]);
            sent += n;
        }
        w.shutdown().await.unwrap();
        hex::encode(h.finalize())
    };
    let recv = async move {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 100_000];
        let mut total = 0;
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            total += n;
            h.update(&buf[..n]);
        }
        (total, hex::encode(h.finalize()))
    };
    let (sent, (n, got)) = tokio::join!(send, recv);
    (sent, n, got)
}

async fn check_js_report(js: &mut Peer, our_sent: &str, our_recv: (usize, String)) {
    let sent = js.expect("SENT ").await;
    let recv = js.expect("RECV ").await;
    assert_eq!(
        sent,
        format!("{BULK} {}", our_recv.1),
        "JS → Rust bytes differ"
    );
    assert_eq!(our_recv.0, BULK);
    assert_eq!(recv, format!("{BULK} {our_sent}"), "Rust → JS bytes differ");
    js.expect("DONE").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_initiator_js_responder_64mib_each_way() {
    timeout(LIMIT, async {
        let js_seed = "22".repeat(32);
        let mut js = Peer::spawn(&[
            "--role",
            "responder",
            "--seed",
            &js_seed,
            "--bytes",
            &BULK.to_string(),
        ]);
        let port = js.expect("PORT ").await;
        let js_key: PublicKey = js.expect("PUBLIC ").await.parse().unwrap();
        let ours = KeyPair::from_seed([0x11; 32]);
        let sock = TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .unwrap();
        let stream = SecretStream::connect(sock, ours.clone(), Some(js_key))
            .await
            .unwrap();
        assert_eq!(stream.remote_public_key(), js_key);
        assert_eq!(js.expect("REMOTE ").await, ours.public_key().to_hex());
        assert_eq!(
            js.expect("HASH ").await,
            hex::encode(stream.handshake_hash())
        );
        let (sent, n, got) = exchange(stream).await;
        check_js_report(&mut js, &sent, (n, got)).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_responder_js_initiator_64mib_each_way() {
    timeout(LIMIT, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        let ours = KeyPair::from_seed([0x33; 32]);
        let mut js = Peer::spawn(&[
            "--role",
            "initiator",
            "--port",
            &port,
            "--seed",
            &"44".repeat(32),
            "--expect",
            &ours.public_key().to_hex(),
            "--bytes",
            &BULK.to_string(),
        ]);
        let (sock, _) = listener.accept().await.unwrap();
        let js_key = KeyPair::from_seed([0x44; 32]).public_key();
        let stream = SecretStream::accept(sock, ours.clone(), |k: &PublicKey| *k == js_key)
            .await
            .unwrap();
        assert_eq!(js.expect("REMOTE ").await, ours.public_key().to_hex());
        assert_eq!(
            js.expect("HASH ").await,
            hex::encode(stream.handshake_hash())
        );
        let (sent, n, got) = exchange(stream).await;
        check_js_report(&mut js, &sent, (n, got)).await;
    })
    .await
    .unwrap();
}

fn assert_js_failed(lines: &[String]) {
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("CLOSED") || l.starts_with("REJECTED")),
        "JS side should have failed: {lines:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("DONE") || l.starts_with("RECV")),
        "JS side must not complete a transfer: {lines:?}"
    );
}

#[tokio::test]
async fn wrong_key_rust_initiator_rejects_js() {
    timeout(LIMIT, async {
        let mut js = Peer::spawn(&["--role", "responder", "--bytes", "10"]);
        let port = js.expect("PORT ").await;
        let sock = TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .unwrap();
        let wrong = KeyPair::from_seed([9; 32]).public_key();
        let err = SecretStream::connect(sock, KeyPair::generate(), Some(wrong))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                SecretStreamError::Noise(ats_p2p_swarm::noise::NoiseError::Rejected(_))
            ),
            "{err}"
        );
        let rest = js.rest().await;
        assert_js_failed(&rest);
        assert!(
            rest.iter().any(|l| l.contains("connected=false")),
            "{rest:?}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn wrong_key_js_initiator_rejects_rust() {
    timeout(LIMIT, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        let wrong = KeyPair::from_seed([9; 32]).public_key().to_hex();
        let mut js = Peer::spawn(&[
            "--role",
            "initiator",
            "--port",
            &port,
            "--expect",
            &wrong,
            "--bytes",
            "10",
        ]);
        let (sock, _) = listener.accept().await.unwrap();
        let res =
            SecretStream::accept(sock, KeyPair::from_seed([5; 32]), |_: &PublicKey| true).await;
        assert!(res.is_err(), "JS refused us: our accept must fail too");
        let rest = js.rest().await;
        assert_js_failed(&rest);
        assert!(rest.iter().any(|l| l.starts_with("REJECTED")), "{rest:?}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn wrong_key_js_responder_rejects_rust() {
    timeout(LIMIT, async {
        let wrong = KeyPair::from_seed([9; 32]).public_key().to_hex();
        let mut js = Peer::spawn(&["--role", "responder", "--expect", &wrong, "--bytes", "10"]);
        let port = js.expect("PORT ").await;
        let sock = TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .unwrap();
        let res = SecretStream::connect(sock, KeyPair::generate(), None).await;
        assert!(res.is_err(), "JS refused us: our connect must fail too");
        assert_js_failed(&js.rest().await);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn wrong_key_rust_responder_firewall_rejects_js() {
    timeout(LIMIT, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        let mut js = Peer::spawn(&["--role", "initiator", "--port", &port, "--bytes", "10"]);
        let (sock, _) = listener.accept().await.unwrap();
        let err = SecretStream::accept(sock, KeyPair::generate(), |_: &PublicKey| false)
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            SecretStreamError::Noise(ats_p2p_swarm::noise::NoiseError::Rejected(_))
        ));
        let rest = js.rest().await;
        assert_js_failed(&rest);
        // JS never got our id+header: its secret stream was never set up for reading
        assert!(rest.iter().any(|l| l.contains("header=false")), "{rest:?}");
    })
    .await
    .unwrap();
}

/// The HyperDHT path: Noise IK (payloads carried) between Rust and `noise-handshake`, then the
/// secret stream from the pre-made handshake on both sides; Rust as initiator and as responder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ik_then_from_handshake_both_roles() {
    timeout(LIMIT, async {
        let prologue = hex::decode(NS_PEER_HANDSHAKE).unwrap();
        let small = 1usize << 20;
        // Rust initiator (client), JS responder (server)
        {
            let mut js =
                Peer::spawn(&["--role", "responder", "--ik", "--bytes", &small.to_string()]);
            let port = js.expect("PORT ").await;
            let js_key: PublicKey = js.expect("PUBLIC ").await.parse().unwrap();
            let ours = KeyPair::generate();
            let mut hs =
                NoiseHandshake::new(NoiseConfig::ik_initiator(ours.clone(), &prologue, js_key))
                    .unwrap();
            let m1 = hs.write_message(b"rust client payload").unwrap();
            js.send_line(&format!("MSG1 {}", hex::encode(m1))).await;
            assert_eq!(
                js.expect("IKPAYLOAD ").await,
                hex::encode(b"rust client payload")
            );
            let m2 = hex::decode(js.expect("MSG2 ").await).unwrap();
            assert_eq!(hs.read_message(&m2).unwrap(), b"ik server payload");
            let handshake = hs.into_handshake().unwrap();
            let sock = TcpStream::connect(format!("127.0.0.1:{port}"))
                .await
                .unwrap();
            let stream = SecretStream::from_handshake(sock, handshake).await.unwrap();
            assert_eq!(js.expect("REMOTE ").await, ours.public_key().to_hex());
            assert_eq!(
                js.expect("HASH ").await,
                hex::encode(stream.handshake_hash())
            );
            small_exchange(stream, &mut js, small).await;
        }
        // Rust responder (server), JS initiator (client)
        {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port().to_string();
            let ours = KeyPair::generate();
            let mut js = Peer::spawn(&[
                "--role",
                "initiator",
                "--ik",
                "--remote",
                &ours.public_key().to_hex(),
                "--port",
                &port,
                "--bytes",
                &small.to_string(),
            ]);
            let mut hs = NoiseHandshake::new(NoiseConfig::ik_responder(ours, &prologue)).unwrap();
            let m1 = hex::decode(js.expect("MSG1 ").await).unwrap();
            assert_eq!(hs.read_message(&m1).unwrap(), b"ik client payload");
            assert!(matches!(
                hs.next_step(),
                ats_p2p_swarm::noise::Step::Verdict(_)
            ));
            hs.handle_verdict(true).unwrap();
            let m2 = hs.write_message(b"rust server payload").unwrap();
            js.send_line(&format!("MSG2 {}", hex::encode(m2))).await;
            assert_eq!(
                js.expect("IKPAYLOAD ").await,
                hex::encode(b"rust server payload")
            );
            let handshake = hs.into_handshake().unwrap();
            let (sock, _) = listener.accept().await.unwrap();
            let stream = SecretStream::from_handshake(sock, handshake).await.unwrap();
            small_exchange(stream, &mut js, small).await;
        }
    })
    .await
    .unwrap();
}

async fn small_exchange(mut stream: SecretStream<TcpStream>, js: &mut Peer, len: usize) {
    // The JS peer writes each chunk (up to 1 MiB) as one message, as a generic Hyperswarm app
    // may: more than our writer sends and our default accepts, so take the protocol's maximum.
    stream.set_max_frame_len(MAX_FRAME_LEN);
    let (mut r, mut w) = tokio::io::split(stream);
    let data = pattern(len, 3);
    let expected_sha = hex::encode(Sha256::digest(&data));
    let send = async move {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let recv = async move {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = tokio::join!(send, recv);
    let sent = js.expect("SENT ").await;
    assert_eq!(sent, format!("{len} {}", hex::encode(Sha256::digest(&got))));
    assert_eq!(js.expect("RECV ").await, format!("{len} {expected_sha}"));
}

/// Keep-alives both ways during an idle period: JS sends its empty messages every 50 ms and we
/// ours; each side filters the other's and then the real bytes arrive intact.
#[tokio::test]
async fn keep_alives_interoperate() {
    timeout(LIMIT, async {
        let len = 100_000usize;
        let mut js = Peer::spawn(&[
            "--role",
            "responder",
            "--keepalive",
            "50",
            "--idle",
            "400",
            "--bytes",
            &len.to_string(),
        ]);
        let port = js.expect("PORT ").await;
        let sock = TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .unwrap();
        let mut stream = SecretStream::connect(sock, KeyPair::generate(), None)
            .await
            .unwrap();
        stream.set_keep_alive(Some(Duration::from_millis(50)));
        let (mut r, mut w) = tokio::io::split(stream);
        let data = pattern(len, 11);
        let expected_sha = hex::encode(Sha256::digest(&data));
        let send = async move {
            // idle first (our keep-alives flow while the reader is pending), then send
            tokio::time::sleep(Duration::from_millis(400)).await;
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let recv = async move {
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            got
        };
        let ((), got) = tokio::join!(send, recv);
        assert_eq!(got.len(), len, "JS keep-alives must not show up as data");
        assert_eq!(
            js.expect("SENT ").await,
            format!("{len} {}", hex::encode(Sha256::digest(&got)))
        );
        assert_eq!(js.expect("RECV ").await, format!("{len} {expected_sha}"));
        // our keep-alives reached JS: 17-byte empty messages beyond the two data frames
        let raw: usize = js.expect("RAWREAD ").await.parse().unwrap();
        assert!(
            raw >= len + 17 * (2 + 3),
            "only {raw} encrypted bytes: no keep-alives seen"
        );
    })
    .await
    .unwrap();
}
