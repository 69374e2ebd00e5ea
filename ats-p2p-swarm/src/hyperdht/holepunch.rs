//! Holepunch decisions, sans-io (npm `hyperdht` 6.34 `lib/nat.js`, `lib/holepuncher.js`).
//!
//! - [`NatSampler`] classifies one UDP socket's NAT from the addresses DHT nodes saw it at
//!   (same rules as JS `Nat._updateFirewall`): three equal `host:port` sightings make it
//!   *consistent* (endpoint-independent mapping, holepunchable by probing), all different make
//!   it *random* (a fresh port per destination: `MASQUERADE --random-fully`, carrier NATs,
//!   Kubernetes CNIs).
//! - [`Strategy::choose`] picks how two peers punch from both classes and whether the remote
//!   address is verified (it echoed our token): consistent ↔ consistent probe each other's
//!   addresses; consistent → random sprays probes at random ports of the verified host; random
//!   → consistent opens up to [`BIRTHDAY_SOCKETS`] sockets, each a fresh NAT mapping, so one of
//!   the sprayed probes meets one (the birthday paradox); random ↔ random cannot punch and goes
//!   to a relay.
//! - [`RandomPunchGate`] keeps JS's abuse limit: one random punch at a time per node, and a
//!   pause after a successful one.
//!
//! Rates: JS probes every 20 ms (random) and every second (consistent). We probe faster but
//! bounded (see the constants) and stop at the first answer.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::firewall;
use crate::crypto::keyed_blake2b_256;
use crate::dht::Id;

/// Sockets the random side opens (JS `BIRTHDAY_SOCKETS`).
pub const BIRTHDAY_SOCKETS: usize = 256;
/// Interval between random-port probes and birthday keep-alives (JS: 20 ms).
pub const RANDOM_PROBE_INTERVAL: Duration = Duration::from_millis(4);
/// Random-port probes per step (so ≤ 1000 probes a second of 1 byte each, ~29 KB/s).
pub const RANDOM_PROBE_BURST: u32 = 4;
/// Most random-port probe steps in one punch (JS: 1750 probes ≈ 35 s; ours ≤ 10,000 probes in
/// ≈ 10 s).
pub const MAX_RANDOM_PROBES: u32 = 2500;
/// Interval between the birthday sockets' keep-alive probes, round robin (JS: 20 ms).
pub const BIRTHDAY_KEEPALIVE_INTERVAL: Duration = Duration::from_millis(20);
/// Keep-alive steps of the birthday sockets: ≈ 36 s, as long as a JS peer sprays random ports
/// (its 1750 probes at 20 ms).
pub const MAX_BIRTHDAY_KEEPALIVES: u32 = 1800;
/// Interval between probes to each address of a consistent peer (JS: 1 s).
pub const CONSISTENT_PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Most consistent probe rounds (≈ 10 s, as JS's 10 tries at 1 s).
pub const MAX_CONSISTENT_ROUNDS: u32 = 100;
/// Pause between successful random punches on one node (JS `randomPunchInterval`).
pub const RANDOM_PUNCH_INTERVAL: Duration = Duration::from_secs(20);
/// DHT nodes pinged to classify a socket (JS `_minSamples`).
pub const NAT_SAMPLES: usize = 4;

/// The NAT class of a socket, as carried in Noise and holepunch payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NatClass {
    /// Not known yet.
    Unknown,
    /// Reachable without punching.
    Open,
    /// Endpoint-independent mapping: the same public port for every destination.
    Consistent,
    /// A new public port per destination.
    Random,
}

impl NatClass {
    /// The wire value (hyperdht `FIREWALL`).
    pub fn to_wire(self) -> u64 {
        match self {
            Self::Unknown => firewall::UNKNOWN,
            Self::Open => firewall::OPEN,
            Self::Consistent => firewall::CONSISTENT,
            Self::Random => firewall::RANDOM,
        }
    }

    /// From the wire value; anything above RANDOM counts as random (JS compares `>= RANDOM`).
    pub fn from_wire(v: u64) -> Self {
        match v {
            firewall::UNKNOWN => Self::Unknown,
            firewall::OPEN => Self::Open,
            firewall::CONSISTENT => Self::Consistent,
            _ => Self::Random,
        }
    }

    /// Open counts as consistent for punching (JS `coerceFirewall`).
    fn coerced(self) -> Self {
        if self == Self::Open {
            Self::Consistent
        } else {
            self
        }
    }

