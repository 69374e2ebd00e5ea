//! [`SaveError`]: what can go wrong receiving into a save directory, raised by every part of
//! [`crate::save`] and by [`crate::save_tree`].

use std::io;
use std::path::PathBuf;

/// Receiving a file into the save directory failed ([`IncomingFile`],
/// [`available_space`]).
///
/// [`IncomingFile`]: super::IncomingFile
/// [`available_space`]: super::available_space
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
