//! `ctl migrate list`: every migration of this mount.

use serde_json::Value;

use crate::control::client::{s, table, u};
use crate::control::{CmdResult, Context};

pub fn list(ctx: &Context) -> CmdResult {
    Ok(ctx.migrations.list()?)
}

pub fn render(r: &Value) -> String {
    let rows = r
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    let f = &m["files"];
                    vec![
                        u(m, "id").to_string(),
                        s(m, "state").to_string(),
                        format!("{:.1}%", m["percent"].as_f64().unwrap_or(0.0)),
                        format!("{}/{}", u(f, "done") + u(f, "skipped"), u(f, "total")),
                        u(f, "failed").to_string(),
                        format!("{} -> {}", s(m, "src"), s(m, "dest")),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(
        &["ID", "STATE", "DONE", "FILES", "FAILED", "FROM -> TO"],
        rows,
    )
}
