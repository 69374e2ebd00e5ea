//! The tokio driver: [`SecretStream`] over any [`RawStream`] (an `AsyncRead + AsyncWrite`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::SecretStreamError;
use super::core::{Input, MAX_FRAME_PLAINTEXT, SecretStreamCore, VECTORED_SLACK};
use super::raw::RawStream;
use crate::keys::{KeyPair, PublicKey};
use crate::noise::{Handshake, NoiseHandshake};

/// Keep-alive interval: an empty encrypted message after this long without sending
/// (hyperdht's `connectionKeepAlive`).
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_millis(5000);
/// A stand-alone handshake (three Noise messages and the two headers) must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Vectored writes smaller than this are coalesced like plain writes (copied into the staging
/// buffer); larger ones are encrypted straight from the caller's slices.
const VECTORED_DIRECT_MIN: usize = 4 * 1024;
/// Slices of one vectored write taken into one message.
const MAX_VECTORED_PARTS: usize = 4;
/// Encrypted bytes we queue ahead of the raw stream before `poll_write` pushes back.
const TX_HIGH_WATER: usize = 256 * 1024;
/// Bytes we ask the raw stream for per read.
const READ_CHUNK: usize = 64 * 1024;

/// An encrypted Hyperswarm secret stream over `S`.
///
/// Writes are encrypted and queued at once (no waiting for the peer); backpressure comes only
/// from the raw writer (at most 256 KiB of ciphertext is queued). Small writes are sent at once
/// when the raw stream is idle and coalesced into one frame (up to 64 KiB) while it is busy;
/// call `flush` (or `shutdown`) to be sure everything left. Reads hold at most one frame of
/// plaintext plus one read chunk. `shutdown` flushes and half-closes the raw stream; the peer
/// then reads EOF. Keep-alives (every [`KEEP_ALIVE_INTERVAL`] of silence) are sent while a read
/// is pending (the usual state of an idle connection), and filtered on receive. Works split
/// (`tokio::io::split`) between a reader task and a writer task.
pub struct SecretStream<S> {
    raw: S,
    core: SecretStreamCore,
    rx: BytesMut,
    plain: BytesMut,
    staging: BytesMut,
    keep_alive: Option<Pin<Box<Sleep>>>,
    rx_eof: bool,
    shutdown: bool,
    /// A writer is parked on the raw stream's write readiness (its waker is registered there).
    write_parked: bool,
    /// Copied from the completed handshake by [`Self::finish_setup`].
    remote_public_key: PublicKey,
    handshake_hash: [u8; 64],
}

impl<S> std::fmt::Debug for SecretStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretStream")
            .field("core", &self.core)
            .field("buffered_plaintext", &self.plain.len())
            .field("staged", &self.staging.len())
            .finish_non_exhaustive()
    }
}

fn now_std() -> std::time::Instant {
    Instant::now().into_std()
}

impl<S: RawStream> SecretStream<S> {
    /// Stand-alone initiator: runs Noise XX on `raw`. With `expected_remote`, any other remote
    /// key is refused before we send message 3 (the responder never gets a session).
    pub async fn connect(
        raw: S,
        keypair: KeyPair,
        expected_remote: Option<PublicKey>,
    ) -> Result<Self, SecretStreamError> {
        let core = SecretStreamCore::xx_initiator(keypair)?;
        Self::run_handshake(raw, core, move |pk: &PublicKey| {
            expected_remote.is_none_or(|e| e == *pk)
        })
        .await
    }

    /// Stand-alone responder: runs Noise XX on `raw`; `firewall` decides on the initiator's key
    /// as soon as it is decrypted (a refused key never gets our header).
    pub async fn accept(
        raw: S,
        keypair: KeyPair,
        firewall: impl FnMut(&PublicKey) -> bool,
    ) -> Result<Self, SecretStreamError> {
        let core = SecretStreamCore::xx_responder(keypair)?;
        Self::run_handshake(raw, core, firewall).await
    }

    /// Stand-alone mode with a caller-built XX handshake (for example fixed keys in tests).
    pub async fn with_noise(
        raw: S,
        noise: NoiseHandshake,
        firewall: impl FnMut(&PublicKey) -> bool,
    ) -> Result<Self, SecretStreamError> {
        let core = SecretStreamCore::from_noise(noise)?;
        Self::run_handshake(raw, core, firewall).await
    }

    /// Pre-made handshake (HyperDHT's IK result): only the two id+header messages travel on
    /// `raw`. Writes our id+header and returns without waiting for the peer's, which the first
    /// read checks (a wrong id or an early EOF is then a read error).
    pub async fn from_handshake(raw: S, handshake: Handshake) -> Result<Self, SecretStreamError> {
        let mut stream = Self::new(raw, SecretStreamCore::from_handshake(handshake));
        stream.finish_setup()?;
        stream.write_transmit().await?;
        Ok(stream)
    }