    /// A short name for messages (`open`, `consistent`, `random`, `unknown`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Open => "open",
            Self::Consistent => "consistent",
            Self::Random => "random",
        }
    }
}

impl std::fmt::Display for NatClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    host: Ipv4Addr,
    port: u16,
    hits: u32,
}

/// Classifies one socket from `(address seen, seen by)` pairs (JS `lib/nat.js`).
#[derive(Debug, Clone, Default)]
pub struct NatSampler {
    /// Hosts seen, most hits first (port 0).
    hosts: Vec<Sample>,
    /// `host:port` seen, most hits first.
    full: Vec<Sample>,
    /// Responders already counted (one sample each).
    visited: Vec<SocketAddrV4>,
    sampled: u32,
    firewalled: bool,
    frozen: bool,
    class: Option<NatClass>,
}

fn add_sample(samples: &mut Vec<Sample>, host: Ipv4Addr, port: u16) {
    if let Some(i) = samples
        .iter()
        .position(|s| s.host == host && s.port == port)
    {
        if let Some(s) = samples.get_mut(i) {
            s.hits = s.hits.saturating_add(1);
        }
        // Keep the list ordered by hits (stable: earlier wins ties).
        let mut j = i;
        while j > 0 && samples.get(j - 1).map(|p| p.hits) < samples.get(j).map(|s| s.hits) {
            samples.swap(j - 1, j);
            j -= 1;
        }
        return;
    }
    samples.push(Sample {
        host,
        port,
        hits: 1,
    });
}

impl NatSampler {
    /// A sampler for a node that is `firewalled` (an unfirewalled node is open).
    pub fn new(firewalled: bool) -> Self {
        Self {
            firewalled,
            ..Self::default()
        }
    }

    /// Adds one sighting: `seen` is our address as the node at `by` saw it. One sample per node.
    pub fn add(&mut self, seen: SocketAddrV4, by: SocketAddrV4) {
        if self.visited.contains(&by) || self.visited.len() >= 64 {
            return;
        }
        self.visited.push(by);
        add_sample(&mut self.hosts, *seen.ip(), 0);
        add_sample(&mut self.full, *seen.ip(), seen.port());
        self.sampled += 1;
        if !self.frozen {
            self.class = self.classify();
        }
    }

    /// Stops reclassifying (the class was sent to the peer).
    pub fn freeze(&mut self) {
        self.frozen = true;
    }

    /// Samples taken.
    pub fn sampled(&self) -> u32 {
        self.sampled
    }

    /// Whether more samples can change nothing useful (JS resolves `analyzing` then).
    pub fn settled(&self) -> bool {
        matches!(self.class(), NatClass::Consistent | NatClass::Open)
            || self.sampled as usize >= NAT_SAMPLES
    }

    fn classify(&self) -> Option<NatClass> {
        if !self.firewalled {
            return Some(NatClass::Open);
        }
        if self.sampled < 3 {
            return None;
        }
        let max = self.full.first().map_or(0, |s| s.hits);
        if max >= 3 {
            return Some(NatClass::Consistent);
        }
        if max == 1 {
            return Some(NatClass::Random);
        }
        // Two hits on the best address.
        if self.hosts.len() == 1 && self.sampled > 3 {
            return Some(NatClass::Random);
        }
        if self.hosts.len() > 1 && self.full.get(1).is_some_and(|s| s.hits > 1) {
            return Some(NatClass::Consistent);
        }
        (self.sampled > 4).then_some(NatClass::Random)
    }

    /// Decides with fewer samples than JS needs, when no more DHT nodes answer (a small
    /// private DHT such as a hub's): two equal sightings are consistent, two ports for one
    /// host random; a single sighting is assumed consistent (probing then shows it, and a
    /// relay remains the fallback).
    pub fn conclude(&mut self) {
        if self.class.is_some() || !self.firewalled || self.sampled == 0 {
            return;
        }
        let best = self.full.first().map_or(0, |s| s.hits);
        self.class = Some(if best == self.sampled {
            NatClass::Consistent
        } else if self.hosts.len() == 1 {
            NatClass::Random
        } else {
            NatClass::Consistent
        });
    }

    /// The class so far.
    pub fn class(&self) -> NatClass {
        self.class.unwrap_or(if self.firewalled {
            NatClass::Unknown
        } else {
            NatClass::Open
        })
    }

