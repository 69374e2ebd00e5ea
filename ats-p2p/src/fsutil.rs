//! Small blocking file-system helpers shared by [`crate::save`], [`crate::identity`] and the
//! remembered-keys store: directory fsync, publish-without-overwrite, atomic replace.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// How many random temporary names are tried before giving up (a collision of 64 random bits is
/// practically impossible; more than one try only guards against a hostile directory).
pub(crate) const MAX_TEMP_ATTEMPTS: u32 = 8;

/// Flushes a directory's entries (new names, renames, removals) to stable storage.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A fresh hidden temporary name in `dir`: `.{prefix}-{16 random hex}.{suffix}`.
pub(crate) fn temp_name(dir: &Path, prefix: &str, suffix: &str) -> PathBuf {
    let nonce: u64 = rand::random();
    dir.join(format!(".{prefix}-{nonce:016x}.{suffix}"))
}

/// Creates a new temporary file in `dir` with `create_new` (never opens an existing file or
/// follows a planted symlink), retrying a few random names.
pub(crate) fn create_temp(
    dir: &Path,
    prefix: &str,
    suffix: &str,
    options: &OpenOptions,
) -> io::Result<(File, PathBuf)> {
    let mut last_err = None;
    for _ in 0..MAX_TEMP_ATTEMPTS {
        let path = temp_name(dir, prefix, suffix);
        match options.open(&path) {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)))
}

