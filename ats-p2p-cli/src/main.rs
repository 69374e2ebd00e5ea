//! The `ats-p2p` command-line tool.
//!
//! stdout carries results only (one JSON object per line with `--json`); progress, notes and
//! logs go to stderr. Exit statuses are listed in [`exit::EXIT_CODES_HELP`] (and `--help`).
//!
//! Modules: [`args`] (options), [`output`] (human lines, progress bars, NDJSON), [`exit`] (exit
//! statuses from error kinds), [`signals`] (Ctrl-C), [`cmd`] (one file per command).

// Doc comments on the clap structs are the `--help` text users read, where `<config dir>` is a
// placeholder meant literally, not an HTML tag.
#![allow(rustdoc::invalid_html_tags)]

mod args;
mod cmd;
mod exit;
mod output;
mod signals;

use std::process::ExitCode;

use clap::Parser as _;

use crate::args::{Cli, Command};
use crate::exit::{Exit, Failure};
use crate::output::Output;

fn init_tracing(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
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
    init_tracing(cli.common.verbose, cli.common.quiet);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Error.code());
        }
    };
    let exit = match runtime.block_on(run(cli)) {
        Ok(exit) => exit,
        Err(Failure { exit, error }) => {
            eprintln!("Error: {error:#}");
            exit
        }
    };
    // Anything still running (a blocking hash, a close that hangs) must not hold the exit.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    ExitCode::from(exit.code())
}

/// How long background work may take to stop after the command finished.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

async fn run(cli: Cli) -> Result<Exit, Failure> {
    let Cli { common, command } = cli;
    let mut out = Output::new(&common);
    match command {
        Command::Id(args) => cmd::id::run(&out, &common, args).await,
        Command::Status(args) => cmd::status::run(&out, &common, args).await,
        #[cfg(feature = "hub")]
        Command::Hub(args) => cmd::hub::run(&out, args).await,
        #[cfg(feature = "hub")]
        Command::Relay(args) => cmd::relay::run(&out, &common, args).await,
        Command::Send(args) => cmd::send::run(&mut out, &common, args).await,
        Command::Listen(args) => cmd::listen::run(&mut out, &common, args).await,
        Command::Mcp(args) => cmd::mcp::run(&out, &common, args).await,
        #[cfg(feature = "hub")]
        Command::Demo(args) => cmd::demo::run(&mut out, args).await,
    }
}
