//! What may leave the cache: eviction takes clean content only, never dirty, waiting,
//! pinned or open files (below a folder whose rename waits, it is fetched again from the
//! old path). Also room on a full disk, the cache's usage and a file's state in one word.

use rusqlite::Connection;

use super::pin::pinned_at;
use super::{lock, Core, FsError, FsResult};
use crate::cache;
use crate::store::{self, nodes, Kind};
use nodes::{has_unsent_changes, pinned_set};

/// Cached files and bytes, by state.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct CacheUsage {
    pub files: u64,
    pub bytes: u64,
    pub dirty_files: u64,
    pub dirty_bytes: u64,
    pub pinned_files: u64,
    pub pinned_bytes: u64,
}

impl CacheUsage {
    pub fn clean_bytes(&self) -> u64 {
        self.bytes.saturating_sub(self.dirty_bytes)
    }
}

/// The outcome of evicting one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evicted {
    /// Its content is gone; this many bytes were freed.
    Freed(u64),
    NotCached,
    /// It has changes not yet uploaded: evicting would lose them.
    Dirty,
    /// Pinned (itself or a directory above it): unpin first.
    Pinned,
    /// Open right now.
    Open,
}

/// A clean, unpinned cached file, in least-recently-used order.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub ino: u64,
    pub bytes: u64,
    pub last_access: i64,
}

/// What evicting a folder did: its clean files went; changed, pinned and open ones
/// stayed (that is what evicting a folder means, not a refusal).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FolderEvicted {
    pub files: u64,
    pub bytes: u64,
    /// Files kept: changed, pinned or open.
    pub kept: u64,
}

impl Core {
    /// Evicts the cached content of every clean file below folder `ino`.
    pub fn evict_folder(&self, ino: u64) -> FsResult<FolderEvicted> {
        let files: Vec<u64> = self
            .store
            .read(|c| store::subtrees(c, &[ino]))?
            .into_iter()
            .filter(|n| n.is_file)
            .map(|n| n.ino)
            .collect();
        let mut done = FolderEvicted::default();
        for f in files {
            match self.evict(f)? {
                Evicted::Freed(n) => {
                    done.files += 1;
                    done.bytes += n;
                }
                Evicted::NotCached => {}
                _ => done.kept += 1,
            }
        }
        Ok(done)
    }

    /// Removes the cached content of `ino`, if that loses nothing. The node stays, so the
    /// file still lists and is fetched again when read.
    pub fn evict(&self, ino: u64) -> FsResult<Evicted> {
        let pinned = self.is_pinned(ino)?;
        self.store.write(|tx| {
            let node = store::get_node(tx, ino)?.ok_or(FsError::NotFound)?;
            if node.kind != Kind::File {
                return Err(FsError::IsDir);
            }
            if node.cached_bytes == 0 && node.ranges.is_empty() {
                return Ok(Evicted::NotCached);
            }
            if has_unsent_changes(tx, ino)? {
                return Ok(Evicted::Dirty);
            }
            if pinned {
                return Ok(Evicted::Pinned);
            }
            // Checked under the store's writer, which an open takes first: no open slips
            // in. The content file goes under it too, before the commit (an open that
            // finds the file shorter than its range map trusts only the file).
            if self.is_open(ino) {
                return Ok(Evicted::Open);
            }
            store::drop_content(tx, ino)?;
            self.content.remove(ino);
            lock(&self.verified).remove(&ino);
            crate::metrics::add(&crate::metrics::METRICS.evictions, 1);
            Ok(Evicted::Freed(node.cached_bytes))
        })
    }

    /// Clean, unpinned, closed cached files, least recently used first.
    pub fn eviction_candidates(&self) -> FsResult<Vec<Candidate>> {
        let (pinned, rows) = self.store.write(|tx| {
            Ok::<_, rusqlite::Error>((pinned_set(tx)?, nodes::clean_cached_by_age(tx)?))
        })?;
        let rows: Vec<Candidate> = rows
            .into_iter()
            .map(|(ino, bytes, last_access)| Candidate {
                ino,
                bytes,
                last_access,
            })
            .collect();
        Ok(rows
            .into_iter()
            .filter(|c| !pinned.contains(&c.ino) && !self.is_open(c.ino))
            .collect())
    }

