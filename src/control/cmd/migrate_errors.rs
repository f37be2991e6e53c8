//! `ctl migrate errors ID`: the files that failed and what was skipped, with the reason.

use crate::control::client::table;
use crate::control::protocol::MigrateErrorsArgs;
use crate::control::{CmdError, Context};
pub use crate::migrate::Errors;

pub fn errors(ctx: &Context, args: &MigrateErrorsArgs) -> Result<Errors, CmdError> {
    let limit = args.limit.unwrap_or(10_000) as usize;
    Ok(ctx.migrations.errors(args.id, limit)?)
}

pub fn render(r: &Errors) -> String {
    let rows = r
        .items
        .iter()
        .map(|e| vec![e.state.clone(), e.path.clone(), e.error.clone()])
        .collect();
    let mut out = table(&["STATE", "PATH", "REASON"], rows);
    let shown = r.items.len() as u64;
    if r.total > shown {
        out += &format!("… and {} more\n", r.total - shown);
    }
    out
}
