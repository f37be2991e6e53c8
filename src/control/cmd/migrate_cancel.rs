//! `ctl migrate cancel ID`: stops for good; what landed stays, and the reply says what
//! was left.

use serde_json::Value;

use crate::control::client::{human_size, u};
use crate::control::protocol::IdArgs;
use crate::control::{CmdResult, Context};

pub fn cancel(ctx: &Context, args: &IdArgs) -> CmdResult {
    Ok(ctx.migrations.cancel(args.id)?)
}

pub fn render(r: &Value) -> String {
    format!(
        "migration {} cancelled: {} file(s) ({}) are on the server and stay; {} ({}) \
         were copied into the drive and are still uploaded; {} ({}) were not copied{}\n",
        u(r, "id"),
        u(r, "landed_files"),
        human_size(u(r, "landed_bytes")),
        u(r, "staged_files"),
        human_size(u(r, "staged_bytes")),
        u(r, "not_copied_files"),
        human_size(u(r, "not_copied_bytes")),
        if r["walk_done"].as_bool() == Some(false) {
            " (SRC was not fully walked yet)"
        } else {
            ""
        }
    )
}
