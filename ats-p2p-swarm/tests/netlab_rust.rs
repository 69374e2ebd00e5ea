//! Rust peers in the network-namespace NAT lab: the DHT (npm hyperdht bootstrapper plus three
//! nodes, as validated by `netlab_js.rs`) on the public side, a Rust server behind NAT B and a
//! Rust client behind NAT A. Consistent NATs: they connect by holepunching and move 16 MiB,
//! SHA-256 checked. Random port mapping on both NATs: the client fails with a clear error within
//! the time bound.
//!
//! The Rust peers are this test binary re-executed inside the namespaces: the `#[ignore]`d
//! `netlab_rust_peer` entry point runs a peer when `ATS_NETLAB_ROLE` is set (and is a no-op
//! otherwise). Skipped (with a printed reason) where `ip netns` or iptables NAT is unavailable.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use crate::netlab;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ats_p2p_swarm::hyperdht::{DhtConfig, Firewall, HyperDht};
use ats_p2p_swarm::{KeyPair, PublicKey};
use netlab::{LabProcess, NatKind, NetLab, Node};
use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// JS helper scripts and their `node_modules` (the public-side DHT).
const JS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../interop/js");
/// Bytes the client sends through the holepunched connection.
const TRANSFER_BYTES: usize = 16 * 1024 * 1024;
/// Port of the bootstrap node inside the public namespace (private to the lab).
const BOOTSTRAP_PORT: u16 = 49737;
/// Starting the bootstrapper and three DHT nodes.
const DHT_READY: Duration = Duration::from_secs(30);
/// Server bootstrap, firewall detection and announce.
const SERVER_READY: Duration = Duration::from_secs(40);
/// Client: bootstrap, connect (holepunch), 16 MiB and the hash.
const CLIENT_DONE: Duration = Duration::from_secs(60);
/// Random NATs: bootstrap, handshake, PING race and the bounded punch, then the error.
const CLIENT_FAILS: Duration = Duration::from_secs(45);
/// Server key seed.
const SERVER_SEED: [u8; 32] = [0x11; 32];

fn js_dir() -> &'static Path {
    let dir = Path::new(JS_DIR);
    assert!(
        dir.join("node_modules/hyperdht").is_dir(),
        "interop/js/node_modules is missing: run `npm ci --prefix interop/js`"
    );
    dir
}

fn is_event(line: &str, event: &str) -> bool {
    serde_json::from_str::<Value>(line).is_ok_and(|v| v["event"] == event)
}

fn json_line(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

fn start_dht(lab: &NetLab) -> (LabProcess, String) {
    let script = js_dir().join("netlab-peer.js").display().to_string();
    let host = Node::Public.addr().to_string();
    let port = BOOTSTRAP_PORT.to_string();
    let mut dht = lab.spawn(
        Node::Public,
        "node",
        &[
            &script, "dht", "--host", &host, "--port", &port, "--nodes", "3",
        ],
    );
    let ready = json_line(&dht.wait_for(DHT_READY, |l| is_event(l, "ready")));
    let bootstrap = ready["bootstrap"].as_str().unwrap().to_owned();
    (dht, bootstrap)
}

fn peer(lab: &NetLab, node: Node, role: &str, bootstrap: &str) -> LabProcess {
    let exe = std::env::current_exe().unwrap().display().to_string();
    let role = format!("ATS_NETLAB_ROLE={role}");
    let host = format!("ATS_NETLAB_HOST={}", node.addr());
    let boot = format!("ATS_NETLAB_BOOTSTRAP={bootstrap}");
    lab.spawn(
        node,
        "env",
        &[
            &role,
            &host,
            &boot,
            &exe,
            "--ignored",
            "--exact",
            "netlab_rust::netlab_rust_peer",
            "--nocapture",
            "--test-threads=1",
        ],
    )
}

/// Which implementation the client behind NAT A runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientImp {
    Rust,
    Js,
}

