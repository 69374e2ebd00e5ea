//! Deterministic in-memory network (`Net`): N sans-io HyperDHT nodes, a simulated clock and
//! seeded latency/loss. No sockets, no real time.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use ats_p2p_swarm::KeyPair;
use ats_p2p_swarm::dht::{RpcConfig, RpcNode, SocketKind, hash};
use ats_p2p_swarm::hyperdht::{HyperDhtCore, HyperEvent, OpId, OpResult};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SERVER_PORT: u16 = 10_000;
const CLIENT_PORT: u16 = 20_000;

fn server_addr(i: usize) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250 + 1) as u8),
        SERVER_PORT,
    )
}

fn client_addr(i: usize) -> SocketAddrV4 {
    SocketAddrV4::new(*server_addr(i).ip(), CLIENT_PORT)
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    seq: u64,
    to: SocketAddrV4,
    from: SocketAddrV4,
    payload: Vec<u8>,
}

/// N nodes on a simulated network.
struct Net {
    nodes: Vec<HyperDhtCore>,
    now: Instant,
    rng: StdRng,
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    loss: f64,
    latency: (u64, u64),
    done: HashMap<(usize, OpId), OpResult>,
    delivered: u64,
    /// Probability that a step also injects an adversarial datagram.
    attack: f64,
    captured: Vec<Vec<u8>>,
}

impl Net {
    fn new(seed: u64, loss: f64) -> Self {
        Self {
            nodes: Vec::new(),
            now: Instant::now(),
            rng: StdRng::seed_from_u64(seed),
            queue: BinaryHeap::new(),
            seq: 0,
            loss,
            latency: (2, 40),
            done: HashMap::new(),
            delivered: 0,
            attack: 0.0,
            captured: Vec::new(),
        }
    }

    /// Adds a node: the first one is a bootstrapper, the rest bootstrap from it.
    fn add(&mut self, persistent: bool) -> usize {
        self.add_with(persistent, false)
    }

    fn add_with(&mut self, persistent: bool, adaptive: bool) -> usize {
        let i = self.nodes.len();
        let mut seed = [0u8; 32];
        self.rng.fill(&mut seed);
        let boot = if i == 0 { vec![] } else { vec![server_addr(0)] };
        let mut cfg = RpcConfig::new(boot, SERVER_PORT, seed);
        cfg.ephemeral = !persistent;
        cfg.adaptive = adaptive;
        if i == 0 {
            cfg.public_addr = Some(server_addr(0));
        }
        self.nodes.push(HyperDhtCore::new(RpcNode::new(cfg)));
        self.nodes[i].handle_timeout(self.now);
        self.flush(i);
        i
    }

    fn locate(&self, addr: SocketAddrV4) -> Option<(usize, SocketKind)> {
        let [_, _, hi, lo] = addr.ip().octets();
        let i = usize::from(hi) * 250 + usize::from(lo).checked_sub(1)?;
        if i >= self.nodes.len() {
            return None;
        }
        match addr.port() {
            SERVER_PORT => Some((i, SocketKind::Server)),
            CLIENT_PORT => Some((i, SocketKind::Client)),
            _ => None,
        }
    }

