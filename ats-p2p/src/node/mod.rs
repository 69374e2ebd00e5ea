//! The node: one agent's identity, its ATS client and its swarm endpoint, composing the layers
//! into [`Node::send`] and [`Node::watch`].
//!
//! The flow of one transfer (see `docs/protocol.md` and the design notes):
//!
//! 1. The sender hashes the file (streaming), creates a `file_offer` task on the channel, and
//!    waits for the named recipient to claim it and post an accept message with its key.
//! 2. The sender checks the claim ([`SendPolicy`](crate::policy::SendPolicy)), opens its firewall
//!    for exactly that key, and announces itself on the transfer's topic.
//! 3. The receiver, which claimed the task after its own policy check
//!    ([`ReceivePolicy`]), looks the topic up, connects to the
//!    sender's key only, and receives the file into a temporary file that is renamed into place
//!    after the SHA-256 matched; then it ACKs and completes the task with the hash.
//!
//! Every failure ends the task on ATS with a reason: the sender cancels an offer nobody took,
//! the receiver rejects an offer its policy refuses and fails a transfer that broke.

mod error;
mod receive;
mod send;

pub use ats_p2p_swarm::hyperdht::RelayMode;
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ats_p2p_signal::{AccessToken, Actor, Client, ClientConfig, TaskId};
use ats_p2p_swarm::PublicKey;
use ats_p2p_swarm::swarm::{Swarm, SwarmConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::events::Event;
use crate::identity::KeySource;
use crate::policy::{Allowlist, KnownKeys, PeerPolicy, ReceivePolicy, validate_actor_id};
use crate::transfer::ProgressRule;

pub use error::{NodeError, ReceiveError, SendError};
pub use receive::{Inbox, Incoming, PendingOffer, ReceiveReport};
pub use send::SendReport;

/// The node's defaults under the names this module has always exported (their home is
/// [`crate::defaults`]).
pub use crate::defaults::{
    ACTOR_ID as DEFAULT_ACTOR_ID, ATS_URL as DEFAULT_ATS_URL, CHANNEL as DEFAULT_CHANNEL,
    TIMEOUT as DEFAULT_TIMEOUT,
};
/// The public HyperDHT bootstrap nodes (the JavaScript stack's defaults).
pub const PUBLIC_BOOTSTRAP: &[&str] = &[
    "node1.hyperdht.org:49737",
    "node2.hyperdht.org:49737",
    "node3.hyperdht.org:49737",
];
/// Longest wait for the DHT to answer at start: long enough for a slow network, short enough
/// that a wrong bootstrap address is reported instead of hanging.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Offers a watch with a save directory receives at once, by default: enough for a burst of
/// files from a few agents, few enough that a flood of offers cannot open unbounded transfers.
pub const DEFAULT_MAX_CONCURRENT_RECEIVES: usize = 4;
/// Offers that may wait for a free receive slot (beyond those running) before further offers
/// are rejected as `busy`: waiting offers are only held in memory, so this bounds that memory.
pub const MAX_QUEUED_RECEIVES: usize = 64;
/// Fewest milliseconds between two progress events of one transfer.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// How a [`Node`] is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Base URL of the ATS server (or our hub).
    pub ats_url: String,
    /// Bearer token for an ATS server that asks for one (a hub started with `--token`).
    pub ats_token: Option<AccessToken>,
    /// This agent's ATS actor id.
    pub actor_id: String,
    /// Who may send to us and whom we send to (empty: anyone, by remembered key).
    pub allow: Allowlist,
    /// Accept a key that differs from the one remembered for an actor id.
    pub accept_changed_keys: bool,
    /// Largest file we accept; `None` for no limit.
    pub max_size: Option<u64>,
    /// Wait for a claim, an accept or a connection; also the receiver's claim lease.
    pub timeout: Duration,
    /// DHT bootstrap nodes as `host:port`; empty means [`PUBLIC_BOOTSTRAP`].
    pub bootstrap: Vec<String>,
    /// Where the key pair comes from.
    pub key_source: KeySource,
    /// The remembered-keys file; `None` keeps them in memory for this run.
    pub known_keys_path: Option<PathBuf>,
    /// Address the UDP socket binds to.
    pub host: Ipv4Addr,
    /// Whether and through which blind relay transfers may go when no direct or holepunched
    /// path exists (default: a relay announced on the DHT; `--relay KEY` pins one,
    /// `--no-relay` forbids relaying).
    pub relay: RelayMode,
    /// How much a running transfer must move per window, on both sides, before it fails as
    /// `stalled` ([`ProgressRule`]; default 64 KiB per 30 s).
    pub progress: ProgressRule,
    /// Most offers a watch with a save directory receives at once (default
    /// [`DEFAULT_MAX_CONCURRENT_RECEIVES`]); see [`Node::watch`] for what happens to the rest.
    pub max_concurrent_receives: usize,
    /// Resume broken transfers (default on): a receiver keeps the partial file of a transfer
    /// that broke and continues it when the same sender offers the same file again; a sender
    /// offers to continue when the receiver says it can. Off: the seed protocol only.
    pub resume: bool,
    /// How long a partial file is kept after its last write (default
    /// [`DEFAULT_PARTIAL_EXPIRY`](crate::partial::DEFAULT_PARTIAL_EXPIRY)).
    pub partial_expiry: Duration,
    /// Bandwidth limit per transfer in bytes per second, on both directions (a sender paces
    /// its writes, a receiver its reads); `None` for none.
    pub limit: Option<std::num::NonZeroU64>,
    /// How many times [`Node::send`] offers the file again by itself when its transfer broke
    /// after the connection (the receiver or the network gone, the stream timed out), while
    /// the receiver was heard from within [`timeout`](Self::timeout) (default
    /// [`SEND_RETRIES`](crate::defaults::SEND_RETRIES); 0: never).
    pub send_retries: u32,
}

