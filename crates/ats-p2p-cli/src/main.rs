//! The `ats-p2p` command-line tool.
//!
//! stdout carries results only (one JSON object per line with `--json`); logs go to stderr.
//! Exit status: 0 on success, 1 on error, 130 after Ctrl-C (once everything closed cleanly).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

/// Exit status after Ctrl-C (128 + SIGINT), as shells expect.
const EXIT_INTERRUPTED: u8 = 130;

/// Send files peer to peer between AI agents, signaled through ATS.
#[derive(Debug, Parser)]
#[command(name = "ats-p2p", version, about)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Command,
}

/// Flags shared by every subcommand.
#[derive(Debug, Args)]
struct CommonArgs {
    /// More logging on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Machine-readable output: one JSON object per line on stdout.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an ATS-compatible hub (REST + WebSocket, SQLite) and a HyperDHT bootstrap node on
    /// this machine: everything two nodes need to find each other without the internet.
    #[cfg(feature = "hub")]
    Hub(HubArgs),
}

/// `ats-p2p hub`.
#[cfg(feature = "hub")]
#[derive(Debug, Args)]
struct HubArgs {
    /// Address to listen on; port 0 picks a free port. Loopback by default: binding another
    /// interface exposes an unauthenticated service.
    #[arg(long, default_value = ats_p2p_signal::hub::DEFAULT_LISTEN, env = "ATS_P2P_HUB_LISTEN")]
    listen: std::net::SocketAddr,
    /// SQLite database file [default: <data dir>/ats-p2p/hub.sqlite, e.g.
    /// ~/.local/share/ats-p2p/hub.sqlite on Linux].
    #[arg(long, env = "ATS_P2P_HUB_DB")]
    db: Option<PathBuf>,
    /// Address of the HyperDHT bootstrap node started beside the hub (IPv4; port 0 picks a free
    /// port). Nodes use it with --bootstrap; npm `hyperdht` accepts it as a bootstrap too.
    #[arg(long, default_value = DEFAULT_BOOTSTRAP_LISTEN, env = "ATS_P2P_BOOTSTRAP_LISTEN")]
    bootstrap_listen: std::net::SocketAddrV4,
    /// Run the hub without the DHT bootstrap node.
    #[arg(long)]
    no_bootstrap: bool,
}

/// Where the hub's DHT bootstrap node listens by default: loopback, on HyperDHT's usual port.
#[cfg(feature = "hub")]
const DEFAULT_BOOTSTRAP_LISTEN: &str = "127.0.0.1:49737";

/// How a command ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    Interrupted,
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.common.verbose);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Interrupted) => ExitCode::from(EXIT_INTERRUPTED),
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        #[cfg(feature = "hub")]
        Command::Hub(args) => hub(&cli.common, args).await,
    }
}

/// Writes `lines` and a newline to stdout in one write. A reader that went away (a closed pipe)
/// is not an error worth dying for: a server keeps serving, unlike `println!`, which panics.
fn say(lines: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out
        .write_all(format!("{lines}\n").as_bytes())
        .and_then(|()| out.flush());
}

/// Listeners for the signals that stop a long-running command: installed before the command
/// announces that it is ready, so a signal sent right after the ready line is never lost (the
/// default action would kill the process without a clean shutdown).
struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the listeners now.
    fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?,
                terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Resolves when the process is asked to stop: `Interrupted` on Ctrl-C (SIGINT), `Done` on
    /// SIGTERM.
    async fn wait(mut self) -> anyhow::Result<Outcome> {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => Ok(Outcome::Interrupted),
                _ = self.terminate.recv() => Ok(Outcome::Done),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c()
                .await
                .context("cannot listen for Ctrl-C")?;
            Ok(Outcome::Interrupted)
        }
    }
}

#[cfg(feature = "hub")]
async fn hub(common: &CommonArgs, args: HubArgs) -> anyhow::Result<Outcome> {
    use ats_p2p::swarm::hyperdht::Bootstrap;
    use ats_p2p_signal::hub::{Hub, HubConfig};

    let db = match args.db {
        Some(p) => p,
        None => dirs::data_dir()
            .context("no data directory for this user; pass --db PATH")?
            .join("ats-p2p")
            .join("hub.sqlite"),
    };
    let stop = StopSignals::install()?;
    let hub = Hub::bind(HubConfig::new(args.listen, db.clone()))
        .await
        .with_context(|| format!("cannot start the hub (database {})", db.display()))?;
    let bootstrap = if args.no_bootstrap {
        None
    } else {
        match Bootstrap::spawn(args.bootstrap_listen).await {
            Ok(b) => Some(b),
            Err(e) => {
                hub.shutdown().await;
                return Err(e).with_context(|| {
                    format!(
                        "cannot start the DHT bootstrap node on {} (pass --bootstrap-listen \
                         HOST:0 for a free port, or --no-bootstrap)",
                        args.bootstrap_listen
                    )
                });
            }
        }
    };
    let bootstrap_addr = bootstrap.as_ref().map(|b| b.addr().to_string());
    if common.json {
        // Written by hand to keep the documented key order (`event` first).
        let url = serde_json::Value::String(hub.url());
        let boot = serde_json::to_string(&bootstrap_addr)?;
        say(&format!(
            r#"{{"event":"hub_ready","ats_url":{url},"bootstrap":{boot}}}"#
        ));
    } else {
        let mut ready = format!("ATS hub listening on {}", hub.url());
        if let Some(addr) = &bootstrap_addr {
            ready.push_str(&format!("\nDHT bootstrap node on {addr}"));
        }
        say(&ready);
        eprintln!(
            "database: {}\npoint nodes at it with --ats-url {}{}; stop with Ctrl-C",
            db.display(),
            hub.url(),
            bootstrap_addr
                .as_ref()
                .map(|a| format!(" --bootstrap {a}"))
                .unwrap_or_default()
        );
    }
    let outcome = stop.wait().await?;
    if let Some(b) = bootstrap {
        b.destroy().await;
    }
    hub.shutdown().await;
    Ok(outcome)
}
