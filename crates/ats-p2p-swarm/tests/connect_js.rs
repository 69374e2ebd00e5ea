//! Connect by key between Rust and npm hyperdht 6.34 in both roles, 64 MiB each way, and the key
//! firewall on both implementations (loopback, our bootstrap plus three persistent Rust nodes).

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ats_p2p_swarm::KeyPair;
use ats_p2p_swarm::hyperdht::{Bootstrap, ConnectError, DhtConfig, DhtNode, Firewall, HyperDht};
use rand::RngCore;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Whole-test bound.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound for one line of JS output.
const STEP: Duration = Duration::from_secs(60);
/// Bytes moved each way.
const PAYLOAD: usize = 64 << 20;

async fn network() -> (Bootstrap, Vec<DhtNode>) {
    let boot = Bootstrap::spawn(SocketAddrV4::new(LOCAL, 0)).await.unwrap();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let mut cfg = DhtConfig::new(LOCAL, vec![boot.addr()]);
        cfg.ephemeral = false;
        let n = DhtNode::bind(cfg).await.unwrap();
        n.bootstrapped().await.unwrap();
        nodes.push(n);
    }
    (boot, nodes)
}

struct JsPeer {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl JsPeer {
    fn spawn(args: &[String]) -> Self {
        let mut child = Command::new("node")
            .arg("connect-peer.js")
            .args(args)
            .current_dir(support::js_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            _child: child,
            lines,
        }
    }

    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(STEP, self.lines.next_line())
            .await
            .expect("js peer silent")
            .unwrap()
            .expect("js peer exited");
        serde_json::from_str(&line).unwrap()
    }
}

/// Sends `len` random bytes and reads `len`; returns (sha sent, sha received) and the stream.
async fn exchange<S>(s: S, len: usize) -> (String, String, S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
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

fn allow_all() -> Firewall {
    Arc::new(|_| true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_server_js_client_64mib_each_way() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (boot, _relays) = network().await;
        let dht = Arc::new(
            HyperDht::bind(DhtConfig::new(LOCAL, vec![boot.addr()]))
                .await
                .unwrap(),
        );
        let skp = KeyPair::from_seed([21; 32]);
        let mut listener = dht.listen(skp.clone(), allow_all()).await.unwrap();
        let cseed = [22u8; 32];
        let started = Instant::now();
        let mut js = JsPeer::spawn(&[
            "client".into(),
            boot.addr().to_string(),
            hex::encode(cseed),
            PAYLOAD.to_string(),
            skp.public_key().to_hex(),
        ]);
        let conn = listener.accept().await.unwrap();
        let hello = js.next().await;
        eprintln!(
            "js client -> rust server: {hello} (total {:?} incl. node start)",
            started.elapsed()
        );
        assert_eq!(hello["connected"], skp.public_key().to_hex());
        assert_eq!(hello["attempts"], 1, "JS client needed a retry");
        assert_eq!(
            conn.remote_public_key(),
            KeyPair::from_seed(cseed).public_key()
        );
        let t = Instant::now();
        let (sent, recv, _conn) = exchange(conn, PAYLOAD).await;
        let r = js.next().await;
        eprintln!(
            "64 MiB each way rust server <-> js client: {:?}",
            t.elapsed()
        );
        assert_eq!(r["recvSha"], sent);
        assert_eq!(r["sentSha"], recv);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_server_rust_client_64mib_each_way() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (boot, _relays) = network().await;
        let sseed = [23u8; 32];
        let spk = KeyPair::from_seed(sseed).public_key();
        let mut js = JsPeer::spawn(&[
            "server".into(),
            boot.addr().to_string(),
            hex::encode(sseed),
            PAYLOAD.to_string(),
            "*".into(),
        ]);
        assert_eq!(js.next().await["listening"], spk.to_hex());
        let dht = HyperDht::bind(DhtConfig::new(LOCAL, vec![boot.addr()]))
            .await
            .unwrap();
        dht.dht().bootstrapped().await.unwrap();
        let ckp = KeyPair::from_seed([24; 32]);
        let started = Instant::now();
        let conn = dht.connect(&ckp, &spk).await.unwrap();
        eprintln!("rust client -> js server connect: {:?}", started.elapsed());
        assert_eq!(conn.remote_public_key(), spk);
        assert_eq!(js.next().await["connected"], ckp.public_key().to_hex());
        let t = Instant::now();
        let (sent, recv, _conn) = exchange(conn, PAYLOAD).await;
        let r = js.next().await;
        eprintln!(
            "64 MiB each way js server <-> rust client: {:?}",
            t.elapsed()
        );
        assert_eq!(r["recvSha"], sent);
        assert_eq!(r["sentSha"], recv);
    })
    .await
    .expect("test timed out");
}

/// A key the firewall refuses gets no stream: JS server refusing a Rust client, and a Rust
/// server refusing a JS client. The allowed key still connects afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firewall_refuses_key_on_both_implementations() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (boot, _relays) = network().await;
        let good = KeyPair::from_seed([31; 32]);
        let bad = KeyPair::from_seed([32; 32]);

        // JS server allowing only `good`.
        let sseed = [33u8; 32];
        let spk = KeyPair::from_seed(sseed).public_key();
        let mut js = JsPeer::spawn(&[
            "server".into(),
            boot.addr().to_string(),
            hex::encode(sseed),
            "1024".into(),
            good.public_key().to_hex(),
        ]);
        assert_eq!(js.next().await["listening"], spk.to_hex());
        let dht = Arc::new(
            HyperDht::bind(DhtConfig::new(LOCAL, vec![boot.addr()]))
                .await
                .unwrap(),
        );
        let refused = dht.connect(&bad, &spk).await;
        assert!(
            matches!(refused, Err(ConnectError::HandshakeFailed)),
            "{refused:?}"
        );
        let ok = dht.connect(&good, &spk).await.unwrap();
        assert_eq!(js.next().await["connected"], good.public_key().to_hex());
        let (sent, recv, _ok) = exchange(ok, 1024).await;
        let r = js.next().await;
        assert_eq!(
            (r["recvSha"].as_str(), r["sentSha"].as_str()),
            (Some(&*sent), Some(&*recv))
        );

        // Rust server allowing only `good`; a JS client with `bad` gets no stream.
        let rkp = KeyPair::from_seed([34; 32]);
        let allowed = good.public_key();
        let fw: Firewall = Arc::new(move |k| *k == allowed);
        let mut listener = dht.listen(rkp.clone(), fw).await.unwrap();
        let mut jc = JsPeer::spawn(&[
            "client".into(),
            boot.addr().to_string(),
            hex::encode(bad.seed()),
            "1024".into(),
            rkp.public_key().to_hex(),
            "once".into(),
        ]);
        let r = jc.next().await;
        assert!(r.get("error").is_some(), "refused JS client got: {r}");
        assert!(
            tokio::time::timeout(Duration::from_millis(300), listener.accept())
                .await
                .is_err(),
            "a refused key produced a stream"
        );
    })
    .await
    .expect("test timed out");
}
