//! Partial updates: a changed file of which the server has a version sends only the byte
//! ranges written here since that version (its base), where the server takes them
//! (`Remote::partial_support`, tried once per mount on scratch files).
//!
//! The scheme, and why it never leaves a mix on the server:
//! 1. A copy of the base version is made on the server, beside the file, under a hidden
//!    scratch name (`journal::base_copy_path`): a COPY held to the base ETag (an `If`
//!    header naming the file and its version), so it is the base or nothing. A write to
//!    a file not all here makes it before the first write (`fs::partial`); otherwise the
//!    upload makes it.
//! 2. The written ranges go into the copy (`PUT` with `Content-Range`, or SabreDAV's
//!    `PATCH`), in parts of `UploadSizes::part`. Nobody else writes there, so a cut
//!    connection or a crash between two ranges leaves the copy half-written and the
//!    file untouched; the journal entry records which local version and how many bytes
//!    of its ranges the server confirmed, and the next attempt goes on from there.
//! 3. The copy, checked to have the file's size, is moved over the file by a MOVE held to
//!    the base version (an `If` header naming the destination): the file changes from
//!    the base to ours in one step, or not at all.
//! 4. Refused because somebody else changed the file: the copy, which holds our whole
//!    version, is moved beside it as the conflict copy (`name (conflict …)`) and the
//!    file takes their version here. A file deleted there gets ours back under its name.
//!
//! Everything else (a file cut below its size on the server, a server without partial
//! updates, a file created here) is sent whole, its missing bytes fetched first from its
//! base copy (`fetch_rest`).

use std::sync::Arc;
use std::time::SystemTime;

use super::conflict::{conflict_name, host_name, numbered, take_theirs};
use super::{done, ReplayError, ReplayResult};
use crate::fs::{Core, FsError};
use crate::journal::{self, Entry};
use crate::remote::RemoteError;
use crate::store::{self, Kind, Node, RangeSet};

/// Whether this upload of `node` goes as ranges: the file is a version of the server's
/// with a known base, its written ranges are known (`sending`), it is not shorter than
/// the base, the server takes partial updates, and it is worth it (the file is not all
/// here, or it is large and the ranges are at most half of it).
pub(super) async fn wanted(
    core: &Arc<Core>,
    node: &Node,
    sending: &Option<RangeSet>,
) -> Result<bool, RemoteError> {
    let Some(ranges) = sending else {
        return Ok(false);
    };
    let base_size = node.base_size.unwrap_or(u64::MAX);
    let shape = node.kind != Kind::Dir
        && node.on_remote
        && node.etag.is_some()
        && node.size >= base_size
        && base_size >= core.cfg.uploads.partial_from
        && (!node.fully_cached() || ranges.bytes() <= node.size / 2);
    if !shape {
        return Ok(false);
    }
    super::partial_updates_supported(core).await
}

