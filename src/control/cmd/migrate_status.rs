//! `ctl migrate status [ID] [--watch]`, `ctl migrate pause ID` and `ctl migrate resume
//! ID` (one file: pausing and resuming answer with the migration's status, shown alike).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::control::client::{human_age, human_size, request, s, u};
use crate::control::protocol::{IdArgs, MigrateStatusArgs, Request};
use crate::control::{CmdResult, Context};

pub fn status(ctx: &Context, args: &MigrateStatusArgs) -> CmdResult {
    match args.id {
        Some(id) => Ok(Value::Array(vec![ctx.migrations.status(id)?])),
        None => Ok(ctx.migrations.current()?),
    }
}

pub fn pause(ctx: &Context, args: &IdArgs) -> CmdResult {
    Ok(ctx.migrations.pause(args.id)?)
}

pub fn resume(ctx: &Context, args: &IdArgs) -> CmdResult {
    Ok(ctx.migrations.resume(args.id)?)
}

pub fn render(r: &Value) -> String {
    let list = match r {
        Value::Array(a) => a.clone(),
        one => vec![one.clone()],
    };
    if list.is_empty() {
        return "no migrations\n".into();
    }
    list.iter().map(migration_text).collect()
}

/// One migration's progress in a few lines.
fn migration_text(m: &Value) -> String {
    let f = &m["files"];
    let b = &m["bytes"];
    let rate = m["rate_bytes_per_s"]
        .as_u64()
        .map(|r| format!(", {}/s", human_size(r)))
        .unwrap_or_default();
    let eta = m["eta_s"]
        .as_i64()
        .map(|e| format!(", ETA {}", human_age(e)))
        .unwrap_or_default();
    // The phase only where it says more than the state ("running (copying)").
    let state = match (s(m, "state"), s(m, "phase")) {
        (state, phase) if phase.is_empty() || phase == state => state.to_string(),
        (state, phase) => format!("{state} ({phase})"),
    };
    let mut out = format!(
        "migration {}: {state}  {} -> {}\n",
        u(m, "id"),
        s(m, "src"),
        s(m, "dest")
    );
    out += &format!(
        "  files: {} total, {} done, {} failed, {} skipped, {} excluded, {} staged, {} pending\n",
        u(f, "total"),
        u(f, "done"),
        u(f, "failed"),
        u(f, "skipped"),
        u(m, "excluded"),
        u(f, "staged") + u(f, "landed"),
        u(f, "pending")
    );
    out += &format!(
        "  bytes: {} of {} ({:.1}%){rate}{eta}\n",
        human_size(u(b, "done")),
        human_size(u(b, "total")),
        m["percent"].as_f64().unwrap_or(0.0)
    );
    if m["source"].is_object() {
        out += &source_text(&m["source"]);
    }
    if u(m, "errors") > 0 {
        out += &format!(
            "  {} item(s) to look at: `ctl migrate errors {}`\n",
            u(m, "errors"),
            u(m, "id")
        );
    }
    if let Some(e) = m["error"].as_str() {
        out += &format!("  error: {e}\n");
    }
    out
}

/// With --delete-source: "source: 57 removed, 3 kept (1 not the same on the server, …)".
fn source_text(src: &Value) -> String {
    const REASONS: [(&str, &str); 6] = [
        ("copy_failed", "not copied"),
        ("server_differs", "not the same on the server"),
        ("changed_since_copied", "changed since copied"),
        ("not_removable", "could not be removed"),
        ("excluded", "excluded"),
        ("not_a_regular_file", "not regular files"),
    ];
    let why: Vec<String> = REASONS
        .iter()
        .filter(|(code, _)| u(&src["kept_because"], code) > 0)
        .map(|(code, words)| format!("{} {words}", u(&src["kept_because"], code)))
        .collect();
    let mut out = format!(
        "  source: {} file(s) removed, {} kept",
        u(src, "removed"),
        u(src, "kept")
    );
    if !why.is_empty() {
        out += &format!(" ({})", why.join(", "));
    }
    if u(src, "to_do") > 0 {
        out += &format!(", {} to do", u(src, "to_do"));
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
        let m = &reply["result"][0];
        if m.is_null() {
            bar.abandon();
            return Err("no migration is running".into());
        }
        let b = &m["bytes"];
        let f = &m["files"];
        bar.set_length(u(b, "total"));
        bar.set_position(u(b, "done"));
        bar.set_message(format!(
            "{} {}: {}/{} files, {} failed, {} skipped",
            s(m, "state"),
            s(m, "phase"),
            u(f, "done"),
            u(f, "total"),
            u(f, "failed"),
            u(f, "skipped")
        ));
        if plain {
            let line = format!(
                "migration {}: {} of {} file(s), {} of {}, {} failed, {} skipped",
                u(m, "id"),
                u(f, "done"),
                u(f, "total"),
                human_size(u(b, "done")),
                human_size(u(b, "total")),
                u(f, "failed"),
                u(f, "skipped")
            );
            if line != last_line {
                println!("{line}");
                last_line = line;
            }
        }
        let state = s(m, "state");
        if state != "running" {
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
