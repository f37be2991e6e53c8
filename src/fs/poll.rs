//! The background poll: another machine's changes show up on their own in the folders
//! that matter, without anything here looking at them.
//!
//! **Which folders.** Pinned folders (every folder at or below a pin, and the folder of
//! a pinned file), the folders of open files, and the folders used most recently
//! (`recent` of them, used within `recent_for`). A round sends at most `budget`
//! requests: used folders come first (with at most three quarters of it while pinned
//! folders wait), then the pinned ones round-robin from where the last round stopped, so
//! a huge pinned tree is covered over several rounds.
//!
//! **How.** Where the server propagates folder ETags (Nextcloud, ownCloud: a folder's
//! ETag changes whenever anything inside it does), one PROPFIND Depth 0 per folder tells
//! whether it changed, and only changed folders are listed (Depth 1). That is learnt,
//! never assumed: until a listing shows a file's new version together with a new ETag
//! of its folder, every folder is listed; a folder without an ETag, or whose listing
//! changed while its ETag did not, marks the server as not propagating for the rest of
//! the run. Every `audit_every` rounds one folder is listed whatever its ETag says, so a
//! server that stops propagating (or only seemed to) is found out.
//!
//! **Applied as any listing.** Listings go through `listing.rs`: the same merge (clean
//! content of a changed file dropped, local changes kept and met as conflicts at upload,
//! subtrees removed as sets), registered as a refresh of the folder, and the kernel told
//! what changed (`KernelCache`). Pinned files that changed or appeared are fetched again
//! in the background.
//!
//! Nothing here holds a lock across a request; a round runs on a blocking thread of the
//! runtime; offline, a round is skipped, and a transport error ends it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use super::listing::Seen;
use super::{lock, Core, CoreConfig, FsError, FsResult};
use crate::remote::{same_etag, RemoteError};
use crate::store::{self, Kind};

/// How the background poll runs.
#[derive(Debug, Clone)]
pub struct PollConfig {
    /// Time from the end of one round to the start of the next; zero: no poll.
    pub interval: Duration,
    /// Requests one round may send (Depth 0 and Depth 1 PROPFINDs alike).
    pub budget: usize,
    /// How many of the most recently used folders are polled.
    pub recent: usize,
    /// A folder counts as recently used this long after its last use.
    pub recent_for: Duration,
    /// Every this many rounds, one folder is listed whatever its ETag says (0: never).
    pub audit_every: u64,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            interval: Duration::from_secs(30),
            budget: 32,
            recent: 16,
            recent_for: Duration::from_secs(3600),
            audit_every: 10,
        }
    }
}

/// What the server's folder ETags were found to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Propagation {
    /// Not known yet: every polled folder is listed.
    #[default]
    Unknown,
    /// A folder's ETag changes with what is inside: unchanged folders cost one Depth 0.
    Propagated,
    /// Absent, or not following changes inside: every polled folder is listed.
    NotPropagated,
}

impl Propagation {
    fn as_str(self) -> &'static str {
        match self {
            Propagation::Unknown => "unknown",
            Propagation::Propagated => "propagated",
            Propagation::NotPropagated => "not_propagated",
        }
    }
}

/// One round of the poll, for `ctl status` and tests.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PollReport {
    /// When the round started, in unix seconds (as the core's clock says).
    pub at: i64,
    pub took_ms: u64,
    /// Folders checked, by their ETag or by a listing.
    pub folders: usize,
    /// Of them, listed (PROPFIND Depth 1).
    pub listed: usize,
    /// Requests sent.
    pub requests: usize,
    /// Names found added, removed, or with a new version or new metadata.
    pub changes: usize,
    /// Pinned files that changed or appeared, being fetched again.
    pub refetch: usize,
    /// Folders left for later rounds: the request budget was spent.
    pub deferred: usize,
    /// Checks that failed (logged).
    pub errors: usize,
    /// Why the round did nothing, when it did nothing (`offline`).
    pub skipped: Option<String>,
    /// What the server's folder ETags were found to do: `unknown`, `propagated`,
    /// `not_propagated`.
    pub folder_etags: String,
}