    fn flush(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].poll_transmit() {
            let from = match t.socket {
                SocketKind::Server => server_addr(i),
                SocketKind::Client => client_addr(i),
            };
            if self.rng.gen_bool(self.loss) {
                continue;
            }
            let ms = self.rng.gen_range(self.latency.0..=self.latency.1);
            self.seq += 1;
            self.queue.push(Reverse(InFlight {
                at: self.now + Duration::from_millis(ms),
                seq: self.seq,
                to: t.to,
                from,
                payload: t.payload,
            }));
        }
        while let Some(e) = self.nodes[i].poll_event() {
            if let HyperEvent::OpDone { op, result } = e {
                self.done.insert((i, op), result);
            }
        }
    }

    /// Processes the earliest packet or timer; false when nothing is scheduled.
    fn step(&mut self) -> bool {
        let timer = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.poll_timeout().map(|t| (t, i)))
            .min();
        let packet = self.queue.peek().map(|Reverse(p)| p.at);
        match (timer, packet) {
            (None, None) => false,
            (Some((t, i)), p) if p.is_none_or(|p| t < p) => {
                self.now = self.now.max(t);
                self.nodes[i].handle_timeout(self.now);
                self.flush(i);
                true
            }
            _ => {
                let Reverse(p) = self.queue.pop().unwrap();
                self.now = self.now.max(p.at);
                if self.attack > 0.0 && self.rng.gen_bool(self.attack) {
                    self.inject();
                }
                if self.captured.len() < 500 {
                    self.captured.push(p.payload.clone());
                }
                if let Some((i, sock)) = self.locate(p.to) {
                    self.delivered += 1;
                    self.nodes[i].handle_datagram(self.now, sock, p.from, &p.payload);
                    self.flush(i);
                }
                true
            }
        }
    }

    /// One adversarial datagram: random bytes, a truncated or bit-flipped capture, or a replay,
    /// from a forged source to a random node.
    fn inject(&mut self) {
        let i = self.rng.gen_range(0..self.nodes.len());
        let from = if self.rng.gen_bool(0.5) {
            SocketAddrV4::new(Ipv4Addr::new(10, 9, 9, 9), self.rng.gen_range(1..u16::MAX))
        } else {
            server_addr(self.rng.gen_range(0..self.nodes.len()))
        };
        let mut bytes = if self.captured.is_empty() || self.rng.gen_bool(0.3) {
            let n = self.rng.gen_range(0..120);
            (0..n).map(|_| self.rng.r#gen()).collect()
        } else {
            self.captured[self.rng.gen_range(0..self.captured.len())].clone()
        };
        match self.rng.gen_range(0..3) {
            0 if !bytes.is_empty() => {
                let cut = self.rng.gen_range(0..bytes.len());
                bytes.truncate(cut);
            }
            1 if !bytes.is_empty() => {
                let at = self.rng.gen_range(0..bytes.len());
                bytes[at] ^= 1 << self.rng.gen_range(0..8);
            }
            _ => {}
        }
        let sock = if self.rng.gen_bool(0.5) {
            SocketKind::Server
        } else {
            SocketKind::Client
        };
        self.nodes[i].handle_datagram(self.now, sock, from, &bytes);
        self.flush(i);
    }

    /// Runs until `until` (simulated), bounded in steps.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        let mut steps = 0u64;
        while self.step() {
            steps += 1;
            assert!(steps < 20_000_000, "livelock");
            if self.now >= end {
                break;
            }
        }
        self.now = self.now.max(end);
    }

    /// Runs until node `i`'s op finished; returns it and the simulated time it took.
    fn wait_op(&mut self, i: usize, op: OpId) -> (OpResult, Duration) {
        let start = self.now;
        let mut steps = 0u64;
        while !self.done.contains_key(&(i, op)) {
            assert!(self.step(), "network went idle before op finished");
            steps += 1;
            assert!(steps < 5_000_000, "op did not finish");
            assert!(
                self.now - start < Duration::from_secs(120),
                "op took too long (simulated)"
            );
        }
        (self.done.remove(&(i, op)).unwrap(), self.now - start)
    }
}

fn build(n: usize, seed: u64, loss: f64) -> Net {
    let mut net = Net::new(seed, loss);
    net.add(true);
    for _ in 1..n {
        net.add(true);
        net.run_for(Duration::from_millis(200));
    }
    net.run_for(Duration::from_secs(30));
    net
}

fn found(r: &OpResult, pk: &[u8; 32]) -> bool {
    match r {
        OpResult::Lookup(l) => l
            .iter()
            .any(|x| x.peers.iter().any(|p| &p.public_key == pk)),
        _ => false,
    }
}

