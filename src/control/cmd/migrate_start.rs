//! `ctl migrate start SRC_DIR DEST`: a local folder copied onto the remote, verified and
//! resumable, by the daemon (thin over `crate::migrate`); the reply is its status.

use crate::control::protocol::MigrateStartArgs;
use crate::control::{mount_path, CmdError, Context};
pub use crate::migrate::MigrationStatus;
use crate::migrate::Options;

pub fn start(ctx: &Context, args: &MigrateStartArgs) -> Result<MigrationStatus, CmdError> {
    let src = args.src.as_path();
    let dest = mount_path(ctx, &args.dest)?;
    let opts = Options {
        verify: args.verify,
        delete_source: args.delete_source,
        exclude: args.exclude.clone().unwrap_or_default(),
        follow_symlinks: args.follow_symlinks,
    };
    // Before the daemon looks at SRC at all: one inside its own mount would be
    // answered by this very process.
    if src.starts_with(&ctx.mountpoint) {
        return Err(CmdError(format!(
            "SRC_DIR {} is inside the mount {}: give a local folder outside it",
            src.display(),
            ctx.mountpoint.display()
        )));
    }
    let id = ctx.migrations.start_migration(src, &dest, opts)?;
    Ok(ctx.migrations.status(id)?)
}

pub fn render(r: &MigrationStatus) -> String {
    format!(
        "migration {} started: {} -> {} (see `ctl migrate status {}`)\n",
        r.id, r.src, r.dest, r.id
    )
}
