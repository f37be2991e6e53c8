//! `ctl metrics`: the counters and gauges in the Prometheus text format (the same text
//! the `--metrics-addr` endpoint serves).

use crate::control::{CmdError, Context};
use crate::journal;

pub fn run(ctx: &Context) -> Result<String, CmdError> {
    Ok(crate::metrics::METRICS.render(&gauges(&ctx.core)?))
}

/// The metrics' gauges, read now (for `ctl metrics` and the HTTP endpoint).
pub fn gauges(core: &crate::fs::Core) -> Result<crate::metrics::Gauges, CmdError> {
    let (waiting, failed, oldest) = journal::stats(&core.store())?;
    let usage = core.cache_usage()?;
    let now_ms = crate::store::now_ms();
    let (conflicts, last_backup): (i64, Option<i64>) = core.store().query_row(
        "SELECT (SELECT COUNT(*) FROM conflicts WHERE resolved = 0), \
         (SELECT MAX(ended_at) FROM backups WHERE state = 'success')",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(crate::metrics::Gauges {
        remote_up: core.health.is_online(),
        cache_files: usage.files,
        cache_bytes: usage.bytes,
        dirty_bytes: usage.dirty_bytes,
        journal_waiting: waiting,
        journal_failed: failed,
        oldest_entry_age_s: oldest.map_or(0, |ms| ((now_ms - ms).max(0) / 1000) as u64),
        conflicts: conflicts as u64,
        last_backup_success: last_backup.unwrap_or(0),
    })
}

pub fn render(text: &str) -> String {
    text.to_string()
}
