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
//!
//! The parts: `incoming` (one file: create or adopt, write, commit or abort), `stale` (cleaning
//! what dead receivers left), `space` (free disk space) and `error` ([`SaveError`]).

mod error;
mod incoming;
mod space;
mod stale;

use std::time::Duration;

pub use self::error::SaveError;
pub use self::incoming::IncomingFile;
pub(crate) use self::incoming::write_all_at;
pub use self::space::available_space;
pub use self::stale::{remove_stale_files, remove_stale_temp_files};

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
