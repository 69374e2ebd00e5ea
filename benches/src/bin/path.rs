//! UDX over real paths between network namespaces: our UDX (`ats-p2p-swarm`) against npm
//! `udx-native` on the same path, sender and receiver each its own process in its own namespace,
//! a router namespace between them with a `tc tbf` rate limit, random loss (`iptables -m
//! statistic`) and a userspace delay relay (this kernel has no `netem`). See
//! `benches/src/path_lab.rs` for the topology and the cells.
//!
//! ```text
//! sudo cargo run --release -p benches --bin path                       # every cell, ours + JS
//! sudo cargo run --release -p benches --bin path -- --cells 200M_loss1_rtt50 --runs 3
//! sudo cargo run --release -p benches --bin path -- --size 16MiB --no-js --cc bbr,newreno
//! cargo run --release -p benches --bin path -- relay-bench              # the relay's own rate
//! ```
//!
//! Needs root, iproute2, iptables, and `npm ci --prefix interop/js` for the JS peers (or
//! `--no-js`). The peers are `path peer` (this binary, one raw UDX stream) and
//! `benches/path-js/udx-peer.js`; the relay is `path relay` in the router namespace.

use std::io::BufRead;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use ats_p2p_swarm::udx::CongestionControl;
use benches::delay_line::DelayLineLimits;
use benches::delay_relay::{self, Relay, RelayConfig};
use benches::netns::{self, NsChild};
use benches::path_lab::{A_ADDR, B_ADDR, CELLS, Cell, PathLab, R_A_ADDR, R_B_ADDR, RouterDrops};
use benches::{parse_size, udx_path_peer};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Cells to run, comma-separated (default: all): clean, loss1, 200M, 200M_loss1,
    /// 200M_rtt50, 200M_loss1_rtt50.
    #[arg(long, value_delimiter = ',')]
    cells: Vec<String>,
    /// Runs of each implementation per cell.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Bytes sent per run, after connect (`64MiB`, `100MB`, ...).
    #[arg(long, default_value = "64MiB")]
    size: String,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 180)]
    timeout: u64,
    /// Ours only (no udx-native peers).
    #[arg(long)]
    no_js: bool,
    /// Our congestion controllers to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "bbr")]
    cc: Vec<CcArg>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// One Rust UDX peer (driven over stdin/stdout by the benchmark).
    Peer {
        #[arg(long)]
        bind: IpAddr,
        /// Congestion controller of what this peer sends.
        #[arg(long, value_enum, default_value = "bbr")]
        cc: CcArg,
    },
    /// The delay relay (run in the router namespace by the benchmark); stops at stdin EOF and
    /// prints its counters.
    Relay {
        #[arg(long)]
        a_bind: SocketAddr,
        #[arg(long)]
        b_bind: SocketAddr,
        #[arg(long)]
        a_peer: SocketAddr,
        #[arg(long)]
        b_peer: SocketAddr,
        /// One-way delay, microseconds.
        #[arg(long)]
        delay_us: u64,
    },
    /// The relay's own forwarding rate on loopback: flat out, then paced at `--rate`.
    RelayBench {
        #[arg(long, default_value_t = 5)]
        secs: u64,
        /// One-way delay, milliseconds.
        #[arg(long, default_value_t = 25)]
        delay_ms: u64,
        /// Datagram size, bytes (a full UDX data packet at MTU 1500: 1472).
        #[arg(long, default_value_t = 1472)]
        size: usize,
        /// Datagrams/s of the paced run (200 Mbit/s of 1472-byte datagrams: ~17 000).
        #[arg(long, default_value_t = 17_000)]
        rate: u64,
    },
}

/// Our congestion controllers, on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CcArg {
    Bbr,
    Newreno,
}

impl CcArg {
    fn flag(self) -> &'static str {
        match self {
            Self::Bbr => "bbr",
            Self::Newreno => "newreno",
        }
    }
}

