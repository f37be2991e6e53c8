//! `ctl conflicts resolve PATH --keep local|remote|both`: keeps one side of a conflict
//! (or both) and marks it resolved.

use serde::{Deserialize, Serialize};

use crate::control::protocol::{ConflictsResolveArgs, Keep};
use crate::control::{mount_path, CmdError, Context};
use crate::store::ROOT_INO;

#[derive(Debug, Serialize, Deserialize)]
pub struct ResolveReply {
    /// The original name.
    pub resolved: String,
    pub kept: Keep,
    pub conflict_copy: String,
}

struct Conflict {
    id: i64,
    path: String,
    conflict_path: String,
}

fn split(path: &str) -> (&str, &str) {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    (if dir.is_empty() { "/" } else { dir }, name)
}

pub fn run(ctx: &Context, args: &ConflictsResolveArgs) -> Result<ResolveReply, CmdError> {
    let given = args.path.as_str();
    let keep = args.keep.as_str();
    let path = mount_path(ctx, given)?;
    let c = ctx
        .core
        .store()
        .query_row(
            "SELECT id, path, conflict_path FROM conflicts WHERE resolved = 0 \
             AND (path = ?1 OR conflict_path = ?1) ORDER BY id DESC LIMIT 1",
            [&path],
            |r| {
                Ok(Conflict {
                    id: r.get(0)?,
                    path: r.get(1)?,
                    conflict_path: r.get(2)?,
                })
            },
        )
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
    core.store()
        .execute("UPDATE conflicts SET resolved = 1 WHERE id = ?1", [c.id])?;
    Ok(ResolveReply {
        resolved: c.path,
        kept: args.keep,
        conflict_copy: c.conflict_path,
    })
}

pub fn render(r: &ResolveReply) -> String {
    format!("resolved {} (kept {})\n", r.resolved, r.kept.as_str())
}
