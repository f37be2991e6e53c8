//! `ctl conflicts`: versions changed on both sides. A conflict leaves the remote's version
//! under the original name and ours beside it under a conflict name.

use crate::control::client::{ago, table};
use crate::control::{CmdError, Context};

/// One conflict, as the state store records it.
pub use crate::store::conflicts::ConflictRow as ConflictEntry;

pub fn run(ctx: &Context) -> Result<Vec<ConflictEntry>, CmdError> {
    Ok(ctx.core.db().read(crate::store::conflicts::list)?)
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
