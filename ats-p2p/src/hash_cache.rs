//! The sender's pre-hash cache: re-sending an unchanged file skips hashing it.
//!
//! An entry maps a file's canonical path to its SHA-256 and the stamp it had when hashed: size,
//! modification and status-change times in nanoseconds, inode and device. A lookup is a hit only
//! when every stamp field is unchanged; any write, truncation, replacement (new inode), move
//! to another file system or `touch` (even back to the old mtime: the status-change time still
//! moves) is a miss and the file is hashed again.
//!
//! The racy-timestamp rule (as in git's index): file times have a coarse granularity, so a file
//! changed right after being hashed can keep its stamp. A file whose modification or
//! status-change time is within [`RACY_WINDOW`] of now is therefore never looked up nor stored.
//!
//! The cache lives privately (mode 0600) in the node's state directory, beside the remembered
//! keys ([`HashCache::beside`]); a node without one (known keys in memory) does not cache. It
//! holds at most [`MAX_ENTRIES`] entries, least recently used first out. The cache is only an
//! optimisation: an unreadable or corrupt file is an empty cache, a failed write is logged and
//! ignored, concurrent senders may lose each other's entries. A wrong entry cannot corrupt a
//! transfer either: the receiver verifies the bytes it got against the offered hash.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::hashing::{FileDigest, HashError, sha256_file_until};

/// Files modified (or with status changed) less than this long ago are neither looked up nor
/// stored: a change within the file system's timestamp granularity could go unseen.
pub const RACY_WINDOW: Duration = Duration::from_secs(2);
/// Most entries kept (the least recently used are dropped): about 200 bytes each on disk.
pub const MAX_ENTRIES: usize = 1024;
/// The cache file's name in the state directory.
pub const CACHE_FILE_NAME: &str = "hash_cache.json";
/// The on-disk format; another version is read as an empty cache.
const FORMAT_VERSION: u32 = 1;

/// What identifies the contents of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct FileStamp {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    dev: u64,
}

impl FileStamp {
    #[cfg(unix)]
    fn of(meta: &fs::Metadata) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let ns = |secs: i64, nanos: i64| secs.checked_mul(1_000_000_000)?.checked_add(nanos);
        Some(Self {
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec())?,
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec())?,
            ino: meta.ino(),
            dev: meta.dev(),
        })
    }

    /// Outside Unix there is no inode or status-change time: nothing is cached.
    #[cfg(not(unix))]
    fn of(_meta: &fs::Metadata) -> Option<Self> {
        None
    }

    /// Whether both times are at least `window` before `now`.
    fn settled(&self, now: SystemTime, window: Duration) -> bool {
        let Some(limit) = now
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| d.checked_sub(window))
        else {
            return false;
        };
        let limit = i64::try_from(limit.as_nanos()).unwrap_or(i64::MAX);
        self.mtime_ns <= limit && self.ctime_ns <= limit
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    stamp: FileStamp,
    sha256: String,
    /// Seconds since the epoch of the last hit or store (for eviction).
    used: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    entries: BTreeMap<String, Entry>,
}

/// How a [`HashCache::digest_with`] answer came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// The entry matched: the file was not read.
    Hit,
    /// Hashed, and the result stored.
    Stored,
    /// Hashed and not stored: no cache file, a racy or changing file, or a path we do not key.
    Hashed,
}

/// The pre-hash cache of one state directory (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct HashCache {
    file: Option<PathBuf>,
    racy_window: Duration,
}

impl HashCache {
    /// The cache in the directory of `known_keys_path` (the node's state directory); `None`
    /// (keys kept in memory) is a cache that hashes every time.
    pub fn beside(known_keys_path: Option<&Path>) -> Self {
        let file = known_keys_path
            .and_then(Path::parent)
            .map(|dir| dir.join(CACHE_FILE_NAME));
        Self {
            file,
            racy_window: RACY_WINDOW,
        }
    }

