//! `ctl backup verify NAME` and `ctl backup restore NAME --to DIR` (one file: a restore
//! is a verification that also unpacks, and its reply is the same plus where to).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::control::protocol::{BackupNameArgs, BackupRestoreArgs};
use crate::control::{CmdError, CmdResult, Context};

fn name_arg(name: &str) -> Result<&str, CmdError> {
    Some(name)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| CmdError("say which backup: NAME (see `backup list`)".into()))
}

pub fn verify(ctx: &Context, a: &BackupNameArgs) -> CmdResult {
    Ok(ctx.backups.verify(name_arg(&a.name)?)?)
}

pub fn restore(ctx: &Context, a: &BackupRestoreArgs) -> CmdResult {
    Ok(ctx.backups.restore(name_arg(&a.name)?, &a.to, a.force)?)
}

pub fn render(r: &Value) -> String {
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

/// The restore target as the daemon needs it: absolute, from the client's directory.
pub fn absolute_target(to: &Path) -> Result<PathBuf, String> {
    std::path::absolute(to).map_err(|e| format!("--to {}: {e}", to.display()))
}
