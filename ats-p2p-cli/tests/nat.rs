//! The product through two NATs: the `ats-p2p` binary runs as a hub on the "internet" side of a
//! network-namespace lab and as `listen` and `send` on two private hosts behind their own
//! port-preserving NAT routers. Signaling crosses the NATs over HTTP/WebSocket; the bytes go
//! host to host by HyperDHT holepunching. Needs root and iptables; skips with a message otherwise.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns; a panic is a failed test

#[path = "../../ats-p2p-swarm/tests/support/netlab.rs"]
mod netlab;

use std::path::Path;
use std::time::Duration;

use netlab::{LabProcess, NatKind, NetLab, Node};
use rand::{RngCore, SeedableRng};
use serde_json::Value;
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_ats-p2p");
const HUB_READY: Duration = Duration::from_secs(20);
const LISTENING: Duration = Duration::from_secs(30);
const TRANSFER_DONE: Duration = Duration::from_secs(60);
const FILE_LEN: usize = 4 * 1024 * 1024;

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

fn is_event(line: &str, event: &str) -> bool {
    serde_json::from_str::<Value>(line).is_ok_and(|v| v["event"] == event)
}

/// Runs the binary in `node` with a private HOME under `home`.
fn spawn(lab: &NetLab, node: Node, home: &Path, args: &[&str]) -> LabProcess {
    let env = [
        format!("HOME={}", home.display()),
        format!("XDG_CONFIG_HOME={}", home.join("config").display()),
        format!("XDG_DATA_HOME={}", home.join("data").display()),
    ];
    let mut all: Vec<&str> = env.iter().map(String::as_str).collect();
    all.push(BIN);
    all.extend_from_slice(args);
    lab.spawn(node, "env", &all)
}

#[test]
fn a_file_crosses_two_nats_between_cli_nodes() {
    let Some(lab) = NetLab::start(NatKind::Consistent) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let public = Node::Public.addr().to_string();
    let db = dir.path().join("hub.sqlite").display().to_string();
    let mut hub = spawn(
        &lab,
        Node::Public,
        dir.path(),
        &[
            "hub",
            "--listen",
            &format!("{public}:0"),
            "--bootstrap-listen",
            &format!("{public}:0"),
            "--db",
            &db,
            "--json",
        ],
    );
    let ready = json(&hub.wait_for(HUB_READY, |l| is_event(l, "hub_ready")));
    let ats_url = ready["ats_url"].as_str().unwrap().to_owned();
    let bootstrap = ready["bootstrap"].as_str().unwrap().to_owned();

    let save = dir.path().join("incoming");
    let save_arg = save.display().to_string();
    let host_a = Node::HostA.addr().to_string();
    let mut listen = spawn(
        &lab,
        Node::HostA,
        &dir.path().join("b"),
        &[
            "listen",
            "--once",
            "--json",
            "--ephemeral",
            "--actor-id",
            "agent-b",
            "--ats-url",
            &ats_url,
            "--bootstrap",
            &bootstrap,
            "--host",
            &host_a,
            "--save-dir",
            &save_arg,
            "--timeout",
            "45000",
        ],
    );
    listen.wait_for(LISTENING, |l| is_event(l, "listening"));

    let mut data = vec![0u8; FILE_LEN];
    rand::rngs::StdRng::seed_from_u64(42).fill_bytes(&mut data);
    let src = dir.path().join("across.bin");
    std::fs::write(&src, &data).unwrap();
    let src_arg = src.display().to_string();
    let host_b = Node::HostB.addr().to_string();
    let mut send = spawn(
        &lab,
        Node::HostB,
        &dir.path().join("a"),
        &[
            "send",
            &src_arg,
            "--to",
            "agent-b",
            "--json",
            "--ephemeral",
            "--actor-id",
            "agent-a",
            "--ats-url",
            &ats_url,
            "--bootstrap",
            &bootstrap,
            "--host",
            &host_b,
            "--timeout",
            "45000",
        ],
    );
    let done = json(&send.wait_for(TRANSFER_DONE, |l| {
        is_event(l, "transfer_complete") || is_event(l, "transfer_failed")
    }));
    assert_eq!(
        done["event"],
        "transfer_complete",
        "sender: {:?}",
        send.log()
    );
    let received = json(&listen.wait_for(TRANSFER_DONE, |l| {
        is_event(l, "transfer_complete") || is_event(l, "transfer_failed")
    }));
    assert_eq!(
        received["event"],
        "transfer_complete",
        "receiver: {:?}",
        listen.log()
    );
    let status = send.wait_exit(Duration::from_secs(10)).expect("send exits");
    assert!(status.success(), "send: {status:?}");
    let status = listen
        .wait_exit(Duration::from_secs(10))
        .expect("listen --once exits");
    assert!(status.success(), "listen: {status:?}");

    let expected = hex::encode(Sha256::digest(&data));
    assert_eq!(done["file_hash"], expected.as_str());
    let path = received["file_path"].as_str().unwrap();
    assert!(Path::new(path).starts_with(&save), "{path}");
    assert_eq!(
        hex::encode(Sha256::digest(std::fs::read(path).unwrap())),
        expected
    );
    drop((send, listen, hub));
}
