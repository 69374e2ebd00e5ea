//! A node's persistent Hyperswarm key pair, one per actor id.
//!
//! The 32-byte Ed25519 seed is stored as 64 hex characters in
//! `<config dir>/ats-p2p/keys/<encoded actor id>.key` (file mode 0600, directory 0700), created on
//! first use and loaded afterwards. The actor id is encoded so that any id maps to its own single
//! file name (see [`KeyStore::key_path`]). [`KeySource::Ephemeral`] makes a fresh key pair that is
//! never stored. All functions block (small files; call them once at start-up).

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use ats_p2p_swarm::KeyPair;
use ats_p2p_swarm::keys::SEED_LEN;
use blake2::digest::consts::U16;
use blake2::{Blake2b, Digest};
use zeroize::Zeroizing;

use crate::fsutil;
use crate::policy::{ActorIdError, validate_actor_id};

/// Extension of key files.
pub const KEY_FILE_EXTENSION: &str = "key";

/// Key files are readable and writable by their owner only.
const KEY_FILE_MODE: u32 = 0o600;

/// Key directories are private to their owner.
const KEY_DIR_MODE: u32 = 0o700;

/// Largest key file read: 64 hex characters and a newline fit many times over; anything bigger is
/// not a key file.
const MAX_KEY_FILE_BYTES: u64 = 1024;

/// Longest encoded actor id used whole in a file name; longer ones are cut and get a hash suffix
/// (file names are limited to 255 bytes on most file systems).
const MAX_ENCODED_ID_BYTES: usize = 120;

/// Where persistent keys live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStore {
    dir: PathBuf,
}

impl KeyStore {
    /// A store in `dir` (tests and `--key-dir` use this).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The default directory: `<config dir>/ats-p2p/keys` (`$XDG_CONFIG_HOME` or `~/.config` on
    /// Linux), or `None` when the platform has none.
    pub fn default_dir() -> Option<PathBuf> {
        dirs::config_dir().map(|d| d.join("ats-p2p").join("keys"))
    }

    /// A store in [`default_dir`](Self::default_dir).
    pub fn open_default() -> Result<Self, IdentityError> {
        Self::default_dir()
            .map(Self::new)
            .ok_or(IdentityError::NoConfigDir)
    }

    /// The directory holding the key files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key file of `actor_id`. ASCII letters, digits, `-` and `_` are kept, as is `.` except
    /// in first place; every other byte becomes `%XX`, so distinct ids give distinct names. Ids
    /// whose encoding is long are cut and given a BLAKE2b hash of the whole id.
    pub fn key_path(&self, actor_id: &str) -> Result<PathBuf, IdentityError> {
        validate_actor_id(actor_id).map_err(IdentityError::ActorId)?;
        Ok(self.dir.join(format!(
            "{}.{KEY_FILE_EXTENSION}",
            encode_actor_id(actor_id)
        )))
    }

    /// Loads the key pair of `actor_id`, or `None` if it has none yet.
    pub fn load(&self, actor_id: &str) -> Result<Option<KeyPair>, IdentityError> {
        let path = self.key_path(actor_id)?;
        read_key_file(&path)
    }

    /// Loads the key pair of `actor_id`, creating and storing a new one on first use.
    pub fn load_or_create(&self, actor_id: &str) -> Result<KeyPair, IdentityError> {
        let path = self.key_path(actor_id)?;
        if let Some(kp) = read_key_file(&path)? {
            return Ok(kp);
        }
        create_private_dir(&self.dir).map_err(|source| IdentityError::CreateDir {
            path: self.dir.clone(),
            source,
        })?;
        let kp = KeyPair::generate();
        match write_new_key_file(&self.dir, &path, &kp) {
            Ok(()) => {
                tracing::info!(path = %path.display(), public_key = %kp.public_key(), "created a new node key");
                Ok(kp)
            }
            // Another process created it between our read and write: use theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                read_key_file(&path)?.ok_or(IdentityError::Read {
                    path,
                    source: io::Error::from(io::ErrorKind::NotFound),
                })
            }
            Err(source) => Err(IdentityError::Write { path, source }),
        }
    }
}

