//! BBR (version 1, after draft-cheng-iccrg-bbr-congestion-control and Linux `tcp_bbr.c`, plus
//! the later drafts' ack-aggregation allowance), as a pure state machine.
//!
//! The model: `btlbw`, the windowed max of delivery-rate samples over the last 10 round trips,
//! and `min_rtt`, the smallest RTT of the last 10 s. From them `bdp = btlbw × min_rtt`. BBR paces
//! at `pacing_gain × btlbw` and allows `cwnd_gain × bdp` (+ a burst allowance) in flight:
//! - **Startup**: both gains 2/ln 2 ≈ 2.89, so the sending rate (and the estimate) roughly triples
//!   per round, until three rounds fail to raise `btlbw` by 25 % (the pipe is full).
//! - **Drain**: pacing gain 1/2.89 until in-flight falls to one `bdp` (the startup queue is gone).
//! - **ProbeBw**: pacing gain cycles 1.25, 0.75, 1, 1, 1, 1, 1, 1 (one phase per `min_rtt`):
//!   probe for more bandwidth, drain what the probe queued, cruise. `cwnd_gain` is 2.
//! - **ProbeRtt**: when `min_rtt` was not refreshed for 10 s, in-flight drops to 4 packets for
//!   200 ms and a round trip, so queues drain and the true propagation delay is seen again.
//!
//! Loss does not change the model (BBRv1), so 1 % random loss costs 1 % of throughput rather
//! than collapsing the window as a loss-driven controller does. Unlike Linux and libudx there is
//! no packet conservation on entering fast recovery either: with ~9 random losses per round
//! trip on a 200 Mbit/s, 50 ms path a stream would be in recovery all the time. A
//! retransmission timeout drops the window to the minimum and restores it once everything
//! outstanding at that time is acknowledged (Linux's `prior_cwnd`).

use std::time::{Duration, Instant};

use super::delivery_rate::RateSample;
use super::pacer::PACING_QUANTUM;
use super::windowed_filter::WindowedMaxFilter;
use super::{
    AckEvent, INITIAL_CWND_PACKETS, INITIAL_PACING_RATE, MAX_CWND_BYTES, MIN_CWND_PACKETS,
};
use crate::udx::packet::seq_diff;

/// Startup gain, 2/ln 2: the smallest that doubles the delivery rate each round.
const HIGH_GAIN: f64 = 2.885;
/// Drain pacing gain: undoes one round of startup's queue.
const DRAIN_GAIN: f64 = 1.0 / HIGH_GAIN;
/// In-flight cap in ProbeBw, in BDPs: room for delayed and stretched acks.
const CWND_GAIN: f64 = 2.0;
/// ProbeBw pacing gains, one phase per min RTT.
const PACING_GAIN_CYCLE: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
/// Pace this fraction below the estimate so a queue drains rather than grows (Linux: 1 %).
const PACING_MARGIN: f64 = 0.99;
/// Rounds over which the bottleneck bandwidth max is kept.
const BTLBW_WINDOW_ROUNDS: u64 = 10;
/// How long a min RTT stays valid before ProbeRtt re-measures it.
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// How long ProbeRtt holds in-flight at the minimum.
const PROBE_RTT_DURATION: Duration = Duration::from_millis(200);
/// Startup ends after this many rounds without `FULL_BW_GROWTH` bandwidth growth.
const FULL_BW_ROUNDS: u32 = 3;
/// Growth per round that counts as "still growing" in startup.
const FULL_BW_GROWTH: f64 = 1.25;
/// Rounds over which the ack-aggregation excess is kept (Linux: 5).
const EXTRA_ACKED_WINDOW_ROUNDS: u64 = 5;
/// Cap on the ack-aggregation allowance, in time at the bottleneck rate (Linux: 100 ms).
const EXTRA_ACKED_MAX: Duration = Duration::from_millis(100);
/// Pacer bursts of this many quanta fit in the window on top of the BDP (Linux: 3 TSO bursts
/// of at most 64 KiB; one 2 ms quantum is already more at high rates).
const SEND_QUANTA_BUDGET: u32 = 1;

/// BBR's state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Startup,
    Drain,
    ProbeBw,
    ProbeRtt,
}

