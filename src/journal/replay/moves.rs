//! Renames (MOVE with `Overwrite: F`): a target that somebody else created keeps its
//! place, and ours goes beside it as a conflict copy.

use std::time::SystemTime;

use std::sync::Arc;

use super::{done, ReplayResult};
use crate::fs::Core;
use crate::journal::{self, Entry};
use crate::remote::RemoteError;
use crate::store;

use super::conflict::{conflict_name, host_name, numbered};
use super::parents::with_parents;
use super::ReplayError;

pub(super) async fn rename(core: &Arc<Core>, e: &Entry) -> ReplayResult {
    let Some(dest) = e.dest.as_deref() else {
        return Err(ReplayError::Remote(RemoteError::BadReply(format!(
            "journal entry {}: a move without a destination",
            e.id
        ))));
    };
    if !e.is_dir && their_version_at_source(core, e, dest).await? {
        return Ok(());
    }
    // A folder another client replaced by a file: a MOVE would carry their file to our
    // folder's new name. Theirs stays; our folder is gone there, as if removed.
    if e.is_dir
        && core
            .remote()
            .stat(&e.path)
            .await?
            .is_some_and(|cur| !cur.is_dir)
    {
        return folder_gone(core, e, dest).await;
    }
    // Overwrite: F. The journal deletes a replaced target first (conditionally); if
    // something is still there, it is somebody else's and must not be clobbered.
    let moved = core
        .remote()
        .rename_no_replace(&e.path, dest, e.is_dir)
        .await;
    let moved = match moved {
        // The destination's folder may be gone on the server (409), or the source (404,
        // or a 5xx from servers that fail a MOVE of nothing): look before deciding.
        Err(RemoteError::Refused { status: 409, .. })
        | Err(RemoteError::NotFound)
        | Err(RemoteError::Server { .. }) => match core.remote().stat(&e.path).await? {
            None if e.is_dir && core.remote().stat(dest).await?.is_none() => {
                return folder_gone(core, e, dest).await;
            }
            // Gone: the cases below tell an earlier attempt's success from a file
            // whose upload never happened.
            None => Err(RemoteError::NotFound),
            Some(_) => {
                let again = with_parents(core, e, dest, || async {
                    Ok(core
                        .remote()
                        .rename_no_replace(&e.path, dest, e.is_dir)
                        .await?)
                })
                .await;
                match again {
                    Ok(()) => Ok(()),
                    // 412 and the rest go through the cases below.
                    Err(ReplayError::Remote(r)) => Err(r),
                    Err(other) => return Err(other),
                }
            }
        },
        other => other,
    };
    match moved {
        Ok(()) => {}
        Err(RemoteError::PreconditionFailed) => {
            let (dir, name) = dest.rsplit_once('/').unwrap_or(("", dest));
            let base_name = conflict_name(name, &host_name(), SystemTime::now());
            // A second conflict at the same name within the same second: the next free
            // one of `name (conflict …)`, `name (conflict … 2)`, … is taken.
            let mut n = 1;
            let aside = loop {
                let aside = format!("{dir}/{}", numbered(&base_name, n));
                match core
                    .remote()
                    .rename_no_replace(&e.path, &aside, e.is_dir)
                    .await
                {
                    Ok(()) => break aside,
                    Err(RemoteError::PreconditionFailed) if n < 20 => n += 1,
                    Err(err) => return Err(err.into()),
                }
            };
            tracing::warn!(
                "conflict: {dest} exists on the remote with somebody else's version; {} was moved to {aside} instead",
                e.path
            );
            let aside_etag = match e.is_dir {
                true => None,
                false => core.remote().stat(&aside).await?.and_then(|s| s.etag),
            };
            core.db().write(|tx| {
                // Moved on from a conflict name an earlier rename of ours went to: that
                // conflict's copy is not there any more, this one's is.
                journal::settled_by_rename(tx, &e.path)?;
                if e.is_dir {
                    store::move_base_copies(tx, &e.path, &aside)?;
                    journal::move_scratches(tx, &e.path, &aside)?;
                    follow_folder_aside(tx, e, dest, &aside)?;
                    journal::record_conflict_because(
                        tx,
                        dest,
                        &aside,
                        "folder renamed here onto a name another client took; ours kept beside it",
                    )?;
                } else {
                    // Our version is at `aside` now: what waits for it follows it there.
                    journal::follow_file_aside(tx, e.ino, dest, &aside)?;
                    if let Some(etag) = &aside_etag {
                        store::versions::retag_after_move(tx, e.ino, etag)?;
                    }
                    journal::record_conflict(tx, dest, &aside, None, None)?;
                }
                done(core, tx, e)
            })?;
            core.remote_changing(&[dest, &aside]);
            return Ok(());
        }
        // Replayed after a crash that came between the MOVE and its record: done already,
        // if what is at the destination is ours. Another client may have deleted the
        // source and put a file of theirs at the destination.
        Err(RemoteError::NotFound) if core.remote().stat(dest).await?.is_some() => {
            if !e.is_dir {
                match at_destination(core, e, dest).await? {
                    Dest::Ours => {}
                    Dest::Theirs(node) => {
                        tracing::warn!(
                            "conflict: {} was deleted on the server before its move to \
                             {dest}, where another client put a file",
                            e.path
                        );
                        return keep_ours_at_new_name(
                            core,
                            e,
                            &node,
                            dest,
                            "file deleted on the server before its rename here; local copy kept",
                        );
                    }
                    // Nothing tells whose it is: the move ends without taking that
                    // version for ours (its ETag is not adopted, so a delete or upload
                    // of ours that follows is held to the version we knew).
                    Dest::Unknown => return core.db().write(|tx| done(core, tx, e)),
                }
            }
        }
        // Moving something whose upload never happened (it was cut off, then the file
        // was renamed): nothing to move; the file goes up under its current name.
        Err(RemoteError::NotFound) if !e.is_dir => {
            // Either the entry ends here, in this one `write`, or the node on the server
            // is handed (out of it) to `keep_ours_at_new_name`, which takes its own.
            let deleted_there = core.db().write(|tx| {
                match store::get_node(tx, e.ino)? {
                    // Another client deleted it before our rename reached the server.
                    // The rename says we keep it: a copy we hold whole goes up under
                    // the new name (recorded as a conflict); one we do not is gone
                    // with their delete.
                    Some(n) if n.on_remote && !n.removed_here() => return Ok(Some(n)),
                    Some(n) if n.dirty => {
                        if let Some(path) = store::path_of(tx, e.ino)? {
                            journal::record_put(tx, e.ino, &path)?;
                        }
                    }
                    Some(_) | None => {}
                }
                tracing::info!(
                    "move {} -> {dest}: nothing there yet, the upload goes to the new name",
                    e.path
                );
                done(core, tx, e)?;
                Ok::<_, ReplayError>(None)
            })?;
            if let Some(n) = deleted_there {
                tracing::warn!(
                    "conflict: {} was deleted on the server before its move to {dest}",
                    e.path
                );
                return keep_ours_at_new_name(
                    core,
                    e,
                    &n,
                    dest,
                    "file deleted on the server before its rename here; local copy kept",
                );
            }
            return Ok(());
        }
        Err(err) => return Err(err.into()),
    }
    // Some servers give a moved file a new ETag; the version there is still ours.
    let new_etag = if e.is_dir {
        None
    } else {
        core.remote().stat(dest).await?.and_then(|s| s.etag)
    };
    core.db().write(|tx| {
        if let Some(etag) = new_etag {
            store::versions::retag_after_move(tx, e.ino, &etag)?;
            journal::rebase_deletes(tx, e.ino, Some(&etag))?;
        }
        if e.is_dir {
            // The base copies of files changed inside went along (see `replay::partial`),
            // and so did the scratch files of part uploads.
            store::move_base_copies(tx, &e.path, dest)?;
            journal::move_scratches(tx, &e.path, dest)?;
        } else {
            // From a conflict name an earlier rename of ours went to (see
            // `follow_file_aside`), on to the name given here.
            journal::settled_by_rename(tx, &e.path)?;
        }
        done(core, tx, e)
    })
}

