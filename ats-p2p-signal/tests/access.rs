//! Who may use a hub and how many may connect: the bearer token (HTTP and WebSocket, client
//! and hub), the refusal to serve a non-loopback address without one, and the connection cap.
// Test helpers may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use ats_p2p_signal::hub::{Hub, HubConfig, HubError};
use ats_p2p_signal::{AccessToken, Actor, Client, ClientConfig, EventKind, NewTask, WatchConfig};
use common::*;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const TOKEN: &str = "0123456789abcdef-hub-secret";

fn token() -> AccessToken {
    AccessToken::new(TOKEN).unwrap()
}

fn client_with(url: &str, id: &str, token: Option<AccessToken>) -> Client {
    let mut config = ClientConfig::new(url, Actor::agent(id));
    config.token = token;
    Client::new(config).unwrap()
}

/// Status, `WWW-Authenticate` and JSON body of a raw GET with these extra headers.
async fn get(url: &str, headers: &[(&str, &str)]) -> (StatusCode, Option<String>, Value) {
    let mut req = reqwest::Client::new().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    (status, challenge, body)
}

both_backends! {
async fn a_hub_with_a_token_serves_only_who_sends_it() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub_with(dir.path(), |c| c.token = Some(token())).await;
        let base = hub.url();

        // Without the token, or with another: 401 with a JSON error and a Bearer challenge.
        let bearer = format!("Bearer {TOKEN}");
        for headers in [
            vec![],
            vec![("Authorization", "Bearer not-the-token-at-all")],
            vec![("Authorization", &format!("Basic {TOKEN}") as &str)],
        ] {
            let (status, challenge, body) = get(&format!("{base}/tasks"), &headers).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}");
            assert!(challenge.unwrap().starts_with("Bearer"), "{headers:?}");
            assert!(body["error"].is_string(), "{body}");
        }
        let (status, _, _) = get(&format!("{base}/tasks"), &[("Authorization", &bearer)]).await;
        assert_eq!(status, StatusCode::OK);
        // Liveness probes need no token.
        let (status, _, body) = get(&format!("{base}/health"), &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");

        // A client without the token is refused and changes nothing.
        let anonymous = client_with(&base, "anonymous", None);
        let err = anonymous
            .create_task(&NewTask::new("not allowed"))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(401), "{err}");
        let err = client_with(
            &base,
            "guesser",
            Some(AccessToken::new("wrong-token-0123456789").unwrap()),
        )
        .list_tasks(&Default::default())
        .await
        .unwrap_err();
        assert_eq!(err.status(), Some(401), "{err}");

        // The WebSocket upgrade needs it too.
        let ws_url = anonymous.ws_url().to_string();
        match tokio_tungstenite::connect_async(ws_url.as_str()).await {
            Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
            other => panic!(
                "upgrade without a token: {:?}",
                other.map(|(_, r)| r.status())
            ),
        }

        // A client with the token: HTTP and its watch (the upgrade carries the header).
        let agent = client_with(&base, "agent", Some(token()));
        let mut watch = agent.watch(WatchConfig {
            channels: vec!["tokened".into()],
            ..WatchConfig::default()
        });
        // The watch's first catch-up is done once it has subscribed; a task created now is
        // seen live or by catch-up, either way exactly once.
        let mut new = NewTask::new("allowed");
        new.channel = Some("tokened".into());
        let task = agent.create_task(&new).await.unwrap();
        let ev = next_matching(&mut watch, |e| e.task.id == task.id).await;
        assert_eq!(ev.kind, EventKind::Created);
        let list = agent.list_tasks(&Default::default()).await.unwrap();
        assert_eq!(
            list.tasks.len(),
            1,
            "only the client with the token created a task"
        );

        // And a raw upgrade with the header is accepted.
        let mut req = ws_url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", bearer.parse().unwrap());
        let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.status(), 101);
        ws.close(None).await.unwrap();
        drop(watch);
        hub.shutdown().await;
    })
    .await;
}
}

both_backends! {
async fn a_hub_beyond_loopback_needs_a_token() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        // Refused before anything is bound: no socket is opened on another interface.
        let exposed = HubConfig::new("0.0.0.0:0".parse().unwrap(), db_location(dir.path()));
        match Hub::bind(exposed.clone()).await {
            Err(HubError::NoToken { addr }) => assert_eq!(addr, exposed.listen),
            other => panic!("an exposed hub without a token started: {other:?}"),
        }
        let mut weak = exposed;
        weak.token = Some(AccessToken::new("short").unwrap());
        assert!(matches!(Hub::bind(weak).await, Err(HubError::WeakToken)));
        // On loopback no token is needed, and a weak one is still refused.
        let hub = hub(dir.path()).await;
        hub.shutdown().await;
        let mut weak = HubConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            db_location(dir.path()),
        );
        weak.token = Some(AccessToken::new("short").unwrap());
        assert!(matches!(Hub::bind(weak).await, Err(HubError::WeakToken)));
    })
    .await;
}
}

/// How long a connection beyond the cap may stay open before the test calls it served.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

both_backends! {
async fn connections_beyond_the_cap_are_closed() {
    const CAP: usize = 4;
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub_with(dir.path(), |c| c.max_connections = CAP).await;
        let addr = hub.local_addr();

        // CAP idle connections take every slot (they are accepted in order).
        let mut idle = Vec::new();
        for _ in 0..CAP {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // Further connections are closed without a byte.
        for i in 0..2 {
            let mut extra = TcpStream::connect(addr).await.unwrap();
            let mut buf = [0u8; 64];
            match tokio::time::timeout(CLOSE_WAIT, extra.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {}
                Ok(Ok(n)) => panic!("extra connection {i} got {n} bytes"),
                Err(_) => panic!("extra connection {i} is still open: no connection cap"),
            }
        }
        // The connections that hold the slots are served.
        let first = &mut idle[0];
        first
            .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        first.read_to_end(&mut answer).await.unwrap();
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer)
        );

        // Once they go, the slots come back (the hub notices each close; bounded by attempts).
        drop(idle);
        let c = client(&hub.url(), "after");
        let mut served = false;
        for _ in 0..100 {
            if c.health().await.is_ok() {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            served,
            "the hub did not serve again after the idle connections closed"
        );
        hub.shutdown().await;
    })
    .await;
}
}
