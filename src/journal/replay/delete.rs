//! Deletes: a file goes only while it is still a version of ours (the one deleted here,
//! or one our uploads sent); somebody else's newer version wins over a delete. A folder
//! goes only while it is empty on the server (every change inside it was replayed
//! before its delete): files another client put there since win over the delete. A
//! file's delete never removes a folder that took its name.

use std::sync::Arc;

use super::{done, ReplayResult};
use crate::fs::Core;
use crate::journal::{self, Entry};
use crate::remote::RemoteError;

use super::{preconditions_honored, COMPARE_LIMIT};

pub(super) async fn delete(core: &Arc<Core>, e: &Entry) -> ReplayResult {
    if e.is_dir {
        return delete_folder(core, e).await;
    }
    let known_versions = !core
        .db()
        .write(|tx| journal::sent_hashes(tx, e.id))?
        .is_empty();
    let strict = preconditions_honored(core).await?;
    let result = match &e.base_etag {
        // On the remote as ours, on a server that gives no ETags: nothing to hold it to.
        Some(tag) if tag.is_empty() => match core.remote().stat(&e.path).await? {
            Some(cur) if cur.is_dir => Err(RemoteError::PreconditionFailed),
            Some(_) => core.remote().delete(&e.path, false).await,
            None => Ok(()),
        },
        // No version of ours was ever known there (created here, and what upload was
        // tried sent nothing): whatever is at the path is somebody else's.
        None if !known_versions => Ok(()),
        Some(tag) if strict && !tag.starts_with("W/") => {
            core.remote().delete_if_match(&e.path, tag).await
        }
        // A weak tag (Apache's for a file changed within the last second, the stand-in
        // for servers without ETags) never passes If-Match, and a server ignoring
        // preconditions would delete whatever is there: ask first (a change landing
        // between the two requests is not caught).
        Some(tag) => match core.remote().stat(&e.path).await? {
            Some(cur)
                if cur.is_dir || !crate::remote::same_etag(cur.etag.as_deref(), Some(tag)) =>
            {
                Err(RemoteError::PreconditionFailed)
            }
            Some(_) => core.remote().delete(&e.path, e.is_dir).await,
            None => Ok(()),
        },
        // No ETag to hold it to, but versions of ours are known (uploads that were cut
        // off or whose success was not recorded): delete only one of those.
        None if !remote_is_ours(core, e).await? => Err(RemoteError::PreconditionFailed),
        None => match core.remote().stat(&e.path).await? {
            Some(cur) if cur.is_dir => Err(RemoteError::PreconditionFailed),
            Some(_) => core.remote().delete(&e.path, false).await,
            None => Ok(()),
        },
    };
    // Parts an earlier upload of this entry sent go too (a cut part upload of a file
    // removed since became this delete).
    super::put::drop_scratch_or_queue(core, e).await?;
    match result {
        Ok(()) => core.db().write(|tx| done(core, tx, e)),
        // Changed on the remote after the version deleted here: their change wins over a
        // delete, and the file comes back with the next listing.
        Err(RemoteError::PreconditionFailed) if remote_is_ours(core, e).await? => {
            core.remote().delete(&e.path, false).await?;
            core.db().write(|tx| done(core, tx, e))
        }
        Err(RemoteError::PreconditionFailed) => core.db().write(|tx| {
            if replaced_by_a_later_move(tx, e)? {
                // A save by rename (write a temporary file, rename it over the
                // original): this delete only made room for the move, which meets the
                // same newer version and records the one conflict, with its copy.
                tracing::debug!(
                    "{}: changed on the remote; the rename over it records the conflict",
                    e.path
                );
                return done(core, tx, e);
            }
            tracing::warn!(
                "conflict: {} was changed on the remote after it was deleted here; keeping the remote version",
                e.path
            );
            journal::record_conflict(tx, &e.path, &e.path, e.base_etag.as_deref(), None)?;
            done(core, tx, e)
        }),
        Err(err) => Err(err.into()),
    }
}

/// Whether a later entry puts something else at the path this delete removes: the
/// delete is the replaced target of a rename (a move onto the path, or, when the
/// renamed file was never sent, its upload rewritten to the path). That entry meets
/// the same newer version and keeps both.
fn replaced_by_a_later_move(c: &rusqlite::Connection, e: &Entry) -> rusqlite::Result<bool> {
    crate::store::journal::later_arrival_at(c, &e.path, e.id, e.ino)
}

/// Whether the file at `e.path` holds a version this journal entry knows as ours.
async fn remote_is_ours(core: &Arc<Core>, e: &Entry) -> ReplayResult<bool> {
    let ours = core.db().write(|tx| journal::sent_hashes(tx, e.id))?;
    let Some(cur) = core.remote().stat(&e.path).await? else {
        return Ok(true);
    };
    if cur.is_dir {
        // Another client made a folder at this name: never ours to delete.
        return Ok(false);
    }
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
    let sha = super::sha256_of(data).await?;
    Ok(ours.contains(&sha))
}

/// Deletes folder `e.path` only if it holds nothing on the server: the deletes of what
/// was inside it came first, so anything there now is another client's.
async fn delete_folder(core: &Arc<Core>, e: &Entry) -> ReplayResult {
    let remote = core.remote().clone();
    let theirs = match remote.stat(&e.path).await? {
        None => return core.db().write(|tx| done(core, tx, e)),
        Some(cur) if !cur.is_dir => "a file another client put at its name",
        Some(_) => {
            let inside = remote.list(&e.path).await?;
            if inside.iter().all(|c| crate::fs::is_internal_name(&c.name)) {
                remote.delete(&e.path, true).await?;
                return core.db().write(|tx| done(core, tx, e));
            }
            "files another client added to it"
        }
    };
    tracing::warn!(
        "conflict: {} was removed here, but the server holds {theirs}; keeping them",
        e.path
    );
    core.db().write(|tx| {
        journal::record_conflict_because(
            tx,
            &e.path,
            &e.path,
            &format!("folder removed here; the server kept {theirs}"),
        )?;
        done(core, tx, e)
    })
}
