//! Unit tests of [`ClientConnect`]: every path the shell drives, with a real Noise responder
//! playing the server and time stepped by hand (no sockets, no sleeps).

use std::net::Ipv4Addr;
use std::time::Duration;

use super::rounds::UNKNOWN_RETRY_PAUSE;
use super::*;
use crate::dht::QueryReply;
use crate::hyperdht::crypto::{holepunch_secret, secretbox_open, secretbox_seal};
use crate::hyperdht::holepunch::RANDOM_PUNCH_INTERVAL;
use crate::hyperdht::messages::{
    Handshake, Holepunch, HolepunchInfo, HolepunchPayload, Mode, NoisePayload, RelayInfo,
    RelayThroughInfo, UdxInfo,
};
use crate::hyperdht::punch::Hit;
use crate::hyperdht::schedule::ProbeOp;
use crate::hyperdht::terms::PAYLOAD_VERSION;
use crate::hyperdht::{commands, error_codes, firewall};
use crate::keys::KeyPair;
use crate::noise::{NoiseConfig, NoiseHandshake};

fn a(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

const RELAY: &str = "10.0.0.1:49737";
const RELAY2: &str = "10.0.0.2:49737";
/// Our address as the relay sees it.
const US: &str = "198.51.100.7:4000";
/// The server's address as the relay sees it.
const SERVER: &str = "203.0.113.9:5000";
const SERVER_ID: u32 = 77;

fn server_keys() -> KeyPair {
    KeyPair::from_seed([0x51; 32])
}

fn client_keys() -> KeyPair {
    KeyPair::from_seed([0xc1; 32])
}

fn our_payload() -> NoisePayload {
    NoisePayload {
        version: PAYLOAD_VERSION,
        error: 0,
        firewall: firewall::UNKNOWN,
        holepunch: None,
        addresses4: Vec::new(),
        addresses6: Vec::new(),
        udx: Some(UdxInfo {
            version: 1,
            reusable_socket: false,
            id: 5,
            seq: 0,
        }),
        secret_stream: Some(1),
        relay_through: None,
        relay_addresses: None,
    }
}

/// A server payload: its class, and a holepunch slot when it can punch.
fn server_payload(class: NatClass, punch: bool) -> NoisePayload {
    NoisePayload {
        firewall: class.to_wire(),
        holepunch: punch.then(|| HolepunchInfo {
            id: 3,
            relays: vec![RelayInfo {
                relay_address: a(RELAY),
                peer_address: a(SERVER),
            }],
        }),
        addresses4: vec![a(SERVER)],
        udx: Some(UdxInfo {
            version: 1,
            reusable_socket: false,
            id: u64::from(SERVER_ID),
            seq: 0,
        }),
        ..our_payload()
    }
}

fn relay_choice() -> RelayChoice {
    RelayChoice {
        key: KeyPair::from_seed([0xee; 32]).public_key(),
        token: [9; 32],
        initiator: true,
    }
}

struct Harness {
    m: ClientConnect,
    now: Instant,
    gate: Arc<Mutex<RandomPunchGate>>,
    /// The holepunch secret the server derived.
    secret: Id,
}

fn start(relays: &[&str], our_relay: Option<RelayChoice>) -> (Harness, Vec<ClientAction>) {
    let gate = Arc::new(Mutex::new(RandomPunchGate::default()));
    let now = Instant::now();
    let params = ClientParams {
        key_pair: client_keys(),
        remote: server_keys().public_key(),
        relays: relays.iter().map(|r| a(r)).collect(),
        nodes: vec![a(RELAY)],
        payload: our_payload(),
        our_relay,
        relay_mode: RelayMode::Auto,
        gate: gate.clone(),
    };
    let m = ClientConnect::new(params, now).unwrap();
    let mut h = Harness {
        m,
        now,
        gate,
        secret: [0; 32],
    };
    let actions = h.drain();
    (h, actions)
}

impl Harness {
    fn drain(&mut self) -> Vec<ClientAction> {
        std::iter::from_fn(|| self.m.poll_action()).collect()
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.m.handle_timeout(self.now);
    }

    /// Plays the server: answers the handshake request `id` (msg1 in `req`) through `relay`.
    fn answer_handshake(
        &mut self,
        id: RequestId,
        req: &UserRequest,
        payload: &NoisePayload,
        relayed: bool,
    ) {
        let hs = Handshake::decode(req.value.as_deref().unwrap()).unwrap();
        let mut noise = NoiseHandshake::new(NoiseConfig::ik_responder(
            server_keys(),
            &ns::peer_handshake(),
        ))
        .unwrap();
        noise.read_message(&hs.noise).unwrap();
        if let noise::Step::Verdict(_) = noise.next_step() {
            noise.handle_verdict(true).unwrap();
        }
        let msg2 = noise.write_message(&payload.encode()).unwrap();
        self.secret = holepunch_secret(&noise.into_handshake().unwrap().hash);
        let value = Handshake {
            mode: Mode::Reply,
            noise: msg2,
            peer_address: relayed.then(|| a(SERVER)),
            relay_address: None,
        }
        .encode();
        let reply = QueryReply {
            from: req.to,
            id: None,
            to: a(US),
            token: None,
            closer_nodes: Vec::new(),
            error: 0,
            value: Some(value),
        };
        self.m.handle_response(id, Ok(reply), self.now);
    }

    /// Opens the client's PEER_HOLEPUNCH request.
    fn open_round(&self, req: &UserRequest) -> HolepunchPayload {
        assert_eq!(req.command, commands::PEER_HOLEPUNCH);
        assert_eq!(req.to, a(RELAY));
        let hp = Holepunch::decode(req.value.as_deref().unwrap()).unwrap();
        assert_eq!(hp.id, 3);
        let plain = secretbox_open(&self.secret, &hp.payload).unwrap();
        HolepunchPayload::decode(&plain).unwrap()
    }

    /// Answers PEER_HOLEPUNCH request `id` as the server.
    fn answer_round(&mut self, id: RequestId, payload: &HolepunchPayload) {
        let value = Holepunch {
            mode: Mode::Reply,
            id: 3,
            payload: secretbox_seal(&self.secret, &[7; 24], &payload.encode()),
            peer_address: Some(a(SERVER)),
        }
        .encode();
        self.m
            .handle_response(id, Ok(reply_from(a(RELAY), value)), self.now);
    }

    fn outcome(&mut self) -> Result<ClientConnected, ConnectError> {
        self.m.poll_outcome().expect("an outcome")
    }
}

fn reply_from(from: SocketAddrV4, value: Vec<u8>) -> QueryReply {
    QueryReply {
        from,
        id: None,
        to: a(US),
        token: None,
        closer_nodes: Vec::new(),
        error: 0,
        value: Some(value),
    }
}

fn requests(actions: &[ClientAction]) -> Vec<(RequestId, UserRequest)> {
    actions
        .iter()
        .filter_map(|x| match x {
            ClientAction::Request { id, req } => Some((*id, req.clone())),
            _ => None,
        })
        .collect()
}

fn one_request(actions: &[ClientAction]) -> (RequestId, UserRequest) {
    let r = requests(actions);
    assert_eq!(r.len(), 1, "one request in {actions:?}");
    r.into_iter().next().unwrap()
}

fn sampler(ports: &[u16]) -> NatSampler {
    let mut n = NatSampler::new(true);
    for (i, p) in ports.iter().enumerate() {
        n.add(
            SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), *p),
            SocketAddrV4::new(Ipv4Addr::new(9, 0, 0, i as u8 + 1), 1),
        );
    }
    n
}