    /// A cache stored in `file`, with a racy window other than [`RACY_WINDOW`] (tests use zero
    /// for files they just wrote).
    pub fn at(file: PathBuf, racy_window: Duration) -> Self {
        Self {
            file: Some(file),
            racy_window,
        }
    }

    /// The SHA-256 of `path` from the cache, or from `hash` (then stored when the file held
    /// still). Blocks.
    pub fn digest_with(
        &self,
        path: &Path,
        hash: impl FnOnce(&Path) -> Result<FileDigest, HashError>,
    ) -> Result<(FileDigest, CacheOutcome), HashError> {
        let Some((file, key, before)) = self.keyed(path) else {
            return hash(path).map(|d| (d, CacheOutcome::Hashed));
        };
        let mut cache = load(&file);
        if let Some(entry) = cache.entries.get(&key)
            && entry.stamp == before
            && let Some(sha256) = decode_sha(&entry.sha256)
        {
            if let Some(e) = cache.entries.get_mut(&key) {
                e.used = now_secs();
            }
            save(&file, &cache);
            let digest = FileDigest {
                sha256,
                bytes: before.size,
            };
            return Ok((digest, CacheOutcome::Hit));
        }
        let digest = hash(path)?;
        let after = fs::metadata(path).ok().as_ref().and_then(FileStamp::of);
        let still = after == Some(before)
            && digest.bytes == before.size
            && before.settled(SystemTime::now(), self.racy_window);
        if !still {
            return Ok((digest, CacheOutcome::Hashed));
        }
        cache.entries.insert(
            key,
            Entry {
                stamp: before,
                sha256: digest.sha256_hex(),
                used: now_secs(),
            },
        );
        evict(&mut cache);
        save(&file, &cache);
        Ok((digest, CacheOutcome::Stored))
    }

    /// [`Self::digest_with`] the streaming hash of [`crate::hashing`], on a blocking thread
    /// (stops reading when the future is dropped).
    pub async fn sha256_file(&self, path: PathBuf) -> Result<FileDigest, HashError> {
        let cache = self.clone();
        let cancel = Arc::new(AtomicBool::new(false));
        let _stop = crate::hashing::CancelOnDrop(Arc::clone(&cancel));
        tokio::task::spawn_blocking(move || {
            cache
                .digest_with(&path, |p| sha256_file_until(p, &cancel, |_, _| {}))
                .map(|(digest, outcome)| {
                    tracing::debug!(?outcome, path = %path.display(), "pre-hash");
                    digest
                })
        })
        .await
        .map_err(HashError::Task)?
    }

