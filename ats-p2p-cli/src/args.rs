//! Command-line options (clap derive): the options every command shares, the node options and
//! one struct per command. Every node option can also come from the environment: `ATS_URL`,
//! `ATS_ACTOR_ID` and `ATS_CHANNEL` as the `ats` CLI reads them, `ATS_P2P_*` for the options
//! that are ours. Defaults come from [`ats_p2p::defaults`].

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ats_p2p::defaults;
use ats_p2p::policy::AllowEntry;
use ats_p2p_signal::{AccessToken, TokenError};
use clap::{Args, Parser, Subcommand};

use crate::exit::EXIT_CODES_HELP;

/// Help heading of the options every command accepts.
const SHARED_HEADING: &str = "Shared options (every command accepts them)";

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

/// Options every command accepts, before or after its name (clap `global`), so that one alias
/// or one environment drives every command; a command ignores those it has no use for (`id`
/// needs no ATS URL, `hub` no actor id).
#[derive(Debug, Args)]
pub(crate) struct CommonArgs {
    /// More logging on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true,
          help_heading = SHARED_HEADING)]
    pub(crate) verbose: u8,
    /// Only results on stdout and errors on stderr: no progress, no notes.
    #[arg(short, long, global = true, conflicts_with = "verbose", help_heading = SHARED_HEADING)]
    pub(crate) quiet: bool,
    /// Machine-readable output: one JSON object per line on stdout (NDJSON), nothing else there.
    #[arg(long, global = true, help_heading = SHARED_HEADING)]
    pub(crate) json: bool,
    /// ATS URL, actor id, channel.
    #[command(flatten)]
    pub(crate) signal: SignalArgs,
    /// HyperDHT bootstrap node HOST:PORT (repeat or comma-separate) [default: the public
    /// HyperDHT bootstrap nodes].
    #[arg(
        long,
        env = "ATS_P2P_BOOTSTRAP",
        value_delimiter = ',',
        value_name = "HOST:PORT",
        global = true,
        help_heading = SHARED_HEADING
    )]
    pub(crate) bootstrap: Vec<String>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Offer a file or a directory to another agent and stream it to them once they accept.
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

/// Where ATS is and who we are there (shared by every command).
#[derive(Debug, Clone, Args)]
pub(crate) struct SignalArgs {
    /// ATS server URL (`ats-p2p hub` prints a local one).
    #[arg(long, env = "ATS_URL", default_value = defaults::ATS_URL, global = true,
          help_heading = SHARED_HEADING)]
    pub(crate) ats_url: String,
    /// This node's ATS actor id (`id`: whose key to show).
    #[arg(long, env = "ATS_ACTOR_ID", default_value = defaults::ACTOR_ID, global = true,
          help_heading = SHARED_HEADING)]
    pub(crate) actor_id: String,
    /// ATS channel the offers go through.
    #[arg(long, env = "ATS_CHANNEL", default_value = defaults::CHANNEL, global = true,
          help_heading = SHARED_HEADING)]
    pub(crate) channel: String,
    /// Bearer token of a hub started with `--token` (sent as `Authorization: Bearer`).
    #[arg(long, env = "ATS_TOKEN", hide_env_values = true, global = true,
          value_parser = parse_access_token, value_name = "TOKEN", help_heading = SHARED_HEADING)]
    pub(crate) ats_token: Option<AccessToken>,
}

