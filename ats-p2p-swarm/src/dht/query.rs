//! The iterative query (dht-rpc `lib/query.js`): walk toward a target, keep the k closest
//! replies with verified ids, then optionally commit.

use std::collections::HashMap;
use std::net::SocketAddrV4;

use super::{Id, K, cmp_distance, node_id};

/// Most addresses one query remembers; candidates beyond it are ignored (bounded memory).
pub(crate) const MAX_QUERY_SEEN: usize = 2048;
/// Most referrers remembered per candidate (they get DOWN_HINTs if it times out).
pub(crate) const MAX_REFS: usize = 8;

/// Identifies a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId(pub u64);

/// A response as seen by a query or request owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryReply {
    /// Responder address (UDP source).
    pub from: SocketAddrV4,
    /// Responder id, if it sent one that matches `H(from)`.
    pub id: Option<Id>,
    /// Our address as the responder saw it.
    pub to: SocketAddrV4,
    /// Token for later requests to the responder.
    pub token: Option<Id>,
    /// Closer nodes.
    pub closer_nodes: Vec<SocketAddrV4>,
    /// Error code (0 = none).
    pub error: u64,
    /// Reply value.
    pub value: Option<Vec<u8>>,
}

/// Options of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryOptions {
    /// Target id.
    pub target: Id,
    /// dht-rpc command (true) or application command (false).
    pub internal: bool,
    /// Command.
    pub command: u64,
    /// Value sent to every node.
    pub value: Option<Vec<u8>>,
    /// Parallel requests (default 10).
    pub concurrency: usize,
    /// Commit phase.
    pub commit: Commit,
    /// Seed nodes (else the routing table, else the bootstrap nodes).
    pub nodes: Vec<SocketAddrV4>,
}

impl QueryOptions {
    /// A query with defaults: concurrency 10, no commit, seeds from the table.
    pub fn new(target: Id, internal: bool, command: u64, value: Option<Vec<u8>>) -> Self {
        Self {
            target,
            internal,
            command,
            value,
            concurrency: 10,
            commit: Commit::None,
            nodes: Vec::new(),
        }
    }
}

/// What happens after the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Nothing: the query ends after the walk.
    None,
    /// Re-send the same command, with each closest node's token, to the closest replies
    /// (dht-rpc's `commit: true`). The query succeeds if one commit succeeds.
    Auto,
}

#[derive(Debug, Clone)]
pub(crate) enum Seen {
    Pending(Vec<SocketAddrV4>),
    Done,
    Down,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub(crate) id: Id,
    pub(crate) addr: SocketAddrV4,
}

/// State of one query.
#[derive(Debug)]
pub(crate) struct Query {
    pub(crate) target: Id,
    pub(crate) internal: bool,
    pub(crate) command: u64,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) concurrency: usize,
    pub(crate) retries: u32,
    pub(crate) commit: Commit,
    pub(crate) inflight: usize,
    pub(crate) slow: usize,
    pub(crate) successes: usize,
    pub(crate) errors: usize,
    pub(crate) closest: Vec<QueryReply>,
    pub(crate) seen: HashMap<SocketAddrV4, Seen>,
    pub(crate) pending: Vec<Candidate>,
    pub(crate) from_table: bool,
    pub(crate) committing: bool,
    pub(crate) commits_pending: usize,
    pub(crate) commit_successes: usize,
    pub(crate) done: bool,
}

impl Query {
    pub(crate) fn new(
        target: Id,
        internal: bool,
        command: u64,
        value: Option<Vec<u8>>,
        concurrency: usize,
        commit: Commit,
    ) -> Self {
        Self {
            target,
            internal,
            command,
            value,
            concurrency: concurrency.max(1),
            retries: if internal && command == super::commands::DOWN_HINT {
                3
            } else {
                5
            },
            commit,
            inflight: 0,
            slow: 0,
            successes: 0,
            errors: 0,
            closest: Vec::new(),
            seen: HashMap::new(),
            pending: Vec::new(),
            from_table: false,
            committing: false,
            commits_pending: 0,
            commit_successes: 0,
            done: false,
        }
    }

    pub(crate) fn is_closer(&self, id: &Id) -> bool {
        if self.closest.len() < K {
            return true;
        }
        match self.closest.last().and_then(|r| r.id) {
            Some(last) => cmp_distance(&self.target, id, &last).is_lt(),
            None => true,
        }
    }

    /// Adds a candidate; returns whether it could still enter the closest list.
    pub(crate) fn add_pending(
        &mut self,
        addr: SocketAddrV4,
        referrer: Option<SocketAddrV4>,
        down_hints: &mut Vec<(SocketAddrV4, SocketAddrV4)>,
    ) -> bool {
        let id = node_id(&addr);
        let closer = self.is_closer(&id);
        match self.seen.get_mut(&addr) {
            Some(Seen::Done) => return closer,
            Some(Seen::Down) => {
                if let Some(r) = referrer {
                    down_hints.push((r, addr));
                }
                return closer;
            }
            Some(Seen::Pending(refs)) => {
                if let Some(r) = referrer
                    && refs.len() < MAX_REFS
                {
                    refs.push(r);
                }
                return closer;
            }
            None => {}
        }
        if !closer || self.seen.len() >= MAX_QUERY_SEEN {
            return false;
        }
        self.seen
            .insert(addr, Seen::Pending(referrer.into_iter().collect()));
        self.pending.push(Candidate { id, addr });
        true
    }

    pub(crate) fn push_closest(&mut self, reply: QueryReply) {
        let Some(id) = reply.id else { return };
        if self.closest.iter().any(|r| r.id == Some(id)) {
            return;
        }
        let pos = self
            .closest
            .iter()
            .position(|r| {
                r.id.is_none_or(|rid| cmp_distance(&self.target, &id, &rid).is_lt())
            })
            .unwrap_or(self.closest.len());
        self.closest.insert(pos, reply);
        self.closest.truncate(K);
    }
}
