//! A watch's catch-up reads every change, however big the tasks are.
// Test helpers may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use ats_p2p_signal::client::MAX_RESPONSE_BYTES;
use ats_p2p_signal::{EventOrigin, NewTask, WatchConfig};
use common::*;
use futures::StreamExt;
use serde_json::json;

/// Payload of each task: near the hub's body limit, so that one default page of them is far
/// larger than a client reads in one answer.
const PAYLOAD_BYTES: usize = 900 * 1024;

/// Time bound of this test: it moves some tens of MiB through SQLite and JSON.
const BIG_TEST_TIMEOUT: Duration = Duration::from_secs(120);

both_backends! {
async fn catch_up_pages_through_tasks_with_big_payloads() {
    tokio::time::timeout(BIG_TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path()).await;
        let sender = client(&hub.url(), "sender");
        let start = sender.health().await.unwrap().timestamp.unwrap();
        // Enough tasks that all of them together exceed one answer's limit.
        let count = MAX_RESPONSE_BYTES / PAYLOAD_BYTES + 4;
        let mut ids = HashSet::new();
        for i in 0..count {
            let mut t = NewTask::new(format!("big {i}"));
            t.channel = Some("big".into());
            t.payload = Some(json!({ "blob": "x".repeat(PAYLOAD_BYTES) }));
            ids.insert(sender.create_task(&t).await.unwrap().id);
        }
        // A watch that starts now must report them all from its catch-up.
        let receiver = client(&hub.url(), "receiver");
        let mut watch = receiver.watch(WatchConfig {
            channels: vec!["big".into()],
            since: Some(start),
            ..WatchConfig::default()
        });
        let mut seen = HashSet::new();
        while seen.len() < count {
            let ev = tokio::time::timeout(EVENT_TIMEOUT * 3, watch.next())
                .await
                .expect("catch-up stalled: tasks with big payloads were never reported")
                .expect("watch ended");
            assert_eq!(ev.origin, EventOrigin::CatchUp);
            assert!(ids.contains(&ev.task.id), "unknown task {}", ev.task.id);
            assert!(
                seen.insert(ev.task.id),
                "task {} reported twice",
                ev.task.id
            );
        }
        drop(watch);
        hub.shutdown().await;
    })
    .await
    .expect("test exceeded its time bound");
}
}
