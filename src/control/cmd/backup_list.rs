//! `ctl backup list`: the archives on the remote.

use serde_json::Value;

use super::backup_status::time;
use crate::control::client::{human_size, table};
use crate::control::{CmdResult, Context};

pub fn list(ctx: &Context) -> CmdResult {
    Ok(Value::Array(ctx.backups.list()?))
}

pub fn render(r: &Value) -> String {
    table(
        &["NAME", "SIZE", "MADE", "STATE"],
        r.as_array()
            .map(|a| {
                a.iter()
                    .map(|b| {
                        vec![
                            b["name"].as_str().unwrap_or("?").to_string(),
                            human_size(b["size"].as_u64().unwrap_or(0)),
                            time(&b["made_at"]),
                            b["state"].as_str().unwrap_or("?").to_string(),
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default(),
    )
}
