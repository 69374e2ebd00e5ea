//! The node's swarm side: one HyperDHT node and one listening server per node, a firewall that
//! admits only the keys of transfers waiting for a connection, and the hand-over of each inbound
//! connection to the transfer that expects it.
//!
//! The node talks to HyperDHT directly rather than through the deduplicating
//! [`Swarm`](ats_p2p_swarm::swarm::Swarm): two agents may have several transfers between them,
//! in both directions, and each transfer gets a connection of its own. The receiver serialises
//! its transfers per sender key (see `receive.rs`), so at most one accepted transfer from a
//! given receiver waits for a connection at a time; an inbound connection goes to the newest
//! waiter for its key.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ats_p2p_swarm::hyperdht::{
    ConnectError, Connection, DhtConfig, Firewall, HyperDht, RelayMode, Server,
};
use ats_p2p_swarm::{KeyPair, PublicKey};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::debug;

use crate::error::NodeError;

/// First pause between topic lookups while the receiver waits for the sender's announcement:
/// the sender usually announces within milliseconds of the accept, so the first retries are
/// quick (time to first byte)...
const LOOKUP_RETRY_FIRST: Duration = Duration::from_millis(20);

/// ...and the pause doubles up to this, so a slow sender does not cost a DHT query every few
/// milliseconds.
const LOOKUP_RETRY_MAX: Duration = Duration::from_secs(1);

/// Pause between connection attempts (the sender may still be opening its firewall).
const CONNECT_RETRY: Duration = Duration::from_millis(250);

/// Longest wait for one lookup or connect attempt, so a stuck query cannot eat the deadline.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Transfers waiting for an inbound connection, by the remote key they expect.
#[derive(Debug, Default)]
struct Waiters {
    by_key: HashMap<PublicKey, Vec<(u64, oneshot::Sender<Connection>)>>,
    next_serial: u64,
}

type SharedWaiters = Arc<Mutex<Waiters>>;

fn lock(w: &SharedWaiters) -> MutexGuard<'_, Waiters> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// The node's HyperDHT node and server.
/// Why [`Transport::connect_on_topic`] found no connection.
#[derive(Debug)]
pub(crate) enum NoConnection {
    /// The deadline passed.
    TimedOut,
    /// No path can exist; what was detected.
    NoPath(String),
}

#[derive(Debug)]
pub(crate) struct Transport {
    dht: Arc<HyperDht>,
    key_pair: KeyPair,
    waiters: SharedWaiters,
    accept_loop: JoinHandle<()>,
}

impl Transport {
    /// Binds on `host`, joins the DHT through `bootstrap`, and listens on `key_pair`.
    pub(crate) async fn start(
        host: Ipv4Addr,
        bootstrap: Vec<SocketAddrV4>,
        key_pair: KeyPair,
        relay: RelayMode,
    ) -> Result<Self, NodeError> {
        let dht = Arc::new(
            HyperDht::bind(DhtConfig::new(host, bootstrap))
                .await
                .map_err(NodeError::Swarm)?,
        );
        dht.set_relay_mode(relay);
        let waiters = SharedWaiters::default();
        let admitted = waiters.clone();
        let firewall: Firewall = Arc::new(move |key: &PublicKey| {
            lock(&admitted)
                .by_key
                .get(key)
                .is_some_and(|v| v.iter().any(|(_, tx)| !tx.is_closed()))
        });
        let server = dht
            .listen(key_pair.clone(), firewall)
            .await
            .map_err(NodeError::Swarm)?;
        let accept_loop = tokio::spawn(hand_over(server, waiters.clone()));
        Ok(Self {
            dht,
            key_pair,
            waiters,
            accept_loop,
        })
    }

    /// Our public key.
    pub(crate) fn public_key(&self) -> PublicKey {
        self.key_pair.public_key()
    }

    /// Opens the firewall for `remote` until the returned value is dropped, and receives the
    /// next inbound connection from it.
    pub(crate) fn expect(&self, remote: PublicKey) -> Expected {
        let (tx, rx) = oneshot::channel();
        let mut w = lock(&self.waiters);
        let serial = w.next_serial;
        w.next_serial = w.next_serial.wrapping_add(1);
        w.by_key.entry(remote).or_default().push((serial, tx));
        Expected {
            rx,
            remote,
            serial,
            waiters: self.waiters.clone(),
        }
    }

