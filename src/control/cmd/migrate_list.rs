//! `ctl migrate list`: every migration of this mount.

use crate::control::client::table;
use crate::control::{CmdError, Context};
use crate::migrate::MigrationStatus;

pub fn list(ctx: &Context) -> Result<Vec<MigrationStatus>, CmdError> {
    Ok(ctx.migrations.list()?)
}

pub fn render(r: &[MigrationStatus]) -> String {
    let rows = r
        .iter()
        .map(|m| {
            let f = &m.files;
            vec![
                m.id.to_string(),
                m.state.clone(),
                format!("{:.1}%", m.percent),
                format!("{}/{}", f.done + f.skipped, f.total),
                f.failed.to_string(),
                format!("{} -> {}", m.src, m.dest),
            ]
        })
        .collect();
    table(
        &["ID", "STATE", "DONE", "FILES", "FAILED", "FROM -> TO"],
        rows,
    )
}