/// Gives the finished file `temp` the name `dest`, failing with `AlreadyExists` if `dest` exists.
/// Never overwrites anything.
///
/// The file is hard-linked to `dest` (atomic, refuses an existing name, including a dangling
/// symlink), then `temp` is unlinked. Where the file system has no hard links, `dest` is reserved
/// with `create_new` and `temp` renamed over the reservation. (On Unix, received files use
/// [`SaveDir::publish`], which works relative to a directory handle.)
#[cfg_attr(unix, allow(dead_code))]
pub(crate) fn publish_no_replace(temp: &Path, dest: &Path) -> io::Result<()> {
    match fs::hard_link(temp, dest) {
        Ok(()) => {
            if let Err(e) = fs::remove_file(temp) {
                // The file is in place; a leftover second name is untidy, not a failure.
                tracing::warn!(temp = %temp.display(), error = %e, "could not unlink temporary name");
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::Unsupported
            ) =>
        {
            tracing::debug!(error = %e, "no hard links here; reserving the name instead");
            publish_by_reservation(temp, dest)
        }
        Err(e) => Err(e),
    }
}

/// The fallback of [`publish_no_replace`]: reserve `dest` with `create_new` (fails with
/// `AlreadyExists` if taken), then rename `temp` over the reservation. If the rename fails the
/// reservation is removed again.
#[cfg_attr(unix, allow(dead_code))]
pub(crate) fn publish_by_reservation(temp: &Path, dest: &Path) -> io::Result<()> {
    OpenOptions::new().write(true).create_new(true).open(dest)?;
    fs::rename(temp, dest).inspect_err(|_| {
        // Give the reserved name back.
        let _ = fs::remove_file(dest);
    })
}

/// Replaces `path` with `contents` atomically: a temporary file in the same directory is written,
/// fsynced and renamed over `path`, then the directory is fsynced. A reader sees the old or the
/// new contents, never a mix. `mode` sets the Unix permission bits of the new file.
pub(crate) fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    set_mode(&mut options, mode);
    let (mut file, temp) = create_temp(&dir, "ats-p2p", "tmp", &options)?;
    let result = (|| {
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, path)?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// A save directory held open: every name in it is resolved relative to this handle, so a
/// directory renamed or replaced by a symlink after it was opened cannot redirect a write or a
/// rename.
///
/// On Unix the directory is opened once with `O_DIRECTORY | O_NOFOLLOW` (after resolving the
/// path the user gave once, so a save directory reached through a symlink still works), and the
/// temporary file is created with `openat(O_CREAT | O_EXCL | O_NOFOLLOW)`, mode 0600, and never
/// opened again by name. Elsewhere the same operations work on paths.
#[derive(Debug)]
pub(crate) struct SaveDir {
    path: PathBuf,
    #[cfg(unix)]
    fd: File,
}

/// The identity of a file (device and inode): what a name must still refer to before it is
/// published or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

#[cfg(unix)]
impl FileId {
    /// The identity of an open file.
    pub(crate) fn of(file: &File) -> io::Result<Self> {
        use std::os::unix::fs::MetadataExt as _;
        let m = file.metadata()?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

#[cfg(unix)]
impl SaveDir {
    /// Opens `path` (which must exist) as a directory handle.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        use rustix::fs::{CWD, Mode, OFlags, openat};
        // Resolve the user's path once; from here on nothing is looked up through it.
        let real = fs::canonicalize(path)?;
        let fd = openat(
            CWD,
            &real,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            path: path.to_path_buf(),
            fd: File::from(fd),
        })
    }

    /// The directory as the caller named it (for messages and returned paths).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Creates a new hidden temporary file `.{prefix}-{16 random hex}.{suffix}` with
    /// `O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600, read-write, and takes an exclusive `flock` on
    /// it (held until the file is closed: how [`Self::is_abandoned`] tells a live transfer's
    /// file from a dead one's). Returns the file and its name.
    pub(crate) fn create_temp(&self, prefix: &str, suffix: &str) -> io::Result<(File, String)> {
        use rustix::fs::{FlockOperation, Mode, OFlags, flock, openat};
        let mut last_err = None;
        for _ in 0..MAX_TEMP_ATTEMPTS {
            let nonce: u64 = rand::random();
            let name = format!(".{prefix}-{nonce:016x}.{suffix}");
            let flags =
                OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            match openat(&self.fd, name.as_str(), flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => {
                    let file = File::from(fd);
                    // Only a file system without locks refuses; then the age rule alone applies.
                    if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
                        tracing::debug!(error = %e, "no lock on the temporary file");
                    }
                    return Ok((file, name));
                }
                Err(e) if e == rustix::io::Errno::EXIST => last_err = Some(io::Error::from(e)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)))
    }

    /// The identity of `name` in this directory, without following a symlink; `None` when it
    /// is not a regular file.
    pub(crate) fn id_of(&self, name: &str) -> io::Result<Option<FileId>> {
        use rustix::fs::{AtFlags, FileType, statat};
        let st = statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Ok(None);
        }
        Ok(Some(FileId {
            #[allow(clippy::useless_conversion)] // the field's width differs per target
            dev: u64::from(st.st_dev),
            #[allow(clippy::useless_conversion)]
            ino: u64::from(st.st_ino),
        }))
    }

    /// Gives the file `id`, now named `temp`, the name `dest` without ever replacing an
    /// existing name (`AlreadyExists` if taken). `renameat2(RENAME_NOREPLACE)` where the kernel
    /// and file system have it, else a hard link and an unlink, else a reserved name renamed
    /// over. Before and after, the names are checked to refer to `id`: if someone swapped the
    /// temporary name for a symlink or another file, nothing of theirs is published (the name
    /// is removed again) and this fails with `InvalidData`.
    pub(crate) fn publish(&self, temp: &str, id: FileId, dest: &str) -> io::Result<()> {
        if self.id_of(temp)? != Some(id) {
            return Err(swapped(temp));
        }
        self.move_no_replace(temp, dest)?;
        match self.id_of(dest) {
            Ok(Some(found)) if found == id => Ok(()),
            _ => {
                // Swapped between the check and the move: take the impostor's new name away.
                let _ = self.unlink(dest);
                Err(swapped(temp))
            }
        }
    }

    fn move_no_replace(&self, temp: &str, dest: &str) -> io::Result<()> {
        use rustix::io::Errno;
        #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
        {
            use rustix::fs::{RenameFlags, renameat_with};
            match renameat_with(&self.fd, temp, &self.fd, dest, RenameFlags::NOREPLACE) {
                Ok(()) => return Ok(()),
                Err(e) if e == Errno::EXIST => return Err(e.into()),
                // Old kernel or a file system without the flag: link + unlink below.
                Err(e) if e == Errno::INVAL || e == Errno::NOSYS || e == Errno::NOTSUP => {}
                Err(e) => return Err(e.into()),
            }
        }
        use rustix::fs::{AtFlags, linkat};
        match linkat(&self.fd, temp, &self.fd, dest, AtFlags::empty()) {
            Ok(()) => {
                if let Err(e) = self.unlink(temp) {
                    // The file is in place; a leftover second name is untidy, not a failure.
                    tracing::warn!(temp, error = %e, "could not unlink temporary name");
                }
                Ok(())
            }
            Err(e) if e == Errno::PERM || e == Errno::NOTSUP || e == Errno::OPNOTSUPP => {
                tracing::debug!(error = %e, "no hard links here; reserving the name instead");
                self.reserve_and_rename(temp, dest)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The last fallback: reserve `dest` with `O_CREAT | O_EXCL`, rename `temp` over it.
    fn reserve_and_rename(&self, temp: &str, dest: &str) -> io::Result<()> {
        use rustix::fs::{Mode, OFlags, openat, renameat};
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        drop(openat(
            &self.fd,
            dest,
            flags | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?);
        renameat(&self.fd, temp, &self.fd, dest)
            .map_err(io::Error::from)
            .inspect_err(|_| {
                let _ = self.unlink(dest);
            })
    }

    /// Removes `name` (never follows a symlink; removes the link itself).
    pub(crate) fn unlink(&self, name: &str) -> io::Result<()> {
        use rustix::fs::{AtFlags, unlinkat};
        unlinkat(&self.fd, name, AtFlags::empty()).map_err(io::Error::from)
    }

    /// Removes `name` if it still is the file `id`.
    pub(crate) fn unlink_if(&self, name: &str, id: FileId) -> io::Result<()> {
        match self.id_of(name) {
            Ok(Some(found)) if found == id => self.unlink(name),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// True when the temporary file `name` belongs to no running receiver: nobody holds its
    /// lock (the process that created it ended). `None` when this cannot be told (not a
    /// regular file, or the file system has no locks).
    pub(crate) fn is_abandoned(&self, name: &str) -> Option<bool> {
        use rustix::fs::{FlockOperation, Mode, OFlags, flock, openat};
        use rustix::io::Errno;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let file = File::from(openat(&self.fd, name, flags, Mode::empty()).ok()?);
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Some(true),
            Err(e) if e == Errno::WOULDBLOCK => Some(false),
            Err(_) => None,
        }
    }

    /// Opens the existing regular file `name` read-write without following a symlink and
    /// takes its exclusive `flock` (as [`Self::create_temp`] does): `WouldBlock` when a live
    /// receiver holds it, `InvalidData` when it is not a regular file.
    pub(crate) fn open_locked(&self, name: &str) -> io::Result<File> {
        use rustix::fs::{FlockOperation, Mode, OFlags, flock, openat};
        use rustix::io::Errno;
        let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let file = File::from(openat(&self.fd, name, flags, Mode::empty())?);
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a regular file",
            ));
        }
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(file),
            Err(e) if e == Errno::WOULDBLOCK => Err(io::ErrorKind::WouldBlock.into()),
            // A file system without locks: nothing to tell live from dead; take it.
            Err(_) => Ok(file),
        }
    }

    /// Reads the regular file `name` (not through a symlink) if it has at most `max` bytes.
    pub(crate) fn read_small(&self, name: &str, max: usize) -> io::Result<Vec<u8>> {
        use rustix::fs::{Mode, OFlags, openat};
        use std::io::Read as _;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let file = File::from(openat(&self.fd, name, flags, Mode::empty())?);
        let meta = file.metadata()?;
        if !meta.is_file() || meta.len() > max as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a small regular file",
            ));
        }
        let mut out = Vec::new();
        file.take(max as u64).read_to_end(&mut out)?;
        Ok(out)
    }

    /// Replaces `name` with `contents` (mode 0600): written to `name.tmp` (never through a
    /// symlink) and renamed over `name`, so a reader sees the old or the new contents.
    pub(crate) fn replace_small(&self, name: &str, contents: &[u8]) -> io::Result<()> {
        use rustix::fs::{Mode, OFlags, openat, renameat};
        use std::io::Write as _;
        let temp = format!("{name}.tmp");
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut file = File::from(openat(
            &self.fd,
            temp.as_str(),
            flags,
            Mode::from_raw_mode(0o600),
        )?);
        let written = file.write_all(contents);
        drop(file);
        written
            .and_then(|()| renameat(&self.fd, temp.as_str(), &self.fd, name).map_err(Into::into))
            .inspect_err(|_| {
                let _ = self.unlink(&temp);
            })
    }

    /// Creates a new hidden temporary directory `.{prefix}-{16 random hex}.{suffix}`, mode 0700,
    /// opened without following links and locked (`flock`, as [`Self::create_temp`] locks its
    /// files). Returns its handle and name.
    pub(crate) fn create_temp_dir(&self, prefix: &str, suffix: &str) -> io::Result<(File, String)> {
        use rustix::fs::{FlockOperation, Mode, OFlags, flock, mkdirat, openat};
        let mut last_err = None;
        for _ in 0..MAX_TEMP_ATTEMPTS {
            let nonce: u64 = rand::random();
            let name = format!(".{prefix}-{nonce:016x}.{suffix}");
            match mkdirat(&self.fd, name.as_str(), Mode::from_raw_mode(0o700)) {
                Ok(()) => {
                    let flags =
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                    let dir = File::from(openat(&self.fd, name.as_str(), flags, Mode::empty())?);
                    if let Err(e) = flock(&dir, FlockOperation::NonBlockingLockExclusive) {
                        tracing::debug!(error = %e, "no lock on the temporary directory");
                    }
                    return Ok((dir, name));
                }
                Err(e) if e == rustix::io::Errno::EXIST => last_err = Some(io::Error::from(e)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)))
    }

    /// Opens the existing directory `name` without following a symlink and takes its
    /// exclusive `flock` (as [`Self::create_temp_dir`] does): `WouldBlock` when a live receiver
    /// holds it.
    pub(crate) fn open_dir_locked(&self, name: &str) -> io::Result<File> {
        use rustix::fs::{FlockOperation, Mode, OFlags, flock, openat};
        use rustix::io::Errno;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let dir = File::from(openat(&self.fd, name, flags, Mode::empty())?);
        match flock(&dir, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(dir),
            Err(e) if e == Errno::WOULDBLOCK => Err(io::ErrorKind::WouldBlock.into()),
            Err(_) => Ok(dir),
        }
    }

    /// Gives the directory `temp` the name `dest` without replacing anything (`AlreadyExists`
    /// if taken): `renameat2(RENAME_NOREPLACE)`, else `dest` reserved as an empty directory and
    /// `temp` renamed over that reservation.
    pub(crate) fn publish_dir(&self, temp: &str, dest: &str) -> io::Result<()> {
        use rustix::fs::{Mode, mkdirat, renameat};
        use rustix::io::Errno;
        #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
        {
            use rustix::fs::{RenameFlags, renameat_with};
            match renameat_with(&self.fd, temp, &self.fd, dest, RenameFlags::NOREPLACE) {
                Ok(()) => return Ok(()),
                Err(e) if e == Errno::EXIST => return Err(e.into()),
                Err(e) if e == Errno::INVAL || e == Errno::NOSYS || e == Errno::NOTSUP => {}
                Err(e) => return Err(e.into()),
            }
        }
        mkdirat(&self.fd, dest, Mode::from_raw_mode(0o700))?;
        renameat(&self.fd, temp, &self.fd, dest)
            .map_err(io::Error::from)
            .inspect_err(|_| {
                let _ = rustix::fs::unlinkat(&self.fd, dest, rustix::fs::AtFlags::REMOVEDIR);
            })
    }

    /// Whether `name` is a directory (not through a symlink).
    pub(crate) fn is_dir(&self, name: &str) -> bool {
        use rustix::fs::{AtFlags, FileType, statat};
        statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
    }

    /// True when the temporary directory `name` belongs to no running receiver (nobody holds
    /// its lock); `None` when this cannot be told.
    pub(crate) fn is_abandoned_dir(&self, name: &str) -> Option<bool> {
        use rustix::fs::{FlockOperation, Mode, OFlags, flock, openat};
        use rustix::io::Errno;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let dir = File::from(openat(&self.fd, name, flags, Mode::empty()).ok()?);
        match flock(&dir, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Some(true),
            Err(e) if e == Errno::WOULDBLOCK => Some(false),
            Err(_) => None,
        }
    }

    /// Flushes the directory's entries to stable storage.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.fd.sync_all()
    }
}

