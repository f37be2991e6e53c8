//! The node table's statements: one row per file, folder or link, with its name and
//! parent, attributes, remote version, and the state of its cached content.
//!
//! Over 600 lines: every statement of the node table, each a short named function;
//! split by caller they would be harder to find.

use std::collections::HashSet;

use rusqlite::{params, Connection, OptionalExtension};

use crate::store::{now_ns, Kind, Node, RangeSet, NODE_COLUMNS, ROOT_INO};

pub fn get_node(conn: &Connection, ino: u64) -> rusqlite::Result<Option<Node>> {
    conn.prepare_cached(&format!("SELECT {NODE_COLUMNS} FROM nodes WHERE ino = ?1"))?
        .query_row([ino as i64], Node::from_row)
        .optional()
}

pub fn get_child(conn: &Connection, parent: u64, name: &str) -> rusqlite::Result<Option<Node>> {
    conn.prepare_cached(&format!(
        "SELECT {NODE_COLUMNS} FROM nodes WHERE parent = ?1 AND name = ?2"
    ))?
    .query_row(params![parent as i64, name], Node::from_row)
    .optional()
}

pub fn children(conn: &Connection, parent: u64) -> rusqlite::Result<Vec<Node>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {NODE_COLUMNS} FROM nodes WHERE parent = ?1 AND ino != ?1 ORDER BY name"
    ))?;
    let rows = st.query_map([parent as i64], Node::from_row)?;
    rows.collect()
}

pub fn has_children(conn: &Connection, parent: u64) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM nodes WHERE parent = ?1 AND ino != ?1 LIMIT 1")?
        .query_row([parent as i64], |_| Ok(()))
        .optional()
        .map(|o| o.is_some())
}

/// The node's path relative to the mount root ("/" for the root), or None for an orphan.
pub fn path_of(conn: &Connection, ino: u64) -> rusqlite::Result<Option<String>> {
    let mut parts = Vec::new();
    let mut cur = ino;
    let mut st = conn.prepare_cached("SELECT parent, name FROM nodes WHERE ino = ?1")?;
    while cur != ROOT_INO {
        let row: Option<(i64, String)> = st
            .query_row([cur as i64], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match row {
            Some((parent, name)) if parent != 0 => {
                parts.push(name);
                cur = parent as u64;
            }
            _ => return Ok(None),
        }
        if parts.len() > 4096 {
            return Ok(None);
        }
    }
    if parts.is_empty() {
        return Ok(Some("/".to_string()));
    }
    parts.reverse();
    Ok(Some(format!("/{}", parts.join("/"))))
}

/// Fields of a node being created.
pub struct NewNode<'a> {
    pub parent: u64,
    pub name: &'a str,
    pub kind: Kind,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub etag: Option<&'a str>,
    pub on_remote: bool,
    pub dirty: bool,
    pub ranges: RangeSet,
    pub listed_at: Option<i64>,
    /// Unix seconds of the creation, for the cache's age limit (see `Clock`).
    pub last_access: i64,
}

/// A file that is on the server starts with no written ranges, its size as the base's;
/// one created here has neither (it is sent whole).
pub fn insert_node(conn: &Connection, n: &NewNode<'_>) -> rusqlite::Result<u64> {
    conn.prepare_cached(
        "INSERT INTO nodes (parent, name, kind, size, mtime_ns, ctime_ns, mode, uid, gid, etag, \
         on_remote, dirty, ranges, pinned, last_access, listed_at, cached_bytes, content_etag, \
         written, base_size) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 0, ?13, ?14, ?15, \
         CASE WHEN ?15 > 0 THEN ?9 END, CASE WHEN ?10 AND ?3 != 1 THEN X'' END, \
         CASE WHEN ?10 AND ?3 != 1 THEN ?4 END)",
    )?
    .execute(params![
        n.parent as i64,
        n.name,
        n.kind.as_i64(),
        n.size as i64,
        n.mtime_ns,
        n.mode as i64,
        n.uid as i64,
        n.gid as i64,
        n.etag,
        n.on_remote as i64,
        n.dirty as i64,
        n.ranges.encode(),
        n.last_access,
        n.listed_at,
        n.ranges.bytes() as i64,
    ])?;
    Ok(conn.last_insert_rowid() as u64)
}

