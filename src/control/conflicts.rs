//! `conflicts` and `conflicts resolve`: versions changed on both sides.
//!
//! A conflict leaves the remote's version under the original name and ours beside it
//! under a conflict name. Resolving keeps one side (or both) and marks it resolved.

use serde_json::{json, Value};

use super::{mount_path, CmdError, CmdResult, Context};
use crate::store::{conflicts, ROOT_INO};

struct Conflict {
    id: i64,
    path: String,
    conflict_path: String,
}

pub fn list(ctx: &Context) -> CmdResult {
    let rows = ctx.core.db().read(conflicts::list_json)?;
    Ok(Value::Array(rows))
}

fn split(path: &str) -> (&str, &str) {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    (if dir.is_empty() { "/" } else { dir }, name)
}

pub fn resolve(ctx: &Context, args: &Value) -> CmdResult {
    let given = args
        .get("path")
        .and_then(Value::as_str)
        .ok_or_else(|| CmdError("missing argument: path".into()))?;
    let keep = args.get("keep").and_then(Value::as_str).unwrap_or("");
    if !matches!(keep, "local" | "remote" | "both") {
        return Err(CmdError("--keep must be local, remote or both".into()));
    }
    let path = mount_path(ctx, given)?;
    let c = ctx
        .core
        .db()
        .write(|c| conflicts::latest_open_at(c, &path))
        .map(|(id, path, conflict_path)| Conflict {
            id,
            path,
            conflict_path,
        })
        .map_err(|_| CmdError(format!("{given}: no unresolved conflict")))?;
    let core = &ctx.core;
    let has_copy = c.conflict_path != c.path && core.resolve_path(&c.conflict_path).is_ok();
    if keep == "local" && !has_copy {
        return Err(CmdError(format!(
            "{}: the local version ({}) is no longer there to keep",
            c.path, c.conflict_path
        )));
    }
    if keep == "local" {
        // Replacing the original must not throw away edits made to it since.
        if let Ok(ino) = core.resolve_path(&c.path) {
            if core.file_state(ino)? == "dirty" || core.is_open(ino) {
                return Err(CmdError(format!(
                    "{} has changes not yet uploaded or is open; try again once it is synced and closed",
                    c.path
                )));
            }
        }
    }
    match keep {
        // Ours replaces theirs under the original name (a rename, replayed like any).
        "local" if has_copy => {
            let (from_dir, from_name) = split(&c.conflict_path);
            let (to_dir, to_name) = split(&c.path);
            let from = core.resolve_path(from_dir)?;
            let to = if to_dir == "/" {
                ROOT_INO
            } else {
                core.resolve_path(to_dir)?
            };
            core.rename(from, from_name, to, to_name, false)?;
        }
        // Theirs stays; our copy goes.
        "remote" if has_copy => {
            let (dir, name) = split(&c.conflict_path);
            let parent = core.resolve_path(dir)?;
            core.unlink(parent, name)?;
        }
        _ => {}
    }
    core.db().write(|tx| conflicts::mark_resolved(tx, c.id))?;
    Ok(json!({"resolved": c.path, "kept": keep, "conflict_copy": c.conflict_path}))
}