/// The poll as `ctl status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PollStatus {
    /// Seconds between rounds; 0: the poll is off.
    pub interval_s: u64,
    pub rounds: u64,
    pub changes_total: u64,
    pub folder_etags: String,
    /// Pinned files being fetched again right now.
    pub refetching: usize,
    pub last: Option<PollReport>,
}

/// The poll's memory (in memory only: after a restart every folder is listed once).
#[derive(Default)]
pub(super) struct PollState {
    inner: Mutex<Inner>,
    /// Folder → when it was last used (clock ms). Kept small (see `note_use`).
    recent: Mutex<HashMap<u64, i64>>,
    /// Pinned files being fetched again.
    refetching: Mutex<HashSet<u64>>,
    /// A round is running (rounds never overlap).
    running: AtomicBool,
}

#[derive(Default)]
struct Inner {
    /// What the last listing of each polled folder saw.
    seen: HashMap<u64, Seen>,
    /// Folders whose last listing left a change untaken (a file open here): listed
    /// again, whatever their ETag says.
    relist: HashSet<u64>,
    propagation: Propagation,
    /// The last pinned folder polled: the next round goes on after it.
    cursor: u64,
    /// Folders to list first in the next round: found changed when the budget was
    /// spent, or the parent of a folder found gone.
    pending: Vec<u64>,
    rounds: u64,
    changes_total: u64,
    last: Option<PollReport>,
}

impl PollState {
    /// Folder `dir` is being used (looked up in, listed).
    pub(super) fn note_use(&self, dir: u64, cfg: &CoreConfig) {
        if cfg.poll.interval.is_zero() || cfg.poll.recent == 0 {
            return;
        }
        let now = cfg.clock.now_ms();
        let mut recent = lock(&self.recent);
        recent.insert(dir, now);
        // Trimmed now and then to the most recent, so a walk of a huge tree costs nothing.
        let keep = cfg.poll.recent;
        if recent.len() > 4 * keep.max(16) {
            let mut times: Vec<i64> = recent.values().copied().collect();
            times.sort_unstable_by(|a, b| b.cmp(a));
            let oldest_kept = times[keep - 1];
            recent.retain(|_, t| *t >= oldest_kept);
        }
    }
}

/// How one folder's check ended.
enum Checked {
    Done,
    /// The budget is spent: this folder waits for a later round.
    NoBudget,
    /// The remote went away: the round ends.
    Offline,
}

impl Core {
    /// The poll as `ctl status` shows it.
    pub fn poll_status(&self) -> PollStatus {
        let inner = lock(&self.poll.inner);
        PollStatus {
            interval_s: self.cfg.poll.interval.as_secs(),
            rounds: inner.rounds,
            changes_total: inner.changes_total,
            folder_etags: inner.propagation.as_str().to_string(),
            refetching: lock(&self.poll.refetching).len(),
            last: inner.last.clone(),
        }
    }

