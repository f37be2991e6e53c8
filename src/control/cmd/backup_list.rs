//! `ctl backup list`: the archives on the remote.

use super::backup_status::time;
pub use crate::backup::ArchiveEntry;
use crate::control::client::{human_size, table};
use crate::control::{CmdError, Context};

pub fn list(ctx: &Context) -> Result<Vec<ArchiveEntry>, CmdError> {
    Ok(ctx.backups.list()?)
}

pub fn render(r: &[ArchiveEntry]) -> String {
    table(
        &["NAME", "SIZE", "MADE", "STATE"],
        r.iter()
            .map(|b| {
                vec![
                    b.name.clone(),
                    human_size(b.size),
                    time(Some(b.made_at)),
                    b.state.clone(),
                ]
            })
            .collect(),
    )
}