fn consistent() -> NatSampler {
    sampler(&[4000, 4000, 4000])
}

fn random() -> NatSampler {
    sampler(&[4001, 4002, 4003, 4004])
}

/// Handshake done through a relay with a punchable server of `class`; returns the harness in
/// the punch's probe round, and that round's request.
fn to_probe_round(
    class: NatClass,
    local: NatSampler,
    relay: Option<RelayChoice>,
) -> (Harness, RequestId, HolepunchPayload) {
    let (mut h, actions) = start(&[RELAY], relay);
    let (id, req) = one_request(&actions);
    h.answer_handshake(id, &req, &server_payload(class, true), true);
    // Behind different NATs: no LAN race, the punch waits for our class.
    assert!(h.drain().is_empty());
    assert_eq!(h.m.poll_timeout(), None);
    h.m.handle_nat(local, h.now);
    let actions = h.drain();
    assert!(
        matches!(&actions[0], ClientAction::OpenPunch { hosts } if hosts[0] == *a(SERVER).ip())
    );
    assert!(matches!(
        actions[1],
        ClientAction::Probe(ProbeOp::Send { socket: 0, to }) if to == a(SERVER)
    ));
    let (id, req) = one_request(&actions);
    let probe = h.open_round(&req);
    assert_eq!(probe.round, 0);
    assert!(!probe.punching);
    assert_eq!(probe.remote_address, Some(a(SERVER)));
    (h, id, probe)
}

