//! A hub that is safe to expose: web pages cannot drive it, requests are bounded in size, time
//! and number, finished tasks are pruned, and a panic on the database thread is contained.
// Test helpers may unwrap: a panic here is a failed test (clippy.toml allows it in #[test]s).
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use ats_p2p_signal::hub::DbFault;
use ats_p2p_signal::hub::store::{MAX_MESSAGE_BYTES, MAX_MESSAGES_PER_TASK, TASK_MESSAGES_SHOWN};
use ats_p2p_signal::{NewTask, TaskStatus};
use common::*;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const EVIL: &str = "http://evil.example";

/// Sends a request with exactly these headers (no defaults but reqwest's own) and returns the
/// status and the JSON body (every answer of the hub is JSON).
async fn send(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = http.request(method, url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.body(b.to_owned());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let v: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {text:?}"));
    if !status.is_success() {
        assert!(v["error"].is_string(), "{url}: {v}");
    }
    (status, v)
}

const CLI: &[(&str, &str)] = &[
    ("Content-Type", "application/json"),
    ("X-Actor-Type", "agent"),
    ("X-Actor-ID", "cli"),
    ("X-Actor-Name", "CLI"),
];

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    CLI.iter().copied().chain(extra.iter().copied()).collect()
}

async fn task_count(http: &reqwest::Client, base: &str) -> i64 {
    let (s, v) = send(
        http,
        Method::GET,
        &format!("{base}/tasks?status=pending"),
        &[],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    v["count"].as_i64().unwrap()
}

both_backends! {
async fn web_pages_cannot_drive_the_hub() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path()).await;
        let base = hub.url();
        let http = reqwest::Client::new();
        let tasks = format!("{base}/tasks");
        let body = Some(r#"{"title": "from a page"}"#);

        // What a page can send without a preflight: text/plain, a form, or no type at all.
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ] {
            let (s, v) = send(&http, Method::POST, &tasks, &[("Content-Type", ct)], body).await;
            assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}: {v}");
        }
        let (s, _) = send(&http, Method::POST, &tasks, &[], body).await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        // A JSON request from a foreign origin, changing or reading.
        let (s, v) = send(
            &http,
            Method::POST,
            &tasks,
            &with(&[("Origin", EVIL)]),
            body,
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        let (s, _) = send(&http, Method::GET, &tasks, &[("Origin", EVIL)], None).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _) = send(&http, Method::GET, &tasks, &[("Origin", "null")], None).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        assert_eq!(task_count(&http, &base).await, 0, "nothing was created");
        // A page on a DNS name rebound to the hub's address: same-origin reads carry no Origin,
        // but its own name as Host.
        let port = hub.local_addr().port();
        let rebound = format!("evil.example:{port}");
        let (s, v) = send(
            &http,
            Method::GET,
            &tasks,
            &[("Host", rebound.as_str())],
            None,
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        let local = format!("localhost:{port}");
        let (s, _) = send(
            &http,
            Method::GET,
            &tasks,
            &[("Host", local.as_str())],
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK);

        // The `ats` CLI: JSON content type on everything, no Origin.
        let (s, v) = send(&http, Method::POST, &tasks, CLI, body).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let id = v["task"]["id"].as_i64().unwrap();
        let one = format!("{tasks}/{id}");
        let (s, _) = send(
            &http,
            Method::PATCH,
            &one,
            &[("Content-Type", "text/plain")],
            Some(r#"{"priority": 9}"#),
        )
        .await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let (s, v) = send(
            &http,
            Method::PATCH,
            &one,
            &with(&[("Content-Type", "application/json; charset=utf-8")])[1..],
            Some(r#"{"priority": 9}"#),
        )
        .await;
        assert_eq!(
            (s, v["task"]["priority"].as_i64()),
            (StatusCode::OK, Some(9))
        );
        // `ats cancel`: no body at all, JSON content type.
        let (s, _) = send(
            &http,
            Method::POST,
            &format!("{one}/cancel"),
            &[("Content-Type", "text/plain")],
            None,
        )
        .await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let (s, v) = send(&http, Method::POST, &format!("{one}/cancel"), CLI, None).await;
        assert_eq!(
            (s, v["task"]["status"].as_str()),
            (StatusCode::OK, Some("cancelled"))
        );
        // Reads need neither a content type nor identity headers (a dashboard); the typed
        // client keeps working.
        let (s, _) = send(&http, Method::GET, &format!("{base}/health"), &[], None).await;
        assert_eq!(s, StatusCode::OK);
        let (s, v) = send(&http, Method::GET, &one, &[], None).await;
        assert_eq!(
            (s, v["task"]["status"].as_str()),
            (StatusCode::OK, Some("cancelled"))
        );
        let c = client(&base, "typed");
        let t = c.create_task(&NewTask::new("typed")).await.unwrap();
        c.claim(t.id, None).await.unwrap();
        c.complete(t.id, vec![]).await.unwrap();
        hub.shutdown().await;
    })
    .await;
}
}

