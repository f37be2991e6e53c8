//! `ctl journal drop ID --yes`: give up on one change. A dropped upload's content is
//! saved under `<cache dir>/recovered/` (see `Core::drop_journal_entry`).

use serde::{Deserialize, Serialize};

use crate::control::protocol::JournalDropArgs;
use crate::control::{CmdError, Context};

#[derive(Debug, Serialize, Deserialize)]
pub struct DropReply {
    pub dropped: i64,
    pub content_saved_at: Option<std::path::PathBuf>,
}

pub fn run(ctx: &Context, args: &JournalDropArgs) -> Result<DropReply, CmdError> {
    let id = args.id;
    if !args.yes {
        return Err(CmdError(
            "dropping an entry gives up on sending that change; confirm with --yes".into(),
        ));
    }
    match ctx.core.drop_journal_entry(id) {
        Ok(saved) => Ok(DropReply {
            dropped: id,
            content_saved_at: saved,
        }),
        Err(crate::fs::FsError::NotFound) => Err(CmdError(format!("no journal entry {id}"))),
        Err(e) => Err(CmdError(format!("entry {id}: {e}"))),
    }
}

pub fn render(r: &DropReply) -> String {
    match &r.content_saved_at {
        Some(p) => format!(
            "dropped entry {}; its content is saved at {}\n",
            r.dropped,
            p.display()
        ),
        None => format!("dropped entry {}\n", r.dropped),
    }
}
