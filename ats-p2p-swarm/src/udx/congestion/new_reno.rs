//! The NewReno-style window UDX used before BBR, kept selectable
//! ([`CongestionControl::NewReno`](super::CongestionControl::NewReno)): slow start, additive
//! increase, one multiplicative decrease of 0.7 per recovery episode, collapse to the minimum on
//! RTO, paced at `gain × cwnd / srtt`. Loss is its only congestion signal, so random loss caps
//! it (Mathis: about `1.2 × MSS / (RTT × √loss)`).

use std::time::Duration;

use super::{INITIAL_CWND_PACKETS, INITIAL_PACING_RATE, MAX_CWND_BYTES, MIN_CWND_PACKETS};

/// Multiplicative decrease on loss (CUBIC's beta: gentler than Reno's 0.5 on short paths).
const BETA_NUM: u64 = 7;
/// Denominator of [`BETA_NUM`].
const BETA_DEN: u64 = 10;
/// Pacing gain in slow start, in percent (2× lets the window double per RTT).
const SLOW_START_GAIN_PCT: u64 = 200;
/// Pacing gain in congestion avoidance, in percent.
const AVOIDANCE_GAIN_PCT: u64 = 125;

/// The NewReno window state.
#[derive(Clone, Debug)]
pub(crate) struct NewReno {
    cwnd: u64,
    ssthresh: u64,
    mss: u64,
    /// Sequence number that ends the current recovery episode (exclusive).
    recovery_end: Option<u32>,
    acked_accum: u64,
}

impl NewReno {
    pub(crate) fn new(mss: u64) -> Self {
        Self {
            cwnd: INITIAL_CWND_PACKETS * mss,
            ssthresh: u64::MAX,
            mss,
            recovery_end: None,
            acked_accum: 0,
        }
    }

    /// Current window in bytes.
    pub(crate) fn window(&self) -> u64 {
        self.cwnd
    }

    /// Updates the segment size (after an MTU probe succeeds).
    pub(crate) fn set_mss(&mut self, mss: u64) {
        self.mss = mss;
        self.cwnd = self.cwnd.max(MIN_CWND_PACKETS * mss);
    }

    pub(crate) fn in_slow_start(&self) -> bool {
        self.cwnd < self.ssthresh
    }

    /// `bytes` newly delivered; `cumulative_ack` is the peer's ack; `cwnd_limited` when the
    /// sender was actually using its window (no growth while application-limited).
    pub(crate) fn on_ack(&mut self, bytes: u64, cumulative_ack: u32, cwnd_limited: bool) {
        if let Some(end) = self.recovery_end {
            if crate::udx::packet::seq_diff(cumulative_ack, end) >= 0 {
                self.recovery_end = None;
            } else {
                return;
            }
        }
        if !cwnd_limited {
            return;
        }
        if self.in_slow_start() {
            self.cwnd = (self.cwnd + bytes).min(MAX_CWND_BYTES);
        } else {
            self.acked_accum += bytes;
            if self.acked_accum >= self.cwnd {
                self.acked_accum -= self.cwnd;
                self.cwnd = (self.cwnd + self.mss).min(MAX_CWND_BYTES);
            }
        }
    }

    /// A packet with sequence `seq` was declared lost; `next_seq` is the next unsent sequence.
    /// Returns true when this started a new recovery episode (the window was reduced).
    pub(crate) fn on_loss(&mut self, seq: u32, next_seq: u32) -> bool {
        if let Some(end) = self.recovery_end
            && crate::udx::packet::seq_diff(seq, end) < 0
        {
            return false; // same episode
        }
        self.cwnd = (self.cwnd * BETA_NUM / BETA_DEN).max(MIN_CWND_PACKETS * self.mss);
        self.ssthresh = self.cwnd;
        self.acked_accum = 0;
        self.recovery_end = Some(next_seq);
        true
    }

    /// The retransmission timer expired.
    pub(crate) fn on_rto(&mut self, next_seq: u32) {
        self.ssthresh = (self.cwnd / 2).max(MIN_CWND_PACKETS * self.mss);
        self.cwnd = MIN_CWND_PACKETS * self.mss;
        self.acked_accum = 0;
        self.recovery_end = Some(next_seq);
    }

    /// Pacing rate in bytes per second.
    pub(crate) fn pacing_rate(&self, srtt: Option<Duration>) -> u64 {
        let Some(srtt) = srtt else {
            return INITIAL_PACING_RATE;
        };
        let gain = if self.in_slow_start() {
            SLOW_START_GAIN_PCT
        } else {
            AVOIDANCE_GAIN_PCT
        };
        let micros = u64::try_from(srtt.as_micros()).unwrap_or(u64::MAX).max(1);
        // bytes/s = cwnd * gain/100 / (srtt_us / 1e6)
        let rate = u128::from(self.cwnd) * u128::from(gain) * 10_000 / u128::from(micros);
        u64::try_from(rate).unwrap_or(u64::MAX).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_grows_and_shrinks() {
        let mut c = NewReno::new(1000);
        assert_eq!(c.window(), 10_000);
        c.on_ack(1000, 1, true);
        assert_eq!(c.window(), 11_000);
        assert!(c.on_loss(5, 20));
        assert_eq!(c.window(), 7700);
        assert!(!c.on_loss(6, 20)); // same episode
        assert_eq!(c.window(), 7700);
        c.on_ack(1000, 10, true); // still recovering
        assert_eq!(c.window(), 7700);
        c.on_rto(30);
        assert_eq!(c.window(), 4000);
        assert!(c.pacing_rate(Some(Duration::from_millis(1))) > 0);
    }
}