/// (dht, server, client, lab): the lab is last so the processes are dropped before it.
fn run(kind: NatKind) -> Option<(LabProcess, LabProcess, LabProcess, NetLab)> {
    run_with(kind, ClientImp::Rust)
}

/// As [`run`], with the client behind NAT A in `client` (the server is always Rust, NAT B).
fn run_with(
    kind: NatKind,
    client: ClientImp,
) -> Option<(LabProcess, LabProcess, LabProcess, NetLab)> {
    js_dir();
    let lab = NetLab::start(kind)?;
    let (dht, bootstrap) = start_dht(&lab);
    let mut server = peer(&lab, Node::HostB, "server", &bootstrap);
    let listening = json_line(&server.wait_for(SERVER_READY, |l| is_event(l, "listening")));
    assert_eq!(
        listening["firewalled"], true,
        "server behind NAT must be firewalled: {listening}"
    );
    let client = match client {
        ClientImp::Rust => peer(&lab, Node::HostA, "client", &bootstrap),
        ClientImp::Js => {
            let script = js_dir().join("netlab-peer.js").display().to_string();
            let key = KeyPair::from_seed(SERVER_SEED).public_key().to_hex();
            let bytes = TRANSFER_BYTES.to_string();
            let timeout_ms = CLIENT_DONE.as_millis().to_string();
            lab.spawn(
                Node::HostA,
                "node",
                &[
                    &script,
                    "client",
                    "--bootstrap",
                    &bootstrap,
                    "--key",
                    &key,
                    "--bytes",
                    &bytes,
                    "--timeout-ms",
                    &timeout_ms,
                ],
            )
        }
    };
    Some((dht, server, client, lab))
}

/// A JS client behind NAT A holepunches to a firewalled Rust server behind NAT B: the Rust
/// server's Noise payload carries `holepunch: {id, relays}` and it answers the JS punch rounds.
#[test]
fn js_client_holepunches_to_rust_server_through_consistent_nats() {
    let Some((_dht, mut server, mut client, _lab)) = run_with(NatKind::Consistent, ClientImp::Js)
    else {
        return;
    };
    let started = Instant::now();
    let connected = json_line(&client.wait_for(CLIENT_DONE, |l| {
        is_event(l, "connected") || is_event(l, "error")
    }));
    assert_eq!(
        connected["event"], "connected",
        "JS client failed: {connected}"
    );
    // `done` means the server's hash of what it received matched the client's.
    let done =
        json_line(&client.wait_for(CLIENT_DONE, |l| is_event(l, "done") || is_event(l, "error")));
    assert_eq!(done["event"], "done", "transfer failed: {done}");
    let received = json_line(&server.wait_for(CLIENT_DONE, |l| is_event(l, "received")));
    assert_eq!(received["sha256"], done["sha256"], "hashes differ");
    assert_eq!(
        received["remote"]
            .as_str()
            .unwrap()
            .split(':')
            .next()
            .unwrap(),
        Node::RouterA.addr().to_string(),
        "server's stream must come from router A's public address: {received}"
    );
    println!(
        "js client -> rust server, consistent NAT: connect {} ms, total {:?}",
        connected["connectMs"],
        started.elapsed()
    );
}

#[test]
fn rust_peers_holepunch_through_consistent_nats() {
    let Some((_dht, mut server, mut client, _lab)) = run(NatKind::Consistent) else {
        return;
    };
    let started = Instant::now();
    let connected = json_line(&client.wait_for(CLIENT_DONE, |l| {
        is_event(l, "connected") || is_event(l, "error")
    }));
    assert_eq!(
        connected["event"], "connected",
        "client failed: {connected}"
    );
    assert_eq!(connected["path"], "holepunched", "{connected}");
    let done =
        json_line(&client.wait_for(CLIENT_DONE, |l| is_event(l, "done") || is_event(l, "error")));
    assert_eq!(done["event"], "done", "transfer failed: {done}");
    let received = json_line(&server.wait_for(CLIENT_DONE, |l| is_event(l, "received")));
    assert_eq!(received["bytes"], TRANSFER_BYTES);
    assert_eq!(received["path"], "holepunched", "{received}");
    assert_eq!(received["sha256"], done["sha256"], "hashes differ");
    assert_eq!(
        received["remote"]
            .as_str()
            .unwrap()
            .split(':')
            .next()
            .unwrap(),
        Node::RouterA.addr().to_string(),
        "server's stream must come from router A's public address: {received}"
    );
    println!(
        "rust consistent NAT: connect {} ms, 16 MiB in {} ms, total {:?}",
        connected["connectMs"],
        done["ms"],
        started.elapsed()
    );
}

