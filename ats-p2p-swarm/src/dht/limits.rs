//! Per-source limits on what a node answers: a request rate per source IP, and an
//! anti-amplification budget for replies to sources that have not proved they receive.
//!
//! A UDP source address can be forged, so a node that answers every request is a reflector: a
//! small LOOKUP with a victim's address as its source draws a reply tens of times larger toward
//! the victim. Two rules bound that, both sans-io (the caller passes `now`):
//!
//! - **Request rate**: each source IP has a token bucket ([`SourceLimits::request_burst`],
//!   refilled at [`SourceLimits::requests_per_sec`]); a request beyond it is dropped unanswered
//!   (the requester's retransmission or the next node of its walk covers an honest one).
//! - **Reply budget**: a request that carries a valid token proved a round trip and is answered
//!   in full. Any other source may receive at most [`SourceLimits::amplification`] times the
//!   bytes it sent, plus a small credit ([`SourceLimits::reply_credit`], refilled at
//!   [`SourceLimits::credit_per_sec`]) that lets an honest walk get full replies. A reply over
//!   budget is truncated by the caller (fewer records, fewer closer nodes), never refused.
//!
//! Loopback sources are exempt by default: the kernel drops packets from the network that claim
//! a loopback source, so a loopback address cannot be a reflection victim.
//!
//! The table of sources is bounded ([`SourceLimits::max_sources`]); idle sources (both buckets
//! full again) are swept, and when it is still full an arbitrary entry makes room (a new source
//! only gets a fresh bucket, which any unseen source gets anyway).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Fixed-point scale of the buckets: one request or one byte is this many units, so slow
/// refills accumulate between calls without floating point.
const SCALE: u64 = 1000;
/// The source table is swept for idle entries at most this often.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Limits applied to requests per source IP. See the [`dht`](super) module's limits: request rate and reply budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceLimits {
    /// Requests a source IP may send at once.
    pub request_burst: u32,
    /// Requests per second a source IP earns back.
    pub requests_per_sec: u32,
    /// Reply bytes allowed per request byte from a source without a valid token.
    pub amplification: u32,
    /// Reply bytes a source without a valid token may receive beyond `amplification` times what
    /// it sent (the size of its credit).
    pub reply_credit: u32,
    /// Credit bytes per second a source earns back.
    pub credit_per_sec: u32,
    /// Source IPs tracked at once.
    pub max_sources: usize,
    /// Loopback sources are not limited.
    pub exempt_loopback: bool,
}

impl Default for SourceLimits {
    /// Generous for honest peers behind one NAT, tight for a reflector: 128 requests at once and
    /// 64/s per IP; replies to unproven sources ≤ 3× their bytes plus 4 KiB refilled at 1 KiB/s.
    fn default() -> Self {
        Self {
            request_burst: 128,
            requests_per_sec: 64,
            amplification: 3,
            reply_credit: 4096,
            credit_per_sec: 1024,
            max_sources: 4096,
            exempt_loopback: true,
        }
    }
}

/// Counters of the limits at work (for tests and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitStats {
    /// Requests dropped because their source was over its request rate.
    pub requests_dropped: u64,
    /// Replies cut to fit an unproven source's budget.
    pub replies_truncated: u64,
    /// Incoming application requests dropped because the event queue was full.
    pub events_dropped: u64,
}

#[derive(Debug, Clone, Copy)]
struct Source {
    /// Request tokens, in `SCALE` units.
    requests: u64,
    /// Reply credit in bytes, in `SCALE` units.
    credit: u64,
    last: Instant,
}

/// The per-source state: bounded, driven by the caller's clock.
#[derive(Debug)]
pub(crate) struct SourceLimiter {
    limits: SourceLimits,
    sources: HashMap<Ipv4Addr, Source>,
    last_sweep: Option<Instant>,
}

impl SourceLimiter {
    pub(crate) fn new(limits: SourceLimits) -> Self {
        Self {
            limits,
            sources: HashMap::new(),
            last_sweep: None,
        }
    }

    fn exempt(&self, ip: &Ipv4Addr) -> bool {
        self.limits.exempt_loopback && ip.is_loopback()
    }

    fn request_cap(&self) -> u64 {
        u64::from(self.limits.request_burst).saturating_mul(SCALE)
    }

    fn credit_cap(&self) -> u64 {
        u64::from(self.limits.reply_credit).saturating_mul(SCALE)
    }

    /// A full source, as an unseen one starts.
    fn fresh(&self, now: Instant) -> Source {
        Source {
            requests: self.request_cap(),
            credit: self.credit_cap(),
            last: now,
        }
    }

    /// Tops up `s` for the time since its last update.
    fn refill(limits: &SourceLimits, s: &mut Source, now: Instant) {
        let ms =
            u64::try_from(now.saturating_duration_since(s.last).as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            return;
        }
        // Units per millisecond: rate/s × SCALE / 1000 = rate (SCALE is 1000).
        let request_cap = u64::from(limits.request_burst).saturating_mul(SCALE);
        let credit_cap = u64::from(limits.reply_credit).saturating_mul(SCALE);
        s.requests = s
            .requests
            .saturating_add(ms.saturating_mul(u64::from(limits.requests_per_sec)))
            .min(request_cap);
        s.credit = s
            .credit
            .saturating_add(ms.saturating_mul(u64::from(limits.credit_per_sec)))
            .min(credit_cap);
        s.last = now;
    }

