//! File content I/O: read (missing ranges fetched by `fetch.rs`), write into the content
//! file and its range map, flush/close and fsync committing the journal entry, truncate,
//! the largest file size, statfs. Locks are taken in the order listed in `fs/mod.rs`.

use std::os::unix::fs::FileExt;

use rusqlite::Connection;

use super::open_files::OpenFile;
use super::{lock, Core, FsError, FsResult};
use crate::journal;
use crate::store::{self, Kind, RangeSet};

impl Core {
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let (ino, _, of) = self.handle(fh)?;
        self.note_access(ino, &of)?;
        let file_size = lock(&of.state).size;
        if offset >= file_size {
            return Ok(Vec::new());
        }
        let end = (offset + size as u64).min(file_size);
        self.fetch_range(&of, ino, offset, end, true)?;
        let mut buf = vec![0u8; (end - offset) as usize];
        let mut done = 0;
        while done < buf.len() {
            let n = of.file.read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(buf)
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let (ino, writable, of) = self.handle(fh)?;
        if !writable {
            return Err(FsError::BadHandle);
        }
        self.foreground.note();
        // As on a local disk: a write starting at or past the largest size fails with
        // EFBIG, one crossing it is cut short there.
        let max = self.max_file_size();
        if offset >= max && !data.is_empty() {
            return Err(FsError::TooBig);
        }
        let data = &data[..data.len().min((max - offset.min(max)) as usize)];
        let (size, all_here) = {
            let st = lock(&of.state);
            (st.size, st.ranges.covers(0, st.size))
        };
        // A file not all here is written where the server takes partial updates (only
        // the ranges written are sent); elsewhere the rest is fetched first, since the
        // upload sends the whole file.
        let partial = !all_here && self.partial_write_ready(ino, &of)?;
        if !all_here && !partial {
            self.fetch_range(&of, ino, 0, size, false)?;
        }
        let end = offset + data.len() as u64;
        if end > size || !lock(&of.state).write_dirty {
            // Growing the file (or a first write, which makes it unevictable).
            self.ensure_space(end.saturating_sub(size).max(data.len() as u64))?;
        }
        // Written ranges of a file not all here are recorded before its bytes go into
        // the content file, all in the store: after a crash they tell the bytes written
        // here from holes where the server's bytes are (see `recover`).
        type Woken = Option<std::sync::Arc<super::early_parts::EarlyParts>>;
        let write_in = |conn: Option<&Connection>| -> FsResult<(bool, Woken)> {
            let mut st = lock(&of.state);
            let mut now = RangeSet::default();
            // Growing past the end: the gap reads as zeros, which are ours too.
            let (from, to) = store::write_span(st.size, offset, end);
            now.insert(from, to);
            let new_size = st.size.max(end);
            if let Some(conn) = conn {
                let mut ranges = st.ranges.clone();
                ranges.union(&now);
                store::set_written_content(conn, ino, new_size, st.mtime_ns, &ranges)?;
                store::note_written(conn, ino, &now, new_size)?;
            }
            // Under the state lock, so a download finishing now cannot write over it.
            if let Err(e) = of.file.write_all_at(data, offset) {
                // Some of it may be in the content file: parts sent early from below it
                // no longer count.
                if let Some(early) = &st.early {
                    early.written(offset, st.size);
                }
                return Err(e.into());
            }
            st.size = new_size;
            st.ranges.union(&now);
            st.written.union(&now);
            st.mtime_ns = store::now_ns();
            st.write_seq += 1;
            let wake = match &st.early {
                Some(early) if early.written(offset, new_size) => Some(early.clone()),
                _ => None,
            };
            Ok((!std::mem::replace(&mut st.write_dirty, true), wake))
        };
        let (first, woken) = if partial {
            // Not a `write`: each range is committed before its bytes go into the content
            // file, with the writer (and the file's state) held throughout.
            self.store.with_writer(|conn| write_in(Some(conn)))?
        } else {
            write_in(None)?
        };
        if first && !partial {
            // Persist "this file has unsent changes" before the first write returns, so
            // a crash with the file still open is recovered at the next start.
            self.store.write(|tx| store::set_dirty(tx, ino, true))?;
        }
        // Both only speed the upload up: the write stands whatever they meet.
        if let Some(early) = woken {
            self.wake_early_parts(&early);
        }
        if end >= self.cfg.uploads.parts_from && !partial {
            if let Err(e) = self.maybe_send_while_written(ino, &of) {
                tracing::warn!("inode {ino}: its parts cannot go early: {e}");
            }
        }
        Ok(data.len() as u32)
    }

    /// A read: records the access time where the relatime rule asks for it (see
    /// `store::atime_due`), so repeated reads write nothing.
    pub(super) fn note_access(&self, ino: u64, of: &OpenFile) -> FsResult<()> {
        let now = store::now_ns();
        let due = {
            let st = lock(&of.state);
            let atime = st.atime_ns.unwrap_or(i64::MIN);
            store::atime_due(atime, st.mtime_ns, st.ctime_ns, now)
        };
        if !due {
            return Ok(());
        }
        self.store.write(|tx| {
            store::set_atime(tx, ino, now)?;
            lock(&of.state).atime_ns = Some(now);
            Ok(())
        })
    }

