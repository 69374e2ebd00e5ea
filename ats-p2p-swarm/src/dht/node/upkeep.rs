//! Routing-table upkeep: adding nodes seen on the network, re-pinging full rows, liveness
//! checks and DOWN_HINTs, the background tick and refresh walks.

use super::*;

impl RpcNode {
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
