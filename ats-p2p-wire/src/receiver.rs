//! The receiving side of one transfer.

use std::collections::VecDeque;
use std::mem;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use crate::error::{FrameError, Side, TransferError};
use crate::frame::{FileHash, Frame, MAX_DATA_LEN, Meta};
use crate::time::{deadline, earliest, expired};

/// Default longest silence while waiting for META, DATA or DONE: long enough for a slow
/// network path to stall and recover, short enough that a vanished sender is noticed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Most events the receiver holds before the caller drains them: each input adds at most three,
/// so a caller that follows the driving contract never gets near this; one that does not is
/// failed instead of letting DATA pile up in memory.
pub const MAX_PENDING_EVENTS: usize = 64;

/// Settings for a [`Receiver`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiverConfig {
    /// Largest file this receiver takes; a bigger offer is refused with NACK.
    pub max_size: u64,
    /// Longest wait for the next frame while META, DATA or DONE is expected.
    pub idle_timeout: Duration,
    /// Deadline for the whole transfer, from construction until ACK; `None` for none.
    pub overall_timeout: Option<Duration>,
}

impl ReceiverConfig {
    /// A config with `max_size`, [`DEFAULT_IDLE_TIMEOUT`] and no overall deadline.
    pub const fn new(max_size: u64) -> Self {
        Self {
            max_size,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            overall_timeout: None,
        }
    }
}

/// What the receiver tells its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReceiverEvent {
    /// META was accepted; the file's bytes start at `offset`: the prefix given to
    /// [`Receiver::with_resume`] when the sender took the resume offer, otherwise 0 (discard
    /// any prefix: truncate the file and restart the hash). Comes before any `Write`.
    Started {
        /// Where the first `Write` will be: 0, or the resumed prefix's length.
        offset: u64,
    },
    /// Write `data` at `offset` in the temporary file. Offsets are contiguous from the
    /// `Started` offset.
    Write {
        /// Byte offset in the file.
        offset: u64,
        /// The bytes (the DATA payload, not copied).
        data: Bytes,
    },
    /// Bytes received so far out of `total`.
    Progress {
        /// Bytes received.
        bytes: u64,
        /// The announced size.
        total: u64,
    },
    /// Only with [`Receiver::with_external_hash`]: every byte arrived and the size matches.
    /// Finish hashing the written bytes (in offset order) and pass the SHA-256 to
    /// [`Receiver::handle_hash`], or call [`Receiver::fail_local`] if that fails.
    HashNeeded {
        /// The file size.
        size: u64,
    },
    /// Every byte arrived and matches size and hash. Make the file durable (fsync, rename),
    /// then call [`Receiver::file_committed`], or [`Receiver::fail_local`] if that fails.
    Verified {
        /// The file size.
        size: u64,
        /// The verified SHA-256.
        hash: FileHash,
    },
    /// The file was committed and ACK is queued: the transfer succeeded.
    Completed {
        /// The file size.
        size: u64,
        /// The verified SHA-256.
        hash: FileHash,
    },
    /// The transfer failed; a NACK or ERROR for the peer may be queued. Discard the
    /// temporary file.
    Failed(TransferError),
}

/// States, named after what they expect next.
#[derive(Clone, Debug)]
enum State {
    /// Waiting for META.
    ExpectMeta,
    /// Waiting for DATA or DONE; `received` bytes so far, hashed by `hasher` (none when the
    /// caller hashes).
    ExpectData {
        received: u64,
        hasher: Option<Sha256>,
    },
    /// Every byte arrived; waiting for the caller's hash of them (prefix included).
    ExpectHash,
    /// Verified; waiting for the caller to commit the file.
    ExpectCommit,
    /// ACK queued.
    Done,
    /// Failed; a reply may be queued.
    Failed,
}

impl State {
    fn expects(&self) -> &'static str {
        match self {
            Self::ExpectMeta => "META",
            Self::ExpectData { .. } => "DATA or DONE",
            Self::ExpectHash => "the local hash",
            Self::ExpectCommit => "the local file commit",
            Self::Done | Self::Failed => "nothing",
        }
    }
}

