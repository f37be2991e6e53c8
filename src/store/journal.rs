//! The journal table's statements. The rules that decide what is recorded, coalesced
//! or scheduled live in `crate::journal`; this module only reads and writes rows, one
//! named operation per statement (or per small group that is always run together).

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::journal::{Entry, Op};
use crate::store::now_ms;

pub const COLUMNS: &str =
    "id, op, ino, path, dest, is_dir, created_at, attempts, next_try_at, last_error, failed, attempted, \
     base_etag";

pub fn entry_from_row(r: &Row<'_>) -> rusqlite::Result<Entry> {
    Ok(Entry {
        id: r.get(0)?,
        op: {
            let op: String = r.get(1)?;
            Op::parse(&op).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    1,
                    rusqlite::types::Type::Text,
                    format!("unknown journal operation {op:?}").into(),
                )
            })?
        },
        ino: r.get::<_, i64>(2)? as u64,
        path: r.get(3)?,
        dest: r.get(4)?,
        is_dir: r.get::<_, i64>(5)? != 0,
        created_at: r.get(6)?,
        attempts: r.get::<_, i64>(7)? as u32,
        next_try_at: r.get(8)?,
        last_error: r.get(9)?,
        failed: r.get::<_, i64>(10)? != 0,
        attempted: r.get::<_, i64>(11)? != 0,
        base_etag: r.get(12)?,
    })
}

pub fn insert(
    c: &Connection,
    op: Op,
    ino: u64,
    path: &str,
    dest: Option<&str>,
    is_dir: bool,
) -> rusqlite::Result<i64> {
    c.prepare_cached(
        "INSERT INTO journal (op, ino, path, dest, is_dir, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![op.as_str(), ino as i64, path, dest, is_dir as i64, now_ms()])?;
    Ok(c.last_insert_rowid())
}

pub fn any_running(c: &Connection, ino: u64) -> rusqlite::Result<bool> {
    c.prepare_cached("SELECT 1 FROM journal WHERE ino = ?1 AND running = 1 LIMIT 1")?
        .query_row([ino as i64], |_| Ok(()))
        .optional()
        .map(|o| o.is_some())
}

/// Whether an entry of `ino` is being sent, or was sent before: then the remote may
/// already hold something of it, and its entries cannot simply be forgotten.
pub fn any_sent(c: &Connection, ino: u64) -> rusqlite::Result<bool> {
    c.prepare_cached(
        "SELECT 1 FROM journal WHERE ino = ?1 AND (running = 1 OR attempted = 1) LIMIT 1",
    )?
    .query_row([ino as i64], |_| Ok(()))
    .optional()
    .map(|o| o.is_some())
}

/// A new change of node `ino` is the signal to try its set-aside entries again: the
/// next upload of a file stuck behind a refusal should not wait for an administrator.
pub fn retry_failed_of(c: &Connection, ino: u64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE journal SET failed = 0, attempts = 0, next_try_at = 0 \
         WHERE ino = ?1 AND failed = 1",
    )?
    .execute([ino as i64])?;
    Ok(())
}

pub fn drop_entries_of(c: &Connection, ino: u64) -> rusqlite::Result<usize> {
    // Only called when nothing of `ino` was ever sent.
    c.prepare_cached("DELETE FROM journal WHERE ino = ?1 AND running = 0")?
        .execute([ino as i64])
}

/// When the next entry waiting out a backoff becomes due (unix ms, after `now_ms`).
/// Entries that are due but held back need no timer: what holds them wakes the replayer
/// when it ends.
pub fn next_retry_at(c: &Connection, now_ms: i64) -> rusqlite::Result<Option<i64>> {
    c.prepare_cached(
        "SELECT MIN(next_try_at) FROM journal WHERE failed = 0 AND running = 0 \
         AND next_try_at > ?1",
    )?
    .query_row([now_ms], |r| r.get(0))
}