/// Sends the ranges `sending` of `node` as a partial update (see the module's header).
pub(super) async fn put_partial(
    core: &Arc<Core>,
    e: &Entry,
    node: &Node,
    mut sending: RangeSet,
) -> ReplayResult {
    if node.parent == 0 {
        // Unlinked while open: never sent; its removal follows.
        return core.db().write(|tx| done(core, tx, e));
    }
    let remote = core.remote().clone();
    let base = node.etag.clone().unwrap_or_default();
    let size = node.size;
    sending.truncate(size);
    let (done_version, done_bytes) = core.db().write(|tx| journal::part_progress(tx, e.id))?;
    // Written through a handle still open: bytes not committed yet are in the local file
    // but not in the ranges sent.
    let dirty_at_start = core.is_write_dirty(e.ino);
    // The hash of the version sent, where it is all here and small enough to hash: a
    // later delete (or conflict check) then knows it for ours, whatever ETag the server
    // gives it after a move (as whole uploads do).
    let sha = if node.fully_cached() && size <= super::COMPARE_LIMIT {
        let path = core.content().path(e.ino);
        let sha = super::blocking(move || crate::cache::sha256_prefix(&path, size)).await?;
        core.db()
            .write(|tx| journal::add_sent_hash(tx, e.id, &sha))?;
        Some(sha)
    } else {
        None
    };
    // A crash (or a lost reply) after the MOVE but before its success was recorded: the
    // copy is gone and the file holds our version.
    if let (Some(v), Some(copy)) = (done_version.as_deref(), node.base_copy.as_deref()) {
        if v.starts_with("moving:")
            && remote.stat(copy).await?.is_none()
            && our_version(core, e, node, &sending).await?
        {
            tracing::info!("{}: an earlier attempt's update had landed", e.path);
            let etag = remote.stat(&e.path).await?.and_then(|s| s.etag);
            return finish(core, e, etag, size, sha).await;
        }
    }
    if sending.is_empty() && Some(size) == node.base_size && node.base_copy.is_none() {
        // Nothing written since the base version (a truncate to the same size, say): the
        // base version is ours and the server had it. If another client has replaced or
        // deleted it since, theirs came after ours, so theirs wins: the next listing sees
        // the ETag move on a clean file and takes their version (or their delete), as
        // for any file whose change had landed. Asking here and meeting it as a conflict
        // would revive a file they deleted after our version was on the server.
        let etag = node.etag.clone();
        return finish(core, e, etag, size, sha).await;
    }
    let mut attempt = 0;
    let (copy, moving, sent) = loop {
        attempt += 1;
        // 1. The base copy.
        let recorded = core
            .db()
            .write(|tx| store::get_node(tx, e.ino))?
            .and_then(|n| n.base_copy);
        let copy = match recorded {
            Some(c) => c,
            None => {
                let made = core.ensure_base_copy(e.ino).await?;
                let now = core.db().write(|tx| store::get_node(tx, e.ino))?;
                match (made, now) {
                    // Removed here meanwhile: its removal follows (and takes the copy).
                    (_, None) => return core.db().write(|tx| done(core, tx, e)),
                    (
                        true,
                        Some(Node {
                            base_copy: Some(c), ..
                        }),
                    ) => c,
                    // The file on the server is no longer the base version.
                    (false, Some(_)) => return base_gone(core, e, node).await,
                    (true, Some(_)) => {
                        return Err(ReplayError::Retry(format!(
                            "{}: its base copy was given up meanwhile",
                            e.path
                        )))
                    }
                }
            }
        };
        // 2. The ranges, going on from what an earlier attempt had sent to this copy of
        // this very local version (named by size, mtime and ctime, like parts uploads).
        let version = format!(
            "ranges:{}:{}:{}:{copy}",
            node.size, node.mtime_ns, node.ctime_ns
        );
        let moving = format!("moving:{version}");
        let skip = match &done_version {
            Some(v) if *v == version || *v == moving => done_bytes,
            _ => 0,
        };
        if skip > 0 {
            tracing::info!(
                "{}: resuming a partial update after {skip} of {} bytes",
                e.path,
                sending.bytes()
            );
        }
        match send_ranges(core, e, &copy, &sending, &version, skip).await {
            Ok(()) => {}
            // The copy is gone (its folder removed or moved on the server, say): one
            // more is made from the file, if the file is still the base version.
            Err(ReplayError::Remote(RemoteError::NotFound)) if attempt == 1 => {
                lose_copy(core, e, &copy)?;
                continue;
            }
            Err(other) => return Err(other),
        }
        // 3. The copy must be the file now, to the byte count.
        let held = remote.stat(&copy).await?.map(|s| s.size);
        match held {
            Some(n) if n == size => break (copy, moving, sending.bytes()),
            None if attempt == 1 => {
                lose_copy(core, e, &copy)?;
                continue;
            }
            Some(n) if n > size => {
                // An earlier attempt wrote past a truncation since: the copy cannot be
                // cut. What is not here is fetched from it, then it goes; the next
                // attempt starts over.
                tracing::info!(
                    "{}: the base copy is longer than the file; starting over",
                    e.path
                );
                fetch_rest(core, e).await?;
                return Err(ReplayError::Retry(format!(
                    "{}: partial update started over",
                    e.path
                )));
            }
            other => {
                // Sent again from the start next time.
                core.db()
                    .write(|tx| journal::set_part_progress(tx, e.id, "", 0))?;
                return Err(ReplayError::Retry(format!(
                    "{copy}: the server holds {other:?} bytes after the update, not {size}"
                )));
            }
        }
    };
    // The copy may hold a mix of versions (a write landed while the ranges went), or
    // lack bytes not committed when they were taken: the hash taken first then names
    // nothing on the server. The copy, ours alone, is read back and hashed instead,
    // before the MOVE makes it the file.
    let sha = match sha {
        Some(_) if dirty_at_start || written_since(core, e, node)? => {
            tracing::debug!("{}: written while its ranges were sent", e.path);
            Some(super::put::hash_held(core, e, &copy, size).await?)
        }
        other => other,
    };
    // 4. Over the file, only while it is the base version. Marked first: if the reply
    // is lost, the next attempt looks whether it landed.
    core.db()
        .write(|tx| journal::set_part_progress(tx, e.id, &moving, sent))?;
    let moved = match remote.move_file_if(&copy, &e.path, &base).await {
        Err(RemoteError::PreconditionFailed) => match remote.stat(&e.path).await? {
            // The same version in another spelling (Apache: weak, then strong a second
            // later): once more with the tag as the server gives it now.
            Some(cur) if crate::remote::same_etag(cur.etag.as_deref(), Some(&base)) => {
                let tag = cur.etag.unwrap_or(base.clone());
                remote.move_file_if(&copy, &e.path, &tag).await
            }
            // Deleted on the server while changed here: ours goes back under its name
            // (their change was the deletion; nothing of theirs is lost).
            None => {
                tracing::warn!(
                    "{} was deleted on the remote but changed here; putting it back",
                    e.path
                );
                remote.rename_no_replace(&copy, &e.path, false).await
            }
            Some(_) => Err(RemoteError::PreconditionFailed),
        },
        other => other,
    };
    match moved {
        Ok(()) => {}
        Err(RemoteError::PreconditionFailed) => return conflict(core, e, node, &copy).await,
        Err(err) => return Err(err.into()),
    }
    let etag = remote.stat(&e.path).await?.and_then(|s| s.etag);
    finish(core, e, etag, size, sha).await
}

