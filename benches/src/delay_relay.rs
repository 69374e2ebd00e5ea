//! A userspace UDP delay relay: the "delay" part of a real path where the kernel has no `netem`.
//!
//! Two sockets: side A (the sender's side) and side B. A datagram from anyone to side A is held
//! for the one-way delay and then sent from side B to the B peer; a datagram to side B is held
//! and sent from side A to the A peer. Each direction is a [`DelayLine`] behind a mutex, filled by a
//! receiving thread and emptied on time by a sending thread: FIFO, so nothing is reordered, and
//! bounded, so a relay that cannot keep up drops (and counts) instead of growing.
//!
//! [`measure_max_rate`] measures what one direction forwards on this machine.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::delay_line::{DelayLine, DelayLineLimits, DelayLineStats};

/// Kernel socket buffer asked for on both relay sockets (the default `rmem_max` allows 4 MiB).
const SOCKET_BUFFER: usize = 4 << 20;
/// How often blocked threads look at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);
/// Largest datagram read.
const MAX_DATAGRAM: usize = 65_535;

/// What the relay binds and where it sends.
#[derive(Debug, Clone, Copy)]
pub struct RelayConfig {
    /// Side A's local address (the A peer sends here).
    pub a_bind: SocketAddr,
    /// Side B's local address (the B peer sees datagrams from here).
    pub b_bind: SocketAddr,
    /// Where datagrams that arrived on side B go.
    pub a_peer: SocketAddr,
    /// Where datagrams that arrived on side A go.
    pub b_peer: SocketAddr,
    /// One-way delay, each direction.
    pub delay: Duration,
    /// Queue bounds of each direction.
    pub limits: DelayLineLimits,
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default)]
pub struct DirectionReport {
    /// Datagrams received.
    pub received: u64,
    /// The delay line's counters (accepted, dropped when full, released, lateness).
    pub line: DelayLineStats,
    /// Sends that failed.
    pub send_errors: u64,
}

impl DirectionReport {
    /// Mean lateness of a release in microseconds.
    pub fn mean_late_us(&self) -> f64 {
        if self.line.released == 0 {
            return 0.0;
        }
        self.line.total_late.as_secs_f64() * 1e6 / self.line.released as f64
    }

    /// The counters as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "received": self.received,
            "released": self.line.released,
            "droppedFull": self.line.dropped_full,
            "maxQueued": self.line.max_queued,
            "maxLateUs": self.line.max_late.as_micros() as u64,
            "meanLateUs": self.mean_late_us(),
            "sendErrors": self.send_errors,
        })
    }
}

/// One direction's shared state.
#[derive(Debug)]
struct Direction {
    line: Mutex<DelayLine>,
    /// Signalled when a datagram lands in an empty line.
    filled: Condvar,
    received: AtomicU64,
    send_errors: AtomicU64,
}