/// The BBR controller of one stream.
#[derive(Clone, Debug)]
pub(crate) struct Bbr {
    mode: Mode,
    mss: u64,
    cwnd: u64,
    /// The window before ProbeRtt or an RTO, restored afterwards.
    prior_cwnd: u64,
    pacing_gain: f64,
    cwnd_gain: f64,
    /// Set once a bandwidth sample exists; before that the rate derives from cwnd and srtt.
    pacing_rate: Option<u64>,
    /// Max-filtered delivery rate, bytes/s, over [`BTLBW_WINDOW_ROUNDS`].
    btlbw: WindowedMaxFilter,
    min_rtt: Option<Duration>,
    min_rtt_stamp: Instant,
    /// Round trips counted by delivered bytes: a round ends when a packet sent after the
    /// previous round's end is delivered.
    round_count: u64,
    next_round_delivered: u64,
    round_start: bool,
    /// Startup saw the bandwidth plateau.
    filled_pipe: bool,
    full_bw: u64,
    full_bw_count: u32,
    cycle_index: usize,
    cycle_stamp: Instant,
    /// ProbeRtt: when it may end (set once in-flight reached the minimum).
    probe_rtt_done: Option<Instant>,
    probe_rtt_round_done: bool,
    /// Sending resumed after an application-limited idle period.
    idle_restart: bool,
    /// Ack aggregation: the max excess of delivered over `btlbw × elapsed` per epoch.
    extra_acked: WindowedMaxFilter,
    ack_epoch_start: Option<Instant>,
    ack_epoch_delivered: u64,
    /// A loss was reported since the last ack (ends a ProbeBw probing phase early).
    loss_since_ack: bool,
    /// The loss episode ends when this sequence is cumulatively acked (counts episodes only).
    loss_episode_end: Option<u32>,
    /// After an RTO: restore `prior_cwnd` when this sequence is cumulatively acked.
    rto_recovery_end: Option<u32>,
}

impl Bbr {
    pub(crate) fn new(mss: u64, now: Instant) -> Self {
        let cwnd = INITIAL_CWND_PACKETS * mss;
        Self {
            mode: Mode::Startup,
            mss,
            cwnd,
            prior_cwnd: cwnd,
            pacing_gain: HIGH_GAIN,
            cwnd_gain: HIGH_GAIN,
            pacing_rate: None,
            btlbw: WindowedMaxFilter::new(BTLBW_WINDOW_ROUNDS),
            min_rtt: None,
            min_rtt_stamp: now,
            round_count: 0,
            next_round_delivered: 0,
            round_start: false,
            filled_pipe: false,
            full_bw: 0,
            full_bw_count: 0,
            cycle_index: 0,
            cycle_stamp: now,
            probe_rtt_done: None,
            probe_rtt_round_done: false,
            idle_restart: false,
            extra_acked: WindowedMaxFilter::new(EXTRA_ACKED_WINDOW_ROUNDS),
            ack_epoch_start: None,
            ack_epoch_delivered: 0,
            loss_since_ack: false,
            loss_episode_end: None,
            rto_recovery_end: None,
        }
    }

    pub(crate) fn window(&self) -> u64 {
        self.cwnd
    }

