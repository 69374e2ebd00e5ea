//! The node's hardening rules, each against a real hub (HTTP + WebSocket, SQLite) and a real
//! local DHT on loopback: stale temporary files removed when a watch starts, keys remembered
//! only after a verified transfer, one receiver per transfer when an actor id claims twice, a
//! cap on concurrent receives, and free space counted with the receives already running.
//! Impostors and flooding senders are plain hub clients using someone else's actor id, which ATS
//! allows (actor headers are not authentication).
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns; a panic is a failed test

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ats_p2p::events::Event;
use ats_p2p::identity::KeySource;
use ats_p2p::signal::hub::{Hub, HubConfig};
use ats_p2p::signal::{
    AcceptMessage, Actor, Client, ClientConfig, FileOffer, Part, Task, TaskId, TaskStatus,
    TransferId,
};
use ats_p2p::swarm::hyperdht::Bootstrap;
use ats_p2p::{Inbox, Incoming, Node, NodeConfig, PendingOffer};
use futures::StreamExt;

const TEST_TIMEOUT: Duration = Duration::from_secs(90);
const CHANNEL: &str = "p2p-transfer";

struct Lab {
    hub: Hub,
    boot: Bootstrap,
    dir: tempfile::TempDir,
}

impl Lab {
    async fn start() -> Self {
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

    fn config(&self, actor: &str) -> NodeConfig {
        let mut c = NodeConfig::new(actor);
        c.ats_url = self.hub.url();
        c.bootstrap = vec![self.boot.addr().to_string()];
        c.host = Ipv4Addr::LOCALHOST;
        c.key_source = KeySource::Ephemeral;
        c.known_keys_path = None;
        c.timeout = Duration::from_secs(20);
        c
    }

    async fn node(&self, actor: &str) -> Node {
        Node::start(self.config(actor)).await.unwrap()
    }

    /// A plain hub client acting as `actor` (an impostor, or a sender without a swarm).
    fn client(&self, actor: &str) -> Client {
        Client::new(ClientConfig::new(self.hub.url(), Actor::agent(actor))).unwrap()
    }

    fn file(&self, name: &str, len: usize) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, vec![0x5a; len]).unwrap();
        p
    }

    fn save_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn finish(self, nodes: impl IntoIterator<Item = Node>) {
        for n in nodes {
            n.destroy().await;
        }
        self.hub.shutdown().await;
        self.boot.destroy().await;
    }
}

/// Offers `size` bytes to `recipient` as `client`'s actor id, announcing `key` (nobody will
/// ever connect with it): an offer that holds a receive until its task ends.
async fn fake_offer(client: &Client, sender: &str, recipient: &str, size: u64, key: u8) -> Task {
    let offer = FileOffer {
        manifest: None,
        transfer_id: TransferId::random(),
        filename: "bait.bin".into(),
        size,
        sha256: [7; 32],
        sender_id: sender.into(),
        recipient_id: recipient.into(),
        sender_key: [key; 32],
    };
    client
        .create_task(&offer.to_new_task(Some(CHANNEL)))
        .await
        .unwrap()
}

