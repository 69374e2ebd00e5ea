//! DHT datagrams into a HyperDHT node, the production entry for every DHT datagram.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::Cursor;
use crate::dht::{Message, RpcConfig, RpcNode, SocketKind};
use crate::hyperdht::{HyperDhtCore, store};

fn dht_peer(i: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, i), 6000)
}

/// A non-ephemeral node (it answers every command) with a public address.
fn dht_node(now: Instant) -> HyperDhtCore {
    let mut cfg = RpcConfig::new(vec![], 5000, [1; 32]);
    cfg.ephemeral = false;
    cfg.public_addr = Some(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 5000));
    let mut n = HyperDhtCore::new(RpcNode::new(cfg));
    n.handle_timeout(now);
    dht_drain(&mut n);
    n
}

fn dht_drain(n: &mut HyperDhtCore) {
    let mut sent = 0;
    while let Some(t) = n.poll_transmit() {
        sent += 1;
        assert!(sent < 10_000, "poll_transmit does not terminate");
        // What we send must decode (a reply always names its tid and addressee).
        assert!(
            Message::decode(&t.payload).is_ok(),
            "we sent an undecodable datagram"
        );
    }
    while n.poll_event().is_some() {}
}

/// Decodes the datagram as dht-rpc does and checks the round trip `decode(encode(m)) == m`.
fn check_dht_message(bytes: &[u8]) {
    if let Ok(m) = Message::decode(bytes) {
        let enc = match &m {
            Message::Request(r) => r.encode(),
            Message::Response(r) => r.encode(),
        };
        assert_eq!(
            Message::decode(&enc),
            Ok(m),
            "dht message does not round-trip"
        );
    }
}

/// Feeds a HyperDHT node (the production entry for every DHT datagram,
/// [`HyperDhtCore::handle_datagram`]) a sequence of datagrams from a few sources, with time
/// passing; checks each datagram's decode round trip, that everything the node sends decodes,
/// and that its tables stay bounded.
pub fn dht_messages(data: &[u8]) {
    let mut input = Cursor { data };
    let start = Instant::now();
    let mut now = start;
    let mut node = dht_node(now);
    let mut datagrams = 0;
    while !input.is_empty() && datagrams < 64 {
        datagrams += 1;
        let head = input.byte();
        let len = usize::from(input.u16() % 1500);
        let bytes = input.take(len);
        check_dht_message(bytes);
        let socket = if head & 1 == 0 {
            SocketKind::Server
        } else {
            SocketKind::Client
        };
        node.handle_datagram(now, socket, dht_peer(head >> 4), bytes);
        if head & 2 != 0 {
            now += Duration::from_millis(u64::from(head >> 2) * 100);
            node.handle_timeout(now);
        }
        dht_drain(&mut node);
    }
    assert!(node.dht().inflight_len() <= 16);
    let (targets, records, forwards) = node.store().sizes();
    assert!(targets <= store::MAX_TARGETS && records <= 3000 && forwards <= 3000);
    assert!(node.dht().table().len() <= 256 * 20);
}
