//! The replayer: runs journal entries against the remote while it is healthy, up to
//! `PARALLEL` at once, each after every earlier entry it depends on (`journal::ready`).
//! One file per kind of operation (`put`, `delete`, `mkcol`, `moves`, `meta`), `conflict` for
//! keeping both versions, `parents` for folders that vanished on the server.
//!
//! Every failure has an outcome that ends (`outcome`):
//! - the remote is unreachable (transport error, authentication refused, a 5xx while the
//!   health probe fails too): the replay pauses until the probe succeeds; the entry
//!   loses no attempt;
//! - transient (408, 423, 425, 429, 5xx, 507, local I/O, the state store): retried with
//!   the shared `Backoff` (jitter, `Retry-After`), up to `MAX_ATTEMPTS`, then set aside;
//! - a folder on the path is gone on the server: recreated, and the change goes on
//!   (`parents`), recorded as a conflict;
//! - refused for good (400, 403, 405, 409, 413, 414…): set aside at once with the
//!   server's reason; its content stays in the cache, `ctl journal --failed` and
//!   `ctl status` show it, and it holds back only later changes at or below its path.
//!   A new change of the same file tries it again.

mod conflict;
mod delete;
mod early;
pub(crate) mod meta;
mod mkcol;
mod moves;
mod parents;
mod partial;
mod put;

pub use conflict::{conflict_name, host_name};

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Entry, Op};
use crate::backoff::Backoff;
use crate::fs::Core;
use crate::journal;
use crate::remote::RemoteError;

/// Failed attempts of one entry (transient errors) before it is set aside for a person.
/// With `Backoff::REPLAY` that is about half an hour of trying.
pub const MAX_ATTEMPTS: u32 = 12;
/// Files up to this size are compared byte for byte on a 412 before calling it a conflict
/// (an upload whose success was not recorded before a crash looks like one).
const COMPARE_LIMIT: u64 = 64 << 20;
/// Uploads from this size on go in parts where the server allows, so they can resume
/// (the default of `CoreConfig::uploads`). Below it one streaming PUT is fastest.
pub const PARTS_FROM: u64 = 256 << 20;
/// Size of those parts: a cut connection costs at most this much, and the request
/// overhead stays small against the bytes (8 MiB parts ran at a third of wire speed).
pub const PART_SIZE: u64 = 64 << 20;

/// Files from this size on send only the ranges written, where the server takes partial
/// updates (the default of `UploadSizes::partial_from`). Below it a whole upload costs
/// little more than the requests a partial update makes.
pub const PARTIAL_FROM: u64 = 8 << 20;

/// Entries replayed at once (uploads of many small files gain most).
const PARALLEL: usize = 6;
/// Entries replayed at once while calls through the mount keep changing the drive: the
/// replayer yields to them (see `fs::foreground`), without stopping.
const PARALLEL_BESIDE_WRITES: usize = 1;
/// Calls that change the drive this close together are one burst.
const BURST_GAP: Duration = Duration::from_millis(100);

/// Why one replay attempt failed. The remote's answers, the state store and local files
/// are kept apart: a database error is never taken for something the server said.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("state store: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("local file: {0}")]
    Io(#[from] std::io::Error),
    /// Cannot run yet for a local reason (the file is open): tried again later, without
    /// ever being set aside for it.
    #[error("{0}")]
    Later(String),
    /// Went wrong in a way worth another try (counted, like a 5xx).
    #[error("{0}")]
    Retry(String),
    /// A file still being written has nothing to send now: the entry waits, without
    /// holding a turn or counting an attempt, until its writer wakes it (see
    /// `fs::early_parts`).
    #[error("{why}")]
    Parked {
        why: String,
        early: Arc<crate::fs::early_parts::EarlyParts>,
    },
}

pub type ReplayResult<T = ()> = Result<T, ReplayError>;