/// From the probe round through the punch round; the server answers as `class`, echoing the
/// client's token when `echo`.
fn to_probing(h: &mut Harness, id: RequestId, class: NatClass, echo: bool) {
    let token = [0x70; 32];
    let addresses = match class {
        NatClass::Random => vec![SocketAddrV4::new(*a(SERVER).ip(), 0)],
        _ => vec![a(SERVER)],
    };
    h.answer_round(
        id,
        &HolepunchPayload {
            firewall: class.to_wire(),
            addresses: Some(addresses.clone()),
            token: Some(token),
            ..HolepunchPayload::default()
        },
    );
    let actions = h.drain();
    let (id, req) = one_request(&actions);
    let punch = h.open_round(&req);
    assert!(punch.punching);
    assert_eq!(punch.round, 1);
    assert_eq!(
        punch.remote_token,
        Some(token),
        "the client echoes our token"
    );
    h.answer_round(
        id,
        &HolepunchPayload {
            firewall: class.to_wire(),
            round: 1,
            punching: true,
            addresses: Some(addresses),
            remote_token: if echo { punch.token } else { Some([0; 32]) },
            ..HolepunchPayload::default()
        },
    );
}

fn probes(actions: &[ClientAction]) -> Vec<ProbeOp> {
    actions
        .iter()
        .filter_map(|x| match x {
            ClientAction::Probe(p) => Some(*p),
            _ => None,
        })
        .collect()
}

fn no_path(r: Result<ClientConnected, ConnectError>) -> NoPathReason {
    match r {
        Err(ConnectError::NoPath(reason)) => reason,
        other => panic!("expected NoPath, got {other:?}"),
    }
}

#[test]
fn direct_connect_by_ping_race() {
    let (mut h, actions) = start(&[RELAY, RELAY2], None);
    assert!(matches!(actions[0], ClientAction::SampleNat { .. }));
    let reqs = requests(&actions);
    assert_eq!(reqs.len(), 2, "msg1 through both relays");
    assert!(
        reqs.iter()
            .all(|(_, r)| r.command == commands::PEER_HANDSHAKE)
    );
    // The first valid msg2 wins; the other relay's answer is stale.
    h.answer_handshake(
        reqs[1].0,
        &reqs[1].1,
        &server_payload(NatClass::Open, false),
        false,
    );
    let actions = h.drain();
    let pings = requests(&actions);
    assert!(pings.iter().all(|(_, r)| r.internal && r.command == 0));
    // Its advertised address and where the (unrelayed) answer came from.
    let to: Vec<SocketAddrV4> = pings.iter().map(|(_, r)| r.to).collect();
    assert_eq!(to, vec![a(SERVER), a(RELAY2)]);
    h.answer_handshake(
        reqs[0].0,
        &reqs[0].1,
        &server_payload(NatClass::Open, false),
        false,
    );
    assert!(h.drain().is_empty());
    let (id, req) = &pings[0];
    h.m.handle_response(*id, Ok(reply_from(req.to, Vec::new())), h.now);
    let done = h.outcome().unwrap();
    assert_eq!(done.path, ClientPath::Direct(a(SERVER)));
    assert_eq!(done.remote_id, SERVER_ID);
    assert_eq!(done.handshake.remote_public_key, server_keys().public_key());
    assert!(h.m.poll_outcome().is_none(), "one outcome");
}

