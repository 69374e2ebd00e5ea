//! Two hub instances on one PostgreSQL database: claims, events and catch-up across them.
// Test helpers may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ats_p2p_signal::hub::Hub;
use ats_p2p_signal::{NewTask, SignalError, TaskStatus, WatchConfig};
use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Two hubs on one database (the test's directory names it).
async fn two_hubs(dir: &std::path::Path) -> (Hub, Hub) {
    (hub(dir).await, hub(dir).await)
}

fn task_on(channel: &str, title: String) -> NewTask {
    let mut t = NewTask::new(title);
    t.channel = Some(channel.to_owned());
    t
}

/// A raw WebSocket on `hub`, subscribed to `channel`.
async fn subscribed(hub: &Hub, channel: &str) -> Socket {
    let url = format!("ws://{}/ws?actor_id=watcher", hub.local_addr());
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(frame(&mut ws).await["type"], "connected");
    let sub = json!({"type": "subscribe", "id": "s", "channels": [channel]});
    ws.send(Message::Text(sub.to_string().into()))
        .await
        .unwrap();
    assert_eq!(frame(&mut ws).await["type"], "subscribed");
    ws
}

async fn frame(ws: &mut Socket) -> Value {
    loop {
        let msg = tokio::time::timeout(EVENT_TIMEOUT, ws.next())
            .await
            .expect("no frame in time")
            .expect("socket ended")
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// `n` event frames: (event id, type, task id).
async fn events(ws: &mut Socket, n: usize) -> Vec<(i64, String, i64)> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let v = frame(ws).await;
        out.push((
            v["id"].as_i64().unwrap(),
            v["type"].as_str().unwrap().to_owned(),
            v["task_id"].as_i64().unwrap(),
        ));
    }
    out
}

/// Nothing more arrives on `ws` (a ping's pong comes next).
async fn nothing_more(ws: &mut Socket) {
    ws.send(Message::Text(json!({"type": "ping"}).to_string().into()))
        .await
        .unwrap();
    // Let the tailers run at least one more poll first.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let v = frame(ws).await;
    assert_eq!(v["type"], "pong", "an extra frame arrived: {v}");
}

async fn postgres_only(test: &str, body: impl Future<Output = ()>) {
    on_backend(Backend::Postgres, test, bounded(body)).await;
}

#[tokio::test]
async fn tasks_created_on_one_instance_are_claimed_on_the_other_one_winner_each() {
    postgres_only(module_path!(), async {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = two_hubs(dir.path()).await;
        let creator = client(&a.url(), "creator");
        for round in 0..4 {
            let task = creator
                .create_task(&NewTask::new(format!("race {round}")))
                .await
                .unwrap();
            let mut set = tokio::task::JoinSet::new();
            for i in 0..16 {
                let url = if i % 2 == 0 { a.url() } else { b.url() };
                let c = client(&url, &format!("claimer-{i}"));
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
            assert_eq!(
                winners.len(),
                1,
                "exactly one of 16 claims on two hubs wins"
            );
            assert_eq!(conflicts, 15);
            let (i, _) = &winners[0];
            for url in [a.url(), b.url()] {
                let now = client(&url, "reader").get_task(task.id).await.unwrap();
                assert_eq!(now.status, TaskStatus::InProgress);
                assert_eq!(now.assignee_id, Some(format!("claimer-{i}")));
            }
        }
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_watcher_on_one_instance_sees_the_others_changes_in_order_once() {
    postgres_only(module_path!(), async {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = two_hubs(dir.path()).await;
        let mut on_a = subscribed(&a, "seq").await;
        let writer = client(&b.url(), "writer");
        let mut expected = Vec::new();
        for i in 0..5 {
            let t = writer
                .create_task(&task_on("seq", format!("t{i}")))
                .await
                .unwrap();
            writer.claim(t.id, None).await.unwrap();
            writer.complete(t.id, vec![]).await.unwrap();
            for kind in ["task.created", "task.claimed", "task.completed"] {
                expected.push((kind.to_owned(), t.id));
            }
        }
        let seen = events(&mut on_a, expected.len()).await;
        let kinds: Vec<(String, i64)> = seen.iter().map(|(_, k, t)| (k.clone(), *t)).collect();
        assert_eq!(kinds, expected, "B's changes, in order");
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "ids increase");
        nothing_more(&mut on_a).await;
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

/// Writers race on both instances; a watcher on each sees every event exactly once, in the
/// order of the event ids (a tailer that skipped an id committed late would miss one).
#[tokio::test]
async fn racing_writers_on_both_instances_every_event_reaches_every_watcher_once() {
    const TASKS: usize = 24;
    postgres_only(module_path!(), async {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = two_hubs(dir.path()).await;
        let mut on_a = subscribed(&a, "race").await;
        let mut on_b = subscribed(&b, "race").await;
        let mut set = tokio::task::JoinSet::new();
        for i in 0..TASKS {
            let (first, second) = if i % 2 == 0 {
                (a.url(), b.url())
            } else {
                (b.url(), a.url())
            };
            set.spawn(async move {
                let c1 = client(&first, &format!("w{i}"));
                let c2 = client(&second, &format!("w{i}"));
                let t = c1
                    .create_task(&task_on("race", format!("r{i}")))
                    .await
                    .unwrap();
                c2.claim(t.id, None).await.unwrap();
                c1.complete(t.id, vec![]).await.unwrap();
                t.id
            });
        }
        let mut ids = HashSet::new();
        while let Some(r) = set.join_next().await {
            ids.insert(r.unwrap());
        }
        let want = TASKS * 3;
        let seen_a = events(&mut on_a, want).await;
        let seen_b = events(&mut on_b, want).await;
        for seen in [&seen_a, &seen_b] {
            assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "ids increase");
            let mut per_task: HashMap<i64, Vec<&str>> = HashMap::new();
            for (_, kind, task) in seen.iter() {
                per_task.entry(*task).or_default().push(kind);
            }
            assert_eq!(per_task.len(), TASKS);
            for (task, kinds) in per_task {
                assert!(ids.contains(&task));
                assert_eq!(kinds, ["task.created", "task.claimed", "task.completed"]);
            }
        }
        assert_eq!(seen_a, seen_b, "both instances deliver the same stream");
        nothing_more(&mut on_a).await;
        nothing_more(&mut on_b).await;
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_watch_reconnecting_to_the_other_instance_loses_nothing() {
    postgres_only(module_path!(), async {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = two_hubs(dir.path()).await;
        let writer = client(&a.url(), "writer");
        let start = writer.health().await.unwrap().timestamp.unwrap();
        let config = || WatchConfig {
            channels: vec!["moved".into()],
            since: Some(start),
            ..WatchConfig::default()
        };
        let mut created = HashSet::new();
        let mut watch = client(&a.url(), "watcher").watch(config());
        let first = writer
            .create_task(&task_on("moved", "first".into()))
            .await
            .unwrap();
        created.insert(first.id);
        let ev = next_matching(&mut watch, |e| e.task.id == first.id).await;
        assert_eq!(ev.task.id, first.id);
        drop(watch);
        // While no one watches, changes land on both instances.
        for i in 0..6 {
            let url = if i % 2 == 0 { a.url() } else { b.url() };
            let t = client(&url, "writer")
                .create_task(&task_on("moved", format!("offline {i}")))
                .await
                .unwrap();
            created.insert(t.id);
        }
        let mut watch = client(&b.url(), "watcher").watch(config());
        let mut seen = HashSet::new();
        while seen.len() < created.len() {
            let ev = next_matching(&mut watch, |_| true).await;
            assert!(created.contains(&ev.task.id), "unknown task {}", ev.task.id);
            seen.insert(ev.task.id);
        }
        // And live changes made on A reach the watch now on B.
        let live = writer
            .create_task(&task_on("moved", "live".into()))
            .await
            .unwrap();
        next_matching(&mut watch, |e| e.task.id == live.id).await;
        drop(watch);
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn stopping_one_instance_mid_load_loses_no_acknowledged_change() {
    const WRITES: usize = 60;
    postgres_only(module_path!(), async {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = two_hubs(dir.path()).await;
        let url = a.url();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..WRITES {
            let c = client(&url, &format!("w{i}"));
            set.spawn(async move {
                c.create_task(&task_on("kill", format!("k{i}")))
                    .await
                    .ok()
                    .map(|t| (t.id, t.title))
            });
        }
        // Stop A without a graceful shutdown while the writes are in flight.
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a);
        let mut acknowledged = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Some(ok) = r.unwrap() {
                acknowledged.push(ok);
            }
        }
        let reader = client(&b.url(), "reader");
        for (id, title) in &acknowledged {
            let t = reader.get_task(*id).await.unwrap();
            assert_eq!(
                &t.title, title,
                "an acknowledged task is on the other instance"
            );
        }
        println!(
            "{} of {WRITES} writes acknowledged before the instance stopped; all on the other",
            acknowledged.len()
        );
        b.shutdown().await;
    })
    .await;
}
