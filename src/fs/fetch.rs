//! Downloads of file content: ranged GETs by chunk, several at a time, with a read-ahead
//! window that grows while a file is read sequentially. A chunk being fetched is
//! registered, so a second reader of it waits for that fetch instead of starting another.
//! What arrives is written into the content file and its range map at once, so an
//! interrupted read resumes from what is already here.
//!
//! Just over 600 lines: the chunk registry, the read-ahead window and the writing of
//! what arrives share one file's state and its lock, and read best side by side.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};

use super::{lock, Core, FsError, FsResult, OpenFile};
use crate::remote::{RangeReply, RemoteError};
use crate::store;

/// Unit of download and of read-ahead. A reader waits for the whole chunk it needs to
/// arrive: small enough that it is not kept waiting long, large enough that a GET's
/// cost stays small beside its bytes.
pub const CHUNK: u64 = 2 << 20;
/// How far a streaming reader's reads may land from where the last one ended (the kernel
/// sends them from several threads, a little out of order) and still count as going on.
const REORDER: u64 = 4 << 20;
/// A sequential reader fetches at least this much around what it asked for.
const DEMAND_ROUND: u64 = 1 << 20;
/// A reader jumping around fetches only this much: a 4 KiB read of a large file must not
/// cost a megabyte on the wire.
const RANDOM_ROUND: u64 = 64 << 10;
/// The read-ahead window grows up to this while reading stays sequential.
const MAX_WINDOW: u64 = 64 << 20;
/// Downloads of one file running at once: up to 16 MiB on the wire ahead of a reader.
const MAX_PARALLEL: usize = 8;
/// Largest single GET of a fetch done in the caller's thread.
const MAX_FETCH: u64 = 8 << 20;
/// Downloaded data goes into the content file in pieces of this size, the file's state
/// locked for one piece at a time.
const STORE_PIECE: u64 = 256 << 10;

/// A chunk download in progress; waiters block until `done`.
#[derive(Default)]
pub(super) struct Inflight {
    done: Mutex<bool>,
    cv: Condvar,
}

