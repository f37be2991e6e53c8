//! Pins: a pinned file, or everything below a pinned folder, is kept cached and never
//! evicted. Pins live in the node table and survive remounts; the sweeper fetches what
//! pinned files miss (`fetch_pinned`).

use rusqlite::Connection;

use super::{lock, Core, FsError, FsResult};
use crate::store::{self, nodes, Kind};

/// Whether `ino` is pinned, or lies below a pinned directory.
pub(super) fn pinned_at(conn: &Connection, ino: u64) -> rusqlite::Result<bool> {
    let mut cur = ino;
    while let Some(n) = store::get_node(conn, cur)? {
        if n.pinned {
            return Ok(true);
        }
        if n.parent == 0 || n.ino == store::ROOT_INO {
            break;
        }
        cur = n.parent;
    }
    Ok(false)
}

impl Core {
    /// Whether `ino` or a directory above it is pinned.
    pub fn is_pinned(&self, ino: u64) -> FsResult<bool> {
        Ok(self.store.write(|tx| pinned_at(tx, ino))?)
    }

    /// Pins or unpins `ino` (a directory pins everything below it). Pins persist; the
    /// content of newly pinned files is fetched by `fetch_pinned`.
    pub fn set_pinned(&self, ino: u64, pinned: bool) -> FsResult<()> {
        let n = self.store.write(|tx| nodes::set_pinned(tx, ino, pinned))?;
        if n == 0 {
            return Err(FsError::NotFound);
        }
        if pinned {
            // The sweeper fetches what pinned files miss.
            self.cache_grew.notify_one();
        }
        Ok(())
    }

    /// Fetches whatever pinned files (and files below pinned directories) miss. Returns
    /// how many files were completed; stops quietly while the remote is unreachable.
    pub fn fetch_pinned(&self) -> FsResult<usize> {
        let roots = self.store.write(|tx| nodes::pinned_roots(tx))?;
        let mut done = 0;
        let mut stack = roots;
        while let Some((ino, kind)) = stack.pop() {
            if !self.health.is_online() {
                break;
            }
            if kind == Kind::Dir {
                if let Err(e) = self.ensure_listing_unnoted(ino, self.cfg.dir_ttl) {
                    tracing::warn!("pinned directory (inode {ino}) could not be listed: {e}");
                    continue;
                }
                for c in self.store.write(|tx| store::children(tx, ino))? {
                    stack.push((c.ino, c.kind));
                }
                continue;
            }
            let node = self.node(ino)?;
            if node.fully_cached() {
                continue;
            }
            match self.fetch_whole(ino) {
                Ok(()) => done += 1,
                Err(e) => tracing::warn!("pinned file (inode {ino}) could not be fetched: {e}"),
            }
        }
        Ok(done)
    }

    /// Downloads every missing byte of file `ino`.
    pub fn fetch_whole(&self, ino: u64) -> FsResult<()> {
        let of = self.open_file(ino)?;
        of.fetch_started();
        let size = lock(&of.state).size;
        let result = self.fetch_range(&of, ino, 0, size, false);
        of.fetch_ended();
        self.close_open_file(ino);
        result
    }
}
