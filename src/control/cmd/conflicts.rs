//! `ctl conflicts`: versions changed on both sides. A conflict leaves the remote's version
//! under the original name and ours beside it under a conflict name.

use serde::{Deserialize, Serialize};

use crate::control::client::{ago, table};
use crate::control::{CmdError, Context};

#[derive(Debug, Serialize, Deserialize)]
pub struct ConflictEntry {
    pub id: i64,
    pub path: String,
    pub conflict_path: String,
    pub local_etag: Option<String>,
    pub remote_etag: Option<String>,
    /// Unix seconds.
    pub time: i64,
    pub resolved: bool,
}

pub fn run(ctx: &Context) -> Result<Vec<ConflictEntry>, CmdError> {
    let conn = ctx.core.store();
    let mut st = conn.prepare(
        "SELECT id, path, conflict_path, local_etag, remote_etag, created_at, resolved \
         FROM conflicts ORDER BY id",
    )?;
    let rows = st
        .query_map([], |r| {
            Ok(ConflictEntry {
                id: r.get::<_, i64>(0)?,
                path: r.get::<_, String>(1)?,
                conflict_path: r.get::<_, String>(2)?,
                local_etag: r.get::<_, Option<String>>(3)?,
                remote_etag: r.get::<_, Option<String>>(4)?,
                time: r.get::<_, i64>(5)? / 1000,
                resolved: r.get::<_, bool>(6)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn render(r: &[ConflictEntry]) -> String {
    let rows = r
        .iter()
        .map(|c| {
            vec![
                c.path.clone(),
                c.conflict_path.clone(),
                c.local_etag.clone().unwrap_or_else(|| "-".into()),
                c.remote_etag.clone().unwrap_or_else(|| "-".into()),
                ago(Some(c.time)),
                if c.resolved { "resolved" } else { "open" }.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "PATH",
            "CONFLICT COPY",
            "LOCAL ETAG",
            "REMOTE ETAG",
            "WHEN",
            "STATE",
        ],
        rows,
    )
}
