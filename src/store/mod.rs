//! The state store: one SQLite file (WAL) holding the node table, the sync journal and
//! the conflict log. Everything that must survive a crash goes through here.
//!
//! Durability: the connection runs with `synchronous=NORMAL`, which in WAL mode makes a
//! commit survive a crash of the process (kill -9) but not of the machine. `fsync()` on a
//! file asks for more, so `commit_durable` switches to `FULL` for that one commit, which
//! syncs the WAL and with it every earlier commit.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, Row};

pub mod backups;
pub mod conflicts;
mod handle;
pub mod journal;
pub mod migrations;
pub mod nodes;
pub mod schema;
pub mod versions;

pub use handle::Store;

pub const ROOT_INO: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "state store was written by a newer davdrive (schema {found}, this one knows {known})"
    )]
    TooNew { found: i64, known: i64 },
    /// The files of the store are not safe to use (a link, another owner), or cannot be
    /// made private.
    #[error("state store: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// A symbolic link: on the server a small file holding the target, which a dead
    /// property (`remote::Meta::link`) marks as a link.
    Symlink,
}

impl Kind {
    pub fn from_i64(v: i64) -> Kind {
        match v {
            1 => Kind::Dir,
            2 => Kind::Symlink,
            _ => Kind::File,
        }
    }
    fn as_i64(self) -> i64 {
        match self {
            Kind::File => 0,
            Kind::Dir => 1,
            Kind::Symlink => 2,
        }
    }
}

/// One row of the node table.
#[derive(Debug, Clone)]
pub struct Node {
    pub ino: u64,
    /// 0 for the root and for files unlinked while still open.
    pub parent: u64,
    pub name: String,
    pub kind: Kind,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// The remote version the local content is based on.
    pub etag: Option<String>,
    /// The node exists on the remote (it was listed there, or its creation was replayed).
    pub on_remote: bool,
    /// Local content is newer than the remote's; it must be uploaded.
    pub dirty: bool,
    /// Byte ranges of the remote content present in the content file.
    pub ranges: RangeSet,
    pub pinned: bool,
    pub last_access: i64,
    /// SHA-256 of the remote version `etag` names, when known (after an upload). Local
    /// writes leave it alone: it describes the base the local changes started from.
    pub sha256: Option<String>,
    /// Directories: when the listing was last merged from the remote (unix ms).
    pub listed_at: Option<i64>,
    /// Bytes present in the content file (the size of `ranges`).
    pub cached_bytes: u64,
    /// The remote version the present ranges were downloaded from (clean files).
    pub content_etag: Option<String>,
    /// The checksums the server gave for the current remote version (Nextcloud and
    /// ownCloud's `oc:checksums`, like "SHA1:… MD5:…"), checked once it is all cached.
    pub remote_checksum: Option<String>,
    /// Last access (None: the same as `mtime_ns`), kept with relatime-like rules (see
    /// `atime_due`).
    pub atime_ns: Option<i64>,
    /// Symbolic links: the target, as given to `symlink()`.
    pub link_target: Option<String>,
    /// Byte ranges written here since the base version (`etag`); `None` when they are
    /// not known (a file created here), and the file can only be sent whole.
    pub written: Option<RangeSet>,
    /// Size of the base version on the server (`None` with `written`).
    pub base_size: Option<u64>,
    /// Remote path of the server-side copy of the base version, while there is one: the
    /// unchanged parts of a file written without them here are read from it, and the
    /// written ranges are sent into it before it replaces the file (see `journal::replay::partial`).
    pub base_copy: Option<String>,
}

pub const NODE_COLUMNS: &str =
    "ino, parent, name, kind, size, mtime_ns, ctime_ns, mode, uid, gid, \
     etag, on_remote, dirty, ranges, pinned, last_access, sha256, listed_at, cached_bytes, \
     content_etag, remote_checksum, atime_ns, link_target, written, base_size, base_copy";

