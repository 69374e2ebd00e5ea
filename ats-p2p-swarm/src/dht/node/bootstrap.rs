//! Bootstrap walk, NAT sampling and the firewall test (dht-rpc `_bootstrap`, `_checkIfFirewalled`).

use super::*;

impl RpcNode {
    pub(super) fn start_bootstrap(&mut self, now: Instant) {
        self.quick_nat_pending = self.firewalled && self.cfg.ephemeral;
        self.walk(now, 0);
    }

    pub(super) fn walk(&mut self, now: Instant, round: u8) {
        let target = *self.table.id();
        // The query may finish synchronously (no seeds), so the phase is set first.
        self.phase = Phase::Walking {
            query: QueryId(self.next_query),
            round,
        };
        if self
            .query(
                now,
                QueryOptions::new(target, true, commands::FIND_NODE, None),
            )
            .is_err()
        {
            self.finish_bootstrap();
        }
    }

    pub(super) fn finish_bootstrap(&mut self) {
        self.phase = Phase::Done;
        if !self.walked_once {
            self.walked_once = true;
            self.push_event(Event::Walked);
        }
        if !self.bootstrapped_once {
            self.bootstrapped_once = true;
            self.push_event(Event::Bootstrapped);
        }
    }

    /// Adaptive mode (dht-rpc `adaptive`): after [`STABLE_TICKS`] on one network, test the
    /// firewall again and become persistent if reachable.
    pub(super) fn adaptive_tick(&mut self, now: Instant) {
        if !self.cfg.adaptive || !self.ephemeral || !matches!(self.phase, Phase::Done) {
            return;
        }
        self.stable_ticks = self.stable_ticks.saturating_sub(1);
        if self.stable_ticks > 0 {
            return;
        }
        self.stable_ticks = MORE_STABLE_TICKS;
        if self.last_checked_host.is_some() && self.last_checked_host == self.nat.host() {
            return;
        }
        self.last_checked_host = self.nat.host();
        self.update_network_state(now, 1, false);
    }

    pub(super) fn on_quick_nat(&mut self, now: Instant, pong: bool) {
        self.quick_nat_inflight = false;
        if pong {
            self.test_nat = true;
        }
        if let Phase::AwaitQuickNat { round } = self.phase {
            self.on_walk_done(now, round);
        }
    }

    pub(super) fn on_walk_done(&mut self, now: Instant, round: u8) {
        let force_persistent = !self.cfg.ephemeral;
        if round >= 1 || (!self.test_nat && !force_persistent) {
            self.finish_bootstrap();
            return;
        }
        self.update_network_state(now, round, !force_persistent);
    }

    /// dht-rpc `_updateNetworkState`: firewall test, then unfirewalled and (unless
    /// `only_firewall`) persistent; ends with a walk of round `round + 1`.
    pub(super) fn update_network_state(&mut self, now: Instant, round: u8, only_firewall: bool) {
        if !self.ephemeral || (only_firewall && !self.firewalled) {
            self.finish_bootstrap();
            return;
        }
        if self.nat.host().is_none() || self.nat.port() == 0 {
            self.finish_bootstrap();
            return;
        }
        if !self.firewalled {
            self.become_unfirewalled(now, None, only_firewall, round);
            return;
        }
        // Firewall check: PING_NAT to the 5 most recent nodes, padded with bootstrap nodes.
        let mut targets: Vec<SocketAddrV4> = self
            .recent
            .iter()
            .rev()
            .filter_map(|id| self.table.get(id).map(|n| n.addr))
            .take(FIREWALL_CHECK_NODES)
            .collect();
        for b in &self.cfg.bootstrap {
            if targets.len() >= FIREWALL_CHECK_NODES {
                break;
            }
            if !targets.contains(b) {
                targets.push(*b);
            }
        }
        if targets.is_empty() {
            self.finish_bootstrap();
            return;
        }
        self.fw = Some(FwCheck {
            hosts: HashSet::new(),
            pongs: Vec::new(),
            asked: targets.len(),
        });
        let value = self.cfg.server_port.to_le_bytes().to_vec();
        let mut pending = 0;
        let sock = self.request_socket();
        for t in targets {
            if self
                .send_request(
                    now,
                    t,
                    None,
                    true,
                    commands::PING_NAT,
                    None,
                    Some(value.clone()),
                    sock,
                    DEFAULT_RETRIES,
                    Owner::FirewallCheck,
                )
                .is_ok()
            {
                pending += 1;
            }
        }
        self.phase = Phase::FirewallCheck {
            round,
            pending,
            only_firewall,
        };
        if pending == 0 {
            self.fw = None;
            self.finish_bootstrap();
        }
    }

    pub(super) fn on_fw_pong(&mut self, now: Instant, pong: Option<(SocketAddrV4, SocketAddrV4)>) {
        let Phase::FirewallCheck {
            round,
            pending,
            only_firewall,
        } = &mut self.phase
        else {
            return;
        };
        *pending = pending.saturating_sub(1);
        let (round, left, only_firewall) = (*round, *pending, *only_firewall);
        if let (Some(p), Some(fw)) = (pong, self.fw.as_mut()) {
            fw.pongs.push(p);
        }
        if left > 0 {
            return;
        }
        let Some(fw) = self.fw.take() else { return };
        let mut sampler = NatSampler::new();
        let mut count = 0;
        for (from, to) in &fw.pongs {
            if fw.hosts.contains(from.ip()) {
                count += 1;
                sampler.add(*to.ip(), to.port());
            }
        }
        let need = if fw.asked >= FIREWALL_CHECK_NODES {
            3
        } else {
            1
        };
        let open = count >= need
            && sampler.host().is_some()
            && sampler.host() == self.nat.host()
            && sampler.port() != 0
            && sampler.port() == self.cfg.server_port;
        debug!(count, open, "dht firewall check");
        if !open {
            self.finish_bootstrap();
            return;
        }
        self.become_unfirewalled(now, Some(sampler), only_firewall, round);
    }

    pub(super) fn become_unfirewalled(
        &mut self,
        now: Instant,
        sampler: Option<NatSampler>,
        only_firewall: bool,
        round: u8,
    ) {
        self.firewalled = false;
        let s = sampler.as_ref().unwrap_or(&self.nat);
        let (Some(host), port) = (s.host(), s.port()) else {
            self.walk(now, round + 1);
            return;
        };
        if host_differs(self.nat.host(), host) || port == 0 {
            self.walk(now, round + 1);
            return;
        }
        let addr = SocketAddrV4::new(host, port);
        // dht-rpc adopts the firewall-test samples and the table id `H(addr)` in both modes;
        // only a non-ephemeral node also becomes persistent.
        if let Some(s) = sampler {
            self.nat = s;
            self.bootstrap_samples.clear();
        }
        let id = node_id(&addr);
        if *self.table.id() != id {
            self.table.rekey(id);
        }
        if !only_firewall {
            self.ephemeral = false;
            self.push_event(Event::Persistent);
        }
        self.walk(now, round + 1);
    }
}

fn host_differs(a: Option<Ipv4Addr>, b: Ipv4Addr) -> bool {
    a != Some(b)
}