pub fn delete_node(conn: &Connection, ino: u64) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM nodes WHERE ino = ?1")?
        .execute([ino as i64])?;
    Ok(())
}

/// One node found below one of the `roots` given to `subtrees`.
#[derive(Debug, Clone, Copy)]
pub struct SubtreeNode {
    pub root: u64,
    pub ino: u64,
    /// Holds local changes the remote has not got (dirty, or never uploaded).
    pub changed: bool,
    pub is_file: bool,
}

fn ino_array(inos: &[u64]) -> std::rc::Rc<Vec<rusqlite::types::Value>> {
    std::rc::Rc::new(
        inos.iter()
            .map(|&i| rusqlite::types::Value::Integer(i as i64))
            .collect(),
    )
}

/// Every node at and below each of `roots`, in one query for the whole set: a listing
/// that removed 200,000 entries costs one pass over them, not a query per node.
pub fn subtrees(conn: &Connection, roots: &[u64]) -> rusqlite::Result<Vec<SubtreeNode>> {
    if roots.is_empty() {
        return Ok(Vec::new());
    }
    conn.prepare_cached(
        "WITH RECURSIVE sub(root, ino) AS (SELECT value, value FROM rarray(?1) UNION ALL \
         SELECT sub.root, nodes.ino FROM nodes JOIN sub ON nodes.parent = sub.ino) \
         SELECT sub.root, sub.ino, n.dirty != 0 OR n.on_remote = 0, n.kind = 0 \
         FROM sub JOIN nodes n ON n.ino = sub.ino",
    )?
    .query_map([ino_array(roots)], |r| {
        Ok(SubtreeNode {
            root: r.get::<_, i64>(0)? as u64,
            ino: r.get::<_, i64>(1)? as u64,
            changed: r.get(2)?,
            is_file: r.get(3)?,
        })
    })?
    .collect()
}

/// Deletes the nodes `inos` (their content files are the caller's to remove).
pub fn delete_nodes(conn: &Connection, inos: &[u64]) -> rusqlite::Result<()> {
    if !inos.is_empty() {
        conn.prepare_cached("DELETE FROM nodes WHERE ino IN rarray(?1)")?
            .execute([ino_array(inos)])?;
    }
    Ok(())
}

/// Records the ranges present in the content file. Ranges downloaded into an empty
/// content file bind it to the current remote version.
pub fn set_ranges(conn: &Connection, ino: u64, ranges: &RangeSet) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE nodes SET ranges = ?2, cached_bytes = ?3, \
         content_etag = CASE WHEN ?3 = 0 THEN NULL ELSE COALESCE(content_etag, etag) END \
         WHERE ino = ?1",
    )?
    .execute(params![ino as i64, ranges.encode(), ranges.bytes() as i64])?;
    Ok(())
}

/// Forgets the cached content of `ino` (the content file is removed by the caller).
pub fn drop_content(conn: &Connection, ino: u64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE nodes SET ranges = NULL, cached_bytes = 0, content_etag = NULL WHERE ino = ?1",
    )?
    .execute([ino as i64])?;
    Ok(())
}

pub fn set_dirty(conn: &Connection, ino: u64, dirty: bool) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE nodes SET dirty = ?2 WHERE ino = ?1")?
        .execute(params![ino as i64, dirty as i64])?;
    Ok(())
}

/// Records the state of local content after writes: size, mtime and that all of it is present.
pub fn set_local_content(
    conn: &Connection,
    ino: u64,
    size: u64,
    mtime_ns: i64,
) -> rusqlite::Result<()> {
    set_written_content(conn, ino, size, mtime_ns, &RangeSet::full(size))
}

