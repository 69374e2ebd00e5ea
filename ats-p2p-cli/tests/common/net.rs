//! A hub process and nodes on loopback for end-to-end tests: the [`Net`] one test runs its
//! `listen` / `send` processes on, and helpers to read what they printed and left on disk.
// Not every test module uses every helper.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ats_p2p::swarm::KeyPair;
use rand::RngCore as _;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::{HubProc, Proc, ats_p2p, start_hub_with};

/// Bound on each test (each runs its own hub and nodes).
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(45);

/// A hub and a private HOME for the nodes of one test.
pub(crate) struct Net {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) hub: HubProc,
    pub(crate) deadline: Instant,
    counter: AtomicU32,
}

impl Net {
    pub(crate) fn start() -> Self {
        Self::start_with(TEST_TIMEOUT)
    }

    /// [`start`](Self::start) with a test bound of `timeout`.
    pub(crate) fn start_with(timeout: Duration) -> Self {
        Self::start_hub_args(timeout, &[])
    }

    /// [`start`](Self::start) with `extra` options for the hub.
    pub(crate) fn start_hub_args(timeout: Duration, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let deadline = Instant::now() + timeout;
        let hub = start_hub_with(dir.path(), "127.0.0.1:0", "127.0.0.1:0", extra, deadline);
        Self {
            dir,
            hub,
            deadline,
            counter: AtomicU32::new(0),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `ats-p2p <sub> --json` for `actor` on this net: loopback, ephemeral key, remembered keys
    /// in a file of its own.
    pub(crate) fn node(&self, sub: &str, actor: &str) -> Command {
        let mut c = self.node_keyless(sub, actor);
        c.arg("--ephemeral");
        c
    }

    /// [`node`](Self::node) without a key option.
    pub(crate) fn node_keyless(&self, sub: &str, actor: &str) -> Command {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut c = ats_p2p(self.path());
        c.args([sub, "--json", "--host", "127.0.0.1"])
            .args(["--bootstrap", &self.hub.bootstrap])
            .args(["--ats-url", &self.hub.ats_url])
            .args(["--actor-id", actor, "--known-keys"])
            .arg(self.path().join(format!("known-{n}")));
        c
    }

    /// Starts `listen --once`-style listeners (extra flags given) and waits for the ready line.
    pub(crate) fn listen(&self, actor: &str, save_dir: &Path, extra: &[&str]) -> Proc {
        let mut c = self.node("listen", actor);
        c.arg("--save-dir").arg(save_dir).args(extra);
        let mut p = Proc::spawn(&format!("listen {actor}"), c);
        let ready = p.wait_event("listening", self.deadline);
        assert_eq!(ready["actor_id"], actor);
        assert_eq!(ready["transfer_id"], Value::Null);
        p
    }

    pub(crate) fn send(&self, actor: &str, file: &Path, to: &str, extra: &[&str]) -> Proc {
        let mut c = self.node_keyless("send", actor);
        c.arg("--key-dir").arg(self.sender_keys(actor));
        c.arg(file).args(["--to", to]).args(extra);
        Proc::spawn(&format!("send {actor}"), c)
    }

    /// A key directory with a fresh persistent key for `actor`.
    pub(crate) fn sender_keys(&self, actor: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let kp = KeyPair::generate();
        write_key_dir(
            &self.path().join(format!("keys-{n}")),
            actor,
            &hex::encode(kp.seed()),
        )
    }

    /// `status <id> --json`, polled until its state is `state` (the two sides finish their
    /// task updates in either order).
    pub(crate) fn wait_status(&self, id: &str, state: &str) -> Value {
        self.wait_status_in(id, &[state])
    }

    /// [`wait_status`](Self::wait_status) for any of `states`.
    pub(crate) fn wait_status_in(&self, id: &str, states: &[&str]) -> Value {
        loop {
            let out = ats_p2p(self.path())
                .args(["status", id, "--json", "--ats-url", &self.hub.ats_url])
                .output()
                .unwrap();
            assert!(out.status.success(), "status: {out:?}");
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            if states.iter().any(|s| v["state"] == *s) {
                return v;
            }
            assert!(
                Instant::now() < self.deadline,
                "task {id} never became {states:?}: {v}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A private key directory holding `actor`'s key file with `seed_hex`.
pub(crate) fn write_key_dir(dir: &Path, actor: &str, seed_hex: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let key_file = dir.join(format!("{actor}.key"));
    std::fs::write(&key_file, seed_hex).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    dir.to_path_buf()
}

/// Writes `size` random bytes to `dir/name`.
pub(crate) fn random_file(dir: &Path, name: &str, size: usize) -> PathBuf {
    let mut data = vec![0u8; size];
    rand::thread_rng().fill_bytes(&mut data);
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    path
}

pub(crate) fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// Every stdout line is one JSON object with `event` and `transfer_id`.
pub(crate) fn assert_ndjson(p: &Proc) {
    assert!(!p.seen.is_empty(), "{}: no output", p.name);
    for line in &p.seen {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line:?}", p.name));
        assert!(v.is_object(), "{line}");
        assert!(v["event"].is_string(), "{}: no event: {line}", p.name);
        assert!(
            v.get("transfer_id").is_some(),
            "{}: no transfer_id: {line}",
            p.name
        );
    }
}

/// The events (by name) seen on a process's stdout.
pub(crate) fn events(p: &Proc) -> Vec<String> {
    p.seen
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| v["event"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The first event named `name` on a process's stdout.
pub(crate) fn event(p: &Proc, name: &str) -> Value {
    p.seen
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == name)
        .unwrap_or_else(|| panic!("{}: no {name} in\n{}", p.name, p.seen.join("\n")))
}

/// Names in a directory (hidden temporary files included).
pub(crate) fn dir_names(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

pub(crate) fn exit_code(p: &mut Proc, deadline: Instant) -> (i32, String) {
    let (status, err) = p.wait_exit(deadline);
    (status.code().unwrap_or(-1), err)
}

impl Net {
    /// Kills the hub with SIGKILL and starts it again on the same ports with the same database
    /// file, as a crash and a supervisor's restart would.
    pub(crate) fn restart_hub(&mut self) {
        self.kill_hub();
        self.start_hub_again();
    }

    /// Kills the hub with SIGKILL (its database file stays).
    pub(crate) fn kill_hub(&mut self) {
        self.hub.proc.kill9();
    }

    /// Starts the hub killed by [`kill_hub`](Self::kill_hub) again, on the same ports with the
    /// same database file.
    pub(crate) fn start_hub_again(&mut self) {
        let listen = self
            .hub
            .ats_url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let hub = super::start_hub_on(self.dir.path(), &listen, &self.hub.bootstrap, self.deadline);
        assert_eq!(hub.ats_url, self.hub.ats_url, "same API address");
        assert_eq!(hub.bootstrap, self.hub.bootstrap, "same bootstrap address");
        self.hub = hub;
    }
}

/// Reads `p`'s events until a `progress` event that shows bytes moved but not all of them:
/// the transfer is under way. Panics if the transfer ends first or at the deadline.
pub(crate) fn wait_mid_transfer(p: &mut Proc, deadline: Instant) -> Value {
    loop {
        let Some(line) = p.next_line(deadline) else {
            panic!("{}: no progress event; saw:\n{}", p.name, p.seen.join("\n"));
        };
        let v: Value = serde_json::from_str(&line).unwrap();
        match v["event"].as_str() {
            Some("progress") => {
                let (bytes, total) = (v["bytes"].as_u64().unwrap(), v["total"].as_u64().unwrap());
                if bytes > 0 && bytes < total {
                    return v;
                }
            }
            Some("transfer_complete" | "transfer_failed") => {
                panic!(
                    "{}: the transfer ended before it was under way: {v}",
                    p.name
                )
            }
            _ => {}
        }
    }
}

/// Names in `dir` that are not temporary files (`.ats-p2p-*.part`) or their records: what a
/// user would see.
pub(crate) fn exposed_names(dir: &Path) -> Vec<String> {
    dir_names(dir)
        .into_iter()
        .filter(|n| !is_temp_name(n) && !is_record_name(n))
        .collect()
}

/// Asserts what a broken receive keeps in `dir`: nothing a user would see, only one partial
/// file and its record, both private (0600), kept so the same offer can resume.
pub(crate) fn assert_only_a_private_partial(dir: &Path) {
    let left = dir_names(dir);
    assert!(exposed_names(dir).is_empty(), "nothing exposed: {left:?}");
    assert_eq!(left.len(), 2, "the partial file and its record: {left:?}");
    assert!(left.iter().any(|n| is_temp_name(n)), "{left:?}");
    #[cfg(unix)]
    for name in &left {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
}

/// The record beside a partial file kept for resuming (`.ats-p2p-<id>-<random>.resume`).
pub(crate) fn is_record_name(name: &str) -> bool {
    name.starts_with(".ats-p2p-") && name.ends_with(".resume")
}

/// A receiver's temporary file name (`.ats-p2p-<transfer id>-<random>.part`).
pub(crate) fn is_temp_name(name: &str) -> bool {
    name.starts_with(".ats-p2p-") && name.ends_with(".part")
}

/// `send` from `actor` to `agent-b` with the key in `keys` (the same key for every run: resuming is keyed
/// on the sender's key).
pub(crate) fn send_with_keys(
    net: &Net,
    actor: &str,
    keys: &Path,
    file: &Path,
    extra: &[&str],
) -> Proc {
    let mut c: Command = net.node_keyless("send", actor);
    c.arg("--key-dir").arg(keys);
    c.arg(file).args(["--to", "agent-b"]).args(extra);
    Proc::spawn(&format!("send {actor}"), c)
}

/// Reads `p`'s events until a `progress` at `fraction` of the total or more; returns it.
pub(crate) fn wait_progress(p: &mut Proc, fraction: f64, deadline: Instant) -> Value {
    loop {
        let line = p.next_line(deadline).unwrap_or_else(|| {
            panic!(
                "{}: no progress to {fraction}:\n{}",
                p.name,
                p.seen.join("\n")
            )
        });
        let v: Value = serde_json::from_str(&line).unwrap();
        match v["event"].as_str() {
            Some("progress") => {
                let (bytes, total) = (v["bytes"].as_u64().unwrap(), v["total"].as_u64().unwrap());
                if bytes as f64 >= fraction * total as f64 {
                    assert!(
                        bytes < total,
                        "{}: the transfer ended before the kill",
                        p.name
                    );
                    return v;
                }
            }
            Some("transfer_complete" | "transfer_failed") => {
                panic!("{}: the transfer ended before {fraction}: {v}", p.name)
            }
            _ => {}
        }
    }
}
