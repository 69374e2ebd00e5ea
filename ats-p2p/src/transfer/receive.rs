//! The receiving driver.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ats_p2p_wire::{
    FileHash, Frame, FrameDecoder, Meta, Receiver, ReceiverConfig, ReceiverEvent, encode_parts,
};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::StreamReceiveError;
use super::limit::{TokenBucket, pace};
use super::progress::{ProgressRule, ProgressWatch, earliest};
use super::{FAREWELL_TIMEOUT, STREAM_READ_BUF, WRITE_QUEUE_DEPTH};
use crate::partial::PartialKey;
use crate::save::SaveError;
use ats_p2p_swarm::wait;

use super::partial_file::prepare_file;
use super::writer::{WriteCmd, Writer};
use super::writer::{commit, finish};

/// A file received, verified and moved into place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Where the file is now (a free name in the save directory).
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Its verified SHA-256.
    pub hash: FileHash,
    /// Bytes that were already there from an earlier, broken transfer (0: none resumed).
    pub resumed_from: u64,
}

/// How [`receive_stream_opts`] receives, beyond the offer and the wire settings.
#[derive(Debug, Clone, Default)]
pub struct ReceiveOptions {
    /// The progress rule ([`receive_stream_with`]).
    pub rule: ProgressRule,
    /// Resume: what identifies the file across transfers. With it, a partial file of the same
    /// key in the save directory is continued (its prefix re-hashed from disk first), the
    /// sender is told so when it offers resuming, and if this transfer breaks its partial file
    /// is kept with a record ([`crate::partial`]); `None` receives as before and removes the
    /// temporary file on failure.
    pub resume: Option<PartialKey>,
    /// Read at most this many bytes per second from the stream (the transport's flow control
    /// then slows the sender); `None` for no limit.
    pub limit: Option<std::num::NonZeroU64>,
}

/// Receives the accepted `offer` from `stream` into `save_dir` (created if missing), under the
/// offered name reduced to a safe file name and never overwriting an existing file.
/// `transfer_id_hex` (32 hex) names the temporary file. `on_progress(bytes, total)` is called
/// as DATA arrives.
///
/// ACK is sent only after the file is fsynced and renamed. On any failure the peer gets NACK
/// or ERROR with the reason where possible, the temporary file is removed, and the error is
/// returned. If the ACK itself cannot be delivered after the file was stored, the file stays
/// and this returns `Ok` (the sender will report the failure).
pub async fn receive_stream<S>(
    stream: S,
    save_dir: &Path,
    transfer_id_hex: &str,
    offer: Meta,
    config: ReceiverConfig,
    on_progress: impl FnMut(u64, u64) + Send,
) -> Result<Received, StreamReceiveError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    receive_stream_with(
        stream,
        save_dir,
        transfer_id_hex,
        offer,
        config,
        ProgressRule::default(),
        on_progress,
    )
    .await
}

/// [`receive_stream`] with an explicit [`ProgressRule`]: until every byte arrived, at least
/// `rule.min_bytes` must arrive per `rule.window`, or the transfer fails with
/// [`StreamReceiveError::Stalled`] (a sender trickling a byte now and then cannot hold the
/// receive for ever).
pub async fn receive_stream_with<S>(
    stream: S,
    save_dir: &Path,
    transfer_id_hex: &str,
    offer: Meta,
    config: ReceiverConfig,
    rule: ProgressRule,
    on_progress: impl FnMut(u64, u64) + Send,
) -> Result<Received, StreamReceiveError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    receive_stream_opts(
        stream,
        save_dir,
        transfer_id_hex,
        offer,
        config,
        ReceiveOptions {
            rule,
            ..ReceiveOptions::default()
        },
        on_progress,
    )
    .await
}

