//! Our requests: sending within the congestion window, retransmission and timeouts, matching
//! responses to their owner.

use super::*;

impl RpcNode {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_request(
        &mut self,
        now: Instant,
        to: SocketAddrV4,
        token: Option<Id>,
        internal: bool,
        command: u64,
        target: Option<Id>,
        value: Option<Vec<u8>>,
        socket: SocketKind,
        retries: u32,
        owner: Owner,
    ) -> Result<u16, RequestError> {
        if self.destroyed {
            return Err(RequestError::Destroyed);
        }
        if self.inflight.len() >= MAX_INFLIGHT {
            return Err(RequestError::Busy);
        }
        let mut tid = self.next_tid;
        while self.inflight.contains_key(&tid) {
            tid = tid.wrapping_add(1);
        }
        self.next_tid = tid.wrapping_add(1);
        let msg = Request {
            tid,
            to,
            id: self.own_id_for(socket),
            token,
            internal,
            command,
            target,
            value,
        };
        self.inflight.insert(
            tid,
            Inflight {
                to,
                socket,
                bytes: msg.encode(),
                sent: 0,
                retries,
                deadline: None,
                cycled: false,
                owner,
            },
        );
        if self.congestion.is_full() {
            self.send_queue.push_back(tid);
        } else {
            self.send_now(now, tid);
        }
        Ok(tid)
    }

    pub(super) fn send_now(&mut self, now: Instant, tid: u16) {
        let Some(f) = self.inflight.get_mut(&tid) else {
            return;
        };
        f.sent += 1;
        f.deadline = Some(now + REQUEST_TIMEOUT);
        let t = Transmit {
            socket: f.socket,
            to: f.to,
            payload: f.bytes.clone(),
        };
        self.congestion.send();
        self.push_transmit(t);
    }

    pub(super) fn drain(&mut self, now: Instant) {
        self.rotate_in = self.rotate_in.saturating_sub(1);
        if self.rotate_in == 0 {
            self.rotate_in = ROTATE_SECRETS_TICKS;
            let old0 = self.secrets[0];
            self.secrets[0] = self.secrets[1];
            self.secrets[1] = hash(&old0);
        }
        self.congestion.drain();
        while !self.congestion.is_full() {
            let Some(tid) = self.send_queue.pop_front() else {
                break;
            };
            self.send_now(now, tid);
        }
    }

    pub(super) fn on_request_timeout(&mut self, now: Instant, tid: u16) {
        let Some(f) = self.inflight.get_mut(&tid) else {
            return;
        };
        f.deadline = None;
        let first_cycle = !f.cycled;
        f.cycled = true;
        let exhausted = f.sent > f.retries;
        if let (true, Owner::Query(q)) = (first_cycle, f.owner.clone())
            && let Some(q) = self.queries.get_mut(&q)
        {
            q.slow += 1;
        }
        if !exhausted {
            if self.congestion.is_full() {
                self.send_queue.push_back(tid);
            } else {
                self.send_now(now, tid);
            }
            if let (true, Some(Owner::Query(q))) = (
                first_cycle,
                self.inflight.get(&tid).map(|f| f.owner.clone()),
            ) {
                self.read_more(now, q);
            }
            return;
        }
        let Some(f) = self.inflight.remove(&tid) else {
            return;
        };
        self.congestion.recv();
        // A timed-out table node is removed (dht-rpc `_ontimeout`).
        let id = node_id(&f.to);
        if self.table.get(&id).is_some_and(|n| n.addr == f.to) {
            self.table.remove(&id);
        }
        self.on_owner_error(now, f, RequestError::Timeout);
    }

    pub(super) fn on_owner_error(&mut self, now: Instant, f: Inflight, err: RequestError) {
        match f.owner {
            Owner::Query(q) => {
                let mut hints = Vec::new();
                if let Some(query) = self.queries.get_mut(&q) {
                    if let Some(Seen::Pending(refs)) = query.seen.insert(f.to, Seen::Down) {
                        hints.extend(refs.into_iter().map(|r| (r, f.to)));
                    }
                    query.inflight = query.inflight.saturating_sub(1);
                    if f.cycled {
                        query.slow = query.slow.saturating_sub(1);
                    }
                    query.errors += 1;
                }
                self.send_down_hints(now, hints);
                self.read_more(now, q);
            }
            Owner::Commit(q) => self.on_commit_done(now, q, false),
            Owner::User(r) => self.push_event(Event::RequestFailed {
                request: r,
                error: err,
            }),
            Owner::QuickNat => self.on_quick_nat(now, false),
            Owner::Fire => {}
            Owner::FirewallCheck => self.on_fw_pong(now, None),
            Owner::Check { id, .. } => {
                self.checks = self.checks.saturating_sub(1);
                self.table.remove(&id);
            }
            Owner::Reping { old, new, .. } => {
                self.repinging = self.repinging.saturating_sub(1);
                self.table.remove(&old);
                self.add_table_node(new);
            }
        }
    }

    pub(super) fn on_response(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        res: Response,
        external: bool,
    ) {
        let Some(f) = self.inflight.remove(&res.tid) else {
            return;
        };
        self.send_queue.retain(|t| *t != res.tid);
        self.congestion.recv();
        let from_id = res.id.filter(|id| *id == node_id(&from));
        self.add_node_from_network(!external, from, from_id, res.to);
        let reply = QueryReply {
            from,
            id: from_id,
            to: res.to,
            token: res.token,
            closer_nodes: res.closer_nodes,
            error: res.error,
            value: res.value,
        };
        match f.owner {
            Owner::Query(q) => self.on_query_reply(now, q, f.to, f.cycled, reply),
            Owner::Commit(q) => self.on_commit_done(now, q, reply.error == 0),
            Owner::User(r) => self.push_event(Event::Response { request: r, reply }),
            Owner::QuickNat => self.on_quick_nat(now, true),
            Owner::Fire => {}
            Owner::FirewallCheck => self.on_fw_pong(now, Some((reply.from, reply.to))),
            Owner::Check { id, last_seen } => {
                self.checks = self.checks.saturating_sub(1);
                if self.table.get(&id).is_some_and(|n| n.seen <= last_seen) {
                    self.table.remove(&id);
                }
            }
            Owner::Reping {
                old,
                new,
                last_seen,
            } => {
                self.repinging = self.repinging.saturating_sub(1);
                if self.table.get(&old).is_some_and(|n| n.seen <= last_seen) {
                    self.table.remove(&old);
                    self.add_table_node(new);
                }
            }
        }
    }
}
