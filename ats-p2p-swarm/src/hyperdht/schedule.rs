//! What a punching peer sends and when, sans-io: [`ProbeSchedule`] turns a [`Strategy`] into
//! timed steps of [`ProbeOp`]s (bounded by the budgets in [`super::holepunch`]); the shell
//! executes them on its [`PunchSockets`](super::punch::PunchSockets).

use std::net::SocketAddrV4;
use std::time::Duration;

use rand::RngCore;

use super::holepunch::{
    BIRTHDAY_KEEPALIVE_INTERVAL, BIRTHDAY_SOCKETS, CONSISTENT_PROBE_INTERVAL,
    MAX_BIRTHDAY_KEEPALIVES, MAX_CONSISTENT_ROUNDS, MAX_RANDOM_PROBES, RANDOM_PROBE_BURST,
    RANDOM_PROBE_INTERVAL, Strategy, random_port,
};

/// Birthday sockets opened per step while opening them.
const BIRTHDAY_BURST: usize = 16;

/// One probe to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeOp {
    /// A 1-byte probe from socket `socket` (0 = the node's main socket) to `to`.
    Send {
        /// Index of the punch socket.
        socket: usize,
        /// Destination.
        to: SocketAddrV4,
    },
    /// Open one more punch socket (a fresh NAT mapping) and probe `to` from it. When it cannot
    /// be opened, tell the schedule ([`ProbeSchedule::handle_open_failed`]).
    OpenAndSend {
        /// Destination.
        to: SocketAddrV4,
    },
}

/// What to send when, for one strategy.
#[derive(Debug)]
pub(crate) struct ProbeSchedule {
    strategy: Strategy,
    remote: Vec<SocketAddrV4>,
    steps: u32,
    birthday_opened: usize,
    next_birthday: usize,
    first: bool,
}

impl ProbeSchedule {
    pub(crate) fn new(strategy: Strategy, remote: Vec<SocketAddrV4>) -> Self {
        Self {
            strategy,
            remote,
            steps: 0,
            birthday_opened: 0,
            next_birthday: 1,
            first: true,
        }
    }

    /// How long to wait before the next step, or `None` when the probe budget is spent.
    pub(crate) fn next_wait(&mut self) -> Option<Duration> {
        let (budget, interval) = match self.strategy {
            Strategy::Consistent => (MAX_CONSISTENT_ROUNDS, CONSISTENT_PROBE_INTERVAL),
            Strategy::RandomPorts { .. } => (MAX_RANDOM_PROBES, RANDOM_PROBE_INTERVAL),
            // Open the sockets fast, then keep their mappings alive as long as a (JS) peer
            // may still spray probes at them.
            Strategy::Birthday { .. } if self.birthday_opened < BIRTHDAY_SOCKETS => {
                (u32::MAX, RANDOM_PROBE_INTERVAL)
            }
            Strategy::Birthday { .. } => (MAX_BIRTHDAY_KEEPALIVES, BIRTHDAY_KEEPALIVE_INTERVAL),
            _ => return None,
        };
        if self.steps >= budget {
            return None;
        }
        let wait = if self.first { Duration::ZERO } else { interval };
        self.first = false;
        Some(wait)
    }

    /// Why the punch failed once [`Self::next_wait`] returned `None`.
    pub(crate) fn exhausted_reason(&self) -> String {
        match self.strategy {
            Strategy::Consistent => "no probe came back from the peer's addresses".into(),
            Strategy::RandomPorts { .. } => {
                "no random-port probe met the peer's birthday sockets".into()
            }
            Strategy::Birthday { .. } => "no probe reached our birthday sockets".into(),
            Strategy::BothRandom => "both NATs randomize ports".into(),
            Strategy::Unverified => "the peer's address could not be verified".into(),
            Strategy::Unknown => "a NAT could not be classified".into(),
        }
    }

