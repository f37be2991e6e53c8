//! Mode, owner and times as dead properties (PROPPATCH), so a fresh cache or another
//! machine sees them: right after each upload and folder creation, and as `meta` entries
//! for changes of them alone (see R5 in `journal`). Where the server keeps no dead
//! properties (nginx) this is found out once, said once in the log and by `ctl health`,
//! and nothing more is sent: those servers keep today's behaviour (metadata on this
//! machine only).

use std::sync::Arc;

use super::{done, ReplayResult};
use crate::fs::Core;
use crate::journal::{self, Entry};
use crate::remote::{Meta, RemoteError};
use crate::store::{self, Kind, Node};

/// The dead properties that describe `node` now.
pub(crate) fn meta_of(node: &Node) -> Meta {
    Meta {
        mode: Some(node.mode & 0o7777),
        uid: Some(node.uid),
        gid: Some(node.gid),
        mtime_ns: Some(node.mtime_ns),
        atime_ns: Some(node.atime_ns.unwrap_or(node.mtime_ns)),
        etag: node.etag.clone().filter(|_| node.kind != Kind::Dir),
        link: node.link_target.clone(),
    }
}

/// Records what the server answered about dead properties (from the probe, which reads
/// a property back); says so once when it keeps none.
pub(crate) fn note_support(core: &Core, kept: bool) {
    if core.dead_props.set(kept).is_ok() && !kept {
        tracing::warn!(
            "the server keeps no dead properties: mode, owner and times stay on this machine \
             (a fresh cache or another machine sees the defaults)"
        );
    }
}

/// Sends the metadata of `ino` to `path`. Ok(false) when there was nothing to send.
async fn send(core: &Arc<Core>, ino: u64, path: &str) -> Result<bool, RemoteError> {
    if core.dead_props.get() == Some(&false) {
        return Ok(false);
    }
    let node = match core.db().write(|tx| store::get_node(tx, ino)) {
        Ok(Some(n)) => n,
        _ => return Ok(false),
    };
    send_node(core, &node, path).await
}

/// Sends the metadata of `node` (as read by the caller) to `path`.
async fn send_node(core: &Arc<Core>, node: &Node, path: &str) -> Result<bool, RemoteError> {
    if core.dead_props.get() == Some(&false) {
        return Ok(false);
    }
    let kept = core
        .remote()
        .set_meta(path, node.kind == Kind::Dir, &meta_of(node))
        .await?;
    // A refusal settles it; a success is taken as such only by the probe (a server may
    // claim to keep what it drops).
    if !kept {
        note_support(core, false);
    }
    Ok(kept)
}

/// After an upload or folder creation of `e`: its metadata goes along. A failure other
/// than "the server keeps none" becomes a `meta` entry, retried like any other.
pub(super) async fn after(core: &Arc<Core>, e: &Entry) {
    after_sent(core, e, send(core, e.ino, &e.path).await);
}

/// `after`, with the node as the caller's last commit left it (None: gone, nothing to
/// send).
pub(super) async fn after_with(core: &Arc<Core>, e: &Entry, node: Option<Node>) {
    let Some(node) = node else { return };
    after_sent(core, e, send_node(core, &node, &e.path).await);
}

fn after_sent(core: &Arc<Core>, e: &Entry, sent: Result<bool, RemoteError>) {
    match sent {
        Ok(_) => {}
        Err(err) => {
            tracing::debug!("{}: metadata not sent yet: {err}", e.path);
            let recorded = core.db().write(|tx| {
                let node = store::get_node(tx, e.ino).ok().flatten();
                let path = store::path_of(tx, e.ino).ok().flatten();
                match (node, path) {
                    (Some(node), Some(path)) => journal::record_meta(tx, &node, &path).map(drop),
                    _ => Ok(()),
                }
            });
            if let Err(err) = recorded {
                tracing::error!("journal: {err}");
            }
            core.journal_changed.notify_one();
        }
    }
}

/// A `meta` entry: the node's metadata as it is now, to the path the entry names. A node
/// gone since, or a resource gone on the server, leaves nothing to do.
pub(super) async fn meta(core: &Arc<Core>, e: &Entry) -> ReplayResult {
    match send(core, e.ino, &e.path).await {
        Ok(_) | Err(RemoteError::NotFound) => core.db().write(|tx| done(core, tx, e)),
        Err(err) => Err(err.into()),
    }
}
