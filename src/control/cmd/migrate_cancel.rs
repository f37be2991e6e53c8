//! `ctl migrate cancel ID`: stops for good; what landed stays, and the reply says what
//! was left.

use crate::control::client::human_size;
use crate::control::protocol::IdArgs;
use crate::control::{CmdError, Context};
pub use crate::migrate::Cancelled;

pub fn cancel(ctx: &Context, args: &IdArgs) -> Result<Cancelled, CmdError> {
    Ok(ctx.migrations.cancel(args.id)?)
}

pub fn render(r: &Cancelled) -> String {
    format!(
        "migration {} cancelled: {} file(s) ({}) are on the server and stay; {} ({}) \
         were copied into the drive and are still uploaded; {} ({}) were not copied{}\n",
        r.id,
        r.landed_files,
        human_size(r.landed_bytes),
        r.staged_files,
        human_size(r.staged_bytes),
        r.not_copied_files,
        human_size(r.not_copied_bytes),
        if r.walk_done {
            ""
        } else {
            " (SRC was not fully walked yet)"
        }
    )
}
