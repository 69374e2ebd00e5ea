//! Remembered keys per actor id (trust on first use), like SSH's `known_hosts`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use ats_p2p_swarm::PublicKey;

use super::{ActorIdError, KnownKeysError};
use super::{KeyUpdate, PeerApproval, parse_key_hex, validate_actor_id};
use crate::fsutil;

/// Largest remembered-keys file that is read: about ten thousand entries; a bigger file is not
/// ours or is corrupt.
pub const MAX_KNOWN_KEYS_FILE_BYTES: u64 = 1024 * 1024;

/// What [`KnownKeys`] says about an actor id and a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// No key is remembered for this actor id.
    New,
    /// The remembered key is this one.
    Known,
    /// A different key is remembered.
    Changed {
        /// The key remembered before.
        remembered: PublicKey,
    },
}

/// Keys remembered per actor id (trust on first use), optionally backed by a file.
///
/// The file is text, one `<actor id> <64 hex key>` per line, `#` comments; it is replaced
/// atomically on [`save`](Self::save) (mode 0600). Several processes of one user (a `send` and
/// a `listen`) may share the file: `save` takes an exclusive lock on `<file>.lock`, re-reads the
/// file and replays only this store's own changes onto it, so no process loses another's keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownKeys {
    path: Option<PathBuf>,
    keys: BTreeMap<String, PublicKey>,
    /// Changes since the last load or save, replayed onto the file's current contents.
    pending: Vec<Change>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Set(String, PublicKey),
    Remove(String),
}

impl KnownKeys {
    /// An empty store that is never written to disk (for ephemeral nodes and tests).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Where a node keeps its remembered keys by default:
    /// `<config dir>/ats-p2p/known_keys`, or `None` when the platform has no config directory.
    pub fn default_path() -> Option<PathBuf> {
        dirs::config_dir().map(|d| d.join("ats-p2p").join("known_keys"))
    }

    /// Loads the store from `path`; a missing file is an empty store that [`save`](Self::save)
    /// will create. Blocks.
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, KnownKeysError> {
        let path = path.into();
        let read_err = |source| KnownKeysError::Read {
            path: path.clone(),
            source,
        };
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Self {
                    path: Some(path),
                    ..Self::default()
                });
            }
            Err(e) => return Err(read_err(e)),
        };
        let len = file.metadata().map_err(read_err)?.len();
        if len > MAX_KNOWN_KEYS_FILE_BYTES {
            return Err(KnownKeysError::TooLarge {
                path,
                len,
                max: MAX_KNOWN_KEYS_FILE_BYTES,
            });
        }
        let mut text = String::new();
        file.take(MAX_KNOWN_KEYS_FILE_BYTES)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        let keys = parse_known_keys(&text).map_err(|(line, reason)| KnownKeysError::Parse {
            path: path.clone(),
            line,
            reason,
        })?;
        Ok(Self {
            path: Some(path),
            keys,
            pending: Vec::new(),
        })
    }

    /// The backing file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The key remembered for `actor`.
    pub fn get(&self, actor: &str) -> Option<&PublicKey> {
        self.keys.get(actor)
    }

    /// Compares `key` with what is remembered for `actor`.
    pub fn check(&self, actor: &str, key: &PublicKey) -> KeyCheck {
        match self.keys.get(actor) {
            None => KeyCheck::New,
            Some(k) if k == key => KeyCheck::Known,
            Some(k) => KeyCheck::Changed { remembered: *k },
        }
    }

    /// Remembers `key` for `actor` (replacing an older one); returns the key it replaced.
    /// Call [`save`](Self::save) to persist.
    pub fn remember(
        &mut self,
        actor: &str,
        key: PublicKey,
    ) -> Result<Option<PublicKey>, ActorIdError> {
        validate_actor_id(actor)?;
        self.pending.push(Change::Set(actor.to_owned(), key));
        Ok(self.keys.insert(actor.to_owned(), key))
    }

    /// Applies the key update of an approved peer; returns true when something changed (and so
    /// the store should be saved).
    pub fn apply(&mut self, actor: &str, approval: &PeerApproval) -> Result<bool, ActorIdError> {
        match approval.key_update {
            KeyUpdate::Keep => Ok(false),
            KeyUpdate::Remember | KeyUpdate::Replace { .. } => {
                self.remember(actor, approval.key)?;
                Ok(true)
            }
        }
    }

    /// Forgets `actor`; returns the key that was remembered.
    pub fn forget(&mut self, actor: &str) -> Option<PublicKey> {
        self.pending.push(Change::Remove(actor.to_owned()));
        self.keys.remove(actor)
    }

    /// Number of remembered actor ids.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Remembered `(actor id, key)` pairs in actor-id order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &PublicKey)> {
        self.keys.iter().map(|(a, k)| (a.as_str(), k))
    }

    /// Writes this store's changes to its file: under an exclusive lock on `<file>.lock`, the
    /// file is re-read, the changes made here since the last load or save are replayed onto it,
    /// and the result replaces the file atomically (the directory is created with mode 0700 if
    /// needed). Afterwards this store also holds what other processes saved meanwhile. Does
    /// nothing for an in-memory store. Blocks while another process saves.
    pub fn save(&mut self) -> Result<(), KnownKeysError> {
        let Some(path) = self.path.clone() else {
            self.pending.clear();
            return Ok(());
        };
        let write_err = |source| KnownKeysError::Write {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::identity::create_private_dir(dir).map_err(write_err)?;
        }
        let lock = lock_file(&path).map_err(write_err)?;
        let mut merged = Self::load(path.clone())?;
        for change in &self.pending {
            match change {
                Change::Set(actor, key) => {
                    merged.keys.insert(actor.clone(), *key);
                }
                Change::Remove(actor) => {
                    merged.keys.remove(actor);
                }
            }
        }
        let mut text = String::from("# ats-p2p remembered keys: <actor id> <public key hex>\n");
        for (actor, key) in &merged.keys {
            text.push_str(actor);
            text.push(' ');
            text.push_str(&key.to_hex());
            text.push('\n');
        }
        fsutil::write_atomically(&path, text.as_bytes(), 0o600).map_err(write_err)?;
        drop(lock);
        self.keys = merged.keys;
        self.pending.clear();
        Ok(())
    }
}

