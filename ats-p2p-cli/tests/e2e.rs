//! End to end with real processes: an `ats-p2p hub` (ATS API + DHT bootstrap on loopback) and
//! `ats-p2p listen` / `ats-p2p send` nodes talking through it, as a user would run them.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ats_p2p_signal::types::Actor;
use ats_p2p_signal::{Client, ClientConfig, FileOffer, TransferId};
use common::net::{
    Net, TEST_TIMEOUT, assert_ndjson, assert_only_a_private_partial, dir_names, event, events,
    exit_code, random_file, sha256_hex, wait_mid_transfer, write_key_dir,
};
use common::{Proc, ats_p2p, subdir};
use serde_json::Value;

#[test]
fn ten_mib_sent_received_verified_and_task_completed() {
    let net = Net::start();
    let src = subdir(net.path(), "src");
    let save = net.path().join("incoming");
    let file = random_file(&src, "data.bin", 10 * 1024 * 1024);
    let hash = sha256_hex(&file);

    let mut rx = net.listen("agent-b", &save, &["--once"]);
    let mut tx = net.send("agent-a", &file, "agent-b", &[]);
    let offer = tx.wait_event("offer_sent", net.deadline);
    let tid = offer["transfer_id"].as_str().unwrap().to_owned();
    assert_eq!(offer["file_hash"], hash.as_str());
    assert_eq!(offer["recipient_id"], "agent-b");

    let (code, err) = exit_code(&mut tx, net.deadline);
    assert_eq!(code, 0, "sender stderr: {err}");
    let (code, err) = exit_code(&mut rx, net.deadline);
    assert_eq!(code, 0, "listener stderr: {err}");
    assert_ndjson(&tx);
    assert_ndjson(&rx);
    for p in [&tx, &rx] {
        for line in &p.seen {
            let v: Value = serde_json::from_str(line).unwrap();
            if v["event"] != "listening" {
                assert_eq!(v["transfer_id"], tid.as_str(), "{}: {line}", p.name);
            }
        }
    }
    // The sender ends with transfer_complete; the receiver saw the offer, then the bytes.
    let last: Value = serde_json::from_str(tx.seen.last().unwrap()).unwrap();
    assert_eq!(last["event"], "transfer_complete", "{:?}", tx.seen);
    assert_eq!(last["file_hash"], hash.as_str());
    assert_eq!(last["bytes"], 10 * 1024 * 1024);
    let rx_events = events(&rx);
    for e in ["file", "transfer_start", "transfer_complete"] {
        assert!(rx_events.iter().any(|x| x == e), "{e} in {rx_events:?}");
    }
    let done = event(&rx, "transfer_complete");
    let saved = PathBuf::from(done["file_path"].as_str().unwrap());
    assert_eq!(saved.parent().unwrap(), save.as_path());
    assert_eq!(sha256_hex(&saved), hash);
    assert_eq!(
        dir_names(&save),
        ["data.bin"],
        "only the file, no temporaries"
    );

    let v = net.wait_status(&tid, "completed");
    assert_eq!(v["file_hash"], hash.as_str());
    let outputs = v["outputs"].to_string();
    assert!(
        outputs.contains(&hash),
        "hash in the task outputs: {outputs}"
    );
    assert_eq!(v["recipient_id"], "agent-b");
    assert_eq!(v["sender_id"], "agent-a");
}

