//! Congestion control and pacing.
//!
//! A NewReno-style window (slow start, additive increase, one multiplicative decrease of 0.7 per
//! recovery episode, collapse to the minimum on RTO) paced at `gain × cwnd / srtt`. The pacer
//! yields a *next send time*, not a fixed-size token bucket: it lets out up to
//! [`PACING_QUANTUM`] worth of bytes at the current rate at once, so a driver whose timer has
//! 1 ms resolution still sends at the full rate (the published `libudx` crate's 2-MSS bucket on a
//! 1 ms timer capped it at ~1.2 MB/s).

use std::time::{Duration, Instant};

/// Initial congestion window in packets (libudx: 10).
pub(crate) const INITIAL_CWND_PACKETS: u64 = 10;
/// Minimum congestion window in packets (libudx BBR: 4).
pub(crate) const MIN_CWND_PACKETS: u64 = 4;
/// Multiplicative decrease on loss (CUBIC's beta: gentler than Reno's 0.5 on short paths).
const BETA_NUM: u64 = 7;
/// Denominator of [`BETA_NUM`].
const BETA_DEN: u64 = 10;
/// Cap on cwnd: far above any loopback BDP, keeps the arithmetic bounded.
const MAX_CWND_BYTES: u64 = 256 * 1024 * 1024;
/// Pacing rate before any RTT sample, bytes/s (libudx `UDX_INIT_PACING_RATE`: 25000 B/ms).
const INITIAL_PACING_RATE: u64 = 25_000_000;
/// How far ahead of the pacing clock a burst may run: twice the driver timer resolution (tokio:
/// 1 ms, rounded up), so a sleep never leaves the path idle.
pub(crate) const PACING_QUANTUM: Duration = Duration::from_millis(2);
/// Pacing gain in slow start, in percent (2× lets the window double per RTT).
const SLOW_START_GAIN_PCT: u64 = 200;
/// Pacing gain in congestion avoidance, in percent.
const AVOIDANCE_GAIN_PCT: u64 = 125;

/// The congestion window state.
#[derive(Clone, Debug)]
pub(crate) struct Congestion {
    cwnd: u64,
    ssthresh: u64,
    mss: u64,
    /// Sequence number that ends the current recovery episode (exclusive).
    recovery_end: Option<u32>,
    acked_accum: u64,
}

impl Congestion {
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
            if super::packet::seq_diff(cumulative_ack, end) >= 0 {
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
            && super::packet::seq_diff(seq, end) < 0
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

/// Spreads packets over time at a given rate.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Pacer {
    /// The pacing clock: when the bytes sent so far "should" have finished at the current rate.
    clock: Option<Instant>,
}

impl Pacer {
    /// Earliest time the next packet may go, or `None` if it may go now.
    pub(crate) fn delay_until(&self, now: Instant) -> Option<Instant> {
        let clock = self.clock?;
        let release = clock.checked_sub(PACING_QUANTUM).unwrap_or(clock);
        (release > now).then_some(release)
    }

    /// Records `bytes` sent at `now` at `rate` bytes per second.
    pub(crate) fn on_sent(&mut self, now: Instant, bytes: usize, rate: u64) {
        let base = match self.clock {
            Some(c) if c > now => c,
            _ => now,
        };
        let nanos = (bytes as u128) * 1_000_000_000 / u128::from(rate.max(1));
        let step = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.clock = Some(base + step);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_allows_a_quantum_then_delays() {
        let now = Instant::now();
        let mut p = Pacer::default();
        let rate = 1_000_000; // 1 MB/s → 1000 bytes per ms
        let quantum = PACING_QUANTUM.as_micros() as usize / 1000 * 1000;
        let mut sent = 0;
        while p.delay_until(now).is_none() {
            p.on_sent(now, 100, rate);
            sent += 100;
            assert!(sent < 100_000);
        }
        assert!((quantum..=quantum + 100).contains(&sent), "burst {sent}");
        let next = p.delay_until(now).unwrap();
        assert!(next > now && next <= now + Duration::from_micros(200));
    }

    #[test]
    fn window_grows_and_shrinks() {
        let mut c = Congestion::new(1000);
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
