//! The send side: [`SendState`], and the [`Stream`] methods that packetise queued bytes (with
//! MTU probes), retransmit, and account for acknowledged packets.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::mtu::MtuState;
use super::{DEFAULT_RWND_MAX, MAX_QUEUED_MESSAGES, Stream, Timer};
use crate::udx::WriteError;
use crate::udx::congestion::{AckEvent, PacketRateState};
use crate::udx::packet::{HEADER_SIZE, Header, Packet, flags, seq_diff};

/// SACK blocks processed per incoming packet; libudx sends at most 50. Bounds forged-SACK work.
const MAX_SACK_BLOCKS_PROCESSED: usize = 64;

/// Where a sent packet stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SentState {
    /// Sent and counted in flight.
    InFlight,
    /// Declared lost, waiting for retransmission (not in flight).
    Lost,
    /// Selectively acknowledged (still ahead of the cumulative ack).
    Delivered,
}

/// A DATA or END packet sent and not yet cumulatively acknowledged.
#[derive(Debug)]
pub(super) struct Sent {
    pub(super) flags: u8,
    pub(super) payload: Bytes,
    pub(super) sent_at: Instant,
    pub(super) retransmitted: bool,
    pub(super) state: SentState,
    /// Delivery-rate bookkeeping from the (latest) send.
    pub(super) rate: PacketRateState,
}

impl Sent {
    /// Bytes on the wire (header + payload), what congestion control counts.
    pub(super) fn wire_len(&self) -> u64 {
        (self.payload.len() + HEADER_SIZE) as u64
    }
}

/// The send half of a stream: what the application wrote, the packets in flight and their
/// fate, the peer's window, and our END. Path state (RTT, congestion, pacing, MTU) and timers
/// stay on the [`Stream`].
#[derive(Debug)]
pub(super) struct SendState {
    /// Sequence number of the next new packet.
    pub(super) seq: u32,
    /// The first sequence number the peer has not cumulatively acknowledged (`sent[0]`).
    pub(super) acked: u32,
    /// Packets from `acked` on, in sequence order.
    pub(super) sent: VecDeque<Sent>,
    /// Written, not yet packetised: the application's chunks, sliced without copying.
    queue: VecDeque<Bytes>,
    /// Bytes in `queue`.
    pub(super) queued: usize,
    /// Bytes written and not yet acknowledged (queued + in `sent`).
    pub(super) buffered: usize,
    /// A write found the buffer full: send `Writable` when it drains.
    pub(super) write_blocked: bool,
    /// Lost sequence numbers to resend, oldest first (stale entries are skipped).
    pub(super) retransmit: VecDeque<u32>,
    /// The packet a tail loss probe resends next.
    pub(super) tlp_probe: Option<u32>,
    /// A TLP went out and no ack advanced since.
    pub(super) tlp_in_flight: bool,
    /// Wire bytes of packets in flight.
    pub(super) inflight_bytes: u64,
    /// The peer's advertised receive window.
    pub(super) peer_rwnd: u32,
    /// Sequence and ack numbers of the packet that last updated `peer_rwnd` (RFC 793 SND.WL1/2).
    wl1: u32,
    wl2: u32,
    /// The application ended its writes: send END after the data.
    pub(super) end_requested: bool,
    /// Our END's sequence number, once sent.
    pub(super) end_seq: Option<u32>,
    /// Our END was acknowledged.
    pub(super) end_acked: bool,
    /// Unreliable MESSAGE datagrams to send.
    pub(super) messages: VecDeque<Bytes>,
    /// RACK: send time and sequence of the most recently sent packet known delivered.
    pub(super) rack_xmit: Option<(Instant, u32)>,
    /// RACK: the RTT measured through that packet.
    pub(super) rack_rtt: Duration,
    /// Consecutive RTO expiries.
    pub(super) rto_count: u32,
    /// The last send attempt found the congestion window full.
    pub(super) cwnd_limited: bool,
}

