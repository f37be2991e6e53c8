//! Dropping a journal entry an administrator gave up on (`ctl journal drop`): the content
//! of a dropped upload is saved under `<cache dir>/recovered/` first, and the file goes
//! back to the server's version (or away, if the server never had it).

use super::{Core, FsError, FsResult};
use crate::store::{self, Kind};

impl Core {
    /// Makes failed journal entries (entry `id`, or all with None) wait to be tried again
    /// from the start, and wakes the replayer; returns how many. `NotFound` if there is
    /// no entry `id`.
    pub fn retry_journal(&self, id: Option<i64>) -> FsResult<usize> {
        let n = self.store.write(|tx| crate::journal::retry(tx, id))?;
        if let (0, Some(_)) = (n, id) {
            return Err(FsError::NotFound);
        }
        self.journal_changed.notify_one();
        Ok(n)
    }

    /// Drops journal entry `id` (an administrator gave up on it). The content of a dropped
    /// upload is copied to `<cache dir>/recovered/` first, and the file goes back to the
    /// remote's version (or away, if the remote never had it). Returns where the content
    /// was saved.
    pub fn drop_journal_entry(&self, id: i64) -> FsResult<Option<std::path::PathBuf>> {
        // None: dropped already, nothing to save.
        let entry = self.store.write(|tx| {
            let entry = crate::journal::get(tx, id)?.ok_or(FsError::NotFound)?;
            if crate::journal::is_running(tx, id)? {
                return Err(FsError::Invalid(
                    "the entry is being replayed right now; try again",
                ));
            }
            match entry.op {
                crate::journal::Op::Put => Ok(Some(entry)),
                // Dropping a metadata change leaves the server's properties as they are.
                crate::journal::Op::Delete | crate::journal::Op::Meta => {
                    crate::journal::complete(tx, id)?;
                    Ok(None)
                }
                // Without them the tree here and on the server would part for good.
                crate::journal::Op::Mkcol | crate::journal::Op::Move => Err(FsError::Invalid(
                    "a directory creation or a rename cannot be dropped (what follows \
                     depends on it); retry it, or undo it in the mount",
                )),
            }
        })?;
        let Some(entry) = entry else {
            return Ok(None);
        };
        let ino = entry.ino;
        if self.is_open(ino) {
            return Err(FsError::Invalid("the file is open; close it first"));
        }
        // A file changed here without all of it: the rest (its base version's bytes) is
        // fetched first, so what is saved is the whole of the version given up.
        if let Ok(n) = self.node(ino) {
            if n.kind == Kind::File && !n.fully_cached() && n.dirty {
                self.fetch_all(ino).map_err(|e| {
                    tracing::warn!("{}: cannot fetch the rest of it to save it: {e}", entry.path);
                    FsError::Invalid(
                        "the parts of this file that are not here cannot be fetched now                          (is the server reachable?); try again",
                    )
                })?;
            }
        }
        // The copy is made before the store is locked (it may be large); the entry is
        // checked again after.
        let node = self.node(ino).ok();
        let saved = match &node {
            Some(n) => {
                let dir = self.cache_dir.join("recovered");
                std::os::unix::fs::DirBuilderExt::mode(
                    std::fs::DirBuilder::new().recursive(true),
                    0o700,
                )
                .create(&dir)?;
                let base = entry.path.rsplit('/').next().unwrap_or("file");
                let dest = dir.join(format!("{id}-{base}"));
                let mut out = std::os::unix::fs::OpenOptionsExt::mode(
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true),
                    0o600,
                )
                .open(&dest)?;
                if let Some(mut src) = self.content.open_read(ino)? {
                    std::io::copy(&mut src, &mut out)?;
                }
                out.set_len(n.size)?;
                Some(dest)
            }
            None => None,
        };
        let remove_content = self.store.write(|tx| {
            if crate::journal::get(tx, id)?.is_none()
                || crate::journal::is_running(tx, id)?
                || self.is_open(ino)
            {
                return Err(FsError::Invalid(
                    "the entry or its file changed meanwhile; look again",
                ));
            }
            let node = store::get_node(tx, ino)?;
            crate::journal::complete(tx, id)?;
            let more_puts = store::journal::any_put_of(tx, ino)?;
            let mut remove_content = false;
            if let Some(n) = &node {
                if let (false, Some(copy)) = (more_puts, &n.base_copy) {
                    crate::journal::record_scratch_removal(tx, ino, copy)?;
                    store::set_base_copy(tx, ino, None)?;
                }
                if !more_puts && n.on_remote {
                    // Back to the remote's version: the next listing or open fetches it.
                    store::versions::forget_local_changes(tx, ino)?;
                    store::mark_listing_due(tx, n.parent)?;
                    remove_content = true;
                } else if !more_puts {
                    // The remote never had it: without its upload it is gone.
                    crate::journal::delete_all_of(tx, ino)?;
                    store::delete_node(tx, ino)?;
                    remove_content = true;
                }
            }
            Ok(remove_content)
        })?;
        if remove_content {
            self.content.remove(ino);
            self.content_dropped(ino);
        }
        Ok(saved)
    }
}
