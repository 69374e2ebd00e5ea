//! The sending driver.

use std::io::{self, IoSlice};
use std::path::Path;
use std::time::Instant;

use ats_p2p_wire::{
    EncodedFrame, FrameDecoder, FrameType, Meta, Sender, SenderConfig, SenderEvent, encode_parts,
};
use bytes::{Buf as _, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::StreamSendError;
use super::limit::{TokenBucket, pace};
use super::progress::{ProgressRule, ProgressWatch, earliest};
use super::source::{SendSource, spawn_reader};
use super::{FAREWELL_TIMEOUT, FILE_READ_AHEAD, STREAM_READ_BUF};
use ats_p2p_swarm::wait;

/// A file delivered and acknowledged by the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Bytes of the file the receiver holds now, counted from its start (the whole file).
    pub bytes: u64,
    /// Where this transfer started: the prefix the receiver already held (0: none).
    pub resumed_from: u64,
    /// The receiver's ACK payload (JSON `{"size","hash"}` from our receiver, or empty).
    pub ack: Bytes,
}

/// Sends the file at `path`, described by `meta` (its size and SHA-256, computed beforehand),
/// over `stream`, and waits for the peer's ACK. `on_progress(bytes, total)` is called as DATA
/// leaves. The stream is shut down for writing at the end, on success and on failure.
///
/// If the file is shorter than `meta.size` (it changed since it was hashed), the peer gets
/// ERROR and this returns [`StreamSendError::Read`]; bytes beyond `meta.size` are not sent.
pub async fn send_stream<S>(
    stream: S,
    path: &Path,
    meta: Meta,
    config: SenderConfig,
    on_progress: impl FnMut(u64, u64) + Send,
) -> Result<Sent, StreamSendError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    send_stream_with(
        stream,
        path,
        meta,
        config,
        ProgressRule::default(),
        on_progress,
    )
    .await
}

/// [`send_stream`] with an explicit [`ProgressRule`]: while file bytes remain, the stream must
/// take at least `rule.min_bytes` per `rule.window`, or the transfer fails with
/// [`StreamSendError::Stalled`] (a receiver that stops reading or advertises a zero window
/// cannot hold the send for ever).
pub async fn send_stream_with<S>(
    stream: S,
    path: &Path,
    meta: Meta,
    config: SenderConfig,
    rule: ProgressRule,
    on_progress: impl FnMut(u64, u64) + Send,
) -> Result<Sent, StreamSendError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    send_stream_opts(
        stream,
        path,
        meta,
        config,
        SendOptions {
            rule,
            ..SendOptions::default()
        },
        on_progress,
    )
    .await
}

/// How [`send_stream_opts`] sends, beyond the file and the wire settings.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// The progress rule ([`send_stream_with`]).
    pub rule: ProgressRule,
    /// Write at most this many bytes per second to the stream; `None` for no limit.
    pub limit: Option<std::num::NonZeroU64>,
}

/// [`send_stream_with`] with [`SendOptions`] (a write limit). With
/// [`SenderConfig::offer_resume`] the file is read from the offset the receiver answers.
pub async fn send_stream_opts<S>(
    stream: S,
    path: &Path,
    meta: Meta,
    config: SenderConfig,
    options: SendOptions,
    on_progress: impl FnMut(u64, u64) + Send,
) -> Result<Sent, StreamSendError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let source = SendSource::File(path.to_path_buf());
    send_source_opts(stream, &source, meta, config, options, on_progress).await
}

