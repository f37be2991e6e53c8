//! The worker of one migration: copies pending files into the drive, follows each until
//! it has landed, verifies it against the remote, and removes its source if asked.
//! One std thread: core calls block (and may wait on the runtime), so they must not run
//! on a tokio worker.
//!
//! Over 600 lines: the copy, landing, verification and source removal of a file are
//! steps of one loop over the same pending items.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::db::{self, ItemRow, MigrationRow, SourceKept};
use super::walk::{self, source_mtime_ns, Walked};
use super::{dest_path, now_s, Control, MigrateResult, Migrations, Options, Stop, Verify};
use crate::cache::hex;
use crate::fs::{FsError, ImportOwner};
use crate::remote::{same_etag, RemoteError};
use crate::store::ns_to_system_time;

/// Pending items read from the store at a time.
const BATCH: usize = 200;
/// Files copied but not yet verified, at most (besides the byte budget).
const MAX_IN_FLIGHT: usize = 10_000;
/// How often staged files are checked for having landed while files are being copied.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// Pieces read back from the remote for verification.
const VERIFY_PIECE: u64 = 8 << 20;
/// A file that changes while being copied is tried this many times.
const COPY_TRIES: usize = 3;

pub(super) enum Outcome {
    Finished,
    Stopped,
}

/// Runs migration `id` until it is finished, stopped, or fails as a whole.
pub(super) fn run(m: Arc<Migrations>, id: i64, control: Arc<Control>) {
    let result = Worker::new(&m, id, &control).and_then(|mut w| w.run());
    control.lock().exited = true;
    let end = match result {
        Ok(Outcome::Stopped) => return,
        Ok(Outcome::Finished) => m.db().write(|c| match db::any_failed(c, id) {
            Ok(true) => db::finish(c, id, "completed_with_errors", None, now_s()),
            Ok(false) => db::finish(c, id, "completed", None, now_s()),
            Err(e) => Err(e),
        }),
        Err(e) => {
            tracing::error!("migration {id} failed: {e}");
            let why = e.to_string();
            m.db()
                .write(|c| db::finish(c, id, "failed", Some(&why), now_s()))
        }
    };
    match end {
        Ok(()) => tracing::info!("migration {id} ended"),
        Err(e) => tracing::error!("migration {id}: cannot record its end: {e}"),
    }
}

/// What became of one attempt to copy a file.
enum Copied {
    /// Recorded (staged, skipped, landed already, or failed with its reason).
    Done,
    /// The cache is full of unsent data: try again once some has landed.
    NoRoom,
    /// The drive needs the remote for this (a folder never listed) and it is
    /// unreachable: try again later.
    Offline,
    /// A stop cut the copy short; the item is pending again.
    Aborted,
}

struct Worker<'a> {
    m: &'a Migrations,
    id: i64,
    control: &'a Control,
    row: MigrationRow,
    opts: Options,
    src: PathBuf,
    queue: VecDeque<ItemRow>,
    last_rowid: i64,
    /// Files copied, not yet verified (or, with --delete-source, not yet removed).
    in_flight: Vec<ItemRow>,
    /// Bytes of staged copies the cache is given before the worker waits for uploads.
    budget: u64,
    last_check: Option<Instant>,
    /// The replayer's progress: waits for uploads wake on it.
    progress: tokio::sync::watch::Receiver<u64>,
}

