//! Validates the network-namespace NAT lab with the JavaScript stack (npm `hyperdht`): a DHT on
//! the public side, a server behind NAT B and a client behind NAT A. Consistent NATs: they connect
//! by holepunching and move 16 MiB, SHA-256 checked on both sides. Random port mapping on both
//! NATs: the client fails with a clear holepunch error within the time bound.
//!
//! Skipped (with a printed reason) where `ip netns` or iptables NAT is unavailable.

use crate::netlab;

use netlab::{LabProcess, NatKind, NetLab, Node};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// JS helper scripts and their `node_modules`.
const JS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../interop/js");
/// Bytes the client sends through the holepunched connection.
const TRANSFER_BYTES: u64 = 16 * 1024 * 1024;
/// Port of the bootstrap node inside the public namespace (private to the lab).
const BOOTSTRAP_PORT: u16 = 49737;
/// Starting the bootstrapper and three DHT nodes (about 1 s idle, slower on a loaded machine).
const DHT_READY: Duration = Duration::from_secs(30);
/// Server announce plus NAT/firewall detection (about 5 s).
const SERVER_READY: Duration = Duration::from_secs(40);
/// Client: bootstrap, connect, 16 MiB and the hash reply (about 3 s idle).
const CLIENT_DONE: Duration = Duration::from_secs(60);
/// Random NATs: bootstrap plus the holepunch abort (under 1 s idle).
const CLIENT_FAILS: Duration = Duration::from_secs(45);

fn js_dir() -> &'static Path {
    let dir = Path::new(JS_DIR);
    assert!(
        dir.join("node_modules/hyperdht").is_dir(),
        "interop/js/node_modules is missing: run `npm ci --prefix interop/js`"
    );
    dir
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

fn is_event(line: &str, event: &str) -> bool {
    serde_json::from_str::<Value>(line).is_ok_and(|v| v["event"] == event)
}

fn script() -> String {
    js_dir().join("netlab-peer.js").display().to_string()
}

/// Starts the DHT in the public namespace and the server behind NAT B; returns
/// `(dht, server, bootstrap, server public key)`.
fn start_dht_and_server(lab: &NetLab) -> (LabProcess, LabProcess, String, String) {
    let script = script();
    let host = Node::Public.addr().to_string();
    let port = BOOTSTRAP_PORT.to_string();
    let mut dht = lab.spawn(
        Node::Public,
        "node",
        &[
            &script, "dht", "--host", &host, "--port", &port, "--nodes", "3",
        ],
    );
    let ready = json(&dht.wait_for(DHT_READY, |l| is_event(l, "ready")));
    let bootstrap = ready["bootstrap"]
        .as_str()
        .expect("bootstrap in ready line")
        .to_owned();

    let seed = "11".repeat(32);
    let mut server = lab.spawn(
        Node::HostB,
        "node",
        &[
            &script,
            "server",
            "--bootstrap",
            &bootstrap,
            "--seed",
            &seed,
        ],
    );
    let listening = json(&server.wait_for(SERVER_READY, |l| is_event(l, "listening")));
    assert_eq!(
        listening["firewalled"], true,
        "server behind NAT must be firewalled: {listening}"
    );
    assert_eq!(
        listening["natHost"],
        Node::RouterB.addr().to_string(),
        "server's NAT-sampled address must be router B's: {listening}"
    );
    let key = listening["publicKey"]
        .as_str()
        .expect("publicKey in listening line")
        .to_owned();
    (dht, server, bootstrap, key)
}

fn client(lab: &NetLab, bootstrap: &str, key: &str, timeout: Duration) -> LabProcess {
    let bytes = TRANSFER_BYTES.to_string();
    let timeout_ms = timeout.as_millis().to_string();
    lab.spawn(
        Node::HostA,
        "node",
        &[
            &script(),
            "client",
            "--bootstrap",
            bootstrap,
            "--key",
            key,
            "--bytes",
            &bytes,
            "--timeout-ms",
            &timeout_ms,
        ],
    )
}

