//! Delivery-rate estimation (draft-cheng-iccrg-delivery-rate-estimation): each packet remembers,
//! when sent, how much had been delivered and when; when it is acknowledged, the bytes delivered
//! since then over the time they took is one sample of the path's delivery rate. Samples taken
//! while the sender had nothing to send are marked application-limited: they say how fast the
//! application was, not the path.

use std::time::{Duration, Instant};

/// What a packet records about the connection when it is (re)sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PacketRateState {
    /// Bytes delivered when the packet was sent.
    delivered: u64,
    /// When `delivered` last changed, as of the send.
    delivered_time: Instant,
    /// Send time of the packet that opened the current send interval.
    first_sent_time: Instant,
    /// When this packet was sent.
    sent_time: Instant,
    /// The sender was application-limited when this packet was sent.
    is_app_limited: bool,
}

impl PacketRateState {
    /// The sender was application-limited when the packet was sent.
    pub(crate) fn is_app_limited(&self) -> bool {
        self.is_app_limited
    }
}

/// One delivery-rate sample, taken per incoming acknowledgement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RateSample {
    /// Bytes per second; `None` when nothing was delivered or the interval is not trustworthy
    /// (shorter than the minimum RTT: acks compressed together).
    pub(crate) delivery_rate: Option<u64>,
    /// The sample's packet was sent while application-limited.
    pub(crate) is_app_limited: bool,
    /// Total bytes delivered when the sample's packet was sent (BBR counts rounds with it).
    pub(crate) prior_delivered: u64,
    /// Bytes newly delivered by this acknowledgement.
    pub(crate) newly_delivered: u64,
}

/// The packet of the current acknowledgement that the sample is taken over.
#[derive(Clone, Copy, Debug)]
struct SampleBasis {
    prior_delivered: u64,
    send_elapsed: Duration,
    ack_elapsed: Duration,
    sent_time: Instant,
    is_app_limited: bool,
}

/// The connection-wide counters of the estimator.
#[derive(Clone, Debug)]
pub(crate) struct DeliveryRateEstimator {
    /// Bytes delivered so far.
    delivered: u64,
    /// When `delivered` last changed.
    delivered_time: Instant,
    /// Send time of the most recently delivered packet (or of the first packet after idle).
    first_sent_time: Instant,
    /// While non-zero: the sender is application-limited until `delivered` passes it.
    app_limited_until: u64,
    /// Bytes newly delivered by the acknowledgement being processed.
    newly_delivered: u64,
    basis: Option<SampleBasis>,
}