/// Waits until task `id` has `status` (reads the hub every 50 ms; the test's own timeout bounds
/// it).
async fn until_status(client: &Client, id: TaskId, status: TaskStatus) -> Task {
    loop {
        let t = client.get_task(id).await.unwrap();
        if t.status == status {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next event from `inbox` that `pick` selects (others are skipped).
async fn next_event<T>(inbox: &mut Inbox, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
    loop {
        match inbox.next().await.unwrap() {
            Incoming::Event(e) => {
                if let Some(t) = pick(&e) {
                    return t;
                }
            }
            Incoming::Offer(o) => panic!("unexpected manual offer {}", o.transfer_id()),
            _ => {}
        }
    }
}

/// The code of the next `transfer_failed` event for `transfer_id`; panics on its completion.
async fn failure_code(inbox: &mut Inbox, transfer_id: &str) -> String {
    next_event(inbox, |e| match e {
        Event::TransferFailed {
            transfer_id: t,
            code,
            ..
        } if t == transfer_id => Some(code.clone()),
        Event::TransferComplete { transfer_id: t, .. } if t == transfer_id => {
            panic!("{transfer_id} completed")
        }
        _ => None,
    })
    .await
}

/// Waits for the `transfer_complete` event of any transfer; panics on a failure.
async fn completion(inbox: &mut Inbox) -> PathBuf {
    next_event(inbox, |e| match e {
        Event::TransferComplete { file_path, .. } => Some(PathBuf::from(file_path)),
        Event::TransferFailed { .. } => panic!("a transfer failed: {e:?}"),
        _ => None,
    })
    .await
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_a_save_dir_removes_what_a_killed_listen_left() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let lab = Lab::start().await;
        let save = lab.save_dir("incoming");
        std::fs::create_dir_all(&save).unwrap();
        // What a SIGKILLed `listen` leaves: a temporary file nobody holds any more, written a
        // moment ago (not old enough for the 24-hour age rule).
        let leftover = save.join(".ats-p2p-00112233445566778899aabbccddeeff-0123456789abcdef.part");
        std::fs::write(&leftover, b"half a file").unwrap();
        // Files that are not ours: kept.
        std::fs::write(save.join("notes.txt"), b"mine").unwrap();
        std::fs::write(save.join(".ats-p2p-x.partial"), b"mine too").unwrap();

        let a = lab.node("agent-a").await;
        let b = lab.node("agent-b").await;
        let mut inbox = b.watch(CHANNEL, Some(save.clone()));
        // A transfer through the watch: it starts only after the clean-up ran.
        let src = lab.file("fresh.bin", 100_000);
        let (sent, path) = tokio::join!(
            a.send(&src, "agent-b", CHANNEL, |_| {}),
            completion(&mut inbox)
        );
        sent.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![0x5a; 100_000]);
        assert!(!leftover.exists(), "{:?}", listing(&save));
        assert_eq!(
            listing(&save),
            [".ats-p2p-x.partial", "fresh.bin", "notes.txt"]
        );
        assert_eq!(std::fs::read(save.join("notes.txt")).unwrap(), b"mine");
        drop(inbox);
        lab.finish([a, b]).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_sender_cannot_poison_the_receivers_remembered_key() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let lab = Lab::start().await;
        let b = lab.node("agent-b").await;
        let save = lab.save_dir("incoming");
        let mut inbox = b.watch(CHANNEL, Some(save.clone()));

        // Someone on the hub offers a file as agent-a with their own key, lets bob claim and
        // accept, and never sends a byte.
        let impostor = lab.client("agent-a");
        let bait = fake_offer(&impostor, "agent-a", "agent-b", 10, 0xee).await;
        until_status(&impostor, bait.id, TaskStatus::InProgress).await;
        impostor.cancel(bait.id).await.unwrap();
        let bait_id = bait.payload["transfer_id"].as_str().unwrap().to_owned();
        assert_eq!(failure_code(&mut inbox, &bait_id).await, "sender_gave_up");

        // The real agent-a, with its own key, is not refused as a "changed key".
        let a = lab.node("agent-a").await;
        let src = lab.file("real.bin", 50_000);
        let (sent, path) = tokio::join!(
            a.send(&src, "agent-b", CHANNEL, |_| {}),
            completion(&mut inbox)
        );
        sent.unwrap();
        assert_eq!(std::fs::read(path).unwrap(), vec![0x5a; 50_000]);

        // Now that a transfer with agent-a's key was verified, that key is the one remembered:
        // the impostor's next offer is refused.
        let bait = fake_offer(&impostor, "agent-a", "agent-b", 10, 0xee).await;
        let bait_id = bait.payload["transfer_id"].as_str().unwrap().to_owned();
        assert_eq!(failure_code(&mut inbox, &bait_id).await, "key_changed");
        drop(inbox);
        lab.finish([a, b]).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_claimer_cannot_poison_the_senders_remembered_key() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let lab = Lab::start().await;
        let a = lab.node("agent-a").await;
        let src = lab.file("for-bob.bin", 50_000);

        // Someone on the hub claims alice's offer as agent-b, accepts with their own key, and
        // gives up without connecting.
        let impostor = lab.client("agent-b");
        let first = a.send(&src, "agent-b", CHANNEL, |_| {});
        let hijack = async {
            let task = loop {
                let list = impostor
                    .list_tasks(&ats_p2p::signal::ListQuery::default())
                    .await
                    .unwrap();
                if let Some(t) = list.tasks.into_iter().next() {
                    break t;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let offer = FileOffer::from_task(&task).unwrap();
            impostor.claim(task.id, None).await.unwrap();
            let accept = AcceptMessage {
                directories: false,
                transfer_id: offer.transfer_id,
                receiver_key: [0xee; 32],
                resume: false,
            };
            impostor
                .post_message(task.id, vec![Part::text(accept.to_content())])
                .await
                .unwrap();
            // Alice reads the task's events in order, each with the task as it was then: she
            // approves this accept before she sees the task fail.
            impostor.fail(task.id, Some("gone")).await.unwrap();
        };
        let (sent, ()) = tokio::join!(first, hijack);
        assert!(sent.is_err(), "{sent:?}");

        // The real agent-b is not refused as a "changed key".
        let b = lab.node("agent-b").await;
        let save = lab.save_dir("incoming");
        let mut inbox = b.watch(CHANNEL, Some(save.clone()));
        let (sent, path) = tokio::join!(
            a.send(&src, "agent-b", CHANNEL, |_| {}),
            completion(&mut inbox)
        );
        sent.unwrap();
        assert_eq!(std::fs::read(path).unwrap(), vec![0x5a; 50_000]);
        drop(inbox);
        lab.finish([a, b]).await;
    })
    .await
    .unwrap();
}

/// The next offer in `inbox` (a watch without a save directory); events before it are skipped.
async fn next_offer(inbox: &mut Inbox) -> Box<PendingOffer> {
    loop {
        if let Incoming::Offer(o) = inbox.next().await.unwrap() {
            return o;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_actor_id_claiming_twice_gets_one_transfer() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let lab = Lab::start().await;
        let a = lab.node("agent-a").await;
        // Two `listen`s with the same actor id (two processes, two keys). Each holds the offer
        // before either claims it (a watch that starts after the other claimed never sees a
        // pending offer, which is right but not what this test is about).
        let b1 = lab.node("agent-b").await;
        let b2 = lab.node("agent-b").await;
        let (save1, save2) = (lab.save_dir("one"), lab.save_dir("two"));
        let mut inbox1 = b1.watch(CHANNEL, None);
        let mut inbox2 = b2.watch(CHANNEL, None);
        let src = lab.file("once.bin", 200_000);

        let receive = async {
            let (offer1, offer2) = tokio::join!(next_offer(&mut inbox1), next_offer(&mut inbox2));
            assert_eq!(offer1.transfer_id(), offer2.transfer_id());
            tokio::join!(offer1.accept(&save1), offer2.accept(&save2))
        };
        let (sent, (received1, received2)) =
            tokio::join!(a.send(&src, "agent-b", CHANNEL, |_| {}), receive);
        let report = sent.unwrap();
        // One receiver has the file, the other steps aside.
        let outcome = |r: &Result<ats_p2p::ReceiveReport, ats_p2p::error::ReceiveError>| match r {
            Ok(_) => None,
            Err(e) => Some(e.code()),
        };
        let mut ends = [outcome(&received1), outcome(&received2)];
        ends.sort();
        assert_eq!(
            ends,
            [None, Some("accepted_elsewhere")],
            "{received1:?} {received2:?}"
        );
        let task = a.client().get_task(report.task_id).await.unwrap();
        assert_eq!(task.status, TaskStatus::Completed, "{task:?}");
        // One file, in one of the two directories; no temporary file anywhere.
        let mut files = listing(&save1);
        files.extend(listing(&save2));
        assert_eq!(files, ["once.bin"]);
        drop((inbox1, inbox2));
        lab.finish([a, b1, b2]).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_beyond_the_receive_cap_wait_unclaimed_for_a_slot() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let lab = Lab::start().await;
        let mut cfg = lab.config("agent-b");
        cfg.max_concurrent_receives = 1;
        let b = Node::start(cfg).await.unwrap();
        let mut inbox = b.watch(CHANNEL, Some(lab.save_dir("incoming")));
        let sender = lab.client("agent-a");

        // Two offers that hold a receive until their tasks end (nobody ever connects).
        let first = fake_offer(&sender, "agent-a", "agent-b", 10, 0xaa).await;
        until_status(&sender, first.id, TaskStatus::InProgress).await;
        let second = fake_offer(&sender, "agent-a", "agent-b", 10, 0xaa).await;
        let second_id = second.payload["transfer_id"].as_str().unwrap().to_owned();
        let limit = next_event(&mut inbox, |e| match e {
            Event::Queued { transfer_id, limit } if *transfer_id == second_id => Some(*limit),
            _ => None,
        })
        .await;
        assert_eq!(limit, 1);
        // Queued means unclaimed: the sender can still take it back.
        assert_eq!(
            sender.get_task(second.id).await.unwrap().status,
            TaskStatus::Pending
        );
        // The first ends; the second gets the slot.
        sender.cancel(first.id).await.unwrap();
        until_status(&sender, second.id, TaskStatus::InProgress).await;
        sender.cancel(second.id).await.unwrap();
        assert_eq!(failure_code(&mut inbox, &second_id).await, "sender_gave_up");
        drop(inbox);
        lab.finish([b]).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_space_counts_the_receives_already_running() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let lab = Lab::start().await;
        let b = lab.node("agent-b").await;
        let save = lab.save_dir("incoming");
        std::fs::create_dir_all(&save).unwrap();
        let free = ats_p2p::save::available_space(&save).unwrap();
        let margin = ats_p2p::policy::DEFAULT_FREE_SPACE_MARGIN;
        assert!(
            free > 4 * margin,
            "too little free space for this test: {free}"
        );
        // Each offer fits alone; two do not.
        let size = (free - margin) / 3 * 2;
        let mut inbox = b.watch(CHANNEL, Some(save.clone()));
        let sender = lab.client("agent-a");

        let first = fake_offer(&sender, "agent-a", "agent-b", size, 0xaa).await;
        until_status(&sender, first.id, TaskStatus::InProgress).await;
        let second = fake_offer(&sender, "agent-a", "agent-b", size, 0xaa).await;
        let second_id = second.payload["transfer_id"].as_str().unwrap().to_owned();
        assert_eq!(
            failure_code(&mut inbox, &second_id).await,
            "insufficient_space"
        );
        let refused = sender.get_task(second.id).await.unwrap();
        assert_eq!(refused.status, TaskStatus::Rejected);
        assert!(
            refused
                .reason
                .as_deref()
                .unwrap_or("")
                .contains("disk space"),
            "{refused:?}"
        );
        // The reservation ends with the first receive: the same offer fits again.
        sender.cancel(first.id).await.unwrap();
        let first_id = first.payload["transfer_id"].as_str().unwrap().to_owned();
        assert_eq!(failure_code(&mut inbox, &first_id).await, "sender_gave_up");
        let third = fake_offer(&sender, "agent-a", "agent-b", size, 0xaa).await;
        until_status(&sender, third.id, TaskStatus::InProgress).await;
        sender.cancel(third.id).await.unwrap();
        drop(inbox);
        lab.finish([b]).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_reads_cannot_hold_a_send() {
    use ats_p2p::swarm::swarm::{Swarm, SwarmConfig};
    tokio::time::timeout(TEST_TIMEOUT, async {
        let lab = Lab::start().await;
        let mut cfg = lab.config("agent-a");
        cfg.progress = ats_p2p::transfer::ProgressRule {
            window: Duration::from_secs(2),
            min_bytes: 64 * 1024,
        };
        // The stall ends the send (offering a stalled transfer again is the lifecycle's test).
        cfg.send_retries = 0;
        let a = Node::start(cfg).await.unwrap();
        // Far more than the transport buffers: the send can only finish if the peer reads.
        let src = lab.file("flood.bin", 64 * 1024 * 1024);

        // A receiver that claims, accepts with a real swarm key, connects, and never reads.
        let claimer = lab.client("agent-b");
        let swarm = Swarm::new(SwarmConfig::new(Ipv4Addr::LOCALHOST, vec![lab.boot.addr()]))
            .await
            .unwrap();
        let receiver_key = *swarm.public_key().as_bytes();
        let sender_key = a.public_key();
        let mut failed = None;
        let send = a.send(&src, "agent-b", CHANNEL, |e| {
            if let Event::TransferFailed { kind, code, .. } = e {
                failed = Some((*kind, code.clone()));
            }
        });
        let deaf = async {
            let task = loop {
                let list = claimer
                    .list_tasks(&ats_p2p::signal::ListQuery::default())
                    .await
                    .unwrap();
                if let Some(t) = list.tasks.into_iter().next() {
                    break t;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let offer = FileOffer::from_task(&task).unwrap();
            claimer.claim(task.id, None).await.unwrap();
            let accept = AcceptMessage {
                directories: false,
                transfer_id: offer.transfer_id,
                receiver_key,
                resume: false,
            };
            claimer
                .post_message(task.id, vec![Part::text(accept.to_content())])
                .await
                .unwrap();
            // Alice announces once she approved the accept; retry until she listens.
            loop {
                if let Ok(conn) = swarm.connect(sender_key).await {
                    return conn;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let err = {
            tokio::pin!(send);
            let conn = tokio::select! {
                c = deaf => c,
                r = &mut send => panic!("send ended before the connection: {r:?}"),
            };
            let err = send.await.unwrap_err();
            drop(conn);
            err
        };
        assert_eq!(
            (err.kind(), err.code()),
            (ats_p2p::events::FailureKind::TimedOut, "stalled"),
            "{err:?}"
        );
        assert_eq!(
            failed,
            Some((ats_p2p::events::FailureKind::TimedOut, "stalled".to_owned()))
        );
        swarm.destroy().await;
        lab.finish([a]).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_sender_cannot_hold_a_receive_and_its_lease() {
    use ats_p2p::swarm::swarm::{JoinMode, Swarm, SwarmConfig};
    use ats_p2p::topic::transfer_topic;
    use ats_p2p::wire::{FileHash, Frame, Meta, encode_parts};
    use tokio::io::AsyncWriteExt;
    tokio::time::timeout(TEST_TIMEOUT, async {
        let lab = Lab::start().await;
        let mut cfg = lab.config("agent-b");
        cfg.progress = ats_p2p::transfer::ProgressRule {
            window: Duration::from_secs(2),
            min_bytes: 64 * 1024,
        };
        let b = Node::start(cfg).await.unwrap();
        let save = lab.save_dir("incoming");
        let mut inbox = b.watch(CHANNEL, Some(save.clone()));

        // A sender with a real swarm key that offers a megabyte and sends a byte at a time:
        // every frame resets an idle timer, so only the progress rule can end this.
        let mut swarm = Swarm::new(SwarmConfig::new(Ipv4Addr::LOCALHOST, vec![lab.boot.addr()]))
            .await
            .unwrap();
        let offer = FileOffer {
            manifest: None,
            transfer_id: TransferId::random(),
            filename: "slow.bin".into(),
            size: 1_000_000,
            sha256: [7; 32],
            sender_id: "agent-a".into(),
            recipient_id: "agent-b".into(),
            sender_key: *swarm.public_key().as_bytes(),
        };
        swarm
            .join(
                transfer_topic(offer.transfer_id.as_bytes()),
                JoinMode::SERVER,
            )
            .await
            .unwrap();
        let sender = lab.client("agent-a");
        let task = sender
            .create_task(&offer.to_new_task(Some(CHANNEL)))
            .await
            .unwrap();
        let transfer_id = offer.transfer_id.to_string();
        let trickle = async {
            let mut conn = swarm.next_connection().await.unwrap();
            let meta = Meta {
                name: offer.filename.clone(),
                size: offer.size,
                hash: FileHash(offer.sha256),
                resume: false,
            };
            let mut m = encode_parts(&Frame::Meta(meta)).unwrap();
            conn.write_all_buf(&mut m).await.unwrap();
            loop {
                let mut d = encode_parts(&Frame::Data(vec![1u8; 1].into())).unwrap();
                if conn.write_all_buf(&mut d).await.is_err() || conn.flush().await.is_err() {
                    // Bob gave up; keep the connection until the test is done with it.
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let code = tokio::select! {
            c = failure_code(&mut inbox, &transfer_id) => c,
            () = trickle => unreachable!(),
        };
        assert_eq!(code, "stalled");
        // The task is failed with the reason; the claim is not held any longer.
        let ended = until_status(&sender, task.id, TaskStatus::Failed).await;
        assert!(
            ended
                .reason
                .as_deref()
                .unwrap_or("")
                .contains("no progress"),
            "{ended:?}"
        );
        // Nothing is exposed: the stalled receive keeps only its private partial file and its
        // record, so the same offer can resume (issue #15).
        let left = listing(&save);
        assert!(
            left.iter()
                .all(|n| n.starts_with(".ats-p2p-")
                    && (n.ends_with(".part") || n.ends_with(".resume"))),
            "{left:?}"
        );
        for name in left.iter().filter(|n| n.ends_with(".part")) {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(save.join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        drop(inbox);
        swarm.destroy().await;
        lab.finish([b]).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_offers_beyond_the_queue_is_rejected_as_busy() {
    use ats_p2p::node::MAX_QUEUED_RECEIVES;
    tokio::time::timeout(TEST_TIMEOUT, async {
        let lab = Lab::start().await;
        let mut cfg = lab.config("agent-b");
        cfg.max_concurrent_receives = 1;
        let b = Node::start(cfg).await.unwrap();
        let mut inbox = b.watch(CHANNEL, Some(lab.save_dir("incoming")));
        let sender = lab.client("agent-a");

        // One offer runs, MAX_QUEUED_RECEIVES wait, the next one is refused.
        let running = fake_offer(&sender, "agent-a", "agent-b", 10, 0xaa).await;
        until_status(&sender, running.id, TaskStatus::InProgress).await;
        let mut queued = 0;
        for _ in 0..MAX_QUEUED_RECEIVES {
            fake_offer(&sender, "agent-a", "agent-b", 10, 0xaa).await;
            next_event(&mut inbox, |e| {
                matches!(e, Event::Queued { .. }).then_some(())
            })
            .await;
            queued += 1;
        }
        let extra = fake_offer(&sender, "agent-a", "agent-b", 10, 0xaa).await;
        let extra_id = extra.payload["transfer_id"].as_str().unwrap().to_owned();
        assert_eq!(failure_code(&mut inbox, &extra_id).await, "busy");
        let refused = sender.get_task(extra.id).await.unwrap();
        assert_eq!(refused.status, TaskStatus::Rejected);
        assert!(
            refused.reason.as_deref().unwrap_or("").contains("busy"),
            "{refused:?}"
        );
        assert_eq!(queued, MAX_QUEUED_RECEIVES);
        drop(inbox);
        lab.finish([b]).await;
    })
    .await
    .unwrap();
}