/// [`receive_stream_with`] with [`ReceiveOptions`]: resuming from a partial file, a read
/// limit.
pub async fn receive_stream_opts<S>(
    stream: S,
    save_dir: &Path,
    transfer_id_hex: &str,
    offer: Meta,
    config: ReceiverConfig,
    options: ReceiveOptions,
    on_progress: impl FnMut(u64, u64) + Send,
) -> Result<Received, StreamReceiveError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (dir, id, name, size, key) = (
        save_dir.to_path_buf(),
        transfer_id_hex.to_owned(),
        offer.name.clone(),
        offer.size,
        options.resume.clone(),
    );
    let prepare = move || prepare_file(&dir, &id, &name, size, key.as_ref());
    receive_into(stream, offer, config, options, "file", prepare, on_progress).await
}

/// What a receive writes into (a file, or a directory's files), run on the writer thread.
pub(super) trait Sink: Send + 'static {
    /// Bytes of it already held from an earlier, broken transfer (re-hashed): where a resumed
    /// stream continues.
    fn held(&self) -> u64;

    /// Hashes and writes the queued commands in order, answers `Finish` and `Commit`; returning
    /// without a commit removes what was written, or keeps it for a resume when `keep_partial`
    /// and no `Discard` came.
    fn write_loop(self, rx: mpsc::Receiver<WriteCmd>, keep_partial: bool) -> Result<(), SaveError>;
}

/// A receive of `offer` from `stream` into what `prepare` makes (on a blocking thread): the
/// body shared by files and directories. `what` names it in messages.
pub(super) async fn receive_into<S, T: Sink>(
    stream: S,
    offer: Meta,
    config: ReceiverConfig,
    options: ReceiveOptions,
    what: &str,
    prepare: impl FnOnce() -> Result<T, SaveError> + Send + 'static,
    on_progress: impl FnMut(u64, u64) + Send,
) -> Result<Received, StreamReceiveError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The writer thread hashes what it writes, in parallel with decryption on this task.
    let size = offer.size;
    let mut receiver = Receiver::new(offer, config, Instant::now()).with_external_hash();
    let (mut rd, mut wr) = tokio::io::split(stream);
    if receiver.is_finished() {
        // Refused before anything exists (too large): just tell the peer.
        return Err(fail_without_file(&mut receiver, &mut wr).await);
    }
    let prepared = tokio::task::spawn_blocking(prepare).await;
    let sink = prepared_or_refuse(prepared, &mut receiver, &mut wr, what).await?;
    let resumable = options.resume.is_some();
    if resumable {
        receiver = receiver.with_resume(sink.held());
    }
    let (tx, rx) = mpsc::channel(WRITE_QUEUE_DEPTH);
    let writer = Writer::new(
        tx,
        tokio::task::spawn_blocking(move || sink.write_loop(rx, resumable)),
    );
    run_to_end(
        &mut receiver,
        writer,
        &options,
        size,
        &mut rd,
        &mut wr,
        on_progress,
    )
    .await
}

/// The rest of a receive once its writer runs: drives the
/// wire receiver over the stream with the progress rule and the read limit of `options`, then
/// ends our side of the stream (bounded: a sender that vanished after our last frame never
/// acknowledges it) and reports where the transfer resumed from.
async fn run_to_end<R, W>(
    receiver: &mut Receiver,
    writer: Writer,
    options: &ReceiveOptions,
    size: u64,
    rd: &mut R,
    wr: &mut W,
    mut on_progress: impl FnMut(u64, u64) + Send,
) -> Result<Received, StreamReceiveError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let progress = ProgressWatch::new(options.rule, size, Instant::now());
    let mut bucket = options
        .limit
        .map(|rate| TokenBucket::new(rate, Instant::now()));
    let result = drive(
        receiver,
        writer,
        progress,
        bucket.as_mut(),
        rd,
        wr,
        &mut on_progress,
    )
    .await;
    match tokio::time::timeout(FAREWELL_TIMEOUT, wr.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "shutdown at the end of a receive failed"),
        Err(_) => tracing::debug!("the sender did not acknowledge the end of the stream"),
    }
    result.map(|mut received| {
        received.resumed_from = receiver.resumed_from().unwrap_or(0);
        received
    })
}