both_backends! {
async fn configured_origins_are_served() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub_with(dir.path(), |c| {
            c.allowed_origins = vec!["https://dashboard.example".into()];
        })
        .await;
        let http = reqwest::Client::new();
        let tasks = format!("{}/tasks", hub.url());
        let body = Some(r#"{"title": "from the dashboard"}"#);
        let (s, v) = send(
            &http,
            Method::POST,
            &tasks,
            &with(&[("Origin", "https://dashboard.example")]),
            body,
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, _) = send(
            &http,
            Method::POST,
            &tasks,
            &with(&[("Origin", EVIL)]),
            body,
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        // An allowed origin still needs the JSON content type to change anything.
        let (s, _) = send(
            &http,
            Method::POST,
            &tasks,
            &[
                ("Origin", "https://dashboard.example"),
                ("Content-Type", "text/plain"),
            ],
            body,
        )
        .await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let ws = format!("ws://{}/ws", hub.local_addr());
        assert_eq!(
            ws_upgrade(&ws, Some("https://dashboard.example")).await,
            Ok(())
        );
        assert_eq!(
            ws_upgrade(&ws, Some(EVIL)).await,
            Err(StatusCode::FORBIDDEN)
        );
        hub.shutdown().await;
    })
    .await;
}
}

/// Opens a WebSocket with this `Origin` (or none) and waits for `connected`.
async fn ws_upgrade(url: &str, origin: Option<&str>) -> Result<(), StatusCode> {
    let mut req = url.into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("Origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((mut ws, _)) => {
            let first = ws.next().await.unwrap().unwrap();
            assert!(first.to_text().unwrap().contains("connected"));
            Ok(())
        }
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert!(v["error"].is_string(), "{v}");
            Err(StatusCode::from_u16(resp.status().as_u16()).unwrap())
        }
        Err(e) => panic!("unexpected WebSocket error: {e}"),
    }
}

both_backends! {
async fn websocket_upgrades_from_foreign_origins_are_refused() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path()).await;
        let ws = format!(
            "ws://{}/ws?actor_type=agent&actor_id=w&actor_name=W",
            hub.local_addr()
        );
        assert_eq!(
            ws_upgrade(&ws, Some(EVIL)).await,
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            ws_upgrade(&ws, Some(&format!("http://{}", hub.local_addr()))).await,
            Err(StatusCode::FORBIDDEN),
            "not even the hub's own address: it serves no pages"
        );
        // The `ats watch` runtime and our Watch send no Origin.
        assert_eq!(ws_upgrade(&ws, None).await, Ok(()));
        hub.shutdown().await;
    })
    .await;
}
}

/// Sends a request head over raw TCP announcing `content_length` body bytes with
/// `Expect: 100-continue`, and returns once the hub asked for the body (so the request is being
/// handled: it holds its concurrency slot). The body is never sent.
async fn stalled_request(addr: std::net::SocketAddr, content_length: usize) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /tasks HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {content_length}\r\nExpect: 100-continue\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("100 Continue") {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before 100 Continue");
        seen.extend_from_slice(&buf[..n]);
    }
    tcp
}

