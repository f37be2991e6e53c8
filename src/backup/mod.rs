//! Backups to the remote: davdrive's state store and the local sources the user named,
//! as `backup-<host>-<YYYYmmdd-HHMMSS>.tar.gz` (UTC) with a `.sha256` beside it, written
//! into the drive under the backup folder. They go through the sync journal like any
//! write: a backup made while the remote is down is uploaded when it returns.
//!
//! A run: `running` (the archive is made in `<cache>/backup-spool/`), `uploading` (both
//! files are queued, or wait in the spool until they can be), then `success`, `partial`
//! (a source could not be read: named in the log) or `failed`. After a success, archives
//! of this host older than the retention are deleted, never the newest successful one.
//! A daily schedule runs it at a local time; a run missed while the daemon was not
//! running is made up at the next start once a day has passed.
//!
//! Over 600 lines: one backup's life (schedule, archive, upload, landing, verify,
//! restore, keep), one state machine whose steps share its log.

pub mod archive;
mod replies;

pub use replies::{
    ArchiveEntry, BackupJob, BackupRow, BackupStatus, RemoteArchives, RunProgress,
    ScheduleDecision, Verified,
};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{Local, NaiveTime, TimeZone, Utc};
use tokio::sync::watch;

use crate::fs::{Core, FsError};
use crate::jobs::{Job, JobReport, Jobs, Kind};
use crate::store::{self, backups};

const DAY_S: i64 = 86400;

#[derive(Debug, Clone)]
pub struct BackupConfig {
    /// Local files and folders to back up beside the state store.
    pub sources: Vec<PathBuf>,
    /// Folder in the drive the archives go to ("/.davdrive/backups/<host>").
    pub dir: String,
    pub host: String,
    /// Daily run at this local time; `None` is off.
    pub at: Option<NaiveTime>,
    pub keep_days: u32,
    /// gzip level, 0 to 9.
    pub compression: u32,
}

impl BackupConfig {
    pub fn new(host: &str) -> BackupConfig {
        BackupConfig {
            sources: Vec::new(),
            dir: default_dir(host),
            host: host.to_string(),
            at: Some(NaiveTime::MIN),
            keep_days: 30,
            compression: 6,
        }
    }
}

pub fn default_dir(host: &str) -> String {
    format!("/.davdrive/backups/{host}")
}

/// `HH:MM`, `HH:MM:SS` or `off`.
pub fn parse_at(s: &str) -> std::result::Result<Option<NaiveTime>, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    NaiveTime::parse_from_str(s, "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M"))
        .map(Some)
        .map_err(|_| format!("'{s}' is not a time of day (HH:MM) or 'off'"))
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("a backup is running already ({0})")]
    Busy(String),
    #[error("no backup named {0:?} (names look like backup-<host>-YYYYmmdd-HHMMSS.tar.gz)")]
    BadName(String),
    #[error("the remote is unreachable: {0}")]
    Offline(String),
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("state store: {0}")]
    Store(#[from] rusqlite::Error),
}

type Result<T> = std::result::Result<T, BackupError>;

/// One run, as `ctl status` and `backup run --wait` see it.
pub struct Progress {
    pub id: i64,
    pub name: String,
    phase: Mutex<String>,
    done: AtomicU64,
    total: AtomicU64,
    finished: AtomicBool,
}

impl Progress {
    fn set_phase(&self, p: &str) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = p.to_string();
    }

    fn progress(&self) -> RunProgress {
        RunProgress {
            id: format!("backup-{}", self.id),
            kind: Kind::Backup,
            name: self.name.clone(),
            state: self.phase.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            done_bytes: self.done.load(Ordering::Relaxed),
            total_bytes: self.total.load(Ordering::Relaxed),
        }
    }
}

impl Job for Progress {
    fn report(&self) -> JobReport {
        JobReport::Backup(self.progress())
    }
    fn finished(&self) -> bool {
        self.finished.load(Ordering::Relaxed)
    }
}