/// Where a node gets its key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The persistent key of the actor id, from this store.
    Persistent(KeyStore),
    /// A fresh key pair for this run only (`--ephemeral`).
    Ephemeral,
}

impl KeySource {
    /// The key pair for `actor_id`.
    pub fn key_pair(&self, actor_id: &str) -> Result<KeyPair, IdentityError> {
        match self {
            Self::Persistent(store) => store.load_or_create(actor_id),
            Self::Ephemeral => Ok(KeyPair::generate()),
        }
    }
}

/// Creates `dir` and its missing parents with mode 0700 (existing directories keep their mode).
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(KEY_DIR_MODE);
    }
    builder.create(dir)
}

fn encode_actor_id(actor_id: &str) -> String {
    let mut out = String::with_capacity(actor_id.len());
    for (i, b) in actor_id.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0);
        if keep {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() <= MAX_ENCODED_ID_BYTES {
        return out;
    }
    let digest = Blake2b::<U16>::digest(actor_id.as_bytes());
    // The encoding is ASCII, so any byte index is a character boundary.
    let head = out.get(..MAX_ENCODED_ID_BYTES / 2).unwrap_or("");
    format!("{head}~{}", hex::encode(digest))
}

fn read_key_file(path: &Path) -> Result<Option<KeyPair>, IdentityError> {
    let read_err = |source| IdentityError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let meta = file.metadata().map_err(read_err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::InsecurePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    if !meta.is_file() || meta.len() > MAX_KEY_FILE_BYTES {
        return Err(IdentityError::Malformed {
            path: path.to_path_buf(),
        });
    }
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_KEY_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => IdentityError::Malformed {
                path: path.to_path_buf(),
            },
            _ => read_err(e),
        })?;
    let mut seed = Zeroizing::new([0u8; SEED_LEN]);
    let hex_seed = text.trim();
    if hex_seed.len() != SEED_LEN * 2 || hex::decode_to_slice(hex_seed, &mut *seed).is_err() {
        return Err(IdentityError::Malformed {
            path: path.to_path_buf(),
        });
    }
    Ok(Some(KeyPair::from_seed(*seed)))
}

