//! `pin`, `unpin`, `evict`, `cache` and `ls --state`: what is kept locally.

use serde_json::{json, Value};

use super::{paths_arg, resolve, CmdError, CmdResult, Context};
use crate::fs::Evicted;
use crate::store::{self, Kind};

pub fn pin(ctx: &Context, args: &Value, pinned: bool) -> CmdResult {
    let mut done = Vec::new();
    for given in paths_arg(args)? {
        let (path, ino) = resolve(ctx, &given)?;
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

pub fn evict(ctx: &Context, args: &Value) -> CmdResult {
    let mut results = Vec::new();
    let mut refused = Vec::new();
    for given in paths_arg(args)? {
        let (path, ino) = resolve(ctx, &given)?;
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
    let files: Vec<u64> = ctx
        .core
        .db()
        .read(|c| crate::store::subtrees(c, &[ino]))?
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
    type Ranked = fn(&rusqlite::Connection) -> rusqlite::Result<Vec<(u64, u64, i64)>>;
    let rows = |ranked: Ranked| -> Result<Vec<Value>, CmdError> {
        core.db().read(|conn| {
            Ok(ranked(conn)?
                .into_iter()
                .map(|(ino, bytes, at)| {
                    let path = store::path_of(conn, ino).ok().flatten().unwrap_or_default();
                    json!({"path": path, "bytes": bytes, "last_access": at})
                })
                .collect())
        })
    };
    Ok(json!({
        "usage": usage,
        "largest": rows(store::nodes::largest_cached)?,
        "oldest": rows(store::nodes::oldest_cached)?,
    }))
}

pub fn ls(ctx: &Context, args: &Value) -> CmdResult {
    let given = args.get("path").and_then(Value::as_str).unwrap_or("");
    let (path, ino) = resolve(ctx, given)?;
    let core = &ctx.core;
    let node = core
        .db()
        .read(|c| store::get_node(c, ino))?
        .ok_or_else(|| CmdError(format!("{path}: gone")))?;
    let targets: Vec<(String, u64)> = if node.kind == Kind::Dir {
        core.ensure_listing(ino)?;
        core.db()
            .read(|c| store::children(c, ino))?
            .into_iter()
            .map(|c| (c.name, c.ino))
            .collect()
    } else {
        vec![(node.name.clone(), ino)]
    };
    let mut out = Vec::new();
    for (name, ino) in targets {
        let n = match core.db().read(|c| store::get_node(c, ino))? {
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
