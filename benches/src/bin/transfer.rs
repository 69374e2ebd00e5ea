//! The production data path, measured: a file moves from a HyperDHT server (`send_stream`) to a
//! HyperDHT client (`receive_stream`) over the secret stream on UDX, through a local bootstrap on
//! loopback, into a real file that is SHA-256 verified. Each side is its own process, so peak
//! RSS and CPU time are per side.
//!
//! ```text
//! cargo run --release -p benches --bin transfer -- --size 1GiB [--runs 3] [--dir DIR]
//! cargo run --release -p benches --bin transfer -- --size 1GiB --profile recv   # perf record
//! ```
//! Prints accept→ACK MB/s, time to the first DATA byte after the connection, each side's peak
//! RSS and CPU seconds. `--profile send|recv` runs that side under `perf record -g` and writes
//! `perf-<side>.data` in the current directory.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ats_p2p::swarm::KeyPair;
use ats_p2p::swarm::hyperdht::{Bootstrap, DhtConfig, Firewall, HyperDht};
use ats_p2p::transfer::{receive_stream, send_stream};
use ats_p2p::wire::{FileHash, Meta, ReceiverConfig, SenderConfig};
use benches::{Usage, mb_per_s, mib, parse_size, self_usage};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// The sender's key seed (the receiver derives the public key from it).
const SENDER_SEED: [u8; 32] = [1; 32];
/// The receiver's key seed.
const RECEIVER_SEED: [u8; 32] = [2; 32];
/// Transfer id (names the receiver's temporary file).
const TRANSFER_ID: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
/// Longest a whole run may take before the bench gives up.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    role: Option<Role>,
    /// File size (1GiB, 256MiB, ...).
    #[arg(long, default_value = "1GiB")]
    size: String,
    /// Runs (the file is generated once).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Where to put the source file and the received copy (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Run this side under `perf record -g` (send or recv).
    #[arg(long)]
    profile: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Child: listen on the DHT and send the file to the first connection.
    #[command(name = "__send", hide = true)]
    Send {
        #[arg(long)]
        bootstrap: SocketAddrV4,
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        hash: String,
    },
    /// Child: connect to the sender and receive into `dir`.
    #[command(name = "__recv", hide = true)]
    Recv {
        #[arg(long)]
        bootstrap: SocketAddrV4,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        size: u64,
        #[arg(long)]
        hash: String,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.role {
        Some(role) => {
            if std::env::var_os("RUST_LOG").is_some() {
                tracing_subscriber::fmt()
                    .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                    .with_writer(std::io::stderr)
                    .init();
            }
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(child(role))
        }
        None => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(orchestrate(args))
        }
    }
}

fn emit(v: Value) {
    println!("{v}");
}

fn usage_json(u: Usage) -> Value {
    json!({"max_rss": u.max_rss, "cpu_s": u.cpu_s})
}

async fn child(role: Role) -> anyhow::Result<()> {
    match role {
        Role::Send {
            bootstrap,
            file,
            hash,
        } => {
            let size = std::fs::metadata(&file)?.len();
            let meta = Meta {
                name: "payload.bin".into(),
                size,
                hash: hash.parse::<FileHash>()?,
                resume: false,
            };
            let dht = Arc::new(HyperDht::bind(DhtConfig::new(LOCAL, vec![bootstrap])).await?);
            let firewall: Firewall = Arc::new(|_| true);
            let mut server = dht
                .listen(KeyPair::from_seed(SENDER_SEED), firewall)
                .await?;
            emit(json!({"event": "listening"}));
            let mut conn = server.accept().await.context("server stopped")?;
            let started = Instant::now();
            let sent =
                send_stream(&mut conn, &file, meta, SenderConfig::default(), |_, _| {}).await?;
            let secs = started.elapsed().as_secs_f64();
            emit(
                json!({"event": "done", "bytes": sent.bytes, "secs": secs, "usage": usage_json(self_usage())}),
            );
            eprintln!("sender stream: {:?}", conn.get_ref().stats());
            server.close().await;
        }
        Role::Recv {
            bootstrap,
            dir,
            size,
            hash,
        } => {
            let meta = Meta {
                name: "payload.bin".into(),
                size,
                hash: hash.parse::<FileHash>()?,
                resume: false,
            };
            let dht = HyperDht::bind(DhtConfig::new(LOCAL, vec![bootstrap])).await?;
            let remote = KeyPair::from_seed(SENDER_SEED).public_key();
            let t0 = Instant::now();
            let mut conn = dht
                .connect(&KeyPair::from_seed(RECEIVER_SEED), &remote)
                .await?;
            let connected = Instant::now();
            let mut first: Option<Duration> = None;
            let trace = std::env::var_os("TRANSFER_TRACE").is_some();
            let mut last_tick = 0;
            let received = receive_stream(
                &mut conn,
                &dir,
                TRANSFER_ID,
                meta,
                ReceiverConfig::new(u64::MAX),
                |bytes, _| {
                    if bytes > 0 && first.is_none() {
                        first = Some(connected.elapsed());
                    }
                    if trace {
                        let ms = connected.elapsed().as_millis();
                        if ms / 100 != last_tick {
                            last_tick = ms / 100;
                            eprintln!("{ms:>6} ms {:>8} MiB", bytes >> 20);
                        }
                    }
                },
            )
            .await?;
            let secs = connected.elapsed().as_secs_f64();
            eprintln!("receiver stream: {:?}", conn.get_ref().stats());
            emit(json!({
                "event": "done",
                "connect_ms": (connected - t0).as_secs_f64() * 1e3,
                "first_data_ms": first.map(|d| d.as_secs_f64() * 1e3),
                "secs": secs,
                "path": received.path,
                "usage": usage_json(self_usage()),
            }));
        }
    }
    Ok(())
}