#[test]
fn handshake_timeout_or_refusal() {
    // A refused key gets no answer: the handshake times out.
    let (mut h, _) = start(&[RELAY], None);
    assert_eq!(h.m.poll_timeout(), Some(h.now + HANDSHAKE_TIMEOUT));
    h.advance(HANDSHAKE_TIMEOUT - Duration::from_millis(1));
    assert!(h.m.poll_outcome().is_none());
    h.advance(Duration::from_millis(1));
    assert!(matches!(h.outcome(), Err(ConnectError::HandshakeFailed)));
}

#[test]
fn lying_and_malformed_handshake_replies_fail_cleanly() {
    let (mut h, actions) = start(&[RELAY, RELAY2], None);
    let reqs = requests(&actions);
    // An answer from another address than the relay asked is not trusted.
    let mut wrong = reply_from(a("10.9.9.9:1"), Vec::new());
    wrong.value = Some(
        Handshake {
            mode: Mode::Reply,
            noise: vec![1, 2, 3],
            peer_address: None,
            relay_address: None,
        }
        .encode(),
    );
    h.m.handle_response(reqs[0].0, Ok(wrong), h.now);
    assert!(h.m.poll_outcome().is_none(), "one relay is still asked");
    // Garbage from the second: nothing left to wait for.
    h.m.handle_response(reqs[1].0, Ok(reply_from(a(RELAY2), vec![0xff; 9])), h.now);
    assert!(matches!(h.outcome(), Err(ConnectError::HandshakeFailed)));

    // A msg2 that does not decrypt is a Noise error.
    let (mut h, actions) = start(&[RELAY], None);
    let (id, _) = one_request(&actions);
    let bad = Handshake {
        mode: Mode::Reply,
        noise: vec![0x42; 80],
        peer_address: None,
        relay_address: None,
    }
    .encode();
    h.m.handle_response(id, Ok(reply_from(a(RELAY), bad)), h.now);
    assert!(matches!(h.outcome(), Err(ConnectError::Noise(_))));

    // A server payload with an error code.
    let (mut h, actions) = start(&[RELAY], None);
    let (id, req) = one_request(&actions);
    let mut p = server_payload(NatClass::Open, false);
    p.error = error_codes::VERSION_MISMATCH;
    h.answer_handshake(id, &req, &p, false);
    assert!(matches!(
        h.outcome(),
        Err(ConnectError::Payload(error_codes::VERSION_MISMATCH))
    ));

    // A DHT error on every relay.
    let (mut h, actions) = start(&[RELAY], None);
    let (id, _) = one_request(&actions);
    h.m.handle_response(id, Err("timed out".into()), h.now);
    assert!(matches!(h.outcome(), Err(ConnectError::HandshakeFailed)));
}

#[test]
fn unreachable_server_without_punch_or_relay_is_no_path() {
    let (mut h, actions) = start(&[RELAY], None);
    let (id, req) = one_request(&actions);
    h.answer_handshake(id, &req, &server_payload(NatClass::Consistent, false), true);
    let pings = requests(&h.drain());
    assert!(!pings.is_empty());
    h.advance(PATH_TIMEOUT);
    let reason = no_path(h.outcome());
    assert!(reason.punch.contains("cannot holepunch"), "{reason}");
    assert_eq!(reason.remote, NatClass::Consistent);
}

#[test]
fn lan_race_first_then_punch() {
    let (mut h, actions) = start(&[RELAY], None);
    let (id, req) = one_request(&actions);
    // The relay sees both peers at the same host: the LAN race first.
    answer_same_network(&mut h, id, &req);
    let pings = requests(&h.drain());
    assert!(!pings.is_empty());
    assert_eq!(h.m.poll_timeout(), Some(h.now + LAN_PING_TIMEOUT));
    // Every ping fails: on to the punch, which waits for our NAT class.
    for (id, _) in &pings {
        h.m.handle_response(*id, Err("no answer".into()), h.now);
    }
    assert_eq!(h.m.poll_timeout(), None, "waiting for the NAT class");
    h.m.handle_nat(consistent(), h.now);
    let actions = h.drain();
    assert!(
        actions
            .iter()
            .any(|x| matches!(x, ClientAction::OpenPunch { .. }))
    );
}

