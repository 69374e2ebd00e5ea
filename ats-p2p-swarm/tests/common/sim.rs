//! A deterministic simulated network for the sans-io UDX core (quinn's `Pair`, str0m's netem):
//! seeded loss, duplication, reordering (jitter), delay, an optional bottleneck link with a
//! bounded queue, a path MTU, and a simulated clock. Two endpoints, one stream each.

// Test-only harness: a panic here is a failed test, like an unwrap in a #[test].
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::too_many_arguments,
    clippy::collapsible_if
)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ats_p2p_swarm::udx::{
    CloseReason, Endpoint, Event, ReadError, Stream, StreamConfig, WriteError,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Link impairments (one direction; both directions use the same).
#[derive(Clone, Debug)]
pub struct Link {
    pub delay: Duration,
    pub jitter: Duration,
    pub loss: f64,
    pub duplicate: f64,
    /// Bottleneck rate in bytes/s (None = infinite).
    pub rate: Option<u64>,
    /// Bottleneck queue in bytes (drop-tail).
    pub queue: usize,
    /// Largest UDP payload carried.
    pub max_datagram: usize,
}

impl Default for Link {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            rate: None,
            queue: usize::MAX,
            max_datagram: 65_535,
        }
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    order: u64,
    to_b: bool,
    data: Vec<u8>,
}

/// One side: an endpoint with a single stream, and the application on top.
pub struct Side {
    pub ep: Endpoint,
    pub addr: SocketAddr,
    pub id: u32,
    /// Bytes the application will write in total, then END.
    pub to_write: u64,
    pub written: u64,
    pub shutdown_done: bool,
    /// Send END once everything is written.
    pub auto_shutdown: bool,
    /// Bytes read and verified.
    pub read: u64,
    pub eof: bool,
    pub reading: bool,
    pub closed: Option<CloseReason>,
    pub messages: Vec<Vec<u8>>,
    pub max_held: u64,
    pub rwnd_max: u32,
    pattern: u64,
    /// Scratch buffers for writing and verifying (reused: the bulk tests move gigabytes).
    chunk: Vec<u8>,
    expected: Vec<u8>,
    /// `chunk[..chunk_len]` holds the pattern from stream offset `chunk_at` (kept across
    /// blocked writes instead of regenerated every step).
    chunk_at: u64,
    chunk_len: usize,
}

/// Bytes `8w..8w+8` of the stream with pattern key `k` (splitmix64 of the word index).
fn pattern_word(k: u64, w: u64) -> [u8; 8] {
    let mut x = w ^ k.wrapping_mul(0xD1B5_4A32_D192_ED03);
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 31)).to_le_bytes()
}

/// The byte at offset `i` of the stream with pattern key `k`.
pub fn pattern_byte(k: u64, i: u64) -> u8 {
    pattern_word(k, i / 8)[(i % 8) as usize]
}

/// Fills `out` with the pattern bytes from stream offset `offset` on, a word at a time.
fn fill_pattern(k: u64, offset: u64, out: &mut [u8]) {
    let mut i = 0;
    while i < out.len() {
        let at = offset + i as u64;
        let word = pattern_word(k, at / 8);
        let skip = (at % 8) as usize;
        let n = (8 - skip).min(out.len() - i);
        out[i..i + n].copy_from_slice(&word[skip..skip + n]);
        i += n;
    }
}

impl Side {
    fn stream(&mut self) -> &mut Stream {
        self.ep.stream(self.id).unwrap()
    }

    fn app(&mut self) {
        let k = self.pattern;
        let mut chunk = std::mem::take(&mut self.chunk);
        let mut expected = std::mem::take(&mut self.expected);
        self.app_with(k, &mut chunk, &mut expected);
        self.chunk = chunk;
        self.expected = expected;
    }