impl Node {
    pub fn from_row(r: &Row<'_>) -> rusqlite::Result<Node> {
        let ranges: Option<Vec<u8>> = r.get(13)?;
        Ok(Node {
            ino: r.get::<_, i64>(0)? as u64,
            parent: r.get::<_, i64>(1)? as u64,
            name: r.get(2)?,
            kind: Kind::from_i64(r.get(3)?),
            size: r.get::<_, i64>(4)? as u64,
            mtime_ns: r.get(5)?,
            ctime_ns: r.get(6)?,
            mode: r.get::<_, i64>(7)? as u32,
            uid: r.get::<_, i64>(8)? as u32,
            gid: r.get::<_, i64>(9)? as u32,
            etag: r.get(10)?,
            on_remote: r.get::<_, i64>(11)? != 0,
            dirty: r.get::<_, i64>(12)? != 0,
            ranges: ranges.map(|b| RangeSet::decode(&b)).unwrap_or_default(),
            pinned: r.get::<_, i64>(14)? != 0,
            last_access: r.get(15)?,
            sha256: r.get(16)?,
            listed_at: r.get(17)?,
            cached_bytes: r.get::<_, i64>(18)? as u64,
            content_etag: r.get(19)?,
            remote_checksum: r.get(20)?,
            atime_ns: r.get(21)?,
            link_target: r.get(22)?,
            written: r
                .get::<_, Option<Vec<u8>>>(23)?
                .map(|b| RangeSet::decode(&b)),
            base_size: r.get::<_, Option<i64>>(24)?.map(|v| v as u64),
            base_copy: r.get(25)?,
        })
    }

    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }

    /// Every byte of the file is in the content file.
    pub fn fully_cached(&self) -> bool {
        self.ranges.covers(0, self.size)
    }
}

/// A sorted set of disjoint half-open byte ranges `[start, end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    pub fn full(len: u64) -> RangeSet {
        let mut r = RangeSet::default();
        r.insert(0, len);
        r
    }

    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        let mut out = Vec::with_capacity(self.ranges.len() + 1);
        let mut placed = false;
        for &(a, b) in &self.ranges {
            if b < s {
                out.push((a, b));
            } else if a > e {
                if !placed {
                    out.push((s, e));
                    placed = true;
                }
                out.push((a, b));
            } else {
                s = s.min(a);
                e = e.max(b);
            }
        }
        if !placed {
            out.push((s, e));
        }
        self.ranges = out;
    }

    /// Forget everything at or beyond `len` (after a truncate).
    pub fn truncate(&mut self, len: u64) {
        self.ranges.retain(|&(a, _)| a < len);
        if let Some(last) = self.ranges.last_mut() {
            last.1 = last.1.min(len);
        }
    }

    pub fn clear(&mut self) {
        self.ranges.clear();
    }

    pub fn covers(&self, start: u64, end: u64) -> bool {
        if start >= end {
            return true;
        }
        self.ranges.iter().any(|&(a, b)| a <= start && end <= b)
    }

    /// The parts of `[start, end)` that are not present.
    pub fn missing(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut pos = start;
        for &(a, b) in &self.ranges {
            if b <= pos {
                continue;
            }
            if a >= end {
                break;
            }
            if a > pos {
                out.push((pos, a.min(end)));
            }
            pos = pos.max(b);
            if pos >= end {
                break;
            }
        }
        if pos < end {
            out.push((pos, end));
        }
        out
    }

    /// The ranges, in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().copied()
    }

    /// Adds every range of `other`.
    pub fn union(&mut self, other: &RangeSet) {
        for (a, b) in other.iter() {
            self.insert(a, b);
        }
    }

    /// Where the last range ends (0 when empty).
    pub fn end(&self) -> u64 {
        self.ranges.last().map(|r| r.1).unwrap_or(0)
    }

    pub fn bytes(&self) -> u64 {
        self.ranges.iter().map(|(a, b)| b - a).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.ranges.len() * 16);
        for &(a, b) in &self.ranges {
            out.extend_from_slice(&a.to_le_bytes());
            out.extend_from_slice(&b.to_le_bytes());
        }
        out
    }

    /// Decodes what `encode` wrote; a damaged blob decodes to what is valid of it, and a
    /// smaller range set only costs a re-fetch.
    pub fn decode(b: &[u8]) -> RangeSet {
        let mut r = RangeSet::default();
        for chunk in b.chunks_exact(16) {
            let a = u64::from_le_bytes(chunk[..8].try_into().unwrap());
            let e = u64::from_le_bytes(chunk[8..].try_into().unwrap());
            r.insert(a, e);
        }
        r
    }
}

