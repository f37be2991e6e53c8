//! `ctl backup run [--wait]` and `backup-job` (one file: `run --wait` starts a run and
//! follows it with `backup-job`, which no command line sends alone).

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::backup::BackupJob;
use crate::control::client::human_size;
use crate::control::protocol::{IdArgs, Request};
use crate::control::{CmdError, Context};

/// The run started.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunReply {
    pub id: i64,
    pub name: String,
}

pub fn run(ctx: &Context) -> Result<RunReply, CmdError> {
    let (id, name) = ctx.backups.run_now()?;
    Ok(RunReply { id, name })
}

/// `backup-job`: the run's record, its progress while it runs, and whether the remote
/// is reachable now (an upload waits for it).
#[derive(Debug, Serialize, Deserialize)]
pub struct JobReply {
    #[serde(flatten)]
    pub job: BackupJob,
    pub online: bool,
}

pub fn job(ctx: &Context, a: &IdArgs) -> Result<JobReply, CmdError> {
    Ok(JobReply {
        job: ctx.backups.job(a.id)?,
        online: ctx.core.health.is_online(),
    })
}

pub fn render(r: &RunReply) -> String {
    format!("backup {} started (id {})\n", r.name, r.id)
}

/// How a run followed by `backup run --wait` ended.
pub struct Waited {
    /// Landed completely. A failure, a partial backup and a timeout are not ok.
    pub ok: bool,
    pub text: String,
    /// The run's last record, as the daemon sent it.
    pub job: Value,
}

/// `backup run --wait`: starts a run and follows it (a progress bar on a terminal) until
/// it has landed on the remote or failed. Err only when the daemon cannot be asked.
pub fn run_and_wait(socket: &Path, timeout: Duration, json_out: bool) -> Result<Waited, String> {
    let request = |req: Request| -> Result<Value, String> {
        let reply = crate::control::client::request(socket, &req, Duration::from_secs(120))?;
        if reply["ok"].as_bool() == Some(true) {
            Ok(reply["result"].clone())
        } else {
            Err(reply["error"].as_str().unwrap_or("error").to_string())
        }
    };
    let started: RunReply = serde_json::from_value(request(Request::BackupRun {})?)
        .map_err(|e| format!("unexpected reply to backup-run: {e}"))?;
    let (id, name) = (started.id, started.name);
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
        let typed = JobReply::deserialize(&job)
            .map_err(|e| format!("unexpected reply to backup-job: {e}"))?;
        let run = &typed.job.run;
        let state = run.state.clone();
        if let Some(p) = &typed.job.progress {
            bar.set_length(p.total_bytes);
            bar.set_position(p.done_bytes);
            let phase = p.state.as_str();
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
                let text = job_text(run, &name);
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
                    run.error.as_deref().unwrap_or("no reason recorded")
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

fn job_text(run: &crate::backup::BackupRow, name: &str) -> String {
    format!(
        "backup {name} done: {}, SHA-256 {}\n",
        human_size(run.size.unwrap_or(0).max(0) as u64),
        run.sha256.as_deref().unwrap_or("?")
    )
}