/// Makes failed entries (one, or all with `id` None) wait to be tried again from the
/// start; returns how many.
pub fn retry(c: &Connection, id: Option<i64>) -> rusqlite::Result<usize> {
    c.prepare_cached(
        "UPDATE journal SET failed = 0, attempts = 0, next_try_at = 0 \
         WHERE (?1 IS NULL AND failed = 1) OR id = ?1",
    )?
    .execute([id])
}

/// Whether any entry is being replayed right now.
pub fn anything_running(c: &Connection) -> rusqlite::Result<bool> {
    c.prepare_cached("SELECT EXISTS(SELECT 1 FROM journal WHERE running != 0)")?
        .query_row([], |r| r.get(0))
}

/// Whether entry `id` is being replayed right now.
pub fn is_running(c: &Connection, id: i64) -> rusqlite::Result<bool> {
    c.prepare_cached("SELECT running != 0 FROM journal WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()
        .map(|o| o.unwrap_or(false))
}

/// The first entry in order that is not failed for good.
pub fn head(c: &Connection) -> rusqlite::Result<Option<Entry>> {
    c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM journal WHERE failed = 0 ORDER BY id LIMIT 1"
    ))?
    .query_row([], entry_from_row)
    .optional()
}

pub fn get(c: &Connection, id: i64) -> rusqlite::Result<Option<Entry>> {
    c.prepare_cached(&format!("SELECT {COLUMNS} FROM journal WHERE id = ?1"))?
        .query_row([id], entry_from_row)
        .optional()
}

/// The first delete of node `ino` recorded after entry `after`: for a file removed here
/// after a waiting rename, it names the version of ours the rename would move.
pub fn later_delete_of(c: &Connection, ino: u64, after: i64) -> rusqlite::Result<Option<Entry>> {
    // Not the removal of one of its upload scratch files or base copies: those take
    // whatever is at their own name (an empty base), and say nothing of the file's.
    c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM journal WHERE ino = ?1 AND id > ?2 AND op = 'delete' \
           AND path NOT LIKE '%.davdrive-part-%' \
         ORDER BY id LIMIT 1"
    ))?
    .query_row(params![ino as i64, after], entry_from_row)
    .optional()
}

pub fn list(c: &Connection, failed_only: bool) -> rusqlite::Result<Vec<Entry>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM journal WHERE (?1 = 0 OR failed = 1) ORDER BY id"
    ))?;
    let rows = st.query_map([failed_only as i64], entry_from_row)?;
    rows.collect()
}

pub fn set_running(c: &Connection, id: i64, running: bool) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE journal SET running = ?2, attempted = MAX(attempted, ?2) WHERE id = ?1",
    )?
    .execute(params![id, running as i64])?;
    Ok(())
}

/// After a crash nothing is running any more.
pub fn reset_running(c: &Connection) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE journal SET running = 0 WHERE running != 0")?
        .execute([])?;
    Ok(())
}

/// Entries waiting out a backoff become due now (the remote just came back).
pub fn retry_waiting_now(c: &Connection) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE journal SET next_try_at = 0 WHERE failed = 0 AND next_try_at > 0")?
        .execute([])?;
    Ok(())
}

/// Remembers the hash of a version an upload is about to send: on the upload, and on
/// deletes of the same file recorded after it (the file may have been removed while the
/// upload was starting; whatever the upload leaves on the remote is then ours to delete).
pub fn add_sent_hash(c: &Connection, id: i64, sha256: &str) -> rusqlite::Result<()> {
    // Two statements, each on an index (an OR of both scanned the whole journal for
    // every upload: quadratic in a long backlog).
    let ino: Option<i64> = c
        .prepare_cached("SELECT ino FROM journal WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    c.prepare_cached(
        "UPDATE journal SET sent_sha256 = trim(sent_sha256 || ' ' || ?2) WHERE id = ?1",
    )?
    .execute(params![id, sha256])?;
    if let Some(ino) = ino {
        c.prepare_cached(
            "UPDATE journal SET sent_sha256 = trim(sent_sha256 || ' ' || ?3) \
             WHERE ino = ?1 AND op = 'delete' AND id > ?2",
        )?
        .execute(params![ino, id, sha256])?;
    }
    Ok(())
}

