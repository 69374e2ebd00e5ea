//! End-to-end benchmark of the real product: the `ats-p2p` CLI (hub + local HyperDHT bootstrap,
//! a `listen --once` receiver and a `send` sender, each its own process) moves a generated file
//! on loopback; then the JavaScript reference (`benches/js/bench.js`: two npm hyperswarm peers,
//! the same frame protocol, SHA-256 checked) moves a file of the same size. Prints a table with
//! both and the ratio.
//!
//! ```text
//! cargo run --release -p benches --bin e2e -- --size 1GiB [--runs 3] [--no-js]
//! ```
//! Needs the release CLI (`cargo build --release -p ats-p2p-cli`; built on demand when it is
//! missing next to this binary) and, for the JS reference, node 20 (`npm ci --prefix benches/js`
//! runs on demand when `node_modules` is missing).
//!
//! Measured from the NDJSON events as they arrive (timestamped here): accept→ACK (the receiver's
//! `file` event, after which it accepts at once, to the sender's `transfer_complete`), connection
//! →ACK (receiver `transfer_start` → sender `transfer_complete`, the JS reference's definition),
//! the sender's startup and pre-hash (spawn → `offer_sent`), time to the first DATA byte
//! (receiver `transfer_start` → first `progress` with bytes > 0), and each side's peak RSS and
//! CPU seconds (`getrusage(RUSAGE_CHILDREN)` in a small wrapper process around each CLI process).
//!
//! The latency an agent feels is the whole `send` command: spawn → exit (the wrapper's usage
//! line, printed as soon as the CLI exits). Its steps, from the same timestamps: spawn →
//! `offer_sent`, `offer_sent` → the receiver's `file`, `file` → the receiver's `transfer_start`
//! (claim, accept, announce, lookup, connect), `transfer_start` → the sender's
//! `transfer_complete` (frames, fsync, ACK) and that → exit (farewell, unannounce, shutdown).
//! With `--runs` > 1 a summary gives the median and the maximum of each.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use benches::{Usage, children_usage, mb_per_s, mib, parse_size};
use clap::Parser;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Longest one transfer (either implementation) may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);
/// Longest wait for a ready line (hub, listener).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines buffered per child before its reader waits.
const LINE_QUEUE: usize = 1024;
/// Wrapper mode: `e2e __wrap <program> <args>...`.
const WRAP: &str = "__wrap";

#[derive(Debug, Parser)]
struct Args {
    /// File size (1GiB, 256MiB, ...).
    #[arg(long, default_value = "1GiB")]
    size: String,
    /// Runs of each implementation.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Skip the JavaScript reference.
    #[arg(long)]
    no_js: bool,
    /// Skip our implementation (only the JavaScript reference).
    #[arg(long)]
    no_rust: bool,
    /// The `ats-p2p` binary (default: next to this binary, built if missing).
    #[arg(long)]
    ats_p2p: Option<PathBuf>,
    /// Work directory for the files (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(WRAP) {
        return wrap(argv.get(2..).unwrap_or(&[]));
    }
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(run(args))
}

/// Runs the command with this process's stdio, waits for it, then prints its resource usage as
/// one JSON line on stdout and exits with its status.
fn wrap(cmd: &[String]) -> anyhow::Result<()> {
    let (prog, rest) = cmd.split_first().context("__wrap needs a command")?;
    let status = std::process::Command::new(prog).args(rest).status()?;
    let u = children_usage();
    println!(
        "{}",
        json!({"event": "__usage", "max_rss": u.max_rss, "cpu_s": u.cpu_s, "code": status.code()})
    );
    std::process::exit(status.code().unwrap_or(1));
}

