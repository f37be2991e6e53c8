//! The migration tables of the state store (schema step "migrations"): one row per
//! migration, one per item its walk found. Every state change of an item is one small
//! commit, so a crash at any point leaves a state the worker resumes from.

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

/// Rows inserted per transaction by the walk.
pub const INSERT_BATCH: usize = 500;

#[derive(Debug, Clone)]
pub struct MigrationRow {
    pub id: i64,
    pub src: String,
    pub dest: String,
    pub options_json: String,
    pub state: String,
    pub error: Option<String>,
    pub walk_done: bool,
    pub excluded: u64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

const MIGRATION_COLUMNS: &str = "id, src, dest, options_json, state, error, walk_done, excluded, \
     created_at, started_at, finished_at";

impl MigrationRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<MigrationRow> {
        Ok(MigrationRow {
            id: r.get(0)?,
            src: r.get(1)?,
            dest: r.get(2)?,
            options_json: r.get(3)?,
            state: r.get(4)?,
            error: r.get(5)?,
            walk_done: r.get::<_, i64>(6)? != 0,
            excluded: r.get::<_, i64>(7)? as u64,
            created_at: r.get(8)?,
            started_at: r.get(9)?,
            finished_at: r.get(10)?,
        })
    }
}

/// An item as the walk records it.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub rel_path: String,
    pub kind: &'static str,
    pub size: u64,
    pub mtime_ns: i64,
    pub state: &'static str,
    pub error: Option<String>,
}

/// An item as the worker handles it.
#[derive(Debug, Clone)]
pub struct ItemRow {
    pub rowid: i64,
    pub rel_path: String,
    pub kind: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub sha256: Option<String>,
    pub state: String,
    pub ino: Option<u64>,
}

const ITEM_COLUMNS: &str = "rowid, rel_path, kind, size, mtime_ns, sha256, state, ino";

impl ItemRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<ItemRow> {
        Ok(ItemRow {
            rowid: r.get(0)?,
            rel_path: r.get(1)?,
            kind: r.get(2)?,
            size: r.get::<_, i64>(3)? as u64,
            mtime_ns: r.get(4)?,
            sha256: r.get(5)?,
            state: r.get(6)?,
            ino: r.get::<_, Option<i64>>(7)?.map(|i| i as u64),
        })
    }
}

pub fn insert_migration(
    c: &Connection,
    src: &str,
    dest: &str,
    options_json: &str,
    now: i64,
) -> rusqlite::Result<i64> {
    c.execute(
        "INSERT INTO migrations (src, dest, options_json, state, created_at, started_at) \
         VALUES (?1, ?2, ?3, 'running', ?4, ?4)",
        params![src, dest, options_json, now],
    )?;
    Ok(c.last_insert_rowid())
}

pub fn get(c: &Connection, id: i64) -> rusqlite::Result<Option<MigrationRow>> {
    c.prepare_cached(&format!(
        "SELECT {MIGRATION_COLUMNS} FROM migrations WHERE id = ?1"
    ))?
    .query_row([id], MigrationRow::from_row)
    .optional()
}

pub fn list(c: &Connection) -> rusqlite::Result<Vec<MigrationRow>> {
    c.prepare(&format!(
        "SELECT {MIGRATION_COLUMNS} FROM migrations ORDER BY id"
    ))?
    .query_map([], MigrationRow::from_row)?
    .collect()
}

/// Migrations in `state`, oldest first.
pub fn in_state(c: &Connection, state: &str) -> rusqlite::Result<Vec<i64>> {
    c.prepare("SELECT id FROM migrations WHERE state = ?1 ORDER BY id")?
        .query_map([state], |r| r.get(0))?
        .collect()
}

/// A migration of the same pair that is running or paused, other than `id`.
pub fn active_for_pair(c: &Connection, src: &str, dest: &str) -> rusqlite::Result<Option<i64>> {
    c.query_row(
        "SELECT id FROM migrations WHERE src = ?1 AND dest = ?2 \
         AND state IN ('running', 'paused') LIMIT 1",
        params![src, dest],
        |r| r.get(0),
    )
    .optional()
}

