//! The replayer: runs journal entries against the remote while it is healthy, up to
//! `PARALLEL` at once, each after every earlier entry it depends on.
//!
//! - Transport errors (the remote went away) pause the replay and flip the health state;
//!   they cost the entry no attempt.
//! - 5xx and 429 are retried with exponential backoff, up to `MAX_ATTEMPTS`.
//! - Permanent refusals (403, 409, 413, 507…) set the entry aside as failed; its content
//!   stays in the cache and the entry stays listed until retried or dropped.
//! - 412 on an upload is a conflict: see `resolve_conflict`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rusqlite::params;
use tokio::sync::watch;

use super::{Entry, Op};
use crate::cache::{hex, sha256_prefix};
use crate::fs::Core;
use crate::journal;
use crate::remote::{Precondition, RemoteError};
use crate::store::{self, now_ms, Kind, NewNode, RangeSet};

pub const MAX_ATTEMPTS: u32 = 10;
/// Files up to this size are compared byte for byte on a 412 before calling it a conflict
/// (an upload whose success was not recorded before a crash looks like one).
const COMPARE_LIMIT: u64 = 64 << 20;
/// Uploads from this size on go in parts where the server allows, so they can resume.
pub const PARTS_FROM: u64 = 32 << 20;
const PART: u64 = 8 << 20;
/// Uploads up to this size are sent from a snapshot of the content.
const SNAPSHOT_LIMIT: u64 = 4 << 20;

/// Entries replayed at once (uploads of many small files gain most).
const PARALLEL: usize = 4;

/// Runs until `shutdown` turns true. Up to `PARALLEL` independent entries run at once;
/// dependent ones keep their order (see `journal::ready`).
pub async fn run(core: Arc<Core>, mut shutdown: watch::Receiver<bool>) {
    if core.cfg.read_only {
        // Entries left by an earlier read-write mount stay for the next one; sending
        // them to a remote that cannot take them would only mark them failed.
        let waiting = journal::stats(&core.store()).map(|s| s.0).unwrap_or(0);
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
                if let Err(e) = journal::retry_waiting_now(&core.store()) {
                    tracing::error!("journal: {e}");
                }
            }
            continue;
        }
        let ready = journal::start_ready(
            &core.store(),
            &running,
            PARALLEL.saturating_sub(running.len()),
            now_ms(),
        );
        let ready = match ready {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot read the sync journal: {e}");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        if !ready.is_empty() {
            for e in ready {
                core.remote_changing();
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
                        record_error(&core, &e, RemoteError::Server { status: 500 });
                    }
                    e.id
                });
            }
            continue;
        }
        // Nothing can start: wait for a task, a new entry, or the next retry due.
        let next_due: Option<i64> = core
            .store()
            .query_row(
                "SELECT MIN(next_try_at) FROM journal WHERE failed = 0 AND running = 0",
                [],
                |r| r.get(0),
            )
            .unwrap_or(None);
        let wait = match next_due {
            Some(at) => Duration::from_millis((at - now_ms()).clamp(0, 3_600_000) as u64),
            None => Duration::from_secs(3600),
        };
        // Something due but blocked only by running entries: their end wakes us.
        let wait = if wait.is_zero() {
            Duration::from_secs(1)
        } else {
            wait
        };
        tokio::select! {
            Some(done) = tasks.join_next(), if !tasks.is_empty() => finished(&mut running, done),
            _ = core.journal_changed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
            _ = health.changed() => {}
        }
    }
    // Let what is on the wire finish (the caller bounds how long).
    while let Some(done) = tasks.join_next().await {
        finished(&mut running, done);
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
    let e = e.clone();
    let result = match e.op {
        Op::Put => put(core, &e).await,
        Op::Mkcol => mkcol(core, &e).await,
        Op::Delete => delete(core, &e).await,
        Op::Move => rename(core, &e).await,
    };
    match result {
        Ok(()) => {
            tracing::debug!("replayed {} {}", e.op.as_str(), e.path);
        }
        // A 5xx while the probe fails too is an outage, not this entry's fault.
        Err(RemoteError::Server { status }) if !core.health.check(core.remote().as_ref()).await => {
            tracing::warn!(
                "{} {}: HTTP {status} and the remote fails its health check; pausing",
                e.op.as_str(),
                e.path
            );
            let _ = journal::set_running(&core.store(), e.id, false);
        }
        Err(err) => record_error(core, &e, err),
    }
}

