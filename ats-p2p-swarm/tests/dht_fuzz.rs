//! Bad input on the DHT socket: random, truncated, replayed and forged datagrams never panic,
//! never grow state without bound, and forged messages are rejected.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use ats_p2p_swarm::KeyPair;
use ats_p2p_swarm::dht::{
    Message, Request, Response, RpcConfig, RpcNode, SocketKind, hash, node_id,
};
use ats_p2p_swarm::hyperdht::commands;
use ats_p2p_swarm::hyperdht::crypto::{ns, sign_announce};
use ats_p2p_swarm::hyperdht::messages::{
    Announce, Handshake, Holepunch, HolepunchPayload, LookupReply, Mode, NoisePayload, PeerRecord,
};
use ats_p2p_swarm::hyperdht::{HyperDhtCore, store};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

fn me() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 5000)
}

fn peer(i: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, i), 6000)
}

fn bootstrapper(now: Instant) -> HyperDhtCore {
    let mut cfg = RpcConfig::new(vec![], 5000, [1; 32]);
    cfg.ephemeral = false;
    cfg.public_addr = Some(me());
    let mut n = HyperDhtCore::new(RpcNode::new(cfg));
    n.handle_timeout(now);
    drain(&mut n);
    n
}

fn drain(n: &mut HyperDhtCore) -> Vec<Response> {
    let mut out = Vec::new();
    while let Some(t) = n.poll_transmit() {
        if let Ok(Message::Response(r)) = Message::decode(&t.payload) {
            out.push(r);
        }
    }
    while n.poll_event().is_some() {}
    out
}

fn request(
    tid: u16,
    token: Option<[u8; 32]>,
    command: u64,
    target: [u8; 32],
    value: Option<Vec<u8>>,
) -> Vec<u8> {
    Request {
        tid,
        to: me(),
        id: None,
        token,
        internal: false,
        command,
        target: Some(target),
        value,
    }
    .encode()
}

fn valid_samples() -> Vec<Vec<u8>> {
    let kp = KeyPair::from_seed([3; 32]);
    let p = PeerRecord {
        public_key: *kp.public_key().as_bytes(),
        relay_addresses: vec![peer(1)],
    };
    let ann = Announce {
        peer: Some(p.clone()),
        refresh: None,
        signature: Some([7; 64]),
        bump: 5,
    }
    .encode();
    let hs = Handshake {
        mode: Mode::FromClient,
        noise: vec![1; 40],
        peer_address: Some(peer(2)),
        relay_address: None,
    }
    .encode();
    let hp = Holepunch {
        mode: Mode::FromClient,
        id: 1,
        payload: vec![2; 30],
        peer_address: Some(peer(3)),
    }
    .encode();
    vec![
        request(1, None, commands::LOOKUP, [9; 32], None),
        request(2, Some([1; 32]), commands::ANNOUNCE, [9; 32], Some(ann)),
        request(3, None, commands::PEER_HANDSHAKE, [9; 32], Some(hs)),
        request(4, None, commands::PEER_HOLEPUNCH, [9; 32], Some(hp)),
        Response {
            tid: 5,
            to: me(),
            id: Some(node_id(&peer(4))),
            token: Some([4; 32]),
            closer_nodes: vec![peer(5), peer(6)],
            error: 0,
            value: Some(vec![1, 2, 3]),
        }
        .encode(),
    ]
}

#[test]
fn decoders_never_panic() {
    let mut runner = TestRunner::new(crate::common::proptest_config(2000, 0x5eed_3004));
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..300), |bytes| {
            let _ = Message::decode(&bytes);
            let _ = Announce::decode(&bytes);
            let _ = Handshake::decode(&bytes);
            let _ = Holepunch::decode(&bytes);
            let _ = NoisePayload::decode(&bytes);
            let _ = HolepunchPayload::decode(&bytes);
            let _ = LookupReply::decode(&bytes);
            let _ = PeerRecord::decode(&bytes);
            Ok(())
        })
        .unwrap();
}

#[test]
fn random_truncated_and_mutated_datagrams_keep_state_bounded() {
    let start = Instant::now();
    let node = std::cell::RefCell::new(bootstrapper(start));
    let samples = valid_samples();
    let mut runner = TestRunner::new(crate::common::proptest_config(3000, 0x5eed_3005));
    let strategy = (
        0usize..samples.len(),
        any::<u16>(),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        proptest::collection::vec(any::<u8>(), 0..200),
        any::<u8>(),
        0u8..4,
    );
    let t = std::cell::Cell::new(0u64);
    runner
        .run(&strategy, |(which, cut, flips, random, from, kind)| {
            t.set(t.get() + 1);
            let now = start + Duration::from_millis(t.get() * 10);
            let mut node = node.borrow_mut();
            let mut bytes = match kind {
                0 => random,
                _ => samples[which].clone(),
            };
            if kind == 2 {
                let n = bytes.len();
                bytes.truncate(usize::from(cut) % (n + 1));
            }
            if kind == 3 {
                for (pos, b) in flips {
                    let n = bytes.len();
                    if n > 0 {
                        bytes[pos % n] ^= b;
                    }
                }
            }
            node.handle_datagram(now, SocketKind::Server, peer(from), &bytes);
            node.handle_timeout(now);
            drain(&mut node);
            Ok(())
        })
        .unwrap();
    let node = node.into_inner();
    assert!(node.dht().inflight_len() <= 16);
    let (targets, records, forwards) = node.store().sizes();
    assert!(targets <= store::MAX_TARGETS && records <= 3000 && forwards <= 3000);
    assert!(node.dht().table().len() <= 256 * 20);
}

