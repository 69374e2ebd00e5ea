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

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use ats_p2p_signal::manifest::Manifest;
use ats_p2p_wire::FileHash;
use sha2::{Digest as _, Sha256};

use crate::fsutil::{self, SaveDir};
use crate::names::{check_tree_path, numbered_name, sanitize_file_name};
use crate::partial::{self, PartialRecord, record_name};
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

/// Resumed prefixes of a file are cut to a multiple of this (a killed receiver's last write may
/// be torn), as for single files.
const PREFIX_GRANULE: u64 = 64 * 1024;

/// Bytes read per step when re-hashing what a kept directory holds.
const REHASH_CHUNK: usize = 1024 * 1024;

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
        let mut tree = Self {
            root: save_dir.join(&temp_name),
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
        };
        if let Some(record) = record {
            tree.write_record(record)?;
        }
        tree.make_dirs()?;
        tracing::debug!(temp = %tree.root.display(), name = %tree.name, files = manifest.files.len(), "receiving a directory");
        Ok(tree)
    }

    /// Takes over the kept temporary directory `temp_name` (with its record) of an earlier,
    /// broken receive of the same offer to continue it: every file it holds is **re-hashed from
    /// disk** and kept while it matches the manifest; the first file that is short keeps its
    /// prefix (cut to whole 64 KiB granules, re-hashed); a wrong or overlong file and anything
    /// after it start over. [`Self::position`] is then where the stream continues. Fails with
    /// `WouldBlock` inside [`SaveError::CreateTemp`] when a running receiver holds it.
    pub fn adopt(
        save_dir: &Path,
        temp_name: &str,
        offered_name: &str,
        manifest: &Manifest,
    ) -> Result<Self, SaveError> {
        check_manifest(manifest)?;
        let open_err = |source| SaveError::CreateTemp {
            dir: save_dir.to_path_buf(),
            source,
        };
        let save = SaveDir::open(save_dir).map_err(open_err)?;
        let handle = save.open_dir_locked(temp_name).map_err(open_err)?;
        let mut tree = Self {
            root: save_dir.join(temp_name),
            save,
            _temp_handle: handle,
            temp_name: temp_name.to_owned(),
            name: sanitize_file_name(offered_name),
            manifest: manifest.clone(),
            written: vec![[0; 32]; manifest.files.len()],
            position: 0,
            current: None,
            next: 0,
            record: record_name(temp_name),
            armed: true,
        };
        tree.make_dirs()?;
        tree.take_stock()?;
        tracing::debug!(temp = %tree.root.display(), position = tree.position, "continuing a directory");
        Ok(tree)
    }

    /// Removes a kept directory `temp_name` and its record `record_name` in `save` unless a
    /// running receiver holds it (best effort: it expires anyway).
    pub(crate) fn discard_kept(save: &SaveDir, temp_name: &str, record_name: &str) {
        let Ok(_lock) = save.open_dir_locked(temp_name) else {
            return;
        };
        tracing::debug!(temp_name, "removing a kept directory whose content changed");
        if let Err(e) = fs::remove_dir_all(save.path().join(temp_name)) {
            tracing::debug!(error = %e, "could not remove a kept directory");
            return;
        }
        if let Err(e) = save.unlink(record_name) {
            tracing::debug!(error = %e, "could not remove a kept directory's record");
        }
    }

    /// Where the stream continues: bytes of the files already held (0 for a new directory).
    pub const fn position(&self) -> u64 {
        self.position
    }

    /// The sender did not resume: forget what is held and start from the first byte.
    pub fn restart(&mut self) -> Result<(), SaveError> {
        self.current = None;
        for f in &self.manifest.files {
            let path = self.root.join(&f.path);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(SaveError::Remove { path, source }),
            }
        }
        self.written.fill([0; 32]);
        self.position = 0;
        self.next = 0;
        Ok(())
    }

    /// Keeps the temporary directory for a later resume (a broken receive with a record): the
    /// record says how many bytes are held. Without a record this removes it, as dropping does.
    pub fn keep(mut self) -> Result<(), SaveError> {
        self.current = None;
        let Some(record) = self.record.clone() else {
            return self.abort();
        };
        if let Some(mut r) = partial::read_record(&self.save, &record) {
            r.verified = self.position;
            if let Ok(json) = serde_json::to_vec(&r)
                && let Err(e) = self.save.replace_small(&record, &json)
            {
                tracing::debug!(error = %e, "could not update a partial-directory record");
            }
        }
        self.armed = false;
        tracing::debug!(temp = %self.root.display(), bytes = self.position, "keeping the directory for a resume");
        Ok(())
    }

    /// Re-hashes what the adopted directory holds and sets the position after it.
    fn take_stock(&mut self) -> Result<(), SaveError> {
        let mut position = 0u64;
        let files = self.manifest.files.clone();
        for (index, f) in files.iter().enumerate() {
            let path = self.root.join(&f.path);
            let held = fs::symlink_metadata(&path)
                .ok()
                .filter(fs::Metadata::is_file)
                .map(|m| m.len());
            let Some(len) = held else {
                self.next = index;
                break;
            };
            if len == f.size {
                let held_hash = rehash(&path, len).map(|h| <[u8; 32]>::from(h.finalize()));
                match held_hash {
                    Ok(h) if h == f.sha256 => {
                        if let Some(slot) = self.written.get_mut(index) {
                            *slot = f.sha256;
                        }
                        position = position.saturating_add(len);
                        self.next = index.saturating_add(1);
                        continue;
                    }
                    _ => {}
                }
            }
            // Short (keep its whole granules), or wrong: continue inside it or from its start.
            let prefix = if len < f.size {
                len - len % PREFIX_GRANULE
            } else {
                0
            };
            let hasher = if prefix > 0 {
                rehash(&path, prefix).ok()
            } else {
                None
            };
            match hasher {
                Some(hasher) => {
                    let file = reopen_at(&path, prefix)
                        .map_err(|e| SaveError::from_write(path.clone(), e))?;
                    self.current = Some((index, prefix, file, hasher));
                    self.next = index.saturating_add(1);
                    position = position.saturating_add(prefix);
                }
                None => {
                    remove_if_there(&path)?;
                    self.next = index;
                }
            }
            break;
        }
        // Nothing after the resume point is kept (writes are in order, so this is only what a
        // torn or tampered directory holds).
        for f in files.iter().skip(self.next) {
            remove_if_there(&self.root.join(&f.path))?;
        }
        self.position = position;
        Ok(())
    }

    /// Writes the record beside the temporary directory.
    fn write_record(&mut self, record: &PartialRecord) -> Result<(), SaveError> {
        let Some(name) = record_name(&self.temp_name) else {
            return Ok(());
        };
        let json = serde_json::to_vec(record)
            .map_err(|e| SaveError::from_write(self.root.clone(), io::Error::other(e)))?;
        self.save
            .replace_small(&name, &json)
            .map_err(|e| SaveError::from_write(self.save.path().join(&name), e))?;
        self.record = Some(name);
        Ok(())
    }

    /// Creates every directory of the manifest (those that exist stay).
    fn make_dirs(&self) -> Result<(), SaveError> {
        for dir in &self.manifest.dirs {
            let path = self.root.join(dir);
            make_dirs(&path).map_err(|e| SaveError::from_write(path, e))?;
        }
        Ok(())
    }

    /// Removes the record (best effort).
    fn remove_record(&mut self) {
        if let Some(record) = self.record.take()
            && let Err(e) = self.save.unlink(&record)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::debug!(record, error = %e, "could not remove a partial-directory record");
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

/// Removes the file `path` if it is there.
fn remove_if_there(path: &Path) -> Result<(), SaveError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SaveError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// SHA-256 state over the first `len` bytes of the file at `path`, read from disk.
fn rehash(path: &Path, len: u64) -> io::Result<Sha256> {
    use std::io::Read as _;
    let mut file = open_nofollow(path, OpenOptions::new().read(true))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; REHASH_CHUNK];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(REHASH_CHUNK);
        let chunk = buf.get_mut(..want).unwrap_or_default();
        file.read_exact(chunk)?;
        hasher.update(&*chunk);
        left = left.saturating_sub(want as u64);
    }
    Ok(hasher)
}