/// Records the state of local content after writes: size, mtime and the ranges present
/// (a file written without being all here has holes where the server's bytes are). The
/// content is bound to the version it was written over.
pub fn set_written_content(
    conn: &Connection,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ranges: &RangeSet,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE nodes SET size = ?2, mtime_ns = ?3, ctime_ns = ?4, ranges = ?5, dirty = 1, \
         cached_bytes = ?6, content_etag = COALESCE(content_etag, etag) WHERE ino = ?1",
    )?
    .execute(params![
        ino as i64,
        size as i64,
        mtime_ns,
        now_ns(),
        ranges.encode(),
        ranges.bytes() as i64
    ])?;
    Ok(())
}

/// Adds `more` to the ranges written in `ino` since its base version, and forgets what
/// lies at or past `size` (a truncate): only while they are tracked (see `Node::written`).
pub fn note_written(
    conn: &Connection,
    ino: u64,
    more: &RangeSet,
    size: u64,
) -> rusqlite::Result<()> {
    let cur: Option<Option<Vec<u8>>> = conn
        .prepare_cached("SELECT written FROM nodes WHERE ino = ?1")?
        .query_row([ino as i64], |r| r.get(0))
        .optional()?;
    let Some(Some(blob)) = cur else {
        return Ok(());
    };
    let mut w = RangeSet::decode(&blob);
    let before = w.clone();
    w.union(more);
    w.truncate(size);
    if w != before {
        conn.prepare_cached("UPDATE nodes SET written = ?2 WHERE ino = ?1")?
            .execute(params![ino as i64, w.encode()])?;
    }
    Ok(())
}

/// The written ranges of `ino` are no longer known (writes a crash cut off): it is sent
/// whole next time.
pub fn forget_written(conn: &Connection, ino: u64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE nodes SET written = NULL WHERE ino = ?1")?
        .execute([ino as i64])?;
    Ok(())
}

/// The stored `written` range map of `ino` (None: not known, or no such node).
pub fn written_blob(conn: &Connection, ino: u64) -> rusqlite::Result<Option<Vec<u8>>> {
    Ok(conn
        .prepare_cached("SELECT written FROM nodes WHERE ino = ?1")?
        .query_row([ino as i64], |r| r.get(0))
        .optional()?
        .flatten())
}

/// `ino` starts a new, empty set of written ranges (an upload took the old ones).
pub fn restart_written(conn: &Connection, ino: u64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE nodes SET written = X'' WHERE ino = ?1")?
        .execute([ino as i64])?;
    Ok(())
}

/// Sets the size of the base version of `ino` on the server, and whether it is dirty.
pub fn set_base_size_and_dirty(
    conn: &Connection,
    ino: u64,
    base_size: u64,
    dirty: bool,
) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE nodes SET base_size = ?2, dirty = ?3 WHERE ino = ?1")?
        .execute(params![ino as i64, base_size as i64, dirty])?;
    Ok(())
}

/// Records (or clears) the server-side copy of the base version of `ino`.
pub fn set_base_copy(conn: &Connection, ino: u64, copy: Option<&str>) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE nodes SET base_copy = ?2 WHERE ino = ?1")?
        .execute(params![ino as i64, copy])?;
    Ok(())
}

/// A folder moved on the server from `from` to `to`: the base copies inside it went along.
pub fn move_base_copies(conn: &Connection, from: &str, to: &str) -> rusqlite::Result<()> {
    let (below, end) = (format!("{from}/"), format!("{from}0"));
    conn.prepare_cached(
        "UPDATE nodes SET base_copy = ?2 || substr(base_copy, length(?1) + 1) \
         WHERE base_copy >= ?3 AND base_copy < ?4",
    )?
    .execute(params![from, to, below, end])?;
    Ok(())
}

pub fn move_node(conn: &Connection, ino: u64, parent: u64, name: &str) -> rusqlite::Result<()> {
    keeping_part_progress(conn, ino, || {
        conn.prepare_cached(
            "UPDATE nodes SET parent = ?2, name = ?3, ctime_ns = ?4 WHERE ino = ?1",
        )?
        .execute(params![ino as i64, parent as i64, name, now_ns()])
    })
}

