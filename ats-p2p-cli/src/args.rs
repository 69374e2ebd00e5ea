//! Command-line options (clap derive): the shared flags, the node options and one struct per
//! command. Every node option can also come from the environment: `ATS_URL`, `ATS_ACTOR_ID` and
//! `ATS_CHANNEL` as the `ats` CLI reads them, `ATS_P2P_*` for the options that are ours.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use ats_p2p::policy::AllowEntry;
use clap::{Args, Parser, Subcommand};

use crate::exit::EXIT_CODES_HELP;

/// The public ATS service (the `ats` CLI's default).
pub(crate) const DEFAULT_ATS_URL: &str = ats_p2p_signal::client::DEFAULT_ATS_URL;

/// Actor id used when none is given (the seed's default).
pub(crate) const DEFAULT_ACTOR_ID: &str = "p2p-node";

/// Channel offers go to by default.
pub(crate) const DEFAULT_CHANNEL: &str = ats_p2p_signal::offer::DEFAULT_OFFER_CHANNEL;

/// Default wait for a claim, an accept or a connection, in milliseconds (the seed's 120 s).
pub(crate) const DEFAULT_TIMEOUT_MS: &str = "120000";

/// Send files peer to peer between AI agents, signaled through ATS.
#[derive(Debug, Parser)]
#[command(name = "ats-p2p", version, after_help = EXIT_CODES_HELP)]
pub(crate) struct Cli {
    /// Flags every command understands.
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Flags shared by every subcommand.
#[derive(Debug, Args)]
pub(crate) struct CommonArgs {
    /// More logging on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// Only results on stdout and errors on stderr: no progress, no notes.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,
    /// Machine-readable output: one JSON object per line on stdout (NDJSON), nothing else there.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Offer a file to another agent and stream it to them once they accept.
    #[command(after_help = EXIT_CODES_HELP)]
    Send(SendArgs),
    /// Watch the channel for offers addressed to this actor id and receive them.
    #[command(after_help = EXIT_CODES_HELP)]
    Listen(ListenArgs),
    /// Serve the node as MCP tools (send_file, list_offers, accept_offer, ...) over stdio, for
    /// AI agents: one node per process, configured like listen and send.
    #[command(after_help = EXIT_CODES_HELP)]
    Mcp(crate::cmd::mcp::McpArgs),
    /// Show how a transfer went, from its ATS task (by transfer id or task id).
    Status(StatusArgs),
    /// Print this node's public key (created on first use) for its actor id.
    Id(IdArgs),
    /// Run an ATS-compatible hub (REST + WebSocket, SQLite) and a HyperDHT bootstrap node on
    /// this machine: everything two nodes need to find each other without the internet.
    #[cfg(feature = "hub")]
    Hub(HubArgs),
    /// Run a blind relay: peers that cannot holepunch (both behind randomizing NATs) meet
    /// through it. It splices encrypted UDX streams and never sees plaintext.
    #[cfg(feature = "hub")]
    Relay(RelayArgs),
    /// Start a hub, a DHT bootstrap node and two nodes on loopback in this process, and send a
    /// generated file from one to the other, showing each step. Needs no internet.
    #[cfg(feature = "hub")]
    #[command(after_help = EXIT_CODES_HELP)]
    Demo(DemoArgs),
}

/// Where ATS is and who we are there.
#[derive(Debug, Clone, Args)]
pub(crate) struct SignalArgs {
    /// ATS server URL (`ats-p2p hub` prints a local one).
    #[arg(long, env = "ATS_URL", default_value = DEFAULT_ATS_URL)]
    pub(crate) ats_url: String,
    /// This node's ATS actor id.
    #[arg(long, env = "ATS_ACTOR_ID", default_value = DEFAULT_ACTOR_ID)]
    pub(crate) actor_id: String,
    /// ATS channel the offers go through.
    #[arg(long, env = "ATS_CHANNEL", default_value = DEFAULT_CHANNEL)]
    pub(crate) channel: String,
}

/// Where this node's key lives.
#[derive(Debug, Clone, Args)]
pub(crate) struct KeyArgs {
    /// Directory of the persistent node keys [default: <config dir>/ats-p2p/keys].
    #[arg(long, env = "ATS_P2P_KEY_DIR", value_name = "DIR")]
    pub(crate) key_dir: Option<PathBuf>,
}

/// Everything a running node needs (send, listen).
#[derive(Debug, Clone, Args)]
pub(crate) struct NodeArgs {
    /// ATS URL, actor id, channel.
    #[command(flatten)]
    pub(crate) signal: SignalArgs,
    /// Key directory.
    #[command(flatten)]
    pub(crate) keys: KeyArgs,
    /// HyperDHT bootstrap node HOST:PORT (repeat or comma-separate) [default: the public
    /// HyperDHT bootstrap nodes].
    #[arg(
        long,
        env = "ATS_P2P_BOOTSTRAP",
        value_delimiter = ',',
        value_name = "HOST:PORT"
    )]
    pub(crate) bootstrap: Vec<String>,
    /// Peers to deal with: an actor id (`agent-b`) or an actor id pinned to its key
    /// (`agent-b=<64 hex>`); repeat or comma-separate. None given: anyone.
    #[arg(
        long,
        env = "ATS_P2P_ALLOW",
        value_delimiter = ',',
        value_name = "ID[=KEY]"
    )]
    pub(crate) allow: Vec<AllowEntry>,
    /// Accept a peer whose key differs from the one remembered for its actor id.
    #[arg(long, env = "ATS_P2P_ACCEPT_CHANGED_KEYS")]
    pub(crate) accept_changed_keys: bool,
    /// Use a fresh key pair for this run instead of the persistent one.
    #[arg(long, env = "ATS_P2P_EPHEMERAL")]
    pub(crate) ephemeral: bool,
    /// File of remembered peer keys [default: <config dir>/ats-p2p/known_keys].
    #[arg(long, env = "ATS_P2P_KNOWN_KEYS", value_name = "FILE")]
    pub(crate) known_keys: Option<PathBuf>,
    /// How long to wait for a claim, an accept or a connection, in milliseconds.
    #[arg(long, env = "ATS_P2P_TIMEOUT", default_value = DEFAULT_TIMEOUT_MS,
          value_name = "MS", value_parser = parse_timeout)]
    pub(crate) timeout: Duration,
    /// Local IPv4 address the node's UDP socket binds.
    #[arg(long, env = "ATS_P2P_HOST", default_value = "0.0.0.0")]
    pub(crate) host: Ipv4Addr,
    /// Relay through this blind relay (its public key, 64 hex) when no direct or holepunched
    /// path exists [default: a relay announced on the DHT, e.g. the hub's].
    #[arg(long, env = "ATS_P2P_RELAY", value_name = "KEY", value_parser = parse_key)]
    pub(crate) relay: Option<ats_p2p::swarm::PublicKey>,
    /// Never relay: only direct and holepunched connections (and refuse a peer's relay).
    #[arg(long, env = "ATS_P2P_NO_RELAY", conflicts_with = "relay")]
    pub(crate) no_relay: bool,
}

