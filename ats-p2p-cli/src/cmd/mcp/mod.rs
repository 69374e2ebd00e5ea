//! `ats-p2p mcp`: a Model Context Protocol server over stdio, so an AI agent calls the node as
//! tools (`send_file`, `list_offers`, `accept_offer`, ...) instead of parsing NDJSON.
//!
//! One node per server process, configured like `listen` and `send`. stdout carries only MCP
//! (JSON-RPC, one message per line); logs go to stderr.
//!
//! Modules: [`server`] (the MCP handler and its lifecycle), [`tools`] (one method per tool),
//! [`schemas`] (the tools' argument and result types), [`registry`] (offers waiting for a
//! decision and transfers seen), [`progress`] (MCP progress notifications).

mod progress;
mod registry;
mod schemas;
mod server;
mod tools;

use std::path::PathBuf;

use clap::Args;

use crate::args::{NodeArgs, parse_size};

pub(crate) use server::run;

/// Where received files go when `--save-dir` is not given: an MCP client starts the server in
/// a working directory of its choosing, so a relative default would scatter files.
const SAVE_DIR_UNDER_DATA_DIR: &str = "ats-p2p/incoming";

/// `ats-p2p mcp`.
#[derive(Debug, Args)]
pub(crate) struct McpArgs {
    /// Where accepted files are saved (created if missing); `accept_offer` never writes outside
    /// it [default: <data dir>/ats-p2p/incoming, e.g. ~/.local/share/ats-p2p/incoming].
    #[arg(long, env = "ATS_P2P_SAVE_DIR", value_name = "DIR")]
    pub(crate) save_dir: Option<PathBuf>,
    /// Largest file accepted, e.g. `10MB`, `1GiB` or plain bytes [default: no limit].
    #[arg(long, env = "ATS_P2P_MAX_SIZE", value_parser = parse_size, value_name = "SIZE")]
    pub(crate) max_size: Option<u64>,
    /// Accept every offer the policy lets through into the save directory without asking the
    /// agent; `list_transfers` reports them.
    #[arg(long, env = "ATS_P2P_AUTO_ACCEPT")]
    pub(crate) auto_accept: bool,
    /// Node options.
    #[command(flatten)]
    pub(crate) node: NodeArgs,
}

impl McpArgs {
    /// The save directory, given or default.
    fn save_dir(&self) -> PathBuf {
        self.save_dir.clone().unwrap_or_else(|| {
            dirs::data_dir()
                .unwrap_or_else(|| PathBuf::from("."))
                .join(SAVE_DIR_UNDER_DATA_DIR)
        })
    }
}