    /// Sets the largest frame length accepted from the peer: default
    /// [`DEFAULT_MAX_FRAME_LEN`](super::DEFAULT_MAX_FRAME_LEN) (what our own writer sends, with
    /// margin), at most [`MAX_FRAME_LEN`](super::frame::MAX_FRAME_LEN), the protocol's 2^24 − 1
    /// (a peer can make us buffer up to this much for one frame). A longer frame fails the
    /// stream.
    pub fn set_max_frame_len(&mut self, max: usize) {
        self.core.set_max_frame_len(max);
    }

    fn new(raw: S, core: SecretStreamCore) -> Self {
        Self {
            raw,
            core,
            rx: BytesMut::with_capacity(READ_CHUNK),
            plain: BytesMut::new(),
            staging: BytesMut::new(),
            keep_alive: None,
            rx_eof: false,
            shutdown: false,
            write_parked: false,
            remote_public_key: PublicKey::from_bytes([0; 32]),
            handshake_hash: [0; 64],
        }
    }

    async fn run_handshake(
        raw: S,
        core: SecretStreamCore,
        firewall: impl FnMut(&PublicKey) -> bool,
    ) -> Result<Self, SecretStreamError> {
        let mut stream = Self::new(raw, core);
        let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.drive_handshake(firewall))
            .await
            .unwrap_or(Err(SecretStreamError::HandshakeTimeout));
        if let Err(e) = result {
            tracing::debug!(error = %e, "secret stream handshake failed");
            // Tell the peer at once rather than letting it time out; errors here change nothing.
            let _ = tokio::time::timeout(Duration::from_millis(100), stream.raw.shutdown()).await;
            return Err(e);
        }
        stream.finish_setup()?;
        Ok(stream)
    }

    async fn write_transmit(&mut self) -> Result<(), SecretStreamError> {
        if self.core.transmit().is_empty() {
            return Ok(());
        }
        self.raw.write_all(self.core.transmit()).await?;
        let n = self.core.transmit().len();
        self.core.consume_transmit(n);
        self.raw.flush().await?;
        Ok(())
    }

    /// Runs the handshake until the peer's id+header checked out, writing and reading at the
    /// same time (a raw stream with little buffering must not deadlock two writers).
    async fn drive_handshake(
        &mut self,
        mut firewall: impl FnMut(&PublicKey) -> bool,
    ) -> Result<(), SecretStreamError> {
        let mut open = false;
        std::future::poll_fn(|cx| {
            loop {
                let drained = match self.poll_drain(cx) {
                    Poll::Ready(Ok(())) => true,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => false,
                };
                if open {
                    if !drained {
                        return Poll::Pending;
                    }
                    return Pin::new(&mut self.raw).poll_flush(cx).map_err(Into::into);
                }
                match self.core.handle_input(&mut self.rx)? {
                    Input::Verdict(pk) => {
                        let allow = firewall(&pk);
                        if !allow {
                            tracing::debug!(remote = %pk, "key firewall refused the remote key");
                        }
                        self.core.handle_verdict(allow)?;
                    }
                    Input::Open => open = true,
                    Input::Message(_) => {
                        return Poll::Ready(Err(SecretStreamError::Internal(
                            "message before the header",
                        )));
                    }
                    Input::NeedMore => {
                        if !self.core.transmit().is_empty() && drained {
                            // handle_input queued our next message: write it first
                            continue;
                        }
                        self.rx.reserve(READ_CHUNK);
                        match ready!(tokio_util::io::poll_read_buf(
                            Pin::new(&mut self.raw),
                            cx,
                            &mut self.rx
                        )) {
                            Ok(0) => return Poll::Ready(Err(SecretStreamError::UnexpectedEof)),
                            Ok(_) => {}
                            Err(e) => return Poll::Ready(Err(e.into())),
                        }
                    }
                }
            }
        })
        .await
    }
}

impl<S> SecretStream<S> {
    /// The peer's static (identity) key.
    pub fn remote_public_key(&self) -> PublicKey {
        self.remote_public_key
    }

    /// The 64-byte Noise handshake hash (the channel binding).
    pub fn handshake_hash(&self) -> [u8; 64] {
        self.handshake_hash
    }

    /// Whether we were the Noise initiator.
    pub fn is_initiator(&self) -> bool {
        self.core.is_initiator()
    }

    /// Records the handshake's results and starts the keep-alive clock.
    fn finish_setup(&mut self) -> Result<(), SecretStreamError> {
        let h = self.core.handshake().ok_or(SecretStreamError::Internal(
            "stream set up without a handshake",
        ))?;
        self.remote_public_key = h.remote_public_key;
        self.handshake_hash = h.hash;
        self.set_keep_alive(Some(KEEP_ALIVE_INTERVAL));
        Ok(())
    }