/// `--ats-token`: checked here so a malformed token is a usage error, not a failed request.
fn parse_access_token(s: &str) -> Result<AccessToken, TokenError> {
    AccessToken::new(s)
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
    /// Key directory.
    #[command(flatten)]
    pub(crate) keys: KeyArgs,
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
    /// How long to wait for a claim, an accept or a connection: `90s`, `2m`, `1h 30m`, or a
    /// plain number of milliseconds.
    #[arg(long, env = "ATS_P2P_TIMEOUT", default_value_t = Timeout(defaults::TIMEOUT),
          value_name = "DURATION")]
    pub(crate) timeout: Timeout,
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
    /// Bandwidth limit per transfer, e.g. `10MB/s`, `1MiB/s` (sizes as for `--max-size`; the
    /// `/s` is optional). A sender paces its writes, a receiver its reads.
    #[arg(long, env = "ATS_P2P_LIMIT", value_parser = parse_rate, value_name = "RATE")]
    pub(crate) limit: Option<std::num::NonZeroU64>,
    /// Do not resume broken transfers: the seed protocol only (a receiver keeps no partial
    /// files, a sender always sends the whole file).
    #[arg(long, env = "ATS_P2P_NO_RESUME")]
    pub(crate) no_resume: bool,
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
    /// The file or directory to send. A directory goes whole (its files, empty files and
    /// empty directories; symbolic links and special files are skipped with a note) and
    /// appears on the receiver's side only once every file is verified.
    pub(crate) path: PathBuf,
    /// The recipient's actor id.
    #[arg(long, value_name = "ID")]
    pub(crate) to: String,
    /// Offer the file again by itself at most N times when the transfer breaks after the
    /// connection (the receiver or the network gone), while the receiver was heard from within
    /// `--timeout`; a receiver that comes back resumes. 0: never.
    #[arg(long, env = "ATS_P2P_RETRIES", value_name = "N",
          default_value_t = defaults::SEND_RETRIES)]
    pub(crate) retries: u32,
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
    /// Largest file accepted [default: no limit]. E.g. `10MB`, `1GiB` or plain bytes; `MB`, `GB` = 10^6, 10^9 (SI), `MiB`, `GiB` = 2^20, 2^30 (binary).
    #[arg(long, env = "ATS_P2P_MAX_SIZE", value_parser = parse_size, value_name = "SIZE")]
    pub(crate) max_size: Option<u64>,
    /// Exit after the first transfer addressed to us ends; the exit status is its result.
    #[arg(long)]
    pub(crate) once: bool,
    /// How long a partial file of a broken transfer is kept for resuming after its last write
    /// (`7d`, `12h`, or milliseconds); see `status --partials`.
    #[arg(long, env = "ATS_P2P_PARTIAL_EXPIRY", value_name = "DURATION",
          default_value_t = Timeout(ats_p2p::partial::DEFAULT_PARTIAL_EXPIRY))]
    pub(crate) partial_expiry: Timeout,
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
    #[arg(value_parser = parse_status_target, value_name = "TRANSFER_ID|TASK_ID",
          required_unless_present = "partials")]
    pub(crate) target: Option<StatusTarget>,
    /// List the partial files of broken transfers kept in the save directory for resuming.
    #[arg(long, conflicts_with = "target")]
    pub(crate) partials: bool,
    /// The save directory `--partials` looks in.
    #[arg(
        long,
        env = "ATS_P2P_SAVE_DIR",
        default_value = "./incoming",
        value_name = "DIR"
    )]
    pub(crate) save_dir: PathBuf,
}

/// `ats-p2p id` (for the shared `--actor-id`).
#[derive(Debug, Args)]
pub(crate) struct IdArgs {
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
    /// Address to listen on; port 0 picks a free port. Loopback by default: another interface
    /// needs --token (or --insecure-no-token).
    #[arg(long, default_value = ats_p2p_signal::hub::DEFAULT_LISTEN, env = "ATS_P2P_HUB_LISTEN")]
    pub(crate) listen: std::net::SocketAddr,
    /// Where tasks are stored: a SQLite file [default: <data dir>/ats-p2p/hub.sqlite, e.g.
    /// ~/.local/share/ats-p2p/hub.sqlite on Linux], or a PostgreSQL URL
    /// (postgres://user@host/db) that several hubs may share.
    #[arg(
        long,
        env = "ATS_P2P_HUB_DB",
        hide_env_values = true,
        value_name = "PATH|URL",
        value_parser = DbLocationParser
    )]
    pub(crate) db: Option<ats_p2p_signal::hub::DbLocation>,
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
    #[command(flatten)]
    pub(crate) access: crate::cmd::hub::HubAccessArgs,
}

/// `ats-p2p relay`.
#[cfg(feature = "hub")]
#[derive(Debug, Args)]
pub(crate) struct RelayArgs {
    /// Address the relay's UDP socket binds (IPv4; port 0 picks a free port). Peers must be able
    /// to reach it: on a public host, its public interface.
    #[arg(long, env = "ATS_P2P_RELAY_LISTEN", default_value = "0.0.0.0:49738")]
    pub(crate) listen: std::net::SocketAddrV4,
}

/// Size of the demo's generated file by default.
#[cfg(feature = "hub")]
pub(crate) const DEFAULT_DEMO_SIZE: bytesize::ByteSize = bytesize::ByteSize::mib(32);

