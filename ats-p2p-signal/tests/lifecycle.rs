//! The offer lifecycle between two actors through the hub, over real HTTP and WebSocket.
// Test helpers may unwrap: a panic here is a failed test (clippy.toml allows it in #[test]s).
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use ats_p2p_signal::offer::{AcceptMessage, FileOffer, TransferId};
use ats_p2p_signal::{EventKind, SignalError, TaskStatus, WatchConfig};
use common::*;
use serde_json::json;

fn offer(sender: &str, recipient: &str) -> FileOffer {
    FileOffer {
        manifest: None,
        transfer_id: TransferId::random(),
        filename: "data.csv".into(),
        size: 4096,
        sha256: [7; 32],
        sender_id: sender.into(),
        recipient_id: recipient.into(),
        sender_key: [1; 32],
    }
}

fn offers_only() -> WatchConfig {
    WatchConfig {
        channels: vec!["p2p-transfer".into()],
        task_types: vec!["file_offer".into()],
        ..WatchConfig::default()
    }
}

both_backends! {
async fn offer_accepted_and_completed() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path()).await;
        let a = client(&hub.url(), "agent-a");
        let b = client(&hub.url(), "agent-b");
        let mut a_watch = a.watch(offers_only());
        let mut b_watch = b.watch(offers_only());

        let o = offer("agent-a", "agent-b");
        let task = a.create_task(&o.to_new_task(None)).await.unwrap();
        assert_eq!(task.status, TaskStatus::Pending);
        assert_eq!(task.source_id.as_deref(), Some("agent-a"));

        let ev = next_matching(&mut b_watch, |e| e.task.id == task.id).await;
        assert_eq!(ev.kind, EventKind::Created);
        assert_eq!(FileOffer::from_task(&ev.task).unwrap(), o);

        // search by transfer id finds it
        let found = b
            .list_tasks(&ats_p2p_signal::ListQuery {
                search: Some(o.transfer_id.to_string()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(found.count, 1);

        let claimed = b
            .claim(task.id, Some(Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(claimed.status, TaskStatus::InProgress);
        assert_eq!(claimed.assignee_id.as_deref(), Some("agent-b"));
        assert!(claimed.lease_expires.is_some());
        let ev = next_matching(&mut a_watch, |e| {
            e.task.id == task.id && e.kind == EventKind::Claimed
        })
        .await;
        assert_eq!(ev.actor.unwrap().id, "agent-b");

        let accept = AcceptMessage {
            directories: false,
            transfer_id: o.transfer_id,
            receiver_key: [2; 32],
            resume: false,
        };
        b.post_text(task.id, &accept.to_content()).await.unwrap();
        let ev = next_matching(&mut a_watch, |e| e.kind == EventKind::Message).await;
        assert_eq!(
            AcceptMessage::from_message(&ev.message.unwrap()).unwrap(),
            accept
        );

        let outputs = vec![json!({"sha256": hex::encode([7u8; 32]), "bytes": 4096, "ms": 12})];
        let done = b.complete(task.id, outputs.clone()).await.unwrap();
        assert_eq!(done.status, TaskStatus::Completed);
        let ev = next_matching(&mut a_watch, |e| e.kind == EventKind::Completed).await;
        assert_eq!(ev.task.outputs, outputs);

        let msgs = a.list_messages(task.id).await.unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].actor_id.as_deref(), Some("agent-b"));
        let full = a.get_task(task.id).await.unwrap();
        assert_eq!(full.messages.map(|m| m.len()), Some(1));

        let stats = a.stats().await.unwrap();
        assert_eq!(stats.by_status.get("completed"), Some(&1));
        assert_eq!(stats.by_status.len(), 6);
        drop(a_watch);
        drop(b_watch);
        hub.shutdown().await;
    })
    .await;
}
}

