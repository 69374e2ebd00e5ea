//! Watch reconnection with catch-up, and persistence across hub restarts.
// Test helpers may unwrap: a panic here is a failed test (clippy.toml allows it in #[test]s).
#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use ats_p2p_signal::hub::store::{self, HubActor, Scope};
use ats_p2p_signal::{EventOrigin, ListQuery, NewTask, TaskStatus, WatchConfig};
use common::*;
use futures::StreamExt;
use serde_json::json;

#[tokio::test]
async fn watch_survives_hub_restart_and_delivers_once() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let hub1 = hub(dir.path()).await;
        let addr = hub1.local_addr();
        let url = hub1.url();
        let a = client(&url, "agent-a");
        let b = client(&url, "agent-b");
        let mut watch = b.watch(WatchConfig {
            channels: vec!["p2p-transfer".into()],
            ..WatchConfig::default()
        });

        let mut first = NewTask::new("before the drop");
        first.channel = Some("p2p-transfer".into());
        let t1 = a.create_task(&first).await.unwrap();
        // Live, or found by the first catch-up if the socket was not subscribed yet.
        next_matching(&mut watch, |e| e.task.id == t1.id).await;

        // Drop every connection: the hub goes away.
        hub1.shutdown().await;

        // While the watcher is disconnected, an offer appears (written straight into the
        // database: no event is ever broadcast for it, only a catch-up can find it).
        let db = dir.path().join("hub.sqlite");
        let offline_id = tokio::task::spawn_blocking(move || {
            let conn = store::open(&db).unwrap();
            let body = json!({"title": "created while disconnected", "channel": "p2p-transfer", "type": "file_offer"});
            let actor = HubActor { actor_type: Some("agent".into()), id: Some("agent-a".into()), name: None };
            store::create_task(&conn, &Scope::Default, &actor, body.as_object().unwrap(), chrono::Utc::now())
                .unwrap()
                .task
                .id
        })
        .await
        .unwrap();

        // Same port, same database.
        let hub2 = hub_at(dir.path(), addr).await;
        let ev = next_matching(&mut watch, |e| e.task.id == offline_id).await;
        assert_eq!(ev.origin, EventOrigin::CatchUp);
        assert_eq!(ev.task.status, TaskStatus::Pending);

        // Live again: a new offer arrives, and a change to it too.
        let mut third = NewTask::new("after the restart");
        third.channel = Some("p2p-transfer".into());
        let t3 = a.create_task(&third).await.unwrap();
        next_matching(&mut watch, |e| e.task.id == t3.id).await;
        b.claim(t3.id, None).await.unwrap();
        next_matching(&mut watch, |e| e.task.id == t3.id && e.task.status == TaskStatus::InProgress).await;

        // Nothing is delivered twice (the catch-up overlaps what was already seen).
        let rest = drain(&mut watch, Duration::from_millis(800)).await;
        for e in &rest {
            assert!(![t1.id, offline_id, t3.id].contains(&e.task.id), "duplicate event {e:?}");
        }
        // An unrelated channel stays filtered out.
        a.create_task(&NewTask::new("other channel")).await.unwrap();
        assert!(drain(&mut watch, Duration::from_millis(500)).await.is_empty());
        drop(watch);
        hub2.shutdown().await;
    })
    .await;
}

