//! Two nodes on loopback: a real hub (HTTP + WebSocket, SQLite), a real local DHT bootstrap, the
//! real swarm transport. Offers, claims, accepts and rejects go through the hub; bytes through
//! the swarm.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns; a panic is a failed test

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ats_p2p::error::SendError;
use ats_p2p::events::{Direction, Event, FailureKind};
use ats_p2p::identity::KeySource;
use ats_p2p::policy::Allowlist;
use ats_p2p::signal::hub::{Hub, HubConfig};
use ats_p2p::signal::{ListQuery, TaskStatus};
use ats_p2p::swarm::hyperdht::Bootstrap;
use ats_p2p::{Incoming, Node, NodeConfig};
use futures::StreamExt;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

const TEST_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const CHANNEL: &str = "p2p-transfer";

/// A hub, a DHT bootstrap node and a scratch directory (shared by the node-level test modules).
pub(crate) struct Lab {
    hub: Hub,
    boot: Bootstrap,
    dir: tempfile::TempDir,
}

impl Lab {
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::bind(HubConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.path().join("hub.sqlite"),
        ))
        .await
        .unwrap();
        let boot = Bootstrap::spawn(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        Self { hub, boot, dir }
    }

    pub(crate) fn config(&self, actor: &str) -> NodeConfig {
        let mut c = NodeConfig::new(actor);
        c.ats_url = self.hub.url();
        c.bootstrap = vec![self.boot.addr().to_string()];
        c.host = Ipv4Addr::LOCALHOST;
        c.key_source = KeySource::Ephemeral;
        c.known_keys_path = None;
        c.timeout = Duration::from_secs(20);
        c
    }

    pub(crate) async fn node(&self, actor: &str) -> Node {
        Node::start(self.config(actor)).await.unwrap()
    }

    fn file(&self, name: &str, len: usize, seed: u64) -> PathBuf {
        let mut data = vec![0u8; len];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
        let p = self.dir.path().join(name);
        std::fs::write(&p, &data).unwrap();
        p
    }

    pub(crate) fn save_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn shutdown(self) {
        self.hub.shutdown().await;
        self.boot.destroy().await;
    }

    /// Destroys `nodes`, then the hub and the bootstrap node.
    pub(crate) async fn finish(self, nodes: impl IntoIterator<Item = Node>) {
        for n in nodes {
            n.destroy().await;
        }
        self.shutdown().await;
    }
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// Files in `dir` (names), sorted.
pub(crate) fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Collects watch events until `n` terminal events (complete/failed) arrived.
async fn terminal_events(inbox: &mut ats_p2p::Inbox, n: usize) -> Vec<Event> {
    let mut out = Vec::new();
    let mut done = 0;
    while done < n {
        match inbox.next().await.unwrap() {
            Incoming::Event(e) => {
                if matches!(
                    e,
                    Event::TransferComplete { .. } | Event::TransferFailed { .. }
                ) {
                    done += 1;
                }
                out.push(e);
            }
            Incoming::Offer(o) => panic!("unexpected manual offer {}", o.transfer_id()),
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_moves_and_the_task_records_the_hash() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let lab = Lab::start().await;
        let a = lab.node("agent-a").await;
        let b = lab.node("agent-b").await;
        let src = lab.file("data.bin", 3 * 1024 * 1024 + 17, 1);
        let save = lab.save_dir("incoming");
        let mut inbox = b.watch(CHANNEL, Some(save.clone()));

        let mut sender_events = Vec::new();
        let (sent, received) = tokio::join!(
            a.send(&src, "agent-b", CHANNEL, |e| sender_events.push(e.clone())),
            terminal_events(&mut inbox, 1),
        );
        let report = sent.unwrap();
        assert_eq!(report.file_hash.to_hex(), sha256_hex(&src));
        assert_eq!(report.bytes, 3 * 1024 * 1024 + 17);

        let names: Vec<&str> = sender_events.iter().map(Event::name).collect();
        assert_eq!(names.first(), Some(&"offer_sent"));
        assert!(names.contains(&"transfer_start"), "{names:?}");
        assert_eq!(names.last(), Some(&"transfer_complete"));
        assert!(
            sender_events
                .iter()
                .all(|e| e.transfer_id() == Some(report.transfer_id.to_string().as_str()))
        );

        let names: Vec<&str> = received.iter().map(Event::name).collect();
        assert_eq!(names.first(), Some(&"file"), "{names:?}");
        let Some(Event::TransferComplete {
            file_path,
            file_hash,
            direction,
            ..
        }) = received.last()
        else {
            panic!("receiver did not complete: {received:?}");
        };
        assert_eq!(*direction, Direction::Receive);
        assert_eq!(file_hash, &report.file_hash.to_hex());
        assert_eq!(sha256_hex(Path::new(file_path)), report.file_hash.to_hex());
        assert_eq!(listing(&save), ["data.bin"], "no temp file left beside it");

        let task = b.client().get_task(report.task_id).await.unwrap();
        assert_eq!(task.status, TaskStatus::Completed);
        assert_eq!(task.assignee_id.as_deref(), Some("agent-b"));
        assert_eq!(
            task.outputs[0]["sha256"],
            report.file_hash.to_hex().as_str()
        );
        assert_eq!(task.outputs[0]["bytes"], report.bytes);
        assert!(task.payload["sender_key"] == a.public_key().to_hex());

        drop(inbox);
        lab.finish([a, b]).await;
    })
    .await
    .unwrap();
}