pub fn sent_hashes(c: &Connection, id: i64) -> rusqlite::Result<Vec<String>> {
    let s: Option<String> = c
        .prepare_cached("SELECT sent_sha256 FROM journal WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(s.unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect())
}

/// A waiting delete of `ino` is about the version our own upload or move just made
/// (the empty base when the server gave it no ETag: it is ours all the same). Not the
/// removals of its upload scratch files and base copies (same node, names of their own
/// that take whatever is there): held to the file's new ETag, they would never go.
pub fn rebase_deletes(c: &Connection, ino: u64, etag: Option<&str>) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE journal SET base_etag = COALESCE(?2, '') \
         WHERE ino = ?1 AND op = 'delete' AND running = 0 \
           AND path NOT LIKE '%.davdrive-part-%'",
    )?
    .execute(params![ino as i64, etag])?;
    Ok(())
}

/// The waiting entries of file `ino` at `from` name `to` instead: our version went up at
/// `to`, beside somebody else's that took `from` first. Left at `from`, they would act
/// on their file (a later rename of ours would carry it off). Its deletes stay: a copy
/// put aside for a conflict is kept, and at `from` they find nothing of ours.
pub fn follow_file_aside(
    c: &Connection,
    ino: u64,
    from: &str,
    to: &str,
) -> rusqlite::Result<usize> {
    c.prepare_cached(
        "UPDATE journal SET path = ?3 \
         WHERE ino = ?1 AND path = ?2 AND running = 0 AND op != 'delete'",
    )?
    .execute(params![ino as i64, from, to])
}

/// What goes aside in `rewrite_prefix`.
#[derive(Debug, Clone, Copy)]
pub enum Aside {
    /// One node (a move's source, whatever its kind).
    Node(u64),
    /// A folder whose node is not known (the one above a refused change).
    Folder,
}

/// Points waiting entries at or below `from` to the same places below `to` (a folder
/// moved aside on the server because something else took its name there). Only while
/// the folder still has that name in the journal: up to the first waiting move or delete
/// of it (or of a folder above it), which is rewritten too. Entries after that name
/// whatever was made at `from` since, which the folder's new name has nothing to do with.
/// At `from` itself only the entries of what goes aside are taken (`Aside`): an entry
/// of another node there is of one that had that name before or after, not of
/// anything inside what moves.
pub fn rewrite_prefix(
    c: &Connection,
    from: &str,
    to: &str,
    aside: Aside,
) -> rusqlite::Result<usize> {
    let (only_ino, only_folders) = match aside {
        Aside::Node(ino) => (Some(ino as i64), false),
        Aside::Folder => (None, true),
    };
    let mut until = i64::MAX;
    let above = std::iter::successors(Some(from), |p| {
        p.rfind('/').map(|i| &p[..i]).filter(|p| !p.is_empty())
    });
    for p in above {
        let first: Option<i64> = c
            .prepare_cached(
                "SELECT MIN(id) FROM journal WHERE path = ?1 AND op IN ('move', 'delete')",
            )?
            .query_row([p], |r| r.get(0))?;
        until = until.min(first.unwrap_or(i64::MAX));
    }
    // Below `from`: the range [from + '/', from + '0'), answered by the path indexes.
    let (below, end) = (format!("{from}/"), format!("{from}0"));
    let n = c
        .prepare_cached(
            "UPDATE journal SET path = ?2 || substr(path, length(?1) + 1) \
             WHERE ((path = ?1 AND (?6 IS NULL OR ino = ?6) AND (?7 = 0 OR is_dir = 1)) \
             OR (path >= ?3 AND path < ?4)) AND id <= ?5",
        )?
        .execute(params![from, to, below, end, until, only_ino, only_folders])?;
    c.prepare_cached(
        "UPDATE journal SET dest = ?2 || substr(dest, length(?1) + 1) \
         WHERE ((dest = ?1 AND (?6 IS NULL OR ino = ?6) AND (?7 = 0 OR is_dir = 1)) \
         OR (dest >= ?3 AND dest < ?4)) AND id <= ?5",
    )?
    .execute(params![from, to, below, end, until, only_ino, only_folders])?;
    Ok(n)
}

