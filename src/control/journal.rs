//! `sync`, `journal`, `journal retry` and `journal drop`: the changes waiting for the
//! remote.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::protocol::{JournalArgs, JournalDropArgs, JournalRetryArgs, SyncArgs};
use super::{CmdError, CmdResult, Context};
use crate::journal;
use crate::store::now_ms;

/// Runs the health check and the replay now. With `wait`, always returns: once the
/// journal is empty; or, when every change left is set aside or held back by one that
/// is, saying which need attention; or at the timeout, which also bounds waiting for an
/// offline server to come back. Anything but "drained" is an error (non-zero exit).
pub fn sync(ctx: &Context, args: &SyncArgs) -> CmdResult {
    let core = &ctx.core;
    // `kick: false`: a follow-up of a wait already started (`ctl sync --wait` asks again
    // every `slice_ms` to show progress); the check and the retry were done then.
    let kick = args.kick;
    let mut online = core.health.is_online();
    if kick {
        let remote = core.remote().clone();
        online = core.runtime().block_on(core.health.check(remote.as_ref()));
        journal::retry_waiting_now(&core.store())?;
        core.journal_changed.notify_one();
    }
    let wait = args.wait;
    if !wait {
        let mut v = snapshot(ctx)?;
        v["online"] = json!(online);
        return Ok(v);
    }
    // The timeout the user gave (and the message names); `timeout_ms`, when given, is
    // what is left of it for this request.
    let given = Duration::from_secs(args.timeout_s.unwrap_or(600).min(7 * 86400));
    let timeout = match args.timeout_ms {
        Some(ms) => Duration::from_millis(ms).min(given),
        None => given,
    };
    // With a slice, an answer comes back after at most this long, drained or not.
    let slice_end = args
        .slice_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    let deadline = Instant::now() + timeout;
    let mut progress = core.journal_progress();
    loop {
        let (waiting, failed, _) = journal::stats(&core.store())?;
        if waiting == 0 && failed == 0 {
            return Ok(json!({"drained": true, "failed": 0}));
        }
        if core.health.is_online() && stuck(core)? {
            let entries = journal::list(&core.store(), true)?;
            let lines: Vec<String> = entries
                .iter()
                .map(|e| {
                    format!(
                        "  #{} {} {}: {}",
                        e.id,
                        e.op.as_str(),
                        crate::control::printable(&e.path),
                        crate::control::printable(e.last_error.as_deref().unwrap_or("error"))
                    )
                })
                .collect();
            return Err(CmdError(format!(
                "{failed} change(s) need attention ({waiting} more wait behind them); \
                 see `davdrive ctl journal --failed`:\n{}",
                lines.join("\n")
            )));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let slice_left = slice_end.map(|end| end.saturating_duration_since(Instant::now()));
        if !left.is_zero() && slice_left.is_some_and(|l| l.is_zero()) {
            let mut v = snapshot(ctx)?;
            v["drained"] = json!(false);
            return Ok(v);
        }
        if left.is_zero() {
            let why = if core.health.is_online() {
                String::new()
            } else {
                format!(
                    "; the remote is offline ({})",
                    core.health.state().last_error.unwrap_or_default()
                )
            };
            return Err(CmdError(format!(
                "not drained after {}: {waiting} change(s) wait, {failed} need attention{why}",
                crate::control::human_duration(given)
            )));
        }
        // Woken by progress or a health change; the second is a floor for changes
        // neither reports (an entry dropped by another command).
        let nap = left
            .min(slice_left.unwrap_or(left))
            .min(Duration::from_secs(1));
        core.wait_journal_progress(&mut progress, nap);
    }
}

/// How much waits: entries, bytes of the uploads among them, entries set aside, and the
/// bytes uploaded since the process started (which move during a large upload).
fn snapshot(ctx: &Context) -> CmdResult {
    let (waiting, failed, _) = journal::stats(&ctx.core.store())?;
    let (bytes, running) = super::status::journal_load(ctx)?;
    Ok(json!({
        "waiting": waiting,
        "waiting_bytes": bytes,
        "in_flight": running,
        "failed": failed,
        "uploaded_bytes": crate::metrics::METRICS.uploaded_bytes(),
    }))
}

/// Nothing is running, nothing may start, and nothing waits out a backoff: every
/// change left is set aside or held back by one that is.
fn stuck(core: &crate::fs::Core) -> Result<bool, CmdError> {
    let conn = core.store();
    let now = core.clock().now_ms();
    Ok(!journal::anything_running(&conn)?
        && journal::ready(&conn, &Default::default(), 1, now)?.is_empty()
        && journal::next_retry_at(&conn, now)?.is_none())
}

pub fn list(ctx: &Context, args: &JournalArgs) -> CmdResult {
    let failed_only = args.failed;
    let entries = journal::list(&ctx.core.store(), failed_only)?;
    let now = now_ms();
    Ok(Value::Array(
        entries
            .iter()
            .map(|e| {
                json!({
                    "id": e.id,
                    "op": e.op.as_str(),
                    "path": e.path,
                    "dest": e.dest,
                    "attempts": e.attempts,
                    "last_error": e.last_error,
                    "failed": e.failed,
                    "age_s": ((now - e.created_at) / 1000).max(0),
                })
            })
            .collect(),
    ))
}

pub fn retry(ctx: &Context, args: &JournalRetryArgs) -> CmdResult {
    let id = args.id;
    let all = args.all;
    if id.is_none() && !all {
        return Err(CmdError("give an entry id, or all".into()));
    }
    let n = journal::retry(&ctx.core.store(), id)?;
    if let (0, Some(id)) = (n, id) {
        return Err(CmdError(format!("no journal entry {id}")));
    }
    ctx.core.journal_changed.notify_one();
    Ok(json!({"retried": n}))
}

pub fn drop_entry(ctx: &Context, args: &JournalDropArgs) -> CmdResult {
    let id = args.id;
    if !args.yes {
        return Err(CmdError(
            "dropping an entry gives up on sending that change; confirm with --yes".into(),
        ));
    }
    match ctx.core.drop_journal_entry(id) {
        Ok(saved) => Ok(json!({"dropped": id, "content_saved_at": saved})),
        Err(crate::fs::FsError::NotFound) => Err(CmdError(format!("no journal entry {id}"))),
        Err(e) => Err(CmdError(format!("entry {id}: {e}"))),
    }
}