    /// Sets the keep-alive interval (`None` turns it off). Default [`KEEP_ALIVE_INTERVAL`].
    pub fn set_keep_alive(&mut self, interval: Option<Duration>) {
        self.core.set_keep_alive(interval, now_std());
        self.keep_alive = self
            .core
            .poll_timeout()
            .map(|d| Box::pin(tokio::time::sleep_until(Instant::from_std(d))));
    }

    /// The raw stream.
    pub fn get_ref(&self) -> &S {
        &self.raw
    }

    /// The sans-io protocol state (for inspection).
    pub fn core(&self) -> &SecretStreamCore {
        &self.core
    }

    fn seal_staging(&mut self) -> io::Result<()> {
        if self.staging.is_empty() {
            return Ok(());
        }
        self.core.send_stream_parts(&[&self.staging], now_std())?;
        self.staging.clear();
        Ok(())
    }

    /// Sends a keep-alive when due and re-arms the timer (registering `cx`).
    fn poll_keep_alive(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        loop {
            let Some(deadline) = self.core.poll_timeout() else {
                return Ok(());
            };
            let Some(sleep) = self.keep_alive.as_mut() else {
                return Ok(());
            };
            let deadline = Instant::from_std(deadline);
            if sleep.deadline() > deadline {
                sleep.as_mut().reset(deadline);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                // Staged data is better than an empty message.
                self.seal_staging()?;
                self.core.handle_timeout(now.into_std())?;
            }
            let next = self.core.poll_timeout().map(Instant::from_std);
            match (next, self.keep_alive.as_mut()) {
                (Some(next), Some(sleep)) if next > now => sleep.as_mut().reset(next),
                (Some(_), Some(_)) => {
                    return Err(SecretStreamError::Internal("keep-alive clock").into());
                }
                _ => return Ok(()),
            }
        }
    }
}