    /// Commits the writes of `ino` to the journal: size, mtime and an upload entry.
    pub(super) fn commit_writes(&self, of: &OpenFile, ino: u64, durable: bool) -> FsResult<()> {
        if durable {
            of.file.sync_all()?;
        }
        // The store lock first, then the state (the lock order): two commits of the same
        // file cannot pass each other and record an older size last.
        // Not a `write`: `fsync` changes the sync mode around the transaction (it cannot
        // change inside one), and the file's state is marked clean after the commit.
        self.store.with_writer(|conn| {
            let (size, mtime_ns, seq, ranges, written, early) = {
                let st = lock(&of.state);
                if !st.write_dirty {
                    drop(st);
                    // Committed already (by a close of another descriptor), but perhaps
                    // only to the page cache: fsync() wants it on the disk.
                    if durable {
                        store::sync_to_disk(conn)?;
                    }
                    return FsResult::Ok(());
                }
                let (ranges, written) = (st.ranges.clone(), st.written.clone());
                let early = st.early.clone();
                (st.size, st.mtime_ns, st.write_seq, ranges, written, early)
            };
            let committed_size = std::cell::Cell::new(None);
            let work = |c: &Connection| -> rusqlite::Result<()> {
                let tx = c.unchecked_transaction()?;
                store::set_written_content(&tx, ino, size, mtime_ns, &ranges)?;
                store::note_written(&tx, ino, &written, size)?;
                // The entry sending parts early takes this commit (it waits for it);
                // one of its own only if that entry is gone or set aside.
                let taken = match &early {
                    Some(early) => {
                        // Parked, it comes now (running, it sees the commit itself).
                        journal::wake(&tx, early.entry)?;
                        journal::put_still_due(&tx, early.entry)?
                    }
                    None => false,
                };
                // The parts sent early belong to this version: recorded as the entry's
                // progress, so that its upload resumes after them whenever it runs.
                if let (true, Some(early)) = (taken, &early) {
                    let node = store::get_node(&tx, ino)?;
                    if let Some(node) = node {
                        let version = journal::part_version(&node);
                        // Named even with nothing sent yet: a part on the wire now is
                        // added when it lands (see `replay::early`).
                        let sent = early.sent().min(node.size);
                        journal::set_part_progress(&tx, early.entry, &version, sent)?;
                        committed_size.set(Some(node.size));
                    }
                }
                if let (false, Some(path)) = (taken, store::path_of(&tx, ino)?) {
                    journal::record_put(&tx, ino, &path)?;
                }
                tx.commit()
            };
            if durable {
                store::with_full_sync(conn, work)?;
            } else {
                work(conn)?;
            }
            let mut st = lock(&of.state);
            if st.write_seq == seq {
                st.write_dirty = false;
                st.written.clear();
                // Committed: what follows is a change of its own, uploaded as usual.
                if let Some(early) = st.early.take() {
                    early.seal(committed_size.get());
                }
            }
            Ok(())
        })?;
        self.journal_changed.notify_one();
        Ok(())
    }

