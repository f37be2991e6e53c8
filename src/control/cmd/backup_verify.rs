//! `ctl backup verify NAME` and `ctl backup restore NAME --to DIR` (one file: a restore
//! is a verification that also unpacks, and its reply is the same plus where to).

use std::path::{Path, PathBuf};

pub use crate::backup::Verified;
use crate::control::protocol::{BackupNameArgs, BackupRestoreArgs};
use crate::control::{CmdError, Context};

fn name_arg(name: &str) -> Result<&str, CmdError> {
    Some(name)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| CmdError("say which backup: NAME (see `backup list`)".into()))
}

pub fn verify(ctx: &Context, a: &BackupNameArgs) -> Result<Verified, CmdError> {
    Ok(ctx.backups.verify(name_arg(&a.name)?)?)
}

pub fn restore(ctx: &Context, a: &BackupRestoreArgs) -> Result<Verified, CmdError> {
    Ok(ctx.backups.restore(name_arg(&a.name)?, &a.to, a.force)?)
}

pub fn render(r: &Verified) -> String {
    let mut s = format!(
        "{}: SHA-256 {} matches, {} entries read to the end, {} files match the manifest\n",
        r.name, r.sha256, r.entries, r.files_checked
    );
    for p in &r.problems {
        s += &format!("note from the backup: {p}\n");
    }
    if let Some(to) = &r.to {
        s += &format!(
            "restored {} entries into {to}\n",
            r.restored_entries.unwrap_or(0)
        );
    }
    s
}

/// The restore target as the daemon needs it: absolute, from the client's directory.
pub fn absolute_target(to: &Path) -> Result<PathBuf, String> {
    std::path::absolute(to).map_err(|e| format!("--to {}: {e}", to.display()))
}