impl Inflight {
    fn wait(&self) {
        let mut done = lock(&self.done);
        while !*done {
            done = self.cv.wait(done).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn finish(&self) {
        *lock(&self.done) = true;
        self.cv.notify_all();
    }
}

/// Per-file download state.
#[derive(Default)]
pub(super) struct Downloads {
    /// Chunk index → its download in progress.
    inflight: Mutex<HashMap<u64, Arc<Inflight>>>,
    readahead: Mutex<ReadAhead>,
}

#[derive(Default)]
struct ReadAhead {
    /// Where the last read ended.
    next: u64,
    /// How far ahead of the reader the content should be present.
    window: u64,
    /// Where the reader was when the window last grew.
    grown_at: u64,
    /// Reads in a row that went on where the one before ended.
    streak: u32,
}

/// Where the missing bytes of a file are read from, and what a reply must match.
#[derive(Clone, Debug)]
pub(super) struct Source {
    /// The remote path read.
    path: String,
    /// For a file not changed here: its path here, where it is read again once a waiting
    /// rename was replayed (the content moved there).
    here: Option<String>,
    /// The size of the file read.
    size: u64,
    /// A file changed here is read from its base version only (the server-side copy of
    /// it, or the file itself while it is still that version: `etag`), never from a
    /// newer one; its size is the base's.
    base: bool,
    etag: Option<String>,
}

struct FinishDownload {
    core: Arc<Core>,
    of: Arc<OpenFile>,
    ino: u64,
    chunk: u64,
    done: Arc<Inflight>,
}

impl Drop for FinishDownload {
    fn drop(&mut self) {
        lock(&self.of.downloads.inflight).remove(&self.chunk);
        // The open count first: once a waiter is released, the file is open only as
        // long as that waiter keeps it.
        self.core.close_open_file(self.ino);
        self.done.finish();
    }
}

/// How much to ask for to get `[from, to)` of a file of `size` bytes: one byte more at
/// the end of the file, so a server whose file is longer than listed shows it.
fn ask_len(from: u64, to: u64, size: u64) -> u64 {
    if to >= size {
        to - from + 1
    } else {
        to - from
    }
}

fn round_down(v: u64, to: u64) -> u64 {
    v / to * to
}

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

impl Core {
    /// Makes `[start, end)` of the file present, downloading what is missing, several
    /// chunks at a time. `reading` marks a read by a program: it rounds the fetch up,
    /// drives the read-ahead and counts a cache hit or miss.
    /// Where the bytes of `ino` that are not here come from now (see `Source`).
    pub(super) fn fetch_source(&self, ino: u64, of: &OpenFile) -> FsResult<Source> {
        let node = self.node(ino)?;
        let (there, here) = self.remote_path(ino)?;
        let (size, write_dirty) = {
            let st = lock(&of.state);
            (st.size, st.write_dirty)
        };
        let base_size = node.base_size.unwrap_or(node.size);
        Ok(match &node.base_copy {
            Some(copy) => Source {
                path: copy.clone(),
                here: None,
                size: base_size,
                base: true,
                etag: None,
            },
            None if (node.dirty || write_dirty) && node.written.is_some() => Source {
                path: there,
                here: None,
                size: base_size,
                base: true,
                etag: node.etag.clone(),
            },
            None => Source {
                path: there,
                here: Some(here),
                size,
                base: false,
                etag: None,
            },
        })
    }

    pub(super) fn fetch_range(
        &self,
        of: &Arc<OpenFile>,
        ino: u64,
        start: u64,
        end: u64,
        reading: bool,
    ) -> FsResult<()> {
        let (size, end, covered) = {
            let st = lock(&of.state);
            let end = end.min(st.size);
            (st.size, end, start >= end || st.ranges.covers(start, end))
        };
        let (ahead, round) = if reading {
            let m = &crate::metrics::METRICS;
            crate::metrics::add(
                if covered {
                    &m.cache_hits
                } else {
                    &m.cache_misses
                },
                1,
            );
            self.advance_readahead(of, start, end, size)
        } else {
            (end, DEMAND_ROUND)
        };
        let ahead_missing = ahead > end && !lock(&of.state).ranges.covers(end, ahead);
        if covered && !ahead_missing {
            return Ok(());
        }
        if covered && lock(&of.downloads.inflight).len() >= MAX_PARALLEL {
            // Read-ahead is as busy as it may be: nothing to start, so no need to look
            // up where the file is (a query per read of a streaming reader).
            return Ok(());
        }
        // Under a rename that still waits, the server has the content at the old path.
        let src = self.fetch_source(ino, of)?;
        let path = src.path.clone();
        if !self.health.is_online() {
            if covered {
                return Ok(());
            }
            tracing::warn!("{path}: read of uncached data while the remote is unreachable");
            return Err(FsError::Offline { path });
        }
        // What was asked for, in chunks, waiting for each; then the read-ahead, not waited for.
        let mut waiting = std::collections::VecDeque::new();
        // What is fetched here, in this thread, if the chunk downloads leave it missing.
        let (mut now_from, mut now_to) = (start, end);
        if !covered {
            let (from, to) = if reading {
                (round_down(start, round), round_up(end, round).min(size))
            } else {
                (start, end)
            };
            // A small read away from where reading went on: one GET of the few KiB around
            // it, made here. Handing it to a task and waiting for that costs two thread
            // switches per read, more than the GET itself on a near server.
            let direct = reading && round == RANDOM_ROUND && !ahead_missing && {
                let inflight = lock(&of.downloads.inflight);
                !inflight.contains_key(&(from / CHUNK))
                    && !inflight.contains_key(&((to - 1) / CHUNK))
            };
            if direct {
                (now_from, now_to) = (from, to);
            } else {
                let mut chunk = from / CHUNK;
                while chunk * CHUNK < to {
                    let lo = (chunk * CHUNK).max(from);
                    let hi = ((chunk + 1) * CHUNK).min(to);
                    if let Some(w) = self.start_chunk(of, ino, &src, chunk, lo, hi) {
                        waiting.push_back(w);
                    }
                    while waiting.len() >= MAX_PARALLEL {
                        waiting.pop_front().unwrap().wait();
                    }
                    chunk += 1;
                }
            }
        }
        if ahead_missing {
            let mut chunk = end / CHUNK;
            while chunk * CHUNK < ahead && lock(&of.downloads.inflight).len() < MAX_PARALLEL {
                let lo = (chunk * CHUNK).max(end);
                let hi = ((chunk + 1) * CHUNK).min(size);
                self.start_chunk(of, ino, &src, chunk, lo, hi);
                chunk += 1;
            }
        }
        for w in waiting {
            w.wait();
        }
        if covered {
            return Ok(());
        }
        // A small read fetched here, or a chunk download failed (or raced with a
        // truncate): fetch what is still missing here, where the error reaches the caller.
        let (start, end) = (now_from, now_to);
        match self.fetch_missing_now(of, ino, &src, start, end) {
            // The rename was replayed meanwhile: the content is at the new path now.
            Err(FsError::Remote {
                source: RemoteError::NotFound,
                ..
            }) if src.here.as_ref().is_some_and(|h| *h != src.path) => {
                let here = Source {
                    path: src.here.clone().unwrap_or_default(),
                    ..src
                };
                self.fetch_missing_now(of, ino, &here, start, end)
            }
            // An upload just moved the base copy over the file (or one was made): the
            // bytes are where the source says now.
            Err(FsError::Remote {
                source: RemoteError::NotFound,
                ..
            }) if src.base => {
                let again = self.fetch_source(ino, of)?;
                if again.path == src.path {
                    return Err(FsError::Remote {
                        path: src.path,
                        source: RemoteError::NotFound,
                    });
                }
                self.fetch_missing_now(of, ino, &again, start, end)
            }
            other => other,
        }
    }

    /// Updates the read-ahead of `of` for a read of `[start, end)`; returns how far
    /// ahead the content should be present, and the granule to round a missing read to.
    fn advance_readahead(&self, of: &OpenFile, start: u64, end: u64, size: u64) -> (u64, u64) {
        let mut ra = lock(&of.downloads.readahead);
        let streaming = ra.streak >= 2;
        // How far a read may land from where the last one ended and still continue it:
        // once streaming, the kernel reorders its reads a little; before that, only
        // what follows on almost at once does.
        let (ahead_slack, behind_slack) = if streaming {
            (REORDER, 2 * REORDER)
        } else {
            (RANDOM_ROUND, 0)
        };
        let forward =
            start <= ra.next + ahead_slack && end > ra.next && start + behind_slack >= ra.next;
        if forward {
            ra.streak = ra.streak.saturating_add(1);
            if ra.streak < 2 {
                ra.window = 0;
            } else if ra.window == 0 {
                ra.window = CHUNK;
                ra.grown_at = end;
            } else if end >= ra.grown_at + ra.window / 2 {
                // The reader went through half of the window since it last grew: it
                // doubles, so the window grows with what is read, not with how many
                // reads it took (a reader of a few small reads starts little).
                ra.window = (ra.window * 2).min(MAX_WINDOW);
                ra.grown_at = end;
            }
            ra.next = end;
        } else if !(streaming && start < ra.next && start + ra.window + 2 * REORDER >= ra.next) {
            // Neither forward nor, while streaming, just behind the front (readers
            // re-read): random access, no read-ahead.
            ra.streak = 0;
            ra.window = 0;
            ra.next = end;
        }
        // The start of a file is read whole-heartedly; a jump elsewhere fetches little
        // until reading goes on from there.
        let round = if ra.streak >= 2 || start == 0 {
            DEMAND_ROUND
        } else {
            RANDOM_ROUND
        };
        ((end + ra.window).min(size), round)
    }

    /// Starts a download of the missing part of `[lo, hi)` (inside chunk `chunk`) unless
    /// one of that chunk is running; returns what to wait for, or None if nothing is
    /// missing there.
    fn start_chunk(
        &self,
        of: &Arc<OpenFile>,
        ino: u64,
        src: &Source,
        chunk: u64,
        lo: u64,
        hi: u64,
    ) -> Option<Arc<Inflight>> {
        let mut inflight = lock(&of.downloads.inflight);
        if let Some(w) = inflight.get(&chunk) {
            return Some(w.clone());
        }
        let (from, to) = {
            let st = lock(&of.state);
            let missing = st.ranges.missing(lo, hi.min(st.size));
            (missing.first()?.0, missing.last()?.1)
        };
        let size = src.size;
        let me = self.me.upgrade()?;
        let w = Arc::new(Inflight::default());
        inflight.insert(chunk, w.clone());
        drop(inflight);
        // The download holds the file open: its state stays the one every opener shares
        // until the data is recorded, and a new open finds this download running.
        lock(&of.state).opens += 1;
        let of = of.clone();
        let src = src.clone();
        let path = src.path.clone();
        // However the task ends (even dropped with the runtime, polled or not), waiters
        // are released and the file's open count is given back.
        let finish = FinishDownload {
            core: me.clone(),
            of: of.clone(),
            ino,
            chunk,
            done: w.clone(),
        };
        self.rt.spawn(async move {
            let _finish = finish;
            let result = me
                .remote
                .get_range(&path, from, ask_len(from, to, size))
                .await;
            match result {
                Ok(reply) => {
                    // Writing megabytes to the content file and the range map to the
                    // store: not on an async worker, where it would stall the other
                    // downloads' bodies.
                    let (core, of, path) = (me.clone(), of.clone(), path.clone());
                    let stored = tokio::task::spawn_blocking(move || {
                        core.store_fetched_checked(&of, ino, &src, from, to, &reply)
                            .map_err(|e| format!("{path}: could not keep downloaded data: {e}"))
                    })
                    .await;
                    match stored {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!("{e}"),
                        Err(e) => tracing::warn!("storing a download failed: {e}"),
                    }
                }
                Err(e) => {
                    if e.is_transport() {
                        me.health.mark_offline(&e.to_string());
                    }
                    tracing::debug!("{path}: download of {from}..{to} failed: {e}");
                }
            }
        });
        Some(w)
    }

    /// Downloads the missing parts of `[start, end)` in this thread.
    fn fetch_missing_now(
        &self,
        of: &Arc<OpenFile>,
        ino: u64,
        src: &Source,
        start: u64,
        end: u64,
    ) -> FsResult<()> {
        let (path, size) = (src.path.as_str(), src.size);
        let missing = {
            let st = lock(&of.state);
            st.ranges.missing(start, end.min(st.size))
        };
        for (a, b) in missing {
            let mut pos = a;
            while pos < b {
                let len = (b - pos).min(MAX_FETCH);
                let remote = self.remote.clone();
                let p = path.to_string();
                let ask = ask_len(pos, pos + len, size);
                let reply = self.call(path, async move { remote.get_range(&p, pos, ask).await })?;
                self.store_fetched_checked(of, ino, src, pos, pos + len, &reply)?;
                if reply.data.is_empty() {
                    // Nothing, and no size said: shorter than listed all the same.
                    return Err(self.size_changed(
                        ino,
                        path,
                        size,
                        "no data where the file should have more".into(),
                    ));
                }
                pos = reply.offset + reply.data.len() as u64;
            }
        }
        Ok(())
    }

    /// `store_fetched` for the reply to a GET of `[from, to)` (asked one byte further at
    /// the file's end), once the reply is checked against the size the node has: a
    /// total size that differs, more bytes than the file has, or fewer than asked before
    /// its end, mean the server's file is not the one listed. Nothing of such a reply is
    /// kept, never a silently cut or padded file (see `size_changed`).
    fn store_fetched_checked(
        &self,
        of: &OpenFile,
        ino: u64,
        src: &Source,
        from: u64,
        to: u64,
        reply: &RangeReply,
    ) -> FsResult<()> {
        let path = src.path.as_str();
        if src.base {
            // A file changed here: its missing bytes are the base version's, of the
            // base's size; a newer version on the server is not mixed in (that is a
            // conflict, which its upload meets).
            let newer = match (src.etag.as_deref(), reply.etag.as_deref()) {
                (Some(ours), Some(theirs)) => !crate::remote::same_etag(Some(ours), Some(theirs)),
                _ => false,
            };
            let got_end = reply.offset + reply.data.len() as u64;
            let size = src.size;
            let short = !reply.data.is_empty() && got_end < to.min(size) && reply.offset <= from;
            if newer || reply.total_size.is_some_and(|t| t != size) || got_end > size || short {
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
            return self.store_fetched(of, ino, reply);
        }
        let size = lock(&of.state).size;
        if lock(&of.state).write_dirty {
            // Written here meanwhile: the local size is ours, not the server's.
            return self.store_fetched(of, ino, reply);
        }
        // Fetched from the old path of a rename that waits: if the rename was replayed
        // meanwhile, something else may stand there now. Only our version may be kept.
        if self.path(ino).ok().as_deref() != Some(path) {
            let ours = self.node(ino)?.etag;
            if let (Some(ours), Some(theirs)) = (ours.as_deref(), reply.etag.as_deref()) {
                if !crate::remote::same_etag(Some(ours), Some(theirs)) {
                    return Err(FsError::Remote {
                        path: path.to_string(),
                        source: RemoteError::NotFound,
                    });
                }
            }
        }
        let got_end = reply.offset + reply.data.len() as u64;
        let why = match reply.total_size {
            Some(total) if total != size => Some(format!("it has {total} bytes")),
            _ if got_end > size => Some(format!("it sends more than {size} bytes")),
            _ if !reply.data.is_empty() && got_end < to.min(size) && reply.offset <= from => {
                Some(format!("it ends at byte {got_end}"))
            }
            _ => None,
        };
        match why {
            Some(why) => Err(self.size_changed(ino, path, size, why)),
            None => self.store_fetched(of, ino, reply),
        }
    }

    /// The server's file is not the size its listing said: it changed since (or the
    /// server cannot be trusted about it). Its folder is listed again at the next look,
    /// which gives the new version, and this read fails rather than return a file cut
    /// or padded to the old size.
    fn size_changed(&self, ino: u64, path: &str, size: u64, why: String) -> FsError {
        tracing::warn!(
            "{path}: the server's file is not the {size} bytes listed ({why}); it changed:              its folder is listed again and this read fails"
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
    fn store_fetched(&self, of: &OpenFile, ino: u64, reply: &RangeReply) -> FsResult<()> {
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
        // The map as it is now, read under the store's writer: downloads finishing in
        // another order cannot store an older map over a newer one.
        self.store.write(|tx| {
            let ranges = lock(&of.state).ranges.clone();
            store::set_ranges(tx, ino, &ranges)
        })?;
        self.cache_grew.notify_one();
        if completed {
            self.record_complete_download(ino);
        }
        Ok(())
    }
}
