//! The NAT matrix measured: every cell of `ats-p2p-swarm/tests/support/matrix.rs` (NATs
//! consistent/random per router, JS and Rust peers, relays) run `--runs` times in the
//! network-namespace lab, each in a fresh lab; prints per cell the time from process start to
//! `connected` on the client (median/min/max), the path, and the failures.
//!
//! ```text
//! sudo cargo run --release -p benches --bin nat_matrix -- --runs 5            # every cell
//! sudo cargo run --release -p benches --bin nat_matrix -- --runs 5 --only js  # JS↔JS cells
//! cargo run --release -p benches --bin nat_matrix -- --cell rust_consistent_random
//! ```
//!
//! Needs root (network namespaces, iptables) and `npm ci --prefix interop/js`. Rust peers are
//! this binary re-executed inside the namespaces (`ATS_NETLAB_ROLE` set). A cell stops after
//! `--max-failures` failed runs (a cell that cannot connect costs up to a minute per run).

// Lab harness files shared with the tests.
#[path = "../../../ats-p2p-swarm/tests/support/lab_peer.rs"]
mod lab_peer;
#[path = "../../../ats-p2p-swarm/tests/support/matrix.rs"]
mod matrix;
#[path = "../../../ats-p2p-swarm/tests/support/netlab.rs"]
mod netlab;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use clap::Parser;
use matrix::{CELLS, Cell, Imp, Outcome, RustPeer, run_cell};

#[derive(Debug, Parser)]
struct Args {
    /// Runs of each cell.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Only cells whose peers are all JS (`js`), or that have a Rust peer (`rust`).
    #[arg(long)]
    only: Option<String>,
    /// Only the cells with these names (repeatable; see `matrix::CELLS`).
    #[arg(long)]
    cell: Vec<String>,
    /// Stop a cell after this many failed runs.
    #[arg(long, default_value_t = 2)]
    max_failures: usize,
}

/// One cell's runs.
#[derive(Debug, Default)]
struct Row {
    ok: Vec<Outcome>,
    failures: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    // A Rust lab peer inside a namespace.
    if let Some(peer) = lab_peer::PeerArgs::from_env().map_err(anyhow::Error::msg)? {
        return lab_peer::run(&peer).map_err(anyhow::Error::msg);
    }
    let args = Args::parse();
    let cells: Vec<(&str, Cell)> = CELLS
        .iter()
        .copied()
        .filter(|(name, cell)| {
            let all_js = cell.client == Imp::Js && cell.server == Imp::Js;
            let kind_ok = match args.only.as_deref() {
                Some("js") => all_js,
                Some("rust") => !all_js,
                _ => true,
            };
            kind_ok && (args.cell.is_empty() || args.cell.iter().any(|c| c == name))
        })
        .collect();
    if cells.is_empty() {
        bail!("no cell selected");
    }
    let rust = RustPeer {
        program: std::env::current_exe()
            .context("own executable")?
            .display()
            .to_string(),
        args: Vec::new(),
    };

    // Keep each failed run's panic message (first line) for the table, not the backtrace.
    let last_panic: Arc<Mutex<String>> = Arc::default();
    let slot = last_panic.clone();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| {
                info.payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
            })
            .unwrap_or_default();
        eprintln!("run failed: {msg}");
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = msg;
    }));

    let mut rows: BTreeMap<usize, Row> = BTreeMap::new();
    for (i, (name, cell)) in cells.iter().enumerate() {
        let row = rows.entry(i).or_default();
        for run in 1..=args.runs {
            eprintln!("== {name} run {run}/{}", args.runs);
            match catch_unwind(AssertUnwindSafe(|| run_cell(*cell, &rust))) {
                Ok(Some(out)) => row.ok.push(out),
                Ok(None) => bail!("the NAT lab cannot be built here (see SKIP above); run as root"),
                Err(_) => {
                    let msg = last_panic.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    row.failures.push(first_line(&msg));
                    if row.failures.len() >= args.max_failures {
                        eprintln!("== {name}: {} failures, next cell", row.failures.len());
                        break;
                    }
                }
            }
        }
    }

    println!(
        "\n| cell | NATs (client↔server) | client→server | relay | median ms | min | max | server median ms | path | failures |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (i, (name, cell)) in cells.iter().enumerate() {
        let Some(row) = rows.get(&i) else { continue };
        let mut ms: Vec<u64> = row.ok.iter().map(|o| o.client_ms).collect();
        let mut server_ms: Vec<u64> = row.ok.iter().map(|o| o.server_ms).collect();
        ms.sort_unstable();
        server_ms.sort_unstable();
        let stat = |v: &[u64], f: fn(&[u64]) -> Option<u64>| {
            f(v).map_or_else(|| "-".to_owned(), |x| x.to_string())
        };
        let mut paths: Vec<String> = row
            .ok
            .iter()
            .map(|o| format!("{}/{}", o.path, o.server_path))
            .collect();
        paths.sort();
        paths.dedup();
        let tried = row.ok.len() + row.failures.len();
        let failures = if row.failures.is_empty() {
            format!("0/{tried}")
        } else {
            format!("{}/{tried}: {}", row.failures.len(), row.failures[0])
        };
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {failures} |",
            cell.nats(),
            cell.imps(),
            cell.relay.name(),
            stat(&ms, median),
            stat(&ms, |v| v.first().copied()),
            stat(&ms, |v| v.last().copied()),
            stat(&server_ms, median),
            if paths.is_empty() {
                "-".to_owned()
            } else {
                paths.join(", ")
            },
        );
    }
    Ok(())
}

/// Median of a sorted slice (upper middle for an even count).
fn median(sorted: &[u64]) -> Option<u64> {
    sorted.get(sorted.len() / 2).copied()
}

/// The first line of a failure message, shortened for a table cell.
fn first_line(msg: &str) -> String {
    let line = msg.lines().next().unwrap_or("").replace('|', "/");
    match line.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line,
    }
}