/// Removes a finished entry. Runs under the store lock, so a listing merge (which checks
/// the epoch under the same lock) sees that the remote changed.
fn done(core: &Core, conn: &rusqlite::Connection, id: i64) -> rusqlite::Result<()> {
    journal::complete(conn, id)?;
    core.remote_changing();
    Ok(())
}

fn local(e: impl std::fmt::Display) -> RemoteError {
    RemoteError::Local(e.to_string())
}

fn record_error(core: &Arc<Core>, e: &Entry, err: RemoteError) {
    let conn = core.store();
    let outcome = if err.is_transport() {
        drop(conn);
        core.health.mark_offline(&err.to_string());
        let _ = journal::set_running(&core.store(), e.id, false);
        return;
    } else if err.is_retryable() && e.attempts + 1 < MAX_ATTEMPTS {
        let backoff = Duration::from_secs(1u64 << e.attempts.min(6)).min(Duration::from_secs(60));
        tracing::warn!(
            "{} {} failed (attempt {}), retrying in {:?}: {err}",
            e.op.as_str(),
            e.path,
            e.attempts + 1,
            backoff
        );
        journal::record_failure(
            &conn,
            e.id,
            &err.to_string(),
            now_ms() + backoff.as_millis() as i64,
            false,
        )
    } else {
        tracing::error!(
            "{} {} failed for good; its data stays in the cache until the entry is retried or dropped: {err}",
            e.op.as_str(),
            e.path
        );
        journal::record_failure(&conn, e.id, &err.to_string(), now_ms(), true)
    };
    if let Err(db) = outcome {
        tracing::error!("journal: {db}");
    }
}

async fn delete(core: &Arc<Core>, e: &Entry) -> Result<(), RemoteError> {
    let known_versions = !journal::sent_hashes(&core.store(), e.id)
        .map_err(local)?
        .is_empty();
    let strict = preconditions_honored(core).await?;
    let result = match &e.base_etag {
        Some(tag) if strict && !tag.starts_with("W/") => {
            core.remote().delete_if_match(&e.path, tag).await
        }
        // A weak tag (Apache's for a file changed within the last second, the stand-in
        // for servers without ETags) never passes If-Match, and a server ignoring
        // preconditions would delete whatever is there: ask first (a change landing
        // between the two requests is not caught).
        Some(tag) => match core.remote().stat(&e.path).await? {
            Some(cur) if !crate::remote::same_etag(cur.etag.as_deref(), Some(tag)) => {
                Err(RemoteError::PreconditionFailed)
            }
            Some(_) => core.remote().delete(&e.path, e.is_dir).await,
            None => Ok(()),
        },
        // No ETag to hold it to (the file never got one of ours, or only a weak one),
        // but versions of ours are known: delete only one of those.
        None if !e.is_dir && known_versions && !remote_is_ours(core, e).await? => {
            Err(RemoteError::PreconditionFailed)
        }
        None => core.remote().delete(&e.path, e.is_dir).await,
    };
    match result {
        Ok(()) => done(core, &core.store(), e.id).map_err(local),
        // Changed on the remote after the version deleted here: their change wins over a
        // delete, and the file comes back with the next listing.
        Err(RemoteError::PreconditionFailed) if remote_is_ours(core, e).await? => {
            core.remote().delete(&e.path, false).await?;
            done(core, &core.store(), e.id).map_err(local)
        }
        Err(RemoteError::PreconditionFailed) => {
            tracing::warn!(
                "conflict: {} was changed on the remote after it was deleted here; keeping the remote version",
                e.path
            );
            let conn = core.store();
            journal::record_conflict(&conn, &e.path, &e.path, e.base_etag.as_deref(), None)
                .map_err(local)?;
            done(core, &conn, e.id).map_err(local)
        }
        Err(err) => Err(err),
    }
}