/// A child process whose stdout lines arrive timestamped.
struct Proc {
    name: &'static str,
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    seen: Vec<(Instant, Value)>,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command) -> anyhow::Result<Self> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("spawning {name}"))?;
        let (tx, lines) = mpsc::channel(LINE_QUEUE);
        let out = child.stdout.take().context("stdout")?;
        let tx2 = tx.clone();
        tokio::spawn(async move {
            let mut r = BufReader::new(out).lines();
            while let Ok(Some(l)) = r.next_line().await {
                if tx.send((Instant::now(), l)).await.is_err() {
                    break;
                }
            }
        });
        let err = child.stderr.take().context("stderr")?;
        tokio::spawn(async move {
            let mut r = BufReader::new(err).lines();
            while let Ok(Some(l)) = r.next_line().await {
                if std::env::var_os("E2E_VERBOSE").is_some() {
                    eprintln!("[{name}] {l}");
                }
            }
            drop(tx2);
        });
        Ok(Self {
            name,
            child,
            lines,
            seen: Vec::new(),
        })
    }

    /// The next JSON line (non-JSON lines are skipped); `None` at the end of the output.
    async fn next(&mut self) -> Option<(Instant, Value)> {
        while let Some((t, l)) = self.lines.recv().await {
            if std::env::var_os("E2E_VERBOSE").is_some() {
                eprintln!("[{}] {l}", self.name);
            }
            if let Ok(v) = serde_json::from_str::<Value>(&l) {
                self.seen.push((t, v.clone()));
                return Some((t, v));
            }
        }
        None
    }

    /// Reads until an event named `event`; fails on `transfer_failed` or the end of output.
    async fn wait_event(&mut self, event: &str) -> anyhow::Result<(Instant, Value)> {
        loop {
            let Some((t, v)) = self.next().await else {
                bail!("{} ended before {event}", self.name);
            };
            if v["event"] == event {
                return Ok((t, v));
            }
            if v["event"] == "transfer_failed" {
                bail!("{} failed: {v}", self.name);
            }
        }
    }

    /// Reads to the end of the output and returns the wrapper's usage line and when it came
    /// (as soon as the CLI exited).
    async fn finish(&mut self) -> anyhow::Result<(Usage, Instant)> {
        let mut usage = None;
        while let Some((t, v)) = self.next().await {
            if v["event"] == "__usage" {
                usage = Some((
                    Usage {
                        max_rss: v["max_rss"].as_u64().unwrap_or(0),
                        cpu_s: v["cpu_s"].as_f64().unwrap_or(0.0),
                    },
                    t,
                ));
            }
        }
        let status = self.child.wait().await?;
        if !status.success() {
            bail!("{} exited with {status}", self.name);
        }
        usage.with_context(|| format!("{}: no usage line", self.name))
    }

    fn first(&self, event: &str, pred: impl Fn(&Value) -> bool) -> Option<Instant> {
        self.seen
            .iter()
            .find(|(_, v)| v["event"] == event && pred(v))
            .map(|(t, _)| *t)
    }
}

/// Finds (or builds) the release `ats-p2p` binary.
fn locate_cli(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("binary has no directory")?;
    let cli = dir.join("ats-p2p");
    if !cli.exists() {
        eprintln!("building the release CLI (cargo build --release -p ats-p2p-cli)");
        let status = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
            .args(["build", "--release", "-p", "ats-p2p-cli"])
            .status()?;
        if !status.success() || !cli.exists() {
            bail!("could not build {}", cli.display());
        }
    }
    Ok(cli)
}

/// The `__wrap` command around `program`.
fn wrapped(program: &Path) -> anyhow::Result<Command> {
    let mut c = Command::new(std::env::current_exe()?);
    c.arg(WRAP).arg(program);
    Ok(c)
}

#[derive(Debug, Default, Clone)]
struct Row {
    name: String,
    mbps_accept: Option<f64>,
    mbps_conn: f64,
    accept_to_ack_s: Option<f64>,
    conn_to_ack_s: f64,
    prehash_s: Option<f64>,
    ttfb_ms: f64,
    accept_ttfb_ms: Option<f64>,
    send: Usage,
    recv: Usage,
    /// The whole `send` command and its steps (see the module docs), ours only.
    latency: Option<Latency>,
}

