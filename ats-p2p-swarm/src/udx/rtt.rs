//! RFC 6298 round-trip estimation, in libudx's flavour (1 s minimum RTO, 30 s maximum).

use std::time::Duration;

/// RTO before the first RTT sample (libudx: 1000 ms).
pub(crate) const INITIAL_RTO: Duration = Duration::from_millis(1000);
/// Upper bound of the RTO (`UDX_RTO_MAX_MS`).
pub(crate) const MAX_RTO: Duration = Duration::from_millis(30_000);
/// Samples above this are clamped (libudx `clamp_rtt`): a stalled peer must not inflate srtt.
const RTT_CLAMP: Duration = Duration::from_secs(5);
/// Window over which the minimum RTT is remembered (BBR's min-RTT window, 10 s).
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);

/// Smoothed RTT, variance, minimum and the derived RTO.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    min_rtt: Option<(Duration, std::time::Instant)>,
    min_rto: Duration,
}

impl RttEstimator {
    pub(crate) fn new(min_rto: Duration) -> Self {
        Self {
            srtt: None,
            rttvar: Duration::ZERO,
            min_rtt: None,
            min_rto,
        }
    }

    /// Feeds one sample taken at `now`.
    pub(crate) fn on_sample(&mut self, sample: Duration, now: std::time::Instant) {
        let r = match self.srtt {
            Some(s) if sample > RTT_CLAMP && sample > s + self.rttvar * 5 => s + self.rttvar * 5,
            _ => sample,
        };
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(s) => {
                let diff = s.abs_diff(r);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((s * 7 + r) / 8);
            }
        }
        let replace = match self.min_rtt {
            None => true,
            Some((m, at)) => r <= m || now.saturating_duration_since(at) > MIN_RTT_WINDOW,
        };
        if replace {
            self.min_rtt = Some((r, now));
        }
    }

    /// Smoothed RTT, if any sample was taken.
    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Smallest recent sample.
    pub(crate) fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt.map(|(m, _)| m)
    }

    /// Current retransmission timeout.
    pub(crate) fn rto(&self) -> Duration {
        match self.srtt {
            None => INITIAL_RTO.max(self.min_rto),
            Some(s) => (s + self.rttvar * 4).clamp(self.min_rto, MAX_RTO),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6298_updates() {
        let now = std::time::Instant::now();
        let mut r = RttEstimator::new(Duration::from_millis(1000));
        assert_eq!(r.rto(), Duration::from_millis(1000));
        r.on_sample(Duration::from_millis(100), now);
        assert_eq!(r.srtt(), Some(Duration::from_millis(100)));
        assert_eq!(r.rto(), Duration::from_millis(1000));
        r.on_sample(Duration::from_millis(200), now);
        // rttvar = (3*50 + 100)/4 = 62.5, srtt = (700 + 200)/8 = 112.5
        assert_eq!(r.srtt(), Some(Duration::from_micros(112_500)));
        let mut fast = RttEstimator::new(Duration::from_millis(10));
        fast.on_sample(Duration::from_millis(10), now);
        assert_eq!(fast.rto(), Duration::from_millis(30));
        assert_eq!(fast.min_rtt(), Some(Duration::from_millis(10)));
    }
}
