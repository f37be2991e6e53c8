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
    type Ranked = fn(&rusqlite::Connection) -> rusqlite::Result<Vec<(u64, u64, i64)>>;
    let rows = |ranked: Ranked| -> Result<Vec<CachedFile>, CmdError> {
        Ok(core.db().read(|conn| {
            Ok::<_, rusqlite::Error>(
                ranked(conn)?
                    .into_iter()
                    .map(|(ino, bytes, at)| CachedFile {
                        path: store::path_of(conn, ino).ok().flatten().unwrap_or_default(),
                        bytes,
                        last_access: at,
                    })
                    .collect(),
            )
        })?)
    };
    Ok(CacheReply {
        usage,
        largest: rows(store::nodes::largest_cached)?,
        oldest: rows(store::nodes::oldest_cached)?,
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
