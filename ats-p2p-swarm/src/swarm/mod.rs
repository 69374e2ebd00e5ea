//! The swarm API (npm `hyperswarm` 4.17 semantics) on top of [`HyperDht`].
//!
//! One key pair per swarm (from a 32-byte seed, or ephemeral) serves every topic. `join(topic,
//! mode)` announces the key on the topic (server) and/or looks the topic up and connects to every
//! peer found (client); `leave` unannounces. Connections ([`SwarmConnection`]) are
//! `AsyncRead + AsyncWrite` with the remote key attached and arrive on
//! [`Swarm::next_connection`]; [`Swarm::connect`] dials an expected key directly.
//!
//! Duplicates (§4 of the spec): at most one live connection per remote key. When a second one
//! is established, the one whose `is_initiator` equals `local_pk > remote_pk` is kept (the
//! larger key is the expected initiator; both ends decide the same way), else the newer one;
//! the loser is closed ("duplicate connection"). Topic clients skip keys that already have a
//! connection or a dial in flight. An optional allowlist of keys is the server's key firewall.
//!
//! Beside these, [`Swarm::expect`] and [`Swarm::connect_on_topic`] give an application
//! connections of their own, outside the duplicate rule, when it runs several exchanges with one
//! peer at once (see [`dedicated`]).

pub mod dedicated;

pub use dedicated::{ExpectedConnection, NoConnection};

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tracing::debug;

use crate::dht::{Id, hash};
use crate::hyperdht::{ConnectError, Connection, DhtConfig, DhtError, Firewall, HyperDht, Server};
use crate::keys::{KeyPair, PublicKey};

/// Connections queued for the application before new ones are dropped.
const CONNECTION_QUEUE: usize = 64;
/// Topic refresh (JS: 10 min ± 2 min; re-announce and re-lookup).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(600);
/// Most peers connected at once (JS `maxPeers`).
pub const MAX_PEERS: usize = 64;

/// Errors of the swarm.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    /// Connecting or listening failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The DHT failed.
    #[error(transparent)]
    Dht(#[from] DhtError),
    /// A connection to this key already exists.
    #[error("already connected to this key")]
    Duplicate,
    /// The swarm was destroyed.
    #[error("swarm destroyed")]
    Destroyed,
}

/// `discovery_key`-style topic hashing: BLAKE2b-256 of a name.
pub fn topic(name: &[u8]) -> Id {
    hash(name)
}

/// How to join a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinMode {
    /// Announce ourselves on the topic and accept connections.
    pub server: bool,
    /// Look the topic up and connect to its peers.
    pub client: bool,
}

impl JoinMode {
    /// Server only.
    pub const SERVER: Self = Self {
        server: true,
        client: false,
    };
    /// Client only.
    pub const CLIENT: Self = Self {
        server: false,
        client: true,
    };
    /// Both (the JS default).
    pub const BOTH: Self = Self {
        server: true,
        client: true,
    };
}

/// Swarm configuration.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Host to bind (and advertise).
    pub host: Ipv4Addr,
    /// DHT bootstrap nodes.
    pub bootstrap: Vec<SocketAddrV4>,
    /// Key pair seed (persistent identity); `None` = ephemeral.
    pub seed: Option<[u8; 32]>,
    /// Keys allowed to connect to us; `None` = anyone.
    pub allow: Option<Vec<PublicKey>>,
    /// Whether and through which relay to connect when no direct path exists.
    pub relay: crate::hyperdht::RelayMode,
}

impl SwarmConfig {
    /// An ephemeral-key swarm on `host` with these bootstrap nodes, no allowlist.
    pub fn new(host: Ipv4Addr, bootstrap: Vec<SocketAddrV4>) -> Self {
        Self {
            host,
            bootstrap,
            seed: None,
            allow: None,
            relay: crate::hyperdht::RelayMode::Auto,
        }
    }
}