    /// One round of the poll (see the module's notes). Blocks: call it from a blocking
    /// thread, never from a runtime worker. Skipped, and said so, while offline or while
    /// another round runs.
    pub fn poll_once(&self) -> PollReport {
        let started = Instant::now();
        let mut report = PollReport {
            at: self.cfg.clock.now_s(),
            ..PollReport::default()
        };
        if self.poll.running.swap(true, Ordering::SeqCst) {
            report.skipped = Some("another round is running".into());
            return report;
        }
        // Cleared however the round ends (a panic included).
        struct Running<'a>(&'a AtomicBool);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::SeqCst);
            }
        }
        let _running = Running(&self.poll.running);
        if !self.health.is_online() {
            report.skipped = Some("offline".into());
        } else if let Err(e) = self.poll_round(&mut report) {
            tracing::warn!("poll: {e}");
            report.errors += 1;
        }
        report.took_ms = started.elapsed().as_millis() as u64;
        let mut inner = lock(&self.poll.inner);
        report.folder_etags = inner.propagation.as_str().to_string();
        if report.skipped.is_none() {
            inner.rounds += 1;
            inner.changes_total += report.changes as u64;
            let m = &crate::metrics::METRICS;
            crate::metrics::add(&m.polls, 1);
            crate::metrics::add(&m.poll_changes, report.changes as u64);
            crate::metrics::add(&m.poll_requests, report.requests as u64);
            if report.changes > 0 {
                tracing::info!(
                    "poll: {} change(s) on the server in {} folder(s) checked",
                    report.changes,
                    report.folders
                );
            }
        }
        inner.last = Some(report.clone());
        report
    }

    fn poll_round(&self, report: &mut PollReport) -> FsResult<()> {
        let cfg = self.cfg.poll.clone();
        let (used, pinned) = self.poll_targets()?;
        let audit = {
            let inner = lock(&self.poll.inner);
            cfg.audit_every > 0 && (inner.rounds + 1).is_multiple_of(cfg.audit_every)
        };
        let mut audit_left = audit;
        let mut refetch = Vec::new();
        // Used folders first, leaving a quarter of the budget to the pinned ones.
        let used_cap = if pinned.is_empty() {
            cfg.budget
        } else {
            cfg.budget - cfg.budget / 4
        };
        let targets: Vec<(u64, bool)> = used
            .iter()
            .map(|ino| (*ino, false))
            .chain(pinned.iter().map(|ino| (*ino, true)))
            .collect();
        for (k, &(ino, is_pinned)) in targets.iter().enumerate() {
            let cap = if is_pinned { cfg.budget } else { used_cap };
            match self.poll_folder(ino, cap, &mut audit_left, report, &mut refetch) {
                Checked::Done if is_pinned => lock(&self.poll.inner).cursor = ino,
                Checked::Done => {}
                Checked::NoBudget => report.deferred += 1,
                Checked::Offline => {
                    report.deferred += targets.len() - k;
                    break;
                }
            }
        }
        report.refetch = self.refetch_pinned(refetch)?;
        Ok(())
    }

    /// The folders to poll: (used ones, by priority; pinned ones, round-robin from the
    /// cursor). Neither holds the other's.
    fn poll_targets(&self) -> FsResult<(Vec<u64>, Vec<u64>)> {
        let cfg = &self.cfg.poll;
        let (pending, cursor) = {
            let mut inner = lock(&self.poll.inner);
            (std::mem::take(&mut inner.pending), inner.cursor)
        };
        // Files programs have open (not those open for a download of the cache's own).
        let open: HashSet<u64> = lock(&self.handles).values().map(|h| h.ino).collect();
        let mut recent: Vec<(u64, i64)> = {
            let since = self.cfg.clock.now_ms() - cfg.recent_for.as_millis() as i64;
            lock(&self.poll.recent)
                .iter()
                .filter(|(_, t)| **t >= since)
                .map(|(d, t)| (*d, *t))
                .collect()
        };
        recent.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        // The folders of the open files, and every folder at or below a pin and the
        // folder of each pinned file.
        let (open_parents, all_pinned) = self.store.write(|tx| {
            let mut parents = Vec::new();
            for ino in open {
                if let Some(n) = store::get_node(tx, ino)? {
                    parents.push(n.parent);
                }
            }
            Ok::<_, rusqlite::Error>((parents, store::nodes::pinned_folders(tx)?))
        })?;
        let mut used = Vec::new();
        let mut taken = HashSet::new();
        let mut take = |ino: u64, used: &mut Vec<u64>| {
            if ino != 0 && taken.insert(ino) {
                used.push(ino);
            }
        };
        for ino in pending {
            take(ino, &mut used);
        }
        for parent in open_parents {
            take(parent, &mut used);
        }
        for (ino, _) in recent.into_iter().take(cfg.recent) {
            take(ino, &mut used);
        }
        // What was seen of folders no longer polled is forgotten.
        {
            let mut inner = lock(&self.poll.inner);
            let polled = |ino: &u64| taken.contains(ino) || all_pinned.binary_search(ino).is_ok();
            inner.seen.retain(|ino, _| polled(ino));
            inner.relist.retain(polled);
        }
        // Round-robin: after the cursor first, then from the start.
        let split = all_pinned.partition_point(|ino| *ino <= cursor);
        let pinned: Vec<u64> = all_pinned[split..]
            .iter()
            .chain(&all_pinned[..split])
            .copied()
            .filter(|ino| !taken.contains(ino))
            .collect();
        Ok((used, pinned))
    }

    /// Checks one folder: by its ETag where the server propagates them, else by a
    /// listing. `cap`: the request count this folder may bring the round to.
    fn poll_folder(
        &self,
        ino: u64,
        cap: usize,
        audit_left: &mut bool,
        report: &mut PollReport,
        refetch: &mut Vec<u64>,
    ) -> Checked {
        let node = match self.node(ino) {
            Ok(n) => n,
            Err(_) => {
                self.poll_forget(ino);
                return Checked::Done;
            }
        };
        if node.kind != Kind::Dir || !node.on_remote {
            return Checked::Done;
        }
        if report.requests >= cap {
            return Checked::NoBudget;
        }
        let (prev, propagation, relist) = {
            let inner = lock(&self.poll.inner);
            let relist = inner.relist.contains(&ino);
            (inner.seen.get(&ino).cloned(), inner.propagation, relist)
        };
        let known_etag = prev.as_ref().and_then(|p| p.etag.clone());
        let by_etag = propagation == Propagation::Propagated && known_etag.is_some() && !relist;
        report.folders += 1;
        if by_etag && !std::mem::take(audit_left) {
            let there = match self.remote_path(ino) {
                Ok((there, _)) => there,
                Err(_) => return Checked::Done,
            };
            report.requests += 1;
            let remote = self.remote.clone();
            match self.call(&there, async { remote.stat_dir(&there).await }) {
                Ok(Some(e)) if e.is_dir => {
                    if e.etag.is_some() && same_etag(e.etag.as_deref(), known_etag.as_deref()) {
                        return Checked::Done;
                    }
                    if e.etag.is_none() {
                        self.learn_not_propagated(&there, "has no ETag");
                    }
                }
                // Gone, or now a file: its folder's listing applies that.
                Ok(_) => {
                    self.poll_later(node.parent);
                    self.poll_forget(ino);
                    return Checked::Done;
                }
                Err(FsError::Remote { source, .. }) => return self.poll_failed(&source, report),
                Err(e) => {
                    tracing::warn!("poll: {e}");
                    report.errors += 1;
                    return Checked::Done;
                }
            }
            if report.requests >= cap {
                // Changed: listed first in the next round.
                self.poll_later(ino);
                return Checked::NoBudget;
            }
        }
        report.listed += 1;
        let mut sent = 0;
        match self.poll_listing(ino, &mut sent) {
            Ok(Some(listed)) => {
                report.requests += sent;
                self.learn(ino, prev.as_ref(), &listed.seen);
                {
                    let mut inner = lock(&self.poll.inner);
                    match listed.applied.held_open {
                        true => inner.relist.insert(ino),
                        false => inner.relist.remove(&ino),
                    };
                }
                report.changes += listed.applied.count();
                refetch.extend(listed.applied.changed.iter().copied());
                refetch.extend(listed.applied.added.iter().map(|(_, ino)| *ino));
                Checked::Done
            }
            Ok(None) => {
                // A refresh of it was running, or the replayer changed it meanwhile.
                report.requests += sent;
                self.poll_later(ino);
                Checked::Done
            }
            Err(FsError::Remote {
                source: RemoteError::NotFound,
                ..
            }) => {
                report.requests += sent;
                self.poll_later(node.parent);
                self.poll_forget(ino);
                Checked::Done
            }
            Err(FsError::Remote { source, .. }) => {
                report.requests += sent;
                self.poll_failed(&source, report)
            }
            Err(e) => {
                report.requests += sent;
                tracing::warn!("poll: listing inode {ino}: {e}");
                report.errors += 1;
                Checked::Done
            }
        }
    }

    fn poll_failed(&self, e: &RemoteError, report: &mut PollReport) -> Checked {
        report.errors += 1;
        if e.is_transport() || !self.health.is_online() {
            return Checked::Offline;
        }
        tracing::warn!("poll: {e}");
        Checked::Done
    }

    /// Folder `ino` is gone: nothing is kept of it.
    fn poll_forget(&self, ino: u64) {
        let mut inner = lock(&self.poll.inner);
        inner.seen.remove(&ino);
        inner.relist.remove(&ino);
    }

    fn poll_later(&self, dir: u64) {
        if dir == 0 {
            return;
        }
        let mut inner = lock(&self.poll.inner);
        if !inner.pending.contains(&dir) {
            inner.pending.push(dir);
        }
    }

    /// What a listing tells of the server's folder ETags, compared with the one before.
    fn learn(&self, ino: u64, prev: Option<&Seen>, now: &Seen) {
        let mut inner = lock(&self.poll.inner);
        inner.seen.insert(ino, now.clone());
        if inner.propagation == Propagation::NotPropagated {
            return;
        }
        if now.etag.is_none() {
            drop(inner);
            let path = self.path(ino).unwrap_or_default();
            self.learn_not_propagated(&path, "has no ETag");
            return;
        }
        let Some(prev) = prev else { return };
        if prev.full == now.full {
            // Nothing a listing applies changed (a change further down may have moved
            // the ETag: that is no evidence either way).
            return;
        }
        if same_etag(prev.etag.as_deref(), now.etag.as_deref()) {
            drop(inner);
            let path = self.path(ino).unwrap_or_default();
            self.learn_not_propagated(&path, "kept its ETag while its entries changed");
            return;
        }
        // The same names, a file's new version, and a new folder ETag with it: a tag made
        // from the folder's mtime (which moves only when names come and go) does not.
        if prev.names == now.names && inner.propagation == Propagation::Unknown {
            inner.propagation = Propagation::Propagated;
            tracing::info!(
                "the server's folder ETags follow changes inside: the poll asks each folder \
                 for its ETag and lists only the changed ones"
            );
        }
    }

    fn learn_not_propagated(&self, path: &str, why: &str) {
        let mut inner = lock(&self.poll.inner);
        if inner.propagation != Propagation::NotPropagated {
            inner.propagation = Propagation::NotPropagated;
            tracing::info!(
                "folder {path} {why}: the server's folder ETags do not tell changes inside; \
                 the poll lists each folder"
            );
        }
    }

    /// Fetches again, in the background, the pinned files among `inos` that lack content
    /// (changed on the server, or new there). Returns how many were queued.
    fn refetch_pinned(&self, inos: Vec<u64>) -> FsResult<usize> {
        let mut queued = Vec::new();
        for ino in inos {
            let Ok(n) = self.node(ino) else { continue };
            if n.kind != Kind::File || n.dirty || n.fully_cached() || !self.is_pinned(ino)? {
                continue;
            }
            if lock(&self.poll.refetching).insert(ino) {
                queued.push(ino);
            }
        }
        let count = queued.len();
        if queued.is_empty() {
            return Ok(0);
        }
        let Some(me) = self.me.upgrade() else {
            return Ok(0);
        };
        self.rt.spawn_blocking(move || {
            for ino in queued {
                if me.health.is_online() {
                    if let Err(e) = me.fetch_whole(ino) {
                        tracing::warn!("pinned file (inode {ino}) could not be fetched: {e}");
                    }
                }
                lock(&me.poll.refetching).remove(&ino);
            }
            me.cache_grew.notify_one();
        });
        Ok(count)
    }
}

/// Runs the poll every `interval` until shutdown (not at all when it is zero). The
/// first round comes one interval after the start: mounting has just listed the root.
pub async fn run(core: Arc<Core>, mut shutdown: watch::Receiver<bool>) {
    let every = core.cfg.poll.interval;
    if every.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if *shutdown.borrow() {
            return;
        }
        let c = core.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || c.poll_once()).await {
            tracing::error!("the poll panicked: {e}");
        }
    }
}