/// [`send_stream_opts`] for any [`SendSource`]: a file, or a directory's files one after
/// another (`meta.size` is then their total; resuming continues at a stream offset, so inside
/// whichever file it falls).
pub async fn send_source_opts<S>(
    stream: S,
    source: &SendSource,
    meta: Meta,
    config: SenderConfig,
    options: SendOptions,
    mut on_progress: impl FnMut(u64, u64) + Send,
) -> Result<Sent, StreamSendError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let path = source.path();
    source.check().map_err(|source| StreamSendError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let total = meta.size;
    let mut progress = ProgressWatch::new(options.rule, total, Instant::now());
    let mut sender =
        Sender::new(meta, config, Instant::now()).map_err(StreamSendError::Transfer)?;
    // A blocking reader thread reads ahead (bounded): file reads overlap encryption and
    // sending, and each chunk is read once, straight into the buffer that is sent. It starts
    // at once, or, when resuming was offered, at the offset the receiver answers.
    let (chunks_tx, mut chunks) = mpsc::channel(FILE_READ_AHEAD);
    let mut reader_start = Some((source.clone(), chunks_tx));
    let mut _stop_reader = None;
    if !sender.meta().resume
        && let Some((source, tx)) = reader_start.take()
    {
        _stop_reader = Some(spawn_reader(source, 0, total, tx));
    }
    let mut bucket = options
        .limit
        .map(|rate| TokenBucket::new(rate, Instant::now()));
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut decoder = FrameDecoder::new();
    let mut inbuf = BytesMut::with_capacity(STREAM_READ_BUF);
    let mut out: Option<EncodedFrame> = None;
    let mut local_err: Option<StreamSendError> = None;
    let mut sent_bytes = 0u64;
    let mut resumed_from = 0u64;

    loop {
        while let Some(event) = sender.poll_event() {
            match event {
                SenderEvent::Resumed { offset } => {
                    resumed_from = offset;
                    sent_bytes = offset;
                    if let Some((source, tx)) = reader_start.take() {
                        _stop_reader = Some(spawn_reader(source, offset, total, tx));
                    }
                }
                SenderEvent::Progress { bytes, total } => {
                    sent_bytes = bytes;
                    on_progress(bytes, total);
                }
                SenderEvent::Completed { ack } => {
                    close_after_ack(&mut wr, &mut rd).await;
                    return Ok(Sent {
                        bytes: sent_bytes,
                        resumed_from,
                        ack,
                    });
                }
                SenderEvent::Failed(err) => {
                    farewell(&mut sender, out.take(), &mut wr).await;
                    return Err(local_err.take().unwrap_or(StreamSendError::Transfer(err)));
                }
                _ => {}
            }
        }
        if out.is_none() {
            out = match sender.poll_frame().map(|f| encode_parts(&f)).transpose() {
                Ok(Some(frame)) if frame.header()[0] == FrameType::Data.to_u8() => {
                    // A write limit: wait for the tokens of this DATA frame first.
                    pace(bucket.as_mut(), frame.payload().len()).await;
                    Some(frame)
                }
                Ok(frame) => frame,
                Err(e) => {
                    // Frames built by the state machine always fit; treat it as a local failure.
                    sender.fail_local(format!("cannot encode frame: {e}"));
                    continue;
                }
            };
        }
        if out.is_none() && sender.wants_data() && sender.remaining() > 0 {
            match chunks.recv().await {
                Some(Ok(chunk)) => {
                    if let Err(e) = sender.send_chunk(Instant::now(), chunk) {
                        sender.fail_local(e.to_string());
                    }
                }
                Some(Err(source)) => {
                    sender.fail_local(format!("cannot read the file: {source}"));
                    local_err = Some(StreamSendError::Read {
                        path: path.to_path_buf(),
                        source,
                    });
                }
                None => {
                    let source = io::Error::other("the file reader stopped");
                    sender.fail_local(format!("cannot read the file: {source}"));
                    local_err = Some(StreamSendError::Read {
                        path: path.to_path_buf(),
                        source,
                    });
                }
            }
            continue;
        }
        let deadline = earliest(sender.poll_timeout(), progress.poll_timeout());
        tokio::select! {
            r = write_some(&mut wr, &mut out) => {
                match r {
                    Ok(0) => {
                        let e = io::Error::new(io::ErrorKind::WriteZero, "peer stream closed for writing");
                        sender.fail_local(e.to_string());
                        local_err = Some(StreamSendError::Io(e));
                    }
                    Ok(n) => {
                        progress.moved(u64::try_from(n).unwrap_or(u64::MAX), Instant::now());
                        if out.as_ref().is_some_and(|f| !bytes::Buf::has_remaining(f)) {
                            out = None;
                        }
                    }
                    Err(e) => {
                        // A receiver that refused sends NACK and closes: its reason may be
                        // waiting unread. Prefer it to the broken pipe.
                        read_last_words(&mut sender, &mut decoder, &mut inbuf, &mut rd).await;
                        if !sender.is_finished() {
                            sender.fail_local(e.to_string());
                            local_err = Some(StreamSendError::Io(e));
                        }
                    }
                }
            }
            r = rd.read_buf(&mut inbuf) => {
                match r {
                    Ok(0) => {
                        // Take whatever complete frames arrived before the end (a NACK).
                        feed(&mut sender, &mut decoder, &mut inbuf);
                        sender.handle_closed();
                    }
                    Ok(_) => feed(&mut sender, &mut decoder, &mut inbuf),
                    Err(e) => {
                        sender.fail_local(e.to_string());
                        local_err = Some(StreamSendError::Io(e));
                    }
                }
            }
            () = wait::sleep_until(deadline) => {
                let now = Instant::now();
                sender.handle_timeout(now);
                if let Err(stall) = progress.check(now) {
                    let err = stalled(progress.rule(), stall.moved);
                    sender.fail_local(err.to_string());
                    local_err = Some(err);
                }
            }
        }
    }
}

