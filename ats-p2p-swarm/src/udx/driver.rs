//! The tokio driver: one task per UDP socket owns the sans-io [`Endpoint`]; [`UdxStream`]
//! handles share it behind a mutex, store wakers, and turn `Blocked` into `Pending`.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::endpoint::{Endpoint, RelayCounters, RelaySide, Routed};
use super::stream::{Event, StreamConfig};
use super::{CloseReason, EndpointError, ReadError, WriteError};

/// Datagrams received per loop turn before timers and sends get their turn.
const RECV_BATCH: usize = 256;
/// Datagrams sent per loop turn (bounded work, and the size of the reused buffer pool).
const SEND_BATCH: usize = 256;
/// Default depth of the non-UDX datagram / firewall event channel; full → newest dropped.
pub const DEFAULT_EVENT_QUEUE: usize = 1024;
/// Socket buffer size requested from the OS (Linux caps it at `net.core.rmem_max`).
const SOCKET_BUFFER_BYTES: usize = 8 * 1024 * 1024;
/// Received MESSAGE datagrams kept per stream handle; more are dropped (they are unreliable).
const MAX_HANDLE_MESSAGES: usize = 256;
/// Largest UDP datagram we read.
const MAX_DATAGRAM: usize = 65_535;
/// Receive-buffer room per GRO segment (UDX datagrams are at most 1500 bytes, libudx reads 2048).
const GRO_SEGMENT_ROOM: usize = 2048;
/// Most segments in one GSO send (Linux allows 64).
const MAX_GSO_SEGMENTS: usize = 64;
/// Most bytes in one GSO send: the whole train is one UDP "datagram" to the kernel (64 KiB
/// limit; larger sends fail with EMSGSIZE, which quinn-udp reports as success).
const MAX_GSO_BYTES: usize = 65_000;
/// How long `close` waits for streams to flush before destroying them.
pub const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long, at most, the driver sleeps when no timer is armed.
const IDLE_SLEEP: Duration = Duration::from_secs(3600);

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
    messages: std::collections::VecDeque<Bytes>,
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
        Ok(UdxStream {
            shared: self.shared.clone(),
            id: local_id,
            shutdown_sent: false,
        })
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

/// One UDX stream: `AsyncRead + AsyncWrite`. `shutdown` sends END and resolves when it is
/// acknowledged; dropping the handle (or [`UdxStream::destroy`]) sends DESTROY unless the
/// stream already finished cleanly.
#[derive(Debug)]
pub struct UdxStream {
    shared: Arc<Shared>,
    id: u32,
    shutdown_sent: bool,
}

impl UdxStream {
    /// Our stream id.
    pub fn local_id(&self) -> u32 {
        self.id
    }

