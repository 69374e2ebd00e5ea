//! Direct (unbuffered) writes of a received file: DATA is copied once into an aligned buffer
//! and written with `O_DIRECT` by an I/O thread while the writer hashes the next bytes, so
//! the data never passes through the page cache and the final fsync has little left to do.
//! Where `O_DIRECT` is not available (another OS, a file system that refuses it), the same
//! interface writes through the page cache.

use std::fs::File;
use std::io;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::save::IncomingFile;
use crate::save::SaveError;

/// Alignment of direct I/O buffers, offsets and lengths (the common logical block size).
const ALIGN: usize = 4096;
/// Bytes per direct write: large enough that the device sees big requests, small enough that
/// two of them (one being written, one being filled) keep memory flat.
pub(super) const DIRECT_BUF: usize = 1 << 20;
/// Buffers in circulation: one filled by the writer while the other is on the device.
const DIRECT_BUFFERS: usize = 2;

/// A heap buffer of [`DIRECT_BUF`] bytes at an [`ALIGN`]-aligned address.
#[derive(Debug)]
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
}

impl AlignedBuf {
    fn new() -> Self {
        let raw = vec![0u8; DIRECT_BUF + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
        Self { raw, start }
    }

    fn slice(&self, len: usize) -> &[u8] {
        self.raw
            .get(self.start..self.start.saturating_add(len.min(DIRECT_BUF)))
            .unwrap_or(&[])
    }

    fn slice_mut(&mut self) -> &mut [u8] {
        let end = self.start.saturating_add(DIRECT_BUF);
        self.raw.get_mut(self.start..end).unwrap_or(&mut [])
    }
}

/// One buffer for the I/O thread: write `len` bytes at `offset`.
type IoJob = (AlignedBuf, u64, usize);

/// Sequential writer of one file: fills aligned buffers and hands full ones to an I/O thread.
#[derive(Debug)]
pub(super) struct DirectWriter {
    /// File offset of `buf`'s first byte.
    base: u64,
    buf: AlignedBuf,
    filled: usize,
    jobs: Option<mpsc::SyncSender<IoJob>>,
    done: mpsc::Receiver<(AlignedBuf, io::Result<()>)>,
    in_flight: usize,
    thread: Option<JoinHandle<()>>,
}

impl DirectWriter {
    /// Switches `file`'s open descriptor to direct writes (the file is never reopened by
    /// name); `None` when direct I/O is not available there (then write through
    /// [`IncomingFile::write_at`]).
    ///
    /// Writes continue at `base` (0, or a resumed prefix's end): `None` as well when `base`
    /// is not a multiple of the direct-I/O alignment.
    pub(super) fn open_at(file: &IncomingFile, base: u64) -> Option<Self> {
        if !base.is_multiple_of(ALIGN as u64) {
            return None;
        }
        let direct = match open_direct(file.file(), base) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = %e, "no direct I/O for this file");
                return None;
            }
        };
        let (jobs, job_rx) = mpsc::sync_channel::<IoJob>(DIRECT_BUFFERS);
        let (done_tx, done) = mpsc::sync_channel(DIRECT_BUFFERS);
        let thread = std::thread::Builder::new()
            .name("ats-p2p-direct-io".into())
            .spawn(move || io_loop(&direct, &job_rx, &done_tx))
            .ok()?;
        Some(Self {
            base,
            buf: AlignedBuf::new(),
            filled: 0,
            jobs: Some(jobs),
            done,
            in_flight: 0,
            thread: Some(thread),
        })
    }

    /// The offset the next byte must have (writes are sequential).
    pub(super) fn next_offset(&self) -> u64 {
        self.base.saturating_add(self.filled as u64)
    }

    /// Appends `data` (it must start at [`Self::next_offset`]).
    pub(super) fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let room = DIRECT_BUF - self.filled;
            let n = room.min(data.len());
            let (head, rest) = data.split_at(n);
            if let Some(dst) = self
                .buf
                .slice_mut()
                .get_mut(self.filled..self.filled.saturating_add(n))
            {
                dst.copy_from_slice(head);
            }
            self.filled += n;
            data = rest;
            if self.filled == DIRECT_BUF {
                self.submit()?;
            }
        }
        Ok(())
    }

    /// Sends the full buffer to the I/O thread and takes a free one (waiting for the device
    /// when both are busy: backpressure).
    fn submit(&mut self) -> io::Result<()> {
        let next = if self.in_flight + 1 < DIRECT_BUFFERS {
            AlignedBuf::new()
        } else {
            self.wait_one()?
        };
        let full = std::mem::replace(&mut self.buf, next);
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        jobs.send((full, self.base, DIRECT_BUF))
            .map_err(|_| stopped())?;
        self.in_flight += 1;
        self.base = self.base.saturating_add(DIRECT_BUF as u64);
        self.filled = 0;
        Ok(())
    }

    fn wait_one(&mut self) -> io::Result<AlignedBuf> {
        let (buf, result) = self.done.recv().map_err(|_| stopped())?;
        self.in_flight = self.in_flight.saturating_sub(1);
        result.map(|()| buf)
    }

    /// Writes what is left: the aligned part directly, the last partial block through
    /// `file` (buffered), and waits for the I/O thread. The file then holds every byte.
    pub(super) fn finish(&mut self, file: &mut IncomingFile) -> Result<(), SaveError> {
        let aligned = self.filled / ALIGN * ALIGN;
        let wrap = |e: io::Error| SaveError::from_write(file.temp_path().to_path_buf(), e);
        if aligned > 0 {
            let next = AlignedBuf::new();
            let full = std::mem::replace(&mut self.buf, next);
            let jobs = self.jobs.as_ref().ok_or_else(stopped).map_err(wrap)?;
            jobs.send((full, self.base, aligned))
                .map_err(|_| wrap(stopped()))?;
            self.in_flight += 1;
            // The unaligned tail is still in the old buffer: wait for it and write the tail.
        }
        let mut tail_buf = None;
        while self.in_flight > 0 {
            let (buf, result) = self.done.recv().map_err(|_| wrap(stopped()))?;
            self.in_flight -= 1;
            result.map_err(wrap)?;
            tail_buf = Some(buf);
        }
        // Every direct write is done: the shared descriptor goes back to buffered writes for
        // the unaligned tail.
        set_direct(file.file(), false).map_err(wrap)?;
        let tail_src = if aligned > 0 {
            tail_buf.as_ref().unwrap_or(&self.buf)
        } else {
            &self.buf
        };
        let tail = tail_src
            .slice(self.filled)
            .get(aligned..)
            .unwrap_or(&[])
            .to_vec();
        if !tail.is_empty() {
            file.write_at(self.base.saturating_add(aligned as u64), &tail)?;
        }
        self.base = self.base.saturating_add(self.filled as u64);
        self.filled = 0;
        self.stop();
        Ok(())
    }

    fn stop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DirectWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

