//! Per-source limits and bounded event queues of the DHT (issue #12): a LOOKUP flood from one
//! source gets a bounded number of bounded replies, a second source is still answered in full,
//! replies to an unproven source stay within the amplification cap, a full event queue never
//! loses a completion, and a listener that does not read loses relayed handshakes counted, not
//! silently. The sans-io nodes run without sockets; the listener test runs on loopback.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use ats_p2p_swarm::KeyPair;
use ats_p2p_swarm::dht::config::MAX_EVENTS;
use ats_p2p_swarm::dht::{
    Event, Message, Request, Response, RpcConfig, RpcNode, SocketKind, SourceLimits, UserRequest,
    hash,
};
use ats_p2p_swarm::hyperdht::crypto::{ns, sign_announce};
use ats_p2p_swarm::hyperdht::messages::{Announce, Handshake, LookupReply, Mode, PeerRecord};
use ats_p2p_swarm::hyperdht::{
    DhtConfig, DhtNode, HyperDhtCore, HyperEvent, MAX_HYPER_EVENTS, commands,
};

const SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 49737);
const ANNOUNCER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 5000);
const ATTACKER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 66), 6000);
const HONEST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 77), 7000);
/// Records announced under the topic (the most a LOOKUP returns).
const RECORDS: usize = 20;
/// LOOKUPs in a flood.
const FLOOD: usize = 2000;
const TOPIC: [u8; 32] = [7; 32];

/// A persistent HyperDHT node at `SERVER` with a full-ish routing table and `RECORDS` records
/// (three relay addresses each) under `TOPIC`: the worst case for reply size.
fn loaded_server(limits: SourceLimits, now: Instant) -> HyperDhtCore {
    let mut cfg = RpcConfig::new(Vec::new(), SERVER.port(), [3; 32]);
    cfg.public_addr = Some(SERVER);
    cfg.ephemeral = false;
    cfg.limits = limits;
    let mut node = HyperDhtCore::new(RpcNode::new(cfg));
    node.handle_timeout(now);
    for i in 0..40u8 {
        node.dht_mut()
            .add_node(SocketAddrV4::new(Ipv4Addr::new(10, 1, i, 1), 4000));
    }
    drain(&mut node);
    let token = ask(&mut node, now, ANNOUNCER, lookup(1, None))
        .token
        .expect("a token for the announcer");
    let server_id = node.dht().id().expect("persistent");
    for i in 0..RECORDS {
        let kp = KeyPair::generate();
        let peer = PeerRecord {
            public_key: *kp.public_key().as_bytes(),
            relay_addresses: (0..3u8)
                .map(|r| SocketAddrV4::new(Ipv4Addr::new(10, 2, r, 1), 4000))
                .collect(),
        };
        let signature = sign_announce(
            &ns::announce(),
            &TOPIC,
            &server_id,
            &token,
            &peer,
            None,
            &kp,
        );
        let value = Announce {
            peer: Some(peer),
            refresh: None,
            signature: Some(signature),
            bump: 0,
        }
        .encode();
        let req = Request {
            tid: 100 + i as u16,
            to: SERVER,
            id: None,
            token: Some(token),
            internal: false,
            command: commands::ANNOUNCE,
            target: Some(TOPIC),
            value: Some(value),
        };
        let res = ask(&mut node, now, ANNOUNCER, req.encode());
        assert_eq!(res.error, 0, "announce {i} accepted");
    }
    assert_eq!(node.store().sizes().1, RECORDS);
    node
}

fn lookup(tid: u16, token: Option<[u8; 32]>) -> Vec<u8> {
    Request {
        tid,
        to: SERVER,
        id: None,
        token,
        internal: false,
        command: commands::LOOKUP,
        target: Some(TOPIC),
        value: None,
    }
    .encode()
}

fn drain(node: &mut HyperDhtCore) -> Vec<(SocketAddrV4, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(t) = node.poll_transmit() {
        out.push((t.to, t.payload));
    }
    while node.poll_event().is_some() {}
    out
}

fn decode_response(bytes: &[u8]) -> Response {
    match Message::decode(bytes).expect("a decodable reply") {
        Message::Response(r) => r,
        Message::Request(_) => panic!("a request where a reply was expected"),
    }
}

/// Sends one request from `from` and returns the single reply to it.
fn ask(node: &mut HyperDhtCore, now: Instant, from: SocketAddrV4, req: Vec<u8>) -> Response {
    node.handle_datagram(now, SocketKind::Server, from, &req);
    let replies: Vec<_> = drain(node)
        .into_iter()
        .filter(|(to, _)| *to == from)
        .collect();
    assert_eq!(replies.len(), 1, "one reply to {from}");
    decode_response(&replies[0].1)
}

