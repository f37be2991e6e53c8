//! `migrate start|status|list|pause|resume|cancel|errors`: thin over `crate::migrate`.

use serde_json::Value;

use super::protocol::{IdArgs, MigrateErrorsArgs, MigrateStartArgs, MigrateStatusArgs};
use super::{mount_path, CmdError, CmdResult, Context};
use crate::migrate::Options;

pub fn start(ctx: &Context, args: &MigrateStartArgs) -> CmdResult {
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

pub fn status(ctx: &Context, args: &MigrateStatusArgs) -> CmdResult {
    match args.id {
        Some(id) => Ok(Value::Array(vec![ctx.migrations.status(id)?])),
        None => Ok(ctx.migrations.current()?),
    }
}

pub fn list(ctx: &Context) -> CmdResult {
    Ok(ctx.migrations.list()?)
}

pub fn pause(ctx: &Context, args: &IdArgs) -> CmdResult {
    Ok(ctx.migrations.pause(args.id)?)
}

pub fn resume(ctx: &Context, args: &IdArgs) -> CmdResult {
    Ok(ctx.migrations.resume(args.id)?)
}

pub fn cancel(ctx: &Context, args: &IdArgs) -> CmdResult {
    Ok(ctx.migrations.cancel(args.id)?)
}

pub fn errors(ctx: &Context, args: &MigrateErrorsArgs) -> CmdResult {
    let limit = args.limit.unwrap_or(10_000) as usize;
    Ok(ctx.migrations.errors(args.id, limit)?)
}
