//! The manifest of a directory offer: every file (relative path, size, SHA-256) in the order
//! its bytes travel, and every directory, so empty ones arrive too.
//!
//! A directory moves as one stream: the files' bytes one after another in manifest order. The
//! offer's `size` is the sum of the files' sizes and its `sha256` is [`Manifest::digest`], a
//! SHA-256 over the manifest's canonical text, so a receiver that verified every file against
//! its entry has verified the whole offer.
//!
//! Everything here validates untrusted input: paths are relative, `/`-separated, and no
//! component is empty, `.`, `..`, longer than [`MAX_COMPONENT_BYTES`] or holds a `\` or a
//! control character; no path appears twice and no file is the parent of another entry. A
//! receiver adds its platform's rules (device names and the like) on top.

use std::collections::HashSet;

use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

/// Most entries (files and directories) in one manifest: far beyond a hand-made tree, and a
/// bound on what one offer can make a receiver create.
pub const MAX_MANIFEST_ENTRIES: usize = 20_000;

/// Longest relative path in bytes.
pub const MAX_PATH_BYTES: usize = 4096;

/// Longest path component in bytes (the common file system limit).
pub const MAX_COMPONENT_BYTES: usize = 255;

/// The first line of the text [`Manifest::digest`] hashes; names the format's version.
const DIGEST_HEADER: &[u8] = b"ats-p2p manifest v1\n";

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// It is not shaped as `{"dirs":[…],"files":[{"path","size","sha256"}…]}`.
    #[error("malformed manifest: {0}")]
    Malformed(String),
    /// More entries than [`MAX_MANIFEST_ENTRIES`].
    #[error("{count} entries, more than the {MAX_MANIFEST_ENTRIES} allowed")]
    TooManyEntries {
        /// Entries in the manifest.
        count: usize,
    },
    /// A path that could leave the directory or is not a plain relative path.
    #[error("unsafe path {path:?}: {reason}")]
    UnsafePath {
        /// The path as offered.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The same path twice, or a file that is the parent of another entry.
    #[error("path {0:?} appears twice, or below a file")]
    Conflict(String),
    /// The sizes add up to more than a `u64`.
    #[error("the sizes add up to more than 2^64 bytes")]
    SizeOverflow,
}

/// One file of a directory offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// Relative path, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the file's content.
    pub sha256: [u8; 32],
}

/// The files and directories of a directory offer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Every directory below the offered one (parents before children), `/`-separated.
    pub dirs: Vec<String>,
    /// Every file, in the order their bytes are sent.
    pub files: Vec<ManifestFile>,
}

impl Manifest {
    /// The sum of the files' sizes: the length of the stream.
    pub fn total_size(&self) -> Result<u64, ManifestError> {
        self.files
            .iter()
            .try_fold(0u64, |sum, f| sum.checked_add(f.size))
            .ok_or(ManifestError::SizeOverflow)
    }

