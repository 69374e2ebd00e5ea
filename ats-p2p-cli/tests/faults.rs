//! Faults end to end (issue #12), with real processes on loopback: `send` or `listen` killed
//! with SIGKILL mid-transfer, the hub killed and restarted (same ports, same database) after the
//! claim and while the bytes flow, a real full disk (a size-limited tmpfs), and one actor id
//! claiming the same offer twice. Every wait is bounded by an event or the test's deadline.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ats_p2p_signal::types::Actor;
use ats_p2p_signal::{AcceptMessage, Client, ClientConfig, Part, SignalError, TransferId};
use common::Proc;
use common::net::{
    Net, assert_only_a_private_partial, dir_names, event, events, exit_code, exposed_names,
    is_temp_name, random_file, sha256_hex, wait_mid_transfer,
};
use common::subdir;
use serde_json::Value;

/// Bound on each test here: a killed peer is noticed by the UDX retransmission limit (seconds),
/// and a hub restart costs a process start. After a restart of the hub's bootstrap node, a
/// receiver's topic lookup that was under way only gives up after the node's 60 s attempt
/// timeout (`ats-p2p/src/node/transport.rs`), so the restart-after-claim test takes ~60 s.
const FAULT_TIMEOUT: Duration = Duration::from_secs(150);

/// A file large enough that a kill or a restart lands while its bytes flow on loopback.
const LARGE: usize = 128 * 1024 * 1024;

/// Polls `done` until it holds, failing at `deadline` with `what`.
fn wait_until(deadline: Instant, what: &str, mut done: impl FnMut() -> bool) {
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A blocking ATS client of the test's own (as another program on the hub would be).
struct Ats {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl Ats {
    fn new(url: &str, actor: &str) -> Self {
        Self {
            rt: tokio::runtime::Runtime::new().unwrap(),
            client: Client::new(ClientConfig::new(url.to_owned(), Actor::agent(actor))).unwrap(),
        }
    }

    fn run<T>(&self, f: impl Future<Output = T>) -> T {
        self.rt
            .block_on(async { tokio::time::timeout(FAULT_TIMEOUT, f).await })
            .unwrap()
    }
}

/// The task id of a `send`'s `offer_sent` event.
fn task_id(offer: &Value) -> i64 {
    offer["task_id"].as_str().unwrap().parse().unwrap()
}

/// Stops (`-STOP`) or resumes (`-CONT`) a process: a sender frozen between two steps.
fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &p.pid().to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {sig}");
}

#[test]
fn sigkill_of_listen_mid_transfer_exposes_nothing_and_an_expired_partial_is_cleaned_up() {
    let net = Net::start_with(FAULT_TIMEOUT);
    let src = subdir(net.path(), "src");
    let save = net.path().join("incoming");
    let file = random_file(&src, "big.bin", LARGE);

    let mut rx = net.listen("agent-b", &save, &[]);
    // Without retries the send ends when the receiver is gone (offering again is
    // `resume::listen_killed_at_40_percent_and_restarted_the_same_send_offers_again_and_resumes`).
    let mut tx = net.send("agent-a", &file, "agent-b", &["--retries", "0"]);
    let offer = tx.wait_event("offer_sent", net.deadline);
    let tid = offer["transfer_id"].as_str().unwrap().to_owned();
    wait_mid_transfer(&mut rx, net.deadline);
    rx.kill9();

    // Only the killed receiver's temporary file is there: nothing under a real name.
    let left = dir_names(&save);
    assert!(exposed_names(&save).is_empty(), "nothing exposed: {left:?}");
    assert!(
        left.iter().any(|n| is_temp_name(n)),
        "the killed receiver left its temporary file: {left:?}"
    );

    // The sender notices the receiver is gone: a network failure, with a reason.
    let (code, err) = exit_code(&mut tx, net.deadline);
    assert_eq!(code, 6, "sender: network failure; stderr: {err}");
    let failed = event(&tx, "transfer_failed");
    assert_eq!(failed["kind"], "network", "{failed}");
    assert!(!failed["reason"].as_str().unwrap().is_empty(), "{failed}");

    // ATS shows how it ended: failed, with the sender's reason (the receiver cannot say).
    let v = net.wait_status(&tid, "failed");
    assert!(v["outputs"].as_array().unwrap().is_empty(), "{v}");
    assert!(!v["reason"].as_str().unwrap_or_default().is_empty(), "{v}");

    // The killed receiver's file is kept for a resume: hidden, private, with its record
    // beside it, and listed by `status --partials`.
    assert_only_a_private_partial(&save);
    let listed = common::ats_p2p(net.path())
        .args(["status", "--partials", "--json", "--save-dir"])
        .arg(&save)
        .output()
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.contains(&tid), "{listed}");

    // A `listen` whose partial files expire at once removes everything the killed one left.
    let mut again = net.listen("agent-b", &save, &["--partial-expiry", "1"]);
    wait_until(
        net.deadline,
        "stale temporary file removed at start",
        || dir_names(&save).is_empty(),
    );
    again.signal("-TERM");
    assert_eq!(exit_code(&mut again, net.deadline).0, 0);
}