/// Writes the seed to a private temporary file, fsyncs it, and links it to `path` without ever
/// replacing an existing key (`AlreadyExists` if one appeared meanwhile).
fn write_new_key_file(dir: &Path, path: &Path, kp: &KeyPair) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    fsutil::set_mode(&mut options, KEY_FILE_MODE);
    let (mut file, temp) = fsutil::create_temp(dir, "ats-p2p-key", "tmp", &options)?;
    let result = (|| {
        let mut text = Zeroizing::new(hex::encode(Zeroizing::new(kp.seed()).as_slice()));
        text.push('\n');
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fsutil::publish_no_replace(&temp, path)?;
        fsutil::sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Loading or creating a node's persistent key failed ([`crate::identity`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The platform has no user configuration directory (and no root was given).
    #[error("no user configuration directory; pass an explicit key directory")]
    NoConfigDir,
    /// The actor id cannot name a key.
    #[error("invalid actor id for a key file")]
    ActorId(#[source] ActorIdError),
    /// The key directory could not be created.
    #[error("cannot create key directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The key file exists but could not be read.
    #[error("cannot read key file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The key file could not be written.
    #[error("cannot write key file {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The key file does not hold a 64-character hex seed.
    #[error(
        "key file {path} is malformed (expected 64 hex characters); move it away to make a new key"
    )]
    Malformed {
        /// The file.
        path: PathBuf,
    },
    /// The key file can be read or written by other users.
    #[error("key file {path} has mode {mode:o}, readable by others; run `chmod 600` on it")]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_loaded() {
        let root = tempfile::tempdir().unwrap();
        let store = KeyStore::new(root.path().join("cfg").join("keys"));
        assert!(store.load("agent-a").unwrap().is_none());
        let kp = store.load_or_create("agent-a").unwrap();
        let again = store.load_or_create("agent-a").unwrap();
        assert_eq!(kp.public_key(), again.public_key());
        assert_eq!(
            store.load("agent-a").unwrap().unwrap().public_key(),
            kp.public_key()
        );
        let other = store.load_or_create("agent-b").unwrap();
        assert_ne!(other.public_key(), kp.public_key());

        let path = store.key_path("agent-a").unwrap();
        assert_eq!(path, store.dir().join("agent-a.key"));
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{}\n", hex::encode(kp.seed())));

        // Only the two key files: no temporary file left behind.
        let mut names: Vec<_> = fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["agent-a.key", "agent-b.key"]);
    }

    #[cfg(unix)]
    #[test]
    fn private_modes_and_refusing_readable_keys() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let store = KeyStore::new(root.path().join("keys"));
        store.load_or_create("agent-a").unwrap();
        let path = store.key_path("agent-a").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(store.dir()), 0o700);

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = store.load_or_create("agent-a").unwrap_err();
        assert!(
            matches!(err, IdentityError::InsecurePermissions { mode: 0o644, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn malformed_files_are_reported_not_replaced() {
        let root = tempfile::tempdir().unwrap();
        let store = KeyStore::new(root.path());
        let path = store.key_path("agent-a").unwrap();
        for bad in ["", "abcd", &"zz".repeat(32), &"ab".repeat(33)] {
            let mut options = OpenOptions::new();
            options.write(true).create(true).truncate(true);
            fsutil::set_mode(&mut options, 0o600);
            options
                .open(&path)
                .unwrap()
                .write_all(bad.as_bytes())
                .unwrap();
            let err = store.load_or_create("agent-a").unwrap_err();
            assert!(
                matches!(err, IdentityError::Malformed { .. }),
                "{bad:?}: {err:?}"
            );
            assert_eq!(fs::read_to_string(&path).unwrap(), bad, "never overwritten");
        }
    }

    #[test]
    fn actor_ids_map_to_distinct_single_names() {
        let store = KeyStore::new("/k");
        let ids = [
            "agent-b",
            "agent_b",
            "agent/b",
            "agent%2Fb",
            "..",
            ".hidden",
            "a.b",
            "日本",
            "C:x",
            "con",
        ];
        let mut seen = std::collections::BTreeSet::new();
        for id in ids {
            let p = store.key_path(id).unwrap();
            assert_eq!(p.parent(), Some(Path::new("/k")), "{id:?} -> {p:?}");
            let name = p.file_name().unwrap().to_str().unwrap().to_owned();
            assert!(!name.starts_with('.'), "{name}");
            assert!(seen.insert(name), "collision for {id:?}");
        }
        assert_eq!(store.key_path("..").unwrap(), Path::new("/k/%2E..key"));

        let long_a = "é".repeat(100);
        let long_b = format!("{}x", "é".repeat(99));
        let pa = store.key_path(&long_a).unwrap();
        let pb = store.key_path(&long_b).unwrap();
        assert_ne!(pa, pb);
        assert!(pa.file_name().unwrap().len() < 255);
        assert!(matches!(
            store.key_path("bad id"),
            Err(IdentityError::ActorId(_))
        ));
        assert!(matches!(store.key_path(""), Err(IdentityError::ActorId(_))));
    }

    #[test]
    fn ephemeral_keys_are_fresh_and_not_stored() {
        let a = KeySource::Ephemeral.key_pair("agent-a").unwrap();
        let b = KeySource::Ephemeral.key_pair("agent-a").unwrap();
        assert_ne!(a.public_key(), b.public_key());

        let root = tempfile::tempdir().unwrap();
        let source = KeySource::Persistent(KeyStore::new(root.path()));
        let p1 = source.key_pair("agent-a").unwrap();
        let p2 = source.key_pair("agent-a").unwrap();
        assert_eq!(p1.public_key(), p2.public_key());
    }

    #[test]
    fn concurrent_first_use_agrees_on_one_key() {
        let root = tempfile::tempdir().unwrap();
        let store = KeyStore::new(root.path().join("keys"));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let s = store.clone();
                std::thread::spawn(move || s.load_or_create("agent-a").unwrap().public_key())
            })
            .collect();
        let keys: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(keys.windows(2).all(|w| w[0] == w[1]), "{keys:?}");
        assert_eq!(
            store.load("agent-a").unwrap().unwrap().public_key(),
            keys[0]
        );
    }
}
