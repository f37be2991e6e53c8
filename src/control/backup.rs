//! `backup run|status|list|verify|restore`: the daemon's side (handlers) and the
//! client's (text output, and `run --wait` following a run with a progress bar).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::client::{human_size, table};
use super::protocol::{BackupNameArgs, BackupRestoreArgs, IdArgs, Request};
use super::{CmdError, CmdResult, Context};

fn name_arg(name: &str) -> Result<&str, CmdError> {
    Some(name)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| CmdError("say which backup: NAME (see `backup list`)".into()))
}

pub fn run(ctx: &Context) -> CmdResult {
    let (id, name) = ctx.backups.run_now()?;
    Ok(json!({"id": id, "name": name}))
}

pub fn job(ctx: &Context, a: &IdArgs) -> CmdResult {
    let mut v = ctx.backups.job(a.id)?;
    v["online"] = ctx.core.health.is_online().into();
    Ok(v)
}

pub fn status(ctx: &Context) -> CmdResult {
    Ok(ctx.backups.status()?)
}

pub fn list(ctx: &Context) -> CmdResult {
    Ok(Value::Array(ctx.backups.list()?))
}

pub fn verify(ctx: &Context, a: &BackupNameArgs) -> CmdResult {
    Ok(ctx.backups.verify(name_arg(&a.name)?)?)
}

pub fn restore(ctx: &Context, a: &BackupRestoreArgs) -> CmdResult {
    Ok(ctx.backups.restore(name_arg(&a.name)?, &a.to, a.force)?)
}

// ----- the client's side ---------------------------------------------------------------

