//! The sending side of one transfer.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec::encode_parts;
use crate::error::{FrameError, Side, TransferError};
use crate::frame::{Frame, MAX_DATA_LEN, Meta};
use crate::time::{deadline, earliest, expired};

/// Default wait for ACK after DONE: the receiver must finish hashing, fsync and rename a file
/// of any size, which can take a while on slow disks.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings for a [`Sender`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderConfig {
    /// Longest wait for ACK, NACK or ERROR once every byte was handed in.
    pub ack_timeout: Duration,
    /// Deadline for the whole transfer, from construction until ACK; `None` for none.
    pub overall_timeout: Option<Duration>,
    /// Offer to resume: META carries `"resume":true` and the sender waits (up to
    /// `ack_timeout`) for the receiver's RESUME before any DATA. Set it only when the receiver
    /// said it can resume (a seed receiver would never answer); ignored for an empty file.
    pub offer_resume: bool,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            ack_timeout: DEFAULT_ACK_TIMEOUT,
            overall_timeout: None,
            offer_resume: false,
        }
    }
}

/// What the sender tells its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SenderEvent {
    /// Only after offering resume: the receiver holds the first `offset` bytes. Hand in the
    /// file from `offset` on (the first DATA starts there); it comes before any progress.
    Resumed {
        /// Where the file's bytes continue.
        offset: u64,
    },
    /// Bytes taken out in DATA frames so far, out of `total` (only the latest is kept).
    Progress {
        /// Bytes sent.
        bytes: u64,
        /// The announced size.
        total: u64,
    },
    /// The receiver acknowledged the file; `ack` is its ACK payload (JSON or empty).
    Completed {
        /// The ACK payload as received.
        ack: Bytes,
    },
    /// The transfer failed; an ERROR for the peer may be queued.
    Failed(TransferError),
}

/// States, named after what they expect next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// META offered resuming; waiting for the receiver's RESUME.
    ExpectResume,
    /// Waiting for the caller to hand in file bytes; `given` so far.
    ExpectChunks { given: u64 },
    /// Every byte was handed in and DONE queued; waiting for ACK, NACK or ERROR.
    ExpectAck,
    /// ACK received.
    Done,
    /// Failed; a reply may be queued.
    Failed,
}

impl State {
    const fn expects(self) -> &'static str {
        match self {
            Self::ExpectResume => "RESUME",
            Self::ExpectChunks { .. } => "file data from the application",
            Self::ExpectAck => "ACK",
            Self::Done | Self::Failed => "nothing",
        }
    }
}

/// The sending side of one transfer, as a sans-io state machine.
///
/// It queues META, turns the file chunks the caller hands in into DATA frames of at most
/// [`MAX_DATA_LEN`] bytes (splitting without copying), queues DONE once exactly `size` bytes
/// were handed in, and then waits for the receiver's answer within a deadline. It never needs
/// more of the file than the chunk it is given.
///
/// # Driving contract
///
/// - Inputs: application calls [`send_chunk`](Self::send_chunk) (only while
///   [`wants_data`](Self::wants_data)) and [`fail_local`](Self::fail_local);
///   [`handle_frame`](Self::handle_frame) for each decoded frame from the peer,
///   [`handle_decode_error`](Self::handle_decode_error),
///   [`handle_closed`](Self::handle_closed) and [`handle_timeout`](Self::handle_timeout).
/// - After constructing it and after every input, drain the outputs in this order:
///   [`poll_frame`](Self::poll_frame) until `None` (write them to the peer, in order),
///   [`poll_event`](Self::poll_event) until `None`, then re-arm the timer from
///   [`poll_timeout`](Self::poll_timeout).
/// - Read frames from the peer at all times (a NACK can come early); the transfer is over
///   after `Completed` or `Failed`: flush the last frame, then close the stream.
///
/// Time is always passed in; the sender never reads a clock.
#[derive(Debug)]
pub struct Sender {
    meta: Meta,
    config: SenderConfig,
    state: State,
    /// META not yet taken out.
    meta_out: bool,
    /// The rest of the current chunk, taken out in DATA frames.
    data_out: Bytes,
    /// DONE not yet taken out.
    done_out: bool,
    /// ERROR to send after a failure.
    reply_out: Option<Frame>,
    /// Bytes taken out in DATA frames, counted from the file's start (a resumed transfer
    /// starts at the receiver's offset).
    sent: u64,
    /// The offset the receiver resumed from, once RESUME arrived.
    resumed_from: Option<u64>,
    /// `Resumed` not yet taken out.
    resumed_event: bool,
    progress_dirty: bool,
    outcome: Option<SenderEvent>,
    ack_deadline: Option<Instant>,
    overall_deadline: Option<Instant>,
}

