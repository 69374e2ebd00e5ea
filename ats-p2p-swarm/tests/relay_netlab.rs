//! The case blind relays exist for, in the network-namespace NAT lab: two Rust peers behind
//! *randomizing* NATs (no holepunch can work) meet through our relay on the public side and
//! move 8 MiB each way over a secret stream, SHA-256 checked. The DHT is the npm hyperdht
//! bootstrapper plus three nodes (as in `netlab_rust.rs`).
//!
//! The relay and the peers are this test binary re-executed inside the namespaces: the
//! `#[ignore]`d `relay_netlab_process` entry point runs one when `ATS_RELAY_ROLE` is set (a no-op
//! otherwise). Skipped (with a printed reason) where `ip netns` or iptables NAT is unavailable.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

#[path = "support/netlab.rs"]
mod netlab;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ats_p2p_swarm::hyperdht::{DhtConfig, HyperDht};
use ats_p2p_swarm::relay::{self, RelayServer, pair_through, relay_token};
use ats_p2p_swarm::secret_stream::SecretStream;
use ats_p2p_swarm::{KeyPair, PublicKey};
use netlab::{LabProcess, NatKind, NetLab, Node};
use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const JS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../interop/js");
/// Bytes each peer sends through the relay.
const BYTES: usize = 8 * 1024 * 1024;
/// Port of the bootstrap node inside the public namespace.
const BOOTSTRAP_PORT: u16 = 49737;
/// Starting the bootstrapper and three DHT nodes.
const DHT_READY: Duration = Duration::from_secs(30);
/// Relay: bootstrap, listen, announce.
const RELAY_READY: Duration = Duration::from_secs(40);
/// A peer: bootstrap, relay connection, pairing, 8 MiB each way and the hashes.
const PEER_DONE: Duration = Duration::from_secs(90);
const RELAY_SEED: [u8; 32] = [0x21; 32];
const SEED_A: [u8; 32] = [0x22; 32];
const SEED_B: [u8; 32] = [0x23; 32];

fn js_dir() -> &'static Path {
    let dir = Path::new(JS_DIR);
    assert!(
        dir.join("node_modules/hyperdht").is_dir(),
        "interop/js/node_modules is missing: run `npm ci --prefix interop/js`"
    );
    dir
}

fn event(line: &str) -> Option<Value> {
    serde_json::from_str::<Value>(line)
        .ok()
        .filter(|v| v.get("event").is_some())
}