both_backends! {
async fn offer_rejected_cancelled_failed() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path()).await;
        let a = client(&hub.url(), "agent-a");
        let b = client(&hub.url(), "agent-b");
        let mut a_watch = a.watch(offers_only());

        // reject
        let t1 = a
            .create_task(&offer("agent-a", "agent-b").to_new_task(None))
            .await
            .unwrap();
        let r = b.reject(t1.id, Some("not on my allowlist")).await.unwrap();
        assert_eq!(r.status, TaskStatus::Rejected);
        let ev = next_matching(&mut a_watch, |e| {
            e.task.id == t1.id && e.kind == EventKind::Rejected
        })
        .await;
        assert_eq!(ev.task.reason.as_deref(), Some("not on my allowlist"));

        // cancel while pending; a later claim is refused
        let t2 = a
            .create_task(&offer("agent-a", "agent-b").to_new_task(None))
            .await
            .unwrap();
        assert_eq!(a.cancel(t2.id).await.unwrap().status, TaskStatus::Cancelled);
        next_matching(&mut a_watch, |e| {
            e.task.id == t2.id && e.kind == EventKind::Cancelled
        })
        .await;
        match b.claim(t2.id, None).await {
            Err(SignalError::ClaimConflict { task_id, message }) => {
                assert_eq!(task_id, t2.id);
                assert!(message.contains("cancelled"), "{message}");
            }
            other => panic!("expected a claim conflict, got {other:?}"),
        }

        // fail after a claim
        let t3 = a
            .create_task(&offer("agent-a", "agent-b").to_new_task(None))
            .await
            .unwrap();
        b.claim(t3.id, None).await.unwrap();
        let f = b.fail(t3.id, Some("hash mismatch")).await.unwrap();
        assert_eq!(f.status, TaskStatus::Failed);
        let ev = next_matching(&mut a_watch, |e| {
            e.task.id == t3.id && e.kind == EventKind::Failed
        })
        .await;
        assert_eq!(ev.task.reason.as_deref(), Some("hash mismatch"));

        // reopen a terminal task, then cancel it while in progress
        assert_eq!(
            a.reopen(t3.id, Some("retry")).await.unwrap().status,
            TaskStatus::Pending
        );
        b.claim(t3.id, None).await.unwrap();
        assert_eq!(a.cancel(t3.id).await.unwrap().status, TaskStatus::Cancelled);
        drop(a_watch);
        hub.shutdown().await;
    })
    .await;
}
}

both_backends! {
async fn sixteen_concurrent_claims_one_winner() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path()).await;
        let a = client(&hub.url(), "agent-a");
        for round in 0..5 {
            let task = a
                .create_task(&ats_p2p_signal::NewTask::new(format!("race {round}")))
                .await
                .unwrap();
            let mut set = tokio::task::JoinSet::new();
            for i in 0..16 {
                let c = client(&hub.url(), &format!("claimer-{i}"));
                set.spawn(async move { (i, c.claim(task.id, None).await) });
            }
            let mut winners = Vec::new();
            let mut conflicts = 0;
            while let Some(r) = set.join_next().await {
                match r.unwrap() {
                    (i, Ok(t)) => winners.push((i, t)),
                    (_, Err(SignalError::ClaimConflict { .. })) => conflicts += 1,
                    (_, Err(e)) => panic!("unexpected error {e}"),
                }
            }
            assert_eq!(winners.len(), 1, "exactly one claim wins");
            assert_eq!(conflicts, 15);
            let (i, t) = &winners[0];
            let now = a.get_task(task.id).await.unwrap();
            assert_eq!(
                now.assignee_id.as_deref(),
                Some(format!("claimer-{i}").as_str())
            );
            assert_eq!(t.assignee_id, now.assignee_id);
        }
        hub.shutdown().await;
    })
    .await;
}
}

both_backends! {
async fn lease_expires_back_to_pending_with_event() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path()).await;
        let a = client(&hub.url(), "agent-a");
        let b = client(&hub.url(), "agent-b");
        let c = client(&hub.url(), "agent-c");
        let mut watch = a.watch(WatchConfig::default());
        let task = a
            .create_task(&ats_p2p_signal::NewTask::new("lease"))
            .await
            .unwrap();
        let held = b
            .claim(task.id, Some(Duration::from_millis(1500)))
            .await
            .unwrap();
        // the holder renews; someone else is refused while the lease runs
        tokio::time::sleep(Duration::from_millis(300)).await;
        let renewed = b
            .renew_claim(task.id, Duration::from_millis(1500))
            .await
            .unwrap();
        assert!(renewed.lease_expires > held.lease_expires);
        assert!(matches!(
            c.claim(task.id, None).await,
            Err(SignalError::ClaimConflict { .. })
        ));

        let ev = next_matching(&mut watch, |e| e.kind == EventKind::LeaseExpired).await;
        assert_eq!(ev.task.id, task.id);
        assert_eq!(ev.task.status, TaskStatus::Pending);
        assert!(ev.task.assignee_id.is_none() && ev.task.lease_expires.is_none());
        let now = a.get_task(task.id).await.unwrap();
        assert_eq!(now.status, TaskStatus::Pending);
        // the old holder lost it; a renewal is now a fresh claim only if still pending
        c.claim(task.id, None).await.unwrap();
        assert!(matches!(
            b.renew_claim(task.id, Duration::from_secs(1)).await,
            Err(SignalError::ClaimLost { .. })
        ));
        drop(watch);
        hub.shutdown().await;
    })
    .await;
}
}
