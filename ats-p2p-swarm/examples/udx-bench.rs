//! UDX throughput benchmark over loopback: one stream, Rust↔Rust and JS↔JS (npm `udx-native`)
//! in the same run, plus the mixed pairs; each peer is its own process so peak RSS is per side.
//!
//! ```text
//! cargo run --release -p ats-p2p-swarm --example udx-bench            # 256 MiB per pair
//! cargo run --release -p ats-p2p-swarm --example udx-bench -- --mib 1024 --no-hash
//! cargo run --release -p ats-p2p-swarm --example udx-bench -- --secure   # encrypted streams
//! ```
//! `--secure` runs the Hyperswarm secret stream (Noise XX, then secretstream encryption) over
//! each UDX stream: ours on the Rust peers, `@hyperswarm/secret-stream` on the JS peers.
//! `UDX_BENCH_THREADS=1` runs each Rust peer on a current-thread runtime (default: two
//! workers); `UDX_BENCH_VERBOSE=1` prints each side's report (CPU time, stream counters).
//! `peer` mode speaks the same stdin/stdout JSON protocol as `interop/js/udx-peer.js`, so the
//! orchestrator treats Rust and JS peers alike.

#![allow(clippy::unwrap_used)] // a benchmark tool: failing loudly is the right behaviour

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use ats_p2p_swarm::KeyPair;
use ats_p2p_swarm::secret_stream::SecretStream;
use ats_p2p_swarm::udx::{SocketEvent, UdxSocket};
use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const CHUNK: usize = 64 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("peer") {
        // UDX_BENCH_THREADS=1 runs each peer on a current-thread runtime.
        let threads: usize = std::env::var("UDX_BENCH_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2);
        let rt = if threads <= 1 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()
                .unwrap()
        };
        rt.block_on(peer());
        return;
    }
    let mut mib: usize = 256;
    let mut hash = true;
    let mut runs = 1;
    let mut only: Option<String> = None;
    let mut secure = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--mib" => mib = it.next().unwrap().parse().unwrap(),
            "--no-hash" => hash = false,
            "--runs" => runs = it.next().unwrap().parse().unwrap(),
            "--only" => only = it.next().cloned(),
            "--secure" => secure = true,
            other => panic!("unknown argument {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(orchestrate(mib, hash, runs, only, secure));
}

/// User + system CPU time of this process, milliseconds (Linux `/proc/self/stat`).
fn cpu_ms() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks * 10 // USER_HZ = 100
}

fn read_vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// One peer process: same protocol as udx-peer.js.
async fn peer() {
    let sock = UdxSocket::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut events = sock.take_events().unwrap();
    let id = rand::random::<u32>() | 1;
    let stream = sock.create_stream(id).unwrap();
    println!("{}", json!({"id": id, "port": sock.local_addr().port()}));
    let mut line = String::new();
    let mut stdin = BufReader::new(tokio::io::stdin());
    stdin.read_line(&mut line).await.unwrap();
    let cfg: Value = serde_json::from_str(&line).unwrap();
    println!("{}", json!({"ready": true}));
    let remote_id = u32::try_from(cfg["remoteId"].as_u64().unwrap()).unwrap();
    let send = cfg["send"].as_u64().unwrap() as usize;
    let hash = cfg["hash"].as_bool() != Some(false);
    if cfg["mode"] == "connect" {
        let port = cfg["remotePort"].as_u64().unwrap();
        stream
            .connect(remote_id, format!("127.0.0.1:{port}").parse().unwrap())
            .unwrap();
    } else {
        loop {
            if let Some(SocketEvent::Firewall { local_id, from }) = events.recv().await
                && local_id == id
            {
                stream.connect(remote_id, from).unwrap();
                break;
            }
        }
    }
    let started = Instant::now();
    let (stats, (sent_sha, recv, recv_sha)) = match cfg["secure"]["initiator"].as_bool() {
        None => {
            let (stream, out) = transfer(stream, send, hash).await;
            let stats = format!("{:?}", stream.stats());
            drop(stream);
            (stats, out)
        }
        Some(initiator) => {
            let kp = KeyPair::generate();
            let secure = if initiator {
                SecretStream::connect(stream, kp, None).await.unwrap()
            } else {
                SecretStream::accept(stream, kp, |_: &_| true)
                    .await
                    .unwrap()
            };
            let (secure, out) = transfer(secure, send, hash).await;
            drop(secure);
            ("secret stream".to_string(), out)
        }
    };
    let ms = started.elapsed().as_millis() as u64;
    sock.close().await;
    println!(
        "{}",
        json!({"sent": send, "sentSha": sent_sha, "recv": recv, "recvSha": recv_sha, "ms": ms,
               "maxRssKiB": read_vm_hwm_kib(), "cpuMs": cpu_ms(), "stats": stats})
    );
}

