//! The sans-io UDX stream: reliable, ordered, flow- and congestion-controlled bytes plus
//! unreliable messages, over packets handed in and out by the caller.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

mod mtu;
mod recovery;
mod recv;
mod send;

use self::mtu::Mtu;
pub use self::mtu::{MTU_BASE, MTU_MAX, MTU_STEP};
use self::recv::RecvState;
use self::send::{SendState, Sent, SentState};
use super::congestion::{Congestion, Pacer};
use super::packet::{Header, Packet, flags, seq_diff};
use super::rtt::RttEstimator;
use super::{CloseReason, ReadError, Transmit, WriteError};

/// Default receive window, bytes (libudx `UDX_DEFAULT_RWND_MAX`).
pub const DEFAULT_RWND_MAX: u32 = 4 * 1024 * 1024;
/// Default cap on bytes written but not yet acknowledged; above it `write` returns `Blocked`.
pub const DEFAULT_SEND_BUFFER: usize = 8 * 1024 * 1024;
/// Consecutive RTO expiries after which the stream times out (`UDX_MAX_RTO_TIMEOUTS`).
const MAX_RTO_TIMEOUTS: u32 = 6;
/// Out-of-order packets are accepted at most this far ahead of the cumulative ack (libudx scans
/// 65536 seqs for SACKs).
const MAX_REORDER_DISTANCE: u32 = 65_536;
/// Bytes accepted beyond the advertised window before data is dropped (packets already in
/// flight when the window shrank).
pub const RECV_SLACK: usize = 256 * 1024;
/// SACK blocks processed per incoming packet; libudx sends at most 50. Bounds forged-SACK work.
const MAX_SACK_BLOCKS_PROCESSED: usize = 64;
/// Unreliable messages queued for sending or reading; more are dropped.
const MAX_QUEUED_MESSAGES: usize = 256;
/// Extra probe timeout when a single packet is in flight (RFC 8985 TLP, libudx +2 ms).
const TLP_SINGLE_PACKET_EXTRA: Duration = Duration::from_millis(2);
/// How long a cleanly finished stream keeps answering retransmissions of the peer's END (its
/// final ack may have been lost); covers the peer's first RTO retransmissions (1 s each).
pub const FINISHED_LINGER: Duration = Duration::from_secs(3);
/// Floor of the RACK reordering window: below the driver's timer resolution it is meaningless.
const MIN_REORDER_WINDOW: Duration = Duration::from_millis(1);

/// Per-stream configuration.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// Receive window advertised when the read buffer is empty, bytes.
    pub rwnd_max: u32,
    /// Cap on written-but-unacknowledged bytes.
    pub send_buffer: usize,
    /// Largest MTU to probe for (IP+UDP+UDX). Keep ≤ 1500 when the peer may be libudx.
    pub max_mtu: u16,
    /// Send a HEARTBEAT after this much idle time (off by default, like libudx).
    pub keepalive: Option<Duration>,
    /// First sequence number we send (libudx / hyperdht: 0).
    pub initial_seq: u32,
    /// Lower bound of the retransmission timeout (libudx: 1 s).
    pub min_rto: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            rwnd_max: DEFAULT_RWND_MAX,
            send_buffer: DEFAULT_SEND_BUFFER,
            max_mtu: MTU_MAX,
            keepalive: None,
            initial_seq: 0,
            min_rto: super::rtt::INITIAL_RTO,
        }
    }
}

/// What a stream tells its application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Data (or the end of the stream) can be read.
    Readable,
    /// Send-buffer space freed after a `Blocked` write.
    Writable,
    /// An unreliable MESSAGE datagram arrived.
    Message(Bytes),
    /// The stream closed; no more events follow.
    Closed(CloseReason),
}

/// Timers, a fixed table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// Retransmission timeout.
    Rto = 0,
    /// Tail loss probe.
    Tlp = 1,
    /// RACK reordering-window expiry.
    Rack = 2,
    /// Keep-alive heartbeat.
    KeepAlive = 3,
    /// Zero-window probe.
    Zwp = 4,
}

const TIMER_COUNT: usize = 5;
const ALL_TIMERS: [Timer; TIMER_COUNT] = [
    Timer::Rto,
    Timer::Tlp,
    Timer::Rack,
    Timer::KeepAlive,
    Timer::Zwp,
];

