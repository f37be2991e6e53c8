//! `ctl migrate errors ID`: the files that failed and what was skipped, with the reason.

use serde_json::Value;

use crate::control::client::{s, table, u};
use crate::control::protocol::MigrateErrorsArgs;
use crate::control::{CmdResult, Context};

pub fn errors(ctx: &Context, args: &MigrateErrorsArgs) -> CmdResult {
    let limit = args.limit.unwrap_or(10_000) as usize;
    Ok(ctx.migrations.errors(args.id, limit)?)
}
pub fn render(r: &Value) -> String {
    let rows = r["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    vec![
                        s(e, "state").to_string(),
                        s(e, "path").to_string(),
                        s(e, "error").to_string(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = table(&["STATE", "PATH", "REASON"], rows);
    let shown = r["items"].as_array().map(|a| a.len()).unwrap_or(0) as u64;
    if u(r, "total") > shown {
        out += &format!("… and {} more\n", u(r, "total") - shown);
    }
    out
}
