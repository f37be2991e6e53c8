//! `ctl journal [--failed]`: the changes waiting for the remote.

use serde::{Deserialize, Serialize};

use crate::control::client::{human_age, table};
use crate::control::protocol::JournalArgs;
use crate::control::{CmdError, Context};
use crate::journal;
use crate::store::now_ms;

/// One change waiting (or set aside, `failed`).
#[derive(Debug, Serialize, Deserialize)]
pub struct JournalEntry {
    pub id: i64,
    pub op: String,
    pub path: String,
    pub dest: Option<String>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub failed: bool,
    pub age_s: i64,
}

pub fn run(ctx: &Context, args: &JournalArgs) -> Result<Vec<JournalEntry>, CmdError> {
    let failed_only = args.failed;
    let entries = ctx.core.db().read(|c| journal::list(c, failed_only))?;
    let now = now_ms();
    Ok(entries
        .iter()
        .map(|e| JournalEntry {
            id: e.id,
            op: e.op.as_str().to_string(),
            path: e.path.clone(),
            dest: e.dest.clone(),
            attempts: e.attempts,
            last_error: e.last_error.clone(),
            failed: e.failed,
            age_s: ((now - e.created_at) / 1000).max(0),
        })
        .collect())
}

/// The journal as a table; `failed_only`: what `journal --failed` asked for. An empty
/// list is said in words.
pub fn render(r: &[JournalEntry], failed_only: bool) -> String {
    if r.is_empty() {
        return if failed_only {
            "No failed changes: nothing is set aside.\n".into()
        } else {
            "The journal is empty: every change is on the server.\n".into()
        };
    }
    let rows = r
        .iter()
        .map(|e| {
            let path = match &e.dest {
                Some(d) => format!("{} -> {d}", e.path),
                None => e.path.clone(),
            };
            let last_error = e.last_error.as_deref().unwrap_or("");
            vec![
                e.id.to_string(),
                e.op.clone(),
                path,
                e.attempts.to_string(),
                human_age(e.age_s),
                if e.failed {
                    format!("FAILED: {last_error}")
                } else {
                    last_error.to_string()
                },
            ]
        })
        .collect();
    table(&["ID", "OP", "PATH", "TRIES", "AGE", "LAST ERROR"], rows)
}
