//! Exponential backoff: the one schedule for retries in the workspace (lookups until a peer is
//! announced, reconnects), sans-io: it computes delays, the caller sleeps.
//!
//! Delay `n` (0-based) is `base × 2ⁿ`, capped at `max`, plus an optional random jitter of up to
//! a quarter of it so that many clients retrying together spread out.

use std::time::Duration;

use rand::Rng;

/// Largest doubling exponent (2¹⁶ × any sane base is past any sane cap).
const MAX_DOUBLINGS: u32 = 16;

/// An exponential backoff schedule with its attempt counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    jitter: bool,
    attempt: u32,
}

impl Backoff {
    /// `base`, doubling per attempt up to `max`, without jitter.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            jitter: false,
            attempt: 0,
        }
    }

    /// The same schedule with up to 25 % random extra on each delay.
    pub const fn with_jitter(mut self) -> Self {
        self.jitter = true;
        self
    }

    /// Delay before retry `attempt` (0-based), without jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.min(MAX_DOUBLINGS);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The next delay (jittered when configured with `rng`), and counts the attempt.
    pub fn next_delay_with<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Duration {
        let d = self.delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        if !self.jitter {
            return d;
        }
        let quarter = u64::try_from(d.as_millis() / 4).unwrap_or(u64::MAX);
        let extra = if quarter > 0 {
            rng.gen_range(0..=quarter)
        } else {
            0
        };
        d.saturating_add(Duration::from_millis(extra))
    }

    /// The next delay, jittered from the thread's generator when configured.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(&mut rand::thread_rng())
    }

    /// Attempts counted so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts over from `base` (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(20);
    const MAX: Duration = Duration::from_secs(1);

    #[test]
    fn doubles_up_to_the_cap() {
        let mut b = Backoff::new(BASE, MAX);
        let delays: Vec<_> = (0..8).map(|_| b.next_delay()).collect();
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(b.attempts(), 8);
        b.reset();
        assert_eq!(b.next_delay(), BASE);
        assert_eq!(b.delay(u32::MAX), MAX);
    }

    #[test]
    fn jitter_adds_at_most_a_quarter() {
        let mut b = Backoff::new(BASE, MAX).with_jitter();
        for attempt in 0..40 {
            let plain = b.delay(attempt);
            let d = b.next_delay();
            assert!(d >= plain && d <= plain + plain / 4, "{d:?} for {plain:?}");
        }
    }
}