fn records(res: &Response) -> usize {
    res.value.as_deref().map_or(0, |v| {
        LookupReply::decode(v).expect("a lookup reply").peers.len()
    })
}

/// Sends `n` LOOKUPs from `from` at `now`; returns (request bytes, replies, reply bytes).
fn flood(
    node: &mut HyperDhtCore,
    now: Instant,
    from: SocketAddrV4,
    n: usize,
) -> (usize, Vec<Response>, usize) {
    let mut sent = 0;
    let mut replies = Vec::new();
    let mut reply_bytes = 0;
    for i in 0..n {
        let req = lookup(i as u16, None);
        sent += req.len();
        node.handle_datagram(now, SocketKind::Server, from, &req);
        for (to, bytes) in drain(node) {
            assert_eq!(to, from, "replies go to the requester only");
            reply_bytes += bytes.len();
            replies.push(decode_response(&bytes));
        }
    }
    (sent, replies, reply_bytes)
}

#[test]
fn a_lookup_flood_gets_few_small_replies_and_an_honest_source_is_still_answered() {
    let now = Instant::now();
    let limits = SourceLimits::default();
    let mut node = loaded_server(limits, now);

    // The worst case an unproven source could draw without limits: one full reply.
    let full = ask(&mut node, now, HONEST, lookup(1, None));
    assert_eq!(records(&full), RECORDS, "a fresh source gets every record");
    assert_eq!(full.closer_nodes.len(), 20);
    let full_len = full.encode().len();

    let (sent, replies, reply_bytes) = flood(&mut node, now, ATTACKER, FLOOD);
    println!(
        "flood: {FLOOD} lookups ({sent} B) -> {} replies ({reply_bytes} B); one full reply is {full_len} B",
        replies.len()
    );
    assert!(
        replies.len() <= limits.request_burst as usize,
        "{} replies to one source at one instant",
        replies.len()
    );
    assert!(
        replies.iter().all(|r| r.error == 0),
        "truncated, never an error"
    );
    // Bounded by what the answered requests earned, not by the whole flood.
    let answered_bytes = replies.len() * sent / FLOOD;
    let cap = limits.amplification as usize * answered_bytes + limits.reply_credit as usize;
    assert!(
        reply_bytes <= cap,
        "{reply_bytes} B of replies over the {cap} B cap"
    );
    let stats = node.dht().limit_stats();
    assert_eq!(stats.requests_dropped as usize, FLOOD - replies.len());
    assert!(stats.replies_truncated > 0);

    // Another source is answered in full, at the same instant.
    let honest = ask(&mut node, now, HONEST, lookup(2, None));
    assert_eq!(records(&honest), RECORDS);
    assert_eq!(honest.closer_nodes.len(), 20);

    // The attacker's bucket refills with time: one more request is answered a second later.
    let later = now + Duration::from_secs(1);
    node.handle_datagram(later, SocketKind::Server, ATTACKER, &lookup(9999, None));
    assert!(drain(&mut node).iter().any(|(to, _)| *to == ATTACKER));
}

#[test]
fn replies_to_an_unproven_source_stay_within_the_amplification_cap() {
    let now = Instant::now();
    // No rate limit here: every request is answered, so the byte budget alone is measured.
    let limits = SourceLimits {
        request_burst: u32::MAX,
        requests_per_sec: u32::MAX,
        ..SourceLimits::default()
    };
    let mut node = loaded_server(limits, now);
    let (sent, replies, reply_bytes) = flood(&mut node, now, ATTACKER, FLOOD);
    let ratio = reply_bytes as f64 / sent as f64;
    println!("unproven source: {sent} B of lookups -> {reply_bytes} B of replies (x{ratio:.2})");
    assert_eq!(replies.len(), FLOOD, "every request answered, truncated");
    assert!(replies.iter().all(|r| r.error == 0 && r.token.is_some()));
    let cap = limits.amplification as usize * sent + limits.reply_credit as usize;
    assert!(reply_bytes <= cap, "{reply_bytes} B over the {cap} B cap");
    assert!(
        ratio <= f64::from(limits.amplification) + 0.1,
        "amplification x{ratio:.2}"
    );

    // A request with a valid token proved its source receives: a full reply.
    let token = replies.last().and_then(|r| r.token).expect("a token");
    let proven = ask(&mut node, now, ATTACKER, lookup(1, Some(token)));
    assert_eq!(records(&proven), RECORDS);
    assert_eq!(proven.closer_nodes.len(), 20);
}

