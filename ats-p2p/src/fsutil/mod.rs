//! Small blocking file-system helpers shared by [`crate::save`], [`crate::identity`] and the
//! remembered-keys store: directory fsync, publish-without-overwrite, atomic replace.
//!
//! [`SaveDir`], a save directory held open, is declared here; its Unix implementation is in
//! `unix`, the path-based one of other platforms in `portable`.

#[cfg(not(unix))]
mod portable;
#[cfg(unix)]
mod unix;

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
