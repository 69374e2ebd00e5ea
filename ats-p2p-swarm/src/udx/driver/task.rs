//! The per-socket task: receives datagram batches (GRO) into the [`Endpoint`], forwards
//! relayed packets, fires timers, and sends what the streams produce as GSO trains.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{MAX_HANDLE_MESSAGES, Shared, SocketEvent, State};
use crate::udx::endpoint::Routed;
use crate::udx::stream::Event;

/// Datagrams received per loop turn before timers and sends get their turn.
const RECV_BATCH: usize = 256;
/// Datagrams sent per loop turn (bounded work, and the size of the reused buffer pool).
const SEND_BATCH: usize = 256;
/// Largest UDP datagram we read.
const MAX_DATAGRAM: usize = 65_535;
/// Receive-buffer room per GRO segment (UDX datagrams are at most 1500 bytes, libudx reads 2048).
const GRO_SEGMENT_ROOM: usize = 2048;
/// Most segments in one GSO send (Linux allows 64).
const MAX_GSO_SEGMENTS: usize = 64;
/// Most bytes in one GSO send: the whole train is one UDP "datagram" to the kernel (64 KiB
/// limit; larger sends fail with EMSGSIZE, which quinn-udp reports as success).
const MAX_GSO_BYTES: usize = 65_000;
/// How long, at most, the driver sleeps when no timer is armed.
const IDLE_SLEEP: Duration = Duration::from_secs(3600);

/// The per-socket task.
pub(super) struct Driver {
    pub(super) shared: Arc<Shared>,
    pub(super) socket: Arc<UdpSocket>,
    pub(super) state: quinn_udp::UdpSocketState,
    pub(super) cancel: CancellationToken,
    pub(super) events: mpsc::Sender<SocketEvent>,
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
                crate::udx::packet::set_stream_id(p, remote_id);
            }
            o.segments += 1;
            o.sealed = size < o.seg;
            return;
        }
        let mut buf = pool.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(data);
        crate::udx::packet::set_stream_id(&mut buf, remote_id);
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
    pub(super) async fn run(self) {
        let gro = self.state.gro_segments().max(1);
        let mut recv_buf = vec![0u8; (gro * GRO_SEGMENT_ROOM).max(MAX_DATAGRAM)];
        let mut pool: Vec<Vec<u8>> = Vec::new();
        let mut queue: VecDeque<Outgoing> = VecDeque::new();
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
        queue: &mut VecDeque<Outgoing>,
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
            if wake_message && let Some(w) = h.message.take() {
                w.wake();
            }
            if wake_read && let Some(w) = h.read.take() {
                w.wake();
            }
            if wake_write && let Some(w) = h.write.take() {
                w.wake();
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
                    // Without the event nobody connects the stream, and its held packet would
                    // block every later one: let the peer's retransmission raise it again.
                    st.endpoint.unstash(local_id);
                    tracing::debug!(%from, "firewall event dropped: queue full");
                }
            }
        }
    }
}
