//! The Unix [`SaveDir`] and [`FileId`]: every name resolved with `openat`-family calls
//! relative to the directory handle, files created `O_CREAT | O_EXCL | O_NOFOLLOW`, names
//! published with `renameat2(RENAME_NOREPLACE)` (or link and unlink), liveness told by `flock`.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use super::{FileId, MAX_TEMP_ATTEMPTS, SaveDir};

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
        use rustix::fs::{Mode, OFlags, openat};
        self.create_fresh(prefix, suffix, |name| {
            let flags =
                OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            openat(&self.fd, name, flags, Mode::from_raw_mode(0o600)).map(File::from)
        })
    }

    /// Creates something new under a fresh hidden name `.{prefix}-{16 random hex}.{suffix}`
    /// with `create` (which must fail with `EEXIST` when the name is taken: then another name
    /// is tried), and takes an exclusive `flock` on what it opened.
    fn create_fresh(
        &self,
        prefix: &str,
        suffix: &str,
        mut create: impl FnMut(&str) -> rustix::io::Result<File>,
    ) -> io::Result<(File, String)> {
        use rustix::fs::{FlockOperation, flock};
        let mut last_err = None;
        for _ in 0..MAX_TEMP_ATTEMPTS {
            let nonce: u64 = rand::random();
            let name = format!(".{prefix}-{nonce:016x}.{suffix}");
            match create(&name) {
                Ok(file) => {
                    // Only a file system without locks refuses; then the age rule alone applies.
                    if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
                        tracing::debug!(error = %e, name, "no lock on a new temporary");
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

    /// `renameat2(RENAME_NOREPLACE)` of `temp` to `dest`: `Ok(true)` when done, `Ok(false)`
    /// when the kernel or file system lacks the flag (the caller falls back), `AlreadyExists`
    /// when `dest` is taken.
    fn rename_no_replace(&self, temp: &str, dest: &str) -> io::Result<bool> {
        #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
        {
            use rustix::fs::{RenameFlags, renameat_with};
            use rustix::io::Errno;
            match renameat_with(&self.fd, temp, &self.fd, dest, RenameFlags::NOREPLACE) {
                Ok(()) => Ok(true),
                Err(e) if e == Errno::INVAL || e == Errno::NOSYS || e == Errno::NOTSUP => Ok(false),
                Err(e) => Err(e.into()),
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
        {
            let _ = (temp, dest);
            Ok(false)
        }
    }

    fn move_no_replace(&self, temp: &str, dest: &str) -> io::Result<()> {
        use rustix::io::Errno;
        if self.rename_no_replace(temp, dest)? {
            return Ok(());
        }
        // Old kernel or a file system without the flag: link + unlink below.
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
        use rustix::fs::{Mode, OFlags, mkdirat, openat};
        self.create_fresh(prefix, suffix, |name| {
            mkdirat(&self.fd, name, Mode::from_raw_mode(0o700))?;
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            openat(&self.fd, name, flags, Mode::empty()).map(File::from)
        })
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
        if self.rename_no_replace(temp, dest)? {
            return Ok(());
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

fn swapped(temp: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the temporary file {temp} was replaced by something else; not publishing it"),
    )
}
