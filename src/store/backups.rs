//! The backup log's statements: one row per backup run (`ctl backup`), with its state,
//! size, checksum and whether its upload was queued.

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

/// A row of the backup log, as the control socket shows it (`backup-job`,
/// `backup-status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupRow {
    pub id: i64,
    /// The archive's name: `backup-<host>-<YYYYmmdd-HHMMSS>.tar.gz`.
    pub name: String,
    /// Unix seconds, the drive's clock.
    pub started_at: i64,
    pub ended_at: Option<i64>,
    /// The archive's size in bytes, once it is made.
    pub size: Option<i64>,
    pub sha256: Option<String>,
    /// `running`, `uploading`, `success`, `partial` or `failed`.
    pub state: String,
    pub error: Option<String>,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BackupRow> {
    Ok(BackupRow {
        id: r.get("id")?,
        name: r.get("name")?,
        started_at: r.get("started_at")?,
        ended_at: r.get("ended_at")?,
        size: r.get("size")?,
        sha256: r.get("sha256")?,
        state: r.get("state")?,
        error: r.get("error")?,
    })
}

/// Runs that were still making their archive when davdrive stopped are failed.
pub fn fail_cut_off(c: &Connection, now_s: i64) -> rusqlite::Result<usize> {
    c.execute(
        "UPDATE backups SET state = 'failed', ended_at = ?1, \
         error = 'cut off: davdrive stopped while making the archive' \
         WHERE state = 'running'",
        [now_s],
    )
}

/// Runs whose archive waits to be uploaded: (id, name), oldest first.
pub fn uploading(c: &Connection) -> rusqlite::Result<Vec<(i64, String)>> {
    let mut stmt =
        c.prepare("SELECT id, name FROM backups WHERE state = 'uploading' ORDER BY id")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Whether a run of that archive name is in the log.
pub fn name_taken(c: &Connection, name: &str) -> rusqlite::Result<bool> {
    c.query_row(
        "SELECT EXISTS(SELECT 1 FROM backups WHERE name = ?1)",
        [name],
        |r| r.get(0),
    )
}

/// Logs a run that starts making its archive; returns its id.
pub fn insert_running(
    c: &Connection,
    name: &str,
    remote_dir: &str,
    now_s: i64,
) -> rusqlite::Result<i64> {
    c.execute(
        "INSERT INTO backups (name, remote_dir, started_at, state) VALUES (?1, ?2, ?3, 'running')",
        params![name, remote_dir, now_s],
    )?;
    Ok(c.last_insert_rowid())
}

/// Logs the end of run `id` (an error given replaces the one recorded).
pub fn record_end(
    c: &Connection,
    id: i64,
    state: &str,
    now_s: i64,
    error: Option<&str>,
) -> rusqlite::Result<usize> {
    c.execute(
        "UPDATE backups SET state = ?2, ended_at = ?3, error = COALESCE(?4, error) WHERE id = ?1",
        params![id, state, now_s, error],
    )
}

/// Run `id` made its archive; it is to be uploaded.
pub fn set_uploading(
    c: &Connection,
    id: i64,
    size: u64,
    sha256: &str,
    problems: Option<&str>,
) -> rusqlite::Result<usize> {
    c.execute(
        "UPDATE backups SET state = 'uploading', size = ?2, sha256 = ?3, error = ?4 WHERE id = ?1",
        params![id, size as i64, sha256, problems],
    )
}

/// (queued, sha256, error) of run `id`.
pub fn upload_state(
    c: &Connection,
    id: i64,
) -> rusqlite::Result<(bool, Option<String>, Option<String>)> {
    c.query_row(
        "SELECT queued, sha256, error FROM backups WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
}

/// The archive of run `id` and its checksum were handed to the drive.
pub fn set_queued(c: &Connection, id: i64) -> rusqlite::Result<usize> {
    c.execute("UPDATE backups SET queued = 1 WHERE id = ?1", [id])
}

/// Names of the successful runs, newest first.
pub fn successes_newest_first(c: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = c.prepare(
        "SELECT name FROM backups WHERE state = 'success' ORDER BY started_at DESC, id DESC",
    )?;
    let rows = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Run `id`.
pub fn get(c: &Connection, id: i64) -> rusqlite::Result<BackupRow> {
    c.query_row("SELECT * FROM backups WHERE id = ?1", [id], row)
}

/// The last run.
pub fn last(c: &Connection) -> rusqlite::Result<BackupRow> {
    c.query_row("SELECT * FROM backups ORDER BY id DESC LIMIT 1", [], row)
}

/// The last successful run.
pub fn last_success(c: &Connection) -> rusqlite::Result<BackupRow> {
    c.query_row(
        "SELECT * FROM backups WHERE state = 'success' ORDER BY id DESC LIMIT 1",
        [],
        row,
    )
}

/// The last run that made archive `name`.
pub fn latest_named(c: &Connection, name: &str) -> rusqlite::Result<BackupRow> {
    c.query_row(
        "SELECT * FROM backups WHERE name = ?1 ORDER BY id DESC LIMIT 1",
        [name],
        row,
    )
}

/// The checksum the log holds for archive `name`.
pub fn logged_sha256(c: &Connection, name: &str) -> rusqlite::Result<String> {
    c.query_row(
        "SELECT sha256 FROM backups WHERE name = ?1 AND sha256 IS NOT NULL",
        [name],
        |r| r.get(0),
    )
}

/// When the last run started (None: never).
pub fn last_started_at(c: &Connection) -> rusqlite::Result<Option<i64>> {
    c.query_row("SELECT MAX(started_at) FROM backups", [], |r| r.get(0))
}
