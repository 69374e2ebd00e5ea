//! Driving iterative queries: visiting candidates, replies, commit phase.

use super::*;

impl RpcNode {
    pub(super) fn add_from_table(&self, q: &mut Query) {
        if q.pending.len() >= K {
            return;
        }
        q.from_table = true;
        let mut hints = Vec::new();
        for n in self
            .table
            .closest(&q.target, K - q.pending.len())
            .into_iter()
            .rev()
        {
            q.add_pending(n.addr, None, &mut hints);
        }
    }

    pub(super) fn read_more(&mut self, now: Instant, id: QueryId) {
        let sock = self.request_socket();
        let mut visits = Vec::new();
        let finished = {
            let Some(q) = self.queries.get_mut(&id) else {
                return;
            };
            if q.committing || q.done {
                return;
            }
            let concurrency = q.concurrency + q.slow;
            while q.inflight + visits.len() < concurrency {
                let Some(next) = q.pending.pop() else { break };
                if !q.is_closer(&next.id) {
                    continue;
                }
                visits.push(next);
            }
            q.inflight += visits.len();
            q.pending.is_empty()
                && visits.is_empty()
                && (q.inflight == 0 || (q.slow == q.inflight && q.closest.len() >= K))
        };
        for v in visits {
            let Some(q) = self.queries.get(&id) else {
                return;
            };
            let (internal, command, target, value, retries) =
                (q.internal, q.command, q.target, q.value.clone(), q.retries);
            if self
                .send_request(
                    now,
                    v.addr,
                    None,
                    internal,
                    command,
                    Some(target),
                    value,
                    sock,
                    retries,
                    Owner::Query(id),
                )
                .is_err()
                && let Some(q) = self.queries.get_mut(&id)
            {
                q.inflight = q.inflight.saturating_sub(1);
                q.errors += 1;
            }
        }
        if finished {
            let retry_from_table = self
                .queries
                .get(&id)
                .is_some_and(|q| !q.from_table && q.successes < K / 4 && !self.table.is_empty());
            if retry_from_table {
                if let Some(mut q) = self.queries.remove(&id) {
                    self.add_from_table(&mut q);
                    self.queries.insert(id, q);
                }
                self.read_more(now, id);
                return;
            }
            self.flush_query(now, id);
        }
    }

    pub(super) fn on_query_reply(
        &mut self,
        now: Instant,
        id: QueryId,
        to: SocketAddrV4,
        cycled: bool,
        reply: QueryReply,
    ) {
        let own = *self.table.id();
        let mut hints = Vec::new();
        let mut quick_nat = None;
        {
            let Some(q) = self.queries.get_mut(&id) else {
                return;
            };
            q.inflight = q.inflight.saturating_sub(1);
            if cycled {
                q.slow = q.slow.saturating_sub(1);
            }
            q.seen.insert(to, Seen::Done);
            if q.committing {
                return;
            }
            if reply.error == 0 {
                q.successes += 1;
            } else {
                q.errors += 1;
            }
            if reply.error == 0 && reply.id.is_some_and(|rid| q.is_closer(&rid)) {
                q.push_closest(reply.clone());
            }
            for n in &reply.closer_nodes {
                if node_id(n) == own || n.port() == 0 {
                    continue;
                }
                if !q.add_pending(*n, Some(reply.from), &mut hints) {
                    break;
                }
            }
        }
        if matches!(self.phase, Phase::Walking { query, .. } if query == id)
            && self.quick_nat_pending
        {
            self.quick_nat_pending = false;
            quick_nat = Some(reply.from);
        }
        self.send_down_hints(now, hints);
        if let Some(to) = quick_nat {
            let value = self.cfg.server_port.to_le_bytes().to_vec();
            let sock = self.request_socket();
            self.quick_nat_inflight = self
                .send_request(
                    now,
                    to,
                    None,
                    true,
                    commands::PING_NAT,
                    None,
                    Some(value),
                    sock,
                    DEFAULT_RETRIES,
                    Owner::QuickNat,
                )
                .is_ok();
        }
        if reply.error == 0 {
            self.push_event(Event::QueryReply { query: id, reply });
        }
        self.read_more(now, id);
    }

    pub(super) fn flush_query(&mut self, now: Instant, id: QueryId) {
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        q.committing = true;
        if q.commit == Commit::None {
            self.end_query(now, id, None);
            return;
        }
        let (command, target, value, internal) = (q.command, q.target, q.value.clone(), q.internal);
        let closest: Vec<QueryReply> = q.closest.clone();
        let mut sent = Vec::new();
        for r in closest {
            let Some(token) = r.token else { continue };
            let sock = self.request_socket();
            if let Ok(tid) = self.send_request(
                now,
                r.from,
                Some(token),
                internal,
                command,
                Some(target),
                value.clone(),
                sock,
                DEFAULT_RETRIES,
                Owner::Commit(id),
            ) {
                sent.push(tid);
            }
        }
        if let Some(q) = self.queries.get_mut(&id) {
            q.commits_pending = sent.len();
        }
        if sent.is_empty() {
            self.end_query(now, id, Some(RequestError::TooFewNodes));
        }
    }

    pub(super) fn on_commit_done(&mut self, now: Instant, id: QueryId, ok: bool) {
        let done = {
            let Some(q) = self.queries.get_mut(&id) else {
                return;
            };
            q.commits_pending = q.commits_pending.saturating_sub(1);
            if ok {
                q.commit_successes += 1;
            }
            (q.commits_pending == 0).then_some(q.commit_successes > 0)
        };
        if let Some(any_ok) = done {
            self.end_query(now, id, (!any_ok).then_some(RequestError::TooFewNodes));
        }
    }

    pub(super) fn end_query(&mut self, now: Instant, id: QueryId, error: Option<RequestError>) {
        let Some(q) = self.queries.remove(&id) else {
            return;
        };
        if let Phase::Walking { query, round } = self.phase
            && query == id
        {
            if round == 0 && !self.walked_once {
                self.walked_once = true;
                self.push_event(Event::Walked);
            }
            if round == 0 && self.quick_nat_inflight {
                // On a tiny network the walk can end before the quick NAT pong arrives.
                self.phase = Phase::AwaitQuickNat { round };
            } else {
                self.on_walk_done(now, round);
            }
            return;
        }
        self.push_event(Event::QueryDone {
            query: id,
            closest: q.closest,
            error,
        });
    }
}