#[derive(Debug)]
struct Entry {
    serial: u64,
    is_initiator: bool,
    killed: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct State {
    connections: HashMap<PublicKey, Entry>,
    dialing: HashSet<PublicKey>,
    topics: HashMap<Id, tokio::task::JoinHandle<()>>,
    destroyed: bool,
}

#[derive(Debug)]
struct Inner {
    dht: Arc<HyperDht>,
    key_pair: KeyPair,
    /// Keys allowed to connect besides expected ones; `None` = anyone.
    allow: Option<HashSet<PublicKey>>,
    /// Inbound connections waited for outside the duplicate rule.
    waiters: dedicated::SharedWaiters,
    state: Mutex<State>,
    serial: AtomicU64,
    tx: mpsc::Sender<SwarmConnection>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies the duplicate rule; returns the connection to hand out, or `None` if it lost.
    fn register(self: &Arc<Self>, conn: Connection) -> Option<SwarmConnection> {
        let remote = conn.remote_public_key();
        let is_initiator = conn.is_initiator();
        let expected_initiator = self.key_pair.public_key() > remote;
        let mut st = self.lock();
        if st.destroyed || st.connections.len() >= MAX_PEERS {
            return None;
        }
        if let Some(old) = st.connections.get(&remote) {
            let old_alive = !old.killed.load(Ordering::Acquire);
            if old_alive
                && old.is_initiator == expected_initiator
                && is_initiator != old.is_initiator
            {
                debug!(remote = %remote.to_hex(), "duplicate connection: keeping the existing one");
                return None;
            }
            old.killed.store(true, Ordering::Release);
        }
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let killed = Arc::new(AtomicBool::new(false));
        st.connections.insert(
            remote,
            Entry {
                serial,
                is_initiator,
                killed: killed.clone(),
            },
        );
        Some(SwarmConnection {
            conn,
            remote,
            serial,
            killed,
            swarm: Arc::downgrade(self),
        })
    }

    async fn dial(self: &Arc<Self>, remote: PublicKey) -> Result<SwarmConnection, SwarmError> {
        {
            let mut st = self.lock();
            if st.destroyed {
                return Err(SwarmError::Destroyed);
            }
            if st.connections.contains_key(&remote) || !st.dialing.insert(remote) {
                return Err(SwarmError::Duplicate);
            }
        }
        let r = self.dht.connect(&self.key_pair, &remote).await;
        self.lock().dialing.remove(&remote);
        let conn = r?;
        self.register(conn).ok_or(SwarmError::Duplicate)
    }
}

/// A swarm node: one key pair, many topics.
pub struct Swarm {
    inner: Arc<Inner>,
    rx: mpsc::Receiver<SwarmConnection>,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
    firewall: Firewall,
}

impl std::fmt::Debug for Swarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swarm")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

impl Swarm {
    /// Binds the DHT node and waits for its bootstrap.
    pub async fn new(config: SwarmConfig) -> Result<Self, SwarmError> {
        let key_pair = config
            .seed
            .map_or_else(KeyPair::generate, KeyPair::from_seed);
        let dht = Arc::new(HyperDht::bind(DhtConfig::new(config.host, config.bootstrap)).await?);
        dht.set_relay_mode(config.relay);
        dht.ready().await?;
        let (tx, rx) = mpsc::channel(CONNECTION_QUEUE);
        let own = key_pair.public_key();
        let allow: Option<HashSet<PublicKey>> = config.allow.map(|v| v.into_iter().collect());
        let waiters = dedicated::SharedWaiters::default();
        let firewall: Firewall = {
            let allow = allow.clone();
            let waiters = waiters.clone();
            Arc::new(move |k: &PublicKey| {
                *k != own
                    && (dedicated::is_expected(&waiters, k)
                        || allow.as_ref().is_none_or(|a| a.contains(k)))
            })
        };
        Ok(Self {
            inner: Arc::new(Inner {
                dht,
                key_pair,
                allow,
                waiters,
                state: Mutex::new(State::default()),
                serial: AtomicU64::new(0),
                tx,
            }),
            rx,
            server: Mutex::new(None),
            firewall,
        })
    }

    /// Our public key.
    pub fn public_key(&self) -> PublicKey {
        self.inner.key_pair.public_key()
    }

