//! The sync journal: the ordered list of changes the remote has not seen yet.
//!
//! Entries are recorded inside the same SQLite transaction as the local change that
//! produced them, so a change the kernel was told succeeded is always either applied on
//! the remote or waiting here. Entries name remote paths as they were when recorded, and
//! each waits for every earlier entry it depends on (see `ready`), so a path always means
//! what it meant then.
//!
//! Coalescing keeps the journal short. There are exactly five rewrite rules, and each
//! keeps one invariant: replaying the rewritten journal on the server's tree gives the
//! same tree as replaying the original.
//! - R1, upload + upload: a second upload of a file whose upload still waits (not
//!   running) is that same upload. The upload sends the content as it is when it runs,
//!   to the path its entry names; a later move has its own entry after it.
//! - R2, create + remove of a file: a file no entry of which was ever sent is removed:
//!   its entries are dropped. Only its own entries name its path at the time they were
//!   recorded (nothing lies below a file, and nothing else stood at its path meanwhile).
//! - R3, create + remove of a directory: likewise, but only when no entry of another
//!   node was recorded inside it at any time. That is found by following the
//!   directory's path through the journal exactly as replay moves it: its own moves and
//!   the moves of its ancestors (`dir_held_others`). A child created under a name the
//!   directory had only through its parent's rename counts too. Otherwise nothing is
//!   dropped and a delete is recorded after its entries: replayed as recorded.
//! - R4, upload + rename of a file no entry of which was sent and that has only uploads
//!   waiting: the uploads are dropped and one upload under the new name goes to the end.
//!   The file was nowhere on the server in either journal until that upload; the new
//!   name's parent existed locally at the rename, so its creation is recorded earlier.
//!
//! - R5, metadata + metadata: a change of a node's mode, owner or times recorded while
//!   its last entry is a waiting `meta` adds nothing. A `meta` entry sends the node's
//!   metadata as it is when it runs, to the path its entry names, so the waiting one
//!   sends the newer metadata; nothing of the node comes after it that it could pass.
//!
//! `meta` entries (PROPPATCH of davdrive's dead properties: mode, owner, times, a
//! symlink's target) are recorded only where no upload or folder creation of the node
//! waits: an upload and a folder creation set the properties right after themselves, as
//! the node is then (`replay::meta`), and a meta entry is recorded only if that fails.
//! So a file no entry of which was sent never has one, and R2 and R4 stay as they are. A
//! removal drops the node's waiting `meta` entries: properties set on a resource that is
//! deleted next leave nothing (the same tree either way).
//!
//! Nothing else is rewritten: moves of directories, moves through directories removed
//! later, moves after uploads are replayed as recorded. An entry that was sent (running,
//! or attempted and cut off) is never dropped: a removal turns it into a delete of what
//! it may have left, in its place (R2 and R3 do this instead of dropping it).
//!
//! Scheduling is by dependency, over the whole journal (see `ready`).

