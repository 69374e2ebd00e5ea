//! The receiving driver.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ats_p2p_wire::{
    FileHash, Frame, FrameDecoder, Meta, Receiver, ReceiverConfig, ReceiverEvent, encode_parts,
};
use bytes::{Bytes, BytesMut};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::StreamReceiveError;
use super::direct::DirectWriter;
use super::limit::{TokenBucket, pace};
use super::progress::{ProgressRule, ProgressWatch, earliest};
use super::{FAREWELL_TIMEOUT, STREAM_READ_BUF, WRITE_QUEUE_DEPTH};
use crate::partial::{self, PartialKey};
use crate::save::IncomingFile;
use crate::save::SaveError;
use ats_p2p_swarm::wait;

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

/// What the driver asks of the blocking writer.
#[derive(Debug)]
pub(super) enum WriteCmd {
    /// The bytes start at `offset`: the prefix held (keep it, its hash is already in) or 0
    /// (cut the file and restart the hash). Before any `Write`.
    Start { offset: u64 },
    /// Write these bytes at this offset (and hash them: writes come in offset order).
    Write { offset: u64, data: Bytes },
    /// The peer proved the bytes wrong: do not keep the partial file when the queue closes.
    Discard,
    /// Every byte was queued: write what is buffered, answer with the SHA-256 of all bytes.
    Finish(oneshot::Sender<Result<FileHash, SaveError>>),
    /// Every byte is verified: fsync and move into place, answer with the final path.
    Commit(oneshot::Sender<Result<PathBuf, SaveError>>),
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
    mut on_progress: impl FnMut(u64, u64) + Send,
) -> Result<Received, StreamReceiveError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The writer thread hashes what it writes, in parallel with decryption on this task.
    let mut receiver = Receiver::new(offer.clone(), config, Instant::now()).with_external_hash();
    let (mut rd, mut wr) = tokio::io::split(stream);
    if receiver.is_finished() {
        // Refused before any file exists (too large): just tell the peer.
        return Err(fail_without_file(&mut receiver, &mut wr).await);
    }

    let resumable = options.resume.is_some();
    let prepared = {
        let (dir, id, name, size, key) = (
            save_dir.to_path_buf(),
            transfer_id_hex.to_owned(),
            offer.name.clone(),
            offer.size,
            options.resume.clone(),
        );
        tokio::task::spawn_blocking(move || prepare_file(&dir, &id, &name, size, key.as_ref()))
            .await
    };
    let prepared = match prepared {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            receiver.fail_local(format!("receiver cannot store the file: {e}"));
            fail_without_file(&mut receiver, &mut wr).await;
            return Err(StreamReceiveError::Save(e));
        }
        Err(_) => {
            receiver.fail_local("receiver cannot store the file");
            fail_without_file(&mut receiver, &mut wr).await;
            return Err(StreamReceiveError::WriterStopped);
        }
    };
    if resumable {
        receiver = receiver.with_resume(prepared.prefix);
    }
    let (tx, rx) = mpsc::channel(WRITE_QUEUE_DEPTH);
    let writer = Writer::new(
        tx,
        tokio::task::spawn_blocking(move || write_loop(prepared, rx, resumable)),
    );
    let progress = ProgressWatch::new(options.rule, offer.size, Instant::now());
    let mut bucket = options
        .limit
        .map(|rate| TokenBucket::new(rate, Instant::now()));
    let result = drive(
        &mut receiver,
        writer,
        progress,
        bucket.as_mut(),
        &mut rd,
        &mut wr,
        &mut on_progress,
    )
    .await;
    // Bounded: a sender that vanished after our last frame never acknowledges our end.
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

/// The file a receive writes into: new, or a partial one continued.
#[derive(Debug)]
struct PreparedFile {
    file: IncomingFile,
    /// Bytes of it that are kept when the sender resumes (re-hashed into `hasher`).
    prefix: u64,
    /// SHA-256 state over the prefix.
    hasher: Sha256,
}

/// Resumed prefixes are cut to a multiple of this (one DATA frame, a multiple of the direct
/// I/O alignment): a killed receiver's last write may be torn.
const PREFIX_GRANULE: u64 = 64 * 1024;

/// Bytes read per step when re-hashing a prefix.
const REHASH_CHUNK: usize = 1024 * 1024;

