//! The driver task: one loop that feeds the sans-io [`HyperDhtCore`] with datagrams, commands
//! from [`DhtNode`](super::DhtNode) handles and timer expiries, and carries out its output.

use std::collections::HashMap;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::io::ReadBuf;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, trace, warn};

use super::{
    DatagramSocket, MAX_BOOTSTRAP_WAITERS, MAX_RAW_REQUESTS, NodeInfo, RECV_BUF, ServerEvent,
};
use crate::dht::{
    Event, Id, IncomingRequest, QueryReply, RequestError, RequestId, SocketKind, UserRequest,
};
use crate::hyperdht::messages::{Handshake, Holepunch};
use crate::hyperdht::node::{HyperDhtCore, HyperEvent, OpId, OpResult};
use crate::keys::KeyPair;

pub(super) enum Command {
    Op(Box<OpCmd>, oneshot::Sender<Result<OpResult, RequestError>>),
    Listen(Id, mpsc::Sender<ServerEvent>),
    Unlisten(Id),
    Raw(
        Box<UserRequest>,
        oneshot::Sender<Result<QueryReply, RequestError>>,
    ),
    AnswerHandshake(Box<(IncomingRequest, Handshake, Vec<u8>)>),
    AnswerHolepunch(Box<(IncomingRequest, Holepunch, Vec<u8>)>),
    Bootstrapped(oneshot::Sender<()>),
    Ready(oneshot::Sender<()>),
    Info(oneshot::Sender<NodeInfo>),
    Destroy(oneshot::Sender<()>),
}

pub(super) enum OpCmd {
    ImmutablePut(Vec<u8>),
    ImmutableGet(Id),
    MutablePut(KeyPair, u64, Vec<u8>),
    MutableGet([u8; 32], u64),
    Lookup(Id),
    FindPeer([u8; 32]),
    FindNode(Id),
    Announce(Id, KeyPair, Vec<SocketAddrV4>),
    Unannounce(Id, KeyPair),
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Command")
    }
}