/// Whether the file at `e.path` holds a version this journal entry knows as ours.
async fn remote_is_ours(core: &Arc<Core>, e: &Entry) -> Result<bool, RemoteError> {
    let ours = journal::sent_hashes(&core.store(), e.id).map_err(local)?;
    let Some(cur) = core.remote().stat(&e.path).await? else {
        return Ok(true);
    };
    if ours.is_empty() || cur.size > COMPARE_LIMIT {
        return Ok(false);
    }
    if cur.size == 0 {
        // What an upload of ours cut before its first byte leaves on a server that
        // writes in place.
        return Ok(true);
    }
    let data = if cur.size == 0 {
        bytes::Bytes::new()
    } else {
        core.remote().get_range(&e.path, 0, cur.size).await?.data
    };
    let sha = {
        use sha2::{Digest, Sha256};
        hex(&Sha256::digest(&data))
    };
    Ok(ours.contains(&sha))
}

async fn mkcol(core: &Arc<Core>, e: &Entry) -> Result<(), RemoteError> {
    core.remote().mkcol(&e.path).await?;
    let conn = core.store();
    let tx = conn.unchecked_transaction().map_err(local)?;
    tx.execute(
        "UPDATE nodes SET on_remote = 1 WHERE ino = ?1",
        [e.ino as i64],
    )
    .map_err(local)?;
    done(core, &tx, e.id).map_err(local)?;
    tx.commit().map_err(local)
}

async fn rename(core: &Arc<Core>, e: &Entry) -> Result<(), RemoteError> {
    let dest = e.dest.as_deref().unwrap_or_default();
    // Overwrite: F. The journal deletes a replaced target first (conditionally); if
    // something is still there, it is somebody else's and must not be clobbered.
    match core
        .remote()
        .rename_no_replace(&e.path, dest, e.is_dir)
        .await
    {
        Ok(()) => {}
        Err(RemoteError::PreconditionFailed) => {
            let (dir, name) = dest.rsplit_once('/').unwrap_or(("", dest));
            let aside = format!(
                "{dir}/{}",
                conflict_name(name, &host_name(), SystemTime::now())
            );
            core.remote()
                .rename_no_replace(&e.path, &aside, e.is_dir)
                .await?;
            tracing::warn!(
                "conflict: {dest} exists on the remote with somebody else's version; {} was moved to {aside} instead",
                e.path
            );
            let conn = core.store();
            journal::record_conflict(&conn, dest, &aside, None, None).map_err(local)?;
            return done(core, &conn, e.id).map_err(local);
        }
        // Replayed after a crash that came between the MOVE and its record: done already.
        Err(RemoteError::NotFound) if core.remote().stat(dest).await?.is_some() => {}
        // Moving something whose upload never happened (it was cut off, then the file
        // was renamed): nothing to move; the file goes up under its current name.
        Err(RemoteError::NotFound) if !e.is_dir => {
            let conn = core.store();
            let node = store::get_node(&conn, e.ino).map_err(local)?;
            match node {
                Some(n) if n.on_remote => return Err(RemoteError::NotFound),
                Some(n) if n.dirty => {
                    if let Some(path) = store::path_of(&conn, e.ino).map_err(local)? {
                        journal::record_put(&conn, e.ino, &path).map_err(local)?;
                    }
                }
                Some(_) | None => {}
            }
            tracing::info!(
                "move {} -> {dest}: nothing there yet, the upload goes to the new name",
                e.path
            );
            return done(core, &conn, e.id).map_err(local);
        }
        Err(err) => return Err(err),
    }
    // Some servers give a moved file a new ETag; the version there is still ours.
    let new_etag = if e.is_dir {
        None
    } else {
        core.remote().stat(dest).await?.and_then(|s| s.etag)
    };
    let conn = core.store();
    let tx = conn.unchecked_transaction().map_err(local)?;
    if let Some(etag) = new_etag {
        tx.execute(
            "UPDATE nodes SET etag = ?2, content_etag = CASE WHEN content_etag = etag \
             THEN ?2 ELSE content_etag END WHERE ino = ?1 AND on_remote = 1",
            params![e.ino as i64, etag],
        )
        .map_err(local)?;
        journal::rebase_deletes(&tx, e.ino, Some(&etag)).map_err(local)?;
    }
    done(core, &tx, e.id).map_err(local)?;
    tx.commit().map_err(local)
}

