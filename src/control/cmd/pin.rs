//! `ctl pin` and `ctl unpin` (one file: the same handler and reply, `pinned` set or
//! not): files, or everything below folders, kept cached for offline use.

use serde::{Deserialize, Serialize};

use crate::control::protocol::PathsArgs;
use crate::control::{paths_arg, resolve, CmdError, Context};

#[derive(Debug, Serialize, Deserialize)]
pub struct PinReply {
    /// Mount paths, from its root.
    pub paths: Vec<String>,
    pub pinned: bool,
    /// Files fetched now (pin only).
    pub files_fetched: u64,
}

pub fn run(ctx: &Context, args: &PathsArgs, pinned: bool) -> Result<PinReply, CmdError> {
    let mut done = Vec::new();
    for given in paths_arg(args)? {
        let (path, ino) = resolve(ctx, given)?;
        ctx.core.set_pinned(ino, pinned)?;
        done.push(path);
    }
    let fetched = if pinned {
        // Fetch now, so the reply means "available offline" where the remote answers.
        ctx.core.fetch_pinned()?
    } else {
        0
    };
    Ok(PinReply {
        paths: done,
        pinned,
        files_fetched: fetched as u64,
    })
}

pub fn render(r: &PinReply) -> String {
    if r.pinned {
        format!(
            "pinned {} ({} file(s) fetched now)\n",
            r.paths.join(", "),
            r.files_fetched
        )
    } else {
        format!("unpinned {}\n", r.paths.join(", "))
    }
}