impl Direction {
    fn new(delay: Duration, limits: DelayLineLimits) -> Self {
        Self {
            line: Mutex::new(DelayLine::new(delay, limits)),
            filled: Condvar::new(),
            received: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, DelayLine> {
        // The line's invariants hold between calls; a panic elsewhere does not break them.
        self.line.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn report(&self) -> DirectionReport {
        DirectionReport {
            received: self.received.load(Ordering::Relaxed),
            line: self.lock().stats(),
            send_errors: self.send_errors.load(Ordering::Relaxed),
        }
    }
}

/// A running relay; [`Relay::stop`] ends its threads and returns the counters.
#[derive(Debug)]
pub struct Relay {
    a_addr: SocketAddr,
    b_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    a_to_b: Arc<Direction>,
    b_to_a: Arc<Direction>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Binds both sides and starts the four threads.
    pub fn start(cfg: RelayConfig) -> io::Result<Self> {
        let sock_a = Arc::new(bind_udp(cfg.a_bind)?);
        let sock_b = Arc::new(bind_udp(cfg.b_bind)?);
        let stop = Arc::new(AtomicBool::new(false));
        let a_to_b = Arc::new(Direction::new(cfg.delay, cfg.limits));
        let b_to_a = Arc::new(Direction::new(cfg.delay, cfg.limits));
        let mut relay = Self {
            a_addr: sock_a.local_addr()?,
            b_addr: sock_b.local_addr()?,
            stop: stop.clone(),
            a_to_b: a_to_b.clone(),
            b_to_a: b_to_a.clone(),
            threads: Vec::new(),
        };
        let threads = [
            spawn_receiver(sock_a.clone(), a_to_b.clone(), &stop),
            spawn_sender(sock_b.clone(), a_to_b, cfg.b_peer, &stop),
            spawn_receiver(sock_b, b_to_a.clone(), &stop),
            spawn_sender(sock_a, b_to_a, cfg.a_peer, &stop),
        ];
        for t in threads {
            relay.threads.push(t?);
        }
        Ok(relay)
    }

    /// Side A's address (the A peer's remote).
    pub fn a_addr(&self) -> SocketAddr {
        self.a_addr
    }

    /// Side B's address (what the B peer sees).
    pub fn b_addr(&self) -> SocketAddr {
        self.b_addr
    }

    /// Stops the threads; returns the A→B and B→A counters.
    pub fn stop(mut self) -> (DirectionReport, DirectionReport) {
        self.shut_down();
        (self.a_to_b.report(), self.b_to_a.report())
    }

    fn shut_down(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.a_to_b.filled.notify_all();
        self.b_to_a.filled.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// A UDP socket on `addr` with large kernel buffers and a read timeout for the stop flag.
fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    // Best effort: a smaller buffer only makes drops under overload more likely.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&addr.into())?;
    let socket: UdpSocket = socket.into();
    socket.set_read_timeout(Some(STOP_POLL))?;
    Ok(socket)
}

fn spawn_receiver(
    socket: Arc<UdpSocket>,
    dir: Arc<Direction>,
    stop: &Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    let stop = stop.clone();
    thread::Builder::new()
        .name("relay-recv".into())
        .spawn(move || {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while !stop.load(Ordering::Relaxed) {
                let n = match socket.recv(&mut buf) {
                    Ok(r) => r,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::Interrupted
                        ) =>
                    {
                        continue;
                    }
                    Err(_) => break,
                };
                let now = Instant::now();
                dir.received.fetch_add(1, Ordering::Relaxed);
                let mut line = dir.lock();
                let was_empty = line.is_empty();
                line.handle_datagram(now, buf[..n].to_vec());
                drop(line);
                // The sender only sleeps without a deadline when the line is empty.
                if was_empty {
                    dir.filled.notify_one();
                }
            }
        })
}

fn spawn_sender(
    socket: Arc<UdpSocket>,
    dir: Arc<Direction>,
    to: SocketAddr,
    stop: &Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    let stop = stop.clone();
    thread::Builder::new()
        .name("relay-send".into())
        .spawn(move || {
            let mut batch: Vec<Vec<u8>> = Vec::new();
            let mut line = dir.lock();
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                while let Some(r) = line.poll_transmit(now) {
                    batch.push(r.data);
                }
                if batch.is_empty() {
                    let wait = line
                        .poll_timeout()
                        .map_or(STOP_POLL, |due| due.saturating_duration_since(now));
                    line = dir
                        .filled
                        .wait_timeout(line, wait.min(STOP_POLL))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    continue;
                }
                drop(line);
                for data in batch.drain(..) {
                    if socket.send_to(&data, to).is_err() {
                        dir.send_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                line = dir.lock();
            }
        })
}

/// What [`measure_max_rate`] saw.
#[derive(Debug, Clone, Copy)]
pub struct RateReport {
    /// Datagrams the blaster sent to the relay.
    pub offered: u64,
    /// Datagrams that came out at the sink.
    pub delivered: u64,
    /// The A→B direction's counters.
    pub relay: DirectionReport,
    /// Time from the first send to the end of the measurement window.
    pub elapsed: Duration,
}

impl RateReport {
    /// Datagrams per second delivered.
    pub fn delivered_per_s(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Sends `size`-byte datagrams through a relay on 127.0.0.1 (A→B) for `secs`, at `rate`
/// datagrams/s (or as fast as one thread can when `None`), and counts what arrives at the sink.
pub fn measure_max_rate(
    delay: Duration,
    size: usize,
    secs: Duration,
    rate: Option<u64>,
) -> io::Result<RateReport> {
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let sink = bind_udp(loopback)?;
    let blaster = bind_udp(loopback)?;
    let relay = Relay::start(RelayConfig {
        a_bind: loopback,
        b_bind: loopback,
        a_peer: blaster.local_addr()?,
        b_peer: sink.local_addr()?,
        delay,
        limits: DelayLineLimits::default(),
    })?;
    let target = relay.a_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let counter = {
        let stop = stop.clone();
        let delivered = delivered.clone();
        thread::Builder::new()
            .name("relay-sink".into())
            .spawn(move || {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                while !stop.load(Ordering::Relaxed) {
                    if sink.recv_from(&mut buf).is_ok() {
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })?
    };
    let payload = vec![0xa5u8; size];
    let started = Instant::now();
    let mut offered = 0u64;
    while started.elapsed() < secs {
        if let Some(rate) = rate {
            // Pace in 1 ms steps: send what is owed by now.
            let owed = (started.elapsed().as_secs_f64() * rate as f64) as u64;
            if offered >= owed {
                thread::sleep(Duration::from_micros(500));
                continue;
            }
        }
        if blaster.send_to(&payload, target).is_ok() {
            offered += 1;
        }
    }
    // Let the last datagrams through the delay before counting.
    thread::sleep(delay + Duration::from_millis(200));
    let elapsed = started.elapsed() - delay - Duration::from_millis(200);
    stop.store(true, Ordering::Relaxed);
    let _ = counter.join();
    let (a_to_b, _) = relay.stop();
    Ok(RateReport {
        offered,
        delivered: delivered.load(Ordering::Relaxed),
        relay: a_to_b,
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long the test waits for any one datagram (bounds the test, asserts nothing on time).
    const PATIENCE: Duration = Duration::from_secs(10);

    #[test]
    fn relays_both_ways_in_order_on_loopback() {
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        let a = bind_udp(loopback).expect("bind a");
        let b = bind_udp(loopback).expect("bind b");
        a.set_read_timeout(Some(PATIENCE)).expect("timeout");
        b.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let relay = Relay::start(RelayConfig {
            a_bind: loopback,
            b_bind: loopback,
            a_peer: a.local_addr().expect("addr"),
            b_peer: b.local_addr().expect("addr"),
            delay: Duration::from_millis(5),
            limits: DelayLineLimits::default(),
        })
        .expect("relay");
        const N: u16 = 200;
        for i in 0..N {
            a.send_to(&i.to_be_bytes(), relay.a_addr()).expect("send a");
        }
        let mut buf = [0u8; 16];
        for i in 0..N {
            let (n, from) = b.recv_from(&mut buf).expect("datagram at b");
            assert_eq!(from, relay.b_addr(), "b hears the relay's side B");
            assert_eq!(&buf[..n], &i.to_be_bytes(), "in order, none lost");
        }
        b.send_to(b"ack", relay.b_addr()).expect("send b");
        let (n, from) = a.recv_from(&mut buf).expect("datagram at a");
        assert_eq!((&buf[..n], from), (&b"ack"[..], relay.a_addr()));
        let (ab, ba) = relay.stop();
        assert_eq!((ab.received, ab.line.released), (200, 200));
        assert_eq!((ba.received, ba.line.released), (1, 1));
        assert_eq!(ab.line.dropped_full + ab.send_errors, 0);
    }
}
