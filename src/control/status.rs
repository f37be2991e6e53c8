//! `status`, `health` and `metrics`: how the mount is doing.

use serde_json::{json, Value};

use super::{unix_secs, CmdError, CmdResult, Context};
use crate::cache;
use crate::journal;

fn conflicts_open(ctx: &Context) -> rusqlite::Result<u64> {
    ctx.core.db().read(crate::store::conflicts::open_count)
}

/// Bytes of content the waiting uploads carry, and entries running now.
pub(super) fn journal_load(ctx: &Context) -> rusqlite::Result<(u64, u64)> {
    ctx.core.db().read(crate::store::journal::load)
}

pub fn status(ctx: &Context) -> CmdResult {
    let core = &ctx.core;
    let h = core.health.state();
    let (waiting, failed, oldest) = core.db().read(journal::stats)?;
    let (bytes, running) = journal_load(ctx)?;
    let usage = core.cache_usage()?;
    let limits = &core.cfg.cache;
    let (fs_total, fs_free) = cache::fs_space(core.cache_dir())?;
    let now = unix_secs(std::time::SystemTime::now());
    Ok(json!({
        "online": h.online,
        "read_only": ctx.read_only.is_some(),
        "read_only_reason": ctx.read_only,
        "since": unix_secs(h.since),
        "last_check": h.last_check.map(unix_secs),
        "last_check_latency_ms": h.last_latency.map(|d| d.as_secs_f64() * 1000.0),
        "last_error": h.last_error,
        "journal": {
            "waiting": waiting,
            "waiting_bytes": bytes,
            "oldest_age_s": oldest.map(|ms| (now - ms / 1000).max(0)),
            "failed": failed,
            "in_flight": running,
        },
        "cache": {
            "files": usage.files,
            "bytes": usage.bytes,
            "clean_bytes": usage.clean_bytes(),
            "dirty_files": usage.dirty_files,
            "dirty_bytes": usage.dirty_bytes,
            "pinned_files": usage.pinned_files,
            "pinned_bytes": usage.pinned_bytes,
            "disk_free": fs_free,
        },
        "limits": {
            "max_age_s": limits.max_age.as_secs(),
            "max_size": limits.max_size_for(fs_total),
            "min_free": limits.min_free,
        },
        "conflicts": conflicts_open(ctx)?,
        "poll": core.poll_status(),
        "jobs": ctx.jobs.list(),
        "mountpoint": ctx.mountpoint,
        "metrics_url": ctx.metrics_addr.map(|a| format!("http://{a}/metrics")),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": ctx.started.elapsed().map(|d| d.as_secs()).unwrap_or(0),
    }))
}

pub fn health(ctx: &Context) -> CmdResult {
    let core = ctx.core.clone();
    let remote = core.remote().clone();
    let (probe, quota) = core.runtime().block_on(async {
        let probe = remote.probe().await;
        let quota = remote.quota().await.ok();
        (probe, quota)
    });
    let dead_props = dead_properties(&core, ctx.read_only.is_some());
    // Found out (with a scratch file) at the first large upload; not asked here.
    let partial = core.partial_put.get().copied();
    let partial_updates = core.partial_updates.get().copied();
    match probe {
        Ok(info) => {
            core.health.mark_online(Some(info.latency));
            let (avail, used) = quota.unwrap_or((None, None));
            Ok(json!({
                "online": true,
                "read_only": ctx.read_only.is_some(),
                "read_only_reason": ctx.read_only,
                "latency_ms": info.latency.as_secs_f64() * 1000.0,
                "dav_classes": info.dav_classes,
                "partial_put": partial,
                "partial_updates": partial_updates,
                "quota_available": avail,
                "quota_used": used,
                "dead_properties": dead_props,
            }))
        }
        Err(e) => {
            if e.is_transport() {
                core.health.mark_offline(&e.to_string());
            }
            Err(super::CmdError(format!("the server does not answer: {e}")))
        }
    }
}

pub fn metrics(ctx: &Context) -> CmdResult {
    let text = crate::metrics::METRICS.render(&gauges(&ctx.core)?);
    Ok(Value::String(text))
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

/// Whether the server keeps davdrive's dead properties (mode, owner, times): found out at
/// the first upload, or asked here once (a property set on the mounted folder and
/// removed again) when nothing was uploaded yet. Not asked of a read-only mount.
fn dead_properties(core: &std::sync::Arc<crate::fs::Core>, read_only: bool) -> Option<bool> {
    if let Some(known) = core.dead_props.get() {
        return Some(*known);
    }
    if read_only {
        return None;
    }
    let remote = core.remote().clone();
    let kept = core
        .runtime()
        .block_on(async move { remote.dead_props_supported().await })
        .ok()?;
    crate::journal::replay::meta::note_support(core, kept);
    Some(kept)
}
