//! A sans-io delay line: holds each datagram for a fixed one-way delay, then lets it out in the
//! order it came in. The kernel here has no `netem`, so the real-path benchmark (`bin/path.rs`)
//! adds delay with a userspace UDP relay ([`crate::delay_relay`]) built on this.
//!
//! Time is passed in: [`DelayLine::handle_datagram`] at arrival, [`DelayLine::poll_transmit`]
//! for what is due, [`DelayLine::poll_timeout`] for when the next one is. With one fixed delay
//! and arrival times that never go backwards, the due times are ordered like the arrivals, so a
//! FIFO queue is an exact timer: nothing is reordered, and each datagram is released at
//! `arrival + delay` (or at the first poll after that). The queue is bounded in datagrams and in
//! bytes; a datagram that does not fit is dropped (tail drop) and counted.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A datagram released by [`DelayLine::poll_transmit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// The datagram, as it arrived.
    pub data: Vec<u8>,
    /// How much later than its due time it was released (0 when polled in time).
    pub late_by: Duration,
}

/// Counters of a [`DelayLine`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DelayLineStats {
    /// Datagrams accepted into the queue.
    pub accepted: u64,
    /// Datagrams dropped because the queue was full.
    pub dropped_full: u64,
    /// Datagrams released.
    pub released: u64,
    /// Most datagrams held at once.
    pub max_queued: usize,
    /// Largest lateness of a release.
    pub max_late: Duration,
    /// Sum of the lateness of all releases (for the mean).
    pub total_late: Duration,
}

/// The queue limits of a [`DelayLine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayLineLimits {
    /// Most datagrams held at once.
    pub max_datagrams: usize,
    /// Most bytes held at once.
    pub max_bytes: usize,
}

impl Default for DelayLineLimits {
    /// 64 Ki datagrams / 64 MiB: at 200 Mbit/s a 25 ms line holds ~450 datagrams (625 KB), so
    /// the line only drops when the relay cannot keep up at all.
    fn default() -> Self {
        Self {
            max_datagrams: 64 * 1024,
            max_bytes: 64 << 20,
        }
    }
}

/// Holds datagrams for a fixed delay; see the module docs.
#[derive(Debug)]
pub struct DelayLine {
    delay: Duration,
    limits: DelayLineLimits,
    /// (due time, datagram), due times non-decreasing front to back.
    queue: VecDeque<(Instant, Vec<u8>)>,
    queued_bytes: usize,
    /// Latest arrival seen: an earlier `now` is clamped to it so due times stay ordered.
    last_arrival: Option<Instant>,
    stats: DelayLineStats,
}

impl DelayLine {
    /// A line that holds each datagram for `delay`.
    pub fn new(delay: Duration, limits: DelayLineLimits) -> Self {
        Self {
            delay,
            limits,
            queue: VecDeque::new(),
            queued_bytes: 0,
            last_arrival: None,
            stats: DelayLineStats::default(),
        }
    }

    /// The one-way delay.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// A datagram arrived at `now`. Returns `false` (and counts a drop) if the queue is full.
    pub fn handle_datagram(&mut self, now: Instant, data: Vec<u8>) -> bool {
        if self.queue.len() >= self.limits.max_datagrams
            || self.queued_bytes + data.len() > self.limits.max_bytes
        {
            self.stats.dropped_full += 1;
            return false;
        }
        // A caller whose clock readings race (two threads) could pass an earlier `now`; holding
        // it as if it came with the previous datagram keeps the order and costs < that race.
        let arrival = self.last_arrival.map_or(now, |last| last.max(now));
        self.last_arrival = Some(arrival);
        self.queued_bytes += data.len();
        self.queue.push_back((arrival + self.delay, data));
        self.stats.accepted += 1;
        self.stats.max_queued = self.stats.max_queued.max(self.queue.len());
        true
    }