/// The receiving side of one transfer, as a sans-io state machine.
///
/// It is built from the offer the application accepted, checks that META matches it, hashes
/// DATA as it streams, refuses a single byte more than announced, and at DONE checks size and
/// SHA-256. It sends ACK only after the caller says the file is durable.
///
/// # Driving contract
///
/// - Inputs: [`handle_frame`](Self::handle_frame) for each decoded frame,
///   [`handle_decode_error`](Self::handle_decode_error) if the decoder failed,
///   [`handle_closed`](Self::handle_closed) when the stream ended,
///   [`handle_timeout`](Self::handle_timeout) when the instant from
///   [`poll_timeout`](Self::poll_timeout) has passed, and the application calls
///   [`file_committed`](Self::file_committed) and [`fail_local`](Self::fail_local).
/// - After every input, drain the outputs in this order: [`poll_frame`](Self::poll_frame)
///   until `None` (write them to the peer), [`poll_event`](Self::poll_event) until `None`
///   (perform each `Write` before the next input; stop feeding frames after `Verified`),
///   then re-arm the timer from [`poll_timeout`](Self::poll_timeout).
/// - The transfer is over after `Completed` or `Failed`; after that, flush the last frame and
///   close the stream. Later inputs are ignored.
///
/// Time is always passed in; the receiver never reads a clock.
#[derive(Debug)]
pub struct Receiver {
    offer: Meta,
    config: ReceiverConfig,
    state: State,
    idle_deadline: Option<Instant>,
    overall_deadline: Option<Instant>,
    /// DATA bytes accepted (also kept after a failure, for reporting).
    received: u64,
    /// Frames to send: RESUME (only when offered), then at most one of ACK, NACK or ERROR.
    out: VecDeque<Frame>,
    /// With [`Self::with_resume`]: the prefix length the caller holds (it answers resume
    /// offers); `None`: a seed receiver that ignores them.
    resume_prefix: Option<u64>,
    /// The offset the transfer resumed from, once a resume offer was answered.
    resumed_from: Option<u64>,
    events: VecDeque<ReceiverEvent>,
    /// The caller hashes the written bytes ([`Self::with_external_hash`]).
    external_hash: bool,
}

impl Receiver {
    /// The caller hashes the written bytes itself (for example on the thread that writes the
    /// file, in parallel with decryption): instead of hashing DATA, the receiver asks for the
    /// hash with [`ReceiverEvent::HashNeeded`] after DONE and verifies it in
    /// [`Self::handle_hash`] before `Verified`. Call before the first frame.
    #[must_use]
    pub fn with_external_hash(mut self) -> Self {
        if matches!(self.state, State::ExpectMeta) {
            self.external_hash = true;
        }
        self
    }

    /// Answers resume offers: when META carries `"resume":true`, RESUME `{"offset":prefix}` is
    /// queued and DATA continues at `prefix` (reported by [`ReceiverEvent::Started`]). `prefix`
    /// is the length of the partial file the caller holds and has **re-hashed from disk**
    /// (0 for none); only with [`Self::with_external_hash`] (the caller's hash must cover the
    /// prefix, which this machine never sees), call after it and before the first frame. A
    /// `prefix` beyond the offered size is treated as 0. Without this call the receiver
    /// behaves like a seed receiver and ignores the offer.
    #[must_use]
    pub fn with_resume(mut self, prefix: u64) -> Self {
        if matches!(self.state, State::ExpectMeta) && self.external_hash {
            self.resume_prefix = Some(if prefix <= self.offer.size { prefix } else { 0 });
        }
        self
    }

    /// The offset this transfer resumed from (after `Started`, when the sender took the
    /// offer); `None` otherwise.
    pub const fn resumed_from(&self) -> Option<u64> {
        self.resumed_from
    }

    /// A receiver for the accepted `offer`, starting at `now`. An offer above
    /// `config.max_size` fails at once with a queued NACK.
    pub fn new(offer: Meta, config: ReceiverConfig, now: Instant) -> Self {
        let mut receiver = Self {
            idle_deadline: deadline(now, config.idle_timeout),
            overall_deadline: config.overall_timeout.and_then(|t| deadline(now, t)),
            offer,
            config,
            state: State::ExpectMeta,
            received: 0,
            out: VecDeque::new(),
            resume_prefix: None,
            resumed_from: None,
            events: VecDeque::new(),
            external_hash: false,
        };
        if receiver.offer.size > receiver.config.max_size {
            receiver.fail(TransferError::TooLarge {
                size: receiver.offer.size,
                max: receiver.config.max_size,
            });
        }
        receiver
    }