/// What preparing the file (or directory) on a blocking thread came to: the prepared value,
/// or, when it failed, the peer told (ERROR: a local failure) and the error to return.
async fn prepared_or_refuse<T, W: AsyncWrite + Unpin>(
    prepared: Result<Result<T, SaveError>, tokio::task::JoinError>,
    receiver: &mut Receiver,
    wr: &mut W,
    what: &str,
) -> Result<T, StreamReceiveError> {
    let err = match prepared {
        Ok(Ok(p)) => return Ok(p),
        Ok(Err(e)) => {
            receiver.fail_local(format!("receiver cannot store the {what}: {e}"));
            StreamReceiveError::Save(e)
        }
        Err(_) => {
            receiver.fail_local(format!("receiver cannot store the {what}"));
            StreamReceiveError::WriterStopped
        }
    };
    fail_without_file(receiver, wr).await;
    Err(err)
}

/// Runs the wire receiver over the stream, handing its writes to `writer`, until it completed
/// or failed (shared by files and directories).
pub(super) async fn drive<R, W>(
    receiver: &mut Receiver,
    mut writer: Writer,
    mut progress: ProgressWatch,
    mut bucket: Option<&mut TokenBucket>,
    rd: &mut R,
    wr: &mut W,
    on_progress: &mut (impl FnMut(u64, u64) + Send),
) -> Result<Received, StreamReceiveError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut decoder = FrameDecoder::new();
    let mut inbuf = BytesMut::with_capacity(STREAM_READ_BUF);
    let mut local_err: Option<StreamReceiveError> = None;
    let mut stored: Option<PathBuf> = None;
    let mut eof = false;
    loop {
        // The only frames a receiver sends are its last (ACK, NACK, ERROR).
        let mut last = Vec::new();
        while let Some(frame) = receiver.poll_frame() {
            last.push(frame);
        }
        while let Some(event) = receiver.poll_event() {
            match event {
                ReceiverEvent::Started { offset } => {
                    if let Err(e) = writer.send(WriteCmd::Start { offset }).await {
                        receiver.fail_local(format!("receiver cannot store the file: {e}"));
                        local_err = Some(e);
                    }
                }
                ReceiverEvent::Write { offset, data } => {
                    if let Err(e) = writer.send(WriteCmd::Write { offset, data }).await {
                        receiver.fail_local(format!("receiver cannot store the file: {e}"));
                        local_err = Some(e);
                    }
                }
                ReceiverEvent::Progress { bytes, total } => on_progress(bytes, total),
                ReceiverEvent::HashNeeded { .. } => match finish(&mut writer).await {
                    Ok(hash) => {
                        if let Err(e) = receiver.handle_hash(hash) {
                            tracing::warn!(error = %e, "handle_hash refused");
                        }
                    }
                    Err(e) => {
                        receiver.fail_local(format!("receiver cannot store the file: {e}"));
                        local_err = Some(e);
                    }
                },
                ReceiverEvent::Verified { .. } => match commit(&mut writer).await {
                    Ok(path) => {
                        stored = Some(path);
                        if let Err(e) = receiver.file_committed() {
                            tracing::warn!(error = %e, "file_committed refused");
                        }
                    }
                    Err(e) => {
                        receiver.fail_local(format!("receiver cannot store the file: {e}"));
                        local_err = Some(e);
                    }
                },
                ReceiverEvent::Completed { size, hash } => {
                    collect_frames(receiver, &mut last);
                    send_last(wr, last).await;
                    return match stored.take() {
                        Some(path) => Ok(Received {
                            path,
                            size,
                            hash,
                            resumed_from: 0,
                        }),
                        None => Err(StreamReceiveError::WriterStopped),
                    };
                }
                ReceiverEvent::Failed(err) => {
                    if proves_data_wrong(&err) {
                        // Best effort: a writer that stopped has removed the file already.
                        let _ = writer.send(WriteCmd::Discard).await;
                    }
                    // Remove (or keep, for a resume) the temporary file before reporting.
                    if let Err(e) = writer.finish().await {
                        tracing::warn!(error = %e, "writer failed while aborting");
                    }
                    collect_frames(receiver, &mut last);
                    send_last(wr, last).await;
                    return Err(local_err
                        .take()
                        .unwrap_or(StreamReceiveError::Transfer(err)));
                }
                _ => {}
            }
        }
        // Frames queued without a final event yet (RESUME after META): send them now.
        if !last.is_empty() {
            send_last(wr, last).await;
        }
        // One frame at a time, acting on its events before the next (the receiver's contract).
        match decoder.decode(&mut inbuf) {
            Ok(Some(frame)) => {
                receiver.handle_frame(Instant::now(), frame);
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                receiver.handle_decode_error(e);
                continue;
            }
        }
        if eof {
            receiver.handle_closed();
            continue;
        }
        let deadline = earliest(receiver.poll_timeout(), progress.poll_timeout());
        tokio::select! {
            r = rd.read_buf(&mut inbuf) => match r {
                Ok(0) => eof = true,
                Ok(n) => {
                    progress.moved(u64::try_from(n).unwrap_or(u64::MAX), Instant::now());
                    // A read limit: stop reading for a while (flow control slows the sender).
                    pace(bucket.as_deref_mut(), n).await;
                }
                Err(e) => {
                    receiver.fail_local(format!("stream error: {e}"));
                    local_err = Some(StreamReceiveError::Io(e));
                }
            },
            () = wait::sleep_until(deadline) => {
                let now = Instant::now();
                receiver.handle_timeout(now);
                if let Err(stall) = progress.check(now) {
                    let rule = progress.rule();
                    let err = StreamReceiveError::Stalled {
                        window: rule.window,
                        moved: stall.moved,
                        min_bytes: rule.min_bytes,
                    };
                    receiver.fail_local(err.to_string());
                    local_err = Some(err);
                }
            }
        }
    }
}

