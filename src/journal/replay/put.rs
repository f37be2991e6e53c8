//! Uploads: whole files from a snapshot or streamed, large ones in resumable parts, each
//! held to the remote version it was based on (`If-Match` / `If-None-Match`).

use std::sync::Arc;

use super::{done, ReplayResult};
use crate::cache::{hex, sha256_prefix};
use crate::fs::Core;
use crate::journal::{self, Entry};
use crate::remote::{BodyHash, Precondition, RemoteError};
use crate::store;
use crate::store::Kind;

use super::conflict::resolve_conflict;
use super::parents::with_parents;
use super::COMPARE_LIMIT;
use super::{partial_put_supported, preconditions_honored, ReplayError};

pub(super) async fn put(core: &Arc<Core>, e: &Entry) -> ReplayResult {
    with_parents(core, e, &e.path, || put_once(core, e)).await
}

async fn put_once(core: &Arc<Core>, e: &Entry) -> ReplayResult {
    // A large new file still being written: its finished parts go first.
    if let Some(early) = core.early_parts_of(e.ino, e.id) {
        super::early::send_while_written(core, e, &early).await?;
    }
    // What was written since the base version goes with this upload (writes committed
    // later are left for the next); where the server takes them, as ranges only. Taken
    // with the node in one hold of the store, so the size read covers every range
    // taken (a commit lands before both or after both).
    let (node, sending) = core.db().write(|tx| {
        Ok::<_, ReplayError>(match store::get_node(tx, e.ino)? {
            // Unlinked here while still open (an orphan, parent 0): removed like a
            // file gone, though its handles still read and write it.
            Some(n) if n.kind != Kind::Dir && n.parent != 0 => {
                let sending = journal::take_written(tx, e.id, e.ino)?;
                (Some(n), sending)
            }
            other => (other, None),
        })
    })?;
    let node = match node {
        // A symbolic link is sent as a small file holding its target.
        Some(n) if n.kind != Kind::Dir && n.parent != 0 => n,
        // The file is gone; the entry that removed it follows. Parts an earlier attempt
        // sent go now: the removal knows nothing of them.
        _ => {
            drop_scratch_or_queue(core, e).await?;
            return core.db().write(|tx| done(core, tx, e));
        }
    };
    let local_path = core.content().path(e.ino);
    if super::partial::wanted(core, &node, &sending).await? {
        let ranges = sending.unwrap_or_default();
        return super::partial::put_partial(core, e, &node, ranges).await;
    }
    // Sent whole: a file changed here without all of it gets the rest first.
    let node = match super::partial::whole_from_here(core, e, node).await? {
        Ok(node) => node,
        Err(()) => return Ok(()),
    };
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
    let snapshot = if node.size <= core.cfg.uploads.snapshot_limit {
        let (path, size) = (local_path.clone(), node.size);
        Some(super::blocking(move || snapshot(&path, size)).await?)
    } else {
        None
    };
    let sent = match &snapshot {
        Some((_, sha)) => Some(sha.clone()),
        None if node.size <= COMPARE_LIMIT => {
            let (path, size) = (local_path.clone(), node.size);
            let hashed = super::blocking(move || sha256_prefix(&path, size)).await;
            Some(being_written(core, e, hashed)?)
        }
        None => None,
    };
    if let Some(sha) = &sent {
        core.db()
            .write(|tx| journal::add_sent_hash(tx, e.id, sha))?;
    }
    if node.size >= core.cfg.uploads.parts_from && partial_put_supported(core).await? {
        return put_in_parts(core, e, &node, cond, sent).await;
    }
    let mtime = Some(store::ns_to_system_time(node.mtime_ns));
    // A streamed body may carry writes made through a handle still open while it goes:
    // it is hashed as it streams, so its hash names what the server took.
    let body_hash = (snapshot.is_none() && node.size <= COMPARE_LIMIT).then(BodyHash::default);
    let reply = match snapshot {
        Some((data, _)) => core.remote().put_bytes(&e.path, data, cond, mtime).await,
        None => {
            core.remote()
                .put(
                    &e.path,
                    &local_path,
                    node.size,
                    cond,
                    mtime,
                    body_hash.as_ref(),
                )
                .await
        }
    };
    // Whatever the reply (a lost one may hide a version that landed), a body that went
    // out whole names a version of ours: recorded before anything else can fail, so a
    // later delete or upload of this file knows it.
    let sent = record_streamed(core, e, body_hash, node.size, sent)?;
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
        Err(err) => return Err(err.into()),
    };
    // The entry ends here: parts of an earlier attempt that cannot go now (the server
    // went away after this upload) go by an entry of their own.
    drop_scratch_or_queue(core, e).await?;
    finish_upload_and_meta(core, e, etag, sent, node.size).await
}