both_backends! {
async fn watch_polls_when_websocket_is_unavailable() {
    bounded(async {
        // A port with nothing listening: the socket cannot open; polling keeps failing quietly
        // until the hub appears there, then the watch catches up.
        let dir = tempfile::tempdir().unwrap();
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let url = format!("http://{addr}");
        let b = client(&url, "agent-b");
        let mut watch = b.watch(WatchConfig {
            since: Some(chrono::Utc::now() - chrono::Duration::seconds(5)),
            poll_interval: Duration::from_millis(200),
            ..WatchConfig::default()
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let hub = hub_at(dir.path(), addr).await;
        let a = client(&url, "agent-a");
        let t = a
            .create_task(&NewTask::new("seen after the hub came up"))
            .await
            .unwrap();
        let ev = next_matching(&mut watch, |e| e.task.id == t.id).await;
        assert_eq!(ev.task.title, "seen after the hub came up");
        drop(watch);
        hub.shutdown().await;
    })
    .await;
}
}

both_backends! {
async fn hub_restart_keeps_tasks_and_messages() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let hub1 = hub(dir.path()).await;
        let a = client(&hub1.url(), "agent-a");
        let b = client(&hub1.url(), "agent-b");
        let mut ids = Vec::new();
        for i in 0..6 {
            let mut t = NewTask::new(format!("task {i}"));
            t.payload = Some(json!({"i": i, "nested": {"k": [1, 2]}}));
            t.priority = Some(i + 1);
            ids.push(a.create_task(&t).await.unwrap().id);
        }
        b.claim(ids[1], None).await.unwrap();
        b.claim(ids[2], None).await.unwrap();
        b.complete(ids[2], vec![json!({"bytes": 1})]).await.unwrap();
        b.reject(ids[3], Some("no")).await.unwrap();
        a.cancel(ids[4]).await.unwrap();
        for i in 0..3 {
            b.post_text(ids[1], &format!("message {i}")).await.unwrap();
        }
        let all = ListQuery {
            sort_by: Some(ats_p2p_signal::types::SortBy::CreatedAt),
            ..Default::default()
        };
        let before = a.list_tasks(&all).await.unwrap();
        let msgs_before = a.list_messages(ids[1]).await.unwrap();
        hub1.shutdown().await;

        let hub2 = hub(dir.path()).await;
        let a = client(&hub2.url(), "agent-a");
        let after = a.list_tasks(&all).await.unwrap();
        assert_eq!(before, after);
        assert_eq!(after.count, 6);
        assert_eq!(a.list_messages(ids[1]).await.unwrap(), msgs_before);
        let statuses: HashMap<i64, TaskStatus> =
            after.tasks.iter().map(|t| (t.id, t.status)).collect();
        assert_eq!(statuses[&ids[1]], TaskStatus::InProgress);
        assert_eq!(statuses[&ids[2]], TaskStatus::Completed);
        assert_eq!(statuses[&ids[3]], TaskStatus::Rejected);
        // ids keep increasing after a restart
        let next = a.create_task(&NewTask::new("after")).await.unwrap();
        assert!(next.id > *ids.iter().max().unwrap());
        hub2.shutdown().await;
    })
    .await;
}
}

both_backends! {
async fn a_watch_that_stops_reading_is_dropped_then_catches_up_exactly_once() {
    // Tasks created while the watch's consumer does not read, with payloads large enough that
    // the watch's own queue, the socket buffers and the hub's per-subscriber budget fill well
    // before the last one (and small enough that a catch-up page of 200 tasks stays within the
    // client's 16 MiB answer limit).
    const TASKS: usize = 900;
    const PAYLOAD_BYTES: usize = 64 * 1024;
    tokio::time::timeout(Duration::from_secs(300), async {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path()).await;
        let a = client(&hub.url(), "agent-a");
        let mut watch = client(&hub.url(), "agent-b").watch(WatchConfig {
            channels: vec!["paused".into()],
            ..WatchConfig::default()
        });
        let mut sentinel = NewTask::new("sentinel");
        sentinel.channel = Some("paused".into());
        let sentinel = a.create_task(&sentinel).await.unwrap();
        next_matching(&mut watch, |e| e.task.id == sentinel.id).await;

        let blob = "x".repeat(PAYLOAD_BYTES);
        let mut ids = Vec::with_capacity(TASKS);
        for i in 0..TASKS {
            let mut t = NewTask::new(format!("paused {i}"));
            t.channel = Some("paused".into());
            t.payload = Some(json!({ "blob": blob }));
            ids.push(a.create_task(&t).await.unwrap().id);
        }

        // Now read: every task arrives once, some of them through the catch-up after the hub
        // dropped the socket.
        let mut seen: HashMap<i64, usize> = HashMap::new();
        let mut caught_up = 0usize;
        while seen.len() < TASKS {
            let ev = match tokio::time::timeout(EVENT_TIMEOUT, watch.next()).await {
                Ok(Some(ev)) => ev,
                other => panic!(
                    "after {} tasks ({caught_up} caught up): {other:?}",
                    seen.len()
                ),
            };
            if ev.origin == EventOrigin::CatchUp {
                caught_up += 1;
            }
            *seen.entry(ev.task.id).or_default() += 1;
        }
        for ev in drain(&mut watch, Duration::from_secs(1)).await {
            *seen.entry(ev.task.id).or_default() += 1;
        }
        assert!(
            ids.iter().all(|id| seen.get(id) == Some(&1)),
            "each task exactly once"
        );
        assert!(
            caught_up > 0,
            "the paused watch was never dropped and caught up"
        );
        drop(watch);
        hub.shutdown().await;
    })
    .await
    .expect("test exceeded its time bound");
}
}