pub fn part_progress(c: &Connection, id: i64) -> rusqlite::Result<(Option<String>, u64)> {
    c.prepare_cached("SELECT part_version, part_bytes FROM journal WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
        .optional()
        .map(|o| o.unwrap_or((None, 0)))
}

/// The local version a scratch file's parts belong to, by size, mtime and ctime (every
/// committed write and every attribute change sets the ctime, which no one can set
/// back).
pub fn part_version_of(size: u64, mtime_ns: i64, ctime_ns: i64) -> String {
    format!("{size}:{mtime_ns}:{ctime_ns}")
}

/// `ino` changed from local version `before` to `after` by its name or attributes, not
/// its content: parts sent of `before` are parts of `after` too (a `tar`, `rsync` or
/// `cp -p` sets a file's times right after writing it, a download is renamed once
/// complete).
pub fn carry_part_progress(
    c: &Connection,
    ino: u64,
    before: &str,
    after: &str,
) -> rusqlite::Result<()> {
    if before != after {
        c.prepare_cached(
            "UPDATE journal SET part_version = ?3 WHERE ino = ?1 AND part_version = ?2",
        )?
        .execute(params![ino as i64, before, after])?;
    }
    Ok(())
}

/// More bytes of entry `id`'s part upload are on the server, of the version its
/// progress names already.
pub fn raise_part_bytes(c: &Connection, id: i64, bytes: u64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE journal SET part_bytes = ?2 \
         WHERE id = ?1 AND part_version IS NOT NULL AND part_bytes < ?2",
    )?
    .execute(params![id, bytes as i64])?;
    Ok(())
}

pub fn set_part_progress(
    c: &Connection,
    id: i64,
    version: &str,
    bytes: u64,
) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE journal SET part_version = ?2, part_bytes = ?3 WHERE id = ?1")?
        .execute(params![id, version, bytes as i64])?;
    Ok(())
}

pub fn complete(c: &Connection, id: i64) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM journal WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

/// Records a failed attempt; the entry is tried again at `next_try_at` (unix ms), or, when
/// `give_up`, kept aside as failed until an administrator retries or drops it.
pub fn record_failure(
    c: &Connection,
    id: i64,
    error: &str,
    next_try_at: i64,
    give_up: bool,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE journal SET attempts = attempts + 1, last_error = ?2, next_try_at = ?3, \
         failed = ?4, running = 0 WHERE id = ?1",
    )?
    .execute(params![id, error, next_try_at, give_up as i64])?;
    Ok(())
}

pub fn has_pending_put(c: &Connection, ino: u64, except: i64) -> rusqlite::Result<bool> {
    c.prepare_cached("SELECT 1 FROM journal WHERE ino = ?1 AND op = 'put' AND id != ?2 LIMIT 1")?
        .query_row(params![ino as i64, except], |_| Ok(()))
        .optional()
        .map(|o| o.is_some())
}

/// Counts for the status: waiting entries, failed ones, and the oldest's creation time.
pub fn stats(c: &Connection) -> rusqlite::Result<(u64, u64, Option<i64>)> {
    c.prepare_cached("SELECT COALESCE(SUM(failed = 0), 0), COALESCE(SUM(failed = 1), 0), MIN(created_at) FROM journal")?
        .query_row([],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get(2)?)),
    )
}

