//! Connections of their own, outside the duplicate rule: an application that runs several
//! exchanges with one peer at once (ats-p2p gives every file transfer its own connection, in
//! either direction) expects an inbound connection from a key ([`Swarm::expect`]), or waits
//! for a key to appear on a topic and dials it ([`Swarm::connect_on_topic`]).
//!
//! An expected key is admitted by the swarm's firewall while its [`ExpectedConnection`] lives,
//! whatever the allowlist says; an inbound connection from it goes to the newest waiter for
//! that key and never to [`Swarm::next_connection`].
//!
//! [`Swarm::expect`]: super::Swarm::expect
//! [`Swarm::connect_on_topic`]: super::Swarm::connect_on_topic
//! [`Swarm::next_connection`]: super::Swarm::next_connection

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::debug;

use crate::dht::Id;
use crate::hyperdht::{ConnectError, Connection, HyperDht};
use crate::keys::{KeyPair, PublicKey};

/// First pause between topic lookups while waiting for a key to be announced: a peer usually
/// announces within milliseconds of agreeing to meet, so the first retries are quick...
///
/// 5 ms: the receiver looks up right after its accept is on ATS, while the sender still has to
/// see the accept, read it and announce (a few ms on a local hub), so the first lookup usually
/// misses, and the pause after it was most of a small transfer's time (20 ms: every 1 KiB
/// `send` waited for the second lookup). The pause starts when a lookup ends, and on the
/// public DHT a lookup takes hundreds of ms, so the shorter start adds at most two lookups
/// per connect there.
const LOOKUP_RETRY_FIRST: Duration = Duration::from_millis(5);

/// ...and the pause doubles up to this, so a slow peer does not cost a DHT query every few
/// milliseconds.
const LOOKUP_RETRY_MAX: Duration = Duration::from_secs(1);

/// Pause between connection attempts (the peer may still be opening its firewall).
const CONNECT_RETRY: Duration = Duration::from_millis(250);

/// Longest wait for one lookup or connect attempt, so a stuck query cannot eat the deadline.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Why [`Swarm::connect_on_topic`](super::Swarm::connect_on_topic) found no connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoConnection {
    /// The deadline passed.
    #[error("no connection before the deadline")]
    TimedOut,
    /// No path can exist (both NATs randomize and no relay carried it); what was detected.
    #[error("no path to the peer: {0}")]
    NoPath(String),
}

/// Inbound connections waited for, by the remote key they are expected from.
#[derive(Debug, Default)]
pub(super) struct Waiters {
    by_key: HashMap<PublicKey, Vec<(u64, oneshot::Sender<Connection>)>>,
    next_serial: u64,
}

/// The waiters, shared by the swarm, its firewall and its accept loop.
pub(super) type SharedWaiters = Arc<Mutex<Waiters>>;

fn lock(w: &SharedWaiters) -> MutexGuard<'_, Waiters> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// True while someone waits for a connection from `key` (the firewall admits it).
pub(super) fn is_expected(waiters: &SharedWaiters, key: &PublicKey) -> bool {
    lock(waiters)
        .by_key
        .get(key)
        .is_some_and(|v| v.iter().any(|(_, tx)| !tx.is_closed()))
}

/// Gives `conn` to the newest waiter for its key; gives it back when nobody waits.
pub(super) fn hand_over(waiters: &SharedWaiters, conn: Connection) -> Option<Connection> {
    let remote = conn.remote_public_key();
    let mut w = lock(waiters);
    let Some(list) = w.by_key.get_mut(&remote) else {
        return Some(conn);
    };
    let mut left = Some(conn);
    while let Some((_, tx)) = list.pop() {
        let Some(conn) = left.take() else { break };
        match tx.send(conn) {
            Ok(()) => break,
            Err(back) => left = Some(back),
        }
    }
    if list.is_empty() {
        w.by_key.remove(&remote);
    }
    left
}

/// Drops every waiter (the swarm is destroyed).
pub(super) fn clear(waiters: &SharedWaiters) {
    lock(waiters).by_key.clear();
}

/// Registers a wait for an inbound connection from `remote`.
pub(super) fn expect(waiters: &SharedWaiters, remote: PublicKey) -> ExpectedConnection {
    let (tx, rx) = oneshot::channel();
    let mut w = lock(waiters);
    let serial = w.next_serial;
    w.next_serial = w.next_serial.wrapping_add(1);
    w.by_key.entry(remote).or_default().push((serial, tx));
    ExpectedConnection {
        rx,
        remote,
        serial,
        waiters: waiters.clone(),
    }
}

/// A wait for an inbound connection from one key; dropping it closes the firewall for that
/// key again (unless someone else waits for it).
#[derive(Debug)]
pub struct ExpectedConnection {
    rx: oneshot::Receiver<Connection>,
    remote: PublicKey,
    serial: u64,
    waiters: SharedWaiters,
}

impl ExpectedConnection {
    /// The key expected.
    pub fn remote_public_key(&self) -> PublicKey {
        self.remote
    }

    /// The connection, or `None` at `deadline` (or when the swarm was destroyed).
    pub async fn connection(&mut self, deadline: Instant) -> Option<Connection> {
        tokio::time::timeout_at(deadline, &mut self.rx)
            .await
            .ok()
            .and_then(Result::ok)
    }
}

impl Drop for ExpectedConnection {
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

/// Waits until `remote` is announced on `topic`, then connects to it; retries until
/// `deadline`. Fails at once when no path can exist: retrying would not change that.
pub(super) async fn connect_on_topic(
    dht: &HyperDht,
    key_pair: &KeyPair,
    topic: Id,
    remote: PublicKey,
    deadline: Instant,
) -> Result<Connection, NoConnection> {
    let announced = async {
        // The workspace's one backoff (`backon`), without jitter: one lookup per waiting node.
        let mut pauses = backon::BackoffBuilder::build(
            backon::ExponentialBuilder::new()
                .with_min_delay(LOOKUP_RETRY_FIRST)
                .with_max_delay(LOOKUP_RETRY_MAX)
                .without_max_times(),
        );
        loop {
            let found = tokio::time::timeout(ATTEMPT_TIMEOUT, dht.dht().lookup(topic))
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
            tokio::time::sleep(pauses.next().unwrap_or(LOOKUP_RETRY_MAX)).await;
        }
    };
    tokio::time::timeout_at(deadline, announced)
        .await
        .map_err(|_| NoConnection::TimedOut)?;
    let connect = async {
        loop {
            let attempt =
                tokio::time::timeout(ATTEMPT_TIMEOUT, dht.connect(key_pair, &remote)).await;
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