/// Runs on a blocking thread: continues the partial file of `key` when there is one (cut to
/// whole granules, re-hashed from disk), else creates a new temporary file (with a record when
/// `key` is given). Partial files of the same sender and name with another content (the file
/// changed) are removed.
fn prepare_file(
    dir: &Path,
    transfer_id_hex: &str,
    name: &str,
    size: u64,
    key: Option<&PartialKey>,
) -> Result<PreparedFile, SaveError> {
    if let Some(key) = key
        && let Some(prepared) = continue_partial(dir, name, size, key)
    {
        return Ok(prepared);
    }
    let mut file = IncomingFile::create(dir, transfer_id_hex, name)?.with_size_limit(size);
    if let Some(key) = key {
        file.write_record(&key.record(transfer_id_hex))?;
    }
    Ok(PreparedFile {
        file,
        prefix: 0,
        hasher: Sha256::new(),
    })
}

/// The partial file of `key` in `dir`, ready to continue; `None` when there is none usable.
/// Partials of the same sender and name that do not match (another content) are removed.
fn continue_partial(dir: &Path, name: &str, size: u64, key: &PartialKey) -> Option<PreparedFile> {
    let handle = crate::fsutil::SaveDir::open(dir).ok()?;
    let sender = hex::encode(key.sender_key);
    let mut found = None;
    for (record_name, record) in partial::records(&handle) {
        if record.directory {
            continue;
        }
        let Some(temp) = partial::temp_name_of(&record_name) else {
            continue;
        };
        if found.is_none() && key.matches(&record) {
            match IncomingFile::adopt(dir, &temp, name) {
                Ok(file) => found = Some(file),
                Err(e) => tracing::debug!(temp, error = %e, "cannot continue a partial file"),
            }
        } else if record.sender_key.eq_ignore_ascii_case(&sender) && record.name == key.name {
            // The same name from the same sender, another content: it cannot be resumed.
            if let Ok(stale) = IncomingFile::adopt(dir, &temp, name) {
                tracing::debug!(temp, "removing a partial file whose content changed");
                if let Err(e) = stale.abort() {
                    tracing::debug!(error = %e, "could not remove a stale partial file");
                }
            }
        }
    }
    let mut file = found?.with_size_limit(size);
    let on_disk = file.len();
    let prefix = if on_disk >= size {
        size
    } else {
        on_disk - on_disk % PREFIX_GRANULE
    };
    let hasher = match rehash(&mut file, prefix) {
        Ok(h) => h,
        Err(e) => {
            tracing::debug!(error = %e, "cannot re-read a partial file; starting over");
            if let Err(e) = file.abort() {
                tracing::debug!(error = %e, "could not remove the partial file");
            }
            return None;
        }
    };
    if let Err(e) = file.truncate(prefix) {
        tracing::debug!(error = %e, "cannot cut a partial file; starting over");
        return None;
    }
    tracing::debug!(prefix, "continuing a partial file");
    Some(PreparedFile {
        file,
        prefix,
        hasher,
    })
}

/// SHA-256 state over the first `len` bytes of `file`, read from disk.
fn rehash(file: &mut IncomingFile, len: u64) -> std::io::Result<Sha256> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut hasher = Sha256::new();
    let mut f = file.file();
    f.seek(SeekFrom::Start(0))?;
    let mut left = len;
    let mut buf = vec![0u8; REHASH_CHUNK];
    while left > 0 {
        let want = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(REHASH_CHUNK);
        let chunk = buf.get_mut(..want).unwrap_or_default();
        f.read_exact(chunk)?;
        hasher.update(&*chunk);
        left = left.saturating_sub(u64::try_from(want).unwrap_or(u64::MAX));
    }
    Ok(hasher)
}

/// The blocking writer: its queue and its thread.
#[derive(Debug)]
pub(super) struct Writer {
    tx: Option<mpsc::Sender<WriteCmd>>,
    handle: Option<JoinHandle<Result<(), SaveError>>>,
}

impl Writer {
    /// The writer thread `handle`, fed through `tx`.
    pub(super) fn new(
        tx: mpsc::Sender<WriteCmd>,
        handle: JoinHandle<Result<(), SaveError>>,
    ) -> Self {
        Self {
            tx: Some(tx),
            handle: Some(handle),
        }
    }

    /// Queues a command; on failure, the writer's own error (it stopped).
    async fn send(&mut self, cmd: WriteCmd) -> Result<(), StreamReceiveError> {
        let sent = match &self.tx {
            Some(tx) => tx.send(cmd).await.is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self
                .finish()
                .await
                .err()
                .unwrap_or(StreamReceiveError::WriterStopped))
        }
    }

    /// Closes the queue and waits for the thread: without a commit, it removes the temporary
    /// file before this returns.
    async fn finish(&mut self) -> Result<(), StreamReceiveError> {
        self.tx = None;
        match self.handle.take() {
            Some(handle) => match handle.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(StreamReceiveError::Save(e)),
                Err(_) => Err(StreamReceiveError::WriterStopped),
            },
            None => Ok(()),
        }
    }
}

