//! Receiving a directory safely: a hidden temporary directory in the save directory, the files
//! written into it one after another as the stream carries them, each hashed as it is written,
//! and one rename to a free name once every file is verified.
//!
//! - Nothing is visible before the end: the temporary directory is
//!   `.ats-p2p-<transfer id>-<random>.partdir` (mode 0700, locked with `flock` while this value
//!   lives, like [`IncomingFile`](crate::save::IncomingFile)'s temporary file).
//! - Paths come from the offer's manifest, which was validated (relative, no `..`, no
//!   separators or control characters in a component, no duplicates, nothing below a file);
//!   [`IncomingTree::create`] checks them again, adds the platform rules of
//!   [`check_tree_path`], and creates files with `O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600.
//! - The result is never merged into an existing directory: the rename to `name`, `name (1)`,
//!   … refuses a taken name (`renameat2(RENAME_NOREPLACE)`).
//! - [`IncomingTree::commit`] makes the files durable with one `syncfs` (Linux; one `fsync`
//!   per file elsewhere) before the rename, and fsyncs the save directory after it.
//!
//! Everything here blocks; the receive driver runs it on a writer thread.
//!
//! The parts: this module creates, writes, finishes and commits (or aborts) a directory;
//! `resume` keeps a broken receive and takes it up again (adopt, re-hash, restart, records);
//! `files` holds the small file-system helpers both use.

mod files;
mod resume;
#[cfg(test)]
mod tests;

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use ats_p2p_signal::manifest::Manifest;
use ats_p2p_wire::FileHash;
use sha2::{Digest as _, Sha256};

use self::files::{create_file, make_dirs};
#[cfg(not(target_os = "linux"))]
use crate::fsutil;
use crate::fsutil::SaveDir;
use crate::names::{check_tree_path, numbered_name, sanitize_file_name};
use crate::partial::PartialRecord;
use crate::save::{MAX_NAME_ATTEMPTS, SaveError, TEMP_DIR_SUFFIX};

/// A directory being received (see the [module docs](self)). Dropping it before
/// [`commit`](Self::commit) removes the temporary directory.
#[derive(Debug)]
pub struct IncomingTree {
    save: SaveDir,
    /// Held open (and locked) while receiving.
    _temp_handle: File,
    temp_name: String,
    /// `save_dir` joined with `temp_name`.
    root: PathBuf,
    /// The sanitised name the directory gets.
    name: String,
    manifest: Manifest,
    /// SHA-256 of each file as written, in manifest order (filled as files end).
    written: Vec<[u8; 32]>,
    /// Stream bytes written so far.
    position: u64,
    /// The file being written: its index, bytes written to it, handle and hash so far.
    current: Option<(usize, u64, File, Sha256)>,
    /// Index of the next file to open.
    next: usize,
    /// The partial-directory record beside the temporary directory, if one was written
    /// (resuming; removed with the directory).
    record: Option<String>,
    armed: bool,
}

impl IncomingTree {
    /// Starts receiving `offered_name` (sanitised here) with `manifest` into `save_dir`
    /// (created if missing): makes the temporary directory and every directory of the
    /// manifest. A path that fails [`Manifest::validate`] or [`check_tree_path`] is refused
    /// with [`SaveError::UnsafePath`] before anything is created.
    pub fn create(
        save_dir: &Path,
        transfer_id_hex: &str,
        offered_name: &str,
        manifest: &Manifest,
    ) -> Result<Self, SaveError> {
        Self::create_with_record(save_dir, transfer_id_hex, offered_name, manifest, None)
    }