    /// Cached files and bytes, by state.
    /// Read on the store's read-only connection: never waits for the writer.
    pub fn cache_usage(&self) -> FsResult<CacheUsage> {
        let (pinned, files) = self
            .store
            .read(|c| Ok::<_, rusqlite::Error>((pinned_set(c)?, nodes::cached_files(c)?)))?;
        let mut u = CacheUsage::default();
        for (ino, bytes, dirty) in files {
            u.files += 1;
            u.bytes += bytes;
            if dirty {
                u.dirty_files += 1;
                u.dirty_bytes += bytes;
            }
            if pinned.contains(&ino) {
                u.pinned_files += 1;
                u.pinned_bytes += bytes;
            }
        }
        Ok(u)
    }

    /// On a full cache disk: evicts clean content, least recently used first, until
    /// `needed` bytes are free. Returns whether
    /// anything was freed; if not, the disk is full of content that must not be lost.
    pub(super) fn make_room(&self, needed: u64) -> bool {
        let want = needed;
        let mut freed = 0u64;
        if let Ok(candidates) = self.eviction_candidates() {
            for c in candidates {
                if let Ok((_, avail)) = cache::fs_space(&self.cache_dir) {
                    if avail >= want && freed > 0 {
                        break;
                    }
                }
                if let Ok(Evicted::Freed(n)) = self.evict(c.ino) {
                    freed += n;
                }
            }
        }
        if freed == 0 {
            let waiting = self.cache_usage().map(|u| u.dirty_bytes).unwrap_or(0);
            tracing::error!(
                "the cache disk is full of changes not yet uploaded ({waiting} bytes): \
                 writes fail with ENOSPC until uploads make room"
            );
        } else {
            tracing::info!("cache disk full: evicted {freed} bytes of clean content");
        }
        freed > 0
    }

    /// Makes sure the cache disk has room for `bytes` more, plus a reserve that keeps
    /// the state store writable (the journal must be able to record uploads, which is
    /// what frees space). Evicts clean content if needed; fails with ENOSPC when the
    /// disk is full of content that must not be lost.
    pub(super) fn ensure_space(&self, bytes: u64) -> FsResult<()> {
        let (total, avail) = cache::fs_space(&self.cache_dir)?;
        let reserve = (total / 20).min(16 << 20);
        let want = bytes.saturating_add(reserve);
        if avail >= want {
            return Ok(());
        }
        if self.make_room(want) && cache::fs_space(&self.cache_dir)?.1 >= want {
            return Ok(());
        }
        Err(FsError::NoSpace(format!(
            "{avail} bytes free on the cache disk, {bytes} needed"
        )))
    }

    /// A file's cache state in one word: `dirty` (changes not yet uploaded), `conflict`
    /// (a conflict copy, or a file with one, not yet resolved), `pinned`, `cached`,
    /// `partial`, `remote-only`; directories are `dir` or `pinned`.
    /// Read on the store's read-only connection: never waits for the writer.
    pub fn file_state(&self, ino: u64) -> FsResult<&'static str> {
        self.store.read(|conn| self.file_state_in(conn, ino))
    }

    fn file_state_in(&self, conn: &Connection, ino: u64) -> FsResult<&'static str> {
        let pinned = pinned_at(conn, ino)?;
        let node = store::get_node(conn, ino)?.ok_or(FsError::NotFound)?;
        if node.kind == Kind::Dir {
            return Ok(if pinned { "pinned" } else { "dir" });
        }
        if has_unsent_changes(conn, ino)? || self.is_write_dirty(ino) {
            return Ok("dirty");
        }
        let path = store::path_of(conn, ino)?.unwrap_or_default();
        if store::conflicts::in_open_conflict(conn, &path)? {
            return Ok("conflict");
        }
        if pinned {
            return Ok("pinned");
        }
        Ok(if node.fully_cached() {
            "cached"
        } else if !node.ranges.is_empty() {
            "partial"
        } else {
            "remote-only"
        })
    }
}
