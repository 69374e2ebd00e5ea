//! Requests, replies, retransmissions, congestion, tokens and routing-table upkeep.

use super::*;

impl Node {
    pub(super) fn own_id_for(&self, socket: SocketKind) -> Option<Id> {
        (!self.ephemeral && socket == SocketKind::Server).then(|| *self.table.id())
    }

    /// Sends a reply. Unless `verified` (the request carried a valid token), it is cut to the
    /// source's reply budget: farthest closer nodes first, then the value; a reply that does not
    /// fit even bare is not sent. Every cut is counted.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_reply(
        &mut self,
        socket: SocketKind,
        tid: u16,
        to: SocketAddrV4,
        target: Option<&Id>,
        error: u64,
        value: Option<Vec<u8>>,
        token: bool,
        closer: bool,
        verified: bool,
    ) {
        let closer_nodes = match (target, closer) {
            (Some(t), true) => self
                .table
                .closest(t, K)
                .into_iter()
                .map(|n| n.addr)
                .collect(),
            _ => Vec::new(),
        };
        let mut res = Response {
            tid,
            to,
            id: self.own_id_for(socket),
            token: token.then(|| self.token(to.ip(), 1)),
            closer_nodes,
            error,
            value,
        };
        let mut payload = res.encode();
        let budget = if verified {
            None
        } else {
            self.limiter.reply_budget(to.ip())
        };
        if let Some(budget) = budget {
            if payload.len() > budget {
                self.limit_stats.replies_truncated += 1;
                while payload.len() > budget && res.closer_nodes.pop().is_some() {
                    payload = res.encode();
                }
                if payload.len() > budget && res.value.take().is_some() {
                    payload = res.encode();
                }
                if payload.len() > budget {
                    trace!(%to, "reply over an unproven source's budget not sent");
                    return;
                }
            }
            self.limiter.spend(to.ip(), payload.len());
        }
        self.push_transmit(Transmit {
            socket,
            to,
            payload,
        });
    }

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
        if let (true, Owner::Query(q)) = (first_cycle, f.owner.clone()) {
            if let Some(q) = self.queries.get_mut(&q) {
                q.slow += 1;
            }
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

    pub(super) fn on_request(
        &mut self,
        now: Instant,
        socket: SocketKind,
        from: SocketAddrV4,
        req: Request,
        external: bool,
    ) {
        if let Some(t) = req.token {
            if t != self.token(from.ip(), 1) && t != self.token(from.ip(), 0) {
                self.send_reply(
                    socket,
                    req.tid,
                    from,
                    req.target.as_ref(),
                    errors::INVALID_TOKEN,
                    None,
                    true,
                    true,
                    false,
                );
                return;
            }
        }
        let verified = req.token.is_some();
        let from_id = req.id.filter(|id| *id == node_id(&from));
        if from_id.is_some() {
            self.add_node_from_network(!external, from, from_id, req.to);
        }
        if req.internal {
            match req.command {
                commands::PING => {
                    self.send_reply(socket, req.tid, from, None, 0, None, false, false, verified);
                }
                commands::PING_NAT => {
                    let Some(v) = req.value.as_deref() else {
                        return;
                    };
                    let Some(port) = v.get(..2).map(|b| u16::from_le_bytes([b[0], b[1]])) else {
                        return;
                    };
                    if port == 0 {
                        return;
                    }
                    let to = SocketAddrV4::new(*from.ip(), port);
                    self.send_reply(socket, req.tid, to, None, 0, None, false, false, verified);
                }
                commands::FIND_NODE => {
                    if req.target.is_none() {
                        return;
                    }
                    self.send_reply(
                        socket,
                        req.tid,
                        from,
                        req.target.as_ref(),
                        0,
                        None,
                        false,
                        true,
                        verified,
                    );
                }
                commands::DOWN_HINT => {
                    let Some(v) = req.value.as_deref().and_then(|v| v.get(..6)) else {
                        return;
                    };
                    if self.checks < MAX_CHECKS {
                        let id = hash(v);
                        let tick = self.tick;
                        if let Some(n) = self.table.get(&id) {
                            if n.pinged < tick {
                                let addr = n.addr;
                                self.check(now, id, addr);
                            }
                        }
                    }
                    self.send_reply(socket, req.tid, from, None, 0, None, false, false, verified);
                }
                commands::DELAYED_PING => {
                    let Some(v) = req.value.as_deref().and_then(|v| v.get(..4)) else {
                        return;
                    };
                    let ms = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                    let delay = Duration::from_millis(u64::from(ms));
                    if delay > MAX_PING_DELAY || self.delayed.len() >= MAX_DELAYED_PINGS {
                        return;
                    }
                    let res = Response {
                        tid: req.tid,
                        to: from,
                        id: self.own_id_for(socket),
                        token: None,
                        closer_nodes: Vec::new(),
                        error: 0,
                        value: None,
                    };
                    self.delayed.push((
                        now + delay,
                        Transmit {
                            socket,
                            to: from,
                            payload: res.encode(),
                        },
                    ));
                }
                _ => {
                    self.send_reply(
                        socket,
                        req.tid,
                        from,
                        req.target.as_ref(),
                        errors::UNKNOWN_COMMAND,
                        None,
                        false,
                        true,
                        verified,
                    );
                }
            }
            return;
        }
        self.push_event(Event::Request(IncomingRequest {
            socket,
            from,
            from_id,
            tid: req.tid,
            to: req.to,
            token: req.token,
            internal: false,
            command: req.command,
            target: req.target,
            value: req.value,
        }));
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

    pub(super) fn nat_add(&mut self, addr: SocketAddrV4) {
        self.nat.add(*addr.ip(), addr.port());
    }

    pub(super) fn add_node_from_network(
        &mut self,
        sample: bool,
        from: SocketAddrV4,
        id: Option<Id>,
        to: SocketAddrV4,
    ) {
        let Some(id) = id else {
            // Id-less replies (bootstrappers still ephemeral) give at most max(1, #bootstrap)
            // NAT samples.
            if sample
                && self.bootstrap_samples.len() < self.cfg.bootstrap.len().max(1)
                && !self.bootstrap_samples.contains(&from)
            {
                self.bootstrap_samples.push(from);
                self.nat_add(to);
            }
            return;
        };
        let tick = self.tick;
        if let Some(n) = self.table.get_mut(&id) {
            n.pinged = tick;
            n.seen = tick;
            self.touch_recent(id);
            return;
        }
        if sample {
            self.nat_add(to);
        }
        self.add_table_node(TableNode {
            id,
            addr: from,
            added: tick,
            pinged: tick,
            seen: tick,
        });
    }

    pub(super) fn touch_recent(&mut self, id: Id) {
        self.recent.retain(|x| *x != id);
        if self.recent.len() >= 64 {
            self.recent.pop_front();
        }
        self.recent.push_back(id);
    }

    pub(super) fn add_table_node(&mut self, node: TableNode) {
        let id = node.id;
        match self.table.add(node.clone()) {
            AddOutcome::Added | AddOutcome::Refreshed => self.touch_recent(id),
            AddOutcome::Own => {}
            AddOutcome::Full(r) => self.on_full_row(r, node),
        }
    }

    pub(super) fn on_full_row(&mut self, r: usize, new: TableNode) {
        if !self.is_bootstrapped() || self.repinging >= MAX_REPINGS {
            return;
        }
        let tick = self.tick;
        let oldest = self
            .table
            .row(r)
            .iter()
            .filter(|n| n.pinged != tick)
            .min_by_key(|n| (n.pinged, std::cmp::Reverse(n.added)))
            .cloned();
        let Some(old) = oldest else { return };
        if tick.saturating_sub(old.pinged) < RECENT_NODE
            && tick.saturating_sub(old.added) > OLD_NODE
        {
            return;
        }
        if let Some(n) = self.table.get_mut(&old.id) {
            n.pinged = tick;
        }
        self.repinging += 1;
        let owner = Owner::Reping {
            old: old.id,
            new,
            last_seen: old.seen,
        };
        let sock = self.request_socket();
        let Some(now) = self.last_now else {
            self.repinging -= 1;
            return;
        };
        if self
            .send_request(
                now,
                old.addr,
                None,
                true,
                commands::PING,
                None,
                None,
                sock,
                DEFAULT_RETRIES,
                owner,
            )
            .is_err()
        {
            self.repinging -= 1;
        }
    }

    pub(super) fn check(&mut self, now: Instant, id: Id, addr: SocketAddrV4) {
        let tick = self.tick;
        let Some(n) = self.table.get_mut(&id) else {
            return;
        };
        n.pinged = tick;
        let last_seen = n.seen;
        self.checks += 1;
        let sock = self.request_socket();
        if self
            .send_request(
                now,
                addr,
                None,
                true,
                commands::PING,
                None,
                None,
                sock,
                DEFAULT_RETRIES,
                Owner::Check { id, last_seen },
            )
            .is_err()
        {
            self.checks -= 1;
        }
    }

    pub(super) fn send_down_hints(
        &mut self,
        now: Instant,
        hints: Vec<(SocketAddrV4, SocketAddrV4)>,
    ) {
        for (to, down) in hints {
            if self.down_hints_this_tick >= DOWN_HINTS_PER_TICK {
                return;
            }
            self.down_hints_this_tick += 1;
            let sock = self.request_socket();
            let _ = self.send_request(
                now,
                to,
                None,
                true,
                commands::DOWN_HINT,
                None,
                Some(ipv4_bytes(&down).to_vec()),
                sock,
                DEFAULT_RETRIES,
                Owner::Fire,
            );
        }
    }

    pub(super) fn on_tick(&mut self, now: Instant) {
        let slept = self
            .last_tick_at
            .is_some_and(|t| now.saturating_duration_since(t) > SLEEPING_INTERVAL);
        self.last_tick_at = Some(now);
        if slept {
            self.on_wakeup();
        } else {
            self.tick += 1;
        }
        self.down_hints_this_tick = 0;
        if !self.is_bootstrapped() {
            return;
        }
        self.adaptive_tick(now);
        if self.tick & 7 == 0 {
            self.ping_some(now);
        }
        self.refresh_in = self.refresh_in.saturating_sub(1);
        if (self.tick & 63 == 0 && self.table.len() < K) || self.refresh_in == 0 {
            self.refresh(now);
        }
    }

    /// dht-rpc `_onwakeup`: everything looks old (repings soon), refresh next tick, and an
    /// adaptive node goes back to ephemeral until it is stable again.
    pub(super) fn on_wakeup(&mut self) {
        self.tick += 2 * OLD_NODE;
        // Lands two ticks before the next multiple of 8 (a ping round soon).
        self.tick = self.tick + 6 - (self.tick & 7);
        self.stable_ticks = MORE_STABLE_TICKS;
        self.refresh_in = 1;
        self.last_checked_host = None;
        if self.cfg.adaptive && !self.ephemeral && self.cfg.public_addr.is_none() {
            self.ephemeral = true;
        }
    }

    pub(super) fn ping_some(&mut self, now: Instant) {
        let mut nodes: Vec<TableNode> = self.table.iter().cloned().collect();
        if nodes.is_empty() {
            self.refresh(now);
            return;
        }
        nodes.sort_by_key(|n| n.pinged);
        let tick = self.tick;
        let mut cnt = if self.inflight.len() > 2 { 3 } else { 5 };
        if nodes.first().is_some_and(|n| tick - n.pinged < RECENT_NODE) {
            cnt = 2;
        }
        for n in nodes.into_iter().take(cnt) {
            if n.pinged != tick {
                self.check(now, n.id, n.addr);
            }
        }
    }

    /// Runs a background FIND_NODE walk toward a random table node (or our id).
    pub fn refresh(&mut self, now: Instant) {
        let nodes: Vec<&TableNode> = self.table.iter().collect();
        let target = if nodes.is_empty() {
            *self.table.id()
        } else {
            let i = self.rng.gen_range(0..nodes.len());
            nodes.get(i).map_or(*self.table.id(), |n| n.id)
        };
        let mut opts = QueryOptions::new(target, true, commands::FIND_NODE, None);
        opts.concurrency = 2;
        let _ = self.query(now, opts);
    }
}
