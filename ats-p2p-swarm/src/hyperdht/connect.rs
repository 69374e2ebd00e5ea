//! Connect by key (npm `hyperdht` 6.34 `connect`): the client's async shell around the sans-io
//! `ClientConnect` machine (module `client`), and the types both roles share (the key
//! [`Firewall`], [`RelayMode`], [`ConnectError`]). The server role is in [`super::server`].
//!
//! [`HyperDht::connect`] finds the server's record (FIND_PEER) and runs the machine: it sends
//! what the machine asks (DHT requests, probes, the relay pairing), feeds back what arrives and
//! when its timers expire, and turns the outcome into a [`Connection`] that says which path it
//! took ([`PathInfo`]). When none works, [`ConnectError::NoPath`] says what was detected and
//! what would help.

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tracing::debug;

use super::client::{
    ClientAction, ClientConnect, ClientParams, ClientPath, RequestId, handshake_relays,
};
pub use super::client::{
    HANDSHAKE_TIMEOUT, HOLEPUNCH_ROUND_TIMEOUT, LAN_PING_TIMEOUT, MAX_HANDSHAKE_RELAYS,
    PATH_TIMEOUT,
};
pub use super::endpoint::{HyperDht, NAT_CACHE_TTL, NAT_SAMPLE_TIMEOUT};
use super::holepunch::NatSampler;
use super::path::{Connection, PathInfo, PathKind};
use super::punch::{PunchSockets, next_hit};
use crate::dht::QueryReply;
use crate::keys::{KeyPair, PublicKey};
use crate::relay::{RelayError, RelayedPath};
use crate::secret_stream::SecretStream;
use crate::udx::UdxStream;
use crate::wait;

pub use super::terms::{ConnectError, Firewall, NoPathReason, RelayMode};

/// The path of a connection made without punching.
pub(crate) fn direct_path(addr: SocketAddrV4) -> PathInfo {
    PathInfo {
        kind: PathKind::of_direct(SocketAddr::V4(addr)),
        remote_addr: SocketAddr::V4(addr),
        relay: None,
    }
}

impl HyperDht {
    /// Connects to the server listening on `remote`, authenticating as `key_pair`.
    pub async fn connect(
        &self,
        key_pair: &KeyPair,
        remote: &PublicKey,
    ) -> Result<Connection, ConnectError> {
        self.ready().await?;
        let started = Instant::now();
        let found = self.node.find_peer(*remote.as_bytes()).await?;
        let (nodes, relays) = handshake_relays(&found, remote)?;
        let raw = self.create_stream()?;
        let our_relay = self.propose_relay(remote).await;
        let payload = self.local_payload(raw.local_id(), false).await;
        let params = ClientParams {
            key_pair: key_pair.clone(),
            remote: *remote,
            relays,
            nodes,
            payload,
            our_relay,
            relay_mode: self.relay_mode(),
            gate: self.random_punches.clone(),
        };
        let machine = ClientConnect::new(params, Instant::now())?;
        let conn = ClientShell::new(self, key_pair, machine, raw.local_id())
            .run(raw, started)
            .await?;
        Ok(conn)
    }
}

/// The I/O of one connect: requests in flight, the NAT sample, the punch sockets, the relay
/// pairing; it executes the machine's actions and feeds it back what happens.
struct ClientShell<'a> {
    dht: &'a HyperDht,
    key_pair: &'a KeyPair,
    machine: ClientConnect,
    /// Our raw stream's id (the relay pairs it).
    local_id: u32,
    requests: FuturesUnordered<BoxFuture<'static, (RequestId, Result<QueryReply, String>)>>,
    sampling: Option<BoxFuture<'a, NatSampler>>,
    sockets: Option<PunchSockets>,
    pairing: Option<BoxFuture<'a, Result<RelayedPath, RelayError>>>,
    relayed: Option<RelayedPath>,
}

impl<'a> ClientShell<'a> {
    fn new(
        dht: &'a HyperDht,
        key_pair: &'a KeyPair,
        machine: ClientConnect,
        local_id: u32,
    ) -> Self {
        Self {
            dht,
            key_pair,
            machine,
            local_id,
            requests: FuturesUnordered::new(),
            sampling: None,
            sockets: None,
            pairing: None,
            relayed: None,
        }
    }

