//! Answering requests: the internal dht-rpc commands, application requests as events, and
//! replies cut to an unproven source's budget.

use super::*;

impl RpcNode {
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

    pub(super) fn on_request(
        &mut self,
        now: Instant,
        socket: SocketKind,
        from: SocketAddrV4,
        req: Request,
        external: bool,
    ) {
        if let Some(t) = req.token
            && t != self.token(from.ip(), 1)
            && t != self.token(from.ip(), 0)
        {
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
                        if let Some(n) = self.table.get(&id)
                            && n.pinged < tick
                        {
                            let addr = n.addr;
                            self.check(now, id, addr);
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
}