/// Counters for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// DATA/END packets sent for the first time.
    pub packets_sent: u64,
    /// Retransmitted packets (loss, TLP, RTO).
    pub retransmits: u64,
    /// Packets received (any type).
    pub packets_received: u64,
    /// Incoming packets dropped (duplicates, beyond the window, malformed).
    pub dropped: u64,
    /// RTO expiries.
    pub rto_expiries: u64,
    /// Tail loss probes sent.
    pub tlp_probes: u64,
    /// Congestion events (window reductions on loss).
    pub loss_events: u64,
    /// `poll_transmit` calls that had data but waited for the pacer.
    pub pacing_waits: u64,
    /// `poll_transmit` calls that had data but the congestion window was full.
    pub cwnd_waits: u64,
    /// `poll_transmit` calls that had data but the peer's receive window was full.
    pub rwnd_waits: u64,
    /// Smoothed RTT in microseconds.
    pub srtt_us: u64,
    /// Current MTU (IP + UDP + UDX).
    pub mtu: u16,
    /// Current congestion window, bytes.
    pub cwnd: u64,
}

/// One UDX stream, sans-io.
///
/// Calling order (quinn's contract, str0m's loop): feed input with [`Stream::handle_packet`] and
/// [`Stream::handle_timeout`] (time always passed in), apply application calls
/// ([`Stream::write`], [`Stream::read`], [`Stream::shutdown`], [`Stream::destroy`],
/// [`Stream::send_message`]), then drain [`Stream::poll_transmit`] until it returns `None`, read
/// [`Stream::poll_timeout`] and arm one timer for it, and drain [`Stream::poll_event`]. After any
/// change, repeat the draining. There is no clock and no randomness inside.
#[derive(Debug)]
pub struct Stream {
    local_id: u32,
    remote: Option<(u32, SocketAddr)>,
    cfg: StreamConfig,
    closed: Option<CloseReason>,
    closed_at: Option<Instant>,
    close_event_sent: bool,

    /// Destroyed while connected: one DESTROY packet is still to go out.
    destroy_pending: bool,
    /// A HEARTBEAT (keep-alive or zero-window probe) is due.
    heartbeat_pending: bool,
    /// Send-buffer space freed after a `Blocked` write: tell the application.
    writable_event: bool,

    // ---- the path: RTT, congestion, pacing, MTU, timers
    rtt: RttEstimator,
    cc: Congestion,
    pacer: Pacer,
    pacing_wait: Option<Instant>,
    mtu: Mtu,
    timers: [Option<Instant>; TIMER_COUNT],
    last_activity: Instant,

    /// What we send: sequence numbers, packets in flight, retransmissions, our END.
    send: SendState,
    /// What we receive: reassembly, the read buffer, acknowledgements, the peer's END.
    recv: RecvState,

    stats: StreamStats,
}

impl Stream {
    /// A new, unconnected stream with local id `local_id`.
    pub fn new(local_id: u32, cfg: StreamConfig, now: Instant) -> Self {
        let mtu = Mtu::new(cfg.max_mtu);
        let mss = mtu.mss() as u64;
        Self {
            local_id,
            remote: None,
            send: SendState::new(cfg.initial_seq),
            recv: RecvState::new(cfg.rwnd_max),
            rtt: RttEstimator::new(cfg.min_rto),
            cfg,
            closed: None,
            closed_at: None,
            close_event_sent: false,
            destroy_pending: false,
            heartbeat_pending: false,
            writable_event: false,
            cc: Congestion::new(mss),
            pacer: Pacer::default(),
            pacing_wait: None,
            mtu,
            timers: [None; TIMER_COUNT],
            last_activity: now,
            stats: StreamStats::default(),
        }
    }

    // ------------------------------------------------------------------ getters

    /// Our stream id (the id the peer writes into its packets).
    pub fn local_id(&self) -> u32 {
        self.local_id
    }

    /// The peer's stream id and address, once connected.
    pub fn remote(&self) -> Option<(u32, SocketAddr)> {
        self.remote
    }

    /// True once [`Stream::connect`] was called.
    pub fn is_connected(&self) -> bool {
        self.remote.is_some()
    }

