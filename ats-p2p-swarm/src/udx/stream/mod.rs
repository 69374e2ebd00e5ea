//! The sans-io UDX stream: reliable, ordered, flow- and congestion-controlled bytes plus
//! unreliable messages, over packets handed in and out by the caller.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

mod recovery;
mod recv;
mod send;

use super::congestion::{Congestion, Pacer};
use super::packet::{HEADER_SIZE, Header, Packet, flags, seq_diff};
use super::rtt::RttEstimator;
use super::{CloseReason, ReadError, Transmit, WriteError};

/// Default receive window, bytes (libudx `UDX_DEFAULT_RWND_MAX`).
pub const DEFAULT_RWND_MAX: u32 = 4 * 1024 * 1024;
/// Default cap on bytes written but not yet acknowledged; above it `write` returns `Blocked`.
pub const DEFAULT_SEND_BUFFER: usize = 8 * 1024 * 1024;
/// Starting MTU (IP + UDP + UDX headers included), libudx `UDX_MTU_BASE`.
pub const MTU_BASE: u16 = 1200;
/// Largest MTU probed by default, libudx `UDX_MTU_MAX` (libudx reads into 2048-byte buffers).
pub const MTU_MAX: u16 = 1500;
/// MTU probe step, libudx `UDX_MTU_STEP`.
pub const MTU_STEP: u16 = 32;
/// Failed probes that end the MTU search, libudx `UDX_MTU_MAX_PROBES`.
const MTU_MAX_PROBES: u8 = 3;
/// IPv4 + UDP + UDX header bytes.
const IPV4_OVERHEAD: u16 = 20 + 8 + 20;
/// IPv6 + UDP + UDX header bytes.
const IPV6_OVERHEAD: u16 = 40 + 8 + 20;
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SentState {
    InFlight,
    Lost,
    Delivered,
}

#[derive(Debug)]
struct Sent {
    flags: u8,
    payload: Bytes,
    sent_at: Instant,
    retransmitted: bool,
    state: SentState,
}

impl Sent {
    fn wire_len(&self) -> u64 {
        (self.payload.len() + HEADER_SIZE) as u64
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MtuState {
    Base,
    Search,
    Complete,
}

#[derive(Debug)]
struct Mtu {
    state: MtuState,
    mtu: u16,
    max: u16,
    overhead: u16,
    probe: Option<(u32, u16)>,
    failures: u8,
}

impl Mtu {
    fn mss(&self) -> usize {
        usize::from(self.mtu.saturating_sub(self.overhead).max(1))
    }

    fn next_probe(&self) -> Option<u16> {
        let next = self.mtu.saturating_add(MTU_STEP).min(self.max);
        (self.state == MtuState::Search && self.probe.is_none() && next > self.mtu).then_some(next)
    }
}

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

    // ---- send side
    seq: u32,
    remote_acked: u32,
    sent: VecDeque<Sent>,
    /// Written, not yet packetised: the application's chunks, sliced without copying.
    send_queue: VecDeque<Bytes>,
    send_queued: usize,
    send_buffered: usize,
    write_blocked: bool,
    retransmit: VecDeque<u32>,
    tlp_probe: Option<u32>,
    tlp_in_flight: bool,
    inflight_bytes: u64,
    send_rwnd: u32,
    send_wl1: u32,
    send_wl2: u32,
    end_requested: bool,
    end_seq: Option<u32>,
    end_acked: bool,
    destroy_pending: bool,
    heartbeat_pending: bool,
    out_messages: VecDeque<Bytes>,
    rtt: RttEstimator,
    cc: Congestion,
    pacer: Pacer,
    cwnd_limited: bool,
    pacing_wait: Option<Instant>,
    mtu: Mtu,
    rto_count: u32,
    rack_xmit: Option<(Instant, u32)>,
    rack_rtt: Duration,
    timers: [Option<Instant>; TIMER_COUNT],
    last_activity: Instant,

    // ---- receive side
    recv_next: u64,
    recv_buf: BytesMut,
    ooo: BTreeMap<u64, (u8, Bytes)>,
    ooo_bytes: usize,
    remote_end: Option<u64>,
    remote_ended: bool,
    ack_pending: bool,
    last_adv_rwnd: u32,
    in_messages: VecDeque<Bytes>,
    readable_event: bool,
    writable_event: bool,

    stats: StreamStats,
}

impl Stream {
    /// A new, unconnected stream with local id `local_id`.
    pub fn new(local_id: u32, cfg: StreamConfig, now: Instant) -> Self {
        let mtu = Mtu {
            state: MtuState::Base,
            mtu: MTU_BASE.min(cfg.max_mtu.max(MTU_BASE)),
            max: cfg.max_mtu.max(MTU_BASE),
            overhead: IPV4_OVERHEAD,
            probe: None,
            failures: 0,
        };
        let mss = mtu.mss() as u64;
        Self {
            local_id,
            remote: None,
            seq: cfg.initial_seq,
            remote_acked: cfg.initial_seq,
            send_wl1: 0,
            send_wl2: 0,
            rtt: RttEstimator::new(cfg.min_rto),
            last_adv_rwnd: cfg.rwnd_max,
            cfg,
            closed: None,
            closed_at: None,
            close_event_sent: false,
            sent: VecDeque::new(),
            send_queue: VecDeque::new(),
            send_queued: 0,
            send_buffered: 0,
            write_blocked: false,
            retransmit: VecDeque::new(),
            tlp_probe: None,
            tlp_in_flight: false,
            inflight_bytes: 0,
            send_rwnd: DEFAULT_RWND_MAX,
            end_requested: false,
            end_seq: None,
            end_acked: false,
            destroy_pending: false,
            heartbeat_pending: false,
            out_messages: VecDeque::new(),
            cc: Congestion::new(mss),
            pacer: Pacer::default(),
            cwnd_limited: false,
            pacing_wait: None,
            mtu,
            rto_count: 0,
            rack_xmit: None,
            rack_rtt: Duration::ZERO,
            timers: [None; TIMER_COUNT],
            last_activity: now,
            recv_next: 0,
            recv_buf: BytesMut::new(),
            ooo: BTreeMap::new(),
            ooo_bytes: 0,
            remote_end: None,
            remote_ended: false,
            ack_pending: false,
            in_messages: VecDeque::new(),
            readable_event: false,
            writable_event: false,
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
                !self.ack_pending && now >= at.max(self.last_activity) + FINISHED_LINGER
            }
            (Some(_), _) => !self.destroy_pending,
            (None, _) => false,
        }
    }

