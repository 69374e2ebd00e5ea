//! ATS signaling for ats-p2p: a typed ATS client and an ATS-compatible hub server.
//!
//! - [`Client`]: typed calls for every ATS endpoint the transfer flow needs (health, tasks,
//!   claims with leases, transitions, messages, stats), with retries where they are safe.
//! - [`Watch`]: a reconnecting WebSocket subscription with catch-up, as a `Stream` of
//!   [`TaskEvent`]s.
//! - [`offer`]: the `file_offer` payload and the accept message.
//! - `hub` (feature `hub`): the ATS-compatible server on axum and SQLite.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ats_p2p_signal::SignalError> {
//! use ats_p2p_signal::{Actor, Client, ClientConfig, EventKind, FileOffer, WatchConfig};
//! use futures::StreamExt;
//!
//! let receiver = Client::new(ClientConfig::new("http://127.0.0.1:8787", Actor::agent("agent-b")))?;
//! let mut watch = receiver.watch(WatchConfig {
//!     channels: vec!["p2p-transfer".into()],
//!     task_types: vec!["file_offer".into()],
//!     ..WatchConfig::default()
//! });
//! while let Some(ev) = watch.next().await {
//!     if ev.kind == EventKind::Created {
//!         match FileOffer::from_task(&ev.task) {
//!             Ok(_offer) => { receiver.claim(ev.task.id, None).await?; /* post the accept */ }
//!             Err(e) => { receiver.reject(ev.task.id, Some(&e.to_string())).await?; }
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod auth;
pub mod client;
pub mod defaults;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "hub")]
pub mod hub;
pub mod manifest;
pub mod offer;
pub mod types;
pub mod watch;

pub use auth::{AccessToken, TokenError};
pub use client::{Client, ClientConfig, backoff};
pub use error::SignalError;
pub use manifest::{Manifest, ManifestError, ManifestFile};
pub use offer::{AcceptMessage, FileOffer, OfferError, TransferId};
pub use types::{
    Actor, EventKind, Health, ListQuery, Message, NewTask, Part, Stats, Task, TaskId, TaskList,
    TaskStatus, TaskUpdate,
};
pub use watch::{EventOrigin, TaskEvent, Watch, WatchConfig};
