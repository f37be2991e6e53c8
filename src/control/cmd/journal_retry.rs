//! `ctl journal retry ID|--all`: failed entries are tried again (`Core::retry_journal`).

use serde::{Deserialize, Serialize};

use crate::control::protocol::JournalRetryArgs;
use crate::control::{CmdError, Context};

#[derive(Debug, Serialize, Deserialize)]
pub struct RetryReply {
    pub retried: u64,
}

pub fn run(ctx: &Context, args: &JournalRetryArgs) -> Result<RetryReply, CmdError> {
    let id = args.id;
    let all = args.all;
    if id.is_none() && !all {
        return Err(CmdError("give an entry id, or all".into()));
    }
    match ctx.core.retry_journal(id) {
        Ok(n) => Ok(RetryReply { retried: n as u64 }),
        Err(crate::fs::FsError::NotFound) => Err(CmdError(format!(
            "no journal entry {}",
            id.unwrap_or_default()
        ))),
        Err(e) => Err(e.into()),
    }
}

pub fn render(r: &RetryReply) -> String {
    format!("{} entr(ies) will be tried again\n", r.retried)
}