async fn recv(sock: &dyn DatagramSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    let mut rb = ReadBuf::new(buf);
    let from = poll_fn(|cx| sock.poll_recv_from(cx, &mut rb)).await?;
    Ok((rb.filled().len(), from))
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Hands a relayed handshake or holepunch to its listener without blocking the node: a
/// listener that does not keep up loses it, counted and logged (the client retransmits; a
/// blocked DHT task would stop every other peer's traffic instead).
fn deliver(listener: &mpsc::Sender<ServerEvent>, event: ServerEvent, dropped: &mut u64) {
    match listener.try_send(event) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            *dropped += 1;
            warn!(
                dropped = *dropped,
                "listener queue full: relayed handshake/holepunch dropped"
            );
        }
        // The listener went away; its `Unlisten` is on the way.
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

pub(super) async fn run(
    mut node: HyperDhtCore,
    server: Arc<dyn DatagramSocket>,
    client: Arc<dyn DatagramSocket>,
    mut rx: mpsc::Receiver<Command>,
) {
    let mut sbuf = vec![0u8; RECV_BUF];
    let mut cbuf = vec![0u8; RECV_BUF];
    let mut waiters: HashMap<OpId, oneshot::Sender<Result<OpResult, RequestError>>> =
        HashMap::new();
    let mut boot_waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut bootstrapped = false;
    let mut walked = false;
    let mut ready_waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut listeners: HashMap<Id, mpsc::Sender<ServerEvent>> = HashMap::new();
    let mut raw: HashMap<RequestId, oneshot::Sender<Result<QueryReply, RequestError>>> =
        HashMap::new();
    let mut server_events_dropped: u64 = 0;
    node.set_wall_clock_ms(wall_ms());
    node.handle_timeout(Instant::now());
    loop {
        while let Some(t) = node.poll_transmit() {
            let sock = match t.socket {
                SocketKind::Server => &server,
                SocketKind::Client => &client,
            };
            let to = SocketAddr::V4(t.to);
            if let Err(e) = poll_fn(|cx| sock.poll_send_to(cx, &t.payload, to)).await {
                debug!(%to, error = %e, "dht send failed");
            }
        }
        while let Some(e) = node.poll_event() {
            match e {
                HyperEvent::OpDone { op, result } => {
                    if let Some(w) = waiters.remove(&op) {
                        let _ = w.send(Ok(result));
                    }
                }
                HyperEvent::Walked => {
                    walked = true;
                    for w in ready_waiters.drain(..) {
                        let _ = w.send(());
                    }
                }
                HyperEvent::Bootstrapped => {
                    bootstrapped = true;
                    walked = true;
                    for w in ready_waiters.drain(..) {
                        let _ = w.send(());
                    }
                    for w in boot_waiters.drain(..) {
                        let _ = w.send(());
                    }
                }
                HyperEvent::PeerHandshake { req, handshake } => {
                    if let Some(l) = req.target.and_then(|t| listeners.get(&t)) {
                        deliver(
                            l,
                            ServerEvent::Handshake { req, handshake },
                            &mut server_events_dropped,
                        );
                    }
                }
                HyperEvent::PeerHolepunch { req, holepunch } => {
                    if let Some(l) = req.target.and_then(|t| listeners.get(&t)) {
                        deliver(
                            l,
                            ServerEvent::Holepunch { req, holepunch },
                            &mut server_events_dropped,
                        );
                    }
                }
                HyperEvent::Dht(Event::Response { request, reply }) => {
                    if let Some(w) = raw.remove(&request) {
                        let _ = w.send(Ok(reply));
                    }
                }
                HyperEvent::Dht(Event::RequestFailed { request, error }) => {
                    if let Some(w) = raw.remove(&request) {
                        let _ = w.send(Err(error));
                    }
                }
                other => trace!(?other, "unhandled dht event"),
            }
        }
        let deadline = node.poll_timeout();
        tokio::select! {
            biased;
            cmd = rx.recv() => {
                let now = Instant::now();
                let Some(cmd) = cmd else { break };
                match cmd {
                    Command::Destroy(done) => {
                        node.dht_mut().destroy();
                        let _ = done.send(());
                        break;
                    }
                    Command::Info(reply) => {
                        let d = node.dht();
                        let _ = reply.send(NodeInfo {
                            id: d.id(),
                            table_len: d.table().len(),
                            firewalled: d.is_firewalled(),
                            bootstrapped: d.is_bootstrapped(),
                            stored: node.store().sizes(),
                            relayed: node.relay_stats(),
                            nat_addr: d.nat_address(),
                            remote_addr: d.remote_address(),
                            limits: d.limit_stats(),
                            server_events_dropped: server_events_dropped + node.events_dropped(),
                        });
                    }
                    Command::Bootstrapped(reply) => {
                        if bootstrapped {
                            let _ = reply.send(());
                        } else if boot_waiters.len() < MAX_BOOTSTRAP_WAITERS {
                            boot_waiters.push(reply);
                        }
                    }
                    Command::Ready(reply) => {
                        if walked {
                            let _ = reply.send(());
                        } else if ready_waiters.len() < MAX_BOOTSTRAP_WAITERS {
                            ready_waiters.push(reply);
                        }
                    }
                    Command::Listen(target, tx) => {
                        node.listen(target);
                        listeners.insert(target, tx);
                    }
                    Command::Unlisten(target) => {
                        node.unlisten(&target);
                        listeners.remove(&target);
                    }
                    Command::Raw(req, reply) => {
                        if raw.len() >= MAX_RAW_REQUESTS {
                            let _ = reply.send(Err(RequestError::Busy));
                        } else {
                            match node.request(now, *req) {
                                Ok(id) => { raw.insert(id, reply); }
                                Err(e) => { let _ = reply.send(Err(e)); }
                            }
                        }
                    }
                    Command::AnswerHandshake(a) => {
                        let (req, hs, noise) = *a;
                        node.answer_handshake(&req, &hs, noise, Some(SocketKind::Server));
                    }
                    Command::AnswerHolepunch(a) => {
                        let (req, hp, payload) = *a;
                        node.answer_holepunch(&req, &hp, payload, Some(SocketKind::Server));
                    }
                    Command::Op(op, reply) => {
                        let started = match *op {
                            OpCmd::Lookup(t) => node.lookup(now, t),
                            OpCmd::ImmutablePut(v) => node.immutable_put(now, v),
                            OpCmd::ImmutableGet(t) => node.immutable_get(now, t),
                            OpCmd::MutablePut(kp, seq, v) => node.mutable_put(now, &kp, seq, v),
                            OpCmd::MutableGet(pk, seq) => node.mutable_get(now, &pk, seq),
                            OpCmd::FindPeer(pk) => node.find_peer(now, &pk),
                            OpCmd::FindNode(t) => node.find_node(now, t),
                            OpCmd::Announce(t, kp, relays) => node.announce(now, t, kp, relays),
                            OpCmd::Unannounce(t, kp) => node.unannounce(now, t, kp),
                        };
                        match started {
                            Ok(id) => { waiters.insert(id, reply); }
                            Err(e) => { let _ = reply.send(Err(e)); }
                        }
                    }
                }
            }
            r = recv(server.as_ref(), &mut sbuf) => {
                if let (Ok((n, SocketAddr::V4(from))), Some(buf)) = (&r, sbuf.get(..r.as_ref().map_or(0, |x| x.0))) {
                    let _ = n;
                    node.handle_datagram(Instant::now(), SocketKind::Server, *from, buf);
                }
            }
            r = recv(client.as_ref(), &mut cbuf) => {
                if let (Ok((n, SocketAddr::V4(from))), Some(buf)) = (&r, cbuf.get(..r.as_ref().map_or(0, |x| x.0))) {
                    let _ = n;
                    node.handle_datagram(Instant::now(), SocketKind::Client, *from, buf);
                }
            }
            () = crate::wait::sleep_until(deadline) => {
                node.set_wall_clock_ms(wall_ms());
                node.handle_timeout(Instant::now());
            }
        }
    }
}