    /// The underlying DHT node.
    pub fn dht(&self) -> &HyperDht {
        &self.inner.dht
    }

    /// Starts listening for connections now rather than at the first server join (the DHT then
    /// knows where to reach us, and expected connections can arrive).
    pub async fn listen(&self) -> Result<(), SwarmError> {
        self.ensure_server().await
    }

    /// Admits `remote` through the firewall until the returned wait is dropped, and hands its
    /// next inbound connection to that wait (not to [`next_connection`](Self::next_connection)),
    /// outside the duplicate rule. Several waits for one key are served newest first.
    pub fn expect(&self, remote: PublicKey) -> ExpectedConnection {
        dedicated::expect(&self.inner.waiters, remote)
    }

    /// Waits until `remote` is announced on `topic`, then dials it, retrying until `deadline`;
    /// the connection is the caller's own, outside the duplicate rule. Fails at once when no
    /// path can exist (both NATs randomize and no relay carried it).
    pub async fn connect_on_topic(
        &self,
        topic: Id,
        remote: PublicKey,
        deadline: tokio::time::Instant,
    ) -> Result<Connection, NoConnection> {
        dedicated::connect_on_topic(
            &self.inner.dht,
            &self.inner.key_pair,
            topic,
            remote,
            deadline,
        )
        .await
    }

    async fn ensure_server(&self) -> Result<(), SwarmError> {
        if self
            .server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return Ok(());
        }
        let server = self
            .inner
            .dht
            .listen(self.inner.key_pair.clone(), self.firewall.clone())
            .await?;
        let inner = self.inner.clone();
        let task = tokio::spawn(accept_loop(server, inner));
        let mut slot = self.server.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_ref() {
            Some(_) => task.abort(),
            None => *slot = Some(task),
        }
        Ok(())
    }

    /// Joins `topic`: announces (server) and/or connects to the peers found (client). Returns
    /// after the first announce and lookup; refreshes every [`REFRESH_INTERVAL`].
    pub async fn join(&self, topic: Id, mode: JoinMode) -> Result<(), SwarmError> {
        if mode.server {
            self.ensure_server().await?;
        }
        let inner = self.inner.clone();
        refresh(&inner, topic, mode).await?;
        let task = tokio::spawn(async move {
            let mut t = tokio::time::interval_at(
                tokio::time::Instant::now() + REFRESH_INTERVAL,
                REFRESH_INTERVAL,
            );
            loop {
                t.tick().await;
                if let Err(e) = refresh(&inner, topic, mode).await {
                    debug!(error = %e, "topic refresh failed");
                }
            }
        });
        if let Some(old) = self.inner.lock().topics.insert(topic, task) {
            old.abort();
        }
        Ok(())
    }

    /// Leaves `topic`: stops refreshing and unannounces (connections stay open).
    pub async fn leave(&self, topic: Id) -> Result<(), SwarmError> {
        let task = self.inner.lock().topics.remove(&topic);
        if let Some(t) = task {
            t.abort();
        }
        self.inner
            .dht
            .dht()
            .unannounce(topic, &self.inner.key_pair)
            .await?;
        Ok(())
    }

    /// Connects to an expected remote key (fails with [`SwarmError::Duplicate`] if connected).
    pub async fn connect(&self, remote: PublicKey) -> Result<SwarmConnection, SwarmError> {
        self.inner.dial(remote).await
    }

    /// The next connection (inbound, or outbound from a topic); `None` after `destroy`.
    pub async fn next_connection(&mut self) -> Option<SwarmConnection> {
        self.rx.recv().await
    }

    /// Keys with a live connection.
    pub fn connected_keys(&self) -> Vec<PublicKey> {
        self.inner
            .lock()
            .connections
            .iter()
            .filter(|(_, e)| !e.killed.load(Ordering::Acquire))
            .map(|(k, _)| *k)
            .collect()
    }