/// Runs on a blocking thread: hashes and writes queued chunks in order (direct I/O where the
/// file system allows), answers `Finish` with the hash, commits on request. Returning without
/// a commit removes the temporary file, or, when `keep_partial` and no `Discard` came, keeps
/// it for a resume (everything queued written out, the record updated); an error or a panic
/// removes it.
fn write_loop(
    prepared: PreparedFile,
    mut rx: mpsc::Receiver<WriteCmd>,
    mut keep_partial: bool,
) -> Result<(), SaveError> {
    let PreparedFile {
        mut file,
        prefix,
        mut hasher,
    } = prepared;
    let mut direct: Option<DirectWriter> = None;
    while let Some(cmd) = rx.blocking_recv() {
        match cmd {
            WriteCmd::Start { offset } => {
                if offset != prefix {
                    // The sender did not resume: start over.
                    file.truncate(0)?;
                    hasher = Sha256::new();
                }
                direct = DirectWriter::open_at(&file, file.len());
                if direct.is_none() {
                    tracing::debug!("direct I/O not available: writing through the page cache");
                }
            }
            WriteCmd::Write { offset, data } => {
                hasher.update(&data);
                match direct.as_mut() {
                    Some(d) if d.next_offset() == offset => {
                        check_limit(&file, offset, data.len())?;
                        d.write(&data).map_err(|e| {
                            SaveError::from_write(file.temp_path().to_path_buf(), e)
                        })?;
                    }
                    Some(_) => {
                        return Err(SaveError::from_write(
                            file.temp_path().to_path_buf(),
                            std::io::Error::other("DATA out of order"),
                        ));
                    }
                    None => file.write_at(offset, &data)?,
                }
            }
            WriteCmd::Discard => keep_partial = false,
            WriteCmd::Finish(reply) => {
                let flushed = match direct.as_mut() {
                    Some(d) => d.finish(&mut file),
                    None => Ok(()),
                };
                let hash = FileHash(std::mem::take(&mut hasher).finalize().into());
                direct = None;
                // The driver keeps the reply receiver until it gets an answer.
                let _ = reply.send(flushed.map(|()| hash));
            }
            WriteCmd::Commit(reply) => {
                // The driver keeps the reply receiver until it gets an answer.
                let _ = reply.send(file.commit());
                return Ok(());
            }
        }
    }
    if !keep_partial {
        drop(direct);
        return file.abort();
    }
    // Keep what arrived: write out the buffered tail too, then note the length.
    if let Some(mut d) = direct.take() {
        d.finish(&mut file)?;
    }
    tracing::debug!(bytes = file.len(), "keeping the partial file for a resume");
    file.keep()
}

/// The size limit of [`IncomingFile::with_size_limit`], for bytes that bypass `write_at`.
fn check_limit(file: &IncomingFile, offset: u64, len: usize) -> Result<(), SaveError> {
    let end = u64::try_from(len)
        .ok()
        .and_then(|l| offset.checked_add(l))
        .ok_or(SaveError::OffsetOverflow { offset, len })?;
    match file.size_limit() {
        Some(limit) if end > limit => Err(SaveError::SizeLimit { end, limit }),
        _ => Ok(()),
    }
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

/// Asks the writer to write everything out and waits for the hash of all bytes.
async fn finish(writer: &mut Writer) -> Result<FileHash, StreamReceiveError> {
    let (reply, answer) = oneshot::channel();
    writer.send(WriteCmd::Finish(reply)).await?;
    match answer.await {
        Ok(Ok(hash)) => Ok(hash),
        Ok(Err(e)) => Err(StreamReceiveError::Save(e)),
        Err(_) => Err(writer
            .finish()
            .await
            .err()
            .unwrap_or(StreamReceiveError::WriterStopped)),
    }
}

/// Asks the writer to commit and waits for the final path.
async fn commit(writer: &mut Writer) -> Result<PathBuf, StreamReceiveError> {
    let (reply, answer) = oneshot::channel();
    writer.send(WriteCmd::Commit(reply)).await?;
    let result = answer.await;
    // The thread has ended (it returns after a commit).
    let joined = writer.finish().await;
    match result {
        Ok(Ok(path)) => Ok(path),
        Ok(Err(e)) => Err(StreamReceiveError::Save(e)),
        Err(_) => Err(joined.err().unwrap_or(StreamReceiveError::WriterStopped)),
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
