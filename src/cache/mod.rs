//! Content files: one sparse file per node under `<cache dir>/content/`, named by inode
//! number. Which byte ranges of a file are present is kept in the node table.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub struct ContentFiles {
    dir: PathBuf,
}

impl ContentFiles {
    pub fn new(cache_dir: &Path) -> io::Result<ContentFiles> {
        let dir = cache_dir.join("content");
        std::fs::create_dir_all(&dir)?;
        Ok(ContentFiles { dir })
    }

    /// Spread over 256 folders so none grows huge.
    pub fn path(&self, ino: u64) -> PathBuf {
        self.dir
            .join(format!("{:02x}", ino & 0xff))
            .join(ino.to_string())
    }

    /// Opens the content file for reading and writing, creating it empty if missing.
    pub fn open(&self, ino: u64) -> io::Result<File> {
        let p = self.path(ino);
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&p)
        };
        match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(p.parent().unwrap())?;
                open()
            }
            r => r,
        }
    }

    pub fn len(&self, ino: u64) -> io::Result<u64> {
        match std::fs::metadata(self.path(ino)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    pub fn remove(&self, ino: u64) {
        match std::fs::remove_file(self.path(ino)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("could not remove content file of inode {ino}: {e}"),
        }
    }

    /// Gives the content of `from` to `to` (a conflict copy takes over the local version).
    pub fn rename(&self, from: u64, to: u64) -> io::Result<()> {
        let dest = self.path(to);
        std::fs::create_dir_all(dest.parent().unwrap())?;
        std::fs::rename(self.path(from), dest)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
