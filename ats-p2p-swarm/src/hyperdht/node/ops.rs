//! The client side: LOOKUP / FIND_PEER / FIND_NODE walks, announces and puts with their commit
//! phase, and gets; each an operation ([`OpId`]) that ends in one [`HyperEvent::OpDone`].

use super::*;

impl HyperDhtCore {
    pub(super) fn start(
        &mut self,
        now: Instant,
        target: Id,
        command: u64,
        kind: OpKind,
    ) -> Result<OpId, RequestError> {
        self.start_with(now, target, command, None, kind)
    }

    pub(super) fn start_with(
        &mut self,
        now: Instant,
        target: Id,
        command: u64,
        value: Option<Vec<u8>>,
        kind: OpKind,
    ) -> Result<OpId, RequestError> {
        if self.ops.len() >= MAX_OPS {
            return Err(RequestError::Busy);
        }
        let internal = matches!(kind, OpKind::FindNode);
        let q = self
            .dht
            .query(now, QueryOptions::new(target, internal, command, value))?;
        let id = OpId(self.next_op);
        self.next_op += 1;
        self.ops.insert(
            id,
            Op {
                target,
                kind,
                results: Vec::new(),
                values: Vec::new(),
                commits_pending: 0,
                accepted: 0,
                closest: Vec::new(),
                relays: Vec::new(),
            },
        );
        self.by_query.insert(q, id);
        self.process(now);
        Ok(id)
    }

    /// LOOKUP walk for `topic`; ends with [`OpResult::Lookup`].
    pub fn lookup(&mut self, now: Instant, topic: Id) -> Result<OpId, RequestError> {
        self.start(now, topic, commands::LOOKUP, OpKind::Lookup)
    }

    /// FIND_PEER walk for `H(public_key)`; ends with [`OpResult::Lookup`] (one record per node).
    pub fn find_peer(&mut self, now: Instant, public_key: &[u8; 32]) -> Result<OpId, RequestError> {
        self.start(now, hash(public_key), commands::FIND_PEER, OpKind::FindPeer)
    }

    /// FIND_NODE walk; ends with [`OpResult::Closest`].
    pub fn find_node(&mut self, now: Instant, target: Id) -> Result<OpId, RequestError> {
        self.start(
            now,
            target,
            crate::dht::commands::FIND_NODE,
            OpKind::FindNode,
        )
    }

    /// LOOKUP walk, then a signed ANNOUNCE to each of the closest nodes.
    pub fn announce(
        &mut self,
        now: Instant,
        topic: Id,
        key_pair: KeyPair,
        relay_addresses: Vec<SocketAddrV4>,
    ) -> Result<OpId, RequestError> {
        let kind = OpKind::Announce {
            key_pair: Box::new(key_pair),
            relay_addresses,
            unannounce: false,
        };
        self.start(now, topic, commands::LOOKUP, kind)
    }

    /// LOOKUP walk, then a signed UNANNOUNCE to each of the closest nodes.
    pub fn unannounce(
        &mut self,
        now: Instant,
        topic: Id,
        key_pair: KeyPair,
    ) -> Result<OpId, RequestError> {
        self.store
            .remove_record(&topic, key_pair.public_key().as_bytes());
        if hash(key_pair.public_key().as_bytes()) == topic {
            self.store.remove_forward(&topic);
        }
        let kind = OpKind::Announce {
            key_pair: Box::new(key_pair),
            relay_addresses: Vec::new(),
            unannounce: true,
        };
        self.start(now, topic, commands::LOOKUP, kind)
    }

    /// IMMUTABLE_GET walk, then IMMUTABLE_PUT of `value` to the closest nodes (target
    /// `H(value)`); ends with [`OpResult::Announced`].
    pub fn immutable_put(&mut self, now: Instant, value: Vec<u8>) -> Result<OpId, RequestError> {
        let target = hash(&value);
        let kind = OpKind::Put {
            command: commands::IMMUTABLE_PUT,
            value,
        };
        self.start(now, target, commands::IMMUTABLE_GET, kind)
    }

    /// IMMUTABLE_GET walk; ends with [`OpResult::Values`] (check `H(value) == target`).
    pub fn immutable_get(&mut self, now: Instant, target: Id) -> Result<OpId, RequestError> {
        self.start(now, target, commands::IMMUTABLE_GET, OpKind::Get)
    }

    /// MUTABLE_GET walk, then a signed MUTABLE_PUT to the closest nodes (target `H(pk)`).
    pub fn mutable_put(
        &mut self,
        now: Instant,
        key_pair: &KeyPair,
        seq: u64,
        value: Vec<u8>,
    ) -> Result<OpId, RequestError> {
        let pk = *key_pair.public_key().as_bytes();
        let signed = MutableValue::sign(key_pair, seq, value);
        let kind = OpKind::Put {
            command: commands::MUTABLE_PUT,
            value: encode_mutable_put(&pk, &signed),
        };
        let mut w = Writer::new();
        w.uint(0);
        self.start_with(
            now,
            hash(&pk),
            commands::MUTABLE_GET,
            Some(w.into_vec()),
            kind,
        )
    }

    /// MUTABLE_GET walk for values with seq ≥ `seq`; ends with [`OpResult::Values`] (decode with
    /// [`MutableValue::decode`] and check [`MutableValue::verify`]).
    pub fn mutable_get(
        &mut self,
        now: Instant,
        public_key: &[u8; 32],
        seq: u64,
    ) -> Result<OpId, RequestError> {
        let mut w = Writer::new();
        w.uint(seq);
        self.start_with(
            now,
            hash(public_key),
            commands::MUTABLE_GET,
            Some(w.into_vec()),
            OpKind::Get,
        )
    }

