//! The disk cache's files: content files (`content.rs`), the checks that the cache dir
//! is ours (`secure.rs`), content hashes and server checksums (`verify.rs`), the limits
//! and free space. What is kept, pinned, evicted or checked is decided by the core
//! (`fs/pin.rs`, `fs/evict.rs`, `fs/revalidate.rs`); `sweeper.rs` runs it in the background.

mod content;
mod secure;
pub mod sweeper;
mod verify;

pub use content::ContentFiles;
pub use secure::{private_dir, secure_cache_dir};
pub use verify::{checksum_matches, hex, sha256_prefix};

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

/// What the cache may keep: clean, unpinned content goes when unused for `max_age`, and
/// least recently used first when the cache passes `max_size` or the disk under it has
/// less than `min_free` left.
#[derive(Debug, Clone)]
pub struct CacheLimits {
    pub max_age: Duration,
    /// None: 10 GiB or 20% of the cache's filesystem, whichever is smaller.
    pub max_size: Option<u64>,
    pub min_free: u64,
    /// How often the sweeper runs on its own (it also runs at start).
    pub sweep_every: Duration,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_size: None,
            min_free: 1 << 30,
            sweep_every: Duration::from_secs(3600),
        }
    }
}

impl CacheLimits {
    /// The size cap for a cache on a filesystem of `fs_total` bytes.
    pub fn max_size_for(&self, fs_total: u64) -> u64 {
        self.max_size.unwrap_or((10u64 << 30).min(fs_total / 5))
    }
}

/// Total and available bytes of the filesystem holding `path`.
pub fn fs_space(path: &Path) -> io::Result<(u64, u64)> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::other("path with a NUL byte"))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let unit = st.f_frsize as u64;
    Ok((st.f_blocks as u64 * unit, st.f_bavail as u64 * unit))
}

/// Opens `path` for reading without following a symbolic link at its last component.
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

fn euid() -> u32 {
    unsafe { libc::geteuid() }
}
