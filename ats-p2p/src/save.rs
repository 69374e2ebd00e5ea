//! Receiving a file safely: a hidden temporary file in the save directory, fsync, then a move to
//! a free name that never overwrites anything.
//!
//! Everything here is **blocking** file I/O. Callers on an async runtime run it on
//! `tokio::task::spawn_blocking` or a dedicated writer thread that owns the [`IncomingFile`] and
//! receives chunks over a bounded channel; never on an async worker thread.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ats_p2p::save::IncomingFile;
//! let dir = tempfile::tempdir()?;
//! let mut incoming = IncomingFile::create(dir.path(), "5f0c5f0c5f0c5f0c5f0c5f0c5f0c5f0c", "../notes.txt")?;
//! incoming.append(b"hello ")?;
//! incoming.write_at(6, b"world")?;
//! let path = incoming.commit()?;
//! assert_eq!(path, dir.path().join("notes.txt"));
//! assert_eq!(std::fs::read(&path)?, b"hello world");
//! # Ok(()) }
//! ```

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::fsutil;
use crate::names::{numbered_name, sanitize_file_name};
use crate::partial::{self, DEFAULT_PARTIAL_EXPIRY, PartialRecord};

/// How many names (`name`, `name (1)`, … `name (N-1)`) are tried before giving up: enough for any
/// real download folder, and a bound on the work a directory full of planted names can cause.
pub const MAX_NAME_ATTEMPTS: u32 = 1000;

/// Length of a transfer id in hex characters (16 bytes).
const TRANSFER_ID_HEX_LEN: usize = 32;

/// Suffix of temporary files, so leftovers after a crash are recognisable.
pub const TEMP_SUFFIX: &str = "part";

/// Suffix of the temporary directories of received directories ([`crate::save_tree`]).
pub const TEMP_DIR_SUFFIX: &str = "partdir";

/// Prefix of temporary files (after the hiding dot).
const TEMP_PREFIX: &str = ".ats-p2p-";

/// A temporary file untouched this long belongs to no live transfer (an active one is written
/// continuously, and transfers time out after minutes): [`remove_stale_temp_files`] may delete it.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// Most directory entries [`remove_stale_temp_files`] looks at, so a huge directory cannot stall
/// start-up.
pub const MAX_STALE_SCAN_ENTRIES: usize = 100_000;

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

/// The free space of the file system that holds (or will hold) `dir`, in bytes, as an
/// unprivileged user may use it. A save directory that does not exist yet is measured at its
/// nearest existing ancestor, since [`IncomingFile::create`] will create it there.
pub fn available_space(dir: &Path) -> Result<u64, SaveError> {
    let existing = dir
        .ancestors()
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .find(|a| a.exists())
        .unwrap_or(dir);
    fs4::available_space(existing).map_err(|source| SaveError::AvailableSpace {
        dir: dir.to_path_buf(),
        source,
    })
}

/// A file being received: bytes go to a hidden temporary file in the save directory until
/// [`commit`](Self::commit) moves it to its final name.
///
/// The file is worked on through the descriptor opened when it was created, never reopened by
/// name: the save directory is held open (`O_DIRECTORY | O_NOFOLLOW`), the temporary file is
/// created in it once with `O_CREAT | O_EXCL | O_NOFOLLOW` and mode 0600 (others cannot read a
/// partial file; the received file keeps that mode), and the commit renames it without
/// replacing anything (`renameat2(RENAME_NOREPLACE)`, or link and unlink) relative to the
/// directory handle, after checking that the temporary name still refers to this file. Whoever
/// can write the save directory can at most make the commit fail: a symlink swapped in for the
/// temporary name is neither written through nor published.
///
/// Dropping it (or calling [`abort`](Self::abort)) before `commit` removes the temporary file.
/// All methods block; see the module docs.
#[derive(Debug)]
pub struct IncomingFile {
    // Field order matters: `file` is closed before `temp` removes the name.
    file: File,
    temp: TempGuard,
    name: String,
    /// One past the highest byte written so far.
    end: u64,
    /// No byte may be written at or past this offset.
    limit: Option<u64>,
}

/// Removes the temporary file on drop unless disarmed.
#[derive(Debug)]
struct TempGuard {
    dir: fsutil::SaveDir,
    /// The temporary file's name in `dir`.
    name: String,
    /// What that name must refer to (it is removed only then).
    id: fsutil::FileId,
    /// `dir` joined with `name`, for messages.
    path: PathBuf,
    /// The partial-file record beside it, if one was written (removed with the file).
    record: Option<String>,
    armed: bool,
}

