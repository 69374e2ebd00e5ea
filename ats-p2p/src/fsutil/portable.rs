//! The [`SaveDir`] and [`FileId`] of platforms without `openat`: the same operations on
//! paths, no inode identities and no locks (the age rule alone tells a dead receiver's files).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

use super::{
    FileId, MAX_TEMP_ATTEMPTS, SaveDir, create_temp, publish_no_replace, sync_dir, temp_name,
};

impl FileId {
    /// No inode numbers here: every file looks the same.
    pub(crate) fn of(_file: &File) -> io::Result<Self> {
        Ok(Self { dev: 0, ino: 0 })
    }
}

/// Without `openat`: the same operations on paths.
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