    /// The offer this receiver expects.
    pub const fn offer(&self) -> &Meta {
        &self.offer
    }

    /// DATA bytes accepted so far.
    pub const fn bytes_received(&self) -> u64 {
        self.received
    }

    /// `true` once the transfer completed or failed.
    pub const fn is_finished(&self) -> bool {
        matches!(self.state, State::Done | State::Failed)
    }

    /// Handles a frame from the peer that arrived at `now`.
    pub fn handle_frame(&mut self, now: Instant, frame: Frame) {
        if self.is_finished() {
            return;
        }
        if self.check_deadlines(now) {
            return;
        }
        // An input adds at most three events: refuse one that could pass the bound.
        if self.events.len().saturating_add(3) > MAX_PENDING_EVENTS {
            self.fail(TransferError::ApiMisuse(
                "receiver events were not drained with poll_event",
            ));
            return;
        }
        if matches!(self.state, State::ExpectMeta | State::ExpectData { .. }) {
            self.idle_deadline = deadline(now, self.config.idle_timeout);
        }
        // `step` consumes the state; `Failed` is only a placeholder until it returns.
        let state = mem::replace(&mut self.state, State::Failed);
        match self.step(state, frame) {
            Ok(next) => self.state = next,
            Err(err) => self.enter_failed(err),
        }
    }

    /// One transition: the current state and a frame give the next state or an error.
    fn step(&mut self, state: State, frame: Frame) -> Result<State, TransferError> {
        match (state, frame) {
            (_, Frame::Error(message)) => Err(TransferError::PeerError(message)),
            (_, Frame::Nack(reason)) => Err(TransferError::Nack(reason)),
            (State::ExpectMeta, Frame::Meta(meta)) => {
                self.check_meta(&meta)?;
                let start = match self.resume_prefix {
                    Some(prefix) if meta.resume => {
                        self.out.push_back(Frame::Resume(prefix));
                        self.resumed_from = Some(prefix);
                        prefix
                    }
                    _ => 0,
                };
                self.received = start;
                self.events
                    .push_back(ReceiverEvent::Started { offset: start });
                if start > 0 {
                    self.events.push_back(ReceiverEvent::Progress {
                        bytes: start,
                        total: self.offer.size,
                    });
                }
                Ok(State::ExpectData {
                    received: start,
                    hasher: (!self.external_hash).then(Sha256::new),
                })
            }
            (
                State::ExpectData {
                    received,
                    mut hasher,
                },
                Frame::Data(data),
            ) => {
                if data.len() > MAX_DATA_LEN {
                    return Err(FrameError::TooLong {
                        ty: crate::FrameType::Data,
                        len: u64::try_from(data.len()).unwrap_or(u64::MAX),
                        max: MAX_DATA_LEN,
                    }
                    .into());
                }
                let total = u64::try_from(data.len())
                    .ok()
                    .and_then(|len| received.checked_add(len))
                    .filter(|&total| total <= self.offer.size)
                    .ok_or(TransferError::Oversize {
                        size: self.offer.size,
                    })?;
                self.received = total;
                if !data.is_empty() {
                    if let Some(h) = hasher.as_mut() {
                        h.update(&data);
                    }
                    self.events.push_back(ReceiverEvent::Write {
                        offset: received,
                        data,
                    });
                    self.events.push_back(ReceiverEvent::Progress {
                        bytes: total,
                        total: self.offer.size,
                    });
                }
                Ok(State::ExpectData {
                    received: total,
                    hasher,
                })
            }
            (State::ExpectData { received, hasher }, Frame::Done) => {
                if received != self.offer.size {
                    return Err(TransferError::SizeMismatch {
                        size: self.offer.size,
                        received,
                    });
                }
                let Some(hasher) = hasher else {
                    self.events
                        .push_back(ReceiverEvent::HashNeeded { size: received });
                    return Ok(State::ExpectHash);
                };
                let actual = FileHash(hasher.finalize().into());
                self.check_hash(actual)?;
                Ok(State::ExpectCommit)
            }
            (state, frame) => Err(TransferError::UnexpectedFrame {
                expected: state.expects(),
                got: frame.frame_type(),
            }),
        }
    }

