//! The relay server: listens on its key, serves one blind-relay session per connection, pairs
//! requests by token and splices the two clients' UDX streams on the DHT's server socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::RngCore;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::messages::{PAIR, PROTOCOL, Pair, UNPAIR, Unpair};
use super::pairing::{Link, PairOutcome, Pairings, RelayLimits, SessionId};
use super::protomux::{Channel, ChannelEvent, LOCAL_CHANNEL_ID, encode_message};
use super::{RELAY_TOPIC, RelayError};
use crate::hyperdht::{Connection, Firewall, HyperDht};
use crate::keys::{KeyPair, PublicKey};
use crate::udx::{RelaySide, UdxSocket};

/// How often a relay announces itself on [`RELAY_TOPIC`] (records live 20 min on DHT nodes).
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// How often expired pairings and dead links are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Frames queued for one session beyond its own replies (pair answers from matches).
const SESSION_QUEUE_SLACK: usize = 16;
/// How long a closing session waits to flush its close frame.
const SESSION_CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Attempts to find a free random relay stream id.
const ID_ATTEMPTS: usize = 16;

/// Counters of a [`RelayServer`] (cumulative unless noted "now").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Connections served as sessions.
    pub sessions_accepted: u64,
    /// Sessions open now.
    pub sessions_active: u64,
    /// Connections closed at once because [`RelayLimits::max_sessions`] were open.
    pub sessions_refused: u64,
    /// Sessions closed for a malformed frame or message.
    pub malformed: u64,
    /// `pair` requests stored.
    pub pairings_requested: u64,
    /// Pairings matched (links made).
    pub pairings_matched: u64,
    /// Pairings or links cancelled (`unpair`, session closed).
    pub pairings_cancelled: u64,
    /// Pending pairings that expired unmatched.
    pub pairings_expired: u64,
    /// Requests refused by a limit.
    pub pairings_refused: u64,
    /// Duplicate requests ignored.
    pub pairings_duplicate: u64,
    /// Pending pairings now.
    pub pending: u64,
    /// Active links now.
    pub links_active: u64,
    /// UDX packets forwarded (over the DHT socket's whole life).
    pub packets_forwarded: u64,
    /// Bytes forwarded, UDX headers included.
    pub bytes_forwarded: u64,
    /// Packets to relay ids that were dropped (wrong source, other side not there yet).
    pub packets_dropped: u64,
}

#[derive(Debug)]
struct SessionHandle {
    tx: mpsc::Sender<Vec<u8>>,
    addr: Option<SocketAddr>,
}

#[derive(Debug)]
struct State {
    pairings: Pairings,
    sessions: HashMap<SessionId, SessionHandle>,
    next_session: SessionId,
    accepted: u64,
    refused: u64,
    malformed: u64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    socket: Arc<UdxSocket>,
    cancel: CancellationToken,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A free random stream id on the socket (never 0).
    fn fresh_id(&self, taken: &[u32]) -> Option<u32> {
        (0..ID_ATTEMPTS)
            .map(|_| rand::rngs::OsRng.next_u32())
            .find(|id| *id != 0 && !taken.contains(id) && !self.socket.id_in_use(*id))
    }

    fn remove_links(&self, links: &[Link]) {
        for l in links {
            self.socket.remove_relay(l.relay_ids[0]);
        }
    }

    fn on_pair(&self, session: SessionId, pair: Pair) {
        let mut st = self.lock();
        let now = Instant::now();
        let outcome = st
            .pairings
            .handle_pair(now, session, pair.is_initiator, pair.token, pair.id);
        let PairOutcome::Matched {
            responder,
            initiator,
        } = outcome
        else {
            debug!(session, ?outcome, "pair request");
            return;
        };
        let halves = [responder, initiator];
        let Some(a) = self.fresh_id(&[]) else { return };
        let Some(b) = self.fresh_id(&[a]) else { return };
        let ids = [a, b];
        let sides = [0, 1].map(|i| RelaySide {
            local_id: ids[i],
            remote_id: halves[i].remote_id,
            peer: st.sessions.get(&halves[i].session).and_then(|s| s.addr),
        });
        if let Err(e) = self.socket.create_relay(sides[0], sides[1]) {
            debug!(error = %e, "relay entries not created");
            return;
        }
        st.pairings.add_link(Link {
            token: pair.token,
            sessions: [responder.session, initiator.session],
            relay_ids: ids,
        });
        for (i, half) in halves.iter().enumerate() {
            let reply = Pair {
                is_initiator: i == 1,
                token: pair.token,
                id: ids[i],
                seq: 0,
            };
            let frame = encode_message(LOCAL_CHANNEL_ID, PAIR, &reply.encode());
            if let Some(s) = st.sessions.get(&half.session)
                && s.tx.try_send(frame).is_err()
            {
                debug!(
                    session = half.session,
                    "pair reply dropped: session queue full"
                );
            }
        }
        debug!(responder = ids[0], initiator = ids[1], "pairing matched");
    }

