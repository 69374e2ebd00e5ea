//! What a send reads: one file, or a directory's files one after another, on a blocking reader
//! thread that runs ahead of the network by a few chunks.

use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::{FILE_READ_AHEAD, FILE_READ_CHUNK};

/// The bytes a send streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendSource {
    /// One file.
    File(PathBuf),
    /// A directory: its files' bytes one after another, in manifest order (see
    /// [`crate::tree`]).
    Directory {
        /// The directory offered (for messages).
        root: PathBuf,
        /// Its files in manifest order, with the sizes they were hashed at.
        files: Vec<SourceFile>,
    },
}

/// One file of a directory send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Where it is read from.
    pub path: PathBuf,
    /// How many bytes of it are sent (its size when it was hashed).
    pub size: u64,
}

impl SendSource {
    /// The file, or the directory, being sent.
    pub fn path(&self) -> &Path {
        match self {
            Self::File(path) | Self::Directory { root: path, .. } => path,
        }
    }

    /// Checks that the source can be read before anything is sent (a file: it opens).
    pub(super) fn check(&self) -> io::Result<()> {
        match self {
            Self::File(path) => std::fs::File::open(path).map(drop),
            Self::Directory { .. } => Ok(()),
        }
    }
}

/// A chunk of the source, or why reading stopped.
pub(super) type Chunk = io::Result<Bytes>;

/// Starts the blocking reader at stream offset `offset`; it queues `total - offset` bytes in
/// chunks on `tx`, and stops when `tx` is closed.
pub(super) fn spawn_reader(
    source: SendSource,
    offset: u64,
    total: u64,
    tx: mpsc::Sender<Chunk>,
) -> AbortOnDrop {
    AbortOnDrop(tokio::task::spawn_blocking(move || {
        let mut reader = ChunkReader::new();
        let result = match &source {
            SendSource::File(path) => {
                reader.read_file(path, offset, total.saturating_sub(offset), &tx)
            }
            SendSource::Directory { files, .. } => reader.read_files(files, offset, &tx),
        };
        if let Err(e) = result {
            // The driver may have stopped listening; then nobody needs the error.
            let _ = tx.blocking_send(Err(e));
        }
    }))
}

/// Aborts the blocking reader when the transfer ends early (it then stops at its next send).
#[derive(Debug)]
pub(super) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a read loop stopped early without an error to report: the driver went away.
struct Gone;

/// Reads into chunks split off one buffer: once the sent chunks are dropped, `reserve` reuses
/// it.
struct ChunkReader {
    buf: BytesMut,
    ring: usize,
}

impl ChunkReader {
    fn new() -> Self {
        let ring = FILE_READ_CHUNK.saturating_mul(FILE_READ_AHEAD.saturating_add(2));
        Self {
            buf: BytesMut::with_capacity(ring),
            ring,
        }
    }

    /// Queues `len` bytes of the file at `path` from `offset`. `Ok` also when the driver went
    /// away.
    fn read_file(
        &mut self,
        path: &Path,
        offset: u64,
        len: u64,
        tx: &mpsc::Sender<Chunk>,
    ) -> io::Result<()> {
        let mut file = std::fs::File::open(path)?;
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))?;
        }
        match self.read_exact_chunks(&mut file, len, tx) {
            Ok(Ok(())) | Ok(Err(Gone)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Queues the files' bytes one after another from stream offset `offset`.
    fn read_files(
        &mut self,
        files: &[SourceFile],
        mut offset: u64,
        tx: &mpsc::Sender<Chunk>,
    ) -> io::Result<()> {
        for f in files {
            if offset >= f.size {
                offset = offset.saturating_sub(f.size);
                continue;
            }
            let with_path =
                |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", f.path.display()));
            let mut file = std::fs::File::open(&f.path).map_err(with_path)?;
            if offset > 0 {
                file.seek(SeekFrom::Start(offset)).map_err(with_path)?;
            }
            match self.read_exact_chunks(&mut file, f.size.saturating_sub(offset), tx) {
                Ok(Ok(())) => {}
                Ok(Err(Gone)) => return Ok(()),
                Err(e) => return Err(with_path(e)),
            }
            offset = 0;
        }
        Ok(())
    }

    /// Reads exactly `len` bytes of `file` in chunks of at most [`FILE_READ_CHUNK`] and queues
    /// them; a file shorter than that (it changed since it was hashed) is an error.
    fn read_exact_chunks(
        &mut self,
        file: &mut std::fs::File,
        len: u64,
        tx: &mpsc::Sender<Chunk>,
    ) -> io::Result<Result<(), Gone>> {
        let mut left = len;
        while left > 0 {
            let want = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(FILE_READ_CHUNK);
            if self.buf.capacity() < want {
                self.buf.reserve(self.ring);
            }
            self.buf.resize(want, 0);
            file.read_exact(&mut self.buf)?;
            left = left.saturating_sub(u64::try_from(want).unwrap_or(u64::MAX));
            if tx.blocking_send(Ok(self.buf.split().freeze())).is_err() {
                return Ok(Err(Gone));
            }
        }
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything the reader queues from `offset`, or its error.
    async fn read_all(source: SendSource, offset: u64, total: u64) -> io::Result<Vec<u8>> {
        let (tx, mut rx) = mpsc::channel(FILE_READ_AHEAD);
        let _reader = spawn_reader(source, offset, total, tx);
        let mut out = Vec::new();
        while let Some(chunk) = rx.recv().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_directory_reads_as_its_files_one_after_another_from_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let contents: [&[u8]; 4] = [b"hello ", b"", &[7u8; 300_000], b"end"];
        let mut files = Vec::new();
        for (i, c) in contents.iter().enumerate() {
            let path = dir.path().join(format!("f{i}"));
            std::fs::write(&path, c).unwrap();
            files.push(SourceFile {
                path,
                size: c.len() as u64,
            });
        }
        let whole: Vec<u8> = contents.concat();
        let source = SendSource::Directory {
            root: dir.path().to_path_buf(),
            files,
        };
        let total = whole.len() as u64;
        for offset in [0u64, 3, 6, 7, 262_150, total - 1, total] {
            let got = read_all(source.clone(), offset, total).await.unwrap();
            assert_eq!(got, whole[offset as usize..], "from {offset}");
        }
    }

    #[tokio::test]
    async fn a_file_that_shrank_since_it_was_hashed_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short");
        std::fs::write(&path, b"abc").unwrap();
        let source = SendSource::Directory {
            root: dir.path().to_path_buf(),
            files: vec![SourceFile {
                path: path.clone(),
                size: 10,
            }],
        };
        let err = read_all(source, 0, 10).await.unwrap_err();
        assert!(err.to_string().contains("short"), "{err}");
    }
}