    /// The peer's address, once connected.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        let mut st = self.shared.lock();
        st.endpoint
            .stream(self.id)
            .and_then(|s| s.remote())
            .map(|(_, a)| a)
    }

    /// Connects to the peer's stream `remote_id` at `addr`.
    pub fn connect(&self, remote_id: u32, addr: SocketAddr) -> Result<(), EndpointError> {
        let mut st = self.shared.lock();
        if st.stopped {
            return Err(EndpointError::SocketClosed);
        }
        st.endpoint
            .connect(self.id, remote_id, addr, Instant::now());
        drop(st);
        self.shared.notify.notify_one();
        Ok(())
    }

    /// Sends one unreliable MESSAGE datagram.
    pub fn send_message(&self, data: &[u8]) -> Result<(), WriteError> {
        let mut st = self.shared.lock();
        let s = st
            .endpoint
            .stream(self.id)
            .ok_or(WriteError::Closed(CloseReason::Destroyed))?;
        s.send_message(data)?;
        drop(st);
        self.shared.notify.notify_one();
        Ok(())
    }

    /// Takes a received MESSAGE datagram, if one is queued.
    pub fn try_recv_message(&self) -> Option<Bytes> {
        self.shared
            .lock()
            .handles
            .get_mut(&self.id)?
            .messages
            .pop_front()
    }

    /// Waits for the next MESSAGE datagram; `Err` once the stream is closed and none is left.
    pub async fn recv_message(&self) -> Result<Bytes, CloseReason> {
        std::future::poll_fn(|cx| {
            let mut st = self.shared.lock();
            let State {
                endpoint,
                handles,
                stopped,
                ..
            } = &mut *st;
            let Some(h) = handles.get_mut(&self.id) else {
                return Poll::Ready(Err(CloseReason::Destroyed));
            };
            if let Some(m) = h.messages.pop_front() {
                return Poll::Ready(Ok(m));
            }
            let reason = endpoint.stream(self.id).and_then(|s| s.close_reason());
            match reason {
                Some(r) => Poll::Ready(Err(r)),
                None if *stopped => Poll::Ready(Err(CloseReason::Destroyed)),
                None => {
                    h.message = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Aborts the stream (DESTROY).
    pub fn destroy(&self) {
        let mut st = self.shared.lock();
        if let Some(s) = st.endpoint.stream(self.id) {
            s.destroy();
        }
        drop(st);
        self.shared.notify.notify_one();
    }

    /// Why the stream closed, if it did.
    pub fn close_reason(&self) -> Option<CloseReason> {
        let mut st = self.shared.lock();
        st.endpoint.stream(self.id).and_then(|s| s.close_reason())
    }

    /// Counters of the underlying stream.
    pub fn stats(&self) -> Option<super::StreamStats> {
        let mut st = self.shared.lock();
        st.endpoint.stream(self.id).map(|s| s.stats())
    }
}

impl AsyncRead for UdxStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        let State {
            endpoint,
            handles,
            stopped,
            ..
        } = &mut *st;
        let Some(s) = endpoint.stream(self.id) else {
            return Poll::Ready(Err(CloseReason::Destroyed.into()));
        };
        // Copy straight into the caller's (possibly uninitialised) space: no zero-fill first.
        match s.read_with(buf.remaining(), |src| buf.put_slice(src)) {
            Ok(_) => {
                let window_update = s.has_pending_control();
                drop(st);
                if window_update {
                    self.shared.notify.notify_one();
                }
                Poll::Ready(Ok(()))
            }
            Err(ReadError::Blocked) if *stopped => Poll::Ready(Err(socket_closed())),
            Err(ReadError::Blocked) => {
                if let Some(h) = handles.get_mut(&self.id) {
                    h.read = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Err(ReadError::Closed(r)) => Poll::Ready(Err(r.into())),
        }
    }
}

impl AsyncWrite for UdxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = self.shared.lock();
        let State {
            endpoint,
            handles,
            stopped,
            ..
        } = &mut *st;
        let Some(s) = endpoint.stream(self.id) else {
            return Poll::Ready(Err(CloseReason::Destroyed.into()));
        };
        match s.write(data) {
            Ok(n) => {
                // The driver only needs a nudge when the queue was empty: otherwise it is
                // already waiting on an ack, the pacer or the socket, and will come back.
                let was_empty = s.send_queued() == n;
                drop(st);
                if was_empty {
                    self.shared.notify.notify_one();
                }
                Poll::Ready(Ok(n))
            }
            Err(WriteError::Blocked) if *stopped => Poll::Ready(Err(socket_closed())),
            Err(WriteError::Blocked) => {
                if let Some(h) = handles.get_mut(&self.id) {
                    h.write = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Err(WriteError::Ended) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                WriteError::Ended,
            ))),
            Err(WriteError::Closed(r)) => Poll::Ready(Err(r.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are already in the stream's send buffer; the driver sends them without
        // further prompting. Waiting for acknowledgements is `poll_shutdown`'s job.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shared = self.shared.clone();
        let mut st = shared.lock();
        let State {
            endpoint,
            handles,
            stopped,
            ..
        } = &mut *st;
        let Some(s) = endpoint.stream(self.id) else {
            return Poll::Ready(Err(CloseReason::Destroyed.into()));
        };
        if !self.shutdown_sent {
            if let Err(e) = s.shutdown() {
                return Poll::Ready(Err(match e {
                    WriteError::Closed(CloseReason::Finished) => return Poll::Ready(Ok(())),
                    WriteError::Closed(r) => r.into(),
                    other => io::Error::other(other),
                }));
            }
            self.shutdown_sent = true;
            shared.notify.notify_one();
        }
        if s.is_end_acked() || s.close_reason() == Some(CloseReason::Finished) {
            return Poll::Ready(Ok(()));
        }
        if let Some(r) = s.close_reason() {
            return Poll::Ready(Err(r.into()));
        }
        if *stopped {
            return Poll::Ready(Err(socket_closed()));
        }
        if let Some(h) = handles.get_mut(&self.id) {
            h.write = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for UdxStream {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if let Some(s) = st.endpoint.stream(self.id) {
            if s.close_reason().is_none() {
                s.destroy();
            }
        }
        if let Some(h) = st.handles.get_mut(&self.id) {
            h.dropped = true;
        }
        drop(st);
        self.shared.notify.notify_one();
    }
}

fn socket_closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, EndpointError::SocketClosed)
}

/// The per-socket task.
struct Driver {
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    state: quinn_udp::UdpSocketState,
    cancel: CancellationToken,
    events: mpsc::Sender<SocketEvent>,
}

/// One send call: a datagram, or a GSO train of equal-size segments (the last may be shorter)
/// to one destination.
#[derive(Debug)]
struct Outgoing {
    dest: SocketAddr,
    seg: usize,
    segments: usize,
    /// A shorter segment ended the train.
    sealed: bool,
    buf: Vec<u8>,
}

/// Datagrams a relay forwards in one turn, coalesced into GSO trains like the transmits.
struct Relayed {
    trains: Vec<Outgoing>,
    max_segments: usize,
}

impl Relayed {
    /// Queues `data` for `to` with its header's stream id set to `remote_id`.
    fn push(&mut self, to: SocketAddr, remote_id: u32, data: &[u8], pool: &mut Vec<Vec<u8>>) {
        let size = data.len();
        if let Some(o) = self.trains.last_mut().filter(|o| {
            !o.sealed
                && o.dest == to
                && o.segments < self.max_segments
                && size <= o.seg
                && size > 0
                && o.buf.len() + size <= MAX_GSO_BYTES
        }) {
            let start = o.buf.len();
            o.buf.extend_from_slice(data);
            if let Some(p) = o.buf.get_mut(start..) {
                super::packet::set_stream_id(p, remote_id);
            }
            o.segments += 1;
            o.sealed = size < o.seg;
            return;
        }
        let mut buf = pool.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(data);
        super::packet::set_stream_id(&mut buf, remote_id);
        if let Some(o) = self.trains.last_mut() {
            o.sealed = true;
        }
        self.trains.push(Outgoing {
            dest: to,
            seg: size,
            segments: 1,
            sealed: false,
            buf,
        });
    }
}

impl Driver {
    async fn run(self) {
        let gro = self.state.gro_segments().max(1);
        let mut recv_buf = vec![0u8; (gro * GRO_SEGMENT_ROOM).max(MAX_DATAGRAM)];
        let mut pool: Vec<Vec<u8>> = Vec::new();
        let mut queue: std::collections::VecDeque<Outgoing> = std::collections::VecDeque::new();
        let sleep = tokio::time::sleep(IDLE_SLEEP);
        tokio::pin!(sleep);
        loop {
            let more = self.turn(&mut recv_buf, &mut pool, &mut queue);
            let deadline = self.shared.lock().endpoint.poll_timeout();
            let deadline = deadline.map_or_else(
                || tokio::time::Instant::now() + IDLE_SLEEP,
                tokio::time::Instant::from_std,
            );
            sleep.as_mut().reset(deadline);
            if more && queue.is_empty() {
                tokio::task::yield_now().await;
                if self.cancel.is_cancelled() {
                    break;
                }
                continue;
            }
            let blocked_send = !queue.is_empty();
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                r = self.socket.writable(), if blocked_send => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "udx socket not writable");
                    }
                }
                r = self.socket.readable() => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "udx socket not readable");
                    }
                }
                () = self.shared.notify.notified() => {}
                () = &mut sleep => {}
            }
        }
        let mut st = self.shared.lock();
        st.stopped = true;
        for h in st.handles.values_mut() {
            if let Some(w) = h.read.take() {
                w.wake();
            }
            if let Some(w) = h.write.take() {
                w.wake();
            }
            if let Some(w) = h.message.take() {
                w.wake();
            }
        }
    }

    /// Sends one train; `WouldBlock` comes back to the caller, other errors are logged.
    fn send(&self, o: &Outgoing) -> io::Result<()> {
        let t = quinn_udp::Transmit {
            destination: o.dest,
            ecn: None,
            contents: &o.buf,
            segment_size: (o.segments > 1).then_some(o.seg),
            src_ip: None,
        };
        self.socket.try_io(tokio::io::Interest::WRITABLE, || {
            self.state.send((&*self.socket).into(), &t)
        })
    }

    /// One bounded loop turn. Returns true when work was left over.
    fn turn(
        &self,
        recv_buf: &mut [u8],
        pool: &mut Vec<Vec<u8>>,
        queue: &mut std::collections::VecDeque<Outgoing>,
    ) -> bool {
        let mut more = false;
        // 1. flush what the OS refused last time
        while let Some(o) = queue.front() {
            match self.send(o) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) => tracing::debug!(error = %e, dest = %o.dest, "udx send failed"),
            }
            if let Some(o) = queue.pop_front() {
                pool.push(o.buf);
            }
        }

        let mut st = self.shared.lock();
        let now = Instant::now();
        let max_segments = self.state.max_gso_segments().clamp(1, MAX_GSO_SEGMENTS);
        // Relayed datagrams of this turn (bounded by RECV_BATCH), sent with the transmits.
        let mut relayed = Relayed {
            trains: Vec::new(),
            max_segments,
        };
        // 2. receive a bounded batch (GRO may hand several datagrams in one call)
        let mut received = 0;
        while received < RECV_BATCH {
            let mut meta = [quinn_udp::RecvMeta::default()];
            let r = self.socket.try_io(tokio::io::Interest::READABLE, || {
                let mut bufs = [io::IoSliceMut::new(recv_buf)];
                self.state
                    .recv((&*self.socket).into(), &mut bufs, &mut meta)
            });
            match r {
                Ok(n) if n > 0 => {
                    let m = meta[0];
                    let data = recv_buf.get(..m.len).unwrap_or(&[]);
                    let stride = if m.stride == 0 {
                        m.len.max(1)
                    } else {
                        m.stride
                    };
                    for d in data.chunks(stride) {
                        received += 1;
                        self.route(&mut st, now, m.addr, d, &mut relayed, pool);
                    }
                }
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // e.g. ECONNREFUSED from an earlier ICMP error: not fatal for a UDP socket.
                    tracing::trace!(error = %e, "udx recv error");
                    received += 1;
                }
            }
        }
        if received >= RECV_BATCH {
            more = true;
        }

        // 3. timers
        st.endpoint.handle_timeout(now);

        // 4. transmits (bounded), coalesced into GSO trains under the lock, sent after it
        let ids: Vec<u32> = st.endpoint.ids().collect();
        let mut batch: Vec<Outgoing> = relayed.trains;
        if let Some(o) = batch.last_mut() {
            o.sealed = true; // stream datagrams start their own trains
        }
        let mut datagrams = 0;
        'streams: for &id in &ids {
            loop {
                if datagrams >= SEND_BATCH {
                    more = true;
                    break 'streams;
                }
                // Append straight into the open train; split the datagram off if it cannot
                // join it (another destination, a larger size, a full train).
                let open = batch
                    .last_mut()
                    .filter(|o| !o.sealed && o.segments < max_segments);
                let Some(o) = open else {
                    let mut buf = pool.pop().unwrap_or_default();
                    buf.clear();
                    let Some(t) = st.endpoint.poll_transmit(id, now, &mut buf) else {
                        pool.push(buf);
                        break;
                    };
                    datagrams += 1;
                    batch.push(Outgoing {
                        dest: t.destination,
                        seg: t.size,
                        segments: 1,
                        sealed: false,
                        buf,
                    });
                    continue;
                };
                let before = o.buf.len();
                let Some(t) = st.endpoint.poll_transmit(id, now, &mut o.buf) else {
                    break;
                };
                datagrams += 1;
                if o.dest == t.destination
                    && t.size <= o.seg
                    && t.size > 0
                    && o.buf.len() <= MAX_GSO_BYTES
                {
                    o.segments += 1;
                    o.sealed = t.size < o.seg;
                } else {
                    let mut buf = pool.pop().unwrap_or_default();
                    buf.clear();
                    buf.extend_from_slice(o.buf.get(before..).unwrap_or(&[]));
                    o.buf.truncate(before);
                    o.sealed = true;
                    batch.push(Outgoing {
                        dest: t.destination,
                        seg: t.size,
                        segments: 1,
                        sealed: false,
                        buf,
                    });
                }
            }
        }

        // 5. events → wakers; drop finished streams whose handle is gone
        let State {
            endpoint, handles, ..
        } = &mut *st;
        for &id in &ids {
            let Some(s) = endpoint.stream(id) else {
                continue;
            };
            let mut wake_read = false;
            let mut wake_write = false;
            let mut wake_message = false;
            let h = handles.entry(id).or_default();
            while let Some(ev) = s.poll_event() {
                match ev {
                    Event::Readable => wake_read = true,
                    Event::Message(m) => {
                        if h.messages.len() < MAX_HANDLE_MESSAGES {
                            h.messages.push_back(m);
                        }
                        wake_message = true;
                    }
                    Event::Writable => wake_write = true,
                    Event::Closed(_) => {
                        wake_read = true;
                        wake_write = true;
                        wake_message = true;
                    }
                }
            }
            if s.is_end_acked() {
                wake_write = true;
            }
            let closed = s.is_drained(now);
            if wake_message {
                if let Some(w) = h.message.take() {
                    w.wake();
                }
            }
            if wake_read {
                if let Some(w) = h.read.take() {
                    w.wake();
                }
            }
            if wake_write {
                if let Some(w) = h.write.take() {
                    w.wake();
                }
            }
            if closed && h.dropped {
                handles.remove(&id);
                endpoint.remove(id);
            }
        }
        drop(st);

        // 6. send outside the lock
        let mut it = batch.into_iter();
        for o in it.by_ref() {
            match self.send(&o) {
                Ok(()) => pool.push(o.buf),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    queue.push_back(o);
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, dest = %o.dest, "udx send failed");
                    pool.push(o.buf);
                }
            }
        }
        queue.extend(it);
        pool.truncate(SEND_BATCH);
        self.shared.progress.notify_waiters();
        more
    }

    fn route(
        &self,
        st: &mut State,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
        relayed: &mut Relayed,
        pool: &mut Vec<Vec<u8>>,
    ) {
        match st.endpoint.handle_datagram(now, from, data) {
            Routed::Stream(_) | Routed::Dropped => {}
            Routed::Relay { to, remote_id } => relayed.push(to, remote_id, data, pool),
            Routed::NotUdx => {
                let ev = SocketEvent::Datagram {
                    from,
                    data: Bytes::copy_from_slice(data),
                };
                if self.events.try_send(ev).is_err() {
                    tracing::trace!(%from, "non-UDX datagram dropped: queue full");
                }
            }
            Routed::Firewall { local_id, from } => {
                let ev = SocketEvent::Firewall { local_id, from };
                if self.events.try_send(ev).is_err() {
                    tracing::debug!(%from, "firewall event dropped: queue full");
                }
            }
        }
    }
}