async fn put(core: &Arc<Core>, e: &Entry) -> Result<(), RemoteError> {
    let node = store::get_node(&core.store(), e.ino).map_err(local)?;
    let node = match node {
        Some(n) if n.kind == Kind::File => n,
        // The file is gone; the entry that removed it follows.
        _ => return done(core, &core.store(), e.id).map_err(local),
    };
    let local_path = core.content().path(e.ino);
    let strict = preconditions_honored(core).await?;
    let cond = if !node.on_remote {
        // A server that ignores If-None-Match is asked first (see below).
        match strict {
            true => Precondition::IfNoneMatch,
            false => match core.remote().stat(&e.path).await? {
                None => Precondition::IfNoneMatch,
                Some(_) => return resolve_conflict(core, e, &node).await,
            },
        }
    } else {
        match &node.etag {
            None => Precondition::None,
            // A weak ETag (Apache gives one to a file changed within the last second)
            // never passes If-Match, which compares strongly. Instead we ask for the
            // current ETag just before the upload: unchanged means the remote still has
            // our base version and we upload unconditionally (a change landing in the
            // moment between the two requests is not caught); changed is a conflict.
            // Likewise on a server that ignores If-Match.
            Some(tag) if tag.starts_with("W/") || !strict => {
                match core.remote().stat(&e.path).await? {
                    // Compared weakly: Apache sends the same tag strong once the file is
                    // a second old.
                    Some(cur) if crate::remote::same_etag(cur.etag.as_deref(), Some(tag)) => {
                        Precondition::None
                    }
                    None => Precondition::IfNoneMatch,
                    Some(_) => return resolve_conflict(core, e, &node).await,
                }
            }
            Some(tag) => Precondition::IfMatch(tag.clone()),
        }
    };
    // Remember what is being sent before sending it: if the daemon dies after the server
    // took it, the next attempt recognises its own version instead of crying conflict.
    // Small files are sent from a snapshot, so a write landing during the upload cannot
    // tear it; the hash then names exactly the bytes sent.
    let snapshot = if node.size <= SNAPSHOT_LIMIT {
        Some(snapshot(&local_path, node.size).map_err(local)?)
    } else {
        None
    };
    let sent = match &snapshot {
        Some((_, sha)) => Some(sha.clone()),
        None if node.size <= COMPARE_LIMIT => {
            Some(sha256_prefix(&local_path, node.size).map_err(local)?)
        }
        None => None,
    };
    if let Some(sha) = &sent {
        journal::add_sent_hash(&core.store(), e.id, sha).map_err(local)?;
    }
    if node.size >= PARTS_FROM && partial_put_supported(core).await? {
        return put_in_parts(core, e, &node, cond, sent).await;
    }
    let mtime = Some(store::ns_to_system_time(node.mtime_ns));
    let reply = match snapshot {
        Some((data, _)) => core.remote().put_bytes(&e.path, data, cond, mtime).await,
        None => {
            core.remote()
                .put(&e.path, &local_path, node.size, cond, mtime)
                .await
        }
    };
    let result = match reply {
        Ok(r) if r.etag.is_some() => Ok(r.etag),
        Ok(_) => core
            .remote()
            .stat(&e.path)
            .await
            .map(|s| s.and_then(|s| s.etag)),
        Err(e) => Err(e),
    };
    let etag = match result {
        Ok(etag) => etag,
        Err(RemoteError::PreconditionFailed) => return resolve_conflict(core, e, &node).await,
        Err(err) => return Err(err),
    };
    finish_upload(core, e, etag, sent)
}

async fn preconditions_honored(core: &Arc<Core>) -> Result<bool, RemoteError> {
    core.preconditions
        .get_or_try_init(|| core.remote().preconditions_honored())
        .await
        .copied()
}

async fn partial_put_supported(core: &Arc<Core>) -> Result<bool, RemoteError> {
    core.partial_put
        .get_or_try_init(|| core.remote().partial_put_supported())
        .await
        .copied()
}