#[test]
fn thirty_nodes_bootstrap_announce_lookup_expire() {
    let mut net = build(30, 1, 0.0);
    let persistent = net.nodes.iter().filter(|n| n.dht().id().is_some()).count();
    assert_eq!(persistent, 30, "every node should become persistent");
    for (i, n) in net.nodes.iter().enumerate() {
        assert!(n.dht().is_bootstrapped(), "node {i} not bootstrapped");
        assert!(
            n.dht().table().len() >= 10,
            "node {i} table {}",
            n.dht().table().len()
        );
        assert!(n.dht().table().len() <= 29);
    }

    // Five announcers, every node looks each topic up.
    let mut lookup_times = Vec::new();
    let mut announce_times = Vec::new();
    for a in [3usize, 7, 12, 20, 29] {
        let kp = KeyPair::from_seed([a as u8; 32]);
        let topic = hash(format!("topic-{a}").as_bytes());
        let now = net.now;
        let op = net.nodes[a]
            .announce(now, topic, kp.clone(), vec![])
            .unwrap();
        let (r, t) = net.wait_op(a, op);
        announce_times.push(t);
        assert!(
            matches!(r, OpResult::Announced { accepted, .. } if accepted >= 10),
            "{r:?}"
        );
        for i in 0..net.nodes.len() {
            let now = net.now;
            let op = net.nodes[i].lookup(now, topic).unwrap();
            let (r, t) = net.wait_op(i, op);
            lookup_times.push(t);
            assert!(
                found(&r, kp.public_key().as_bytes()),
                "node {i} missed topic {a}"
            );
        }
    }
    lookup_times.sort();
    announce_times.sort();
    eprintln!(
        "in-memory (2-40 ms links): lookup median {:?} max {:?}; announce median {:?}",
        lookup_times[lookup_times.len() / 2],
        lookup_times.last().unwrap(),
        announce_times[announce_times.len() / 2]
    );

    // find_peer finds a self-announce (router forward).
    let server = KeyPair::from_seed([99; 32]);
    let target = hash(server.public_key().as_bytes());
    let now = net.now;
    let op = net.nodes[5]
        .announce(now, target, server.clone(), vec![])
        .unwrap();
    net.wait_op(5, op);
    let now = net.now;
    let op = net.nodes[17]
        .find_peer(now, server.public_key().as_bytes())
        .unwrap();
    let (r, _) = net.wait_op(17, op);
    assert!(found(&r, server.public_key().as_bytes()), "{r:?}");

    // Records expire after 20 minutes without refresh.
    net.run_for(Duration::from_secs(21 * 60));
    let topic = hash(b"topic-3");
    let now = net.now;
    let op = net.nodes[1].lookup(now, topic).unwrap();
    let (r, _) = net.wait_op(1, op);
    assert!(
        !found(&r, KeyPair::from_seed([3; 32]).public_key().as_bytes()),
        "record did not expire"
    );
    for n in &net.nodes {
        let (_, records, forwards) = n.store().sizes();
        assert_eq!(records + forwards, 0, "store not emptied by expiry");
        assert!(n.dht().inflight_len() < 100);
        assert!(n.dht().queries_len() < 10);
        // Tables survive 21 minutes of pings and refreshes.
        assert!(n.dht().table().len() >= 10);
    }
}

#[test]
fn lossy_network_still_finds_records() {
    let mut net = build(20, 7, 0.05);
    let kp = KeyPair::from_seed([42; 32]);
    let topic = hash(b"lossy");
    let now = net.now;
    let op = net.nodes[4]
        .announce(now, topic, kp.clone(), vec![])
        .unwrap();
    let (r, _) = net.wait_op(4, op);
    assert!(matches!(r, OpResult::Announced { .. }), "{r:?}");
    let mut hits = 0;
    for i in 0..net.nodes.len() {
        let now = net.now;
        let op = net.nodes[i].lookup(now, topic).unwrap();
        if found(&net.wait_op(i, op).0, kp.public_key().as_bytes()) {
            hits += 1;
        }
    }
    assert!(
        hits >= 19,
        "only {hits}/20 lookups found the record at 5% loss"
    );
}

#[test]
fn ephemeral_clients_use_the_network_but_are_not_stored() {
    let mut net = build(12, 3, 0.0);
    let c = net.add(false);
    net.run_for(Duration::from_secs(10));
    assert!(net.nodes[c].dht().id().is_none());
    for (i, n) in net.nodes.iter().enumerate().take(12) {
        let cid = ats_p2p_swarm::dht::node_id(&server_addr(c));
        assert!(
            n.dht().table().get(&cid).is_none(),
            "ephemeral client in table of {i}"
        );
    }
    let kp = KeyPair::from_seed([5; 32]);
    let topic = hash(b"eph");
    let now = net.now;
    let op = net.nodes[c]
        .announce(now, topic, kp.clone(), vec![])
        .unwrap();
    net.wait_op(c, op);
    let now = net.now;
    let op = net.nodes[2].lookup(now, topic).unwrap();
    assert!(found(&net.wait_op(2, op).0, kp.public_key().as_bytes()));
}

