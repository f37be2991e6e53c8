//! What a download brings: checked against the file it is for, written into the content
//! file and its range map as it arrives, and the map recorded in the state store now and
//! then rather than after every GET (a random reader makes thousands of them).
//!
//! The content is always written before the range map that says it is here: the map in
//! memory grows only once its bytes are in the content file, and the store is given a
//! copy of that map, so what the store records as here is here, also after a crash.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use super::fetch::Source;
use super::{lock, Core, FsError, FsResult, OpenFile};
use crate::remote::{RangeReply, RemoteError};
use crate::store;

/// Downloaded data goes into the content file in pieces of this size, the file's state
/// locked for one piece at a time.
const STORE_PIECE: u64 = 256 << 10;

/// Whether a file's range map grew since the store last recorded it.
#[derive(Default)]
pub(super) struct RangesSaved {
    /// When the store last recorded it.
    at: Option<Instant>,
    /// Downloads grew it since.
    behind: bool,
    /// A recording is scheduled for when the interval has passed.
    scheduled: bool,
}

/// A reply as far as it came: its headers, and how many bytes arrived (all of them once
/// `whole`).
pub(super) struct ReplySoFar<'a> {
    pub offset: u64,
    pub total_size: Option<u64>,
    pub etag: Option<&'a str>,
    pub len: u64,
    pub whole: bool,
    /// Its version was checked already (by its headers): only its length is left to check.
    pub version_checked: bool,
}

impl ReplySoFar<'_> {
    fn of(reply: &RangeReply) -> ReplySoFar<'_> {
        ReplySoFar {
            offset: reply.offset,
            total_size: reply.total_size,
            etag: reply.etag.as_deref(),
            len: reply.data.len() as u64,
            whole: true,
            version_checked: false,
        }
    }
}

impl Core {
    /// `store_fetched` for the reply to a GET of `[from, to)`, once `check_reply` let it.
    pub(super) fn store_fetched_checked(
        &self,
        of: &Arc<OpenFile>,
        ino: u64,
        src: &Source,
        from: u64,
        to: u64,
        reply: &RangeReply,
    ) -> FsResult<()> {
        self.check_reply(of, ino, src, from, to, &ReplySoFar::of(reply))?;
        self.store_fetched(of, ino, src, reply)
    }

    /// Checks the reply to a GET of `[from, to)` (asked one byte further at the file's
    /// end) against the size the node has: a total size that differs, more bytes than
    /// the file has, or (once whole) fewer than asked before its end, mean the server's
    /// file is not the one listed. Nothing of such a reply is kept, never a silently cut
    /// or padded file (see `size_changed`). A reply read as it arrives is checked by its
    /// headers before its first byte is kept, and again as its bytes come.
    pub(super) fn check_reply(
        &self,
        of: &OpenFile,
        ino: u64,
        src: &Source,
        from: u64,
        to: u64,
        reply: &ReplySoFar,
    ) -> FsResult<()> {
        let path = src.path.as_str();
        let got_end = reply.offset + reply.len;
        let short = |size: u64| {
            reply.whole && reply.len > 0 && got_end < to.min(size) && reply.offset <= from
        };
        if src.base {
            // A file changed here: its missing bytes are the base version's, of the
            // base's size; a newer version on the server is not mixed in (that is a
            // conflict, which its upload meets).
            let newer = match (src.etag.as_deref(), reply.etag) {
                (Some(ours), Some(theirs)) => !crate::remote::same_etag(Some(ours), Some(theirs)),
                _ => false,
            };
            let size = src.size;
            if newer || reply.total_size.is_some_and(|t| t != size) || got_end > size || short(size)
            {
                tracing::warn!(
                    "{path}: the version this file's changes here were made to is no longer \
                     on the server; its parts not here cannot be read (its upload will \
                     keep both versions)"
                );
                return Err(FsError::Remote {
                    path: path.to_string(),
                    source: RemoteError::BadReply(
                        "the file changed on the server since it was changed here".into(),
                    ),
                });
            }
            return Ok(());
        }
        let size = lock(&of.state).size;
        if lock(&of.state).write_dirty {
            // Written here meanwhile: the local size is ours, not the server's.
            return Ok(());
        }
        // Fetched from the old path of a rename that waits: if the rename was replayed
        // meanwhile, something else may stand there now. Only our version may be kept.
        if !reply.version_checked
            && src.here.is_some()
            && self.path(ino).ok().as_deref() != Some(path)
        {
            let ours = self.node(ino)?.etag;
            if let (Some(ours), Some(theirs)) = (ours.as_deref(), reply.etag) {
                if !crate::remote::same_etag(Some(ours), Some(theirs)) {
                    return Err(FsError::Remote {
                        path: path.to_string(),
                        source: RemoteError::NotFound,
                    });
                }
            }
        }
        let why = match reply.total_size {
            Some(total) if total != size => Some(format!("it has {total} bytes")),
            _ if got_end > size => Some(format!("it sends more than {size} bytes")),
            _ if short(size) => Some(format!("it ends at byte {got_end}")),
            _ => None,
        };
        match why {
            Some(why) => Err(self.size_changed(ino, path, size, why)),
            None => Ok(()),
        }
    }