    /// The addresses to tell the peer (JS `Nat.addresses`): for a consistent NAT the public
    /// `host:port`s seen at least twice (at least two), for a random one the host with port 0.
    pub fn addresses(&self) -> Option<Vec<SocketAddrV4>> {
        match self.class() {
            NatClass::Unknown => None,
            NatClass::Random => self
                .hosts
                .first()
                .map(|s| vec![SocketAddrV4::new(s.host, 0)]),
            NatClass::Consistent | NatClass::Open => {
                let mut out = Vec::new();
                for s in &self.full {
                    if s.hits >= 2 || out.len() < 2 {
                        out.push(SocketAddrV4::new(s.host, s.port));
                    }
                }
                Some(out)
            }
        }
    }
}

/// How two peers punch, from our side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Both consistent: probe the peer's addresses.
    Consistent,
    /// We are consistent, the peer random: probe random ports of its verified host.
    RandomPorts {
        /// The peer's verified public host.
        host: Ipv4Addr,
    },
    /// We are random, the peer consistent: open birthday sockets towards its verified address.
    Birthday {
        /// The peer's verified public address.
        target: SocketAddrV4,
    },
    /// Both random: no punch can work; a relay is the only path.
    BothRandom,
    /// A random punch needs a verified remote address and there is none.
    Unverified,
    /// One side's class is unknown.
    Unknown,
}

impl Strategy {
    /// Chooses from our class, the peer's, and the peer's verified address (if it echoed our
    /// token). Random strategies only ever target a verified address (JS's abuse limit).
    pub fn choose(local: NatClass, remote: NatClass, verified: Option<SocketAddrV4>) -> Self {
        match (local.coerced(), remote.coerced()) {
            (NatClass::Unknown, _) | (_, NatClass::Unknown) => Self::Unknown,
            (NatClass::Consistent, NatClass::Consistent) => Self::Consistent,
            (NatClass::Random, NatClass::Random) => Self::BothRandom,
            (NatClass::Consistent, _) => match verified {
                Some(a) => Self::RandomPorts { host: *a.ip() },
                None => Self::Unverified,
            },
            (_, _) => match verified {
                Some(a) if a.port() != 0 => Self::Birthday { target: a },
                _ => Self::Unverified,
            },
        }
    }

    /// Whether this is one of the random (rate-limited) strategies.
    pub fn is_random(self) -> bool {
        matches!(self, Self::RandomPorts { .. } | Self::Birthday { .. })
    }
}

/// The token a peer echoes to prove it receives at `host` (JS `SecurePayload.token`): a keyed
/// hash of the host string under a per-session secret.
pub fn address_token(secret: &[u8; 32], host: Ipv4Addr) -> Id {
    keyed_blake2b_256(secret, &[host.to_string().as_bytes()])
}

/// A random port in JS's range (1000..65536).
pub fn random_port(rng: &mut impl rand::Rng) -> u16 {
    rng.gen_range(1000..=u16::MAX)
}

/// One random punch at a time per node, and [`RANDOM_PUNCH_INTERVAL`] after a successful one
/// (JS `_randomPunches`, `_randomPunchLimit` 1, `_lastRandomPunch`).
#[derive(Debug, Default)]
pub struct RandomPunchGate {
    running: bool,
    last_success: Option<Instant>,
}

impl RandomPunchGate {
    /// Takes the gate when a random punch may start now.
    pub fn try_begin(&mut self, now: Instant) -> bool {
        let rested = self
            .last_success
            .is_none_or(|t| now.saturating_duration_since(t) >= RANDOM_PUNCH_INTERVAL);
        if self.running || !rested {
            return false;
        }
        self.running = true;
        true
    }