/// Whether a failure shows the received bytes are wrong, so a partial file must not be kept
/// (a hash or size mismatch, a protocol violation); a peer that gave up or vanished, a
/// timeout or a local failure leave good bytes behind.
fn proves_data_wrong(err: &ats_p2p_wire::TransferError) -> bool {
    use ats_p2p_wire::TransferError as E;
    !matches!(
        err,
        E::Nack(_) | E::PeerError(_) | E::Closed { .. } | E::TimedOut { .. } | E::Local(_)
    )
}

fn collect_frames(receiver: &mut Receiver, last: &mut Vec<Frame>) {
    while let Some(frame) = receiver.poll_frame() {
        last.push(frame);
    }
}

/// Refuses before a file exists: sends the queued NACK or ERROR and returns the error.
pub(super) async fn fail_without_file<W: AsyncWrite + Unpin>(
    receiver: &mut Receiver,
    wr: &mut W,
) -> StreamReceiveError {
    let mut last = Vec::new();
    collect_frames(receiver, &mut last);
    send_last(wr, last).await;
    let mut err = StreamReceiveError::WriterStopped;
    while let Some(event) = receiver.poll_event() {
        if let ReceiverEvent::Failed(e) = event {
            err = StreamReceiveError::Transfer(e);
        }
    }
    if let Err(e) = wr.shutdown().await {
        tracing::debug!(error = %e, "shutdown after refusal failed");
    }
    err
}

/// Writes the receiver's last frames, best effort within [`FAREWELL_TIMEOUT`].
async fn send_last<W: AsyncWrite + Unpin>(wr: &mut W, frames: Vec<Frame>) {
    let work = async {
        for frame in frames {
            if let Ok(mut encoded) = encode_parts(&frame) {
                wr.write_all_buf(&mut encoded).await?;
            }
        }
        wr.flush().await
    };
    match tokio::time::timeout(FAREWELL_TIMEOUT, work).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "could not deliver the last frame"),
        Err(_) => tracing::debug!("timed out delivering the last frame"),
    }
}
