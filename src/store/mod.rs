//! The state store: one SQLite file (WAL) holding the node table, the sync journal and
//! the conflict log. Everything that must survive a crash goes through here.
//!
//! Every SQL statement of davdrive is written in this module and its children, behind a
//! named operation (`tests/rooms.rs` keeps it so): `nodes` (the node table), `journal`,
//! `conflicts`, `backups`, `migrations`, `versions` (the rules binding cached content to
//! a remote version), `schema` (tables and their upgrades). The rules that decide what
//! to record stay with their owners (`crate::journal`, `crate::fs`, ...). `Store` holds
//! the two connections: the writer, and a read-only reader that never waits for it.
//!
//! Durability: the connection runs with `synchronous=NORMAL`, which in WAL mode makes a
//! commit survive a crash of the process (kill -9) but not of the machine. `fsync()` on a
//! file asks for more, so `commit_durable` switches to `FULL` for that one commit, which
//! syncs the WAL and with it every earlier commit.
//!
//! Over 600 lines with its unit tests (the code is under 460): the row types and their
//! encodings, opening and upgrading the file, the meta table.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Row};

pub mod backups;
pub mod conflicts;
mod handle;
pub mod journal;
pub mod migrations;
pub mod nodes;
pub mod schema;
pub mod versions;

pub use handle::Store;
pub use nodes::*;

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

    /// Unlinked here while still open: out of the namespace (parent 0), kept until its
    /// last handle closes. Its waiting delete says what becomes of it on the server.
    pub fn removed_here(&self) -> bool {
        self.parent == 0 && self.ino != ROOT_INO
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
        // The ranges touching or overlapping `[start, end)` are `lo..hi`: a file read at
        // random has thousands of ranges, and each download inserts one.
        let lo = self.ranges.partition_point(|&(_, b)| b < start);
        let hi = lo + self.ranges[lo..].partition_point(|&(a, _)| a <= end);
        if lo == hi {
            self.ranges.insert(lo, (start, end));
            return;
        }
        let s = start.min(self.ranges[lo].0);
        let e = end.max(self.ranges[hi - 1].1);
        self.ranges[lo] = (s, e);
        self.ranges.drain(lo + 1..hi);
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
        // The only range that can hold `start` is the last one beginning at or before it.
        let i = self.ranges.partition_point(|&(a, _)| a <= start);
        i > 0 && end <= self.ranges[i - 1].1
    }

    /// The parts of `[start, end)` that are not present.
    pub fn missing(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut pos = start;
        let first = self.ranges.partition_point(|&(_, b)| b <= start);
        for &(a, b) in &self.ranges[first..] {
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
        r.ranges.reserve(b.len() / 16);
        for chunk in b.chunks_exact(16) {
            let a = u64::from_le_bytes(chunk[..8].try_into().unwrap());
            let e = u64::from_le_bytes(chunk[8..].try_into().unwrap());
            match r.ranges.last() {
                // What `encode` wrote is in order and disjoint: appended as it is, so a
                // map of thousands of ranges decodes in one pass.
                Some(&(_, last)) if a > last && a < e => r.ranges.push((a, e)),
                None if a < e => r.ranges.push((a, e)),
                _ => r.insert(a, e),
            }
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

/// Prepared statements kept per connection: more than the store has.
pub(crate) const STATEMENT_CACHE: usize = 512;

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
    // Every statement of the store stays prepared: rusqlite keeps 16 by default, fewer
    // than one small-file write goes through, and parsing SQL again was a tenth of the
    // daemon's time in `tar -x`.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
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

    /// Insert, covers, missing and decode agree with a plain map of which bytes are
    /// present, whatever the order of the inserts (they look ranges up by bisection).
    #[test]
    fn range_set_agrees_with_a_byte_map() {
        use proptest::prelude::*;
        proptest!(|(ins in proptest::collection::vec((0u64..200, 0u64..40), 0..40),
                    probes in proptest::collection::vec((0u64..240, 0u64..60), 1..20))| {
            let mut r = RangeSet::default();
            let mut map = [false; 240];
            for &(a, len) in &ins {
                r.insert(a, a + len);
                for b in &mut map[a as usize..(a + len) as usize] {
                    *b = true;
                }
            }
            // Disjoint, sorted, never touching.
            let v: Vec<_> = r.iter().collect();
            prop_assert!(v.windows(2).all(|w| w[0].1 < w[1].0));
            prop_assert!(v.iter().all(|&(a, b)| a < b));
            prop_assert_eq!(RangeSet::decode(&r.encode()), r.clone());
            for &(s, len) in &probes {
                let e = (s + len).min(240);
                let want: Vec<u64> = (s..e).filter(|&i| !map[i as usize]).collect();
                let got: Vec<u64> = r.missing(s, e).into_iter().flat_map(|(a, b)| a..b).collect();
                prop_assert_eq!(&got, &want);
                prop_assert_eq!(r.covers(s, e), want.is_empty());
            }
        });
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