/// Runs until `shutdown` turns true. Up to `PARALLEL` independent entries run at once;
/// dependent ones keep their order (see `journal::ready`).
pub async fn run(core: Arc<Core>, mut shutdown: watch::Receiver<bool>) {
    if core.cfg.read_only {
        // Entries left by an earlier read-write mount stay for the next one; sending
        // them to a remote that cannot take them would only mark them failed.
        let waiting = core
            .db()
            .write(|tx| journal::stats(tx))
            .map(|s| s.0)
            .unwrap_or(0);
        if waiting > 0 {
            tracing::warn!(
                "{waiting} change(s) wait in the journal; a read-only mount does not send them"
            );
        }
        let _ = shutdown.wait_for(|stop| *stop).await;
        return;
    }
    let mut health = core.health.subscribe();
    let mut tasks: tokio::task::JoinSet<i64> = tokio::task::JoinSet::new();
    let mut running: HashSet<i64> = HashSet::new();
    let mut summary = Summary::default();
    loop {
        if *shutdown.borrow() {
            break;
        }
        if !core.health.is_online() {
            tokio::select! {
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    finished(&mut running, done);
                    continue;
                }
                _ = health.changed() => {}
                _ = shutdown.changed() => {}
            }
            if core.health.is_online() {
                // Back after an outage: what waited for a retry goes now.
                if let Err(e) = core.db().write(|tx| journal::retry_waiting_now(tx)) {
                    tracing::error!("journal: {e}");
                }
            }
            continue;
        }
        let beside_writes = core.foreground.streaming(BURST_GAP);
        let width = match beside_writes {
            true => PARALLEL_BESIDE_WRITES,
            false => PARALLEL,
        };
        if running.len() >= width {
            // Every slot is busy: only an ending task can change that, or the end of the
            // burst of writes that narrowed them.
            tokio::select! {
                Some(done) = tasks.join_next() => finished(&mut running, done),
                _ = tokio::time::sleep(BURST_GAP), if beside_writes => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let free = width.saturating_sub(running.len());
        let now_ms = core.clock().now_ms();
        // First on the reader, which FUSE calls never wait for: a pass that finds
        // nothing to start (everything queued behind an entry still running, say a slow
        // folder creation with thousands of files after it) walks the whole journal and
        // must not hold the writer while it does. What it found is then taken on the
        // writer, walking only as far as the last of it.
        let pass_started = std::time::Instant::now();
        let ready = core
            .db()
            .read(|c| journal::ready(c, &running, free, now_ms, i64::MAX))
            .and_then(|seen| match seen.last() {
                None => Ok(seen),
                Some(last) => core.db().write(|tx| {
                    (core.replay_passes_on_writer).fetch_add(1, Ordering::Relaxed);
                    journal::start_ready(tx, &running, free, now_ms, last.id)
                }),
            });
        let ready = match ready {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot read the sync journal: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
        };
        if !ready.is_empty() {
            summary.started(ready.len());
            for e in ready {
                core.remote_changing(&e.paths());
                running.insert(e.id);
                let core = core.clone();
                tasks.spawn(async move {
                    use futures_util::FutureExt;
                    let run = std::panic::AssertUnwindSafe(run_marked(&core, &e));
                    if run.catch_unwind().await.is_err() {
                        tracing::error!(
                            "{} {}: replay panicked; it will be retried",
                            e.op.as_str(),
                            e.path
                        );
                        // With a backoff, and counted: a bug must not spin.
                        retry_later(&core, &e, "replay panicked", None, true);
                    }
                    e.id
                });
            }
            continue;
        }
        let idle_pass = pass_started.elapsed();
        if running.is_empty() {
            summary.finish(&core);
        }
        // Nothing can start: wait for a task, a new entry, or the next retry due.
        let next_due = core
            .db()
            .read(|c| journal::next_retry_at(c, core.clock().now_ms()))
            .unwrap_or(None);
        let wait = match next_due {
            Some(at) => {
                Duration::from_millis((at - core.clock().now_ms()).clamp(0, 3_600_000) as u64)
            }
            None => Duration::from_secs(3600),
        };
        // Tests move the core's clock forward and wake the replayer (`journal_changed`)
        // instead of waiting out a backoff.
        tokio::select! {
            Some(done) = tasks.join_next(), if !tasks.is_empty() => finished(&mut running, done),
            _ = core.journal_changed.notified() => {
                pace_after_idle_pass(idle_pass, &mut tasks, &mut running, &mut shutdown).await;
            }
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
            _ = health.changed() => {}
        }
    }
    // Let what is on the wire finish (the caller bounds how long).
    while let Some(done) = tasks.join_next().await {
        finished(&mut running, done);
    }
    // A burst that ended just as the mount stopped still gets its line.
    summary.finish(&core);
}

/// A pass that found nothing to start and took this long or more is paced.
const PACED_PASS: Duration = Duration::from_millis(1);
/// After such a pass, the next one a new change asks for waits this many times as long.
const PACE: u32 = 4;

/// After a pass over a long journal that found nothing to start, the next one waits a
/// few times as long as it took: a burst of changes queued behind a slow entry then
/// costs a bounded share of a core, not a walk of the whole journal per change (which
/// grows with the square of the burst). An ending task, which may free what waits, is
/// not held back.
async fn pace_after_idle_pass(
    idle_pass: Duration,
    tasks: &mut tokio::task::JoinSet<i64>,
    running: &mut HashSet<i64>,
    shutdown: &mut watch::Receiver<bool>,
) {
    if idle_pass < PACED_PASS {
        return;
    }
    tokio::select! {
        _ = tokio::time::sleep(idle_pass * PACE) => {}
        Some(done) = tasks.join_next(), if !tasks.is_empty() => finished(running, done),
        _ = shutdown.changed() => {}
    }
}

/// A line in the log for each burst of replay: "sent 50 changes in 0.2 s".
#[derive(Default)]
struct Summary {
    started: Option<(std::time::Instant, usize)>,
}

impl Summary {
    fn started(&mut self, n: usize) {
        let (_, count) = self
            .started
            .get_or_insert_with(|| (std::time::Instant::now(), 0));
        *count += n;
    }

    fn finish(&mut self, core: &Core) {
        if let Some((since, count)) = self.started.take() {
            let (waiting, failed, _) = core
                .db()
                .write(|tx| journal::stats(tx))
                .unwrap_or((0, 0, None));
            tracing::info!(
                "replayed {count} change(s) in {:.1} s; {waiting} waiting, {failed} need attention",
                since.elapsed().as_secs_f64()
            );
        }
    }
}

fn finished(running: &mut HashSet<i64>, done: Result<i64, tokio::task::JoinError>) {
    match done {
        Ok(id) => {
            running.remove(&id);
        }
        // Tasks catch their panics and are never cancelled.
        Err(e) => tracing::error!("a journal entry's task failed: {e}"),
    }
}

async fn run_marked(core: &Arc<Core>, e: &Entry) {
    let result = match e.op {
        Op::Put => put::put(core, e).await,
        Op::Mkcol => mkcol::mkcol(core, e).await,
        Op::Meta => meta::meta(core, e).await,
        Op::Delete => delete::delete(core, e).await,
        Op::Move => moves::rename(core, e).await,
    };
    match result {
        Ok(()) => tracing::debug!("replayed {} {}", e.op.as_str(), e.path),
        Err(err) => outcome(core, e, err).await,
    }
}

/// Removes a finished entry, in the caller's `write`: it runs under the store's writer,
/// so a listing merge (which checks the epoch under the same lock) sees that the remote
/// changed.
fn done(core: &Core, conn: &rusqlite::Connection, e: &Entry) -> ReplayResult {
    journal::complete(conn, e.id)?;
    core.remote_changing(&e.paths());
    core.journal_progressed();
    Ok(())
}

/// What becomes of an entry whose attempt failed (see the module's header).
async fn outcome(core: &Arc<Core>, e: &Entry, err: ReplayError) {
    let what = format!("{} {}", e.op.as_str(), e.path);
    match err {
        ReplayError::Remote(RemoteError::Transport(reason)) => pause(core, e, &reason),
        ReplayError::Remote(err @ RemoteError::Unauthorized(_)) => pause(core, e, &err.to_string()),
        ReplayError::Remote(RemoteError::Server {
            status,
            retry_after,
        }) => {
            // A 5xx while the probe fails too is an outage, not this entry's fault.
            if status >= 500 && !core.health.check(core.remote().as_ref()).await {
                tracing::warn!(
                    "{what}: HTTP {status} and the remote fails its health check; pausing"
                );
                let _ = core.db().write(|tx| journal::set_running(tx, e.id, false));
                return;
            }
            let err = RemoteError::Server {
                status,
                retry_after,
            };
            retry_later(core, e, &err.to_string(), retry_after, true)
        }
        ReplayError::Remote(err @ (RemoteError::Local(_) | RemoteError::ChallengeRenewed)) => {
            retry_later(core, e, &err.to_string(), None, true)
        }
        ReplayError::Later(why) => retry_later(core, e, &why, None, false),
        ReplayError::Parked { why, early } => park(core, e, &why, &early),
        ReplayError::Retry(why) => retry_later(core, e, &why, None, true),
        ReplayError::Store(db) => {
            tracing::error!("{what}: the state store failed: {db}");
            retry_later(core, e, &format!("state store: {db}"), None, true)
        }
        ReplayError::Io(io) => retry_later(core, e, &format!("local file: {io}"), None, true),
        ReplayError::Remote(err) => set_aside(core, e, &err.to_string()),
    }
}

/// The remote is not usable now: the entry waits, without losing an attempt, until the
/// health probe says it is back.
fn pause(core: &Core, e: &Entry, reason: &str) {
    core.health.mark_offline(reason);
    let _ = core.db().write(|tx| journal::set_running(tx, e.id, false));
}

/// How long a parked entry waits when no wake comes (one always should).
const PARKED_FOR: Duration = Duration::from_secs(60);

/// Parks `e` until its writer wakes it. A wake tried while it still ran found nothing to
/// wake: it lands here instead.
fn park(core: &Core, e: &Entry, why: &str, early: &crate::fs::early_parts::EarlyParts) {
    tracing::debug!("{} {}: {why}", e.op.as_str(), e.path);
    let at = core.clock().now_ms() + PARKED_FOR.as_millis() as i64;
    let parked = core.db().write(|tx| {
        journal::park(tx, e.id, why, at)?;
        if early.wake_due() && journal::wake(tx, e.id)? {
            early.woken();
        }
        Ok::<_, rusqlite::Error>(())
    });
    if let Err(db) = parked {
        tracing::error!("journal: {db}");
    }
    core.journal_progressed();
}

fn retry_later(core: &Core, e: &Entry, error: &str, retry_after: Option<Duration>, counted: bool) {
    let failures = e.attempts + 1;
    if counted && failures >= MAX_ATTEMPTS {
        return set_aside(
            core,
            e,
            &format!("still failing after {failures} attempts: {error}"),
        );
    }
    let wait = Backoff::REPLAY.delay(failures, retry_after);
    tracing::warn!(
        "{} {} failed (attempt {failures}), retrying in {:.1} s: {error}",
        e.op.as_str(),
        e.path,
        wait.as_secs_f64()
    );
    let at = core.clock().now_ms() + wait.as_millis() as i64;
    if let Err(db) = core
        .db()
        .write(|tx| journal::record_failure(tx, e.id, error, at, false))
    {
        tracing::error!("journal: {db}");
    }
    core.journal_progressed();
}

fn set_aside(core: &Core, e: &Entry, error: &str) {
    tracing::error!(
        "{} {} set aside; its data stays in the cache until the entry is retried or dropped: {error}",
        e.op.as_str(),
        e.path
    );
    let now = core.clock().now_ms();
    if let Err(db) = core
        .db()
        .write(|tx| journal::record_failure(tx, e.id, error, now, true))
    {
        tracing::error!("journal: {db}");
    }
    core.journal_progressed();
}

/// Runs file reads and hashing on a blocking thread: a 64 MiB hash must not stall the
/// async workers that carry every other request.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> ReplayResult<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(r) => Ok(r?),
        Err(e) => Err(ReplayError::Io(std::io::Error::other(e))),
    }
}

/// SHA-256 of bytes in memory, in hex, on a blocking thread.
async fn sha256_of(data: bytes::Bytes) -> ReplayResult<String> {
    blocking(move || {
        use sha2::{Digest, Sha256};
        Ok(crate::cache::hex(&Sha256::digest(&data)))
    })
    .await
}

async fn preconditions_honored(core: &Arc<Core>) -> Result<bool, RemoteError> {
    core.preconditions
        .get_or_try_init(|| core.remote().preconditions_honored())
        .await
        .copied()
}

async fn partial_updates_supported(core: &Arc<Core>) -> Result<bool, RemoteError> {
    core.partial_updates
        .get_or_try_init(|| async { Ok(core.remote().partial_support().await?.updates()) })
        .await
        .copied()
}

async fn partial_put_supported(core: &Arc<Core>) -> Result<bool, RemoteError> {
    core.partial_put
        .get_or_try_init(|| core.remote().partial_put_supported())
        .await
        .copied()
}
