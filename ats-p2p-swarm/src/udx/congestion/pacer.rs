//! Spreading packets over time. The pacer yields a *next send time*, not a fixed-size token
//! bucket: it lets out up to [`PACING_QUANTUM`] worth of bytes at the current rate at once, so a
//! driver whose timer has 1 ms resolution still sends at the full rate (the published `libudx`
//! crate's 2-MSS bucket on a 1 ms timer capped it at ~1.2 MB/s).

use std::time::{Duration, Instant};

/// How far ahead of the pacing clock a burst may run: twice the driver timer resolution (tokio:
/// 1 ms, rounded up), so a sleep never leaves the path idle.
pub(crate) const PACING_QUANTUM: Duration = Duration::from_millis(2);

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
}