#[test]
fn receiver_allowlist_miss_declines_and_sender_exits_3() {
    let net = Net::start();
    let src = subdir(net.path(), "src");
    let save = net.path().join("incoming");
    let file = random_file(&src, "a.txt", 4096);

    let mut rx = net.listen("agent-b", &save, &["--once", "--allow", "agent-x"]);
    let mut tx = net.send("agent-a", &file, "agent-b", &[]);
    let (code, err) = exit_code(&mut tx, net.deadline);
    assert_eq!(code, 3, "sender: rejected; stderr: {err}");
    let failed = event(&tx, "transfer_failed");
    assert_eq!(failed["kind"], "rejected");
    let (code, _) = exit_code(&mut rx, net.deadline);
    assert_eq!(code, 3, "listener --once: its transfer was refused");
    let refused = event(&rx, "transfer_failed");
    assert_eq!(refused["code"], "not_allowed", "{refused}");
    assert!(!events(&rx).iter().any(|e| e == "transfer_start"));
    assert!(dir_names(&save).is_empty());
    let tid = failed["transfer_id"].as_str().unwrap();
    let v = net.wait_status(tid, "rejected");
    assert!(
        !v["reason"].as_str().unwrap_or_default().is_empty(),
        "a reason on the task: {v}"
    );
    assert_ndjson(&tx);
    assert_ndjson(&rx);
}

#[test]
fn pinned_key_mismatch_is_refused() {
    let net = Net::start();
    let src = subdir(net.path(), "src");
    let save = net.path().join("incoming");
    let file = random_file(&src, "a.txt", 4096);
    let wrong = format!("agent-a={}", "5a".repeat(32));

    let mut rx = net.listen("agent-b", &save, &["--once", "--allow", &wrong]);
    let mut tx = net.send("agent-a", &file, "agent-b", &[]);
    let (code, err) = exit_code(&mut tx, net.deadline);
    assert_eq!(code, 3, "sender stderr: {err}");
    let (code, _) = exit_code(&mut rx, net.deadline);
    assert_eq!(code, 3);
    let refused = event(&rx, "transfer_failed");
    assert_eq!(refused["kind"], "rejected");
    assert_eq!(refused["code"], "key_mismatch", "{refused}");
    assert!(dir_names(&save).is_empty());
    net.wait_status(refused["transfer_id"].as_str().unwrap(), "rejected");
}

#[test]
fn too_large_is_refused_before_any_byte_flows() {
    let net = Net::start();
    let src = subdir(net.path(), "src");
    let save = net.path().join("incoming");
    let file = random_file(&src, "big.bin", 64 * 1024);

    let mut rx = net.listen("agent-b", &save, &["--once", "--max-size", "1KiB"]);
    let mut tx = net.send("agent-a", &file, "agent-b", &[]);
    let (code, err) = exit_code(&mut tx, net.deadline);
    assert_eq!(code, 3, "sender stderr: {err}");
    let (code, _) = exit_code(&mut rx, net.deadline);
    assert_eq!(code, 3);
    let refused = event(&rx, "transfer_failed");
    assert_eq!(refused["code"], "too_large", "{refused}");
    for p in [&tx, &rx] {
        let ev = events(p);
        assert!(
            !ev.iter().any(|e| e == "transfer_start"),
            "{}: no connection for a refused offer: {ev:?}",
            p.name
        );
    }
    assert!(dir_names(&save).is_empty(), "{:?}", dir_names(&save));
    net.wait_status(refused["transfer_id"].as_str().unwrap(), "rejected");
}

#[test]
fn bytes_not_matching_the_offer_are_nacked_and_nothing_is_kept() {
    let net = Net::start();
    let src = subdir(net.path(), "src");
    let save = net.path().join("incoming");
    let size = 2 * 1024 * 1024;
    let file = random_file(&src, "changing.bin", size);

    // The sender hashes and offers; nobody listens yet. Then the file changes (same size), so
    // the bytes streamed later do not match the offer's hash.
    let mut tx = net.send("agent-a", &file, "agent-b", &[]);
    let offer = tx.wait_event("offer_sent", net.deadline);
    let tid = offer["transfer_id"].as_str().unwrap().to_owned();
    random_file(&src, "changing.bin", size);
    assert_ne!(sha256_hex(&file), offer["file_hash"].as_str().unwrap());

    let mut rx = net.listen("agent-b", &save, &["--once"]);
    let (code, _) = exit_code(&mut rx, net.deadline);
    assert_eq!(code, 5, "listener --once: verification failed");
    let failed = event(&rx, "transfer_failed");
    assert_eq!(failed["kind"], "verification", "{failed}");
    // The sender learns it from the NACK and finds its file changed since the offer.
    let (code, err) = exit_code(&mut tx, net.deadline);
    assert_eq!(code, 5, "sender: verification failed; stderr: {err}");
    let sent_failed = event(&tx, "transfer_failed");
    assert_eq!(sent_failed["kind"], "verification", "{sent_failed}");
    assert!(
        sent_failed["reason"].as_str().unwrap().contains("SHA-256"),
        "{sent_failed}"
    );
    assert!(
        dir_names(&save).is_empty(),
        "no file and no temporary left: {:?}",
        dir_names(&save)
    );
    // The receiver fails the task with its reason (the sender waits for that before it would
    // cancel).
    let v = net.wait_status(&tid, "failed");
    assert!(v["outputs"].as_array().unwrap().is_empty(), "{v}");
    assert!(
        v["reason"].as_str().unwrap_or_default().contains("SHA-256"),
        "{v}"
    );
}

