//! The transfer driver: runs the wire [`Sender`](ats_p2p_wire::Sender) and
//! [`Receiver`](ats_p2p_wire::Receiver) state machines over any reliable byte stream
//! (`AsyncRead + AsyncWrite`): a swarm connection in production, `tokio::io::duplex` or TCP in
//! tests.
//!
//! - [`send_stream`] reads the file in chunks of [`FILE_READ_CHUNK`] bytes (never the whole
//!   file) on a blocking reader thread, at most [`FILE_READ_AHEAD`] chunks ahead, and reads the
//!   peer while it writes, so an early NACK stops the transfer at once. Each DATA frame goes to
//!   the stream as one vectored write (header + payload), which the secret stream encrypts as
//!   one message without joining them first.
//! - [`receive_stream`] hands DATA (zero-copy slices of the decrypted stream) to a blocking
//!   writer thread that owns the [`IncomingFile`](crate::save::IncomingFile), over a channel
//!   of [`WRITE_QUEUE_DEPTH`] chunks: when the disk is slower than the network, the driver stops
//!   reading the stream and the transport's flow control slows the sender. The writer hashes
//!   what it writes (SHA-256 runs beside decryption, on another core) and writes with
//!   `O_DIRECT` through two 1 MiB aligned buffers where the file system allows (no page-cache
//!   copy; the final fsync has little left to do). After DONE the wire receiver checks the
//!   writer's hash; on `Verified` the writer fsyncs and renames the file, and only then is ACK
//!   sent. On every failure the temporary file is removed before the error is returned.
//! - After ACK both ends close their side and the sender waits (briefly) for the receiver's
//!   end, so neither transport is left retransmitting to a peer that has gone.
//!
//! - While file bytes remain, both enforce a [`ProgressRule`] (default: 64 KiB per 30 s): a
//!   peer that stops reading (zero window) or trickles bytes ends the transfer as `stalled`
//!   ([`send_stream_with`], [`receive_stream_with`] take the rule; see [`progress`]).
//!
//! Both report progress through a callback `(bytes, total)`, called at most once per frame.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ats_p2p::transfer::{receive_stream, send_stream};
//! use ats_p2p::wire::{FileHash, Meta, ReceiverConfig, SenderConfig};
//!
//! let dir = tempfile::tempdir()?;
//! let src = dir.path().join("hello.txt");
//! std::fs::write(&src, b"hello, peer")?;
//! let meta = Meta::new("hello.txt", 11, FileHash::of(b"hello, peer"));
//! let save_dir = dir.path().join("incoming");
//!
//! let (a, b) = tokio::io::duplex(64 * 1024);
//! let id = "5f0c5f0c5f0c5f0c5f0c5f0c5f0c5f0c";
//! let (sent, received) = tokio::join!(
//!     send_stream(a, &src, meta.clone(), SenderConfig::default(), |_, _| {}),
//!     receive_stream(b, &save_dir, id, meta, ReceiverConfig::new(1 << 20), |_, _| {}),
//! );
//! sent?;
//! let received = received?;
//! assert_eq!(std::fs::read(&received.path)?, b"hello, peer");
//! # Ok(()) }
//! ```

mod direct;
mod error;
pub mod limit;
mod partial_file;
pub mod progress;
mod receive;
mod receive_dir;
mod send;
mod source;
mod writer;

use std::time::Duration;

pub use error::{StreamReceiveError, StreamSendError, transfer_error_code};
pub use progress::{DEFAULT_MIN_PROGRESS_BYTES, DEFAULT_PROGRESS_WINDOW, ProgressRule};
pub use receive::{
    ReceiveOptions, Received, receive_stream, receive_stream_opts, receive_stream_with,
};
pub use receive_dir::receive_directory;
pub use send::{
    SendOptions, Sent, send_source_opts, send_stream, send_stream_opts, send_stream_with,
};
pub use source::{SendSource, SourceFile};

/// Bytes read from the file per step: a few DATA frames' worth, so reads are large but the
/// memory held per transfer stays small.
pub const FILE_READ_CHUNK: usize = 256 * 1024;

/// File chunks the blocking reader may read ahead of the network (memory: this many times
/// [`FILE_READ_CHUNK`], plus the chunk being sent).
pub const FILE_READ_AHEAD: usize = 4;

/// Bytes asked for per read from the peer's stream.
pub const STREAM_READ_BUF: usize = 64 * 1024;

/// DATA payloads (at most 64 KiB each) queued for the blocking writer: enough (2 MiB) to ride
/// out a scheduling hiccup of the writer thread without closing the network window (8 measured
/// about 10% slower on 2 cores), small enough that a slow disk pushes back on the network
/// within a few MiB.
pub const WRITE_QUEUE_DEPTH: usize = 32;

/// Longest wait to deliver the last frame (ERROR, NACK) after a failure: the peer may be gone,
/// and the reason is best effort.
pub const FAREWELL_TIMEOUT: Duration = Duration::from_secs(2);
