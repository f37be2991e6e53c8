//! `ctl migrate status [ID] [--watch]`, `ctl migrate pause ID` and `ctl migrate resume
//! ID` (one file: pausing and resuming answer with the migration's status, shown alike).

use std::path::Path;
use std::time::Duration;

use crate::control::client::{human_age, human_size, request};
use crate::control::protocol::{IdArgs, MigrateStatusArgs, Request};
use crate::control::{CmdError, Context};
pub use crate::migrate::MigrationStatus;
use crate::migrate::SourceReport;

/// `migrate-status`: a list, of one migration when an id is given.
pub fn status(ctx: &Context, args: &MigrateStatusArgs) -> Result<Vec<MigrationStatus>, CmdError> {
    match args.id {
        Some(id) => Ok(vec![ctx.migrations.status(id)?]),
        None => Ok(ctx.migrations.current()?),
    }
}

pub fn pause(ctx: &Context, args: &IdArgs) -> Result<MigrationStatus, CmdError> {
    Ok(ctx.migrations.pause(args.id)?)
}

pub fn resume(ctx: &Context, args: &IdArgs) -> Result<MigrationStatus, CmdError> {
    Ok(ctx.migrations.resume(args.id)?)
}

pub fn render(list: &[MigrationStatus]) -> String {
    if list.is_empty() {
        return "no migrations\n".into();
    }
    list.iter().map(migration_text).collect()
}

/// One migration's progress in a few lines.
fn migration_text(m: &MigrationStatus) -> String {
    let f = &m.files;
    let b = &m.bytes;
    let rate = m
        .rate_bytes_per_s
        .map(|r| format!(", {}/s", human_size(r)))
        .unwrap_or_default();
    let eta = m
        .eta_s
        .map(|e| format!(", ETA {}", human_age(e as i64)))
        .unwrap_or_default();
    // The phase only where it says more than the state ("running (copying)").
    let state = match (m.state.as_str(), m.phase.as_str()) {
        (state, phase) if phase.is_empty() || phase == state => state.to_string(),
        (state, phase) => format!("{state} ({phase})"),
    };
    let mut out = format!("migration {}: {state}  {} -> {}\n", m.id, m.src, m.dest);
    out += &format!(
        "  files: {} total, {} done, {} failed, {} skipped, {} excluded, {} staged, {} pending\n",
        f.total,
        f.done,
        f.failed,
        f.skipped,
        m.excluded,
        f.staged + f.landed,
        f.pending
    );
    out += &format!(
        "  bytes: {} of {} ({:.1}%){rate}{eta}\n",
        human_size(b.done),
        human_size(b.total),
        m.percent
    );
    if let Some(src) = &m.source {
        out += &source_text(src);
    }
    if m.errors > 0 {
        out += &format!(
            "  {} item(s) to look at: `ctl migrate errors {}`\n",
            m.errors, m.id
        );
    }
    if let Some(e) = &m.error {
        out += &format!("  error: {e}\n");
    }
    out
}

/// With --delete-source: "source: 57 removed, 3 kept (1 not the same on the server, …)".
fn source_text(src: &SourceReport) -> String {
    const REASONS: [(&str, &str); 6] = [
        ("copy_failed", "not copied"),
        ("server_differs", "not the same on the server"),
        ("changed_since_copied", "changed since copied"),
        ("not_removable", "could not be removed"),
        ("excluded", "excluded"),
        ("not_a_regular_file", "not regular files"),
    ];
    let kept = |code: &str| src.kept_because.get(code).copied().unwrap_or(0);
    let why: Vec<String> = REASONS
        .iter()
        .filter(|(code, _)| kept(code) > 0)
        .map(|(code, words)| format!("{} {words}", kept(code)))
        .collect();
    let mut out = format!(
        "  source: {} file(s) removed, {} kept",
        src.removed, src.kept
    );
    if !why.is_empty() {
        out += &format!(" ({})", why.join(", "));
    }
    if src.to_do > 0 {
        out += &format!(", {} to do", src.to_do);
    }
    out + "\n"
}

/// `migrate status --watch`: a live progress bar until the migration ends or pauses.
pub fn watch_migration(socket: &Path, id: Option<i64>, json_out: bool) -> Result<(), String> {
    use indicatif::{ProgressBar, ProgressStyle};
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{bar:40}] {percent:>3}% {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}  {msg}",
        )
        .map_err(|e| e.to_string())?
        .progress_chars("=> "),
    );
    // Not on a terminal (a pipe, a log): a plain line each time something moved.
    let plain = !json_out && !std::io::IsTerminal::is_terminal(&std::io::stderr());
    if json_out || plain {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut last_line = String::new();
    loop {
        let reply = request(
            socket,
            &Request::MigrateStatus(MigrateStatusArgs { id }),
            Duration::from_secs(60),
        )?;
        if reply["ok"].as_bool() != Some(true) {
            bar.abandon();
            return Err(reply["error"].as_str().unwrap_or("error").to_string());
        }
        let list: Vec<MigrationStatus> = match serde_json::from_value(reply["result"].clone()) {
            Ok(l) => l,
            Err(e) => {
                bar.abandon();
                return Err(format!("unexpected reply to migrate-status: {e}"));
            }
        };
        let Some(m) = list.first() else {
            bar.abandon();
            return Err("no migration is running".into());
        };
        let b = &m.bytes;
        let f = &m.files;
        bar.set_length(b.total);
        bar.set_position(b.done);
        bar.set_message(format!(
            "{} {}: {}/{} files, {} failed, {} skipped",
            m.state, m.phase, f.done, f.total, f.failed, f.skipped
        ));
        if plain {
            let line = format!(
                "migration {}: {} of {} file(s), {} of {}, {} failed, {} skipped",
                m.id,
                f.done,
                f.total,
                human_size(b.done),
                human_size(b.total),
                f.failed,
                f.skipped
            );
            if line != last_line {
                println!("{line}");
                last_line = line;
            }
        }
        if m.state != "running" {
            bar.finish();
            if json_out {
                println!("{reply}");
            } else {
                print!("{}", migration_text(m));
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
