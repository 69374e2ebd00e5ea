//! The sockets of one holepunch and the probes they send and see (the I/O half of
//! [`super::holepunch`]).
//!
//! Socket 0 is the node's main socket (DHT RPC and UDX streams share it; its probes arrive
//! through the node's probe broadcast). A random-NAT peer adds up to
//! [`BIRTHDAY_SOCKETS`](super::holepunch::BIRTHDAY_SOCKETS) extra sockets, each read by a small
//! task that reports probes and the first UDX packet for a stream created on it. Dropping a
//! [`PunchSockets`] closes every extra socket that was not taken for the connection.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, trace};

use super::holepunch::{MAX_CONSISTENT_ROUNDS, MAX_RANDOM_PROBES, Strategy};
use crate::udx::{EndpointError, SocketEvent, UdxSocket, UdxStream};

/// Hits buffered from all sockets of one punch (probes beyond are dropped; one is enough).
const HIT_QUEUE: usize = 512;

/// Something one of the punch sockets saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hit {
    /// A 1-byte probe arrived on socket `socket` from `from`.
    Probe {
        /// Index of the socket (0 = main).
        socket: usize,
        /// Sender.
        from: SocketAddrV4,
    },
    /// The first UDX packet for stream `local_id` created on extra socket `socket`.
    FirstPacket {
        /// Index of the socket (never 0: the main socket's first packets go to the node).
        socket: usize,
        /// Our stream id.
        local_id: u32,
        /// Sender.
        from: SocketAddrV4,
    },
}

/// The sockets of one punch attempt and what they see.
#[derive(Debug)]
pub(crate) struct PunchSockets {
    main: Arc<UdxSocket>,
    extra: Vec<Arc<UdxSocket>>,
    readers: Vec<JoinHandle<()>>,
    hits_tx: mpsc::Sender<Hit>,
    hits: mpsc::Receiver<Hit>,
    /// Only probes from these hosts count (the peer's; JS probes only verified addresses).
    hosts: Vec<Ipv4Addr>,
}

fn v4(a: SocketAddr) -> Option<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(_) => None,
    }
}

