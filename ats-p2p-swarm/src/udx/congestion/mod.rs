//! Congestion control and pacing for UDX streams, sans-io (time is passed in).
//!
//! The stream talks to one [`Controller`]: it reports each packet sent
//! ([`Controller::on_packet_sent`], whose [`PacketRateState`] the packet keeps), each packet
//! delivered ([`Controller::on_packet_delivered`]), the end of each acknowledgement
//! ([`Controller::on_ack`]), losses ([`Controller::on_loss`]) and retransmission timeouts
//! ([`Controller::on_rto`]), and asks for the congestion window ([`Controller::window`]) and the
//! pacing rate ([`Controller::pacing_rate`]) that its [`Pacer`] spreads packets at.
//!
//! Two algorithms, picked per stream with [`StreamConfig::congestion`](crate::udx::StreamConfig):
//! - [`CongestionControl::Bbr`] (default), BBRv1 ([`bbr`]): models the path as a bottleneck
//!   rate (windowed max of [`delivery_rate`] samples over 10 round trips) and a propagation
//!   delay (min RTT over 10 s), paces at `gain × bottleneck rate` and caps in-flight data at
//!   `gain × rate × min RTT`. Random loss does not shrink it, so a lossy long path stays full;
//!   libudx (`udx-native`) uses BBR too.
//! - [`CongestionControl::NewReno`] ([`new_reno`]): the loss-driven window UDX used before.
//!
//! Both share the delivery-rate estimator (NewReno ignores its samples) and the pacer, whose
//! burst quantum keeps a 1 ms driver timer from capping loopback throughput.

mod bbr;
mod delivery_rate;
mod new_reno;
mod pacer;
mod windowed_filter;

use std::time::{Duration, Instant};

use self::bbr::Bbr;
pub(crate) use self::delivery_rate::PacketRateState;
use self::delivery_rate::{DeliveryRateEstimator, RateSample};
use self::new_reno::NewReno;
pub(crate) use self::pacer::Pacer;

/// Initial congestion window in packets (libudx: 10).
const INITIAL_CWND_PACKETS: u64 = 10;
/// Minimum congestion window in packets (libudx BBR: 4).
const MIN_CWND_PACKETS: u64 = 4;
/// Cap on cwnd: far above any loopback BDP, keeps the arithmetic bounded.
const MAX_CWND_BYTES: u64 = 256 * 1024 * 1024;
/// Pacing rate before any RTT sample, bytes/s (libudx `UDX_INIT_PACING_RATE`: 25000 B/ms).
const INITIAL_PACING_RATE: u64 = 25_000_000;

/// Which congestion controller a stream uses (sender-side only: either interoperates with any
/// peer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CongestionControl {
    /// BBRv1: paces at the measured bottleneck rate; tolerant of random loss.
    #[default]
    Bbr,
    /// The loss-driven NewReno-style window (×0.7 per loss episode).
    NewReno,
}

/// What one incoming acknowledgement did, after its packets were reported with
/// [`Controller::on_packet_delivered`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct AckEvent {
    pub(crate) now: Instant,
    /// The peer's cumulative ack (the first sequence it has not received).
    pub(crate) cumulative_ack: u32,
    /// Bytes in flight before this acknowledgement.
    pub(crate) prior_in_flight: u64,
    /// Bytes in flight after it.
    pub(crate) in_flight: u64,
    /// The sender was using its window (NewReno grows only then).
    pub(crate) cwnd_limited: bool,
    /// RTT measured through a never-retransmitted packet of this ack.
    pub(crate) rtt_sample: Option<Duration>,
    /// The smallest recent RTT (rejects delivery-rate intervals shorter than it).
    pub(crate) min_rtt: Option<Duration>,
}

#[derive(Clone, Debug)]
enum Algorithm {
    Bbr(Box<Bbr>),
    NewReno(NewReno),
}

/// A stream's congestion controller: the chosen algorithm plus the delivery-rate estimator.
#[derive(Clone, Debug)]
pub(crate) struct Controller {
    rate: DeliveryRateEstimator,
    algorithm: Algorithm,
}

impl Controller {
    pub(crate) fn new(kind: CongestionControl, mss: u64, now: Instant) -> Self {
        let algorithm = match kind {
            CongestionControl::Bbr => Algorithm::Bbr(Box::new(Bbr::new(mss, now))),
            CongestionControl::NewReno => Algorithm::NewReno(NewReno::new(mss)),
        };
        Self {
            rate: DeliveryRateEstimator::new(now),
            algorithm,
        }
    }

