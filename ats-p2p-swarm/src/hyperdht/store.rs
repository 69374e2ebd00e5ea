//! Node-side storage: announced records per target and router forwards (self-announces).

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use crate::dht::Id;

/// Records and forwards expire after this long without a re-announce (hyperdht `maxAge`).
pub const RECORD_MAX_AGE: Duration = Duration::from_secs(20 * 60);
/// Most targets with records; the stalest target is evicted when full.
pub const MAX_TARGETS: usize = 16_384;
/// Most records per target; the oldest is evicted when full (a lookup returns 20).
pub const MAX_RECORDS_PER_TARGET: usize = 64;
/// Most router forwards; the oldest is evicted when full.
pub const MAX_FORWARDS: usize = 16_384;
/// Records returned per LOOKUP reply.
pub const LOOKUP_RECORDS: usize = 20;
/// Relay addresses kept per stored record (hyperdht truncates to 3).
pub const MAX_RELAY_ADDRESSES_STORED: usize = 3;
/// A bump may be at most this far in the future (hyperdht `MAX_BUMP_DRIFT`).
pub const MAX_BUMP_DRIFT_MS: u64 = 60_000;

/// A router forward: a server that announced itself to this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Where to relay handshakes: the announce's source address.
    pub relay: SocketAddrV4,
    /// The encoded peer record.
    pub record: Vec<u8>,
    /// When stored.
    pub stored: Instant,
}

#[derive(Debug, Clone)]
struct Record {
    public_key: [u8; 32],
    record: Vec<u8>,
    stored: Instant,
}

#[derive(Debug, Default)]
struct TargetRecords {
    records: Vec<Record>,
    bump: u64,
    touched: Option<Instant>,
}

/// Bounded record cache plus router forwards.
#[derive(Debug, Default)]
pub struct Store {
    targets: HashMap<Id, TargetRecords>,
    forwards: HashMap<Id, Forward>,
}

impl Store {
    /// Empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces `public_key`'s record under `target`.
    pub fn add_record(&mut self, now: Instant, target: Id, public_key: [u8; 32], record: Vec<u8>) {
        if !self.targets.contains_key(&target) && self.targets.len() >= MAX_TARGETS {
            let stalest = self
                .targets
                .iter()
                .min_by_key(|(_, t)| t.touched)
                .map(|(k, _)| *k);
            if let Some(k) = stalest {
                self.targets.remove(&k);
            }
        }
        let t = self.targets.entry(target).or_default();
        t.touched = Some(now);
        t.records.retain(|r| r.public_key != public_key);
        if t.records.len() >= MAX_RECORDS_PER_TARGET {
            t.records.remove(0);
        }
        t.records.push(Record {
            public_key,
            record,
            stored: now,
        });
    }

    /// Raises the target's bump if `bump` is newer and not too far ahead of `now_ms`.
    pub fn bump(&mut self, target: &Id, bump: u64, now_ms: u64) {
        if let Some(t) = self.targets.get_mut(target)
            && bump > t.bump
            && bump <= now_ms.saturating_add(MAX_BUMP_DRIFT_MS)
        {
            t.bump = bump;
        }
    }

    /// Removes `public_key`'s record under `target`.
    pub fn remove_record(&mut self, target: &Id, public_key: &[u8; 32]) {
        if let Some(t) = self.targets.get_mut(target) {
            t.records.retain(|r| &r.public_key != public_key);
            if t.records.is_empty() {
                self.targets.remove(target);
            }
        }
    }

    /// Up to `max` fresh records (newest first) and the bump.
    pub fn records(&self, now: Instant, target: &Id, max: usize) -> (Vec<&[u8]>, u64) {
        match self.targets.get(target) {
            None => (Vec::new(), 0),
            Some(t) => (
                t.records
                    .iter()
                    .rev()
                    .filter(|r| now.saturating_duration_since(r.stored) < RECORD_MAX_AGE)
                    .take(max)
                    .map(|r| r.record.as_slice())
                    .collect(),
                t.bump,
            ),
        }
    }

    /// Stores a forward.
    pub fn set_forward(&mut self, now: Instant, target: Id, relay: SocketAddrV4, record: Vec<u8>) {
        if !self.forwards.contains_key(&target) && self.forwards.len() >= MAX_FORWARDS {
            let oldest = self
                .forwards
                .iter()
                .min_by_key(|(_, f)| f.stored)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.forwards.remove(&k);
            }
        }
        self.forwards.insert(
            target,
            Forward {
                relay,
                record,
                stored: now,
            },
        );
    }

    /// The fresh forward for `target`.
    pub fn forward(&self, now: Instant, target: &Id) -> Option<&Forward> {
        self.forwards
            .get(target)
            .filter(|f| now.saturating_duration_since(f.stored) < RECORD_MAX_AGE)
    }

    /// Removes a forward.
    pub fn remove_forward(&mut self, target: &Id) {
        self.forwards.remove(target);
    }

    /// Drops expired records and forwards.
    pub fn expire(&mut self, now: Instant) {
        self.forwards
            .retain(|_, f| now.saturating_duration_since(f.stored) < RECORD_MAX_AGE);
        for t in self.targets.values_mut() {
            t.records
                .retain(|r| now.saturating_duration_since(r.stored) < RECORD_MAX_AGE);
        }
        self.targets.retain(|_, t| !t.records.is_empty());
    }

    /// (targets with records, total records, forwards).
    pub fn sizes(&self) -> (usize, usize, usize) {
        (
            self.targets.len(),
            self.targets.values().map(|t| t.records.len()).sum(),
            self.forwards.len(),
        )
    }
}
