//! The connect role matrix: who is server (Rust or npm hyperdht 6.34), who is client, and whose
//! bootstrap + DHT carries the handshake (our `Bootstrap` plus three persistent Rust nodes, or a
//! JS `hyperdht/testnet` of three nodes). Every cell moves 64 MiB each way, SHA-256 checked, and
//! prints its connect time. The key firewall is checked on both implementations under both
//! bootstraps. Loopback only; every test bounds its own time.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ats_p2p_swarm::KeyPair;
use ats_p2p_swarm::hyperdht::{Bootstrap, ConnectError, DhtConfig, DhtNode, Firewall, HyperDht};
use rand::RngCore;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::io::{BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Whole-test bound (64 MiB each way on a shared 2-core box, plus node start-up).
const TEST_TIMEOUT: Duration = Duration::from_secs(150);
/// Bound for one line of JS output.
const STEP: Duration = Duration::from_secs(60);
/// Bytes moved each way in a matrix cell.
const PAYLOAD: usize = 64 << 20;
/// Bytes moved each way in the firewall checks (only proves the allowed stream works).
const SMALL: usize = 1024;
/// How long "no stream was accepted" is observed.
const QUIET: Duration = Duration::from_millis(300);

/// Which implementation plays a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Imp {
    Rust,
    Js,
}

/// The bootstrap + DHT the peers meet on; dropping it stops it.
enum Net {
    Rust {
        boot: Bootstrap,
        _nodes: Vec<DhtNode>,
    },
    Js(Box<JsProc>),
}

impl Net {
    async fn start(kind: Imp) -> Self {
        match kind {
            Imp::Rust => {
                let boot = Bootstrap::spawn(SocketAddrV4::new(LOCAL, 0)).await.unwrap();
                let mut nodes = Vec::new();
                for _ in 0..3 {
                    let mut cfg = DhtConfig::new(LOCAL, vec![boot.addr()]);
                    cfg.ephemeral = false;
                    let n = DhtNode::bind(cfg).await.unwrap();
                    n.bootstrapped().await.unwrap();
                    nodes.push(n);
                }
                Self::Rust {
                    boot,
                    _nodes: nodes,
                }
            }
            Imp::Js => {
                let mut p = JsProc::spawn("testnet.js", &["3".into()]);
                let line = p.next_line().await;
                let addr: SocketAddrV4 = line.trim().parse().expect("testnet prints host:port");
                p.boot = Some(addr);
                Self::Js(Box::new(p))
            }
        }
    }

    fn bootstrap(&self) -> SocketAddrV4 {
        match self {
            Self::Rust { boot, .. } => boot.addr(),
            Self::Js(p) => p.boot.unwrap(),
        }
    }

    async fn rust_peer(&self) -> Arc<HyperDht> {
        let dht = HyperDht::bind(DhtConfig::new(LOCAL, vec![self.bootstrap()]))
            .await
            .unwrap();
        dht.dht().bootstrapped().await.unwrap();
        Arc::new(dht)
    }

    fn js_peer(&self, args: &[String]) -> JsProc {
        let mut all = vec![args[0].clone(), self.bootstrap().to_string()];
        all.extend_from_slice(&args[1..]);
        JsProc::spawn("connect-peer.js", &all)
    }
}

/// A node process printing one line per event.
struct JsProc {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    boot: Option<SocketAddrV4>,
}

impl JsProc {
    fn spawn(script: &str, args: &[String]) -> Self {
        let mut child = Command::new("node")
            .arg(script)
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
            boot: None,
        }
    }

    async fn next_line(&mut self) -> String {
        tokio::time::timeout(STEP, self.lines.next_line())
            .await
            .expect("js process silent")
            .unwrap()
            .expect("js process exited")
    }

    async fn next(&mut self) -> Value {
        serde_json::from_str(&self.next_line().await).unwrap()
    }
}

/// Sends `len` random bytes and reads `len`; returns (sha sent, sha received) and the stream,
/// still open (dropping it is up to the caller, after the peer has read everything).
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

fn allow_all() -> Firewall {
    Arc::new(|_| true)
}

