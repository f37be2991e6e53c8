//! Downloads of file content: ranged GETs of one or more chunks, several at a time, with a
//! read-ahead window that grows while a file is read sequentially, and GETs that grow with
//! it. A chunk being fetched is registered, so a second reader of it waits for that fetch
//! instead of starting another.
//! A GET's body is kept as it arrives (`fetched.rs`), and a reader waits only until the
//! bytes it asked for are here, not for the whole GET; an interrupted read resumes from
//! what is already here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use futures_util::StreamExt;

use super::fetched::{RangesSaved, ReplySoFar};
use super::{lock, Core, FsError, FsResult, OpenFile};
use crate::remote::{RangeReply, RemoteError};

/// Unit of download and of read-ahead: a GET covers one chunk or a run of them, and a
/// reader waits for the download of the chunk it reads.
pub const CHUNK: u64 = 2 << 20;
/// Largest GET of the read-ahead. Each GET costs both ends far more than its bytes do
/// (a request, a file opened and mapped on the server, a blocking thread here): a stream
/// read in 2 MiB GETs took a third more CPU, and ran a quarter slower on two cores, than
/// in GETs of 16 to 32 MiB.
const MAX_GET: u64 = 32 << 20;
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
/// Downloads of one file running at once.
const MAX_PARALLEL: usize = 8;
/// Largest single GET of a fetch done in the caller's thread.
const MAX_FETCH: u64 = 8 << 20;

/// A download in progress. Its bytes are kept as they arrive, so a reader waits only
/// until the part it needs is here (or the download ended), not for the whole GET.
pub(super) struct Inflight {
    done: Mutex<bool>,
    cv: Condvar,
    /// The bytes it asks for.
    from: u64,
    to: u64,
    /// Where the bytes it brought so far end.
    reached: AtomicU64,
}

/// A reader needing bytes further than this beyond where a download got fetches them
/// itself: a jump into a large GET must not wait for the megabytes before it.
const WAIT_WITHIN: u64 = 2 * CHUNK;

impl Inflight {
    fn new(from: u64, to: u64) -> Inflight {
        Inflight {
            done: Mutex::new(false),
            cv: Condvar::new(),
            from,
            to,
            reached: AtomicU64::new(from),
        }
    }