#[test]
fn sigkill_of_send_mid_transfer_fails_the_task_and_exposes_nothing() {
    let net = Net::start_with(FAULT_TIMEOUT);
    let src = subdir(net.path(), "src");
    let save = net.path().join("incoming");
    let file = random_file(&src, "big.bin", LARGE);

    let mut rx = net.listen("agent-b", &save, &["--once"]);
    let mut tx = net.send("agent-a", &file, "agent-b", &[]);
    let offer = tx.wait_event("offer_sent", net.deadline);
    let tid = offer["transfer_id"].as_str().unwrap().to_owned();
    wait_mid_transfer(&mut tx, net.deadline);
    tx.kill9();

    let (code, err) = exit_code(&mut rx, net.deadline);
    assert_eq!(code, 6, "listener --once: network failure; stderr: {err}");
    let failed = event(&rx, "transfer_failed");
    assert_eq!(failed["transfer_id"], tid.as_str());
    assert_eq!(failed["kind"], "network", "{failed}");
    assert!(!failed["reason"].as_str().unwrap().is_empty(), "{failed}");
    assert!(!events(&rx).iter().any(|e| e == "transfer_complete"));
    // Nothing under a real name: only the partial file and its record, kept for a resume.
    assert_only_a_private_partial(&save);
    let v = net.wait_status(&tid, "failed");
    assert!(v["outputs"].as_array().unwrap().is_empty(), "{v}");
    assert!(!v["reason"].as_str().unwrap_or_default().is_empty(), "{v}");
}

#[test]
fn hub_restarted_after_the_claim_the_transfer_still_completes() {
    let mut net = Net::start_with(FAULT_TIMEOUT);
    let src = subdir(net.path(), "src");
    let save = net.path().join("incoming");
    let file = random_file(&src, "a.bin", 4 * 1024 * 1024);
    let hash = sha256_hex(&file);

    let mut tx = net.send("agent-a", &file, "agent-b", &[]);
    let offer = tx.wait_event("offer_sent", net.deadline);
    let tid = offer["transfer_id"].as_str().unwrap().to_owned();
    // Freeze the sender so the receiver's claim and accept are on the hub before the sender
    // has seen them.
    signal(&tx, "-STOP");
    let mut rx = net.listen("agent-b", &save, &["--once"]);
    let ats = Ats::new(&net.hub.ats_url, "observer");
    wait_until(net.deadline, "claim and accept on the hub", || {
        let task = ats.run(ats.client.get_task(task_id(&offer))).unwrap();
        let messages = ats.run(ats.client.list_messages(task.id)).unwrap();
        task.assignee_id.as_deref() == Some("agent-b") && !messages.is_empty()
    });
    drop(ats);

    net.restart_hub();
    signal(&tx, "-CONT");

    let (code, err) = exit_code(&mut tx, net.deadline);
    assert_eq!(code, 0, "sender stderr: {err}");
    assert_received_and_completed(&net, &mut rx, &save, "a.bin", &hash, &tid);
}

#[test]
fn hub_restarted_while_the_bytes_flow_the_transfer_still_completes() {
    let mut net = Net::start_with(FAULT_TIMEOUT);
    let src = subdir(net.path(), "src");
    let save = net.path().join("incoming");
    let file = random_file(&src, "big.bin", LARGE);
    let hash = sha256_hex(&file);

    let mut rx = net.listen("agent-b", &save, &["--once"]);
    let mut tx = net.send("agent-a", &file, "agent-b", &[]);
    let offer = tx.wait_event("offer_sent", net.deadline);
    let tid = offer["transfer_id"].as_str().unwrap().to_owned();
    wait_mid_transfer(&mut rx, net.deadline);
    net.restart_hub();

    let (code, err) = exit_code(&mut tx, net.deadline);
    assert_eq!(code, 0, "sender stderr: {err}");
    assert_received_and_completed(&net, &mut rx, &save, "big.bin", &hash, &tid);
    assert!(
        !events(&rx).iter().any(|e| e == "error"),
        "no bookkeeping error: {:?}",
        rx.seen
    );
}