fn time(v: &Value) -> String {
    use chrono::TimeZone;
    v.as_i64()
        .and_then(|t| chrono::Local.timestamp_opt(t, 0).single())
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

fn describe(b: &Value) -> String {
    if b.is_null() {
        return "none".into();
    }
    let mut s = format!(
        "{} {} (started {}",
        b["name"].as_str().unwrap_or("?"),
        b["state"].as_str().unwrap_or("?"),
        time(&b["started_at"])
    );
    if let Some(size) = b["size"].as_u64() {
        s += &format!(", {}", human_size(size));
    }
    s.push(')');
    if let Some(e) = b["error"].as_str() {
        s += &format!("\n               {e}");
    }
    s
}

pub fn render(cmd: &str, r: &Value) -> String {
    match cmd {
        "backup-run" => format!(
            "backup {} started (id {})\n",
            r["name"].as_str().unwrap_or("?"),
            r["id"]
        ),
        "backup-status" => {
            let remote = &r["remote"];
            format!(
                "last backup:   {}\nlast success:  {}\nrunning:       {}\nschedule:      {}\nkept:          {} days, in {}\non the remote: {}\n",
                describe(&r["last"]),
                describe(&r["last_success"]),
                r["running"]["state"].as_str().unwrap_or("no"),
                match r["schedule"].as_str() {
                    Some(at) => format!("daily at {at}, next {}", time(&r["next_at"])),
                    None => "off".into(),
                },
                r["keep_days"],
                r["dir"].as_str().unwrap_or("?"),
                match remote["count"].as_u64() {
                    Some(n) => format!(
                        "{n} archive(s), {}",
                        human_size(remote["bytes"].as_u64().unwrap_or(0))
                    ),
                    None => format!(
                        "unknown ({})",
                        remote["error"].as_str().unwrap_or("not reachable")
                    ),
                }
            )
        }
        "backup-list" => table(
            &["NAME", "SIZE", "MADE", "STATE"],
            r.as_array()
                .map(|a| {
                    a.iter()
                        .map(|b| {
                            vec![
                                b["name"].as_str().unwrap_or("?").to_string(),
                                human_size(b["size"].as_u64().unwrap_or(0)),
                                time(&b["made_at"]),
                                b["state"].as_str().unwrap_or("?").to_string(),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default(),
        ),
        "backup-verify" | "backup-restore" => {
            let mut s = format!(
                "{}: SHA-256 {} matches, {} entries read to the end, {} files match the manifest\n",
                r["name"].as_str().unwrap_or("?"),
                r["sha256"].as_str().unwrap_or("?"),
                r["entries"],
                r["files_checked"]
            );
            for p in r["problems"].as_array().into_iter().flatten() {
                s += &format!("note from the backup: {}\n", p.as_str().unwrap_or(""));
            }
            if let Some(to) = r["to"].as_str() {
                s += &format!("restored {} entries into {to}\n", r["restored_entries"]);
            }
            s
        }
        _ => format!("{}\n", serde_json::to_string_pretty(r).unwrap_or_default()),
    }
}

/// How a run followed by `backup run --wait` ended.
pub struct Waited {
    /// Landed completely. A failure, a partial backup and a timeout are not ok.
    pub ok: bool,
    pub text: String,
    /// The run's last record.
    pub job: Value,
}

/// `backup run --wait`: starts a run and follows it (a progress bar on a terminal) until
/// it has landed on the remote or failed. Err only when the daemon cannot be asked.
pub fn run_and_wait(socket: &Path, timeout: Duration, json_out: bool) -> Result<Waited, String> {
    let request = |req: Request| -> Result<Value, String> {
        let reply = super::client::request(socket, &req, Duration::from_secs(120))?;
        if reply["ok"].as_bool() == Some(true) {
            Ok(reply["result"].clone())
        } else {
            Err(reply["error"].as_str().unwrap_or("error").to_string())
        }
    };
    let started = request(Request::BackupRun {})?;
    let id = started["id"].as_i64().ok_or("no backup id in the reply")?;
    let name = started["name"].as_str().unwrap_or("?").to_string();
    let bar = if json_out {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg:40!} [{bar:30}] {bytes}/{total_bytes}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    let deadline = Instant::now() + timeout;
    let mut said_offline = false;
    loop {
        let job = request(Request::BackupJob(IdArgs { id }))?;
        let state = job["state"].as_str().unwrap_or("?").to_string();
        if let Some(p) = job.get("progress") {
            bar.set_length(p["total_bytes"].as_u64().unwrap_or(0));
            bar.set_position(p["done_bytes"].as_u64().unwrap_or(0));
            let phase = p["state"].as_str().unwrap_or("");
            bar.set_message(phase.to_string());
            if phase.starts_with("waiting for the remote") && !said_offline {
                bar.suspend(|| {
                    eprintln!(
                        "davdrive: the remote is unreachable; backup {name} is staged and will be uploaded when it returns"
                    )
                });
                said_offline = true;
            }
        }
        match state.as_str() {
            "success" => {
                bar.finish_and_clear();
                let text = job_text(&job, &name);
                return Ok(Waited {
                    ok: true,
                    text,
                    job,
                });
            }
            "partial" | "failed" => {
                bar.finish_and_clear();
                let text = format!(
                    "backup {name} {state}: {}",
                    job["error"].as_str().unwrap_or("no reason recorded")
                );
                return Ok(Waited {
                    ok: false,
                    text,
                    job,
                });
            }
            _ => {}
        }
        if Instant::now() > deadline {
            bar.finish_and_clear();
            let text = format!(
                "backup {name} is still {state} after {}s; it goes on in the daemon (see `backup status`)",
                timeout.as_secs()
            );
            return Ok(Waited {
                ok: false,
                text,
                job,
            });
        }
        bar.tick();
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn job_text(job: &Value, name: &str) -> String {
    format!(
        "backup {name} done: {}, SHA-256 {}\n",
        human_size(job["size"].as_u64().unwrap_or(0)),
        job["sha256"].as_str().unwrap_or("?")
    )
}

/// The restore target as the daemon needs it: absolute, from the client's directory.
pub fn absolute_target(to: &Path) -> Result<PathBuf, String> {
    std::path::absolute(to).map_err(|e| format!("--to {}: {e}", to.display()))
}
