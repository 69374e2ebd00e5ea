//! Partial files kept for resuming: what a broken receive leaves in the save directory, how a
//! later offer of the same file finds it, and when it expires.
//!
//! A receive that can resume writes, beside its hidden temporary file
//! `.ats-p2p-<transfer id>-<random>.part` (mode 0600), a record
//! `.ats-p2p-<transfer id>-<random>.resume` (mode 0600, JSON, see [`PartialRecord`]) saying
//! which file it is: the sender's key, the transfer id, the offered name, size and SHA-256, when
//! it started and how many bytes it had when it last stopped. When the receive breaks (the peer
//! vanished, a timeout, Ctrl-C, the process killed) both stay. When the **same sender key**
//! offers a file with the **same SHA-256, size and name** again, the receiver takes that partial
//! file over, re-hashes what it holds from disk (the record is never trusted for content) and
//! asks the sender for the rest. A file the peer proved wrong (hash mismatch, a protocol
//! violation) is removed instead.
//!
//! [`remove_stale_temp_files`](crate::save::remove_stale_temp_files) keeps a partial with a
//! record until it expires ([`DEFAULT_PARTIAL_EXPIRY`], counted from its last write) and removes
//! records whose file is gone. [`list_partials`] is what `ats-p2p status --partials` shows.
//!
//! Everything here blocks.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ats_p2p_wire::FileHash;
use serde::{Deserialize, Serialize};

use crate::fsutil::SaveDir;
use crate::save::{MAX_STALE_SCAN_ENTRIES, TEMP_DIR_SUFFIX, TEMP_SUFFIX};

/// How long a partial file is kept after its last write, by default: a week, long enough to
/// come back after a weekend, short enough that abandoned halves do not pile up.
pub const DEFAULT_PARTIAL_EXPIRY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Resumed prefixes are cut to a multiple of this (one DATA frame, a multiple of the direct
/// I/O alignment): a killed receiver's last write may be torn.
pub const PREFIX_GRANULE: u64 = 64 * 1024;

/// Bytes read per step when re-hashing a kept prefix.
const REHASH_CHUNK: usize = 1024 * 1024;

/// SHA-256 state over the next `len` bytes of `reader` (a kept file, read from disk: a record
/// is never trusted for content). Fails if fewer bytes are there. Blocks.
pub(crate) fn hash_prefix(reader: &mut impl io::Read, len: u64) -> io::Result<sha2::Sha256> {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; REHASH_CHUNK];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(REHASH_CHUNK);
        let chunk = buf.get_mut(..want).unwrap_or_default();
        reader.read_exact(chunk)?;
        hasher.update(&*chunk);
        left = left.saturating_sub(u64::try_from(want).unwrap_or(u64::MAX));
    }
    Ok(hasher)
}

/// Suffix of partial-file records (the temporary file's name with this in place of `part`).
pub const RECORD_SUFFIX: &str = "resume";

/// Largest record read back: a few hundred bytes in practice (the name is at most a few
/// hundred bytes); anything bigger is not ours.
const MAX_RECORD_LEN: usize = 8 * 1024;

/// Version of the record format.
const RECORD_VERSION: u32 = 1;

/// The record kept beside a partial file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialRecord {
    /// Record format version (1).
    pub v: u32,
    /// The sender's public key, 64 hex characters.
    pub sender_key: String,
    /// The transfer that started the file (32 hex characters).
    pub transfer_id: String,
    /// The name as offered.
    pub name: String,
    /// The offered size.
    pub size: u64,
    /// The offered SHA-256 (64 hex characters).
    pub sha256: String,
    /// When the first transfer started (seconds since the Unix epoch).
    pub created: u64,
    /// Bytes on disk when the last transfer stopped (0 until one stopped cleanly; a killed
    /// receiver leaves the bytes but not this number: the disk is what counts).
    pub verified: u64,
    /// The partial is a directory (`.ats-p2p-*.partdir`, see [`crate::save_tree`]): `sha256`
    /// is its manifest's digest. Absent in records written before directories: `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub directory: bool,
}

/// What identifies a file across transfers: the match key for resuming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialKey {
    /// The sender's public key.
    pub sender_key: [u8; 32],
    /// The offered name.
    pub name: String,
    /// The offered size.
    pub size: u64,
    /// The offered SHA-256.
    pub sha256: FileHash,
}

impl PartialKey {
    /// The record for a new partial file of this key, started by `transfer_id` now.
    pub fn record(&self, transfer_id: &str) -> PartialRecord {
        PartialRecord {
            v: RECORD_VERSION,
            sender_key: hex::encode(self.sender_key),
            transfer_id: transfer_id.to_owned(),
            name: self.name.clone(),
            size: self.size,
            sha256: self.sha256.to_hex(),
            created: unix_now(),
            verified: 0,
            directory: false,
        }
    }

    /// Whether `record` describes this file from this sender.
    pub fn matches(&self, record: &PartialRecord) -> bool {
        record.v == RECORD_VERSION
            && record
                .sender_key
                .eq_ignore_ascii_case(&hex::encode(self.sender_key))
            && record.sha256.eq_ignore_ascii_case(&self.sha256.to_hex())
            && record.size == self.size
            && record.name == self.name
    }
}

