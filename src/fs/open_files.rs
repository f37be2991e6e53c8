//! Open files: the state every handle of one file shares (`OpenFile`), the handle table,
//! open and release; the last release commits what was written (see `io.rs`). Locks are
//! taken in the order listed in `fs/mod.rs`.

use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::{fetch, lock, Core, FsError, FsResult};
use crate::store::{self, nodes::has_unsent_changes, Kind, RangeSet, ROOT_INO};

/// Per-file state shared by all open handles of one inode.
pub(super) struct OpenFile {
    pub(super) file: File,
    pub(super) downloads: fetch::Downloads,
    pub(super) state: Mutex<OpenState>,
}

pub(super) struct OpenState {
    pub(super) opens: u32,
    /// Of `opens`, those held by fetches running (downloads, whole-file fetches), not
    /// by a handle of a program: their close commits like any other, but nothing says
    /// when it comes, so a change made meanwhile does not wait for it.
    pub(super) downloading: u32,
    pub(super) size: u64,
    pub(super) ranges: RangeSet,
    pub(super) mtime_ns: i64,
    /// Written since the last commit to the journal.
    pub(super) write_dirty: bool,
    /// The byte ranges written since the last commit (what `Node::written` gains then).
    pub(super) written: RangeSet,
    /// Counts writes, so a commit knows whether a write slipped in while it ran.
    pub(super) write_seq: u64,
    /// Access time recorded while open (None: not read or set since the open).
    pub(super) atime_ns: Option<i64>,
    /// ctime as the store has it, for the relatime rule.
    pub(super) ctime_ns: i64,
    /// Parts of this new file sent while it is written (see `early_parts`), until the
    /// writes are committed.
    pub(super) early: Option<Arc<super::early_parts::EarlyParts>>,
    /// Decided that this open file sends nothing early.
    pub(super) early_declined: bool,
    /// Asked whether the server takes parts, for this open file.
    pub(super) early_probed: bool,
    /// The size from which sending early is considered again (an entry of it waited).
    pub(super) early_next_try: u64,
}

pub(super) struct Handle {
    pub(super) ino: u64,
    pub(super) writable: bool,
}

fn new_open_file(
    node: &store::Node,
    file: File,
    ranges: RangeSet,
    write_dirty: bool,
) -> Arc<OpenFile> {
    Arc::new(OpenFile {
        file,
        downloads: fetch::Downloads::default(),
        state: Mutex::new(OpenState {
            opens: 1,
            downloading: 0,
            size: node.size,
            ranges,
            mtime_ns: node.mtime_ns,
            write_dirty,
            written: RangeSet::default(),
            write_seq: 0,
            atime_ns: node.atime_ns,
            ctime_ns: node.ctime_ns,
            early: None,
            early_declined: false,
            early_probed: false,
            early_next_try: 0,
        }),
    })
}

impl OpenFile {
    /// A fetch (a download, or a whole-file fetch for a pin or an upload) takes one of
    /// the opens it holds.
    pub(super) fn fetch_started(&self) {
        lock(&self.state).downloading += 1;
    }

    /// That fetch ended; its open is given back by `close_open_file` next.
    pub(super) fn fetch_ended(&self) {
        let mut st = lock(&self.state);
        st.downloading = st.downloading.saturating_sub(1);
    }
}

impl Core {
    /// Whether file `ino` has writes not yet committed to the journal.
    pub fn is_write_dirty(&self, ino: u64) -> bool {
        let of = lock(&self.open_files).get(&ino).cloned();
        of.map(|of| lock(&of.state).write_dirty).unwrap_or(false)
    }

    pub fn is_open(&self, ino: u64) -> bool {
        lock(&self.open_files).contains_key(&ino)
    }

    /// Per-inode open state, created on first open; `opens` counts the references.
    pub(super) fn open_file(&self, ino: u64) -> FsResult<Arc<OpenFile>> {
        if let Some(of) = lock(&self.open_files).get(&ino) {
            lock(&of.state).opens += 1;
            return Ok(of.clone());
        }
        // The store stays locked until the file is in the map, so a listing merge (which
        // decides under the store lock whether a file is open) cannot slip in between.
        self.store.write(|tx| {
            let node = store::get_node(tx, ino)?.ok_or(FsError::NotFound)?;
            let mut map = lock(&self.open_files);
            if let Some(of) = map.get(&ino) {
                // Opened by another thread meanwhile.
                lock(&of.state).opens += 1;
                return Ok(of.clone());
            }
            if node.kind != Kind::File {
                return Err(FsError::IsDir);
            }
            let file = self.content.open(ino)?;
            let mut ranges = node.ranges.clone();
            // Never trust a range map beyond what the content file holds (a crash may
            // have lost the tail of a write the map already counted).
            let on_disk = file.metadata()?.len();
            if on_disk < node.size {
                ranges.truncate(on_disk);
            }
            let of = new_open_file(&node, file, ranges, false);
            map.insert(ino, of.clone());
            Ok(of)
        })
    }

    /// The open state of a file `create` just made, on its content file `file`.
    pub(super) fn open_new_file(&self, node: &store::Node, file: File, write_dirty: bool) {
        let of = new_open_file(node, file, node.ranges.clone(), write_dirty);
        lock(&self.open_files).insert(node.ino, of);
    }

