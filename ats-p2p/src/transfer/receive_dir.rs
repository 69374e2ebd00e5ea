//! Receiving a directory: the same driver as a file, with a writer that spreads the stream over
//! the manifest's files ([`IncomingTree`]).

use std::path::Path;

use ats_p2p_signal::FileOffer;
use ats_p2p_signal::manifest::Manifest;
use ats_p2p_wire::{FileHash, Meta, ReceiverConfig, TransferError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::StreamReceiveError;
use super::receive::{ReceiveOptions, Received, Sink, receive_into};
use super::writer::WriteCmd;
use crate::partial::{self, PartialKey, PartialRecord};
use crate::save::SaveError;
use crate::save_tree::IncomingTree;

/// Receives the accepted directory offer (its manifest says which files) from `stream` into
/// `save_dir`, under the offered name reduced to a safe one and never merged into an existing
/// directory; the transfer id names the temporary directory. Like
/// [`receive_stream_opts`](super::receive_stream_opts) otherwise: ACK only after every file
/// was verified, made durable and the directory renamed into place. With `options.resume`, a
/// broken receive keeps its temporary directory (with a record) and the same offer from the
/// same sender continues it: the files held are re-hashed from disk, complete ones are kept,
/// the first short one continues at its last whole 64 KiB; without it nothing stays.
pub async fn receive_directory<S>(
    stream: S,
    save_dir: &Path,
    offer: &FileOffer,
    config: ReceiverConfig,
    options: ReceiveOptions,
    on_progress: impl FnMut(u64, u64) + Send,
) -> Result<Received, StreamReceiveError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(manifest) = &offer.manifest else {
        return Err(StreamReceiveError::Transfer(TransferError::ApiMisuse(
            "receive_directory needs a directory offer",
        )));
    };
    let meta = Meta::new(offer.filename.clone(), offer.size, FileHash(offer.sha256));
    let (dir, id, name, manifest, key) = (
        save_dir.to_path_buf(),
        offer.transfer_id.to_string(),
        offer.filename.clone(),
        manifest.clone(),
        options.resume.clone(),
    );
    let prepare = move || prepare_tree(&dir, &id, &name, &manifest, key.as_ref());
    receive_into(
        stream,
        meta,
        config,
        options,
        "directory",
        prepare,
        on_progress,
    )
    .await
}

impl Sink for IncomingTree {
    fn held(&self) -> u64 {
        self.position()
    }

    fn write_loop(self, rx: mpsc::Receiver<WriteCmd>, keep_partial: bool) -> Result<(), SaveError> {
        tree_write_loop(self, rx, keep_partial)
    }
}

/// Runs on a blocking thread: continues the kept directory of `key` when there is one, else
/// creates a new temporary directory (with a record when `key` is given). Kept directories of
/// the same sender and name with another manifest (the directory changed) are removed.
fn prepare_tree(
    dir: &Path,
    transfer_id_hex: &str,
    name: &str,
    manifest: &Manifest,
    key: Option<&PartialKey>,
) -> Result<IncomingTree, SaveError> {
    if let Some(key) = key
        && let Some(tree) = continue_tree(dir, name, manifest, key)
    {
        return Ok(tree);
    }
    let record = key.map(|k| PartialRecord {
        directory: true,
        ..k.record(transfer_id_hex)
    });
    IncomingTree::create_with_record(dir, transfer_id_hex, name, manifest, record.as_ref())
}

/// The kept directory of `key` in `dir`, re-hashed and ready to continue; `None` when there is
/// none usable.
fn continue_tree(
    dir: &Path,
    name: &str,
    manifest: &Manifest,
    key: &PartialKey,
) -> Option<IncomingTree> {
    let handle = crate::fsutil::SaveDir::open(dir).ok()?;
    let sender = hex::encode(key.sender_key);
    let mut found = None;
    for (record_name, record) in partial::records(&handle) {
        let Some(temp) = partial::partial_name_of(&record_name, &record) else {
            continue;
        };
        if !record.directory {
            continue;
        }
        if found.is_none() && key.matches(&record) {
            match IncomingTree::adopt(dir, &temp, name, manifest) {
                Ok(tree) => found = Some(tree),
                Err(e) => tracing::debug!(temp, error = %e, "cannot continue a kept directory"),
            }
        } else if record.sender_key.eq_ignore_ascii_case(&sender) && record.name == key.name {
            IncomingTree::discard_kept(&handle, &temp, &record_name);
        }
    }
    found
}

/// Runs on a blocking thread: writes queued chunks into the tree in order, answers `Finish`
/// with the digest of what was written, commits on request. Returning without a commit removes
/// the temporary directory, or, when `keep_partial` and no `Discard` came, keeps it for a
/// resume.
fn tree_write_loop(
    mut tree: IncomingTree,
    mut rx: mpsc::Receiver<WriteCmd>,
    mut keep_partial: bool,
) -> Result<(), SaveError> {
    while let Some(cmd) = rx.blocking_recv() {
        match cmd {
            WriteCmd::Start { offset } => {
                if offset != tree.position() {
                    // The sender did not resume: start over.
                    tree.restart()?;
                }
            }
            WriteCmd::Discard => keep_partial = false,
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
    if keep_partial {
        tree.keep()
    } else {
        tree.abort()
    }
}