    /// Waits until what this download brings of `[from, to)` of `of` is here, or it
    /// ended. The range map is looked at under `done`, which `arrived` takes before it
    /// wakes anyone: no wake-up is missed between the look and the wait. What it does
    /// not bring (the start of its first chunk, say), or will bring only after much
    /// else, the reader fetches itself.
    fn wait_for(&self, of: &OpenFile, from: u64, to: u64) {
        let (from, to) = (from.max(self.from), to.min(self.to));
        if from >= to || from > self.reached.load(Ordering::Acquire) + WAIT_WITHIN {
            return;
        }
        let mut done = lock(&self.done);
        while !*done && !here(of, from, to) {
            done = self.cv.wait(done).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The download kept its bytes up to `reached`, in the range map.
    fn arrived(&self, reached: u64) {
        self.reached.store(reached, Ordering::Release);
        drop(lock(&self.done));
        self.cv.notify_all();
    }

    fn finish(&self) {
        *lock(&self.done) = true;
        self.cv.notify_all();
    }
}

/// Whether `[from, to)` of `of` is here, as far as the file still reaches (a truncation
/// meanwhile leaves nothing to wait for past its end).
fn here(of: &OpenFile, from: u64, to: u64) -> bool {
    let st = lock(&of.state);
    let to = to.min(st.size);
    from >= to || st.ranges.covers(from, to)
}

/// A download to wait for, and the part of it a reader needs.
struct Waiting {
    download: Arc<Inflight>,
    from: u64,
    to: u64,
}

impl Waiting {
    fn wait(&self, of: &OpenFile) {
        self.download.wait_for(of, self.from, self.to)
    }
}

/// Per-file download state.
#[derive(Default)]
pub(super) struct Downloads {
    inflight: Mutex<Running>,
    readahead: Mutex<ReadAhead>,
    /// Whether the store's copy of the range map is behind (see `fetched`).
    pub(super) saved: Mutex<RangesSaved>,
}

/// The downloads of a file in progress.
#[derive(Default)]
struct Running {
    /// Chunk index → the download that covers it (one download may cover several).
    by_chunk: HashMap<u64, Arc<Inflight>>,
    /// Downloads running.
    count: usize,
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
    pub(super) path: String,
    /// For a file not changed here: its path here, where it is read again once a waiting
    /// rename was replayed (the content moved there). Read from an old path with this set,
    /// only our version is kept (see `check_reply`); without it, whatever is there.
    pub(super) here: Option<String>,
    /// The size of the file read.
    pub(super) size: u64,
    /// A file changed here is read from its base version only (the server-side copy of
    /// it, or the file itself while it is still that version: `etag`), never from a
    /// newer one; its size is the base's.
    pub(super) base: bool,
    pub(super) etag: Option<String>,
}

struct FinishDownload {
    core: Arc<Core>,
    of: Arc<OpenFile>,
    ino: u64,
    chunks: std::ops::Range<u64>,
    done: Arc<Inflight>,
}

impl Drop for FinishDownload {
    fn drop(&mut self) {
        {
            let mut running = lock(&self.of.downloads.inflight);
            for chunk in self.chunks.clone() {
                if running
                    .by_chunk
                    .get(&chunk)
                    .is_some_and(|w| Arc::ptr_eq(w, &self.done))
                {
                    running.by_chunk.remove(&chunk);
                }
            }
            running.count -= 1;
        }
        self.of.fetch_ended();
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

/// The next GET of the read-ahead of a reader at `end` that wants the file present up to
/// `ahead`, in GETs of about `get_len`: from the first chunk past the reader that is
/// neither here nor being downloaded, through the chunks after it that are neither, up
/// to `get_len`. None while a whole GET does not fit in the window yet (the reader is
/// still far from the front: the window is topped up a GET at a time, not a chunk at a
/// time), or when enough downloads of the file run.
fn next_ahead(of: &OpenFile, end: u64, ahead: u64, get_len: u64) -> Option<(u64, u64)> {
    // Lock order: the downloads before the file's state, as in `start_download`.
    let running = lock(&of.downloads.inflight);
    if running.count >= MAX_PARALLEL {
        return None;
    }
    let st = lock(&of.state);
    let size = st.size;
    // A stream through cached content (every read of it comes here): one look.
    if st.ranges.covers(end.min(size), ahead.min(size)) {
        return None;
    }
    let wanted = |chunk: u64| {
        let (lo, hi) = ((chunk * CHUNK).max(end), ((chunk + 1) * CHUNK).min(size));
        !running.by_chunk.contains_key(&chunk) && !st.ranges.covers(lo, hi)
    };
    let mut chunk = end / CHUNK;
    while !wanted(chunk) {
        chunk += 1;
        if (chunk * CHUNK).max(end) >= ahead.min(size) {
            return None;
        }
    }
    let lo = (chunk * CHUNK).max(end);
    if lo >= ahead.min(size) {
        return None;
    }
    let fits = ahead.saturating_sub(lo) >= get_len || ahead >= size;
    if !fits && lo >= end + get_len {
        return None;
    }
    // Whole chunks, at most `get_len` of them: a GET starting inside a chunk is shorter.
    let mut last = chunk;
    while (last + 2 - chunk) * CHUNK <= get_len && (last + 1) * CHUNK < size && wanted(last + 1) {
        last += 1;
    }
    Some((lo, ((last + 1) * CHUNK).min(size)))
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
        let (ahead, round, get_len) = if reading {
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
            (end, DEMAND_ROUND, CHUNK)
        };
        // Looked at before anything else: a streaming reader's reads mostly find their
        // bytes here and no GET due, and then cost no look at where the file is (a query).
        let ahead_due = ahead > end && next_ahead(of, end, ahead, get_len).is_some();
        if covered && !ahead_due {
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
            let direct = reading && round == RANDOM_ROUND && !ahead_due && {
                let running = lock(&of.downloads.inflight);
                !running.by_chunk.contains_key(&(from / CHUNK))
                    && !running.by_chunk.contains_key(&((to - 1) / CHUNK))
            };
            if direct {
                (now_from, now_to) = (from, to);
            } else {
                let mut chunk = from / CHUNK;
                while chunk * CHUNK < to {
                    let lo = (chunk * CHUNK).max(from);
                    let hi = ((chunk + 1) * CHUNK).min(to);
                    // The reader waits for what it asked for, not for what the fetch
                    // was rounded up to.
                    let (need_from, need_to) = (lo.max(start), hi.min(end));
                    let started = self.start_download(of, ino, &src, lo, hi);
                    if let Some(download) = started.filter(|_| need_from < need_to) {
                        waiting.push_back(Waiting {
                            download,
                            from: need_from,
                            to: need_to,
                        });
                    }
                    while waiting.len() >= MAX_PARALLEL {
                        waiting.pop_front().unwrap().wait(of);
                    }
                    chunk += 1;
                }
            }
        }
        if ahead_due {
            // At most as many as may run: a download that fails at once leaves its chunk
            // wanted again, and this read must not send GET after GET for it.
            for _ in 0..MAX_PARALLEL {
                let Some((lo, hi)) = next_ahead(of, end, ahead, get_len) else {
                    break;
                };
                if self.start_download(of, ino, &src, lo, hi).is_none() {
                    break;
                }
            }
        }
        for w in waiting {
            w.wait(of);
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
                    ..src.clone()
                };
                match self.fetch_missing_now(of, ino, &here, start, end) {
                    // Not at the new path either: the rename has not reached the server,
                    // and the old path holds the file as the server has it now. Its ETag
                    // was not ours because some servers give the files of a moved folder
                    // new ones (an earlier rename of ours above it), or another client
                    // changed it; a read at its own path would take either.
                    Err(FsError::Remote {
                        source: RemoteError::NotFound,
                        ..
                    }) => {
                        let old = Source { here: None, ..src };
                        self.fetch_missing_now(of, ino, &old, start, end)
                    }
                    other => other,
                }
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
    /// ahead the content should be present, the granule to round a missing read to, and
    /// how much one GET of the read-ahead asks for.
    fn advance_readahead(&self, of: &OpenFile, start: u64, end: u64, size: u64) -> (u64, u64, u64) {
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
        // Half the window a GET: the window is topped up a half at a time, so two GETs
        // run ahead of a stream, each as large as the window lets it be. More at once,
        // smaller, cost more CPU at both ends for the same bytes on a near server.
        let get_len = (ra.window / 2).clamp(CHUNK, MAX_GET);
        ((end + ra.window).min(size), round, get_len)
    }

    /// Starts one download of the missing part of `[lo, hi)` unless the chunk of `lo` is
    /// being downloaded; returns what to wait for, or None if nothing is missing there.
    /// The range may span several chunks; it is cut short before a chunk that another
    /// download took meanwhile.
    fn start_download(
        &self,
        of: &Arc<OpenFile>,
        ino: u64,
        src: &Source,
        lo: u64,
        hi: u64,
    ) -> Option<Arc<Inflight>> {
        let mut running = lock(&of.downloads.inflight);
        if let Some(w) = running.by_chunk.get(&(lo / CHUNK)) {
            return Some(w.clone());
        }
        let (from, mut to) = {
            let st = lock(&of.state);
            let missing = st.ranges.missing(lo, hi.min(st.size));
            (missing.first()?.0, missing.last()?.1)
        };
        // Bytes that arrived meanwhile may put the first missing one in a later chunk.
        if let Some(w) = running.by_chunk.get(&(from / CHUNK)) {
            return Some(w.clone());
        }
        if let Some(taken) = (from / CHUNK + 1..to.div_ceil(CHUNK))
            .find(|chunk| running.by_chunk.contains_key(chunk))
        {
            to = taken * CHUNK;
        }
        let chunks = from / CHUNK..to.div_ceil(CHUNK);
        let me = self.me.upgrade()?;
        let w = Arc::new(Inflight::new(from, to));
        for chunk in chunks.clone() {
            running.by_chunk.insert(chunk, w.clone());
        }
        running.count += 1;
        drop(running);
        // The download holds the file open: its state stays the one every opener shares
        // until the data is recorded, and a new open finds this download running.
        lock(&of.state).opens += 1;
        of.fetch_started();
        let of = of.clone();
        let src = src.clone();
        let path = src.path.clone();
        // However the task ends (even dropped with the runtime, polled or not), waiters
        // are released and the file's open count is given back.
        let finish = FinishDownload {
            core: me.clone(),
            of: of.clone(),
            ino,
            chunks,
            done: w.clone(),
        };
        // A thread of the blocking pool, not a task: the bytes go into the content file
        // as they arrive, which would stall the other downloads on an async worker.
        let progress = w.clone();
        self.rt.spawn_blocking(move || {
            let _finish = finish;
            if let Err(e) = me.download(&of, ino, &src, from, to, &progress) {
                tracing::debug!("{path}: download of {from}..{to} failed: {e}");
            }
        });
        Some(w)
    }

    /// One GET of `[from, to)`, its bytes kept as they arrive, waking the readers of
    /// `progress` as they do. What is not here when it ends is fetched by the reader.
    fn download(
        &self,
        of: &Arc<OpenFile>,
        ino: u64,
        src: &Source,
        from: u64,
        to: u64,
        progress: &Inflight,
    ) -> FsResult<()> {
        let (remote, path) = (self.remote.clone(), src.path.clone());
        let ask = ask_len(from, to, src.size);
        let mut reply = self.call(&src.path, async move {
            remote.get_range_stream(&path, from, ask).await
        })?;
        let mut so_far = ReplySoFar {
            offset: reply.offset,
            total_size: reply.total_size,
            etag: reply.etag.as_deref(),
            len: 0,
            whole: false,
            version_checked: false,
        };
        // Kept as it arrives only when the headers say the file's size, which a reply
        // to a range does: then a reply of another version is refused before its first
        // byte is kept. Else it is read whole and checked as a whole.
        let streamed = so_far.total_size.is_some();
        let mut whole = bytes::BytesMut::new();
        if streamed {
            self.check_reply(of, ino, src, from, to, &so_far)?;
            so_far.version_checked = true;
        }
        loop {
            let next = self.call(&src.path, async { reply.body.next().await.transpose() })?;
            let Some(piece) = next else { break };
            if !streamed {
                whole.extend_from_slice(&piece);
                continue;
            }
            let offset = so_far.offset + so_far.len;
            so_far.len += piece.len() as u64;
            self.check_reply(of, ino, src, from, to, &so_far)?;
            let piece = RangeReply {
                data: piece,
                offset,
                total_size: so_far.total_size,
                etag: None,
            };
            self.store_fetched(of, ino, src, &piece)?;
            progress.arrived(so_far.offset + so_far.len);
        }
        so_far.whole = true;
        if streamed {
            return self.check_reply(of, ino, src, from, to, &so_far);
        }
        let reply = RangeReply {
            data: whole.freeze(),
            offset: so_far.offset,
            total_size: so_far.total_size,
            etag: so_far.etag.map(str::to_string),
        };
        self.store_fetched_checked(of, ino, src, from, to, &reply)
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
}