    /// This step's probes; `sockets` is how many punch sockets exist (main included).
    pub(crate) fn run_step(&mut self, sockets: usize, rng: &mut impl RngCore) -> Vec<ProbeOp> {
        self.steps += 1;
        match self.strategy {
            Strategy::Consistent => self
                .remote
                .iter()
                .filter(|a| a.port() != 0)
                .map(|a| ProbeOp::Send { socket: 0, to: *a })
                .collect(),
            Strategy::RandomPorts { host } => (0..RANDOM_PROBE_BURST)
                .map(|_| ProbeOp::Send {
                    socket: 0,
                    to: SocketAddrV4::new(host, random_port(rng)),
                })
                .collect(),
            Strategy::Birthday { target } if self.birthday_opened < BIRTHDAY_SOCKETS => {
                // Open the sockets in bursts: each is a fresh NAT mapping to `target`.
                let n = BIRTHDAY_BURST.min(BIRTHDAY_SOCKETS - self.birthday_opened);
                self.birthday_opened += n;
                vec![ProbeOp::OpenAndSend { to: target }; n]
            }
            Strategy::Birthday { target } => {
                // Keep every mapping fresh, one socket per step, round robin.
                if sockets <= 1 {
                    return Vec::new();
                }
                if self.next_birthday >= sockets {
                    self.next_birthday = 1;
                }
                let op = ProbeOp::Send {
                    socket: self.next_birthday,
                    to: target,
                };
                self.next_birthday += 1;
                vec![op]
            }
            _ => Vec::new(),
        }
    }

    /// A birthday socket could not be opened: stop opening more (keep the ones we have alive).
    pub(crate) fn handle_open_failed(&mut self) {
        self.birthday_opened = BIRTHDAY_SOCKETS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn a(s: &str) -> SocketAddrV4 {
        s.parse().unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn consistent_probes_every_known_port_within_budget() {
        let mut s = ProbeSchedule::new(Strategy::Consistent, vec![a("1.2.3.4:5"), a("1.2.3.4:0")]);
        assert_eq!(s.next_wait(), Some(Duration::ZERO));
        let ops = s.run_step(1, &mut rand::rngs::OsRng);
        assert_eq!(
            ops,
            vec![ProbeOp::Send {
                socket: 0,
                to: a("1.2.3.4:5")
            }]
        );
        let mut steps = 1;
        while s.next_wait() == Some(CONSISTENT_PROBE_INTERVAL) {
            s.run_step(1, &mut rand::rngs::OsRng);
            steps += 1;
        }
        assert_eq!(steps, MAX_CONSISTENT_ROUNDS);
        assert!(s.exhausted_reason().contains("no probe came back"));
    }

    #[test]
    fn random_ports_spray_the_verified_host() {
        let host = Ipv4Addr::new(5, 6, 7, 8);
        let mut s = ProbeSchedule::new(Strategy::RandomPorts { host }, Vec::new());
        assert!(s.next_wait().is_some());
        let ops = s.run_step(1, &mut rand::rngs::OsRng);
        assert_eq!(ops.len(), RANDOM_PROBE_BURST as usize);
        assert!(ops.iter().all(
            |o| matches!(o, ProbeOp::Send { socket: 0, to } if *to.ip() == host && to.port() >= 1000)
        ));
    }

    #[test]
    fn birthday_opens_sockets_then_keeps_them_alive() {
        let target = a("5.6.7.8:900");
        let mut s = ProbeSchedule::new(Strategy::Birthday { target }, Vec::new());
        let mut opened = 0;
        while opened < BIRTHDAY_SOCKETS {
            assert!(s.next_wait().is_some());
            opened += s.run_step(1 + opened, &mut rand::rngs::OsRng).len();
        }
        assert_eq!(s.next_wait(), Some(BIRTHDAY_KEEPALIVE_INTERVAL));
        assert_eq!(
            s.run_step(3, &mut rand::rngs::OsRng),
            vec![ProbeOp::Send {
                socket: 1,
                to: target
            }]
        );
        s.next_wait();
        assert_eq!(
            s.run_step(3, &mut rand::rngs::OsRng),
            vec![ProbeOp::Send {
                socket: 2,
                to: target
            }]
        );
        s.next_wait();
        assert_eq!(
            s.run_step(3, &mut rand::rngs::OsRng),
            vec![ProbeOp::Send {
                socket: 1,
                to: target
            }]
        );
    }

    #[test]
    fn a_failed_open_stops_opening() {
        let target = a("5.6.7.8:900");
        let mut s = ProbeSchedule::new(Strategy::Birthday { target }, Vec::new());
        s.next_wait();
        assert_eq!(s.run_step(1, &mut rand::rngs::OsRng).len(), BIRTHDAY_BURST);
        s.handle_open_failed();
        assert_eq!(s.next_wait(), Some(BIRTHDAY_KEEPALIVE_INTERVAL));
    }

    #[test]
    fn no_strategy_no_steps() {
        for st in [
            Strategy::BothRandom,
            Strategy::Unverified,
            Strategy::Unknown,
        ] {
            let mut s = ProbeSchedule::new(st, Vec::new());
            assert_eq!(s.next_wait(), None);
        }
    }
}