    /// Bytes written and not yet acknowledged.
    pub fn send_buffered(&self) -> usize {
        self.send_buffered
    }

    /// Bytes written but not yet packetised.
    pub fn send_queued(&self) -> usize {
        self.send_queued
    }

    /// True when a control packet (ACK, window update, DESTROY, HEARTBEAT, MESSAGE) is waiting
    /// for [`Stream::poll_transmit`].
    pub fn has_pending_control(&self) -> bool {
        self.ack_pending
            || self.destroy_pending
            || self.heartbeat_pending
            || !self.out_messages.is_empty()
    }

    /// True when everything written (and the END, if requested) has been acknowledged.
    pub fn is_flushed(&self) -> bool {
        self.send_buffered == 0 && (!self.end_requested || self.end_acked)
    }

    /// True when our END was acknowledged.
    pub fn is_end_acked(&self) -> bool {
        self.end_acked
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
            .sent
            .iter()
            .take(8)
            .map(|p| format!("{:?}{}", p.state, if p.retransmitted { "R" } else { "" }))
            .collect();
        format!(
            "id={} seq={} remote_acked={} sent={} first={:?} retransmit={:?} inflight={} cwnd={} rwnd={} timers={:?} pacing={:?} recv_next={} ooo={} closed={:?} rto_count={} tlp_in_flight={} srtt={:?}",
            self.local_id,
            self.seq,
            self.remote_acked,
            self.sent.len(),
            states,
            self.retransmit.iter().take(8).collect::<Vec<_>>(),
            self.inflight_bytes,
            self.cc.window(),
            self.send_rwnd,
            self.timers,
            self.pacing_wait,
            self.recv_next,
            self.ooo.len(),
            self.closed,
            self.rto_count,
            self.tlp_in_flight,
            self.rtt.srtt(),
        )
    }

    /// Bytes held on the receive side (read buffer plus out-of-order packets); bounded by
    /// `rwnd_max` plus a small slack whatever the peer sends.
    pub fn recv_held(&self) -> usize {
        self.recv_buf.len().saturating_add(self.ooo_bytes)
    }

    /// Out-of-order packets held (bounded by the reorder distance, 65536).
    pub fn recv_out_of_order(&self) -> usize {
        self.ooo.len()
    }

    /// Bytes of space left in the receive window (what we advertise).
    pub fn recv_window(&self) -> u32 {
        let held = self.recv_buf.len().saturating_add(self.ooo_bytes);
        let held = u32::try_from(held).unwrap_or(u32::MAX);
        self.cfg.rwnd_max.saturating_sub(held)
    }

