//! The sender's side of a directory offer: walks the tree, hashes every file and builds the
//! [`Manifest`] the offer carries.
//!
//! - Entries are taken in name order (bytes of the name), directories depth first, so the same
//!   tree always gives the same manifest.
//! - Symbolic links are **not followed** and not sent; neither are sockets, FIFOs or device
//!   files; names that are not UTF-8 or that a manifest cannot carry (a `\` or a control
//!   character) are skipped too. Each skip is reported ([`SkippedEntry`]) so the user hears of it.
//! - Hidden files (`.gitignore`) are sent: inside a directory they are ordinary content.
//!
//! Everything here blocks; the node runs it on `spawn_blocking`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use ats_p2p_signal::manifest::{self, MAX_MANIFEST_ENTRIES, Manifest, ManifestFile};

use crate::hashing::{HashError, sha256_file_until};
use crate::transfer::{SendSource, SourceFile};

/// Why a directory cannot be offered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// A directory of the tree could not be read.
    #[error("cannot read directory {path}: {source}")]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// More entries than one offer may carry.
    #[error(
        "{path} holds more than {MAX_MANIFEST_ENTRIES} files and directories; send it in parts"
    )]
    TooManyEntries {
        /// The offered directory.
        path: PathBuf,
    },
    /// A file could not be hashed (unreadable, or it changed while being read).
    #[error(transparent)]
    Hash(#[from] HashError),
    /// The file sizes add up to more than 2^64 bytes.
    #[error("the files of {path} add up to more than 2^64 bytes")]
    TooLarge {
        /// The offered directory.
        path: PathBuf,
    },
}

/// An entry left out of a directory offer, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEntry {
    /// The entry on disk.
    pub path: PathBuf,
    /// Why it is not sent.
    pub reason: &'static str,
}

/// A directory ready to offer: its manifest, where each file is read from, and what was left out.
#[derive(Debug, Clone)]
pub struct ScannedTree {
    /// The manifest (the offer's `size` is its total, the `sha256` its digest).
    pub manifest: Manifest,
    /// What the sender streams, in manifest order.
    pub source: SendSource,
    /// Entries not sent (links, special files, names a manifest cannot carry).
    pub skipped: Vec<SkippedEntry>,
}

/// Walks `root`, hashes every regular file below it and builds the offer's manifest. Stops
/// with [`HashError::Cancelled`] once `cancel` is set. Blocks.
pub fn scan_and_hash(root: &Path, cancel: &AtomicBool) -> Result<ScannedTree, TreeError> {
    let mut walk = Walk {
        root: root.to_path_buf(),
        dirs: Vec::new(),
        files: Vec::new(),
        skipped: Vec::new(),
    };
    walk.visit(root, "")?;
    let mut manifest = Manifest {
        dirs: walk.dirs,
        files: Vec::with_capacity(walk.files.len()),
    };
    let mut sources = Vec::with_capacity(walk.files.len());
    for (rel, path) in walk.files {
        let digest = sha256_file_until(&path, cancel, |_, _| {})?;
        manifest.files.push(ManifestFile {
            path: rel,
            size: digest.bytes,
            sha256: digest.sha256,
        });
        sources.push(SourceFile {
            path,
            size: digest.bytes,
        });
    }
    if manifest.total_size().is_err() {
        return Err(TreeError::TooLarge {
            path: root.to_path_buf(),
        });
    }
    Ok(ScannedTree {
        manifest,
        source: SendSource::Directory {
            root: root.to_path_buf(),
            files: sources,
        },
        skipped: walk.skipped,
    })
}

/// The walk's findings so far.
struct Walk {
    root: PathBuf,
    dirs: Vec<String>,
    /// (relative path, path on disk)
    files: Vec<(String, PathBuf)>,
    skipped: Vec<SkippedEntry>,
}

impl Walk {
    /// Visits the directory `dir`, whose relative path is `rel` (empty for the root).
    fn visit(&mut self, dir: &Path, rel: &str) -> Result<(), TreeError> {
        let read_err = |source| TreeError::ReadDir {
            path: dir.to_path_buf(),
            source,
        };
        let mut entries = fs::read_dir(dir)
            .map_err(read_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(read_err)?;
        entries.sort_by_key(fs::DirEntry::file_name);
        for entry in entries {
            let path = entry.path();
            let skip = |reason| SkippedEntry {
                path: path.clone(),
                reason,
            };
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                self.skipped.push(skip("the name is not UTF-8"));
                continue;
            };
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if manifest::validate_path(&child).is_err() {
                self.skipped
                    .push(skip("the name holds a backslash or a control character"));
                continue;
            }
            // `file_type` does not follow symbolic links.
            let kind = entry.file_type().map_err(read_err)?;
            if self.dirs.len().saturating_add(self.files.len()) >= MAX_MANIFEST_ENTRIES {
                return Err(TreeError::TooManyEntries {
                    path: self.root.clone(),
                });
            }
            if kind.is_symlink() {
                self.skipped
                    .push(skip("a symbolic link (links are not followed)"));
            } else if kind.is_dir() {
                self.dirs.push(child.clone());
                self.visit(&path, &child)?;
            } else if kind.is_file() {
                self.files.push((child, path));
            } else {
                self.skipped
                    .push(skip("not a regular file (a socket, FIFO or device)"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_gives_a_valid_manifest_in_name_order_and_skips_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        fs::create_dir_all(root.join("src/deep")).unwrap();
        fs::create_dir_all(root.join("empty")).unwrap();
        fs::write(root.join("src/deep/z.txt"), b"zz").unwrap();
        fs::write(root.join("src/a.txt"), b"a").unwrap();
        fs::write(root.join(".hidden"), b"").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();

        let tree = scan_and_hash(&root, &AtomicBool::new(false)).unwrap();
        let m = &tree.manifest;
        m.validate().unwrap();
        assert_eq!(m.dirs, ["empty", "src", "src/deep"]);
        let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, [".hidden", "src/a.txt", "src/deep/z.txt"]);
        assert_eq!(m.total_size().unwrap(), 3);
        assert_eq!(m.files[2].sha256, ats_p2p_wire::FileHash::of(b"zz").0);
        #[cfg(unix)]
        {
            assert_eq!(tree.skipped.len(), 1);
            assert_eq!(tree.skipped[0].path, root.join("link"));
        }
        let SendSource::Directory { files, .. } = &tree.source else {
            panic!("a directory source");
        };
        assert_eq!(files[2].path, root.join("src/deep/z.txt"));
    }
}
