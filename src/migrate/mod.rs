//! Migration of an existing local tree onto the remote (`ctl migrate`), verified and
//! resumable.
//!
//! A migration walks SRC once, recording every item in the state store (`db`), then a
//! worker thread copies files into the drive through `Core::import_file` — so they are
//! journaled and staged like any write, and reach the remote through the replayer, also
//! after an outage — waits for each to land, verifies it against the remote, and only
//! then (with `--delete-source`) removes the source file. Each step is a durable state of
//! the item (`importing` → `staged` → `landed` → `verified` → `source_deleted`), so a
//! restart, even after `kill -9`, goes on from where it was without sending again what
//! had landed.
//!
//! Over 600 lines: one migration's life (start, resume after a crash, pause, cancel,
//! status) is one state machine; the walk and the copying are in `walk.rs` and
//! `worker.rs`.

pub use crate::store::migrations as db;
mod replies;
mod walk;
mod worker;

pub use replies::{
    ByteCounts, Cancelled, ErrorItem, Errors, FileCounts, MigrationJob, MigrationStatus,
    SourceReport, WorkerReport,
};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::fs::{Core, FsError};
use crate::jobs::{Job, JobReport, Jobs};
use crate::store::{self, Kind, StoreError};

/// How a landed file is checked against the remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Verify {
    /// Read it back from the remote and compare SHA-256 with the source's.
    Full,
    /// Compare the remote's size and ETag with what was uploaded.
    Size,
}

impl Verify {
    /// As `--verify` spells it (and the store records it).
    pub fn name(self) -> &'static str {
        match self {
            Verify::Full => "full",
            Verify::Size => "size",
        }
    }
}