pub fn set_state(
    c: &Connection,
    id: i64,
    state: &str,
    error: Option<&str>,
    finished_at: Option<i64>,
) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE migrations SET state = ?2, error = ?3, finished_at = ?4 WHERE id = ?1",
        params![id, state, error, finished_at],
    )?;
    Ok(())
}

pub fn set_walk_done(c: &Connection, id: i64, excluded: u64) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE migrations SET walk_done = 1, excluded = ?2 WHERE id = ?1",
        params![id, excluded as i64],
    )?;
    Ok(())
}

/// Records a batch of walked items, in the caller's transaction (`Store::write`): one
/// per batch. An item already recorded (a walk started again after a restart) keeps its
/// row and state.
pub fn insert_items(tx: &Transaction<'_>, id: i64, items: &[NewItem]) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT OR IGNORE INTO migration_items \
         (migration_id, rel_path, kind, size, mtime_ns, state, error) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for it in items {
        st.execute(params![
            id,
            it.rel_path,
            it.kind,
            it.size as i64,
            it.mtime_ns,
            it.state,
            it.error
        ])?;
    }
    Ok(())
}

/// Up to `limit` pending items after `after_rowid`, in walk order.
pub fn next_pending(
    c: &Connection,
    id: i64,
    after_rowid: i64,
    limit: usize,
) -> rusqlite::Result<Vec<ItemRow>> {
    c.prepare_cached(&format!(
        "SELECT {ITEM_COLUMNS} FROM migration_items \
         WHERE migration_id = ?1 AND state = 'pending' AND rowid > ?2 ORDER BY rowid LIMIT ?3"
    ))?
    .query_map(params![id, after_rowid, limit as i64], ItemRow::from_row)?
    .collect()
}

/// Files copied into the drive whose landing, verification or source removal is still
/// to come.
pub fn in_flight(c: &Connection, id: i64, delete_source: bool) -> rusqlite::Result<Vec<ItemRow>> {
    let states = if delete_source {
        "'staged', 'landed', 'verified'"
    } else {
        "'staged', 'landed'"
    };
    c.prepare(&format!(
        "SELECT {ITEM_COLUMNS} FROM migration_items \
         WHERE migration_id = ?1 AND kind = 'file' AND state IN ({states}) ORDER BY rowid"
    ))?
    .query_map([id], ItemRow::from_row)?
    .collect()
}

/// Items a crash left in the middle of their copy.
pub fn interrupted(c: &Connection, id: i64) -> rusqlite::Result<Vec<ItemRow>> {
    c.prepare(&format!(
        "SELECT {ITEM_COLUMNS} FROM migration_items \
         WHERE migration_id = ?1 AND state = 'importing'"
    ))?
    .query_map([id], ItemRow::from_row)?
    .collect()
}

pub fn set_item_state(
    c: &Connection,
    rowid: i64,
    state: &str,
    error: Option<&str>,
) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE migration_items SET state = ?2, error = ?3 WHERE rowid = ?1")?
        .execute(params![rowid, state, error])?;
    Ok(())
}

/// The item was copied into the drive: what was read, and the node it became.
pub fn set_item_copied(
    c: &Connection,
    rowid: i64,
    state: &str,
    size: u64,
    mtime_ns: i64,
    sha256: &str,
    ino: Option<u64>,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE migration_items SET state = ?2, size = ?3, mtime_ns = ?4, sha256 = ?5, \
         ino = ?6, error = NULL WHERE rowid = ?1",
    )?
    .execute(params![
        rowid,
        state,
        size as i64,
        mtime_ns,
        sha256,
        ino.map(|i| i as i64)
    ])?;
    Ok(())
}

/// The file's copy on the server was checked and found to be the source's, against the
/// server's version `etag` (when the server named one), `how` as `--verify` said.
pub fn set_item_verified(
    c: &Connection,
    rowid: i64,
    etag: Option<&str>,
    how: &str,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE migration_items SET state = 'verified', error = NULL, verified_etag = ?2, \
         verified_how = ?3 WHERE rowid = ?1",
    )?
    .execute(params![rowid, etag, how])?;
    Ok(())
}

/// Why `--delete-source` kept a source file: the code `migrate status` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKept {
    /// The file could not be copied into the drive, or the server refused it.
    CopyFailed,
    /// The server's copy is not the source's (a failed verification).
    ServerDiffers,
    /// The source changed after it was copied.
    ChangedSinceCopied,
    /// Verified, but the source could not be checked or removed.
    NotRemovable,
}

