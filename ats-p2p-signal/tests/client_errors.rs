//! Client failure handling against real loopback sockets: refused connections, a server that
//! never answers (the one fault a real hub cannot show), and which requests are repeated.
// Test helpers may unwrap: a panic here is a failed test (clippy.toml allows it in #[test]s).
#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ats_p2p_signal::{Actor, Client, ClientConfig, NewTask, SignalError};
use common::bounded;

/// A listener that accepts connections, reads nothing and never answers; counts accepts.
async fn silent_server() -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    (url, count, task)
}

fn client(url: &str, timeout_ms: u64, retries: u32) -> Client {
    let mut cfg = ClientConfig::new(url, Actor::agent("a"));
    cfg.request_timeout = Duration::from_millis(timeout_ms);
    cfg.max_retries = retries;
    Client::new(cfg).unwrap()
}

#[tokio::test]
async fn refused_connection_is_a_connect_error() {
    bounded(async {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", probe.local_addr().unwrap());
        drop(probe);
        let c = client(&url, 1000, 2);
        assert!(matches!(c.health().await, Err(SignalError::Connect { .. })));
        assert!(matches!(
            c.claim(1, None).await,
            Err(SignalError::Connect { .. })
        ));
        let e = c.create_task(&NewTask::new("x")).await.unwrap_err();
        assert!(e.is_transient(), "{e}");
    })
    .await;
}

#[tokio::test]
async fn reads_are_retried_but_a_claim_is_sent_once() {
    bounded(async {
        let (url, count, server) = silent_server().await;
        let c = client(&url, 200, 2);
        assert!(matches!(
            c.get_task(1).await,
            Err(SignalError::Timeout { .. })
        ));
        assert_eq!(
            count.load(Ordering::SeqCst),
            3,
            "GET: 1 attempt + 2 retries"
        );

        count.store(0, Ordering::SeqCst);
        assert!(matches!(
            c.claim(1, None).await,
            Err(SignalError::Timeout { .. })
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "a claim that may have arrived is never repeated"
        );

        count.store(0, Ordering::SeqCst);
        assert!(matches!(
            c.create_task(&NewTask::new("x")).await,
            Err(SignalError::Timeout { .. })
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(count.load(Ordering::SeqCst), 1, "nor is a create");

        count.store(0, Ordering::SeqCst);
        assert!(matches!(
            c.complete(1, vec![]).await,
            Err(SignalError::Timeout { .. })
        ));
        assert_eq!(count.load(Ordering::SeqCst), 3, "transitions are repeated");
        server.abort();
    })
    .await;
}