    /// The cache file, the key and the stamp, when `path` may be cached now.
    fn keyed(&self, path: &Path) -> Option<(PathBuf, String, FileStamp)> {
        let file = self.file.clone()?;
        let canonical = fs::canonicalize(path).ok()?;
        let meta = fs::metadata(&canonical).ok()?;
        if !meta.is_file() {
            return None;
        }
        let stamp = FileStamp::of(&meta)?;
        if !stamp.settled(SystemTime::now(), self.racy_window) {
            return None;
        }
        // Non-UTF-8 paths are not keyed (a lossy key could name two files).
        let key = canonical.to_str()?.to_owned();
        Some((file, key, stamp))
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn decode_sha(s: &str) -> Option<[u8; 32]> {
    hex::decode(s).ok()?.try_into().ok()
}

/// The cache in `file`; missing, unreadable, corrupt or another version: empty.
fn load(file: &Path) -> CacheFile {
    let parsed = fs::read(file)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<CacheFile>(&bytes).ok());
    match parsed {
        Some(c) if c.version == FORMAT_VERSION => c,
        _ => CacheFile {
            version: FORMAT_VERSION,
            entries: BTreeMap::new(),
        },
    }
}

/// Keeps the [`MAX_ENTRIES`] most recently used entries.
fn evict(cache: &mut CacheFile) {
    let excess = cache.entries.len().saturating_sub(MAX_ENTRIES);
    if excess == 0 {
        return;
    }
    let mut by_use: Vec<(u64, String)> = cache
        .entries
        .iter()
        .map(|(k, e)| (e.used, k.clone()))
        .collect();
    by_use.sort_unstable();
    for (_, key) in by_use.into_iter().take(excess) {
        cache.entries.remove(&key);
    }
}

/// Writes the cache (a private temporary file renamed over it, so a reader never sees half a
/// file). Not fsynced: a cache lost in a crash only costs a re-hash. Failures are logged.
fn save(file: &Path, cache: &CacheFile) {
    let result = (|| -> std::io::Result<()> {
        let dir = file.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let text = serde_json::to_vec(cache).map_err(std::io::Error::other)?;
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        fsutil::set_mode(&mut options, 0o600);
        let (mut out, temp) = fsutil::create_temp(dir, ".hash_cache", "tmp", &options)?;
        let written = out.write_all(&text).and_then(|()| fs::rename(&temp, file));
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written
    })();
    if let Err(e) = result {
        tracing::debug!(error = %e, file = %file.display(), "pre-hash cache not saved");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::sha256_file;
    use std::cell::Cell;
    use std::fs::File;

    /// A file with `contents` whose mtime is an hour ago.
    fn old_file(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, contents).unwrap();
        set_mtime(&path, SystemTime::now() - Duration::from_secs(3600));
        path
    }

    fn set_mtime(path: &Path, t: SystemTime) {
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    /// Waits until the file system's clock (coarse: a kernel tick) moved past the stamps of
    /// files written so far, so the next change gets a new status-change time. (In production
    /// the racy window covers this; these tests use a zero window.)
    fn next_fs_tick(dir: &Path) {
        let probe = dir.join("tick.probe");
        fs::write(&probe, b"a").unwrap();
        let first = fs::metadata(&probe).unwrap().modified().unwrap();
        for _ in 0..10_000 {
            std::thread::sleep(Duration::from_micros(200));
            fs::write(&probe, b"b").unwrap();
            if fs::metadata(&probe).unwrap().modified().unwrap() != first {
                return;
            }
        }
        panic!("the file system clock did not move");
    }

    fn mtime(path: &Path) -> SystemTime {
        fs::metadata(path).unwrap().modified().unwrap()
    }

    /// Digests `path`, counting the hashes actually run.
    fn digest(cache: &HashCache, path: &Path, hashed: &Cell<u32>) -> (FileDigest, CacheOutcome) {
        cache
            .digest_with(path, |p| {
                hashed.set(hashed.get() + 1);
                sha256_file(p, |_, _| {})
            })
            .unwrap()
    }

    fn zero_window(dir: &Path) -> HashCache {
        HashCache::at(dir.join("state").join(CACHE_FILE_NAME), Duration::ZERO)
    }

    #[test]
    fn an_unchanged_file_is_hashed_once() {
        let dir = tempfile::tempdir().unwrap();
        let cache = zero_window(dir.path());
        let path = old_file(dir.path(), "a.bin", b"hello cache");
        let hashed = Cell::new(0);
        let (first, outcome) = digest(&cache, &path, &hashed);
        assert_eq!(outcome, CacheOutcome::Stored);
        for _ in 0..3 {
            let (again, outcome) = digest(&cache, &path, &hashed);
            assert_eq!(outcome, CacheOutcome::Hit);
            assert_eq!(again, first);
        }
        // Another spelling of the same path is the same entry.
        let other = dir.path().join(".").join("a.bin");
        assert_eq!(digest(&cache, &other, &hashed).1, CacheOutcome::Hit);
        assert_eq!(hashed.get(), 1, "hashed once for five digests");
        assert_eq!(first, sha256_file(&path, |_, _| {}).unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let file = dir.path().join("state").join(CACHE_FILE_NAME);
            let mode = fs::metadata(file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the cache is private");
        }
    }

    #[test]
    fn any_change_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = zero_window(dir.path());
        let path = old_file(dir.path(), "f.bin", b"0123456789");
        let hashed = Cell::new(0);
        let (original, _) = digest(&cache, &path, &hashed);
        assert_eq!(digest(&cache, &path, &hashed).1, CacheOutcome::Hit);
        assert_eq!(hashed.get(), 1);

        next_fs_tick(dir.path());
        // Size: appended.
        fs::write(&path, b"0123456789+").unwrap();
        let (d, outcome) = digest(&cache, &path, &hashed);
        assert_eq!((outcome, hashed.get()), (CacheOutcome::Stored, 2));
        assert_ne!(d, original);

        next_fs_tick(dir.path());
        // Same size, new mtime.
        fs::write(&path, b"0123456789-").unwrap();
        set_mtime(&path, SystemTime::now() - Duration::from_secs(60));
        let (d2, _) = digest(&cache, &path, &hashed);
        assert_eq!(hashed.get(), 3);
        assert_ne!(d2, d);

        // Same size, content changed and the mtime put back exactly (`touch -d`): the
        // status-change time still moved.
        let before = mtime(&path);
        assert_eq!(digest(&cache, &path, &hashed).1, CacheOutcome::Hit);
        next_fs_tick(dir.path());
        fs::write(&path, b"0123456789*").unwrap();
        set_mtime(&path, before);
        assert_eq!(mtime(&path), before);
        let (d3, outcome) = digest(&cache, &path, &hashed);
        assert_eq!((outcome, hashed.get()), (CacheOutcome::Stored, 4));
        assert_ne!(d3, d2);
        assert_eq!(d3, sha256_file(&path, |_, _| {}).unwrap());

        // Replaced by another file (new inode) with the same size and mtime.
        let t = mtime(&path);
        next_fs_tick(dir.path());
        let replacement = dir.path().join("g.tmp");
        fs::write(&replacement, b"0123456789*").unwrap();
        set_mtime(&replacement, t);
        fs::rename(&replacement, &path).unwrap();
        assert_eq!(digest(&cache, &path, &hashed).1, CacheOutcome::Stored);
        assert_eq!(hashed.get(), 5);
    }

    #[test]
    fn racy_files_are_never_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(CACHE_FILE_NAME);
        let cache = HashCache::at(file.clone(), RACY_WINDOW);
        // Just written: its times are within the window.
        let path = dir.path().join("new.bin");
        fs::write(&path, b"fresh").unwrap();
        let hashed = Cell::new(0);
        for _ in 0..2 {
            assert_eq!(digest(&cache, &path, &hashed).1, CacheOutcome::Hashed);
        }
        assert_eq!(hashed.get(), 2);
        assert!(!file.exists(), "nothing stored");
        // A cache without a file hashes every time.
        let none = HashCache::beside(None);
        assert_eq!(digest(&none, &path, &hashed).1, CacheOutcome::Hashed);
        assert_eq!(hashed.get(), 3);
    }

    #[test]
    fn a_corrupt_cache_is_empty_and_entries_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let cache = zero_window(dir.path());
        let file = dir.path().join("state").join(CACHE_FILE_NAME);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, b"{not json").unwrap();
        let path = old_file(dir.path(), "x", b"x");
        let hashed = Cell::new(0);
        assert_eq!(digest(&cache, &path, &hashed).1, CacheOutcome::Stored);
        assert_eq!(digest(&cache, &path, &hashed).1, CacheOutcome::Hit);

        let mut c = load(&file);
        for i in 0..MAX_ENTRIES + 10 {
            let mut e = c.entries.values().next().unwrap().clone();
            e.used = i as u64;
            c.entries.insert(format!("/k{i}"), e);
        }
        evict(&mut c);
        assert_eq!(c.entries.len(), MAX_ENTRIES);
        assert!(
            !c.entries.contains_key("/k0"),
            "least recently used out first"
        );
        assert!(
            c.entries
                .contains_key(path.canonicalize().unwrap().to_str().unwrap())
        );
    }
}