    pub(crate) fn mode_name(&self) -> &'static str {
        match self.mode {
            Mode::Startup => "startup",
            Mode::Drain => "drain",
            Mode::ProbeBw => "probe-bw",
            Mode::ProbeRtt => "probe-rtt",
        }
    }

    /// Still probing for the bottleneck rate with startup's high gain.
    pub(crate) fn in_startup(&self) -> bool {
        self.mode == Mode::Startup
    }

    pub(crate) fn bandwidth(&self) -> Option<u64> {
        self.btlbw.get()
    }

    fn min_cwnd(&self) -> u64 {
        MIN_CWND_PACKETS * self.mss
    }

    pub(crate) fn set_mss(&mut self, mss: u64) {
        self.mss = mss;
        self.cwnd = self.cwnd.max(self.min_cwnd());
    }

    /// Pacing rate, bytes/s. Before the first bandwidth sample: the startup gain over the
    /// initial window per smoothed RTT (or libudx's initial rate without an RTT).
    pub(crate) fn pacing_rate(&self, srtt: Option<Duration>) -> u64 {
        if let Some(rate) = self.pacing_rate {
            return rate.max(1);
        }
        let Some(srtt) = srtt else {
            return INITIAL_PACING_RATE;
        };
        let per_sec = self.cwnd as f64 * HIGH_GAIN / srtt.as_secs_f64().max(1e-6);
        (per_sec as u64).max(1)
    }

    /// `gain × bdp` plus room for the pacer's bursts; the initial window before a model exists.
    fn inflight_target(&self, gain: f64) -> u64 {
        let (Some(bw), Some(min_rtt)) = (self.btlbw.get(), self.min_rtt) else {
            return INITIAL_CWND_PACKETS * self.mss;
        };
        let bdp = bw as f64 * min_rtt.as_secs_f64();
        let quanta = bw as f64 * PACING_QUANTUM.as_secs_f64() * f64::from(SEND_QUANTA_BUDGET);
        let mut target = (gain * bdp + quanta) as u64;
        if self.mode == Mode::ProbeBw && self.cycle_index == 0 {
            target += 2 * self.mss; // let the probing phase actually raise in-flight
        }
        target.max(self.min_cwnd())
    }

    pub(crate) fn on_packet_sent(&mut self, bytes_in_flight: u64, app_limited: bool) {
        if bytes_in_flight == 0 && app_limited {
            // Restarting from idle: resume at the estimated rate, not a probing gain.
            self.idle_restart = true;
            self.ack_epoch_start = None;
            if self.mode == Mode::ProbeBw
                && let Some(bw) = self.btlbw.get()
            {
                self.pacing_rate = Some((bw as f64 * PACING_MARGIN) as u64);
            }
        }
    }

    pub(crate) fn on_loss(&mut self, seq: u32, next_seq: u32) -> bool {
        self.loss_since_ack = true;
        if let Some(end) = self.loss_episode_end
            && seq_diff(seq, end) < 0
        {
            return false;
        }
        self.loss_episode_end = Some(next_seq);
        true
    }

    pub(crate) fn on_rto(&mut self, next_seq: u32) {
        if self.rto_recovery_end.is_none() && self.mode != Mode::ProbeRtt {
            self.prior_cwnd = self.cwnd;
        } else {
            self.prior_cwnd = self.prior_cwnd.max(self.cwnd);
        }
        self.cwnd = self.min_cwnd();
        self.rto_recovery_end = Some(next_seq);
        self.loss_episode_end = Some(next_seq);
        self.ack_epoch_start = None;
    }

    pub(crate) fn on_ack(&mut self, ack: &AckEvent, rs: &RateSample, delivered: u64) {
        if let Some(end) = self.rto_recovery_end
            && seq_diff(ack.cumulative_ack, end) >= 0
        {
            self.rto_recovery_end = None;
            self.cwnd = self.cwnd.max(self.prior_cwnd);
        }
        if let Some(end) = self.loss_episode_end
            && seq_diff(ack.cumulative_ack, end) >= 0
        {
            self.loss_episode_end = None;
        }
        self.update_round(rs, delivered);
        if let Some(rate) = rs.delivery_rate
            && (!rs.is_app_limited || Some(rate) >= self.btlbw.get())
        {
            self.btlbw.update(rate, self.round_count);
        }
        self.update_ack_aggregation(ack.now, rs.newly_delivered);
        self.update_cycle_phase(ack);
        self.check_full_pipe(rs);
        self.check_drain(ack.now, ack.in_flight);
        self.update_min_rtt(ack, delivered);
        self.update_pacing_rate();
        self.update_cwnd(rs.newly_delivered, delivered);
        self.loss_since_ack = false;
        if rs.newly_delivered > 0 {
            self.idle_restart = false;
        }
    }

    fn update_round(&mut self, rs: &RateSample, delivered: u64) {
        self.round_start = false;
        if rs.newly_delivered > 0 && rs.prior_delivered >= self.next_round_delivered {
            self.next_round_delivered = delivered;
            self.round_count += 1;
            self.round_start = true;
        }
    }

    /// Tracks how far deliveries run ahead of `btlbw × elapsed` (acks arriving in bursts) so
    /// the window leaves room to keep sending through the gaps.
    fn update_ack_aggregation(&mut self, now: Instant, newly_delivered: u64) {
        let Some(bw) = self.btlbw.get() else {
            return;
        };
        if newly_delivered == 0 {
            return;
        }
        let start = *self.ack_epoch_start.get_or_insert(now);
        let mut expected = (bw as f64 * now.saturating_duration_since(start).as_secs_f64()) as u64;
        if self.ack_epoch_delivered <= expected {
            // Deliveries are at or behind the model: a new epoch starts here.
            self.ack_epoch_start = Some(now);
            self.ack_epoch_delivered = 0;
            expected = 0;
        }
        self.ack_epoch_delivered += newly_delivered;
        let extra = (self.ack_epoch_delivered - expected).min(self.cwnd);
        self.extra_acked.update(extra, self.round_count);
    }

    fn update_cycle_phase(&mut self, ack: &AckEvent) {
        if self.mode != Mode::ProbeBw {
            return;
        }
        let min_rtt = self.min_rtt.unwrap_or(Duration::ZERO);
        let full_length = ack.now.saturating_duration_since(self.cycle_stamp) > min_rtt;
        let advance = if self.pacing_gain > 1.0 {
            full_length
                && (self.loss_since_ack
                    || ack.prior_in_flight >= self.inflight_target(self.pacing_gain))
        } else if self.pacing_gain < 1.0 {
            full_length || ack.prior_in_flight <= self.inflight_target(1.0)
        } else {
            full_length
        };
        if advance {
            self.cycle_index = (self.cycle_index + 1) % PACING_GAIN_CYCLE.len();
            self.cycle_stamp = ack.now;
            self.pacing_gain = PACING_GAIN_CYCLE[self.cycle_index];
        }
    }

    fn check_full_pipe(&mut self, rs: &RateSample) {
        if self.filled_pipe || !self.round_start || rs.is_app_limited {
            return;
        }
        let bw = self.btlbw.get().unwrap_or(0);
        if bw as f64 >= self.full_bw as f64 * FULL_BW_GROWTH {
            self.full_bw = bw;
            self.full_bw_count = 0;
            return;
        }
        self.full_bw_count += 1;
        if self.full_bw_count >= FULL_BW_ROUNDS {
            self.filled_pipe = true;
        }
    }

    fn check_drain(&mut self, now: Instant, in_flight: u64) {
        if self.mode == Mode::Startup && self.filled_pipe {
            self.mode = Mode::Drain;
            self.pacing_gain = DRAIN_GAIN;
            self.cwnd_gain = HIGH_GAIN;
        }
        if self.mode == Mode::Drain && in_flight <= self.inflight_target(1.0) {
            self.enter_probe_bw(now);
        }
    }

    fn enter_probe_bw(&mut self, now: Instant) {
        self.mode = Mode::ProbeBw;
        self.cwnd_gain = CWND_GAIN;
        // Linux starts at a random phase other than the draining one; a sans-io state machine
        // has no randomness, so start cruising right after it: the probe comes within 6 RTTs.
        self.cycle_index = 2;
        self.cycle_stamp = now;
        self.pacing_gain = PACING_GAIN_CYCLE[self.cycle_index];
    }

    fn update_min_rtt(&mut self, ack: &AckEvent, delivered: u64) {
        let now = ack.now;
        let expired = now.saturating_duration_since(self.min_rtt_stamp) > MIN_RTT_WINDOW;
        if let Some(rtt) = ack.rtt_sample
            && (self.min_rtt.is_none_or(|m| rtt <= m) || expired)
        {
            self.min_rtt = Some(rtt);
            self.min_rtt_stamp = now;
        }
        if expired && !self.idle_restart && self.mode != Mode::ProbeRtt {
            self.mode = Mode::ProbeRtt;
            self.pacing_gain = 1.0;
            self.cwnd_gain = 1.0;
            self.prior_cwnd = if self.rto_recovery_end.is_some() {
                self.prior_cwnd.max(self.cwnd)
            } else {
                self.cwnd
            };
            self.probe_rtt_done = None;
        }
        if self.mode != Mode::ProbeRtt {
            return;
        }
        match self.probe_rtt_done {
            None if ack.in_flight <= self.min_cwnd() => {
                self.probe_rtt_done = Some(now + PROBE_RTT_DURATION);
                self.probe_rtt_round_done = false;
                self.next_round_delivered = delivered;
            }
            None => {}
            Some(done) => {
                if self.round_start {
                    self.probe_rtt_round_done = true;
                }
                if self.probe_rtt_round_done && now >= done {
                    self.min_rtt_stamp = now;
                    self.cwnd = self.cwnd.max(self.prior_cwnd);
                    self.probe_rtt_done = None;
                    if self.filled_pipe {
                        self.enter_probe_bw(now);
                    } else {
                        self.mode = Mode::Startup;
                        self.pacing_gain = HIGH_GAIN;
                        self.cwnd_gain = HIGH_GAIN;
                    }
                }
            }
        }
    }

    fn update_pacing_rate(&mut self) {
        let Some(bw) = self.btlbw.get() else {
            return;
        };
        let rate = (self.pacing_gain * bw as f64 * PACING_MARGIN) as u64;
        // In startup the rate only rises: one low sample must not slow the ramp.
        if self.filled_pipe || self.pacing_rate.is_none_or(|r| rate > r) {
            self.pacing_rate = Some(rate.max(1));
        }
    }

    fn update_cwnd(&mut self, newly_delivered: u64, delivered: u64) {
        let mut target = self.inflight_target(self.cwnd_gain);
        if self.filled_pipe
            && let (Some(extra), Some(bw)) = (self.extra_acked.get(), self.btlbw.get())
        {
            let cap = (bw as f64 * EXTRA_ACKED_MAX.as_secs_f64()) as u64;
            target += extra.min(cap);
        }
        if self.filled_pipe {
            self.cwnd = (self.cwnd + newly_delivered).min(target);
        } else if self.cwnd < target || delivered < INITIAL_CWND_PACKETS * self.mss {
            self.cwnd += newly_delivered;
        }
        self.cwnd = self.cwnd.clamp(self.min_cwnd(), MAX_CWND_BYTES);
        if self.mode == Mode::ProbeRtt {
            self.cwnd = self.cwnd.min(self.min_cwnd());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u64 = 1000;
    const RTT: Duration = Duration::from_millis(10);

    /// One ack of `bytes` at `now`, with a delivery-rate sample of `rate` over a packet sent
    /// when `prior_delivered` bytes had been delivered.
    fn ack(bbr: &mut Bbr, now: Instant, rate: u64, prior_delivered: u64, delivered: u64) {
        let ev = AckEvent {
            now,
            cumulative_ack: 0,
            prior_in_flight: bbr.window(),
            in_flight: bbr.window() / 2,
            cwnd_limited: true,
            rtt_sample: Some(RTT),
            min_rtt: Some(RTT),
        };
        let rs = RateSample {
            delivery_rate: Some(rate),
            is_app_limited: false,
            prior_delivered,
            newly_delivered: MSS,
        };
        bbr.on_ack(&ev, &rs, delivered);
    }

    #[test]
    fn startup_ends_when_the_rate_plateaus_and_the_window_follows_the_bdp() {
        let t0 = Instant::now();
        let mut bbr = Bbr::new(MSS, t0);
        // One ack per round (prior_delivered ≥ the previous round's end), rate doubling for 6
        // rounds, then flat at 1 MB/s.
        let mut delivered = 0;
        for round in 0..20u32 {
            let rate = 1_000_000u64 >> 6u32.saturating_sub(round);
            let prior = delivered;
            delivered += MSS;
            ack(&mut bbr, t0 + RTT * (round + 1), rate, prior, delivered);
            if round < 6 {
                assert!(bbr.in_startup(), "round {round}");
            }
        }
        assert!(!bbr.in_startup(), "three flat rounds end startup");
        assert_eq!(bbr.bandwidth(), Some(1_000_000));
        // bdp = 1 MB/s × 10 ms = 10 kB; cwnd ≤ 2 × bdp + one 2 ms pacer quantum (2 kB) + the
        // ack-aggregation allowance (≤ 100 ms at the rate).
        assert!(bbr.window() >= MIN_CWND_PACKETS * MSS);
        assert!(
            bbr.window() <= 2 * 10_000 + 2_000 + 2 * MSS + 100_000,
            "{}",
            bbr.window()
        );
        let pacing = bbr.pacing_rate(Some(RTT));
        assert!((700_000..=1_300_000).contains(&pacing), "pacing {pacing}");
    }

    #[test]
    fn rto_drops_the_window_and_recovery_restores_it() {
        let t0 = Instant::now();
        let mut bbr = Bbr::new(MSS, t0);
        let before = bbr.window();
        bbr.on_rto(100);
        assert_eq!(bbr.window(), MIN_CWND_PACKETS * MSS);
        assert!(
            !bbr.on_loss(50, 120),
            "losses below the RTO point are the same episode"
        );
        let ev = AckEvent {
            now: t0 + RTT,
            cumulative_ack: 100,
            prior_in_flight: 0,
            in_flight: 0,
            cwnd_limited: false,
            rtt_sample: None,
            min_rtt: None,
        };
        bbr.on_ack(&ev, &RateSample::default(), 0);
        assert!(
            bbr.window() >= before,
            "restored: {} < {before}",
            bbr.window()
        );
        assert!(
            bbr.on_loss(130, 200),
            "a loss after recovery starts a new episode"
        );
    }
}
