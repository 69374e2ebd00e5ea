//! Shared helpers: an in-process hub on loopback and clients for named actors.
// Not every test file uses every helper; test helpers may unwrap.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ats_p2p_signal::hub::{Hub, HubConfig};
use ats_p2p_signal::{Actor, Client, ClientConfig, TaskEvent, Watch};
use futures::StreamExt;

/// Every test's overall time bound.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to wait for one expected watch event.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test exceeded its time bound")
}

pub async fn hub_at(dir: &Path, listen: SocketAddr) -> Hub {
    Hub::bind(HubConfig::new(listen, dir.join("hub.sqlite")))
        .await
        .expect("hub binds")
}

pub async fn hub(dir: &Path) -> Hub {
    hub_at(dir, "127.0.0.1:0".parse().unwrap()).await
}

/// A hub on a free loopback port with `adjust` applied to the default config.
pub async fn hub_with(dir: &Path, adjust: impl FnOnce(&mut HubConfig)) -> Hub {
    let mut config = HubConfig::new("127.0.0.1:0".parse().unwrap(), dir.join("hub.sqlite"));
    adjust(&mut config);
    Hub::bind(config).await.expect("hub binds")
}

pub fn client(url: &str, id: &str) -> Client {
    let actor = Actor {
        actor_type: "agent".into(),
        id: id.into(),
        name: format!("Agent {id}"),
    };
    Client::new(ClientConfig::new(url, actor)).unwrap()
}

/// The next event matching `pred`, skipping others.
pub async fn next_matching(w: &mut Watch, pred: impl Fn(&TaskEvent) -> bool) -> TaskEvent {
    tokio::time::timeout(EVENT_TIMEOUT, async {
        loop {
            let ev = w.next().await.expect("watch stream ended");
            if pred(&ev) {
                return ev;
            }
        }
    })
    .await
    .expect("expected watch event did not arrive")
}

/// Every event that arrives within `quiet`.
pub async fn drain(w: &mut Watch, quiet: Duration) -> Vec<TaskEvent> {
    let mut out = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout(quiet, w.next()).await {
        out.push(ev);
    }
    out
}