/// One cell of the matrix: server, client, bootstrap; `seed` keeps key pairs distinct per cell.
async fn cell(server: Imp, client: Imp, boot: Imp, seed: u8) {
    let name = format!("server {server:?} / client {client:?} / bootstrap {boot:?}");
    tokio::time::timeout(TEST_TIMEOUT, async {
        let net = Net::start(boot).await;
        let sseed = [seed; 32];
        let cseed = [seed.wrapping_add(1); 32];
        let (spk, cpk) = (
            KeyPair::from_seed(sseed).public_key(),
            KeyPair::from_seed(cseed).public_key(),
        );
        let size = PAYLOAD.to_string();
        let connect_time;
        // (sha the server sent, sha it received, sha the client sent, sha it received)
        let shas: [String; 4];
        match (server, client) {
            (Imp::Rust, Imp::Rust) => {
                let sdht = net.rust_peer().await;
                let mut listener = sdht
                    .listen(KeyPair::from_seed(sseed), allow_all())
                    .await
                    .unwrap();
                let cdht = net.rust_peer().await;
                let started = Instant::now();
                let conn = cdht
                    .connect(&KeyPair::from_seed(cseed), &spk)
                    .await
                    .unwrap();
                let acc = listener.accept().await.unwrap();
                connect_time = started.elapsed();
                assert_eq!(conn.remote_public_key(), spk);
                assert_eq!(acc.remote_public_key(), cpk);
                let ((ss, sr, _a), (cs, cr, _c)) =
                    tokio::join!(exchange(acc, PAYLOAD), exchange(conn, PAYLOAD));
                shas = [ss, sr, cs, cr];
            }
            (Imp::Rust, Imp::Js) => {
                let sdht = net.rust_peer().await;
                let mut listener = sdht
                    .listen(KeyPair::from_seed(sseed), allow_all())
                    .await
                    .unwrap();
                let mut js =
                    net.js_peer(&["client".into(), hex::encode(cseed), size, spk.to_hex()]);
                let acc = listener.accept().await.unwrap();
                assert_eq!(acc.remote_public_key(), cpk);
                let hello = js.next().await;
                assert_eq!(hello["connected"], spk.to_hex(), "{hello}");
                assert_eq!(hello["attempts"], 1, "JS client needed a retry: {hello}");
                connect_time = Duration::from_millis(hello["ms"].as_u64().unwrap());
                let (ss, sr, _a) = exchange(acc, PAYLOAD).await;
                let r = js.next().await;
                shas = [ss, sr, str_of(&r["sentSha"]), str_of(&r["recvSha"])];
            }
            (Imp::Js, Imp::Rust) => {
                let mut js = net.js_peer(&["server".into(), hex::encode(sseed), size, "*".into()]);
                assert_eq!(js.next().await["listening"], spk.to_hex());
                let cdht = net.rust_peer().await;
                let started = Instant::now();
                let conn = cdht
                    .connect(&KeyPair::from_seed(cseed), &spk)
                    .await
                    .unwrap();
                connect_time = started.elapsed();
                assert_eq!(conn.remote_public_key(), spk);
                assert_eq!(js.next().await["connected"], cpk.to_hex());
                let (cs, cr, _c) = exchange(conn, PAYLOAD).await;
                let r = js.next().await;
                shas = [str_of(&r["sentSha"]), str_of(&r["recvSha"]), cs, cr];
            }
            (Imp::Js, Imp::Js) => unreachable!("JS <-> JS is hyperdht's own business"),
        }
        eprintln!("connect matrix: {name}: connect {connect_time:?}");
        assert_eq!(shas[0], shas[3], "{name}: server -> client bytes differ");
        assert_eq!(shas[2], shas[1], "{name}: client -> server bytes differ");
    })
    .await
    .unwrap_or_else(|_| panic!("{name}: timed out"));
}

fn str_of(v: &Value) -> String {
    v.as_str().expect("sha string").to_owned()
}

