//! The progress rule both drivers enforce while file bytes still have to move: in every window
//! of [`ProgressRule::window`], at least [`ProgressRule::min_bytes`] (or all that is left, if
//! less) must move, or the transfer fails as stalled ([`FailureKind::TimedOut`], code
//! `stalled`).
//!
//! - The **sender** counts bytes the stream took (its writes complete only when the transport
//!   has room, so a receiver that stops reading or advertises a zero window stops them).
//! - The **receiver** counts bytes read from the stream, so a sender trickling a byte now and
//!   then (which resets any idle timer) cannot hold a receive job, its save-directory space and
//!   its lease renewals for ever.
//!
//! A deadline per window was chosen over an average-rate floor: it never fails a transfer that
//! keeps moving at the floor rate (`min_bytes` per `window`, 64 KiB per 30 s by default, about
//! 2 KiB/s), however long the file, and it ends a stalled one within one window, wherever in
//! the file the stall starts. Before the first byte and after the last one the wire state
//! machines' own deadlines apply (the receiver's idle timeout, the sender's ACK timeout).
//!
//! [`FailureKind::TimedOut`]: crate::events::FailureKind::TimedOut

use std::time::{Duration, Instant};

/// Default window of the progress rule.
pub const DEFAULT_PROGRESS_WINDOW: Duration = Duration::from_secs(30);

/// Default bytes that must move per window.
pub const DEFAULT_MIN_PROGRESS_BYTES: u64 = 64 * 1024;

/// How much a transfer must move, and how often (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressRule {
    /// Length of one window.
    pub window: Duration,
    /// Bytes that must move within each window (or the rest of the file, if less).
    pub min_bytes: u64,
}

impl Default for ProgressRule {
    fn default() -> Self {
        Self {
            window: DEFAULT_PROGRESS_WINDOW,
            min_bytes: DEFAULT_MIN_PROGRESS_BYTES,
        }
    }
}

/// The rule applied to one transfer: a pure state machine fed with byte counts and the time.
#[derive(Debug, Clone)]
pub(crate) struct ProgressWatch {
    rule: ProgressRule,
    /// Bytes still to move in all.
    left: u64,
    /// Bytes moved in the current window.
    in_window: u64,
    /// When the current window ends.
    deadline: Instant,
}

/// The rule was broken: this little moved in the last window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stall {
    /// Bytes moved in the window.
    pub(crate) moved: u64,
}

impl ProgressWatch {
    /// Starts the first window at `now` for a transfer of `total` bytes.
    pub(crate) fn new(rule: ProgressRule, total: u64, now: Instant) -> Self {
        Self {
            rule,
            left: total,
            in_window: 0,
            deadline: now + rule.window,
        }
    }

    /// `n` more bytes moved at `now`; a window that reached its quota starts the next one.
    pub(crate) fn moved(&mut self, n: u64, now: Instant) {
        self.left = self.left.saturating_sub(n);
        self.in_window = self.in_window.saturating_add(n);
        if self.left == 0 || self.in_window >= self.rule.min_bytes {
            self.in_window = 0;
            self.deadline = now + self.rule.window;
        }
    }

    /// When [`Self::check`] must be called next; `None` once every byte moved.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        (self.left > 0).then_some(self.deadline)
    }

    /// Checks the window at `now`.
    pub(crate) fn check(&self, now: Instant) -> Result<(), Stall> {
        match self.poll_timeout() {
            Some(deadline) if now >= deadline => Err(Stall {
                moved: self.in_window,
            }),
            _ => Ok(()),
        }
    }

    /// The rule being applied.
    pub(crate) fn rule(&self) -> ProgressRule {
        self.rule
    }
}

/// The earlier of two optional deadlines.
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: ProgressRule = ProgressRule {
        window: Duration::from_secs(10),
        min_bytes: 100,
    };

    #[test]
    fn a_trickle_fails_at_the_end_of_the_window() {
        let t0 = Instant::now();
        let mut w = ProgressWatch::new(RULE, 1000, t0);
        for s in 1..10 {
            w.moved(1, t0 + Duration::from_secs(s));
            assert_eq!(w.check(t0 + Duration::from_secs(s)), Ok(()));
        }
        assert_eq!(
            w.check(t0 + Duration::from_secs(10)),
            Err(Stall { moved: 9 })
        );
    }

    #[test]
    fn the_quota_starts_a_new_window() {
        let t0 = Instant::now();
        let mut w = ProgressWatch::new(RULE, 1000, t0);
        w.moved(100, t0 + Duration::from_secs(9));
        assert_eq!(w.check(t0 + Duration::from_secs(18)), Ok(()));
        assert_eq!(w.poll_timeout(), Some(t0 + Duration::from_secs(19)));
        assert!(w.check(t0 + Duration::from_secs(19)).is_err());
    }

    #[test]
    fn nothing_left_means_no_deadline() {
        let t0 = Instant::now();
        let mut w = ProgressWatch::new(RULE, 30, t0);
        w.moved(30, t0);
        assert_eq!(w.poll_timeout(), None);
        assert_eq!(w.check(t0 + Duration::from_secs(3600)), Ok(()));
        assert_eq!(ProgressWatch::new(RULE, 0, t0).poll_timeout(), None);
    }

    #[test]
    fn earliest_deadline() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(earliest(Some(t1), Some(t0)), Some(t0));
        assert_eq!(earliest(None, Some(t0)), Some(t0));
        assert_eq!(earliest(Some(t1), None), Some(t1));
        assert_eq!(earliest(None, None), None);
    }
}