/// The waiting (not running, not failed) upload of `ino`, if there is one.
pub fn waiting_put(c: &Connection, ino: u64) -> rusqlite::Result<Option<i64>> {
    c.prepare_cached(
        "SELECT id FROM journal WHERE op = 'put' AND ino = ?1 AND failed = 0 AND running = 0",
    )?
    .query_row([ino as i64], |r| r.get(0))
    .optional()
}

/// Whether an upload or folder creation of `ino` waits (not running): it will send the
/// node's properties after itself.
pub fn put_or_mkcol_waits(c: &Connection, ino: u64) -> rusqlite::Result<bool> {
    c.prepare_cached(
        "SELECT COUNT(*) > 0 FROM journal WHERE ino = ?1 AND op IN ('put', 'mkcol') \
         AND running = 0",
    )?
    .query_row([ino as i64], |r| r.get(0))
}

/// The operation and running flag of the last entry of `ino`.
pub fn last_of(c: &Connection, ino: u64) -> rusqlite::Result<Option<(String, i64)>> {
    c.prepare_cached("SELECT op, running FROM journal WHERE ino = ?1 ORDER BY id DESC LIMIT 1")?
        .query_row([ino as i64], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

/// The id and path of the first entry of `ino`.
pub fn first_of(c: &Connection, ino: u64) -> rusqlite::Result<Option<(i64, String)>> {
    c.prepare_cached("SELECT id, path FROM journal WHERE ino = ?1 ORDER BY id LIMIT 1")?
        .query_row([ino as i64], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

/// Walks the entries from `first_id` on, in order, as (ino, op, path, dest), until `f`
/// says it found what it looked for (true); returns whether it did.
pub fn scan_from(
    c: &Connection,
    first_id: i64,
    mut f: impl FnMut(u64, String, String, Option<String>) -> bool,
) -> rusqlite::Result<bool> {
    let mut st =
        c.prepare_cached("SELECT ino, op, path, dest FROM journal WHERE id >= ?1 ORDER BY id")?;
    let mut rows = st.query([first_id])?;
    while let Some(r) = rows.next()? {
        let (ino, op, path, dest): (i64, String, String, Option<String>) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
        if f(ino as u64, op, path, dest) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The scratch files the waiting uploads of `ino` (all but entry `except`) sent parts
/// to, which may still be on the server.
pub fn waiting_put_scratches(
    c: &Connection,
    ino: u64,
    except: i64,
) -> rusqlite::Result<Vec<String>> {
    c.prepare_cached(
        "SELECT scratch FROM journal WHERE ino = ?1 AND op = 'put' AND running = 0 \
         AND id != ?2 AND scratch IS NOT NULL",
    )?
    .query_map(params![ino as i64, except], |r| r.get(0))?
    .collect()
}

/// The scratch files any entry of `ino` sent parts to, which may still be on the server.
pub fn scratches_of(c: &Connection, ino: u64) -> rusqlite::Result<Vec<String>> {
    c.prepare_cached("SELECT scratch FROM journal WHERE ino = ?1 AND scratch IS NOT NULL")?
        .query_map([ino as i64], |r| r.get(0))?
        .collect()
}

/// The scratch file upload entry `id` sent parts to, with the entry's node, if it may
/// still be on the server.
pub fn scratch_of(c: &Connection, id: i64) -> rusqlite::Result<Option<(u64, String)>> {
    c.prepare_cached("SELECT ino, scratch FROM journal WHERE id = ?1 AND scratch IS NOT NULL")?
        .query_row([id], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
        .optional()
}

/// Records that entry `id` is about to send parts to `scratch` (before the first one
/// goes), or, with None, that nothing of it is left there.
pub fn set_scratch(c: &Connection, id: i64, scratch: Option<&str>) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE journal SET scratch = ?2 WHERE id = ?1")?
        .execute(params![id, scratch])?;
    Ok(())
}

/// Scratch files below folder `dir` are gone with it (a file took its name on the
/// server): the entries that left them there have none any more.
pub fn forget_scratches_under(c: &Connection, dir: &str) -> rusqlite::Result<usize> {
    let (below, end) = (format!("{dir}/"), format!("{dir}0"));
    c.prepare_cached("UPDATE journal SET scratch = NULL WHERE scratch >= ?1 AND scratch < ?2")?
        .execute(params![below, end])
}

/// Scratch files at or below folder `from` went with it to `to` (a folder move on the
/// server): the entries that may have left them there follow.
pub fn move_scratches(c: &Connection, from: &str, to: &str) -> rusqlite::Result<usize> {
    let (below, end) = (format!("{from}/"), format!("{from}0"));
    c.prepare_cached(
        "UPDATE journal SET scratch = ?2 || substr(scratch, length(?1) + 1) \
         WHERE scratch >= ?3 AND scratch < ?4",
    )?
    .execute(params![from, to, below, end])
}

/// Deletes the waiting (not running) uploads of `ino`.
pub fn delete_waiting_puts(c: &Connection, ino: u64) -> rusqlite::Result<usize> {
    c.prepare_cached("DELETE FROM journal WHERE ino = ?1 AND op = 'put' AND running = 0")?
        .execute([ino as i64])
}

/// Deletes the waiting (not running) `meta` entries of `ino`.
pub fn delete_waiting_meta(c: &Connection, ino: u64) -> rusqlite::Result<usize> {
    c.prepare_cached("DELETE FROM journal WHERE ino = ?1 AND op = 'meta' AND running = 0")?
        .execute([ino as i64])
}

/// `journal.sending` of entry `id`: the written ranges its upload took.
pub fn sending_blob(c: &Connection, id: i64) -> rusqlite::Result<Option<Vec<u8>>> {
    Ok(
        c.prepare_cached("SELECT sending FROM journal WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?
            .flatten(),
    )
}

pub fn set_sending(c: &Connection, id: i64, blob: &[u8]) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE journal SET sending = ?2 WHERE id = ?1")?
        .execute(params![id, blob])?;
    Ok(())
}

pub fn set_base_etag(c: &Connection, id: i64, tag: &str) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE journal SET base_etag = ?2 WHERE id = ?1")?
        .execute(params![id, tag])?;
    Ok(())
}

pub fn set_sent_hashes(c: &Connection, id: i64, hashes: &str) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE journal SET sent_sha256 = ?2 WHERE id = ?1")?
        .execute(params![id, hashes])?;
    Ok(())
}

/// The entries of `ino` that were sent before (upload, mkcol, move) become deletes of
/// what they may have left, in their place in the order.
pub fn sent_entries_become_deletes(c: &Connection, ino: u64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE journal SET op = 'delete', path = COALESCE(dest, path), dest = NULL, \
         attempted = 0, failed = 0, attempts = 0, next_try_at = 0, last_error = NULL \
         WHERE ino = ?1 AND attempted = 1 AND op IN ('put', 'move', 'mkcol')",
    )?
    .execute([ino as i64])?;
    Ok(())
}

/// Deletes every entry of `ino` but its deletes.
pub fn delete_all_but_deletes(c: &Connection, ino: u64) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM journal WHERE ino = ?1 AND op != 'delete'")?
        .execute([ino as i64])?;
    Ok(())
}

/// The hashes of every version uploads of `ino` sent, and `base` (the node's known
/// remote version), space-separated.
pub fn our_versions(c: &Connection, ino: u64, base: Option<&str>) -> rusqlite::Result<String> {
    c.prepare_cached(
        "SELECT trim(COALESCE(group_concat(sent_sha256, ' '), '') || ' ' || COALESCE(?2, ''))              FROM journal WHERE ino = ?1",
    )?
    .query_row(params![ino as i64, base], |r| r.get(0))
}

/// Whether every entry of `ino` is an upload.
pub fn only_puts(c: &Connection, ino: u64) -> rusqlite::Result<bool> {
    c.prepare_cached("SELECT COUNT(*) = 0 FROM journal WHERE ino = ?1 AND op != 'put'")?
        .query_row([ino as i64], |r| r.get(0))
}

/// Walks the journal in order up to entry `through` (inclusive), until `f` returns false.
pub fn scan_entries(
    c: &Connection,
    through: i64,
    mut f: impl FnMut(Entry) -> bool,
) -> rusqlite::Result<()> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM journal WHERE id <= ?1 ORDER BY id"
    ))?;
    let mut rows = st.query([through])?;
    while let Some(row) = rows.next()? {
        if !f(entry_from_row(row)?) {
            break;
        }
    }
    Ok(())
}

