//! One file being received: [`IncomingFile`] creates (or adopts) the hidden temporary file,
//! writes to it, and commits it to a free name or aborts; its `TempGuard` removes the
//! temporary file (and its record) on every path that does not commit.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::{MAX_NAME_ATTEMPTS, SaveError, TEMP_PREFIX, TEMP_SUFFIX, TRANSFER_ID_HEX_LEN};
use crate::fsutil;
use crate::names::{numbered_name, sanitize_file_name};
use crate::partial::{self, PartialRecord};

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
    ///
    /// [`remove_stale_temp_files`]: super::remove_stale_temp_files
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