impl TempGuard {
    fn disarm(&mut self) {
        self.armed = false;
    }

    fn remove(mut self) -> io::Result<()> {
        self.armed = false;
        self.remove_record();
        self.dir.unlink_if(&self.name, self.id)
    }

    /// Removes the record (best effort: a record without its file is cleaned at the next
    /// start).
    fn remove_record(&mut self) {
        if let Some(record) = self.record.take()
            && let Err(e) = self.dir.unlink(&record)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::debug!(record, error = %e, "could not remove a partial-file record");
        }
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        tracing::debug!(temp = %self.path.display(), "removing unfinished file");
        self.remove_record();
        if let Err(e) = self.dir.unlink_if(&self.name, self.id)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(temp = %self.path.display(), error = %e, "could not remove temporary file");
        }
    }
}

impl IncomingFile {
    /// Starts receiving `offered_name` (a name from the network, sanitised here) into `save_dir`
    /// (created if missing). The temporary file is `.ats-p2p-<transfer id>-<random>.part`,
    /// created once with `O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600, and locked (`flock`) while
    /// this value lives, so [`remove_stale_temp_files`] can tell it from a dead receiver's. Its
    /// leading dot hides it, and sanitised names never start with a dot, so it cannot collide
    /// with a received file.
    pub fn create(
        save_dir: &Path,
        transfer_id_hex: &str,
        offered_name: &str,
    ) -> Result<Self, SaveError> {
        if transfer_id_hex.len() != TRANSFER_ID_HEX_LEN
            || !transfer_id_hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(SaveError::InvalidTransferId {
                len: transfer_id_hex.len(),
            });
        }
        let save_err = |source| SaveError::SaveDir {
            dir: save_dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(save_dir).map_err(save_err)?;
        if !fs::metadata(save_dir).map_err(save_err)?.is_dir() {
            return Err(save_err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            )));
        }
        let dir = fsutil::SaveDir::open(save_dir).map_err(save_err)?;
        let name = sanitize_file_name(offered_name);
        // `create_temp` adds the leading dot: `.ats-p2p-<id>-<random>.part` (see TEMP_PREFIX).
        let prefix = format!("ats-p2p-{}", transfer_id_hex.to_ascii_lowercase());
        let temp_err = |source| SaveError::CreateTemp {
            dir: save_dir.to_path_buf(),
            source,
        };
        let (file, temp_name) = dir.create_temp(&prefix, TEMP_SUFFIX).map_err(temp_err)?;
        let temp_path = save_dir.join(&temp_name);
        let id = match fsutil::FileId::of(&file) {
            Ok(id) => id,
            Err(e) => {
                let _ = dir.unlink(&temp_name);
                return Err(temp_err(e));
            }
        };
        tracing::debug!(temp = %temp_path.display(), %name, "receiving into temporary file");
        Ok(Self {
            file,
            temp: TempGuard {
                dir,
                name: temp_name,
                id,
                path: temp_path,
                record: None,
                armed: true,
            },
            name,
            end: 0,
            limit: None,
        })
    }

    /// Takes over the partial file `temp_name` (a `.ats-p2p-*.part` in `save_dir` with a
    /// record, see [`crate::partial`]) to continue receiving `offered_name` into it: opened
    /// without following links, locked like a new one (fails with `WouldBlock` when a running
    /// receiver holds it). Its bytes are kept; [`Self::len`] is its length on disk. The record
    /// goes with it (removed on commit or abort).
    pub fn adopt(save_dir: &Path, temp_name: &str, offered_name: &str) -> Result<Self, SaveError> {
        let temp_path = save_dir.join(temp_name);
        let open_err = |source| SaveError::CreateTemp {
            dir: save_dir.to_path_buf(),
            source,
        };
        if !temp_name.starts_with(TEMP_PREFIX) || !temp_name.ends_with(&format!(".{TEMP_SUFFIX}")) {
            return Err(open_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a temporary file name",
            )));
        }
        let dir = fsutil::SaveDir::open(save_dir).map_err(|source| SaveError::SaveDir {
            dir: save_dir.to_path_buf(),
            source,
        })?;
        let file = dir.open_locked(temp_name).map_err(open_err)?;
        let id = fsutil::FileId::of(&file).map_err(open_err)?;
        let end = file.metadata().map_err(open_err)?.len();
        tracing::debug!(temp = %temp_path.display(), bytes = end, "continuing a partial file");
        Ok(Self {
            file,
            temp: TempGuard {
                dir,
                name: temp_name.to_owned(),
                id,
                path: temp_path,
                record: partial::record_name(temp_name),
                armed: true,
            },
            name: sanitize_file_name(offered_name),
            end,
            limit: None,
        })
    }

    /// Writes (or rewrites) the partial-file record beside the temporary file, so that a
    /// broken transfer can be resumed; from now on the record is removed with the file.
    pub fn write_record(&mut self, record: &PartialRecord) -> Result<(), SaveError> {
        partial::write_record(&self.temp.dir, &self.temp.name, record).map_err(|source| {
            SaveError::Write {
                path: self.temp.path.clone(),
                source,
            }
        })?;
        self.temp.record = partial::record_name(&self.temp.name);
        Ok(())
    }

    /// Cuts the file to its first `len` bytes (a resumed prefix, or 0 to start over).
    pub fn truncate(&mut self, len: u64) -> Result<(), SaveError> {
        self.file
            .set_len(len)
            .map_err(|e| SaveError::from_write(self.temp.path.clone(), e))?;
        self.end = len;
        Ok(())
    }

    /// Stops receiving but keeps the temporary file and its record for a later resume
    /// (flushed to the page cache; a killed process keeps it too). Without a record this is
    /// [`Self::abort`].
    pub fn keep(mut self) -> Result<(), SaveError> {
        if self.temp.record.is_none() {
            return self.abort();
        }
        self.temp.disarm();
        Ok(())
    }

    /// The temporary file's name in the save directory.
    pub fn temp_name(&self) -> &str {
        &self.temp.name
    }

    /// Refuses any write that would make the file longer than `max` bytes (the offered size):
    /// a second line of defence behind the wire layer, so a peer can never fill the disk past
    /// what was accepted.
    pub fn with_size_limit(mut self, max: u64) -> Self {
        self.limit = Some(max);
        self
    }

    /// The limit set by [`Self::with_size_limit`].
    pub fn size_limit(&self) -> Option<u64> {
        self.limit
    }

    /// Writes `data` at `offset` (positioned write; the file grows as needed).
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), SaveError> {
        let overflow = || SaveError::OffsetOverflow {
            offset,
            len: data.len(),
        };
        let len = u64::try_from(data.len()).map_err(|_| overflow())?;
        let end = offset
            .checked_add(len)
            .filter(|e| i64::try_from(*e).is_ok())
            .ok_or_else(overflow)?;
        if let Some(limit) = self.limit.filter(|l| end > *l) {
            return Err(SaveError::SizeLimit { end, limit });
        }
        write_all_at(&self.file, data, offset)
            .map_err(|e| SaveError::from_write(self.temp.path.clone(), e))?;
        self.end = self.end.max(end);
        Ok(())
    }

    /// Appends `data` after the highest byte written so far.
    pub fn append(&mut self, data: &[u8]) -> Result<(), SaveError> {
        self.write_at(self.end, data)
    }

    /// One past the highest byte written so far (the size the file will have).
    pub fn len(&self) -> u64 {
        self.end
    }

    /// True before anything was written.
    pub fn is_empty(&self) -> bool {
        self.end == 0
    }

    /// The sanitised name the file will get if it is free.
    pub fn file_name(&self) -> &str {
        &self.name
    }

    /// Where the bytes are being written now (for messages: the file is never reopened by this
    /// path).
    pub fn temp_path(&self) -> &Path {
        &self.temp.path
    }

    /// The open temporary file (the direct writer shares this descriptor).
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Finishes the file: fsync, move it to the first free name among `name`, `name (1)`, …
    /// (never overwriting an existing file), fsync the directory. Returns the final path.
    /// Call it only after the content was verified (hash matched). On error the temporary file
    /// is removed.
    pub fn commit(mut self) -> Result<PathBuf, SaveError> {
        let path = self.publish()?;
        self.temp.disarm();
        self.temp.remove_record();
        Ok(path)
    }

    /// Gives up on the file and removes the temporary file.
    pub fn abort(self) -> Result<(), SaveError> {
        let Self { file, temp, .. } = self;
        drop(file);
        let path = temp.path.clone();
        temp.remove()
            .map_err(|source| SaveError::Remove { path, source })
    }

    fn publish(&self) -> Result<PathBuf, SaveError> {
        self.file.sync_all().map_err(|source| SaveError::Sync {
            path: self.temp.path.clone(),
            source,
        })?;
        let dir = &self.temp.dir;
        for n in 0..MAX_NAME_ATTEMPTS {
            let dest_name = numbered_name(&self.name, n);
            let dest = dir.path().join(&dest_name);
            if dest.parent() != Some(dir.path()) || dest_name == "." || dest_name == ".." {
                // The sanitiser guarantees one component; refuse rather than write elsewhere.
                return Err(SaveError::Publish {
                    path: dest,
                    source: io::Error::other("name is not a single path component"),
                });
            }
            match dir.publish(&self.temp.name, self.temp.id, &dest_name) {
                Ok(()) => {
                    if let Err(source) = dir.sync() {
                        // Not durable: undo, so a failed commit leaves nothing behind.
                        let _ = dir.unlink_if(&dest_name, self.temp.id);
                        return Err(SaveError::Sync {
                            path: dir.path().to_path_buf(),
                            source,
                        });
                    }
                    tracing::debug!(path = %dest.display(), "received file in place");
                    return Ok(dest);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(source) => return Err(SaveError::Publish { path: dest, source }),
            }
        }
        Err(SaveError::NoFreeName {
            dir: dir.path().to_path_buf(),
            name: self.name.clone(),
            attempts: MAX_NAME_ATTEMPTS,
        })
    }
}