    /// [`Self::create`], writing `record` beside the temporary directory so that a broken
    /// receive can be resumed ([`Self::adopt`], [`crate::partial`]).
    pub fn create_with_record(
        save_dir: &Path,
        transfer_id_hex: &str,
        offered_name: &str,
        manifest: &Manifest,
        record: Option<&PartialRecord>,
    ) -> Result<Self, SaveError> {
        check_manifest(manifest)?;
        let save_err = |source| SaveError::SaveDir {
            dir: save_dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(save_dir).map_err(save_err)?;
        let save = SaveDir::open(save_dir).map_err(save_err)?;
        let prefix = format!("ats-p2p-{}", transfer_id_hex.to_ascii_lowercase());
        let (handle, temp_name) =
            save.create_temp_dir(&prefix, TEMP_DIR_SUFFIX)
                .map_err(|source| SaveError::CreateTemp {
                    dir: save_dir.to_path_buf(),
                    source,
                })?;
        let mut tree = Self::held(save, handle, temp_name, offered_name, manifest);
        if let Some(record) = record {
            tree.write_record(record)?;
        }
        tree.make_dirs()?;
        tracing::debug!(temp = %tree.root.display(), name = %tree.name, files = manifest.files.len(), "receiving a directory");
        Ok(tree)
    }

    /// Where the stream continues: bytes of the files already held (0 for a new directory).
    pub const fn position(&self) -> u64 {
        self.position
    }

    /// A tree in the temporary directory `temp_name` of `save`, held open (and locked) by
    /// `handle`, at position 0 with nothing written and no record yet.
    fn held(
        save: SaveDir,
        handle: File,
        temp_name: String,
        offered_name: &str,
        manifest: &Manifest,
    ) -> Self {
        Self {
            root: save.path().join(&temp_name),
            save,
            _temp_handle: handle,
            temp_name,
            name: sanitize_file_name(offered_name),
            manifest: manifest.clone(),
            written: vec![[0; 32]; manifest.files.len()],
            position: 0,
            current: None,
            next: 0,
            record: None,
            armed: true,
        }
    }

    /// The manifest being received.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The temporary directory's name in the save directory.
    pub fn temp_name(&self) -> &str {
        &self.temp_name
    }

    /// The temporary directory (for messages).
    pub fn temp_path(&self) -> &Path {
        &self.root
    }

    /// Writes the next stream bytes (`offset` must be where the last write ended): they go to
    /// the files in manifest order, each file hashed as it is written.
    pub fn write_at(&mut self, offset: u64, mut data: &[u8]) -> Result<(), SaveError> {
        if offset != self.position {
            return Err(SaveError::from_write(
                self.root.clone(),
                io::Error::other("DATA out of order"),
            ));
        }
        while !data.is_empty() {
            if self.current.is_none() {
                self.open_next()?;
            }
            let Some((index, done, file, hasher)) = self.current.as_mut() else {
                return Err(SaveError::SizeLimit {
                    end: self.position.saturating_add(data.len() as u64),
                    limit: self.manifest.total_size().unwrap_or(u64::MAX),
                });
            };
            let size = self.manifest.files.get(*index).map_or(0, |f| f.size);
            let room = usize::try_from(size.saturating_sub(*done)).unwrap_or(usize::MAX);
            let (now, rest) = data.split_at(room.min(data.len()));
            let path = self.root.join(&self.manifest.files[*index].path);
            file.write_all(now)
                .map_err(|e| SaveError::from_write(path, e))?;
            hasher.update(now);
            let n = now.len() as u64;
            *done = done.saturating_add(n);
            self.position = self.position.saturating_add(n);
            data = rest;
            if *done >= size {
                self.close_current();
            }
        }
        Ok(())
    }

    /// Every byte was written: creates the empty files still missing and returns the digest of
    /// the manifest **as received** (each file's hash as written), which equals the offer's
    /// `sha256` exactly when every file is what was offered.
    pub fn finish(&mut self) -> Result<FileHash, SaveError> {
        if self.current.is_none() {
            self.open_next()?;
        }
        if self.current.is_some() || self.next < self.manifest.files.len() {
            return Err(SaveError::from_write(
                self.root.clone(),
                io::Error::new(io::ErrorKind::UnexpectedEof, "files are missing bytes"),
            ));
        }
        let mut received = self.manifest.clone();
        for (file, hash) in received.files.iter_mut().zip(&self.written) {
            file.sha256 = *hash;
        }
        Ok(FileHash(received.digest()))
    }

    /// The paths of the files whose bytes do not match the manifest (for a refusal's reason).
    pub fn mismatched(&self) -> Vec<&str> {
        self.manifest
            .files
            .iter()
            .zip(&self.written)
            .take(self.next)
            .filter(|(f, hash)| f.sha256 != **hash)
            .map(|(f, _)| f.path.as_str())
            .collect()
    }

    /// Finishes the directory: makes every file durable, moves the directory to the first free
    /// name among `name`, `name (1)`, … (never into or over an existing one), fsyncs the save
    /// directory. Returns the final path. Call only after the content was verified.
    pub fn commit(mut self) -> Result<PathBuf, SaveError> {
        self.current = None;
        self.sync_files()?;
        for n in 0..MAX_NAME_ATTEMPTS {
            let dest_name = numbered_name(&self.name, n);
            let dest = self.save.path().join(&dest_name);
            match self.save.publish_dir(&self.temp_name, &dest_name) {
                Ok(()) => {
                    self.armed = false;
                    self.remove_record();
                    self.save.sync().map_err(|source| SaveError::Sync {
                        path: self.save.path().to_path_buf(),
                        source,
                    })?;
                    tracing::debug!(path = %dest.display(), "received directory in place");
                    return Ok(dest);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(source) => return Err(SaveError::Publish { path: dest, source }),
            }
        }
        Err(SaveError::NoFreeName {
            dir: self.save.path().to_path_buf(),
            name: self.name.clone(),
            attempts: MAX_NAME_ATTEMPTS,
        })
    }

    /// Gives up and removes the temporary directory.
    pub fn abort(mut self) -> Result<(), SaveError> {
        self.armed = false;
        self.current = None;
        self.remove_record();
        fs::remove_dir_all(&self.root).map_err(|source| SaveError::Remove {
            path: self.root.clone(),
            source,
        })
    }

    /// Creates every directory of the manifest (those that exist stay).
    fn make_dirs(&self) -> Result<(), SaveError> {
        for dir in &self.manifest.dirs {
            let path = self.root.join(dir);
            make_dirs(&path).map_err(|e| SaveError::from_write(path, e))?;
        }
        Ok(())
    }

    /// Opens the next non-empty file, creating the empty ones before it; `current` stays
    /// `None` when no file is left.
    fn open_next(&mut self) -> Result<(), SaveError> {
        while let Some(entry) = self.manifest.files.get(self.next) {
            let path = self.root.join(&entry.path);
            let file = create_file(&path).map_err(|e| SaveError::from_write(path, e))?;
            let index = self.next;
            self.next = self.next.saturating_add(1);
            if entry.size == 0 {
                if let Some(slot) = self.written.get_mut(index) {
                    *slot = Sha256::digest([]).into();
                }
                continue;
            }
            self.current = Some((index, 0, file, Sha256::new()));
            return Ok(());
        }
        Ok(())
    }

    /// The current file is complete: keep its hash, close it.
    fn close_current(&mut self) {
        if let Some((index, _, _file, hasher)) = self.current.take()
            && let Some(slot) = self.written.get_mut(index)
        {
            *slot = hasher.finalize().into();
        }
    }

    /// Flushes every file to stable storage.
    fn sync_files(&self) -> Result<(), SaveError> {
        let sync_err = |path: &Path, source| SaveError::Sync {
            path: path.to_path_buf(),
            source,
        };
        #[cfg(target_os = "linux")]
        {
            rustix::fs::syncfs(&self._temp_handle)
                .map_err(|e| sync_err(&self.root, io::Error::from(e)))
        }
        #[cfg(not(target_os = "linux"))]
        {
            for f in &self.manifest.files {
                let path = self.root.join(&f.path);
                File::open(&path)
                    .and_then(|file| file.sync_all())
                    .map_err(|e| sync_err(&path, e))?;
            }
            fsutil::sync_dir(&self.root).map_err(|e| sync_err(&self.root, e))
        }
    }
}

impl Drop for IncomingTree {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.current = None;
        tracing::debug!(temp = %self.root.display(), "removing unfinished directory");
        self.remove_record();
        if let Err(e) = fs::remove_dir_all(&self.root)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(temp = %self.root.display(), error = %e, "could not remove temporary directory");
        }
    }
}

/// The manifest's own rules and the platform's, for every path.
fn check_manifest(manifest: &Manifest) -> Result<(), SaveError> {
    manifest.validate().map_err(|e| SaveError::UnsafePath {
        path: String::new(),
        reason: e.to_string(),
    })?;
    let paths = manifest
        .dirs
        .iter()
        .chain(manifest.files.iter().map(|f| &f.path));
    for path in paths {
        check_tree_path(path).map_err(|reason| SaveError::UnsafePath {
            path: path.clone(),
            reason: reason.to_owned(),
        })?;
    }
    Ok(())
}