impl SourceKept {
    pub const ALL: [SourceKept; 4] = [
        SourceKept::CopyFailed,
        SourceKept::ServerDiffers,
        SourceKept::ChangedSinceCopied,
        SourceKept::NotRemovable,
    ];

    pub fn code(self) -> &'static str {
        match self {
            SourceKept::CopyFailed => "copy_failed",
            SourceKept::ServerDiffers => "server_differs",
            SourceKept::ChangedSinceCopied => "changed_since_copied",
            SourceKept::NotRemovable => "not_removable",
        }
    }
}

/// The item ends in `state` with its source kept, for `why` (in words in `error`).
pub fn set_item_kept(
    c: &Connection,
    rowid: i64,
    state: &str,
    error: &str,
    kept: SourceKept,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE migration_items SET state = ?2, error = ?3, source_kept = ?4 WHERE rowid = ?1",
    )?
    .execute(params![rowid, state, error, kept.code()])?;
    Ok(())
}

/// The verified file's source was removed.
pub fn set_source_removed(c: &Connection, rowid: i64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE migration_items SET state = 'source_deleted', error = NULL, source_kept = NULL \
         WHERE rowid = ?1",
    )?
    .execute([rowid])?;
    Ok(())
}

/// Source files kept by `--delete-source`, per reason code.
pub fn kept_counts(c: &Connection, id: i64) -> rusqlite::Result<Vec<(String, u64)>> {
    c.prepare_cached(
        "SELECT source_kept, COUNT(*) FROM migration_items \
         WHERE migration_id = ?1 AND source_kept IS NOT NULL GROUP BY source_kept",
    )?
    .query_map([id], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
    .collect()
}

/// The item's source was seen again (size and mtime as they are now).
pub fn set_item_source(
    c: &Connection,
    rowid: i64,
    size: u64,
    mtime_ns: i64,
) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE migration_items SET size = ?2, mtime_ns = ?3 WHERE rowid = ?1")?
        .execute(params![rowid, size as i64, mtime_ns])?;
    Ok(())
}

/// What an earlier migration of the same pair recorded of a file it verified.
pub struct Migrated {
    pub migration_id: i64,
    pub size: u64,
    pub mtime_ns: i64,
    pub sha256: String,
}

pub fn previously_migrated(
    c: &Connection,
    src: &str,
    dest: &str,
    before: i64,
    rel_path: &str,
) -> rusqlite::Result<Option<Migrated>> {
    c.prepare_cached(
        "SELECT i.migration_id, i.size, i.mtime_ns, i.sha256 FROM migrations m \
         JOIN migration_items i ON i.migration_id = m.id AND i.rel_path = ?4 \
         WHERE m.src = ?1 AND m.dest = ?2 AND m.id < ?3 AND i.kind = 'file' \
         AND i.sha256 IS NOT NULL \
         AND (i.state IN ('verified', 'source_deleted') OR (i.state = 'skipped' AND i.error IS NULL)) \
         ORDER BY m.id DESC LIMIT 1",
    )?
    .query_row(params![src, dest, before, rel_path], |r| {
        Ok(Migrated {
            migration_id: r.get(0)?,
            size: r.get::<_, i64>(1)? as u64,
            mtime_ns: r.get(2)?,
            sha256: r.get(3)?,
        })
    })
    .optional()
}

/// The server's version (ETag) an earlier migration of the same pair verified this very
/// source against — same size, mtime and SHA-256 — if any; with `full_only`, only a
/// verification that read the server's copy back counts.
#[allow(clippy::too_many_arguments)]
pub fn recorded_verification(
    c: &Connection,
    src: &str,
    dest: &str,
    before: i64,
    rel_path: &str,
    size: u64,
    mtime_ns: i64,
    sha256: &str,
    full_only: bool,
) -> rusqlite::Result<Option<String>> {
    c.prepare_cached(
        "SELECT i.verified_etag FROM migrations m \
         JOIN migration_items i ON i.migration_id = m.id AND i.rel_path = ?4 \
         WHERE m.src = ?1 AND m.dest = ?2 AND m.id < ?3 AND i.kind = 'file' \
         AND i.verified_etag IS NOT NULL AND i.size = ?5 AND i.mtime_ns = ?6 \
         AND i.sha256 = ?7 AND (?8 = 0 OR i.verified_how = 'full') \
         ORDER BY m.id DESC LIMIT 1",
    )?
    .query_row(
        params![
            src,
            dest,
            before,
            rel_path,
            size as i64,
            mtime_ns,
            sha256,
            full_only
        ],
        |r| r.get(0),
    )
    .optional()
}