/// Reads the status line of the answer on a raw connection.
async fn status_of(mut tcp: TcpStream) -> u16 {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some(line) = text
            .lines()
            .find(|l| l.starts_with("HTTP/1.1 ") && !l.contains(" 100 "))
        {
            return line[9..12].parse().unwrap();
        }
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed without an answer: {text:?}");
        seen.extend_from_slice(&buf[..n]);
    }
}

both_backends! {
async fn requests_are_bounded_in_size_time_and_number() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub_with(dir.path(), |c| {
            c.request_timeout = Duration::from_secs(2);
            c.max_concurrent_requests = 1;
            c.max_body_bytes = 64 * 1024;
        })
        .await;
        let http = reqwest::Client::new();
        let tasks = format!("{}/tasks", hub.url());

        // Body size: 413, nothing stored.
        let big = json!({"title": "big", "payload": {"blob": "x".repeat(64 * 1024)}}).to_string();
        let (s, _) = send(&http, Method::POST, &tasks, CLI, Some(&big)).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);

        // Number: while a request whose body never comes holds the only slot, another one is
        // refused at once.
        let stalled = stalled_request(hub.local_addr(), 100).await;
        let (s, v) = send(
            &http,
            Method::GET,
            &format!("{}/health", hub.url()),
            &[],
            None,
        )
        .await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        // Time: the stalled request is answered 408.
        assert_eq!(status_of(stalled).await, 408);
        // With the slot free again, requests are served.
        let (s, _) = send(
            &http,
            Method::GET,
            &format!("{}/health", hub.url()),
            &[],
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(task_count(&http, &hub.url()).await, 0);
        hub.shutdown().await;
    })
    .await;
}
}

both_backends! {
async fn messages_are_bounded_per_task() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path()).await;
        let http = reqwest::Client::new();
        let c = client(&hub.url(), "a");
        let t = c.create_task(&NewTask::new("chatty")).await.unwrap();
        let url = format!("{}/tasks/{}/messages", hub.url(), t.id);
        let too_big = json!({"parts": [{"content": "x".repeat(MAX_MESSAGE_BYTES)}]}).to_string();
        let (s, v) = send(&http, Method::POST, &url, CLI, Some(&too_big)).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
        let total = usize::try_from(MAX_MESSAGES_PER_TASK).unwrap();
        futures::stream::iter(0..total)
            .for_each_concurrent(8, |i| {
                let c = c.clone();
                async move {
                    c.post_text(t.id, &format!("m{i}")).await.unwrap();
                }
            })
            .await;
        let (s, v) = send(
            &http,
            Method::POST,
            &url,
            CLI,
            Some(r#"{"parts": [{"content": "one more"}]}"#),
        )
        .await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        // The task shows the newest messages and how many there are.
        let (s, v) = send(
            &http,
            Method::GET,
            &format!("{}/tasks/{}", hub.url(), t.id),
            &[],
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            v["task"]["message_count"].as_i64(),
            Some(MAX_MESSAGES_PER_TASK)
        );
        let shown = v["task"]["messages"].as_array().unwrap();
        assert_eq!(shown.len(), usize::try_from(TASK_MESSAGES_SHOWN).unwrap());
        let ids: Vec<i64> = shown.iter().map(|m| m["id"].as_i64().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first");
        // The list has them all, and pages.
        let (_, v) = send(&http, Method::GET, &url, &[], None).await;
        assert_eq!(v["messages"].as_array().unwrap().len(), total);
        assert_eq!(
            *v["messages"].as_array().unwrap().last().unwrap()["id"]
                .as_i64()
                .as_ref()
                .unwrap(),
            *ids.last().unwrap()
        );
        let (_, v) = send(
            &http,
            Method::GET,
            &format!("{url}?limit=10&offset=995"),
            &[],
            None,
        )
        .await;
        assert_eq!(
            (v["messages"].as_array().unwrap().len(), v["count"].as_i64()),
            (5, Some(MAX_MESSAGES_PER_TASK))
        );
        hub.shutdown().await;
    })
    .await
    .expect("test exceeded its time bound");
}
}