    /// Makes room for one more source: idle ones first, else an arbitrary one.
    fn make_room(&mut self, now: Instant) {
        if self.sources.len() < self.limits.max_sources.max(1) {
            return;
        }
        if self
            .last_sweep
            .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_INTERVAL)
        {
            self.last_sweep = Some(now);
            let limits = self.limits;
            let (request_cap, credit_cap) = (self.request_cap(), self.credit_cap());
            self.sources.retain(|_, s| {
                Self::refill(&limits, s, now);
                s.requests < request_cap || s.credit < credit_cap
            });
        }
        if self.sources.len() >= self.limits.max_sources.max(1)
            && let Some(ip) = self.sources.keys().next().copied()
        {
            self.sources.remove(&ip);
        }
    }

    /// A request of `len` bytes arrived from `ip`: whether to handle it. An admitted request
    /// earns its source `amplification × len` reply bytes.
    pub(crate) fn admit(&mut self, now: Instant, ip: Ipv4Addr, len: usize) -> bool {
        if self.exempt(&ip) {
            return true;
        }
        if !self.sources.contains_key(&ip) {
            self.make_room(now);
            let fresh = self.fresh(now);
            self.sources.insert(ip, fresh);
        }
        let limits = self.limits;
        let Some(s) = self.sources.get_mut(&ip) else {
            return false;
        };
        Self::refill(&limits, s, now);
        if s.requests < SCALE {
            return false;
        }
        s.requests -= SCALE;
        let earned = u64::try_from(len)
            .unwrap_or(u64::MAX)
            .saturating_mul(u64::from(limits.amplification))
            .saturating_mul(SCALE);
        s.credit = s.credit.saturating_add(earned);
        true
    }

    /// Reply bytes `ip` may receive now; `None` when unlimited (exempt source).
    pub(crate) fn reply_budget(&self, ip: &Ipv4Addr) -> Option<usize> {
        if self.exempt(ip) {
            return None;
        }
        // A source not in the table was never admitted: it gets nothing beyond the minimum.
        let units = self.sources.get(ip).map_or(0, |s| s.credit);
        Some(usize::try_from(units / SCALE).unwrap_or(usize::MAX))
    }

    /// `bytes` were sent to `ip` as a reply without a valid token.
    pub(crate) fn spend(&mut self, ip: &Ipv4Addr, bytes: usize) {
        if let Some(s) = self.sources.get_mut(ip) {
            let units = u64::try_from(bytes)
                .unwrap_or(u64::MAX)
                .saturating_mul(SCALE);
            s.credit = s.credit.saturating_sub(units);
        }
    }

    /// Sources tracked now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);

    fn limits() -> SourceLimits {
        SourceLimits {
            request_burst: 4,
            requests_per_sec: 2,
            amplification: 3,
            reply_credit: 100,
            credit_per_sec: 10,
            max_sources: 8,
            exempt_loopback: true,
        }
    }

    #[test]
    fn a_burst_then_the_refill_rate() {
        let now = Instant::now();
        let mut l = SourceLimiter::new(limits());
        let admitted = (0..10).filter(|_| l.admit(now, IP, 10)).count();
        assert_eq!(admitted, 4);
        // Half a second earns one request at 2/s.
        let later = now + Duration::from_millis(500);
        assert!(l.admit(later, IP, 10));
        assert!(!l.admit(later, IP, 10));
    }

    #[test]
    fn the_reply_budget_is_credit_plus_amplified_request_bytes() {
        let now = Instant::now();
        let mut l = SourceLimiter::new(limits());
        assert_eq!(l.reply_budget(&IP), Some(0), "never admitted, no budget");
        assert!(l.admit(now, IP, 40));
        assert_eq!(l.reply_budget(&IP), Some(100 + 120));
        l.spend(&IP, 500);
        assert_eq!(l.reply_budget(&IP), Some(0));
        assert!(l.admit(now, IP, 40));
        assert_eq!(l.reply_budget(&IP), Some(120));
    }

    #[test]
    fn loopback_is_exempt_unless_configured() {
        let now = Instant::now();
        let mut l = SourceLimiter::new(limits());
        assert!((0..100).all(|_| l.admit(now, Ipv4Addr::LOCALHOST, 10)));
        assert_eq!(l.reply_budget(&Ipv4Addr::LOCALHOST), None);
        let mut strict = SourceLimiter::new(SourceLimits {
            exempt_loopback: false,
            ..limits()
        });
        assert_eq!(
            (0..100)
                .filter(|_| strict.admit(now, Ipv4Addr::LOCALHOST, 10))
                .count(),
            4
        );
    }

    #[test]
    fn the_source_table_stays_bounded() {
        let now = Instant::now();
        let mut l = SourceLimiter::new(limits());
        for i in 0..10_000u32 {
            let ip = Ipv4Addr::from(0x0a00_0000 + i);
            assert!(l.admit(now, ip, 10), "a new source gets its burst");
            assert!(l.len() <= 8);
        }
    }
}
