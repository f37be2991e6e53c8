//! The conflicts table's statements: conflicts recorded for the status and `ctl conflicts`.

use rusqlite::{params, Connection};

use crate::store::now_ms;

/// Records a conflict with its reason in words (a folder removed on the server...),
/// once: changes racing to find the same folder gone record it once.
pub fn record_conflict_because(
    c: &Connection,
    path: &str,
    conflict_path: &str,
    reason: &str,
) -> rusqlite::Result<()> {
    let known: bool = c
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM conflicts WHERE path = ?1 AND conflict_path = ?2 \
             AND reason = ?3 AND resolved = 0)",
        )?
        .query_row(params![path, conflict_path, reason], |r| r.get(0))?;
    if known {
        return Ok(());
    }
    c.prepare_cached(
        "INSERT INTO conflicts (path, conflict_path, created_at, reason) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![path, conflict_path, now_ms(), reason])?;
    Ok(())
}

/// Records a conflict for the status and `ctl conflicts`.
pub fn record_conflict(
    c: &Connection,
    path: &str,
    conflict_path: &str,
    local_etag: Option<&str>,
    remote_etag: Option<&str>,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO conflicts (path, conflict_path, local_etag, remote_etag, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        path,
        conflict_path,
        local_etag,
        remote_etag,
        now_ms()
    ])?;
    Ok(())
}

/// Whether an open conflict names `path` (as the original or the copy).
pub fn in_open_conflict(c: &Connection, path: &str) -> rusqlite::Result<bool> {
    c.prepare_cached(
        "SELECT EXISTS(SELECT 1 FROM conflicts WHERE resolved = 0 \
         AND (path = ?1 OR conflict_path = ?1))",
    )?
    .query_row([path], |r| r.get(0))
}

/// Our version left the conflict copy at `copy` by a rename of ours (one made here
/// before the conflict arose, replayed after it): it is where the user put it, and the
/// copy named by the conflict is gone. Its open conflicts are settled; none is left
/// whose "keep theirs" would remove what the rename made.
pub fn settled_by_rename(c: &Connection, copy: &str) -> rusqlite::Result<usize> {
    c.prepare_cached("UPDATE conflicts SET resolved = 1 WHERE conflict_path = ?1 AND resolved = 0")?
        .execute([copy])
}

/// Every conflict, resolved or not, as the control socket lists them.
pub fn list(c: &Connection) -> rusqlite::Result<Vec<ConflictRow>> {
    let mut st = c.prepare(
        "SELECT id, path, conflict_path, local_etag, remote_etag, created_at, resolved \
         FROM conflicts ORDER BY id",
    )?;
    let rows = st.query_map([], |r| {
        Ok(ConflictRow {
            id: r.get(0)?,
            path: r.get(1)?,
            conflict_path: r.get(2)?,
            local_etag: r.get(3)?,
            remote_etag: r.get(4)?,
            time: r.get::<_, i64>(5)? / 1000,
            resolved: r.get(6)?,
        })
    })?;
    rows.collect()
}

/// One conflict as `ctl conflicts` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ConflictRow {
    pub id: i64,
    pub path: String,
    pub conflict_path: String,
    pub local_etag: Option<String>,
    pub remote_etag: Option<String>,
    /// Unix seconds.
    pub time: i64,
    pub resolved: bool,
}

/// The latest unresolved conflict naming `path` (as the original or the copy):
/// (id, path, conflict path).
pub fn latest_open_at(c: &Connection, path: &str) -> rusqlite::Result<(i64, String, String)> {
    c.query_row(
        "SELECT id, path, conflict_path FROM conflicts WHERE resolved = 0 \
         AND (path = ?1 OR conflict_path = ?1) ORDER BY id DESC LIMIT 1",
        [path],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
}

pub fn mark_resolved(c: &Connection, id: i64) -> rusqlite::Result<usize> {
    c.execute("UPDATE conflicts SET resolved = 1 WHERE id = ?1", [id])
}

/// How many conflicts are not resolved.
pub fn open_count(c: &Connection) -> rusqlite::Result<u64> {
    c.query_row(
        "SELECT COUNT(*) FROM conflicts WHERE resolved = 0",
        [],
        |r| r.get::<_, i64>(0).map(|n| n as u64),
    )
}

/// For the metrics: open conflicts, and when the last successful backup ended.
pub fn open_count_and_last_backup(c: &Connection) -> rusqlite::Result<(i64, Option<i64>)> {
    c.query_row(
        "SELECT (SELECT COUNT(*) FROM conflicts WHERE resolved = 0), \
         (SELECT MAX(ended_at) FROM backups WHERE state = 'success')",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}