/// A folder to be moved is gone on the server (another client removed it, or put a file
/// in its place): it is created at its new place, and the waiting changes inside it go there as recorded.
/// Its unchanged files went with the other client's removal; changed ones are uploaded.
/// If another client took the new name meanwhile, ours is created beside it instead.
async fn folder_gone(core: &Arc<Core>, e: &Entry, dest: &str) -> ReplayResult {
    let made = with_parents(core, e, dest, || async {
        Ok(core.remote().mkcol(dest).await?)
    })
    .await;
    let at = match made {
        Ok(()) => dest.to_string(),
        // 405: something is there (a file, or their folder on a server that refuses a
        // MKCOL of an existing one).
        Err(ReplayError::Remote(RemoteError::Refused { status: 405, .. })) => {
            let (dir, name) = dest.rsplit_once('/').unwrap_or(("", dest));
            let aside = format!(
                "{dir}/{}",
                conflict_name(name, &host_name(), SystemTime::now())
            );
            core.remote().mkcol(&aside).await?;
            aside
        }
        Err(err) => return Err(err),
    };
    tracing::warn!(
        "conflict: {} was removed on the server before its move here; created {at} again",
        e.path
    );
    core.db().write(|tx| {
        if at != dest {
            follow_folder_aside(tx, e, dest, &at)?;
        }
        journal::record_conflict_because(
            tx,
            &e.path,
            &at,
            "folder removed on the server, local changes kept",
        )?;
        done(core, tx, e)
    })
}

