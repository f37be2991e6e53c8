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