#[test]
fn rust_peers_fail_clearly_through_random_nats() {
    let Some((_dht, _server, mut client, _lab)) = run(NatKind::Random) else {
        return;
    };
    let started = Instant::now();
    let line = json_line(&client.wait_for(CLIENT_FAILS, |l| {
        is_event(l, "connected") || is_event(l, "error")
    }));
    assert_eq!(
        line["event"], "error",
        "must not connect through random NATs: {line}"
    );
    println!(
        "rust random NAT: {} after {:?}",
        line["message"],
        started.elapsed()
    );
}

fn emit(v: Value) {
    // The test harness has printed "test … ... " without a newline.
    println!("\n{v}");
}

/// Peer entry point, run inside a lab namespace by the tests above (no-op without the env).
#[test]
#[ignore = "helper process for the NAT-lab tests"]
fn netlab_rust_peer() {
    let Ok(role) = std::env::var("ATS_NETLAB_ROLE") else {
        return;
    };
    let host: Ipv4Addr = std::env::var("ATS_NETLAB_HOST").unwrap().parse().unwrap();
    let boot: SocketAddrV4 = std::env::var("ATS_NETLAB_BOOTSTRAP")
        .unwrap()
        .parse()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let dht = Arc::new(
            HyperDht::bind(DhtConfig::new(host, vec![boot]))
                .await
                .unwrap(),
        );
        dht.ready().await.unwrap();
        let skp = KeyPair::from_seed(SERVER_SEED);
        if role == "server" {
            let fw: Firewall = Arc::new(|_: &PublicKey| true);
            let mut server = dht.listen(skp.clone(), fw).await.unwrap();
            let info = dht.dht().info().await.unwrap();
            emit(json!({"event":"listening","firewalled":info.firewalled,
                "nat": info.nat_addr.map(|a| a.to_string())}));
            let mut conn = server.accept().await.unwrap();
            let mut got = vec![0u8; TRANSFER_BYTES];
            conn.read_exact(&mut got).await.unwrap();
            let remote = conn.get_ref().remote_addr().map(|a| a.to_string());
            let sha = Sha256::digest(&got);
            emit(json!({"event":"received","bytes":TRANSFER_BYTES,
                "sha256":hex::encode(sha),"remote":remote,
                "path":conn.path().kind.as_str()}));
            // The hash back, then END (what the JS lab client checks).
            conn.write_all(&sha).await.unwrap();
            conn.shutdown().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        } else {
            let ckp = KeyPair::generate();
            let t = Instant::now();
            match dht.connect(&ckp, &skp.public_key()).await {
                Ok(mut conn) => {
                    emit(
                        json!({"event":"connected","connectMs":t.elapsed().as_millis() as u64,
                        "path":conn.path().kind.as_str(),
                        "relay":conn.path().relay.map(|k| k.to_hex()),
                        "remote":conn.path().remote_addr.to_string()}),
                    );
                    let mut data = vec![0u8; TRANSFER_BYTES];
                    rand::thread_rng().fill_bytes(&mut data);
                    let t = Instant::now();
                    conn.write_all(&data).await.unwrap();
                    conn.shutdown().await.unwrap();
                    emit(
                        json!({"event":"done","sha256":hex::encode(Sha256::digest(&data)),
                        "ms":t.elapsed().as_millis() as u64}),
                    );
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                Err(e) => emit(json!({"event":"error","message":e.to_string(),
                    "ms":t.elapsed().as_millis() as u64})),
            }
        }
    });
}