impl NodeConfig {
    /// Defaults: the public ATS and DHT, a persistent key in the default key store (ephemeral
    /// when there is no home directory), remembered keys in the default file, anyone allowed,
    /// no size limit, [`DEFAULT_TIMEOUT`], bound on all interfaces.
    pub fn new(actor_id: impl Into<String>) -> Self {
        let key_source = crate::identity::KeyStore::default_dir()
            .map_or(KeySource::Ephemeral, |d| {
                KeySource::Persistent(crate::identity::KeyStore::new(d))
            });
        Self {
            ats_url: DEFAULT_ATS_URL.to_owned(),
            ats_token: None,
            actor_id: actor_id.into(),
            allow: Allowlist::default(),
            accept_changed_keys: false,
            max_size: None,
            timeout: DEFAULT_TIMEOUT,
            bootstrap: Vec::new(),
            key_source,
            known_keys_path: KnownKeys::default_path(),
            host: Ipv4Addr::UNSPECIFIED,
            relay: RelayMode::Auto,
            progress: ProgressRule::default(),
            max_concurrent_receives: DEFAULT_MAX_CONCURRENT_RECEIVES,
            resume: true,
            partial_expiry: crate::partial::DEFAULT_PARTIAL_EXPIRY,
            limit: None,
            send_retries: crate::defaults::SEND_RETRIES,
        }
    }
}

/// What every part of a node shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: NodeConfig,
    pub(crate) client: Client,
    /// The node's swarm endpoint: its firewall admits only the keys of transfers waiting for
    /// a connection, and every transfer gets a connection of its own
    /// ([`Swarm::expect`], [`Swarm::connect_on_topic`]).
    pub(crate) swarm: Swarm,
    pub(crate) known: Mutex<KnownKeys>,
    /// One lock per sender key: a receiver handles one transfer per sender at a time, so the
    /// sender can tell which transfer an inbound connection is for.
    pub(crate) peer_locks: Mutex<HashMap<PublicKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Our offers nobody answered yet (cancelled by `destroy`).
    pub(crate) open_offers: Mutex<HashSet<TaskId>>,
    /// Transfers this node is receiving (each at most once, however many watches see it).
    pub(crate) receiving: Mutex<HashSet<ats_p2p_signal::TransferId>>,
    /// Bytes that receives already running still have to write (counted against free space).
    pub(crate) reserved_bytes: Mutex<u64>,
    /// Cancelled by `destroy`.
    pub(crate) shutdown: CancellationToken,
    /// Watches and transfers that `destroy` waits for after cancelling them.
    pub(crate) tracker: TaskTracker,
}