impl<'a> Worker<'a> {
    fn new(m: &'a Migrations, id: i64, control: &'a Control) -> MigrateResult<Worker<'a>> {
        let row = m
            .db()
            .write(|c| db::get(c, id))?
            .ok_or(super::MigrateError::UnknownId(id))?;
        let opts: Options = serde_json::from_str(&row.options_json).unwrap_or_default();
        let core = &m.core;
        let fs_total = crate::cache::fs_space(core.cache_dir())
            .map(|s| s.0)
            .unwrap_or(u64::MAX);
        // Half the cache's size cap: the rest stays for what programs use meanwhile.
        let budget = (core.cfg.cache.max_size_for(fs_total) / 2).max(1 << 20);
        Ok(Worker {
            m,
            id,
            control,
            src: PathBuf::from(&row.src),
            row,
            opts,
            queue: VecDeque::new(),
            last_rowid: 0,
            in_flight: Vec::new(),
            budget,
            last_check: None,
            progress: m.core.journal_progress(),
        })
    }

    /// Waits until the replayer made progress (or `at_most`), unless asked to stop.
    fn wait_for_uploads(&mut self, at_most: Duration) {
        if self.control.stop_requested().is_some() {
            return;
        }
        self.m
            .core
            .wait_journal_progress(&mut self.progress, at_most);
    }

    fn run(&mut self) -> MigrateResult<Outcome> {
        if !self.row.walk_done {
            if let Walked::Stopped =
                walk::walk(self.m, self.id, &self.src, &self.opts, self.control)?
            {
                return Ok(Outcome::Stopped);
            }
        }
        let done = self
            .m
            .db()
            .write(|c| db::counts(c, self.id))?
            .files(&["verified", "source_deleted"])
            .1;
        *self
            .control
            .done_at_start
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(done);
        // After a restart: what was copied before is followed, not copied again.
        self.in_flight = self
            .m
            .db()
            .write(|c| db::in_flight(c, self.id, self.opts.delete_source))?;
        let mut no_room_since: Option<Instant> = None;
        loop {
            if self.control.take_stop().is_some() {
                return Ok(Outcome::Stopped);
            }
            self.advance(false)?;
            let Some(item) = self.next_item()? else {
                if self.in_flight.is_empty() {
                    break;
                }
                self.wait_for_uploads(CHECK_EVERY);
                self.advance(true)?;
                continue;
            };
            let unsent = self.unsent_bytes();
            if item.kind == "file"
                && !self.in_flight.is_empty()
                && ((unsent > 0 && unsent + item.size > self.budget)
                    || self.in_flight.len() >= MAX_IN_FLIGHT)
            {
                // The cache holds enough of our unsent copies: let uploads catch up.
                self.queue.push_front(item);
                self.wait_for_uploads(CHECK_EVERY);
                self.advance(true)?;
                continue;
            }
            match self.handle(&item)? {
                Copied::Done => no_room_since = None,
                Copied::Aborted => self.queue.push_front(item),
                Copied::Offline => {
                    self.queue.push_front(item);
                    self.control.wait(Duration::from_millis(500));
                    self.advance(true)?;
                }
                Copied::NoRoom => {
                    if no_room_since.is_none() {
                        tracing::info!(
                            "migration {}: the cache is full of unsent changes; waiting for uploads",
                            self.id
                        );
                        no_room_since = Some(Instant::now());
                    }
                    self.queue.push_front(item);
                    self.wait_for_uploads(Duration::from_millis(500));
                    self.advance(true)?;
                }
            }
        }
        self.finish_dirs()?;
        Ok(Outcome::Finished)
    }

    /// Bytes of our copies not yet on the remote: the cache may not evict them. (Landed
    /// ones waiting for verification are clean and evictable, so they do not count.)
    fn unsent_bytes(&self) -> u64 {
        self.in_flight
            .iter()
            .filter(|i| i.state == "staged")
            .map(|i| i.size)
            .sum()
    }

    fn next_item(&mut self) -> MigrateResult<Option<ItemRow>> {
        if self.queue.is_empty() {
            let batch = self
                .m
                .db()
                .write(|c| db::next_pending(c, self.id, self.last_rowid, BATCH))?;
            if let Some(last) = batch.last() {
                self.last_rowid = last.rowid;
            }
            self.queue.extend(batch);
        }
        Ok(self.queue.pop_front())
    }

    /// The file could not be copied: listed with `reason`, its source kept.
    fn fail(&self, item: &ItemRow, reason: &str) -> MigrateResult<Copied> {
        self.fail_for(item, reason, SourceKept::CopyFailed)
    }

    /// The server's copy is not the source's: listed with `reason`, its source kept.
    fn fail_verification(&self, item: &ItemRow, reason: &str) -> MigrateResult<Copied> {
        self.fail_for(item, reason, SourceKept::ServerDiffers)
    }

    fn fail_for(&self, item: &ItemRow, reason: &str, kept: SourceKept) -> MigrateResult<Copied> {
        tracing::warn!(
            "migration {}: {}: {reason}",
            self.id,
            self.src.join(&item.rel_path).display()
        );
        if self.opts.delete_source {
            self.m
                .db()
                .write(|c| db::set_item_kept(c, item.rowid, "failed", reason, kept))?;
        } else {
            self.m
                .db()
                .write(|c| db::set_item_state(c, item.rowid, "failed", Some(reason)))?;
        }
        Ok(Copied::Done)
    }

    fn handle(&mut self, item: &ItemRow) -> MigrateResult<Copied> {
        let dest = dest_path(&self.row.dest, &item.rel_path);
        if item.kind == "dir" {
            let owner = self.owner(&self.src.join(&item.rel_path), true);
            return match self.m.core.mkdir_all(&dest, owner) {
                Ok(ino) => {
                    self.m.db().write(|c| {
                        db::set_item_copied(
                            c,
                            item.rowid,
                            "created",
                            0,
                            item.mtime_ns,
                            "",
                            Some(ino),
                        )
                    })?;
                    Ok(Copied::Done)
                }
                Err(e) if is_transient(&e) => {
                    self.m
                        .db()
                        .write(|c| db::set_item_state(c, item.rowid, "pending", None))?;
                    Ok(Copied::Offline)
                }
                Err(e) => self.fail(item, &format!("cannot make the folder in the drive: {e}")),
            };
        }
        self.copy_file(item, &dest)
    }

    /// Owner and modes of what is made in the drive: the mount's owner, the source's
    /// permission bits.
    fn owner(&self, src: &std::path::Path, dir: bool) -> ImportOwner {
        let mut owner = self.m.core.default_owner();
        if let Ok(md) = std::fs::metadata(src) {
            let mode = md.permissions().mode() & 0o7777;
            if dir {
                owner.dir_mode = mode;
            } else {
                owner.file_mode = mode;
            }
        }
        owner
    }

    fn source_meta(&self, path: &std::path::Path) -> std::io::Result<std::fs::Metadata> {
        if self.opts.follow_symlinks {
            std::fs::metadata(path)
        } else {
            std::fs::symlink_metadata(path)
        }
    }

    fn copy_file(&mut self, item: &ItemRow, dest: &str) -> MigrateResult<Copied> {
        let core = &self.m.core;
        let src_path = self.src.join(&item.rel_path);
        let meta = match self.source_meta(&src_path) {
            Ok(md) => md,
            Err(e) => return self.fail(item, &format!("cannot read: {e}")),
        };
        if !meta.is_file() {
            return self.fail(item, "no longer a regular file");
        }
        let (size, mtime) = (meta.len(), source_mtime_ns(&meta));
        self.m
            .db()
            .write(|c| db::set_item_source(c, item.rowid, size, mtime))?;
        let existing = core.node_at(dest)?;
        if let Some(node) = existing
            .as_ref()
            .filter(|n| n.kind == crate::store::Kind::File && !n.dirty)
        {
            let landed = core.upload_states(&[node.ino])?.landed.contains(&node.ino);
            let earlier = self.m.db().write(|c| {
                db::previously_migrated(c, &self.row.src, &self.row.dest, self.id, &item.rel_path)
            })?;
            let unchanged_since = earlier.filter(|e| e.size == size && e.mtime_ns == mtime);
            let same_size = node.size == size;
            // With --delete-source, a file migrated before is checked on the server even
            // when the drive has seen another size there since: somebody else's change is
            // then kept and listed, not overwritten by a copy of the old source.
            let migrated_before =
                unchanged_since.is_some() && (same_size || self.opts.delete_source);
            if migrated_before && self.opts.delete_source && !core.health.is_online() {
                // It will be checked on the server: wait for it before reading the source.
                self.m
                    .db()
                    .write(|c| db::set_item_state(c, item.rowid, "pending", None))?;
                return Ok(Copied::Offline);
            }
            if landed && (migrated_before || (same_size && node.sha256.is_some())) {
                let sha = match hash_file(&src_path) {
                    Ok(s) => s,
                    Err(e) => return self.fail(item, &format!("cannot read: {e}")),
                };
                if let Some(e) = unchanged_since.filter(|e| e.sha256 == sha) {
                    if self.opts.delete_source {
                        // Not sent again; but its source goes only once this run has
                        // checked the server's copy the way --verify asks.
                        return self.check_migrated_copy(item, dest, node, size, mtime, sha);
                    }
                    // Migrated before and unchanged since (size, mtime and hash).
                    tracing::debug!(
                        "migration {}: {dest} unchanged since migration {}",
                        self.id,
                        e.migration_id
                    );
                    self.m.db().write(|c| {
                        db::set_item_copied(
                            c,
                            item.rowid,
                            "skipped",
                            size,
                            mtime,
                            &sha,
                            Some(node.ino),
                        )
                    })?;
                    return Ok(Copied::Done);
                }
                if same_size && node.sha256.as_deref() == Some(sha.as_str()) {
                    // The remote has this very content already (a copy that landed just
                    // before a crash, or a file put there earlier): verify, don't resend.
                    self.m.db().write(|c| {
                        db::set_item_copied(
                            c,
                            item.rowid,
                            "landed",
                            size,
                            mtime,
                            &sha,
                            Some(node.ino),
                        )
                    })?;
                    self.track(item, "landed", size, mtime, sha, node.ino);
                    return Ok(Copied::Done);
                }
            }
        }
        let new_in_drive = existing.is_none();
        self.m
            .db()
            .write(|c| db::set_item_state(c, item.rowid, "importing", None))?;
        let owner = self.owner(&src_path, false);
        for _ in 0..COPY_TRIES {
            let file = match File::open(&src_path) {
                Ok(f) => f,
                Err(e) => return self.fail(item, &format!("cannot read: {e}")),
            };
            let before = match file.metadata() {
                Ok(md) => md,
                Err(e) => return self.fail(item, &format!("cannot read: {e}")),
            };
            let mut reader = SourceReader {
                file,
                hash: Sha256::new(),
                bytes: 0,
                error: None,
                aborted: false,
                control: self.control,
                abortable: new_in_drive,
            };
            let mtime_t = before.modified().ok();
            self.control.counters.copies.fetch_add(1, Ordering::Relaxed);
            let result = core.import_file(dest, &mut reader, mtime_t, owner, &mut |_| {});
            let undo = |why: &str| {
                if new_in_drive {
                    if let Err(e) = core.remove_file(dest) {
                        tracing::warn!("cannot remove the unfinished copy {dest} ({why}): {e}");
                    }
                }
            };
            match result {
                Ok(ino) => {
                    let after = std::fs::metadata(&src_path).ok();
                    let steady = after.is_some_and(|a| {
                        a.len() == before.len()
                            && source_mtime_ns(&a) == source_mtime_ns(&before)
                            && reader.bytes == before.len()
                    });
                    if !steady {
                        tracing::info!(
                            "migration {}: {} changed while being copied; copying it again",
                            self.id,
                            src_path.display()
                        );
                        continue;
                    }
                    let sha = hex(&reader.hash.finalize());
                    let (size, mtime) = (before.len(), source_mtime_ns(&before));
                    self.m.db().write(|c| {
                        db::set_item_copied(c, item.rowid, "staged", size, mtime, &sha, Some(ino))
                    })?;
                    self.track(item, "staged", size, mtime, sha, ino);
                    return Ok(Copied::Done);
                }
                Err(_) if reader.aborted => {
                    undo("stopped");
                    self.m
                        .db()
                        .write(|c| db::set_item_state(c, item.rowid, "pending", None))?;
                    return Ok(Copied::Aborted);
                }
                Err(_) if reader.error.is_some() => {
                    undo("source unreadable");
                    let e = reader
                        .error
                        .take()
                        .unwrap_or_else(|| std::io::Error::other("?"));
                    return self.fail(item, &format!("cannot read: {e}"));
                }
                Err(FsError::NoSpace(_)) => {
                    undo("no room");
                    self.m
                        .db()
                        .write(|c| db::set_item_state(c, item.rowid, "pending", None))?;
                    return Ok(Copied::NoRoom);
                }
                Err(e) if is_transient(&e) => {
                    undo("offline");
                    self.m
                        .db()
                        .write(|c| db::set_item_state(c, item.rowid, "pending", None))?;
                    return Ok(Copied::Offline);
                }
                Err(e) => {
                    undo("refused");
                    return self.fail(item, &format!("the drive refused it: {e}"));
                }
            }
        }
        if new_in_drive {
            let _ = core.remove_file(dest);
        }
        self.fail(
            item,
            &format!("changed while being copied ({COPY_TRIES} tries); copy it when it is at rest"),
        )
    }

    fn track(&mut self, item: &ItemRow, state: &str, size: u64, mtime: i64, sha: String, ino: u64) {
        let mut it = item.clone();
        it.state = state.into();
        it.size = size;
        it.mtime_ns = mtime;
        it.sha256 = Some(sha);
        it.ino = Some(ino);
        self.in_flight.push(it);
    }

    /// Moves copied files along: staged → landed (or failed, if the remote refused it),
    /// landed → verified, verified → source removed. `now` skips the rate limit.
    fn advance(&mut self, now: bool) -> MigrateResult<()> {
        if self.in_flight.is_empty() {
            return Ok(());
        }
        if !now && self.last_check.is_some_and(|t| t.elapsed() < CHECK_EVERY) {
            return Ok(());
        }
        self.last_check = Some(Instant::now());
        let core = self.m.core.clone();
        let staged: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|i| i.state == "staged")
            .filter_map(|i| i.ino)
            .collect();
        let uploads = core.upload_states(&staged)?;
        let mut remote_ok = core.health.is_online();
        let mut keep = Vec::with_capacity(self.in_flight.len());
        for mut item in std::mem::take(&mut self.in_flight) {
            let dest = dest_path(&self.row.dest, &item.rel_path);
            let ino = item.ino.unwrap_or(0);
            if item.state == "staged" {
                if uploads.landed.contains(&ino) {
                    self.m
                        .db()
                        .write(|c| db::set_item_state(c, item.rowid, "landed", None))?;
                    item.state = "landed".into();
                } else if let Some((_, path, why)) = uploads
                    .refused
                    .iter()
                    .find(|(i, p, _)| *i == ino || dest.starts_with(&format!("{p}/")))
                {
                    let reason = if path == &dest {
                        format!("the server refused it: {why} (the upload stays in `ctl journal --failed`)")
                    } else {
                        format!("the server refused {path}, above it: {why}")
                    };
                    self.fail(&item, &reason)?;
                    continue;
                }
            }
            if item.state == "landed" && remote_ok {
                match self.verify(&item, &dest) {
                    Ok(Ok(etag)) => {
                        self.m.db().write(|c| {
                            db::set_item_verified(
                                c,
                                item.rowid,
                                etag.as_deref(),
                                self.opts.verify.name(),
                            )
                        })?;
                        item.state = "verified".into();
                        // Nobody asked for this content locally: it goes first.
                        if let Err(e) = core.evict_first(ino) {
                            tracing::debug!("evict_first {dest}: {e}");
                        }
                        core.cache_grew.notify_one();
                    }
                    Ok(Err(mismatch)) => {
                        self.fail_verification(&item, &format!("verification failed: {mismatch}"))?;
                        continue;
                    }
                    Err(e) => {
                        // Unreachable or busy: keep it, and the rest, for later.
                        tracing::debug!("migration {}: verifying {dest}: {e}", self.id);
                        remote_ok = false;
                    }
                }
            }
            if item.state == "verified" && self.opts.delete_source {
                self.remove_source(&item)?;
                item.state = "source_deleted".into();
            }
            if item.state == "verified" || item.state == "source_deleted" {
                continue;
            }
            keep.push(item);
        }
        self.in_flight = keep;
        self.control.counters.checks.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Checks the remote's copy of a landed file. Err: the remote could not be asked
    /// (try later); Ok(Err): it has something else; Ok(Ok): it has the source's content,
    /// in the version with that ETag (None: the server did not name one).
    fn verify(&self, item: &ItemRow, dest: &str) -> Checked {
        match self.opts.verify {
            Verify::Size => {
                let entry = match self.stat_remote(dest)? {
                    Ok(e) => e,
                    Err(why) => return Ok(Err(why)),
                };
                if entry.size != item.size {
                    return Ok(Err(format!(
                        "{} bytes on the server, {} in the source",
                        entry.size, item.size
                    )));
                }
                let uploaded = self
                    .m
                    .core
                    .node_at(dest)
                    .ok()
                    .flatten()
                    .and_then(|n| n.etag);
                if uploaded.is_some() && entry.etag != uploaded {
                    return Ok(Err(format!(
                        "the server's ETag {:?} is not the uploaded version's {:?}",
                        entry.etag, uploaded
                    )));
                }
                Ok(Ok(entry.etag))
            }
            Verify::Full => self.read_back(dest, item.size, item.sha256.as_deref()),
        }
    }

    /// The server's entry for `dest` now; Ok(Err) when it has none.
    fn stat_remote(&self, dest: &str) -> Result<Result<crate::remote::Entry, String>, RemoteError> {
        let core = &self.m.core;
        match core.runtime().block_on(core.remote().stat(dest)) {
            Ok(Some(e)) => Ok(Ok(e)),
            Ok(None) => Ok(Err("not found on the server".into())),
            Err(e) => permanent(e),
        }
    }

    /// Reads the server's copy of `dest` back — from the remote itself, never from the
    /// cache — and compares its SHA-256 with the source's.
    fn read_back(&self, dest: &str, size: u64, source_sha: Option<&str>) -> Checked {
        if size == 0 {
            let entry = match self.stat_remote(dest)? {
                Ok(e) => e,
                Err(why) => return Ok(Err(why)),
            };
            if entry.size != 0 {
                return Ok(Err(format!(
                    "{} bytes on the server, 0 in the source",
                    entry.size
                )));
            }
            return Ok(Ok(entry.etag));
        }
        let core = &self.m.core;
        let remote = core.remote().clone();
        let rt = core.runtime();
        let mut hash = Sha256::new();
        let mut offset = 0u64;
        // The version read, if every piece came from the same one.
        let mut etag: Option<Option<String>> = None;
        while offset < size {
            let len = VERIFY_PIECE.min(size - offset);
            let reply = match rt.block_on(remote.get_range(dest, offset, len)) {
                Ok(r) => r,
                Err(e) => return permanent(e),
            };
            if reply.offset != offset
                || reply.data.len() as u64 != len
                || reply.total_size.is_some_and(|t| t != size)
            {
                return Ok(Err(format!(
                    "the server's copy is not {size} bytes long (read {} at {})",
                    reply.data.len(),
                    reply.offset
                )));
            }
            etag = match etag {
                None => Some(reply.etag),
                Some(seen) if same_etag(seen.as_deref(), reply.etag.as_deref()) => Some(seen),
                // Changed while being read: what was compared is no one version.
                Some(_) => Some(None),
            };
            hash.update(&reply.data);
            offset += len;
        }
        let theirs = hex(&hash.finalize());
        match source_sha {
            Some(ours) if ours == theirs => Ok(Ok(etag.flatten())),
            ours => Ok(Err(format!(
                "SHA-256 on the server {theirs}, source {}",
                ours.unwrap_or("unknown")
            ))),
        }
    }

    /// A file an earlier run migrated, unchanged since, in a run with --delete-source:
    /// its source goes only if the server's copy is checked now as --verify asks —
    /// `full`: read back and compared, unless a full verification was recorded for this
    /// very size, mtime and SHA-256 against the version the server still has; `size`:
    /// the server's size, and its ETag against a verified or uploaded version of this
    /// content. Anything else keeps the source, listed with the reason.
    fn check_migrated_copy(
        &mut self,
        item: &ItemRow,
        dest: &str,
        node: &crate::store::Node,
        size: u64,
        mtime: i64,
        sha: String,
    ) -> MigrateResult<Copied> {
        let recorded = self.m.db().write(|c| {
            db::recorded_verification(
                c,
                &self.row.src,
                &self.row.dest,
                self.id,
                &item.rel_path,
                size,
                mtime,
                &sha,
                self.opts.verify == Verify::Full,
            )
        })?;
        let checked = self.check_against_server(dest, node, size, &sha, recorded.as_deref());
        match checked {
            Err(e) => {
                tracing::debug!("migration {}: checking {dest}: {e}", self.id);
                self.m
                    .db()
                    .write(|c| db::set_item_state(c, item.rowid, "pending", None))?;
                Ok(Copied::Offline)
            }
            Ok(Err(why)) => self.fail_verification(
                item,
                &format!("already on the server, but not as in the source: {why}"),
            ),
            Ok(Ok(etag)) => {
                self.m.db().write(|c| {
                    db::set_item_copied(
                        c,
                        item.rowid,
                        "landed",
                        size,
                        mtime,
                        &sha,
                        Some(node.ino),
                    )?;
                    db::set_item_verified(c, item.rowid, etag.as_deref(), self.opts.verify.name())
                })?;
                tracing::debug!(
                    "migration {}: {dest} on the server as in the source",
                    self.id
                );
                // Removed with the freshly copied ones, by `advance`.
                self.track(item, "verified", size, mtime, sha, node.ino);
                Ok(Copied::Done)
            }
        }
    }

    /// `recorded`: the version an earlier run verified this very source against.
    fn check_against_server(
        &self,
        dest: &str,
        node: &crate::store::Node,
        size: u64,
        sha: &str,
        recorded: Option<&str>,
    ) -> Checked {
        let entry = match self.stat_remote(dest)? {
            Ok(e) => e,
            Err(why) => return Ok(Err(why)),
        };
        if entry.size != size {
            return Ok(Err(format!(
                "{} bytes on the server, {size} in the source",
                entry.size
            )));
        }
        // A version the server may still name for this content. Only a named one counts:
        // without an ETag there is nothing to tell versions apart.
        let still = |known: Option<&str>| {
            entry.etag.is_some() && known.is_some() && same_etag(entry.etag.as_deref(), known)
        };
        match self.opts.verify {
            Verify::Full if still(recorded) => Ok(Ok(entry.etag)),
            Verify::Full => self.read_back(dest, size, Some(sha)),
            Verify::Size => {
                // The drive's version is this content when its hash is known (it is
                // forgotten when another version is seen).
                let uploaded = node
                    .etag
                    .as_deref()
                    .filter(|_| node.sha256.as_deref() == Some(sha));
                if still(recorded) || still(uploaded) {
                    Ok(Ok(entry.etag))
                } else {
                    Ok(Err(format!(
                        "the server's version (ETag {}) is not one verified or uploaded \
                         with this content; `--verify full` compares the bytes",
                        entry.etag.as_deref().unwrap_or("none")
                    )))
                }
            }
        }
    }

    /// Removes a verified file's source, unless it changed since it was copied.
    fn remove_source(&self, item: &ItemRow) -> MigrateResult<()> {
        let path = self.src.join(&item.rel_path);
        let note = match self.source_meta(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some((
                format!("verified; the source could not be checked: {e}"),
                SourceKept::NotRemovable,
            )),
            Ok(md) if md.len() != item.size || source_mtime_ns(&md) != item.mtime_ns => Some((
                "verified; the source changed since it was copied, so it was kept".into(),
                SourceKept::ChangedSinceCopied,
            )),
            Ok(_) => match std::fs::remove_file(&path) {
                Ok(()) => None,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => Some((
                    format!("verified; the source could not be removed: {e}"),
                    SourceKept::NotRemovable,
                )),
            },
        };
        match note {
            None => self
                .m
                .db()
                .write(|c| db::set_source_removed(c, item.rowid))?,
            Some((n, kept)) => {
                tracing::warn!("migration {}: {}: {n}", self.id, path.display());
                self.m
                    .db()
                    .write(|c| db::set_item_kept(c, item.rowid, "verified", &n, kept))?
            }
        }
        Ok(())
    }

    /// Gives the folders made their source's mtime (their files changed it meanwhile),
    /// deepest first; with --delete-source, removes source folders left empty whose
    /// copy is on the remote.
    fn finish_dirs(&self) -> MigrateResult<()> {
        let core = &self.m.core;
        let mut before = i64::MAX;
        loop {
            let dirs = self
                .m
                .db()
                .write(|c| db::created_dirs_before(c, self.id, before, BATCH))?;
            let Some(last) = dirs.last() else { break };
            before = last.rowid;
            for d in &dirs {
                let Some(ino) = d.ino else { continue };
                // Asked before the mtime is set: that change travels as a journal entry
                // of its own (a dead property), and the folder is on the server already.
                let landed = core.upload_states(&[ino])?.landed.contains(&ino);
                let mtime = ns_to_system_time(d.mtime_ns);
                if let Err(e) = core.setattr(ino, None, None, None, None, Some(mtime)) {
                    tracing::debug!("migration {}: mtime of {}: {e}", self.id, d.rel_path);
                }
                if self.opts.delete_source && landed {
                    // Fails (and is left) unless empty.
                    let _ = std::fs::remove_dir(self.src.join(&d.rel_path));
                }
            }
        }
        Ok(())
    }
}