/// Opens `<path>.lock` and takes an exclusive advisory lock on it; closing the file releases it.
fn lock_file(path: &Path) -> io::Result<fs::File> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let mut options = fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    fsutil::set_mode(&mut options, 0o600);
    let file = options.open(PathBuf::from(lock_path))?;
    fs4::FileExt::lock(&file)?;
    Ok(file)
}

/// Parses the remembered-keys text; errors carry a one-based line number.
fn parse_known_keys(text: &str) -> Result<BTreeMap<String, PublicKey>, (usize, &'static str)> {
    let mut keys = BTreeMap::new();
    for (idx, line) in text.lines().enumerate() {
        let lineno = idx.saturating_add(1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(actor), Some(key), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err((lineno, "expected `<actor id> <64 hex key>`"));
        };
        validate_actor_id(actor).map_err(|_| (lineno, "invalid actor id"))?;
        let key = parse_key_hex(key).ok_or((lineno, "key is not 64 hex characters"))?;
        if keys.insert(actor.to_owned(), key).is_some() {
            return Err((lineno, "actor id listed twice"));
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PublicKey {
        PublicKey::from_bytes([b; 32])
    }

    #[test]
    fn known_keys_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("known_keys");
        let mut store = KnownKeys::load(&path).unwrap();
        assert!(store.is_empty());
        assert_eq!(store.path(), Some(path.as_path()));
        store.remember("agent-b", key(1)).unwrap();
        store.remember("agent-a", key(2)).unwrap();
        assert!(store.remember("bad id", key(3)).is_err());
        store.save().unwrap();

        let loaded = KnownKeys::load(&path).unwrap();
        assert_eq!(loaded, store);
        assert_eq!(
            loaded.iter().map(|(a, _)| a).collect::<Vec<_>>(),
            ["agent-a", "agent-b"]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // The file and its lock file: the temporary file was renamed.
        let mut names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["known_keys", "known_keys.lock"]);

        let mut changed = loaded.clone();
        assert_eq!(changed.forget("agent-a"), Some(key(2)));
        changed.save().unwrap();
        assert_eq!(KnownKeys::load(&path).unwrap().len(), 1);

        // In-memory stores never touch the disk.
        KnownKeys::in_memory().save().unwrap();
    }

    #[test]
    fn processes_sharing_the_file_keep_each_others_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_keys");
        let mut seed = KnownKeys::load(&path).unwrap();
        seed.remember("old", key(9)).unwrap();
        seed.save().unwrap();

        let mut a = KnownKeys::load(&path).unwrap();
        let mut b = KnownKeys::load(&path).unwrap();
        a.remember("agent-a", key(1)).unwrap();
        b.remember("agent-b", key(2)).unwrap();
        b.forget("old");
        a.save().unwrap();
        b.save().unwrap();
        let on_disk = KnownKeys::load(&path).unwrap();
        assert_eq!(on_disk.get("agent-a"), Some(&key(1)));
        assert_eq!(on_disk.get("agent-b"), Some(&key(2)));
        assert_eq!(on_disk.get("old"), None);
        // The later saver also sees the other's key now.
        assert_eq!(b.get("agent-a"), Some(&key(1)));

        // Many concurrent savers, each with its own actor id: none is lost.
        let handles: Vec<_> = (0..8u8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut s = KnownKeys::load(&path).unwrap();
                    s.remember(&format!("t{i}"), key(i)).unwrap();
                    s.save().unwrap();
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let on_disk = KnownKeys::load(&path).unwrap();
        for i in 0..8u8 {
            assert_eq!(on_disk.get(&format!("t{i}")), Some(&key(i)));
        }
        assert_eq!(on_disk.len(), 10);
    }

    #[test]
    fn known_keys_file_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_keys");
        let k = key(4).to_hex();
        let cases = [
            (format!("agent-b {k} extra\n"), 1),
            ("# c\n\nagent-b\n".to_owned(), 3),
            ("agent-b nothex\n".to_owned(), 1),
            (format!("agent-b {k}\nagent-b {k}\n"), 2),
        ];
        for (text, line) in cases {
            fs::write(&path, &text).unwrap();
            match KnownKeys::load(&path) {
                Err(KnownKeysError::Parse { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        fs::write(&path, format!("  # comment\n\n agent-b   {k}  \n")).unwrap();
        assert_eq!(KnownKeys::load(&path).unwrap().len(), 1);

        let big = vec![b'#'; (MAX_KNOWN_KEYS_FILE_BYTES + 1) as usize];
        fs::write(&path, big).unwrap();
        assert!(matches!(
            KnownKeys::load(&path),
            Err(KnownKeysError::TooLarge { .. })
        ));
    }
}
