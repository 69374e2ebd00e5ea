//! Sending directories between two nodes on a real hub, a real local DHT and the real swarm
//! transport (issue #15): a tree of 1,000 small files and one 64 MiB file in nested
//! directories arrives identical, with empty files and directories, nothing visible before
//! every file is verified and symbolic links not followed; a manifest that tries to leave the
//! save directory is refused with nothing written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ats_p2p::Incoming;
use ats_p2p::events::{Direction, Event};
use ats_p2p::signal::manifest::{Manifest, ManifestFile};
use ats_p2p::signal::{FileOffer, NewTask, TaskStatus, TransferId};
use futures::StreamExt;
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use crate::node::{CHANNEL, Lab, listing};

/// Bound on each test: 65 MiB through the swarm at a paced rate, and 1,000 files.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// What a tree holds: relative path → `None` for a directory, the SHA-256 for a file.
type TreeListing = BTreeMap<String, Option<[u8; 32]>>;

/// Every entry below `root` (symbolic links as `link -> target`).
fn tree_listing(root: &Path) -> TreeListing {
    fn walk(dir: &Path, rel: &str, out: &mut TreeListing) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let kind = entry.file_type().unwrap();
            if kind.is_symlink() {
                out.insert(format!("{child} -> link"), None);
            } else if kind.is_dir() {
                out.insert(child.clone(), None);
                walk(&entry.path(), &child, out);
            } else {
                let data = std::fs::read(entry.path()).unwrap();
                out.insert(child, Some(Sha256::digest(&data).into()));
            }
        }
    }
    let mut out = TreeListing::new();
    walk(root, "", &mut out);
    out
}

/// 1,000 small files (some empty) in 10 × 5 nested directories, a 64 MiB file, an empty
/// directory and a symbolic link.
fn make_tree(root: &Path) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    for d in 0..10 {
        for s in 0..5 {
            let dir = root.join(format!("d{d}/s{s}"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in 0..20 {
                let len = if f == 0 { 0 } else { rng.gen_range(1..4096) };
                let mut data = vec![0u8; len];
                rng.fill_bytes(&mut data);
                std::fs::write(dir.join(format!("f{f}.txt")), &data).unwrap();
            }
        }
    }
    std::fs::create_dir_all(root.join("media/deep")).unwrap();
    let mut big = vec![0u8; 64 * 1024 * 1024];
    rng.fill_bytes(&mut big);
    std::fs::write(root.join("media/deep/big.bin"), &big).unwrap();
    std::fs::create_dir_all(root.join("empty/also-empty")).unwrap();
    std::os::unix::fs::symlink("media/deep/big.bin", root.join("link")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_of_1000_files_and_a_64_mib_file_arrives_identical_and_only_when_verified() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let lab = Lab::start().await;
        let a = lab.node("agent-a").await;
        // Paced, so the check below sees the receive in the middle (64 MiB take ≥ 1 s).
        let mut config = lab.config("agent-b");
        config.limit = std::num::NonZeroU64::new(48 * 1024 * 1024);
        let b = ats_p2p::Node::start(config).await.unwrap();
        let src = lab.save_dir("src").join("tree");
        make_tree(&src);
        let save = lab.save_dir("incoming");
        let mut inbox = b.watch(CHANNEL, Some(save.clone()));

        let mut sender_events = Vec::new();
        let receiving = async {
            let mut checked_mid_transfer = false;
            loop {
                match inbox.next().await.unwrap() {
                    Incoming::Event(Event::Progress {
                        direction: Direction::Receive,
                        bytes,
                        total,
                        ..
                    }) if bytes < total / 2 => {
                        let visible: Vec<String> = listing(&save)
                            .into_iter()
                            .filter(|n| !n.starts_with('.'))
                            .collect();
                        assert!(visible.is_empty(), "visible mid-transfer: {visible:?}");
                        checked_mid_transfer = true;
                    }
                    Incoming::Event(e @ Event::TransferComplete { .. }) => {
                        break (e, checked_mid_transfer);
                    }
                    Incoming::Event(e @ Event::TransferFailed { .. }) => {
                        panic!("receive failed: {e:?}")
                    }
                    _ => {}
                }
            }
        };
        let (sent, (complete, checked)) = tokio::join!(
            a.send(&src, "agent-b", CHANNEL, |e| sender_events.push(e.clone())),
            receiving,
        );
        let report = sent.unwrap();
        assert!(
            checked,
            "no progress report in the first half of the receive"
        );

        let Event::TransferComplete { file_path, .. } = complete else {
            unreachable!()
        };
        let received = PathBuf::from(file_path);
        assert_eq!(received, save.join("tree"));
        let mut expected = tree_listing(&src);
        expected.remove("link -> link");
        let got = tree_listing(&received);
        assert_eq!(
            got.len(),
            1000 + 1 + 10 + 50 + 2 + 2,
            "every file and directory"
        );
        assert_eq!(
            got, expected,
            "the same tree, byte for byte, without the link"
        );
        assert_eq!(listing(&save), ["tree"], "no temporary left beside it");
        let total: u64 = 64 * 1024 * 1024
            + expected
                .keys()
                .filter(|k| k.ends_with(".txt"))
                .map(|k| std::fs::metadata(src.join(k)).unwrap().len())
                .sum::<u64>();
        assert_eq!(report.bytes, total);

        let skipped: Vec<&Event> = sender_events
            .iter()
            .filter(|e| matches!(e, Event::Skipped { .. }))
            .collect();
        assert!(
            matches!(skipped[..], [Event::Skipped { path, .. }] if path.ends_with("link")),
            "the link is reported, not followed: {skipped:?}"
        );
        let task = b.client().get_task(report.task_id).await.unwrap();
        assert_eq!(task.status, TaskStatus::Completed);
        assert_eq!(task.payload["kind"], "directory");

        drop(inbox);
        lab.finish([a, b]).await;
    })
    .await
    .unwrap();
}

