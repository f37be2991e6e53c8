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
//!
//! Over 600 lines with its unit tests (the code is about 500): the coalescing rules and
//! the scheduling (`ready`) read against each other, so they stay together.

pub mod replay;

use rusqlite::{Connection, Transaction};

use crate::store::journal as rows;
use crate::store::Node;

pub use crate::store::conflicts::{record_conflict, record_conflict_because, settled_by_rename};
pub use crate::store::journal::{
    add_sent_hash, anything_running, follow_file_aside, forget_scratches_under, get,
    has_pending_put, head, is_running, later_delete_of, list, move_scratches, next_retry_at,
    part_progress, rebase_deletes, record_failure, reset_running, retry, retry_waiting_now,
    rewrite_prefix, scratch_of, sent_hashes, set_part_progress, set_running, set_scratch, stats,
};
use crate::store::journal::{any_running, any_sent, drop_entries_of, insert, retry_failed_of};

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

/// Records that the content of file `ino` (now at `path`) must be uploaded.
/// Returns false when a waiting upload of the same file already covers it.
pub fn record_put(c: &Connection, ino: u64, path: &str) -> rusqlite::Result<bool> {
    retry_failed_of(c, ino)?;
    if rows::waiting_put(c, ino)?.is_some() {
        return Ok(false);
    }
    insert(c, Op::Put, ino, path, None, false)?;
    Ok(true)
}

/// Queues the upload of file `ino` (at `path`) while it is still being written, so its
/// parts go early (see `fs::early_parts`): only when no entry of it waits at all (the
/// upload must come after everything else of it). The commit of its writes then adds
/// no entry of its own (see `put_still_due`). Returns the entry's id.
pub fn start_put_while_written(
    c: &Connection,
    ino: u64,
    path: &str,
) -> rusqlite::Result<Option<i64>> {
    if rows::any_of(c, ino)? {
        return Ok(None);
    }
    insert(c, Op::Put, ino, path, None, false).map(Some)
}

pub use crate::store::journal::{park, raise_part_bytes, wake, Aside};

/// The local version a scratch file's parts belong to (see `part_version_of`).
pub fn part_version(node: &Node) -> String {
    rows::part_version_of(node.size, node.mtime_ns, node.ctime_ns)
}

/// Whether upload entry `id` will still send its file: it is there and not set aside.
pub fn put_still_due(c: &Connection, id: i64) -> rusqlite::Result<bool> {
    rows::put_due(c, id)
}

/// Records that the mode, owner or times of `node` (now at `path`) changed and must be
/// sent as dead properties. Returns whether an entry was added: not when a waiting
/// upload or folder creation of the node will send them (as they are then), not when
/// nothing of it is on the server yet (its upload will), and not when its last entry
/// is a waiting `meta` already (R5).
pub fn record_meta(c: &Connection, node: &Node, path: &str) -> rusqlite::Result<bool> {
    retry_failed_of(c, node.ino)?;
    let carried = rows::put_or_mkcol_waits(c, node.ino)?;
    if carried || (!node.on_remote && !any_running(c, node.ino)?) {
        return Ok(false);
    }
    let last = rows::last_of(c, node.ino)?;
    if matches!(&last, Some((op, 0)) if op == Op::Meta.as_str()) {
        return Ok(false);
    }
    insert(c, Op::Meta, node.ino, path, None, node.is_dir())?;
    Ok(true)
}

pub fn record_mkcol(c: &Connection, ino: u64, path: &str) -> rusqlite::Result<()> {
    insert(c, Op::Mkcol, ino, path, None, true).map(|_| ())
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
    let Some((first_id, mut cur)) = rows::first_of(c, ino)? else {
        return Ok(false);
    };
    rows::scan_from(c, first_id, |other, op, path, dest| {
        let is_move = op == Op::Move.as_str();
        if other == ino {
            if let (true, Some(d)) = (is_move, dest) {
                cur = d;
            }
            return false;
        }
        if at_or_under(&path, &cur) || dest.as_deref().is_some_and(|d| at_or_under(d, &cur)) {
            return true;
        }
        // A directory above it moved: so did it.
        if let (true, Some(d)) = (is_move, dest) {
            if at_or_under(&cur, &path) {
                cur = format!("{d}{}", &cur[path.len()..]);
            }
        }
        false
    })
}