    /// Leaves every topic (unannounce), stops listening, closes connections and the DHT node.
    pub async fn destroy(self) {
        let topics: Vec<Id> = {
            let mut st = self.inner.lock();
            st.destroyed = true;
            for e in st.connections.values() {
                e.killed.store(true, Ordering::Release);
            }
            st.topics
                .drain()
                .map(|(t, h)| {
                    h.abort();
                    t
                })
                .collect()
        };
        for t in topics {
            let _ = self
                .inner
                .dht
                .dht()
                .unannounce(t, &self.inner.key_pair)
                .await;
        }
        if let Some(s) = self.server.lock().unwrap_or_else(|e| e.into_inner()).take() {
            s.abort();
        }
        dedicated::clear(&self.inner.waiters);
        drop(self.rx);
        if let Ok(inner) = Arc::try_unwrap(self.inner)
            && let Ok(dht) = Arc::try_unwrap(inner.dht)
        {
            dht.destroy().await;
        }
    }
}

async fn refresh(inner: &Arc<Inner>, topic: Id, mode: JoinMode) -> Result<(), SwarmError> {
    let dht = inner.dht.dht();
    if mode.server {
        dht.announce(topic, &inner.key_pair, Vec::new()).await?;
    }
    if mode.client {
        let own = inner.key_pair.public_key();
        let mut keys: Vec<PublicKey> = Vec::new();
        for r in dht.lookup(topic).await? {
            for p in r.peers {
                let k = PublicKey::from_bytes(p.public_key);
                if k != own && !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        for k in keys {
            let inner = inner.clone();
            tokio::spawn(async move {
                match inner.dial(k).await {
                    Ok(c) => {
                        let _ = inner.tx.send(c).await;
                    }
                    Err(e) => debug!(remote = %k.to_hex(), error = %e, "topic connect failed"),
                }
            });
        }
    }
    Ok(())
}

async fn accept_loop(mut server: Server, inner: Arc<Inner>) {
    while let Some(conn) = server.accept().await {
        // Expected connections go to their waiter; one whose wait ended meanwhile is dropped
        // unless the allowlist admits it anyway.
        let Some(conn) = dedicated::hand_over(&inner.waiters, conn) else {
            continue;
        };
        let remote = conn.remote_public_key();
        if inner.allow.as_ref().is_some_and(|a| !a.contains(&remote)) {
            debug!(remote = %remote.to_hex(), "connection nobody waits for; dropped");
            continue;
        }
        if let Some(c) = inner.register(conn)
            && inner.tx.send(c).await.is_err()
        {
            break;
        }
    }
}

/// A swarm connection: the secret stream with the remote key attached.
#[derive(Debug)]
pub struct SwarmConnection {
    conn: Connection,
    remote: PublicKey,
    serial: u64,
    killed: Arc<AtomicBool>,
    swarm: std::sync::Weak<Inner>,
}

impl SwarmConnection {
    /// The remote peer's public key (authenticated by the handshake).
    pub fn remote_public_key(&self) -> PublicKey {
        self.remote
    }

    /// How the connection reached the peer.
    pub fn path(&self) -> &crate::hyperdht::PathInfo {
        self.conn.path()
    }

    /// Whether we dialed (Noise initiator).
    pub fn is_initiator(&self) -> bool {
        self.conn.is_initiator()
    }

    /// The Noise handshake hash (identical on both ends of one connection).
    pub fn handshake_hash(&self) -> [u8; 64] {
        self.conn.handshake_hash()
    }

    /// Whether the swarm closed this connection (duplicate or destroy).
    pub fn is_closed_by_swarm(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    fn check(&self) -> io::Result<()> {
        if self.killed.load(Ordering::Acquire) {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "duplicate connection",
            ))
        } else {
            Ok(())
        }
    }
}

impl Drop for SwarmConnection {
    fn drop(&mut self) {
        if let Some(inner) = self.swarm.upgrade() {
            let mut st = inner.lock();
            if st
                .connections
                .get(&self.remote)
                .is_some_and(|e| e.serial == self.serial)
            {
                st.connections.remove(&self.remote);
            }
        }
    }
}

impl AsyncRead for SwarmConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.conn).poll_read(cx, buf)
    }
}

impl AsyncWrite for SwarmConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.conn).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.conn).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.conn).poll_shutdown(cx)
    }
}