/// The bytes a write of `[offset, end)` to a file of `size` bytes changes: its own, and
/// when it starts past the end, the gap before it (which reads as zeros). What the
/// file's written ranges gain (see `Node::written`).
pub fn write_span(size: u64, offset: u64, end: u64) -> (u64, u64) {
    (offset.min(size), end)
}

/// A truncate of a file of `size` bytes to `new`: its written ranges lose what lies past
/// `new` and gain the zeros it grows by, if it grows.
pub fn truncate_written(written: &mut RangeSet, size: u64, new: u64) {
    written.truncate(new);
    written.insert(size.min(new), new);
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub fn now_ms() -> i64 {
    now_ns() / 1_000_000
}

pub fn system_time_to_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

pub fn ns_to_system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + std::time::Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - std::time::Duration::from_nanos((-ns) as u64)
    }
}

/// Opens (creating and migrating) the state store.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    make_private(path)?;
    // No link is followed to the database (SQLite makes its `-wal` and `-shm` files
    // with the database file's mode: 0600 too).
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
            | rusqlite::OpenFlags::SQLITE_OPEN_URI
            | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    // `rarray(?)`: a whole set of inodes bound as one parameter (see `subtrees`).
    rusqlite::vtab::array::load_module(&conn)?;
    schema::migrate(&conn)?;
    Ok(conn)
}

/// The state store names every file of the drive: it and its `-wal` and `-shm` files are
/// created 0600, and tightened to that if an earlier version left them readable by others.
/// A link at any of those names is refused, never followed.
fn make_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let refuse = |why: String| StoreError::Io(std::io::Error::other(why));
    let mut side = path.as_os_str().to_owned();
    side.push("-wal");
    let wal = std::path::PathBuf::from(side);
    let mut side = path.as_os_str().to_owned();
    side.push("-shm");
    let shm = std::path::PathBuf::from(side);
    for (i, p) in [path, wal.as_path(), shm.as_path()].into_iter().enumerate() {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(i == 0)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(p);
        let f = match f {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(refuse(format!(
                    "{} is a symbolic link; refusing to follow it",
                    p.display()
                )))
            }
            Err(e) => return Err(refuse(format!("{}: {e}", p.display()))),
        };
        let m = f.metadata()?;
        if !m.is_file() || m.uid() != unsafe { libc::geteuid() } {
            return Err(refuse(format!(
                "{} is not a plain file of uid {} (owner {})",
                p.display(),
                unsafe { libc::geteuid() },
                m.uid()
            )));
        }
        if m.mode() & 0o077 != 0 {
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// Runs `f` with every commit fully synced to disk (WAL fsynced), for `fsync()`. The
/// pragma cannot change inside a transaction, so it wraps the whole unit of work.
pub fn with_full_sync<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.pragma_update(None, "synchronous", "FULL")?;
    let r = f(conn);
    let back = conn.pragma_update(None, "synchronous", "NORMAL");
    let v = r?;
    back?;
    Ok(v)
}

/// Reads the schema of `conn`'s database: fails when the file is not a usable database.
pub fn check_readable(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |_| Ok(()))
}