/// Answers the handshake with a reply whose `to` has the server's host (same NAT).
fn answer_same_network(h: &mut Harness, id: RequestId, req: &UserRequest) {
    let hs = Handshake::decode(req.value.as_deref().unwrap()).unwrap();
    let mut noise = NoiseHandshake::new(NoiseConfig::ik_responder(
        server_keys(),
        &ns::peer_handshake(),
    ))
    .unwrap();
    noise.read_message(&hs.noise).unwrap();
    if let noise::Step::Verdict(_) = noise.next_step() {
        noise.handle_verdict(true).unwrap();
    }
    let msg2 = noise
        .write_message(&server_payload(NatClass::Consistent, true).encode())
        .unwrap();
    h.secret = holepunch_secret(&noise.into_handshake().unwrap().hash);
    let value = Handshake {
        mode: Mode::Reply,
        noise: msg2,
        peer_address: Some(a(SERVER)),
        relay_address: None,
    }
    .encode();
    let mut reply = reply_from(a(RELAY), value);
    reply.to = SocketAddrV4::new(*a(SERVER).ip(), 6000);
    h.m.handle_response(id, Ok(reply), h.now);
}

#[test]
fn consistent_punch_connects_on_the_first_probe() {
    let (mut h, id, _) = to_probe_round(NatClass::Consistent, consistent(), None);
    to_probing(&mut h, id, NatClass::Consistent, true);
    assert!(h.drain().is_empty());
    // The first step is due at once; then one every interval.
    h.advance(Duration::ZERO);
    let sent = probes(&h.drain());
    assert!(!sent.is_empty());
    assert!(sent.iter().all(|p| *p
        == ProbeOp::Send {
            socket: 0,
            to: a(SERVER)
        }));
    h.advance(crate::hyperdht::holepunch::CONSISTENT_PROBE_INTERVAL);
    assert_eq!(probes(&h.drain()).len(), sent.len());
    h.m.handle_hit(
        Hit::Probe {
            socket: 0,
            from: a(SERVER),
        },
        h.now,
    );
    let done = h.outcome().unwrap();
    assert_eq!(
        done.path,
        ClientPath::Holepunched {
            socket: 0,
            from: a(SERVER)
        }
    );
    // A consistent punch does not take the random-punch gate.
    assert!(h.gate.lock().unwrap().try_begin(h.now));
}

#[test]
fn a_probe_before_probing_wins_at_once() {
    let (mut h, id, _) = to_probe_round(NatClass::Consistent, consistent(), None);
    // The server's fast-mode probe arrives during the rounds.
    h.m.handle_hit(
        Hit::Probe {
            socket: 0,
            from: a(SERVER),
        },
        h.now,
    );
    assert!(h.m.poll_outcome().is_none());
    to_probing(&mut h, id, NatClass::Consistent, true);
    assert!(matches!(
        h.outcome().unwrap().path,
        ClientPath::Holepunched { socket: 0, .. }
    ));
}

#[test]
fn random_to_consistent_opens_birthday_sockets() {
    let (mut h, id, probe) = to_probe_round(NatClass::Consistent, random(), None);
    assert_eq!(probe.firewall, firewall::RANDOM);
    to_probing(&mut h, id, NatClass::Consistent, true);
    h.advance(Duration::ZERO);
    let sent = probes(&h.drain());
    assert_eq!(sent.len(), 16, "a burst of birthday sockets");
    assert!(
        sent.iter()
            .all(|p| *p == ProbeOp::OpenAndSend { to: a(SERVER) })
    );
    // The gate is held: no second random punch on this node.
    assert!(!h.gate.lock().unwrap().try_begin(h.now));
    h.m.handle_hit(
        Hit::Probe {
            socket: 12,
            from: a(SERVER),
        },
        h.now,
    );
    let done = h.outcome().unwrap();
    assert_eq!(
        done.path,
        ClientPath::Holepunched {
            socket: 12,
            from: a(SERVER)
        }
    );
    // Released after a success: the pause before the next random punch.
    assert!(!h.gate.lock().unwrap().try_begin(h.now));
    assert!(
        h.gate
            .lock()
            .unwrap()
            .try_begin(h.now + RANDOM_PUNCH_INTERVAL)
    );
}