/// A public key: 64 hex characters.
fn parse_key(s: &str) -> Result<ats_p2p::swarm::PublicKey, String> {
    let bytes = hex::decode(s.trim()).map_err(|e| format!("not hex: {e}"))?;
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "a key is 32 bytes (64 hex characters)".to_string())?;
    Ok(ats_p2p::swarm::PublicKey::from_bytes(arr))
}

/// `ats-p2p send`.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// The file to send.
    pub(crate) path: PathBuf,
    /// The recipient's actor id.
    #[arg(long, value_name = "ID")]
    pub(crate) to: String,
    /// Node options.
    #[command(flatten)]
    pub(crate) node: NodeArgs,
}

/// `ats-p2p listen`.
#[derive(Debug, Args)]
pub(crate) struct ListenArgs {
    /// Where received files are saved (created if missing).
    #[arg(
        long,
        env = "ATS_P2P_SAVE_DIR",
        default_value = "./incoming",
        value_name = "DIR"
    )]
    pub(crate) save_dir: PathBuf,
    /// Largest file accepted, e.g. `10MB`, `1GiB` or plain bytes [default: no limit].
    #[arg(long, env = "ATS_P2P_MAX_SIZE", value_parser = parse_size, value_name = "SIZE")]
    pub(crate) max_size: Option<u64>,
    /// Exit after the first transfer addressed to us ends; the exit status is its result.
    #[arg(long)]
    pub(crate) once: bool,
    /// Node options.
    #[command(flatten)]
    pub(crate) node: NodeArgs,
}

/// What `status` looks up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StatusTarget {
    /// An ATS task id.
    Task(i64),
    /// A transfer id (32 hex), found through the list `search`.
    Transfer(String),
}

