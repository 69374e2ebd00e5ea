//! Unit tests of [`ServerSession`]: every path the shell drives, time stepped by hand (no
//! sockets, no sleeps).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::*;
use crate::dht::Id;
use crate::hyperdht::crypto::{secretbox_open, secretbox_seal};
use crate::hyperdht::holepunch::{
    CONSISTENT_PROBE_INTERVAL, MAX_CONSISTENT_ROUNDS, RandomPunchGate,
};
use crate::hyperdht::messages::{Holepunch, HolepunchPayload, Mode, RelayInfo};
use crate::hyperdht::path::PathKind;
use crate::hyperdht::punch::Hit;
use crate::hyperdht::schedule::ProbeOp;
use crate::hyperdht::terms::RelayChoice;
use crate::hyperdht::{error_codes, firewall};
use crate::keys::KeyPair;
use crate::relay::RELAY_TIMEOUT;

fn a(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

const RELAY: &str = "10.0.0.1:49737";
/// The client's address as the relay saw it.
const CLIENT: &str = "198.51.100.7:4000";
const SECRET: Id = [0x5e; 32];
const LOCAL_ID: u32 = 41;

fn relay_choice() -> RelayChoice {
    RelayChoice {
        key: KeyPair::from_seed([0xee; 32]).public_key(),
        token: [9; 32],
        initiator: false,
    }
}

struct Harness {
    s: ServerSession,
    now: Instant,
    gate: Arc<Mutex<RandomPunchGate>>,
    next_round: RoundId,
}

fn start(relay: Option<RelayChoice>) -> Harness {
    let gate = Arc::new(Mutex::new(RandomPunchGate::default()));
    let now = Instant::now();
    let s = ServerSession::new(
        SessionParams {
            secret: SECRET,
            local_id: LOCAL_ID,
            relays: vec![RelayInfo {
                relay_address: a(RELAY),
                peer_address: a("203.0.113.9:5000"),
            }],
            relay,
            gate: gate.clone(),
        },
        now,
    );
    Harness {
        s,
        now,
        gate,
        next_round: 0,
    }
}

fn sampler(ports: &[u16]) -> NatSampler {
    let mut n = NatSampler::new(true);
    for (i, p) in ports.iter().enumerate() {
        n.add(
            SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 9), *p),
            SocketAddrV4::new(Ipv4Addr::new(9, 0, 0, i as u8 + 1), 1),
        );
    }
    n
}

fn consistent() -> NatSampler {
    sampler(&[5000, 5000, 5000])
}

fn random() -> NatSampler {
    sampler(&[5001, 5002, 5003, 5004])
}

impl Harness {
    fn drain(&mut self) -> Vec<SessionAction> {
        std::iter::from_fn(|| self.s.poll_action()).collect()
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.s.handle_timeout(self.now);
    }

    /// The client sends `payload` through our relay; returns the round id.
    fn round(&mut self, payload: &HolepunchPayload) -> RoundId {
        let round = self.next_round;
        self.next_round += 1;
        let hp = Holepunch {
            mode: Mode::FromRelay,
            id: 3,
            payload: secretbox_seal(&SECRET, &[1; 24], &payload.encode()),
            peer_address: Some(a(CLIENT)),
        };
        self.s.handle_holepunch(round, a(RELAY), &hp, self.now);
        round
    }

