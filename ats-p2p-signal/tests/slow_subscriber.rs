//! Memory under a WebSocket client that never reads: the hub drops it once its bounded queue is
//! full, stays bounded, and a normal watcher still sees every event exactly once.
//!
//! Alone in its own test binary, so the process's resident memory is the hub's and its
//! clients', not other tests'.
// Test helpers may unwrap: a panic here is a failed test (clippy.toml allows it in #[test]s).
#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ats_p2p_signal::{NewTask, WatchConfig};
use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Tasks created while the slow client does not read.
const TASKS: usize = 1200;

/// Payload of each task.
const PAYLOAD_BYTES: usize = 256 * 1024;

/// Generous bound on the growth of resident memory (without the fix: about 300 MiB more).
const RSS_GROWTH_LIMIT_KIB: u64 = 150 * 1024;

/// This process's resident set, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped_and_memory_stays_bounded() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path()).await;
        let url = hub.url();
        let creator = client(&url, "creator");
        let channel = "bulk";

        // The slow client: subscribes to everything, then never reads again.
        let ws_url = format!(
            "ws://{}/ws?actor_type=agent&actor_id=slow&actor_name=Slow",
            hub.local_addr()
        );
        let (mut slow, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
        slow.send(Message::Text(
            json!({"type": "subscribe", "id": "s"}).to_string().into(),
        ))
        .await
        .unwrap();
        loop {
            let m = slow.next().await.unwrap().unwrap();
            if m.to_text().unwrap().contains("subscribed") {
                break;
            }
        }

        // A normal watcher, live before the load starts.
        let mut watch = client(&url, "watcher").watch(WatchConfig {
            channels: vec![channel.into()],
            ..WatchConfig::default()
        });
        let mut sentinel = NewTask::new("sentinel");
        sentinel.channel = Some(channel.into());
        let sentinel = creator.create_task(&sentinel).await.unwrap();
        next_matching(&mut watch, |e| e.task.id == sentinel.id).await;

        // Count what the watcher delivers, per task, while the load runs.
        let seen: Arc<std::sync::Mutex<HashMap<i64, usize>>> = Arc::default();
        let counter = {
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Some(ev) = watch.next().await {
                    *seen.lock().unwrap().entry(ev.task.id).or_default() += 1;
                    if seen.lock().unwrap().len() >= TASKS {
                        // Keep reading briefly for duplicates, then stop.
                        let extra = drain(&mut watch, Duration::from_secs(2)).await;
                        for ev in extra {
                            *seen.lock().unwrap().entry(ev.task.id).or_default() += 1;
                        }
                        return;
                    }
                }
            })
        };

        // Sample resident memory while the load runs; keep the highest.
        let base = rss_kib();
        let peak = Arc::new(AtomicU64::new(base));
        let loading = Arc::new(AtomicBool::new(true));
        let sampler = {
            let (peak, loading) = (peak.clone(), loading.clone());
            tokio::spawn(async move {
                while loading.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };

        let blob = Arc::new("x".repeat(PAYLOAD_BYTES));
        futures::stream::iter(0..TASKS)
            .for_each_concurrent(4, |i| {
                let (creator, blob) = (creator.clone(), blob.clone());
                async move {
                    let mut t = NewTask::new(format!("bulk {i}"));
                    t.channel = Some(channel.into());
                    t.payload = Some(json!({ "blob": blob.as_str() }));
                    creator.create_task(&t).await.unwrap();
                }
            })
            .await;
        counter.await.unwrap();
        loading.store(false, Ordering::Relaxed);
        sampler.await.unwrap();
        let after = rss_kib();
        let peak = peak.load(Ordering::Relaxed).max(after);
        let growth = peak.saturating_sub(base);
        println!("RSS: base {base} KiB, peak {peak} KiB, after {after} KiB, growth {growth} KiB");

        // The watcher saw every task exactly once.
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), TASKS, "tasks delivered to the watcher");
        let dupes: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
        assert!(dupes.is_empty(), "delivered more than once: {dupes:?}");

        // The slow client was dropped: what it finds in its socket ends well before all events.
        let mut frames = 0usize;
        loop {
            match tokio::time::timeout(Duration::from_secs(30), slow.next()).await {
                Err(_) => panic!("the slow client is still connected after {frames} frames"),
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => break,
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == "task.created" {
                        frames += 1;
                    }
                }
                Ok(Some(Ok(_))) => {}
            }
        }
        println!("the slow client got {frames} of {TASKS} events before it was dropped");
        assert!(
            frames < TASKS,
            "the slow client got all {frames} events: it was never dropped"
        );

        assert!(
            growth < RSS_GROWTH_LIMIT_KIB,
            "resident memory grew by {growth} KiB"
        );
        hub.shutdown().await;
    })
    .await
    .expect("test exceeded its time bound");
}