/// Writes `sending` into `copy` in parts, recording after each how many bytes the server
/// has; the first `skip` bytes were sent by an earlier attempt.
async fn send_ranges(
    core: &Arc<Core>,
    e: &Entry,
    copy: &str,
    sending: &RangeSet,
    version: &str,
    skip: u64,
) -> ReplayResult {
    let local = core.content().path(e.ino);
    let part = core.cfg.uploads.part.max(1);
    let mut sent = 0u64;
    for (a, b) in sending.iter() {
        let mut pos = a;
        while pos < b {
            let len = (b - pos).min(part);
            if sent + len > skip {
                core.remote()
                    .put_range(copy, &local, pos, len, None)
                    .await?;
            }
            sent += len;
            pos += len;
            core.db()
                .write(|tx| journal::set_part_progress(tx, e.id, version, sent))?;
        }
    }
    Ok(())
}

/// Whether the local file changed since `node` was read: written through a handle still
/// open, or a change committed (every commit moves the ctime).
fn written_since(core: &Arc<Core>, e: &Entry, node: &Node) -> ReplayResult<bool> {
    if core.is_write_dirty(e.ino) {
        return Ok(true);
    }
    let now = core.db().read(|c| store::get_node(c, e.ino))?;
    let version = |n: &Node| (n.size, n.mtime_ns, n.ctime_ns);
    Ok(now.as_ref().map(version) != Some(version(node)))
}

/// The recorded base copy is gone from the server: forgotten, so the next try makes
/// another.
fn lose_copy(core: &Arc<Core>, e: &Entry, copy: &str) -> ReplayResult {
    tracing::info!("{}: its base copy {copy} is gone from the server", e.path);
    core.db().write(|tx| {
        store::set_base_copy(tx, e.ino, None)?;
        journal::set_part_progress(tx, e.id, "", 0)
    })?;
    Ok(())
}

