//! End-to-end benchmark matrix (issue #17): the real product against npm hyperswarm and sendme,
//! at several file sizes, each tool moving the same generated file from one process to another
//! on loopback and, with `--veth`, over a veth pair between two network namespaces (MTU 1500).
//!
//! ```text
//! cargo run --release -p benches --bin e2e -- [--sizes 1KiB,64MiB,1GiB] [--runs 3] [--veth]
//!     [--no-js] [--no-sendme] [--no-rust]
//! ```
//!
//! - **ats-p2p**: `ats-p2p hub` (ATS server + HyperDHT bootstrap) and `send` on side A,
//!   `listen --once` on side B (the release CLI next to this binary, built if missing).
//! - **JS hyperswarm**: `benches/js/bench.js` (testnet + sending peer on A, receiving peer on B;
//!   `npm ci` on demand).
//! - **sendme**: `sendme send` on A, `sendme receive <ticket>` on B, no relays; only when
//!   `sendme` is on PATH (the table says why not otherwise).
//!
//! Every received file is hashed again here (SHA-256) against the source. Per run and tool: the
//! connection → end rate (the closest each tool defines, see `report::Row`), the whole command
//! (ours: `send` spawn → exit; sendme: `receive` spawn → exit, and the sender's time to its
//! ticket; JS: the sending peer process), CPU seconds and peak RSS per side (`getrusage` of a
//! small `__wrap` process around each CLI process; JS: `process.resourceUsage()`). Then ours'
//! `send` steps and a summary against the issue's goals. Output is Markdown.

mod js;
mod ours;
mod proc;
mod report;
mod sendme;
mod veth;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use benches::{mib, parse_size};
use clap::Parser;

use crate::proc::{Side, WRAP};
use crate::report::{Row, Tool};

/// Longest one transfer (any tool) may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

#[derive(Debug, Parser)]
struct Args {
    /// File sizes, comma-separated (1KiB, 64MiB, 1GiB, ...).
    #[arg(
        long,
        alias = "size",
        value_delimiter = ',',
        default_value = "1KiB,64MiB,1GiB"
    )]
    sizes: Vec<String>,
    /// Runs of each tool at each size.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// After loopback, the same over a veth pair between two network namespaces (root).
    #[arg(long)]
    veth: bool,
    /// Only the veth pair, not loopback.
    #[arg(long)]
    veth_only: bool,
    /// Skip the JavaScript reference.
    #[arg(long)]
    no_js: bool,
    /// Skip sendme even when it is on PATH.
    #[arg(long)]
    no_sendme: bool,
    /// Skip our implementation.
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
        return proc::wrap(argv.get(2..).unwrap_or(&[]));
    }
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(async {
            // Ending on a signal drops the namespaces and the children (kill on drop).
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                done = run(args) => done,
                _ = tokio::signal::ctrl_c() => bail!("interrupted"),
                _ = term.recv() => bail!("terminated"),
            }
        })
}

/// Checks that the file at `path` has SHA-256 `hash` (hex).
pub(crate) fn verify(path: &Path, hash: &str) -> anyhow::Result<()> {
    let got = hex::encode(benches::sha256_file(path).with_context(|| path.display().to_string())?);
    if got != hash {
        bail!(
            "received file {} has SHA-256 {got}, want {hash}",
            path.display()
        );
    }
    Ok(())
}

/// The tools to run, with their programs; a tool that cannot run has the reason instead.
struct Tools {
    cli: Option<PathBuf>,
    js: Result<(), String>,
    sendme: Result<PathBuf, String>,
}

impl Tools {
    async fn find(args: &Args) -> anyhow::Result<Self> {
        let cli = if args.no_rust {
            None
        } else {
            Some(ours::locate_cli(args.ats_p2p.clone())?)
        };
        let js = if args.no_js {
            Err("skipped (--no-js)".to_owned())
        } else {
            js::prepare()
                .await
                .map_err(|e| format!("unavailable: {e:#}"))
        };
        let sendme = if args.no_sendme {
            Err("skipped (--no-sendme)".to_owned())
        } else {
            sendme::locate()
        };
        Ok(Self { cli, js, sendme })
    }
}

