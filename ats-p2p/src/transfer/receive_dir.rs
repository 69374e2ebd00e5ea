//! Receiving a directory: the same driver as a file, with a writer that spreads the stream over
//! the manifest's files ([`IncomingTree`]).

use std::path::Path;
use std::time::Instant;

use ats_p2p_signal::FileOffer;
use ats_p2p_wire::{FileHash, Meta, Receiver, ReceiverConfig, TransferError};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::StreamReceiveError;
use super::limit::TokenBucket;
use super::progress::ProgressWatch;
use super::receive::{ReceiveOptions, Received, WriteCmd, Writer, drive, fail_without_file};
use super::{FAREWELL_TIMEOUT, WRITE_QUEUE_DEPTH};
use crate::save::SaveError;
use crate::save_tree::IncomingTree;

/// Receives the accepted directory offer (its manifest says which files) from `stream` into
/// `save_dir`, under the offered name reduced to a safe one and never merged into an existing
/// directory; the transfer id names the temporary directory. Like
/// [`receive_stream_opts`](super::receive_stream_opts) otherwise: ACK only after every file
/// was verified, made durable and the directory renamed into place; on failure nothing stays.
/// (`options.resume` is not used: a broken directory receive starts over.)
pub async fn receive_directory<S>(
    stream: S,
    save_dir: &Path,
    offer: &FileOffer,
    config: ReceiverConfig,
    options: ReceiveOptions,
    mut on_progress: impl FnMut(u64, u64) + Send,
) -> Result<Received, StreamReceiveError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // A sender told (by the accept) that this node resumes offers it in META and waits for the
    // answer: a directory always starts at 0.
    let Some(manifest) = &offer.manifest else {
        return Err(StreamReceiveError::Transfer(TransferError::ApiMisuse(
            "receive_directory needs a directory offer",
        )));
    };
    let transfer_id_hex = offer.transfer_id.to_string();
    let meta = Meta::new(offer.filename.clone(), offer.size, FileHash(offer.sha256));
    let mut receiver = Receiver::new(meta, config, Instant::now())
        .with_external_hash()
        .with_resume(0);
    let (mut rd, mut wr) = tokio::io::split(stream);
    if receiver.is_finished() {
        return Err(fail_without_file(&mut receiver, &mut wr).await);
    }
    let created = {
        let (dir, id, name, manifest) = (
            save_dir.to_path_buf(),
            transfer_id_hex.clone(),
            offer.filename.clone(),
            manifest.clone(),
        );
        tokio::task::spawn_blocking(move || IncomingTree::create(&dir, &id, &name, &manifest)).await
    };
    let tree = match created {
        Ok(Ok(tree)) => tree,
        Ok(Err(e)) => {
            receiver.fail_local(format!("receiver cannot store the directory: {e}"));
            fail_without_file(&mut receiver, &mut wr).await;
            return Err(StreamReceiveError::Save(e));
        }
        Err(_) => {
            receiver.fail_local("receiver cannot store the directory");
            fail_without_file(&mut receiver, &mut wr).await;
            return Err(StreamReceiveError::WriterStopped);
        }
    };
    let (tx, rx) = mpsc::channel(WRITE_QUEUE_DEPTH);
    let writer = Writer::new(
        tx,
        tokio::task::spawn_blocking(move || tree_write_loop(tree, rx)),
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
    match tokio::time::timeout(FAREWELL_TIMEOUT, wr.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "shutdown at the end of a receive failed"),
        Err(_) => tracing::debug!("the sender did not acknowledge the end of the stream"),
    }
    result
}

/// Runs on a blocking thread: writes queued chunks into the tree in order, answers `Finish`
/// with the digest of what was written, commits on request. Returning without a commit
/// removes the temporary directory.
fn tree_write_loop(
    mut tree: IncomingTree,
    mut rx: mpsc::Receiver<WriteCmd>,
) -> Result<(), SaveError> {
    while let Some(cmd) = rx.blocking_recv() {
        match cmd {
            // A directory never resumes: the stream starts at 0.
            WriteCmd::Start { .. } | WriteCmd::Discard => {}
            WriteCmd::Write { offset, data } => tree.write_at(offset, &data)?,
            WriteCmd::Finish(reply) => {
                let digest = tree.finish();
                if let Ok(hash) = &digest
                    && hash.0 != tree.manifest().digest()
                {
                    tracing::warn!(files = ?tree.mismatched(), "received files do not match the manifest");
                }
                // The driver keeps the reply receiver until it gets an answer.
                let _ = reply.send(digest);
            }
            WriteCmd::Commit(reply) => {
                let _ = reply.send(tree.commit());
                return Ok(());
            }
        }
    }
    tree.abort()
}