impl std::str::FromStr for Verify {
    type Err = MigrateError;
    fn from_str(s: &str) -> Result<Verify, MigrateError> {
        match s {
            "full" => Ok(Verify::Full),
            "size" => Ok(Verify::Size),
            other => Err(MigrateError::BadInput(format!(
                "--verify {other:?}: say full or size"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Options {
    pub verify: Verify,
    pub delete_source: bool,
    pub exclude: Vec<String>,
    pub follow_symlinks: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            verify: Verify::Full,
            delete_source: false,
            exclude: Vec::new(),
            follow_symlinks: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The request cannot be carried out as given.
    #[error("{0}")]
    BadInput(String),
    #[error("no migration {0} (see `ctl migrate list`)")]
    UnknownId(i64),
    #[error("migration {id} is {state}: {what}")]
    WrongState {
        id: i64,
        state: String,
        what: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        MigrateError::Store(StoreError::Sqlite(e))
    }
}

pub type MigrateResult<T> = Result<T, MigrateError>;

/// States a migration does not leave.
pub const FINAL_STATES: [&str; 4] = ["completed", "completed_with_errors", "cancelled", "failed"];

/// Why a worker was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Pause,
    Cancel,
    /// The daemon is stopping: the migration stays `running` and resumes at next start.
    Shutdown,
}

#[derive(Default)]
struct ControlState {
    stop: Option<Stop>,
    /// The worker thread has decided to end (a resume must start a new one).
    exited: bool,
}

/// What the workers of one migration did since the daemon started, for `status`: a
/// pause or a stop is seen to hold when these stand still while the worker would have
/// moved them.
#[derive(Default)]
struct WorkerCounters {
    /// Copies of a file into the drive begun (each try counts).
    copies: AtomicU64,
    /// Passes over the copied files: landed yet? verified? source to remove?
    checks: AtomicU64,
}

/// What a running worker and the commands share.
struct Control {
    state: Mutex<ControlState>,
    /// Shared by the successive workers of the migration.
    counters: Arc<WorkerCounters>,
    wake: Condvar,
    /// When this run of the worker started, and the bytes done then (for the rate).
    started: Instant,
    done_at_start: Mutex<Option<u64>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Control {
    fn new(counters: Arc<WorkerCounters>) -> Arc<Control> {
        Arc::new(Control {
            state: Mutex::new(ControlState::default()),
            counters,
            wake: Condvar::new(),
            started: Instant::now(),
            done_at_start: Mutex::new(None),
            thread: Mutex::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stop_requested(&self) -> Option<Stop> {
        self.lock().stop
    }

    /// The stop asked for, if any; the worker that gets one ends, and says so in the
    /// same breath, so a resume racing with it starts a new worker instead of counting
    /// on this one.
    fn take_stop(&self) -> Option<Stop> {
        let mut st = self.lock();
        if st.stop.is_some() {
            st.exited = true;
        }
        st.stop
    }

    /// Whether the worker's thread is alive: once it has ended, nothing copies. (Its
    /// handle is there from just after the spawn until a cancel or shutdown joins it.)
    fn running(&self) -> bool {
        let alive = (self.thread.lock().unwrap_or_else(|p| p.into_inner()))
            .as_ref()
            .map(|h| !h.is_finished());
        alive.unwrap_or_else(|| !self.lock().exited)
    }

    fn request(&self, stop: Stop) {
        self.lock().stop = Some(stop);
        self.wake.notify_all();
    }

    /// Sleeps up to `d`, less if a stop is asked for.
    fn wait(&self, d: std::time::Duration) {
        let st = self.lock();
        if st.stop.is_none() {
            let _ = self.wake.wait_timeout(st, d);
        }
    }
}

/// The migration service of one mount: its workers, over the core's state store.
pub struct Migrations {
    core: Arc<Core>,
    jobs: Arc<Jobs>,
    /// Where the drive is mounted (None for a core without kernel): SRC may not be in it.
    mountpoint: Option<PathBuf>,
    workers: Mutex<HashMap<i64, Arc<Control>>>,
    me: Weak<Migrations>,
}

fn now_s() -> i64 {
    store::now_ms() / 1000
}

/// `dest` joined with `rel` ("/a" + "b/c" → "/a/b/c").
pub fn dest_path(dest: &str, rel: &str) -> String {
    if dest == "/" {
        format!("/{rel}")
    } else {
        format!("{dest}/{rel}")
    }
}

impl Migrations {
    /// Opens the migration tables of `core`'s store and resumes the migrations that were
    /// running when the daemon last stopped (however it stopped). Call before the
    /// replayer starts: copies cut off by a crash are undone here, before they are sent.
    pub fn start(
        core: Arc<Core>,
        jobs: Arc<Jobs>,
        mountpoint: Option<PathBuf>,
    ) -> MigrateResult<Arc<Migrations>> {
        let m = Arc::new_cyclic(|me| Migrations {
            core,
            jobs,
            mountpoint,
            workers: Mutex::new(HashMap::new()),
            me: me.clone(),
        });
        let (running, paused) = m.db().write(|c| {
            Ok::<_, rusqlite::Error>((db::in_state(c, "running")?, db::in_state(c, "paused")?))
        })?;
        for id in running.iter().chain(&paused) {
            m.undo_interrupted_copies(*id)?;
            m.register_job(*id);
        }
        for id in running {
            tracing::info!("resuming migration {id}");
            m.spawn_worker(id);
        }
        Ok(m)
    }

    /// The core's state store: its writer, never a second one (that would make the
    /// core's transactions fail with "database is locked" when they meet our writes).
    /// Each call is one transaction, never held across a call into the core. What only
    /// shows progress (`status`, `list`, `errors`) reads on its reader instead.
    fn db(&self) -> &store::Store {
        self.core.db()
    }

    fn workers(&self) -> MutexGuard<'_, HashMap<i64, Arc<Control>>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A crash in the middle of a copy leaves a partial file that the core's recovery
    /// queues for upload. Where the file is new (never on the remote), removing it drops
    /// that upload, so no torn copy is sent; the item is copied again.
    fn undo_interrupted_copies(&self, id: i64) -> MigrateResult<()> {
        let Some(row) = self.db().write(|c| db::get(c, id))? else {
            return Ok(());
        };
        let items = self.db().write(|c| db::interrupted(c, id))?;
        for it in items {
            let path = dest_path(&row.dest, &it.rel_path);
            if let Some(node) = self.core.node_at(&path)? {
                if node.kind == Kind::File && !node.on_remote {
                    if let Err(e) = self.core.remove_file(&path) {
                        tracing::warn!(
                            "migration {id}: cannot remove the cut-off copy {path}: {e}"
                        );
                    }
                }
            }
            self.db()
                .write(|c| db::set_item_state(c, it.rowid, "pending", None))?;
        }
        Ok(())
    }

    fn register_job(&self, id: i64) {
        self.jobs.add(
            format!("migration-{id}"),
            Arc::new(JobView {
                migrations: self.me.clone(),
                id,
            }),
        );
    }

    fn spawn_worker(&self, id: i64) {
        let counters = self
            .workers()
            .get(&id)
            .map(|c| c.counters.clone())
            .unwrap_or_default();
        let control = Control::new(counters);
        self.workers().insert(id, control.clone());
        let Some(me) = self.me.upgrade() else { return };
        let c = control.clone();
        let handle = std::thread::Builder::new()
            .name(format!("davdrive-migrate-{id}"))
            .spawn(move || worker::run(me, id, c))
            .expect("spawn a thread");
        *control.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    }

    /// Starts migrating the local folder `src` to `dest` (mount-relative, "/a/b").
    /// Returns the new migration's id at once; the work runs in a thread of its own.
    pub fn start_migration(&self, src: &Path, dest: &str, opts: Options) -> MigrateResult<i64> {
        if !src.is_absolute() {
            return Err(MigrateError::BadInput(format!(
                "{}: give SRC_DIR as an absolute path",
                src.display()
            )));
        }
        let src = std::fs::canonicalize(src)
            .map_err(|e| MigrateError::BadInput(format!("SRC_DIR {}: {e}", src.display())))?;
        if !src.is_dir() {
            return Err(MigrateError::BadInput(format!(
                "SRC_DIR {} is not a directory",
                src.display()
            )));
        }
        if let Some(mnt) = &self.mountpoint {
            if src.starts_with(mnt) {
                return Err(MigrateError::BadInput(format!(
                    "SRC_DIR {} is inside the mount {}: give a local folder outside it",
                    src.display(),
                    mnt.display()
                )));
            }
        }
        if src.starts_with(self.core.cache_dir()) {
            return Err(MigrateError::BadInput(format!(
                "SRC_DIR {} is inside the drive's cache dir",
                src.display()
            )));
        }
        let src_s = src
            .to_str()
            .ok_or_else(|| MigrateError::BadInput(format!("{}: not UTF-8", src.display())))?
            .to_string();
        walk::excludes(&opts.exclude)?;
        if !dest.starts_with('/') || dest.split('/').any(|p| p == "..") {
            return Err(MigrateError::BadInput(format!(
                "DEST {dest:?}: give a path inside the mount"
            )));
        }
        let dest = if dest.len() > 1 {
            dest.trim_end_matches('/')
        } else {
            dest
        };
        match self.core.resolve_path(dest) {
            Ok(ino) if self.core.getattr(ino)?.kind != Kind::Dir => {
                return Err(MigrateError::BadInput(format!(
                    "DEST {dest} is a file in the drive; give a folder (it is made if missing)"
                )))
            }
            Ok(_) | Err(FsError::NotFound) => {}
            // Offline and never listed: the worker makes it, or fails with the reason.
            Err(e) => tracing::debug!("migrate: DEST {dest} not checked: {e}"),
        }
        let options_json = serde_json::to_string(&opts).expect("options serialize");
        // One transaction: the check and the insert see the same journal of migrations.
        let id = self
            .db()
            .write(|c| match db::active_for_pair(c, &src_s, dest)? {
                Some(other) => Ok(Err(other)),
                None => db::insert_migration(c, &src_s, dest, &options_json, now_s()).map(Ok),
            })?
            .map_err(|other| {
                MigrateError::BadInput(format!(
                    "migration {other} of {src_s} to {dest} is not finished: resume or cancel it"
                ))
            })?;
        tracing::info!("migration {id}: {src_s} -> {dest} started");
        self.register_job(id);
        self.spawn_worker(id);
        Ok(id)
    }

    fn row(&self, id: i64) -> MigrateResult<db::MigrationRow> {
        self.db()
            .write(|c| db::get(c, id))?
            .ok_or(MigrateError::UnknownId(id))
    }

    /// Stops taking new files after the one being copied; what is staged still lands.
    pub fn pause(&self, id: i64) -> MigrateResult<MigrationStatus> {
        let row = self.row(id)?;
        if row.state != "running" {
            return Err(MigrateError::WrongState {
                id,
                state: row.state,
                what: "only a running migration can be paused",
            });
        }
        self.db()
            .write(|c| db::set_state(c, id, "paused", None, None))?;
        if let Some(c) = self.workers().get(&id) {
            c.request(Stop::Pause);
        }
        tracing::info!("migration {id} paused");
        self.status(id)
    }

    pub fn resume(&self, id: i64) -> MigrateResult<MigrationStatus> {
        let row = self.row(id)?;
        if row.state != "paused" {
            return Err(MigrateError::WrongState {
                id,
                state: row.state,
                what: "only a paused migration can be resumed",
            });
        }
        self.db()
            .write(|c| db::set_state(c, id, "running", None, None))?;
        let live = self.workers().get(&id).cloned();
        let revived = live.is_some_and(|c| {
            let mut st = c.lock();
            if st.exited {
                false
            } else {
                // Still finishing the file it had when paused: it just goes on.
                st.stop = None;
                true
            }
        });
        if !revived {
            self.spawn_worker(id);
        }
        tracing::info!("migration {id} resumed");
        self.status(id)
    }

    /// Stops for good. What landed stays on the remote; what was staged in the drive is
    /// still uploaded (it is a whole copy, and a change like any other by then).
    pub fn cancel(&self, id: i64) -> MigrateResult<Cancelled> {
        let row = self.row(id)?;
        if FINAL_STATES.contains(&row.state.as_str()) {
            return Err(MigrateError::WrongState {
                id,
                state: row.state,
                what: "it has ended already",
            });
        }
        self.db()
            .write(|c| db::set_state(c, id, "cancelled", None, Some(now_s())))?;
        let control = self.workers().get(&id).cloned();
        if let Some(c) = control {
            c.request(Stop::Cancel);
            // Wait for the file being copied, so the reply tells what was left.
            // Taken out first: `status` reads the handle meanwhile.
            let handle = c.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(h) = handle {
                let _ = h.join();
            }
        }
        let counts = self.db().write(|c| db::counts(c, id))?;
        let (landed, landed_bytes) = counts.files(&["landed", "verified", "source_deleted"]);
        let (staged, staged_bytes) = counts.files(&["staged", "importing"]);
        let (left, left_bytes) = counts.files(&["pending"]);
        tracing::info!("migration {id} cancelled");
        Ok(Cancelled {
            id,
            state: "cancelled".into(),
            dest: row.dest,
            landed_files: landed,
            landed_bytes,
            staged_files: staged,
            staged_bytes,
            not_copied_files: left,
            not_copied_bytes: left_bytes,
            walk_done: row.walk_done,
        })
    }

    /// Asks every worker to stop after its current file and waits for them; their
    /// migrations stay `running` and resume at the next start.
    pub fn shutdown(&self) {
        let controls: Vec<Arc<Control>> = self.workers().values().cloned().collect();
        for c in &controls {
            c.request(Stop::Shutdown);
        }
        for c in controls {
            // Taken out first: `status` reads the handle meanwhile.
            let handle = c.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(h) = handle {
                let _ = h.join();
            }
        }
    }

    /// Progress of one migration. Read on the store's reader, in one read transaction:
    /// it never waits for the worker's writes (a copy holds the writer for each of its
    /// steps), and its figures are all of one commit. It needs no uncommitted change:
    /// the commands that change a migration commit before they answer with this.
    pub fn status(&self, id: i64) -> MigrateResult<MigrationStatus> {
        let read = self.db().read(|c| {
            let Some(row) = db::get(c, id)? else {
                return Ok(None);
            };
            let options: Option<Options> = serde_json::from_str(&row.options_json).ok();
            let kept_counts = match &options {
                Some(o) if o.delete_source => Some(db::kept_counts(c, id)?),
                _ => None,
            };
            let counts = db::counts(c, id)?;
            let errors = db::error_count(c, id)?;
            Ok::<_, rusqlite::Error>(Some((row, options, kept_counts, counts, errors)))
        })?;
        let (row, options, kept_counts, counts, errors) =
            read.ok_or(MigrateError::UnknownId(id))?;
        let (total, total_bytes) = counts.files(&[
            "pending",
            "importing",
            "staged",
            "landed",
            "verified",
            "source_deleted",
            "skipped",
            "failed",
        ]);
        let (done, done_bytes) = counts.files(&["verified", "source_deleted"]);
        let (deleted, _) = counts.files(&["source_deleted"]);
        let (skipped, skipped_bytes) = counts.files(&["skipped"]);
        let (failed, failed_bytes) = counts.files(&["failed"]);
        let (staged, staged_bytes) = counts.files(&["importing", "staged"]);
        let (landed, _) = counts.files(&["landed"]);
        let (pending, _) = counts.files(&["pending"]);
        let finished_bytes = done_bytes + skipped_bytes + failed_bytes;
        let percent = if !row.walk_done {
            0.0
        } else if total_bytes > 0 {
            100.0 * finished_bytes as f64 / total_bytes as f64
        } else if total > 0 {
            100.0 * (done + skipped + failed) as f64 / total as f64
        } else {
            100.0
        };
        let mut rate = None;
        if row.state == "running" {
            if let Some(c) = self.workers().get(&id) {
                let base = *c.done_at_start.lock().unwrap_or_else(|p| p.into_inner());
                let secs = c.started.elapsed().as_secs_f64();
                if let Some(base) = base {
                    if secs > 0.5 {
                        rate = Some(done_bytes.saturating_sub(base) as f64 / secs);
                    }
                }
            }
        }
        let control = self.workers().get(&id).cloned();
        let worker = match control {
            Some(c) => WorkerReport {
                running: c.running(),
                copies: c.counters.copies.load(Ordering::Relaxed),
                checks: c.counters.checks.load(Ordering::Relaxed),
            },
            None => WorkerReport {
                running: false,
                copies: 0,
                checks: 0,
            },
        };
        let remaining = total_bytes.saturating_sub(finished_bytes);
        let eta = rate
            .filter(|r| *r > 0.0 && row.walk_done)
            .map(|r| (remaining as f64 / r).ceil() as u64);
        let source = kept_counts.map(|kept| source_report(&row, &counts, &kept));
        let phase = match row.state.as_str() {
            "running" if !row.walk_done => "walking",
            "running" if pending > 0 => "copying",
            "running" => "verifying",
            s => s,
        };
        let phase = phase.to_string();
        Ok(MigrationStatus {
            id,
            src: row.src,
            dest: row.dest,
            state: row.state,
            phase,
            error: row.error,
            options,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            walk_done: row.walk_done,
            files: FileCounts {
                total,
                done,
                failed,
                skipped,
                pending,
                staged,
                landed,
                source_deleted: deleted,
            },
            dirs: counts.of("dir", None),
            other_skipped: counts.others("skipped"),
            other_failed: counts.others("failed") + counts.of("dir", Some("failed")),
            excluded: row.excluded,
            bytes: ByteCounts {
                total: total_bytes,
                done: done_bytes,
                staged: staged_bytes,
            },
            percent: (percent * 10.0).round() / 10.0,
            rate_bytes_per_s: rate.map(|r| r.round() as u64),
            eta_s: eta,
            errors,
            source,
            worker,
        })
    }

    /// Every migration, oldest first, with its progress.
    pub fn list(&self) -> MigrateResult<Vec<MigrationStatus>> {
        let ids: Vec<i64> = self.db().read(db::list)?.iter().map(|r| r.id).collect();
        let mut out = Vec::new();
        for id in ids {
            out.push(self.status(id)?);
        }
        Ok(out)
    }

    /// Migrations not ended yet, or the latest one if all have.
    pub fn current(&self) -> MigrateResult<Vec<MigrationStatus>> {
        let rows = self.db().read(db::list)?;
        let mut ids: Vec<i64> = rows
            .iter()
            .filter(|r| !FINAL_STATES.contains(&r.state.as_str()))
            .map(|r| r.id)
            .collect();
        if ids.is_empty() {
            ids.extend(rows.last().map(|r| r.id));
        }
        let mut out = Vec::new();
        for id in ids {
            out.push(self.status(id)?);
        }
        Ok(out)
    }

    /// Items that failed, and those skipped for a reason (symlinks), with the reason.
    pub fn errors(&self, id: i64, limit: usize) -> MigrateResult<Errors> {
        let (known, total, errors) = self.db().read(|c| {
            Ok::<_, rusqlite::Error>((
                db::get(c, id)?.is_some(),
                db::error_count(c, id)?,
                db::errors(c, id, limit)?,
            ))
        })?;
        if !known {
            return Err(MigrateError::UnknownId(id));
        }
        let items = errors
            .into_iter()
            .map(|(path, kind, state, error)| ErrorItem {
                path,
                kind,
                state,
                error,
            })
            .collect();
        Ok(Errors { id, total, items })
    }
}

/// With --delete-source: how many source files were removed, how many were kept and why
/// (a count per reason; `errors` lists each), and how many are still to be decided on.
fn source_report(
    row: &db::MigrationRow,
    counts: &db::Counts,
    kept_counts: &[(String, u64)],
) -> SourceReport {
    let (removed, _) = counts.files(&["source_deleted"]);
    let mut because = BTreeMap::new();
    for why in db::SourceKept::ALL {
        let n = kept_counts
            .iter()
            .find(|(code, _)| code == why.code())
            .map_or(0, |(_, n)| *n);
        because.insert(why.code().to_string(), n);
    }
    let decided: u64 = kept_counts.iter().map(|(_, n)| n).sum();
    // Left alone from the start: what --exclude named, and what is not a regular file.
    let not_files = counts.others("skipped") + counts.others("failed");
    because.insert("excluded".into(), row.excluded);
    because.insert("not_a_regular_file".into(), not_files);
    let kept = decided + row.excluded + not_files;
    let (files, _) = counts.files(&[
        "pending",
        "importing",
        "staged",
        "landed",
        "verified",
        "source_deleted",
        "skipped",
        "failed",
    ]);
    SourceReport {
        removed,
        kept,
        kept_because: because,
        to_do: files.saturating_sub(removed + decided),
    }
}

/// A migration as `ctl status` lists it among the jobs.
struct JobView {
    migrations: Weak<Migrations>,
    id: i64,
}

impl Job for JobView {
    fn report(&self) -> JobReport {
        let status = self
            .migrations
            .upgrade()
            .and_then(|m| m.status(self.id).ok());
        let status = status.as_ref();
        JobReport::Migration(MigrationJob {
            id: format!("migration-{}", self.id),
            kind: crate::jobs::Kind::Migration,
            state: status.map(|s| s.state.clone()),
            percent: status.map(|s| s.percent),
            src: status.map(|s| s.src.clone()),
            dest: status.map(|s| s.dest.clone()),
        })
    }

    fn finished(&self) -> bool {
        let Some(m) = self.migrations.upgrade() else {
            return true;
        };
        let row = m.db().read(|c| db::get(c, self.id));
        match row {
            Ok(Some(row)) => FINAL_STATES.contains(&row.state.as_str()),
            _ => true,
        }
    }
}