#[cfg(unix)]
fn swapped(temp: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the temporary file {temp} was replaced by something else; not publishing it"),
    )
}

#[cfg(not(unix))]
impl FileId {
    /// No inode numbers here: every file looks the same.
    pub(crate) fn of(_file: &File) -> io::Result<Self> {
        Ok(Self { dev: 0, ino: 0 })
    }
}

/// Without `openat`: the same operations on paths.
#[cfg(not(unix))]
impl SaveDir {
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        if !fs::metadata(path)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn create_temp(&self, prefix: &str, suffix: &str) -> io::Result<(File, String)> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create_new(true);
        let (file, path) = create_temp(&self.path, prefix, suffix, &options)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok((file, name))
    }

    pub(crate) fn id_of(&self, name: &str) -> io::Result<Option<FileId>> {
        let m = fs::symlink_metadata(self.path.join(name))?;
        Ok(m.is_file().then_some(FileId { dev: 0, ino: 0 }))
    }

    pub(crate) fn publish(&self, temp: &str, _id: FileId, dest: &str) -> io::Result<()> {
        publish_no_replace(&self.path.join(temp), &self.path.join(dest))
    }

    pub(crate) fn unlink(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.path.join(name))
    }

    pub(crate) fn unlink_if(&self, name: &str, _id: FileId) -> io::Result<()> {
        self.unlink(name)
    }

    pub(crate) fn is_abandoned(&self, _name: &str) -> Option<bool> {
        None
    }

    pub(crate) fn open_locked(&self, name: &str) -> io::Result<File> {
        let path = self.path.join(name);
        if !fs::symlink_metadata(&path)?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a regular file",
            ));
        }
        OpenOptions::new().read(true).write(true).open(path)
    }

    pub(crate) fn read_small(&self, name: &str, max: usize) -> io::Result<Vec<u8>> {
        let path = self.path.join(name);
        let meta = fs::symlink_metadata(&path)?;
        if !meta.is_file() || meta.len() > max as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a small regular file",
            ));
        }
        fs::read(path)
    }

    pub(crate) fn replace_small(&self, name: &str, contents: &[u8]) -> io::Result<()> {
        let temp = self.path.join(format!("{name}.tmp"));
        fs::write(&temp, contents)?;
        fs::rename(&temp, self.path.join(name))
    }

    pub(crate) fn create_temp_dir(&self, prefix: &str, suffix: &str) -> io::Result<(File, String)> {
        let mut last_err = None;
        for _ in 0..MAX_TEMP_ATTEMPTS {
            let path = temp_name(&self.path, prefix, suffix);
            match fs::create_dir(&path) {
                Ok(()) => {
                    let name = path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    return Ok((File::open(&path)?, name));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)))
    }

    pub(crate) fn open_dir_locked(&self, name: &str) -> io::Result<File> {
        let path = self.path.join(name);
        if !fs::symlink_metadata(&path)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a directory",
            ));
        }
        File::open(path)
    }

    pub(crate) fn publish_dir(&self, temp: &str, dest: &str) -> io::Result<()> {
        let dest = self.path.join(dest);
        fs::create_dir(&dest)?;
        fs::rename(self.path.join(temp), &dest).inspect_err(|_| {
            let _ = fs::remove_dir(&dest);
        })
    }

    pub(crate) fn is_dir(&self, name: &str) -> bool {
        fs::symlink_metadata(self.path.join(name)).is_ok_and(|m| m.is_dir())
    }

    pub(crate) fn is_abandoned_dir(&self, _name: &str) -> Option<bool> {
        None
    }

    pub(crate) fn sync(&self) -> io::Result<()> {
        sync_dir(&self.path)
    }
}