    /// Drops one reference; the last one commits pending writes and forgets the state.
    pub(super) fn close_open_file(&self, ino: u64) {
        let map = lock(&self.open_files);
        let last = match map.get(&ino) {
            Some(of) => {
                let mut st = lock(&of.state);
                st.opens = st.opens.saturating_sub(1);
                st.opens == 0
            }
            None => false,
        };
        if last {
            let of = map.get(&ino).cloned().unwrap();
            drop(map);
            // Commit while the state is still shared, so an open racing with this close
            // finds it (with the current size) instead of the store's older row.
            if let Err(e) = self.commit_writes(&of, ino, false) {
                tracing::error!("could not commit writes of inode {ino}: {e}");
            }
            // What downloads brought since the range map was last recorded (no download
            // runs now: each holds the file open).
            if let Err(e) = self.save_ranges(&of, ino) {
                tracing::warn!("could not record the cached ranges of inode {ino}: {e}");
            }
            // Not a `write`: no statement runs, the writer is only held (as `open_file`
            // holds it) so a listing merge cannot decide meanwhile whether it is open.
            // Whether it is an orphan (unlinked while open) is read in the same hold: one
            // turn on the writer for every close.
            let forgotten = self.store.with_writer(|conn| {
                let mut map = lock(&self.open_files);
                let still_unused = map.get(&ino).is_some_and(|of| lock(&of.state).opens == 0);
                if !still_unused {
                    return Ok::<_, rusqlite::Error>(None);
                }
                map.remove(&ino);
                drop(map);
                let node = store::get_node(conn, ino)?;
                Ok(Some(
                    node.is_some_and(|n| n.parent == 0 && n.ino != ROOT_INO),
                ))
            });
            let Ok(Some(orphan)) = forgotten else {
                return;
            };
            // An orphan disappears with its last handle, and a base copy a partial
            // update made for it after the unlink goes too (named only on the node).
            if orphan {
                let _ = self.store.write(|tx| {
                    if let Some(n) = store::get_node(tx, ino)? {
                        super::namespace::forget_base_copy(tx, &n)?;
                    }
                    store::delete_node(tx, ino)
                });
                self.journal_changed.notify_one();
                self.content.remove(ino);
            }
        }
    }

    pub(super) fn open_handle(&self, ino: u64, writable: bool) -> FsResult<u64> {
        let _of = self.open_file(ino)?;
        Ok(self.add_handle(ino, writable))
    }

    /// A new handle on file `ino`, whose open state holds a reference for it.
    pub(super) fn add_handle(&self, ino: u64, writable: bool) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Handle { ino, writable });
        fh
    }

    /// Opens a file. Returns the handle and whether the kernel may keep its page cache.
    pub fn open(&self, ino: u64, writable: bool) -> FsResult<(u64, bool)> {
        if writable {
            self.ensure_writable()?;
        }
        if !self.is_open(ino) {
            self.revalidate(ino)?;
            self.check_cached_content(ino)?;
        }
        let fh = self.open_handle(ino, writable)?;
        self.store
            .write(|tx| store::touch_access(tx, ino, self.cfg.clock.now_s()))?;
        Ok((fh, self.kernel_cache_valid(ino)))
    }

    pub(super) fn handle(&self, fh: u64) -> FsResult<(u64, bool, Arc<OpenFile>)> {
        let (ino, writable) = {
            let h = lock(&self.handles);
            let h = h.get(&fh).ok_or(FsError::BadHandle)?;
            (h.ino, h.writable)
        };
        let of = lock(&self.open_files)
            .get(&ino)
            .cloned()
            .ok_or(FsError::BadHandle)?;
        Ok((ino, writable, of))
    }

    pub fn release(&self, fh: u64) -> FsResult<()> {
        let h = lock(&self.handles).remove(&fh).ok_or(FsError::BadHandle)?;
        // A writable handle's writes are committed as it goes, as a close commits them:
        // its reference may not be the file's last (a download still running holds the
        // file open), and the commit at the last reference would come only after that
        // download ended.
        if h.writable {
            // Usually committed already by the flush before it: then the store is not
            // waited for.
            let of = lock(&self.open_files)
                .get(&h.ino)
                .filter(|of| lock(&of.state).write_dirty)
                .cloned();
            if let Some(of) = of {
                if let Err(e) = self.commit_writes(&of, h.ino, false) {
                    tracing::error!("could not commit writes of inode {}: {e}", h.ino);
                }
            }
        }
        self.close_open_file(h.ino);
        Ok(())
    }

    /// Commits every file still open with unsent writes (at unmount).
    pub fn commit_all(&self) {
        let open: Vec<(u64, Arc<OpenFile>)> = lock(&self.open_files)
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (ino, of) in open {
            if let Err(e) = self.commit_writes(&of, ino, true) {
                tracing::error!("could not commit writes of inode {ino}: {e}");
            }
        }
    }

    /// For FUSE passthrough: the content file of a read-only handle `fh`, opened
    /// read-only, when the kernel may read it directly: the file is clean, every byte is
    /// here and verified, and nobody has it open for writing.
    pub fn passthrough_file(&self, fh: u64) -> Option<std::fs::File> {
        let (ino, writable, of) = self.handle(fh).ok()?;
        if writable
            || lock(&self.handles)
                .values()
                .any(|h| h.ino == ino && h.writable)
        {
            return None;
        }
        {
            let st = lock(&of.state);
            if st.write_dirty || !st.ranges.covers(0, st.size) {
                return None;
            }
        }
        if self.store.write(|tx| has_unsent_changes(tx, ino)).ok()? {
            return None;
        }
        if !lock(&self.verified).contains(&ino) {
            return None;
        }
        self.content.open_read(ino).ok().flatten()
    }
}