impl PunchSockets {
    /// Punch sockets over the node's `main` socket, whose probes arrive on `probes`; only
    /// probes from `hosts` are reported.
    pub(crate) fn new(
        main: Arc<UdxSocket>,
        probes: broadcast::Receiver<SocketAddr>,
        hosts: Vec<Ipv4Addr>,
    ) -> Self {
        let (hits_tx, hits) = mpsc::channel(HIT_QUEUE);
        let tx = hits_tx.clone();
        let mut probes = probes;
        let allowed = hosts.clone();
        let main_reader = tokio::spawn(async move {
            loop {
                match probes.recv().await {
                    Ok(from) => {
                        let Some(from) = v4(from) else { continue };
                        if allowed.contains(from.ip()) {
                            let _ = tx.try_send(Hit::Probe { socket: 0, from });
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        Self {
            main,
            extra: Vec::new(),
            readers: vec![main_reader],
            hits_tx,
            hits,
            hosts,
        }
    }

    /// Number of sockets (main included).
    pub(crate) fn len(&self) -> usize {
        1 + self.extra.len()
    }

    /// Socket `i` (0 = main).
    pub(crate) fn socket(&self, i: usize) -> Option<&Arc<UdxSocket>> {
        if i == 0 {
            Some(&self.main)
        } else {
            self.extra.get(i - 1)
        }
    }

    /// Opens one more socket on `host` (a fresh NAT mapping) and starts reading it.
    pub(crate) async fn open_extra(&mut self, host: Ipv4Addr) -> Result<usize, EndpointError> {
        let socket = Arc::new(UdxSocket::bind(SocketAddrV4::new(host, 0).into()).await?);
        let index = self.extra.len() + 1;
        let Some(mut events) = socket.take_events() else {
            return Err(EndpointError::SocketClosed);
        };
        let tx = self.hits_tx.clone();
        let hosts = self.hosts.clone();
        self.readers.push(tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                match ev {
                    SocketEvent::Datagram { from, data } if data.len() == 1 => {
                        let Some(from) = v4(from) else { continue };
                        if hosts.contains(from.ip()) {
                            let _ = tx.try_send(Hit::Probe {
                                socket: index,
                                from,
                            });
                        }
                    }
                    SocketEvent::Datagram { .. } => {}
                    SocketEvent::Firewall { local_id, from } => {
                        let Some(from) = v4(from) else { continue };
                        // A first packet is a connection arriving: wait for room rather than
                        // lose it (probes above may drop: the peer sends them again).
                        let hit = Hit::FirstPacket {
                            socket: index,
                            local_id,
                            from,
                        };
                        if tx.send(hit).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }));
        self.extra.push(socket);
        Ok(index)
    }

    /// Sends one probe (a 1-byte datagram `0x00`) from socket `i` to `to`.
    pub(crate) async fn probe(&self, i: usize, to: SocketAddrV4) {
        let Some(s) = self.socket(i) else { return };
        if let Err(e) = s.send_to(SocketAddr::V4(to), &[0]).await {
            trace!(error = %e, %to, "probe send failed");
        }
    }

    /// The next hit.
    pub(crate) async fn next_hit(&mut self) -> Option<Hit> {
        self.hits.recv().await
    }

    /// Creates our stream `local_id` on extra socket `i` (so its first packet is reported).
    pub(crate) fn create_stream_on(&self, i: usize, local_id: u32) -> Option<UdxStream> {
        if i == 0 {
            return None;
        }
        match self.socket(i)?.create_stream(local_id) {
            Ok(s) => Some(s),
            Err(e) => {
                debug!(error = %e, socket = i, "cannot create the stream on a punch socket");
                None
            }
        }
    }

    /// Keeps socket `i` for the connection and closes the others (the caller drops `self`).
    pub(crate) fn take(&mut self, i: usize) -> Option<Arc<UdxSocket>> {
        if i == 0 {
            return None;
        }
        let s = self.extra.get(i - 1).cloned();
        if let Some(r) = self.readers.get(i) {
            r.abort();
        }
        s
    }
}

impl Drop for PunchSockets {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
    }
}

/// Sends probes by `strategy` until a probe from the peer arrives; returns the socket it arrived
/// on and its sender. `initiator` (the client) stops at the first probe; the server side uses
/// [`ProbeSchedule`] in its own loop. Bounded by the strategy's probe budget.
pub(crate) async fn probe_until_hit(
    sockets: &mut PunchSockets,
    strategy: Strategy,
    remote: &[SocketAddrV4],
    host: Ipv4Addr,
    initiator: bool,
) -> Result<(usize, SocketAddrV4), String> {
    let mut schedule = ProbeSchedule::new(strategy, remote.to_vec());
    loop {
        let next = schedule.next_step();
        let Some(step) = next else {
            return Err(schedule.exhausted_reason());
        };
        tokio::select! {
            biased;
            hit = sockets.next_hit() => match hit {
                Some(Hit::Probe { socket, from }) => {
                    if initiator {
                        return Ok((socket, from));
                    }
                    sockets.probe(socket, from).await;
                }
                Some(Hit::FirstPacket { .. }) => {}
                None => return Err("probe channel closed".into()),
            },
            () = tokio::time::sleep(step.wait) => {
                schedule.run_step(sockets, host).await;
            }
        }
    }
}

/// One step of a probe schedule: wait, then send.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProbeStep {
    wait: Duration,
}

impl ProbeStep {
    /// How long to wait before sending this step's probes.
    pub(crate) fn wait(self) -> Duration {
        self.wait
    }
}

/// What to send when, for one strategy (bounded; see [`super::holepunch`]'s constants).
#[derive(Debug)]
pub(crate) struct ProbeSchedule {
    strategy: Strategy,
    remote: Vec<SocketAddrV4>,
    steps: u32,
    birthday_opened: usize,
    next_birthday: usize,
    first: bool,
}

impl ProbeSchedule {
    pub(crate) fn new(strategy: Strategy, remote: Vec<SocketAddrV4>) -> Self {
        Self {
            strategy,
            remote,
            steps: 0,
            birthday_opened: 0,
            next_birthday: 1,
            first: true,
        }
    }

    /// The next step, or `None` when the probe budget is spent.
    pub(crate) fn next_step(&mut self) -> Option<ProbeStep> {
        let (budget, interval) = match self.strategy {
            Strategy::Consistent => (
                MAX_CONSISTENT_ROUNDS,
                super::holepunch::CONSISTENT_PROBE_INTERVAL,
            ),
            Strategy::RandomPorts { .. } => {
                (MAX_RANDOM_PROBES, super::holepunch::RANDOM_PROBE_INTERVAL)
            }
            // Open the sockets fast, then keep their mappings alive as long as a (JS) peer
            // may still spray probes at them.
            Strategy::Birthday { .. }
                if self.birthday_opened < super::holepunch::BIRTHDAY_SOCKETS =>
            {
                (u32::MAX, super::holepunch::RANDOM_PROBE_INTERVAL)
            }
            Strategy::Birthday { .. } => (
                super::holepunch::MAX_BIRTHDAY_KEEPALIVES,
                super::holepunch::BIRTHDAY_KEEPALIVE_INTERVAL,
            ),
            _ => return None,
        };
        if self.steps >= budget {
            return None;
        }
        let wait = if self.first { Duration::ZERO } else { interval };
        self.first = false;
        Some(ProbeStep { wait })
    }

    pub(crate) fn exhausted_reason(&self) -> String {
        match self.strategy {
            Strategy::Consistent => "no probe came back from the peer's addresses".into(),
            Strategy::RandomPorts { .. } => {
                "no random-port probe met the peer's birthday sockets".into()
            }
            Strategy::Birthday { .. } => "no probe reached our birthday sockets".into(),
            Strategy::BothRandom => "both NATs randomize ports".into(),
            Strategy::Unverified => "the peer's address could not be verified".into(),
            Strategy::Unknown => "a NAT could not be classified".into(),
        }
    }

    /// Sends this step's probes.
    pub(crate) async fn run_step(&mut self, sockets: &mut PunchSockets, host: Ipv4Addr) {
        self.steps += 1;
        match self.strategy {
            Strategy::Consistent => {
                for a in &self.remote {
                    if a.port() != 0 {
                        sockets.probe(0, *a).await;
                    }
                }
            }
            Strategy::RandomPorts { host: to } => {
                for _ in 0..super::holepunch::RANDOM_PROBE_BURST {
                    let port = super::holepunch::random_port(&mut rand::rngs::OsRng);
                    sockets.probe(0, SocketAddrV4::new(to, port)).await;
                }
            }
            Strategy::Birthday { target } => {
                if self.birthday_opened < super::holepunch::BIRTHDAY_SOCKETS {
                    // Open the sockets in bursts: each is a fresh NAT mapping to `target`.
                    for _ in 0..16 {
                        if self.birthday_opened >= super::holepunch::BIRTHDAY_SOCKETS {
                            break;
                        }
                        match sockets.open_extra(host).await {
                            Ok(i) => {
                                self.birthday_opened += 1;
                                sockets.probe(i, target).await;
                            }
                            Err(e) => {
                                debug!(error = %e, "cannot open a birthday socket");
                                self.birthday_opened = super::holepunch::BIRTHDAY_SOCKETS;
                                break;
                            }
                        }
                    }
                } else {
                    // Keep every mapping fresh, one socket per step, round robin.
                    let n = sockets.len();
                    if n > 1 {
                        if self.next_birthday >= n {
                            self.next_birthday = 1;
                        }
                        sockets.probe(self.next_birthday, target).await;
                        self.next_birthday += 1;
                    }
                }
            }
            _ => {}
        }
    }
}