/// Locks a std mutex, ignoring poisoning (the data stays consistent: every critical section is
/// a single insert or remove).
pub(crate) fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// The receive policy from the config.
    pub(crate) fn receive_policy(&self) -> ReceivePolicy {
        ReceivePolicy {
            peer: self.peer_policy(),
            max_size: self.config.max_size,
            ..ReceivePolicy::default()
        }
    }

    /// The peer policy from the config.
    pub(crate) fn peer_policy(&self) -> PeerPolicy {
        PeerPolicy {
            allowlist: self.config.allow.clone(),
            accept_changed_keys: self.config.accept_changed_keys,
        }
    }

    /// The lock that serialises transfers with the peer holding `key`.
    pub(crate) fn peer_lock(&self, key: PublicKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = locked(&self.peer_locks);
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(key).or_default().clone()
    }
}

/// One agent on the network: sends files, watches for offers.
#[derive(Debug)]
pub struct Node {
    shared: Arc<Shared>,
}

impl Node {
    /// Loads the key pair, resolves the bootstrap nodes, joins the DHT and listens. Does not
    /// contact ATS yet.
    pub async fn start(config: NodeConfig) -> Result<Self, NodeError> {
        validate_actor_id(&config.actor_id).map_err(|source| NodeError::ActorId {
            actor: config.actor_id.clone(),
            source,
        })?;
        let key_pair = config
            .key_source
            .key_pair(&config.actor_id)
            .map_err(NodeError::Identity)?;
        let known = match &config.known_keys_path {
            Some(path) => KnownKeys::load(path.clone()).map_err(NodeError::KnownKeys)?,
            None => KnownKeys::in_memory(),
        };
        let mut client_config = ClientConfig::new(
            config.ats_url.clone(),
            Actor::agent(config.actor_id.clone()),
        );
        if let Some(token) = &config.ats_token {
            client_config = client_config.with_token(token.clone());
        }
        let client = Client::new(client_config).map_err(NodeError::Signal)?;
        let given: Vec<String> = if config.bootstrap.is_empty() {
            PUBLIC_BOOTSTRAP.iter().map(|s| (*s).to_owned()).collect()
        } else {
            config.bootstrap.clone()
        };
        let bootstrap = resolve_bootstrap(&given).await;
        if bootstrap.is_empty() {
            return Err(NodeError::NoBootstrap { given });
        }
        let swarm_config = SwarmConfig {
            seed: Some(key_pair.seed()),
            // Nobody but the peers of transfers waiting for a connection.
            allow: Some(Vec::new()),
            relay: config.relay,
            ..SwarmConfig::new(config.host, bootstrap)
        };
        let start = async {
            let swarm = Swarm::new(swarm_config).await?;
            swarm.listen().await?;
            Ok::<_, ats_p2p_swarm::swarm::SwarmError>(swarm)
        };
        let swarm = tokio::time::timeout(START_TIMEOUT, start)
            .await
            .map_err(|_| NodeError::StartTimeout {
                bootstrap: given.clone(),
                waited: START_TIMEOUT,
            })?
            .map_err(NodeError::Swarm)?;
        debug!(actor = %config.actor_id, key = %swarm.public_key().to_hex(), "node started");
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                client,
                swarm,
                known: Mutex::new(known),
                peer_locks: Mutex::default(),
                open_offers: Mutex::default(),
                receiving: Mutex::default(),
                reserved_bytes: Mutex::default(),
                shutdown: CancellationToken::new(),
                tracker: TaskTracker::new(),
            }),
        })
    }

    /// This node's swarm public key (what offers and accepts announce).
    pub fn public_key(&self) -> PublicKey {
        self.shared.swarm.public_key()
    }

    /// This node's actor id.
    pub fn actor_id(&self) -> &str {
        &self.shared.config.actor_id
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.shared.config
    }

    /// The ATS client, acting as this node's actor id.
    pub fn client(&self) -> &Client {
        &self.shared.client
    }

    /// Sends the file at `path` to `recipient` through an offer on `channel`; returns after the
    /// receiver's ACK (the file is on its disk, verified). Events go to `on_event` as they
    /// happen: `offer_sent`, `transfer_start`, `progress` (throttled), then `transfer_complete`
    /// or `transfer_failed`; a transfer that broke after the connection is offered again
    /// ([`NodeConfig::send_retries`]): `retrying`, then again from `offer_sent` (a new transfer
    /// id).
    pub async fn send(
        &self,
        path: impl AsRef<std::path::Path>,
        recipient: &str,
        channel: &str,
        on_event: impl FnMut(&Event) + Send,
    ) -> Result<SendReport, SendError> {
        let send = send::send(&self.shared, path.as_ref(), recipient, channel, on_event);
        self.shared.tracker.track_future(send).await
    }

    /// Watches `channel` for offers addressed to this actor id. With `save_dir`, offers that
    /// pass the policy are accepted and received automatically; without, they come out as
    /// [`Incoming::Offer`] for the caller to [`accept`](PendingOffer::accept) or
    /// [`reject`](PendingOffer::reject). Offers the policy refuses are always rejected on ATS
    /// with the reason. Dropping the [`Inbox`] stops watching.
    ///
    /// With a save directory:
    /// - Temporary files a killed receiver left there are removed first
    ///   ([`remove_stale_temp_files`](crate::save::remove_stale_temp_files): files no running
    ///   receiver holds).
    /// - At most [`NodeConfig::max_concurrent_receives`] offers are received at once. Further
    ///   offers wait unclaimed, in order, with a `queued` event (their senders keep waiting for
    ///   a claim up to their own timeout, as for a receiver that is slow to answer), since a
    ///   user sending a burst of files expects them all to arrive; beyond
    ///   [`MAX_QUEUED_RECEIVES`] waiting offers, new ones are rejected as `busy`.
    /// - An offer is accepted only if its size plus the free-space margin fits in the free
    ///   space less what receives already running still have to write.
    pub fn watch(&self, channel: &str, save_dir: Option<PathBuf>) -> Inbox {
        receive::watch(self.shared.clone(), channel, save_dir)
    }

    /// Cancels this node's unanswered offers, stops its transfers (their tasks are failed or
    /// cancelled with a reason) and closes its DHT node.
    pub async fn destroy(self) {
        self.shared.shutdown.cancel();
        let offers: Vec<TaskId> = locked(&self.shared.open_offers).drain().collect();
        for id in offers {
            if let Err(e) = self.shared.client.cancel(id).await {
                debug!(task = id, error = %e, "cancel at destroy failed");
            }
        }
        // Transfers write their reasons to ATS before the swarm goes away.
        self.shared.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.shared.tracker.wait())
            .await
            .is_err()
        {
            debug!("transfers still running at destroy; leaving the DHT node to them");
            return;
        }
        match Arc::try_unwrap(self.shared) {
            Ok(shared) => shared.swarm.destroy().await,
            Err(_) => debug!("offers still held at destroy; leaving the DHT node to them"),
        }
    }
}

