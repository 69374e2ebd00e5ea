//! Cleaning a save directory at start-up: temporary files and directories that no running
//! receiver holds, expired partial files kept for resuming, and records whose file is gone.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{MAX_STALE_SCAN_ENTRIES, SaveError, TEMP_DIR_SUFFIX, TEMP_PREFIX, TEMP_SUFFIX};
use crate::fsutil;
use crate::partial::{self, DEFAULT_PARTIAL_EXPIRY};

/// Removes temporary files that a crashed or killed receiver left in `dir`: regular files named
/// `.ats-p2p-*.part` that **no running receiver holds** (every [`IncomingFile`] keeps an
/// exclusive `flock` on its temporary file until it is closed, and the kernel drops the lock
/// when its process dies), or, where the file system has no locks, that were not modified for
/// `max_age` (use [`STALE_TEMP_AGE`]). A file older than `max_age` is removed either way. Other
/// files, symlinks and live transfers' files are left alone. A missing `dir` has nothing to
/// clean. Unfinished directory receives (`.ats-p2p-*.partdir` directories, see
/// [`crate::save_tree`]) go by the same rules. Returns the removed paths. Blocks.
///
/// A **partial file kept for resuming** (one with a record beside it, see
/// [`crate::partial`]) is kept until it was not written for [`DEFAULT_PARTIAL_EXPIRY`]
/// ([`remove_stale_files`] takes another expiry); records whose file is gone are removed.
///
/// [`Node::watch`](crate::Node::watch) calls this when it starts watching a save directory, so a
/// `listen` that was killed leaves nothing behind after the next start but its resumable files.
///
/// [`IncomingFile`]: super::IncomingFile
/// [`STALE_TEMP_AGE`]: super::STALE_TEMP_AGE
pub fn remove_stale_temp_files(dir: &Path, max_age: Duration) -> Result<Vec<PathBuf>, SaveError> {
    remove_stale_files(dir, max_age, DEFAULT_PARTIAL_EXPIRY)
}

/// [`remove_stale_temp_files`] with the expiry of partial files kept for resuming:
/// `partial_expiry` after its last write a partial file and its record are removed.
pub fn remove_stale_files(
    dir: &Path,
    max_age: Duration,
    partial_expiry: Duration,
) -> Result<Vec<PathBuf>, SaveError> {
    let dir_err = |source| SaveError::SaveDir {
        dir: dir.to_path_buf(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(dir_err(e)),
    };
    let handle = match fsutil::SaveDir::open(dir) {
        Ok(h) => h,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(dir_err(e)),
    };
    let now = SystemTime::now();
    let mut removed = Vec::new();
    let mut records = Vec::new();
    for entry in entries.take(MAX_STALE_SCAN_ENTRIES) {
        let entry = entry.map_err(dir_err)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if partial::is_record_name(name) {
            records.push(name.to_owned());
            continue;
        }
        if name.starts_with(TEMP_PREFIX)
            && name.ends_with(&format!(".{TEMP_DIR_SUFFIX}"))
            && handle.is_dir(name)
        {
            // A directory receive that did not finish: ours when no receiver holds it. One
            // kept for resuming (a record beside it) stays until it expires, counted from the
            // record's last write (the directory's own time does not move while a file in it
            // grows).
            let record = partial::record_name(name);
            let kept = record
                .as_deref()
                .and_then(|r| partial::read_record(&handle, r))
                .is_some_and(|r| r.directory);
            let (stamp, max_age) = match (&record, kept) {
                (Some(r), true) => (dir.join(r), partial_expiry),
                _ => (entry.path(), max_age),
            };
            let old = fs::symlink_metadata(&stamp)
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age >= max_age);
            // A live receive holds the lock however long it takes; the age alone decides only
            // where there are no locks.
            let remove = match handle.is_abandoned_dir(name) {
                Some(false) => false,
                Some(true) => !kept || old,
                None => old,
            };
            if remove {
                let path = entry.path();
                match fs::remove_dir_all(&path) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "removed a stale temporary directory");
                        removed.push(path);
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => return Err(SaveError::Remove { path, source }),
                }
            }
            continue;
        }
        if !name.starts_with(TEMP_PREFIX) || !name.ends_with(&format!(".{TEMP_SUFFIX}")) {
            continue;
        }
        // Not following symlinks: only regular files are ours.
        let Ok(Some(id)) = handle.id_of(name) else {
            continue;
        };
        let age = entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|m| now.duration_since(m).ok());
        let kept_for_resume = partial::record_name(name)
            .and_then(|r| partial::read_record(&handle, &r))
            .is_some();
        let max_age = if kept_for_resume {
            partial_expiry
        } else {
            max_age
        };
        let old = age.is_some_and(|age| age >= max_age);
        if !old && (kept_for_resume || handle.is_abandoned(name) != Some(true)) {
            continue;
        }
        if kept_for_resume && handle.is_abandoned(name) == Some(false) {
            // Expired, but a running receiver holds it: not ours to take.
            continue;
        }
        let path = entry.path();
        match handle.unlink_if(name, id) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed a stale temporary file");
                removed.push(path);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(SaveError::Remove { path, source }),
        }
    }
    // Records whose partial file is gone (removed above, or by hand).
    for record in records {
        let Some(temp) = partial::read_record(&handle, &record)
            .and_then(|r| partial::partial_name_of(&record, &r))
            .or_else(|| partial::temp_name_of(&record))
        else {
            continue;
        };
        let gone = if handle.is_dir(&temp) {
            false
        } else {
            matches!(handle.id_of(&temp), Err(e) if e.kind() == io::ErrorKind::NotFound)
        };
        if gone {
            let path = dir.join(&record);
            match handle.unlink(&record) {
                Ok(()) => removed.push(path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(SaveError::Remove { path, source }),
            }
        }
    }
    Ok(removed)
}
