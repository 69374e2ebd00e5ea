//! The relay's pairing table, sans-io: pending `pair` requests keyed by token, the active links,
//! and every limit. The async server ([`super::RelayServer`]) owns one behind a mutex; it allocates
//! the relay stream ids when a pairing matches and reports them back with
//! [`Pairings::add_link`].

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::messages::Token;

/// A relay session (one connection to the relay).
pub type SessionId = u64;

/// Bounds on what peers can make a relay hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimits {
    /// Sessions served at once; further connections are closed at once.
    pub max_sessions: usize,
    /// Pending (unmatched) pair requests one session may have.
    pub max_pending_per_session: usize,
    /// Pending pair requests over all sessions.
    pub max_pending: usize,
    /// How long a pair request waits for its other half.
    pub pending_ttl: Duration,
    /// Active links one session may be a side of.
    pub max_links_per_session: usize,
    /// Active links over all sessions.
    pub max_links: usize,
    /// A session with no pending pairing and no link is closed after this long without a
    /// frame (so idle connections cannot hold the session slots).
    pub idle_session: Duration,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            max_sessions: 1024,
            max_pending_per_session: 64,
            max_pending: 4096,
            // The JS client gives up after 15 s; a little more covers its retries' latency.
            pending_ttl: Duration::from_secs(30),
            max_links_per_session: 64,
            max_links: 4096,
            idle_session: Duration::from_secs(60),
        }
    }
}

/// One side of a pairing: who asked, and its own stream id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Half {
    /// The session that sent `pair`.
    pub session: SessionId,
    /// The client's stream id (packets to it carry this id).
    pub remote_id: u32,
}

#[derive(Debug)]
struct Pending {
    /// Index 1 is the initiator's half, 0 the responder's (as blind-relay's `links`).
    halves: [Option<Half>; 2],
    at: Instant,
}

/// An active link: two clients' streams spliced through two relay stream ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// The pairing token.
    pub token: Token,
    /// `[responder, initiator]` sessions.
    pub sessions: [SessionId; 2],
    /// `[responder, initiator]` relay stream ids (what each client sends to).
    pub relay_ids: [u32; 2],
}

/// What a `pair` request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairOutcome {
    /// Waits for the other half.
    Pending,
    /// Both halves are here: allocate two relay ids, then call [`Pairings::add_link`].
    Matched {
        /// The responder's half.
        responder: Half,
        /// The initiator's half.
        initiator: Half,
    },
    /// The same side of this token was already requested, or the token has an active link.
    Duplicate,
    /// A limit was hit; nothing was stored.
    Refused,
}

/// Counters (cumulative unless noted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairingCounters {
    /// `pair` requests stored.
    pub requested: u64,
    /// Pairings matched.
    pub matched: u64,
    /// Pending pairings or links cancelled by `unpair` or a closing session.
    pub cancelled: u64,
    /// Pending pairings that expired.
    pub expired: u64,
    /// Requests refused by a limit.
    pub refused: u64,
    /// Duplicate requests ignored.
    pub duplicates: u64,
}

/// Pending pairings and active links, with their limits.
#[derive(Debug)]
pub struct Pairings {
    limits: RelayLimits,
    pending: HashMap<Token, Pending>,
    links: HashMap<Token, Link>,
    pending_by_session: HashMap<SessionId, HashSet<Token>>,
    links_by_session: HashMap<SessionId, HashSet<Token>>,
    counters: PairingCounters,
}

fn side(is_initiator: bool) -> usize {
    usize::from(is_initiator)
}

fn count(map: &HashMap<SessionId, HashSet<Token>>, s: SessionId) -> usize {
    map.get(&s).map_or(0, HashSet::len)
}

fn unindex(map: &mut HashMap<SessionId, HashSet<Token>>, s: SessionId, token: &Token) {
    if let Some(set) = map.get_mut(&s) {
        set.remove(token);
        if set.is_empty() {
            map.remove(&s);
        }
    }
}

