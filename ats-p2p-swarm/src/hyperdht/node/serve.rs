//! The node side: answering LOOKUP, FIND_PEER, ANNOUNCE / UNANNOUNCE and the value commands from
//! the record and value stores (PEER_HANDSHAKE / PEER_HOLEPUNCH are in `router`).

use super::*;

impl HyperDhtCore {
    pub(super) fn on_request(&mut self, now: Instant, req: IncomingRequest) {
        match req.command {
            commands::PEER_HANDSHAKE => return self.on_peer_handshake(now, req),
            commands::PEER_HOLEPUNCH => return self.on_peer_holepunch(now, req),
            _ => {}
        }
        let Some(own_id) = self.dht.id() else {
            self.dht.error_reply(&req, errors::UNKNOWN_COMMAND, false);
            return;
        };
        match req.command {
            commands::FIND_PEER => {
                let Some(target) = req.target else { return };
                let rec = self.store.forward(now, &target).map(|f| f.record.clone());
                self.dht.reply(&req, rec, true, true);
            }
            commands::LOOKUP => {
                let Some(target) = req.target else { return };
                let (mut records, bump) = self.store.records(now, &target, LOOKUP_RECORDS);
                let fwd = self
                    .store
                    .forward(now, &target)
                    .map(|f| f.record.as_slice());
                if let Some(f) = fwd
                    && records.len() < LOOKUP_RECORDS
                {
                    records.push(f);
                }
                // An unproven source gets the records that fit its reply budget (the reply's
                // fixed part, id and token aside); the rest of a flood's replies stay small.
                if let Some(budget) = self.dht.reply_budget(&req) {
                    let room = budget.saturating_sub(REPLY_OVERHEAD);
                    while !records.is_empty()
                        && LookupReply::encode_raw(&records, bump).len() > room
                    {
                        records.pop();
                    }
                }
                let value = (!records.is_empty()).then(|| LookupReply::encode_raw(&records, bump));
                self.dht.reply(&req, value, true, true);
            }
            commands::ANNOUNCE | commands::UNANNOUNCE => self.on_announce(now, own_id, req),
            commands::MUTABLE_PUT | commands::IMMUTABLE_PUT => {
                let (Some(target), Some(_), Some(value)) =
                    (req.target, req.token, req.value.as_deref())
                else {
                    return;
                };
                let r = if req.command == commands::MUTABLE_PUT {
                    self.values.put_mutable(now, &target, value)
                } else {
                    self.values.put_immutable(now, &target, value)
                };
                match r {
                    Ok(()) => self.dht.reply(&req, None, true, true),
                    Err(PutError::Drop) => {}
                    Err(PutError::SeqReused) => {
                        self.dht.error_reply(&req, error_codes::SEQ_REUSED, false)
                    }
                    Err(PutError::SeqTooLow) => {
                        self.dht.error_reply(&req, error_codes::SEQ_TOO_LOW, false)
                    }
                }
            }
            commands::MUTABLE_GET => {
                let Some(target) = req.target else { return };
                let Some(seq) = req
                    .value
                    .as_deref()
                    .and_then(|v| Reader::new(v).uint().ok())
                else {
                    return;
                };
                let value = self
                    .values
                    .get_mutable(now, &target)
                    .filter(|v| v.seq >= seq)
                    .map(MutableValue::encode);
                self.dht.reply(&req, value, true, true);
            }
            commands::IMMUTABLE_GET => {
                let Some(target) = req.target else { return };
                let value = self.values.get_immutable(now, &target).map(<[u8]>::to_vec);
                self.dht.reply(&req, value, true, true);
            }
            _ => self.dht.error_reply(&req, errors::UNKNOWN_COMMAND, false),
        }
    }

    pub(super) fn on_announce(&mut self, now: Instant, own_id: Id, req: IncomingRequest) {
        let (Some(target), Some(token)) = (req.target, req.token) else {
            return;
        };
        let Some(ann) = req.value.as_deref().and_then(|v| Announce::decode(v).ok()) else {
            return;
        };
        let (Some(mut peer), Some(sig)) = (ann.peer, ann.signature) else {
            // Peer-less refresh announces are not supported: ignored, as hyperdht ignores
            // unknown refresh tokens.
            return;
        };
        let unannounce = req.command == commands::UNANNOUNCE;
        let nsv = if unannounce {
            ns::unannounce()
        } else {
            ns::announce()
        };
        if !verify_announce(
            &nsv,
            &target,
            &own_id,
            &token,
            &peer,
            ann.refresh.as_ref(),
            &sig,
        ) {
            trace!(from = %req.from, "announce with a bad signature dropped");
            return;
        }
        let self_announce = hash(&peer.public_key) == target;
        if unannounce {
            if self_announce {
                self.store.remove_forward(&target);
            }
            self.store.remove_record(&target, &peer.public_key);
        } else {
            peer.relay_addresses.truncate(MAX_RELAY_ADDRESSES_STORED);
            let record = peer.encode();
            if self_announce {
                self.store.set_forward(now, target, req.from, record);
                self.store.remove_record(&target, &peer.public_key);
            } else {
                self.store.add_record(now, target, peer.public_key, record);
                self.store.bump(&target, ann.bump, self.wall_ms);
            }
        }
        self.dht.reply(&req, None, false, false);
    }
}