/// Whether the file on the server is the version an earlier attempt moved there: the
/// local size, and the bytes of the ranges sent (up to 64 MiB of them compared).
async fn our_version(
    core: &Arc<Core>,
    e: &Entry,
    node: &Node,
    sending: &RangeSet,
) -> ReplayResult<bool> {
    let Some(cur) = core.remote().stat(&e.path).await? else {
        return Ok(false);
    };
    if cur.size != node.size || sending.is_empty() {
        return Ok(false);
    }
    let local = core.content().path(e.ino);
    let mut budget: u64 = 64 << 20;
    for (a, b) in sending.iter() {
        let len = (b - a).min(budget);
        if len == 0 {
            break;
        }
        budget -= len;
        let theirs = core.remote().get_range(&e.path, a, len).await?.data;
        let path = local.clone();
        let ours = super::blocking(move || {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; len as usize];
            std::fs::File::open(&path)?.read_exact_at(&mut buf, a)?;
            Ok(buf)
        })
        .await?;
        if theirs[..] != ours[..] {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn finish(
    core: &Arc<Core>,
    e: &Entry,
    etag: Option<String>,
    size: u64,
    sha: Option<String>,
) -> ReplayResult {
    super::put::finish_upload_and_meta(core, e, etag, sha, size).await
}

/// Somebody else changed the file on the server: our version, whole in the base copy,
/// becomes the conflict copy beside theirs (moved there on the server: nothing is sent),
/// and the file takes their version here. The local content goes with the copy (its
/// missing bytes are read from the copy), and so do writes made since the upload began.
async fn conflict(core: &Arc<Core>, e: &Entry, node: &Node, copy: &str) -> ReplayResult {
    if core.is_open(e.ino) {
        return Err(ReplayError::Later(format!(
            "{} conflicts with a newer remote version; resolved once the file is closed",
            e.path
        )));
    }
    let remote = core.remote().clone();
    let (dir, name) = e.path.rsplit_once('/').unwrap_or(("", e.path.as_str()));
    let base_name = conflict_name(name, &host_name(), SystemTime::now());
    let mut n = 1;
    let (conflict_name, conflict_path) = loop {
        let candidate = numbered(&base_name, n);
        let path = format!("{dir}/{candidate}");
        match remote.rename_no_replace(copy, &path, false).await {
            Ok(()) => break (candidate, path),
            Err(RemoteError::PreconditionFailed) if n < 20 => n += 1,
            Err(err) => return Err(err.into()),
        }
    };
    let copy_etag = remote.stat(&conflict_path).await?.and_then(|s| s.etag);
    let current = remote.stat(&e.path).await?;
    tracing::warn!(
        "conflict: {} was changed on the remote; the local version was saved as {}",
        e.path,
        conflict_path
    );
    // Not a `write`: the content file moves (in `take_theirs`) once the commit is
    // made, while the writer is still held.
    core.db().with_writer(|conn| {
        let tx = conn.unchecked_transaction()?;
        let now = store::get_node(&tx, e.ino)?.unwrap_or_else(|| node.clone());
        let copy_ino = store::versions::make_conflict_copy(
            &tx,
            &now,
            &conflict_name,
            copy_etag.as_deref(),
            now.ranges.clone(),
            core.clock().now_s(),
        )?;
        // The server's copy is the version uploaded; what was written since goes next,
        // as ranges of it.
        if let Some(ino) = copy_ino {
            let since = now.written.clone().unwrap_or_default();
            store::note_written(&tx, ino, &since, now.size)?;
            store::set_base_size_and_dirty(&tx, ino, node.size, !since.is_empty())?;
        }
        let ours = copy_ino.map(|ino| (ino, conflict_path.as_str()));
        take_theirs(core, tx, e, current.as_ref(), now.mtime_ns, ours, |tx| {
            journal::record_conflict(
                tx,
                &e.path,
                &conflict_path,
                node.etag.as_deref(),
                current.as_ref().and_then(|c| c.etag.as_deref()),
            )
        })
    })?;
    core.content_replaced(e.ino);
    Ok(())
}

/// The file on the server is no longer the version our changes were made to, and no copy
/// of that version was made. All here: the usual conflict (ours uploaded beside theirs).
/// Not all here: our version cannot be put together any more; the bytes that are here
/// are kept in `<cache dir>/recovered/` with the ranges written here listed beside them,
/// the conflict is recorded, and the file takes the server's version.
async fn base_gone(core: &Arc<Core>, e: &Entry, node: &Node) -> ReplayResult {
    if node.fully_cached() {
        return super::conflict::resolve_conflict(core, e, node).await;
    }
    if core.is_open(e.ino) {
        return Err(ReplayError::Later(format!(
            "{} changed on the server; resolved once the file is closed",
            e.path
        )));
    }
    let current = core.remote().stat(&e.path).await?;
    let dir = core.cache_dir().join("recovered");
    let name = e.path.rsplit('/').next().unwrap_or("file").to_string();
    let (dest, list) = (
        dir.join(format!("{}-{name}", e.id)),
        dir.join(format!("{}-{name}.ranges", e.id)),
    );
    let written = core.db().write(|tx| {
        let mut w = store::get_node(tx, e.ino)?
            .and_then(|n| n.written)
            .unwrap_or_default();
        if let Some(s) = journal::sending(tx, e.id)? {
            w.union(&s);
        }
        Ok::<_, ReplayError>(w)
    })?;
    let content = core.content().path(e.ino);
    let (d2, l2) = (dest.clone(), list.clone());
    let size = node.size;
    super::blocking(move || {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(d2.parent().expect("in recovered/"))?;
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&d2)?;
        if let Ok(mut src) = std::fs::File::open(&content) {
            std::io::copy(&mut src, &mut out)?;
        }
        out.set_len(size)?;
        let lines: String = written.iter().map(|(a, b)| format!("{a}-{b}\n")).collect();
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&l2)
            .and_then(|mut f| std::io::Write::write_all(&mut f, lines.as_bytes()))
    })
    .await?;
    tracing::error!(
        "conflict: {} changed on the server before the parts of it not here were read; \
         the bytes written here are kept in {} (the ranges written listed in {})",
        e.path,
        dest.display(),
        list.display()
    );
    // Not a `write`: the content file moves (in `take_theirs`) once the commit is
    // made, while the writer is still held.
    core.db().with_writer(|conn| {
        let tx = conn.unchecked_transaction()?;
        take_theirs(core, tx, e, current.as_ref(), node.mtime_ns, None, |tx| {
            journal::record_conflict_because(
                tx,
                &e.path,
                &dest.to_string_lossy(),
                "changed on the server before the parts not cached here were read; the bytes \
             written here are kept in the cache's recovered folder",
            )
        })
    })?;
    core.content_replaced(e.ino);
    Ok(())
}