/// Gets a token from the node for `from` with a LOOKUP.
fn token_for(
    node: &mut HyperDhtCore,
    now: Instant,
    from: SocketAddrV4,
    target: [u8; 32],
) -> [u8; 32] {
    node.handle_datagram(
        now,
        SocketKind::Server,
        from,
        &request(100, None, commands::LOOKUP, target, None),
    );
    let res = drain(node);
    res.first()
        .and_then(|r| r.token)
        .expect("lookup reply carries a token")
}

#[test]
fn forged_announces_are_rejected() {
    let now = Instant::now();
    let mut node = bootstrapper(now);
    let node_id_ = node.dht().id().unwrap();
    let kp = KeyPair::from_seed([8; 32]);
    let topic = hash(b"forged");
    let from = peer(9);
    let token = token_for(&mut node, now, from, topic);
    let p = PeerRecord {
        public_key: *kp.public_key().as_bytes(),
        relay_addresses: vec![],
    };
    let good_sig = sign_announce(&ns::announce(), &topic, &node_id_, &token, &p, None, &kp);
    let ann = |sig: [u8; 64]| {
        Announce {
            peer: Some(p.clone()),
            refresh: None,
            signature: Some(sig),
            bump: 0,
        }
        .encode()
    };

    // Bad token: INVALID_TOKEN error with a fresh token, nothing stored.
    node.handle_datagram(
        now,
        SocketKind::Server,
        from,
        &request(
            1,
            Some([0; 32]),
            commands::ANNOUNCE,
            topic,
            Some(ann(good_sig)),
        ),
    );
    let res = drain(&mut node);
    assert_eq!(res.len(), 1);
    assert_eq!(res[0].error, 2);
    assert_eq!(res[0].token, Some(token));
    // Another host's token is not valid for this host.
    let other_token = token_for(
        &mut node,
        now,
        SocketAddrV4::new(Ipv4Addr::new(10, 9, 9, 9), 1),
        topic,
    );
    node.handle_datagram(
        now,
        SocketKind::Server,
        from,
        &request(
            1,
            Some(other_token),
            commands::ANNOUNCE,
            topic,
            Some(ann(good_sig)),
        ),
    );
    assert_eq!(drain(&mut node)[0].error, 2);
    // Bad signature: dropped silently.
    let mut bad = good_sig;
    bad[10] ^= 1;
    node.handle_datagram(
        now,
        SocketKind::Server,
        from,
        &request(2, Some(token), commands::ANNOUNCE, topic, Some(ann(bad))),
    );
    assert!(drain(&mut node).is_empty());
    // Signature by another key over the same record: dropped.
    let other = KeyPair::from_seed([9; 32]);
    let forged = sign_announce(&ns::announce(), &topic, &node_id_, &token, &p, None, &other);
    node.handle_datagram(
        now,
        SocketKind::Server,
        from,
        &request(3, Some(token), commands::ANNOUNCE, topic, Some(ann(forged))),
    );
    assert!(drain(&mut node).is_empty());
    assert_eq!(node.store().sizes().1, 0);

    // The genuine one is stored; replayed after the token expired it is refused.
    let genuine = request(
        4,
        Some(token),
        commands::ANNOUNCE,
        topic,
        Some(ann(good_sig)),
    );
    node.handle_datagram(now, SocketKind::Server, from, &genuine);
    assert_eq!(drain(&mut node)[0].error, 0);
    assert_eq!(node.store().sizes().1, 1);
    let later = now + Duration::from_secs(20);
    let mut t = now;
    while t < later {
        t += Duration::from_millis(750);
        node.handle_timeout(t);
    }
    drain(&mut node);
    node.handle_datagram(later, SocketKind::Server, from, &genuine);
    assert_eq!(
        drain(&mut node)[0].error,
        2,
        "replayed announce with an expired token"
    );

    // An id that does not match the source address is ignored (no table entry).
    let forged_id = Request {
        tid: 9,
        to: me(),
        id: Some(node_id(&peer(77))),
        token: None,
        internal: true,
        command: 0,
        target: None,
        value: None,
    }
    .encode();
    node.handle_datagram(later, SocketKind::Server, peer(78), &forged_id);
    drain(&mut node);
    assert_eq!(node.dht().table().len(), 0);
    // A matching id is accepted.
    let real_id = Request {
        tid: 10,
        to: me(),
        id: Some(node_id(&peer(78))),
        token: None,
        internal: true,
        command: 0,
        target: None,
        value: None,
    }
    .encode();
    node.handle_datagram(later, SocketKind::Server, peer(78), &real_id);
    drain(&mut node);
    assert_eq!(node.dht().table().len(), 1);
}

#[test]
fn unsolicited_responses_are_ignored() {
    let now = Instant::now();
    let mut node = bootstrapper(now);
    for tid in 0..2000u16 {
        let r = Response {
            tid,
            to: me(),
            id: Some(node_id(&peer((tid % 200) as u8))),
            token: None,
            closer_nodes: vec![peer(1); 20],
            error: 0,
            value: None,
        }
        .encode();
        node.handle_datagram(now, SocketKind::Server, peer((tid % 200) as u8), &r);
    }
    drain(&mut node);
    assert_eq!(
        node.dht().table().len(),
        0,
        "responses without a request must not add nodes"
    );
}