/// Whether entry `id` is an upload still to be sent: there, and not set aside.
pub fn put_due(c: &Connection, id: i64) -> rusqlite::Result<bool> {
    c.prepare_cached(
        "SELECT EXISTS(SELECT 1 FROM journal WHERE id = ?1 AND op = 'put' AND failed = 0)",
    )?
    .query_row([id], |r| r.get(0))
}

/// Makes entry `id` wait without counting an attempt, until `next_try_at` or a wake.
pub fn park(c: &Connection, id: i64, why: &str, next_try_at: i64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE journal SET last_error = ?2, next_try_at = ?3, running = 0 WHERE id = ?1",
    )?
    .execute(params![id, why, next_try_at])?;
    Ok(())
}

/// Makes waiting entry `id` due now; whether it was waiting (not running, not set aside).
pub fn wake(c: &Connection, id: i64) -> rusqlite::Result<bool> {
    c.prepare_cached(
        "UPDATE journal SET next_try_at = 0 WHERE id = ?1 AND running = 0 AND failed = 0",
    )?
    .execute([id])
    .map(|n| n > 0)
}

/// Whether any entry of `ino` waits.
pub fn any_of(c: &Connection, ino: u64) -> rusqlite::Result<bool> {
    c.prepare_cached("SELECT EXISTS(SELECT 1 FROM journal WHERE ino = ?1)")?
        .query_row([ino as i64], |r| r.get(0))
}

