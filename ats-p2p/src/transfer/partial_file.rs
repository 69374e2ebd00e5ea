//! What a file receive writes into: a new temporary file, or a kept partial one continued
//! after its prefix was re-hashed from disk.

use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::partial::{self, PartialKey};
use crate::save::IncomingFile;
use crate::save::SaveError;

/// The file a receive writes into: new, or a partial one continued.
#[derive(Debug)]
pub(super) struct PreparedFile {
    pub(super) file: IncomingFile,
    /// Bytes of it that are kept when the sender resumes (re-hashed into `hasher`).
    pub(super) prefix: u64,
    /// SHA-256 state over the prefix.
    pub(super) hasher: Sha256,
}

/// Runs on a blocking thread: continues the partial file of `key` when there is one (cut to
/// whole granules, re-hashed from disk), else creates a new temporary file (with a record when
/// `key` is given). Partial files of the same sender and name with another content (the file
/// changed) are removed.
pub(super) fn prepare_file(
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
pub(super) fn continue_partial(
    dir: &Path,
    name: &str,
    size: u64,
    key: &PartialKey,
) -> Option<PreparedFile> {
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
        on_disk - on_disk % partial::PREFIX_GRANULE
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
pub(super) fn rehash(file: &mut IncomingFile, len: u64) -> std::io::Result<Sha256> {
    use std::io::{Seek as _, SeekFrom};
    let mut f = file.file();
    f.seek(SeekFrom::Start(0))?;
    partial::hash_prefix(&mut f, len)
}
