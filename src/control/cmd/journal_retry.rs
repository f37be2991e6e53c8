//! `ctl journal retry ID|--all`: failed entries are tried again.

use serde::{Deserialize, Serialize};

use crate::control::protocol::JournalRetryArgs;
use crate::control::{CmdError, Context};
use crate::journal;

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
    let n = journal::retry(&ctx.core.store(), id)?;
    if let (0, Some(id)) = (n, id) {
        return Err(CmdError(format!("no journal entry {id}")));
    }
    ctx.core.journal_changed.notify_one();
    Ok(RetryReply { retried: n as u64 })
}

pub fn render(r: &RetryReply) -> String {
    format!("{} entr(ies) will be tried again\n", r.retried)
}
