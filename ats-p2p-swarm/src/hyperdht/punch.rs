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

use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, trace};

use super::schedule::ProbeOp;
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

impl PunchSockets {
    /// Executes one probe op (extra sockets bind `host`); `false` when a socket could not be
    /// opened.
    pub(crate) async fn execute(&mut self, op: ProbeOp, host: Ipv4Addr) -> bool {
        match op {
            ProbeOp::Send { socket, to } => {
                self.probe(socket, to).await;
                true
            }
            ProbeOp::OpenAndSend { to } => match self.open_extra(host).await {
                Ok(i) => {
                    self.probe(i, to).await;
                    true
                }
                Err(e) => {
                    debug!(error = %e, "cannot open a birthday socket");
                    false
                }
            },
        }
    }
}

/// The next hit of the punch sockets in `slot`; never ready while there are none.
pub(crate) async fn next_hit(slot: &mut Option<PunchSockets>) -> Option<Hit> {
    match slot {
        Some(sockets) => sockets.next_hit().await,
        None => std::future::pending().await,
    }
}