    /// The server's file is not the size its listing said: it changed since (or the
    /// server cannot be trusted about it). Its folder is listed again at the next look,
    /// which gives the new version, and this read fails rather than return a file cut
    /// or padded to the old size.
    pub(super) fn size_changed(&self, ino: u64, path: &str, size: u64, why: String) -> FsError {
        tracing::warn!(
            "{path}: the server's file is not the {size} bytes listed ({why}); it changed: \
             its folder is listed again and this read fails"
        );
        if let Ok(node) = self.node(ino) {
            let _ = self
                .store
                .write(|tx| store::mark_listing_due(tx, node.parent));
        }
        FsError::Remote {
            path: path.to_string(),
            source: RemoteError::BadReply(format!(
                "the file changed on the server: listed with {size} bytes, but {why}"
            )),
        }
    }

    /// Writes downloaded data into the content file where it is still missing, and
    /// records it. Each piece is written under the state lock (a write or truncate that
    /// happened while the GET was on the wire must not be overwritten), but the lock is
    /// let go between pieces: a reader of bytes already here never waits for megabytes
    /// to be copied into the content file.
    pub(super) fn store_fetched(
        &self,
        of: &Arc<OpenFile>,
        ino: u64,
        src: &Source,
        reply: &RangeReply,
    ) -> FsResult<()> {
        let got = reply.data.len() as u64;
        let mut room_made = false;
        // Whether this reply's bytes made the file whole (that happens once, under the
        // state lock): then its hash is recorded.
        let mut completed = false;
        let mut piece = reply.offset;
        let reply_end = reply.offset + got;
        while piece < reply_end {
            let piece_end = (piece + STORE_PIECE).min(reply_end);
            let mut st = lock(&of.state);
            let end = piece_end.min(st.size);
            let mut result = Ok(());
            let mut added = false;
            for (a, b) in st.ranges.missing(piece, end) {
                let from = (a - reply.offset) as usize;
                let to = (b - reply.offset) as usize;
                result = of.file.write_all_at(&reply.data[from..to], a);
                if result.is_err() {
                    break;
                }
                st.ranges.insert(a, b);
                added = true;
            }
            if added && st.ranges.covers(0, st.size) && !st.write_dirty {
                completed = true;
            }
            match result {
                Ok(()) => piece = piece_end,
                // A full cache disk: evict clean content (not under the state lock) and
                // try once more.
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && !room_made => {
                    drop(st);
                    room_made = true;
                    if !self.make_room(got) {
                        return Err(e.into());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        // The base version's bytes of a file changed here may not be on the server
        // after a crash: what came of it is recorded at once.
        self.ranges_grew(of, ino, completed || src.base)?;
        self.cache_grew.notify_one();
        if completed {
            self.record_complete_download(ino);
        }
        Ok(())
    }

    /// Downloads grew the range map of `of`: the store records it `now` (a whole file:
    /// its hash goes by the store's view) or once it was last recorded longer than
    /// `ranges_saved_every` ago; else a recording is scheduled for when that has passed.
    /// A crash in between loses only the record of bytes that are fetched again.
    fn ranges_grew(&self, of: &Arc<OpenFile>, ino: u64, now: bool) -> FsResult<()> {
        let every = self.cfg.ranges_saved_every;
        let save = {
            let mut saved = lock(&of.downloads.saved);
            saved.behind = true;
            let due = saved.at.is_none_or(|at| at.elapsed() >= every);
            if !now && !due && !saved.scheduled {
                saved.scheduled = true;
                let at = saved.at.map_or_else(Instant::now, |at| at + every);
                let (core, file) = (self.me.clone(), Arc::downgrade(of));
                self.rt.spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    let (Some(core), Some(of)) = (core.upgrade(), file.upgrade()) else {
                        return;
                    };
                    // A statement in the store: not on an async worker.
                    tokio::task::spawn_blocking(move || {
                        lock(&of.downloads.saved).scheduled = false;
                        if let Err(e) = core.save_ranges(&of, ino) {
                            tracing::warn!(
                                "could not record the cached ranges of inode {ino}: {e}"
                            );
                        }
                    });
                });
            }
            now || due
        };
        if save {
            self.save_ranges(of, ino)?;
        }
        Ok(())
    }

    /// Records the range map of `of` in the store if downloads grew it since it was last
    /// recorded, and only while `of` is still the open file of `ino` (a file closed and
    /// evicted meanwhile has no content left to record).
    pub(super) fn save_ranges(&self, of: &Arc<OpenFile>, ino: u64) -> FsResult<()> {
        if !lock(&of.downloads.saved).behind {
            return Ok(());
        }
        self.store.write(|tx| {
            let current = lock(&self.open_files)
                .get(&ino)
                .is_some_and(|f| Arc::ptr_eq(f, of));
            {
                let mut saved = lock(&of.downloads.saved);
                if !current || !saved.behind {
                    return Ok(());
                }
                // Marked before the map is read: whatever grows it after is recorded
                // by the next save.
                saved.behind = false;
                saved.at = Some(Instant::now());
            }
            // The map as it is now, read under the store's writer: saves finishing in
            // another order cannot store an older map over a newer one.
            let ranges = lock(&of.state).ranges.clone();
            let result = store::set_ranges(tx, ino, &ranges);
            if result.is_err() {
                lock(&of.downloads.saved).behind = true;
            }
            result
        })?;
        Ok(())
    }
}
