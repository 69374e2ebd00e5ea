//! Sans-io frame codec and transfer state machines for ats-p2p.
//!
//! A file moves over one reliable byte stream as a sequence of frames
//! `[type u8][len u32 big endian][payload]`:
//!
//! | type | name | payload | limit |
//! |---|---|---|---|
//! | `0x01` | META | JSON `{"name","size","hash"}` (hash: 64 lower-case hex SHA-256) | [`MAX_META_LEN`] |
//! | `0x02` | DATA | file bytes | [`MAX_DATA_LEN`] (64 KiB) |
//! | `0x03` | DONE | empty | 0 |
//! | `0x04` | ACK | JSON or empty | [`MAX_ACK_LEN`] |
//! | `0x05` | NACK | UTF-8 reason | [`MAX_REASON_LEN`] |
//! | `0x06` | ERROR | UTF-8 message | [`MAX_REASON_LEN`] |
//! | `0x07` | RESUME | JSON `{"offset"}` (extension, see below) | [`MAX_RESUME_LEN`] |
//!
//! The sender sends META, DATA × n, DONE; the receiver answers ACK (verified and stored) or
//! NACK (refused, with a reason); either side may send ERROR and give up.
//!
//! **Resuming** is a compatible extension: a sender that can resume (and knows the receiver
//! can, see [`SenderConfig::offer_resume`]) adds `"resume":true` to META and waits; a receiver
//! that can ([`Receiver::with_resume`]) answers with RESUME `{"offset":N}`, the length of the
//! prefix it holds and has re-hashed from disk (0 for none), and the sender streams DATA from
//! there. A seed receiver ignores the field and never sees RESUME; a seed sender never offers.
//!
//! This crate does no I/O, spawns nothing and never reads a clock: [`FrameDecoder`] and
//! [`encode`]/[`encode_parts`] turn bytes into [`Frame`]s and back, and [`Sender`] and
//! [`Receiver`] are state machines in the `quinn-proto` style: feed them frames, application
//! calls and the current time (`handle_*`), then take out frames to send, events and the next
//! deadline (`poll_*`). With the `codec` feature, `FrameCodec` adapts the codec to
//! `tokio_util::codec`.
//!
//! Errors say who is at fault: [`FrameError`] for malformed bytes, [`TransferError`] for a
//! transfer that failed (peer, time, or local side); [`TransferError::reply`] is the one place
//! that turns an error into the NACK or ERROR sent to the peer.
//!
//! # Example: a transfer driven in memory
//!
//! ```
//! use std::time::Instant;
//! use bytes::{Bytes, BytesMut};
//! use ats_p2p_wire::{
//!     encode, FileHash, FrameDecoder, Meta, Receiver, ReceiverConfig, ReceiverEvent, Sender,
//!     SenderConfig, SenderEvent,
//! };
//!
//! let file: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
//! let meta = Meta::new("data.bin", file.len() as u64, FileHash::of(&file));
//! let now = Instant::now(); // time is an input; a real driver passes the current instant
//!
//! let mut sender = Sender::new(meta.clone(), SenderConfig::default(), now)?;
//! let mut receiver = Receiver::new(meta, ReceiverConfig::new(1 << 30), now);
//!
//! // One byte buffer per direction stands in for the network stream.
//! let (mut to_receiver, mut to_sender) = (BytesMut::new(), BytesMut::new());
//! let (mut receiver_decoder, mut sender_decoder) = (FrameDecoder::new(), FrameDecoder::new());
//! let mut chunks = file.chunks(100_000); // the sender never needs the whole file at once
//! let mut stored = Vec::new(); // the receiver's "temporary file"
//! let mut outcome = None;
//!
//! while outcome.is_none() {
//!     // Sender: hand in the next chunk when it wants one, then drain frames and events.
//!     if sender.wants_data() {
//!         if let Some(chunk) = chunks.next() {
//!             sender.send_chunk(now, Bytes::copy_from_slice(chunk))?;
//!         }
//!     }
//!     while let Some(frame) = sender.poll_frame() {
//!         encode(&frame, &mut to_receiver)?;
//!     }
//!     while let Some(event) = sender.poll_event() {
//!         if let SenderEvent::Completed { .. } | SenderEvent::Failed(_) = event {
//!             outcome = Some(event);
//!         }
//!     }
//!
//!     // Receiver: decode what arrived, feed it in, act on the events, send the answer.
//!     while let Some(frame) = receiver_decoder.decode(&mut to_receiver)? {
//!         receiver.handle_frame(now, frame);
//!         while let Some(event) = receiver.poll_event() {
//!             match event {
//!                 ReceiverEvent::Write { offset, data } => {
//!                     assert_eq!(offset, stored.len() as u64);
//!                     stored.extend_from_slice(&data);
//!                 }
//!                 // A real receiver fsyncs and renames the file here.
//!                 ReceiverEvent::Verified { .. } => receiver.file_committed()?,
//!                 _ => {}
//!             }
//!         }
//!     }
//!     while let Some(frame) = receiver.poll_frame() {
//!         encode(&frame, &mut to_sender)?;
//!     }
//!
//!     // Sender: take in the receiver's answer.
//!     while let Some(frame) = sender_decoder.decode(&mut to_sender)? {
//!         sender.handle_frame(now, frame);
//!     }
//! }
//! assert!(matches!(outcome, Some(SenderEvent::Completed { .. })));
//! assert_eq!(stored, file);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod codec;
mod error;
mod frame;
mod receiver;
mod sender;
mod time;
#[cfg(feature = "codec")]
mod tokio_codec;

#[doc(hidden)]
pub mod fuzzing;

pub use codec::{EncodedFrame, FrameDecoder, encode, encode_parts};
pub use error::{FrameError, Side, TransferError};
pub use frame::{
    FileHash, Frame, FrameType, HEADER_LEN, MAX_ACK_LEN, MAX_DATA_LEN, MAX_META_LEN,
    MAX_REASON_LEN, MAX_RESUME_LEN, Meta, ParseHashError,
};
pub use receiver::{
    DEFAULT_IDLE_TIMEOUT, MAX_PENDING_EVENTS, Receiver, ReceiverConfig, ReceiverEvent,
};
pub use sender::{DEFAULT_ACK_TIMEOUT, Sender, SenderConfig, SenderEvent};
#[cfg(feature = "codec")]
pub use tokio_codec::{CodecError, FrameCodec};