/// `ats-p2p status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// A transfer id (32 hex characters) or an ATS task id (a number).
    #[arg(value_parser = parse_status_target, value_name = "TRANSFER_ID|TASK_ID")]
    pub(crate) target: StatusTarget,
    /// ATS URL, actor id, channel.
    #[command(flatten)]
    pub(crate) signal: SignalArgs,
}

/// `ats-p2p id`.
#[derive(Debug, Args)]
pub(crate) struct IdArgs {
    /// The actor id whose key to show.
    #[arg(long, env = "ATS_ACTOR_ID", default_value = DEFAULT_ACTOR_ID)]
    pub(crate) actor_id: String,
    /// Key directory.
    #[command(flatten)]
    pub(crate) keys: KeyArgs,
}

/// Where the hub's DHT bootstrap node listens by default: loopback, on HyperDHT's usual port.
#[cfg(feature = "hub")]
pub(crate) const DEFAULT_BOOTSTRAP_LISTEN: &str = "127.0.0.1:49737";

/// `ats-p2p hub`.
#[cfg(feature = "hub")]
#[derive(Debug, Args)]
pub(crate) struct HubArgs {
    /// Address to listen on; port 0 picks a free port. Loopback by default: binding another
    /// interface exposes an unauthenticated service.
    #[arg(long, default_value = ats_p2p_signal::hub::DEFAULT_LISTEN, env = "ATS_P2P_HUB_LISTEN")]
    pub(crate) listen: std::net::SocketAddr,
    /// SQLite database file [default: <data dir>/ats-p2p/hub.sqlite, e.g.
    /// ~/.local/share/ats-p2p/hub.sqlite on Linux].
    #[arg(long, env = "ATS_P2P_HUB_DB")]
    pub(crate) db: Option<PathBuf>,
    /// Address of the HyperDHT bootstrap node started beside the hub (IPv4; port 0 picks a free
    /// port). Nodes use it with --bootstrap; npm `hyperdht` accepts it as a bootstrap too.
    #[arg(long, default_value = DEFAULT_BOOTSTRAP_LISTEN, env = "ATS_P2P_BOOTSTRAP_LISTEN")]
    pub(crate) bootstrap_listen: std::net::SocketAddrV4,
    /// Run the hub without the DHT bootstrap node.
    #[arg(long)]
    pub(crate) no_bootstrap: bool,
    /// Run the hub without the blind relay it starts beside its bootstrap node (the relay
    /// carries transfers between peers that cannot holepunch; it sees only ciphertext).
    #[arg(long)]
    pub(crate) no_relay: bool,
    /// A browser origin whose pages may use the hub, e.g. `https://dashboard.example`
    /// (repeatable). Requests from any other page are refused; the `ats` CLI and ats-p2p send
    /// no origin and need none.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub(crate) allow_origins: Vec<String>,
}

/// `ats-p2p relay`.
#[cfg(feature = "hub")]
#[derive(Debug, Args)]
pub(crate) struct RelayArgs {
    /// Address the relay's UDP socket binds (IPv4; port 0 picks a free port). Peers must be able
    /// to reach it: on a public host, its public interface.
    #[arg(long, env = "ATS_P2P_RELAY_LISTEN", default_value = "0.0.0.0:49738")]
    pub(crate) listen: std::net::SocketAddrV4,
    /// HyperDHT bootstrap node HOST:PORT (repeat or comma-separate) [default: the public
    /// HyperDHT bootstrap nodes].
    #[arg(
        long,
        env = "ATS_P2P_BOOTSTRAP",
        value_delimiter = ',',
        value_name = "HOST:PORT"
    )]
    pub(crate) bootstrap: Vec<String>,
}

/// Size of the demo's generated file by default.
#[cfg(feature = "hub")]
pub(crate) const DEFAULT_DEMO_SIZE: &str = "32MiB";

/// `ats-p2p demo`.
#[cfg(feature = "hub")]
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Size of the generated file, e.g. `32MiB`, `1GB` or plain bytes.
    #[arg(long, default_value = DEFAULT_DEMO_SIZE, value_parser = parse_size, value_name = "SIZE")]
    pub(crate) size: u64,
    /// How long each step may take, in milliseconds.
    #[arg(long, default_value = DEFAULT_TIMEOUT_MS, value_name = "MS", value_parser = parse_timeout)]
    pub(crate) timeout: Duration,
    /// Keep the demo's files (hub database, source and received file) in this directory
    /// instead of a temporary one that is removed at the end.
    #[arg(long, value_name = "DIR")]
    pub(crate) keep: Option<PathBuf>,
}