#[test]
fn js_peers_holepunch_through_consistent_nats() {
    js_dir();
    let Some(lab) = NetLab::start(NatKind::Consistent) else {
        return;
    };
    let (_dht, mut server, bootstrap, key) = start_dht_and_server(&lab);
    assert_ne!(
        json(server.log().last().unwrap())["natPort"],
        0,
        "consistent NAT must give a stable port"
    );

    let started = Instant::now();
    let mut client = client(&lab, &bootstrap, &key, CLIENT_DONE);
    let connected = json(&client.wait_for(CLIENT_DONE, |l| {
        is_event(l, "connected") || is_event(l, "error")
    }));
    assert_eq!(
        connected["event"], "connected",
        "client failed: {connected}"
    );
    // The stream runs straight between the two routers' public addresses: holepunched, not
    // relayed (no relay is configured) and not through a private address.
    assert_eq!(
        connected["remote"]["host"],
        Node::RouterB.addr().to_string(),
        "client's stream must go to router B's public address: {connected}"
    );
    let done = json(&client.wait_for(CLIENT_DONE, |l| is_event(l, "done") || is_event(l, "error")));
    assert_eq!(done["event"], "done", "transfer failed: {done}");
    assert_eq!(done["bytes"], TRANSFER_BYTES);

    let conn = json(&server.wait_for(CLIENT_DONE, |l| is_event(l, "connection")));
    assert_eq!(
        conn["remote"]["host"],
        Node::RouterA.addr().to_string(),
        "server's stream must come from router A's public address: {conn}"
    );
    let received = json(&server.wait_for(CLIENT_DONE, |l| is_event(l, "received")));
    assert_eq!(received["bytes"], TRANSFER_BYTES);
    assert_eq!(received["sha256"], done["sha256"], "hashes differ");
    println!(
        "consistent NAT: connect {} ms, 16 MiB in {:.3} s ({:.1} MB/s), total {:?}",
        connected["connectMs"],
        done["seconds"].as_f64().unwrap(),
        done["mbPerSec"].as_f64().unwrap(),
        started.elapsed()
    );
}

#[test]
fn js_peers_fail_clearly_through_random_nats() {
    js_dir();
    let Some(lab) = NetLab::start(NatKind::Random) else {
        return;
    };
    let (_dht, server, bootstrap, key) = start_dht_and_server(&lab);
    assert_eq!(
        json(server.log().last().unwrap())["natPort"],
        0,
        "random NAT must show as a varying port"
    );

    let started = Instant::now();
    let mut client = client(&lab, &bootstrap, &key, CLIENT_FAILS);
    let line = json(&client.wait_for(CLIENT_FAILS, |l| {
        is_event(l, "connected") || is_event(l, "error")
    }));
    assert_eq!(
        line["event"], "error",
        "must not connect through random NATs: {line}"
    );
    let code = line["code"].as_str().unwrap();
    assert!(
        [
            "HOLEPUNCH_ABORTED",
            "HOLEPUNCH_DOUBLE_RANDOMIZED_NATS",
            "CANNOT_HOLEPUNCH"
        ]
        .contains(&code),
        "expected a holepunch error, got {line}"
    );
    let status = client.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| !s.success()),
        "client must exit with failure"
    );
    println!("random NAT: {code} after {:?}", started.elapsed());
}

/// The lab itself: a panic while it is alive still removes its namespaces and kills processes in
/// them (also ones the test did not track), and labs of dead processes are cleaned up.
#[test]
fn lab_teardown_on_panic_and_stale_cleanup() {
    let Some(lab) = NetLab::start(NatKind::Consistent) else {
        return;
    };
    let names: Vec<String> = [
        Node::Public,
        Node::RouterA,
        Node::RouterB,
        Node::HostA,
        Node::HostB,
    ]
    .iter()
    .map(|n| lab.ns(*n))
    .collect();
    let listed = netns_list();
    assert!(
        names.iter().all(|n| listed.contains(n)),
        "lab namespaces missing: {listed:?}"
    );
    // A process the test does not track: teardown must still kill it.
    let mut stray = lab
        .command(Node::HostA, "sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let tracked = lab.spawn(Node::Public, "sleep", &["600"]);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _lab = lab;
        let _tracked = tracked;
        panic!("deliberate panic while the lab is up");
    }));
    assert!(result.is_err());
    let listed = netns_list();
    assert!(
        names.iter().all(|n| !listed.contains(n)),
        "left behind: {listed:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while stray.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "process inside the lab survived teardown"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // A lab left behind by a process that no longer exists.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let stale = format!("{}{dead_pid}-0-pub", netlab::PREFIX);
    let status = std::process::Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    assert!(status.success());
    netlab::cleanup_stale();
    assert!(
        !netns_list().contains(&stale),
        "stale namespace not cleaned up"
    );
}

fn netns_list() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}