/// A directory offer whose manifest reaches outside (`../x`) or names a device, created on the
/// hub as a hostile sender would.
fn hostile_offer(path: &str, sender_key: [u8; 32]) -> NewTask {
    let data = b"evil";
    let manifest = Manifest {
        dirs: vec![],
        files: vec![ManifestFile {
            path: path.to_owned(),
            size: data.len() as u64,
            sha256: Sha256::digest(data).into(),
        }],
    };
    let offer = FileOffer {
        transfer_id: TransferId::random(),
        filename: "innocent".into(),
        size: data.len() as u64,
        sha256: manifest.digest(),
        sender_id: "agent-a".into(),
        recipient_id: "agent-b".into(),
        sender_key,
        manifest: None,
    };
    let mut payload = offer.to_payload();
    payload["kind"] = "directory".into();
    payload["manifest"] = manifest.to_json();
    NewTask {
        payload: Some(payload),
        ..offer.to_new_task(Some(CHANNEL))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_that_leaves_the_directory_or_names_a_device_is_refused_with_nothing_written() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let lab = Lab::start().await;
        let a = lab.node("agent-a").await;
        let b = lab.node("agent-b").await;
        let save = lab.save_dir("incoming");
        let mut inbox = b.watch(CHANNEL, Some(save.clone()));
        let key = *a.public_key().as_bytes();

        for (path, expect) in [("../x", "unsafe path"), ("sub/CON", "device name")] {
            let task = a
                .client()
                .create_task(&hostile_offer(path, key))
                .await
                .unwrap();
            // The receiver says why (an invalid offer, or a policy refusal).
            let reason = loop {
                match inbox.next().await.unwrap() {
                    Incoming::Event(Event::Error { message, .. }) => break message,
                    Incoming::Event(Event::TransferFailed { reason, .. }) => break reason,
                    Incoming::Offer(o) => panic!("offered for a decision: {}", o.transfer_id()),
                    _ => {}
                }
            };
            assert!(reason.contains(expect), "{path}: {reason}");
            let task = b.client().get_task(task.id).await.unwrap();
            assert_eq!(task.status, TaskStatus::Rejected, "{path}");
            assert!(
                task.reason.as_deref().is_some_and(|r| r.contains(expect)),
                "{path}: the task says why: {:?}",
                task.reason
            );
        }
        assert!(
            listing(&save).is_empty(),
            "nothing written: {:?}",
            listing(&save)
        );
        assert!(!lab.save_dir("x").exists());

        drop(inbox);
        lab.finish([a, b]).await;
    })
    .await
    .unwrap();
}