/// Our folder, meant for `dest`, is at `aside` on the server: the changes waiting inside
/// it, and the local folder if it still has that name, follow it there, so none of them
/// lands in what another client has at `dest`.
fn follow_folder_aside(
    tx: &rusqlite::Transaction<'_>,
    e: &Entry,
    dest: &str,
    aside: &str,
) -> rusqlite::Result<()> {
    journal::rewrite_prefix(tx, dest, aside, journal::Aside::Node(e.ino))?;
    let aside_name = aside.rsplit('/').next().unwrap_or(aside);
    if let Some(node) = store::node_at_path(tx, dest)? {
        if node.ino == e.ino && store::get_child(tx, node.parent, aside_name)?.is_none() {
            store::move_dir_aside(tx, node.ino, aside_name)?;
        }
    }
    Ok(())
}

/// Before a file's MOVE: whether another client changed the file at the source since our
/// version. Moving it would carry their version to our name and take it for ours. Their
/// version stays where it is; a copy of ours we hold whole goes up under the new name,
/// and the conflict is recorded. Returns true when that was done.
async fn their_version_at_source(core: &Arc<Core>, e: &Entry, dest: &str) -> ReplayResult<bool> {
    let node = match core.db().write(|tx| store::get_node(tx, e.ino))? {
        // Removed here since (still open, or gone): what the waiting delete knows of
        // our version decides, not a copy we no longer keep.
        Some(n) if n.removed_here() => {
            return removed_here_and_theirs_there(core, e, dest, n.sha256.as_deref()).await
        }
        None => {
            let later_delete = core
                .db()
                .read(|c| journal::later_delete_of(c, e.ino, e.id))?;
            if later_delete.is_none() {
                // Gone here without a removal of ours: a conflict gave its name to
                // another client's version (a folder) or removal, and our version went
                // up as a copy (`conflict::take_theirs`). Nothing of ours is at the
                // source; whatever is there stays.
                tracing::info!(
                    "move {} -> {dest}: the file went to a conflict copy; nothing to move",
                    e.path
                );
                core.db().write(|tx| done(core, tx, e))?;
                return Ok(true);
            }
            return removed_here_and_theirs_there(core, e, dest, None).await;
        }
        Some(n) => n,
    };
    let Some(base) = node.etag.as_deref().filter(|_| node.on_remote) else {
        return Ok(false);
    };
    let cur = match core.remote().stat(&e.path).await? {
        Some(cur) if !cur.is_dir && !crate::remote::same_etag(cur.etag.as_deref(), Some(base)) => {
            cur
        }
        _ => return Ok(false),
    };
    // Servers give a file a new ETag when a folder above it moves (our own replayed
    // move, whose new tags we do not learn for the files inside): a different tag alone
    // does not make it theirs. The bytes tell, where we know the hash of our version
    // and the file is small enough to read; without the hash, a size other than our
    // version's does (a new tag keeps the size); otherwise it is moved as before.
    let Some(ours) = node.sha256.as_deref() else {
        if node.base_size.is_some_and(|size| size != cur.size) {
            return theirs_at_source(core, e, &node, dest).map(|()| true);
        }
        return Ok(false);
    };
    if cur.size > super::COMPARE_LIMIT {
        return Ok(false);
    }
    let data = if cur.size == 0 {
        bytes::Bytes::new()
    } else {
        core.remote().get_range(&e.path, 0, cur.size).await?.data
    };
    if super::sha256_of(data).await? == ours {
        return Ok(false);
    }
    theirs_at_source(core, e, &node, dest)?;
    Ok(true)
}

fn theirs_at_source(core: &Arc<Core>, e: &Entry, node: &store::Node, dest: &str) -> ReplayResult {
    tracing::warn!(
        "conflict: {} was changed on the server before its move to {dest}; theirs stays, \
         ours goes to the new name",
        e.path
    );
    keep_ours_at_new_name(
        core,
        e,
        node,
        dest,
        "file changed on the server before its rename here; both kept",
    )
}

