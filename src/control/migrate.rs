//! `migrate start|status|list|pause|resume|cancel|errors`: thin over `crate::migrate`.

use std::path::Path;

use serde_json::Value;

use super::{mount_path, CmdError, CmdResult, Context};
use crate::migrate::{Options, Verify};

fn id_arg(args: &Value) -> Result<i64, CmdError> {
    args.get("id")
        .and_then(Value::as_i64)
        .ok_or_else(|| CmdError("missing argument: id (a migration id, see `migrate list`)".into()))
}

fn str_arg<'a>(args: &'a Value, key: &str) -> Result<&'a str, CmdError> {
    args.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| CmdError(format!("missing argument: {key}")))
}

pub fn start(ctx: &Context, args: &Value) -> CmdResult {
    let src = str_arg(args, "src")?;
    let dest = mount_path(ctx, str_arg(args, "dest")?)?;
    let verify: Verify = args
        .get("verify")
        .and_then(Value::as_str)
        .unwrap_or("full")
        .parse()?;
    let exclude = match args.get("exclude") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => v
            .as_array()
            .and_then(|a| a.iter().map(|g| g.as_str().map(String::from)).collect())
            .ok_or_else(|| CmdError("exclude must be a list of globs".into()))?,
    };
    let flag = |k: &str| args.get(k).and_then(Value::as_bool).unwrap_or(false);
    let opts = Options {
        verify,
        delete_source: flag("delete_source"),
        exclude,
        follow_symlinks: flag("follow_symlinks"),
    };
    // Before the daemon looks at SRC at all: one inside its own mount would be
    // answered by this very process.
    if Path::new(src).starts_with(&ctx.mountpoint) {
        return Err(CmdError(format!(
            "SRC_DIR {src} is inside the mount {}: give a local folder outside it",
            ctx.mountpoint.display()
        )));
    }
    let id = ctx
        .migrations
        .start_migration(Path::new(src), &dest, opts)?;
    Ok(ctx.migrations.status(id)?)
}

pub fn status(ctx: &Context, args: &Value) -> CmdResult {
    match args.get("id").and_then(Value::as_i64) {
        Some(id) => Ok(Value::Array(vec![ctx.migrations.status(id)?])),
        None => Ok(ctx.migrations.current()?),
    }
}

pub fn list(ctx: &Context) -> CmdResult {
    Ok(ctx.migrations.list()?)
}

pub fn pause(ctx: &Context, args: &Value) -> CmdResult {
    Ok(ctx.migrations.pause(id_arg(args)?)?)
}

pub fn resume(ctx: &Context, args: &Value) -> CmdResult {
    Ok(ctx.migrations.resume(id_arg(args)?)?)
}

pub fn cancel(ctx: &Context, args: &Value) -> CmdResult {
    Ok(ctx.migrations.cancel(id_arg(args)?)?)
}

pub fn errors(ctx: &Context, args: &Value) -> CmdResult {
    let limit = args.get("limit").and_then(Value::as_u64).unwrap_or(10_000) as usize;
    Ok(ctx.migrations.errors(id_arg(args)?, limit)?)
}