/// Parses `--timeout` (milliseconds, at least 1).
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let ms: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of milliseconds"))?;
    if ms == 0 {
        return Err("the timeout must be at least 1 ms".to_owned());
    }
    Ok(Duration::from_millis(ms))
}

/// Parses the `status` argument: digits are a task id, 32 hex characters a transfer id.
fn parse_status_target(s: &str) -> Result<StatusTarget, String> {
    let s = s.trim();
    if !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(StatusTarget::Task)
            .map_err(|_| format!("task id {s} is out of range"));
    }
    if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(StatusTarget::Transfer(s.to_ascii_lowercase()));
    }
    Err(format!(
        "{s:?} is neither a task id (a number) nor a transfer id (32 hex characters)"
    ))
}

/// Multipliers of the size suffixes (case-insensitive): SI for `k`/`KB`, `M`/`MB`, ...,
/// binary for `KiB`, `MiB`, ...
const SIZE_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("b", 1),
    ("k", 1_000),
    ("kb", 1_000),
    ("kib", 1 << 10),
    ("m", 1_000_000),
    ("mb", 1_000_000),
    ("mib", 1 << 20),
    ("g", 1_000_000_000),
    ("gb", 1_000_000_000),
    ("gib", 1 << 30),
    ("t", 1_000_000_000_000),
    ("tb", 1_000_000_000_000),
    ("tib", 1 << 40),
];

/// Parses a size: plain bytes (`1048576`) or a number with a unit (`10MB`, `1.5 GiB`, `512k`).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let bad = || format!("{s:?} is not a size (examples: 1048576, 10MB, 1GiB)");
    let mult = SIZE_UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, m)| *m)
        .ok_or_else(bad)?;
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    let int: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let mut total = int.checked_mul(u128::from(mult)).ok_or_else(bad)?;
    if !frac.is_empty() {
        // At most 9 fraction digits matter for units up to TiB; more are refused.
        if frac.len() > 9 || frac.contains('.') {
            return Err(bad());
        }
        let f: u128 = frac.parse().map_err(|_| bad())?;
        let scale = 10u128.pow(u32::try_from(frac.len()).map_err(|_| bad())?);
        let part = f
            .checked_mul(u128::from(mult))
            .map(|v| v / scale)
            .ok_or_else(bad)?;
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    u64::try_from(total).map_err(|_| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("10 mb"), Ok(10_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("512k"), Ok(512_000));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size(".5MiB"), Ok(512 * 1024));
        for bad in [
            "",
            "MB",
            "ten",
            "1.2.3",
            "-1",
            "1 PB",
            "99999999999TiB",
            ".",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size("18446744073709551616").is_err());
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn status_targets() {
        assert_eq!(parse_status_target("42"), Ok(StatusTarget::Task(42)));
        let tid = "5F0C5f0c5f0c5f0c5f0c5f0c5f0c5f0c";
        assert_eq!(
            parse_status_target(tid),
            Ok(StatusTarget::Transfer(tid.to_ascii_lowercase()))
        );
        assert!(parse_status_target("abc").is_err());
        assert!(parse_status_target("99999999999999999999").is_err());
        assert!(parse_status_target("").is_err());
    }

    #[test]
    fn options_from_flags_and_defaults() {
        let cli = Cli::try_parse_from([
            "ats-p2p",
            "send",
            "a.bin",
            "--to",
            "agent-b",
            "--bootstrap",
            "127.0.0.1:1,127.0.0.1:2",
            "--bootstrap",
            "127.0.0.1:3",
            "--allow",
            "agent-b",
            "--timeout",
            "3000",
            "--json",
        ])
        .unwrap();
        assert!(cli.common.json);
        let Command::Send(s) = cli.command else {
            panic!("send expected")
        };
        assert_eq!(s.to, "agent-b");
        assert_eq!(s.node.bootstrap.len(), 3);
        assert_eq!(s.node.timeout, Duration::from_secs(3));
        assert_eq!(s.node.host, Ipv4Addr::UNSPECIFIED);
        assert_eq!(s.node.allow.len(), 1);

        assert!(Cli::try_parse_from(["ats-p2p", "listen", "--allow", "a=zz"]).is_err());
        assert!(Cli::try_parse_from(["ats-p2p", "listen", "--max-size", "lots"]).is_err());
        assert!(
            Cli::try_parse_from(["ats-p2p", "send", "x"]).is_err(),
            "--to needed"
        );
    }
}