/// Runs `change` (of `ino`'s name or attributes, never its content), carrying the
/// progress of a part upload of its version over to the version it makes.
fn keeping_part_progress(
    conn: &Connection,
    ino: u64,
    change: impl FnOnce() -> rusqlite::Result<usize>,
) -> rusqlite::Result<()> {
    let version = |c: &Connection| {
        c.prepare_cached("SELECT size, mtime_ns, ctime_ns FROM nodes WHERE ino = ?1")?
            .query_row([ino as i64], |r| {
                let (size, mtime, ctime) = (r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?);
                Ok(super::journal::part_version_of(size as u64, mtime, ctime))
            })
            .optional()
    };
    let before = version(conn)?;
    change()?;
    if let (Some(before), Some(after)) = (before, version(conn)?) {
        super::journal::carry_part_progress(conn, ino, &before, &after)?;
    }
    Ok(())
}

/// Records a use of the node (at unix second `now_s`) for the cache's age limit and LRU
/// order. At most once a minute per node: the limits count in hours and days, and an
/// update that changes nothing writes nothing.
pub fn touch_access(conn: &Connection, ino: u64, now_s: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE nodes SET last_access = ?2 WHERE ino = ?1 AND last_access < ?2 - 60",
    )?
    .execute(params![ino as i64, now_s])?;
    Ok(())
}

/// A folder's entries changed (create, remove, rename in or out): its mtime and ctime
/// move, as on a local disk. Local only: servers keep their own folder times.
pub fn touch_dir(conn: &Connection, ino: u64, now_ns: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE nodes SET mtime_ns = ?2, ctime_ns = ?2 WHERE ino = ?1")?
        .execute(params![ino as i64, now_ns])?;
    Ok(())
}

/// Takes the mode, owner and times a davdrive stored on the server (dead properties)
/// for node `ino`. Times only where given: `mtime_ns` for files whose version the
/// properties were written for; the access time never goes back.
pub fn apply_remote_meta(
    conn: &Connection,
    ino: u64,
    meta: &crate::remote::Meta,
    mtime_ns: Option<i64>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE nodes SET mode = COALESCE(?2, mode), uid = COALESCE(?3, uid), \
         gid = COALESCE(?4, gid), mtime_ns = COALESCE(?5, mtime_ns), \
         atime_ns = CASE WHEN ?6 IS NULL THEN atime_ns ELSE max(COALESCE(atime_ns, ?6), ?6) END \
         WHERE ino = ?1",
    )?
    .execute(params![
        ino as i64,
        meta.mode.map(|m| m as i64),
        meta.uid.map(|v| v as i64),
        meta.gid.map(|v| v as i64),
        mtime_ns,
        meta.atime_ns,
    ])?;
    Ok(())
}

/// Sets the target of symbolic link `ino`.
pub fn set_link_target(conn: &Connection, ino: u64, target: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE nodes SET link_target = ?2 WHERE ino = ?1")?
        .execute(params![ino as i64, target])?;
    Ok(())
}

/// Sets the access time of `ino` (`utimensat`, or a read that `atime_due` let through).
pub fn set_atime(conn: &Connection, ino: u64, atime_ns: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE nodes SET atime_ns = ?2 WHERE ino = ?1")?
        .execute(params![ino as i64, atime_ns])?;
    Ok(())
}

/// How many folders `dir` holds: a folder's link count is 2 + that, as on a local disk
/// (its own `.` and its entry in the parent, and each subfolder's `..`).
pub fn subdir_count(conn: &Connection, dir: u64) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT COUNT(*) FROM nodes WHERE parent = ?1 AND kind = 1")?
        .query_row([dir as i64], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
}

