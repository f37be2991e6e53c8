//! Deletes: a file goes only while it is still a version of ours (the one deleted here,
//! or one our uploads sent); somebody else's newer version wins over a delete.

use std::sync::Arc;

use super::{done, ReplayResult};
use crate::fs::Core;
use crate::journal::{self, Entry};
use crate::remote::RemoteError;

use super::{preconditions_honored, COMPARE_LIMIT};

pub(super) async fn delete(core: &Arc<Core>, e: &Entry) -> ReplayResult {
    let known_versions = !journal::sent_hashes(&core.store(), e.id)
        ?
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
        Ok(()) => done(core, &core.store(), e),
        // Changed on the remote after the version deleted here: their change wins over a
        // delete, and the file comes back with the next listing.
        Err(RemoteError::PreconditionFailed) if remote_is_ours(core, e).await? => {
            core.remote().delete(&e.path, false).await?;
            done(core, &core.store(), e)
        }
        Err(RemoteError::PreconditionFailed) => {
            tracing::warn!(
                "conflict: {} was changed on the remote after it was deleted here; keeping the remote version",
                e.path
            );
            let conn = core.store();
            journal::record_conflict(&conn, &e.path, &e.path, e.base_etag.as_deref(), None)
                ?;
            done(core, &conn, e)
        }
        Err(err) => Err(err.into()),
    }
}

/// Whether the file at `e.path` holds a version this journal entry knows as ours.
async fn remote_is_ours(core: &Arc<Core>, e: &Entry) -> ReplayResult<bool> {
    let ours = journal::sent_hashes(&core.store(), e.id)?;
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
    let sha = super::sha256_of(data).await?;
    Ok(ours.contains(&sha))
}

