//! The tokio driver: one task per UDP socket ([`task`]) owns the sans-io [`Endpoint`];
//! [`UdxStream`] handles ([`stream`]) share it behind a mutex, store wakers, and turn `Blocked`
//! into `Pending`. This module holds the socket itself and the state they share.

mod stream;
mod task;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

pub use self::stream::UdxStream;
use self::task::Driver;
use super::EndpointError;
use super::endpoint::{Endpoint, RelayCounters, RelaySide};
use super::stream::StreamConfig;

/// Default depth of the non-UDX datagram / firewall event channel; full → newest dropped.
pub const DEFAULT_EVENT_QUEUE: usize = 1024;
/// Socket buffer size requested from the OS (Linux caps it at `net.core.rmem_max`).
const SOCKET_BUFFER_BYTES: usize = 8 * 1024 * 1024;
/// Received MESSAGE datagrams kept per stream handle; more are dropped (they are unreliable).
const MAX_HANDLE_MESSAGES: usize = 256;
/// How long `close` waits for streams to flush before destroying them.
pub const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Socket options.
#[derive(Clone, Debug)]
pub struct SocketConfig {
    /// Configuration of every stream created on this socket.
    pub stream: StreamConfig,
    /// Depth of the [`SocketEvent`] channel.
    pub event_queue: usize,
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self {
            stream: StreamConfig::default(),
            event_queue: DEFAULT_EVENT_QUEUE,
        }
    }
}

/// Something on the socket that is not stream data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketEvent {
    /// A datagram that is not a packet for a live UDX stream (e.g. DHT RPC).
    Datagram {
        /// Source address.
        from: SocketAddr,
        /// The datagram.
        data: Bytes,
    },
    /// The first packet for stream `local_id`, which is not connected yet, came from `from`.
    /// Call [`UdxStream::connect`] with that address to accept it.
    Firewall {
        /// Local stream id.
        local_id: u32,
        /// Source address.
        from: SocketAddr,
    },
}

#[derive(Debug, Default)]
struct Handle {
    read: Option<Waker>,
    write: Option<Waker>,
    message: Option<Waker>,
    /// Received MESSAGE datagrams not yet taken (at most [`MAX_HANDLE_MESSAGES`]).
    messages: VecDeque<Bytes>,
    dropped: bool,
}

#[derive(Debug)]
struct State {
    endpoint: Endpoint,
    handles: HashMap<u32, Handle>,
    cfg: StreamConfig,
    stopped: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the driver (application commands).
    notify: Notify,
    /// The driver finished a loop turn (for `close`, waiting for the flush).
    progress: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic elsewhere; the state itself stays consistent enough to
        // tear down, so keep going rather than cascade the panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A UDP socket carrying UDX streams and other datagrams.
#[derive(Debug)]
pub struct UdxSocket {
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    local_addr: SocketAddr,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    events: Mutex<Option<mpsc::Receiver<SocketEvent>>>,
}

impl UdxSocket {
    /// Binds exactly `addr` with default options and starts the driver task.
    pub async fn bind(addr: SocketAddr) -> Result<Self, EndpointError> {
        Self::bind_with(addr, SocketConfig::default()).await
    }