/// Longest wait in [`Node::destroy`] for running transfers to report their end to ATS.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Resolves `host:port` strings to IPv4 socket addresses (names through the system resolver);
/// unusable entries are skipped with a log line.
async fn resolve_bootstrap(given: &[String]) -> Vec<SocketAddrV4> {
    let mut out = Vec::new();
    for entry in given {
        match tokio::net::lookup_host(entry.as_str()).await {
            Ok(addrs) => {
                for a in addrs {
                    if let std::net::SocketAddr::V4(v4) = a
                        && !out.contains(&v4)
                    {
                        out.push(v4);
                    }
                }
            }
            Err(e) => debug!(bootstrap = %entry, error = %e, "cannot resolve bootstrap node"),
        }
    }
    out
}

/// Limits progress events to one per [`PROGRESS_INTERVAL`], plus the last one.
#[derive(Debug)]
pub(crate) struct ProgressThrottle {
    last: Option<Instant>,
}

impl ProgressThrottle {
    /// A throttle that lets the first report through.
    pub(crate) fn new() -> Self {
        Self { last: None }
    }

    /// True when a progress event for `bytes` of `total` should be emitted now.
    pub(crate) fn ready(&mut self, bytes: u64, total: u64) -> bool {
        let now = Instant::now();
        let due = bytes >= total
            || self
                .last
                .is_none_or(|t| now.duration_since(t) >= PROGRESS_INTERVAL);
        if due {
            self.last = Some(now);
        }
        due
    }
}

/// Milliseconds in `d`, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