/// Opens the existing file `path` for writing, cut to `len` bytes, positioned at its end.
fn reopen_at(path: &Path, len: u64) -> io::Result<File> {
    use std::io::Seek as _;
    let mut file = open_nofollow(path, OpenOptions::new().write(true))?;
    file.set_len(len)?;
    file.seek(io::SeekFrom::Start(len))?;
    Ok(file)
}

/// Opens `path` with `options`, never through a symbolic link at its last component.
fn open_nofollow(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    options.open(path)
}

/// Creates `path` and missing parents, mode 0700.
fn make_dirs(path: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(path)
}

/// Creates the new file `path` (never opening an existing one or following a link), mode 0600,
/// with its missing parents.
fn create_file(path: &Path) -> io::Result<File> {
    if let Some(parent) = path.parent() {
        make_dirs(parent)?;
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    fsutil::set_mode(&mut options, 0o600);
    open_nofollow(path, &mut options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ats_p2p_signal::manifest::ManifestFile;

    const ID: &str = "5f0c5f0c5f0c5f0c5f0c5f0c5f0c5f0c";

    fn manifest_of(files: &[(&str, &[u8])], dirs: &[&str]) -> Manifest {
        Manifest {
            dirs: dirs.iter().map(|d| (*d).to_owned()).collect(),
            files: files
                .iter()
                .map(|(p, c)| ManifestFile {
                    path: (*p).to_owned(),
                    size: c.len() as u64,
                    sha256: Sha256::digest(c).into(),
                })
                .collect(),
        }
    }

    fn visible(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn files_arrive_across_any_chunking_and_appear_only_at_commit() {
        let files: &[(&str, &[u8])] = &[
            ("a/b/one.txt", b"hello"),
            ("a/empty.txt", b""),
            ("two.bin", &[9u8; 1000]),
            ("z/last", b""),
        ];
        let manifest = manifest_of(files, &["a", "a/b", "hollow"]);
        let stream: Vec<u8> = files.iter().flat_map(|(_, c)| c.iter().copied()).collect();
        for chunk in [1usize, 3, 5, 7, 4096] {
            let save = tempfile::tempdir().unwrap();
            let mut tree = IncomingTree::create(save.path(), ID, "project", &manifest).unwrap();
            let mut offset = 0u64;
            for part in stream.chunks(chunk) {
                tree.write_at(offset, part).unwrap();
                offset += part.len() as u64;
            }
            assert_eq!(tree.finish().unwrap().0, manifest.digest(), "chunk {chunk}");
            assert!(tree.mismatched().is_empty());
            assert!(
                visible(save.path()).is_empty(),
                "nothing visible before commit"
            );
            let path = tree.commit().unwrap();
            assert_eq!(path, save.path().join("project"));
            assert_eq!(fs::read(path.join("a/b/one.txt")).unwrap(), b"hello");
            assert_eq!(fs::read(path.join("two.bin")).unwrap(), vec![9u8; 1000]);
            assert_eq!(fs::read(path.join("a/empty.txt")).unwrap(), b"");
            assert_eq!(fs::read(path.join("z/last")).unwrap(), b"");
            assert!(path.join("hollow").is_dir());
            assert_eq!(visible(save.path()), ["project"], "no temporary left");
        }
    }

    #[test]
    fn a_wrong_file_changes_the_digest_and_names_the_file() {
        let manifest = manifest_of(&[("x", b"abc"), ("y", b"def")], &[]);
        let save = tempfile::tempdir().unwrap();
        let mut tree = IncomingTree::create(save.path(), ID, "d", &manifest).unwrap();
        tree.write_at(0, b"abcdeF").unwrap();
        assert_ne!(tree.finish().unwrap().0, manifest.digest());
        assert_eq!(tree.mismatched(), ["y"]);
        drop(tree);
        assert_eq!(
            fs::read_dir(save.path()).unwrap().count(),
            0,
            "dropped: removed"
        );
    }

    #[test]
    fn more_bytes_than_the_manifest_or_a_gap_is_an_error() {
        let manifest = manifest_of(&[("x", b"abc")], &[]);
        let save = tempfile::tempdir().unwrap();
        let mut tree = IncomingTree::create(save.path(), ID, "d", &manifest).unwrap();
        assert!(tree.write_at(1, b"b").is_err(), "a gap");
        assert!(matches!(
            tree.write_at(0, b"abcd"),
            Err(SaveError::SizeLimit { .. })
        ));
        let short = IncomingTree::create(save.path(), ID, "d", &manifest)
            .unwrap()
            .finish();
        assert!(short.is_err(), "bytes missing at the end");
    }

    #[test]
    fn hostile_manifests_are_refused_before_anything_is_written() {
        let save = tempfile::tempdir().unwrap();
        let target = save.path().join("incoming");
        for bad in ["../x", "/abs", "a/../../x", "CON", "sub/nul.txt", "a\\b"] {
            let manifest = manifest_of(&[(bad, b"evil")], &[]);
            let err = IncomingTree::create(&target, ID, "d", &manifest).unwrap_err();
            assert!(
                matches!(err, SaveError::UnsafePath { .. }),
                "{bad}: {err:?}"
            );
        }
        assert!(!target.exists(), "not even the save directory was made");
        assert!(!save.path().join("x").exists());
    }

    #[test]
    fn a_taken_name_is_never_merged_into() {
        let save = tempfile::tempdir().unwrap();
        fs::create_dir(save.path().join("project")).unwrap();
        fs::write(save.path().join("project/mine.txt"), b"keep").unwrap();
        let manifest = manifest_of(&[("mine.txt", b"theirs")], &[]);
        let mut tree = IncomingTree::create(save.path(), ID, "project", &manifest).unwrap();
        tree.write_at(0, b"theirs").unwrap();
        tree.finish().unwrap();
        let path = tree.commit().unwrap();
        assert_eq!(path, save.path().join("project (1)"));
        assert_eq!(
            fs::read(save.path().join("project/mine.txt")).unwrap(),
            b"keep"
        );
        assert_eq!(fs::read(path.join("mine.txt")).unwrap(), b"theirs");
    }

    fn record_for(manifest: &Manifest) -> PartialRecord {
        PartialRecord {
            directory: true,
            ..partial::PartialKey {
                sender_key: [3; 32],
                name: "d".into(),
                size: manifest.total_size().unwrap(),
                sha256: FileHash(manifest.digest()),
            }
            .record(ID)
        }
    }

    /// A tree of three files with the middle one long enough for whole granules.
    fn resumable() -> (Manifest, Vec<u8>) {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let files: &[(&str, &[u8])] = &[("a/one", b"first"), ("b/big", &big), ("c/last", b"end")];
        let stream = files.iter().flat_map(|(_, c)| c.iter().copied()).collect();
        (manifest_of(files, &["a", "b", "c", "empty"]), stream)
    }

    #[test]
    fn a_kept_directory_continues_after_its_verified_files_and_whole_granules() {
        let (manifest, stream) = resumable();
        let save = tempfile::tempdir().unwrap();
        let record = record_for(&manifest);
        let mut tree =
            IncomingTree::create_with_record(save.path(), ID, "d", &manifest, Some(&record))
                .unwrap();
        // The first file and 200,000 bytes of the big one arrive, then the peer goes.
        let cut = 5 + 200_000;
        tree.write_at(0, &stream[..cut]).unwrap();
        let temp = tree.temp_name().to_owned();
        tree.keep().unwrap();
        let kept = partial::list_partials(save.path()).unwrap();
        assert_eq!(kept.len(), 1, "listed as a partial");
        assert!(kept[0].record.directory);
        assert_eq!(kept[0].len, cut as u64);

        let mut tree = IncomingTree::adopt(save.path(), &temp, "d", &manifest).unwrap();
        // One whole file, then the big one's whole granules (three of 64 KiB).
        assert_eq!(tree.position(), 5 + 3 * 65_536);
        let at = tree.position() as usize;
        tree.write_at(tree.position(), &stream[at..]).unwrap();
        assert_eq!(tree.finish().unwrap().0, manifest.digest());
        let path = tree.commit().unwrap();
        assert_eq!(fs::read(path.join("b/big")).unwrap(), stream[5..300_005]);
        assert_eq!(fs::read(path.join("c/last")).unwrap(), b"end");
        assert!(path.join("empty").is_dir());
        assert_eq!(visible(save.path()), ["d"]);
        assert_eq!(
            fs::read_dir(save.path()).unwrap().count(),
            1,
            "the record went too"
        );
    }

    #[test]
    fn a_damaged_kept_file_is_received_again_from_its_start() {
        let (manifest, stream) = resumable();
        let save = tempfile::tempdir().unwrap();
        let record = record_for(&manifest);
        let mut tree =
            IncomingTree::create_with_record(save.path(), ID, "d", &manifest, Some(&record))
                .unwrap();
        tree.write_at(0, &stream[..5 + 300_000 + 1]).unwrap();
        let temp = tree.temp_name().to_owned();
        tree.keep().unwrap();
        // Someone changed a byte of the first, complete file.
        fs::write(save.path().join(&temp).join("a/one"), b"First").unwrap();
        let mut tree = IncomingTree::adopt(save.path(), &temp, "d", &manifest).unwrap();
        assert_eq!(tree.position(), 0, "nothing after a wrong file is trusted");
        tree.write_at(0, &stream).unwrap();
        assert_eq!(tree.finish().unwrap().0, manifest.digest());

        // And a sender that does not resume makes the receiver start over.
        tree.restart().unwrap();
        assert_eq!(tree.position(), 0);
        tree.write_at(0, &stream).unwrap();
        assert_eq!(tree.finish().unwrap().0, manifest.digest());
        tree.commit().unwrap();
    }

    #[test]
    fn a_kept_directory_held_by_a_live_receiver_is_not_taken() {
        let (manifest, _) = resumable();
        let save = tempfile::tempdir().unwrap();
        let record = record_for(&manifest);
        let tree = IncomingTree::create_with_record(save.path(), ID, "d", &manifest, Some(&record))
            .unwrap();
        let err = IncomingTree::adopt(save.path(), tree.temp_name(), "d", &manifest).unwrap_err();
        assert!(
            matches!(&err, SaveError::CreateTemp { source, .. } if source.kind() == io::ErrorKind::WouldBlock),
            "{err:?}"
        );
    }
}