    /// SHA-256 over the canonical text: a header line, then `d\t<path>\n` per directory and
    /// `f\t<size>\t<sha256 hex>\t<path>\n` per file, in manifest order (validated paths hold no
    /// tab or newline, so the text is unambiguous).
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(DIGEST_HEADER);
        for d in &self.dirs {
            h.update(b"d\t");
            h.update(d.as_bytes());
            h.update(b"\n");
        }
        for f in &self.files {
            h.update(format!("f\t{}\t{}\t", f.size, hex::encode(f.sha256)).as_bytes());
            h.update(f.path.as_bytes());
            h.update(b"\n");
        }
        h.finalize().into()
    }

    /// Checks every rule of the module docs.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let count = self.dirs.len().saturating_add(self.files.len());
        if count > MAX_MANIFEST_ENTRIES {
            return Err(ManifestError::TooManyEntries { count });
        }
        self.total_size()?;
        let mut seen: HashSet<&str> = HashSet::with_capacity(count);
        for path in self.dirs.iter().chain(self.files.iter().map(|f| &f.path)) {
            validate_path(path)?;
            if !seen.insert(path.as_str()) {
                return Err(ManifestError::Conflict(path.clone()));
            }
        }
        // No entry below a file: every proper prefix of a path must not be a file.
        let files: HashSet<&str> = self.files.iter().map(|f| f.path.as_str()).collect();
        for path in self.dirs.iter().chain(self.files.iter().map(|f| &f.path)) {
            let mut parent = path.as_str();
            while let Some((p, _)) = parent.rsplit_once('/') {
                if files.contains(p) {
                    return Err(ManifestError::Conflict(path.clone()));
                }
                parent = p;
            }
        }
        Ok(())
    }

    /// The JSON form carried in the offer:
    /// `{"dirs":["a","a/b"],"files":[{"path":"a/x.txt","size":3,"sha256":"<64 hex>"}]}`.
    pub fn to_json(&self) -> Value {
        let files: Vec<Value> = self
            .files
            .iter()
            .map(|f| json!({"path": f.path, "size": f.size, "sha256": hex::encode(f.sha256)}))
            .collect();
        json!({ "dirs": self.dirs, "files": files })
    }

    /// Parses and [validates](Self::validate) the JSON form.
    pub fn from_json(value: &Value) -> Result<Self, ManifestError> {
        let malformed = |what: &str| ManifestError::Malformed(what.to_owned());
        let obj = value
            .as_object()
            .ok_or_else(|| malformed("not an object"))?;
        let list = |name: &str| -> Result<&Vec<Value>, ManifestError> {
            match obj.get(name) {
                None => Ok(const { &Vec::new() }),
                Some(Value::Array(items)) => Ok(items),
                Some(_) => Err(malformed(&format!("`{name}` is not an array"))),
            }
        };
        let (dirs, files) = (list("dirs")?, list("files")?);
        let count = dirs.len().saturating_add(files.len());
        if count > MAX_MANIFEST_ENTRIES {
            return Err(ManifestError::TooManyEntries { count });
        }
        let dirs = dirs
            .iter()
            .map(|d| {
                d.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| malformed("a directory is not a string"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let files = files
            .iter()
            .map(|f| {
                file_from_json(
                    f.as_object()
                        .ok_or_else(|| malformed("a file is not an object"))?,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let manifest = Self { dirs, files };
        manifest.validate()?;
        Ok(manifest)
    }
}

fn file_from_json(obj: &Map<String, Value>) -> Result<ManifestFile, ManifestError> {
    let malformed = |what: &str| ManifestError::Malformed(what.to_owned());
    let path = obj
        .get("path")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("a file has no string `path`"))?;
    let size = obj
        .get("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| malformed("a file has no non-negative integer `size`"))?;
    let hash = obj
        .get("sha256")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("a file has no string `sha256`"))?;
    let mut sha256 = [0u8; 32];
    if hash.len() != 64 || hex::decode_to_slice(hash, &mut sha256).is_err() {
        return Err(malformed("a file's `sha256` is not 64 hex characters"));
    }
    Ok(ManifestFile {
        path: path.to_owned(),
        size,
        sha256,
    })
}

/// Checks that `path` is a plain relative path that stays inside its directory.
pub fn validate_path(path: &str) -> Result<(), ManifestError> {
    let unsafe_path = |reason| ManifestError::UnsafePath {
        path: path.to_owned(),
        reason,
    };
    if path.is_empty() {
        return Err(unsafe_path("empty"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(unsafe_path("too long"));
    }
    if path.starts_with('/') {
        return Err(unsafe_path("absolute"));
    }
    for component in path.split('/') {
        match component {
            "" => return Err(unsafe_path("an empty component")),
            "." | ".." => return Err(unsafe_path("a `.` or `..` component")),
            c if c.len() > MAX_COMPONENT_BYTES => return Err(unsafe_path("a component too long")),
            c if c.chars().any(|ch| ch == '\\' || ch.is_control()) => {
                return Err(unsafe_path("a backslash or control character"));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64) -> ManifestFile {
        ManifestFile {
            path: path.into(),
            size,
            sha256: [7; 32],
        }
    }

    fn manifest() -> Manifest {
        Manifest {
            dirs: vec!["a".into(), "a/b".into(), "empty".into()],
            files: vec![file("a/b/x.txt", 3), file("top.bin", 0), file(".hidden", 5)],
        }
    }

    #[test]
    fn json_roundtrip_and_sums() {
        let m = manifest();
        m.validate().unwrap();
        assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
        assert_eq!(m.total_size().unwrap(), 8);
    }

    #[test]
    fn the_digest_covers_every_field_and_the_order() {
        let m = manifest();
        let d = m.digest();
        let mut changed = m.clone();
        changed.files[0].size = 4;
        assert_ne!(changed.digest(), d);
        let mut changed = m.clone();
        changed.files[0].sha256[0] = 8;
        assert_ne!(changed.digest(), d);
        let mut changed = m.clone();
        changed.files.swap(0, 1);
        assert_ne!(changed.digest(), d);
        let mut changed = m.clone();
        changed.dirs.pop();
        assert_ne!(changed.digest(), d);
        assert_eq!(m.clone().digest(), d);
    }

    #[test]
    fn hostile_paths_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a\\..\\b",
            "a\nb",
            "a\tb",
            "nul\u{0}",
        ] {
            let m = Manifest {
                dirs: vec![],
                files: vec![file(bad, 1)],
            };
            assert!(
                matches!(m.validate(), Err(ManifestError::UnsafePath { .. })),
                "{bad:?}"
            );
            let m = Manifest {
                dirs: vec![bad.into()],
                files: vec![],
            };
            assert!(m.validate().is_err(), "dir {bad:?}");
        }
        let long = "x".repeat(MAX_COMPONENT_BYTES + 1);
        assert!(validate_path(&long).is_err());
        assert!(validate_path(&"a/".repeat(MAX_PATH_BYTES)).is_err());
    }

    #[test]
    fn duplicates_and_entries_below_files_are_refused() {
        let twice = Manifest {
            dirs: vec![],
            files: vec![file("a", 1), file("a", 2)],
        };
        assert!(matches!(twice.validate(), Err(ManifestError::Conflict(_))));
        let dir_and_file = Manifest {
            dirs: vec!["a".into()],
            files: vec![file("a", 1)],
        };
        assert!(dir_and_file.validate().is_err());
        let below_a_file = Manifest {
            dirs: vec![],
            files: vec![file("a", 1), file("a/b", 2)],
        };
        assert!(below_a_file.validate().is_err());
        let overflow = Manifest {
            dirs: vec![],
            files: vec![file("a", u64::MAX), file("b", 1)],
        };
        assert_eq!(overflow.validate(), Err(ManifestError::SizeOverflow));
    }

    #[test]
    fn malformed_json_is_an_error_not_a_panic() {
        for bad in [
            json!([]),
            json!({"files": 1}),
            json!({"dirs": [1]}),
            json!({"files": [{"path": "a", "size": -1, "sha256": "00".repeat(32)}]}),
            json!({"files": [{"path": "a", "size": 1, "sha256": "zz"}]}),
            json!({"files": [{"size": 1, "sha256": "00".repeat(32)}]}),
            json!({"files": ["a"]}),
        ] {
            assert!(Manifest::from_json(&bad).is_err(), "{bad}");
        }
        let many: Vec<Value> = (0..=MAX_MANIFEST_ENTRIES)
            .map(|i| json!(format!("d{i}")))
            .collect();
        assert!(matches!(
            Manifest::from_json(&json!({ "dirs": many })),
            Err(ManifestError::TooManyEntries { .. })
        ));
        assert_eq!(
            Manifest::from_json(&json!({})).unwrap(),
            Manifest::default()
        );
    }
}