fn spawn_child(profile: Option<&str>, side: &str, args: &[String]) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let mut cmd = if profile == Some(side) {
        let mut c = Command::new("perf");
        c.args([
            "record",
            "-F",
            "1999",
            "-g",
            "-o",
            &format!("perf-{side}.data"),
            "--",
        ]);
        c.arg(exe);
        c
    } else {
        Command::new(exe)
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    Ok(cmd.spawn()?)
}

async fn next_event(lines: &mut tokio::io::Lines<BufReader<ChildStdout>>) -> anyhow::Result<Value> {
    loop {
        let line = lines.next_line().await?.context("child exited early")?;
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            return Ok(v);
        }
    }
}

fn lines(child: &mut Child) -> anyhow::Result<tokio::io::Lines<BufReader<ChildStdout>>> {
    Ok(BufReader::new(child.stdout.take().context("no stdout")?).lines())
}

#[derive(Debug)]
struct RunResult {
    secs: f64,
    ttfb_ms: f64,
    connect_ms: f64,
    send: Usage,
    recv: Usage,
}

async fn one_run(
    boot: SocketAddrV4,
    src: &Path,
    size: u64,
    hash: &str,
    save: &Path,
    profile: Option<&str>,
) -> anyhow::Result<RunResult> {
    let mut sender = spawn_child(
        profile,
        "send",
        &[
            "__send".into(),
            "--bootstrap".into(),
            boot.to_string(),
            "--file".into(),
            src.display().to_string(),
            "--hash".into(),
            hash.into(),
        ],
    )?;
    let mut s_lines = lines(&mut sender)?;
    let ready = next_event(&mut s_lines).await?;
    if ready["event"] != "listening" {
        bail!("sender: unexpected {ready}");
    }
    let mut receiver = spawn_child(
        profile,
        "recv",
        &[
            "__recv".into(),
            "--bootstrap".into(),
            boot.to_string(),
            "--dir".into(),
            save.display().to_string(),
            "--size".into(),
            size.to_string(),
            "--hash".into(),
            hash.into(),
        ],
    )?;
    let mut r_lines = lines(&mut receiver)?;
    let (s, r) = tokio::join!(next_event(&mut s_lines), next_event(&mut r_lines));
    let (s, r) = (s?, r?);
    sender.wait().await?;
    receiver.wait().await?;
    let path = PathBuf::from(r["path"].as_str().context("no path")?);
    let got = hex::encode(benches::sha256_file(&path)?);
    if got != hash {
        bail!("received file hash {got} != {hash}");
    }
    std::fs::remove_file(&path)?;
    let usage = |v: &Value| Usage {
        max_rss: v["usage"]["max_rss"].as_u64().unwrap_or(0),
        cpu_s: v["usage"]["cpu_s"].as_f64().unwrap_or(0.0),
    };
    Ok(RunResult {
        secs: r["secs"].as_f64().unwrap_or(0.0),
        ttfb_ms: r["first_data_ms"].as_f64().unwrap_or(f64::NAN),
        connect_ms: r["connect_ms"].as_f64().unwrap_or(f64::NAN),
        send: usage(&s),
        recv: usage(&r),
    })
}

async fn orchestrate(args: Args) -> anyhow::Result<()> {
    let size = parse_size(&args.size)?;
    let (dir, _tmp) = benches::work_dir(args.dir.as_deref())?;
    let src = dir.join("source.bin");
    let save = dir.join("incoming");
    eprintln!("generating {} MiB at {}", mib(size), src.display());
    let hash = {
        let src = src.clone();
        hex::encode(tokio::task::spawn_blocking(move || benches::make_file(&src, size, 7)).await??)
    };
    let boot = Bootstrap::spawn(SocketAddrV4::new(LOCAL, 0)).await?;
    println!(
        "{:>4} {:>9} {:>8} {:>9} {:>9} {:>10} {:>10} {:>9} {:>9}",
        "run", "MiB", "MB/s", "conn ms", "TTFB ms", "send RSS", "recv RSS", "send CPU", "recv CPU"
    );
    for run in 1..=args.runs {
        let r = tokio::time::timeout(
            RUN_TIMEOUT,
            one_run(
                boot.addr(),
                &src,
                size,
                &hash,
                &save,
                args.profile.as_deref(),
            ),
        )
        .await
        .context("run timed out")??;
        println!(
            "{:>4} {:>9} {:>8.0} {:>9.0} {:>9.1} {:>10} {:>10} {:>9.2} {:>9.2}",
            run,
            mib(size),
            mb_per_s(size, Duration::from_secs_f64(r.secs)),
            r.connect_ms,
            r.ttfb_ms,
            format!("{}M", mib(r.send.max_rss)),
            format!("{}M", mib(r.recv.max_rss)),
            r.send.cpu_s,
            r.recv.cpu_s,
        );
    }
    boot.destroy().await;
    std::fs::remove_file(&src)?;
    Ok(())
}