/// Every run of every tool at every size between sides `a` and `b`, then the tables.
async fn matrix(
    args: &Args,
    tools: &Tools,
    dir: &Path,
    mode: &str,
    sides: (&Side, &Side),
) -> anyhow::Result<()> {
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<(u64, String)> = Vec::new();
    // Why a tool is not run (any more) in this mode: missing, skipped, or its first run here
    // failed (a tool that worked once here is run again after a failure, which is noted).
    let mut down = [
        (Tool::Ours, None),
        (Tool::Js, tools.js.clone().err()),
        (Tool::Sendme, tools.sendme.clone().err()),
    ];
    for size_arg in &args.sizes {
        let size = parse_size(size_arg)?;
        let src = dir.join("payload.bin");
        eprintln!("{mode}: generating {} MiB", mib(size));
        let hash = {
            let src = src.clone();
            hex::encode(
                tokio::task::spawn_blocking(move || benches::make_file(&src, size, 7)).await??,
            )
        };
        for run in 1..=args.runs {
            for (tool, why_not) in &mut down {
                if why_not.is_some() {
                    continue;
                }
                let row = match (*tool, &tools.cli, &tools.sendme) {
                    (Tool::Ours, Some(cli), _) => {
                        within(ours::run(cli, dir, sides, &src, size, &hash)).await
                    }
                    (Tool::Ours, None, _) => continue,
                    (Tool::Js, _, _) => within(js::run(sides, &src, size, &hash)).await,
                    (Tool::Sendme, _, Ok(sendme)) => {
                        within(sendme::run(sendme, dir, sides, &src, size, &hash)).await
                    }
                    (Tool::Sendme, _, Err(_)) => continue,
                };
                let worked_before = rows.iter().any(|r| r.tool == *tool);
                if let Some(reason) = record(&mut rows, &mut notes, size, run, *tool, row)
                    && !worked_before
                {
                    *why_not = Some(format!("not run after its failure ({reason})"));
                }
            }
        }
        std::fs::remove_file(&src)?;
    }
    let uptime = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    // CPU pressure: the share of time some runnable task waited for a core (other sessions
    // on the same cores show here even where the load average misses them).
    let pressure = std::fs::read_to_string("/proc/pressure/cpu").unwrap_or_default();
    let load: Vec<&str> = uptime.split_whitespace().take(3).collect();
    println!(
        "\n# {mode}\n\nat the end: load average (1, 5, 15 min) {}; CPU pressure `{}`",
        load.join(" "),
        pressure.lines().next().unwrap_or("unavailable")
    );
    let mut general = Vec::new();
    if let Ok(s) = &tools.sendme {
        general.push(format!("sendme: {}", sendme::version(s)));
    }
    for size_arg in &args.sizes {
        let size = parse_size(size_arg)?;
        let mut here: Vec<String> = notes
            .iter()
            .filter(|(s, _)| *s == size)
            .map(|(_, n)| n.clone())
            .collect();
        here.extend(general.iter().cloned());
        for (tool, why_not) in &down {
            if let Some(reason) = why_not
                && !rows.iter().any(|r| r.tool == *tool && r.size == size)
            {
                here.push(format!("{}: {reason}", tool.label()));
            }
        }
        report::print_size(mode, size, &rows, &here);
    }
    report::print_goals(mode, &rows);
    Ok(())
}

async fn within(run: impl Future<Output = anyhow::Result<Row>>) -> anyhow::Result<Row> {
    tokio::time::timeout(RUN_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| bail!("timed out after {RUN_TIMEOUT:?}"))
}

/// Keeps a run's row, or notes its failure (printed with the tables) and returns the reason.
fn record(
    rows: &mut Vec<Row>,
    notes: &mut Vec<(u64, String)>,
    size: u64,
    run: usize,
    tool: Tool,
    row: anyhow::Result<Row>,
) -> Option<String> {
    match row {
        Ok(mut r) => {
            r.run = run;
            eprintln!(
                "{} run {run}: {:.0} MB/s conn, whole {:.1} ms",
                tool.label(),
                r.conn_mbps(),
                r.whole_ms
            );
            rows.push(r);
            None
        }
        Err(e) => {
            let reason = format!("run {run} failed: {e:#}");
            eprintln!("{}: {reason}", tool.label());
            notes.push((size, format!("{} {reason}", tool.label())));
            Some(reason)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (dir, _tmp) = benches::work_dir(args.dir.as_deref())?;
    let tools = Tools::find(&args).await?;
    if !args.veth_only {
        let lo = Side::loopback();
        matrix(&args, &tools, &dir, "loopback", (&lo, &lo)).await?;
    }
    if args.veth || args.veth_only {
        let pair = veth::Pair::create()?;
        let (a, b) = pair.sides();
        matrix(&args, &tools, &dir, "veth, MTU 1500", (&a, &b)).await?;
    }
    Ok(())
}