    /// The next datagram due at or before `now`, oldest first.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Released> {
        let (due, _) = self.queue.front()?;
        if *due > now {
            return None;
        }
        let (due, data) = self.queue.pop_front()?;
        self.queued_bytes -= data.len();
        let late_by = now.saturating_duration_since(due);
        self.stats.released += 1;
        self.stats.max_late = self.stats.max_late.max(late_by);
        self.stats.total_late += late_by;
        Some(Released { data, late_by })
    }

    /// When the oldest held datagram is due; `None` when nothing is held.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.queue.front().map(|(due, _)| *due)
    }

    /// Datagrams held now.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Counters so far.
    pub fn stats(&self) -> DelayLineStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_millis(25);

    fn line(max_datagrams: usize, max_bytes: usize) -> DelayLine {
        DelayLine::new(
            DELAY,
            DelayLineLimits {
                max_datagrams,
                max_bytes,
            },
        )
    }

    #[test]
    fn holds_each_datagram_for_the_delay_and_keeps_the_order() {
        let t0 = Instant::now();
        let mut l = line(100, 1 << 20);
        // Arrivals 0, 1, 2, ..., 9 ms apart by 1 ms.
        for i in 0..10u8 {
            assert!(l.handle_datagram(t0 + Duration::from_millis(u64::from(i)), vec![i]));
        }
        assert_eq!(l.poll_timeout(), Some(t0 + DELAY));
        // Nothing is due one nanosecond before the first due time.
        assert_eq!(l.poll_transmit(t0 + DELAY - Duration::from_nanos(1)), None);
        // At 25 ms exactly the first is due, in time.
        let first = l.poll_transmit(t0 + DELAY).expect("first due");
        assert_eq!(first.data, vec![0]);
        assert_eq!(first.late_by, Duration::ZERO);
        assert_eq!(l.poll_transmit(t0 + DELAY), None);
        assert_eq!(
            l.poll_timeout(),
            Some(t0 + DELAY + Duration::from_millis(1))
        );
        // Polled late (at 30 ms): 1..=5 are due, in order, each late by what it waited.
        let now = t0 + Duration::from_millis(30);
        let out: Vec<Released> = std::iter::from_fn(|| l.poll_transmit(now)).collect();
        let data: Vec<u8> = out.iter().map(|r| r.data[0]).collect();
        assert_eq!(data, vec![1, 2, 3, 4, 5]);
        assert_eq!(out[0].late_by, Duration::from_millis(4));
        assert_eq!(out[4].late_by, Duration::ZERO);
        // The rest come out in order once everything is due.
        let end = t0 + Duration::from_secs(1);
        let rest: Vec<u8> = std::iter::from_fn(|| l.poll_transmit(end))
            .map(|r| r.data[0])
            .collect();
        assert_eq!(rest, vec![6, 7, 8, 9]);
        assert!(l.is_empty());
        assert_eq!(l.poll_timeout(), None);
        let s = l.stats();
        assert_eq!((s.accepted, s.released, s.dropped_full), (10, 10, 0));
        assert_eq!(s.max_queued, 10);
        assert_eq!(s.max_late, Duration::from_millis(969), "6 was due at 31 ms");
    }

    #[test]
    fn an_earlier_clock_reading_never_reorders() {
        let t0 = Instant::now();
        let mut l = line(100, 1 << 20);
        assert!(l.handle_datagram(t0 + Duration::from_millis(5), vec![1]));
        // A racing thread's older reading: held as if it arrived with the previous one.
        assert!(l.handle_datagram(t0, vec![2]));
        assert_eq!(l.poll_transmit(t0 + DELAY), None);
        let due = t0 + Duration::from_millis(5) + DELAY;
        assert_eq!(l.poll_transmit(due).map(|r| r.data), Some(vec![1]));
        assert_eq!(l.poll_transmit(due).map(|r| r.data), Some(vec![2]));
    }

    #[test]
    fn a_full_queue_drops_the_newcomer_by_count_and_by_bytes() {
        let t0 = Instant::now();
        let mut by_count = line(3, 1 << 20);
        for i in 0..5u8 {
            by_count.handle_datagram(t0, vec![i; 10]);
        }
        assert_eq!(by_count.len(), 3);
        assert_eq!(by_count.stats().dropped_full, 2);
        let kept: Vec<u8> = std::iter::from_fn(|| by_count.poll_transmit(t0 + DELAY))
            .map(|r| r.data[0])
            .collect();
        assert_eq!(kept, vec![0, 1, 2], "tail drop keeps the oldest");

        let mut by_bytes = line(100, 25);
        assert!(by_bytes.handle_datagram(t0, vec![0; 10]));
        assert!(by_bytes.handle_datagram(t0, vec![0; 10]));
        assert!(!by_bytes.handle_datagram(t0, vec![0; 10]), "30 > 25 bytes");
        assert!(
            by_bytes.handle_datagram(t0, vec![0; 5]),
            "25 bytes fit exactly"
        );
        // Space comes back as datagrams leave.
        assert!(by_bytes.poll_transmit(t0 + DELAY).is_some());
        assert!(by_bytes.handle_datagram(t0 + DELAY, vec![0; 10]));
        assert_eq!(by_bytes.stats().dropped_full, 1);
    }

    #[test]
    fn zero_delay_releases_at_once() {
        let t0 = Instant::now();
        let mut l = DelayLine::new(Duration::ZERO, DelayLineLimits::default());
        assert!(l.handle_datagram(t0, vec![7]));
        assert_eq!(l.poll_timeout(), Some(t0));
        assert_eq!(l.poll_transmit(t0).map(|r| r.data), Some(vec![7]));
    }
}
