//! Writes to files that are not all here, where the server takes partial updates (see
//! `journal::replay::partial` for the upload): the bytes not written stay on the server
//! and are fetched only if read.
//!
//! Before the first such write, the server copies the file's base version (the one its
//! ETag names) to a hidden scratch file beside it (a COPY held to that version). That
//! copy is what makes the scheme safe: the unchanged bytes are read from it, never from
//! a newer version somebody else put at the file's name; the upload writes the ranges
//! into it and moves it over the file only while the file is still the base version;
//! and if it is not, the copy, which holds our whole version, becomes the conflict copy.
//! Without it (the server away at the first write) a write to such a file fails as it
//! always did: its other bytes cannot be fetched.

use std::sync::Arc;

use super::{lock, Core, FsError, FsResult, OpenFile};
use crate::journal;
use crate::remote::RemoteError;
use crate::store::{self, Kind};

impl Core {
    /// Whether a write to `ino`, not all here, can go ahead without fetching the rest:
    /// the file is a version of the server's (its bytes here are that version's), at
    /// least `UploadSizes::partial_from` large, the server takes partial updates, and
    /// the base copy exists or is made now.
    pub(super) fn partial_write_ready(&self, ino: u64, of: &OpenFile) -> FsResult<bool> {
        let node = self.node(ino)?;
        let eligible = node.kind == Kind::File
            && node.on_remote
            && node.written.is_some()
            && node.etag.is_some()
            && node.base_size.unwrap_or(node.size) >= self.cfg.uploads.partial_from
            && (node.ranges.is_empty() || node.content_etag == node.etag);
        if !eligible {
            return Ok(false);
        }
        if node.base_copy.is_some() {
            return Ok(true);
        }
        if !self.health.is_online() || !self.partial_updates_supported() {
            return Ok(false);
        }
        let _ = of;
        self.ensure_base_copy_blocking(ino)
    }

    /// Whether the server takes partial updates, asked once (a failed probe is asked
    /// again next time, and counts as no meanwhile).
    fn partial_updates_supported(&self) -> bool {
        let remote = self.remote.clone();
        let cell = &self.partial_updates;
        self.block_on(
            cell.get_or_try_init(
                || async move { remote.partial_support().await.map(|p| p.updates()) },
            ),
        )
        .copied()
        .unwrap_or_else(|e| {
            tracing::debug!("partial updates: the server did not answer the probe: {e}");
            false
        })
    }

    fn ensure_base_copy_blocking(&self, ino: u64) -> FsResult<bool> {
        let me = self.me.upgrade().ok_or(FsError::Invalid("shutting down"))?;
        match self.block_on(me.ensure_base_copy(ino)) {
            Ok(made) => Ok(made),
            Err(e) => {
                if e.is_transport() {
                    self.health.mark_offline(&e.to_string());
                }
                tracing::info!(
                    "{}: no copy of its server version could be made ({e}); its other \
                     bytes are fetched before it is written",
                    self.path(ino).unwrap_or_default()
                );
                Ok(false)
            }
        }
    }

    /// Makes the server-side copy of the base version of `ino` unless it has one: a
    /// COPY, beside the file, held to the version its ETag names. `Ok(false)` when the
    /// file on the server is no longer that version (or is gone). The copy is recorded
    /// before it is asked for, so one a crash cut off is found (and removed) later.
    /// One at a time per file (a write and an upload may both want one).
    pub(crate) async fn ensure_base_copy(&self, ino: u64) -> Result<bool, RemoteError> {
        let lock_of = lock(&self.copy_locks).entry(ino).or_default().clone();
        let _held = lock_of.lock().await;
        let store_err = |e: rusqlite::Error| RemoteError::Local(format!("state store: {e}"));
        let found = self
            .store
            .write(|tx| {
                let Some(node) = store::get_node(tx, ino)? else {
                    return Ok(None);
                };
                let Some(here) = store::path_of(tx, ino)? else {
                    return Ok(None);
                };
                let there = journal::remote_path_of(tx, &here)?;
                Ok::<_, rusqlite::Error>(Some((node, there)))
            })
            .map_err(store_err)?;
        let (node, there) = found.ok_or(RemoteError::NotFound)?;
        if node.base_copy.is_some() {
            return Ok(true);
        }
        let Some(etag) = node.etag.clone() else {
            return Ok(false);
        };
        let nonce = store::now_ns() as u64 % 1_000_000_000;
        let copy = journal::base_copy_path(&there, ino, nonce);
        self.store
            .write(|tx| store::set_base_copy(tx, ino, Some(&copy)))
            .map_err(store_err)?;
        let size = node.base_size.unwrap_or(node.size);
        match self
            .remote
            .copy_file(&there, &copy, Some(&etag), size)
            .await
        {
            Ok(()) => {
                tracing::debug!("{there}: base version copied to {copy}");
                // Removed (or given up) meanwhile: the copy goes too.
                let kept = self
                    .store
                    .write(|tx| {
                        let kept = store::get_node(tx, ino)?
                            .is_some_and(|n| n.base_copy.as_deref() == Some(copy.as_str()));
                        if !kept {
                            journal::record_scratch_removal(tx, ino, &copy)?;
                        }
                        Ok::<_, rusqlite::Error>(kept)
                    })
                    .map_err(store_err)?;
                if !kept {
                    self.journal_changed.notify_one();
                }
                Ok(kept)
            }
            Err(e) => {
                let _ = self.store.write(|tx| {
                    let _ = store::set_base_copy(tx, ino, None);
                    if e.is_transport() {
                        // The server may make it all the same: its removal is queued.
                        let _ = journal::record_scratch_removal(tx, ino, &copy);
                    }
                    Ok::<_, rusqlite::Error>(())
                });
                if e.is_transport() {
                    self.journal_changed.notify_one();
                }
                match e {
                    RemoteError::PreconditionFailed | RemoteError::NotFound => Ok(false),
                    e => Err(e),
                }
            }
        }
    }

    /// Makes every byte of file `ino` present in the content file, fetching what is
    /// missing from where `fetch_source` says (its base copy, for a file changed here):
    /// for an upload that must send the whole file. Runs on a blocking thread.
    pub(crate) fn fetch_all(&self, ino: u64) -> FsResult<()> {
        let of: Arc<OpenFile> = self.open_file(ino)?;
        of.fetch_started();
        let result = (|| {
            let size = lock(&of.state).size;
            self.fetch_range(&of, ino, 0, size, false)?;
            if !lock(&of.state).ranges.covers(0, size) {
                return Err(FsError::Offline {
                    path: self.path(ino)?,
                });
            }
            Ok(())
        })();
        of.fetch_ended();
        self.close_open_file(ino);
        result
    }
}