/// `ats-p2p demo`.
#[cfg(feature = "hub")]
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Size of the generated file. E.g. `10MB`, `1GiB` or plain bytes; `MB`, `GB` = 10^6, 10^9 (SI), `MiB`, `GiB` = 2^20, 2^30 (binary).
    #[arg(long, default_value_t = DEFAULT_DEMO_SIZE, value_parser = parse_size_arg,
          value_name = "SIZE")]
    pub(crate) size: bytesize::ByteSize,
    /// How long each step may take: `90s`, `2m`, or a plain number of milliseconds.
    #[arg(long, default_value_t = Timeout(defaults::TIMEOUT), value_name = "DURATION")]
    pub(crate) timeout: Timeout,
    /// Keep the demo's files (hub database, source and received file) in this directory
    /// instead of a temporary one that is removed at the end.
    #[arg(long, value_name = "DIR")]
    pub(crate) keep: Option<PathBuf>,
}

/// A wait of at least 1 ms: `--timeout` and its environment variable. Written as a duration
/// (`90s`, `2m`, `1h 30m`, parsed by `humantime`) or, as before durations were accepted, a
/// plain number of milliseconds; shown as a duration (`2m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeout(pub(crate) Duration);

impl FromStr for Timeout {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let wait = if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            let ms: u64 = t
                .parse()
                .map_err(|_| format!("{s:?} is too many milliseconds"))?;
            Duration::from_millis(ms)
        } else {
            humantime::parse_duration(t).map_err(|e| {
                format!("{s:?} is not a duration ({e}); examples: 90s, 2m, 1h 30m, 120000 (ms)")
            })?
        };
        if wait < Duration::from_millis(1) {
            return Err("the timeout must be at least 1 ms".to_owned());
        }
        Ok(Self(wait))
    }
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
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

/// Parses a rate: a size as [`parse_size`] takes it, optionally followed by `/s`; zero is
/// refused (no limit is the absence of `--limit`).
pub(crate) fn parse_rate(s: &str) -> Result<std::num::NonZeroU64, String> {
    let t = s.trim();
    let size = t
        .strip_suffix("/s")
        .or_else(|| t.strip_suffix("/S"))
        .unwrap_or(t);
    let bytes =
        parse_size(size).map_err(|e| format!("{e} (a rate is a size per second, e.g. 10MB/s)"))?;
    std::num::NonZeroU64::new(bytes).ok_or_else(|| format!("{s:?}: a limit must be above zero"))
}

/// Parses a size with the `bytesize` crate: plain bytes (`1048576`) or a number with a unit,
/// case-insensitive, SI for `KB`/`MB`/`GB`/`TB` (and `k`/`M`/`G`/`T`: powers of 1000), binary
/// for `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024); `10MB` is 10,000,000 bytes, `1.5 GiB` and
/// `512k` work too. Negative numbers and sizes past 2^64 - 1 bytes are refused.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    parse_size_arg(s).map(|b| b.as_u64())
}