impl From<CcArg> for CongestionControl {
    fn from(cc: CcArg) -> Self {
        match cc {
            CcArg::Bbr => Self::Bbr,
            CcArg::Newreno => Self::NewReno,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Peer { bind, cc }) => udx_path_peer::run(bind, cc.into()),
        Some(Cmd::Relay {
            a_bind,
            b_bind,
            a_peer,
            b_peer,
            delay_us,
        }) => relay(RelayConfig {
            a_bind,
            b_bind,
            a_peer,
            b_peer,
            delay: Duration::from_micros(delay_us),
            limits: DelayLineLimits::default(),
        }),
        Some(Cmd::RelayBench {
            secs,
            delay_ms,
            size,
            rate,
        }) => relay_bench(
            Duration::from_secs(secs),
            Duration::from_millis(delay_ms),
            size,
            rate,
        ),
        None => bench(&cli.bench),
    }
}

/// `path relay`: prints `{"aPort", "bPort"}`, relays until stdin closes, prints the counters.
fn relay(cfg: RelayConfig) -> anyhow::Result<()> {
    let relay = Relay::start(cfg)?;
    println!(
        "{}",
        json!({"aPort": relay.a_addr().port(), "bPort": relay.b_addr().port()})
    );
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
    }
    let (ab, ba) = relay.stop();
    println!("{}", json!({"aToB": ab.to_json(), "bToA": ba.to_json()}));
    Ok(())
}

fn relay_bench(secs: Duration, delay: Duration, size: usize, rate: u64) -> anyhow::Result<()> {
    println!(
        "delay relay on 127.0.0.1, one direction, {size}-byte datagrams, {} ms one-way, {} s",
        delay.as_millis(),
        secs.as_secs()
    );
    println!(
        "| offered | sent/s | delivered/s | Mbit/s | dropped (line full) | max late ms | mean late µs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for paced in [None, Some(rate)] {
        let r = delay_relay::measure_max_rate(delay, size, secs, paced)?;
        let per_s = r.delivered_per_s();
        println!(
            "| {} | {:.0} | {per_s:.0} | {:.0} | {} | {:.2} | {:.0} |",
            paced.map_or("flat out".to_owned(), |r| format!("{r}/s")),
            r.offered as f64 / r.elapsed.as_secs_f64(),
            per_s * size as f64 * 8.0 / 1e6,
            r.relay.line.dropped_full,
            r.relay.line.max_late.as_secs_f64() * 1e3,
            r.relay.mean_late_us(),
        );
    }
    Ok(())
}

/// Which UDX a peer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Imp {
    /// Ours, the sender with this congestion controller.
    Ours(CcArg),
    Js,
}

impl Imp {
    fn name(self) -> &'static str {
        match self {
            Self::Ours(CcArg::Bbr) => "ours (BBR)",
            Self::Ours(CcArg::Newreno) => "ours (NewReno)",
            Self::Js => "udx-native",
        }
    }
}

/// The JS peer script, and a check that its dependency is installed.
fn js_peer() -> anyhow::Result<PathBuf> {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    if !root.join("interop/js/node_modules/udx-native").exists() {
        bail!("udx-native missing: run `npm ci --prefix interop/js` (or pass --no-js)");
    }
    Ok(root.join("benches/path-js/udx-peer.js"))
}

fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    if let Err(e) = netns::check_available() {
        bail!("the real-path benchmark cannot run here: {e:#}");
    }
    netns::cleanup_stale();
    let size = parse_size(&args.size)?;
    let cells: Vec<Cell> = if args.cells.is_empty() {
        CELLS.to_vec()
    } else {
        args.cells
            .iter()
            .map(|n| Cell::by_name(n).with_context(|| format!("no cell {n:?}")))
            .collect::<anyhow::Result<_>>()?
    };
    let mut imps: Vec<Imp> = args.cc.iter().map(|&cc| Imp::Ours(cc)).collect();
    let js = if args.no_js { None } else { Some(js_peer()?) };
    if js.is_some() {
        imps.push(Imp::Js);
    }
    let exe = std::env::current_exe()?;
    let runner = Runner {
        exe,
        js,
        size,
        timeout: Duration::from_secs(args.timeout),
    };
    println!(
        "UDX, one raw stream, {} after connect, a → r → b over veth (MTU 1500)",
        bytesize::ByteSize(size)
    );
    println!(
        "| cell | impl | MB/s | % of limit | retransmits | RTOs | loss drops a→b / b→a | queue drops a→b / b→a | send CPU s | recv CPU s | relay late a→b mean / max ms |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for cell in &cells {
        let lab = PathLab::build(cell).with_context(|| format!("building cell {}", cell.name))?;
        for &imp in &imps {
            for _ in 0..args.runs {
                let before = lab.drops()?;
                let row = match runner.run(&lab, cell, imp) {
                    Ok(o) => o.row(cell, size, lab.drops()?.since(&before)),
                    Err(e) => {
                        eprintln!("{} {}: {e:#}", cell.name, imp.name());
                        let timed_out = e
                            .downcast_ref::<netns::NoOutput>()
                            .is_some_and(|n| n.timed_out.is_some());
                        // Too slow or stalled: the rate was below size / timeout.
                        let what = if timed_out {
                            let bound = size as f64 / 1e6 / args.timeout as f64;
                            format!("< {bound:.1} (not done in {} s)", args.timeout)
                        } else {
                            "failed".to_owned()
                        };
                        let name = (cell.name, imp.name());
                        format!("| {} | {} | {what} | | | | | | | | |", name.0, name.1)
                    }
                };
                println!("{row}");
            }
        }
    }
    println!("cells: {}", describe_cells(&cells));
    Ok(())
}