#[test]
fn nobody_listening_times_out_with_exit_4_and_cancels_the_task() {
    let net = Net::start();
    let src = subdir(net.path(), "src");
    let file = random_file(&src, "a.txt", 1000);
    let started = Instant::now();
    let mut tx = net.send("agent-a", &file, "nobody", &["--timeout", "3000"]);
    let (code, err) = exit_code(&mut tx, net.deadline);
    assert_eq!(code, 4, "stderr: {err}");
    assert!(started.elapsed() >= Duration::from_secs(3));
    let failed = event(&tx, "transfer_failed");
    assert_eq!(failed["kind"], "timed_out");
    assert_ndjson(&tx);
    net.wait_status(failed["transfer_id"].as_str().unwrap(), "cancelled");
}

#[test]
fn ctrl_c_on_send_cancels_the_offer_and_exits_130() {
    let net = Net::start();
    let src = subdir(net.path(), "src");
    let file = random_file(&src, "a.txt", 1000);
    let mut tx = net.send("agent-a", &file, "nobody", &[]);
    let offer = tx.wait_event("offer_sent", net.deadline);
    tx.signal("-INT");
    let (code, err) = exit_code(&mut tx, net.deadline);
    assert_eq!(code, 130, "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let last: Value = serde_json::from_str(tx.seen.last().unwrap()).unwrap();
    assert_eq!(last["event"], "transfer_failed", "{last}");
    assert_eq!(last["kind"], "cancelled", "{last}");
    assert_eq!(last["transfer_id"], offer["transfer_id"]);
    assert_ndjson(&tx);
    net.wait_status(offer["transfer_id"].as_str().unwrap(), "cancelled");
}

#[test]
fn two_listeners_only_the_named_recipient_takes_the_offer() {
    let net = Net::start();
    let src = subdir(net.path(), "src");
    let save_b = net.path().join("in-b");
    let save_c = net.path().join("in-c");
    let file = random_file(&src, "for-b.bin", 256 * 1024);

    let mut c = net.listen("agent-c", &save_c, &[]);
    let mut b = net.listen("agent-b", &save_b, &["--once"]);
    let mut tx = net.send("agent-a", &file, "agent-b", &[]);
    let (code, err) = exit_code(&mut tx, net.deadline);
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(exit_code(&mut b, net.deadline).0, 0);
    assert_eq!(dir_names(&save_b), ["for-b.bin"]);
    // agent-c saw nothing and stops cleanly on Ctrl-C.
    c.signal("-INT");
    let (code, err) = exit_code(&mut c, net.deadline);
    assert_eq!(code, 130, "stderr: {err}");
    assert_eq!(events(&c), ["listening"], "agent-c saw no offer");
    assert!(dir_names(&save_c).is_empty());
    assert_ndjson(&c);
}

#[test]
fn hostile_file_names_stay_inside_the_save_dir() {
    let net = Net::start();
    let src = subdir(net.path(), "src");
    let save = subdir(net.path(), "box").join("incoming");
    let mut rx = net.listen("agent-b", &save, &[]);

    // A forged offer whose name climbs out of the save directory.
    let evil = FileOffer {
        manifest: None,
        transfer_id: TransferId::random(),
        filename: "../evil".into(),
        size: 5,
        sha256: [1; 32],
        sender_id: "agent-a".into(),
        recipient_id: "agent-b".into(),
        sender_key: [2; 32],
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(ClientConfig::new(
        net.hub.ats_url.clone(),
        Actor::agent("agent-a"),
    ))
    .unwrap();
    rt.block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, client.create_task(&evil.to_new_task(None))).await
    })
    .unwrap()
    .unwrap();

    // A real file whose name has control characters and leading dots.
    let name = "..\u{1b}[31mred\u{7}.txt";
    let file = random_file(&src, name, 3000);
    let hash = sha256_hex(&file);
    let mut tx = net.send("agent-a", &file, "agent-b", &[]);
    let (code, err) = exit_code(&mut tx, net.deadline);
    assert_eq!(code, 0, "stderr: {err}");
    let tid = event(&tx, "offer_sent")["transfer_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = loop {
        let v = rx.wait_event("transfer_complete", net.deadline);
        if v["transfer_id"] == tid.as_str() {
            break v;
        }
    };
    rx.signal("-TERM");
    assert_eq!(exit_code(&mut rx, net.deadline).0, 0, "SIGTERM: clean stop");
    assert_ndjson(&rx);

    let saved = PathBuf::from(done["file_path"].as_str().unwrap());
    assert_eq!(saved.parent().unwrap(), save.as_path(), "{saved:?}");
    let saved_name = saved.file_name().unwrap().to_str().unwrap();
    assert!(
        ats_p2p::names::is_safe_file_name(saved_name) && !saved_name.chars().any(char::is_control),
        "{saved_name:?}"
    );
    assert_eq!(sha256_hex(&saved), hash);
    assert_eq!(dir_names(&save).len(), 1, "{:?}", dir_names(&save));
    // Nothing escaped: the box holds only the save directory, the net dir no `evil`.
    assert_eq!(dir_names(save.parent().unwrap()), ["incoming"]);
    assert!(!dir_names(net.path()).iter().any(|n| n.contains("evil")));
    // The forged offer was refused with a reason, not left hanging.
    let v = net.wait_status(&evil.transfer_id.to_string(), "rejected");
    assert!(!v["reason"].as_str().unwrap_or_default().is_empty(), "{v}");
}