    /// Binds exactly `addr` and starts the driver task.
    pub async fn bind_with(addr: SocketAddr, cfg: SocketConfig) -> Result<Self, EndpointError> {
        let domain = if addr.is_ipv6() {
            socket2::Domain::IPV6
        } else {
            socket2::Domain::IPV4
        };
        let sock =
            socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        if addr.is_ipv6() {
            sock.set_only_v6(true)?;
        }
        // Best effort: the OS may clamp these.
        let _ = sock.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
        let _ = sock.set_send_buffer_size(SOCKET_BUFFER_BYTES);
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        let std_sock: std::net::UdpSocket = sock.into();
        let state = quinn_udp::UdpSocketState::new((&std_sock).into())?;
        let socket = Arc::new(UdpSocket::from_std(std_sock)?);
        let local_addr = socket.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                endpoint: Endpoint::new(),
                handles: HashMap::new(),
                cfg: cfg.stream.clone(),
                stopped: false,
            }),
            notify: Notify::new(),
            progress: Notify::new(),
        });
        let (tx, rx) = mpsc::channel(cfg.event_queue.max(1));
        let cancel = CancellationToken::new();
        let driver = Driver {
            shared: shared.clone(),
            socket: socket.clone(),
            state,
            cancel: cancel.clone(),
            events: tx,
        };
        let span = tracing::debug_span!("udx_socket", local = %local_addr);
        let task = tokio::spawn(tracing::Instrument::instrument(driver.run(), span));
        tracing::debug!(%local_addr, "udx socket bound");
        Ok(Self {
            shared,
            socket,
            local_addr,
            cancel,
            task: Some(task),
            events: Mutex::new(Some(rx)),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Takes the receiver of non-UDX datagrams and firewall events (once; later calls get
    /// `None`). If nobody takes it, events are dropped when the queue is full.
    pub fn take_events(&self) -> Option<mpsc::Receiver<SocketEvent>> {
        self.events.lock().ok().and_then(|mut g| g.take())
    }

    /// Creates a stream with local id `local_id` (not yet connected), configured as the socket.
    pub fn create_stream(&self, local_id: u32) -> Result<UdxStream, EndpointError> {
        let cfg = self.shared.lock().cfg.clone();
        self.create_stream_with(local_id, cfg)
    }

    /// Creates a stream with its own configuration (e.g. a keep-alive or a larger window).
    pub fn create_stream_with(
        &self,
        local_id: u32,
        cfg: StreamConfig,
    ) -> Result<UdxStream, EndpointError> {
        let mut st = self.shared.lock();
        if st.stopped {
            return Err(EndpointError::SocketClosed);
        }
        st.endpoint.create_stream(local_id, cfg, Instant::now())?;
        st.handles.insert(local_id, Handle::default());
        Ok(UdxStream::new(self.shared.clone(), local_id))
    }

    /// Creates a relayed pair of stream ids on this socket (see [`Endpoint::create_relay`]):
    /// packets are forwarded by the driver without being read.
    pub fn create_relay(&self, a: RelaySide, b: RelaySide) -> Result<(), EndpointError> {
        let mut st = self.shared.lock();
        if st.stopped {
            return Err(EndpointError::SocketClosed);
        }
        st.endpoint.create_relay(a, b)
    }

    /// Removes the relayed pair `local_id` belongs to; false if there is none (any more).
    pub fn remove_relay(&self, local_id: u32) -> bool {
        self.shared.lock().endpoint.remove_relay(local_id)
    }

    /// Whether `local_id` is a side of a live relayed pair (a DESTROY ends one).
    pub fn has_relay(&self, local_id: u32) -> bool {
        self.shared.lock().endpoint.has_relay(local_id)
    }

    /// Whether `local_id` is in use on this socket (a stream or a relay entry).
    pub fn id_in_use(&self, local_id: u32) -> bool {
        let mut st = self.shared.lock();
        st.endpoint.has_relay(local_id) || st.endpoint.stream(local_id).is_some()
    }

    /// Relay counters of this socket (all relayed pairs so far).
    pub fn relay_counters(&self) -> RelayCounters {
        self.shared.lock().endpoint.relay_counters()
    }

    /// Sends a raw datagram (not UDX) from this socket.
    pub async fn send_to(&self, addr: SocketAddr, data: &[u8]) -> Result<(), EndpointError> {
        self.socket.send_to(data, addr).await?;
        Ok(())
    }

    /// Polls sending a raw datagram (not UDX) from this socket (for a datagram adapter).
    pub fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        data: &[u8],
        addr: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        self.socket.poll_send_to(cx, data, addr)
    }

    /// Waits (up to [`CLOSE_FLUSH_TIMEOUT`]) until every stream has its written data (and its
    /// END, if shut down) acknowledged, then stops the driver.
    pub async fn close(mut self) {
        let deadline = tokio::time::Instant::now() + CLOSE_FLUSH_TIMEOUT;
        loop {
            let progress = self.shared.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            let flushed = {
                let mut st = self.shared.lock();
                let ids: Vec<u32> = st.endpoint.ids().collect();
                st.stopped
                    || ids.into_iter().all(|id| {
                        st.endpoint
                            .stream(id)
                            .is_none_or(|s| s.is_closed() || s.is_flushed())
                    })
            };
            if flushed {
                break;
            }
            tokio::select! {
                () = &mut progress => {}
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.stop().await;
    }

    async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for UdxSocket {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