    /// The congestion window in bytes.
    pub(crate) fn window(&self) -> u64 {
        match &self.algorithm {
            Algorithm::Bbr(b) => b.window(),
            Algorithm::NewReno(r) => r.window(),
        }
    }

    /// Updates the segment size (after an MTU probe succeeds).
    pub(crate) fn set_mss(&mut self, mss: u64) {
        match &mut self.algorithm {
            Algorithm::Bbr(b) => b.set_mss(mss),
            Algorithm::NewReno(r) => r.set_mss(mss),
        }
    }

    /// Pacing rate in bytes per second.
    pub(crate) fn pacing_rate(&self, srtt: Option<Duration>) -> u64 {
        match &self.algorithm {
            Algorithm::Bbr(b) => b.pacing_rate(srtt),
            Algorithm::NewReno(r) => r.pacing_rate(srtt),
        }
    }

    /// A short name of the algorithm's state, for stats and debugging.
    pub(crate) fn state_name(&self) -> &'static str {
        match &self.algorithm {
            Algorithm::Bbr(b) => b.mode_name(),
            Algorithm::NewReno(r) if r.in_slow_start() => "slow-start",
            Algorithm::NewReno(_) => "avoidance",
        }
    }

    /// BBR is still in startup, overfilling queues on purpose: a lost packet then says
    /// nothing about the path MTU, so MTU probes wait.
    pub(crate) fn in_startup(&self) -> bool {
        match &self.algorithm {
            Algorithm::Bbr(b) => b.in_startup(),
            Algorithm::NewReno(_) => false,
        }
    }

    /// The bottleneck bandwidth estimate, bytes/s (BBR only).
    pub(crate) fn bandwidth(&self) -> Option<u64> {
        match &self.algorithm {
            Algorithm::Bbr(b) => b.bandwidth(),
            Algorithm::NewReno(_) => None,
        }
    }

    /// A packet (new or retransmitted) goes out at `now` with `bytes_in_flight` already in
    /// flight; the packet keeps the returned state until it is delivered.
    pub(crate) fn on_packet_sent(&mut self, now: Instant, bytes_in_flight: u64) -> PacketRateState {
        let state = self.rate.on_packet_sent(now, bytes_in_flight);
        if let Algorithm::Bbr(b) = &mut self.algorithm {
            b.on_packet_sent(bytes_in_flight, state.is_app_limited());
        }
        state
    }

    /// The sender could send but has no data: the application, not the path, sets the pace.
    pub(crate) fn on_app_limited(&mut self, bytes_in_flight: u64) {
        if bytes_in_flight < self.window() {
            self.rate.on_app_limited(bytes_in_flight);
        }
    }

    /// A packet with `state` and `bytes` on the wire was delivered for the first time.
    pub(crate) fn on_packet_delivered(
        &mut self,
        now: Instant,
        state: &PacketRateState,
        bytes: u64,
    ) {
        self.rate.on_packet_delivered(now, state, bytes);
    }

    /// Ends one acknowledgement: takes the delivery-rate sample and updates the algorithm.
    pub(crate) fn on_ack(&mut self, ack: &AckEvent) {
        let sample: RateSample = self.rate.take_sample(ack.min_rtt);
        match &mut self.algorithm {
            Algorithm::Bbr(b) => b.on_ack(ack, &sample, self.rate.delivered()),
            Algorithm::NewReno(r) => {
                r.on_ack(sample.newly_delivered, ack.cumulative_ack, ack.cwnd_limited);
            }
        }
    }

    /// Packet `seq` was declared lost; `next_seq` is the next unsent sequence. True when this
    /// started a new loss episode.
    pub(crate) fn on_loss(&mut self, seq: u32, next_seq: u32) -> bool {
        match &mut self.algorithm {
            Algorithm::Bbr(b) => b.on_loss(seq, next_seq),
            Algorithm::NewReno(r) => r.on_loss(seq, next_seq),
        }
    }

    /// The retransmission timer expired; `next_seq` is the next unsent sequence.
    pub(crate) fn on_rto(&mut self, next_seq: u32) {
        match &mut self.algorithm {
            Algorithm::Bbr(b) => b.on_rto(next_seq),
            Algorithm::NewReno(r) => r.on_rto(next_seq),
        }
    }
}