#[test]
fn sender_refuses_a_recipient_whose_key_does_not_match_its_pin() {
    let net = Net::start();
    let src = subdir(net.path(), "src");
    let save = net.path().join("incoming");
    let file = random_file(&src, "a.txt", 4096);
    let wrong = format!("agent-b={}", "6b".repeat(32));

    let mut rx = net.listen("agent-b", &save, &["--once"]);
    let mut tx = net.send("agent-a", &file, "agent-b", &["--allow", &wrong]);
    let (code, err) = exit_code(&mut tx, net.deadline);
    assert_eq!(code, 3, "sender refuses the claim; stderr: {err}");
    let failed = event(&tx, "transfer_failed");
    assert_eq!(failed["kind"], "rejected", "{failed}");
    assert_eq!(failed["code"], "key_mismatch", "{failed}");
    assert!(!events(&tx).iter().any(|e| e == "transfer_start"));
    net.wait_status(failed["transfer_id"].as_str().unwrap(), "cancelled");
    // The listener stops waiting for the sender once the task is closed; nothing reached its
    // disk.
    let (code, err) = exit_code(&mut rx, net.deadline);
    assert_eq!(code, 3, "listener: the sender refused us; stderr: {err}");
    let gave_up = event(&rx, "transfer_failed");
    assert_eq!(gave_up["transfer_id"], failed["transfer_id"]);
    assert_eq!(gave_up["kind"], "rejected", "{gave_up}");
    assert!(!events(&rx).iter().any(|e| e == "transfer_start"));
    assert!(dir_names(&save).is_empty(), "{:?}", dir_names(&save));
    assert_ndjson(&tx);
}