#[test]
fn consistent_to_random_sprays_random_ports() {
    let (mut h, id, _) = to_probe_round(NatClass::Random, consistent(), None);
    to_probing(&mut h, id, NatClass::Random, true);
    h.advance(Duration::ZERO);
    let sent = probes(&h.drain());
    assert!(!sent.is_empty());
    assert!(sent.iter().all(
        |p| matches!(p, ProbeOp::Send { socket: 0, to } if to.ip() == a(SERVER).ip() && to.port() >= 1000)
    ));
}

#[test]
fn an_unverified_random_peer_is_not_sprayed() {
    let (mut h, id, _) = to_probe_round(NatClass::Random, consistent(), None);
    to_probing(&mut h, id, NatClass::Random, false);
    let reason = no_path(h.outcome());
    assert!(reason.punch.contains("could not be verified"), "{reason}");
    // The gate was never taken.
    assert!(h.gate.lock().unwrap().try_begin(h.now));
}

#[test]
fn both_random_aborts_and_takes_the_relay() {
    let (mut h, actions) = start(&[RELAY], Some(relay_choice()));
    let (id, req) = one_request(&actions);
    let hs = Handshake::decode(req.value.as_deref().unwrap()).unwrap();
    assert!(!hs.noise.is_empty());
    h.answer_handshake(id, &req, &server_payload(NatClass::Random, true), true);
    h.m.handle_nat(random(), h.now);
    let actions = h.drain();
    let (id, req) = one_request(&actions);
    let abort = h.open_round(&req);
    assert_eq!(abort.error, error_codes::ABORTED);
    h.answer_round(id, &HolepunchPayload::default());
    let actions = h.drain();
    assert!(
        actions
            .iter()
            .any(|x| matches!(x, ClientAction::PairRelay(r) if *r == relay_choice())),
        "{actions:?}"
    );
    h.m.handle_relay(Ok(()));
    assert_eq!(h.outcome().unwrap().path, ClientPath::Relayed);
}

#[test]
fn exhausted_punch_falls_back_to_the_relay() {
    let (mut h, id, _) = to_probe_round(NatClass::Consistent, consistent(), Some(relay_choice()));
    to_probing(&mut h, id, NatClass::Consistent, true);
    let mut steps = 0;
    while h.m.poll_outcome().is_none() && steps < 1000 {
        let Some(t) = h.m.poll_timeout() else { break };
        h.now = t;
        h.m.handle_timeout(h.now);
        steps += 1;
    }
    let actions = h.drain();
    assert!(
        actions
            .iter()
            .any(|x| matches!(x, ClientAction::ClosePunch))
    );
    assert!(
        actions
            .iter()
            .any(|x| matches!(x, ClientAction::PairRelay(r) if *r == relay_choice()))
    );
    assert_eq!(
        steps,
        crate::hyperdht::holepunch::MAX_CONSISTENT_ROUNDS as usize
    );
    // The relay fails too: the error says what was tried.
    h.m.handle_relay(Err("relay unreachable".into()));
    let reason = no_path(h.outcome());
    assert!(reason.punch.contains("no probe came back"), "{reason}");
    assert!(reason.relay.unwrap().contains("relay unreachable"));
}

#[test]
fn a_silent_holepunch_relay_times_out() {
    let (mut h, _, _) = to_probe_round(NatClass::Consistent, consistent(), None);
    h.advance(HOLEPUNCH_ROUND_TIMEOUT);
    let reason = no_path(h.outcome());
    assert!(reason.punch.contains("did not answer"), "{reason}");
    assert!(reason.relay.is_none());
}