#[cfg(unix)]
pub(crate) fn write_all_at(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(data, offset)
}

#[cfg(not(unix))]
pub(crate) fn write_all_at(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(data)
}

/// Receiving a file into the save directory failed ([`IncomingFile`],
/// [`available_space`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SaveError {
    /// The transfer id given for the temporary file name is not 32 hex characters.
    #[error("a transfer id is 32 hex characters, got {len} characters")]
    InvalidTransferId {
        /// Length of what was given, in bytes.
        len: usize,
    },
    /// The save directory could not be created or is not a directory.
    #[error("cannot use save directory {dir}")]
    SaveDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// No temporary file could be created in the save directory.
    #[error("cannot create a temporary file in {dir}")]
    CreateTemp {
        /// The save directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file system holding the file is full (or the user's quota is used up).
    #[error("no space left for {path}")]
    DiskFull {
        /// The file being written.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// Writing received bytes failed for another reason.
    #[error("cannot write to {path}")]
    Write {
        /// The temporary file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A write would end past the largest file offset.
    #[error("a write of {len} bytes at offset {offset} ends past the largest file offset")]
    OffsetOverflow {
        /// The offset asked for.
        offset: u64,
        /// The number of bytes.
        len: usize,
    },
    /// A write would make the file longer than its size limit.
    #[error("a write ending at byte {end} exceeds the size limit of {limit} bytes")]
    SizeLimit {
        /// Where the write would end.
        end: u64,
        /// The limit.
        limit: u64,
    },
    /// Flushing the file or its directory to stable storage failed.
    #[error("cannot flush {path} to disk")]
    Sync {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Every candidate name was taken.
    #[error("no free name for {name:?} in {dir} after {attempts} attempts")]
    NoFreeName {
        /// The save directory.
        dir: PathBuf,
        /// The sanitised name that was wanted.
        name: String,
        /// How many names were tried.
        attempts: u32,
    },
    /// Moving the finished file to its final name failed.
    #[error("cannot move the received file into place as {path}")]
    Publish {
        /// The final path that was tried.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Removing the temporary file failed.
    #[error("cannot remove temporary file {path}")]
    Remove {
        /// The temporary file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A received directory's manifest names a path that is not safe here.
    #[error("unsafe path {path:?} in the offered directory: {reason}")]
    UnsafePath {
        /// The path as offered (empty when the manifest as a whole is refused).
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The free space of a directory's file system could not be read.
    #[error("cannot read the free space of {dir}")]
    AvailableSpace {
        /// The directory asked about.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl SaveError {
    /// Classifies a write error: `ENOSPC`/`EDQUOT` become [`SaveError::DiskFull`].
    pub(crate) fn from_write(path: PathBuf, source: io::Error) -> Self {
        match source.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                Self::DiskFull { path, source }
            }
            _ => Self::Write { path, source },
        }
    }
}
