//! Free disk space where a file or directory will be received.

use std::path::Path;

use super::SaveError;

/// The free space of the file system that holds (or will hold) `dir`, in bytes, as an
/// unprivileged user may use it. A save directory that does not exist yet is measured at its
/// nearest existing ancestor, since [`IncomingFile::create`] will create it there.
///
/// [`IncomingFile::create`]: super::IncomingFile::create
pub fn available_space(dir: &Path) -> Result<u64, SaveError> {
    let existing = dir
        .ancestors()
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .find(|a| a.exists())
        .unwrap_or(dir);
    fs4::available_space(existing).map_err(|source| SaveError::AvailableSpace {
        dir: dir.to_path_buf(),
        source,
    })
}
