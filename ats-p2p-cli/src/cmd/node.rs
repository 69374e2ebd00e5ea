//! Starting a [`Node`] from the command-line options, shared by `send` and `listen`.

use anyhow::anyhow;
use ats_p2p::identity::KeySource;
use ats_p2p::policy::Allowlist;
use ats_p2p::{Node, NodeConfig};

use crate::args::{CommonArgs, NodeArgs};
use crate::cmd::id::key_store;
use crate::exit::{Exit, Failure};
use crate::output::Output;
use crate::signals::{Stop, StopSignals};

/// The node configuration the options describe (`max_size` only matters for receiving).
pub(crate) fn node_config(
    common: &CommonArgs,
    args: &NodeArgs,
    max_size: Option<u64>,
) -> Result<NodeConfig, Failure> {
    let mut config = NodeConfig::new(common.signal.actor_id.clone());
    config.ats_url = common.signal.ats_url.clone();
    config.ats_token = common.signal.ats_token.clone();
    config.allow = Allowlist::new(args.allow.clone());
    config.accept_changed_keys = args.accept_changed_keys;
    config.max_size = max_size;
    config.timeout = args.timeout.0;
    config.bootstrap = common.bootstrap.clone();
    config.key_source = if args.ephemeral {
        KeySource::Ephemeral
    } else {
        KeySource::Persistent(key_store(&args.keys)?)
    };
    if let Some(path) = &args.known_keys {
        config.known_keys_path = Some(path.clone());
    }
    config.host = args.host;
    config.limit = args.limit;
    config.resume = !args.no_resume;
    config.relay = match (args.no_relay, args.relay) {
        (true, _) => ats_p2p::RelayMode::Disabled,
        (false, Some(k)) => ats_p2p::RelayMode::Pinned(k),
        (false, None) => ats_p2p::RelayMode::Auto,
    };
    Ok(config)
}

/// The flags the other side needs to reach the same ATS, channel and DHT (for the hints that
/// tell a user what to run there).
pub(crate) fn peer_flags(common: &CommonArgs) -> String {
    let mut flags = String::new();
    if common.signal.ats_url != ats_p2p::defaults::ATS_URL {
        flags.push_str(&format!(" --ats-url {}", common.signal.ats_url));
    }
    if common.signal.channel != ats_p2p::defaults::CHANNEL {
        flags.push_str(&format!(" --channel {}", common.signal.channel));
    }
    if !common.bootstrap.is_empty() {
        flags.push_str(&format!(" --bootstrap {}", common.bootstrap.join(",")));
    }
    flags
}

/// The exit status for a stop signal.
pub(crate) fn stop_exit(stop: Stop) -> Exit {
    match stop {
        Stop::Interrupt => Exit::Interrupted,
        Stop::Terminate => Exit::Success,
    }
}

/// Starts the node, or gives up when the process is asked to stop first (`Err` with exit 130
/// or 0 and no message worth more than a line).
pub(crate) async fn start(
    out: &Output,
    config: NodeConfig,
    stop: &mut StopSignals,
) -> Result<Node, Failure> {
    let what = format!(
        "cannot start the node {:?} (ATS {}, bootstrap {})",
        config.actor_id,
        config.ats_url,
        if config.bootstrap.is_empty() {
            "the public HyperDHT nodes".to_owned()
        } else {
            config.bootstrap.join(",")
        }
    );
    tokio::select! {
        started = Node::start(config) => match started {
            Ok(node) => {
                out.note(&format!(
                    "node {} started, public key {}",
                    node.actor_id(),
                    node.public_key().to_hex()
                ));
                Ok(node)
            }
            Err(e) => Err(Failure::new(
                Exit::from_kind(e.kind()),
                anyhow::Error::new(e).context(what),
            )),
        },
        s = stop.wait() => Err(Failure::new(stop_exit(s), anyhow!("stopped while starting the node"))),
    }
}
