//! `sync`, `journal`, `journal retry` and `journal drop`: the changes waiting for the
//! remote.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{CmdError, CmdResult, Context};
use crate::journal;
use crate::store::now_ms;

/// Runs the health check and the replay now. With `wait`, returns once the journal is
/// empty, or fails saying what still blocks it.
pub fn sync(ctx: &Context, args: &Value) -> CmdResult {
    let core = &ctx.core;
    let remote = core.remote().clone();
    let online = core.runtime().block_on(core.health.check(remote.as_ref()));
    journal::retry_waiting_now(&core.store())?;
    core.journal_changed.notify_one();
    let wait = args.get("wait").and_then(Value::as_bool).unwrap_or(false);
    if !wait {
        let (waiting, failed, _) = journal::stats(&core.store())?;
        return Ok(json!({"online": online, "waiting": waiting, "failed": failed}));
    }
    let timeout = Duration::from_secs(
        args.get("timeout_s")
            .and_then(Value::as_u64)
            .unwrap_or(600)
            .min(7 * 86400),
    );
    let deadline = Instant::now() + timeout;
    let mut progress = (u64::MAX, Instant::now());
    loop {
        let (waiting, failed, _) = journal::stats(&core.store())?;
        if waiting == 0 {
            return Ok(json!({"drained": true, "failed": failed}));
        }
        if !core.health.is_online() {
            return Err(CmdError(format!(
                "not drained: the remote is offline ({}); {waiting} change(s) wait",
                core.health.state().last_error.unwrap_or_default()
            )));
        }
        if waiting != progress.0 {
            progress = (waiting, Instant::now());
        }
        let running: i64 =
            core.store()
                .query_row("SELECT COUNT(*) FROM journal WHERE running != 0", [], |r| {
                    r.get(0)
                })?;
        // Nothing moves and nothing runs: entries wait out a backoff after errors, or
        // behind entries set aside as failed. Say which.
        if running == 0 && progress.1.elapsed() > Duration::from_secs(3) {
            let now = now_ms();
            let blocking: Vec<String> = journal::list(&core.store(), false)?
                .iter()
                .filter(|e| e.failed || (e.attempts > 0 && e.next_try_at > now))
                .map(|e| {
                    format!(
                        "{} {} {}: {}",
                        if e.failed { "failed" } else { "retrying" },
                        e.op.as_str(),
                        e.path,
                        e.last_error.as_deref().unwrap_or("error")
                    )
                })
                .collect();
            return Err(CmdError(format!(
                "not drained: {waiting} change(s) wait; blocking them: {}",
                blocking.join("; ")
            )));
        }
        if Instant::now() > deadline {
            return Err(CmdError(format!(
                "not drained after {timeout:?}: {waiting} change(s) still wait"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn list(ctx: &Context, args: &Value) -> CmdResult {
    let failed_only = args.get("failed").and_then(Value::as_bool).unwrap_or(false);
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

pub fn retry(ctx: &Context, args: &Value) -> CmdResult {
    let id = args.get("id").and_then(Value::as_i64);
    let all = args.get("all").and_then(Value::as_bool).unwrap_or(false);
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

pub fn drop_entry(ctx: &Context, args: &Value) -> CmdResult {
    let id = args
        .get("id")
        .and_then(Value::as_i64)
        .ok_or_else(|| CmdError("give the id of the entry to drop".into()))?;
    if !args.get("yes").and_then(Value::as_bool).unwrap_or(false) {
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
