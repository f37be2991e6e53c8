//! `ctl conflicts resolve PATH --keep local|remote|both`: keeps one side of a conflict
//! (or both) and marks it resolved (`Core::resolve_conflict`).

use serde::{Deserialize, Serialize};

use crate::control::protocol::{ConflictsResolveArgs, Keep};
use crate::control::{mount_path, CmdError, Context};
use crate::fs::ResolveError;

#[derive(Debug, Serialize, Deserialize)]
pub struct ResolveReply {
    /// The original name.
    pub resolved: String,
    pub kept: Keep,
    pub conflict_copy: String,
}

pub fn run(ctx: &Context, args: &ConflictsResolveArgs) -> Result<ResolveReply, CmdError> {
    let given = args.path.as_str();
    let path = mount_path(ctx, given)?;
    match ctx.core.resolve_conflict(&path, args.keep) {
        Ok(c) => Ok(ResolveReply {
            resolved: c.path,
            kept: args.keep,
            conflict_copy: c.conflict_path,
        }),
        Err(ResolveError::NoConflict) => Err(CmdError(format!("{given}: no unresolved conflict"))),
        Err(e) => Err(CmdError(e.to_string())),
    }
}

pub fn render(r: &ResolveReply) -> String {
    format!("resolved {} (kept {})\n", r.resolved, r.kept.as_str())
}