/// A large upload, sent in parts to a scratch file beside the target and moved over it
/// when complete, so a cut connection or a crash costs only the part in flight: the next
/// attempt asks the server how much of the scratch file it holds and goes on from there
/// (as long as the local version is still the one being sent). Readers of the target
/// never see a half-written file. The precondition is checked just before the final
/// MOVE (a change landing between that check and the MOVE is not caught).
async fn put_in_parts(
    core: &Arc<Core>,
    e: &Entry,
    node: &store::Node,
    cond: Precondition,
    sent: Option<String>,
) -> Result<(), RemoteError> {
    let remote = core.remote().clone();
    let local_path = core.content().path(e.ino);
    let (dir, name) = e.path.rsplit_once('/').unwrap_or(("", &e.path));
    let scratch = format!("{dir}/.{name}.davdrive-part-{}", e.ino);
    // The local version is named by its bytes: only a scratch file holding a prefix of
    // exactly these may be continued.
    let version = format!(
        "{}:{}",
        node.size,
        sha256_prefix(&local_path, node.size).map_err(local)?
    );
    let (done_version, done_bytes) = journal::part_progress(&core.store(), e.id).map_err(local)?;
    let mut offset = 0;
    if done_version.as_deref() == Some(version.as_str()) && done_bytes > 0 {
        if let Some(held) = remote.stat(&scratch).await? {
            offset = held.size.min(node.size);
            tracing::info!(
                "{}: resuming upload at byte {offset} of {}",
                e.path,
                node.size
            );
        }
    }
    let mtime = Some(store::ns_to_system_time(node.mtime_ns));
    while offset < node.size {
        let len = PART.min(node.size - offset);
        if offset == 0 {
            remote
                .put(&scratch, &local_path, len, Precondition::None, mtime)
                .await?;
        } else {
            remote.put_range(&scratch, &local_path, offset, len).await?;
        }
        offset += len;
        journal::set_part_progress(&core.store(), e.id, &version, offset).map_err(local)?;
    }
    let held = remote.stat(&scratch).await?.map(|s| s.size);
    if held != Some(node.size) {
        journal::set_part_progress(&core.store(), e.id, &version, 0).map_err(local)?;
        return Err(RemoteError::BadReply(format!(
            "{scratch}: server holds {held:?} bytes after sending {}",
            node.size
        )));
    }
    let current = remote.stat(&e.path).await?;
    let unchanged = match &cond {
        Precondition::IfNoneMatch => current.is_none(),
        Precondition::IfMatch(tag) => current.as_ref().and_then(|c| c.etag.as_ref()) == Some(tag),
        Precondition::None => true,
    };
    if !unchanged {
        let _ = remote.delete(&scratch, false).await;
        return resolve_conflict(core, e, node).await;
    }
    remote.rename(&scratch, &e.path, false).await?;
    let etag = remote.stat(&e.path).await?.and_then(|s| s.etag);
    finish_upload(core, e, etag, sent)
}

/// PUTs a whole file and returns the new version's ETag (asking for it when the server
/// sends none with the reply, as some do).
async fn upload_whole(
    remote: &Arc<dyn crate::remote::Remote>,
    path: &str,
    local: &std::path::Path,
    node: &store::Node,
    cond: Precondition,
) -> Result<Option<String>, RemoteError> {
    let mtime = Some(store::ns_to_system_time(node.mtime_ns));
    let reply = remote.put(path, local, node.size, cond, mtime).await?;
    match reply.etag {
        Some(t) => Ok(Some(t)),
        None => Ok(remote.stat(path).await?.and_then(|s| s.etag)),
    }
}

/// Reads the first `len` bytes of the content file for one upload attempt, so a write
/// landing during the upload cannot tear it. Held in memory: a full cache disk has no
/// room for a copy, and uploading is what makes room.
fn snapshot(content: &std::path::Path, len: u64) -> std::io::Result<(bytes::Bytes, String)> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut data = Vec::with_capacity(len as usize);
    std::fs::File::open(content)?
        .take(len)
        .read_to_end(&mut data)?;
    if data.len() as u64 != len {
        return Err(std::io::Error::other(format!(
            "{}: has {} bytes, {len} to upload",
            content.display(),
            data.len()
        )));
    }
    let sha = hex(&Sha256::digest(&data));
    Ok((data.into(), sha))
}