#[test]
fn hundred_nodes_keep_rows_bounded_and_still_route() {
    let mut net = build(100, 11, 0.01);
    for (i, n) in net.nodes.iter().enumerate() {
        let t = n.dht().table();
        for r in 0..256 {
            assert!(
                t.row(r).len() <= 20,
                "node {i} row {r} has {}",
                t.row(r).len()
            );
        }
        assert!(t.len() >= 20, "node {i} table {}", t.len());
    }
    let kp = KeyPair::from_seed([77; 32]);
    let topic = hash(b"hundred");
    let now = net.now;
    let op = net.nodes[50]
        .announce(now, topic, kp.clone(), vec![])
        .unwrap();
    let (r, t) = net.wait_op(50, op);
    assert!(
        matches!(r, OpResult::Announced { accepted, .. } if accepted >= 15),
        "{r:?}"
    );
    let mut times = vec![t];
    for i in (0..100).step_by(9) {
        let now = net.now;
        let op = net.nodes[i].lookup(now, topic).unwrap();
        let (r, t) = net.wait_op(i, op);
        times.push(t);
        assert!(
            found(&r, kp.public_key().as_bytes()),
            "node {i} missed the record"
        );
    }
    eprintln!(
        "100 nodes, 1% loss: announce {:?}, lookups {:?}",
        times[0],
        &times[1..]
    );
}

#[test]
fn adaptive_node_becomes_persistent_after_stable_uptime() {
    let mut net = build(8, 5, 0.0);
    let a = net.add_with(false, true);
    let e = net.add_with(false, false);
    net.run_for(Duration::from_secs(60));
    assert!(
        net.nodes[a].dht().id().is_none(),
        "adaptive node persistent too early"
    );
    net.run_for(Duration::from_secs(21 * 60));
    assert!(
        net.nodes[a].dht().id().is_some(),
        "adaptive node never became persistent"
    );
    assert!(
        net.nodes[e].dht().id().is_none(),
        "ephemeral node became persistent"
    );
    // Others now route to it: it enters their tables.
    net.run_for(Duration::from_secs(10 * 60));
    let aid = net.nodes[a].dht().id().unwrap();
    let holders = net
        .nodes
        .iter()
        .filter(|n| n.dht().table().get(&aid).is_some())
        .count();
    assert!(holders >= 3, "adaptive node in only {holders} tables");

    // A 30 s gap between ticks (host sleep): the adaptive node goes ephemeral again, the
    // configured-persistent nodes stay persistent, and lookups keep working.
    net.now += Duration::from_secs(30);
    net.run_for(Duration::from_secs(10));
    assert!(
        net.nodes[a].dht().id().is_none(),
        "adaptive node still persistent after wakeup"
    );
    assert!(net.nodes[1].dht().id().is_some());
    let kp = KeyPair::from_seed([6; 32]);
    let topic = hash(b"after-wakeup");
    let now = net.now;
    let op = net.nodes[2]
        .announce(now, topic, kp.clone(), vec![])
        .unwrap();
    net.wait_op(2, op);
    let now = net.now;
    let op = net.nodes[a].lookup(now, topic).unwrap();
    assert!(found(&net.wait_op(a, op).0, kp.public_key().as_bytes()));
}

#[test]
fn adversarial_datagrams_do_not_break_routing() {
    let mut net = build(20, 13, 0.0);
    net.attack = 0.3;
    net.run_for(Duration::from_secs(60));
    let kp = KeyPair::from_seed([88; 32]);
    let topic = hash(b"under attack");
    let now = net.now;
    let op = net.nodes[3]
        .announce(now, topic, kp.clone(), vec![])
        .unwrap();
    let (r, _) = net.wait_op(3, op);
    assert!(
        matches!(r, OpResult::Announced { accepted, .. } if accepted >= 10),
        "{r:?}"
    );
    for i in 0..20 {
        let now = net.now;
        let op = net.nodes[i].lookup(now, topic).unwrap();
        assert!(
            found(&net.wait_op(i, op).0, kp.public_key().as_bytes()),
            "node {i}"
        );
    }
    for n in &net.nodes {
        assert!(n.dht().inflight_len() < 200);
        assert!(n.dht().queries_len() < 10);
        let (_, records, forwards) = n.store().sizes();
        assert!(
            records + forwards <= 5,
            "replays created records: {records} {forwards}"
        );
    }
}
