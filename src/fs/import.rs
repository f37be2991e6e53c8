//! Writing local files into the drive from inside the daemon (backups, migration): the
//! same path a program's `write()` takes — content file, journal entry, replay — so what
//! is imported while the remote is down is staged and sent when it returns.

use std::io::Read;
use std::time::SystemTime;

use super::{Core, FsError, FsResult};
use crate::store::{self, Kind};

/// Size of the pieces an import writes.
const PIECE: usize = 1 << 20;

/// Owner and mode of what an import creates.
#[derive(Debug, Clone, Copy)]
pub struct ImportOwner {
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u32,
    pub dir_mode: u32,
}

impl Core {
    /// The owner the mount was made for, with ordinary modes.
    pub fn default_owner(&self) -> ImportOwner {
        ImportOwner {
            uid: self.cfg.uid,
            gid: self.cfg.gid,
            file_mode: 0o644,
            dir_mode: 0o755,
        }
    }

    /// Makes directory `path` (mount-relative, "/a/b") and every missing one above it.
    pub fn mkdir_all(&self, path: &str, owner: ImportOwner) -> FsResult<u64> {
        let mut ino = store::ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = match self.lookup(ino, part) {
                Ok(a) if a.kind == Kind::Dir => a.ino,
                Ok(_) => return Err(FsError::NotDir),
                Err(FsError::NotFound) => {
                    match self.mkdir(ino, part, owner.dir_mode, owner.uid, owner.gid) {
                        Ok(a) => a.ino,
                        // Made by someone else in between.
                        Err(FsError::Exists) => self.lookup(ino, part)?.ino,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
        }
        Ok(ino)
    }

    /// Writes `src` to file `path` (replacing what was there), with mtime `mtime`, and
    /// commits it to the journal durably (as `fsync` would) before returning its inode.
    /// Parent directories are made as needed. `progress` is told of each piece written.
    /// Fails with `NoSpace` when the cache is full of unsent data; nothing is half-queued
    /// then: the file is left dirty and is uploaded as it stands at the next commit.
    pub fn import_file(
        &self,
        path: &str,
        src: &mut dyn Read,
        mtime: Option<SystemTime>,
        owner: ImportOwner,
        progress: &mut dyn FnMut(u64),
    ) -> FsResult<u64> {
        let (dir, name) = match path.trim_end_matches('/').rsplit_once('/') {
            Some((d, n)) => (d, n),
            None => ("", path),
        };
        let parent = self.mkdir_all(dir, owner)?;
        let fh = match self.lookup(parent, name) {
            Ok(a) if a.kind == Kind::Dir => return Err(FsError::IsDir),
            Ok(a) => {
                let (fh, _) = self.open(a.ino, true)?;
                if let Err(e) = self.setattr(a.ino, None, None, None, Some(0), None) {
                    let _ = self.release(fh);
                    return Err(e);
                }
                fh
            }
            Err(FsError::NotFound) => {
                self.create(parent, name, owner.file_mode, owner.uid, owner.gid)?
                    .1
            }
            Err(e) => return Err(e),
        };
        let result = (|| {
            let (ino, _, _) = self.handle(fh)?;
            let mut buf = vec![0u8; PIECE];
            let mut offset = 0u64;
            loop {
                let n = match src.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(FsError::Io(e)),
                };
                self.write(fh, offset, &buf[..n])?;
                offset += n as u64;
                progress(n as u64);
            }
            if mtime.is_some() {
                self.setattr(ino, None, None, None, None, mtime)?;
            }
            self.fsync(fh)?;
            Ok(ino)
        })();
        let released = self.release(fh);
        let ino = result?;
        released?;
        // A program may hold pages of the old content in the kernel.
        self.content_dropped_keep(ino);
        Ok(ino)
    }

    /// The kernel's pages of `ino` are stale, but our content is the new one.
    fn content_dropped_keep(&self, ino: u64) {
        self.content_replaced(ino);
        self.kernel_inval_inode(ino);
    }

    /// Whether everything the journal holds for `ino` has reached the remote.
    pub fn landed(&self, ino: u64) -> FsResult<bool> {
        self.store.write(|tx| {
            let waiting = store::journal::any_of(tx, ino)?;
            if waiting || self.is_write_dirty(ino) {
                return Ok(false);
            }
            Ok(store::get_node(tx, ino)?.is_some_and(|n| n.on_remote && !n.dirty))
        })
    }

    /// Marks the cached content of `ino` as the first to go when room is needed (content
    /// the user did not read, such as an import, once it has landed).
    pub fn evict_first(&self, ino: u64) -> FsResult<()> {
        Ok(self.store.write(|tx| store::nodes::evict_first(tx, ino))?)
    }
}

/// Where the uploads of some imported files stand.
#[derive(Debug, Default)]
pub struct UploadStates {
    /// Inodes whose changes have all reached the remote.
    pub landed: std::collections::HashSet<u64>,
    /// Entries the remote refused for good (set aside as failed), of any inode:
    /// (inode, remote path, reason). A file under a refused directory waits on it.
    pub refused: Vec<(u64, String, String)>,
}

impl Core {
    /// `landed` for many files at once (one query per few hundred), plus the refused
    /// entries of the journal: what a job that imported them needs to follow them.
    pub fn upload_states(&self, inos: &[u64]) -> FsResult<UploadStates> {
        let mut out = UploadStates::default();
        self.store.write(|tx| {
            for chunk in inos.chunks(500) {
                out.landed.extend(store::nodes::landed_of(tx, chunk)?);
            }
            out.refused = store::journal::refused(tx)?;
            Ok::<_, rusqlite::Error>(())
        })?;
        out.landed.retain(|ino| !self.is_write_dirty(*ino));
        Ok(out)
    }

    /// Removes file `path` (mount-relative) if it is there; for undoing an import that
    /// could not finish. A file the remote never saw leaves no trace in the journal.
    pub fn remove_file(&self, path: &str) -> FsResult<()> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let parent = self.resolve_path(dir)?;
        match self.unlink(parent, name) {
            Ok(()) | Err(FsError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The node at `path` (mount-relative), if any, without asking the remote.
    pub fn node_at(&self, path: &str) -> FsResult<Option<store::Node>> {
        self.store.write(|tx| {
            let mut ino = store::ROOT_INO;
            for part in path.split('/').filter(|p| !p.is_empty()) {
                match store::get_child(tx, ino, part)? {
                    Some(n) => ino = n.ino,
                    None => return Ok(None),
                }
            }
            Ok(store::get_node(tx, ino)?)
        })
    }
}
