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

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::SaveError;
use crate::fsutil;
use crate::names::{numbered_name, sanitize_file_name};

/// How many names (`name`, `name (1)`, … `name (N-1)`) are tried before giving up: enough for any
/// real download folder, and a bound on the work a directory full of planted names can cause.
pub const MAX_NAME_ATTEMPTS: u32 = 1000;

/// Length of a transfer id in hex characters (16 bytes).
const TRANSFER_ID_HEX_LEN: usize = 32;

/// Suffix of temporary files, so leftovers after a crash are recognisable.
pub const TEMP_SUFFIX: &str = "part";

/// The free space of the file system holding `dir`, in bytes, as an unprivileged user may use it.
pub fn available_space(dir: &Path) -> Result<u64, SaveError> {
    fs4::available_space(dir).map_err(|source| SaveError::AvailableSpace {
        dir: dir.to_path_buf(),
        source,
    })
}

/// A file being received: bytes go to a hidden temporary file in the save directory until
/// [`commit`](Self::commit) moves it to its final name.
///
/// Dropping it (or calling [`abort`](Self::abort)) before `commit` removes the temporary file.
/// All methods block; see the module docs.
#[derive(Debug)]
pub struct IncomingFile {
    /// `Some` until committed or aborted; `Drop` cleans up whatever is left.
    inner: Option<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    name: String,
    temp_path: PathBuf,
    file: File,
    /// One past the highest byte written so far.
    end: u64,
}

impl IncomingFile {
    /// Starts receiving `offered_name` (a name from the network, sanitised here) into `save_dir`
    /// (created if missing). The temporary file is `.ats-p2p-<transfer id>-<random>.part`, created
    /// with `create_new` and the default mode (the umask applies, as for any file the user
    /// downloads; the final file keeps that mode).
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
        let name = sanitize_file_name(offered_name);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create_new(true);
        let prefix = format!("ats-p2p-{}", transfer_id_hex.to_ascii_lowercase());
        let (file, temp_path) = fsutil::create_temp(save_dir, &prefix, TEMP_SUFFIX, &options)
            .map_err(|source| SaveError::CreateTemp {
                dir: save_dir.to_path_buf(),
                source,
            })?;
        tracing::debug!(temp = %temp_path.display(), %name, "receiving into temporary file");
        Ok(Self {
            inner: Some(Inner {
                dir: save_dir.to_path_buf(),
                name,
                temp_path,
                file,
                end: 0,
            }),
        })
    }

    /// Writes `data` at `offset` (positioned write; the file grows as needed).
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), SaveError> {
        let inner = self.inner_mut()?;
        let len = u64::try_from(data.len()).map_err(|_| SaveError::OffsetOverflow {
            offset,
            len: data.len(),
        })?;
        let end = offset
            .checked_add(len)
            .filter(|e| i64::try_from(*e).is_ok())
            .ok_or(SaveError::OffsetOverflow {
                offset,
                len: data.len(),
            })?;
        write_all_at(&inner.file, data, offset)
            .map_err(|e| SaveError::from_write(inner.temp_path.clone(), e))?;
        inner.end = inner.end.max(end);
        Ok(())
    }

    /// Appends `data` after the highest byte written so far.
    pub fn append(&mut self, data: &[u8]) -> Result<(), SaveError> {
        let end = self.len();
        self.write_at(end, data)
    }

    /// One past the highest byte written so far (the size the file will have).
    pub fn len(&self) -> u64 {
        self.inner.as_ref().map_or(0, |i| i.end)
    }

    /// True before anything was written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sanitised name the file will get if it is free.
    pub fn file_name(&self) -> &str {
        self.inner.as_ref().map_or("", |i| i.name.as_str())
    }

    /// Where the bytes are being written now.
    pub fn temp_path(&self) -> &Path {
        self.inner
            .as_ref()
            .map_or(Path::new(""), |i| i.temp_path.as_path())
    }

    /// Finishes the file: fsync, move it to the first free name among `name`, `name (1)`, …
    /// (never overwriting an existing file), fsync the directory. Returns the final path.
    /// Call it only after the content was verified (hash matched). On error the temporary file
    /// is removed.
    pub fn commit(mut self) -> Result<PathBuf, SaveError> {
        let Some(inner) = self.inner.take() else {
            return Err(not_open());
        };
        let result = publish(&inner);
        if result.is_err() {
            remove_quietly(&inner.temp_path);
        }
        result
    }

    /// Gives up on the file and removes the temporary file.
    pub fn abort(mut self) -> Result<(), SaveError> {
        let Some(inner) = self.inner.take() else {
            return Ok(());
        };
        let Inner {
            file, temp_path, ..
        } = inner;
        drop(file);
        fs::remove_file(&temp_path).map_err(|source| SaveError::Remove {
            path: temp_path,
            source,
        })
    }

    fn inner_mut(&mut self) -> Result<&mut Inner, SaveError> {
        self.inner.as_mut().ok_or_else(not_open)
    }
}

impl Drop for IncomingFile {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            tracing::debug!(temp = %inner.temp_path.display(), "removing unfinished file");
            drop(inner.file);
            remove_quietly(&inner.temp_path);
        }
    }
}

fn not_open() -> SaveError {
    // Only reachable through a bug: `commit`/`abort` consume the value.
    SaveError::Write {
        path: PathBuf::new(),
        source: io::Error::other("incoming file already finished"),
    }
}

fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(temp = %path.display(), error = %e, "could not remove temporary file");
        }
    }
}

fn publish(inner: &Inner) -> Result<PathBuf, SaveError> {
    inner.file.sync_all().map_err(|source| SaveError::Sync {
        path: inner.temp_path.clone(),
        source,
    })?;
    for n in 0..MAX_NAME_ATTEMPTS {
        let candidate = numbered_name(&inner.name, n);
        let dest = inner.dir.join(&candidate);
        if dest.parent() != Some(inner.dir.as_path()) {
            // The sanitiser guarantees one component; refuse rather than write elsewhere.
            return Err(SaveError::Publish {
                path: dest,
                source: io::Error::other("name is not a single path component"),
            });
        }
        match fsutil::publish_no_replace(&inner.temp_path, &dest) {
            Ok(()) => {
                fsutil::sync_dir(&inner.dir).map_err(|source| SaveError::Sync {
                    path: inner.dir.clone(),
                    source,
                })?;
                tracing::debug!(path = %dest.display(), "received file in place");
                return Ok(dest);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(SaveError::Publish { path: dest, source }),
        }
    }
    Err(SaveError::NoFreeName {
        dir: inner.dir.clone(),
        name: inner.name.clone(),
        attempts: MAX_NAME_ATTEMPTS,
    })
}

#[cfg(unix)]
fn write_all_at(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(data, offset)
}

#[cfg(not(unix))]
fn write_all_at(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(data)
}
