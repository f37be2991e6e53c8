//! `ctl health`: asks the server now (latency, DAV classes, what it supports, quota).

use serde::{Deserialize, Serialize};

use crate::control::client::human_size;
use crate::control::{CmdError, Context};

#[derive(Debug, Serialize, Deserialize)]
pub struct HealthReply {
    pub online: bool,
    pub read_only: bool,
    pub read_only_reason: Option<String>,
    pub latency_ms: f64,
    pub dav_classes: Vec<String>,
    pub partial_put: Option<bool>,
    pub partial_updates: Option<bool>,
    pub quota_available: Option<u64>,
    pub quota_used: Option<u64>,
    pub dead_properties: Option<bool>,
}

pub fn run(ctx: &Context) -> Result<HealthReply, CmdError> {
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
            Ok(HealthReply {
                online: true,
                read_only: ctx.read_only.is_some(),
                read_only_reason: ctx.read_only.clone(),
                latency_ms: info.latency.as_secs_f64() * 1000.0,
                dav_classes: info.dav_classes,
                partial_put: partial,
                partial_updates,
                quota_available: avail,
                quota_used: used,
                dead_properties: dead_props,
            })
        }
        Err(e) => {
            if e.is_transport() {
                core.health.mark_offline(&e.to_string());
            }
            Err(CmdError(format!("the server does not answer: {e}")))
        }
    }
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

pub fn render(r: &HealthReply) -> String {
    let q = |v: Option<u64>| v.map(human_size).unwrap_or_else(|| "not reported".into());
    let mode = match &r.read_only_reason {
        Some(why) => format!("mode:          READ-ONLY: {why}\n"),
        None => "mode:          read-write\n".into(),
    };
    mode + &format!(
        "remote:        online, {:.1} ms\nDAV classes:   {}\npartial PUT:   {}\npartial updates: {}\nquota:         {} available, {} used\n",
        r.latency_ms,
        r.dav_classes.join(", "),
        match r.partial_put {
            Some(true) => "yes",
            Some(false) => "no",
            None => "not asked yet (found out at the first large upload)",
        },
        match r.partial_updates {
            Some(true) => "yes: changed files send only the ranges written",
            Some(false) => "no: changed files are sent whole",
            None => "not asked yet (found out at the first change of a large file)",
        },
        q(r.quota_available),
        q(r.quota_used)
    ) + match r.dead_properties {
        Some(true) => "metadata:      mode, owner and times kept on the server\n",
        Some(false) => {
            "metadata:      the server keeps no dead properties: mode, owner and times \
             stay on this machine\n"
        }
        None => "",
    }
}
