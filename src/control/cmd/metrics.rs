//! `ctl metrics`: the counters and gauges in the Prometheus text format (the same text
//! the `--metrics-addr` endpoint serves).

use crate::control::{CmdError, Context};
use crate::journal;

pub fn run(ctx: &Context) -> Result<String, CmdError> {
    Ok(crate::metrics::METRICS.render(&gauges(&ctx.core)?))
}

/// The metrics' gauges, read now (for `ctl metrics` and the HTTP endpoint).
pub fn gauges(core: &crate::fs::Core) -> Result<crate::metrics::Gauges, CmdError> {
    let (waiting, failed, oldest) = core.db().read(journal::stats)?;
    let usage = core.cache_usage()?;
    let now_ms = crate::store::now_ms();
    let (conflicts, last_backup) = core
        .db()
        .read(crate::store::conflicts::open_count_and_last_backup)?;
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