fn drop_waiting_puts(c: &Connection, ino: u64) -> rusqlite::Result<usize> {
    // Parts an earlier attempt sent sit in a scratch file on the server: its removal
    // takes the upload's place, so nothing of it stays there.
    for scratch in rows::waiting_put_scratches(c, ino, 0)? {
        record_scratch_removal(c, ino, &scratch)?;
    }
    rows::delete_waiting_puts(c, ino)
}

/// Ends entry `id`. Parts it sent that are still in a scratch file on the server (it
/// ended some other way than moving them over its file: a partial update, a conflict,
/// a removal, an administrator's drop) go by an entry of their own.
pub fn complete(c: &Connection, id: i64) -> rusqlite::Result<()> {
    if let Some((ino, scratch)) = rows::scratch_of(c, id)? {
        record_scratch_removal(c, ino, &scratch)?;
    }
    rows::complete(c, id)
}

/// Forgets every entry of `ino`, queueing the removal of the scratch files they sent
/// parts to.
pub fn delete_all_of(c: &Connection, ino: u64) -> rusqlite::Result<usize> {
    let scratches = rows::scratches_of(c, ino)?;
    let n = rows::delete_all_of(c, ino)?;
    for scratch in scratches {
        record_scratch_removal(c, ino, &scratch)?;
    }
    Ok(n)
}