#[test]
fn a_full_dht_event_queue_drops_incoming_requests_but_never_a_completion() {
    let now = Instant::now();
    let mut node = RpcNode::new(RpcConfig::new(Vec::new(), 49737, [5; 32]));
    node.handle_timeout(now);
    while node.poll_transmit().is_some() {}
    while node.poll_event().is_some() {}
    let peer = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4000);
    let id = node
        .request(
            now,
            UserRequest {
                to: peer,
                token: None,
                internal: false,
                command: 42,
                target: None,
                value: None,
                socket: None,
                retries: None,
            },
        )
        .unwrap();
    let sent = node.poll_transmit().expect("the request goes out");
    let Ok(Message::Request(sent)) = Message::decode(&sent.payload) else {
        panic!("a request");
    };
    // Fill the queue with application requests the driver has not drained.
    let extra = 100;
    for i in 0..MAX_EVENTS + extra {
        let req = Request {
            tid: i as u16,
            to: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 49737),
            id: None,
            token: None,
            internal: false,
            command: 42,
            target: None,
            value: None,
        };
        node.handle_datagram(now, SocketKind::Server, peer, &req.encode());
    }
    assert_eq!(node.limit_stats().events_dropped, extra as u64);
    // The reply to our own request still arrives.
    let reply = Response {
        tid: sent.tid,
        to: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 49737),
        id: None,
        token: None,
        closer_nodes: Vec::new(),
        error: 0,
        value: Some(vec![1]),
    };
    node.handle_datagram(now, SocketKind::Client, peer, &reply.encode());
    let mut requests = 0;
    let mut completed = false;
    while let Some(e) = node.poll_event() {
        match e {
            Event::Request(_) => requests += 1,
            Event::Response { request, .. } if request == id => completed = true,
            _ => {}
        }
    }
    assert_eq!(requests, MAX_EVENTS);
    assert!(completed, "the completion was lost in a full queue");
}

#[test]
fn a_full_hyperdht_event_queue_counts_dropped_handshakes_and_keeps_completions() {
    let now = Instant::now();
    let mut node = HyperDhtCore::new(RpcNode::new(RpcConfig::new(Vec::new(), 49737, [6; 32])));
    node.handle_timeout(now);
    drain(&mut node);
    let key = [9u8; 32];
    node.listen(hash(&key));
    let client = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4000);
    let extra = 10;
    for i in 0..MAX_HYPER_EVENTS + extra {
        let hs = Handshake {
            mode: Mode::FromClient,
            noise: vec![1; 48],
            peer_address: None,
            relay_address: None,
        };
        let req = Request {
            tid: i as u16,
            to: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 49737),
            id: None,
            token: None,
            internal: false,
            command: commands::PEER_HANDSHAKE,
            target: Some(hash(&key)),
            value: Some(hs.encode()),
        };
        node.handle_datagram(now, SocketKind::Server, client, &req.encode());
    }
    assert_eq!(node.events_dropped(), extra as u64);
    // A lookup with nowhere to go ends at once; its completion is queued behind the flood.
    let op = node.lookup(now, TOPIC).unwrap();
    let mut handshakes = 0;
    let mut done = false;
    while let Some(e) = node.poll_event() {
        match e {
            HyperEvent::PeerHandshake { .. } => handshakes += 1,
            HyperEvent::OpDone { op: o, .. } if o == op => done = true,
            _ => {}
        }
    }
    assert_eq!(handshakes, MAX_HYPER_EVENTS);
    assert!(done, "the lookup's completion was lost in a full queue");
}

#[tokio::test]
async fn a_listener_that_does_not_read_loses_handshakes_counted() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let node = DhtNode::bind(DhtConfig::new(Ipv4Addr::LOCALHOST, Vec::new()))
            .await
            .unwrap();
        let key = [4u8; 32];
        let mut rx = node.listen(&key).await.unwrap();
        let sender = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let sent = 200;
        for i in 0..sent {
            let hs = Handshake {
                mode: Mode::FromClient,
                noise: vec![i as u8; 48],
                peer_address: None,
                relay_address: None,
            };
            let req = Request {
                tid: i as u16,
                to: node.local_addr(),
                id: None,
                token: None,
                internal: false,
                command: commands::PEER_HANDSHAKE,
                target: Some(hash(&key)),
                value: Some(hs.encode()),
            };
            sender.send_to(&req.encode(), node.local_addr()).unwrap();
        }
        // Every handshake is either queued for the listener or counted as dropped.
        let mut dropped = 0;
        for _ in 0..200 {
            dropped = node.info().await.unwrap().server_events_dropped;
            if dropped as usize + rx.len() >= sent {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let queued = rx.len();
        println!("listener: {queued} queued, {dropped} dropped of {sent}");
        assert_eq!(queued + dropped as usize, sent);
        assert!(dropped > 0);
        let mut received = 0;
        while rx.try_recv().is_ok() {
            received += 1;
        }
        assert_eq!(received, queued);
        node.destroy().await;
    })
    .await
    .expect("test timed out");
}