/// relatime: a read records the access time only when the last recorded access is not
/// later than the last modification or change, or is a day old. So a file read over and
/// over costs one write of the state store per change (or per day), not one per read,
/// and "was it read since it was written" still answers right.
pub fn atime_due(atime_ns: i64, mtime_ns: i64, ctime_ns: i64, now_ns: i64) -> bool {
    const DAY_NS: i64 = 24 * 3600 * 1_000_000_000;
    atime_ns <= mtime_ns || atime_ns <= ctime_ns || now_ns - atime_ns >= DAY_NS
}

/// Records `new` as the ETag of `ino` where it names the version `old` did (see
/// `remote::same_etag`), keeping cached content bound to it.
/// Records the server's checksums of the version `ino` has now (none clears them).
pub fn set_remote_checksum(
    conn: &Connection,
    ino: u64,
    checksum: Option<&str>,
) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE nodes SET remote_checksum = ?2 WHERE ino = ?1")?
        .execute(params![ino as i64, checksum])?;
    Ok(())
}

pub fn refresh_etag(
    conn: &Connection,
    ino: u64,
    old: Option<&str>,
    new: Option<&str>,
) -> rusqlite::Result<()> {
    if old == new {
        return Ok(());
    }
    conn.prepare_cached(
        "UPDATE nodes SET etag = ?3, \
         content_etag = CASE WHEN content_etag IS ?2 THEN ?3 ELSE content_etag END \
         WHERE ino = ?1 AND etag IS ?2",
    )?
    .execute(params![ino as i64, old, new])?;
    Ok(())
}

/// The node at `path` ("/a/b"), following names from the root.
pub fn node_at_path(conn: &Connection, path: &str) -> rusqlite::Result<Option<Node>> {
    let mut node = match get_node(conn, ROOT_INO)? {
        Some(n) => n,
        None => return Ok(None),
    };
    for name in path.split('/').filter(|p| !p.is_empty()) {
        match get_child(conn, node.ino, name)? {
            Some(n) => node = n,
            None => return Ok(None),
        }
    }
    Ok(Some(node))
}

/// Whether `dir` is `ino` or one of the folders above it.
pub fn is_ancestor(conn: &Connection, dir: u64, ino: u64) -> rusqlite::Result<bool> {
    let mut cur = ino;
    for _ in 0..4096 {
        if cur == dir {
            return Ok(true);
        }
        match get_node(conn, cur)? {
            Some(n) if n.parent != 0 && n.ino != ROOT_INO => cur = n.parent,
            _ => return Ok(false),
        }
    }
    Ok(false)
}

/// A folder moved aside locally to `name` because something else took its place on the
/// server; the folder at the new name was created there by us.
pub fn move_dir_aside(conn: &Connection, ino: u64, name: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE nodes SET name = ?2, on_remote = 1 WHERE ino = ?1")?
        .execute(params![ino as i64, name])?;
    Ok(())
}

/// Keeps directory `ino`'s listing for offline use but makes it due for a refresh.
pub fn mark_listing_due(conn: &Connection, ino: u64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE nodes SET listed_at = 0 WHERE ino = ?1 AND listed_at IS NOT NULL")?
        .execute([ino as i64])?;
    Ok(())
}

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
    keeping_part_progress(c, ino, || {
        c.prepare_cached(
            "UPDATE nodes SET mode = COALESCE(?2, mode), uid = COALESCE(?3, uid), \
             gid = COALESCE(?4, gid), mtime_ns = COALESCE(?5, mtime_ns), ctime_ns = ?6 \
             WHERE ino = ?1",
        )?
        .execute(params![
            ino as i64,
            mode.map(|m| (m & 0o7777) as i64),
            uid.map(|v| v as i64),
            gid.map(|v| v as i64),
            mtime_ns,
            ctime_ns
        ])
    })
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
    c.prepare_cached("UPDATE nodes SET last_access = 0 WHERE ino = ?1")?
        .execute([ino as i64])?;
    Ok(())
}

/// Directory `dir` was listed from the remote at `now_ms`.
pub fn set_listed_at(c: &Connection, dir: u64, now_ms: i64) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE nodes SET listed_at = ?2 WHERE ino = ?1")?
        .execute(params![dir as i64, now_ms])?;
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