/// Sets the Unix mode bits that a new file is created with.
#[cfg(unix)]
pub(crate) fn set_mode(options: &mut OpenOptions, mode: u32) {
    use std::os::unix::fs::OpenOptionsExt;
    options.mode(mode);
}

/// No permission bits outside Unix.
#[cfg(not(unix))]
pub(crate) fn set_mode(_options: &mut OpenOptions, _mode: u32) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishing_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for publish in [publish_no_replace, publish_by_reservation] {
            let temp = d.join(".t");
            let dest = d.join("dest");
            fs::write(&temp, b"new").unwrap();
            fs::write(&dest, b"old").unwrap();
            let err = publish(&temp, &dest).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
            assert_eq!(fs::read(&dest).unwrap(), b"old");
            assert_eq!(fs::read(&temp).unwrap(), b"new");

            let free = d.join("free");
            publish(&temp, &free).unwrap();
            assert_eq!(fs::read(&free).unwrap(), b"new");
            assert!(!temp.exists());
            fs::remove_file(&free).unwrap();
            fs::remove_file(&dest).unwrap();
        }
    }

    #[test]
    fn failed_rename_gives_the_reservation_back() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join(".gone");
        let dest = dir.path().join("dest");
        assert!(publish_by_reservation(&missing, &dest).is_err());
        assert!(!dest.exists());
    }

    #[test]
    fn atomic_replace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomically(&path, b"one", 0o600).unwrap();
        write_atomically(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