/// Sends `send` bytes (random and hashed, or zeros) while reading the peer's data to the end.
async fn transfer<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    send: usize,
    hash: bool,
) -> (S, (String, u64, String)) {
    let (mut r, mut w) = tokio::io::split(stream);
    let writer = async {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut left = send;
        while left > 0 {
            let k = left.min(CHUNK);
            if hash {
                rand::thread_rng().fill_bytes(&mut buf[..k]);
                h.update(&buf[..k]);
            }
            w.write_all(&buf[..k]).await.unwrap();
            left -= k;
        }
        w.shutdown().await.unwrap();
        hex::encode(h.finalize())
    };
    let reader = async {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut n = 0u64;
        loop {
            let k = r.read(&mut buf).await.unwrap();
            if k == 0 {
                break;
            }
            if hash {
                h.update(&buf[..k]);
            }
            n += k as u64;
        }
        (n, hex::encode(h.finalize()))
    };
    let (sent_sha, (recv, recv_sha)) = tokio::join!(writer, reader);
    (r.unsplit(w), (sent_sha, recv, recv_sha))
}

struct Proc {
    child: Child,
    stdin: ChildStdin,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl Proc {
    async fn spawn(kind: &str) -> Self {
        let mut cmd = if kind == "rust" {
            let mut c = Command::new(std::env::current_exe().unwrap());
            c.arg("peer");
            c
        } else {
            let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../interop/js"));
            assert!(
                dir.join("node_modules/udx-native").exists(),
                "run `npm ci --prefix interop/js` first"
            );
            let mut c = Command::new("node");
            c.arg(dir.join("udx-peer.js"));
            c
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            child,
            stdin,
            lines,
        }
    }

    async fn line(&mut self) -> Value {
        let l = self.lines.next_line().await.unwrap().unwrap();
        serde_json::from_str(&l).unwrap()
    }

    async fn send(&mut self, v: Value) {
        self.stdin
            .write_all(format!("{v}\n").as_bytes())
            .await
            .unwrap();
    }
}

async fn pair(
    sender: &str,
    receiver: &str,
    bytes: u64,
    hash: bool,
    secure: bool,
) -> (f64, u64, u64) {
    let mut s = Proc::spawn(sender).await;
    let mut r = Proc::spawn(receiver).await;
    let sh = s.line().await;
    let rh = r.line().await;
    let (s_secure, r_secure) = if secure {
        (json!({"initiator": true}), json!({"initiator": false}))
    } else {
        (Value::Null, Value::Null)
    };
    r.send(
        json!({"remoteId": sh["id"], "remotePort": sh["port"], "send": 0, "mode": "accept",
                  "hash": hash, "secure": r_secure}),
    )
    .await;
    assert_eq!(r.line().await["ready"], true);
    s.send(
        json!({"remoteId": rh["id"], "remotePort": rh["port"], "send": bytes, "mode": "connect",
                  "hash": hash, "secure": s_secure}),
    )
    .await;
    assert_eq!(s.line().await["ready"], true);
    let sr = s.line().await;
    let rr = r.line().await;
    let _ = s.child.wait().await;
    let _ = r.child.wait().await;
    assert_eq!(rr["recv"].as_u64(), Some(bytes), "receiver got everything");
    if hash {
        assert_eq!(rr["recvSha"], sr["sentSha"], "SHA-256 mismatch");
    }
    if std::env::var_os("UDX_BENCH_VERBOSE").is_some() {
        eprintln!("sender: {sr}\nreceiver: {rr}");
    }
    let ms = sr["ms"].as_u64().unwrap().max(1);
    let mbps = bytes as f64 / 1e6 / (ms as f64 / 1e3);
    (
        mbps,
        sr["maxRssKiB"].as_u64().unwrap_or(0),
        rr["maxRssKiB"].as_u64().unwrap_or(0),
    )
}

async fn orchestrate(mib: usize, hash: bool, runs: usize, only: Option<String>, secure: bool) {
    let bytes = (mib * 1024 * 1024) as u64;
    println!(
        "UDX one {} stream over loopback, {mib} MiB, SHA-256 {}",
        if secure {
            "encrypted (secret stream)"
        } else {
            "raw"
        },
        if hash { "checked" } else { "off" }
    );
    println!(
        "{:<14} {:>10} {:>16} {:>18}",
        "pair", "MB/s", "sender RSS MiB", "receiver RSS MiB"
    );
    let pairs = [
        ("rust", "rust"),
        ("js", "js"),
        ("rust", "js"),
        ("js", "rust"),
    ];
    for (a, b) in pairs {
        let name = format!("{a}->{b}");
        if only.as_ref().is_some_and(|o| *o != name) {
            continue;
        }
        for _ in 0..runs {
            let (mbps, srss, rrss) = pair(a, b, bytes, hash, secure).await;
            println!(
                "{name:<14} {mbps:>10.1} {:>16.1} {:>18.1}",
                srss as f64 / 1024.0,
                rrss as f64 / 1024.0
            );
        }
    }
}
