//! Send side of [`Stream`]: packetising queued bytes, MTU probes, retransmissions, and the
//! bookkeeping when packets are acknowledged.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::{Delivery, MtuState, Sent, SentState, Stream, Timer};
use crate::udx::packet::{HEADER_SIZE, flags, seq_diff};

impl Stream {
    pub(super) fn send_new(
        &mut self,
        now: Instant,
        remote_id: u32,
        dest: SocketAddr,
        buf: &mut Vec<u8>,
    ) -> Option<SocketAddr> {
        let want_end = self.end_requested && self.end_seq.is_none();
        if self.send_queued == 0 && !want_end {
            return None;
        }
        let mss = self.mtu.mss();
        let len = self.send_queued.min(mss);
        let wire = (len + HEADER_SIZE) as u64;
        if self.inflight_bytes > 0 && self.inflight_bytes + wire > self.cc.window() {
            self.cwnd_limited = true;
            self.stats.cwnd_waits += 1;
            return None;
        }
        if self.inflight_bytes > 0 && self.inflight_bytes + wire > u64::from(self.send_rwnd) {
            self.stats.rwnd_waits += 1;
            return None;
        }
        if self.inflight_bytes == 0 && self.send_rwnd == 0 {
            if self.timers[Timer::Zwp as usize].is_none() {
                self.timers[Timer::Zwp as usize] = Some(now + self.rtt.rto());
            }
            return None;
        }
        self.cwnd_limited = false;
        let (f, payload) = if len > 0 {
            (flags::DATA, self.take_payload(len))
        } else {
            (flags::END, Bytes::new())
        };
        let seq = self.seq;
        if f == flags::END {
            self.end_seq = Some(seq);
        }
        let mut pad = 0u16;
        if len == mss {
            if let Some(probe) = self.mtu.next_probe() {
                let target = probe.saturating_sub(self.mtu.overhead) as usize;
                let p = target.saturating_sub(len);
                if p > 0 && p <= usize::from(u8::MAX) {
                    pad = p as u16;
                    self.mtu.probe = Some((seq, probe));
                }
            }
        }
        let h = self.header(f, remote_id, pad as u8);
        self.last_adv_rwnd = h.rwnd;
        h.write(buf);
        buf.resize(buf.len() + usize::from(pad), 0);
        buf.extend_from_slice(&payload);
        self.seq = self.seq.wrapping_add(1);
        let s = Sent {
            flags: f,
            payload,
            sent_at: now,
            retransmitted: false,
            state: SentState::InFlight,
        };
        self.inflight_bytes += s.wire_len();
        self.sent.push_back(s);
        self.stats.packets_sent += 1;
        self.on_packet_sent(now, HEADER_SIZE + usize::from(pad) + len);
        if self.timers[Timer::Tlp as usize].is_none() && !self.tlp_in_flight {
            self.arm_tlp(now);
        }
        Some(dest)
    }

    /// Takes `len` queued bytes: a slice of the front chunk, or a copy across chunks.
    pub(super) fn take_payload(&mut self, len: usize) -> Bytes {
        self.send_queued = self.send_queued.saturating_sub(len);
        if let Some(front) = self.send_queue.front_mut() {
            if front.len() > len {
                return front.split_to(len);
            }
            if front.len() == len {
                return self.send_queue.pop_front().unwrap_or_default();
            }
        }
        let mut out = BytesMut::with_capacity(len);
        while out.len() < len {
            let Some(front) = self.send_queue.front_mut() else {
                break;
            };
            let want = len - out.len();
            if front.len() > want {
                out.extend_from_slice(&front.split_to(want));
            } else {
                out.extend_from_slice(front);
                self.send_queue.pop_front();
            }
        }
        out.freeze()
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
        let idx = seq.wrapping_sub(self.remote_acked) as usize;
        let Some(p) = self.sent.get(idx) else {
            return false;
        };
        if p.state == SentState::Delivered {
            return false;
        }
        let (f, payload) = (p.flags, p.payload.clone());
        let mut h = self.header(f, remote_id, 0);
        h.seq = seq;
        self.last_adv_rwnd = h.rwnd;
        h.write(buf);
        buf.extend_from_slice(&payload);
        if let Some(p) = self.sent.get_mut(idx) {
            p.sent_at = now;
            p.retransmitted = true;
            if lost && p.state == SentState::Lost {
                p.state = SentState::InFlight;
                self.inflight_bytes += p.wire_len();
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

    pub(super) fn on_delivered(&mut self, seq: u32, p: &Sent, newly: &mut Delivery) {
        if p.state == SentState::Delivered {
            return;
        }
        let wire = p.wire_len();
        self.on_delivered_sacked(seq, p, wire, newly);
    }

    pub(super) fn on_delivered_sacked(
        &mut self,
        seq: u32,
        p: &Sent,
        wire: u64,
        newly: &mut Delivery,
    ) {
        if p.state == SentState::InFlight {
            self.inflight_bytes = self.inflight_bytes.saturating_sub(wire);
        }
        newly.bytes += wire;
        if !p.retransmitted {
            match newly.rtt_sample {
                Some((_, s)) if seq_diff(s, seq) > 0 => {}
                _ => newly.rtt_sample = Some((p.sent_at, seq)),
            }
        }
        match self.rack_xmit {
            Some((t, s)) if t > p.sent_at || (t == p.sent_at && seq_diff(s, seq) > 0) => {}
            _ => {
                self.rack_xmit = Some((p.sent_at, seq));
                newly.rack_updated = true;
            }
        }
        if let Some((probe_seq, size)) = self.mtu.probe {
            if probe_seq == seq && p.retransmitted {
                // Delivered, but maybe only as the unpadded retransmission: probe again.
                self.mtu.probe = None;
            } else if probe_seq == seq {
                self.mtu.mtu = size;
                self.mtu.probe = None;
                self.mtu.failures = 0;
                if self.mtu.next_probe().is_none() {
                    self.mtu.state = MtuState::Complete;
                }
                self.cc.set_mss(self.mtu.mss() as u64);
            }
        }
    }
}