/// Reads a source file for import, hashing what it reads, noting a read error (to tell
/// it from an error of the drive), and cutting a copy short when the migration stops.
struct SourceReader<'a> {
    file: File,
    hash: Sha256,
    bytes: u64,
    error: Option<std::io::Error>,
    aborted: bool,
    control: &'a Control,
    /// Only a copy of a file new in the drive is cut short: it can be removed again,
    /// where cutting a replacement would leave a torn file to upload.
    abortable: bool,
}

impl Read for SourceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.abortable
            && matches!(
                self.control.stop_requested(),
                Some(Stop::Cancel | Stop::Shutdown)
            )
        {
            self.aborted = true;
            return Err(std::io::Error::other("the migration is stopping"));
        }
        match self.file.read(buf) {
            Ok(n) => {
                self.hash.update(&buf[..n]);
                self.bytes += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let kind = e.kind();
                let text = e.to_string();
                self.error = Some(e);
                Err(std::io::Error::new(kind, text))
            }
        }
    }
}

/// What a check of the server's copy found: Err, the remote could not be asked (try
/// later); Ok(Err), it has something else (why); Ok(Ok), it has the source's content in
/// the version with that ETag (None: the server named none).
type Checked = Result<Result<Option<String>, String>, RemoteError>;

/// A remote error while checking: "not there" and refusals are answers, the rest means
/// "ask again later".
fn permanent<T>(e: RemoteError) -> Result<Result<T, String>, RemoteError> {
    match e {
        RemoteError::NotFound => Ok(Err("not found on the server".into())),
        e if e.is_retryable() => Err(e),
        e => Ok(Err(e.to_string())),
    }
}

/// An error of the drive that says "the remote is not there now", not "no".
fn is_transient(e: &FsError) -> bool {
    match e {
        FsError::Offline { .. } => true,
        FsError::Remote { source, .. } => source.is_retryable(),
        _ => false,
    }
}

/// SHA-256 of a local file.
fn hash_file(path: &std::path::Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex(&h.finalize()))
}
