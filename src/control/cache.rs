//! `pin`, `unpin`, `evict`, `cache` and `ls --state`: what is kept locally.

use serde_json::{json, Value};

use super::protocol::{LsArgs, PathsArgs};
use super::{paths_arg, resolve, CmdError, CmdResult, Context};
use crate::fs::Evicted;
use crate::store::{self, Kind};

pub fn pin(ctx: &Context, args: &PathsArgs, pinned: bool) -> CmdResult {
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
    Ok(json!({"paths": done, "pinned": pinned, "files_fetched": fetched}))
}

pub fn evict(ctx: &Context, args: &PathsArgs) -> CmdResult {
    let mut results = Vec::new();
    let mut refused = Vec::new();
    for given in paths_arg(args)? {
        let (path, ino) = resolve(ctx, given)?;
        let outcome = match ctx.core.evict(ino) {
            Ok(Evicted::Freed(n)) => json!({"path": path, "evicted": true, "bytes": n}),
            Ok(Evicted::NotCached) => {
                json!({"path": path, "evicted": false, "reason": "not cached"})
            }
            Ok(why) => {
                let reason = match why {
                    Evicted::Dirty => "it has changes not yet uploaded; evicting would lose them",
                    Evicted::Pinned => "it is pinned; unpin it first",
                    Evicted::Open => "it is open",
                    _ => unreachable!(),
                };
                refused.push(format!("{path}: {reason}"));
                json!({"path": path, "evicted": false, "reason": reason})
            }
            // A folder: its clean files go; changed, pinned and open ones stay (that is
            // what evicting a folder means, not a refusal).
            Err(crate::fs::FsError::IsDir) => evict_folder(ctx, &path, ino)?,
            Err(e) => return Err(CmdError(format!("{path}: {e}"))),
        };
        results.push(outcome);
    }
    if !refused.is_empty() {
        return Err(CmdError(format!("refused: {}", refused.join("; "))));
    }
    Ok(Value::Array(results))
}

fn evict_folder(ctx: &Context, path: &str, ino: u64) -> Result<Value, CmdError> {
    let files: Vec<u64> = crate::store::subtrees(&ctx.core.store(), &[ino])?
        .into_iter()
        .filter(|n| n.is_file)
        .map(|n| n.ino)
        .collect();
    let (mut evicted, mut bytes, mut kept) = (0u64, 0u64, 0u64);
    for f in files {
        match ctx.core.evict(f) {
            Ok(Evicted::Freed(n)) => {
                evicted += 1;
                bytes += n;
            }
            Ok(Evicted::NotCached) => {}
            Ok(_) => kept += 1,
            Err(e) => return Err(CmdError(format!("{path}: {e}"))),
        }
    }
    Ok(
        json!({"path": path, "evicted": evicted > 0, "files": evicted, "bytes": bytes,
        "kept": kept, "reason": (kept > 0).then_some("changed, pinned or open files are kept")}),
    )
}

pub fn summary(ctx: &Context) -> CmdResult {
    let core = &ctx.core;
    let usage = core.cache_usage()?;
    let rows = |order: &str| -> Result<Vec<Value>, CmdError> {
        let conn = core.store();
        let mut st = conn.prepare(&format!(
            "SELECT ino, cached_bytes, last_access FROM nodes WHERE cached_bytes > 0 AND kind = 0 \
             ORDER BY {order} LIMIT 10"
        ))?;
        let found: Vec<(u64, u64, i64)> = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get(2)?,
                ))
            })?
            .collect::<Result<_, _>>()?;
        Ok(found
            .into_iter()
            .map(|(ino, bytes, at)| {
                let path = store::path_of(&conn, ino)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                json!({"path": path, "bytes": bytes, "last_access": at})
            })
            .collect())
    };
    Ok(json!({
        "usage": usage,
        "largest": rows("cached_bytes DESC")?,
        "oldest": rows("last_access ASC")?,
    }))
}

pub fn ls(ctx: &Context, args: &LsArgs) -> CmdResult {
    let given = args.path.as_str();
    let (path, ino) = resolve(ctx, given)?;
    let core = &ctx.core;
    let node =
        store::get_node(&core.store(), ino)?.ok_or_else(|| CmdError(format!("{path}: gone")))?;
    let targets: Vec<(String, u64)> = if node.kind == Kind::Dir {
        core.ensure_listing(ino)?;
        store::children(&core.store(), ino)?
            .into_iter()
            .map(|c| (c.name, c.ino))
            .collect()
    } else {
        vec![(node.name.clone(), ino)]
    };
    let mut out = Vec::new();
    for (name, ino) in targets {
        let n = match store::get_node(&core.store(), ino)? {
            Some(n) => n,
            None => continue,
        };
        out.push(json!({
            "name": name,
            "kind": if n.kind == Kind::Dir { "dir" } else { "file" },
            "size": n.size,
            "cached_bytes": n.cached_bytes,
            "state": core.file_state(ino)?,
        }));
    }
    Ok(json!({"path": path, "entries": out}))
}
