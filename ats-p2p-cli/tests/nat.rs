//! The product through two NATs: the `ats-p2p` binary runs as a hub on the "internet" side of a
//! network-namespace lab and as `listen` and `send` on two private hosts behind their own
//! port-preserving NAT routers. Signaling crosses the NATs over HTTP/WebSocket; the bytes go
//! host to host by HyperDHT holepunching. Needs root and iptables; skips with a message otherwise.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns; a panic is a failed test

use crate::netlab;

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

/// What one CLI transfer across the lab ended with.
struct Crossing {
    /// The hub's `hub_ready` line.
    ready: Value,
    /// The sender's last transfer event.
    sent: Value,
    /// The receiver's last transfer event.
    received: Value,
    /// Exit codes of `send` and `listen --once`.
    exits: (Option<i32>, Option<i32>),
    /// The file sent, and where the receiver saved what it got.
    data: Vec<u8>,
    save: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// Hub (with `hub_args`) on the public side, `listen --once` behind NAT A, `send` behind NAT
/// B; both NATs of `kind`.
fn cross(kind: NatKind, hub_args: &[&str], node_args: &[&str]) -> Option<Crossing> {
    let lab = NetLab::start(kind)?;
    let dir = tempfile::tempdir().unwrap();
    let public = Node::Public.addr().to_string();
    let db = dir.path().join("hub.sqlite").display().to_string();
    let listen_at = format!("{public}:0");
    let mut args = vec![
        "hub",
        "--listen",
        &listen_at,
        "--bootstrap-listen",
        &listen_at,
        "--db",
        &db,
        "--json",
        // The lab's public network is the test's own namespace; the nodes send no token.
        "--insecure-no-token",
    ];
    args.extend_from_slice(hub_args);
    let mut hub = spawn(&lab, Node::Public, dir.path(), &args);
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
        ]
        .into_iter()
        .chain(node_args.iter().copied())
        .collect::<Vec<_>>(),
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
        ]
        .into_iter()
        .chain(node_args.iter().copied())
        .collect::<Vec<_>>(),
    );
    let sent = json(&send.wait_for(TRANSFER_DONE, |l| {
        is_event(l, "transfer_complete") || is_event(l, "transfer_failed")
    }));
    let received = json(&listen.wait_for(TRANSFER_DONE, |l| {
        is_event(l, "transfer_complete") || is_event(l, "transfer_failed")
    }));
    let send_exit = send
        .wait_exit(Duration::from_secs(15))
        .expect("send exits")
        .code();
    let listen_exit = listen
        .wait_exit(Duration::from_secs(15))
        .expect("listen --once exits")
        .code();
    drop((send, listen, hub, lab));
    Some(Crossing {
        ready,
        sent,
        received,
        exits: (send_exit, listen_exit),
        data,
        save,
        _dir: dir,
    })
}

impl Crossing {
    /// Both sides completed and the saved file is the one sent.
    fn assert_delivered(&self) {
        assert_eq!(
            self.sent["event"], "transfer_complete",
            "sender: {}",
            self.sent
        );
        assert_eq!(
            self.received["event"], "transfer_complete",
            "receiver: {}",
            self.received
        );
        assert_eq!(self.exits, (Some(0), Some(0)));
        let expected = hex::encode(Sha256::digest(&self.data));
        assert_eq!(self.sent["file_hash"], expected.as_str());
        let path = self.received["file_path"].as_str().unwrap();
        assert!(Path::new(path).starts_with(&self.save), "{path}");
        assert_eq!(
            hex::encode(Sha256::digest(std::fs::read(path).unwrap())),
            expected
        );
    }
}

#[test]
fn a_file_crosses_two_nats_between_cli_nodes() {
    let Some(c) = cross(NatKind::Consistent, &[], &[]) else {
        return;
    };
    c.assert_delivered();
    assert_eq!(c.sent["path"], "holepunched", "{}", c.sent);
    assert_eq!(c.received["path"], "holepunched", "{}", c.received);
}

/// Both NATs randomize ports: no punch can work; both nodes find the hub's relay on the DHT
/// and the file goes through it, each side saying `relayed` and naming the relay.
#[test]
fn a_file_crosses_two_random_nats_through_the_hubs_relay() {
    let Some(c) = cross(NatKind::Random, &[], &[]) else {
        return;
    };
    c.assert_delivered();
    let relay = c.ready["relay"]
        .as_str()
        .expect("hub_ready names its relay");
    for side in [&c.sent, &c.received] {
        assert_eq!(side["path"], "relayed", "{side}");
        assert_eq!(side["relay"], relay, "{side}");
    }
}

/// Both NATs randomize ports and the nodes may not relay (`--no-relay`): both sides end with
/// exit 6 and say what was detected, well before their timeout.
#[test]
fn two_random_nats_without_a_relay_fail_clearly() {
    let started = std::time::Instant::now();
    let Some(c) = cross(NatKind::Random, &[], &["--no-relay"]) else {
        return;
    };
    assert_eq!(c.received["event"], "transfer_failed", "{}", c.received);
    assert_eq!(c.received["code"], "no_path", "{}", c.received);
    let reason = c.received["reason"].as_str().unwrap();
    assert!(
        reason.contains("both peers behind randomizing NATs") && reason.contains("relay"),
        "{reason}"
    );
    assert_eq!(c.sent["event"], "transfer_failed", "{}", c.sent);
    assert!(
        c.sent["reason"]
            .as_str()
            .unwrap()
            .contains("randomizing NATs"),
        "{}",
        c.sent
    );
    assert_eq!(c.exits, (Some(6), Some(6)));
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "{:?}",
        started.elapsed()
    );
}