impl Sender {
    /// A sender for the file described by `meta`, starting at `now`; META is queued (and DONE
    /// too for an empty file). Fails only if `meta` does not fit in a META frame (a very long
    /// name).
    pub fn new(mut meta: Meta, config: SenderConfig, now: Instant) -> Result<Self, TransferError> {
        meta.resume = config.offer_resume && meta.size > 0;
        if encode_parts(&Frame::Meta(meta.clone())).is_err() {
            return Err(TransferError::ApiMisuse(
                "the file name is too long for a META frame",
            ));
        }
        let mut sender = Self {
            overall_deadline: config.overall_timeout.and_then(|t| deadline(now, t)),
            ack_deadline: meta
                .resume
                .then(|| deadline(now, config.ack_timeout))
                .flatten(),
            state: if meta.resume {
                State::ExpectResume
            } else {
                State::ExpectChunks { given: 0 }
            },
            meta,
            config,
            meta_out: true,
            data_out: Bytes::new(),
            done_out: false,
            reply_out: None,
            sent: 0,
            resumed_from: None,
            resumed_event: false,
            progress_dirty: false,
            outcome: None,
        };
        if sender.meta.size == 0 {
            sender.all_given(now);
        }
        Ok(sender)
    }

    /// The META this sender announces.
    pub const fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The offset the receiver resumed from (after [`SenderEvent::Resumed`]); `None` when
    /// resuming was not offered or not yet answered.
    pub const fn resumed_from(&self) -> Option<u64> {
        self.resumed_from
    }

    /// `true` when [`send_chunk`](Self::send_chunk) would accept more bytes: the transfer is
    /// still sending and the previous chunk has been taken out with `poll_frame`.
    pub fn wants_data(&self) -> bool {
        matches!(self.state, State::ExpectChunks { .. }) && self.data_out.is_empty()
    }

    /// Bytes the caller still has to hand in (before RESUME arrived: the whole file).
    pub const fn remaining(&self) -> u64 {
        match self.state {
            State::ExpectChunks { given } => self.meta.size.saturating_sub(given),
            State::ExpectResume => self.meta.size,
            _ => 0,
        }
    }

    /// `true` once the transfer completed or failed.
    pub const fn is_finished(&self) -> bool {
        matches!(self.state, State::Done | State::Failed)
    }

    /// Hands in the next `chunk` of the file (any length; it is sent as DATA frames of at
    /// most [`MAX_DATA_LEN`] without copying). Once exactly `size` bytes were handed in, DONE
    /// is queued and the ACK deadline starts at `now`.
    ///
    /// Refused with [`TransferError::ApiMisuse`], changing nothing, when the transfer is no
    /// longer sending, when the previous chunk was not yet taken out, or when `chunk` would go
    /// past the announced size.
    pub fn send_chunk(&mut self, now: Instant, chunk: Bytes) -> Result<(), TransferError> {
        let State::ExpectChunks { given } = self.state else {
            return Err(TransferError::ApiMisuse(
                "send_chunk after the transfer stopped sending",
            ));
        };
        if !self.data_out.is_empty() {
            return Err(TransferError::ApiMisuse(
                "send_chunk before the previous chunk was taken out with poll_frame",
            ));
        }
        let given = u64::try_from(chunk.len())
            .ok()
            .and_then(|len| given.checked_add(len))
            .filter(|&total| total <= self.meta.size)
            .ok_or(TransferError::ApiMisuse(
                "send_chunk beyond the size announced in META",
            ))?;
        self.data_out = chunk;
        self.state = State::ExpectChunks { given };
        if given == self.meta.size {
            self.all_given(now);
        }
        Ok(())
    }

    fn all_given(&mut self, now: Instant) {
        self.state = State::ExpectAck;
        self.done_out = true;
        self.ack_deadline = deadline(now, self.config.ack_timeout);
    }