fn stopped() -> io::Error {
    io::Error::other("the direct I/O thread stopped")
}

fn io_loop(
    file: &File,
    jobs: &mpsc::Receiver<IoJob>,
    done: &mpsc::SyncSender<(AlignedBuf, io::Result<()>)>,
) {
    while let Ok((buf, offset, len)) = jobs.recv() {
        let result = crate::save::write_all_at(file, buf.slice(len), offset);
        if done.send((buf, result)).is_err() {
            return;
        }
    }
}

/// A second descriptor for `file`'s open file description (`dup`: same file, same offset
/// flags, no lookup by name) with `O_DIRECT` set through `fcntl(F_SETFL)`. The flag is shared
/// by both descriptors, so buffered writes through `file` wait until [`set_direct`] clears it.
#[cfg(target_os = "linux")]
fn open_direct(file: &File, base: u64) -> io::Result<File> {
    let direct = file.try_clone()?;
    set_direct(&direct, true)?;
    // Some file systems accept the flag and refuse the first write: try one aligned block now
    // at `base`, where the data will start (the writer overwrites it; what lies before `base`,
    // a resumed prefix, is kept), so the choice is made before any data.
    let probe = AlignedBuf::new();
    let tried = crate::save::write_all_at(&direct, probe.slice(ALIGN), base)
        .and_then(|()| direct.set_len(base));
    if let Err(e) = tried {
        let _ = set_direct(&direct, false);
        return Err(e);
    }
    Ok(direct)
}

/// Sets or clears `O_DIRECT` on the open file description behind `file`.
#[cfg(target_os = "linux")]
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
    let mut flags = fcntl_getfl(file)?;
    flags.set(OFlags::DIRECT, on);
    fcntl_setfl(file, flags)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_file: &File, _base: u64) -> io::Result<File> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no O_DIRECT here",
    ))
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_file: &File, _on: bool) -> io::Result<()> {
    Ok(())
}
