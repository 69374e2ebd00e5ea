//! Small blocking file-system helpers of a directory receive: creating files and directories
//! without following links, reopening and re-hashing a held file, removing one.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

use sha2::Sha256;

use crate::fsutil;
use crate::save::SaveError;

/// Removes the file `path` if it is there.
pub(super) fn remove_if_there(path: &Path) -> Result<(), SaveError> {
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
pub(super) fn rehash(path: &Path, len: u64) -> io::Result<Sha256> {
    let mut file = open_nofollow(path, OpenOptions::new().read(true))?;
    crate::partial::hash_prefix(&mut file, len)
}

/// Opens the existing file `path` for writing, cut to `len` bytes, positioned at its end.
pub(super) fn reopen_at(path: &Path, len: u64) -> io::Result<File> {
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
pub(super) fn make_dirs(path: &Path) -> io::Result<()> {
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
pub(super) fn create_file(path: &Path) -> io::Result<File> {
    if let Some(parent) = path.parent() {
        make_dirs(parent)?;
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    fsutil::set_mode(&mut options, 0o600);
    open_nofollow(path, &mut options)
}
