//! Statements on the node table that serve one part of the core each (cache, pins,
//! recovery, listings, polling). The node table's basic operations (get, insert, move,
//! content state) are in `store` itself.

use std::collections::HashSet;

use rusqlite::{params, Connection};

use crate::store::{Kind, ROOT_INO};

/// Inodes that are pinned, or below a pinned directory.
pub fn pinned_set(c: &Connection) -> rusqlite::Result<HashSet<u64>> {
    c.prepare_cached(
        "WITH RECURSIVE p(ino) AS (SELECT ino FROM nodes WHERE pinned != 0 \
         UNION SELECT nodes.ino FROM nodes JOIN p ON nodes.parent = p.ino) SELECT ino FROM p",
    )?
    .query_map([], |r| r.get::<_, i64>(0).map(|v| v as u64))?
    .collect()
}

/// Files with changes not yet on the remote: dirty, or with any journal entry waiting
/// (after a waiting rename, the remote has the content under another name).
pub fn has_unsent_changes(c: &Connection, ino: u64) -> rusqlite::Result<bool> {
    c.prepare_cached(
        "SELECT EXISTS(SELECT 1 FROM nodes WHERE ino = ?1 AND dirty != 0) \
         OR EXISTS(SELECT 1 FROM journal WHERE ino = ?1)",
    )?
    .query_row([ino as i64], |r| r.get(0))
}

/// Pins or unpins `ino`; returns how many nodes changed (0: no such node).
pub fn set_pinned(c: &Connection, ino: u64, pinned: bool) -> rusqlite::Result<usize> {
    c.prepare_cached("UPDATE nodes SET pinned = ?2 WHERE ino = ?1")?
        .execute(params![ino as i64, pinned as i64])
}

/// The pinned nodes still in the tree: (ino, kind).
pub fn pinned_roots(c: &Connection) -> rusqlite::Result<Vec<(u64, Kind)>> {
    c.prepare_cached("SELECT ino, kind FROM nodes WHERE pinned != 0 AND (parent != 0 OR ino = ?1)")?
        .query_map([ROOT_INO as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, Kind::from_i64(r.get(1)?)))
        })?
        .collect()
}

/// Clean cached files without a waiting journal entry, least recently used first:
/// (ino, cached bytes, last access).
pub fn clean_cached_by_age(c: &Connection) -> rusqlite::Result<Vec<(u64, u64, i64)>> {
    c.prepare_cached(
        "SELECT ino, cached_bytes, last_access FROM nodes \
         WHERE cached_bytes > 0 AND kind = 0 AND dirty = 0 \
         AND ino NOT IN (SELECT ino FROM journal) \
         ORDER BY last_access, ino",
    )?
    .query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            r.get::<_, i64>(1)? as u64,
            r.get(2)?,
        ))
    })?
    .collect()
}

/// Every file with cached content: (ino, cached bytes, has unsent changes).
pub fn cached_files(c: &Connection) -> rusqlite::Result<Vec<(u64, u64, bool)>> {
    let mut st = c.prepare_cached(
        "SELECT ino, cached_bytes, dirty != 0 OR ino IN (SELECT ino FROM journal) \
         FROM nodes WHERE cached_bytes > 0 AND kind = 0",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            r.get::<_, i64>(1)? as u64,
            r.get::<_, bool>(2)?,
        ))
    })?;
    rows.collect()
}

/// Nodes of files unlinked while open (parent 0), but the root.
pub fn orphans(c: &Connection) -> rusqlite::Result<Vec<u64>> {
    c.prepare("SELECT ino FROM nodes WHERE parent = 0 AND ino != ?1")?
        .query_map([ROOT_INO as i64], |r| r.get::<_, i64>(0).map(|v| v as u64))?
        .collect()
}

/// Files in the tree written and not yet recorded as closed.
pub fn dirty_files(c: &Connection) -> rusqlite::Result<Vec<u64>> {
    c.prepare("SELECT ino FROM nodes WHERE dirty = 1 AND parent != 0 AND kind = 0")?
        .query_map([], |r| r.get::<_, i64>(0).map(|v| v as u64))?
        .collect()
}