impl Pairings {
    /// An empty table.
    pub fn new(limits: RelayLimits) -> Self {
        Self {
            limits,
            pending: HashMap::new(),
            links: HashMap::new(),
            pending_by_session: HashMap::new(),
            links_by_session: HashMap::new(),
            counters: PairingCounters::default(),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &RelayLimits {
        &self.limits
    }

    /// Counters so far.
    pub fn counters(&self) -> PairingCounters {
        self.counters
    }

    /// Pending pairings now.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Active links now.
    pub fn links(&self) -> usize {
        self.links.len()
    }

    /// Pending requests of `session` now.
    pub fn pending_of(&self, session: SessionId) -> usize {
        count(&self.pending_by_session, session)
    }

    /// Active links `session` is a side of now.
    pub fn links_of(&self, session: SessionId) -> usize {
        count(&self.links_by_session, session)
    }

    /// A `pair` request from `session`.
    pub fn handle_pair(
        &mut self,
        now: Instant,
        session: SessionId,
        is_initiator: bool,
        token: Token,
        remote_id: u32,
    ) -> PairOutcome {
        if self.links.contains_key(&token) {
            self.counters.duplicates += 1;
            return PairOutcome::Duplicate;
        }
        let half = Half { session, remote_id };
        if let Some(p) = self.pending.get_mut(&token) {
            if p.halves[side(is_initiator)].is_some() {
                self.counters.duplicates += 1;
                return PairOutcome::Duplicate;
            }
            let other = p.halves[side(!is_initiator)];
            let Some(other) = other else {
                // an entry has at least one half; treat a broken one as new
                p.halves[side(is_initiator)] = Some(half);
                return PairOutcome::Pending;
            };
            // The match needs link room for both sessions.
            if self.links.len() >= self.limits.max_links
                || count(&self.links_by_session, session) >= self.limits.max_links_per_session
                || count(&self.links_by_session, other.session) >= self.limits.max_links_per_session
            {
                self.counters.refused += 1;
                return PairOutcome::Refused;
            }
            self.pending.remove(&token);
            unindex(&mut self.pending_by_session, other.session, &token);
            self.counters.requested += 1;
            self.counters.matched += 1;
            let (initiator, responder) = if is_initiator {
                (half, other)
            } else {
                (other, half)
            };
            return PairOutcome::Matched {
                responder,
                initiator,
            };
        }
        if self.pending.len() >= self.limits.max_pending
            || count(&self.pending_by_session, session) >= self.limits.max_pending_per_session
        {
            self.counters.refused += 1;
            return PairOutcome::Refused;
        }
        let mut halves = [None, None];
        halves[side(is_initiator)] = Some(half);
        self.pending.insert(token, Pending { halves, at: now });
        self.pending_by_session
            .entry(session)
            .or_default()
            .insert(token);
        self.counters.requested += 1;
        PairOutcome::Pending
    }

    /// Records the link of a matched pairing (after the relay ids were allocated).
    pub fn add_link(&mut self, link: Link) {
        for s in link.sessions {
            self.links_by_session
                .entry(s)
                .or_default()
                .insert(link.token);
        }
        self.links.insert(link.token, link);
    }

    /// An `unpair` from `session`: cancels the pending pairing it is part of, or tears down its
    /// link (returned, so the caller removes the relay entries). Unknown tokens do nothing.
    pub fn handle_unpair(&mut self, session: SessionId, token: &Token) -> Option<Link> {
        if let Some(p) = self.pending.get(token) {
            if p.halves.iter().flatten().any(|h| h.session == session) {
                self.remove_pending(token);
                self.counters.cancelled += 1;
            }
            return None;
        }
        let link = self.links.get(token)?;
        if !link.sessions.contains(&session) {
            return None;
        }
        let link = self.remove_link(token)?;
        self.counters.cancelled += 1;
        Some(link)
    }

    /// A session ended: its pending requests go, and so do its links (returned).
    pub fn close_session(&mut self, session: SessionId) -> Vec<Link> {
        let pending: Vec<Token> = self
            .pending_by_session
            .get(&session)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for t in &pending {
            if let Some(p) = self.pending.get_mut(t) {
                for h in p.halves.iter_mut() {
                    if h.is_some_and(|h| h.session == session) {
                        *h = None;
                    }
                }
                if p.halves.iter().all(Option::is_none) {
                    self.pending.remove(t);
                }
                self.counters.cancelled += 1;
            }
        }
        self.pending_by_session.remove(&session);
        let tokens: Vec<Token> = self
            .links_by_session
            .get(&session)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let links: Vec<Link> = tokens.iter().filter_map(|t| self.remove_link(t)).collect();
        self.counters.cancelled += links.len() as u64;
        links
    }

    /// Drops pending requests older than the limit's TTL; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let ttl = self.limits.pending_ttl;
        let old: Vec<Token> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.at) >= ttl)
            .map(|(t, _)| *t)
            .collect();
        for t in &old {
            self.remove_pending(t);
        }
        self.counters.expired += old.len() as u64;
        old.len()
    }

    /// Drops links whose relay entries are gone (`alive` says which relay ids still exist);
    /// returns them.
    pub fn prune_links(&mut self, mut alive: impl FnMut(u32) -> bool) -> Vec<Link> {
        let dead: Vec<Token> = self
            .links
            .values()
            .filter(|l| !l.relay_ids.iter().all(|id| alive(*id)))
            .map(|l| l.token)
            .collect();
        dead.iter().filter_map(|t| self.remove_link(t)).collect()
    }

    fn remove_pending(&mut self, token: &Token) {
        if let Some(p) = self.pending.remove(token) {
            for h in p.halves.iter().flatten() {
                unindex(&mut self.pending_by_session, h.session, token);
            }
        }
    }

    fn remove_link(&mut self, token: &Token) -> Option<Link> {
        let link = self.links.remove(token)?;
        for s in link.sessions {
            unindex(&mut self.links_by_session, s, token);
        }
        Some(link)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn limits() -> RelayLimits {
        RelayLimits {
            max_pending_per_session: 4,
            max_pending: 6,
            max_links_per_session: 1,
            max_links: 2,
            ..RelayLimits::default()
        }
    }

    #[test]
    fn match_duplicate_unpair() {
        let now = Instant::now();
        let mut p = Pairings::new(limits());
        assert_eq!(
            p.handle_pair(now, 1, true, [1; 32], 10),
            PairOutcome::Pending
        );
        assert_eq!(
            p.handle_pair(now, 1, true, [1; 32], 10),
            PairOutcome::Duplicate
        );
        let m = p.handle_pair(now, 2, false, [1; 32], 20);
        let PairOutcome::Matched {
            responder,
            initiator,
        } = m
        else {
            panic!("{m:?}")
        };
        assert_eq!((initiator.session, initiator.remote_id), (1, 10));
        assert_eq!((responder.session, responder.remote_id), (2, 20));
        assert_eq!(p.pending(), 0);
        p.add_link(Link {
            token: [1; 32],
            sessions: [2, 1],
            relay_ids: [100, 101],
        });
        assert_eq!(
            p.handle_pair(now, 3, true, [1; 32], 1),
            PairOutcome::Duplicate
        );
        // only a side may unpair
        assert!(p.handle_unpair(3, &[1; 32]).is_none());
        assert!(p.handle_unpair(9, &[7; 32]).is_none());
        assert_eq!(p.handle_unpair(1, &[1; 32]).unwrap().relay_ids, [100, 101]);
        assert_eq!(p.links(), 0);
    }

    #[test]
    fn limits_expiry_and_session_close() {
        let now = Instant::now();
        let mut p = Pairings::new(limits());
        for i in 0..10u8 {
            let _ = p.handle_pair(now, 1, true, [i; 32], 1);
        }
        assert_eq!(p.pending_of(1), 4);
        for i in 10..20u8 {
            let _ = p.handle_pair(now, 2, true, [i; 32], 1);
        }
        assert_eq!(p.pending(), 6);
        assert_eq!(p.counters().refused, 14);
        assert_eq!(p.close_session(1).len(), 0);
        assert_eq!(p.pending(), 2);
        assert_eq!(p.pending_of(1), 0);
        let later = now + limits().pending_ttl;
        assert_eq!(p.expire(later), 2);
        assert_eq!(p.pending(), 0);
        assert_eq!(p.pending_of(2), 0);
    }

    #[test]
    fn link_limits_and_prune() {
        let now = Instant::now();
        let mut p = Pairings::new(limits());
        assert_eq!(
            p.handle_pair(now, 1, true, [1; 32], 1),
            PairOutcome::Pending
        );
        assert!(matches!(
            p.handle_pair(now, 2, false, [1; 32], 2),
            PairOutcome::Matched { .. }
        ));
        p.add_link(Link {
            token: [1; 32],
            sessions: [2, 1],
            relay_ids: [5, 6],
        });
        // session 1 has its one link: a second match involving it is refused
        assert_eq!(
            p.handle_pair(now, 1, true, [2; 32], 1),
            PairOutcome::Pending
        );
        assert_eq!(
            p.handle_pair(now, 3, false, [2; 32], 3),
            PairOutcome::Refused
        );
        assert_eq!(p.prune_links(|id| id != 6).len(), 1);
        assert_eq!(p.links(), 0);
        assert!(matches!(
            p.handle_pair(now, 3, false, [2; 32], 3),
            PairOutcome::Matched { .. }
        ));
        assert!(p.close_session(3).is_empty());
    }
}
