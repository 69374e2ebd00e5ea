//! ats-p2p: peer-to-peer file transfer between AI agents, signaled through ATS.
//!
//! # The node
//!
//! A [`Node`] (built from a [`NodeConfig`]: ATS URL, actor id, allowed peers, limits, bootstrap
//! nodes, key pair) **sends** a file by offering it as an ATS task and streaming it over a
//! Hyperswarm connection to the key the recipient announces ([`Node::send`]), and **watches** a
//! channel for offers, accepting or rejecting them by policy ([`Node::watch`]). It composes
//! [`wire`] (frames and transfer state machines), [`swarm`] (HyperDHT, UDX, Noise secret stream)
//! and [`signal`] (the ATS client). See [`node`] for the flow of one transfer.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ats_p2p::signal::hub::{Hub, HubConfig};
//! use ats_p2p::swarm::hyperdht::Bootstrap;
//! use ats_p2p::{Incoming, Node, NodeConfig, events::Event, identity::KeySource};
//! use futures::StreamExt;
//!
//! // A local hub and DHT bootstrap node: no internet needed.
//! let dir = tempfile::tempdir()?;
//! let db = dir.path().join("hub.sqlite");
//! let hub = Hub::bind(HubConfig::new("127.0.0.1:0".parse()?, db)).await?;
//! let boot = Bootstrap::spawn("127.0.0.1:0".parse()?).await?;
//! let config = |actor: &str| {
//!     let mut c = NodeConfig::new(actor);
//!     c.ats_url = hub.url();
//!     c.bootstrap = vec![boot.addr().to_string()];
//!     c.host = std::net::Ipv4Addr::LOCALHOST;
//!     c.key_source = KeySource::Ephemeral;
//!     c.known_keys_path = None;
//!     c
//! };
//! let alice = Node::start(config("agent-a")).await?;
//! let bob = Node::start(config("agent-b")).await?;
//!
//! // Bob accepts offers into a directory; Alice sends and returns after Bob's ACK.
//! let mut inbox = bob.watch("p2p-transfer", Some(dir.path().join("incoming")));
//! let src = dir.path().join("hello.txt");
//! std::fs::write(&src, b"hello, bob")?;
//! let sent = alice.send(&src, "agent-b", "p2p-transfer", |_event| {}).await?;
//! while let Some(Incoming::Event(event)) = inbox.next().await {
//!     if let Event::TransferComplete { file_path, .. } = event {
//!         assert_eq!(std::fs::read(file_path)?, b"hello, bob");
//!         break;
//!     }
//! }
//! println!("{} sent as transfer {}", sent.file_name, sent.transfer_id);
//! # drop(inbox);
//! # alice.destroy().await;
//! # bob.destroy().await;
//! # Ok(())
//! # }
//! ```
//!
//! # The parts it is made of
//!
//! - [`names`]: a file name from the network reduced to one safe path component.
//! - [`save`]: receiving into a hidden temporary file, fsync, and a move to a free name that never
//!   overwrites anything; free disk space.
//! - [`policy`]: allowlists (`agent-b`, `agent-b=<hex key>`), remembered keys (trust on first
//!   use), and the receiver's and sender's decisions as typed refusals.
//! - [`identity`]: the persistent Ed25519 key pair per actor id, or an ephemeral one.
//! - [`hashing`]: streaming SHA-256 of a file with progress, off the async runtime.
//! - [`topic`]: the transfer's swarm topic.
//! - [`events`]: the events a node emits, serialisable as NDJSON.
//! - [`transfer`]: the driver that runs the wire state machines over any async byte stream,
//!   reading the file in chunks and writing received bytes off the runtime.
//! - [`error`]: one error enum per operation.
//!
//! # Rules that keep a node safe to expose
//!
//! Each rule lives beside the code that enforces it; this is the list.
//!
//! - **Saves cannot be raced** ([`save::IncomingFile`]): the save directory is held open
//!   (`O_DIRECTORY | O_NOFOLLOW`), the temporary file is created once in it with
//!   `O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600, and only ever used through that descriptor
//!   (direct I/O switches the same descriptor to `O_DIRECT`); it is published with a rename that
//!   never replaces a name (`renameat2(RENAME_NOREPLACE)`, or link and unlink) relative to the
//!   directory handle, after checking the name still is that file, and the directory is fsynced.
//!   Partial and received files are readable by their owner only. Names from the network are
//!   reduced to one path component ([`names`]).
//! - **Leftovers are cleaned** ([`save::remove_stale_temp_files`]): every live temporary file is
//!   locked (`flock`) by its receiver; when a watch starts on a save directory, temporary files
//!   nobody holds (their `listen` was killed) are removed.
//! - **Keys are remembered only after a verified transfer** ([`policy`]): trust on first use
//!   records a peer's key after the receiver stored a file whose SHA-256 matched (receiver) or the
//!   sender got that receiver's ACK (sender), never at claim or offer time, so someone using an
//!   actor id on the hub without holding its key cannot poison what is remembered.
//! - **One accept per transfer**: the sender takes the first accept the claimer posted; a
//!   receiver whose accept was not the first one for its actor id (a second `listen` with the
//!   same id) steps aside (`accepted_elsewhere`) and leaves the task alone, and a node receives a
//!   transfer once however many watches see it.
//! - **Progress deadlines** ([`transfer::progress`]): while file bytes remain, each side must move
//!   [`NodeConfig::progress`] (default 64 KiB per 30 s) or the transfer fails as `stalled`
//!   ([`events::FailureKind::TimedOut`]).
//! - **Bounded receiving** ([`Node::watch`]): at most [`NodeConfig::max_concurrent_receives`]
//!   (default 4) offers are received at once; later ones wait unclaimed (`queued` event), and
//!   beyond [`node::MAX_QUEUED_RECEIVES`] waiting offers new ones are rejected as `busy`. Free
//!   space is checked against the offer plus what running receives still have to write.
//!
//! File-system work here is blocking by design; async callers run it on
//! `tokio::task::spawn_blocking` or a dedicated thread ([`hashing::sha256_file_async`] does so).
//!
//! ```
//! use ats_p2p::{names::sanitize_file_name, topic::transfer_topic};
//!
//! // A hostile name stays inside the save directory.
//! assert_eq!(sanitize_file_name("../../home/me/.ssh/authorized_keys"), "authorized_keys");
//! assert_eq!(sanitize_file_name("/etc/.."), "etc");
//!
//! // Both peers derive the same topic from the 16-byte transfer id.
//! let mut id = [0u8; 16];
//! hex::decode_to_slice("5f0c5f0c5f0c5f0c5f0c5f0c5f0c5f0c", &mut id).unwrap();
//! assert_eq!(
//!     hex::encode(transfer_topic(&id)),
//!     "2bfd2fd0a18f8f33c51f004cc1e814c8fcbe4f3f98aa24e7fbc5b57f885ce4fc",
//! );
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod defaults;
pub mod error;
pub mod events;
mod fsutil;
pub mod hash_cache;
pub mod hashing;
pub mod identity;
mod lifecycle;
pub mod names;
pub mod node;
pub mod partial;
pub mod policy;
pub mod save;
pub mod save_tree;
pub mod topic;
pub mod transfer;
pub mod tree;

pub use node::{
    Inbox, Incoming, Node, NodeConfig, PendingOffer, ReceiveReport, RelayMode, SendReport,
};

pub use ats_p2p_signal as signal;
pub use ats_p2p_swarm as swarm;
pub use ats_p2p_wire as wire;