    /// Why the stream closed, if it did.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.closed
    }

    /// True once closed and the closing packet (if any) was handed out.
    pub fn is_closed(&self) -> bool {
        self.closed.is_some() && !self.destroy_pending
    }

    /// True when the stream is closed and no longer needed on the socket (a finished stream
    /// lingers for [`FINISHED_LINGER`] after the last packet it saw or sent).
    pub fn is_drained(&self, now: Instant) -> bool {
        match (self.closed, self.closed_at) {
            (Some(CloseReason::Finished), Some(at)) => {
                !self.recv.ack_pending && now >= at.max(self.last_activity) + FINISHED_LINGER
            }
            (Some(_), _) => !self.destroy_pending,
            (None, _) => false,
        }
    }

    /// Bytes written and not yet acknowledged.
    pub fn send_buffered(&self) -> usize {
        self.send.buffered
    }

    /// Bytes written but not yet packetised.
    pub fn send_queued(&self) -> usize {
        self.send.queued
    }

    /// True when a control packet (ACK, window update, DESTROY, HEARTBEAT, MESSAGE) is waiting
    /// for [`Stream::poll_transmit`].
    pub fn has_pending_control(&self) -> bool {
        self.recv.ack_pending
            || self.destroy_pending
            || self.heartbeat_pending
            || !self.send.messages.is_empty()
    }

    /// True when everything written (and the END, if requested) has been acknowledged.
    pub fn is_flushed(&self) -> bool {
        self.send.is_flushed()
    }

    /// True when our END was acknowledged.
    pub fn is_end_acked(&self) -> bool {
        self.send.end_acked
    }

    /// Counters.
    pub fn stats(&self) -> StreamStats {
        StreamStats {
            mtu: self.mtu.mtu,
            cwnd: self.cc.window(),
            srtt_us: self.rtt.srtt().map_or(0, |d| d.as_micros() as u64),
            ..self.stats
        }
    }

    /// A one-line dump of the send/receive state, for failing tests.
    #[doc(hidden)]
    pub fn debug_summary(&self) -> String {
        let states: Vec<String> = self
            .send
            .sent
            .iter()
            .take(8)
            .map(|p| format!("{:?}{}", p.state, if p.retransmitted { "R" } else { "" }))
            .collect();
        format!(
            "id={} seq={} remote_acked={} sent={} first={:?} retransmit={:?} inflight={} cwnd={} rwnd={} timers={:?} pacing={:?} recv_next={} ooo={} closed={:?} rto_count={} tlp_in_flight={} srtt={:?}",
            self.local_id,
            self.send.seq,
            self.send.acked,
            self.send.sent.len(),
            states,
            self.send.retransmit.iter().take(8).collect::<Vec<_>>(),
            self.send.inflight_bytes,
            self.cc.window(),
            self.send.peer_rwnd,
            self.timers,
            self.pacing_wait,
            self.recv.next,
            self.recv.ooo.len(),
            self.closed,
            self.send.rto_count,
            self.send.tlp_in_flight,
            self.rtt.srtt(),
        )
    }

    /// Bytes held on the receive side (read buffer plus out-of-order packets); bounded by
    /// `rwnd_max` plus a small slack whatever the peer sends.
    pub fn recv_held(&self) -> usize {
        self.recv.held()
    }

    /// Out-of-order packets held (bounded by the reorder distance, 65536).
    pub fn recv_out_of_order(&self) -> usize {
        self.recv.ooo.len()
    }

    /// Bytes of space left in the receive window (what we advertise).
    pub fn recv_window(&self) -> u32 {
        self.recv.window(self.cfg.rwnd_max)
    }

    // ------------------------------------------------------------ app commands

    /// Binds the stream to the peer's stream id and address. Data written before is sent now.
    pub fn connect(&mut self, remote_id: u32, addr: SocketAddr, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        self.remote = Some((remote_id, addr));
        self.mtu.set_path(addr);
        self.cc.set_mss(self.mtu.mss() as u64);
        self.last_activity = now;
        self.arm_keepalive(now);
    }

    /// Queues bytes for sending; returns how many were taken. `Blocked` when the send buffer is
    /// full (wait for [`Event::Writable`]).
    pub fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        if let Some(r) = self.closed {
            return Err(WriteError::Closed(r));
        }
        if self.send.end_requested || self.destroy_pending {
            return Err(WriteError::Ended);
        }
        if data.is_empty() {
            return Ok(0);
        }
        self.send.queue(data, self.cfg.send_buffer)
    }

    /// Ends our write side (sends END after the buffered data).
    pub fn shutdown(&mut self) -> Result<(), WriteError> {
        if let Some(r) = self.closed {
            return Err(WriteError::Closed(r));
        }
        self.send.end_requested = true;
        Ok(())
    }

    /// Aborts the stream: one DESTROY packet (if connected), then closed.
    pub fn destroy(&mut self) {
        if self.closed.is_some() {
            return;
        }
        self.destroy_pending = self.remote.is_some();
        self.close(CloseReason::Destroyed);
    }

    /// Queues an unreliable MESSAGE datagram (no retransmission, no congestion control).
    pub fn send_message(&mut self, data: &[u8]) -> Result<(), WriteError> {
        if let Some(r) = self.closed {
            return Err(WriteError::Closed(r));
        }
        if self.send.messages.len() >= MAX_QUEUED_MESSAGES {
            return Err(WriteError::Blocked);
        }
        self.send.messages.push_back(Bytes::copy_from_slice(data));
        Ok(())
    }

    /// Reads in-order bytes. `Ok(0)` is the end of the stream (for a non-empty `buf`);
    /// `Blocked` means no data yet (wait for [`Event::Readable`]).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, ReadError> {
        self.read_with(buf.len(), |src| {
            if let Some(dst) = buf.get_mut(..src.len()) {
                dst.copy_from_slice(src);
            }
        })
    }

    /// Like [`Stream::read`], but hands up to `max` in-order bytes to `take` (which must
    /// consume all of them) instead of copying into a slice: a caller with uninitialised
    /// buffer space copies once and never zero-fills it first.
    pub fn read_with(&mut self, max: usize, take: impl FnOnce(&[u8])) -> Result<usize, ReadError> {
        if max == 0 {
            return Ok(0);
        }
        if !self.recv.has_data() {
            if self.recv.ended {
                return Ok(0);
            }
            return Err(match self.closed {
                Some(CloseReason::Finished) => return Ok(0),
                Some(r) => ReadError::Closed(r),
                None => ReadError::Blocked,
            });
        }
        let n = self.recv.take(max, take);
        self.maybe_window_update();
        Ok(n)
    }

    // ------------------------------------------------------------------ input

    /// Handles one packet addressed to this stream (already routed by stream id).
    pub fn handle_packet(&mut self, now: Instant, packet: &Packet<'_>) {
        self.stats.packets_received += 1;
        if let Some(reason) = self.closed {
            // A finished stream lingers to re-ack a retransmitted END whose ack was lost.
            if reason == CloseReason::Finished && packet.header.has(flags::DATA | flags::END) {
                self.recv.ack_pending = true;
            }
            return;
        }
        let h = packet.header;
        self.last_activity = self.last_activity.max(now);
        if h.has(flags::HEARTBEAT) {
            self.recv.ack_pending = true;
            return;
        }

        let diff = seq_diff(h.seq, self.ack());
        if diff >= 0 {
            if h.has(flags::DATA | flags::END) {
                self.on_data(h, packet.payload, diff.unsigned_abs());
            }
            if h.has(flags::DESTROY) {
                self.close(CloseReason::Reset);
                return;
            }
        } else if h.has(flags::DATA | flags::END) {
            self.stats.dropped += 1;
            self.recv.ack_pending = true; // duplicate: re-ack so the sender learns
        }
        if h.has(flags::MESSAGE) {
            if self.recv.messages.len() < MAX_QUEUED_MESSAGES {
                self.recv
                    .messages
                    .push_back(Bytes::copy_from_slice(packet.payload));
            } else {
                self.stats.dropped += 1;
            }
        }

        if !self.on_ack(now, packet) {
            return; // acks something never sent: forged or stale
        }
        if h.has(flags::DATA | flags::END) {
            self.recv.ack_pending = true;
        }
        self.check_finished();
    }

    /// Fires expired timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        for t in ALL_TIMERS {
            let Some(at) = self.timers[t as usize] else {
                continue;
            };
            if at > now {
                continue;
            }
            self.timers[t as usize] = None;
            match t {
                Timer::Rto => self.on_rto(now),
                Timer::Tlp => self.on_tlp(now),
                Timer::Rack => self.detect_loss(now),
                Timer::KeepAlive => {
                    if self.send.sent.is_empty() && self.remote.is_some() && self.closed.is_none() {
                        self.heartbeat_pending = true;
                    }
                    self.arm_keepalive(now);
                }
                Timer::Zwp => {
                    if self.send.peer_rwnd == 0
                        && self.send.inflight_bytes == 0
                        && self.closed.is_none()
                    {
                        self.heartbeat_pending = true;
                        self.timers[Timer::Zwp as usize] = Some(now + self.rtt.rto() * 2);
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------------ output

    /// The next datagram to send, **appended** to `buf` (so a driver can build a GSO train in
    /// place); it is the last [`Transmit::size`] bytes of `buf`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let start = buf.len();
        let t = self.poll_transmit_inner(now, buf);
        match t {
            Some(dest) => Some(Transmit::new(dest, buf.len() - start)),
            None => {
                buf.truncate(start);
                None
            }
        }
    }

    fn poll_transmit_inner(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        let (remote_id, dest) = self.remote?;
        if self.destroy_pending {
            self.destroy_pending = false;
            self.header(flags::DESTROY, remote_id, 0).write(buf);
            self.send.seq = self.send.seq.wrapping_add(1);
            return Some(dest);
        }
        if self.closed.is_some() && !self.recv.ack_pending {
            return None;
        }
        if self.recv.ack_pending {
            self.recv.ack_pending = false;
            self.write_ack(remote_id, buf);
            self.check_finished();
            return Some(dest);
        }
        if self.closed.is_some() {
            return None;
        }
        if self.heartbeat_pending {
            self.heartbeat_pending = false;
            self.header(flags::HEARTBEAT, remote_id, 0).write(buf);
            return Some(dest);
        }
        if let Some(msg) = self.send.messages.pop_front() {
            self.header(flags::MESSAGE, remote_id, 0).write(buf);
            buf.extend_from_slice(&msg);
            return Some(dest);
        }
        if let Some(seq) = self.send.tlp_probe.take() {
            // A tail loss probe ignores cwnd and pacing: it exists to elicit an ack.
            if self.resend(now, seq, remote_id, buf, false) {
                return Some(dest);
            }
        }
        self.pacing_wait = None;
        if let Some(release) = self.pacer.delay_until(now) {
            if self.has_sendable() {
                self.pacing_wait = Some(release);
                self.stats.pacing_waits += 1;
            }
            return None;
        }
        while let Some(&seq) = self.send.retransmit.front() {
            let idx = seq.wrapping_sub(self.send.acked) as usize;
            let lost = matches!(self.send.sent.get(idx), Some(p) if p.state == SentState::Lost);
            if !lost {
                self.send.retransmit.pop_front();
                continue;
            }
            let size = self.send.sent.get(idx).map_or(0, Sent::wire_len);
            if self.send.inflight_bytes > 0 && self.send.inflight_bytes + size > self.cc.window() {
                self.send.cwnd_limited = true;
                return None;
            }
            self.send.retransmit.pop_front();
            if self.resend(now, seq, remote_id, buf, true) {
                return Some(dest);
            }
        }
        self.send_new(now, remote_id, dest, buf)
    }

    /// The earliest time [`Stream::handle_timeout`] or [`Stream::poll_transmit`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        let timers = self.timers.iter().flatten().min().copied();
        match (timers, self.pacing_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next application event.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(m) = self.recv.messages.pop_front() {
            return Some(Event::Message(m));
        }
        if self.recv.readable_event {
            self.recv.readable_event = false;
            return Some(Event::Readable);
        }
        if self.writable_event {
            self.writable_event = false;
            return Some(Event::Writable);
        }
        if let Some(r) = self.closed
            && !self.close_event_sent
        {
            self.close_event_sent = true;
            return Some(Event::Closed(r));
        }
        None
    }

    // --------------------------------------------------------------- internals

    fn ack(&self) -> u32 {
        self.recv.ack()
    }

    fn header(&self, flags: u8, remote_id: u32, data_offset: u8) -> Header {
        Header {
            flags,
            data_offset,
            stream_id: remote_id,
            rwnd: self.recv_window(),
            seq: self.send.seq,
            ack: self.ack(),
        }
    }

    fn close(&mut self, reason: CloseReason) {
        if self.closed.is_some() {
            return;
        }
        tracing::debug!(id = self.local_id, ?reason, "udx stream closed");
        self.closed = Some(reason);
        self.closed_at = Some(self.last_activity);
        self.timers = [None; TIMER_COUNT];
        self.heartbeat_pending = false;
        self.send.stop(reason != CloseReason::Finished);
        if reason != CloseReason::Finished {
            self.recv.ack_pending = false;
        }
        self.recv.readable_event = true;
        self.writable_event = true;
    }

    fn check_finished(&mut self) {
        if self.closed.is_none() && self.send.end_acked && self.recv.ended && !self.recv.ack_pending
        {
            self.close(CloseReason::Finished);
        }
    }

    fn has_sendable(&self) -> bool {
        self.remote.is_some() && self.send.has_sendable()
    }
}
