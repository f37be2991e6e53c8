//! `ctl cache`: totals, and the largest and least recently used cached files.

use serde::{Deserialize, Serialize};

use crate::control::client::{human_age, human_size, table};
use crate::control::{unix_secs, CmdError, Context};
use crate::fs::CacheUsage;
use crate::store;

#[derive(Debug, Serialize, Deserialize)]
pub struct CacheReply {
    pub usage: CacheUsage,
    pub largest: Vec<CachedFile>,
    pub oldest: Vec<CachedFile>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CachedFile {
    pub path: String,
    pub bytes: u64,
    /// Unix seconds.
    pub last_access: i64,
}

pub fn run(ctx: &Context) -> Result<CacheReply, CmdError> {
    let core = &ctx.core;
    let usage = core.cache_usage()?;
    let rows = |order: &str| -> Result<Vec<CachedFile>, CmdError> {
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
                CachedFile {
                    path,
                    bytes,
                    last_access: at,
                }
            })
            .collect())
    };
    Ok(CacheReply {
        usage,
        largest: rows("cached_bytes DESC")?,
        oldest: rows("last_access ASC")?,
    })
}

pub fn render(r: &CacheReply) -> String {
    let us = &r.usage;
    let mut out = format!(
        "{} files, {} cached; {} dirty, {} pinned\n",
        us.files,
        human_size(us.bytes),
        human_size(us.dirty_bytes),
        human_size(us.pinned_bytes)
    );
    let now = unix_secs(std::time::SystemTime::now());
    for (title, list) in [("largest", &r.largest), ("least recently used", &r.oldest)] {
        out += &format!("\n{title}:\n");
        let rows = list
            .iter()
            .map(|e| {
                vec![
                    human_size(e.bytes),
                    format!("{} ago", human_age((now - e.last_access).max(0))),
                    e.path.clone(),
                ]
            })
            .collect();
        out += &table(&["SIZE", "USED", "PATH"], rows);
    }
    out
}
