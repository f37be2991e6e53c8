//! Folders that vanished on the server under waiting changes. Another client removed a
//! folder (or replaced it with a file) while changes inside it waited here: the server
//! answers 409 (or 404) to them, and would forever. Nothing local is given up:
//! - a folder that is gone is created again, the change goes on, and a conflict says
//!   "folder removed on the server, local changes kept";
//! - a folder whose name now holds a file is recreated beside it as
//!   `name (conflict <host> <time>)`, the local folder takes that name, and the waiting
//!   changes inside it follow.

use std::sync::Arc;
use std::time::SystemTime;

use super::conflict::{conflict_name, host_name};
use super::ReplayResult;
use crate::fs::Core;
use crate::journal::{self, Entry};
use crate::store;

/// The state of the folders above a path on the server.
enum Parents {
    /// All there: the refusal was about something else.
    Present,
    /// The topmost of the folders that were missing and are created again now.
    Recreated(String),
    /// This folder's name holds a file.
    File(String),
}

async fn restore(core: &Arc<Core>, path: &str) -> ReplayResult<Parents> {
    let remote = core.remote().clone();
    let mut dirs: Vec<&str> = journal::ancestors(path).collect();
    dirs.reverse();
    let mut recreated = None;
    for dir in dirs {
        match remote.stat(dir).await? {
            Some(s) if s.is_dir => {}
            Some(_) => return Ok(Parents::File(dir.to_string())),
            None => {
                remote.mkcol(dir).await?;
                recreated.get_or_insert_with(|| dir.to_string());
            }
        }
    }
    Ok(match recreated {
        Some(d) => Parents::Recreated(d),
        None => Parents::Present,
    })
}

/// What became of the folders above `path`, after a refusal that may mean one is gone.
pub(super) enum Repair {
    /// Nothing was missing: the refusal stands.
    NotParents,
    /// The folders are there again: try the change again now.
    Again,
    /// The change's paths were moved aside: it goes again from the journal.
    Moved,
}

pub(super) async fn repair(core: &Arc<Core>, e: &Entry, path: &str) -> ReplayResult<Repair> {
    match restore(core, path).await? {
        Parents::Present => Ok(Repair::NotParents),
        Parents::Recreated(dir) => {
            tracing::warn!(
                "conflict: {dir} was removed on the server while changes inside it waited \
                 here; created it again for {} {}",
                e.op.as_str(),
                e.path
            );
            core.db().write(|tx| {
                journal::record_conflict_because(
                    tx,
                    &dir,
                    &dir,
                    "folder removed on the server, local changes kept",
                )
            })?;
            Ok(Repair::Again)
        }
        Parents::File(dir) => {
            move_aside(core, e, &dir).await?;
            Ok(Repair::Moved)
        }
    }
}

/// A file took the name of folder `dir` on the server: our folder goes beside it.
pub(super) async fn move_aside(core: &Arc<Core>, e: &Entry, dir: &str) -> ReplayResult<()> {
    // A change beside this one may have moved the folder aside a moment ago: then this
    // entry's path was rewritten already.
    match core.db().write(|tx| journal::get(tx, e.id))? {
        Some(now)
            if journal::at_or_under(&now.path, dir)
                || now
                    .dest
                    .as_deref()
                    .is_some_and(|d| journal::at_or_under(d, dir)) => {}
        _ => return Ok(()),
    }
    let (parent, name) = dir.rsplit_once('/').unwrap_or(("", dir));
    let aside_name = conflict_name(name, &host_name(), SystemTime::now());
    let aside = format!("{parent}/{aside_name}");
    core.remote().mkcol(&aside).await?;
    tracing::warn!(
        "conflict: {dir} is a file on the server now; the local folder and the changes \
         waiting inside it go to {aside}"
    );
    core.db().write(|tx| {
        journal::rewrite_prefix(tx, dir, &aside, journal::Aside::Folder)?;
        // Scratch files of part uploads inside went with the folder their file replaced.
        journal::forget_scratches_under(tx, dir)?;
        // The local folder takes the new name too, if it is still where the entry says:
        // the folder at that path locally must hold the entry's node (a folder made
        // there since is another one).
        if let Some(node) = store::node_at_path(tx, dir)? {
            if node.is_dir()
                && store::is_ancestor(tx, node.ino, e.ino)?
                && store::get_child(tx, node.parent, &aside_name)?.is_none()
            {
                store::move_dir_aside(tx, node.ino, &aside_name)?;
            }
        }
        journal::record_conflict_because(
            tx,
            dir,
            &aside,
            "folder replaced by a file on the server, local folder kept beside it",
        )
    })?;
    core.remote_changing(&[dir, &aside]);
    Ok(())
}

/// Refusals that can mean a folder above the path is missing or is a file: 409 (Apache,
/// Nextcloud), 404 (some servers), 403 (dav-server, below a file), and 412 to a
/// creation with `If-None-Match: *` where nothing exists (dav-server). `restore` looks
/// before anything is changed, so a refusal for another reason costs a few PROPFINDs
/// and one more try.
pub(super) fn parent_refusal(err: &crate::remote::RemoteError) -> bool {
    use crate::remote::RemoteError;
    matches!(
        err,
        RemoteError::Refused {
            status: 403 | 409,
            ..
        } | RemoteError::NotFound
            | RemoteError::PreconditionFailed
    )
}

/// Runs `attempt`; when the server refuses it in a way that may mean a folder above
/// `path` is gone, repairs the folders and runs it once more.
pub(super) async fn with_parents<F, Fut>(
    core: &Arc<Core>,
    e: &Entry,
    path: &str,
    mut attempt: F,
) -> ReplayResult
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ReplayResult>,
{
    match attempt().await {
        Err(super::ReplayError::Remote(err)) if parent_refusal(&err) => {
            match repair(core, e, path).await? {
                Repair::Again => attempt().await,
                Repair::Moved => Err(super::ReplayError::Later(format!(
                    "{}: a folder above it was moved aside; it goes again from the journal",
                    e.path
                ))),
                // The folders are there: the refusal was about something else, or a
                // change running beside this one repaired them a moment ago. One more
                // try tells which.
                Repair::NotParents => attempt().await,
            }
        }
        other => other,
    }
}