/// The whole `send` command, spawn → exit, and its steps, in milliseconds.
#[derive(Debug, Default, Clone, Copy)]
struct Latency {
    total: f64,
    spawn_offer: f64,
    offer_file: f64,
    file_start: f64,
    start_ack: f64,
    ack_exit: f64,
}

impl Latency {
    const HEADERS: [&'static str; 6] = [
        "send total",
        "spawn→offer",
        "offer→file",
        "file→start",
        "start→ACK",
        "ACK→exit",
    ];

    fn values(&self) -> [f64; 6] {
        [
            self.total,
            self.spawn_offer,
            self.offer_file,
            self.file_start,
            self.start_ack,
            self.ack_exit,
        ]
    }
}

async fn run_rust(
    cli: &Path,
    dir: &Path,
    src: &Path,
    size: u64,
    hash: &str,
) -> anyhow::Result<Row> {
    let hub_db = dir.join("hub.sqlite");
    let _ = std::fs::remove_file(&hub_db);
    let mut hub_cmd = Command::new(cli);
    hub_cmd
        .args([
            "hub",
            "--listen",
            "127.0.0.1:0",
            "--bootstrap-listen",
            "127.0.0.1:0",
        ])
        .args(["--json", "--db"])
        .arg(&hub_db);
    let mut hub = Proc::spawn("hub", hub_cmd)?;
    let (_, ready) = tokio::time::timeout(READY_TIMEOUT, hub.wait_event("hub_ready"))
        .await
        .context("hub not ready")??;
    let url = ready["ats_url"].as_str().context("ats_url")?.to_owned();
    let boot = ready["bootstrap"].as_str().context("bootstrap")?.to_owned();

    // Ephemeral keys change every run: start each run without remembered keys.
    for actor in ["bench-a", "bench-b"] {
        let _ = std::fs::remove_file(dir.join(format!("known-{actor}.json")));
    }
    let save = dir.join("save");
    std::fs::create_dir_all(&save)?;
    let node = |sub: &str, actor: &str| -> anyhow::Result<Command> {
        let mut c = wrapped(cli)?;
        c.args([sub, "--json", "--host", "127.0.0.1", "--ephemeral"])
            .args(["--bootstrap", &boot, "--ats-url", &url, "--actor-id", actor])
            .arg("--known-keys")
            .arg(dir.join(format!("known-{actor}.json")));
        Ok(c)
    };
    let mut lc = node("listen", "bench-b")?;
    lc.arg("--once").arg("--save-dir").arg(&save);
    let mut rx = Proc::spawn("listen", lc)?;
    tokio::time::timeout(READY_TIMEOUT, rx.wait_event("listening"))
        .await
        .context("listener not ready")??;

    let mut sc = node("send", "bench-a")?;
    sc.arg(src).args(["--to", "bench-b"]);
    let spawned = Instant::now();
    let mut tx = Proc::spawn("send", sc)?;
    let (t_offer, _) = tx.wait_event("offer_sent").await?;
    let (t_ack, _) = tx.wait_event("transfer_complete").await?;
    let (_, done) = rx.wait_event("transfer_complete").await?;
    let (send_usage, t_exit) = tx.finish().await?;
    let (recv_usage, _) = rx.finish().await?;
    drop(hub);

    let t_file = rx.first("file", |_| true);
    let t_start = rx
        .first("transfer_start", |_| true)
        .context("no transfer_start from the receiver")?;
    let t_first = rx
        .first("progress", |v| v["bytes"].as_u64().unwrap_or(0) > 0)
        .context("no progress from the receiver")?;
    // Verify the saved file.
    // `file_path` is where the file was saved (`path` is the connection's path).
    let path = done["file_path"]
        .as_str()
        .map(PathBuf::from)
        .unwrap_or_else(|| save.join(src.file_name().unwrap_or_default()));
    let got = hex::encode(benches::sha256_file(&path).with_context(|| path.display().to_string())?);
    if got != hash {
        bail!(
            "saved file {} has SHA-256 {got}, want {hash}",
            path.display()
        );
    }
    std::fs::remove_file(&path)?;
    let conn_to_ack = t_ack.saturating_duration_since(t_start);
    let accept_to_ack = t_file.map(|t| t_ack.saturating_duration_since(t));
    let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1e3;
    let latency = t_file.map(|t_file| Latency {
        total: ms(spawned, t_exit),
        spawn_offer: ms(spawned, t_offer),
        offer_file: ms(t_offer, t_file),
        file_start: ms(t_file, t_start),
        start_ack: ms(t_start, t_ack),
        ack_exit: ms(t_ack, t_exit),
    });
    Ok(Row {
        name: "ats-p2p (Rust CLI)".into(),
        mbps_accept: accept_to_ack.map(|d| mb_per_s(size, d)),
        mbps_conn: mb_per_s(size, conn_to_ack),
        accept_to_ack_s: accept_to_ack.map(|d| d.as_secs_f64()),
        conn_to_ack_s: conn_to_ack.as_secs_f64(),
        prehash_s: Some(t_offer.saturating_duration_since(spawned).as_secs_f64()),
        ttfb_ms: t_first.saturating_duration_since(t_start).as_secs_f64() * 1e3,
        accept_ttfb_ms: t_file.map(|t| t_first.saturating_duration_since(t).as_secs_f64() * 1e3),
        send: send_usage,
        recv: recv_usage,
        latency,
    })
}

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

