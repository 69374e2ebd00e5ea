//! Streaming SHA-256 of a file, with progress, in a fixed buffer: the file is never loaded.
//!
//! [`sha256_file`] blocks; on an async runtime use [`sha256_file_async`], which runs it on
//! `spawn_blocking` and stops reading when its future is dropped.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

/// Size of the read buffer: large enough for sequential-read throughput, small enough to sit on
/// any thread; allocated once per call.
pub const HASH_BUF_SIZE: usize = 64 * 1024;

/// The result of hashing a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileDigest {
    /// SHA-256 over every byte read.
    pub sha256: [u8; 32],
    /// How many bytes were read (the file's size, unless it changed while being read).
    pub bytes: u64,
}

impl FileDigest {
    /// The hash as 64 lower-case hex characters, as offers and task outputs carry it.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// Hashes the file at `path`, calling `on_progress(bytes_read, total)` after every buffer (and
/// once at the start with `0`). `total` is the size when the file was opened. Blocks.
pub fn sha256_file(
    path: &Path,
    on_progress: impl FnMut(u64, u64),
) -> Result<FileDigest, HashError> {
    sha256_file_until(path, &AtomicBool::new(false), on_progress)
}

/// [`sha256_file`] that stops with [`HashError::Cancelled`] once `cancel` is set (checked before
/// every buffer).
pub fn sha256_file_until(
    path: &Path,
    cancel: &AtomicBool,
    mut on_progress: impl FnMut(u64, u64),
) -> Result<FileDigest, HashError> {
    let open_err = |source| HashError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(open_err)?;
    let meta = file.metadata().map_err(open_err)?;
    if !meta.is_file() {
        return Err(HashError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let total = meta.len();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_BUF_SIZE].into_boxed_slice();
    let mut done: u64 = 0;
    on_progress(0, total);
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(HashError::Cancelled);
        }
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(HashError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let chunk = buf.get(..n).unwrap_or(&buf);
        hasher.update(chunk);
        done = done.saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
        on_progress(done, total);
    }
    Ok(FileDigest {
        sha256: hasher.finalize().into(),
        bytes: done,
    })
}

/// [`sha256_file`] on tokio's blocking pool. `on_progress` runs on that blocking thread, so it
/// should only store the numbers (for example in a `tokio::sync::watch` channel). Dropping the
/// returned future stops the read at the next buffer.
pub async fn sha256_file_async(
    path: PathBuf,
    on_progress: impl FnMut(u64, u64) + Send + 'static,
) -> Result<FileDigest, HashError> {
    let cancel = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = CancelOnDrop(Arc::clone(&cancel));
    tokio::task::spawn_blocking(move || sha256_file_until(&path, &cancel, on_progress))
        .await
        .map_err(HashError::Task)?
}

/// Sets the flag when dropped, so an abandoned blocking hash stops.
#[derive(Debug)]
pub(crate) struct CancelOnDrop(pub(crate) Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Hashing a file failed ([`crate::hashing`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// The file could not be opened or its size read.
    #[error("cannot open {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The path is not a regular file.
    #[error("{path} is not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Reading failed part way.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The hash was cancelled before it finished.
    #[error("hashing was cancelled")]
    Cancelled,
    /// The blocking task running the hash panicked or was cancelled.
    #[error("the hashing task did not finish")]
    Task(#[source] tokio::task::JoinError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn known_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        let mut calls = Vec::new();
        let d = sha256_file(&empty, |a, b| calls.push((a, b))).unwrap();
        assert_eq!(d.sha256_hex(), EMPTY_SHA256);
        assert_eq!(d.bytes, 0);
        assert_eq!(calls, vec![(0, 0)]);

        let abc = dir.path().join("abc");
        std::fs::write(&abc, b"abc").unwrap();
        assert_eq!(
            sha256_file(&abc, |_, _| {}).unwrap().sha256_hex(),
            ABC_SHA256
        );
    }

    #[test]
    fn multi_buffer_file_matches_one_shot_hash_and_reports_progress() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        // 3.5 buffers of varied bytes.
        let data: Vec<u8> = (0..(HASH_BUF_SIZE * 7 / 2))
            .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
            .collect();
        File::create(&path).unwrap().write_all(&data).unwrap();
        let mut calls = Vec::new();
        let d = sha256_file(&path, |a, b| calls.push((a, b))).unwrap();
        let want: [u8; 32] = Sha256::digest(&data).into();
        assert_eq!(d.sha256, want);
        assert_eq!(d.bytes, data.len() as u64);
        let total = data.len() as u64;
        assert_eq!(calls.first(), Some(&(0, total)));
        assert_eq!(calls.last(), Some(&(total, total)));
        assert!(calls.len() >= 5, "one call per buffer: {calls:?}");
        assert!(calls.windows(2).all(|w| w[0].0 < w[1].0 || w[1].0 == total));
        assert!(calls.iter().all(|(_, t)| *t == total));
    }

    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = sha256_file(&missing, |_, _| {}).unwrap_err();
        assert!(matches!(err, HashError::Open { ref path, .. } if *path == missing));
        assert!(err.to_string().contains("missing"));
        let err = sha256_file(dir.path(), |_, _| {}).unwrap_err();
        assert!(matches!(err, HashError::NotAFile { .. }), "{err:?}");
    }

    #[test]
    fn cancellation_stops_between_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![1u8; HASH_BUF_SIZE * 4]).unwrap();
        let cancel = AtomicBool::new(false);
        let mut seen = 0;
        let err = sha256_file_until(&path, &cancel, |done, _| {
            seen = done;
            if done >= HASH_BUF_SIZE as u64 {
                cancel.store(true, Ordering::Relaxed);
            }
        })
        .unwrap_err();
        assert!(matches!(err, HashError::Cancelled), "{err:?}");
        assert_eq!(seen, HASH_BUF_SIZE as u64);
    }

    #[tokio::test]
    async fn dropping_the_future_stops_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![1u8; HASH_BUF_SIZE * 8]).unwrap();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (last_tx, last_rx) = std::sync::mpsc::channel::<u64>();
        let fut = sha256_file_async(path, move |done, _| {
            if done == 0 {
                let _ = started_tx.send(());
                // Hold the blocking thread until the future is dropped.
                let _ = go_rx.recv_timeout(std::time::Duration::from_secs(10));
            }
            let _ = last_tx.send(done);
        });
        let handle = tokio::spawn(fut);
        tokio::task::spawn_blocking(move || {
            started_rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .unwrap()
        })
        .await
        .unwrap();
        handle.abort();
        let _ = handle.await;
        go_tx.send(()).unwrap();
        // The channel closes when the blocking task ends and drops the callback.
        let seen: Vec<u64> = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio::task::spawn_blocking(move || last_rx.iter().collect::<Vec<_>>()),
        )
        .await
        .unwrap()
        .unwrap();
        // Only the initial report: the read stopped before the first buffer.
        assert_eq!(seen, vec![0]);
    }

    #[tokio::test]
    async fn async_wrapper_runs_off_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let d = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            sha256_file_async(path, move |a, b| {
                let _ = tx.send((a, b));
            }),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(d.sha256_hex(), ABC_SHA256);
        assert_eq!(rx.iter().last(), Some((3, 3)));
    }
}