    // ------------------------------------------------------------ app commands

    /// Binds the stream to the peer's stream id and address. Data written before is sent now.
    pub fn connect(&mut self, remote_id: u32, addr: SocketAddr, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        self.remote = Some((remote_id, addr));
        self.mtu.overhead = if addr.is_ipv6() {
            IPV6_OVERHEAD
        } else {
            IPV4_OVERHEAD
        };
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
        if self.end_requested || self.destroy_pending {
            return Err(WriteError::Ended);
        }
        if data.is_empty() {
            return Ok(0);
        }
        let room = self.cfg.send_buffer.saturating_sub(self.send_buffered);
        if room == 0 {
            self.write_blocked = true;
            return Err(WriteError::Blocked);
        }
        let n = room.min(data.len());
        let chunk = data.get(..n).unwrap_or(data);
        self.send_queue.push_back(Bytes::copy_from_slice(chunk));
        self.send_queued += n;
        self.send_buffered += n;
        Ok(n)
    }

    /// Ends our write side (sends END after the buffered data).
    pub fn shutdown(&mut self) -> Result<(), WriteError> {
        if let Some(r) = self.closed {
            return Err(WriteError::Closed(r));
        }
        self.end_requested = true;
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
        if self.out_messages.len() >= MAX_QUEUED_MESSAGES {
            return Err(WriteError::Blocked);
        }
        self.out_messages.push_back(Bytes::copy_from_slice(data));
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
        if self.recv_buf.is_empty() {
            if self.remote_ended {
                return Ok(0);
            }
            return Err(match self.closed {
                Some(CloseReason::Finished) => return Ok(0),
                Some(r) => ReadError::Closed(r),
                None => ReadError::Blocked,
            });
        }
        let n = max.min(self.recv_buf.len());
        take(self.recv_buf.get(..n).unwrap_or(&[]));
        self.recv_buf.advance(n);
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
                self.ack_pending = true;
            }
            return;
        }
        let h = packet.header;
        self.last_activity = self.last_activity.max(now);
        if h.has(flags::HEARTBEAT) {
            self.ack_pending = true;
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
            self.ack_pending = true; // duplicate: re-ack so the sender learns
        }
        if h.has(flags::MESSAGE) {
            if self.in_messages.len() < MAX_QUEUED_MESSAGES {
                self.in_messages
                    .push_back(Bytes::copy_from_slice(packet.payload));
            } else {
                self.stats.dropped += 1;
            }
        }

        // ---- acknowledgement processing
        if seq_diff(h.ack, self.seq) > 0 {
            return; // acks something never sent: forged or stale
        }
        if seq_diff(h.ack, self.remote_acked) >= 0
            && (seq_diff(h.seq, self.send_wl1) > 0
                || (h.seq == self.send_wl1 && seq_diff(h.ack, self.send_wl2) >= 0))
        {
            self.send_rwnd = h.rwnd;
            self.send_wl1 = h.seq;
            self.send_wl2 = h.ack;
            if h.rwnd > 0 {
                self.timers[Timer::Zwp as usize] = None;
            }
        }
        let prior_inflight = self.inflight_bytes;
        let mut newly = Delivery::default();
        let advanced = seq_diff(h.ack, self.remote_acked) > 0;
        while seq_diff(h.ack, self.remote_acked) > 0 {
            let Some(p) = self.sent.pop_front() else {
                break;
            };
            let seq = self.remote_acked;
            self.remote_acked = self.remote_acked.wrapping_add(1);
            self.on_delivered(seq, &p, &mut newly);
            self.send_buffered = self.send_buffered.saturating_sub(p.payload.len());
        }
        if h.has(flags::SACK) {
            for (start, end) in packet.sacks().take(MAX_SACK_BLOCKS_PROCESSED) {
                let ok = seq_diff(start, self.remote_acked) >= 0
                    && seq_diff(end, start) > 0
                    && seq_diff(self.seq, end) >= 0;
                if !ok {
                    continue;
                }
                let from = start.wrapping_sub(self.remote_acked) as usize;
                let to = end.wrapping_sub(self.remote_acked) as usize;
                for i in from..to {
                    let seq = self.remote_acked.wrapping_add(i as u32);
                    let Some(p) = self.sent.get_mut(i) else {
                        break;
                    };
                    if p.state == SentState::Delivered {
                        continue;
                    }
                    let snapshot = Sent {
                        flags: p.flags,
                        payload: Bytes::new(),
                        sent_at: p.sent_at,
                        retransmitted: p.retransmitted,
                        state: p.state,
                    };
                    p.state = SentState::Delivered;
                    let wire = p.wire_len();
                    self.on_delivered_sacked(seq, &snapshot, wire, &mut newly);
                }
            }
        }

        if let Some(e) = self.end_seq {
            if seq_diff(self.remote_acked, e) > 0 {
                self.end_acked = true; // cumulatively: everything before the END arrived too
            }
        }
        if advanced {
            self.rto_count = 0;
            self.tlp_in_flight = false;
        }
        if newly.bytes > 0 || advanced {
            if let Some((sample_at, _)) = newly.rtt_sample {
                self.rtt
                    .on_sample(now.saturating_duration_since(sample_at), now);
            }
            if newly.rack_updated {
                if let Some((t, _)) = self.rack_xmit {
                    self.rack_rtt = now.saturating_duration_since(t);
                }
            }
            let limited = self.cwnd_limited || prior_inflight * 2 >= self.cc.window();
            self.cc.on_ack(newly.bytes, self.remote_acked, limited);
            if self.send_buffered < self.cfg.send_buffer / 2 && self.write_blocked {
                self.write_blocked = false;
                self.writable_event = true;
            }
            if self.mtu.state == MtuState::Base {
                self.mtu.state = MtuState::Search;
            }
            self.detect_loss(now);
            self.rearm_after_ack(now);
        }
        if h.has(flags::DATA | flags::END) {
            self.ack_pending = true;
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
                    if self.sent.is_empty() && self.remote.is_some() && self.closed.is_none() {
                        self.heartbeat_pending = true;
                    }
                    self.arm_keepalive(now);
                }
                Timer::Zwp => {
                    if self.send_rwnd == 0 && self.inflight_bytes == 0 && self.closed.is_none() {
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
            self.seq = self.seq.wrapping_add(1);
            return Some(dest);
        }
        if self.closed.is_some() && !self.ack_pending {
            return None;
        }
        if self.ack_pending {
            self.ack_pending = false;
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
        if let Some(msg) = self.out_messages.pop_front() {
            self.header(flags::MESSAGE, remote_id, 0).write(buf);
            buf.extend_from_slice(&msg);
            return Some(dest);
        }
        if let Some(seq) = self.tlp_probe.take() {
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
        while let Some(&seq) = self.retransmit.front() {
            let idx = seq.wrapping_sub(self.remote_acked) as usize;
            let lost = matches!(self.sent.get(idx), Some(p) if p.state == SentState::Lost);
            if !lost {
                self.retransmit.pop_front();
                continue;
            }
            let size = self.sent.get(idx).map_or(0, Sent::wire_len);
            if self.inflight_bytes > 0 && self.inflight_bytes + size > self.cc.window() {
                self.cwnd_limited = true;
                return None;
            }
            self.retransmit.pop_front();
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
        if let Some(m) = self.in_messages.pop_front() {
            return Some(Event::Message(m));
        }
        if self.readable_event {
            self.readable_event = false;
            return Some(Event::Readable);
        }
        if self.writable_event {
            self.writable_event = false;
            return Some(Event::Writable);
        }
        if let Some(r) = self.closed {
            if !self.close_event_sent {
                self.close_event_sent = true;
                return Some(Event::Closed(r));
            }
        }
        None
    }

    // --------------------------------------------------------------- internals

    fn ack(&self) -> u32 {
        self.recv_next as u32
    }

    fn header(&self, flags: u8, remote_id: u32, data_offset: u8) -> Header {
        Header {
            flags,
            data_offset,
            stream_id: remote_id,
            rwnd: self.recv_window(),
            seq: self.seq,
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
        self.retransmit.clear();
        self.out_messages.clear();
        self.heartbeat_pending = false;
        self.tlp_probe = None;
        if reason != CloseReason::Finished {
            self.sent.clear();
            self.send_queue.clear();
            self.send_queued = 0;
            self.send_buffered = 0;
            self.inflight_bytes = 0;
            self.ack_pending = false;
        }
        self.readable_event = true;
        self.writable_event = true;
    }

    fn check_finished(&mut self) {
        if self.closed.is_none() && self.end_acked && self.remote_ended && !self.ack_pending {
            self.close(CloseReason::Finished);
        }
    }

    fn has_sendable(&self) -> bool {
        self.remote.is_some()
            && (self.send_queued > 0
                || !self.retransmit.is_empty()
                || (self.end_requested && self.end_seq.is_none()))
    }
}

#[derive(Debug, Default)]
struct Delivery {
    bytes: u64,
    rack_updated: bool,
    rtt_sample: Option<(Instant, u32)>,
}