async fn run_js(size: u64) -> anyhow::Result<Row> {
    let js = js_dir();
    if !js.join("node_modules").exists() {
        eprintln!(
            "installing the JS reference (npm ci --prefix {})",
            js.display()
        );
        let status = Command::new("npm")
            .arg("ci")
            .arg("--prefix")
            .arg(&js)
            .status()
            .await?;
        if !status.success() {
            bail!("npm ci --prefix {} failed", js.display());
        }
    }
    let out = Command::new("node")
        .arg(js.join("bench.js"))
        .args(["--size", &size.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .await?;
    if !out.status.success() {
        bail!("the JS reference failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .context("no JSON line from bench.js")?;
    let usage = |s: &Value| Usage {
        max_rss: s["peakRssBytes"].as_u64().unwrap_or(0),
        cpu_s: s["cpuSeconds"].as_f64().unwrap_or(0.0),
    };
    Ok(Row {
        name: "JS hyperswarm".into(),
        mbps_accept: None,
        mbps_conn: v["mbPerSec"].as_f64().unwrap_or(0.0),
        accept_to_ack_s: None,
        conn_to_ack_s: v["seconds"].as_f64().unwrap_or(0.0),
        prehash_s: v["senderPreHashSeconds"].as_f64(),
        ttfb_ms: v["ttfbMs"].as_f64().unwrap_or(f64::NAN),
        accept_ttfb_ms: None,
        send: usage(&v["sender"]),
        recv: usage(&v["receiver"]),
        latency: None,
    })
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.prec$}"))
}

fn print_table(size: u64, rows: &[Row]) {
    println!(
        "\n{} MiB, loopback, verified file on disk\n\
         {:<20} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        mib(size),
        "implementation",
        "MB/s",
        "conn→ACK",
        "acc MB/s",
        "acc→ACK",
        "pre-hash",
        "TTFB",
        "acc→DATA",
        "send RSS",
        "recv RSS",
        "send CPU",
        "recv CPU"
    );
    println!(
        "{:<20} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "", "s", "", "s", "s", "ms", "ms", "MiB", "MiB", "s", "s"
    );
    for r in rows {
        println!(
            "{:<20} {:>6.0} {:>8.2} {:>8} {:>8} {:>8} {:>8.1} {:>9} {:>9} {:>9} {:>9.2} {:>9.2}",
            r.name,
            r.mbps_conn,
            r.conn_to_ack_s,
            opt(r.mbps_accept, 0),
            opt(r.accept_to_ack_s, 2),
            opt(r.prehash_s, 2),
            r.ttfb_ms,
            opt(r.accept_ttfb_ms, 0),
            mib(r.send.max_rss),
            mib(r.recv.max_rss),
            r.send.cpu_s,
            r.recv.cpu_s,
        );
    }
    print_latency(rows);
    let best = |pred: &dyn Fn(&Row) -> bool| {
        rows.iter()
            .filter(|r| pred(r))
            .map(|r| r.mbps_conn)
            .fold(f64::NAN, f64::max)
    };
    let ours = best(&|r| !r.name.starts_with("JS"));
    let js = best(&|r| r.name.starts_with("JS"));
    if ours.is_finite() && js.is_finite() && js > 0.0 {
        println!("ratio (best run, connection→ACK MB/s): {:.1}x", ours / js);
    }
}

/// The whole `send` command per run, then the median and the maximum of each step.
fn print_latency(rows: &[Row]) {
    let runs: Vec<Latency> = rows.iter().filter_map(|r| r.latency).collect();
    if runs.is_empty() {
        return;
    }
    let line = |label: &str, v: [f64; 6]| {
        let cells: Vec<String> = v.iter().map(|x| format!("{x:>11.1}")).collect();
        println!("{label:<8} {}", cells.join(" "));
    };
    println!("\nthe `send` command, ms (spawn → exit, and its steps)");
    let heads: Vec<String> = Latency::HEADERS
        .iter()
        .map(|h| format!("{h:>11}"))
        .collect();
    println!("{:<8} {}", "run", heads.join(" "));
    for (i, l) in runs.iter().enumerate() {
        line(&format!("{}", i + 1), l.values());
    }
    let column = |i: usize| -> Vec<f64> {
        let mut c: Vec<f64> = runs.iter().map(|l| l.values()[i]).collect();
        c.sort_by(f64::total_cmp);
        c
    };
    let median = |c: &[f64]| {
        let n = c.len();
        if n % 2 == 1 {
            c[n / 2]
        } else {
            (c[n / 2 - 1] + c[n / 2]) / 2.0
        }
    };
    line("median", std::array::from_fn(|i| median(&column(i))));
    line("max", std::array::from_fn(|i| column(i)[runs.len() - 1]));
}

async fn run(args: Args) -> anyhow::Result<()> {
    let size = parse_size(&args.size)?;
    let (dir, _tmp) = benches::work_dir(args.dir.as_deref())?;
    let mut rows = Vec::new();
    if !args.no_rust {
        let cli = locate_cli(args.ats_p2p.clone())?;
        let src = dir.join("payload.bin");
        eprintln!("generating {} MiB at {}", mib(size), src.display());
        let hash = {
            let src = src.clone();
            hex::encode(
                tokio::task::spawn_blocking(move || benches::make_file(&src, size, 7)).await??,
            )
        };
        for run in 1..=args.runs {
            let row = tokio::time::timeout(RUN_TIMEOUT, run_rust(&cli, &dir, &src, size, &hash))
                .await
                .context("the Rust run timed out")??;
            match row.latency {
                Some(l) => eprintln!(
                    "rust run {run}: {:.0} MB/s, send {:.1} ms",
                    row.mbps_conn, l.total
                ),
                None => eprintln!("rust run {run}: {:.0} MB/s", row.mbps_conn),
            }
            rows.push(row);
        }
        std::fs::remove_file(&src)?;
    }
    if !args.no_js {
        for run in 1..=args.runs {
            let row = tokio::time::timeout(RUN_TIMEOUT, run_js(size))
                .await
                .context("the JS run timed out")??;
            eprintln!("js run {run}: {:.0} MB/s", row.mbps_conn);
            rows.push(row);
        }
    }
    print_table(size, &rows);
    Ok(())
}