    /// Handles a frame from the peer that arrived at `now`.
    pub fn handle_frame(&mut self, now: Instant, frame: Frame) {
        if self.is_finished() || self.check_deadlines(now) {
            return;
        }
        match (self.state, frame) {
            (_, Frame::Nack(reason)) => self.fail(TransferError::Nack(reason)),
            (_, Frame::Error(message)) => self.fail(TransferError::PeerError(message)),
            // RESUME is valid once, after META offered it (it has left: META goes first).
            (State::ExpectResume, Frame::Resume(offset)) if !self.meta_out => {
                if offset > self.meta.size {
                    self.fail(TransferError::ResumeBeyondSize {
                        offset,
                        size: self.meta.size,
                    });
                    return;
                }
                self.resumed_from = Some(offset);
                self.resumed_event = true;
                self.sent = offset;
                self.ack_deadline = None;
                self.state = State::ExpectChunks { given: offset };
                if offset == self.meta.size {
                    self.all_given(now);
                }
            }
            // ACK is only valid once DONE has left (the receiver cannot have seen it before).
            (State::ExpectAck, Frame::Ack(ack)) if !self.done_out => {
                self.state = State::Done;
                self.outcome = Some(SenderEvent::Completed { ack });
            }
            (state, frame) => self.fail(TransferError::UnexpectedFrame {
                expected: match state {
                    State::ExpectAck => "ACK",
                    State::ExpectResume => "RESUME",
                    _ => "nothing (still sending)",
                },
                got: frame.frame_type(),
            }),
        }
    }

    /// The decoder reported malformed bytes; the transfer fails and ERROR is queued.
    pub fn handle_decode_error(&mut self, err: FrameError) {
        self.fail(TransferError::Malformed(err));
    }

    /// The byte stream ended; unless the transfer was over, it fails.
    pub fn handle_closed(&mut self) {
        let waiting_for = self.state.expects();
        self.fail(TransferError::Closed { waiting_for });
    }

    /// Checks the deadlines against `now`; call when [`poll_timeout`](Self::poll_timeout)'s
    /// instant has passed (calling early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.check_deadlines(now);
    }

    fn check_deadlines(&mut self, now: Instant) -> bool {
        if self.is_finished() || !expired(self.poll_timeout(), now) {
            return false;
        }
        let waiting_for = self.state.expects();
        self.fail(TransferError::TimedOut { waiting_for });
        true
    }

    /// The application failed (read error, file changed, cancelled): the transfer fails and
    /// an ERROR frame with `reason` is queued. Ignored once the transfer is over.
    pub fn fail_local(&mut self, reason: impl Into<String>) {
        self.fail(TransferError::Local(reason.into()));
    }

    fn fail(&mut self, err: TransferError) {
        if self.is_finished() {
            return;
        }
        self.state = State::Failed;
        self.meta_out = false;
        self.data_out = Bytes::new();
        self.done_out = false;
        self.resumed_event = false;
        self.reply_out = err.reply(Side::Sender);
        self.outcome = Some(SenderEvent::Failed(err));
    }

    /// The next frame to send: META, then DATA (at most [`MAX_DATA_LEN`] each), then DONE;
    /// or ERROR after a failure.
    pub fn poll_frame(&mut self) -> Option<Frame> {
        if self.meta_out {
            self.meta_out = false;
            return Some(Frame::Meta(self.meta.clone()));
        }
        if !self.data_out.is_empty() {
            let n = self.data_out.len().min(MAX_DATA_LEN);
            let data = self.data_out.split_to(n);
            // n <= MAX_DATA_LEN, and `sent` never passes `size` (checked in send_chunk).
            self.sent = self
                .sent
                .saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
            self.progress_dirty = true;
            return Some(Frame::Data(data));
        }
        if self.done_out {
            self.done_out = false;
            return Some(Frame::Done);
        }
        self.reply_out.take()
    }

    /// The next event: `Resumed`, then the latest progress, then the outcome.
    pub fn poll_event(&mut self) -> Option<SenderEvent> {
        if self.resumed_event {
            self.resumed_event = false;
            if let Some(offset) = self.resumed_from {
                return Some(SenderEvent::Resumed { offset });
            }
        }
        if self.progress_dirty {
            self.progress_dirty = false;
            return Some(SenderEvent::Progress {
                bytes: self.sent,
                total: self.meta.size,
            });
        }
        self.outcome.take()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next; `None` when no
    /// deadline is running.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::ExpectChunks { .. } => self.overall_deadline,
            State::ExpectResume | State::ExpectAck => {
                earliest(self.ack_deadline, self.overall_deadline)
            }
            State::Done | State::Failed => None,
        }
    }
}