#[test]
fn hub_down_from_mid_transfer_until_after_the_bytes_the_task_still_completes() {
    let mut net = Net::start_with(FAULT_TIMEOUT);
    let src = subdir(net.path(), "src");
    let save = net.path().join("incoming");
    let file = random_file(&src, "big.bin", LARGE);
    let hash = sha256_hex(&file);

    let mut rx = net.listen("agent-b", &save, &["--once"]);
    let mut tx = net.send("agent-a", &file, "agent-b", &[]);
    let offer = tx.wait_event("offer_sent", net.deadline);
    let tid = offer["transfer_id"].as_str().unwrap().to_owned();
    wait_mid_transfer(&mut rx, net.deadline);
    net.kill_hub();
    // In its place, something that answers no request: the receiver's attempts to complete the
    // task are counted, and the hub comes back only after more of them than the ATS client's
    // own retries (4 attempts) would make.
    let down = DeadHub::listen(&net.hub.ats_url, task_id(&offer), net.deadline);
    // The bytes need no hub: the sender ends with the receiver's ACK while the hub is down, so
    // the receiver has a stored, verified file and a task it cannot complete yet.
    let (code, err) = exit_code(&mut tx, net.deadline);
    assert_eq!(code, 0, "sender stderr: {err}");
    down.wait_for_completions(2 * (ats_p2p_signal::client::DEFAULT_MAX_RETRIES as usize + 1));
    drop(down);
    net.start_hub_again();

    assert_received_and_completed(&net, &mut rx, &save, "big.bin", &hash, &tid);
    assert!(
        !events(&rx).iter().any(|e| e == "error"),
        "no bookkeeping error: {:?}",
        rx.seen
    );
}

/// The listener exits 0 with `name` alone in `save`, holding the bytes of `hash`, and the task
/// ends completed with that hash in its outputs.
fn assert_received_and_completed(
    net: &Net,
    rx: &mut Proc,
    save: &Path,
    name: &str,
    hash: &str,
    tid: &str,
) {
    let (code, err) = exit_code(rx, net.deadline);
    assert_eq!(code, 0, "listener stderr: {err}");
    assert_eq!(dir_names(save), [name]);
    assert_eq!(sha256_hex(&save.join(name)), hash);
    let v = net.wait_status(tid, "completed");
    assert_eq!(v["outputs"][0]["sha256"], hash, "{v}");
}

/// A hub that is down: its HTTP port accepts connections and closes them unanswered,
/// counting the requests that try to complete one task. Stops listening on drop.
struct DeadHub {
    completions: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    deadline: Instant,
}