    /// `close()`: what was written is committed to the journal before this returns.
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        let (ino, writable, of) = self.handle(fh)?;
        if writable {
            self.commit_writes(&of, ino, false)?;
        }
        Ok(())
    }

    /// `fsync()`: like flush, and durable across a power loss.
    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        let (ino, _, of) = self.handle(fh)?;
        self.commit_writes(&of, ino, true)
    }

    /// `fsyncdir()`: namespace changes are committed as they return; this puts them (and
    /// every earlier commit) on the disk.
    pub fn sync_journal(&self) -> FsResult<()> {
        Ok(self.store.sync_to_disk()?)
    }

    /// The largest size a content file can have on the cache's file system (ext4 with
    /// 4 KiB blocks: 16 TiB), found once by growing an unnamed sparse scratch file:
    /// nothing is allocated. A file may not grow past it here, so `truncate` and `write`
    /// beyond it fail with `EFBIG` as on that file system, before anything changes.
    pub fn max_file_size(&self) -> u64 {
        *self.max_file_size.get_or_init(|| {
            let f = match tempfile::tempfile_in(&self.cache_dir) {
                Ok(f) => f,
                Err(_) => return i64::MAX as u64,
            };
            let fits = |len: u64| f.set_len(len).is_ok();
            if fits(i64::MAX as u64) {
                return i64::MAX as u64;
            }
            // Invariant: `lo` fits, `hi` does not.
            let (mut lo, mut hi) = (0u64, i64::MAX as u64);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if fits(mid) {
                    lo = mid
                } else {
                    hi = mid
                }
            }
            lo
        })
    }

    pub(super) fn check_file_size(&self, end: u64) -> FsResult<()> {
        if end > self.max_file_size() {
            Err(FsError::TooBig)
        } else {
            Ok(())
        }
    }

    pub(super) fn truncate(&self, ino: u64, new_size: u64) -> FsResult<()> {
        self.check_file_size(new_size)?;
        let node = self.node(ino)?;
        tracing::debug!("truncate inode {ino} from {} to {new_size}", node.size);
        if node.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        let of = self.open_file(ino)?;
        let result = (|| {
            let keep = node.size.min(new_size);
            let all_here = lock(&of.state).ranges.covers(0, keep);
            // As for writes: where the server takes partial updates, what is kept need
            // not be here (a file cut below its size on the server is sent whole, its
            // missing parts read from the base copy then).
            let partial = !all_here && self.partial_write_ready(ino, &of)?;
            if !partial {
                self.fetch_range(&of, ino, 0, keep, false)?;
            }
            // Whether others have it open; None when what is kept is not all here.
            let woken = std::cell::RefCell::new(None);
            let cut = |conn: Option<&Connection>| -> FsResult<Option<bool>> {
                let mut st = lock(&of.state);
                if !partial && !st.ranges.covers(0, st.size.min(new_size)) {
                    return Ok(None);
                }
                let (mut ranges, mut grown) = (st.ranges.clone(), RangeSet::default());
                ranges.truncate(new_size);
                // Growing: the new bytes are zeros, written here.
                grown.insert(st.size.min(new_size), new_size);
                ranges.union(&grown);
                if let Some(conn) = conn {
                    // Recorded before the content file changes (see `write`).
                    store::set_written_content(conn, ino, new_size, st.mtime_ns, &ranges)?;
                    store::note_written(conn, ino, &grown, new_size)?;
                }
                of.file.set_len(new_size)?;
                let old_size = std::mem::replace(&mut st.size, new_size);
                if let Some(early) = st.early.clone() {
                    // Grown past the part its entry waits for: woken below.
                    if early.cut(new_size) {
                        *woken.borrow_mut() = Some(early);
                    }
                }
                st.ranges = ranges;
                store::truncate_written(&mut st.written, old_size, new_size);
                st.mtime_ns = store::now_ns();
                st.write_dirty = true;
                st.write_seq += 1;
                // A download holding it (a read-ahead still running) is no handle
                // whose close would commit this soon: it is committed now.
                Ok(Some(st.opens.saturating_sub(st.downloading) > 1))
            };
            let others_open = if partial {
                // Not a `write`, as in `write`: the ranges are committed before the
                // content file changes, with the writer held throughout.
                self.store.with_writer(|conn| cut(Some(conn)))?
            } else {
                cut(None)?
            };
            let Some(others_open) = others_open else {
                return Err(FsError::Offline {
                    path: self.path(ino)?,
                });
            };
            if let Some(early) = woken.into_inner() {
                self.wake_early_parts(&early);
            }
            if others_open {
                // A program has it open: its close commits the change.
                self.store.write(|tx| store::set_dirty(tx, ino, true))?;
                Ok(())
            } else {
                self.commit_writes(&of, ino, false)
            }
        })();
        self.close_open_file(ino);
        result
    }

    pub fn statfs(&self) -> FsResult<libc::statvfs> {
        let c = std::ffi::CString::new(self.cache_dir.as_os_str().as_encoded_bytes())
            .map_err(|_| FsError::Invalid("cache dir path"))?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return Err(FsError::Io(std::io::Error::last_os_error()));
        }
        apply_quota(&mut st, self.health.quota());
        Ok(st)
    }
}

/// `df` shows the server's space where it reports an RFC 4331 quota (refreshed with the
/// health probe): size = available + used, free = available, counted in the cache
/// disk's fragment size. Inode counts stay the cache disk's (the server has none).
/// Without a quota (or with only "used"), the cache disk's numbers stay: that is where
/// writes land first, and `ENOSPC` comes from it.
fn apply_quota(st: &mut libc::statvfs, quota: (Option<u64>, Option<u64>)) {
    let Some(avail) = quota.0 else { return };
    // `c_ulong`: 32 bits on 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    let frsize = (st.f_frsize as u64).max(1);
    let used = quota.1.unwrap_or(0);
    st.f_blocks = (avail.saturating_add(used) / frsize) as _;
    st.f_bfree = (avail / frsize) as _;
    st.f_bavail = (avail / frsize) as _;
}

#[cfg(test)]
mod quota_tests {
    #[test]
    fn a_server_quota_replaces_the_cache_disk_space() {
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        st.f_frsize = 4096;
        st.f_blocks = 1000;
        st.f_bfree = 500;
        st.f_bavail = 400;
        super::apply_quota(&mut st, (None, Some(7)));
        assert_eq!((st.f_blocks, st.f_bfree, st.f_bavail), (1000, 500, 400));
        super::apply_quota(&mut st, (Some(40960), Some(8192)));
        assert_eq!((st.f_blocks, st.f_bfree, st.f_bavail), (12, 10, 10));
    }
}