/// Whether an entry names `path` as its path or destination.
pub fn names_path(c: &Connection, path: &str) -> rusqlite::Result<bool> {
    c.prepare_cached("SELECT EXISTS(SELECT 1 FROM journal WHERE path = ?1 OR dest = ?1)")?
        .query_row([path], |r| r.get(0))
}

/// The latest waiting move before entry `before` whose destination is `dest`: its id
/// and source path.
pub fn latest_move_to(
    c: &Connection,
    dest: &str,
    before: i64,
) -> rusqlite::Result<Option<(i64, String)>> {
    c.prepare_cached(
        "SELECT id, path FROM journal WHERE dest = ?1 AND op = 'move' AND id < ?2 \
         ORDER BY id DESC LIMIT 1",
    )?
    .query_row(params![dest, before], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
    })
    .optional()
}

/// The first waiting move of a folder after entry `after` whose source is `path`: its id
/// and destination.
pub fn first_folder_move_from(
    c: &Connection,
    path: &str,
    after: i64,
) -> rusqlite::Result<Option<(i64, String)>> {
    c.prepare_cached(
        "SELECT id, dest FROM journal WHERE path = ?1 AND op = 'move' AND is_dir = 1 \
           AND id > ?2 AND dest IS NOT NULL \
         ORDER BY id LIMIT 1",
    )?
    .query_row(params![path, after], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
    })
    .optional()
}

/// (path, dest) of every entry whose path or destination lies in `[start, end)`.
pub fn paths_in_range(
    c: &Connection,
    start: &str,
    end: &str,
) -> rusqlite::Result<Vec<(String, Option<String>)>> {
    let mut st = c.prepare_cached(
        "SELECT path, dest FROM journal WHERE (path >= ?1 AND path < ?2) \
         OR (dest >= ?1 AND dest < ?2)",
    )?;
    let rows = st.query_map([start, end], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
    })?;
    rows.collect()
}

