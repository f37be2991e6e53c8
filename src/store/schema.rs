//! Schema of the state store, versioned with `PRAGMA user_version` and migrated at start.

use rusqlite::Connection;

use super::StoreError;

/// Each step takes the store from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    "
    CREATE TABLE nodes (
        -- AUTOINCREMENT: an inode number is never reused, so neither the kernel nor a
        -- journal entry of a removed node can mistake a new node for it.
        ino         INTEGER PRIMARY KEY AUTOINCREMENT,
        parent      INTEGER NOT NULL,
        name        TEXT    NOT NULL,
        kind        INTEGER NOT NULL,
        size        INTEGER NOT NULL DEFAULT 0,
        mtime_ns    INTEGER NOT NULL DEFAULT 0,
        ctime_ns    INTEGER NOT NULL DEFAULT 0,
        mode        INTEGER NOT NULL,
        uid         INTEGER NOT NULL,
        gid         INTEGER NOT NULL,
        etag        TEXT,
        on_remote   INTEGER NOT NULL DEFAULT 0,
        dirty       INTEGER NOT NULL DEFAULT 0,
        ranges      BLOB,
        pinned      INTEGER NOT NULL DEFAULT 0,
        last_access INTEGER NOT NULL DEFAULT 0,
        sha256      TEXT,
        listed_at   INTEGER
    );
    -- Orphans (unlinked while open) have parent 0 and stay out of the namespace.
    CREATE UNIQUE INDEX nodes_by_name ON nodes(parent, name) WHERE parent != 0;
    CREATE INDEX nodes_dirty ON nodes(dirty) WHERE dirty != 0;

    CREATE TABLE journal (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        op          TEXT    NOT NULL,
        ino         INTEGER NOT NULL,
        path        TEXT    NOT NULL,
        dest        TEXT,
        is_dir      INTEGER NOT NULL DEFAULT 0,
        created_at  INTEGER NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        next_try_at INTEGER NOT NULL DEFAULT 0,
        last_error  TEXT,
        failed      INTEGER NOT NULL DEFAULT 0,
        running     INTEGER NOT NULL DEFAULT 0,
        -- Once sent (even if cut off), the remote may hold a partial result of it.
        attempted   INTEGER NOT NULL DEFAULT 0,
        -- SHA-256 of each version an upload sent, space-separated: what is on the remote
        -- after a crash may be one of them, which is not a conflict.
        sent_sha256 TEXT NOT NULL DEFAULT '',
        -- A large upload sent in parts: which local version ('size:sha256') and how many
        -- bytes of it the server has confirmed, to resume instead of starting over.
        part_version TEXT,
        part_bytes  INTEGER NOT NULL DEFAULT 0,
        -- Deletes of files: the version that was deleted here, so a newer one on the
        -- remote is not deleted with it.
        base_etag   TEXT
    );
    CREATE INDEX journal_by_ino ON journal(ino);

    CREATE TABLE conflicts (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        path         TEXT    NOT NULL,
        conflict_path TEXT   NOT NULL,
        local_etag   TEXT,
        remote_etag  TEXT,
        created_at   INTEGER NOT NULL,
        resolved     INTEGER NOT NULL DEFAULT 0
    );

    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    ",
    // 1 -> 2: cache accounting. `cached_bytes` is the size of the present ranges, so the
    // sweeper sums and orders without decoding range maps; `content_etag` binds the
    // content file to the remote version it came from.
    "
    ALTER TABLE nodes ADD COLUMN cached_bytes INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE nodes ADD COLUMN content_etag TEXT;
    UPDATE nodes SET content_etag = etag WHERE ranges IS NOT NULL;
    CREATE INDEX nodes_cached_lru ON nodes(last_access) WHERE cached_bytes > 0;
    CREATE INDEX nodes_pinned ON nodes(pinned) WHERE pinned != 0;
    ",
    // 2 -> 3: the backup log. `state` is `running` while the archive is made, `uploading`
    // until archive and checksum have landed on the remote, then `success`, `partial`
    // (some source could not be read) or `failed`. Times are unix seconds.
    "
    CREATE TABLE backups (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        name        TEXT    NOT NULL,
        remote_dir  TEXT    NOT NULL,
        started_at  INTEGER NOT NULL,
        ended_at    INTEGER,
        size        INTEGER,
        sha256      TEXT,
        state       TEXT    NOT NULL,
        -- What went wrong (failed), what is missing (partial), or why it waits.
        error       TEXT,
        -- Both files are in the journal (the archive waits in the spool until then).
        queued      INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX backups_by_name ON backups(name);
    ",
    // 3 -> 4: migrations of local trees onto the remote (`ctl migrate`): one row per migration
    // and one per item found by its walk, so a migration resumes where it was after a
    // restart or a crash. Self-contained: it touches no table of the other steps.
    "
    CREATE TABLE migrations (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        src          TEXT    NOT NULL,
        dest         TEXT    NOT NULL,
        options_json TEXT    NOT NULL,
        -- running, paused, cancelled, completed, completed_with_errors, failed
        state        TEXT    NOT NULL,
        error        TEXT,
        -- The walk of SRC has recorded every item (until then a restart walks again).
        walk_done    INTEGER NOT NULL DEFAULT 0,
        excluded     INTEGER NOT NULL DEFAULT 0,
        created_at   INTEGER NOT NULL,
        started_at   INTEGER,
        finished_at  INTEGER
    );
    CREATE INDEX migrations_by_pair ON migrations(src, dest);

    CREATE TABLE migration_items (
        migration_id INTEGER NOT NULL,
        rel_path     TEXT    NOT NULL,
        -- file, dir, symlink, other (special files, unreadable entries)
        kind         TEXT    NOT NULL,
        size         INTEGER NOT NULL DEFAULT 0,
        mtime_ns     INTEGER NOT NULL DEFAULT 0,
        sha256       TEXT,
        -- files: pending, importing, staged, landed, verified, source_deleted, skipped,
        -- failed; directories: pending, created, failed; others: skipped, failed
        state        TEXT    NOT NULL,
        error        TEXT,
        ino          INTEGER,
        PRIMARY KEY (migration_id, rel_path)
    );
    -- The worker takes pending items in walk order (rowid), a batch at a time.
    CREATE INDEX migration_items_by_state ON migration_items(migration_id, state);
    ",
    // 4 -> 5: checksums the server offers (`oc:checksums`), to verify downloads.
    "
    ALTER TABLE nodes ADD COLUMN remote_checksum TEXT;
    ",
    // 6: why a conflict was recorded, in words, when it is not the usual "changed on
    // both sides" (a folder removed or replaced on the server under local changes).
    "
    ALTER TABLE conflicts ADD COLUMN reason TEXT;
    ",
    // 7: indexes for every lookup on a hot path (`tests/query_plans.rs` checks the
    // plans). `nodes_by_name` is partial, so `WHERE parent = ?` could not use it: every
    // lookup and listing walked the whole node table. The journal is searched by path
    // (is anything waiting at or above this path?) and by its retry time.
    "
    CREATE INDEX nodes_by_parent ON nodes(parent, name);
    CREATE INDEX journal_by_path ON journal(path);
    CREATE INDEX journal_by_dest ON journal(dest);
    CREATE INDEX journal_by_retry ON journal(failed, next_try_at);
    CREATE INDEX journal_running ON journal(running) WHERE running != 0;
    ",
    // 8: what a migration's verification of a file saw, so a later run (`--delete-source`
    // on a tree migrated before) can trust it while the server still has that version;
    // and why `--delete-source` kept a source file, as a short code counted by
    // `migrate status` (the details are in `error`).
    "
    ALTER TABLE migration_items ADD COLUMN verified_etag TEXT;
    ALTER TABLE migration_items ADD COLUMN verified_how TEXT;
    ALTER TABLE migration_items ADD COLUMN source_kept TEXT;
    ",
    // 9: POSIX metadata kept beside mode and owner. `atime_ns` is the access time (NULL:
    // the same as mtime, as before it was kept); `link_target` the target of a symbolic
    // link (kind 2). A folder's link count counts its subfolders at every getattr: the
    // partial index makes that cost the subfolders, not all the entries of the folder.
    "
    ALTER TABLE nodes ADD COLUMN atime_ns INTEGER;
    ALTER TABLE nodes ADD COLUMN link_target TEXT;
    CREATE INDEX nodes_subdirs ON nodes(parent) WHERE kind = 1;
    ",
    // 10: partial updates. `written` holds the byte ranges written here since the base
    // version (`etag`), encoded like `ranges`; NULL when they are not known (a file
    // created here, or written by an earlier version): such a file is sent whole.
    // `base_size` is the size of the base version on the server: a file cut below it
    // cannot be sent as ranges. `base_copy` is the server-side copy of the base version
    // (a hidden scratch file beside the file) that unchanged parts are read from and
    // that the ranges are written into before it replaces the file. An upload takes the
    // written ranges it sends into its journal entry (`sending`), so writes landing
    // meanwhile start a new set.
    "
    ALTER TABLE nodes ADD COLUMN written BLOB;
    ALTER TABLE nodes ADD COLUMN base_size INTEGER;
    ALTER TABLE nodes ADD COLUMN base_copy TEXT;
    UPDATE nodes SET written = X'', base_size = size WHERE on_remote = 1 AND dirty = 0 \
        AND kind != 1;
    CREATE INDEX nodes_base_copy ON nodes(base_copy) WHERE base_copy IS NOT NULL;
    ALTER TABLE journal ADD COLUMN sending BLOB;
    ",
    // 11: where an upload's parts are. `scratch` is the server path of the scratch file
    // an upload entry sends parts to, set before the first part goes and cleared once
    // the file is moved over its target or removed: every way the entry ends, or hands
    // its work to another, queues the removal of a scratch file still named here. The
    // part progress columns cannot say so: partial updates use them for their own.
    // Entries of older stores that sent parts get the name they used then.
    "
    ALTER TABLE journal ADD COLUMN scratch TEXT;
    CREATE INDEX journal_by_scratch ON journal(scratch) WHERE scratch IS NOT NULL;
    ",
];

pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the store to `VERSION`; returns the version it was found at.
pub fn migrate(conn: &Connection) -> Result<i64, StoreError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > VERSION {
        return Err(StoreError::TooNew {
            found,
            known: VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        if i == 1 {
            fill_cached_bytes(&tx)?;
        }
        if i == 10 {
            fill_scratch(&tx)?;
        }
        tx.commit()?;
    }
    Ok(found)
}

/// Names the scratch files of uploads that sent parts before `scratch` existed.
fn fill_scratch(c: &Connection) -> rusqlite::Result<()> {
    let rows: Vec<(i64, i64, String)> = c
        .prepare(
            "SELECT id, ino, path FROM journal WHERE op = 'put' AND part_bytes > 0 \
             AND (part_version IS NULL OR part_version NOT LIKE 'moving:%')",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (id, ino, path) in rows {
        let scratch = crate::journal::scratch_path(&path, ino as u64);
        c.execute(
            "UPDATE journal SET scratch = ?2 WHERE id = ?1",
            rusqlite::params![id, scratch],
        )?;
    }
    Ok(())
}

/// Computes `cached_bytes` of stores made before it existed (range maps are blobs).
fn fill_cached_bytes(c: &Connection) -> rusqlite::Result<()> {
    let rows: Vec<(i64, Vec<u8>)> = c
        .prepare("SELECT ino, ranges FROM nodes WHERE ranges IS NOT NULL")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (ino, blob) in rows {
        c.execute(
            "UPDATE nodes SET cached_bytes = ?2 WHERE ino = ?1",
            [ino, super::RangeSet::decode(&blob).bytes() as i64],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store written by the first release (schema 1) opens under this one: every step
    /// runs, rows survive, and columns added later are filled in.
    #[test]
    fn a_version_1_store_is_upgraded_to_the_current_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
            let mut ranges = super::super::RangeSet::default();
            ranges.insert(0, 100);
            c.execute(
                "INSERT INTO nodes (parent, name, kind, size, mode, uid, gid, etag, ranges) \
                 VALUES (1, 'a file', 0, 100, 420, 0, 0, '\"e1\"', ?1)",
                [ranges.encode()],
            )
            .unwrap();
            c.execute(
                "INSERT INTO journal (op, ino, path, created_at) VALUES ('put', 2, '/a file', 0)",
                [],
            )
            .unwrap();
            // An upload that had sent parts: its scratch file gets a name.
            c.execute(
                "INSERT INTO journal (op, ino, path, created_at, part_version, part_bytes) \
                 VALUES ('put', 7, '/d/big', 0, '9:1:1', 4096)",
                [],
            )
            .unwrap();
        }
        let c = super::super::open(&path).unwrap();
        let version: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, VERSION);
        let (cached, content_etag): (i64, Option<String>) = c
            .query_row(
                "SELECT cached_bytes, content_etag FROM nodes WHERE name = 'a file'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((cached, content_etag.as_deref()), (100, Some("\"e1\"")));
        let journal: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM journal WHERE path = '/a file'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(journal, 1);
        let scratches: Vec<Option<String>> = c
            .prepare("SELECT scratch FROM journal ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            scratches,
            [None, Some("/d/.big.davdrive-part-7".to_string())]
        );
        // Opening again is a no-op.
        drop(c);
        assert_eq!(
            migrate(&super::super::open(&path).unwrap()).unwrap(),
            VERSION
        );
    }
}