pub(super) use crate::journal::scratch_path;

/// An earlier attempt of this entry sent parts that the change now does not need (the
/// file shrank below the part size, is deleted, or went up another way): its scratch
/// file goes, so nothing of it stays on the server; if it cannot go now (the server is
/// away), its removal is queued as an entry of its own. An entry that never sent parts
/// (every small file) costs one look on the reader, no turn on the writer.
pub(super) async fn drop_scratch_or_queue(core: &Arc<Core>, e: &Entry) -> ReplayResult<()> {
    let Some((ino, scratch)) = core.db().read(|c| journal::scratch_of(c, e.id))? else {
        return Ok(());
    };
    let removed = match core.remote().delete(&scratch, false).await {
        Ok(()) => true,
        Err(err) => {
            tracing::debug!("{scratch}: not removed yet, queued: {err}");
            false
        }
    };
    core.db().write(|tx| {
        if !removed {
            journal::record_scratch_removal(tx, ino, &scratch)?;
        }
        journal::set_scratch(tx, e.id, None)?;
        journal::set_part_progress(tx, e.id, "", 0)
    })?;
    Ok(())
}

/// A large upload, sent in parts to a scratch file beside the target and moved over it
/// when complete, so a cut connection or a crash costs only the part in flight: the next
/// attempt asks the server how much of the scratch file it holds and goes on from there
/// (as long as the local version is still the one being sent). Readers of the target
/// never see a half-written file. The precondition is checked just before the final
/// MOVE (a change landing between that check and the MOVE is not caught).
pub(super) async fn put_in_parts(
    core: &Arc<Core>,
    e: &Entry,
    node: &store::Node,
    cond: Precondition,
    sent: Option<String>,
) -> ReplayResult {
    let remote = core.remote().clone();
    let local_path = core.content().path(e.ino);
    let scratch = scratch_path(&e.path, e.ino);
    // Only a scratch file holding a prefix of this very local version may be continued.
    // Named by `part_version`, not by hashing the whole file first: that was a second
    // pass over gigabytes before the first byte went.
    // Parts an earlier attempt sent under another name (the entry was handed to a
    // conflict copy, or followed its file aside) are not continued: they go first.
    let earlier = core.db().write(|tx| journal::scratch_of(tx, e.id))?;
    if let Some((_, old)) = earlier.filter(|(_, old)| *old != scratch) {
        tracing::debug!("{}: parts sent to {old} before are dropped", e.path);
        drop_scratch_or_queue(core, e).await?;
    }
    // The version as the store has it now, read with the progress: a rename or a change
    // of times since `node` was read carried the progress over to it (see
    // `carry_part_progress`), and a change of content makes it differ from both.
    let (done_version, done_bytes, now) = core.db().write(|tx| {
        let (done, bytes) = journal::part_progress(tx, e.id)?;
        let now = store::get_node(tx, e.ino)?.filter(|n| n.size == node.size);
        Ok::<_, ReplayError>((done, bytes, now.map(|n| journal::part_version(&n))))
    })?;
    let version = now.unwrap_or_else(|| journal::part_version(node));
    let mut offset = 0;
    // Writes through a handle still open change the content file but not that version
    // (they are committed at the close): parts sent before them are not a prefix of what
    // is here now, and the hash taken for this attempt would not name what the scratch
    // file holds. Such an upload starts over.
    let written_since = core.is_write_dirty(e.ino);
    if done_version.as_deref() == Some(version.as_str()) && done_bytes > 0 && !written_since {
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
    // Named before the first part goes: however this entry ends (a partial update
    // next time, a conflict, a removal, a crash now), the scratch file is not forgotten.
    // The version is named once; each part then adds its bytes (a rename meanwhile may
    // carry the name on).
    (core.db()).write(|tx| {
        journal::set_scratch(tx, e.id, Some(&scratch))?;
        journal::set_part_progress(tx, e.id, &version, offset)
    })?;
    // Parts sent in order from the first byte, all in this attempt, are hashed as they
    // go: that names what the scratch file holds, however the file changed meanwhile.
    let body_hash = (offset == 0 && node.size <= COMPARE_LIMIT).then(BodyHash::default);
    while offset < node.size {
        let len = core.cfg.uploads.part.min(node.size - offset);
        if offset == 0 {
            let cond = Precondition::None;
            (remote.put(&scratch, &local_path, len, cond, mtime, body_hash.as_ref())).await?;
        } else {
            (remote.put_range(&scratch, &local_path, offset, len, body_hash.as_ref())).await?;
        }
        offset += len;
        (core.db()).write(|tx| journal::raise_part_bytes(tx, e.id, offset))?;
    }
    let held = remote.stat(&scratch).await?.map(|s| s.size);
    if held != Some(node.size) {
        (core.db()).write(|tx| journal::set_part_progress(tx, e.id, &version, 0))?;
        return Err(ReplayError::Remote(RemoteError::BadReply(format!(
            "{scratch}: server holds {held:?} bytes after sending {}",
            node.size
        ))));
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
    // The MOVE makes what the scratch file holds our version at the path: its hash is
    // recorded first, so that a crash or an outage right after the MOVE cannot leave a
    // version of ours there that a later delete or upload takes for somebody else's.
    let sent = match body_hash.and_then(|h| h.of(node.size)) {
        Some(streamed) => record_streamed_hash(core, e, streamed, sent)?,
        None => what_scratch_holds(core, e, &scratch, &local_path, node.size, sent).await?,
    };
    remote.rename(&scratch, &e.path, false).await?;
    // Moved over the file: no scratch file of this entry is left.
    (core.db()).write(|tx| journal::set_scratch(tx, e.id, None))?;
    let etag = remote.stat(&e.path).await?.and_then(|s| s.etag);
    finish_upload_and_meta(core, e, etag, sent, node.size).await
}

/// A hash of the local file at the size the store records, or `Later` when it cannot be
/// taken because a handle still open is changing the file (a cut through it is committed
/// at its close, which queues the upload again).
fn being_written(
    core: &Arc<Core>,
    e: &Entry,
    hashed: ReplayResult<String>,
) -> ReplayResult<String> {
    match hashed {
        Err(ReplayError::Io(err)) if core.is_write_dirty(e.ino) => {
            Err(ReplayError::Later(format!(
                "{}: being written through a handle still open ({err})",
                e.path
            )))
        }
        other => other,
    }
}

/// Whether the local file still hashes to `before` (what an upload of `e` read first)
/// over `size` bytes. If not, written meanwhile: its version now is recorded as one of
/// ours, since whatever went out may be it; none when it is shorter (cut through a
/// handle still open).
async fn still_as_sent(
    core: &Arc<Core>,
    e: &Entry,
    local: &std::path::Path,
    size: u64,
    before: &str,
) -> ReplayResult<bool> {
    let local = local.to_path_buf();
    let after = super::blocking(move || sha256_prefix(&local, size))
        .await
        .ok();
    if after.as_deref() == Some(before) {
        return Ok(true);
    }
    if let Some(after) = &after {
        core.db()
            .write(|tx| journal::add_sent_hash(tx, e.id, after))?;
    }
    Ok(false)
}

/// The hash of what the scratch file of a resumed part upload holds (parts sent in one
/// attempt from the first byte are hashed as they go), recorded as a version of ours.
/// `before` was taken from the local file before the first part; parts are read
/// from it as they go, so a write through a handle still open may land between two of
/// them and the scratch file then holds a mix of both versions. Unchanged on disk
/// afterwards, `before` stands; otherwise the scratch file (ours alone) is read back and
/// hashed, and the local version now is recorded too (a later attempt may send it).
async fn what_scratch_holds(
    core: &Arc<Core>,
    e: &Entry,
    scratch: &str,
    local: &std::path::Path,
    size: u64,
    before: Option<String>,
) -> ReplayResult<Option<String>> {
    let Some(before) = before else {
        return Ok(None);
    };
    if still_as_sent(core, e, local, size, &before).await? {
        return Ok(Some(before));
    }
    tracing::debug!(
        "{}: written while its parts were sent; reading them back",
        e.path
    );
    Ok(Some(hash_held(core, e, scratch, size).await?))
}

/// The hash of the `size` bytes a file of ours alone on the server holds (a scratch file
/// or a base copy, before it is moved over its target), read back and recorded as a
/// version of ours.
pub(super) async fn hash_held(
    core: &Arc<Core>,
    e: &Entry,
    path: &str,
    size: u64,
) -> ReplayResult<String> {
    let reply = core.remote().get_range(path, 0, size).await?;
    if reply.data.len() as u64 != size {
        return Err(ReplayError::Remote(RemoteError::BadReply(format!(
            "{path}: read back {} bytes of {size}",
            reply.data.len()
        ))));
    }
    let held = super::sha256_of(reply.data).await?;
    core.db()
        .write(|tx| journal::add_sent_hash(tx, e.id, &held))?;
    Ok(held)
}

/// The hash of what a streamed upload sent, when its body went out whole (`body_hash`
/// saw `size` bytes): recorded as a version of ours unless it is `before`, the hash
/// taken before sending (the file did not change meanwhile), already recorded. Otherwise
/// `before` stands.
fn record_streamed(
    core: &Arc<Core>,
    e: &Entry,
    body_hash: Option<BodyHash>,
    size: u64,
    before: Option<String>,
) -> ReplayResult<Option<String>> {
    match body_hash.and_then(|h| h.of(size)) {
        Some(streamed) => record_streamed_hash(core, e, streamed, before),
        None => Ok(before),
    }
}

fn record_streamed_hash(
    core: &Arc<Core>,
    e: &Entry,
    streamed: String,
    before: Option<String>,
) -> ReplayResult<Option<String>> {
    if before.as_deref() != Some(streamed.as_str()) {
        tracing::debug!("{}: written while it was sent", e.path);
        core.db()
            .write(|tx| journal::add_sent_hash(tx, e.id, &streamed))?;
    }
    Ok(Some(streamed))
}

/// A version a whole-file upload left: its ETag, and the hash of the bytes sent (taken
/// as they went) for a file small enough to be compared later.
pub(super) struct Uploaded {
    pub etag: Option<String>,
    pub sha256: Option<String>,
}

/// PUTs a whole file and returns the new version's ETag (asking for it when the server
/// sends none with the reply, as some do).
pub(super) async fn upload_whole(
    remote: &Arc<dyn crate::remote::Remote>,
    path: &str,
    local: &std::path::Path,
    node: &store::Node,
    cond: Precondition,
) -> Result<Uploaded, RemoteError> {
    let mtime = Some(store::ns_to_system_time(node.mtime_ns));
    let hash = (node.size <= COMPARE_LIMIT).then(BodyHash::default);
    let reply = (remote.put(path, local, node.size, cond, mtime, hash.as_ref())).await?;
    let sha256 = hash.and_then(|h| h.of(node.size));
    let etag = match reply.etag {
        Some(t) => Some(t),
        None => remote.stat(path).await?.and_then(|s| s.etag),
    };
    Ok(Uploaded { etag, sha256 })
}

/// Reads the first `len` bytes of the content file for one upload attempt, so a write
/// landing during the upload cannot tear it. Held in memory: a full cache disk has no
/// room for a copy, and uploading is what makes room.
pub(super) fn snapshot(
    content: &std::path::Path,
    len: u64,
) -> std::io::Result<(bytes::Bytes, String)> {
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

/// The upload of `size` bytes landed as version `etag`: it is the base of the file now.
pub(super) fn finish_upload(
    core: &Arc<Core>,
    e: &Entry,
    etag: Option<String>,
    sha256: Option<String>,
    size: u64,
) -> ReplayResult {
    finish_upload_reading(core, e, etag, sha256, size).map(drop)
}

/// `finish_upload`, then the node's metadata (`meta::after`) as that commit left it: the
/// node is read in the same transaction, one turn on the store per upload fewer.
pub(super) async fn finish_upload_and_meta(
    core: &Arc<Core>,
    e: &Entry,
    etag: Option<String>,
    sha256: Option<String>,
    size: u64,
) -> ReplayResult {
    let node = finish_upload_reading(core, e, etag, sha256, size)?;
    super::meta::after_with(core, e, node).await;
    Ok(())
}

fn finish_upload_reading(
    core: &Arc<Core>,
    e: &Entry,
    etag: Option<String>,
    sha256: Option<String>,
    size: u64,
) -> ReplayResult<Option<store::Node>> {
    core.db().write(|tx| {
        store::versions::mark_uploaded(tx, e.ino, etag.as_deref(), sha256.as_deref(), size)?;
        journal::rebase_deletes(tx, e.ino, etag.as_deref())?;
        let more = journal::has_pending_put(tx, e.ino, e.id)?;
        if !more && !core.is_write_dirty(e.ino) {
            store::set_dirty(tx, e.ino, false)?;
        }
        done(core, tx, e)?;
        Ok(store::get_node(tx, e.ino)?)
    })
}
