//! The hub's HTTP surface as the `ats` CLI sees it: raw requests, JSON on every answer.
// Test helpers may unwrap: a panic here is a failed test (clippy.toml allows it in #[test]s).
#![allow(clippy::unwrap_used)]

use crate::common;

use ats_p2p_signal::{SignalError, TaskStatus};
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Raw {
    http: reqwest::Client,
    base: String,
}

impl Raw {
    fn new(base: String) -> Self {
        Self {
            http: reqwest::Client::new(),
            base,
        }
    }

    /// Sends like the `ats` CLI: JSON content type and actor headers on every request.
    async fn send(&self, method: Method, path: &str, body: Option<&str>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("Content-Type", "application/json")
            .header("X-Actor-Type", "agent")
            .header("X-Actor-ID", "raw")
            .header("X-Actor-Name", "Raw");
        if let Some(b) = body {
            req = req.body(b.to_owned());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = resp.text().await.unwrap();
        assert!(
            ct.as_deref()
                .is_some_and(|c| c.starts_with("application/json")),
            "{path}: content-type {ct:?}, body {text:?}"
        );
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text:?}"));
        if !status.is_success() {
            assert!(
                v["error"].is_string(),
                "{path}: error must be a string: {v}"
            );
        }
        (status, v)
    }
}