    fn on_unpair(&self, session: SessionId, unpair: Unpair) {
        let link = self.lock().pairings.handle_unpair(session, &unpair.token);
        if let Some(l) = link {
            self.remove_links(&[l]);
        }
    }

    fn close_session(&self, session: SessionId) {
        let links = {
            let mut st = self.lock();
            st.sessions.remove(&session);
            st.pairings.close_session(session)
        };
        self.remove_links(&links);
    }

    fn sweep(&self) {
        let mut st = self.lock();
        st.pairings.expire(Instant::now());
        let socket = &self.socket;
        let dead = st.pairings.prune_links(|id| socket.has_relay(id));
        drop(st);
        self.remove_links(&dead);
    }
}

/// A blind relay on a HyperDHT node: see the [module docs](super).
#[derive(Debug)]
pub struct RelayServer {
    shared: Arc<Shared>,
    public_key: PublicKey,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RelayServer {
    /// Listens on `key_pair` (any remote key may connect), serves every connection and
    /// announces the relay on [`RELAY_TOPIC`] now and every [`ANNOUNCE_INTERVAL`].
    pub async fn spawn(dht: Arc<HyperDht>, key_pair: KeyPair) -> Result<Self, RelayError> {
        Self::spawn_with(dht, key_pair, RelayLimits::default()).await
    }

    /// [`RelayServer::spawn`] with explicit limits.
    pub async fn spawn_with(
        dht: Arc<HyperDht>,
        key_pair: KeyPair,
        limits: RelayLimits,
    ) -> Result<Self, RelayError> {
        let allow_all: Firewall = Arc::new(|_| true);
        let listener = dht
            .listen(key_pair.clone(), allow_all)
            .await
            .map_err(RelayError::Listen)?;
        let public_key = key_pair.public_key();
        match dht.dht().announce(RELAY_TOPIC, &key_pair, Vec::new()).await {
            Ok(n) => debug!(nodes = n, "relay announced"),
            Err(e) => debug!(error = %e, "relay announce failed"),
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pairings: Pairings::new(limits),
                sessions: HashMap::new(),
                next_session: 0,
                accepted: 0,
                refused: 0,
                malformed: 0,
            }),
            socket: dht.server_socket().clone(),
            cancel: CancellationToken::new(),
        });
        let task = tokio::spawn(run(shared.clone(), dht, key_pair, listener));
        Ok(Self {
            shared,
            public_key,
            task: Some(task),
        })
    }

    /// The relay's public key (what clients connect to and put in `relayThrough`).
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Counters now.
    pub fn stats(&self) -> RelayStats {
        let st = self.shared.lock();
        let c = st.pairings.counters();
        let f = self.shared.socket.relay_counters();
        RelayStats {
            sessions_accepted: st.accepted,
            sessions_active: st.sessions.len() as u64,
            sessions_refused: st.refused,
            malformed: st.malformed,
            pairings_requested: c.requested,
            pairings_matched: c.matched,
            pairings_cancelled: c.cancelled,
            pairings_expired: c.expired,
            pairings_refused: c.refused,
            pairings_duplicate: c.duplicates,
            pending: st.pairings.pending() as u64,
            links_active: st.pairings.links() as u64,
            packets_forwarded: f.packets,
            bytes_forwarded: f.bytes,
            packets_dropped: f.dropped,
        }
    }

    /// Stops listening, unannounces, closes every session and removes every link.
    pub async fn close(mut self) {
        self.shared.cancel.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for RelayServer {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

async fn run(
    shared: Arc<Shared>,
    dht: Arc<HyperDht>,
    key_pair: KeyPair,
    mut listener: crate::hyperdht::Server,
) {
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    let mut announce = tokio::time::interval_at(
        tokio::time::Instant::now() + ANNOUNCE_INTERVAL,
        ANNOUNCE_INTERVAL,
    );
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            () = shared.cancel.cancelled() => break,
            conn = listener.accept() => {
                let Some(conn) = conn else { break };
                start_session(&shared, &mut sessions, conn);
            }
            _ = sweep.tick() => {
                shared.sweep();
                while sessions.try_join_next().is_some() {}
            }
            _ = announce.tick() => {
                let dht = dht.clone();
                let kp = key_pair.clone();
                tokio::spawn(async move {
                    if let Err(e) = dht.dht().announce(RELAY_TOPIC, &kp, Vec::new()).await {
                        debug!(error = %e, "relay re-announce failed");
                    }
                });
            }
        }
    }
    shared.cancel.cancel();
    listener.close().await;
    let _ = tokio::time::timeout(SESSION_CLOSE_WAIT * 2, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    sessions.abort_all();
    let ids: Vec<SessionId> = shared.lock().sessions.keys().copied().collect();
    for id in ids {
        shared.close_session(id);
    }
    let _ = dht.dht().unannounce(RELAY_TOPIC, &key_pair).await;
}

fn start_session(shared: &Arc<Shared>, sessions: &mut tokio::task::JoinSet<()>, conn: Connection) {
    let mut st = shared.lock();
    if st.sessions.len() >= st.pairings.limits().max_sessions {
        st.refused += 1;
        debug!("relay session refused: too many sessions");
        return; // dropping `conn` closes it
    }
    let id = st.next_session;
    st.next_session += 1;
    st.accepted += 1;
    let queue = st.pairings.limits().max_links_per_session + SESSION_QUEUE_SLACK;
    let (tx, rx) = mpsc::channel(queue);
    let addr = conn.get_ref().remote_addr();
    st.sessions.insert(id, SessionHandle { tx, addr });
    drop(st);
    let shared = shared.clone();
    sessions.spawn(async move {
        serve_session(&shared, id, conn, rx).await;
        shared.close_session(id);
    });
}

/// Why a session ended (for the log).
#[derive(Debug)]
enum SessionEnd {
    Closed,
    Idle,
    Malformed,
    Io,
}

async fn serve_session(
    shared: &Shared,
    id: SessionId,
    mut conn: Connection,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    // blind-relay's server accepts with `id: socket.remotePublicKey`: the client's own key.
    let mut channel = Channel::new(PROTOCOL, conn.remote_public_key().as_bytes());
    if conn.send_message(&channel.open_frame()).await.is_err() {
        return;
    }
    let idle_after = shared.lock().pairings.limits().idle_session;
    let idle = tokio::time::sleep(idle_after);
    tokio::pin!(idle);
    let end = loop {
        let mut replies = Vec::new();
        tokio::select! {
            () = shared.cancel.cancelled() => break SessionEnd::Closed,
            () = &mut idle => {
                let st = shared.lock();
                if st.pairings.pending_of(id) == 0 && st.pairings.links_of(id) == 0 {
                    break SessionEnd::Idle;
                }
                drop(st);
                idle.as_mut().reset(tokio::time::Instant::now() + idle_after);
            }
            frame = rx.recv() => match frame {
                Some(f) => replies.push(f),
                None => break SessionEnd::Closed,
            },
            msg = conn.recv_message() => {
                idle.as_mut().reset(tokio::time::Instant::now() + idle_after);
                let frame = match msg {
                    Ok(Some(f)) => f,
                    Ok(None) => break SessionEnd::Closed,
                    Err(_) => break SessionEnd::Io,
                };
                let Ok(events) = channel.handle_frame(&frame) else {
                    break SessionEnd::Malformed;
                };
                let mut end = None;
                for ev in events {
                    match ev {
                        ChannelEvent::Opened => {}
                        ChannelEvent::Reply(b) => replies.push(b),
                        ChannelEvent::Closed => end = Some(SessionEnd::Closed),
                        ChannelEvent::Message { kind: PAIR, body } => match Pair::decode(&body) {
                            Ok(p) => shared.on_pair(id, p),
                            Err(_) => end = Some(SessionEnd::Malformed),
                        },
                        ChannelEvent::Message { kind: UNPAIR, body } => {
                            match Unpair::decode(&body) {
                                Ok(u) => shared.on_unpair(id, u),
                                Err(_) => end = Some(SessionEnd::Malformed),
                            }
                        }
                        ChannelEvent::Message { .. } => {}
                    }
                    if end.is_some() {
                        break;
                    }
                }
                if let Some(e) = end {
                    break e;
                }
            }
        }
        for r in replies {
            if conn.send_message(&r).await.is_err() {
                return;
            }
        }
    };
    debug!(session = id, ?end, "relay session ended");
    if matches!(end, SessionEnd::Malformed) {
        shared.lock().malformed += 1;
    }
    if matches!(end, SessionEnd::Io) {
        return;
    }
    let _ = tokio::time::timeout(SESSION_CLOSE_WAIT, async {
        if let Some(close) = channel.close() {
            conn.send_message(&close).await?;
        }
        conn.shutdown().await
    })
    .await;
}