/// Makes every commit so far durable across a power loss: a checkpoint syncs the WAL
/// first. PASSIVE never waits for readers; the sync happens either way.
pub fn sync_to_disk(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

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
    conn.execute(
        "UPDATE nodes SET base_size = ?2, dirty = ?3 WHERE ino = ?1",
        params![ino as i64, base_size as i64, dirty],
    )?;
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
    conn.prepare_cached("UPDATE nodes SET parent = ?2, name = ?3, ctime_ns = ?4 WHERE ino = ?1")?
        .execute(params![ino as i64, parent as i64, name, now_ns()])?;
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

pub fn get_meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()
}

pub fn set_meta(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
        .execute([key, value])?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_record_the_access_time_like_relatime() {
        const DAY: i64 = 24 * 3600 * 1_000_000_000;
        let (mtime, ctime) = (1_000, 1_000);
        assert!(atime_due(i64::MIN, mtime, ctime, 5_000), "never read");
        assert!(
            atime_due(900, mtime, ctime, 5_000),
            "read before the last change"
        );
        assert!(
            !atime_due(2_000, mtime, ctime, 5_000),
            "read since: nothing to write"
        );
        assert!(!atime_due(2_000, mtime, ctime, 2_000 + DAY - 1));
        assert!(atime_due(2_000, mtime, ctime, 2_000 + DAY), "a day old");
        assert!(
            atime_due(2_000, mtime, 3_000, 5_000),
            "changed (ctime) since"
        );
    }

    #[test]
    fn range_set_merges_and_reports_missing() {
        let mut r = RangeSet::default();
        r.insert(10, 20);
        r.insert(30, 40);
        assert_eq!(r.missing(0, 50), vec![(0, 10), (20, 30), (40, 50)]);
        r.insert(20, 30);
        assert!(r.covers(10, 40));
        assert_eq!(r.missing(0, 50), vec![(0, 10), (40, 50)]);
        r.insert(0, 5);
        r.truncate(12);
        assert_eq!(r.missing(0, 12), vec![(5, 10)]);
        assert_eq!(RangeSet::decode(&r.encode()), r);
        assert!(RangeSet::full(0).covers(0, 0));
    }

    /// The rule partial updates stand on: a file's bytes differ from its base version's
    /// only inside its written ranges, so the base with those ranges written over it
    /// (and extended, as `PUT` with `Content-Range` does) is the file, whenever the file
    /// is not shorter than the base. Random writes, writes past the end and truncates.
    #[test]
    fn the_base_and_the_written_ranges_make_the_file() {
        use proptest::prelude::*;
        #[derive(Debug, Clone)]
        enum Op {
            Write(u64, u64, u8),
            Truncate(u64),
        }
        let op = prop_oneof![
            (0u64..300, 1u64..60, any::<u8>()).prop_map(|(o, l, b)| Op::Write(o, l, b)),
            (0u64..300).prop_map(Op::Truncate),
        ];
        proptest!(|(base_len in 0usize..200, ops in proptest::collection::vec(op, 0..12))| {
            let base: Vec<u8> = (0..base_len).map(|i| (i % 251) as u8 + 1).collect();
            let mut file = base.clone();
            let mut written = RangeSet::default();
            for op in &ops {
                let size = file.len() as u64;
                match *op {
                    Op::Write(offset, len, byte) => {
                        let end = offset + len;
                        let (a, b) = write_span(size, offset, end);
                        written.insert(a, b);
                        if file.len() < end as usize {
                            file.resize(end as usize, 0);
                        }
                        file[offset as usize..end as usize].fill(byte);
                    }
                    Op::Truncate(new) => {
                        truncate_written(&mut written, size, new);
                        file.resize(new as usize, 0);
                    }
                }
                // Never a range past the end, and none is lost by decoding.
                prop_assert!(written.end() <= file.len() as u64);
                prop_assert_eq!(RangeSet::decode(&written.encode()), written.clone());
            }
            if file.len() >= base.len() {
                let mut server = base.clone();
                for (a, b) in written.iter() {
                    if server.len() < b as usize {
                        server.resize(b as usize, 0);
                    }
                    server[a as usize..b as usize].copy_from_slice(&file[a as usize..b as usize]);
                }
                prop_assert_eq!(server, file);
            }
        });
    }

    /// Written ranges are tracked in the store only for files that have a base version,
    /// grow with each commit, are cut by a truncate, and are forgotten after a crash of
    /// writes whose ranges were not recorded.
    #[test]
    fn written_ranges_in_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(&dir.path().join("s.db")).unwrap();
        let mk = |name: &str, on_remote: bool| {
            insert_node(
                &c,
                &NewNode {
                    parent: ROOT_INO,
                    name,
                    kind: Kind::File,
                    size: 100,
                    mtime_ns: 0,
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    etag: on_remote.then_some("\"e1\""),
                    on_remote,
                    dirty: false,
                    ranges: RangeSet::default(),
                    listed_at: None,
                    last_access: 0,
                },
            )
            .unwrap()
        };
        let theirs = mk("from the server", true);
        let ours = mk("made here", false);
        let n = get_node(&c, theirs).unwrap().unwrap();
        assert_eq!(
            (n.written, n.base_size),
            (Some(RangeSet::default()), Some(100))
        );
        let n = get_node(&c, ours).unwrap().unwrap();
        assert_eq!((n.written, n.base_size), (None, None));

        let span = |a, b| {
            let mut r = RangeSet::default();
            r.insert(a, b);
            r
        };
        note_written(&c, theirs, &span(10, 20), 100).unwrap();
        note_written(&c, theirs, &span(90, 150), 150).unwrap();
        note_written(&c, ours, &span(0, 50), 100).unwrap();
        let n = get_node(&c, theirs).unwrap().unwrap();
        let mut want = span(10, 20);
        want.insert(90, 150);
        assert_eq!(n.written, Some(want));
        assert_eq!(get_node(&c, ours).unwrap().unwrap().written, None);
        // Cut to 95: what lay past it is no longer the file's.
        note_written(&c, theirs, &RangeSet::default(), 95).unwrap();
        let mut want = span(10, 20);
        want.insert(90, 95);
        assert_eq!(get_node(&c, theirs).unwrap().unwrap().written, Some(want));
        forget_written(&c, theirs).unwrap();
        assert_eq!(get_node(&c, theirs).unwrap().unwrap().written, None);
        // Landing an upload starts tracking again, against the version sent.
        versions::mark_uploaded(&c, theirs, Some("\"e2\""), None, 95).unwrap();
        let n = get_node(&c, theirs).unwrap().unwrap();
        assert_eq!(
            (n.written, n.base_size),
            (Some(RangeSet::default()), Some(95))
        );
    }

    #[test]
    fn paths_follow_parents() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(&dir.path().join("s.db")).unwrap();
        let mk = |parent, name: &str, kind| {
            insert_node(
                &c,
                &NewNode {
                    parent,
                    name,
                    kind,
                    size: 0,
                    mtime_ns: 0,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    etag: None,
                    on_remote: false,
                    dirty: false,
                    ranges: RangeSet::default(),
                    listed_at: None,
                    last_access: 0,
                },
            )
            .unwrap()
        };
        assert_eq!(mk(0, "", Kind::Dir), ROOT_INO);
        let d = mk(ROOT_INO, "a dir", Kind::Dir);
        let f = mk(d, "f#1", Kind::File);
        assert_eq!(path_of(&c, f).unwrap().unwrap(), "/a dir/f#1");
        assert_eq!(path_of(&c, ROOT_INO).unwrap().unwrap(), "/");
        move_node(&c, f, 0, "orphan").unwrap();
        assert_eq!(path_of(&c, f).unwrap(), None);
    }
}