both_backends! {
async fn errors_are_json_with_the_right_status() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path()).await;
        let r = Raw::new(hub.url());

        let (s, _) = r.send(Method::POST, "/tasks", Some("{not json")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, _) = r.send(Method::POST, "/tasks", Some("[1,2]")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, v) = r
            .send(
                Method::POST,
                "/tasks",
                Some(r#"{"title": "x", "priority": 11}"#),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        let (s, _) = r
            .send(
                Method::POST,
                "/tasks",
                Some(r#"{"description": "no title"}"#),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        for path in [
            "/tasks/999999",
            "/tasks/abc",
            "/tasks/999999/messages",
            "/nope",
            "/orgs/none",
            "/orgs/none/projects/x/tasks",
            "/orgs/default/projects/none/tasks",
        ] {
            let (s, v) = r.send(Method::GET, path, None).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {v}");
        }
        let (s, _) = r
            .send(Method::POST, "/tasks/999999/claim", Some("{}"))
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = r.send(Method::DELETE, "/tasks", None).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        let (s, _) = r.send(Method::GET, "/tasks/1/claim", None).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        let (s, _) = r.send(Method::GET, "/ws", None).await;
        assert!(s.is_client_error());

        // wrong transitions: 409 naming the current status
        let (s, v) = r
            .send(Method::POST, "/tasks", Some(r#"{"title": "t"}"#))
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let id = v["task"]["id"].as_i64().unwrap();
        for action in ["complete", "fail", "reopen"] {
            let (s, v) = r
                .send(Method::POST, &format!("/tasks/{id}/{action}"), Some("{}"))
                .await;
            assert_eq!(s, StatusCode::CONFLICT, "{action}");
            assert!(v["error"].as_str().unwrap().contains("pending"), "{v}");
        }
        let (s, _) = r
            .send(
                Method::POST,
                &format!("/tasks/{id}/claim"),
                Some(r#"{"lease_duration": "soon"}"#),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, _) = r
            .send(Method::PATCH, &format!("/tasks/{id}"), Some("{}"))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, _) = r.send(Method::GET, "/tasks?status=weird", None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);

        // the typed client reports the server's own message
        let c = client(&hub.url(), "agent-a");
        match c.get_task(999_999).await {
            Err(SignalError::Http {
                status: 404,
                message,
            }) => assert!(message.contains("999999"), "{message}"),
            other => panic!("{other:?}"),
        }
        match c.complete(id, vec![]).await {
            Err(SignalError::Http {
                status: 409,
                message,
            }) => assert!(message.contains("pending")),
            other => panic!("{other:?}"),
        }
        hub.shutdown().await;
    })
    .await;
}
}

both_backends! {
async fn ats_cli_compatibility_details() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path()).await;
        let r = Raw::new(hub.url());

        let (s, v) = r.send(Method::GET, "//health", None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["status"], "ok");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));

        // create defaults; every task field present
        let (s, v) = r
            .send(Method::POST, "//tasks", Some(r#"{"title": "hello"}"#))
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let t = &v["task"];
        for f in [
            "id",
            "title",
            "description",
            "status",
            "priority",
            "type",
            "channel",
            "payload",
            "outputs",
            "source_type",
            "source_name",
            "source_id",
            "assignee_type",
            "assignee_name",
            "assignee_id",
            "lease_expires",
            "created_at",
            "updated_at",
            "project_id",
        ] {
            assert!(t.get(f).is_some(), "missing {f}: {t}");
        }
        assert_eq!(
            (
                t["type"].as_str(),
                t["channel"].as_str(),
                t["priority"].as_i64()
            ),
            (Some("task"), Some("default"), Some(5))
        );
        assert_eq!(t["payload"], json!({}));
        assert_eq!(t["outputs"], json!([]));
        assert_eq!(t["source_name"], "Raw");
        let id = t["id"].as_i64().unwrap();

        // claim with {} (default lease), cancel with no body at all
        let (s, v) = r
            .send(Method::POST, &format!("/tasks/{id}/claim"), Some("{}"))
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["task"]["assignee_name"], "Raw");
        assert!(v["task"]["lease_expires"].is_string());
        let (s, v) = r
            .send(Method::POST, &format!("/tasks/{id}/cancel"), None)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["task"]["status"], "cancelled");

        // message envelope, list envelope with count before paging
        let (s, v) = r
            .send(
                Method::POST,
                &format!("/tasks/{id}/messages"),
                Some(r#"{"parts":[{"type":"text","content":"hi"}]}"#),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        assert_eq!(v["message"]["parts"][0]["content"], "hi");
        assert_eq!(v["message"]["actor_id"], "raw");
        let (_, v) = r
            .send(Method::GET, &format!("/tasks/{id}/messages"), None)
            .await;
        assert_eq!(v["messages"].as_array().unwrap().len(), 1);
        for i in 0..3 {
            r.send(
                Method::POST,
                "/tasks",
                Some(&format!(r#"{{"title": "t{i}"}}"#)),
            )
            .await;
        }
        let (_, v) = r
            .send(Method::GET, "/tasks?status=pending&limit=2", None)
            .await;
        assert_eq!(v["count"], 3);
        assert_eq!(v["tasks"].as_array().unwrap().len(), 2);

        // stats: all six statuses, by_channel present
        let (_, v) = r.send(Method::GET, "/tasks/stats", None).await;
        for st in TaskStatus::ALL {
            assert!(v["by_status"][st.as_str()].is_u64(), "{v}");
        }
        assert_eq!(v["by_channel"]["default"], 4);
        assert!(v["recent"]["created_24h"].is_u64());

        // orgs and projects: create, scoped routes, 409 on duplicates
        let (s, _) = r
            .send(
                Method::POST,
                "/orgs",
                Some(r#"{"slug": "acme", "name": "Acme"}"#),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let (s, _) = r
            .send(
                Method::POST,
                "/orgs",
                Some(r#"{"slug": "acme", "name": "Acme"}"#),
            )
            .await;
        assert_eq!(s, StatusCode::CONFLICT);
        let (s, _) = r
            .send(
                Method::POST,
                "/orgs/acme/projects",
                Some(r#"{"slug": "web", "name": "Web"}"#),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let (_, v) = r.send(Method::GET, "/orgs", None).await;
        assert_eq!(v["organizations"].as_array().unwrap().len(), 2);
        let (s, v) = r
            .send(
                Method::POST,
                "/orgs/acme/projects/web/tasks",
                Some(r#"{"title": "scoped"}"#),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let sid = v["task"]["id"].as_i64().unwrap();
        let (s, _) = r
            .send(
                Method::GET,
                &format!("/orgs/acme/projects/web/tasks/{sid}"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        let (s, _) = r.send(Method::GET, &format!("/tasks/{sid}"), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "unscoped means default/main");
        let (_, v) = r
            .send(Method::GET, "/orgs/acme/projects?counts=true", None)
            .await;
        assert_eq!(v["projects"][0]["pending_count"], 1);
        let (s, v) = r
            .send(
                Method::PATCH,
                "/orgs/acme/projects/web",
                Some(r#"{"name": "Website"}"#),
            )
            .await;
        assert_eq!(
            (s, v["project"]["name"].as_str()),
            (StatusCode::OK, Some("Website"))
        );

        // a scoped client works end to end
        let sc = ats_p2p_signal::Client::new(
            ats_p2p_signal::ClientConfig::new(
                format!("{}/", hub.url()),
                ats_p2p_signal::Actor::agent("s"),
            )
            .with_scope("acme", "web"),
        )
        .unwrap();
        let t = sc.get_task(sid).await.unwrap();
        assert_eq!(t.title, "scoped");
        assert_eq!(sc.list_tasks(&Default::default()).await.unwrap().count, 1);
        // reads work without any identity headers (the dashboard)
        let plain = reqwest::get(format!("{}/tasks", hub.url())).await.unwrap();
        assert_eq!(plain.status(), StatusCode::OK);
        hub.shutdown().await;
    })
    .await;
}
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text frame as JSON.
async fn recv(ws: &mut Ws) -> Value {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        if let Message::Text(t) = ws.next().await.unwrap().unwrap() {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

both_backends! {
async fn websocket_protocol_frames() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path()).await;
        let url = format!("ws://{}/ws?actor_type=agent&actor_id=w&actor_name=W", hub.local_addr());
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        assert_eq!(recv(&mut ws).await["type"], "connected");
        ws.send(Message::Text(json!({"type": "ping"}).to_string().into())).await.unwrap();
        assert_eq!(recv(&mut ws).await["type"], "pong");
        // events flow only after a subscribe; filters AND across lists, OR inside
        let c = client(&hub.url(), "agent-a");
        c.create_task(&ats_p2p_signal::NewTask::new("before subscribe")).await.unwrap();
        ws.send(Message::Text(json!({"type": "subscribe", "id": "cli-sub-1", "channels": ["x", "y"], "event_types": ["task.created"]}).to_string().into())).await.unwrap();
        let v = recv(&mut ws).await;
        assert_eq!((v["type"].as_str(), v["id"].as_str()), (Some("subscribed"), Some("cli-sub-1")));
        let mut other = ats_p2p_signal::NewTask::new("wrong channel");
        other.channel = Some("z".into());
        c.create_task(&other).await.unwrap();
        let mut wanted = ats_p2p_signal::NewTask::new("wanted");
        wanted.channel = Some("y".into());
        let t = c.create_task(&wanted).await.unwrap();
        c.claim(t.id, None).await.unwrap(); // task.claimed: filtered out by event_types
        let v = recv(&mut ws).await;
        assert_eq!(v["type"], "task.created");
        assert_eq!(v["task_id"], t.id);
        assert_eq!(v["channel"], "y");
        assert_eq!(v["actor_id"], "agent-a");
        assert!(v["id"].is_i64());
        assert_eq!(v["data"]["task"]["title"], "wanted");
        // no other frame is pending: a ping's pong comes next
        ws.send(Message::Text(json!({"type": "ping"}).to_string().into())).await.unwrap();
        assert_eq!(recv(&mut ws).await["type"], "pong");
        // shutdown closes the socket ("going away")
        let stop = tokio::spawn(hub.shutdown());
        loop {
            match ws.next().await {
                None | Some(Err(_)) => break,
                Some(Ok(Message::Close(f))) => {
                    assert_eq!(u16::from(f.unwrap().code), 1001);
                    break;
                }
                Some(Ok(_)) => {}
            }
        }
        stop.await.unwrap();
    })
    .await;
}
}
