//! `ctl sync [--wait]`: the health check and the replay now; with `--wait`, followed
//! until the journal is drained (a progress bar on a terminal).

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::control::client::{human_age, human_size, request, u};
use crate::control::protocol::{Request, SyncArgs};
use crate::control::{CmdError, Context};
use crate::journal;

/// How much waits. Without `wait`: the counts and `online`; an answer of a wait cut at
/// its slice: the counts and `drained: false`; drained: `drained: true` and `failed`
/// only.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SyncReply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<u64>,
    pub failed: u64,
    /// Bytes uploaded since the daemon started (they move during a large upload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploaded_bytes: Option<u64>,
}

/// Runs the health check and the replay now. With `wait`, always returns: once the
/// journal is empty; or, when every change left is set aside or held back by one that
/// is, saying which need attention; or at the timeout, which also bounds waiting for an
/// offline server to come back. Anything but "drained" is an error (non-zero exit).
pub fn run(ctx: &Context, args: &SyncArgs) -> Result<SyncReply, CmdError> {
    let core = &ctx.core;
    // `kick: false`: a follow-up of a wait already started (`ctl sync --wait` asks again
    // every `slice_ms` to show progress); the check and the retry were done then.
    let kick = args.kick;
    let mut online = core.health.is_online();
    if kick {
        let remote = core.remote().clone();
        online = core.runtime().block_on(core.health.check(remote.as_ref()));
        core.db().write(|tx| journal::retry_waiting_now(tx))?;
        core.journal_changed.notify_one();
    }
    let wait = args.wait;
    if !wait {
        return Ok(SyncReply {
            online: Some(online),
            ..snapshot(ctx)?
        });
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
        // On the writer, as the stuck check below: a read that does not wait for a commit in
        // progress could count an entry that the check then finds gone.
        // A large file still being written has its upload queued already (its parts go
        // early); what it will send is not committed, so it is not waited for. Counted
        // in the same hold of the writer as the rest, which such an entry is added under.
        let (waiting, failed, awaiting) = core.db().write(|c| {
            let (waiting, failed, _) = journal::stats(c)?;
            let mut awaiting = 0;
            for id in core.uploads_awaiting_commit() {
                awaiting += journal::put_still_due(c, id)? as u64;
            }
            Ok::<_, rusqlite::Error>((waiting, failed, awaiting))
        })?;
        let committed = waiting.saturating_sub(awaiting);
        if committed == 0 && failed == 0 {
            return Ok(SyncReply {
                drained: Some(true),
                ..Default::default()
            });
        }
        if core.health.is_online() && core.journal_stuck()? {
            let entries = core.db().read(|c| journal::list(c, true))?;
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
            return Ok(SyncReply {
                drained: Some(false),
                ..snapshot(ctx)?
            });
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
fn snapshot(ctx: &Context) -> Result<SyncReply, CmdError> {
    let (waiting, failed, _) = ctx.core.db().read(journal::stats)?;
    let (bytes, running) = super::status::journal_load(ctx)?;
    Ok(SyncReply {
        waiting: Some(waiting),
        waiting_bytes: Some(bytes),
        in_flight: Some(running),
        failed,
        uploaded_bytes: Some(crate::metrics::METRICS.uploaded_bytes()),
        ..Default::default()
    })
}

pub fn render(r: &SyncReply) -> String {
    if r.drained == Some(true) {
        format!("journal drained ({} failed entries set aside)\n", r.failed)
    } else {
        format!(
            "sync started: remote {}, {} waiting, {} failed\n",
            if r.online == Some(true) {
                "online"
            } else {
                "offline"
            },
            r.waiting.unwrap_or(0),
            r.failed
        )
    }
}

/// `sync --wait`: starts the replay, then follows the journal until it is empty, set
/// aside or past `timeout`. On a terminal a progress bar (changes, bytes, rate, time
/// left); otherwise (and unless `json_out`) a plain line each second. Returns the last
/// reply: drained, or the error that says what blocks.
pub fn sync_wait(socket: &Path, timeout: Duration, json_out: bool) -> Result<Value, String> {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    use std::io::IsTerminal;
    const SLICE: Duration = Duration::from_secs(1);
    let ask = |args: SyncArgs| {
        request(
            socket,
            &Request::Sync(args),
            SLICE + Duration::from_secs(60),
        )
    };
    let first = ask(SyncArgs::default())?;
    if first["ok"].as_bool() != Some(true) {
        return Ok(first);
    }
    let r = &first["result"];
    let started = std::time::Instant::now();
    let deadline = started + timeout;
    let up0 = u(r, "uploaded_bytes");
    let mut p = SyncProgress::new(u(r, "waiting"), u(r, "waiting_bytes"));
    let terminal = !json_out && std::io::stdout().is_terminal();
    let bar = ProgressBar::with_draw_target(Some(p.total_bytes), ProgressDrawTarget::stdout());
    if terminal {
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}  {msg}",
            )
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar.set_message(p.counts());
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
        if !json_out {
            let online = if r["online"] == true {
                "online"
            } else {
                "offline"
            };
            if p.total == 0 {
                println!("sync: nothing waits, remote {online}");
            } else {
                println!(
                    "sync: {} change(s) to send ({}), remote {online}",
                    p.total,
                    human_size(p.total_bytes)
                );
            }
        }
    }
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let reply = ask(SyncArgs {
            wait: true,
            kick: false,
            timeout_ms: Some(left.as_millis() as u64),
            timeout_s: Some(timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0)),
            slice_ms: Some(SLICE.as_millis() as u64),
        })?;
        let r = &reply["result"];
        if reply["ok"].as_bool() != Some(true) || r["drained"] != false {
            if r["drained"] == true {
                p.update(0, 0, u(r, "uploaded_bytes").max(up0) - up0);
                bar.set_position(p.done_bytes);
            }
            bar.finish_and_clear();
            return Ok(reply);
        }
        p.update(
            u(r, "waiting"),
            u(r, "waiting_bytes"),
            u(r, "uploaded_bytes").saturating_sub(up0),
        );
        if terminal {
            bar.set_length(p.total_bytes);
            bar.set_position(p.done_bytes);
            bar.set_message(p.counts());
        } else if !json_out {
            println!("sync: {}", p.line(started.elapsed()));
        }
    }
}