/// Several hubs on one PostgreSQL database: the sender signals through one instance, the
/// receiver through another, and the transfer completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_between_nodes_on_two_hub_instances_completes() {
    let cluster = match crate::pg::cluster() {
        Ok(c) => c,
        Err(why) => {
            crate::pg::skip_or_fail(module_path!(), &why);
            return;
        }
    };
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let db = cluster.database_for(dir.path());
        let hub = Hub::bind(HubConfig::new("127.0.0.1:0".parse().unwrap(), db.clone()))
            .await
            .unwrap();
        let other = Hub::bind(HubConfig::new("127.0.0.1:0".parse().unwrap(), db))
            .await
            .unwrap();
        let boot = Bootstrap::spawn(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let lab = Lab { hub, boot, dir };
        let a = lab.node("agent-a").await;
        let mut b_cfg = lab.config("agent-b");
        b_cfg.ats_url = other.url();
        let b = Node::start(b_cfg).await.unwrap();
        let src = lab.file("data.bin", 256 * 1024 + 3, 7);
        let save = lab.save_dir("incoming");
        let mut inbox = b.watch(CHANNEL, Some(save.clone()));
        let (sent, received) = tokio::join!(
            a.send(&src, "agent-b", CHANNEL, |_| {}),
            terminal_events(&mut inbox, 1),
        );
        let report = sent.unwrap();
        assert!(
            matches!(received.last(), Some(Event::TransferComplete { .. })),
            "{received:?}"
        );
        assert_eq!(sha256_hex(&save.join("data.bin")), sha256_hex(&src));
        // Both instances see the finished task.
        for client in [a.client(), b.client()] {
            let task = client.get_task(report.task_id).await.unwrap();
            assert_eq!(task.status, TaskStatus::Completed);
        }
        drop(inbox);
        other.shutdown().await;
        lab.finish([a, b]).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_reject_and_policy_refusals_reach_the_sender() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let lab = Lab::start().await;
        let a = lab.node("agent-a").await;
        // b decides by hand; c allows only agent-z; d takes at most 1 KiB.
        let b = lab.node("agent-b").await;
        let mut c_cfg = lab.config("agent-c");
        c_cfg.allow = Allowlist::parse(["agent-z"]).unwrap();
        let c = Node::start(c_cfg).await.unwrap();
        let mut d_cfg = lab.config("agent-d");
        d_cfg.max_size = Some(1024);
        let d = Node::start(d_cfg).await.unwrap();
        let src = lab.file("report.pdf", 64 * 1024, 2);

        let mut b_inbox = b.watch(CHANNEL, None);
        let decide = async {
            loop {
                match b_inbox.next().await.unwrap() {
                    Incoming::Offer(o) => {
                        assert_eq!(o.offer.sender_id, "agent-a");
                        o.reject("not today").await.unwrap();
                        return;
                    }
                    Incoming::Event(_) => {}
                    _ => {}
                }
            }
        };
        let (sent, ()) = tokio::join!(a.send(&src, "agent-b", CHANNEL, |_| {}), decide);
        let err = sent.unwrap_err();
        assert!(
            matches!(&err, SendError::Declined { reason } if reason == "not today"),
            "{err:?}"
        );
        assert_eq!(err.kind(), FailureKind::Rejected);

        let c_save = lab.save_dir("c");
        let mut c_inbox = c.watch(CHANNEL, Some(c_save.clone()));
        let (sent, events) = tokio::join!(
            a.send(&src, "agent-c", CHANNEL, |_| {}),
            terminal_events(&mut c_inbox, 1)
        );
        let err = sent.unwrap_err();
        assert_eq!(err.kind(), FailureKind::Rejected, "{err:?}");
        assert!(err.to_string().contains("rejected"), "{err}");
        let Some(Event::TransferFailed { code, .. }) = events.last() else {
            panic!("{events:?}")
        };
        assert_eq!(code, "not_allowed");
        assert!(listing(&c_save).is_empty());

        let d_save = lab.save_dir("d");
        let mut d_inbox = d.watch(CHANNEL, Some(d_save.clone()));
        let (sent, events) = tokio::join!(
            a.send(&src, "agent-d", CHANNEL, |_| {}),
            terminal_events(&mut d_inbox, 1)
        );
        let err = sent.unwrap_err();
        match &err {
            SendError::Declined { reason } => {
                assert!(reason.contains("exceeds the limit"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        let Some(Event::TransferFailed { code, .. }) = events.last() else {
            panic!("{events:?}")
        };
        assert_eq!(code, "too_large");
        assert!(
            listing(&d_save).is_empty(),
            "nothing written before the refusal"
        );

        // Every offer ended visibly on ATS as rejected.
        let list = a.client().list_tasks(&ListQuery::default()).await.unwrap();
        assert_eq!(list.tasks.len(), 3);
        assert!(list.tasks.iter().all(|t| t.status == TaskStatus::Rejected));

        drop((b_inbox, c_inbox, d_inbox));
        lab.finish([a, b, c, d]).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_answers_so_the_offer_is_cancelled() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let lab = Lab::start().await;
        let mut cfg = lab.config("agent-a");
        cfg.timeout = Duration::from_millis(1500);
        let a = Node::start(cfg).await.unwrap();
        let src = lab.file("lonely.txt", 100, 3);
        let mut events = Vec::new();
        let err = a
            .send(&src, "agent-nobody", CHANNEL, |e| events.push(e.clone()))
            .await
            .unwrap_err();
        assert!(matches!(err, SendError::NoAnswer(_)), "{err:?}");
        assert_eq!(err.kind(), FailureKind::TimedOut);
        let Some(Event::TransferFailed { kind, code, .. }) = events.last() else {
            panic!("{events:?}")
        };
        assert_eq!((*kind, code.as_str()), (FailureKind::TimedOut, "no_answer"));
        let list = a.client().list_tasks(&ListQuery::default()).await.unwrap();
        assert_eq!(list.tasks[0].status, TaskStatus::Cancelled);
        lab.finish([a]).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_both_ways_between_the_same_pair() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let lab = Lab::start().await;
        let a = lab.node("agent-a").await;
        let b = lab.node("agent-b").await;
        let a_save = lab.save_dir("a-in");
        let b_save = lab.save_dir("b-in");
        let mut a_inbox = a.watch(CHANNEL, Some(a_save.clone()));
        let mut b_inbox = b.watch(CHANNEL, Some(b_save.clone()));
        let f1 = lab.file("one.bin", 700_000, 4);
        let f2 = lab.file("two.bin", 900_000, 5);
        let f3 = lab.file("three.bin", 500_000, 6);

        let (r1, r2, r3, ea, eb) = tokio::join!(
            a.send(&f1, "agent-b", CHANNEL, |_| {}),
            a.send(&f2, "agent-b", CHANNEL, |_| {}),
            b.send(&f3, "agent-a", CHANNEL, |_| {}),
            terminal_events(&mut a_inbox, 1),
            terminal_events(&mut b_inbox, 2),
        );
        for (r, f) in [(r1, &f1), (r2, &f2), (r3, &f3)] {
            assert_eq!(r.unwrap().file_hash.to_hex(), sha256_hex(f));
        }
        assert!(
            ea.iter().chain(&eb).all(|e| e.name() != "transfer_failed"),
            "{ea:?} {eb:?}"
        );
        assert_eq!(listing(&b_save), ["one.bin", "two.bin"]);
        assert_eq!(listing(&a_save), ["three.bin"]);
        assert_eq!(sha256_hex(&b_save.join("two.bin")), sha256_hex(&f2));

        drop((a_inbox, b_inbox));
        lab.finish([a, b]).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_do_not_match_the_offer_are_refused_and_nothing_is_kept() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let lab = Lab::start().await;
        let a = lab.node("agent-a").await;
        let b = lab.node("agent-b").await;
        let src = lab.file("contract.txt", 200_000, 7);
        let save = lab.save_dir("incoming");
        let mut inbox = b.watch(CHANNEL, None);

        let receive = async {
            let offer = loop {
                if let Incoming::Offer(o) = inbox.next().await.unwrap() {
                    break o;
                }
            };
            // The sender's file changes after it was hashed and offered: same size, other bytes.
            let mut data = std::fs::read(&src).unwrap();
            data[100_000] ^= 0xff;
            std::fs::write(&src, &data).unwrap();
            offer.accept(&save).await
        };
        let (sent, received) = tokio::join!(a.send(&src, "agent-b", CHANNEL, |_| {}), receive);
        let err = received.unwrap_err();
        assert_eq!(err.kind(), FailureKind::Verification, "{err:?}");
        assert_eq!(err.code(), "hash_mismatch");
        let err = sent.unwrap_err();
        assert!(matches!(err, SendError::FileChanged { .. }), "{err:?}");
        assert_eq!(err.kind(), FailureKind::Verification);
        assert!(
            listing(&save).is_empty(),
            "no file and no temp file: {:?}",
            listing(&save)
        );

        let list = a.client().list_tasks(&ListQuery::default()).await.unwrap();
        let task = &list.tasks[0];
        assert_eq!(task.status, TaskStatus::Failed);
        assert!(
            task.reason
                .as_deref()
                .unwrap_or("")
                .contains("SHA-256 mismatch"),
            "{task:?}"
        );

        drop(inbox);
        lab.finish([a, b]).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_cancels_an_offer_whose_send_was_abandoned() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let lab = Lab::start().await;
        let a = lab.node("agent-a").await;
        let src = lab.file("later.txt", 10, 8);
        let mut offered = false;
        // Like Ctrl-C: the send is dropped while it waits for an answer.
        let abandoned = tokio::time::timeout(
            Duration::from_millis(800),
            a.send(&src, "agent-b", CHANNEL, |e| {
                offered |= e.name() == "offer_sent"
            }),
        )
        .await;
        assert!(abandoned.is_err() && offered);
        let client = a.client().clone();
        a.destroy().await;
        let list = client.list_tasks(&ListQuery::default()).await.unwrap();
        assert_eq!(list.tasks[0].status, TaskStatus::Cancelled);
        lab.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_survives_a_hub_restart_while_the_offer_waits() {
    use std::sync::atomic::{AtomicBool, Ordering};
    tokio::time::timeout(TEST_TIMEOUT, async {
        let lab = Lab::start().await;
        let addr = lab.hub.local_addr();
        let db = lab.dir.path().join("hub.sqlite");
        let a = lab.node("agent-a").await;
        let b = lab.node("agent-b").await;
        let src = lab.file("survivor.bin", 300_000, 9);
        let save = lab.save_dir("incoming");
        let Lab { hub, boot, dir } = lab;

        let offered = AtomicBool::new(false);
        let hub = {
            let send = a.send(&src, "agent-b", CHANNEL, |e| {
                if e.name() == "offer_sent" {
                    offered.store(true, Ordering::SeqCst);
                }
            });
            tokio::pin!(send);
            // Let the offer go out, then restart the hub on the same address and database.
            let offer_out = async {
                while !offered.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            tokio::select! {
                r = &mut send => panic!("send ended early: {r:?}"),
                () = offer_out => {}
            }
            hub.shutdown().await;
            let hub = Hub::bind(HubConfig::new(addr, db)).await.unwrap();

            let mut inbox = b.watch(CHANNEL, Some(save.clone()));
            let (sent, events) = tokio::join!(&mut send, terminal_events(&mut inbox, 1));
            let report = sent.unwrap();
            assert_eq!(
                events.last().map(Event::name),
                Some("transfer_complete"),
                "{events:?}"
            );
            assert_eq!(
                sha256_hex(&save.join("survivor.bin")),
                report.file_hash.to_hex()
            );
            hub
        };

        Lab { hub, boot, dir }.finish([a, b]).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_bound_to_all_interfaces_meet_through_a_loopback_bootstrap() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let lab = Lab::start().await;
        let node = |actor: &str| {
            let mut c = lab.config(actor);
            c.host = Ipv4Addr::UNSPECIFIED; // the CLI's default
            Node::start(c)
        };
        let a = node("agent-a").await.unwrap();
        let b = node("agent-b").await.unwrap();
        let src = lab.file("wide.bin", 200_000, 10);
        let save = lab.save_dir("incoming");
        let mut inbox = b.watch(CHANNEL, Some(save.clone()));
        let (sent, events) = tokio::join!(
            a.send(&src, "agent-b", CHANNEL, |_| {}),
            terminal_events(&mut inbox, 1)
        );
        assert_eq!(
            sent.unwrap().file_hash.to_hex(),
            sha256_hex(&src),
            "{events:?}"
        );
        drop(inbox);
        lab.finish([a, b]).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_pinning_another_key_refuses_the_claim_and_the_receiver_stops_waiting() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let lab = Lab::start().await;
        let mut a_cfg = lab.config("agent-a");
        a_cfg.allow = Allowlist::parse([format!("agent-b={}", "ab".repeat(32))]).unwrap();
        let a = Node::start(a_cfg).await.unwrap();
        let b = lab.node("agent-b").await;
        let src = lab.file("secret.txt", 1000, 11);
        let save = lab.save_dir("incoming");
        let mut inbox = b.watch(CHANNEL, Some(save.clone()));
        let started = std::time::Instant::now();
        let (sent, events) = tokio::join!(
            a.send(&src, "agent-b", CHANNEL, |_| {}),
            terminal_events(&mut inbox, 1)
        );
        let err = sent.unwrap_err();
        assert_eq!(
            (err.kind(), err.code()),
            (FailureKind::Rejected, "key_mismatch"),
            "{err:?}"
        );
        let Some(Event::TransferFailed { code, .. }) = events.last() else {
            panic!("{events:?}")
        };
        assert_eq!(code, "sender_gave_up");
        // Well before the 20 s timeout: the receiver noticed the cancelled task.
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(listing(&save).is_empty());
        drop(inbox);
        lab.finish([a, b]).await;
    })
    .await
    .unwrap();
}