impl SendState {
    pub(super) fn new(initial_seq: u32) -> Self {
        Self {
            seq: initial_seq,
            acked: initial_seq,
            sent: VecDeque::new(),
            queue: VecDeque::new(),
            queued: 0,
            buffered: 0,
            write_blocked: false,
            retransmit: VecDeque::new(),
            tlp_probe: None,
            tlp_in_flight: false,
            inflight_bytes: 0,
            peer_rwnd: DEFAULT_RWND_MAX,
            wl1: 0,
            wl2: 0,
            end_requested: false,
            end_seq: None,
            end_acked: false,
            messages: VecDeque::new(),
            rack_xmit: None,
            rack_rtt: Duration::ZERO,
            rto_count: 0,
            cwnd_limited: false,
        }
    }

    /// Queues as much of `data` as the `capacity`-byte send buffer has room for.
    pub(super) fn queue(&mut self, data: &[u8], capacity: usize) -> Result<usize, WriteError> {
        let n = self.room_for(data.len(), capacity)?;
        let chunk = data.get(..n).unwrap_or(data);
        self.push(Bytes::copy_from_slice(chunk));
        Ok(n)
    }

    /// Like [`Self::queue`], but takes the bytes off the front of `data` instead of copying.
    pub(super) fn queue_owned(
        &mut self,
        data: &mut BytesMut,
        capacity: usize,
    ) -> Result<usize, WriteError> {
        let n = self.room_for(data.len(), capacity)?;
        self.push(data.split_to(n).freeze());
        Ok(n)
    }

    /// How many of `len` bytes fit in the `capacity`-byte send buffer; `Blocked` for none.
    fn room_for(&mut self, len: usize, capacity: usize) -> Result<usize, WriteError> {
        let room = capacity.saturating_sub(self.buffered);
        if room == 0 {
            self.write_blocked = true;
            return Err(WriteError::Blocked);
        }
        Ok(room.min(len))
    }

    fn push(&mut self, chunk: Bytes) {
        self.queued += chunk.len();
        self.buffered += chunk.len();
        self.queue.push_back(chunk);
    }

    /// Takes `len` queued bytes: a slice of the front chunk, or a copy across chunks.
    pub(super) fn take_payload(&mut self, len: usize) -> Bytes {
        self.queued = self.queued.saturating_sub(len);
        if let Some(front) = self.queue.front_mut() {
            if front.len() > len {
                return front.split_to(len);
            }
            if front.len() == len {
                return self.queue.pop_front().unwrap_or_default();
            }
        }
        let mut out = BytesMut::with_capacity(len);
        while out.len() < len {
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            let want = len - out.len();
            if front.len() > want {
                out.extend_from_slice(&front.split_to(want));
            } else {
                out.extend_from_slice(front);
                self.queue.pop_front();
            }
        }
        out.freeze()
    }

    /// New data, a retransmission or our END is waiting (a connected stream would send it).
    pub(super) fn has_sendable(&self) -> bool {
        self.queued > 0
            || !self.retransmit.is_empty()
            || (self.end_requested && self.end_seq.is_none())
    }

    /// Everything written (and the END, if requested) was acknowledged.
    pub(super) fn is_flushed(&self) -> bool {
        self.buffered == 0 && (!self.end_requested || self.end_acked)
    }

    /// Takes the peer's window from `h` unless an older packet overtook a newer one (RFC 793's
    /// SND.WL1/SND.WL2 rule); true when it was taken.
    pub(super) fn update_peer_window(&mut self, h: &Header) -> bool {
        let fresh = seq_diff(h.ack, self.acked) >= 0
            && (seq_diff(h.seq, self.wl1) > 0
                || (h.seq == self.wl1 && seq_diff(h.ack, self.wl2) >= 0));
        if fresh {
            self.peer_rwnd = h.rwnd;
            self.wl1 = h.seq;
            self.wl2 = h.ack;
        }
        fresh
    }

    /// The stream closed: nothing more is sent. With `abort`, what was unacknowledged is
    /// dropped too (a finished stream keeps its record for the linger period).
    pub(super) fn stop(&mut self, abort: bool) {
        self.retransmit.clear();
        self.messages.clear();
        self.tlp_probe = None;
        if abort {
            self.sent.clear();
            self.queue.clear();
            self.queued = 0;
            self.buffered = 0;
            self.inflight_bytes = 0;
        }
    }
}