/// Directories created, deepest (last walked) first, `limit` at a time before `before`.
pub fn created_dirs_before(
    c: &Connection,
    id: i64,
    before: i64,
    limit: usize,
) -> rusqlite::Result<Vec<ItemRow>> {
    c.prepare_cached(&format!(
        "SELECT {ITEM_COLUMNS} FROM migration_items WHERE migration_id = ?1 AND kind = 'dir' \
         AND state = 'created' AND rowid < ?2 ORDER BY rowid DESC LIMIT ?3"
    ))?
    .query_map(params![id, before, limit as i64], ItemRow::from_row)?
    .collect()
}

/// Count and bytes of items per kind and state.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub rows: Vec<(String, String, u64, u64)>,
}

impl Counts {
    /// Files (count, bytes) in any of `states`.
    pub fn files(&self, states: &[&str]) -> (u64, u64) {
        self.rows
            .iter()
            .filter(|(k, s, _, _)| k == "file" && states.contains(&s.as_str()))
            .fold((0, 0), |(n, b), (_, _, cn, cb)| (n + cn, b + cb))
    }
    /// Items of `kind` (any state) when `state` is None.
    pub fn of(&self, kind: &str, state: Option<&str>) -> u64 {
        self.rows
            .iter()
            .filter(|(k, s, _, _)| k == kind && state.is_none_or(|w| w == s))
            .map(|r| r.2)
            .sum()
    }
    /// Non-file items (symlinks, special files, unreadable entries) in `state`.
    pub fn others(&self, state: &str) -> u64 {
        self.rows
            .iter()
            .filter(|(k, s, _, _)| k != "file" && k != "dir" && s == state)
            .map(|r| r.2)
            .sum()
    }
}

pub fn counts(c: &Connection, id: i64) -> rusqlite::Result<Counts> {
    let rows = c
        .prepare_cached(
            "SELECT kind, state, COUNT(*), COALESCE(SUM(size), 0) FROM migration_items \
             WHERE migration_id = ?1 GROUP BY kind, state",
        )?
        .query_map([id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get::<_, i64>(2)? as u64,
                r.get::<_, i64>(3)? as u64,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Counts { rows })
}

/// Items with something to say: failures, and what was skipped for a reason.
pub fn errors(
    c: &Connection,
    id: i64,
    limit: usize,
) -> rusqlite::Result<Vec<(String, String, String, String)>> {
    c.prepare(
        "SELECT rel_path, kind, state, error FROM migration_items \
         WHERE migration_id = ?1 AND error IS NOT NULL ORDER BY rowid LIMIT ?2",
    )?
    .query_map(params![id, limit as i64], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?
    .collect()
}

pub fn error_count(c: &Connection, id: i64) -> rusqlite::Result<u64> {
    c.query_row(
        "SELECT COUNT(*) FROM migration_items WHERE migration_id = ?1 AND error IS NOT NULL",
        [id],
        |r| r.get::<_, i64>(0).map(|n| n as u64),
    )
}

/// Ends a migration the worker finished, unless a command changed its state meanwhile
/// (a pause or cancel that came as the last file landed).
pub fn finish(
    c: &Connection,
    id: i64,
    state: &str,
    error: Option<&str>,
    now: i64,
) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE migrations SET state = ?2, error = ?3, finished_at = ?4 \
         WHERE id = ?1 AND state = 'running'",
        params![id, state, error, now],
    )?;
    Ok(())
}

/// Whether anything of the migration failed.
pub fn any_failed(c: &Connection, id: i64) -> rusqlite::Result<bool> {
    c.query_row(
        "SELECT EXISTS(SELECT 1 FROM migration_items WHERE migration_id = ?1 AND state = 'failed')",
        [id],
        |r| r.get(0),
    )
}