impl DeliveryRateEstimator {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            delivered: 0,
            delivered_time: now,
            first_sent_time: now,
            app_limited_until: 0,
            newly_delivered: 0,
            basis: None,
        }
    }

    /// Bytes delivered so far.
    pub(crate) fn delivered(&self) -> u64 {
        self.delivered
    }

    /// A packet is being sent at `now` with `bytes_in_flight` already in flight; the result goes
    /// into the packet's record.
    pub(crate) fn on_packet_sent(&mut self, now: Instant, bytes_in_flight: u64) -> PacketRateState {
        if bytes_in_flight == 0 {
            // Restarting from idle: the send interval starts now, not at the last delivery.
            self.first_sent_time = now;
            self.delivered_time = now;
        }
        PacketRateState {
            delivered: self.delivered,
            delivered_time: self.delivered_time,
            first_sent_time: self.first_sent_time,
            sent_time: now,
            is_app_limited: self.app_limited_until != 0,
        }
    }

    /// The sender has nothing to send and `bytes_in_flight` in flight: samples until that
    /// much more is delivered measure the application, not the path.
    pub(crate) fn on_app_limited(&mut self, bytes_in_flight: u64) {
        self.app_limited_until = (self.delivered + bytes_in_flight).max(1);
    }

    /// A packet sent with `state` and `bytes` on the wire was delivered (cumulatively or
    /// selectively acknowledged) at `now`, for the first time.
    pub(crate) fn on_packet_delivered(
        &mut self,
        now: Instant,
        state: &PacketRateState,
        bytes: u64,
    ) {
        self.delivered += bytes;
        self.delivered_time = now;
        self.newly_delivered += bytes;
        let newer = self.basis.is_none_or(|b| state.sent_time >= b.sent_time);
        if newer {
            self.basis = Some(SampleBasis {
                prior_delivered: state.delivered,
                send_elapsed: state
                    .sent_time
                    .saturating_duration_since(state.first_sent_time),
                ack_elapsed: now.saturating_duration_since(state.delivered_time),
                sent_time: state.sent_time,
                is_app_limited: state.is_app_limited,
            });
            self.first_sent_time = state.sent_time;
        }
    }

    /// Ends the acknowledgement: the sample over the newest delivered packet. `min_rtt`
    /// rejects intervals too short to be a real rate (acks compressed together).
    pub(crate) fn take_sample(&mut self, min_rtt: Option<Duration>) -> RateSample {
        if self.app_limited_until != 0 && self.delivered > self.app_limited_until {
            self.app_limited_until = 0;
        }
        let newly_delivered = std::mem::take(&mut self.newly_delivered);
        let Some(b) = self.basis.take() else {
            return RateSample {
                newly_delivered,
                ..RateSample::default()
            };
        };
        let interval = b.send_elapsed.max(b.ack_elapsed);
        let bytes = self.delivered - b.prior_delivered;
        let trustworthy = !interval.is_zero() && min_rtt.is_none_or(|m| interval >= m);
        let delivery_rate = trustworthy.then(|| {
            let rate = u128::from(bytes) * 1_000_000_000 / interval.as_nanos().max(1);
            u64::try_from(rate).unwrap_or(u64::MAX)
        });
        RateSample {
            delivery_rate,
            is_app_limited: b.is_app_limited,
            prior_delivered: b.prior_delivered,
            newly_delivered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A sender that puts `per_ms` bytes on a path with a 10 ms RTT every millisecond, and the
    /// acks that come back 10 ms later: the estimate is the sending rate.
    #[test]
    fn steady_flow_measures_its_rate() {
        let t0 = Instant::now();
        let mut e = DeliveryRateEstimator::new(t0);
        let per_ms = 1000u64;
        let mut sent: std::collections::VecDeque<(Instant, PacketRateState)> = Default::default();
        let mut inflight = 0;
        let mut last = None;
        for ms in 0..100u32 {
            let now = t0 + MS * ms;
            while sent.front().is_some_and(|(at, _)| *at + MS * 10 <= now) {
                let Some((_, st)) = sent.pop_front() else {
                    break;
                };
                e.on_packet_delivered(now, &st, per_ms);
                inflight -= per_ms;
            }
            let s = e.take_sample(Some(MS * 10));
            if s.newly_delivered > 0 {
                last = Some(s);
            }
            sent.push_back((now, e.on_packet_sent(now, inflight)));
            inflight += per_ms;
        }
        let s = last.unwrap_or_default();
        assert_eq!(s.newly_delivered, per_ms);
        assert!(!s.is_app_limited);
        let rate = s.delivery_rate.unwrap_or(0);
        assert!((990_000..=1_010_000).contains(&rate), "rate {rate} B/s");
        assert_eq!(e.delivered(), 90 * per_ms);
    }

    #[test]
    fn compressed_acks_and_app_limited_samples_are_flagged() {
        let t0 = Instant::now();
        let mut e = DeliveryRateEstimator::new(t0);
        let a = e.on_packet_sent(t0, 0);
        let b = e.on_packet_sent(t0, 1000);
        // Both acked 1 ms later in one ack: interval 1 ms, below a 10 ms min RTT → no rate.
        e.on_packet_delivered(t0 + MS, &a, 1000);
        e.on_packet_delivered(t0 + MS, &b, 1000);
        let s = e.take_sample(Some(MS * 10));
        assert_eq!(s.newly_delivered, 2000);
        assert_eq!(s.delivery_rate, None);
        // Without a min RTT the same sample is 2000 B / 1 ms.
        let c = e.on_packet_sent(t0 + MS, 0);
        e.on_app_limited(1000);
        let d = e.on_packet_sent(t0 + MS, 1000);
        e.on_packet_delivered(t0 + MS * 2, &c, 1000);
        let s = e.take_sample(None);
        assert_eq!(s.delivery_rate, Some(1_000_000));
        assert!(!s.is_app_limited, "c was sent before the app ran dry");
        assert_eq!(s.prior_delivered, 2000);
        e.on_packet_delivered(t0 + MS * 3, &d, 1000);
        let s = e.take_sample(None);
        assert!(s.is_app_limited, "d was sent while app-limited");
        // Delivered (4000) passed the mark (2000 + 1000): later packets are not app-limited.
        let f = e.on_packet_sent(t0 + MS * 3, 0);
        e.on_packet_delivered(t0 + MS * 4, &f, 1000);
        assert!(!e.take_sample(None).is_app_limited);
    }
}