#[test]
fn malformed_or_forged_holepunch_answers_fail_the_punch() {
    let (mut h, id, _) = to_probe_round(NatClass::Consistent, consistent(), None);
    h.m.handle_response(id, Ok(reply_from(a(RELAY), vec![1, 2, 3])), h.now);
    assert!(no_path(h.outcome()).punch.contains("no holepunch answer"));

    let (mut h, id, _) = to_probe_round(NatClass::Consistent, consistent(), None);
    h.secret = [0x99; 32];
    h.answer_round(id, &HolepunchPayload::default());
    assert!(no_path(h.outcome()).punch.contains("does not authenticate"));
}

#[test]
fn an_unclassified_server_gets_a_second_probe_round() {
    let (mut h, id, _) = to_probe_round(NatClass::Consistent, consistent(), None);
    h.answer_round(id, &HolepunchPayload::default());
    assert!(h.drain().is_empty());
    assert_eq!(h.m.poll_timeout(), Some(h.now + UNKNOWN_RETRY_PAUSE));
    h.advance(UNKNOWN_RETRY_PAUSE);
    let actions = h.drain();
    let (id, req) = one_request(&actions);
    assert_eq!(h.open_round(&req).round, 1);
    // Still unknown after the retry: the punch cannot be planned; the server is told.
    h.answer_round(id, &HolepunchPayload::default());
    let actions = h.drain();
    let (id, req) = one_request(&actions);
    assert_eq!(h.open_round(&req).error, error_codes::ABORTED);
    h.answer_round(id, &HolepunchPayload::default());
    assert!(
        no_path(h.outcome())
            .punch
            .contains("could not be classified")
    );
}

#[test]
fn a_busy_server_says_try_later() {
    let (mut h, id, _) = to_probe_round(NatClass::Consistent, consistent(), None);
    h.answer_round(
        id,
        &HolepunchPayload {
            firewall: firewall::CONSISTENT,
            addresses: Some(vec![a(SERVER)]),
            ..HolepunchPayload::default()
        },
    );
    let actions = h.drain();
    let (id, _) = one_request(&actions);
    h.answer_round(
        id,
        &HolepunchPayload {
            error: error_codes::TRY_LATER,
            ..HolepunchPayload::default()
        },
    );
    assert!(no_path(h.outcome()).punch.contains("try later"));
}

#[test]
fn our_own_random_punch_limit_refuses_a_second() {
    let (mut h, id, _) = to_probe_round(NatClass::Consistent, random(), None);
    assert!(
        h.gate.lock().unwrap().try_begin(h.now),
        "another punch runs"
    );
    to_probing(&mut h, id, NatClass::Consistent, true);
    assert!(
        no_path(h.outcome())
            .punch
            .contains("another random-NAT punch")
    );
}

#[test]
fn relaying_disabled_says_so() {
    let gate = Arc::new(Mutex::new(RandomPunchGate::default()));
    let now = Instant::now();
    let params = ClientParams {
        key_pair: client_keys(),
        remote: server_keys().public_key(),
        relays: vec![a(RELAY)],
        nodes: Vec::new(),
        payload: our_payload(),
        our_relay: None,
        relay_mode: RelayMode::Disabled,
        gate: gate.clone(),
    };
    let m = ClientConnect::new(params, now).unwrap();
    let mut h = Harness {
        m,
        now,
        gate,
        secret: [0; 32],
    };
    let actions = h.drain();
    let (id, req) = one_request(&actions);
    // The server proposes a relay; disabled relaying refuses it.
    let mut p = server_payload(NatClass::Consistent, false);
    p.relay_through = Some(RelayThroughInfo {
        version: 1,
        public_key: [3; 32],
        token: [4; 32],
    });
    h.answer_handshake(id, &req, &p, true);
    h.advance(PATH_TIMEOUT);
    let reason = no_path(h.outcome());
    assert!(reason.relay.unwrap().contains("disabled"));
}

#[test]
fn find_peer_results_pick_the_record_holders() {
    let remote = server_keys().public_key();
    assert!(matches!(
        handshake_relays(&[], &remote),
        Err(ConnectError::PeerNotFound)
    ));
}