    /// Releases the gate; `connected` starts the pause.
    pub fn end(&mut self, now: Instant, connected: bool) {
        self.running = false;
        if connected {
            self.last_success = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddrV4 {
        s.parse().unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn three_equal_sightings_are_consistent() {
        let mut n = NatSampler::new(true);
        n.add(a("1.2.3.4:500"), a("9.0.0.1:1"));
        n.add(a("1.2.3.4:500"), a("9.0.0.2:1"));
        assert_eq!(n.class(), NatClass::Unknown);
        n.add(a("1.2.3.4:500"), a("9.0.0.3:1"));
        assert_eq!(n.class(), NatClass::Consistent);
        assert!(n.settled());
        assert_eq!(n.addresses(), Some(vec![a("1.2.3.4:500")]));
    }

    #[test]
    fn all_different_ports_are_random() {
        let mut n = NatSampler::new(true);
        for (i, p) in [501u16, 502, 503, 504].iter().enumerate() {
            n.add(
                SocketAddrV4::new(Ipv4Addr::new(1, 2, 3, 4), *p),
                SocketAddrV4::new(Ipv4Addr::new(9, 0, 0, i as u8), 1),
            );
        }
        assert_eq!(n.class(), NatClass::Random);
        assert_eq!(n.addresses(), Some(vec![a("1.2.3.4:0")]));
    }

    #[test]
    fn one_node_counts_once_and_frozen_class_stays() {
        let mut n = NatSampler::new(true);
        for _ in 0..5 {
            n.add(a("1.2.3.4:500"), a("9.0.0.1:1"));
        }
        assert_eq!(n.sampled(), 1);
        let mut n = NatSampler::new(true);
        n.add(a("1.2.3.4:1"), a("9.0.0.1:1"));
        n.add(a("1.2.3.4:2"), a("9.0.0.2:1"));
        n.add(a("1.2.3.4:3"), a("9.0.0.3:1"));
        assert_eq!(n.class(), NatClass::Random);
        n.freeze();
        n.add(a("1.2.3.4:3"), a("9.0.0.4:1"));
        n.add(a("1.2.3.4:3"), a("9.0.0.5:1"));
        assert_eq!(n.class(), NatClass::Random);
    }

    #[test]
    fn few_samples_conclude() {
        let mut n = NatSampler::new(true);
        n.add(a("1.2.3.4:1"), a("9.0.0.1:1"));
        n.add(a("1.2.3.4:2"), a("9.0.0.2:1"));
        assert_eq!(n.class(), NatClass::Unknown);
        n.conclude();
        assert_eq!(n.class(), NatClass::Random);
        let mut n = NatSampler::new(true);
        n.add(a("1.2.3.4:1"), a("9.0.0.1:1"));
        n.add(a("1.2.3.4:1"), a("9.0.0.2:1"));
        n.conclude();
        assert_eq!(n.class(), NatClass::Consistent);
        let mut n = NatSampler::new(true);
        n.conclude();
        assert_eq!(n.class(), NatClass::Unknown);
    }

    #[test]
    fn unfirewalled_is_open() {
        let n = NatSampler::new(false);
        assert_eq!(n.class(), NatClass::Open);
    }

    #[test]
    fn strategies() {
        use NatClass::*;
        let v = Some(a("5.6.7.8:900"));
        assert_eq!(
            Strategy::choose(Consistent, Open, None),
            Strategy::Consistent
        );
        assert_eq!(
            Strategy::choose(Consistent, Random, v),
            Strategy::RandomPorts {
                host: Ipv4Addr::new(5, 6, 7, 8)
            }
        );
        assert_eq!(
            Strategy::choose(Consistent, Random, None),
            Strategy::Unverified
        );
        assert_eq!(
            Strategy::choose(Random, Consistent, v),
            Strategy::Birthday {
                target: a("5.6.7.8:900")
            }
        );
        assert_eq!(
            Strategy::choose(Random, Consistent, Some(a("5.6.7.8:0"))),
            Strategy::Unverified
        );
        assert_eq!(Strategy::choose(Random, Random, v), Strategy::BothRandom);
        assert_eq!(Strategy::choose(Unknown, Random, v), Strategy::Unknown);
        assert_eq!(NatClass::from_wire(7), Random);
        assert_eq!(NatClass::from_wire(Consistent.to_wire()), Consistent);
    }

    #[test]
    fn gate_allows_one_random_punch_and_rests_after_success() {
        let t0 = Instant::now();
        let mut g = RandomPunchGate::default();
        assert!(g.try_begin(t0));
        assert!(!g.try_begin(t0));
        g.end(t0, false);
        assert!(g.try_begin(t0));
        g.end(t0, true);
        assert!(!g.try_begin(t0 + Duration::from_secs(1)));
        assert!(g.try_begin(t0 + RANDOM_PUNCH_INTERVAL));
    }

    #[test]
    fn tokens_differ_per_host_and_secret() {
        let h = Ipv4Addr::new(1, 2, 3, 4);
        assert_ne!(address_token(&[1; 32], h), address_token(&[2; 32], h));
        assert_ne!(
            address_token(&[1; 32], h),
            address_token(&[1; 32], Ipv4Addr::new(1, 2, 3, 5))
        );
        let mut rng = rand::rngs::OsRng;
        for _ in 0..1000 {
            assert!(random_port(&mut rng) >= 1000);
        }
    }
}