impl DeadHub {
    fn listen(ats_url: &str, task: i64, deadline: Instant) -> Self {
        let addr = ats_url.trim_start_matches("http://").trim_end_matches('/');
        let listener = TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let completions = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let wanted = format!("POST /tasks/{task}/complete ");
        let thread = {
            let (completions, stop) = (completions.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let Ok((mut conn, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    conn.set_nonblocking(false).unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let mut head = [0u8; 256];
                    let n = conn.read(&mut head).unwrap_or(0);
                    if String::from_utf8_lossy(&head[..n]).starts_with(&wanted) {
                        completions.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        Self {
            completions,
            stop,
            thread: Some(thread),
            deadline,
        }
    }

    /// Waits until `n` requests tried to complete the task.
    fn wait_for_completions(&self, n: usize) {
        wait_until(self.deadline, &format!("{n} attempts to complete"), || {
            self.completions.load(Ordering::Relaxed) >= n
        });
    }
}

impl Drop for DeadHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A size-limited tmpfs mounted for one test, unmounted on drop.
struct SmallDisk {
    mount: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (e.g. `8m`) on `dir`; `None` (after a `SKIP:` line on stdout)
    /// when this machine cannot (not root).
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        let uid = Command::new("id").arg("-u").output().unwrap();
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            println!("SKIP: full-disk test needs root to mount a size-limited tmpfs");
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .unwrap();
        if !out.status.success() {
            println!(
                "SKIP: full-disk test cannot mount a tmpfs: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Self {
            mount: dir.to_path_buf(),
        })
    }

    /// Writes a file in the mount until the disk is full.
    fn fill(&self) {
        let mut f = std::fs::File::create(self.mount.join("filler")).unwrap();
        let block = vec![0u8; 1 << 20];
        loop {
            match f.write_all(&block) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        // The last partial block may still fit.
        let mut small = vec![0u8; 4096];
        while f.write_all(&small).is_ok() {}
        small.truncate(1);
        while f.write_all(&small).is_ok() {}
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

#[test]
fn a_file_larger_than_the_disk_is_refused_before_any_byte_flows() {
    let net = Net::start_with(FAULT_TIMEOUT);
    let Some(disk) = SmallDisk::mount(&net.path().join("disk"), "8m") else {
        return;
    };
    let save = disk.mount.join("incoming");
    let src = subdir(net.path(), "src");
    let file = random_file(&src, "big.bin", 16 * 1024 * 1024);

    let mut rx = net.listen("agent-b", &save, &["--once"]);
    let mut tx = net.send("agent-a", &file, "agent-b", &[]);
    let (code, err) = exit_code(&mut tx, net.deadline);
    assert_eq!(code, 3, "sender: refused; stderr: {err}");
    let sent = event(&tx, "transfer_failed");
    assert!(
        sent["reason"].as_str().unwrap().contains("disk space"),
        "the sender learns why: {sent}"
    );
    assert_eq!(exit_code(&mut rx, net.deadline).0, 3);
    let refused = event(&rx, "transfer_failed");
    assert_eq!(refused["code"], "insufficient_space", "{refused}");
    for p in [&tx, &rx] {
        assert!(
            !events(p).iter().any(|e| e == "transfer_start"),
            "{}",
            p.name
        );
    }
    assert!(dir_names(&save).is_empty(), "{:?}", dir_names(&save));
    let v = net.wait_status(refused["transfer_id"].as_str().unwrap(), "rejected");
    assert!(
        v["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("disk space"),
        "{v}"
    );
}

#[test]
fn a_disk_that_fills_up_mid_transfer_fails_clearly_and_keeps_nothing() {
    let net = Net::start_with(FAULT_TIMEOUT);
    // Room for the file and the receiver's 64 MiB free-space margin at the start.
    let Some(disk) = SmallDisk::mount(&net.path().join("disk"), "112m") else {
        return;
    };
    let save = disk.mount.join("incoming");
    let src = subdir(net.path(), "src");
    let file = random_file(&src, "big.bin", 32 * 1024 * 1024);

    let mut rx = net.listen("agent-b", &save, &["--once"]);
    let mut tx = net.send("agent-a", &file, "agent-b", &[]);
    let offer = tx.wait_event("offer_sent", net.deadline);
    let tid = offer["transfer_id"].as_str().unwrap().to_owned();
    // Bytes flow; freeze the sender, let something else take all the space, resume.
    wait_mid_transfer(&mut rx, net.deadline);
    signal(&tx, "-STOP");
    disk.fill();
    signal(&tx, "-CONT");

    let (code, err) = exit_code(&mut rx, net.deadline);
    assert_eq!(code, 1, "listener --once: local I/O failure; stderr: {err}");
    let failed = event(&rx, "transfer_failed");
    assert_eq!(failed["code"], "disk_full", "{failed}");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("no space left"),
        "{failed}"
    );
    let (code, err) = exit_code(&mut tx, net.deadline);
    assert_ne!(code, 0, "sender stderr: {err}");
    let sent = event(&tx, "transfer_failed");
    assert!(!sent["reason"].as_str().unwrap().is_empty(), "{sent}");
    assert!(
        dir_names(&save).is_empty(),
        "no partial file, temporary removed: {:?}",
        dir_names(&save)
    );
    let v = net.wait_status(&tid, "failed");
    assert!(
        v["reason"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
            .contains("no space left"),
        "{v}"
    );
}

#[test]
fn two_listeners_with_one_actor_id_make_exactly_one_transfer() {
    let net = Net::start_with(FAULT_TIMEOUT);
    let src = subdir(net.path(), "src");
    let saves = [net.path().join("in-1"), net.path().join("in-2")];
    let file = random_file(&src, "one.bin", 4 * 1024 * 1024);
    let hash = sha256_hex(&file);

    let mut listeners = [
        net.listen("agent-b", &saves[0], &[]),
        net.listen("agent-b", &saves[1], &[]),
    ];
    let mut tx = net.send("agent-a", &file, "agent-b", &[]);
    let (code, err) = exit_code(&mut tx, net.deadline);
    assert_eq!(code, 0, "sender stderr: {err}");
    let tid = event(&tx, "offer_sent")["transfer_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let v = net.wait_status(&tid, "completed");
    assert_eq!(v["outputs"][0]["sha256"], hash.as_str(), "{v}");
    for l in &mut listeners {
        l.signal("-TERM");
        assert_eq!(exit_code(l, net.deadline).0, 0, "{}: clean stop", l.name);
    }
    let completed: Vec<_> = listeners
        .iter()
        .filter(|l| events(l).iter().any(|e| e == "transfer_complete"))
        .collect();
    assert_eq!(completed.len(), 1, "exactly one receiver got the file");
    let started = listeners
        .iter()
        .filter(|l| events(l).iter().any(|e| e == "transfer_start"))
        .count();
    assert_eq!(started, 1, "exactly one connection");
    // The other one stepped aside (or never claimed); it did not fail the task.
    for l in &listeners {
        for line in &l.seen {
            let v: Value = serde_json::from_str(line).unwrap();
            if v["event"] == "transfer_failed" {
                let code = v["code"].as_str().unwrap();
                assert!(
                    ["accepted_elsewhere", "claim_conflict"].contains(&code),
                    "{}: {v}",
                    l.name
                );
            }
        }
    }
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in &saves {
        files.extend(dir_names(dir).iter().map(|n| dir.join(n)));
    }
    assert_eq!(files.len(), 1, "one file, no temporary: {files:?}");
    assert_eq!(sha256_hex(&files[0]), hash);
}

#[test]
fn a_second_claim_and_accept_by_the_same_actor_id_is_ignored() {
    let net = Net::start_with(FAULT_TIMEOUT);
    let src = subdir(net.path(), "src");
    let save = net.path().join("incoming");
    let file = random_file(&src, "a.bin", 2 * 1024 * 1024);
    let hash = sha256_hex(&file);

    let mut tx = net.send("agent-a", &file, "agent-b", &[]);
    let offer = tx.wait_event("offer_sent", net.deadline);
    let tid = offer["transfer_id"].as_str().unwrap().to_owned();
    let id = task_id(&offer);
    // The sender sleeps while the genuine receiver claims and accepts, and then someone else
    // using the same actor id claims again and accepts with a key of its own.
    signal(&tx, "-STOP");
    let mut rx = net.listen("agent-b", &save, &["--once"]);
    let impostor = Ats::new(&net.hub.ats_url, "agent-b");
    wait_until(net.deadline, "the genuine accept", || {
        !impostor
            .run(impostor.client.list_messages(id))
            .unwrap()
            .is_empty()
    });
    // Another actor's claim is refused outright.
    let other = Ats::new(&net.hub.ats_url, "agent-c");
    let refused = other.run(other.client.claim(id, None));
    assert!(
        matches!(refused, Err(SignalError::ClaimConflict { .. })),
        "{refused:?}"
    );
    // The hub takes the same actor id's claim as a renewal; its accept comes second.
    impostor
        .run(impostor.client.claim(id, Some(Duration::from_secs(60))))
        .unwrap();
    let forged = AcceptMessage {
        directories: false,
        transfer_id: tid.parse::<TransferId>().unwrap(),
        receiver_key: [7; 32],
        resume: false,
    };
    impostor
        .run(
            impostor
                .client
                .post_message(id, vec![Part::text(forged.to_content())]),
        )
        .unwrap();
    signal(&tx, "-CONT");

    let (code, err) = exit_code(&mut tx, net.deadline);
    assert_eq!(code, 0, "the sender took the first accept; stderr: {err}");
    let (code, err) = exit_code(&mut rx, net.deadline);
    assert_eq!(code, 0, "listener stderr: {err}");
    assert_eq!(dir_names(&save), ["a.bin"]);
    assert_eq!(sha256_hex(&save.join("a.bin")), hash);
    net.wait_status(&tid, "completed");
}