/// Sets what is given of `ino`'s mode (permission bits), owner and mtime, and its ctime.
pub fn set_attrs(
    c: &Connection,
    ino: u64,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    mtime_ns: Option<i64>,
    ctime_ns: i64,
) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE nodes SET mode = COALESCE(?2, mode), uid = COALESCE(?3, uid), \
         gid = COALESCE(?4, gid), mtime_ns = COALESCE(?5, mtime_ns), ctime_ns = ?6 WHERE ino = ?1",
        params![
            ino as i64,
            mode.map(|m| (m & 0o7777) as i64),
            uid.map(|v| v as i64),
            gid.map(|v| v as i64),
            mtime_ns,
            ctime_ns
        ],
    )?;
    Ok(())
}

/// Of `inos`, those on the remote, clean, and without a waiting journal entry.
pub fn landed_of(c: &Connection, inos: &[u64]) -> rusqlite::Result<Vec<u64>> {
    // Integers only: safe to inline.
    let list = inos
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut st = c.prepare(&format!(
        "SELECT ino FROM nodes WHERE ino IN ({list}) AND on_remote = 1 AND dirty = 0 \
         AND NOT EXISTS (SELECT 1 FROM journal j WHERE j.ino = nodes.ino)"
    ))?;
    let rows = st.query_map([], |r| r.get::<_, i64>(0).map(|v| v as u64))?;
    rows.collect()
}

/// Makes the content of `ino` the first to go when room is needed.
pub fn evict_first(c: &Connection, ino: u64) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE nodes SET last_access = 0 WHERE ino = ?1",
        [ino as i64],
    )?;
    Ok(())
}

/// Directory `dir` was listed from the remote at `now_ms`.
pub fn set_listed_at(c: &Connection, dir: u64, now_ms: i64) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE nodes SET listed_at = ?2 WHERE ino = ?1",
        params![dir as i64, now_ms],
    )?;
    Ok(())
}

/// Every folder at or below a pin, and the folder of each pinned file, in inode order.
/// (Both `pinned` terms: the first lets SQLite use the partial index of the pins, the
/// second makes it a search of that index, which holds the pins only.)
pub fn pinned_folders(c: &Connection) -> rusqlite::Result<Vec<u64>> {
    c.prepare_cached(
        "WITH RECURSIVE p(ino) AS ( \
           SELECT CASE WHEN kind = 1 THEN ino ELSE parent END FROM nodes \
           WHERE pinned != 0 AND pinned > 0 AND (parent != 0 OR ino = ?1) \
           UNION SELECT n.ino FROM nodes n JOIN p ON n.parent = p.ino WHERE n.kind = 1) \
         SELECT ino FROM p WHERE ino != 0 ORDER BY ino",
    )?
    .query_map([ROOT_INO as i64], |r| r.get::<_, i64>(0).map(|v| v as u64))?
    .collect()
}

/// The ten largest cached files: (ino, cached bytes, last access).
pub fn largest_cached(c: &Connection) -> rusqlite::Result<Vec<(u64, u64, i64)>> {
    cached_in_order(c, "cached_bytes DESC")
}

/// The ten cached files used longest ago: (ino, cached bytes, last access).
pub fn oldest_cached(c: &Connection) -> rusqlite::Result<Vec<(u64, u64, i64)>> {
    cached_in_order(c, "last_access ASC")
}

fn cached_in_order(c: &Connection, order: &str) -> rusqlite::Result<Vec<(u64, u64, i64)>> {
    let mut st = c.prepare(&format!(
        "SELECT ino, cached_bytes, last_access FROM nodes WHERE cached_bytes > 0 AND kind = 0 \
         ORDER BY {order} LIMIT 10"
    ))?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            r.get::<_, i64>(1)? as u64,
            r.get(2)?,
        ))
    })?;
    rows.collect()
}
