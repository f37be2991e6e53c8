//! The rules that tie a node's cached content to one remote version, as named state
//! changes. A node's `etag` is the remote version its content is based on;
//! `content_etag` the version the present `ranges` were downloaded from (clean files);
//! `sha256` the hash of the `etag` version when known; `dirty` that local content is
//! newer and must be uploaded. Every change of these goes through here.

use rusqlite::{params, Connection};

/// Our upload became the remote version `etag`, of `size` bytes: the content present
/// is that version, and the base of what is written from now on (ranges written while
/// the upload ran stay recorded: the upload took those it sent).
pub fn mark_uploaded(
    conn: &Connection,
    ino: u64,
    etag: Option<&str>,
    sha256: Option<&str>,
    size: u64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE nodes SET etag = ?2, on_remote = 1, sha256 = ?3, content_etag = ?2, \
         remote_checksum = NULL, written = COALESCE(written, X''), base_size = ?4, \
         base_copy = NULL WHERE ino = ?1",
    )?
    .execute(params![ino as i64, etag, sha256, size as i64])?;
    Ok(())
}

/// The node exists on the remote now (its creation was replayed, or a listing showed it).
pub fn mark_on_remote(conn: &Connection, ino: u64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE nodes SET on_remote = 1 WHERE ino = ?1")?
        .execute([ino as i64])?;
    Ok(())
}

/// A move of ours gave the same content a new ETag (some servers do): cached content
/// bound to the old tag stays bound, to the new one.
pub fn retag_after_move(conn: &Connection, ino: u64, etag: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE nodes SET etag = ?2, content_etag = CASE WHEN content_etag = etag \
         THEN ?2 ELSE content_etag END WHERE ino = ?1 AND on_remote = 1",
    )?
    .execute(params![ino as i64, etag])?;
    Ok(())
}

/// The remote's version `etag` replaces what was here: cached content is dropped (the
/// caller removes the content file) and the node takes the remote's size and mtime.
pub fn adopt_remote_version(
    conn: &Connection,
    ino: u64,
    etag: Option<&str>,
    size: u64,
    mtime_ns: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE nodes SET etag = ?2, size = ?3, mtime_ns = ?4, ranges = NULL, dirty = 0, \
         on_remote = 1, sha256 = NULL, cached_bytes = 0, content_etag = NULL, \
         remote_checksum = NULL, written = X'', base_size = ?3, base_copy = NULL \
         WHERE ino = ?1",
    )?
    .execute(params![ino as i64, etag, size as i64, mtime_ns])?;
    Ok(())
}

/// A newer remote version was seen for a file whose cached content must stay until it
/// is closed: size, mtime and tag follow the remote, the content is no longer bound to
/// the current version (it is dropped at the next open).
pub fn note_remote_version(
    conn: &Connection,
    ino: u64,
    etag: Option<&str>,
    size: u64,
    mtime_ns: i64,
    checksum: Option<&str>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE nodes SET size = ?2, mtime_ns = ?3, etag = ?4, sha256 = NULL, \
         remote_checksum = ?5, base_size = ?2 WHERE ino = ?1",
    )?
    .execute(params![ino as i64, size as i64, mtime_ns, etag, checksum])?;
    Ok(())
}

/// Content that failed its check against the server's checksum, held by open
/// descriptors: bound to no version, so it is dropped at the next open.
pub fn unbind_content(conn: &Connection, ino: u64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE nodes SET content_etag = 'checksum-mismatch' WHERE ino = ?1")?
        .execute([ino as i64])?;
    Ok(())
}

/// Records the hash of a clean, fully cached file, if it is still the version `etag`
/// of `size` bytes that was hashed. Returns whether it was recorded.
pub fn record_content_hash(
    conn: &Connection,
    ino: u64,
    sha256: &str,
    etag: Option<&str>,
    size: u64,
) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE nodes SET sha256 = ?2 WHERE ino = ?1 AND dirty = 0 \
             AND content_etag IS ?3 AND etag IS ?3 AND size = ?4",
        )?
        .execute(params![ino as i64, sha256, etag, size as i64])?;
    Ok(n > 0)
}

/// Local changes given up (their upload dropped): back to the remote's version, which
/// the next listing or open fetches. (The caller removes a base copy on the server.)
pub fn forget_local_changes(conn: &Connection, ino: u64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE nodes SET dirty = 0, etag = NULL, ranges = NULL, cached_bytes = 0, \
         content_etag = NULL, sha256 = NULL, written = NULL, base_copy = NULL WHERE ino = ?1",
    )?
    .execute([ino as i64])?;
    Ok(())
}

/// The remote lost this file (another client deleted it) but the local copy is to be
/// kept: it is ours alone now, to be uploaded as new (whole: parts not here come from
/// its base copy), and never evicted before that.
pub fn keep_local_copy(conn: &Connection, ino: u64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE nodes SET on_remote = 0, etag = NULL, content_etag = NULL, sha256 = NULL, \
         dirty = 1, written = NULL WHERE ino = ?1",
    )?
    .execute([ino as i64])?;
    Ok(())
}

/// Our version of `of` went up beside theirs as `name`, in the same folder, whose
/// server version is `etag`: a clean file node of `of`'s size, times and owner, holding
/// the cached `ranges`. None when nothing is made: the name is taken here already, or
/// `of` was removed here (no folder to put it in). The caller records what the copy
/// still has to send (written ranges) and moves the content file.
pub fn make_conflict_copy(
    conn: &Connection,
    of: &crate::store::Node,
    name: &str,
    etag: Option<&str>,
    ranges: crate::store::RangeSet,
    now_s: i64,
) -> rusqlite::Result<Option<u64>> {
    use crate::store::{get_child, insert_node, Kind, NewNode};
    if of.removed_here() || get_child(conn, of.parent, name)?.is_some() {
        return Ok(None);
    }
    insert_node(
        conn,
        &NewNode {
            parent: of.parent,
            name,
            kind: Kind::File,
            size: of.size,
            mtime_ns: of.mtime_ns,
            mode: of.mode,
            uid: of.uid,
            gid: of.gid,
            etag,
            on_remote: true,
            dirty: false,
            ranges,
            listed_at: None,
            last_access: now_s,
        },
    )
    .map(Some)
}