fn describe_cells(cells: &[Cell]) -> String {
    cells
        .iter()
        .map(|c| format!("{} = {}", c.name, c.describe()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// How to start the peers of a run.
#[derive(Debug)]
struct Runner {
    exe: PathBuf,
    js: Option<PathBuf>,
    size: u64,
    timeout: Duration,
}

/// What one run measured.
#[derive(Debug)]
struct Outcome {
    imp: Imp,
    sender: Value,
    receiver: Value,
    relay: Option<Value>,
}

/// How long a peer or the relay gets to say hello.
const HELLO: Duration = Duration::from_secs(20);

impl Runner {
    fn spawn_peer(
        &self,
        lab_ns: &netns::Namespace,
        imp: Imp,
        bind: IpAddr,
    ) -> anyhow::Result<NsChild> {
        let bind = bind.to_string();
        match imp {
            Imp::Ours(cc) => {
                let exe = self.exe.to_str().context("exe path is not UTF-8")?;
                lab_ns.spawn(exe, &["peer", "--bind", &bind, "--cc", cc.flag()])
            }
            Imp::Js => {
                let script = self.js.as_ref().context("no JS peer")?;
                let script = script.to_str().context("script path is not UTF-8")?;
                lab_ns.spawn("node", &[script, &bind])
            }
        }
    }

    fn run(&self, lab: &PathLab, cell: &Cell, imp: Imp) -> anyhow::Result<Outcome> {
        let mut receiver = self.spawn_peer(&lab.b, imp, B_ADDR)?;
        let mut sender = self.spawn_peer(&lab.a, imp, A_ADDR)?;
        let r_hello = json_line(&mut receiver, HELLO)?;
        let s_hello = json_line(&mut sender, HELLO)?;
        let port = |v: &Value| {
            v["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .context("hello without port")
        };
        let a_peer = SocketAddr::new(A_ADDR, port(&s_hello)?);
        let b_peer = SocketAddr::new(B_ADDR, port(&r_hello)?);
        let mut relay = None;
        // Where each side sends: straight to the other, or to its side of the relay.
        let (sender_to, receiver_to) = if cell.uses_relay() {
            let exe = self.exe.to_str().context("exe path is not UTF-8")?;
            // Real-time priority: the router must not wait behind the peers for a core (on a
            // loaded 2-core machine a normal-priority relay released datagrams up to 97 ms
            // late; SCHED_FIFO: < 2 ms; `path relay-bench`).
            let mut child = lab.r.spawn(
                "chrt",
                &[
                    "-f",
                    "10",
                    exe,
                    "relay",
                    "--a-bind",
                    &SocketAddr::new(R_A_ADDR, 0).to_string(),
                    "--b-bind",
                    &SocketAddr::new(R_B_ADDR, 0).to_string(),
                    "--a-peer",
                    &a_peer.to_string(),
                    "--b-peer",
                    &b_peer.to_string(),
                    "--delay-us",
                    &(cell.rtt.as_micros() / 2).to_string(),
                ],
            )?;
            let hello = json_line(&mut child, HELLO)?;
            let relay_port = |k: &str| {
                hello[k]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .with_context(|| format!("relay hello without {k}: {hello}"))
            };
            let ends = (
                SocketAddr::new(R_A_ADDR, relay_port("aPort")?),
                SocketAddr::new(R_B_ADDR, relay_port("bPort")?),
            );
            relay = Some(child);
            ends
        } else {
            (b_peer, a_peer)
        };
        // Both connect before either sends (as after a holepunch); then go, receiver first.
        for (peer, remote, hello, send) in [
            (&mut receiver, receiver_to, &s_hello, 0),
            (&mut sender, sender_to, &r_hello, self.size),
        ] {
            peer.send_line(
                &json!({"remoteId": hello["id"], "remoteHost": remote.ip().to_string(),
                        "remotePort": remote.port(), "send": send})
                .to_string(),
            )?;
            expect_ready(peer)?;
        }
        receiver.send_line("go")?;
        sender.send_line("go")?;
        let s_out = json_line(&mut sender, self.timeout)?;
        let r_out = json_line(&mut receiver, self.timeout)?;
        let relay = match relay.as_mut() {
            Some(child) => {
                child.close_stdin();
                Some(json_line(child, HELLO)?)
            }
            None => None,
        };
        if r_out["recv"].as_u64() != Some(self.size) {
            bail!("receiver got {} of {} bytes", r_out["recv"], self.size);
        }
        Ok(Outcome {
            imp,
            sender: s_out,
            receiver: r_out,
            relay,
        })
    }
}

impl Outcome {
    /// One table row; `drops` are the router's drops during the run. Goodput is the sender's:
    /// `size` over go → everything acknowledged.
    fn row(&self, cell: &Cell, size: u64, drops: RouterDrops) -> String {
        if std::env::var_os("PATH_BENCH_VERBOSE").is_some() {
            eprintln!(
                "sender: {}\nreceiver: {}\nrelay: {:?}",
                self.sender, self.receiver, self.relay
            );
        }
        let ms = self.sender["ms"].as_u64().unwrap_or(0).max(1);
        let mbps = size as f64 / 1e6 / (ms as f64 / 1e3);
        let pct = cell.rate_bit.map_or("–".to_owned(), |r| {
            format!("{:.0}", mbps * 1e6 / (r as f64 / 8.0) * 100.0)
        });
        let cpu = |v: &Value| v["cpuMs"].as_u64().unwrap_or(0) as f64 / 1e3;
        let late = self.relay.as_ref().map_or("–".to_owned(), |r| {
            // The data direction: its lateness is added to the path's delay.
            let d = &r["aToB"];
            format!(
                "{:.2} / {:.1}",
                d["meanLateUs"].as_f64().unwrap_or(0.0) / 1e3,
                d["maxLateUs"].as_u64().unwrap_or(0) as f64 / 1e3
            )
        });
        format!(
            "| {} | {} | {mbps:.1} | {pct} | {} | {} | {} / {} | {} / {} | {:.2} | {:.2} | {late} |",
            cell.name,
            self.imp.name(),
            self.sender["retransmits"],
            self.sender["rtoExpiries"],
            drops.loss.0,
            drops.loss.1,
            drops.queue.0,
            drops.queue.1,
            cpu(&self.sender),
            cpu(&self.receiver),
        )
    }
}

/// The next stdout line of `child` as JSON.
fn json_line(child: &mut NsChild, timeout: Duration) -> anyhow::Result<Value> {
    let line = child.next_stdout_line(timeout)?;
    serde_json::from_str(&line).with_context(|| format!("{}: not JSON: {line}", child.label()))
}

fn expect_ready(child: &mut NsChild) -> anyhow::Result<()> {
    let v = json_line(child, HELLO)?;
    if v["ready"] != true {
        bail!("{}: expected ready, got {v}", child.label());
    }
    Ok(())
}