both_backends! {
async fn websocket_sessions_are_limited() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub_with(dir.path(), |c| c.max_websockets = 2).await;
        let url = format!("ws://{}/ws", hub.local_addr());
        let (mut a, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let (_b, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        assert_eq!(
            ws_upgrade(&url, None).await,
            Err(StatusCode::SERVICE_UNAVAILABLE)
        );
        a.close(None).await.unwrap();
        while a.next().await.is_some() {}
        // The slot frees once the hub has seen the close.
        let mut tries = 0;
        loop {
            match ws_upgrade(&url, None).await {
                Ok(()) => break,
                Err(s) => assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE),
            }
            tries += 1;
            assert!(tries < 100, "the closed session's slot never came back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        hub.shutdown().await;
    })
    .await;
}
}

both_backends! {
async fn finished_tasks_are_pruned_after_the_retention() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub_with(dir.path(), |c| {
            c.retention = Duration::from_secs(1);
            c.prune_interval = Duration::from_millis(200);
        })
        .await;
        let c = client(&hub.url(), "a");
        let done = c.create_task(&NewTask::new("done")).await.unwrap();
        c.post_text(done.id, "hello").await.unwrap();
        c.claim(done.id, None).await.unwrap();
        c.complete(done.id, vec![]).await.unwrap();
        let waiting = c.create_task(&NewTask::new("still pending")).await.unwrap();
        let mut polls = 0;
        while c.get_task(done.id).await.is_ok() {
            polls += 1;
            assert!(polls < 100, "the finished task was never pruned");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let kept = c.get_task(waiting.id).await.unwrap();
        assert_eq!(
            kept.status,
            TaskStatus::Pending,
            "unfinished tasks are kept"
        );
        hub.shutdown().await;
        // Its messages went with it.
        let conn = ats_p2p_signal::hub::store::open(&dir.path().join("hub.sqlite")).unwrap();
        let left: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM messages WHERE task_id = ?1",
                [done.id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0);
    })
    .await;
}
}

#[tokio::test]
async fn a_panic_on_the_database_thread_fails_only_its_requests() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path()).await;
        let http = reqwest::Client::new();
        let tasks = format!("{}/tasks", hub.url());
        let body = Some(r#"{"title": "t"}"#);
        let (s, _) = send(&http, Method::POST, &tasks, CLI, body).await;
        assert_eq!(s, StatusCode::CREATED);

        // A panic inside one job: that request fails with 500, later ones succeed.
        hub.inject_db_fault(DbFault::InJob);
        let (s, v) = send(&http, Method::POST, &tasks, CLI, body).await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
        for _ in 0..3 {
            let (s, _) = send(&http, Method::POST, &tasks, CLI, body).await;
            assert_eq!(s, StatusCode::CREATED);
        }
        assert_eq!(
            task_count(&http, &hub.url()).await,
            4,
            "the failed request stored nothing"
        );

        // A panic outside any job, before a commit: that group fails and is rolled back, then
        // the thread serves on.
        hub.inject_db_fault(DbFault::AtCommit);
        let (s, _) = send(&http, Method::POST, &tasks, CLI, body).await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
        for _ in 0..3 {
            let (s, _) = send(&http, Method::POST, &tasks, CLI, body).await;
            assert_eq!(s, StatusCode::CREATED);
        }
        assert_eq!(task_count(&http, &hub.url()).await, 7);
        let (s, _) = send(
            &http,
            Method::GET,
            &format!("{}/tasks/stats", hub.url()),
            &[],
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        hub.shutdown().await;
    })
    .await;
}
