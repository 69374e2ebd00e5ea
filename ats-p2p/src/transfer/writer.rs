//! The blocking writer of a file receive: the commands the driver queues, the thread that
//! hashes and writes them (direct I/O where it can), and the driver's two questions to it.

use std::path::PathBuf;

use ats_p2p_wire::FileHash;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::StreamReceiveError;
use super::direct::DirectWriter;
use crate::save::IncomingFile;
use crate::save::SaveError;

use super::partial_file::PreparedFile;

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
    pub(super) async fn send(&mut self, cmd: WriteCmd) -> Result<(), StreamReceiveError> {
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
    pub(super) async fn finish(&mut self) -> Result<(), StreamReceiveError> {
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
pub(super) fn check_limit(file: &IncomingFile, offset: u64, len: usize) -> Result<(), SaveError> {
    let end = u64::try_from(len)
        .ok()
        .and_then(|l| offset.checked_add(l))
        .ok_or(SaveError::OffsetOverflow { offset, len })?;
    match file.size_limit() {
        Some(limit) if end > limit => Err(SaveError::SizeLimit { end, limit }),
        _ => Ok(()),
    }
}

/// Asks the writer to write everything out and waits for the hash of all bytes.
pub(super) async fn finish(writer: &mut Writer) -> Result<FileHash, StreamReceiveError> {
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
pub(super) async fn commit(writer: &mut Writer) -> Result<PathBuf, StreamReceiveError> {
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

impl super::receive::Sink for PreparedFile {
    fn held(&self) -> u64 {
        self.prefix
    }

    fn write_loop(self, rx: mpsc::Receiver<WriteCmd>, keep_partial: bool) -> Result<(), SaveError> {
        write_loop(self, rx, keep_partial)
    }
}