#[test]
fn unreachable_ats_exits_6() {
    let net = Net::start();
    let src = subdir(net.path(), "src");
    let file = random_file(&src, "a.txt", 100);
    let mut c = ats_p2p(net.path());
    c.args(["send", "--json", "--host", "127.0.0.1", "--ephemeral"])
        .args(["--bootstrap", &net.hub.bootstrap])
        .args(["--ats-url", "http://127.0.0.1:1", "--to", "agent-b"])
        .arg(&file);
    let mut tx = Proc::spawn("send", c);
    let (code, err) = exit_code(&mut tx, net.deadline);
    assert_eq!(code, 6, "stderr: {err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
}

#[test]
fn demo_moves_a_file_and_verifies_it() {
    let home = tempfile::tempdir().unwrap();
    let deadline = Instant::now() + TEST_TIMEOUT;
    let mut c = ats_p2p(home.path());
    c.args(["demo", "--size", "3MiB", "--json", "--timeout", "20000"]);
    let mut demo = Proc::spawn("demo", c);
    let (code, err) = exit_code(&mut demo, deadline);
    assert_eq!(code, 0, "stderr: {err}");
    let names = events(&demo);
    for e in [
        "hub_ready",
        "node_ready",
        "file_generated",
        "offer_sent",
        "file",
        "transfer_start",
        "transfer_complete",
        "task_status",
        "demo_complete",
    ] {
        assert!(names.iter().any(|n| n == e), "{e} in {names:?}");
    }
    let done = event(&demo, "demo_complete");
    assert_eq!(done["verified"], true);
    assert_eq!(done["file_hash"], done["source_hash"]);
    assert_eq!(event(&demo, "task_status")["state"], "completed");
    for line in &demo.seen {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(v["event"].is_string(), "{line}");
    }
}

/// Ctrl-C on `listen` once bytes arrived (with `listen_args`): it exits 130 without a completed file,
/// the sender fails with a network error, and ATS shows the task failed with the receiver's
/// reason. Returns the save directory for the caller to check what was kept.
fn ctrl_c_on_listen_mid_transfer(net: &Net, listen_args: &[&str]) -> PathBuf {
    let src = subdir(net.path(), "src");
    let save = net.path().join("incoming");
    let file = random_file(&src, "big.bin", 128 * 1024 * 1024);

    let mut rx = net.listen("agent-b", &save, listen_args);
    // Without retries the send ends when the receiver stops (a `send` that offers again by
    // itself is `resume::listen_killed_at_40_percent_and_restarted_the_same_send_offers_again_and_resumes`).
    let mut tx = net.send("agent-a", &file, "agent-b", &["--retries", "0"]);
    // Bytes arrived (so the receive has its file), not all of them.
    let under_way = wait_mid_transfer(&mut rx, net.deadline);
    rx.signal("-INT");
    let (code, err) = exit_code(&mut rx, net.deadline);
    assert_eq!(code, 130, "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !events(&rx).iter().any(|e| e == "transfer_complete"),
        "stopped mid-transfer: {:?}",
        rx.seen
    );
    // The sender sees the connection go (or the receiver's failure): a network failure.
    let (code, err) = exit_code(&mut tx, net.deadline);
    assert_eq!(code, 6, "stderr: {err}");
    assert_eq!(event(&tx, "transfer_failed")["kind"], "network");
    // ATS shows the end: failed by the stopped receiver, with its reason.
    let tid = under_way["transfer_id"].as_str().unwrap();
    let v = net.wait_status(tid, "failed");
    assert!(v["outputs"].as_array().unwrap().is_empty(), "{v}");
    assert!(!v["reason"].as_str().unwrap_or_default().is_empty(), "{v}");
    save
}

#[test]
fn ctrl_c_on_listen_mid_transfer_exposes_nothing_and_keeps_a_private_partial() {
    let net = Net::start();
    let save = ctrl_c_on_listen_mid_transfer(&net, &[]);
    // By default the partial file stays, hidden and private, so a second `send` resumes.
    assert_only_a_private_partial(&save);
}

#[test]
fn ctrl_c_on_listen_mid_transfer_without_resume_leaves_nothing() {
    let net = Net::start();
    let save = ctrl_c_on_listen_mid_transfer(&net, &["--no-resume"]);
    assert!(
        dir_names(&save).is_empty(),
        "no partial or temporary file: {:?}",
        dir_names(&save)
    );
}

/// A seed whose Ed25519 public key starts with a zero byte (`00af29f7…`).
const ZERO_LEADING_KEY_SEED: &str =
    "18df9961a116ee1150532153f313972ef1f5396284f630ffda91d8073d08e3fc";

/// Regression: such a key's FIND_PEER record once parsed as an empty LOOKUP reply, so about one
/// sender in 256 could never be found.
#[test]
fn a_sender_whose_key_starts_with_a_zero_byte_is_reachable() {
    let net = Net::start();
    let src = subdir(net.path(), "src");
    let save = net.path().join("incoming");
    let keys = write_key_dir(&net.path().join("keys"), "agent-a", ZERO_LEADING_KEY_SEED);
    let file = random_file(&src, "z.bin", 64 * 1024);

    let mut rx = net.listen("agent-b", &save, &["--once"]);
    let mut c = ats_p2p(net.path());
    c.args([
        "send",
        "--json",
        "--host",
        "127.0.0.1",
        "--timeout",
        "10000",
    ])
    .args([
        "--bootstrap",
        &net.hub.bootstrap,
        "--ats-url",
        &net.hub.ats_url,
    ])
    .args(["--actor-id", "agent-a", "--to", "agent-b", "--key-dir"])
    .arg(&keys)
    .arg(&file);
    let mut tx = Proc::spawn("send agent-a (key 00…)", c);
    let (code, err) = exit_code(&mut tx, net.deadline);
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(exit_code(&mut rx, net.deadline).0, 0);
    assert_eq!(dir_names(&save), ["z.bin"]);
}

/// A hub started with `--token` serves nodes that carry it (`--ats-token` / `ATS_TOKEN`): a file
/// moves and verifies; a node without the token is refused with the hub's 401, said plainly.
#[test]
fn a_hub_with_a_token_serves_only_nodes_that_carry_it() {
    const TOKEN: &str = "e2e-test-token-0123456789abcdef";
    let net = Net::start_hub_args(TEST_TIMEOUT, &["--token", TOKEN]);
    let src = subdir(net.path(), "src");
    let save = net.path().join("incoming");
    let file = random_file(&src, "data.bin", 256 * 1024);
    let hash = sha256_hex(&file);

    let mut refused = net.send("agent-a", &file, "agent-b", &[]);
    let (code, err) = exit_code(&mut refused, net.deadline);
    assert_ne!(code, 0, "a node without the token must be refused");
    assert!(err.contains("401"), "the refusal says why: {err}");

    let mut rx = net.listen("agent-b", &save, &["--once", "--ats-token", TOKEN]);
    let mut tx = net.node_keyless("send", "agent-a");
    tx.arg("--key-dir").arg(net.sender_keys("agent-a"));
    tx.arg(&file)
        .args(["--to", "agent-b"])
        .env("ATS_TOKEN", TOKEN);
    let mut tx = Proc::spawn("send agent-a", tx);
    let (code, err) = exit_code(&mut tx, net.deadline);
    assert_eq!(code, 0, "sender stderr: {err}");
    let (code, err) = exit_code(&mut rx, net.deadline);
    assert_eq!(code, 0, "listener stderr: {err}");
    let done = event(&rx, "transfer_complete");
    assert_eq!(done["file_hash"], hash.as_str());
}