/// The table: every (server, client) pair that involves Rust, under both bootstraps.
macro_rules! matrix {
    ($($name:ident: $server:ident, $client:ident, $boot:ident, $seed:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            cell(Imp::$server, Imp::$client, Imp::$boot, $seed).await;
        }
    )*};
}

matrix! {
    rust_server_rust_client_rust_bootstrap: Rust, Rust, Rust, 40;
    rust_server_js_client_rust_bootstrap:   Rust, Js,   Rust, 42;
    js_server_rust_client_rust_bootstrap:   Js,   Rust, Rust, 44;
    rust_server_rust_client_js_bootstrap:   Rust, Rust, Js,   46;
    rust_server_js_client_js_bootstrap:     Rust, Js,   Js,   48;
    js_server_rust_client_js_bootstrap:     Js,   Rust, Js,   50;
}

/// A key the firewall refuses gets no stream, on both implementations, under `boot`: a Rust
/// server and a JS server each refuse a Rust client, a Rust server refuses a JS client; the
/// allowed key still connects.
async fn firewall(boot: Imp, seed: u8) {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let net = Net::start(boot).await;
        let good = KeyPair::from_seed([seed; 32]);
        let bad = KeyPair::from_seed([seed.wrapping_add(1); 32]);
        let allowed = good.public_key();
        let fw: Firewall = Arc::new(move |k| *k == allowed);
        let dht = net.rust_peer().await;

        // JS server allowing only `good`, Rust clients.
        let jseed = [seed.wrapping_add(2); 32];
        let jpk = KeyPair::from_seed(jseed).public_key();
        let mut js = net.js_peer(&[
            "server".into(),
            hex::encode(jseed),
            SMALL.to_string(),
            good.public_key().to_hex(),
        ]);
        assert_eq!(js.next().await["listening"], jpk.to_hex());
        let refused = dht.connect(&bad, &jpk).await;
        assert!(
            matches!(refused, Err(ConnectError::HandshakeFailed)),
            "JS server let a refused key in: {refused:?}"
        );
        let ok = dht.connect(&good, &jpk).await.unwrap();
        assert_eq!(js.next().await["connected"], good.public_key().to_hex());
        let (sent, recv, _ok) = exchange(ok, SMALL).await;
        let r = js.next().await;
        assert_eq!((str_of(&r["recvSha"]), str_of(&r["sentSha"])), (sent, recv));

        // Rust server allowing only `good`.
        let rkp = KeyPair::from_seed([seed.wrapping_add(3); 32]);
        let sdht = net.rust_peer().await;
        let mut listener = sdht.listen(rkp.clone(), fw).await.unwrap();
        // ... a Rust client with `bad` gets no stream,
        let refused = dht.connect(&bad, &rkp.public_key()).await;
        assert!(
            matches!(refused, Err(ConnectError::HandshakeFailed)),
            "Rust server let a refused Rust key in: {refused:?}"
        );
        // ... a JS client with `bad` gets no stream,
        let mut jc = net.js_peer(&[
            "client".into(),
            hex::encode(bad.seed()),
            SMALL.to_string(),
            rkp.public_key().to_hex(),
            "once".into(),
        ]);
        let r = jc.next().await;
        assert!(r.get("error").is_some(), "refused JS client got: {r}");
        assert!(
            tokio::time::timeout(QUIET, listener.accept())
                .await
                .is_err(),
            "a refused key produced a stream"
        );
        // ... and the allowed key gets one.
        let ok = dht.connect(&good, &rkp.public_key()).await.unwrap();
        let acc = tokio::time::timeout(STEP, listener.accept())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(acc.remote_public_key(), good.public_key());
        assert_eq!(ok.remote_public_key(), rkp.public_key());
        assert!(
            tokio::time::timeout(QUIET, listener.accept())
                .await
                .is_err(),
            "a second stream appeared"
        );
    })
    .await
    .unwrap_or_else(|_| panic!("firewall under {boot:?} bootstrap: timed out"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firewall_refuses_key_rust_bootstrap() {
    firewall(Imp::Rust, 60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firewall_refuses_key_js_bootstrap() {
    firewall(Imp::Js, 70).await;
}