/// Junk handshakes sent to a listening server beyond its deduplication table's size (1024): a
/// malformed msg1 is never remembered, so a real client still connects right after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_handshakes_beyond_the_dedup_table_do_not_lock_out_a_real_client() {
    use std::sync::Arc;

    use ats_p2p_swarm::PublicKey;
    use ats_p2p_swarm::hyperdht::{Bootstrap, Firewall, HyperDht};
    use rand::RngCore;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const JUNK: usize = 1100;
    tokio::time::timeout(Duration::from_secs(120), async {
        let local = Ipv4Addr::LOCALHOST;
        let boot = Bootstrap::spawn(SocketAddrV4::new(local, 0)).await.unwrap();
        let server_dht = HyperDht::bind(DhtConfig::new(local, vec![boot.addr()]))
            .await
            .unwrap();
        let server_dht = Arc::new(server_dht);
        let server_kp = KeyPair::generate();
        let allow_all: Firewall = Arc::new(|_: &PublicKey| true);
        let mut server = server_dht
            .listen(server_kp.clone(), allow_all)
            .await
            .unwrap();
        let to = server_dht.dht().local_addr();
        let target = hash(server_kp.public_key().as_bytes());
        let sender = tokio::net::UdpSocket::bind((local, 0)).await.unwrap();
        let mut rng = rand::thread_rng();
        for i in 0..JUNK {
            let mut noise = vec![0u8; 48 + i % 150];
            rng.fill_bytes(&mut noise);
            let hs = Handshake {
                mode: Mode::FromClient,
                noise,
                peer_address: None,
                relay_address: None,
            };
            let req = Request {
                tid: i as u16,
                to,
                id: None,
                token: None,
                internal: false,
                command: commands::PEER_HANDSHAKE,
                target: Some(target),
                value: Some(hs.encode()),
            };
            sender.send_to(&req.encode(), to).await.unwrap();
            // Paced below the listener's queue so that every one reaches the server's loop.
            if i % 16 == 15 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let info = server_dht.dht().info().await.unwrap();
        assert_eq!(
            info.server_events_dropped, 0,
            "every junk handshake reached the server"
        );

        let client_dht = HyperDht::bind(DhtConfig::new(local, vec![boot.addr()]))
            .await
            .unwrap();
        let client_kp = KeyPair::generate();
        let server_pk = server_kp.public_key();
        let (accepted, connected) =
            tokio::join!(server.accept(), client_dht.connect(&client_kp, &server_pk));
        let mut s = accepted.expect("the server accepts the real client");
        let mut c = connected.expect("the real client connects after the junk");
        c.write_all(b"ping").await.unwrap();
        c.flush().await.unwrap();
        let mut got = [0u8; 4];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
    })
    .await
    .expect("test timed out");
}

/// A relay's REPLY leg goes to a client this node never heard from (it reached the server
/// through another relay): it must not be held to that client's (empty) reply budget.
#[test]
fn a_relayed_reply_reaches_a_client_this_node_never_heard_from() {
    let now = Instant::now();
    let mut cfg = RpcConfig::new(Vec::new(), SERVER.port(), [8; 32]);
    cfg.public_addr = Some(SERVER);
    cfg.ephemeral = false;
    let mut relay = HyperDhtCore::new(RpcNode::new(cfg));
    relay.handle_timeout(now);
    drain(&mut relay);
    let server = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 5), 5000);
    let client = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 6), 6000);
    let hs = Handshake {
        mode: Mode::FromServer,
        noise: vec![2; 400],
        peer_address: Some(client),
        relay_address: None,
    };
    let req = Request {
        tid: 1,
        to: SERVER,
        id: None,
        token: None,
        internal: false,
        command: commands::PEER_HANDSHAKE,
        target: Some(TOPIC),
        value: Some(hs.encode()),
    };
    relay.handle_datagram(now, SocketKind::Server, server, &req.encode());
    let out = drain(&mut relay);
    let to_client: Vec<_> = out.iter().filter(|(to, _)| *to == client).collect();
    assert_eq!(to_client.len(), 1, "the REPLY leg reaches the client");
    let res = decode_response(&to_client[0].1);
    let reply = Handshake::decode(res.value.as_deref().unwrap()).unwrap();
    assert_eq!(reply.mode, Mode::Reply);
    assert_eq!(reply.noise.len(), 400);
}