/// The error for a send that broke the progress rule.
fn stalled(rule: ProgressRule, moved: u64) -> StreamSendError {
    StreamSendError::Stalled {
        window: rule.window,
        moved,
        min_bytes: rule.min_bytes,
    }
}

/// After ACK: ends our side and reads the receiver's end, within [`FAREWELL_TIMEOUT`]. Waiting
/// for the peer's end (it shuts down right after ACK) lets both transports finish cleanly: a
/// sender that vanished at once would leave the receiver retransmitting its end until it gives
/// up.
async fn close_after_ack<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(wr: &mut W, rd: &mut R) {
    let work = async {
        if let Err(e) = wr.shutdown().await {
            tracing::debug!(error = %e, "shutdown after ACK failed");
        }
        let mut sink = [0u8; 512];
        // Anything after ACK is ignored; stop at the end of the stream or an error.
        while let Ok(n) = rd.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    if tokio::time::timeout(FAREWELL_TIMEOUT, work).await.is_err() {
        tracing::debug!("the receiver did not end its stream after ACK");
    }
}

/// Writes some of the frame in flight (header and payload in one vectored write, so a stream
/// that encrypts per write seals them as one message without joining them first); never
/// finishes when there is none.
async fn write_some<W: AsyncWrite + Unpin>(
    wr: &mut W,
    out: &mut Option<EncodedFrame>,
) -> io::Result<usize> {
    match out {
        Some(frame) => {
            let n = {
                let mut slices = [IoSlice::new(&[]); 2];
                let k = frame.chunks_vectored(&mut slices);
                wr.write_vectored(slices.get(..k).unwrap_or(&[])).await?
            };
            frame.advance(n.min(frame.remaining()));
            Ok(n)
        }
        None => std::future::pending().await,
    }
}

/// Decodes every complete frame in `inbuf` into the sender.
fn feed(sender: &mut Sender, decoder: &mut FrameDecoder, inbuf: &mut BytesMut) {
    loop {
        match decoder.decode(inbuf) {
            Ok(Some(frame)) => sender.handle_frame(Instant::now(), frame),
            Ok(None) => break,
            Err(e) => {
                sender.handle_decode_error(e);
                break;
            }
        }
        if sender.is_finished() {
            break;
        }
    }
}

/// After a failed write: reads what the peer sent before it went away (at most until the
/// stream ends, errors, or [`FAREWELL_TIMEOUT`]), so its NACK or ERROR becomes the reason.
async fn read_last_words<R: AsyncRead + Unpin>(
    sender: &mut Sender,
    decoder: &mut FrameDecoder,
    inbuf: &mut BytesMut,
    rd: &mut R,
) {
    let work = async {
        loop {
            feed(sender, decoder, inbuf);
            if sender.is_finished() {
                return;
            }
            // `inbuf` never holds more than one partial frame (the decoder caps lengths).
            match rd.read_buf(inbuf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    if tokio::time::timeout(FAREWELL_TIMEOUT, work).await.is_err() {
        tracing::debug!("no reason from the peer after a failed write");
    }
}

/// After a failure: finish the frame in flight, send the queued ERROR if any, shut down; all
/// within [`FAREWELL_TIMEOUT`].
async fn farewell<W: AsyncWrite + Unpin>(
    sender: &mut Sender,
    pending: Option<EncodedFrame>,
    wr: &mut W,
) {
    let work = async {
        if let Some(mut frame) = pending {
            wr.write_all_buf(&mut frame).await?;
        }
        while let Some(frame) = sender.poll_frame() {
            if let Ok(mut frame) = encode_parts(&frame) {
                wr.write_all_buf(&mut frame).await?;
            }
        }
        wr.shutdown().await
    };
    match tokio::time::timeout(FAREWELL_TIMEOUT, work).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "could not deliver the last frame"),
        Err(_) => tracing::debug!("timed out delivering the last frame"),
    }
}