fn spawn_self(lab: &NetLab, node: Node, env: &[(&str, String)]) -> LabProcess {
    let exe = std::env::current_exe().unwrap().display().to_string();
    let mut args: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    args.push(format!("ATS_RELAY_HOST={}", node.addr()));
    args.extend(
        [
            exe.as_str(),
            "--ignored",
            "--exact",
            "relay_netlab_process",
            "--nocapture",
            "--test-threads=1",
        ]
        .map(String::from),
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.spawn(node, "env", &refs)
}

#[test]
fn rust_peers_behind_random_nats_meet_through_the_relay() {
    js_dir();
    let Some(lab) = NetLab::start(NatKind::Random) else {
        return;
    };
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
    let ready = event(&dht.wait_for(DHT_READY, |l| {
        event(l).is_some_and(|v| v["event"] == "ready")
    }))
    .unwrap();
    let boot = ready["bootstrap"].as_str().unwrap().to_owned();
    let mut relay = spawn_self(
        &lab,
        Node::Public,
        &[
            ("ATS_RELAY_ROLE", "relay".into()),
            ("ATS_RELAY_BOOT", boot.clone()),
        ],
    );
    relay.wait_for(RELAY_READY, |l| {
        event(l).is_some_and(|v| v["event"] == "relay")
    });
    let token = hex::encode(relay_token());
    let started = Instant::now();
    let mut peers: Vec<LabProcess> = [("a", Node::HostA), ("b", Node::HostB)]
        .into_iter()
        .map(|(role, node)| {
            spawn_self(
                &lab,
                node,
                &[
                    ("ATS_RELAY_ROLE", role.into()),
                    ("ATS_RELAY_BOOT", boot.clone()),
                    ("ATS_RELAY_TOKEN", token.clone()),
                ],
            )
        })
        .collect();
    let done: Vec<Value> = peers
        .iter_mut()
        .map(|p| {
            event(&p.wait_for(PEER_DONE, |l| {
                event(l).is_some_and(|v| v["event"] == "done" || v["event"] == "error")
            }))
            .unwrap()
        })
        .collect();
    assert_eq!(done[0]["event"], "done", "peer a: {}", done[0]);
    assert_eq!(done[1]["event"], "done", "peer b: {}", done[1]);
    assert_eq!(done[0]["sent"], done[1]["received"], "a -> b bytes differ");
    assert_eq!(done[1]["sent"], done[0]["received"], "b -> a bytes differ");
    // Both paths lead to the relay on the public side.
    for d in &done {
        let seen: Ipv4Addr = d["relayAddr"]
            .as_str()
            .unwrap()
            .parse::<SocketAddrV4>()
            .unwrap()
            .ip()
            .to_owned();
        assert_eq!(seen, Node::Public.addr(), "{d}");
    }
    relay.write_stdin(b"stats\n").unwrap();
    let stats = event(&relay.wait_for(RELAY_READY, |l| {
        event(l).is_some_and(|v| v["event"] == "stats")
    }))
    .unwrap();
    println!(
        "random NATs, relayed {BYTES} bytes each way in {:?}: {stats}",
        started.elapsed()
    );
    assert_eq!(stats["matched"], 1, "{stats}");
    assert!(
        stats["bytes"].as_u64().unwrap() > 2 * BYTES as u64,
        "{stats}"
    );
}

fn emit(v: Value) {
    // The test harness has printed "test … ... " without a newline.
    println!("\n{v}");
}

/// Process entry point, run inside a lab namespace by the test above (no-op without the env).
#[test]
#[ignore = "helper process for the relay NAT-lab test"]
fn relay_netlab_process() {
    let Ok(role) = std::env::var("ATS_RELAY_ROLE") else {
        return;
    };
    let host: Ipv4Addr = std::env::var("ATS_RELAY_HOST").unwrap().parse().unwrap();
    let boot: SocketAddrV4 = std::env::var("ATS_RELAY_BOOT").unwrap().parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let dht = Arc::new(
            HyperDht::bind(DhtConfig::new(host, vec![boot]))
                .await
                .unwrap(),
        );
        dht.dht().bootstrapped().await.unwrap();
        let relay_key = KeyPair::from_seed(RELAY_SEED).public_key();
        if role == "relay" {
            let relay = RelayServer::spawn(dht.clone(), KeyPair::from_seed(RELAY_SEED))
                .await
                .unwrap();
            emit(json!({"event":"relay","key":relay.public_key().to_hex()}));
            let mut line = String::new();
            let stdin = std::io::stdin();
            while stdin.read_line(&mut line).is_ok_and(|n| n > 0) {
                let s = relay.stats();
                emit(json!({"event":"stats","matched":s.pairings_matched,
                    "bytes":s.bytes_forwarded,"dropped":s.packets_dropped}));
                line.clear();
            }
            return;
        }
        let token: [u8; 32] = hex::decode(std::env::var("ATS_RELAY_TOKEN").unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let initiator = role == "a";
        let (me, them) = if initiator {
            (KeyPair::from_seed(SEED_A), KeyPair::from_seed(SEED_B))
        } else {
            (KeyPair::from_seed(SEED_B), KeyPair::from_seed(SEED_A))
        };
        let raw = relay::new_stream(&dht).unwrap();
        let path = match pair_through(&dht, &me, &relay_key, initiator, token, raw.local_id()).await
        {
            Ok(p) => p,
            Err(e) => {
                emit(json!({"event":"error","message":e.to_string()}));
                return;
            }
        };
        raw.connect(path.remote_stream_id(), path.relay_addr())
            .unwrap();
        raw.send_message(&[]).unwrap();
        let them_pk = them.public_key();
        let stream = if initiator {
            SecretStream::connect(raw, me.clone(), Some(them_pk)).await
        } else {
            SecretStream::accept(raw, me.clone(), move |k: &PublicKey| *k == them_pk).await
        };
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                emit(json!({"event":"error","message":e.to_string()}));
                return;
            }
        };
        let mut data = vec![0u8; BYTES];
        rand::thread_rng().fill_bytes(&mut data);
        let sent = hex::encode(Sha256::digest(&data));
        let (mut r, mut w) = tokio::io::split(stream);
        let writer = tokio::spawn(async move {
            w.write_all(&data).await.unwrap();
            w.flush().await.unwrap();
            w
        });
        let mut got = vec![0u8; BYTES];
        r.read_exact(&mut got).await.unwrap();
        let _w = writer.await.unwrap();
        emit(
            json!({"event":"done","sent":sent,"received":hex::encode(Sha256::digest(&got)),
            "relayAddr":path.relay_addr().to_string()}),
        );
        // Stay until the peer has read everything too.
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
}
