//! `ctl status`: online or not, the journal, the cache and its limits, conflicts, the
//! poll, running jobs.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cache;
use crate::control::client::{ago, human_age, human_size, s, u};
use crate::control::{printable, unix_secs, CmdError, Context};
use crate::jobs::JobReport;
use crate::journal;

#[derive(Debug, Serialize, Deserialize)]
pub struct StatusReply {
    pub online: bool,
    pub read_only: bool,
    pub read_only_reason: Option<String>,
    pub since: i64,
    pub last_check: Option<i64>,
    pub last_check_latency_ms: Option<f64>,
    pub last_error: Option<String>,
    pub journal: JournalLoad,
    pub cache: CacheTotals,
    pub limits: Limits,
    pub conflicts: u64,
    /// `fs::PollStatus`.
    pub poll: Value,
    /// `jobs::Jobs::list`.
    pub jobs: Vec<JobReport>,
    pub mountpoint: std::path::PathBuf,
    pub metrics_url: Option<String>,
    pub version: String,
    pub uptime_s: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JournalLoad {
    pub waiting: u64,
    pub waiting_bytes: u64,
    pub oldest_age_s: Option<i64>,
    pub failed: u64,
    pub in_flight: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CacheTotals {
    pub files: u64,
    pub bytes: u64,
    pub clean_bytes: u64,
    pub dirty_files: u64,
    pub dirty_bytes: u64,
    pub pinned_files: u64,
    pub pinned_bytes: u64,
    pub disk_free: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Limits {
    pub max_age_s: u64,
    pub max_size: u64,
    pub min_free: u64,
}

fn conflicts_open(ctx: &Context) -> rusqlite::Result<u64> {
    ctx.core.db().read(crate::store::conflicts::open_count)
}

/// Bytes of content the waiting uploads carry, and entries running now.
pub(crate) fn journal_load(ctx: &Context) -> rusqlite::Result<(u64, u64)> {
    ctx.core.db().read(crate::store::journal::load)
}

pub fn run(ctx: &Context) -> Result<StatusReply, CmdError> {
    let core = &ctx.core;
    let h = core.health.state();
    let (waiting, failed, oldest) = core.db().read(journal::stats)?;
    let (bytes, running) = journal_load(ctx)?;
    let usage = core.cache_usage()?;
    let limits = &core.cfg.cache;
    let (fs_total, fs_free) = cache::fs_space(core.cache_dir())?;
    let now = unix_secs(std::time::SystemTime::now());
    Ok(StatusReply {
        online: h.online,
        read_only: ctx.read_only.is_some(),
        read_only_reason: ctx.read_only.clone(),
        since: unix_secs(h.since),
        last_check: h.last_check.map(unix_secs),
        last_check_latency_ms: h.last_latency.map(|d| d.as_secs_f64() * 1000.0),
        last_error: h.last_error,
        journal: JournalLoad {
            waiting,
            waiting_bytes: bytes,
            oldest_age_s: oldest.map(|ms| (now - ms / 1000).max(0)),
            failed,
            in_flight: running,
        },
        cache: CacheTotals {
            files: usage.files,
            bytes: usage.bytes,
            clean_bytes: usage.clean_bytes(),
            dirty_files: usage.dirty_files,
            dirty_bytes: usage.dirty_bytes,
            pinned_files: usage.pinned_files,
            pinned_bytes: usage.pinned_bytes,
            disk_free: fs_free,
        },
        limits: Limits {
            max_age_s: limits.max_age.as_secs(),
            max_size: limits.max_size_for(fs_total),
            min_free: limits.min_free,
        },
        conflicts: conflicts_open(ctx)?,
        poll: serde_json::to_value(core.poll_status())?,
        jobs: ctx.jobs.list(),
        mountpoint: ctx.mountpoint.clone(),
        metrics_url: ctx.metrics_addr.map(|a| format!("http://{a}/metrics")),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_s: ctx.started.elapsed().map(|d| d.as_secs()).unwrap_or(0),
    })
}

pub fn render(r: &StatusReply) -> String {
    let j = &r.journal;
    let c = &r.cache;
    let l = &r.limits;
    let mut out = String::new();
    let state = if r.online { "online" } else { "OFFLINE" };
    out += &format!("remote:        {state} since {}\n", ago(Some(r.since)));
    out += &format!(
        "last check:    {}{}\n",
        ago(r.last_check),
        r.last_check_latency_ms
            .map(|ms| format!(", {ms:.1} ms"))
            .unwrap_or_default()
    );
    if let Some(e) = &r.last_error {
        out += &format!("last error:    {}\n", printable(e));
    }
    if let Some(why) = &r.read_only_reason {
        out += &format!("mode:          READ-ONLY: {why}\n");
    }
    out += &format!(
        "journal:       {} waiting ({}), oldest {}, {} in flight, {} failed\n",
        j.waiting,
        human_size(j.waiting_bytes),
        j.oldest_age_s
            .map(|a| format!("{} old", human_age(a)))
            .unwrap_or_else(|| "-".into()),
        j.in_flight,
        j.failed
    );
    out += &format!(
        "cache:         {} files, {} (clean {}, dirty {} in {} files, pinned {} in {} files)\n",
        c.files,
        human_size(c.bytes),
        human_size(c.clean_bytes),
        human_size(c.dirty_bytes),
        c.dirty_files,
        human_size(c.pinned_bytes),
        c.pinned_files
    );
    out += &format!(
        "limits:        max age {}, max size {}, min free {} (free now {})\n",
        human_age(l.max_age_s as i64),
        human_size(l.max_size),
        human_size(l.min_free),
        human_size(c.disk_free)
    );
    out += &format!("conflicts:     {}\n", r.conflicts);
    out += &poll_text(&r.poll);
    if r.jobs.is_empty() {
        out += "jobs:          none\n";
    }
    for (i, j) in r.jobs.iter().enumerate() {
        let (name, state) = match j {
            JobReport::Backup(b) => (&b.name, Some(&b.state)),
            JobReport::Migration(m) => (&m.id, m.state.as_ref()),
        };
        out += &format!(
            "{}{} {name}: {}\n",
            if i == 0 {
                "jobs:          "
            } else {
                "               "
            },
            j.kind(),
            state.map_or("", |s| s.as_str())
        );
    }
    if let Some(url) = &r.metrics_url {
        out += &format!("metrics:       {url}\n");
    }
    out += &format!(
        "davdrive:      {} on {}, up {}\n",
        r.version,
        r.mountpoint.display(),
        human_age(r.uptime_s as i64)
    );
    out
}

/// The `poll:` line of `status`: the last round of the background poll.
fn poll_text(p: &Value) -> String {
    if p.is_null() {
        return String::new();
    }
    if u(p, "interval_s") == 0 && p["last"].is_null() {
        return "poll:          off\n".into();
    }
    let etags = match s(p, "folder_etags") {
        "propagated" => "folder ETags propagated: unchanged folders cost one PROPFIND Depth 0",
        "not_propagated" => "folder ETags not propagated: folders are listed",
        _ => "folder ETags not known yet: folders are listed",
    };
    let last = &p["last"];
    let round = if last.is_null() {
        "no round yet".to_string()
    } else if let Some(why) = last["skipped"].as_str() {
        format!("last round {} skipped ({why})", ago(last["at"].as_i64()))
    } else {
        format!(
            "last round {}: {} folder(s) checked, {} listed, {} request(s), {} change(s){}",
            ago(last["at"].as_i64()),
            u(last, "folders"),
            u(last, "listed"),
            u(last, "requests"),
            u(last, "changes"),
            match u(last, "deferred") {
                0 => String::new(),
                n => format!(", {n} folder(s) left for the next rounds"),
            }
        )
    };
    format!(
        "poll:          every {}; {round}; {} change(s) in {} round(s)\n               {etags}\n",
        human_age(u(p, "interval_s") as i64),
        u(p, "changes_total"),
        u(p, "rounds"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The `jobs:` lines, from the jobs as the daemon sends them: a backup run, a
    /// migration, and a migration whose status could not be read.
    #[test]
    fn jobs_are_listed_by_kind_name_and_state() {
        let reply = json!({
            "online": false, "read_only": false, "read_only_reason": null, "since": 0,
            "last_check": null, "last_check_latency_ms": null, "last_error": null,
            "journal": {"waiting": 0, "waiting_bytes": 0, "oldest_age_s": null,
                        "failed": 0, "in_flight": 0},
            "cache": {"files": 0, "bytes": 0, "clean_bytes": 0, "dirty_files": 0,
                      "dirty_bytes": 0, "pinned_files": 0, "pinned_bytes": 0,
                      "disk_free": 0},
            "limits": {"max_age_s": 60, "max_size": 0, "min_free": 0},
            "conflicts": 0,
            "poll": null,
            "jobs": [
                {"id": "backup-5", "kind": "backup", "name": "backup-h-1.tar.gz",
                 "state": "waiting for the remote", "done_bytes": 1, "total_bytes": 2},
                {"id": "migration-7", "kind": "migration", "state": "paused",
                 "percent": 40.0, "src": "/data", "dest": "/Archive"},
                {"id": "migration-8", "kind": "migration", "state": null,
                 "percent": null, "src": null, "dest": null},
            ],
            "mountpoint": "/mnt/d", "metrics_url": "http://127.0.0.1:9/metrics",
            "version": "0.1.0", "uptime_s": 59,
        });
        let r = StatusReply::deserialize(&reply).unwrap();
        assert_eq!(
            render(&r),
            "remote:        OFFLINE since never\n\
             last check:    never\n\
             journal:       0 waiting (0 B), oldest -, 0 in flight, 0 failed\n\
             cache:         0 files, 0 B (clean 0 B, dirty 0 B in 0 files, pinned 0 B in 0 files)\n\
             limits:        max age 1 min, max size 0 B, min free 0 B (free now 0 B)\n\
             conflicts:     0\n\
             jobs:          backup backup-h-1.tar.gz: waiting for the remote\n\
             \x20              migration migration-7: paused\n\
             \x20              migration migration-8: \n\
             metrics:       http://127.0.0.1:9/metrics\n\
             davdrive:      0.1.0 on /mnt/d, up 59 s\n"
        );
    }
}