pub mod replay;

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::store::{now_ms, Node};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    Mkcol,
    Delete,
    Move,
    /// PROPPATCH of the node's mode, owner and times (see R5).
    Meta,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Mkcol => "mkcol",
            Op::Delete => "delete",
            Op::Move => "move",
            Op::Meta => "meta",
        }
    }
    /// None for a string this davdrive does not know (a newer version's entry, or a
    /// damaged row): such an entry is never guessed at.
    pub fn parse(s: &str) -> Option<Op> {
        match s {
            "put" => Some(Op::Put),
            "mkcol" => Some(Op::Mkcol),
            "delete" => Some(Op::Delete),
            "move" => Some(Op::Move),
            "meta" => Some(Op::Meta),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub id: i64,
    pub op: Op,
    pub ino: u64,
    pub path: String,
    pub dest: Option<String>,
    pub is_dir: bool,
    pub created_at: i64,
    pub attempts: u32,
    pub next_try_at: i64,
    pub last_error: Option<String>,
    pub failed: bool,
    /// It was sent before (and cut off, or the daemon died): the remote may hold a
    /// partial result, e.g. a truncated upload.
    pub attempted: bool,
    /// For deletes of files: the version deleted here.
    pub base_etag: Option<String>,
}

impl Entry {
    /// The remote paths this entry changes.
    pub fn paths(&self) -> Vec<&str> {
        std::iter::once(self.path.as_str())
            .chain(self.dest.as_deref())
            .collect()
    }
}

const COLUMNS: &str =
    "id, op, ino, path, dest, is_dir, created_at, attempts, next_try_at, last_error, failed, attempted, \
     base_etag";

fn entry_from_row(r: &Row<'_>) -> rusqlite::Result<Entry> {
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

fn insert(
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

/// Records that the content of file `ino` (now at `path`) must be uploaded.
/// Returns false when a waiting upload of the same file already covers it.
pub fn record_put(c: &Connection, ino: u64, path: &str) -> rusqlite::Result<bool> {
    retry_failed_of(c, ino)?;
    let waiting: Option<i64> = c
        .prepare_cached(
            "SELECT id FROM journal WHERE op = 'put' AND ino = ?1 AND failed = 0 AND running = 0",
        )?
        .query_row([ino as i64], |r| r.get(0))
        .optional()?;
    if waiting.is_some() {
        return Ok(false);
    }
    insert(c, Op::Put, ino, path, None, false)?;
    Ok(true)
}

/// Records that the mode, owner or times of `node` (now at `path`) changed and must be
/// sent as dead properties. Returns whether an entry was added: not when a waiting
/// upload or folder creation of the node will send them (as they are then), not when
/// nothing of it is on the server yet (its upload will), and not when its last entry
/// is a waiting `meta` already (R5).
pub fn record_meta(c: &Connection, node: &Node, path: &str) -> rusqlite::Result<bool> {
    retry_failed_of(c, node.ino)?;
    let carried: bool = c
        .prepare_cached(
            "SELECT COUNT(*) > 0 FROM journal WHERE ino = ?1 AND op IN ('put', 'mkcol') \
             AND running = 0",
        )?
        .query_row([node.ino as i64], |r| r.get(0))?;
    if carried || (!node.on_remote && !any_running(c, node.ino)?) {
        return Ok(false);
    }
    let last: Option<(String, i64)> = c
        .prepare_cached("SELECT op, running FROM journal WHERE ino = ?1 ORDER BY id DESC LIMIT 1")?
        .query_row([node.ino as i64], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if matches!(&last, Some((op, 0)) if op == Op::Meta.as_str()) {
        return Ok(false);
    }
    insert(c, Op::Meta, node.ino, path, None, node.is_dir())?;
    Ok(true)
}

pub fn record_mkcol(c: &Connection, ino: u64, path: &str) -> rusqlite::Result<()> {
    insert(c, Op::Mkcol, ino, path, None, true).map(|_| ())
}

fn any_running(c: &Connection, ino: u64) -> rusqlite::Result<bool> {
    c.prepare_cached("SELECT 1 FROM journal WHERE ino = ?1 AND running = 1 LIMIT 1")?
        .query_row([ino as i64], |_| Ok(()))
        .optional()
        .map(|o| o.is_some())
}

/// Whether an entry of `ino` is being sent, or was sent before: then the remote may
/// already hold something of it, and its entries cannot simply be forgotten.
fn any_sent(c: &Connection, ino: u64) -> rusqlite::Result<bool> {
    c.prepare_cached(
        "SELECT 1 FROM journal WHERE ino = ?1 AND (running = 1 OR attempted = 1) LIMIT 1",
    )?
    .query_row([ino as i64], |_| Ok(()))
    .optional()
    .map(|o| o.is_some())
}

/// Whether `p` is `dir` or lies below it.
pub fn at_or_under(p: &str, dir: &str) -> bool {
    p == dir
        || dir == "/"
        || (p.len() > dir.len() && p.starts_with(dir) && p.as_bytes()[dir.len()] == b'/')
}

/// Rule R3's test: whether an entry of another node was recorded inside directory `ino`
/// while its entries wait. Follows the directory's path from its first waiting entry
/// as replay would move it: by its own moves, and by moves of a directory above it.
fn dir_held_others(c: &Connection, ino: u64) -> rusqlite::Result<bool> {
    let first: Option<(i64, String)> = c
        .prepare_cached("SELECT id, path FROM journal WHERE ino = ?1 ORDER BY id LIMIT 1")?
        .query_row([ino as i64], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((first_id, mut cur)) = first else {
        return Ok(false);
    };
    let mut st =
        c.prepare_cached("SELECT ino, op, path, dest FROM journal WHERE id >= ?1 ORDER BY id")?;
    let mut rows = st.query([first_id])?;
    while let Some(r) = rows.next()? {
        let (other, op, path, dest): (i64, String, String, Option<String>) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
        let is_move = op == Op::Move.as_str();
        if other as u64 == ino {
            if let (true, Some(d)) = (is_move, dest) {
                cur = d;
            }
            continue;
        }
        if at_or_under(&path, &cur) || dest.as_deref().is_some_and(|d| at_or_under(d, &cur)) {
            return Ok(true);
        }
        // A directory above it moved: so did it.
        if let (true, Some(d)) = (is_move, dest) {
            if at_or_under(&cur, &path) {
                cur = format!("{d}{}", &cur[path.len()..]);
            }
        }
    }
    Ok(false)
}

/// A new change of node `ino` is the signal to try its set-aside entries again: the
/// next upload of a file stuck behind a refusal should not wait for an administrator.
fn retry_failed_of(c: &Connection, ino: u64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE journal SET failed = 0, attempts = 0, next_try_at = 0 \
         WHERE ino = ?1 AND failed = 1",
    )?
    .execute([ino as i64])?;
    Ok(())
}

fn drop_entries_of(c: &Connection, ino: u64) -> rusqlite::Result<usize> {
    // Only called when nothing of `ino` was ever sent.
    c.prepare_cached("DELETE FROM journal WHERE ino = ?1 AND running = 0")?
        .execute([ino as i64])
}

fn drop_waiting_puts(c: &Connection, ino: u64) -> rusqlite::Result<usize> {
    // Parts an earlier attempt sent sit in a scratch file on the server: its removal
    // takes the upload's place, so nothing of it stays there.
    let scratches: Vec<String> = c
        .prepare_cached(
            "SELECT path FROM journal WHERE ino = ?1 AND op = 'put' AND running = 0 \
             AND part_bytes > 0",
        )?
        .query_map([ino as i64], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for path in scratches {
        record_scratch_removal(c, ino, &scratch_path(&path, ino))?;
    }
    c.prepare_cached("DELETE FROM journal WHERE ino = ?1 AND op = 'put' AND running = 0")?
        .execute([ino as i64])
}

/// The scratch file parts of an upload of `path` (node `ino`) go to, beside the target.
pub fn scratch_path(path: &str, ino: u64) -> String {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    format!("{dir}/.{name}.davdrive-part-{ino}")
}

/// A server-side copy of the base version of node `ino` (at `path`), beside it: the
/// ranges of a partial update are written into it before it replaces the file. Each
/// copy has a name of its own (`nonce`): the queued removal of an earlier one must not
/// take a newer one.
pub fn base_copy_path(path: &str, ino: u64, nonce: u64) -> String {
    format!("{}.base{nonce}", scratch_path(path, ino))
}

/// `journal.sending` of an upload that sends the whole file (what was written is not
/// known): not a range map (those are multiples of 16 bytes).
const SENDING_WHOLE: &[u8] = b"whole";

/// Takes the ranges written in `ino` into upload entry `id`, which sends them (with
/// those an earlier attempt took); the node starts a new set, so writes landing while
/// the upload runs are sent by the next one. `None` when what was written is not known:
/// the file is sent whole, by this attempt and every later one of this entry (the
/// node's writes are tracked from now on, for the next upload).
pub fn take_written(
    c: &Connection,
    id: i64,
    ino: u64,
) -> rusqlite::Result<Option<crate::store::RangeSet>> {
    use crate::store::RangeSet;
    let tx = c.unchecked_transaction()?;
    let written: Option<Option<Vec<u8>>> = tx
        .prepare_cached("SELECT written FROM nodes WHERE ino = ?1")?
        .query_row([ino as i64], |r| r.get(0))
        .optional()?;
    let sending: Option<Vec<u8>> = tx
        .prepare_cached("SELECT sending FROM journal WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?
        .flatten();
    let taken = match (written.flatten(), sending) {
        (_, Some(s)) if s == SENDING_WHOLE => None,
        (Some(w), sending) => {
            let mut all = sending.map(|b| RangeSet::decode(&b)).unwrap_or_default();
            all.union(&RangeSet::decode(&w));
            Some(all)
        }
        (None, _) => None,
    };
    let stored = match &taken {
        Some(t) => t.encode(),
        None => SENDING_WHOLE.to_vec(),
    };
    tx.prepare_cached("UPDATE journal SET sending = ?2 WHERE id = ?1")?
        .execute(params![id, stored])?;
    tx.prepare_cached("UPDATE nodes SET written = X'' WHERE ino = ?1")?
        .execute([ino as i64])?;
    tx.commit()?;
    Ok(taken)
}

/// The written ranges upload entry `id` took (see `take_written`), if any.
pub fn sending(c: &Connection, id: i64) -> rusqlite::Result<Option<crate::store::RangeSet>> {
    let blob: Option<Vec<u8>> = c
        .prepare_cached("SELECT sending FROM journal WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(blob
        .filter(|b| b != SENDING_WHOLE)
        .map(|b| crate::store::RangeSet::decode(&b)))
}

/// Queues the removal of an upload's scratch file. The name is ours alone (hidden, with
/// the inode number), so whatever file is there goes: the empty base says so.
pub fn record_scratch_removal(c: &Connection, ino: u64, scratch: &str) -> rusqlite::Result<()> {
    let id = insert(c, Op::Delete, ino, scratch, None, false)?;
    c.prepare_cached("UPDATE journal SET base_etag = '' WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

/// Records the removal of `node` (unlink or rmdir) from `path`.
pub fn record_remove(c: &Connection, node: &Node, path: &str) -> rusqlite::Result<()> {
    // Other entries naming paths below matter only for a directory (its children's
    // entries need it to exist); a file's entries are its own.
    let others_need_it = node.is_dir() && dir_held_others(c, node.ino)?;
    retry_failed_of(c, node.ino)?;
    if !node.on_remote && !any_running(c, node.ino)? && !others_need_it {
        // The remote never saw it, as far as we know: forgetting its entries is the whole
        // removal. But an upload, mkcol or move that was sent before (cut off, or the daemon
        // died before recording its success) may have left something; it becomes a
        // delete of what it could have left, in its place in the order. It keeps the
        // hashes of what was sent, so it deletes only a version of ours.
        c.prepare_cached(
            "UPDATE journal SET op = 'delete', path = COALESCE(dest, path), dest = NULL, \
             attempted = 0, failed = 0, attempts = 0, next_try_at = 0, last_error = NULL \
             WHERE ino = ?1 AND attempted = 1 AND op IN ('put', 'move', 'mkcol')",
        )?
        .execute([node.ino as i64])?;
        c.prepare_cached("DELETE FROM journal WHERE ino = ?1 AND op != 'delete'")?
            .execute([node.ino as i64])?;
        return Ok(());
    }
    // Versions of ours the remote may hold: the base and whatever uploads sent. A delete
    // finding one of them on the remote (under an ETag we never learned, because the
    // daemon died first) is deleting our own version, not somebody else's.
    let ours: String = c
        .prepare_cached(
            "SELECT trim(COALESCE(group_concat(sent_sha256, ' '), '') || ' ' || COALESCE(?2, ''))              FROM journal WHERE ino = ?1",
        )?
        .query_row(params![node.ino as i64, node.sha256], |r| r.get(0))?;
    // Waiting uploads of content that is going away would only be deleted again, and
    // properties set on it would go with it.
    drop_waiting_puts(c, node.ino)?;
    c.prepare_cached("DELETE FROM journal WHERE ino = ?1 AND op = 'meta' AND running = 0")?
        .execute([node.ino as i64])?;
    let id = insert(c, Op::Delete, node.ino, path, None, node.is_dir())?;
    c.prepare_cached("UPDATE journal SET sent_sha256 = ?2 WHERE id = ?1")?
        .execute(params![id, ours])?;
    // A file is deleted on the remote only if it is still the version we knew (a weak
    // ETag is checked by asking first: it never passes If-Match). A file on the remote
    // without any ETag (a server that gives none) has the empty base: whatever file is
    // there is taken for it. No base at all means no version of ours was ever known
    // there, so only one an upload sent may be deleted (see `replay::delete`).
    let base = (!node.is_dir() && node.on_remote).then(|| node.etag.as_deref().unwrap_or(""));
    if let Some(tag) = base {
        c.prepare_cached("UPDATE journal SET base_etag = ?2 WHERE id = ?1")?
            .execute(params![id, tag])?;
    }
    Ok(())
}

/// Records the rename of `node` from `from` to `to`. A node already at `to` must have been
/// removed with `record_remove` first.
pub fn record_rename(c: &Connection, node: &Node, from: &str, to: &str) -> rusqlite::Result<()> {
    retry_failed_of(c, node.ino)?;
    if !node.is_dir() && !node.on_remote && !any_sent(c, node.ino)? {
        let only_puts: bool = c
            .prepare_cached("SELECT COUNT(*) = 0 FROM journal WHERE ino = ?1 AND op != 'put'")?
            .query_row([node.ino as i64], |r| r.get(0))?;
        if only_puts {
            // Nothing was sent yet: upload it once, under its new name, after whatever
            // the new name depends on (its parent's creation may come later than the old
            // upload's place in the journal).
            if drop_entries_of(c, node.ino)? > 0 {
                insert(c, Op::Put, node.ino, to, None, false)?;
            }
            return Ok(());
        }
    }
    insert(c, Op::Move, node.ino, from, Some(to), node.is_dir()).map(|_| ())
}

/// Entries that may start now, in order, at most `limit`: due, not running, not set
/// aside, and not depending on an earlier entry that is unfinished. The whole journal is
/// considered (no window): one stuck entry cannot hide the rest.
///
/// An entry depends on an earlier one of the same node, or, while that earlier one still
/// waits or runs, on one whose path (or destination) is the same as, inside, or above its
/// own: a file's parent is created before the file, a rename waits for the upload it
/// moves, a folder's delete waits for changes inside it. An entry set aside as failed
/// holds back only later entries of its node and at or below its paths: those could only
/// fail the same way, while a folder above it may still be renamed or removed.
pub fn ready(
    c: &Connection,
    running: &std::collections::HashSet<i64>,
    limit: usize,
    now_ms: i64,
) -> rusqlite::Result<Vec<Entry>> {
    let mut held = Held::default();
    let mut out = Vec::new();
    let mut st = c.prepare_cached(&format!("SELECT {COLUMNS} FROM journal ORDER BY id"))?;
    let mut rows = st.query([])?;
    while let Some(row) = rows.next()? {
        if out.len() >= limit {
            break;
        }
        let e = entry_from_row(row)?;
        let startable = !e.failed && !running.contains(&e.id) && e.next_try_at <= now_ms;
        if startable && !held.holds(&e) {
            out.push(e.clone());
        }
        held.add(&e);
    }
    Ok(out)
}

/// What the unfinished entries seen so far hold back (see `ready`). Lookups walk a
/// path's ancestors, so a scan of the journal costs its length times the path depth.
#[derive(Default)]
struct Held {
    inos: std::collections::HashSet<u64>,
    /// Paths named by waiting or running entries.
    paths: std::collections::HashSet<String>,
    /// Every directory above such a path.
    above: std::collections::HashSet<String>,
    /// Paths named by entries set aside as failed.
    failed: std::collections::HashSet<String>,
}

/// The directories above `p`, nearest first, without the root.
pub fn ancestors(p: &str) -> impl Iterator<Item = &str> {
    let mut cur = p;
    std::iter::from_fn(move || {
        let i = cur.rfind('/')?;
        cur = &cur[..i];
        (!cur.is_empty()).then_some(cur)
    })
}

impl Held {
    fn add(&mut self, e: &Entry) {
        self.inos.insert(e.ino);
        for p in std::iter::once(e.path.as_str()).chain(e.dest.as_deref()) {
            if e.failed {
                self.failed.insert(p.to_string());
                continue;
            }
            self.paths.insert(p.to_string());
            for a in ancestors(p) {
                if !self.above.insert(a.to_string()) {
                    break; // its ancestors are in already
                }
            }
        }
    }

    fn holds(&self, e: &Entry) -> bool {
        if self.inos.contains(&e.ino) {
            return true;
        }
        std::iter::once(e.path.as_str())
            .chain(e.dest.as_deref())
            .any(|p| {
                self.paths.contains(p)
                    || self.above.contains(p)
                    || self.failed.contains(p)
                    || ancestors(p).any(|a| self.paths.contains(a) || self.failed.contains(a))
            })
    }
}

/// `ready`, and marks what it returns as running, in one step under the caller's lock:
/// a change recorded meanwhile (which may rewrite or drop entries that are not running)
/// cannot slip in between choosing an entry and starting it.
pub fn start_ready(
    c: &Connection,
    running: &std::collections::HashSet<i64>,
    limit: usize,
    now_ms: i64,
) -> rusqlite::Result<Vec<Entry>> {
    let tx = c.unchecked_transaction()?;
    let chosen = ready(&tx, running, limit, now_ms)?;
    for e in &chosen {
        set_running(&tx, e.id, true)?;
    }
    tx.commit()?;
    Ok(chosen)
}

/// Whether the remote's view of `path` (or of node `ino`) is still to change by waiting
/// entries: one of the node, or naming the path or a directory above it.
pub fn path_pending(c: &Connection, path: &str, ino: u64) -> rusqlite::Result<bool> {
    let of_node: bool = c
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM journal WHERE ino = ?1)")?
        .query_row([ino as i64], |r| r.get(0))?;
    if of_node {
        return Ok(true);
    }
    // The path and each folder above it, each an index lookup on `path` and `dest`.
    let mut st =
        c.prepare_cached("SELECT EXISTS(SELECT 1 FROM journal WHERE path = ?1 OR dest = ?1)")?;
    for p in std::iter::once(path).chain(ancestors(path)) {
        if p != "/" && st.query_row([p], |r| r.get::<_, bool>(0))? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Where the server holds what is at `path` here: renames of it or of a folder above it
/// that still wait in the journal are undone, latest first. (A rename being replayed
/// right now may already be on the server; a reader that finds nothing at the old path
/// tries the new one.)
pub fn remote_path_of(c: &Connection, path: &str) -> rusqlite::Result<String> {
    Ok(path_chain(c, path)?
        .pop()
        .unwrap_or_else(|| path.to_string()))
}

/// Every name `path` had through the renames that still wait, from `path` here back to
/// where the server has it (`remote_path_of`): waiting entries name it by any of them.
pub fn path_chain(c: &Connection, path: &str) -> rusqlite::Result<Vec<String>> {
    let mut chain = vec![path.to_string()];
    let mut st = c.prepare_cached(
        "SELECT id, path FROM journal WHERE dest = ?1 AND op = 'move' AND id < ?2 \
         ORDER BY id DESC LIMIT 1",
    )?;
    let mut current = path.to_string();
    let mut before = i64::MAX;
    loop {
        // The latest waiting move (before the one undone last) that named this path or a
        // folder above it as its destination.
        let mut latest: Option<(i64, String, usize)> = None;
        for p in std::iter::once(current.as_str()).chain(ancestors(&current)) {
            if let Some((id, from)) = st
                .query_row(params![p, before], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .optional()?
            {
                if latest.as_ref().is_none_or(|l| id > l.0) {
                    latest = Some((id, from, p.len()));
                }
            }
        }
        let Some((id, from, dest_len)) = latest else {
            return Ok(chain);
        };
        current = format!("{from}{}", &current[dest_len..]);
        chain.push(current.clone());
        before = id;
    }
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
    c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM journal WHERE ino = ?1 AND id > ?2 AND op = 'delete' \
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
    c.execute("UPDATE journal SET running = 0 WHERE running != 0", [])?;
    Ok(())
}

/// Entries waiting out a backoff become due now (the remote just came back).
pub fn retry_waiting_now(c: &Connection) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE journal SET next_try_at = 0 WHERE failed = 0 AND next_try_at > 0",
        [],
    )?;
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
/// (the empty base when the server gave it no ETag: it is ours all the same).
pub fn rebase_deletes(c: &Connection, ino: u64, etag: Option<&str>) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE journal SET base_etag = COALESCE(?2, '') \
         WHERE ino = ?1 AND op = 'delete' AND running = 0",
    )?
    .execute(params![ino as i64, etag])?;
    Ok(())
}

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

/// Points waiting entries at or below `from` to the same places below `to` (a folder
/// moved aside on the server because something else took its name there).
pub fn rewrite_prefix(c: &Connection, from: &str, to: &str) -> rusqlite::Result<usize> {
    // Below `from`: the range [from + '/', from + '0'), answered by the path indexes.
    let (below, end) = (format!("{from}/"), format!("{from}0"));
    let n = c
        .prepare_cached(
            "UPDATE journal SET path = ?2 || substr(path, length(?1) + 1) \
             WHERE path = ?1 OR (path >= ?3 AND path < ?4)",
        )?
        .execute(params![from, to, below, end])?;
    c.prepare_cached(
        "UPDATE journal SET dest = ?2 || substr(dest, length(?1) + 1) \
         WHERE dest = ?1 OR (dest >= ?3 AND dest < ?4)",
    )?
    .execute(params![from, to, below, end])?;
    Ok(n)
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

pub fn part_progress(c: &Connection, id: i64) -> rusqlite::Result<(Option<String>, u64)> {
    c.prepare_cached("SELECT part_version, part_bytes FROM journal WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
        .optional()
        .map(|o| o.unwrap_or((None, 0)))
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

/// Names (first path segment below `dir_path`) that waiting entries are about to change on
/// the remote; a listing of `dir_path` must not overrule the local view of those.
pub fn names_pending_under(c: &Connection, dir_path: &str) -> rusqlite::Result<Vec<String>> {
    let base = if dir_path == "/" {
        String::from("/")
    } else {
        format!("{dir_path}/")
    };
    // Every path starting with `base`: the range [base, base with its '/' raised to '0'),
    // which an index on `path` and one on `dest` answer.
    let end = format!("{}0", &base[..base.len() - 1]);
    let mut st = c.prepare_cached(
        "SELECT path, dest FROM journal WHERE (path >= ?1 AND path < ?2) \
         OR (dest >= ?1 AND dest < ?2)",
    )?;
    let rows = st.query_map([&base, &end], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
    })?;
    let mut names = Vec::new();
    for row in rows {
        let (p, d) = row?;
        for full in std::iter::once(p).chain(d) {
            if let Some(rest) = full.strip_prefix(&base) {
                if let Some(first) = rest.split('/').next() {
                    if !first.is_empty() {
                        names.push(first.to_string());
                    }
                }
            }
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// Counts for the status: waiting entries, failed ones, and the oldest's creation time.
pub fn stats(c: &Connection) -> rusqlite::Result<(u64, u64, Option<i64>)> {
    c.query_row(
        "SELECT COALESCE(SUM(failed = 0), 0), COALESCE(SUM(failed = 1), 0), MIN(created_at) FROM journal",
        [],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get(2)?)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn store_with(entries: &[(Op, u64, &str, Option<&str>)]) -> Connection {
        let c = Connection::open_in_memory().unwrap();
        crate::store::schema::migrate(&c).unwrap();
        for (op, ino, path, dest) in entries {
            insert(&c, *op, *ino, path, *dest, false).unwrap();
        }
        c
    }

    fn paths(v: &[Entry]) -> Vec<&str> {
        v.iter().map(|e| e.path.as_str()).collect()
    }

    fn node(ino: u64, on_remote: bool, kind: crate::store::Kind) -> Node {
        Node {
            ino,
            parent: 1,
            name: format!("n{ino}"),
            kind,
            size: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            mode: 0o644,
            uid: 0,
            gid: 0,
            etag: on_remote.then(|| "\"e\"".to_string()),
            on_remote,
            dirty: false,
            ranges: Default::default(),
            pinned: false,
            last_access: 0,
            sha256: None,
            listed_at: None,
            cached_bytes: 0,
            content_etag: None,
            remote_checksum: None,
            atime_ns: None,
            link_target: None,
            written: None,
            base_size: None,
            base_copy: None,
        }
    }

    fn ops_of(c: &Connection, ino: u64) -> Vec<String> {
        c.prepare("SELECT op FROM journal WHERE ino = ?1 ORDER BY id")
            .unwrap()
            .query_map([ino as i64], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn metadata_changes_coalesce_and_ride_on_waiting_uploads() {
        use crate::store::Kind;
        let c = store_with(&[]);
        let f = node(2, true, Kind::File);
        // R5: a second change while the first waits adds nothing.
        assert!(record_meta(&c, &f, "/n2").unwrap());
        assert!(!record_meta(&c, &f, "/n2").unwrap());
        assert_eq!(ops_of(&c, 2), ["meta"]);
        // After an upload recorded since, the waiting upload sends them (it runs after
        // the change): nothing is added.
        record_put(&c, 2, "/n2").unwrap();
        assert!(!record_meta(&c, &f, "/n2").unwrap());
        assert_eq!(ops_of(&c, 2), ["meta", "put"]);
        // A running upload may have sent them already: a new entry follows it.
        c.execute("UPDATE journal SET running = 1 WHERE op = 'put'", [])
            .unwrap();
        assert!(record_meta(&c, &f, "/n2").unwrap());
        assert_eq!(ops_of(&c, 2), ["meta", "put", "meta"]);
        // A removal drops the waiting ones: properties of a deleted resource are moot.
        record_remove(&c, &f, "/n2").unwrap();
        assert_eq!(ops_of(&c, 2), ["put", "delete"]);

        // A file the server never had gets none: its first upload sends them. R4 (an
        // upload renamed before it was sent) still applies.
        let g = node(3, false, Kind::File);
        assert!(!record_meta(&c, &g, "/n3").unwrap());
        record_put(&c, 3, "/n3").unwrap();
        assert!(!record_meta(&c, &g, "/n3").unwrap());
        record_rename(&c, &g, "/n3", "/m3").unwrap();
        let rows: Vec<(String, String)> = c
            .prepare("SELECT op, path FROM journal WHERE ino = 3")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, [("put".to_string(), "/m3".to_string())]);

        // A folder waiting for its creation: the creation sends them.
        let d = node(4, false, Kind::Dir);
        record_mkcol(&c, 4, "/n4").unwrap();
        assert!(!record_meta(&c, &d, "/n4").unwrap());
        assert_eq!(ops_of(&c, 4), ["mkcol"]);
    }

    /// An upload takes the written ranges (its own and earlier attempts'), the node
    /// starts a new set; an upload that found them unknown stays whole for good.
    #[test]
    fn uploads_take_the_written_ranges_and_a_whole_upload_stays_whole() {
        use crate::store::{self, RangeSet};
        let c = store_with(&[]);
        let new = |on_remote: bool| {
            store::insert_node(
                &c,
                &store::NewNode {
                    parent: 1,
                    name: if on_remote { "theirs" } else { "ours" },
                    kind: crate::store::Kind::File,
                    size: 100,
                    mtime_ns: 0,
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    etag: Some("\"e\""),
                    on_remote,
                    dirty: true,
                    ranges: RangeSet::full(100),
                    listed_at: None,
                    last_access: 0,
                },
            )
            .unwrap()
        };
        let span = |a, b| {
            let mut r = RangeSet::default();
            r.insert(a, b);
            r
        };
        let tracked = new(true);
        record_put(&c, tracked, "/theirs").unwrap();
        let id = c.last_insert_rowid();
        store::note_written(&c, tracked, &span(0, 10), 100).unwrap();
        assert_eq!(take_written(&c, id, tracked).unwrap(), Some(span(0, 10)));
        assert_eq!(
            store::get_node(&c, tracked).unwrap().unwrap().written,
            Some(RangeSet::default())
        );
        // A second attempt sends what the first took, and what was written since.
        store::note_written(&c, tracked, &span(50, 60), 100).unwrap();
        let mut both = span(0, 10);
        both.insert(50, 60);
        assert_eq!(take_written(&c, id, tracked).unwrap(), Some(both.clone()));
        assert_eq!(sending(&c, id).unwrap(), Some(both));

        // Unknown (a crash, or a file made here): whole, on every attempt, even once
        // writes made since are tracked again.
        let unknown = new(false);
        record_put(&c, unknown, "/ours").unwrap();
        let id = c.last_insert_rowid();
        assert_eq!(take_written(&c, id, unknown).unwrap(), None);
        store::note_written(&c, unknown, &span(0, 5), 100).unwrap();
        assert_eq!(take_written(&c, id, unknown).unwrap(), None);
        assert_eq!(sending(&c, id).unwrap(), None);
        assert_eq!(
            store::get_node(&c, unknown).unwrap().unwrap().written,
            Some(RangeSet::default())
        );
    }

    #[test]
    fn metadata_entries_are_scheduled_like_any_other() {
        let c = store_with(&[
            (Op::Mkcol, 1, "/d", None),
            (Op::Meta, 2, "/d/f", None),
            (Op::Put, 3, "/g", None),
            (Op::Meta, 3, "/g", None),
            (Op::Meta, 4, "/h", None),
            (Op::Move, 5, "/h", Some("/i")),
        ]);
        let none = HashSet::new();
        // /d/f waits for its folder, the second entry of /g for its upload, the move over
        // /h for the properties set there first.
        assert_eq!(
            paths(&ready(&c, &none, 10, i64::MAX).unwrap()),
            ["/d", "/g", "/h"]
        );
    }

    #[test]
    fn independent_entries_run_together_and_dependent_ones_wait() {
        let c = store_with(&[
            (Op::Mkcol, 1, "/photos", None),
            (Op::Put, 2, "/photos/a.jpg", None),
            (Op::Put, 3, "/notes.txt", None),
            (Op::Put, 4, "/photo", None),
            (Op::Move, 3, "/notes.txt", Some("/old/notes.txt")),
            (Op::Put, 5, "/music/b.mp3", None),
            (Op::Delete, 6, "/music", None),
        ]);
        let none = HashSet::new();
        let r = ready(&c, &none, 10, i64::MAX).unwrap();
        // The file in /photos waits for /photos ("/photo" is not inside it); the move
        // waits for the upload it renames; the delete of /music waits for the file in it.
        assert_eq!(
            paths(&r),
            ["/photos", "/notes.txt", "/photo", "/music/b.mp3"]
        );
        // With the first three running, only the rest may start, within the limit.
        let running: HashSet<i64> = r.iter().take(3).map(|e| e.id).collect();
        let r2 = ready(&c, &running, 1, i64::MAX).unwrap();
        assert_eq!(paths(&r2), ["/music/b.mp3"]);
    }

    #[test]
    fn a_failed_entry_holds_what_depends_on_it_until_retried() {
        let c = store_with(&[
            (Op::Mkcol, 1, "/new", None),
            (Op::Put, 2, "/new/x", None),
            (Op::Put, 3, "/other", None),
        ]);
        record_failure(&c, 1, "HTTP 403", 0, true).unwrap();
        let r = ready(&c, &HashSet::new(), 10, 1000).unwrap();
        assert_eq!(paths(&r), ["/other"]);
        retry(&c, Some(1)).unwrap();
        let r = ready(&c, &HashSet::new(), 10, 1000).unwrap();
        assert_eq!(paths(&r), ["/new", "/other"]);
    }

    #[test]
    fn an_entry_waiting_for_a_retry_holds_only_what_depends_on_it() {
        let c = store_with(&[
            (Op::Put, 1, "/a/x", None),
            (Op::Put, 2, "/b", None),
            (Op::Move, 1, "/a/x", Some("/a/y")),
        ]);
        record_failure(&c, 1, "HTTP 500", i64::MAX - 1, false).unwrap();
        let r = ready(&c, &HashSet::new(), 10, 1000).unwrap();
        assert_eq!(paths(&r), ["/b"]);
    }
}