/// [`parse_size`] as a `ByteSize`.
fn parse_size_arg(s: &str) -> Result<bytesize::ByteSize, String> {
    let bad = |why: String| format!("{s:?} is not a size ({why}); examples: 1048576, 10MB, 1GiB");
    let t = s.trim();
    // Plain bytes up to 2^64 - 1 exactly; past that, "too large" rather than a unit error.
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(bytesize::ByteSize::b)
            .map_err(|_| format!("{s:?} is too large"));
    }
    let size: bytesize::ByteSize = t.parse().map_err(bad)?;
    // `bytesize` saturates a product that overflows: the largest value means "too large".
    if size.as_u64() == u64::MAX {
        return Err(format!("{s:?} is too large"));
    }
    Ok(size)
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
    fn sizes_are_si_for_mb_and_binary_for_mib() {
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("10 mb"), Ok(10_000_000));
        assert_eq!(parse_size("10M"), Ok(10_000_000));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("512k"), Ok(512_000));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in [
            "",
            "MB",
            "ten",
            "1.2.3",
            "-1",
            "99999999999TiB",
            ".",
            "10 parsecs",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size("18446744073709551616").is_err());
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn the_help_says_what_10mb_means() {
        let help = Cli::command()
            .find_subcommand_mut("listen")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(help.contains("`MB`, `GB` = 10^6, 10^9 (SI)"), "{help}");
        assert!(
            help.contains("`MiB`, `GiB` = 2^20, 2^30 (binary)"),
            "{help}"
        );
    }

    #[test]
    fn timeouts_are_durations_or_milliseconds() {
        let t = |s: &str| s.parse::<Timeout>().map(|t| t.0);
        assert_eq!(t("120000"), Ok(Duration::from_secs(120)));
        assert_eq!(t("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(t("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(t("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(t("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "0", "0s", "soon", "-5", "99999999999999999999999"] {
            assert!(t(bad).is_err(), "{bad}");
        }
        // The default is the facade's, shown as a duration.
        assert_eq!(Timeout(defaults::TIMEOUT).to_string(), "2m");
        let cli = Cli::try_parse_from(["ats-p2p", "listen"]).unwrap();
        let Command::Listen(l) = cli.command else {
            panic!("listen expected")
        };
        assert_eq!(l.node.timeout.0, defaults::TIMEOUT);
        assert_eq!(cli.common.signal.ats_url, defaults::ATS_URL);
        assert_eq!(cli.common.signal.actor_id, defaults::ACTOR_ID);
        assert_eq!(cli.common.signal.channel, defaults::CHANNEL);
    }

    /// Every command's name and the arguments it needs.
    fn every_command() -> Vec<Vec<&'static str>> {
        let mut all = vec![
            vec!["send", "a.bin", "--to", "agent-b"],
            vec!["listen"],
            vec!["mcp"],
            vec!["status", "42"],
            vec!["id"],
        ];
        if cfg!(feature = "hub") {
            all.extend([vec!["hub"], vec!["relay"], vec!["demo"]]);
        }
        all
    }

    #[test]
    fn every_command_accepts_every_shared_option_before_or_after_its_name() {
        let names: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .filter(|n| n != "help")
            .collect();
        let tested: Vec<String> = every_command().iter().map(|c| c[0].to_owned()).collect();
        assert_eq!(names, tested, "a command is missing from this test");
        let shared = [
            "--ats-url",
            "http://127.0.0.1:9",
            "--actor-id",
            "agent-x",
            "--channel",
            "side",
            "--bootstrap",
            "127.0.0.1:1,127.0.0.1:2",
            "--json",
            "-vv",
        ];
        for cmd in every_command() {
            let before: Vec<&str> = std::iter::once("ats-p2p")
                .chain(shared)
                .chain(cmd.iter().copied())
                .collect();
            let after: Vec<&str> = std::iter::once("ats-p2p")
                .chain(cmd.iter().copied())
                .chain(shared)
                .collect();
            for argv in [before, after] {
                let cli =
                    Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?} refused:\n{e}"));
                let c = &cli.common;
                assert_eq!(c.signal.ats_url, "http://127.0.0.1:9", "{argv:?}");
                assert_eq!(c.signal.actor_id, "agent-x", "{argv:?}");
                assert_eq!(c.signal.channel, "side", "{argv:?}");
                assert_eq!(c.bootstrap, ["127.0.0.1:1", "127.0.0.1:2"], "{argv:?}");
                assert!(c.json, "{argv:?}");
                assert_eq!(c.verbose, 2, "{argv:?}");
            }
        }
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
        assert_eq!(cli.common.bootstrap.len(), 3);
        let Command::Send(s) = cli.command else {
            panic!("send expected")
        };
        assert_eq!(s.to, "agent-b");
        assert_eq!(s.retries, defaults::SEND_RETRIES);
        assert_eq!(s.node.timeout.0, Duration::from_secs(3));
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

/// Parses `--db` like [`ats_p2p_signal::hub::parse_db_location`], but never quotes the value
/// back in the usage error (clap's default does): a database URL may hold a password.
#[cfg(feature = "hub")]
#[derive(Clone, Debug)]
pub(crate) struct DbLocationParser;

#[cfg(feature = "hub")]
impl clap::builder::TypedValueParser for DbLocationParser {
    type Value = ats_p2p_signal::hub::DbLocation;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Self::Value, clap::Error> {
        let name = arg.map_or_else(|| "--db".to_owned(), ToString::to_string);
        let refuse = |kind, message: String| clap::Error::raw(kind, message).with_cmd(cmd);
        let value = value.to_str().ok_or_else(|| {
            refuse(
                clap::error::ErrorKind::InvalidUtf8,
                format!("{name}: not valid UTF-8\n"),
            )
        })?;
        ats_p2p_signal::hub::parse_db_location(value).map_err(|e| {
            refuse(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value for {name}: {e}\n"),
            )
        })
    }
}
