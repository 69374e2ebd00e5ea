//! Shared helpers: an in-process hub on loopback and clients for named actors.
//!
//! One test list, two backends: a test written as `both_backends! { async fn name() { ... } }`
//! runs twice, as `name::sqlite` and `name::postgres`; the hub helpers below store in whichever
//! backend the running test is on (`pg` starts the PostgreSQL cluster).
// Not every test file uses every helper; test helpers may unwrap.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ats_p2p_signal::hub::{DbLocation, Hub, HubConfig};
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

pub mod pg;

/// Which database the hubs of a test store in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in the test's directory.
    Sqlite,
    /// A database of this binary's PostgreSQL cluster.
    Postgres,
}

tokio::task_local! {
    static BACKEND: Backend;
}

/// The backend of the running test (SQLite outside [`on_backend`]).
pub fn backend() -> Backend {
    BACKEND.try_with(|b| *b).unwrap_or(Backend::Sqlite)
}

/// Where a hub of the running test whose files go in `dir` stores.
pub fn db_location(dir: &Path) -> DbLocation {
    match backend() {
        Backend::Sqlite => DbLocation::Sqlite(dir.join("hub.sqlite")),
        Backend::Postgres => pg::cluster()
            .expect("on_backend checked the cluster")
            .database_for(dir),
    }
}

/// Runs a test body on `backend`; on PostgreSQL without a cluster it prints `SKIP:` (or fails
/// when `ATS_P2P_REQUIRE_PG` is set).
pub async fn on_backend<F: Future<Output = ()>>(backend: Backend, test: &str, body: F) {
    if backend == Backend::Postgres
        && let Err(why) = pg::cluster()
    {
        pg::skip_or_fail(test, &why);
        return;
    }
    BACKEND.scope(backend, body).await;
}

/// Instantiates a test once per backend (see the module docs).
#[allow(unused_macros)]
macro_rules! both_backends {
    ($(#[$attr:meta])* async fn $name:ident() $body:block) => {
        $(#[$attr])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                $crate::common::on_backend(
                    $crate::common::Backend::Sqlite,
                    concat!(module_path!()),
                    async $body,
                )
                .await
            }

            #[tokio::test]
            async fn postgres() {
                $crate::common::on_backend(
                    $crate::common::Backend::Postgres,
                    concat!(module_path!()),
                    async $body,
                )
                .await
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use both_backends;

pub async fn hub_at(dir: &Path, listen: SocketAddr) -> Hub {
    Hub::bind(HubConfig::new(listen, db_location(dir)))
        .await
        .expect("hub binds")
}

pub async fn hub(dir: &Path) -> Hub {
    hub_at(dir, "127.0.0.1:0".parse().unwrap()).await
}

/// A hub on a free loopback port with `adjust` applied to the default config.
pub async fn hub_with(dir: &Path, adjust: impl FnOnce(&mut HubConfig)) -> Hub {
    let mut config = HubConfig::new("127.0.0.1:0".parse().unwrap(), db_location(dir));
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
