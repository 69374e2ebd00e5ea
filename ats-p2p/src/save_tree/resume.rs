//! Resuming a directory receive: keeping a broken one with its record, adopting it again
//! (every held file re-hashed from disk), starting over when the sender does not resume, and
//! the partial-directory record beside the temporary directory.

use std::fs;
use std::io;
use std::path::Path;

use ats_p2p_signal::manifest::Manifest;
use sha2::Digest as _;

use super::files::{rehash, remove_if_there, reopen_at};
use super::{IncomingTree, check_manifest};
use crate::fsutil::SaveDir;
use crate::partial::{self, PartialRecord, record_name};
use crate::save::SaveError;

impl IncomingTree {
    /// Takes over the kept temporary directory `temp_name` (with its record) of an earlier,
    /// broken receive of the same offer to continue it: every file it holds is **re-hashed from
    /// disk** and kept while it matches the manifest; the first file that is short keeps its
    /// prefix (cut to whole 64 KiB granules, re-hashed); a wrong or overlong file and anything
    /// after it start over. [`Self::position`] is then where the stream continues. Fails with
    /// `WouldBlock` inside [`SaveError::CreateTemp`] when a running receiver holds it.
    pub fn adopt(
        save_dir: &Path,
        temp_name: &str,
        offered_name: &str,
        manifest: &Manifest,
    ) -> Result<Self, SaveError> {
        check_manifest(manifest)?;
        let open_err = |source| SaveError::CreateTemp {
            dir: save_dir.to_path_buf(),
            source,
        };
        let save = SaveDir::open(save_dir).map_err(open_err)?;
        let handle = save.open_dir_locked(temp_name).map_err(open_err)?;
        let mut tree = Self::held(save, handle, temp_name.to_owned(), offered_name, manifest);
        tree.record = record_name(temp_name);
        tree.make_dirs()?;
        tree.take_stock()?;
        tracing::debug!(temp = %tree.root.display(), position = tree.position, "continuing a directory");
        Ok(tree)
    }

    /// Removes a kept directory `temp_name` and its record `record_name` in `save` unless a
    /// running receiver holds it (best effort: it expires anyway).
    pub(crate) fn discard_kept(save: &SaveDir, temp_name: &str, record_name: &str) {
        let Ok(_lock) = save.open_dir_locked(temp_name) else {
            return;
        };
        tracing::debug!(temp_name, "removing a kept directory whose content changed");
        if let Err(e) = fs::remove_dir_all(save.path().join(temp_name)) {
            tracing::debug!(error = %e, "could not remove a kept directory");
            return;
        }
        if let Err(e) = save.unlink(record_name) {
            tracing::debug!(error = %e, "could not remove a kept directory's record");
        }
    }

    /// The sender did not resume: forget what is held and start from the first byte.
    pub fn restart(&mut self) -> Result<(), SaveError> {
        self.current = None;
        for f in &self.manifest.files {
            let path = self.root.join(&f.path);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(SaveError::Remove { path, source }),
            }
        }
        self.written.fill([0; 32]);
        self.position = 0;
        self.next = 0;
        Ok(())
    }

    /// Keeps the temporary directory for a later resume (a broken receive with a record): the
    /// record says how many bytes are held. Without a record this removes it, as dropping does.
    pub fn keep(mut self) -> Result<(), SaveError> {
        self.current = None;
        let Some(record) = self.record.clone() else {
            return self.abort();
        };
        if let Some(mut r) = partial::read_record(&self.save, &record) {
            r.verified = self.position;
            if let Ok(json) = serde_json::to_vec(&r)
                && let Err(e) = self.save.replace_small(&record, &json)
            {
                tracing::debug!(error = %e, "could not update a partial-directory record");
            }
        }
        self.armed = false;
        tracing::debug!(temp = %self.root.display(), bytes = self.position, "keeping the directory for a resume");
        Ok(())
    }

    /// Re-hashes what the adopted directory holds and sets the position after it.
    fn take_stock(&mut self) -> Result<(), SaveError> {
        let mut position = 0u64;
        let files = self.manifest.files.clone();
        for (index, f) in files.iter().enumerate() {
            let path = self.root.join(&f.path);
            let held = fs::symlink_metadata(&path)
                .ok()
                .filter(fs::Metadata::is_file)
                .map(|m| m.len());
            let Some(len) = held else {
                self.next = index;
                break;
            };
            if len == f.size {
                let held_hash = rehash(&path, len).map(|h| <[u8; 32]>::from(h.finalize()));
                match held_hash {
                    Ok(h) if h == f.sha256 => {
                        if let Some(slot) = self.written.get_mut(index) {
                            *slot = f.sha256;
                        }
                        position = position.saturating_add(len);
                        self.next = index.saturating_add(1);
                        continue;
                    }
                    _ => {}
                }
            }
            // Short (keep its whole granules), or wrong: continue inside it or from its start.
            let prefix = if len < f.size {
                len - len % partial::PREFIX_GRANULE
            } else {
                0
            };
            let hasher = if prefix > 0 {
                rehash(&path, prefix).ok()
            } else {
                None
            };
            match hasher {
                Some(hasher) => {
                    let file = reopen_at(&path, prefix)
                        .map_err(|e| SaveError::from_write(path.clone(), e))?;
                    self.current = Some((index, prefix, file, hasher));
                    self.next = index.saturating_add(1);
                    position = position.saturating_add(prefix);
                }
                None => {
                    remove_if_there(&path)?;
                    self.next = index;
                }
            }
            break;
        }
        // Nothing after the resume point is kept (writes are in order, so this is only what a
        // torn or tampered directory holds).
        for f in files.iter().skip(self.next) {
            remove_if_there(&self.root.join(&f.path))?;
        }
        self.position = position;
        Ok(())
    }

    /// Writes the record beside the temporary directory.
    pub(super) fn write_record(&mut self, record: &PartialRecord) -> Result<(), SaveError> {
        let Some(name) = record_name(&self.temp_name) else {
            return Ok(());
        };
        let json = serde_json::to_vec(record)
            .map_err(|e| SaveError::from_write(self.root.clone(), io::Error::other(e)))?;
        self.save
            .replace_small(&name, &json)
            .map_err(|e| SaveError::from_write(self.save.path().join(&name), e))?;
        self.record = Some(name);
        Ok(())
    }

    /// Removes the record (best effort).
    pub(super) fn remove_record(&mut self) {
        if let Some(record) = self.record.take()
            && let Err(e) = self.save.unlink(&record)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::debug!(record, error = %e, "could not remove a partial-directory record");
        }
    }
}