impl<S: RawStream> SecretStream<S> {
    /// Ready when fewer than [`TX_HIGH_WATER`] encrypted bytes wait for the raw stream (after
    /// trying to drain them); otherwise parks the writer on the raw stream.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.core.transmit().len() >= TX_HIGH_WATER {
            if let Poll::Ready(Err(e)) = self.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
            if self.core.transmit().len() >= TX_HIGH_WATER {
                // poll_drain saw Pending: the raw writer will wake us.
                self.write_parked = true;
                return Poll::Pending;
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Hands queued ciphertext to the raw stream until it is empty or the raw stream blocks.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.core.transmit().is_empty() {
            match self.raw.poll_write_owned(cx, self.core.transmit_mut()) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: RawStream> SecretStream<S> {
    /// Receives the next whole message, with the boundaries the peer wrote it with (one JS
    /// `write` is one `data` chunk is one message here). `None` at a clean end of stream.
    /// Keep-alives are filtered. Cancel-safe: a message is only taken when it is returned.
    /// Don't mix with byte reads: the rest of a message a byte read left half-read comes first.
    pub async fn recv_message(&mut self) -> io::Result<Option<BytesMut>> {
        std::future::poll_fn(|cx| {
            if !self.plain.is_empty() {
                return Poll::Ready(Ok(Some(self.plain.split())));
            }
            self.poll_next_message(cx)
        })
        .await
    }

    /// Sends `message` as one encrypted message (one `data` chunk at a JS peer) and waits
    /// until it was handed to the raw stream. Bytes staged by earlier writes go first, as
    /// their own message. An empty message is refused (on the wire it is a keep-alive). A peer
    /// of ours refuses messages longer than
    /// [`DEFAULT_MAX_FRAME_LEN`](super::DEFAULT_MAX_FRAME_LEN) − 17 unless it raised its limit.
    pub async fn send_message(&mut self, message: &[u8]) -> io::Result<()> {
        if message.is_empty() {
            return Err(SecretStreamError::ApiMisuse("empty message (a keep-alive)").into());
        }
        if self.shutdown {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        std::future::poll_fn(|cx| self.poll_room(cx)).await?;
        self.seal_staging()?;
        self.core.send(message, now_std())?;
        std::future::poll_fn(|cx| {
            self.write_parked = false;
            let drained = self.poll_drain(cx);
            self.write_parked = drained.is_pending();
            ready!(drained)?;
            Pin::new(&mut self.raw).poll_flush(cx)
        })
        .await
    }

    /// The next decrypted message from the raw stream (`None` at a clean end), driving the
    /// keep-alive timer and queued ciphertext on the way.
    fn poll_next_message(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<BytesMut>>> {
        // The keep-alive timer lives on the read side: a reader is what waits on an idle stream.
        self.poll_keep_alive(cx)?;
        // Move queued ciphertext (keep-alives, coalesced writes) without blocking the read, but
        // never while a writer is parked on the raw stream: a raw stream keeps one write waker,
        // and ours would replace the writer's when the stream is split between two tasks. The
        // no-op waker leaves that slot to the next writer.
        if !self.core.transmit().is_empty() && !self.write_parked {
            let mut noop = Context::from_waker(std::task::Waker::noop());
            if let Poll::Ready(Err(e)) = self.poll_drain(&mut noop) {
                return Poll::Ready(Err(e));
            }
        }
        loop {
            match self.core.handle_input(&mut self.rx)? {
                Input::Message(m) => return Poll::Ready(Ok(Some(m))),
                Input::Open => {}
                Input::Verdict(_) => {
                    return Poll::Ready(Err(
                        SecretStreamError::Internal("verdict after open").into()
                    ));
                }
                Input::NeedMore => {
                    if self.rx_eof {
                        return if self.core.is_open() && self.core.input_at_boundary(&self.rx) {
                            Poll::Ready(Ok(None))
                        } else {
                            Poll::Ready(Err(SecretStreamError::UnexpectedEof.into()))
                        };
                    }
                    if self.rx.capacity() - self.rx.len() < READ_CHUNK / 4 {
                        self.rx.reserve(READ_CHUNK);
                    }
                    match ready!(tokio_util::io::poll_read_buf(
                        Pin::new(&mut self.raw),
                        cx,
                        &mut self.rx
                    )) {
                        Ok(0) => self.rx_eof = true,
                        Ok(_) => {}
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
            }
        }
    }
}

impl<S: RawStream> AsyncRead for SecretStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.plain.is_empty() {
            match ready!(this.poll_next_message(cx))? {
                Some(m) => this.plain = m,
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = buf.remaining().min(this.plain.len());
        buf.put_slice(&this.plain[..n]);
        this.plain.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: RawStream> AsyncWrite for SecretStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.write_parked = false;
        if this.shutdown {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(this.poll_room(cx))?;
        let n;
        if this.staging.is_empty() && data.len() >= MAX_FRAME_PLAINTEXT {
            n = MAX_FRAME_PLAINTEXT;
            this.core.send_stream_parts(&[&data[..n]], now_std())?;
        } else {
            n = data.len().min(MAX_FRAME_PLAINTEXT - this.staging.len());
            this.staging.extend_from_slice(&data[..n]);
            // Coalesce only while the raw stream is busy.
            if this.staging.len() >= MAX_FRAME_PLAINTEXT || this.core.transmit().is_empty() {
                this.seal_staging()?;
            }
        }
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.write_parked = false;
        if this.shutdown {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let total = bufs
            .iter()
            .fold(0usize, |acc, b| acc.saturating_add(b.len()));
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        ready!(this.poll_room(cx))?;
        let mut n = 0;
        if this.staging.is_empty() && total >= VECTORED_DIRECT_MIN {
            // One message straight from the slices: no staging copy.
            let cap = MAX_FRAME_PLAINTEXT + VECTORED_SLACK;
            let mut parts: [&[u8]; MAX_VECTORED_PARTS] = [&[]; MAX_VECTORED_PARTS];
            let mut k = 0;
            for b in bufs.iter().filter(|b| !b.is_empty()) {
                if k == MAX_VECTORED_PARTS || n == cap {
                    break;
                }
                let take = b.len().min(cap - n);
                parts[k] = &b[..take];
                k += 1;
                n += take;
            }
            this.core.send_stream_parts(&parts[..k], now_std())?;
        } else {
            let room = MAX_FRAME_PLAINTEXT - this.staging.len();
            for b in bufs {
                let take = b.len().min(room - n);
                this.staging.extend_from_slice(&b[..take]);
                n += take;
                if n == room {
                    break;
                }
            }
            // Coalesce only while the raw stream is busy.
            if this.staging.len() >= MAX_FRAME_PLAINTEXT || this.core.transmit().is_empty() {
                this.seal_staging()?;
            }
        }
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.write_parked = false;
        this.seal_staging()?;
        let drained = this.poll_drain(cx);
        this.write_parked = drained.is_pending();
        ready!(drained)?;
        Pin::new(&mut this.raw).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.write_parked = false;
        if !this.shutdown {
            this.seal_staging()?;
            let drained = this.poll_drain(cx);
            this.write_parked = drained.is_pending();
            ready!(drained)?;
            this.shutdown = true;
            this.core.set_keep_alive(None, now_std());
            this.keep_alive = None;
        }
        Pin::new(&mut this.raw).poll_shutdown(cx)
    }
}