/// What one incoming packet newly acknowledged.
#[derive(Debug, Default)]
pub(super) struct Delivery {
    /// Wire bytes newly delivered.
    bytes: u64,
    /// The RACK packet changed.
    rack_updated: bool,
    /// Send time and sequence of the newest never-retransmitted delivered packet.
    rtt_sample: Option<(Instant, u32)>,
}

impl Stream {
    /// Bytes written and not yet acknowledged.
    pub fn send_buffered(&self) -> usize {
        self.send.buffered
    }

    /// Bytes written but not yet packetised.
    pub fn send_queued(&self) -> usize {
        self.send.queued
    }

    /// True when everything written (and the END, if requested) has been acknowledged.
    pub fn is_flushed(&self) -> bool {
        self.send.is_flushed()
    }

    /// True when our END was acknowledged.
    pub fn is_end_acked(&self) -> bool {
        self.send.end_acked
    }

    /// Queues bytes for sending; returns how many were taken. `Blocked` when the send buffer is
    /// full (wait for [`Event::Writable`](super::Event::Writable)).
    pub fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        self.check_writable()?;
        if data.is_empty() {
            return Ok(0);
        }
        self.send.queue(data, self.cfg.send_buffer)
    }

    /// Like [`Stream::write`], but takes the queued bytes off the front of `data` without
    /// copying them (they stay shared with `data`'s allocation until acknowledged).
    pub fn write_owned(&mut self, data: &mut BytesMut) -> Result<usize, WriteError> {
        self.check_writable()?;
        if data.is_empty() {
            return Ok(0);
        }
        self.send.queue_owned(data, self.cfg.send_buffer)
    }

    /// Why nothing more may be written, if anything: the stream closed, or our END (or
    /// DESTROY) is already on its way.
    fn check_writable(&self) -> Result<(), WriteError> {
        if let Some(r) = self.closed {
            return Err(WriteError::Closed(r));
        }
        if self.send.end_requested || self.destroy_pending {
            return Err(WriteError::Ended);
        }
        Ok(())
    }

    /// Ends our write side (sends END after the buffered data).
    pub fn shutdown(&mut self) -> Result<(), WriteError> {
        if let Some(r) = self.closed {
            return Err(WriteError::Closed(r));
        }
        self.send.end_requested = true;
        Ok(())
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

    /// The acknowledgement part of an incoming packet: the peer's window, cumulative and
    /// selective acks, RTT samples, congestion control, loss detection. False when the packet
    /// acknowledges something never sent (forged or stale): the rest of it is ignored too.
    pub(super) fn on_ack(&mut self, now: Instant, packet: &Packet<'_>) -> bool {
        let h = packet.header;
        if seq_diff(h.ack, self.send.seq) > 0 {
            return false;
        }
        if self.send.update_peer_window(&h) && h.rwnd > 0 {
            self.timers[Timer::Zwp as usize] = None;
        }
        let prior_inflight = self.send.inflight_bytes;
        let mut newly = Delivery::default();
        let advanced = seq_diff(h.ack, self.send.acked) > 0;
        while seq_diff(h.ack, self.send.acked) > 0 {
            let Some(p) = self.send.sent.pop_front() else {
                break;
            };
            let seq = self.send.acked;
            self.send.acked = self.send.acked.wrapping_add(1);
            self.on_delivered(now, seq, &p, &mut newly);
            self.send.buffered = self.send.buffered.saturating_sub(p.payload.len());
        }
        if h.has(flags::SACK) {
            for (start, end) in packet.sacks().take(MAX_SACK_BLOCKS_PROCESSED) {
                let ok = seq_diff(start, self.send.acked) >= 0
                    && seq_diff(end, start) > 0
                    && seq_diff(self.send.seq, end) >= 0;
                if !ok {
                    continue;
                }
                let from = start.wrapping_sub(self.send.acked) as usize;
                let to = end.wrapping_sub(self.send.acked) as usize;
                for i in from..to {
                    let seq = self.send.acked.wrapping_add(i as u32);
                    let Some(p) = self.send.sent.get_mut(i) else {
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
                        rate: p.rate,
                    };
                    p.state = SentState::Delivered;
                    let wire = p.wire_len();
                    self.on_delivered_sacked(now, seq, &snapshot, wire, &mut newly);
                }
            }
        }

        if let Some(e) = self.send.end_seq
            && seq_diff(self.send.acked, e) > 0
        {
            self.send.end_acked = true; // cumulatively: everything before the END arrived too
        }
        if advanced {
            self.send.rto_count = 0;
            self.send.tlp_in_flight = false;
        }
        if newly.bytes > 0 || advanced {
            let rtt_sample = newly
                .rtt_sample
                .map(|(sample_at, _)| now.saturating_duration_since(sample_at));
            if let Some(sample) = rtt_sample {
                self.rtt.on_sample(sample, now);
            }
            if newly.rack_updated
                && let Some((t, _)) = self.send.rack_xmit
            {
                self.send.rack_rtt = now.saturating_duration_since(t);
            }
            let cwnd_limited = self.send.cwnd_limited || prior_inflight * 2 >= self.cc.window();
            self.cc.on_ack(&AckEvent {
                now,
                cumulative_ack: self.send.acked,
                prior_in_flight: prior_inflight,
                in_flight: self.send.inflight_bytes,
                cwnd_limited,
                rtt_sample,
                min_rtt: self.rtt.min_rtt(),
            });
            if self.send.buffered < self.cfg.send_buffer / 2 && self.send.write_blocked {
                self.send.write_blocked = false;
                self.writable_event = true;
            }
            if self.mtu.state == MtuState::Base {
                self.mtu.state = MtuState::Search;
            }
            self.detect_loss(now);
            self.rearm_after_ack(now);
        }
        true
    }

    pub(super) fn send_new(
        &mut self,
        now: Instant,
        remote_id: u32,
        dest: SocketAddr,
        buf: &mut Vec<u8>,
    ) -> Option<SocketAddr> {
        let want_end = self.send.end_requested && self.send.end_seq.is_none();
        if self.send.queued == 0 && !want_end {
            self.cc.on_app_limited(self.send.inflight_bytes);
            return None;
        }
        let mss = self.mtu.mss();
        let len = self.send.queued.min(mss);
        let wire = (len + HEADER_SIZE) as u64;
        if self.send.inflight_bytes > 0 && self.send.inflight_bytes + wire > self.cc.window() {
            self.send.cwnd_limited = true;
            self.stats.cwnd_waits += 1;
            return None;
        }
        if self.send.inflight_bytes > 0
            && self.send.inflight_bytes + wire > u64::from(self.send.peer_rwnd)
        {
            self.stats.rwnd_waits += 1;
            return None;
        }
        if self.send.inflight_bytes == 0 && self.send.peer_rwnd == 0 {
            if self.timers[Timer::Zwp as usize].is_none() {
                self.timers[Timer::Zwp as usize] = Some(now + self.rtt.rto());
            }
            return None;
        }
        self.send.cwnd_limited = false;
        let (f, payload) = if len > 0 {
            (flags::DATA, self.send.take_payload(len))
        } else {
            (flags::END, Bytes::new())
        };
        let seq = self.send.seq;
        if f == flags::END {
            self.send.end_seq = Some(seq);
        }
        let mut pad = 0u16;
        if len == mss
            && !self.cc.in_startup()
            && let Some(probe) = self.mtu.next_probe()
        {
            let target = probe.saturating_sub(self.mtu.overhead) as usize;
            let p = target.saturating_sub(len);
            if p > 0 && p <= usize::from(u8::MAX) {
                pad = p as u16;
                self.mtu.probe = Some((seq, probe));
            }
        }
        let h = self.header(f, remote_id, pad as u8);
        self.recv.last_adv_rwnd = h.rwnd;
        h.write(buf);
        buf.resize(buf.len() + usize::from(pad), 0);
        buf.extend_from_slice(&payload);
        self.send.seq = self.send.seq.wrapping_add(1);
        let s = Sent {
            flags: f,
            payload,
            sent_at: now,
            retransmitted: false,
            state: SentState::InFlight,
            rate: self.cc.on_packet_sent(now, self.send.inflight_bytes),
        };
        self.send.inflight_bytes += s.wire_len();
        self.send.sent.push_back(s);
        self.stats.packets_sent += 1;
        self.on_packet_sent(now, HEADER_SIZE + usize::from(pad) + len);
        if self.timers[Timer::Tlp as usize].is_none() && !self.send.tlp_in_flight {
            self.arm_tlp(now);
        }
        Some(dest)
    }

    /// Re-sends `seq`; `lost` when it had been declared lost (else a TLP of an in-flight one).
    pub(super) fn resend(
        &mut self,
        now: Instant,
        seq: u32,
        remote_id: u32,
        buf: &mut Vec<u8>,
        lost: bool,
    ) -> bool {
        let idx = seq.wrapping_sub(self.send.acked) as usize;
        let Some(p) = self.send.sent.get(idx) else {
            return false;
        };
        if p.state == SentState::Delivered {
            return false;
        }
        let (f, payload) = (p.flags, p.payload.clone());
        let rate = self.cc.on_packet_sent(now, self.send.inflight_bytes);
        let mut h = self.header(f, remote_id, 0);
        h.seq = seq;
        self.recv.last_adv_rwnd = h.rwnd;
        h.write(buf);
        buf.extend_from_slice(&payload);
        if let Some(p) = self.send.sent.get_mut(idx) {
            p.sent_at = now;
            p.retransmitted = true;
            p.rate = rate;
            if lost && p.state == SentState::Lost {
                p.state = SentState::InFlight;
                self.send.inflight_bytes += p.wire_len();
            }
        }
        self.stats.retransmits += 1;
        self.on_packet_sent(now, HEADER_SIZE + payload.len());
        true
    }

    pub(super) fn on_packet_sent(&mut self, now: Instant, bytes: usize) {
        let rate = self.cc.pacing_rate(self.rtt.srtt());
        self.pacer.on_sent(now, bytes, rate);
        self.last_activity = now;
        if self.timers[Timer::Rto as usize].is_none() {
            self.timers[Timer::Rto as usize] = Some(now + self.rtt.rto());
        }
        self.timers[Timer::KeepAlive as usize] = None;
    }

    pub(super) fn on_delivered(&mut self, now: Instant, seq: u32, p: &Sent, newly: &mut Delivery) {
        if p.state == SentState::Delivered {
            return;
        }
        let wire = p.wire_len();
        self.on_delivered_sacked(now, seq, p, wire, newly);
    }

    /// `p` (whose payload may already be gone: `wire` is its size) was delivered for the
    /// first time.
    pub(super) fn on_delivered_sacked(
        &mut self,
        now: Instant,
        seq: u32,
        p: &Sent,
        wire: u64,
        newly: &mut Delivery,
    ) {
        if p.state == SentState::InFlight {
            self.send.inflight_bytes = self.send.inflight_bytes.saturating_sub(wire);
        }
        newly.bytes += wire;
        self.cc.on_packet_delivered(now, &p.rate, wire);
        if !p.retransmitted {
            match newly.rtt_sample {
                Some((_, s)) if seq_diff(s, seq) > 0 => {}
                _ => newly.rtt_sample = Some((p.sent_at, seq)),
            }
        }
        // RFC 8985 6.2 step 2: a retransmission acknowledged sooner than the min RTT was not
        // what arrived (the original was); its recent send time as the RACK time would declare
        // everything sent before it lost.
        let ambiguous = p.retransmitted
            && self
                .rtt
                .min_rtt()
                .is_some_and(|m| now.saturating_duration_since(p.sent_at) < m);
        match self.send.rack_xmit {
            _ if ambiguous => {}
            Some((t, s)) if t > p.sent_at || (t == p.sent_at && seq_diff(s, seq) > 0) => {}
            _ => {
                self.send.rack_xmit = Some((p.sent_at, seq));
                newly.rack_updated = true;
            }
        }
        if self.mtu.on_delivered(seq, p.retransmitted) {
            self.cc.set_mss(self.mtu.mss() as u64);
        }
    }
}