    fn app_with(&mut self, k: u64, chunk: &mut [u8], expected: &mut [u8]) {
        while self.written < self.to_write {
            let held = self.chunk_at..self.chunk_at + self.chunk_len as u64;
            if !held.contains(&self.written) {
                let n = (self.to_write - self.written).min(chunk.len() as u64) as usize;
                fill_pattern(k, self.written, &mut chunk[..n]);
                self.chunk_at = self.written;
                self.chunk_len = n;
            }
            let pending = (self.written - self.chunk_at) as usize..self.chunk_len;
            match self.stream().write(&chunk[pending]) {
                Ok(w) => self.written += w as u64,
                Err(WriteError::Blocked) => break,
                Err(e) => {
                    assert!(matches!(e, WriteError::Closed(_)), "{e}");
                    break;
                }
            }
        }
        if self.written == self.to_write && !self.shutdown_done && self.auto_shutdown {
            if self.stream().shutdown().is_ok() {
                self.shutdown_done = true;
            }
        }
        let held = u64::from(self.stream_cfg_rwnd()) - u64::from(self.stream().recv_window());
        self.max_held = self.max_held.max(held);
        if !self.reading {
            return;
        }
        let peer_k = self.pattern ^ 1;
        loop {
            match self.stream().read(chunk) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => {
                    fill_pattern(peer_k, self.read, &mut expected[..n]);
                    if chunk[..n] != expected[..n] {
                        let j = (0..n).find(|&j| chunk[j] != expected[j]).unwrap_or(0);
                        panic!("byte {} corrupted", self.read + j as u64);
                    }
                    self.read += n as u64;
                }
                Err(ReadError::Blocked) => break,
                Err(ReadError::Closed(_)) => break,
            }
        }
    }

    fn stream_cfg_rwnd(&mut self) -> u32 {
        self.rwnd_max
    }
}

/// Two endpoints and the network between them.
pub struct Pair {
    pub a: Side,
    pub b: Side,
    pub now: Instant,
    pub link: Link,
    rng: StdRng,
    queue: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    /// When the bottleneck link is next free, per direction (to_b, to_a).
    link_free: [Instant; 2],
    pub datagrams: u64,
    /// Datagrams the bottleneck queue dropped (drop-tail), per direction (to_b, to_a).
    pub queue_drops: [u64; 2],
    pub max_datagram_seen: usize,
    buf: Vec<u8>,
}

impl Side {
    fn new(
        addr: SocketAddr,
        id: u32,
        peer: u32,
        peer_addr: SocketAddr,
        cfg: StreamConfig,
        now: Instant,
        to_write: u64,
        pattern: u64,
    ) -> Self {
        let mut ep = Endpoint::new();
        let rwnd = cfg.rwnd_max;
        ep.create_stream(id, cfg, now).unwrap();
        ep.connect(id, peer, peer_addr, now);
        let mut s = Self {
            ep,
            addr,
            id,
            to_write,
            written: 0,
            shutdown_done: false,
            auto_shutdown: true,
            read: 0,
            eof: false,
            reading: true,
            closed: None,
            messages: Vec::new(),
            max_held: 0,
            pattern,
            rwnd_max: 0,
            chunk: vec![0; 64 * 1024],
            chunk_at: 0,
            chunk_len: 0,
            expected: vec![0; 64 * 1024],
        };
        s.rwnd_max = rwnd;
        s
    }
}

impl Pair {
    /// A connected pair: `a` writes `a_bytes`, `b` writes `b_bytes`.
    pub fn new(seed: u64, link: Link, cfg: StreamConfig, a_bytes: u64, b_bytes: u64) -> Self {
        let now = Instant::now();
        let aa: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let ba: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        Self {
            a: Side::new(aa, 1, 2, ba, cfg.clone(), now, a_bytes, 10),
            b: Side::new(ba, 2, 1, aa, cfg, now, b_bytes, 11),
            now,
            link,
            rng: StdRng::seed_from_u64(seed),
            queue: BinaryHeap::new(),
            order: 0,
            link_free: [now, now],
            datagrams: 0,
            queue_drops: [0; 2],
            max_datagram_seen: 0,
            buf: Vec::new(),
        }
    }