/// What a file's MOVE that found no source finds at its destination.
enum Dest {
    /// Our version: the MOVE was made before (a crash came before its record).
    Ours,
    /// Not our version (its bytes differ from the hash of ours): the node, kept here.
    Theirs(Box<store::Node>),
    /// Nothing tells: no node here any more, no hash known, or too large to read.
    Unknown,
}

async fn at_destination(core: &Arc<Core>, e: &Entry, dest: &str) -> ReplayResult<Dest> {
    let Some(node) = core.db().write(|tx| store::get_node(tx, e.ino))? else {
        return Ok(Dest::Unknown);
    };
    let Some(ours) = node.sha256.clone() else {
        return Ok(Dest::Unknown);
    };
    let cur = match core.remote().stat(dest).await? {
        Some(cur) if cur.is_dir => return Ok(Dest::Theirs(Box::new(node))),
        Some(cur) if cur.size <= super::COMPARE_LIMIT => cur,
        _ => return Ok(Dest::Unknown),
    };
    let data = if cur.size == 0 {
        bytes::Bytes::new()
    } else {
        core.remote().get_range(dest, 0, cur.size).await?.data
    };
    Ok(match super::sha256_of(data).await? == ours {
        true => Dest::Ours,
        // Removed here since: there is no copy of ours to keep beside theirs.
        false if node.removed_here() => Dest::Unknown,
        false => Dest::Theirs(Box::new(node)),
    })
}

/// Before the MOVE of a file removed here since (its delete waits further on): whether
/// the source on the server still holds our version, as that delete knows it (its base
/// ETag, or the hash of a version our uploads sent or of the base version). If another client replaced it,
/// moving it would carry their version to our name, where our delete would then remove
/// it: instead theirs stays where it is and the move ends (the delete finds nothing of
/// ours at the new name). Returns true when the move was ended so.
async fn removed_here_and_theirs_there(
    core: &Arc<Core>,
    e: &Entry,
    dest: &str,
    base_hash: Option<&str>,
) -> ReplayResult<bool> {
    let Some(del) = core
        .db()
        .write(|tx| journal::later_delete_of(tx, e.ino, e.id))?
    else {
        return Ok(false);
    };
    let cur = match core.remote().stat(&e.path).await? {
        Some(cur) if !cur.is_dir => cur,
        _ => return Ok(false),
    };
    let base = del.base_etag.as_deref();
    if base.is_some_and(|tag| {
        tag.is_empty() || crate::remote::same_etag(cur.etag.as_deref(), Some(tag))
    }) {
        // Ours (or a server without ETags, where nothing tells).
        return Ok(false);
    }
    // The versions known to be ours: what our uploads sent, and the base version's hash
    // (its ETag can be stale: servers retag files under a folder our move renamed).
    let mut sent = core.db().write(|tx| journal::sent_hashes(tx, del.id))?;
    sent.extend(base_hash.map(String::from));
    if !sent.is_empty() && cur.size <= super::COMPARE_LIMIT {
        let data = if cur.size == 0 {
            bytes::Bytes::new()
        } else {
            core.remote().get_range(&e.path, 0, cur.size).await?.data
        };
        if sent.contains(&super::sha256_of(data).await?) {
            return Ok(false);
        }
    } else if base.is_none() && !sent.is_empty() {
        // Too large to compare with what our uploads sent.
        return Ok(false);
    }
    // Otherwise not ours. Without base or sent hashes, no version of ours was ever known
    // there (created here, and the upload tried sent nothing): whatever is at the source
    // is somebody else's, as the delete that follows would judge it (see
    // `replay::delete`). Moved, it would be taken for ours and that delete would take it.
    tracing::warn!(
        "{} was changed on the server before its move to {dest}, and removed here since; \
         theirs stays",
        e.path
    );
    core.db().write(|tx| done(core, tx, e))?;
    Ok(true)
}

/// Ends a file's move whose source on the server is no longer our version (changed or
/// deleted by another client): what is there stays; a copy of ours held whole goes up
/// as new under the file's current name. One transaction with the conflict record and
/// the end of the entry.
fn keep_ours_at_new_name(
    core: &Arc<Core>,
    e: &Entry,
    node: &store::Node,
    dest: &str,
    reason: &str,
) -> ReplayResult {
    core.db().write(|tx| {
        if node.dirty || node.fully_cached() {
            store::versions::keep_local_copy(tx, e.ino)?;
            if let Some(path) = store::path_of(tx, e.ino)? {
                journal::record_put(tx, e.ino, &path)?;
            }
            journal::record_conflict_because(tx, &e.path, dest, reason)?;
        }
        done(core, tx, e)
    })
}