    /// Announces us on `topic`.
    pub(crate) async fn announce(&self, topic: [u8; 32]) -> Result<(), NodeError> {
        self.dht
            .dht()
            .announce(topic, &self.key_pair, Vec::new())
            .await
            .map(|_| ())
            .map_err(|e| NodeError::Swarm(e.into()))
    }

    /// Withdraws our announcement on `topic` (best effort, in the background).
    pub(crate) fn unannounce(&self, topic: [u8; 32]) {
        let dht = self.dht.clone();
        let kp = self.key_pair.clone();
        tokio::spawn(async move {
            if let Err(e) = dht.dht().unannounce(topic, &kp).await {
                debug!(error = %e, "unannounce failed");
            }
        });
    }

    /// Waits until `remote` is announced on `topic` (the sender is ready for us), then connects
    /// to it; retries until `deadline`. Fails at once when no path can exist (both NATs
    /// randomize and no relay carried it): retrying would not change that.
    pub(crate) async fn connect_on_topic(
        &self,
        topic: [u8; 32],
        remote: PublicKey,
        deadline: Instant,
    ) -> Result<Connection, NoConnection> {
        let announced = async {
            let mut pause = LOOKUP_RETRY_FIRST;
            loop {
                let found = tokio::time::timeout(ATTEMPT_TIMEOUT, self.dht.dht().lookup(topic))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .is_some_and(|results| {
                        results
                            .iter()
                            .any(|r| r.peers.iter().any(|p| p.public_key == *remote.as_bytes()))
                    });
                if found {
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(LOOKUP_RETRY_MAX);
            }
        };
        tokio::time::timeout_at(deadline, announced)
            .await
            .map_err(|_| NoConnection::TimedOut)?;
        let connect = async {
            loop {
                let attempt = tokio::time::timeout(
                    ATTEMPT_TIMEOUT,
                    self.dht.connect(&self.key_pair, &remote),
                )
                .await;
                match attempt {
                    Ok(Ok(conn)) if conn.remote_public_key() == remote => return Ok(conn),
                    Ok(Ok(_)) => debug!("connected to an unexpected key; retrying"),
                    Ok(Err(ConnectError::NoPath(reason))) => {
                        return Err(NoConnection::NoPath(reason.to_string()));
                    }
                    Ok(Err(e)) => debug!(error = %e, "connect failed; retrying"),
                    Err(_) => debug!("connect attempt timed out; retrying"),
                }
                tokio::time::sleep(CONNECT_RETRY).await;
            }
        };
        tokio::time::timeout_at(deadline, connect)
            .await
            .map_err(|_| NoConnection::TimedOut)?
    }

    /// Stops listening and closes the DHT node.
    pub(crate) async fn shutdown(self) {
        self.accept_loop.abort();
        let _ = self.accept_loop.await;
        lock(&self.waiters).by_key.clear();
        match Arc::try_unwrap(self.dht) {
            Ok(dht) => dht.destroy().await,
            Err(_) => debug!("DHT node still shared at shutdown; dropping it"),
        }
    }
}

/// Gives each inbound connection to the newest transfer waiting for its key; drops it if none.
async fn hand_over(mut server: Server, waiters: SharedWaiters) {
    while let Some(mut conn) = server.accept().await {
        let remote = conn.remote_public_key();
        let mut w = lock(&waiters);
        let Some(list) = w.by_key.get_mut(&remote) else {
            debug!(remote = %remote.to_hex(), "connection nobody waits for; dropped");
            continue;
        };
        while let Some((_, tx)) = list.pop() {
            match tx.send(conn) {
                Ok(()) => break,
                Err(back) => conn = back,
            }
        }
        if list.is_empty() {
            w.by_key.remove(&remote);
        }
    }
}

/// A transfer's wait for an inbound connection from one key; dropping it closes the firewall
/// for that key again (unless another transfer waits for it).
#[derive(Debug)]
pub(crate) struct Expected {
    rx: oneshot::Receiver<Connection>,
    remote: PublicKey,
    serial: u64,
    waiters: SharedWaiters,
}

impl Expected {
    /// The connection, or `None` at `deadline`.
    pub(crate) async fn connection(&mut self, deadline: Instant) -> Option<Connection> {
        tokio::time::timeout_at(deadline, &mut self.rx)
            .await
            .ok()
            .and_then(Result::ok)
    }
}

impl Drop for Expected {
    fn drop(&mut self) {
        let mut w = lock(&self.waiters);
        if let Some(list) = w.by_key.get_mut(&self.remote) {
            list.retain(|(s, _)| *s != self.serial);
            if list.is_empty() {
                w.by_key.remove(&self.remote);
            }
        }
    }
}