    fn transmit(&mut self, from_a: bool) {
        loop {
            let side = if from_a { &mut self.a } else { &mut self.b };
            let id = side.id;
            self.buf.clear();
            let Some(t) = side.ep.poll_transmit(id, self.now, &mut self.buf) else {
                break;
            };
            let data = self.buf[..t.size].to_vec();
            self.datagrams += 1;
            self.max_datagram_seen = self.max_datagram_seen.max(data.len());
            self.send(from_a, data);
        }
    }

    fn send(&mut self, from_a: bool, data: Vec<u8>) {
        if data.len() > self.link.max_datagram {
            return;
        }
        if self.rng.gen_bool(self.link.loss) {
            return;
        }
        let copies = if self.rng.gen_bool(self.link.duplicate) {
            2
        } else {
            1
        };
        let dir = usize::from(!from_a);
        let mut depart = self.now;
        if let Some(rate) = self.link.rate {
            let free = self.link_free[dir].max(self.now);
            let backlog = free.saturating_duration_since(self.now);
            let backlog_bytes = backlog.as_secs_f64() * rate as f64;
            if backlog_bytes > self.link.queue as f64 {
                self.queue_drops[dir] += 1;
                return; // drop-tail
            }
            let tx = Duration::from_secs_f64(data.len() as f64 / rate as f64);
            self.link_free[dir] = free + tx;
            depart = free + tx;
        }
        for _ in 0..copies {
            let jitter = if self.link.jitter.is_zero() {
                Duration::ZERO
            } else {
                self.link.jitter.mul_f64(self.rng.gen_range(0.0..1.0))
            };
            self.order += 1;
            self.queue.push(Reverse(InFlight {
                at: depart + self.link.delay + jitter,
                order: self.order,
                to_b: from_a,
                data: data.clone(),
            }));
        }
    }

    fn events(side: &mut Side) {
        let id = side.id;
        while let Some(ev) = side.ep.stream(id).unwrap().poll_event() {
            match ev {
                Event::Closed(r) => side.closed = Some(r),
                Event::Message(m) => side.messages.push(m.to_vec()),
                Event::Readable | Event::Writable => {}
            }
        }
    }

    /// One step: apps act, transmits drain, then time jumps to the next arrival or timer.
    /// Returns false when nothing is left to happen.
    pub fn step(&mut self) -> bool {
        self.a.app();
        self.b.app();
        self.transmit(true);
        self.transmit(false);
        Self::events(&mut self.a);
        Self::events(&mut self.b);
        let next_arrival = self.queue.peek().map(|r| r.0.at);
        let next_timer = [self.a.ep.poll_timeout(), self.b.ep.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let next = match (next_arrival, next_timer) {
            (Some(x), Some(y)) => x.min(y),
            (x, y) => match x.or(y) {
                Some(t) => t,
                None => return false,
            },
        };
        self.now = self.now.max(next);
        while self.queue.peek().is_some_and(|r| r.0.at <= self.now) {
            let Reverse(p) = self.queue.pop().unwrap();
            let from = if p.to_b { self.a.addr } else { self.b.addr };
            let side = if p.to_b { &mut self.b } else { &mut self.a };
            let _ = side.ep.handle_datagram(self.now, from, &p.data);
        }
        self.a.ep.handle_timeout(self.now);
        self.b.ep.handle_timeout(self.now);
        true
    }

    /// Runs until both streams closed or nothing is left; panics after `max_steps` (livelock).
    pub fn drive_bounded(&mut self, max_steps: u64) -> u64 {
        for i in 0..max_steps {
            if self.a.closed.is_some() && self.b.closed.is_some() {
                return i;
            }
            if !self.step() {
                return i;
            }
        }
        panic!(
            "drive_bounded: no end after {max_steps} steps (a read {} / closed {:?}, b read {} / closed {:?})",
            self.a.read, self.a.closed, self.b.read, self.b.closed
        );
    }

    /// Runs until simulated time `until`.
    pub fn drive_until(&mut self, until: Instant) {
        while self.now < until {
            if !self.step() {
                break;
            }
        }
    }
}
