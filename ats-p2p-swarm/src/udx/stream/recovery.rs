//! Loss recovery of [`Stream`]: RACK-style loss detection, tail loss probes, the
//! retransmission timeout, and the timers that drive them.

use std::time::{Duration, Instant};

use super::{Pacer, SentState, Stream, Timer};
use crate::udx::CloseReason;
use crate::udx::packet::seq_diff;

/// Consecutive RTO expiries after which the stream times out (`UDX_MAX_RTO_TIMEOUTS`).
const MAX_RTO_TIMEOUTS: u32 = 6;
/// Extra probe timeout when a single packet is in flight (RFC 8985 TLP, libudx +2 ms).
const TLP_SINGLE_PACKET_EXTRA: Duration = Duration::from_millis(2);
/// Floor of the RACK reordering window: below the driver's timer resolution it is meaningless.
const MIN_REORDER_WINDOW: Duration = Duration::from_millis(1);

impl Stream {
    /// RACK: a packet sent before the most recently delivered one, by more than the reordering
    /// window, is lost. Arms the RACK timer for the ones still within the window.
    pub(super) fn detect_loss(&mut self, now: Instant) {
        let Some((rack_ts, rack_seq)) = self.send.rack_xmit else {
            return;
        };
        let srtt = self.rtt.srtt().unwrap_or(Duration::ZERO);
        let reo_wnd = self
            .rtt
            .min_rtt()
            .map_or(MIN_REORDER_WINDOW, |m| (m / 4).min(srtt))
            .max(MIN_REORDER_WINDOW);
        let rack_rtt = self.send.rack_rtt;
        let mut next_timer: Option<Instant> = None;
        let next_seq = self.send.seq;
        let mut lost_any: Option<u32> = None;
        for (i, p) in self.send.sent.iter_mut().enumerate() {
            let seq = self.send.acked.wrapping_add(i as u32);
            if p.state != SentState::InFlight {
                continue;
            }
            let before =
                p.sent_at < rack_ts || (p.sent_at == rack_ts && seq_diff(seq, rack_seq) < 0);
            if !before {
                if !p.retransmitted {
                    break; // later originals were all sent after the RACK packet
                }
                continue;
            }
            let deadline = p.sent_at + rack_rtt + reo_wnd;
            if deadline <= now {
                p.state = SentState::Lost;
                self.send.inflight_bytes = self.send.inflight_bytes.saturating_sub(p.wire_len());
                self.send.retransmit.push_back(seq);
                if lost_any.is_none() {
                    lost_any = Some(seq);
                }
                if self.mtu.on_lost(seq) {
                    // A lost probe says the path MTU is smaller, not that it is congested.
                    lost_any = lost_any.filter(|s| *s != seq);
                }
            } else {
                next_timer = Some(next_timer.map_or(deadline, |t| t.min(deadline)));
            }
        }
        if let Some(seq) = lost_any
            && self.cc.on_loss(seq, next_seq)
        {
            self.stats.loss_events += 1;
        }
        self.timers[Timer::Rack as usize] = next_timer;
    }

    pub(super) fn rearm_after_ack(&mut self, now: Instant) {
        if self.send.sent.is_empty() {
            self.timers[Timer::Rto as usize] = None;
            self.timers[Timer::Tlp as usize] = None;
            self.arm_keepalive(now);
            return;
        }
        self.timers[Timer::Rto as usize] = Some(now + self.rtt.rto());
        if !self.send.tlp_in_flight {
            self.arm_tlp(now);
        }
    }

    pub(super) fn arm_tlp(&mut self, now: Instant) {
        let pto = match self.rtt.srtt() {
            Some(s) => {
                let single = self.send.sent.len() == 1;
                s * 2
                    + if single {
                        TLP_SINGLE_PACKET_EXTRA
                    } else {
                        Duration::ZERO
                    }
            }
            None => crate::udx::rtt::INITIAL_RTO,
        };
        let pto = pto.max(MIN_REORDER_WINDOW);
        let at = now + pto;
        let at = match self.timers[Timer::Rto as usize] {
            Some(rto) => at.min(rto),
            None => at,
        };
        self.timers[Timer::Tlp as usize] = Some(at);
    }

    pub(super) fn arm_keepalive(&mut self, now: Instant) {
        self.timers[Timer::KeepAlive as usize] = match self.cfg.keepalive {
            Some(k) if self.remote.is_some() && self.closed.is_none() => Some(now + k),
            _ => None,
        };
    }

    pub(super) fn on_tlp(&mut self, now: Instant) {
        if self.send.sent.is_empty() {
            return;
        }
        self.send.tlp_in_flight = true;
        // Probe with the newest packet still outstanding.
        let newest = self
            .send
            .sent
            .iter()
            .enumerate()
            .rev()
            .find(|(_, p)| p.state == SentState::InFlight)
            .map(|(i, _)| self.send.acked.wrapping_add(i as u32));
        self.send.tlp_probe = newest;
        self.stats.tlp_probes += 1;
        let _ = now;
    }

    pub(super) fn on_rto(&mut self, now: Instant) {
        if self.send.sent.is_empty() {
            return;
        }
        self.stats.rto_expiries += 1;
        self.send.rto_count += 1;
        if self.send.rto_count > MAX_RTO_TIMEOUTS {
            self.close(CloseReason::TimedOut);
            return;
        }
        self.cc.on_rto(self.send.seq);
        for (i, p) in self.send.sent.iter_mut().enumerate() {
            if p.state == SentState::InFlight {
                p.state = SentState::Lost;
                self.send.inflight_bytes = self.send.inflight_bytes.saturating_sub(p.wire_len());
                self.send
                    .retransmit
                    .push_back(self.send.acked.wrapping_add(i as u32));
            }
        }
        self.send.inflight_bytes = 0;
        // Keep retransmit order by sequence; stale entries are skipped when popped.
        let base = self.send.acked;
        let mut v: Vec<u32> = self.send.retransmit.drain(..).collect();
        v.sort_by_key(|s| s.wrapping_sub(base));
        v.dedup();
        self.send.retransmit = v.into();
        self.mtu.probe = None;
        self.pacer = Pacer::default();
        self.timers[Timer::Rto as usize] = Some(now + self.rtt.rto() * 2);
        self.timers[Timer::Tlp as usize] = None;
    }
}
