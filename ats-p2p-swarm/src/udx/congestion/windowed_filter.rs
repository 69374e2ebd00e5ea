//! A windowed max filter (Kathleen Nichols' algorithm, as BBR uses for its bottleneck
//! bandwidth and its ack-aggregation allowance): the largest value seen over the last `window`
//! time units, kept in O(1) memory with three estimates (best, second best, third best), each
//! younger than the one before. (BBR's min RTT needs no such filter: one value and its time.)
//!
//! Time is whatever monotonic counter the caller uses: BBR passes its round-trip count.

/// One remembered sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Estimate {
    value: u64,
    time: u64,
}

/// The largest value over a sliding window of `window` time units.
#[derive(Clone, Debug)]
pub(crate) struct WindowedMaxFilter {
    window: u64,
    /// Best, second and third best; `None` before the first sample.
    estimates: Option<[Estimate; 3]>,
}

impl WindowedMaxFilter {
    pub(crate) fn new(window: u64) -> Self {
        Self {
            window,
            estimates: None,
        }
    }

    /// The best value in the window, if any sample was taken.
    pub(crate) fn get(&self) -> Option<u64> {
        self.estimates.map(|e| e[0].value)
    }

    /// Feeds `value` observed at `time` (non-decreasing across calls).
    pub(crate) fn update(&mut self, value: u64, time: u64) {
        let new = Estimate { value, time };
        let Some(mut e) = self.estimates else {
            self.estimates = Some([new; 3]);
            return;
        };
        // A new best, or nothing in the window is recent enough: start over.
        if value >= e[0].value || time.saturating_sub(e[2].time) > self.window {
            self.estimates = Some([new; 3]);
            return;
        }
        if value >= e[1].value {
            e[1] = new;
            e[2] = new;
        } else if value >= e[2].value {
            e[2] = new;
        }
        // Age out the best when it leaves the window; keep the sub-estimates spread over it.
        let age = time.saturating_sub(e[0].time);
        if age > self.window {
            e[0] = e[1];
            e[1] = e[2];
            e[2] = new;
            if time.saturating_sub(e[0].time) > self.window {
                e[0] = e[1];
                e[1] = e[2];
            }
        } else if e[1] == e[0] && age > self.window / 4 {
            e[1] = new;
            e[2] = new;
        } else if e[2] == e[1] && age > self.window / 2 {
            e[2] = new;
        }
        self.estimates = Some(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_keeps_the_best_until_it_ages_out() {
        let mut f = WindowedMaxFilter::new(10);
        assert_eq!(f.get(), None);
        f.update(100, 0);
        f.update(50, 1);
        f.update(70, 5);
        assert_eq!(f.get(), Some(100));
        f.update(60, 10);
        assert_eq!(f.get(), Some(100), "still inside the window");
        f.update(40, 11);
        assert!(f.get() < Some(100), "100 aged out: {:?}", f.get());
        assert!(
            f.get() >= Some(60),
            "a recent sub-estimate took over: {:?}",
            f.get()
        );
        f.update(500, 12);
        assert_eq!(f.get(), Some(500));
        f.update(1, 40);
        assert_eq!(
            f.get(),
            Some(1),
            "everything expired: the new sample is the best"
        );
    }

    #[test]
    fn a_decreasing_series_follows_the_window() {
        // Bandwidth falling by one per round: the max must lag by at most the window.
        let mut f = WindowedMaxFilter::new(10);
        for t in 0..100u64 {
            f.update(1000 - t, t);
            let best = f.get().unwrap_or(0);
            assert!(best >= 1000 - t, "best {best} at {t}");
            assert!(
                best <= 1000 - t.saturating_sub(10),
                "best {best} at {t} is stale"
            );
        }
    }
}
