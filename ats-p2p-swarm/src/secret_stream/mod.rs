//! The Hyperswarm secret stream (`@hyperswarm/secret-stream` 6.9.2 on the wire).
//!
//! Every unit on the raw stream is a uint24-LE length-prefixed frame: in stand-alone mode the
//! three Noise XX messages, then each side's 56-byte `id ‖ secretstream header`, then libsodium
//! `crypto_secretstream_xchacha20poly1305` messages (17 bytes of overhead each). HyperDHT
//! connections skip the XX exchange and start from the IK handshake made over the DHT
//! ([`SecretStream::from_handshake`]).
//!
//! Layers: [`frame`] (framing), [`cipher`] (encryption, stream ids), [`core`] (the sans-io
//! protocol), and [`SecretStream`] (the tokio `AsyncRead + AsyncWrite` driver over any raw
//! `AsyncRead + AsyncWrite` that implements [`RawStream`]: TCP, an in-memory duplex, or a UDX
//! stream, which takes the ciphertext without a copy).
//!
//! ```no_run
//! # async fn demo(tcp: tokio::net::TcpStream, udx: tokio::net::TcpStream,
//! #     me: ats_p2p_swarm::KeyPair, them: ats_p2p_swarm::PublicKey,
//! #     ik: ats_p2p_swarm::noise::Handshake) -> Result<(), Box<dyn std::error::Error>> {
//! use ats_p2p_swarm::secret_stream::SecretStream;
//! use tokio::io::AsyncWriteExt;
//!
//! // Stand-alone: Noise XX on the raw stream; any key but `them` is refused mid-handshake.
//! let mut s = SecretStream::connect(tcp, me.clone(), Some(them)).await?;
//! s.write_all(b"hello").await?;
//! s.flush().await?; // writes are queued, not awaited: flush (or shutdown) to push them out
//! assert_eq!(s.remote_public_key(), them);
//!
//! // HyperDHT: the IK handshake ran over the DHT (see `noise`); only the id+header frames
//! // travel on the raw (UDX) stream.
//! let s2 = SecretStream::from_handshake(udx, ik).await?;
//! # let _ = s2; Ok(()) }
//! ```
//!
//! Keep-alives (an empty encrypted message after [`KEEP_ALIVE_INTERVAL`] without sending) are on
//! by default, as in hyperdht; a JS peer filters them when its own keep-alive is on (hyperdht) and
//! otherwise sees zero-length `data` events.

pub mod cipher;
pub mod core;
pub mod frame;
mod raw;
mod sodium;
mod stream;

use std::io;

pub use self::core::{
    DEFAULT_MAX_FRAME_LEN, Input, LARGEST_SENT_FRAME, MAX_FRAME_PLAINTEXT, MAX_MESSAGE_LEN,
    SecretStreamCore, VECTORED_SLACK,
};
pub use cipher::stream_id;
pub use raw::RawStream;
pub use stream::{HANDSHAKE_TIMEOUT, KEEP_ALIVE_INTERVAL, SecretStream};

use crate::noise::NoiseError;

/// Everything that ends a secret stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretStreamError {
    /// The Noise handshake failed (including a key refused by the firewall).
    #[error("noise handshake: {0}")]
    Noise(#[from] NoiseError),
    /// A frame's length prefix exceeds the accepted maximum.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLong {
        /// Announced length.
        len: usize,
        /// Accepted maximum.
        max: usize,
    },
    /// The peer's id+header message does not have 56 bytes.
    #[error("id+header message of {0} bytes (expected 56)")]
    BadHeaderLength(usize),
    /// The peer's stream id does not match the handshake.
    #[error("peer sent a wrong stream id")]
    WrongStreamId,
    /// An encrypted message is shorter than its 17-byte overhead.
    #[error("encrypted message of {0} bytes is too short")]
    MessageTooShort(usize),
    /// An encrypted message failed authentication.
    #[error("encrypted message failed to authenticate")]
    Decrypt,
    /// A local message exceeds the largest atomic write.
    #[error("message of {0} bytes exceeds the maximum of 16777198")]
    MessageTooLong(usize),
    /// The raw stream ended inside a frame or before the stream was open.
    #[error("raw stream closed unexpectedly")]
    UnexpectedEof,
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The stream already failed.
    #[error("secret stream already failed")]
    Failed,
    /// A method was called at the wrong time (a caller bug).
    #[error("secret stream API misuse: {0}")]
    ApiMisuse(&'static str),
    /// The raw stream failed.
    #[error("raw stream: {0}")]
    Io(#[from] io::Error),
    /// An internal invariant broke (a bug, reported instead of panicking).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl From<SecretStreamError> for io::Error {
    fn from(e: SecretStreamError) -> Self {
        let kind = match &e {
            SecretStreamError::Io(inner) => inner.kind(),
            SecretStreamError::UnexpectedEof => io::ErrorKind::UnexpectedEof,
            SecretStreamError::HandshakeTimeout => io::ErrorKind::TimedOut,
            SecretStreamError::Noise(NoiseError::Rejected(_)) => io::ErrorKind::PermissionDenied,
            SecretStreamError::MessageTooLong(_) | SecretStreamError::ApiMisuse(_) => {
                io::ErrorKind::InvalidInput
            }
            SecretStreamError::Internal(_) | SecretStreamError::Failed => io::ErrorKind::Other,
            _ => io::ErrorKind::InvalidData,
        };
        match e {
            SecretStreamError::Io(inner) => inner,
            other => Self::new(kind, other),
        }
    }
}