fn finish_upload(
    core: &Arc<Core>,
    e: &Entry,
    etag: Option<String>,
    sha256: Option<String>,
) -> Result<(), RemoteError> {
    let conn = core.store();
    let tx = conn.unchecked_transaction().map_err(local)?;
    tx.execute(
        "UPDATE nodes SET etag = ?2, on_remote = 1, sha256 = ?3, content_etag = ?2, \
         remote_checksum = NULL WHERE ino = ?1",
        params![e.ino as i64, etag, sha256],
    )
    .map_err(local)?;
    journal::rebase_deletes(&tx, e.ino, etag.as_deref()).map_err(local)?;
    let more = journal::has_pending_put(&tx, e.ino, e.id).map_err(local)?;
    if !more && !core.is_write_dirty(e.ino) {
        store::set_dirty(&tx, e.ino, false).map_err(local)?;
    }
    done(core, &tx, e.id).map_err(local)?;
    tx.commit().map_err(local)
}

/// The remote's version is not the one our change was based on. Unless it holds exactly
/// our bytes already, both versions are kept: ours is uploaded beside it as
/// `name (conflict <host> <UTC time>).ext`, the original name takes the remote version,
/// and the conflict is recorded.
async fn resolve_conflict(
    core: &Arc<Core>,
    e: &Entry,
    node: &store::Node,
) -> Result<(), RemoteError> {
    let remote = core.remote().clone();
    let current = remote.stat(&e.path).await?;
    let local_path = core.content().path(e.ino);
    if let Some(cur) = &current {
        // Our own earlier attempt may be what is there: the whole version (the upload
        // succeeded but the daemon died before recording it) or, for an upload that was
        // cut off on a server that writes in place, a prefix of it.
        if node.size <= COMPARE_LIMIT && cur.size <= COMPARE_LIMIT && !cur.is_dir {
            let theirs = if cur.size == 0 {
                bytes::Bytes::new()
            } else {
                remote.get_range(&e.path, 0, cur.size).await?.data
            };
            let ours = std::fs::read(&local_path).map_err(local)?;
            let ours = &ours[..(node.size as usize).min(ours.len())];
            let theirs_sha = {
                use sha2::{Digest, Sha256};
                hex(&Sha256::digest(&theirs))
            };
            let ours_sha = {
                use sha2::{Digest, Sha256};
                hex(&Sha256::digest(ours))
            };
            if theirs_sha == ours_sha {
                tracing::info!("{}: remote already holds this version", e.path);
                return finish_upload(core, e, cur.etag.clone(), Some(ours_sha));
            }
            // An earlier attempt of this upload reached the server whole (its success
            // was not recorded), or, on a server that writes in place, in part.
            // The remote holds exactly the version our change started from: nobody else
            // changed it, only its ETag moved (some servers change it on MOVE or
            // metadata updates).
            let is_base = node.sha256.as_deref() == Some(theirs_sha.as_str());
            let sent = journal::sent_hashes(&core.store(), e.id).map_err(local)?;
            if is_base || sent.contains(&theirs_sha) || (e.attempted && ours.starts_with(&theirs)) {
                tracing::info!(
                    "{}: replacing what an earlier attempt of this upload left",
                    e.path
                );
                let cond = match &cur.etag {
                    Some(t) if !t.starts_with("W/") => Precondition::IfMatch(t.clone()),
                    _ => Precondition::None,
                };
                let etag = upload_whole(&remote, &e.path, &local_path, node, cond).await?;
                return finish_upload(core, e, etag, Some(ours_sha));
            }
        }
    }
    let Some(cur) = &current else {
        // Deleted on the remote while we changed it here: keeping our version under its
        // name loses nobody's work (their change was the deletion).
        tracing::warn!(
            "{} was deleted on the remote but changed here; uploading it again",
            e.path
        );
        let etag = upload_whole(
            &remote,
            &e.path,
            &local_path,
            node,
            Precondition::IfNoneMatch,
        )
        .await?;
        return finish_upload(core, e, etag, None);
    };
    let _ = cur;
    if core.is_open(e.ino) {
        // Its content file cannot change hands under open descriptors.
        return Err(RemoteError::Local(format!(
            "{} conflicts with a newer remote version; resolved once the file is closed",
            e.path
        )));
    }
    let (dir, name) = match e.path.rfind('/') {
        Some(i) => (&e.path[..i], &e.path[i + 1..]),
        None => ("", e.path.as_str()),
    };
    let conflict_name = conflict_name(name, &host_name(), SystemTime::now());
    let conflict_path = format!("{dir}/{conflict_name}");
    let conflict_etag = upload_whole(
        &remote,
        &conflict_path,
        &local_path,
        node,
        Precondition::IfNoneMatch,
    )
    .await?;
    tracing::warn!(
        "conflict: {} was changed on the remote; the local version was saved as {}",
        e.path,
        conflict_path
    );
    let conn = core.store();
    let tx = conn.unchecked_transaction().map_err(local)?;
    // Closed writes may have landed since the upload started: the copy takes the
    // content as committed now, and their uploads go to the copy (below).
    let node = &store::get_node(&tx, e.ino)
        .map_err(local)?
        .unwrap_or_else(|| node.clone());
    // The local copy becomes the conflict file, beside the original.
    let copy_ino = if store::get_child(&tx, node.parent, &conflict_name)
        .map_err(local)?
        .is_none()
        && node.parent != 0
    {
        let ino = store::insert_node(
            &tx,
            &NewNode {
                parent: node.parent,
                name: &conflict_name,
                kind: Kind::File,
                size: node.size,
                mtime_ns: node.mtime_ns,
                mode: node.mode,
                uid: node.uid,
                gid: node.gid,
                etag: conflict_etag.as_deref(),
                on_remote: true,
                dirty: false,
                ranges: RangeSet::full(node.size),
                listed_at: None,
                last_access: core.clock().now_s(),
            },
        )
        .map_err(local)?;
        Some(ino)
    } else {
        None
    };
    match &current {
        Some(cur) => {
            tx.execute(
                "UPDATE nodes SET etag = ?2, size = ?3, mtime_ns = ?4, ranges = NULL, dirty = 0, \
                 on_remote = 1, sha256 = NULL, cached_bytes = 0, content_etag = NULL \
                 WHERE ino = ?1",
                params![
                    e.ino as i64,
                    cur.etag,
                    cur.size as i64,
                    cur.mtime
                        .map(store::system_time_to_ns)
                        .unwrap_or(node.mtime_ns)
                ],
            )
            .map_err(local)?;
        }
        None => {
            // Deleted on the remote: the original name goes, the conflict copy stays.
            store::delete_node(&tx, e.ino).map_err(local)?;
        }
    }
    match copy_ino {
        Some(copy) => tx.execute(
            "UPDATE journal SET ino = ?3, path = ?4 \
             WHERE ino = ?1 AND op = 'put' AND running = 0 AND id != ?2",
            params![e.ino as i64, e.id, copy as i64, conflict_path],
        ),
        None => tx.execute(
            "DELETE FROM journal WHERE ino = ?1 AND op = 'put' AND running = 0 AND id != ?2",
            params![e.ino as i64, e.id],
        ),
    }
    .map_err(local)?;
    journal::record_conflict(
        &tx,
        &e.path,
        &conflict_path,
        node.etag.as_deref(),
        current.as_ref().and_then(|c| c.etag.as_deref()),
    )
    .map_err(local)?;
    done(core, &tx, e.id).map_err(local)?;
    tx.commit().map_err(local)?;
    // After the commit: a crash in between leaves the copy without content, which its
    // next open notices (the file is shorter than the node) and fetches from the remote.
    match copy_ino {
        Some(ino) => core.content().rename(e.ino, ino).map_err(local)?,
        None => core.content().remove(e.ino),
    }
    drop(conn);
    core.content_replaced(e.ino);
    Ok(())
}

pub fn host_name() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// `report.txt` → `report (conflict host 2026-11-23 181500).txt`.
pub fn conflict_name(name: &str, host: &str, at: SystemTime) -> String {
    let stamp = utc_stamp(at);
    let host: String = host.chars().filter(|c| *c != '/').collect();
    match name.rfind('.') {
        Some(i) if i > 0 => format!("{} (conflict {host} {stamp}){}", &name[..i], &name[i..]),
        _ => format!("{name} (conflict {host} {stamp})"),
    }
}

fn utc_stamp(at: SystemTime) -> String {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}{:02}{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_names_keep_the_extension() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(
            conflict_name("report.txt", "box", t),
            "report (conflict box 2026-11-18 110640).txt"
        );
        assert_eq!(
            conflict_name("Makefile", "box", t),
            "Makefile (conflict box 2026-11-18 110640)"
        );
        assert_eq!(
            conflict_name(".bashrc", "box", t),
            ".bashrc (conflict box 2026-11-18 110640)"
        );
    }
}
