//! The stream's timers: one fixed table ([`Timer`]), what each does when it fires, and the
//! next deadline the driver must wake the stream at.

use std::time::Instant;

use super::Stream;

/// Timers, a fixed table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Timer {
    /// Retransmission timeout.
    Rto = 0,
    /// Tail loss probe.
    Tlp = 1,
    /// RACK reordering-window expiry.
    Rack = 2,
    /// Keep-alive heartbeat.
    KeepAlive = 3,
    /// Zero-window probe.
    Zwp = 4,
}

pub(super) const TIMER_COUNT: usize = 5;
const ALL_TIMERS: [Timer; TIMER_COUNT] = [
    Timer::Rto,
    Timer::Tlp,
    Timer::Rack,
    Timer::KeepAlive,
    Timer::Zwp,
];

impl Stream {
    /// Fires expired timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        for t in ALL_TIMERS {
            let Some(at) = self.timers[t as usize] else {
                continue;
            };
            if at > now {
                continue;
            }
            self.timers[t as usize] = None;
            match t {
                Timer::Rto => self.on_rto(now),
                Timer::Tlp => self.on_tlp(now),
                Timer::Rack => self.detect_loss(now),
                Timer::KeepAlive => {
                    if self.send.sent.is_empty() && self.remote.is_some() && self.closed.is_none() {
                        self.heartbeat_pending = true;
                    }
                    self.arm_keepalive(now);
                }
                Timer::Zwp => {
                    if self.send.peer_rwnd == 0
                        && self.send.inflight_bytes == 0
                        && self.closed.is_none()
                    {
                        self.heartbeat_pending = true;
                        self.timers[Timer::Zwp as usize] = Some(now + self.rtt.rto() * 2);
                    }
                }
            }
        }
    }

    /// The earliest time [`Stream::handle_timeout`] or [`Stream::poll_transmit`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        let timers = self.timers.iter().flatten().min().copied();
        match (timers, self.pacing_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
