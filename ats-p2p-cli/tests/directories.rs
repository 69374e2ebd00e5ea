//! Directories end to end (issue #15), with real processes on loopback and the real hub:
//! `send DIR` delivers a tree of 1,000 small files and a 64 MiB file in nested directories that
//! `diff -r` finds identical; a directory broken at 40 % resumes per file when sent again (only
//! the rest moves); a `listen --no-resume` killed mid-directory exposes nothing and its next
//! start clears what it left.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::net::{
    Net, dir_names, event, exit_code, random_file, send_with_keys, wait_mid_transfer, wait_progress,
};
use crate::common::subdir;
use rand::{Rng, RngCore, SeedableRng};

/// Bound on each test: a 65 MiB tree of 1,000 files, twice at most.
const DIRECTORY_TIMEOUT: Duration = Duration::from_secs(180);

/// 1,000 small files (some empty) in 10 × 5 nested directories, one 64 MiB file deeper down and
/// an empty directory.
fn make_tree(root: &Path, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for d in 0..10 {
        for s in 0..5 {
            let dir = root.join(format!("dir{d}/sub{s}"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in 0..20 {
                let mut data = vec![0u8; if f == 0 { 0 } else { rng.gen_range(1..8192) }];
                rng.fill_bytes(&mut data);
                std::fs::write(dir.join(format!("file{f}.dat")), &data).unwrap();
            }
        }
    }
    std::fs::create_dir_all(root.join("media/raw")).unwrap();
    let mut big = vec![0u8; 64 * 1024 * 1024];
    rng.fill_bytes(&mut big);
    std::fs::write(root.join("media/raw/big.bin"), &big).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
}

/// `diff -r a b` succeeds: the same names, the same bytes, the same empty directories.
fn assert_same_tree(a: &Path, b: &Path) {
    let out = Command::new("diff")
        .arg("-r")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "diff -r {} {}:\n{}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(b.join("empty").is_dir(), "the empty directory arrived");
}

#[test]
fn a_tree_of_1000_files_and_64_mib_arrives_identical() {
    let net = Net::start_with(DIRECTORY_TIMEOUT);
    let src = subdir(net.path(), "src").join("project");
    make_tree(&src, 1);
    let save = net.path().join("incoming");

    let mut rx = net.listen("agent-b", &save, &["--once"]);
    let started = Instant::now();
    let mut tx = net.send("agent-a", &src, "agent-b", &[]);
    let (code, err) = exit_code(&mut tx, net.deadline);
    assert_eq!(code, 0, "sender stderr: {err}");
    eprintln!(
        "1,000 files + 64 MiB as one directory: {:?}",
        started.elapsed()
    );
    let (code, err) = exit_code(&mut rx, net.deadline);
    assert_eq!(code, 0, "listener stderr: {err}");

    let offer = event(&tx, "offer_sent");
    assert_eq!(offer["file_name"], "project");
    let done = event(&rx, "transfer_complete");
    let saved = Path::new(done["file_path"].as_str().unwrap()).to_path_buf();
    assert_eq!(saved, save.join("project"));
    assert_same_tree(&src, &saved);
    assert_eq!(
        dir_names(&save),
        ["project"],
        "nothing else in the save dir"
    );
    let v = net.wait_status(offer["transfer_id"].as_str().unwrap(), "completed");
    assert_eq!(v["recipient_id"], "agent-b");
}

#[test]
fn a_directory_broken_at_40_percent_and_sent_again_moves_only_the_rest() {
    let net = Net::start_with(DIRECTORY_TIMEOUT);
    let src = subdir(net.path(), "src").join("project");
    make_tree(&src, 3);
    let save = net.path().join("incoming");
    let keys = net.sender_keys("agent-a");

    let mut rx = net.listen("agent-b", &save, &[]);
    let mut tx = send_with_keys(&net, "agent-a", &keys, &src, &["--limit", "32MiB/s"]);
    wait_progress(&mut rx, 0.4, net.deadline);
    // Both ends die (the network between them is gone for good).
    rx.kill9();
    tx.kill9();
    let left = dir_names(&save);
    assert!(
        left.iter().all(|n| n.starts_with(".ats-p2p-")),
        "nothing visible: {left:?}"
    );

    let mut rx = net.listen("agent-b", &save, &["--once"]);
    let mut again = send_with_keys(&net, "agent-a", &keys, &src, &[]);
    let (code, err) = exit_code(&mut again, net.deadline);
    assert_eq!(code, 0, "second send: {err}");
    let complete = rx.wait_event("transfer_complete", net.deadline);
    assert_eq!(exit_code(&mut rx, net.deadline).0, 0);
    let (bytes, resumed) = (
        complete["bytes"].as_u64().unwrap(),
        complete["resumed_from"].as_u64().unwrap(),
    );
    eprintln!(
        "directory resumed from {resumed} of {bytes} bytes: {:.1} % moved again",
        (bytes - resumed) as f64 * 100.0 / bytes as f64
    );
    assert!(
        (bytes - resumed) * 100 <= bytes * 65,
        "at most 65 % moves again: {complete}"
    );
    let saved = Path::new(complete["file_path"].as_str().unwrap()).to_path_buf();
    assert_same_tree(&src, &saved);
    assert_eq!(dir_names(&save), ["project"], "no record or temporary left");
}

#[test]
fn a_listen_without_resume_killed_mid_directory_exposes_nothing_and_its_next_start_clears_it() {
    let net = Net::start_with(DIRECTORY_TIMEOUT);
    let src = subdir(net.path(), "src").join("project");
    make_tree(&src, 2);
    let save = net.path().join("incoming");

    let mut rx = net.listen(
        "agent-b",
        &save,
        &["--once", "--no-resume", "--limit", "16MiB/s"],
    );
    let mut tx = net.send("agent-a", &src, "agent-b", &[]);
    wait_mid_transfer(&mut rx, net.deadline);
    rx.kill9();
    // The sender goes too (it would offer the directory again).
    tx.kill9();
    let left = dir_names(&save);
    assert!(
        left.iter()
            .all(|n| n.starts_with(".ats-p2p-") && n.ends_with(".partdir")),
        "only the hidden temporary directory: {left:?}"
    );
    assert_eq!(left.len(), 1, "{left:?}");

    // The next listen clears the dead receive's directory before it takes offers, so once a
    // file arrived it is gone.
    let mut rx = net.listen("agent-b", &save, &["--once"]);
    let file = random_file(&subdir(net.path(), "more"), "after.txt", 1000);
    let mut tx = net.send("agent-a", &file, "agent-b", &[]);
    assert_eq!(exit_code(&mut tx, net.deadline).0, 0);
    assert_eq!(exit_code(&mut rx, net.deadline).0, 0);
    assert_eq!(
        dir_names(&save),
        ["after.txt"],
        "the dead directory was removed"
    );
}