/// A partial file found in a save directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialInfo {
    /// The temporary file.
    pub path: PathBuf,
    /// Its record.
    pub record: PartialRecord,
    /// Bytes it holds now.
    pub len: u64,
    /// Time since its last write.
    pub age: Duration,
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The record name that belongs to the temporary file or directory `temp_name` (`…part` or
/// `…partdir` → `…resume`); `None` for a name that is not a temporary file's or directory's.
pub(crate) fn record_name(temp_name: &str) -> Option<String> {
    temp_name
        .strip_suffix(TEMP_DIR_SUFFIX)
        .or_else(|| temp_name.strip_suffix(TEMP_SUFFIX))
        .map(|stem| format!("{stem}{RECORD_SUFFIX}"))
}

/// The temporary name a record belongs to: the directory's for a directory record, else the
/// file's.
pub(crate) fn partial_name_of(record_name: &str, record: &PartialRecord) -> Option<String> {
    let stem = record_name.strip_suffix(RECORD_SUFFIX)?;
    let suffix = if record.directory {
        TEMP_DIR_SUFFIX
    } else {
        TEMP_SUFFIX
    };
    Some(format!("{stem}{suffix}"))
}

/// The temporary file name that belongs to the record `record_name`.
pub(crate) fn temp_name_of(record_name: &str) -> Option<String> {
    record_name
        .strip_suffix(RECORD_SUFFIX)
        .map(|stem| format!("{stem}{TEMP_SUFFIX}"))
}

/// Whether `name` looks like one of our records.
pub(crate) fn is_record_name(name: &str) -> bool {
    name.starts_with(".ats-p2p-") && name.ends_with(&format!(".{RECORD_SUFFIX}"))
}

/// Writes (replaces) the record of `temp_name`.
pub(crate) fn write_record(
    dir: &SaveDir,
    temp_name: &str,
    record: &PartialRecord,
) -> io::Result<()> {
    let name = record_name(temp_name)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a temporary file"))?;
    let json = serde_json::to_vec(record).map_err(io::Error::other)?;
    dir.replace_small(&name, &json)
}

/// Reads and parses the record `name`; `None` for anything that is not a valid record.
pub(crate) fn read_record(dir: &SaveDir, name: &str) -> Option<PartialRecord> {
    let bytes = dir.read_small(name, MAX_RECORD_LEN).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The records in `dir` (at most [`MAX_STALE_SCAN_ENTRIES`] entries are looked at), as
/// `(record name, record)`; unreadable or foreign ones are skipped.
pub(crate) fn records(dir: &SaveDir) -> Vec<(String, PartialRecord)> {
    let Ok(entries) = fs::read_dir(dir.path()) else {
        return Vec::new();
    };
    entries
        .take(MAX_STALE_SCAN_ENTRIES)
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|name| is_record_name(name))
        .filter_map(|name| read_record(dir, &name).map(|r| (name, r)))
        .collect()
}

/// The partial files in `save_dir`, oldest first (a missing directory has none).
pub fn list_partials(save_dir: &Path) -> io::Result<Vec<PartialInfo>> {
    let dir = match SaveDir::open(save_dir) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let now = SystemTime::now();
    let mut found: Vec<PartialInfo> = records(&dir)
        .into_iter()
        .filter_map(|(name, record)| {
            let temp = partial_name_of(&name, &record)?;
            let path = save_dir.join(&temp);
            let meta = fs::symlink_metadata(&path).ok()?;
            let (len, modified) = if record.directory && meta.is_dir() {
                // A directory's bytes are its files'; its record is rewritten when it stops.
                let record_meta = fs::symlink_metadata(save_dir.join(&name)).ok()?;
                (record.verified, record_meta.modified().ok())
            } else if !record.directory && meta.is_file() {
                (meta.len(), meta.modified().ok())
            } else {
                return None;
            };
            let age = modified
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            Some(PartialInfo {
                path,
                record,
                len,
                age,
            })
        })
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.age));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PartialKey {
        PartialKey {
            sender_key: [7; 32],
            name: "a.bin".into(),
            size: 10,
            sha256: FileHash::of(b"x"),
        }
    }

    #[test]
    fn a_record_matches_only_its_file_and_sender() {
        let k = key();
        let r = k.record("00112233445566778899aabbccddeeff");
        assert!(k.matches(&r));
        for other in [
            PartialKey {
                sender_key: [8; 32],
                ..key()
            },
            PartialKey {
                name: "b.bin".into(),
                ..key()
            },
            PartialKey { size: 11, ..key() },
            PartialKey {
                sha256: FileHash::of(b"y"),
                ..key()
            },
        ] {
            assert!(!other.matches(&r));
        }
    }

    #[test]
    fn record_names_pair_with_temporary_names() {
        let temp = ".ats-p2p-00112233445566778899aabbccddeeff-0123456789abcdef.part";
        let rec = record_name(temp).unwrap_or_default();
        assert_eq!(
            rec,
            ".ats-p2p-00112233445566778899aabbccddeeff-0123456789abcdef.resume"
        );
        assert!(is_record_name(&rec));
        assert_eq!(temp_name_of(&rec).as_deref(), Some(temp));
        assert_eq!(record_name("x.txt"), None);
        let temp_dir = ".ats-p2p-00112233445566778899aabbccddeeff-0123456789abcdef.partdir";
        assert_eq!(record_name(temp_dir).as_deref(), Some(rec.as_str()));
        let dir_record = PartialRecord {
            directory: true,
            ..key().record("00112233445566778899aabbccddeeff")
        };
        assert_eq!(
            partial_name_of(&rec, &dir_record).as_deref(),
            Some(temp_dir)
        );
        let file_record = key().record("00112233445566778899aabbccddeeff");
        assert_eq!(partial_name_of(&rec, &file_record).as_deref(), Some(temp));
    }
}