pub struct Backups {
    core: Arc<Core>,
    cfg: BackupConfig,
    jobs: Arc<Jobs>,
    current: Mutex<Option<Arc<Progress>>>,
    stopping: AtomicBool,
    /// The schedule's latest decision (see `scheduler`); none until it made one.
    decision: Mutex<Option<ScheduleDecision>>,
}

impl Backups {
    /// The backup service of `core`. Runs cut off by a stop are marked failed; archives
    /// waiting to be uploaded are picked up again.
    pub fn start(core: Arc<Core>, cfg: BackupConfig, jobs: Arc<Jobs>) -> Result<Arc<Backups>> {
        let me = Arc::new(Backups {
            core,
            cfg,
            jobs,
            current: Mutex::new(None),
            stopping: AtomicBool::new(false),
            decision: Mutex::new(None),
        });
        let now = me.now_s();
        let waiting: Vec<(i64, String)> = me.core.db().write(|tx| {
            backups::fail_cut_off(tx, now)?;
            backups::uploading(tx)
        })?;
        // One at a time: the newest last, so `current` ends on it.
        for (id, name) in waiting {
            let progress = me.register(id, &name, "uploading");
            let this = me.clone();
            std::thread::Builder::new()
                .name("davdrive-backup".into())
                .spawn(move || this.finish_upload(&progress))
                .map_err(|e| BackupError::Failed(e.to_string()))?;
        }
        Ok(me)
    }