/// What `sync --wait` has seen go: entries and upload bytes, with totals that grow when
/// changes are made meanwhile.
struct SyncProgress {
    waiting: u64,
    waiting_bytes: u64,
    sent: u64,
    total: u64,
    sent_entry_bytes: u64,
    total_bytes: u64,
    /// Bytes uploaded since the start (a large upload moves this while it runs).
    done_bytes: u64,
}

impl SyncProgress {
    fn new(waiting: u64, waiting_bytes: u64) -> SyncProgress {
        SyncProgress {
            waiting,
            waiting_bytes,
            sent: 0,
            total: waiting,
            sent_entry_bytes: 0,
            total_bytes: waiting_bytes,
            done_bytes: 0,
        }
    }

    fn update(&mut self, waiting: u64, waiting_bytes: u64, uploaded: u64) {
        self.sent += self.waiting.saturating_sub(waiting);
        self.sent_entry_bytes += self.waiting_bytes.saturating_sub(waiting_bytes);
        self.waiting = waiting;
        self.waiting_bytes = waiting_bytes;
        self.total = self.sent + waiting;
        self.total_bytes = self.sent_entry_bytes + waiting_bytes;
        // Retried uploads send bytes twice: never past the total.
        self.done_bytes = uploaded.min(self.total_bytes);
    }

    fn counts(&self) -> String {
        format!("{}/{} changes", self.sent, self.total)
    }

    /// "2 of 5 changes sent, 1.0 MiB of 3.0 MiB, 512 KiB/s, about 4s left".
    fn line(&self, elapsed: Duration) -> String {
        let mut out = format!(
            "{} of {} change(s) sent, {} of {}",
            self.sent,
            self.total,
            human_size(self.done_bytes),
            human_size(self.total_bytes)
        );
        let secs = elapsed.as_secs_f64();
        if secs > 0.0 && self.done_bytes > 0 {
            let rate = self.done_bytes as f64 / secs;
            out += &format!(", {}/s", human_size(rate as u64));
            let rest = self.total_bytes.saturating_sub(self.done_bytes) as f64 / rate;
            if self.total_bytes > self.done_bytes {
                out += &format!(", about {} left", human_age(rest.ceil() as i64));
            }
        }
        out
    }
}