    /// Compares the hash of what arrived with the offer's; queues `Verified` when they match.
    fn check_hash(&mut self, actual: FileHash) -> Result<(), TransferError> {
        if actual != self.offer.hash {
            return Err(TransferError::HashMismatch {
                expected: self.offer.hash,
                actual,
            });
        }
        self.events.push_back(ReceiverEvent::Verified {
            size: self.offer.size,
            hash: actual,
        });
        Ok(())
    }

    fn check_meta(&self, meta: &Meta) -> Result<(), TransferError> {
        let field = if meta.name != self.offer.name {
            "name"
        } else if meta.size != self.offer.size {
            "size"
        } else if meta.hash != self.offer.hash {
            "hash"
        } else {
            return Ok(());
        };
        Err(TransferError::MetaMismatch { field })
    }

    /// The decoder reported malformed bytes; the transfer fails and NACK is queued.
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

    /// Fails the transfer if a deadline has passed; returns `true` if it did.
    fn check_deadlines(&mut self, now: Instant) -> bool {
        if self.is_finished() || !expired(self.poll_timeout(), now) {
            return false;
        }
        let waiting_for = self.state.expects();
        self.fail(TransferError::TimedOut { waiting_for });
        true
    }

    /// With [`Self::with_external_hash`]: the SHA-256 of every byte written, asked for by
    /// [`ReceiverEvent::HashNeeded`]. A match queues `Verified`; a mismatch fails the transfer
    /// (NACK). Outside that state returns [`TransferError::ApiMisuse`] and changes nothing.
    pub fn handle_hash(&mut self, actual: FileHash) -> Result<(), TransferError> {
        if !matches!(self.state, State::ExpectHash) {
            return Err(TransferError::ApiMisuse(
                "handle_hash is only valid after HashNeeded",
            ));
        }
        match self.check_hash(actual) {
            Ok(()) => self.state = State::ExpectCommit,
            Err(err) => self.enter_failed(err),
        }
        Ok(())
    }

    /// The application made the verified file durable (fsync, rename): queue ACK.
    ///
    /// Only valid after [`ReceiverEvent::Verified`] and before any `Failed`; otherwise returns
    /// [`TransferError::ApiMisuse`] and changes nothing (if the transfer failed meanwhile,
    /// remove the file again).
    pub fn file_committed(&mut self) -> Result<(), TransferError> {
        if !matches!(self.state, State::ExpectCommit) {
            return Err(TransferError::ApiMisuse(
                "file_committed is only valid after Verified",
            ));
        }
        self.state = State::Done;
        self.out.push_back(Frame::Ack(ack_payload(&self.offer)));
        self.events.push_back(ReceiverEvent::Completed {
            size: self.offer.size,
            hash: self.offer.hash,
        });
        Ok(())
    }

    /// The application failed (disk full, write error, cancelled): the transfer fails and an
    /// ERROR frame with `reason` is queued. Ignored once the transfer is over.
    pub fn fail_local(&mut self, reason: impl Into<String>) {
        self.fail(TransferError::Local(reason.into()));
    }

    /// Fails the transfer unless it is already over.
    fn fail(&mut self, err: TransferError) {
        if !self.is_finished() {
            self.enter_failed(err);
        }
    }

    fn enter_failed(&mut self, err: TransferError) {
        self.state = State::Failed;
        self.out.extend(err.reply(Side::Receiver));
        self.events.push_back(ReceiverEvent::Failed(err));
    }

    /// The next frame to send to the peer.
    pub fn poll_frame(&mut self) -> Option<Frame> {
        self.out.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<ReceiverEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next; `None` when no
    /// deadline is running.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::ExpectMeta | State::ExpectData { .. } => {
                earliest(self.idle_deadline, self.overall_deadline)
            }
            State::ExpectHash | State::ExpectCommit => self.overall_deadline,
            State::Done | State::Failed => None,
        }
    }
}

/// The ACK payload: `{"size":…,"hash":"…"}`, so the sender can log what was stored. Peers
/// that expect an empty ACK ignore it (the seed protocol allows JSON or empty).
fn ack_payload(offer: &Meta) -> Bytes {
    Bytes::from(format!(
        r#"{{"size":{},"hash":"{}"}}"#,
        offer.size, offer.hash
    ))
}