    /// The answer to `round` among `actions`, opened.
    fn answer_of(actions: &[SessionAction], round: RoundId) -> HolepunchPayload {
        let sealed = actions
            .iter()
            .find_map(|x| match x {
                SessionAction::Answer { round: r, payload } if *r == round => Some(payload),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no answer to round {round} in {actions:?}"));
        HolepunchPayload::decode(&secretbox_open(&SECRET, sealed).unwrap()).unwrap()
    }

    /// The probe round, answered once our class is known; returns our answer.
    fn probe_round(&mut self, nat: NatSampler, client: NatClass) -> HolepunchPayload {
        let round = self.round(&HolepunchPayload {
            firewall: client.to_wire(),
            addresses: Some(vec![a(CLIENT)]),
            ..HolepunchPayload::default()
        });
        let actions = self.drain();
        assert!(
            matches!(&actions[..], [SessionAction::SampleNat { nodes }] if nodes == &vec![a(RELAY)]),
            "{actions:?}"
        );
        self.s.handle_nat(nat, self.now);
        let actions = self.drain();
        Self::answer_of(&actions, round)
    }

    /// The punch round, echoing `token`; returns the actions.
    fn punch_round(
        &mut self,
        client: NatClass,
        token: Option<Id>,
    ) -> (RoundId, Vec<SessionAction>) {
        let round = self.round(&HolepunchPayload {
            firewall: client.to_wire(),
            round: 1,
            punching: true,
            addresses: Some(vec![a(CLIENT)]),
            token: Some([0x77; 32]),
            remote_token: token,
            ..HolepunchPayload::default()
        });
        (round, self.drain())
    }
}

#[test]
fn first_packet_connects_directly() {
    let mut h = start(None);
    assert_eq!(h.s.poll_timeout(), Some(h.now + SERVER_CONNECT_TIMEOUT));
    h.s.handle_first_packet("192.168.1.5:7000".parse().unwrap(), h.now);
    let Some(SessionOutcome::Connected(SessionPath::Main(path))) = h.s.poll_outcome() else {
        panic!("connected");
    };
    assert_eq!(path.kind, PathKind::Lan);
    assert_eq!(h.s.poll_timeout(), None);
}

#[test]
fn no_first_packet_times_out() {
    let mut h = start(None);
    h.advance(SERVER_CONNECT_TIMEOUT - Duration::from_millis(1));
    assert!(h.s.poll_outcome().is_none());
    h.advance(Duration::from_millis(1));
    assert!(matches!(
        h.s.poll_outcome(),
        Some(SessionOutcome::Failed(_))
    ));
}

#[test]
fn consistent_punch_echoes_and_connects_on_the_first_packet() {
    let mut h = start(None);
    let probe = h.probe_round(consistent(), NatClass::Consistent);
    assert_eq!(probe.firewall, firewall::CONSISTENT);
    assert_eq!(probe.addresses, Some(vec![a("203.0.113.9:5000")]));
    let token = probe.token.expect("a token from our relay");
    let (round, actions) = h.punch_round(NatClass::Consistent, Some(token));
    let answer = Harness::answer_of(&actions, round);
    assert!(answer.punching);
    assert_eq!(
        answer.remote_token,
        Some([0x77; 32]),
        "we echo the client's token"
    );
    assert!(
        actions.iter().any(
            |x| matches!(x, SessionAction::OpenPunch { hosts } if hosts[0] == *a(CLIENT).ip())
        )
    );
    // Punching extends the wait.
    assert_eq!(h.s.poll_timeout(), Some(h.now));
    h.advance(Duration::ZERO);
    let probes: Vec<_> = h.drain();
    assert!(probes.contains(&SessionAction::Probe(ProbeOp::Send {
        socket: 0,
        to: a(CLIENT)
    })));
    h.advance(SERVER_CONNECT_TIMEOUT - CONSISTENT_PROBE_INTERVAL);
    assert!(h.s.poll_outcome().is_none(), "punching keeps the session");
    // A probe from the client is echoed.
    h.s.handle_hit(
        Hit::Probe {
            socket: 0,
            from: a(CLIENT),
        },
        h.now,
    );
    assert!(h.drain().contains(&SessionAction::Probe(ProbeOp::Send {
        socket: 0,
        to: a(CLIENT)
    })));
    h.s.handle_first_packet(SocketAddr::V4(a(CLIENT)), h.now);
    let Some(SessionOutcome::Connected(SessionPath::Main(path))) = h.s.poll_outcome() else {
        panic!("connected");
    };
    assert_eq!(path.kind, PathKind::Holepunched);
}

#[test]
fn fast_mode_probes_a_client_that_opened_a_session() {
    let mut h = start(None);
    let round = h.round(&HolepunchPayload {
        firewall: firewall::CONSISTENT,
        remote_address: Some(a("203.0.113.9:5000")),
        ..HolepunchPayload::default()
    });
    h.drain();
    h.s.handle_nat(consistent(), h.now);
    let actions = h.drain();
    assert!(actions.contains(&SessionAction::Probe(ProbeOp::Send {
        socket: 0,
        to: a(CLIENT)
    })));
    assert!(!Harness::answer_of(&actions, round).punching);
}

#[test]
fn birthday_sockets_each_hold_our_stream_and_connect_where_the_client_answers() {
    let mut h = start(None);
    let probe = h.probe_round(random(), NatClass::Consistent);
    assert_eq!(probe.firewall, firewall::RANDOM);
    let (round, actions) = h.punch_round(NatClass::Consistent, probe.token);
    assert!(Harness::answer_of(&actions, round).punching);
    assert!(!h.gate.lock().unwrap().try_begin(h.now), "the gate is held");
    h.advance(Duration::ZERO);
    // Sixteen sockets open, each probing the client and holding our stream: the client may
    // answer a probe with its first UDX packet before any probe of its own reaches us.
    let opened = h.drain();
    let expected: Vec<SessionAction> = (1..=16)
        .flat_map(|socket| {
            [
                SessionAction::Probe(ProbeOp::OpenAndSend { to: a(CLIENT) }),
                SessionAction::CreateStreamOn { socket },
            ]
        })
        .collect();
    assert_eq!(opened, expected);
    // A probe reached socket 5: echo it (the stream is there already).
    h.s.handle_hit(
        Hit::Probe {
            socket: 5,
            from: a(CLIENT),
        },
        h.now,
    );
    assert_eq!(
        h.drain(),
        vec![SessionAction::Probe(ProbeOp::Send {
            socket: 5,
            to: a(CLIENT)
        })]
    );
    // A first packet for another stream, or on a socket without ours, is not ours.
    h.s.handle_hit(
        Hit::FirstPacket {
            socket: 5,
            local_id: LOCAL_ID + 1,
            from: a(CLIENT),
        },
        h.now,
    );
    h.s.handle_hit(
        Hit::FirstPacket {
            socket: 17,
            local_id: LOCAL_ID,
            from: a(CLIENT),
        },
        h.now,
    );
    assert!(h.s.poll_outcome().is_none());
    // The client answered the probe of socket 9, where none of its probes arrived: connected.
    h.s.handle_hit(
        Hit::FirstPacket {
            socket: 9,
            local_id: LOCAL_ID,
            from: a(CLIENT),
        },
        h.now,
    );
    assert_eq!(
        h.s.poll_outcome(),
        Some(SessionOutcome::Connected(SessionPath::Socket {
            socket: 9,
            from: a(CLIENT)
        }))
    );
    // Success: the gate rests.
    assert!(!h.gate.lock().unwrap().try_begin(h.now));
}

#[test]
fn a_busy_random_gate_says_try_later_and_relays() {
    let mut h = start(Some(relay_choice()));
    let probe = h.probe_round(random(), NatClass::Consistent);
    assert!(h.gate.lock().unwrap().try_begin(h.now), "another punch");
    let (round, actions) = h.punch_round(NatClass::Consistent, probe.token);
    assert_eq!(
        Harness::answer_of(&actions, round).error,
        error_codes::TRY_LATER
    );
    assert!(actions.contains(&SessionAction::PairRelay(relay_choice())));
    h.s.handle_relay(Ok(()), h.now);
    assert_eq!(
        h.s.poll_outcome(),
        Some(SessionOutcome::Connected(SessionPath::Relayed))
    );
}

#[test]
fn an_unverified_random_client_is_not_punched() {
    let mut h = start(None);
    h.probe_round(consistent(), NatClass::Random);
    // A wrong token echo: the client's address is not verified.
    let (round, actions) = h.punch_round(NatClass::Random, Some([0; 32]));
    assert_eq!(
        Harness::answer_of(&actions, round).error,
        error_codes::ABORTED
    );
    assert!(
        !actions
            .iter()
            .any(|x| matches!(x, SessionAction::OpenPunch { .. }))
    );
}

#[test]
fn a_client_abort_takes_the_relay() {
    let mut h = start(Some(relay_choice()));
    let round = h.round(&HolepunchPayload {
        error: error_codes::ABORTED,
        ..HolepunchPayload::default()
    });
    let actions = h.drain();
    assert_eq!(
        Harness::answer_of(&actions, round).error,
        error_codes::ABORTED
    );
    assert!(actions.contains(&SessionAction::PairRelay(relay_choice())));
    h.s.handle_relay(Err("relay gone".into()), h.now);
    assert!(matches!(
        h.s.poll_outcome(),
        Some(SessionOutcome::Failed(why)) if why.contains("relay gone")
    ));
}

/// A session that fell back to the relay because the client aborted its holepunch.
fn pairing_after_a_client_abort() -> Harness {
    let mut h = start(Some(relay_choice()));
    h.round(&HolepunchPayload {
        error: error_codes::ABORTED,
        ..HolepunchPayload::default()
    });
    assert!(
        h.drain()
            .contains(&SessionAction::PairRelay(relay_choice()))
    );
    h
}

/// The client pairs first and sends through the relay at once: its first packet reaches our
/// stream (from the relay's address) before our own pairing answer. The session must wait for
/// that answer; finishing on the packet dropped the pairing and the relay stopped forwarding.
#[test]
fn a_first_packet_during_the_relay_pairing_waits_for_the_pairing() {
    let mut h = pairing_after_a_client_abort();
    h.s.handle_first_packet(SocketAddr::V4(a(RELAY)), h.now);
    assert!(h.s.poll_outcome().is_none(), "still pairing");
    h.s.handle_relay(Ok(()), h.now);
    assert!(matches!(
        h.s.poll_outcome(),
        Some(SessionOutcome::Connected(SessionPath::Relayed))
    ));
}

/// If that pairing fails, the packet that did arrive is the path.
#[test]
fn a_failed_pairing_falls_back_to_the_first_packets_path() {
    let mut h = pairing_after_a_client_abort();
    h.s.handle_first_packet(SocketAddr::V4(a(CLIENT)), h.now);
    assert!(h.s.poll_outcome().is_none(), "still pairing");
    h.s.handle_relay(Err("relay gone".into()), h.now);
    let Some(SessionOutcome::Connected(SessionPath::Main(path))) = h.s.poll_outcome() else {
        panic!("connected on the packet's path");
    };
    assert_eq!(path.remote_addr, SocketAddr::V4(a(CLIENT)));
}

#[test]
fn forged_or_addressless_rounds_are_dropped() {
    let mut h = start(None);
    let forged = Holepunch {
        mode: Mode::FromRelay,
        id: 3,
        payload: secretbox_seal(&[1; 32], &[1; 24], &HolepunchPayload::default().encode()),
        peer_address: Some(a(CLIENT)),
    };
    h.s.handle_holepunch(0, a(RELAY), &forged, h.now);
    let no_address = Holepunch {
        peer_address: None,
        payload: secretbox_seal(&SECRET, &[1; 24], &HolepunchPayload::default().encode()),
        ..forged.clone()
    };
    h.s.handle_holepunch(1, a(RELAY), &no_address, h.now);
    let junk = Holepunch {
        payload: vec![0xff; 3],
        ..forged
    };
    h.s.handle_holepunch(2, a(RELAY), &junk, h.now);
    assert_eq!(
        h.drain(),
        vec![
            SessionAction::Drop { round: 0 },
            SessionAction::Drop { round: 1 },
            SessionAction::Drop { round: 2 }
        ]
    );
    assert!(h.s.poll_outcome().is_none());
}

#[test]
fn rounds_beyond_the_queue_are_dropped_while_sampling() {
    let mut h = start(None);
    for _ in 0..SESSION_QUEUE + 2 {
        h.round(&HolepunchPayload::default());
    }
    let actions = h.drain();
    let sample = actions
        .iter()
        .filter(|x| matches!(x, SessionAction::SampleNat { .. }))
        .count();
    assert_eq!(sample, 1, "one NAT sample");
    let dropped = actions
        .iter()
        .filter(|x| matches!(x, SessionAction::Drop { .. }))
        .count();
    assert_eq!(dropped, 2);
    h.s.handle_nat(consistent(), h.now);
    let answers = h
        .drain()
        .iter()
        .filter(|x| matches!(x, SessionAction::Answer { .. }))
        .count();
    assert_eq!(answers, SESSION_QUEUE);
}

#[test]
fn an_exhausted_punch_falls_back_to_the_relay() {
    let mut h = start(Some(relay_choice()));
    let probe = h.probe_round(consistent(), NatClass::Consistent);
    h.punch_round(NatClass::Consistent, probe.token);
    let mut steps = 0;
    let mut actions = Vec::new();
    while !actions.contains(&SessionAction::PairRelay(relay_choice())) && steps < 1000 {
        let t = h.s.poll_timeout().unwrap();
        h.advance(t - h.now);
        actions = h.drain();
        steps += 1;
    }
    assert_eq!(steps, MAX_CONSISTENT_ROUNDS as usize);
    assert!(actions.contains(&SessionAction::ClosePunch));
    // The relay gets its own time; then the session ends.
    assert!(h.s.poll_timeout().unwrap() >= h.now + RELAY_TIMEOUT);
    h.advance(PUNCH_DURATION + RELAY_TIMEOUT);
    assert!(matches!(
        h.s.poll_outcome(),
        Some(SessionOutcome::Failed(_))
    ));
}