/// Hands the waiting uploads of `ino` but entry `except` to the conflict copy `to`
/// (see `store::journal::hand_puts_to`). Dropped ones leave their scratch files to
/// queued removals; handed ones keep them named, and the copy's next part upload,
/// sending to a scratch file of its own name, removes them first.
pub fn hand_puts_to(
    c: &Connection,
    ino: u64,
    except: i64,
    to: Option<(u64, &str)>,
) -> rusqlite::Result<usize> {
    if to.is_none() {
        for scratch in rows::waiting_put_scratches(c, ino, except)? {
            record_scratch_removal(c, ino, &scratch)?;
        }
    }
    rows::hand_puts_to(c, ino, except, to)
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
/// node's writes are tracked from now on, for the next upload). In the caller's
/// transaction: the taking and the restart are one step.
pub fn take_written(
    tx: &Transaction<'_>,
    id: i64,
    ino: u64,
) -> rusqlite::Result<Option<crate::store::RangeSet>> {
    use crate::store::RangeSet;
    let written = crate::store::written_blob(tx, ino)?;
    let sending = rows::sending_blob(tx, id)?;
    let taken = match (written, sending) {
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
    rows::set_sending(tx, id, &stored)?;
    crate::store::restart_written(tx, ino)?;
    Ok(taken)
}

/// The written ranges upload entry `id` took (see `take_written`), if any.
pub fn sending(c: &Connection, id: i64) -> rusqlite::Result<Option<crate::store::RangeSet>> {
    Ok(rows::sending_blob(c, id)?
        .filter(|b| b != SENDING_WHOLE)
        .map(|b| crate::store::RangeSet::decode(&b)))
}

/// Queues the removal of an upload's scratch file (or a base copy), named `scratch` as
/// the server has it now. The name is ours alone (hidden, with the inode number), so
/// whatever file is there goes: the empty base says so. The removal runs after every
/// entry waiting now, so it names the file where the folder moves among them will have
/// carried it (a scratch file moves with its folder, never with its file).
pub fn record_scratch_removal(c: &Connection, ino: u64, scratch: &str) -> rusqlite::Result<()> {
    let there = path_after_folder_moves(c, scratch)?;
    let id = insert(c, Op::Delete, ino, &there, None, false)?;
    rows::set_base_etag(c, id, "")
}

/// Where `path` (as the server has it now) will be once the folder moves waiting in the
/// journal are replayed, in their order: the reverse of `path_chain`.
fn path_after_folder_moves(c: &Connection, path: &str) -> rusqlite::Result<String> {
    let mut current = path.to_string();
    let mut after = 0;
    loop {
        // The first waiting move (after the one applied last) of a folder above it.
        let mut first: Option<(i64, String, usize)> = None;
        for p in ancestors(&current) {
            if let Some((id, dest)) = rows::first_folder_move_from(c, p, after)? {
                if first.as_ref().is_none_or(|f| id < f.0) {
                    first = Some((id, dest, p.len()));
                }
            }
        }
        let Some((id, dest, from_len)) = first else {
            return Ok(current);
        };
        current = format!("{dest}{}", &current[from_len..]);
        after = id;
    }
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
        rows::sent_entries_become_deletes(c, node.ino)?;
        return rows::delete_all_but_deletes(c, node.ino);
    }
    // Versions of ours the remote may hold: the base and whatever uploads sent. A delete
    // finding one of them on the remote (under an ETag we never learned, because the
    // daemon died first) is deleting our own version, not somebody else's.
    let ours = rows::our_versions(c, node.ino, node.sha256.as_deref())?;
    // Waiting uploads of content that is going away would only be deleted again, and
    // properties set on it would go with it.
    drop_waiting_puts(c, node.ino)?;
    rows::delete_waiting_meta(c, node.ino)?;
    let id = insert(c, Op::Delete, node.ino, path, None, node.is_dir())?;
    rows::set_sent_hashes(c, id, &ours)?;
    // A file is deleted on the remote only if it is still the version we knew (a weak
    // ETag is checked by asking first: it never passes If-Match). A file on the remote
    // without any ETag (a server that gives none) has the empty base: whatever file is
    // there is taken for it. No base at all means no version of ours was ever known
    // there, so only one an upload sent may be deleted (see `replay::delete`).
    let base = (!node.is_dir() && node.on_remote).then(|| node.etag.as_deref().unwrap_or(""));
    if let Some(tag) = base {
        rows::set_base_etag(c, id, tag)?;
    }
    Ok(())
}

/// Records the rename of `node` from `from` to `to`. A node already at `to` must have been
/// removed with `record_remove` first.
pub fn record_rename(c: &Connection, node: &Node, from: &str, to: &str) -> rusqlite::Result<()> {
    retry_failed_of(c, node.ino)?;
    if !node.is_dir() && !node.on_remote && !any_sent(c, node.ino)? && rows::only_puts(c, node.ino)?
    {
        // Nothing was sent yet: upload it once, under its new name, after whatever
        // the new name depends on (its parent's creation may come later than the old
        // upload's place in the journal).
        if drop_entries_of(c, node.ino)? > 0 {
            insert(c, Op::Put, node.ino, to, None, false)?;
        }
        return Ok(());
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
///
/// Only entries up to `through` are looked at: an entry's readiness depends on the
/// entries before it alone, so a caller that knows where the last ready one is need not
/// walk the rest.
pub fn ready(
    c: &Connection,
    running: &std::collections::HashSet<i64>,
    limit: usize,
    now_ms: i64,
    through: i64,
) -> rusqlite::Result<Vec<Entry>> {
    let mut held = Held::default();
    let mut out = Vec::new();
    rows::scan_entries(c, through, |e| {
        if out.len() >= limit {
            return false;
        }
        let startable = !e.failed && !running.contains(&e.id) && e.next_try_at <= now_ms;
        if startable && !held.holds(&e) {
            out.push(e.clone());
        }
        held.add(&e);
        true
    })?;
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

/// `ready`, and marks what it returns as running, in one step in the caller's
/// transaction: a change recorded meanwhile (which may rewrite or drop entries that are
/// not running) cannot slip in between choosing an entry and starting it.
pub fn start_ready(
    tx: &Transaction<'_>,
    running: &std::collections::HashSet<i64>,
    limit: usize,
    now_ms: i64,
    through: i64,
) -> rusqlite::Result<Vec<Entry>> {
    let chosen = ready(tx, running, limit, now_ms, through)?;
    for e in &chosen {
        set_running(tx, e.id, true)?;
    }
    Ok(chosen)
}

/// Whether the remote's view of `path` (or of node `ino`) is still to change by waiting
/// entries: one of the node, or naming the path or a directory above it.
pub fn path_pending(c: &Connection, path: &str, ino: u64) -> rusqlite::Result<bool> {
    if rows::any_of(c, ino)? {
        return Ok(true);
    }
    // The path and each folder above it, each an index lookup on `path` and `dest`.
    for p in std::iter::once(path).chain(ancestors(path)) {
        if p != "/" && rows::names_path(c, p)? {
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
    let mut current = path.to_string();
    let mut before = i64::MAX;
    loop {
        // The latest waiting move (before the one undone last) that named this path or a
        // folder above it as its destination.
        let mut latest: Option<(i64, String, usize)> = None;
        for p in std::iter::once(current.as_str()).chain(ancestors(&current)) {
            if let Some((id, from)) = rows::latest_move_to(c, p, before)? {
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
    let mut names = Vec::new();
    for (p, d) in rows::paths_in_range(c, &base, &end)? {
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

    #[test]
    fn an_upload_s_new_etag_is_not_given_to_the_removal_of_its_scratch_files() {
        let c = store_with(&[(Op::Put, 4, "/f", None)]);
        record_scratch_removal(&c, 4, &base_copy_path("/f", 4, 7)).unwrap();
        let n = node(4, true, crate::store::Kind::File);
        record_remove(&c, &n, "/f").unwrap();
        // The whole upload ends: deletes of the file that follow are about its version.
        rows::rebase_deletes(&c, 4, Some("\"new\"")).unwrap();
        let deletes: Vec<(String, Option<String>)> = list(&c, false)
            .unwrap()
            .into_iter()
            .filter(|e| e.op == Op::Delete)
            .map(|e| (e.path, e.base_etag))
            .collect();
        assert_eq!(
            deletes,
            vec![
                // Its own name: whatever is there goes, whatever its ETag now.
                (base_copy_path("/f", 4, 7), Some(String::new())),
                ("/f".to_string(), Some("\"new\"".to_string())),
            ]
        );
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
        list(c, false)
            .unwrap()
            .into_iter()
            .filter(|e| e.ino == ino)
            .map(|e| e.op.as_str().to_string())
            .collect()
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
        for e in list(&c, false).unwrap() {
            if e.op == Op::Put {
                set_running(&c, e.id, true).unwrap();
            }
        }
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
        let rows: Vec<(String, String)> = list(&c, false)
            .unwrap()
            .into_iter()
            .filter(|e| e.ino == 3)
            .map(|e| (e.op.as_str().to_string(), e.path))
            .collect();
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
        let take = |id, ino| {
            let tx = c.unchecked_transaction().unwrap();
            let taken = take_written(&tx, id, ino).unwrap();
            tx.commit().unwrap();
            taken
        };
        let tracked = new(true);
        record_put(&c, tracked, "/theirs").unwrap();
        let id = c.last_insert_rowid();
        store::note_written(&c, tracked, &span(0, 10), 100).unwrap();
        assert_eq!(take(id, tracked), Some(span(0, 10)));
        assert_eq!(
            store::get_node(&c, tracked).unwrap().unwrap().written,
            Some(RangeSet::default())
        );
        // A second attempt sends what the first took, and what was written since.
        store::note_written(&c, tracked, &span(50, 60), 100).unwrap();
        let mut both = span(0, 10);
        both.insert(50, 60);
        assert_eq!(take(id, tracked), Some(both.clone()));
        assert_eq!(sending(&c, id).unwrap(), Some(both));

        // Unknown (a crash, or a file made here): whole, on every attempt, even once
        // writes made since are tracked again.
        let unknown = new(false);
        record_put(&c, unknown, "/ours").unwrap();
        let id = c.last_insert_rowid();
        assert_eq!(take(id, unknown), None);
        store::note_written(&c, unknown, &span(0, 5), 100).unwrap();
        assert_eq!(take(id, unknown), None);
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
            paths(&ready(&c, &none, 10, i64::MAX, i64::MAX).unwrap()),
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
        let r = ready(&c, &none, 10, i64::MAX, i64::MAX).unwrap();
        // The file in /photos waits for /photos ("/photo" is not inside it); the move
        // waits for the upload it renames; the delete of /music waits for the file in it.
        assert_eq!(
            paths(&r),
            ["/photos", "/notes.txt", "/photo", "/music/b.mp3"]
        );
        // With the first three running, only the rest may start, within the limit.
        let running: HashSet<i64> = r.iter().take(3).map(|e| e.id).collect();
        let r2 = ready(&c, &running, 1, i64::MAX, i64::MAX).unwrap();
        assert_eq!(paths(&r2), ["/music/b.mp3"]);
        // Walking only up to an entry gives the same answer for the entries before it.
        let through = r[2].id;
        let r3 = ready(&c, &none, 10, i64::MAX, through).unwrap();
        assert_eq!(paths(&r3), ["/photos", "/notes.txt", "/photo"]);
    }

    #[test]
    fn a_failed_entry_holds_what_depends_on_it_until_retried() {
        let c = store_with(&[
            (Op::Mkcol, 1, "/new", None),
            (Op::Put, 2, "/new/x", None),
            (Op::Put, 3, "/other", None),
        ]);
        record_failure(&c, 1, "HTTP 403", 0, true).unwrap();
        let r = ready(&c, &HashSet::new(), 10, 1000, i64::MAX).unwrap();
        assert_eq!(paths(&r), ["/other"]);
        retry(&c, Some(1)).unwrap();
        let r = ready(&c, &HashSet::new(), 10, 1000, i64::MAX).unwrap();
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
        let r = ready(&c, &HashSet::new(), 10, 1000, i64::MAX).unwrap();
        assert_eq!(paths(&r), ["/b"]);
    }
}