    /// A raw request; its outcome arrives as [`HyperEvent::Dht`].
    pub fn request(&mut self, now: Instant, req: UserRequest) -> Result<RequestId, RequestError> {
        let r = self.dht.request(now, req);
        self.process(now);
        r
    }

    pub(super) fn on_query_reply(&mut self, query: QueryId, reply: QueryReply) {
        let Some(op) = self.by_query.get(&query).and_then(|o| self.ops.get_mut(o)) else {
            return;
        };
        if matches!(op.kind, OpKind::Get) {
            if let Some(v) = reply.value
                && op.values.len() < MAX_LOOKUP_RESULTS
            {
                op.values.push((reply.from, v));
            }
            return;
        }
        if !matches!(op.kind, OpKind::Lookup | OpKind::FindPeer)
            || op.results.len() >= MAX_LOOKUP_RESULTS
        {
            return;
        }
        let Some(value) = reply.value.as_deref() else {
            return;
        };
        // Decode by the command asked: a LOOKUP reply is `array(peer) ‖ bump`, a FIND_PEER
        // reply is one peer record.
        let result = if matches!(op.kind, OpKind::FindPeer) {
            PeerRecord::decode(value).ok().map(|p| LookupResult {
                from: reply.from,
                peers: vec![p],
                bump: 0,
            })
        } else {
            LookupReply::decode(value).ok().map(|l| LookupResult {
                from: reply.from,
                peers: l.peers,
                bump: l.bump,
            })
        };
        if let Some(r) = result {
            op.results.push(r);
        }
    }

    pub(super) fn on_query_done(
        &mut self,
        now: Instant,
        query: QueryId,
        closest: Vec<QueryReply>,
        error: Option<RequestError>,
    ) {
        let Some(op_id) = self.by_query.remove(&query) else {
            return;
        };
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        let result = match &op.kind {
            OpKind::Lookup | OpKind::FindPeer => OpResult::Lookup(std::mem::take(&mut op.results)),
            OpKind::FindNode => OpResult::Closest(closest),
            OpKind::Get => OpResult::Values(std::mem::take(&mut op.values)),
            OpKind::Put { command, value } => {
                let (command, value, target) = (*command, value.clone(), op.target);
                op.closest = closest.iter().map(|r| r.from).collect();
                let mut sent = Vec::new();
                for r in &closest {
                    let Some(token) = r.token else { continue };
                    let req = UserRequest {
                        to: r.from,
                        token: Some(token),
                        internal: false,
                        command,
                        target: Some(target),
                        value: Some(value.clone()),
                        socket: None,
                        retries: None,
                    };
                    if let Ok(rid) = self.dht.request(now, req) {
                        sent.push(rid);
                    }
                }
                let n = sent.len();
                for rid in sent {
                    self.by_request.insert(rid, op_id);
                }
                if let Some(op) = self.ops.get_mut(&op_id) {
                    op.commits_pending = n;
                }
                if n > 0 {
                    self.process(now);
                    return;
                }
                OpResult::Failed(error.unwrap_or(RequestError::TooFewNodes))
            }
            OpKind::Announce {
                key_pair,
                relay_addresses,
                unannounce,
            } => {
                let (key_pair, relay_addresses, unannounce) =
                    (key_pair.clone(), relay_addresses.clone(), *unannounce);
                let target = op.target;
                op.closest = closest.iter().map(|r| r.from).collect();
                let mut sent = Vec::new();
                for r in &closest {
                    let (Some(token), Some(node_id)) = (r.token, r.id) else {
                        continue;
                    };
                    let peer = PeerRecord {
                        public_key: *key_pair.public_key().as_bytes(),
                        relay_addresses: if unannounce {
                            Vec::new()
                        } else {
                            relay_addresses.clone()
                        },
                    };
                    let nsv = if unannounce {
                        ns::unannounce()
                    } else {
                        ns::announce()
                    };
                    let signature =
                        sign_announce(&nsv, &target, &node_id, &token, &peer, None, &key_pair);
                    let value = Announce {
                        peer: Some(peer),
                        refresh: None,
                        signature: Some(signature),
                        bump: 0,
                    }
                    .encode();
                    let req = UserRequest {
                        to: r.from,
                        token: Some(token),
                        internal: false,
                        command: if unannounce {
                            commands::UNANNOUNCE
                        } else {
                            commands::ANNOUNCE
                        },
                        target: Some(target),
                        value: Some(value),
                        socket: None,
                        retries: None,
                    };
                    if let Ok(rid) = self.dht.request(now, req) {
                        sent.push(rid);
                    }
                }
                let n = sent.len();
                for rid in sent {
                    self.by_request.insert(rid, op_id);
                }
                if let Some(op) = self.ops.get_mut(&op_id) {
                    op.commits_pending = n;
                }
                if n > 0 {
                    self.process(now);
                    return;
                }
                OpResult::Failed(error.unwrap_or(RequestError::TooFewNodes))
            }
        };
        self.ops.remove(&op_id);
        self.push(HyperEvent::OpDone { op: op_id, result });
    }

    /// One commit answered: `relay` is the accepting node and our address as it saw us.
    pub(super) fn on_commit(&mut self, op_id: OpId, relay: Option<RelayInfo>) {
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        op.commits_pending = op.commits_pending.saturating_sub(1);
        if let Some(relay) = relay {
            op.accepted += 1;
            op.relays.push(relay);
        }
        if op.commits_pending > 0 {
            return;
        }
        let result = if op.accepted > 0 {
            OpResult::Announced {
                accepted: op.accepted,
                closest: std::mem::take(&mut op.closest),
                relays: std::mem::take(&mut op.relays),
            }
        } else {
            OpResult::Failed(RequestError::TooFewNodes)
        };
        self.ops.remove(&op_id);
        self.push(HyperEvent::OpDone { op: op_id, result });
    }
}