/// Makes the whole of a file changed here present before it is sent whole: its missing
/// bytes are fetched from its base copy (or from the file itself while it is still the
/// base version), and the copy, no longer needed, is removed (or its removal queued).
/// When neither has the base version any more, the change ends as `base_gone` says
/// (returned as `Ok(false)`).
pub(super) async fn fetch_rest(core: &Arc<Core>, e: &Entry) -> ReplayResult<bool> {
    let me = core.clone();
    let ino = e.ino;
    let fetched = tokio::task::spawn_blocking(move || me.fetch_all(ino))
        .await
        .map_err(|e| ReplayError::Io(std::io::Error::other(e)))?;
    match fetched {
        Ok(()) => {}
        Err(FsError::Remote {
            source: RemoteError::BadReply(_) | RemoteError::NotFound,
            ..
        }) => return Ok(false),
        Err(FsError::Remote { source, .. }) => return Err(source.into()),
        Err(FsError::Offline { path }) => {
            return Err(RemoteError::Transport(format!("{path}: not all fetched")).into())
        }
        Err(other) => return Err(ReplayError::Io(std::io::Error::other(other.to_string()))),
    }
    drop_base_copy(core, e).await?;
    Ok(true)
}

/// Removes the base copy of a file that is sent whole (or its removal is queued).
async fn drop_base_copy(core: &Arc<Core>, e: &Entry) -> ReplayResult {
    let copy = core
        .db()
        .write(|tx| store::get_node(tx, e.ino))?
        .and_then(|n| n.base_copy);
    if let Some(copy) = copy {
        let gone = core.remote().delete(&copy, false).await.is_ok();
        core.db().write(|tx| {
            store::set_base_copy(tx, e.ino, None)?;
            if !gone {
                journal::record_scratch_removal(tx, e.ino, &copy)?;
            }
            Ok::<_, ReplayError>(())
        })?;
    }
    Ok(())
}

/// A file changed here without all of it, to be sent whole: fetches the rest first (see
/// `fetch_rest`); the node as it is then, or the end of the change when the base
/// version is nowhere any more.
pub(super) async fn whole_from_here(
    core: &Arc<Core>,
    e: &Entry,
    node: Node,
) -> ReplayResult<Result<Node, ()>> {
    if node.fully_cached() {
        if node.base_copy.is_some() {
            drop_base_copy(core, e).await?;
        }
        return Ok(Ok(node));
    }
    tracing::info!(
        "{}: sent whole; fetching the {} bytes not here first",
        e.path,
        node.size.saturating_sub(node.cached_bytes)
    );
    if !fetch_rest(core, e).await? {
        base_gone(core, e, &node).await?;
        return Ok(Err(()));
    }
    Ok(Ok(core
        .db()
        .write(|tx| store::get_node(tx, e.ino))?
        .unwrap_or(node)))
}