    /// Ends the background work (the threads notice within a second).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    fn now_s(&self) -> i64 {
        self.core.clock().now_s()
    }

    fn spool(&self) -> PathBuf {
        self.core.cache_dir().join("backup-spool")
    }

    fn register(&self, id: i64, name: &str, phase: &str) -> Arc<Progress> {
        let p = Arc::new(Progress {
            id,
            name: name.to_string(),
            phase: Mutex::new(phase.to_string()),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            finished: AtomicBool::new(false),
        });
        self.jobs.add(format!("backup-{id:09}"), p.clone());
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(p.clone());
        p
    }

    fn archive_name(&self, at_s: i64) -> String {
        let t = Utc.timestamp_opt(at_s, 0).single().unwrap_or_default();
        format!(
            "backup-{}-{}.tar.gz",
            self.cfg.host,
            t.format("%Y%m%d-%H%M%S")
        )
    }

    /// When an archive of this host was made, from its name.
    fn archive_time(&self, name: &str) -> Option<i64> {
        let stamp = name
            .strip_prefix(&format!("backup-{}-", self.cfg.host))?
            .strip_suffix(".tar.gz")?;
        chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d-%H%M%S")
            .ok()
            .map(|t| t.and_utc().timestamp())
    }

    /// Starts a backup in the background; returns its id and archive name.
    pub fn run_now(self: &Arc<Self>) -> Result<(i64, String)> {
        {
            let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(p) = cur.as_ref().filter(|p| !p.finished()) {
                return Err(BackupError::Busy(p.name.clone()));
            }
        }
        let mut started = self.now_s();
        // Names are to the second: never two runs under one name.
        loop {
            let name = self.archive_name(started);
            let taken = self.core.db().read(|c| backups::name_taken(c, &name))?;
            if !taken {
                break;
            }
            started += 1;
        }
        let name = self.archive_name(started);
        let now = self.now_s();
        let id =
            (self.core.db()).write(|tx| backups::insert_running(tx, &name, &self.cfg.dir, now))?;
        let progress = self.register(id, &name, "making the archive");
        let this = self.clone();
        std::thread::Builder::new()
            .name("davdrive-backup".into())
            .spawn(move || this.run(&progress))
            .map_err(|e| BackupError::Failed(e.to_string()))?;
        Ok((id, name))
    }

    fn end(&self, p: &Progress, state: &str, error: Option<String>) {
        self.record_end(p, state, error);
        self.finished(p, state);
    }

    fn finished(&self, p: &Progress, state: &str) {
        p.set_phase(state);
        p.finished.store(true, Ordering::Relaxed);
    }

    /// Writes the result to the log (the run still shows as running until `finished`).
    fn record_end(&self, p: &Progress, state: &str, error: Option<String>) {
        if let Some(e) = &error {
            tracing::error!("backup {}: {state}: {e}", p.name);
        } else {
            tracing::info!("backup {}: {state}", p.name);
        }
        let now = self.now_s();
        let r = (self.core.db())
            .write(|tx| backups::record_end(tx, p.id, state, now, error.as_deref()));
        if let Err(e) = r {
            tracing::error!("backup {}: cannot record the result: {e}", p.name);
        }
    }

    fn run(&self, p: &Progress) {
        let spool = self.spool();
        let out = spool.join(&p.name);
        let total: u64 = self.cfg.sources.iter().map(|s| tree_size(s)).sum::<u64>()
            + std::fs::metadata(self.core.cache_dir().join("state.db")).map_or(0, |m| m.len());
        p.total.store(total, Ordering::Relaxed);
        let built = archive::build(
            &out,
            &self.cfg.host,
            self.now_s(),
            &self.core.cache_dir().join("state.db"),
            &self.cfg.sources,
            self.cfg.compression,
            &spool.join(format!("scratch-{}", p.id)),
            &|n| {
                p.done.fetch_add(n, Ordering::Relaxed);
            },
        );
        let _ = std::fs::remove_dir_all(spool.join(format!("scratch-{}", p.id)));
        let built = match built {
            Ok(b) => b,
            Err(e) => {
                let _ = std::fs::remove_file(&out);
                return self.end(p, "failed", Some(e));
            }
        };
        let problems = (!built.problems.is_empty()).then(|| built.problems.join("; "));
        let r = self.core.db().write(|tx| {
            backups::set_uploading(tx, p.id, built.size, &built.sha256, problems.as_deref())
        });
        if let Err(e) = r {
            return self.end(p, "failed", Some(e.to_string()));
        }
        tracing::info!(
            "backup {}: {} files, {} bytes, sha256 {}",
            p.name,
            built.files,
            built.size,
            built.sha256
        );
        p.done.store(0, Ordering::Relaxed);
        p.total.store(built.size, Ordering::Relaxed);
        self.finish_upload(p)
    }

    /// Queues the archive (from the spool) and its checksum, waits until both have
    /// landed, then records the result and applies the retention.
    fn finish_upload(&self, p: &Progress) {
        let (queued, sha256, problems): (bool, Option<String>, Option<String>) =
            match self.core.db().read(|c| backups::upload_state(c, p.id)) {
                Ok(v) => v,
                Err(e) => return self.end(p, "failed", Some(e.to_string())),
            };
        let Some(sha256) = sha256 else {
            return self.end(p, "failed", Some("no checksum recorded".into()));
        };
        let archive_path = format!("{}/{}", self.cfg.dir, p.name);
        let sum_path = format!("{archive_path}.sha256");
        if !queued {
            let spooled = self.spool().join(&p.name);
            loop {
                if self.stopping.load(Ordering::Relaxed) {
                    return;
                }
                match self.queue(p, &spooled, &archive_path, &sum_path, &sha256) {
                    Ok(()) => break,
                    Err(BackupError::Failed(e)) => return self.end(p, "failed", Some(e)),
                    // A read-only mount of the same cache: the next read-write mount
                    // queues it.
                    Err(BackupError::Fs(FsError::ReadOnly)) => {
                        p.set_phase("waiting for a read-write mount");
                        p.finished.store(true, Ordering::Relaxed);
                        return;
                    }
                    Err(e) => {
                        p.set_phase(&format!("waiting to queue the upload: {e}"));
                        self.sleep(Duration::from_secs(2));
                    }
                }
            }
            let _ = std::fs::remove_file(&spooled);
        }
        // Both files are in the journal now: wait until they are on the remote, woken
        // by the replayer's progress (and at least every 250 ms, to see a stop).
        let mut progress = self.core.journal_progress();
        let mut said_offline = false;
        loop {
            if self.stopping.load(Ordering::Relaxed) {
                return;
            }
            match self.landed(&[&archive_path, &sum_path]) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => return self.end(p, "failed", Some(e)),
            }
            if self.core.health.is_online() {
                p.set_phase("uploading");
            } else {
                p.set_phase("waiting for the remote: will upload when it returns");
                if !said_offline {
                    tracing::warn!(
                        "backup {}: the remote is unreachable; it is staged and will be \
                         uploaded when the remote returns",
                        p.name
                    );
                    said_offline = true;
                }
            }
            self.core
                .wait_journal_progress(&mut progress, Duration::from_millis(250));
        }
        for path in [&archive_path, &sum_path] {
            if let Ok(ino) = self.core.resolve_path(path) {
                let _ = self.core.evict_first(ino);
            }
        }
        match problems {
            Some(what) => self.end(p, "partial", Some(what)),
            None => {
                // Logged first: the retention keeps the newest success, this one.
                self.record_end(p, "success", None);
                p.set_phase("deleting archives past the retention");
                if let Err(e) = self.prune() {
                    tracing::warn!("backup retention: {e}");
                }
                self.finished(p, "success");
            }
        }
    }

    fn sleep(&self, d: Duration) {
        let until = std::time::Instant::now() + d;
        while std::time::Instant::now() < until && !self.stopping.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn queue(
        &self,
        p: &Progress,
        spooled: &Path,
        archive_path: &str,
        sum_path: &str,
        sha256: &str,
    ) -> Result<()> {
        let mut f = std::fs::File::open(spooled)
            .map_err(|e| BackupError::Failed(format!("the archive left the spool: {e}")))?;
        let owner = self.core.default_owner();
        p.set_phase("queueing the upload");
        self.core
            .import_file(archive_path, &mut f, None, owner, &mut |n| {
                p.done.fetch_add(n, Ordering::Relaxed);
            })?;
        let line = format!("{sha256}  {}\n", p.name);
        self.core
            .import_file(sum_path, &mut line.as_bytes(), None, owner, &mut |_| {})?;
        self.core.db().write(|tx| backups::set_queued(tx, p.id))?;
        Ok(())
    }

    /// Whether every one of `paths` is on the remote; an error if its upload failed.
    fn landed(&self, paths: &[&str]) -> std::result::Result<bool, String> {
        for path in paths {
            let ino = match self.core.resolve_path(path) {
                Ok(ino) => ino,
                Err(FsError::Offline { .. }) | Err(FsError::Remote { .. }) => return Ok(false),
                Err(e) => return Err(format!("{path}: {e}")),
            };
            let failed = (self.core.db())
                .read(|c| store::journal::failure_of(c, ino))
                .ok();
            if let Some(e) = failed {
                return Err(format!("the upload of {path} failed: {e}"));
            }
            if !self.core.landed(ino).map_err(|e| e.to_string())? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Archives of this host in the backup folder, read from the remote (not the cache):
    /// (name, size, made at).
    fn remote_archives(&self) -> Result<Vec<(String, u64, i64)>> {
        let core = &self.core;
        let listed = core.runtime().block_on(core.remote().list(&self.cfg.dir));
        let entries = match listed {
            Ok(e) => e,
            Err(crate::remote::RemoteError::NotFound) => Vec::new(),
            Err(e) => return Err(BackupError::Offline(e.to_string())),
        };
        let mut found: Vec<(String, u64, i64)> = entries
            .into_iter()
            .filter(|e| !e.is_dir)
            .filter_map(|e| self.archive_time(&e.name).map(|t| (e.name, e.size, t)))
            .collect();
        found.sort_by_key(|a| a.2);
        Ok(found)
    }

    /// Deletes archives of this host older than the retention, except the newest
    /// successful one. Returns the names deleted.
    pub fn prune(&self) -> Result<Vec<String>> {
        let archives = self.remote_archives()?;
        let successes = self.core.db().read(backups::successes_newest_first)?;
        // The newest success still on the remote; without one in the log (a rebuilt
        // cache dir), the newest archive stands in for it.
        let keep = successes
            .into_iter()
            .find(|n| archives.iter().any(|a| &a.0 == n))
            .or_else(|| archives.last().map(|a| a.0.clone()));
        let cutoff = self.now_s() - self.cfg.keep_days as i64 * DAY_S;
        let dir = self.core.resolve_path(&self.cfg.dir)?;
        let mut deleted = Vec::new();
        for (name, _, made) in &archives {
            if *made > cutoff || Some(name) == keep.as_ref() {
                continue;
            }
            for n in [name.clone(), format!("{name}.sha256")] {
                match self.core.unlink(dir, &n) {
                    Ok(()) | Err(FsError::NotFound) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            tracing::info!("backup retention: deleted {name}");
            deleted.push(name.clone());
        }
        Ok(deleted)
    }

    /// The run with id `id`, from the log, with its progress while it runs.
    pub fn job(&self, id: i64) -> Result<BackupJob> {
        let run = self.core.db().read(|c| backups::get(c, id))?;
        let cur = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let progress = cur
            .filter(|p| p.id == id && !p.finished())
            .map(|p| p.progress());
        Ok(BackupJob { run, progress })
    }

    pub fn status(&self) -> Result<BackupStatus> {
        let last = self.core.db().read(backups::last).ok();
        let last_success = self.core.db().read(backups::last_success).ok();
        let remote = match self.remote_archives() {
            Ok(a) => RemoteArchives::Listed {
                count: a.len(),
                bytes: a.iter().map(|x| x.1).sum(),
            },
            Err(e) => RemoteArchives::Unknown {
                error: e.to_string(),
            },
        };
        let running = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|p| !p.finished())
            .map(|p| p.progress());
        Ok(BackupStatus {
            last,
            last_success,
            running,
            schedule: self.cfg.at.map(|t| t.format("%H:%M:%S").to_string()),
            next_at: self.cfg.at.map(|at| next_run(self.now_s(), at)),
            scheduler: self.scheduler(),
            keep_days: self.cfg.keep_days,
            dir: self.cfg.dir.clone(),
            sources: self.cfg.sources.clone(),
            remote,
        })
    }

    /// The archives on the remote, newest first, marked with what the log knows of each.
    pub fn list(&self) -> Result<Vec<ArchiveEntry>> {
        let archives = self.remote_archives()?;
        let mut out = Vec::new();
        for (name, size, made) in archives.into_iter().rev() {
            let logged = (self.core.db())
                .read(|c| backups::latest_named(c, &name))
                .ok();
            out.push(ArchiveEntry {
                state: logged.as_ref().map_or_else(
                    || "not in this mount's log".to_string(),
                    |l| l.state.clone(),
                ),
                sha256: logged.and_then(|l| l.sha256),
                name,
                size,
                made_at: made,
            });
        }
        Ok(out)
    }

    fn check_name(&self, name: &str) -> Result<String> {
        let name = if name.ends_with(".tar.gz") {
            name.to_string()
        } else {
            format!("{name}.tar.gz")
        };
        if name.contains('/') || !name.starts_with("backup-") || name.len() > 255 {
            return Err(BackupError::BadName(name));
        }
        Ok(name)
    }

    /// Downloads archive `name` from the remote (never the cache) into the spool and
    /// checks it: its `.sha256`, the log's checksum, and that it reads to its end with
    /// every file matching the manifest. Returns the downloaded file and what was found.
    fn fetch_checked(&self, name: &str) -> Result<(tempfile::TempPath, Verified)> {
        let name = self.check_name(name)?;
        let path = format!("{}/{name}", self.cfg.dir);
        let spool = self.spool();
        std::fs::create_dir_all(&spool).map_err(|e| BackupError::Failed(e.to_string()))?;
        let tmp = tempfile::NamedTempFile::new_in(&spool)
            .map_err(|e| BackupError::Failed(e.to_string()))?;
        let (got, size) = self.download(&path, tmp.as_file())?;
        let sum = self.download_small(&format!("{path}.sha256"))?;
        let expected = sum.split_whitespace().next().unwrap_or("").to_string();
        if expected != got {
            return Err(BackupError::Failed(format!(
                "{name}: SHA-256 mismatch: {name}.sha256 says {expected}, the archive on the remote has {got}"
            )));
        }
        let logged = (self.core.db())
            .read(|c| backups::logged_sha256(c, &name))
            .ok();
        if let Some(l) = logged.filter(|l| *l != got) {
            return Err(BackupError::Failed(format!(
                "{name}: SHA-256 mismatch: the backup log says {l}, the remote has {got}"
            )));
        }
        let checked =
            archive::check(tmp.path()).map_err(|e| BackupError::Failed(format!("{name}: {e}")))?;
        Ok((
            tmp.into_temp_path(),
            Verified {
                name,
                size,
                sha256: got,
                entries: checked.entries,
                files_checked: checked.files_checked,
                problems: checked.problems,
                restored_entries: None,
                to: None,
            },
        ))
    }

    pub fn verify(&self, name: &str) -> Result<Verified> {
        Ok(self.fetch_checked(name)?.1)
    }

    /// Downloads, checks and unpacks archive `name` into `to`.
    pub fn restore(&self, name: &str, to: &Path, force: bool) -> Result<Verified> {
        if !to.is_absolute() {
            return Err(BackupError::Failed(format!(
                "{}: give an absolute path",
                to.display()
            )));
        }
        let (file, mut report) = self.fetch_checked(name)?;
        let n = archive::extract(&file, to, force).map_err(BackupError::Failed)?;
        report.restored_entries = Some(n);
        report.to = Some(to.display().to_string());
        Ok(report)
    }

    /// Streams remote file `path` into `out`; returns its SHA-256 and size.
    fn download(&self, path: &str, out: &std::fs::File) -> Result<(String, u64)> {
        use sha2::Digest;
        use std::io::Write;
        const CHUNK: u64 = 8 << 20;
        let core = &self.core;
        let mut hasher = sha2::Sha256::new();
        let mut w = std::io::BufWriter::new(out);
        let mut offset = 0;
        loop {
            let reply = core
                .runtime()
                .block_on(core.remote().get_range(path, offset, CHUNK))
                .map_err(|e| match e {
                    crate::remote::RemoteError::NotFound => {
                        BackupError::BadName(path.rsplit('/').next().unwrap_or(path).into())
                    }
                    e if e.is_transport() => BackupError::Offline(e.to_string()),
                    e => BackupError::Failed(format!("{path}: {e}")),
                })?;
            if reply.offset != offset {
                return Err(BackupError::Failed(format!(
                    "{path}: the server sent the wrong range"
                )));
            }
            hasher.update(&reply.data);
            w.write_all(&reply.data)
                .map_err(|e| BackupError::Failed(e.to_string()))?;
            offset += reply.data.len() as u64;
            let done = reply.data.is_empty() || reply.total_size.is_none_or(|t| offset >= t);
            if done {
                break;
            }
        }
        w.flush().map_err(|e| BackupError::Failed(e.to_string()))?;
        Ok((crate::cache::hex(&hasher.finalize()), offset))
    }

    fn download_small(&self, path: &str) -> Result<String> {
        let tmp = tempfile::tempfile().map_err(|e| BackupError::Failed(e.to_string()))?;
        self.download(path, &tmp)?;
        let mut s = String::new();
        use std::io::{Read, Seek};
        let mut f = tmp;
        f.rewind().map_err(|e| BackupError::Failed(e.to_string()))?;
        f.take(4096)
            .read_to_string(&mut s)
            .map_err(|e| BackupError::Failed(format!("{path}: {e}")))?;
        Ok(s)
    }

    /// Runs the daily schedule until `shutdown`: first makes up a run missed while the
    /// daemon was not running, then sleeps until each next run.
    pub async fn schedule(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let Some(at) = self.cfg.at else { return };
        let this = self.clone();
        let missed = tokio::task::spawn_blocking(move || this.missed_run())
            .await
            .unwrap_or(false);
        let mut ran = None;
        if missed {
            tracing::info!("backup: making up the run missed while davdrive was not running");
            ran = self
                .start_logged()
                .map(|id| (id, "missed while davdrive was not running"));
        }
        loop {
            let now = self.now_s();
            let next = next_run(now, at);
            let next_s = next.to_string();
            if let Err(e) =
                (self.core.db()).write(|tx| store::set_meta(tx, "backup.next_at", &next_s))
            {
                tracing::warn!("backup: cannot record the next run: {e}");
            }
            // Said once the run it started (if any) is in the log: what the decision
            // shows is all it did.
            *self.decision.lock().unwrap_or_else(|e| e.into_inner()) = Some(ScheduleDecision {
                decided_at: now,
                ran: ran.map(|(id, _)| id),
                why: ran.map(|(_, why)| why.to_string()),
                next_at: next,
            });
            let wait = Duration::from_secs((next - now).max(0) as u64);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            tracing::info!("backup: scheduled run");
            ran = self.start_logged().map(|id| (id, "scheduled"));
        }
    }

    /// The schedule's latest decision: when it decided (unix s, the drive's clock), the
    /// run it started then (`ran`, a backup id, with `why`; null: none) and when it runs
    /// next (`next_at`). None before the schedule has decided anything, or when it is off.
    pub fn scheduler(&self) -> Option<ScheduleDecision> {
        self.decision
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Starts a run; its id, None if it could not start (logged).
    fn start_logged(self: &Arc<Self>) -> Option<i64> {
        match self.run_now() {
            Ok((id, name)) => {
                tracing::info!("backup {name} started");
                Some(id)
            }
            Err(e) => {
                tracing::warn!("backup not started: {e}");
                None
            }
        }
    }

    /// A scheduled time passed while the daemon was not running, and the last backup is
    /// more than a day old.
    fn missed_run(&self) -> bool {
        let db = self.core.db();
        let Some(next_at) = db
            .read(|c| store::get_meta(c, "backup.next_at"))
            .ok()
            .flatten()
            .and_then(|s| s.parse::<i64>().ok())
        else {
            return false;
        };
        let now = self.now_s();
        let last = db.read(backups::last_started_at).ok().flatten();
        next_at <= now && last.is_none_or(|l| now - l > DAY_S)
    }
}

/// The next time of day `at` (local time) after unix second `now`.
pub fn next_run(now: i64, at: NaiveTime) -> i64 {
    let local = Local
        .timestamp_opt(now, 0)
        .single()
        .unwrap_or_else(Local::now);
    let mut day = local.date_naive();
    for _ in 0..3 {
        let candidate = day
            .and_time(at)
            .and_local_timezone(Local)
            .earliest()
            .map(|t| t.timestamp())
            // A time that does not exist that day (clocks going forward): an hour later.
            .unwrap_or_else(|| day.and_time(at).and_utc().timestamp() + 3600);
        if candidate > now {
            return candidate;
        }
        day = day.succ_opt().unwrap_or(day);
    }
    now + DAY_S
}

/// Bytes below `path` (for the progress bar; errors count as nothing).
fn tree_size(path: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if m.is_dir() {
        std::fs::read_dir(path)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| tree_size(&e.path()))
                    .sum()
            })
            .unwrap_or(0)
    } else if m.is_file() {
        m.len()
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_of_day_parse() {
        assert_eq!(parse_at("off").unwrap(), None);
        assert_eq!(parse_at("00:00").unwrap(), Some(NaiveTime::MIN));
        assert_eq!(
            parse_at("23:59:30").unwrap(),
            NaiveTime::from_hms_opt(23, 59, 30)
        );
        assert!(parse_at("24:00").is_err());
        assert!(parse_at("noon").is_err());
    }

    #[test]
    fn the_next_run_is_later_today_or_tomorrow() {
        let at = NaiveTime::from_hms_opt(3, 0, 0).unwrap();
        let now = Local::now().timestamp();
        let next = next_run(now, at);
        assert!(next > now && next <= now + DAY_S + 3600, "{now} -> {next}");
        let t = Local.timestamp_opt(next, 0).unwrap();
        assert_eq!(t.time(), at);
        // Exactly at the time: the next one is a day later.
        assert!(next_run(next, at) - next >= DAY_S - 3600);
    }
}