    async fn run(mut self, raw: UdxStream, started: Instant) -> Result<Connection, ConnectError> {
        let connected = loop {
            while let Some(action) = self.machine.poll_action() {
                self.execute(action).await;
            }
            if let Some(outcome) = self.machine.poll_outcome() {
                break outcome?;
            }
            let timeout = self.machine.poll_timeout();
            tokio::select! {
                biased;
                hit = next_hit(&mut self.sockets), if self.sockets.is_some() => match hit {
                    Some(hit) => self.machine.handle_hit(hit, Instant::now()),
                    None => {
                        self.sockets = None;
                        self.machine.handle_punch_closed(Instant::now());
                    }
                },
                Some((id, reply)) = self.requests.next(), if !self.requests.is_empty() => {
                    self.machine.handle_response(id, reply, Instant::now());
                }
                nat = wait::optional(&mut self.sampling), if self.sampling.is_some() => {
                    self.sampling = None;
                    self.machine.handle_nat(nat, Instant::now());
                }
                paired = wait::optional(&mut self.pairing), if self.pairing.is_some() => {
                    self.pairing = None;
                    let result = match paired {
                        Ok(rp) => {
                            self.relayed = Some(rp);
                            Ok(())
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    self.machine.handle_relay(result);
                }
                () = wait::sleep_until(timeout), if timeout.is_some() => self.machine.handle_timeout(Instant::now()),
            }
        };
        let (raw, path, keep): (UdxStream, PathInfo, Option<Arc<dyn Send + Sync>>) =
            match connected.path {
                ClientPath::Direct(addr) => {
                    raw.connect(connected.remote_id, SocketAddr::V4(addr))?;
                    (raw, direct_path(addr), None)
                }
                ClientPath::Holepunched { socket, from } => {
                    let (raw, keep) = if socket == 0 {
                        (raw, None)
                    } else {
                        let mut sockets = self.sockets.take().ok_or(ConnectError::Timeout)?;
                        let s = sockets
                            .create_stream_on(socket, raw.local_id())
                            .ok_or(ConnectError::Timeout)?;
                        drop(raw);
                        let keep = sockets.take(socket).map(|s| s as Arc<dyn Send + Sync>);
                        (s, keep)
                    };
                    raw.connect(connected.remote_id, SocketAddr::V4(from))?;
                    let path = PathInfo {
                        kind: PathKind::Holepunched,
                        remote_addr: SocketAddr::V4(from),
                        relay: None,
                    };
                    (raw, path, keep)
                }
                ClientPath::Relayed => {
                    let rp = self.relayed.take().ok_or(ConnectError::Timeout)?;
                    raw.connect(rp.remote_stream_id(), rp.relay_addr())?;
                    let path = PathInfo {
                        kind: PathKind::Relayed,
                        remote_addr: rp.relay_addr(),
                        relay: Some(rp.relay_key()),
                    };
                    (raw, path, Some(Arc::new(rp) as Arc<dyn Send + Sync>))
                }
            };
        // Close the punch sockets we did not keep.
        drop(self);
        debug!(path = %path, remote_id = connected.remote_id, elapsed_ms = started.elapsed().as_millis(), "path found");
        let stream = SecretStream::from_handshake(raw, connected.handshake).await?;
        let conn = Connection::new(stream, path);
        Ok(match keep {
            Some(g) => conn.keep(g),
            None => conn,
        })
    }

    async fn execute(&mut self, action: ClientAction) {
        match action {
            ClientAction::Request { id, req } => {
                let node = self.dht.node.clone();
                self.requests.push(Box::pin(async move {
                    let reply = node.request(req).await.map_err(|e| e.to_string());
                    (id, reply)
                }));
            }
            ClientAction::SampleNat { nodes } => {
                let dht = self.dht;
                self.sampling = Some(Box::pin(async move { dht.sample_nat(&nodes).await }));
            }
            ClientAction::OpenPunch { hosts } => {
                self.sockets = Some(PunchSockets::new(
                    self.dht.server.clone(),
                    self.dht.probes.subscribe(),
                    hosts,
                ));
            }
            ClientAction::Probe(op) => {
                let host = self.dht.host();
                let opened = match self.sockets.as_mut() {
                    Some(s) => s.execute(op, host).await,
                    None => true,
                };
                if !opened {
                    self.machine.handle_open_failed();
                }
            }
            ClientAction::ClosePunch => self.sockets = None,
            ClientAction::PairRelay(relay) => {
                self.pairing = Some(self.dht.pair_relay(self.key_pair, relay, self.local_id));
            }
        }
    }
}
