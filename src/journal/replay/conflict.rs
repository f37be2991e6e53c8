//! Conflicts: the remote's version is not the one a change was based on. Both versions
//! are kept and the conflict is recorded for `ctl conflicts`.

use std::time::SystemTime;

use std::sync::Arc;

use super::{done, ReplayError, ReplayResult};
use crate::fs::Core;
use crate::journal::{self, Entry};
use crate::remote::{Precondition, RemoteError};
use crate::store;
use crate::store::RangeSet;

use super::put::{finish_upload, upload_whole};
use super::COMPARE_LIMIT;

/// The remote's version is not the one our change was based on. Unless it holds exactly
/// our bytes already, both versions are kept: ours is uploaded beside it as
/// `name (conflict <host> <UTC time>).ext`, the original name takes the remote version,
/// and the conflict is recorded.
pub(super) async fn resolve_conflict(
    core: &Arc<Core>,
    e: &Entry,
    node: &store::Node,
) -> ReplayResult {
    // Parts an earlier attempt of this upload sent are of no use to any outcome below.
    super::put::drop_scratch_or_queue(core, e).await?;
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
            let ours = {
                let (path, size) = (local_path.clone(), node.size as usize);
                super::blocking(move || {
                    let mut data = std::fs::read(&path)?;
                    data.truncate(size);
                    Ok(bytes::Bytes::from(data))
                })
                .await?
            };
            let theirs_sha = super::sha256_of(theirs.clone()).await?;
            let ours_sha = super::sha256_of(ours.clone()).await?;
            let ours = &ours[..];
            if theirs_sha == ours_sha {
                tracing::info!("{}: remote already holds this version", e.path);
                return finish_upload(core, e, cur.etag.clone(), Some(ours_sha), node.size);
            }
            // An earlier attempt of this upload reached the server whole (its success
            // was not recorded), or, on a server that writes in place, in part.
            // The remote holds exactly the version our change started from: nobody else
            // changed it, only its ETag moved (some servers change it on MOVE or
            // metadata updates).
            let is_base = node.sha256.as_deref() == Some(theirs_sha.as_str());
            let sent = core.db().write(|tx| journal::sent_hashes(tx, e.id))?;
            if is_base || sent.contains(&theirs_sha) || (e.attempted && ours.starts_with(&theirs)) {
                tracing::info!(
                    "{}: replacing what an earlier attempt of this upload left",
                    e.path
                );
                let cond = match &cur.etag {
                    Some(t) if !t.starts_with("W/") => Precondition::IfMatch(t.clone()),
                    _ => Precondition::None,
                };
                // The file may be written through a handle still open meanwhile: what
                // went out is named by the hash taken as it streamed.
                let up = upload_whole(&remote, &e.path, &local_path, node, cond).await?;
                let sha = up.sha256.or(Some(ours_sha));
                return finish_upload(core, e, up.etag, sha, node.size);
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
        let up = upload_whole(
            &remote,
            &e.path,
            &local_path,
            node,
            Precondition::IfNoneMatch,
        )
        .await?;
        return finish_upload(core, e, up.etag, up.sha256, node.size);
    };
    let _ = cur;
    if core.is_open(e.ino) {
        // Its content file cannot change hands under open descriptors.
        return Err(ReplayError::Later(format!(
            "{} conflicts with a newer remote version; resolved once the file is closed",
            e.path
        )));
    }
    let (dir, name) = match e.path.rfind('/') {
        Some(i) => (&e.path[..i], &e.path[i + 1..]),
        None => ("", e.path.as_str()),
    };
    // A second conflict on the same path within the same second gets the same name:
    // the next free one of `name (conflict …)`, `name (conflict … 2)`, … is taken.
    let base_name = conflict_name(name, &host_name(), SystemTime::now());
    let mut n = 1;
    let (conflict_name, conflict_path, conflict_etag) = loop {
        let candidate = numbered(&base_name, n);
        let path = format!("{dir}/{candidate}");
        match upload_whole(&remote, &path, &local_path, node, Precondition::IfNoneMatch).await {
            Ok(up) => break (candidate, path, up.etag),
            Err(RemoteError::PreconditionFailed) if n < 20 => n += 1,
            Err(err) => return Err(err.into()),
        }
    };
    tracing::warn!(
        "conflict: {} was changed on the remote; the local version was saved as {}",
        e.path,
        conflict_path
    );
    // Not a `write`: the content file moves (in `take_theirs`) once the commit is
    // made, while the writer is still held.
    core.db().with_writer(|conn| {
        let tx = conn.unchecked_transaction()?;
        // Closed writes may have landed since the upload started: the copy takes the
        // content as committed now, and their uploads go to the copy (below).
        let node = &store::get_node(&tx, e.ino)?.unwrap_or_else(|| node.clone());
        // The local copy becomes the conflict file, beside the original.
        let copy_ino = store::versions::make_conflict_copy(
            &tx,
            node,
            &conflict_name,
            conflict_etag.as_deref(),
            RangeSet::full(node.size),
            core.clock().now_s(),
        )?;
        // What was uploaded is the content as it was then: the uploads moved to the copy
        // below send it whole, whatever was written since.
        if let Some(ino) = copy_ino {
            store::forget_written(&tx, ino)?;
        }
        let ours = copy_ino.map(|ino| (ino, conflict_path.as_str()));
        take_theirs(core, tx, e, current.as_ref(), node.mtime_ns, ours, |tx| {
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

/// The end every conflict of an upload shares, in transaction `tx` (opened in the
/// caller's `Store::with_writer`, which holds the writer until the content file moved): file `e.ino` takes
/// the server's version `theirs` here (`mtime_ns` when the server gives no time), or
/// goes when the server has none (or a folder there); our waiting uploads of it go to the conflict copy
/// `ours` (its node and path) or, without one, are dropped; `record` records the
/// conflict; the entry is done. After the commit the content file becomes the copy's
/// or goes: a crash in between leaves the copy without content, which its next open
/// notices (the file is shorter than the node) and fetches from the remote.
pub(super) fn take_theirs(
    core: &Core,
    tx: rusqlite::Transaction<'_>,
    e: &Entry,
    theirs: Option<&crate::remote::Entry>,
    mtime_ns: i64,
    ours: Option<(u64, &str)>,
    record: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<()>,
) -> ReplayResult {
    // A folder of theirs where our file was is no version of this file: the file goes
    // here as if deleted there (the next listing shows their folder), rather than a file
    // node taking a folder's place, which a waiting rename of ours would then carry,
    // files and all, to our new name.
    match theirs.filter(|cur| !cur.is_dir) {
        Some(cur) => store::versions::adopt_remote_version(
            &tx,
            e.ino,
            cur.etag.as_deref(),
            cur.size,
            cur.mtime.map(store::system_time_to_ns).unwrap_or(mtime_ns),
        )?,
        // Deleted on the remote: the original name goes, the conflict copy stays.
        None => store::delete_node(&tx, e.ino)?,
    }
    journal::hand_puts_to(&tx, e.ino, e.id, ours)?;
    record(&tx)?;
    done(core, &tx, e)?;
    tx.commit()?;
    match ours {
        Some((ino, _)) => core.content().rename(e.ino, ino)?,
        None => core.content().remove(e.ino),
    }
    Ok(())
}

pub fn host_name() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// `report.txt` → `report (conflict host 2026-11-23 181500).txt`.
/// `report (conflict host 2026-11-23 181500).txt` as the `n`th of that name:
/// `report (conflict host 2026-11-23 181500 2).txt` for the second.
pub(super) fn numbered(conflict_name: &str, n: u32) -> String {
    if n == 1 {
        return conflict_name.to_string();
    }
    match conflict_name.rfind(')') {
        Some(i) => format!("{} {n}{}", &conflict_name[..i], &conflict_name[i..]),
        None => format!("{conflict_name} {n}"),
    }
}

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
    use std::time::Duration;

    #[test]
    fn a_second_conflict_copy_is_numbered() {
        assert_eq!(
            numbered("report (conflict box 2026-11-18 110640).txt", 2),
            "report (conflict box 2026-11-18 110640 2).txt"
        );
        assert_eq!(numbered("a (conflict b c)", 1), "a (conflict b c)");
    }

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