/// The error of the entry of `ino` set aside as failed ("failed" when none was kept);
/// `QueryReturnedNoRows` when none is.
pub fn failure_of(c: &Connection, ino: u64) -> rusqlite::Result<String> {
    c.prepare_cached(
        "SELECT COALESCE(last_error, 'failed') FROM journal WHERE ino = ?1 AND failed = 1",
    )?
    .query_row([ino as i64], |r| r.get(0))
}

/// Whether an entry after `id` of another node than `ino` brings a file to `path`: a
/// move there, or an upload to it.
pub fn later_arrival_at(c: &Connection, path: &str, id: i64, ino: u64) -> rusqlite::Result<bool> {
    c.prepare_cached(
        "SELECT EXISTS(SELECT 1 FROM journal WHERE id > ?2 AND ino != ?3 \
         AND ((op = 'move' AND dest = ?1) OR (op = 'put' AND path = ?1)))",
    )?
    .query_row(params![path, id, ino as i64], |r| r.get(0))
}

/// Whether an upload of `ino` waits or runs.
pub fn any_put_of(c: &Connection, ino: u64) -> rusqlite::Result<bool> {
    c.prepare_cached("SELECT EXISTS(SELECT 1 FROM journal WHERE ino = ?1 AND op = 'put')")?
        .query_row([ino as i64], |r| r.get(0))
}

/// Deletes every entry of `ino`.
pub fn delete_all_of(c: &Connection, ino: u64) -> rusqlite::Result<usize> {
    c.prepare_cached("DELETE FROM journal WHERE ino = ?1")?
        .execute([ino as i64])
}

/// The entries set aside as failed: (ino, the path they change, the reason).
pub fn refused(c: &Connection) -> rusqlite::Result<Vec<(u64, String, String)>> {
    c.prepare_cached(
        "SELECT ino, COALESCE(dest, path), COALESCE(last_error, 'refused') \
         FROM journal WHERE failed != 0",
    )?
    .query_map([], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
    })?
    .collect()
}

/// Bytes of content the waiting uploads carry, and entries running now.
pub fn load(c: &Connection) -> rusqlite::Result<(u64, u64)> {
    c.prepare_cached(
        "SELECT COALESCE(SUM(CASE WHEN j.op = 'put' THEN n.size END), 0), \
         COALESCE(SUM(j.running), 0) \
         FROM journal j LEFT JOIN nodes n ON n.ino = j.ino WHERE j.failed = 0",
    )?
    .query_row([], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
    })
}

/// Our uploads of `ino` that wait (all but entry `except`, the one being replayed) go
/// to the node `to` names, under the name its path ends with, or are dropped when it
/// names none: hands a file's pending changes to its conflict copy. Each keeps its own
/// folder: one recorded after a rename of a folder above names the folder's new path,
/// and must not bring the old one back. Ranges an earlier attempt took (`sending`)
/// describe `ino`'s base, not the copy's, so they are forgotten.
pub fn hand_puts_to(
    c: &Connection,
    ino: u64,
    except: i64,
    to: Option<(u64, &str)>,
) -> rusqlite::Result<usize> {
    let Some((copy, copy_path)) = to else {
        return c
            .prepare_cached(
                "DELETE FROM journal WHERE ino = ?1 AND op = 'put' AND running = 0 AND id != ?2",
            )?
            .execute(params![ino as i64, except]);
    };
    let name = copy_path.rsplit('/').next().unwrap_or(copy_path);
    let puts: Vec<(i64, String)> = c
        .prepare_cached(
            "SELECT id, path FROM journal \
             WHERE ino = ?1 AND op = 'put' AND running = 0 AND id != ?2",
        )?
        .query_map(params![ino as i64, except], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut update =
        c.prepare_cached("UPDATE journal SET ino = ?2, path = ?3, sending = NULL WHERE id = ?1")?;
    for (id, path) in &puts {
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
        update.execute(params![id, copy as i64, format!("{dir}/{name}")])?;
    }
    Ok(puts.len())
}
