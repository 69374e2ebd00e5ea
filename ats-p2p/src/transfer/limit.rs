//! Bandwidth limits: a token bucket as a sans-io type (time is passed in), used by the send
//! driver to pace its writes and by the receive driver to pace its reads (a receiver that reads
//! slower makes the transport's flow control slow the sender down).

use std::num::NonZeroU64;
use std::time::{Duration, Instant};

/// Nanoseconds per second.
const NANOS: u128 = 1_000_000_000;

/// The most a bucket holds, in time at its rate: a pause of the caller no longer than this is
/// made up afterwards, a longer one is not (so the rate holds over any window of a few times
/// this, and a long idle period does not allow a burst).
pub const BURST_TIME: Duration = Duration::from_millis(50);

/// Smallest burst in bytes: one DATA frame, so pacing never has to split one.
pub const MIN_BURST: u64 = 64 * 1024;

/// A token bucket over bytes: `rate` bytes per second, holding at most a burst of
/// [`BURST_TIME`] at that rate (at least [`MIN_BURST`] bytes). Taking more than it holds goes
/// into debt; [`take`](Self::take) answers when the debt is paid, and the caller waits until
/// then before moving more bytes. Over any period the bytes taken are at most
/// `burst + rate × period`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: NonZeroU64,
    burst: u64,
    /// Bytes available (negative: owed) at `at`.
    tokens: i128,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket for `rate` bytes per second, at `now`.
    pub fn new(rate: NonZeroU64, now: Instant) -> Self {
        let burst = u64::try_from(u128::from(rate.get()) * BURST_TIME.as_nanos() / NANOS)
            .unwrap_or(u64::MAX)
            .max(MIN_BURST);
        Self {
            rate,
            burst,
            tokens: i128::from(burst),
            at: now,
        }
    }

    /// The rate in bytes per second.
    pub const fn rate(&self) -> NonZeroU64 {
        self.rate
    }

    /// Refills for the time since the last call (an earlier `now` counts as no time).
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_nanos();
        let earned = elapsed.saturating_mul(u128::from(self.rate.get())) / NANOS;
        let earned = i128::try_from(earned).unwrap_or(i128::MAX);
        self.tokens = self
            .tokens
            .saturating_add(earned)
            .min(i128::from(self.burst));
        self.at = now;
    }

    /// Takes `bytes` at `now`; returns `None` when they were available, or the instant at
    /// which the debt they made is paid (wait until then before moving more).
    pub fn take(&mut self, bytes: u64, now: Instant) -> Option<Instant> {
        self.refill(now);
        self.tokens = self.tokens.saturating_sub(i128::from(bytes));
        if self.tokens >= 0 {
            return None;
        }
        let owed = self.tokens.unsigned_abs();
        // Round up: waiting a nanosecond too long is fine, too short is not.
        let nanos = owed
            .saturating_mul(NANOS)
            .div_ceil(u128::from(self.rate.get()));
        let wait = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        Some(now.checked_add(wait).unwrap_or(now))
    }
}

/// Waits as the bucket says after moving `bytes` (no bucket: no wait).
pub(super) async fn pace(bucket: Option<&mut TokenBucket>, bytes: usize) {
    let Some(bucket) = bucket else { return };
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    if let Some(until) = bucket.take(bytes, Instant::now()) {
        tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(r: u64) -> NonZeroU64 {
        NonZeroU64::new(r).unwrap_or(NonZeroU64::MIN)
    }

    /// Moves `total` bytes in `chunk`s as fast as the bucket allows, stepping time only to
    /// the instants it names; returns the time taken.
    fn drain(bucket: &mut TokenBucket, start: Instant, total: u64, chunk: u64) -> Duration {
        let mut now = start;
        let mut moved = 0;
        while moved < total {
            let n = chunk.min(total - moved);
            if let Some(until) = bucket.take(n, now) {
                now = until;
            }
            moved += n;
        }
        now - start
    }

    #[test]
    fn the_rate_holds_over_a_long_transfer() {
        let start = Instant::now();
        let mut b = TokenBucket::new(rate(20_000_000), start);
        let took = drain(&mut b, start, 100 * 1024 * 1024, 64 * 1024);
        // 104,857,600 bytes at 20 MB/s is 5.243 s, minus the first burst (1 MB: 50 ms).
        let expected = Duration::from_nanos(104_857_600 * 50) - BURST_TIME;
        let diff = took.abs_diff(expected);
        assert!(diff < Duration::from_millis(1), "{took:?} vs {expected:?}");
    }

    #[test]
    fn a_full_bucket_gives_its_burst_at_once_then_paces() {
        let start = Instant::now();
        let mut b = TokenBucket::new(rate(1_000_000), start);
        // Burst: 50 ms at 1 MB/s = 50,000 bytes, raised to one frame (65,536).
        assert_eq!(b.take(MIN_BURST, start), None);
        let until = b.take(1_000, start);
        assert_eq!(until, Some(start + Duration::from_millis(1)));
    }

    #[test]
    fn idle_time_does_not_allow_more_than_a_burst() {
        let start = Instant::now();
        let mut b = TokenBucket::new(rate(10_000_000), start);
        let later = start + Duration::from_secs(60);
        // 50 ms at 10 MB/s: 500,000 bytes free after a minute idle, not 600 MB.
        assert_eq!(b.take(500_000, later), None);
        assert!(b.take(10_000, later).is_some());
    }

    #[test]
    fn huge_rates_and_amounts_do_not_overflow() {
        let start = Instant::now();
        let mut b = TokenBucket::new(rate(u64::MAX), start);
        // The burst is 50 ms at the rate: a twentieth of u64::MAX.
        assert_eq!(b.take(u64::MAX / 40, start + Duration::from_secs(1)), None);
        let mut slow = TokenBucket::new(rate(1), start);
        assert!(slow.take(u64::MAX, start).is_some());
        // Time going backwards counts as none.
        let earlier = start.checked_sub(Duration::from_secs(1)).unwrap_or(start);
        assert!(slow.take(1, earlier).is_some());
    }
}
