//! The filesystem core: POSIX operations over the node table, the content files, the
//! sync journal and the remote. The FUSE adapter is a thin shell around this; tests drive
//! it directly, without a kernel.
//!
//! Where things are (each file opens with what it owns):
//! - `core.rs`: the `Core` struct, `load`, the look-ups and remote calls the others use;
//!   `recover.rs`: crash recovery at start.
//! - `namespace.rs`: lookup, attributes, directory handles, mkdir, create, symlink,
//!   unlink, rmdir, rename, setattr.
//! - `open_files.rs`: open and release; `io.rs`: read, write, flush, fsync, truncate;
//!   `fetch.rs`: downloads, `fetched.rs`: what they bring; `partial.rs`: writes to files
//!   not all here.
//! - `listing.rs`, `listing_merge.rs`: folder listings; `poll.rs`: the background poll;
//!   `changes.rs`: what the replayer is changing, which a listing must not overrule.
//! - `revalidate.rs`: whether cached content is fresh and whole; `pin.rs`, `evict.rs`:
//!   what the cache keeps; `drop_entry.rs`: retrying and giving up journal entries;
//!   `conflicts.rs`: resolving a conflict (`ctl conflicts resolve`).
//! - `early_parts.rs`: large new files whose parts go while they are written.
//! - `kernel.rs`: what the kernel is told; `import.rs`: backups and migrations writing
//!   in; `error.rs`: the errors and their errno.
//!
//! Every lock of the core is listed here, in order; the other files point here.
//!
//! Lock order (never the other way round, never across a network call):
//!   `store` (the state store's writer, held for one `Store::write` or, where a comment
//!   says why, `Store::with_writer` closure) → `open_files` map → a file's in-flight
//!   downloads → `OpenFile::state`.
//! The store's closures are not async and make no network call, and none runs inside
//! another (the writer is not re-entrant): a closure calls the store's operations with
//! the connection it was given, never `self.node()`, `self.path()` or the like.
//! The state store's reader (`Store::read`: a second, read-only connection, its own
//! lock) is taken with no other lock held; while it is held only `open_files` →
//! `OpenFile::state` may be taken (`file_state` asks `is_write_dirty`). It never waits
//! for the writer (WAL), so `ctl status`, `ls`, `metrics` and `cache` answer while FUSE
//! work holds `store`.
//! Under `OpenFile::state` only its leaf `EarlyParts::state` is taken (see
//! `early_parts`); nothing else is locked while `OpenFile::state` is held. Downloads
//! run as tasks and are waited for with nothing locked (see `fetch`).
//! Leaf locks, taken alone or last and released before anything else is locked:
//!   `handles`, `dir_handles`, `content_gen`, `dir_digests`, `verified`, `verifying`,
//!   the listing refreshes' map (`listing::Refreshes`) and `remote_changes`.
//! The FUSE adapter's own lock (`fuse::Opens`) is taken before any of the core's and
//! never held across a call into the core that can block on the network.

mod changes;
pub mod conflicts;
mod core;
mod drop_entry;
pub mod early_parts;
pub mod error;
mod evict;
mod fetch;
mod fetched;
mod foreground;
mod import;
mod io;
mod kernel;
mod listing;
mod listing_merge;
mod namespace;
mod open_files;
mod partial;
mod pin;
pub mod poll;
mod recover;
mod revalidate;

pub use self::core::Core;
pub use fetch::CHUNK;
pub use import::{ImportOwner, UploadStates};
use open_files::OpenFile;
pub use poll::{PollConfig, PollReport};

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

pub use conflicts::{Keep, ResolveError};
pub use error::{FsError, FsResult};
pub use evict::{CacheUsage, Candidate, Evicted, FolderEvicted};

use crate::cache::CacheLimits;
use crate::clock::Clock;
use crate::store::Kind;

#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// A directory listing younger than this is not asked for again.
    pub dir_ttl: Duration,
    /// How long the kernel may cache attributes and names; also how old a folder's
    /// listing may be when one of its files is opened (older: it is refreshed first).
    pub attr_ttl: Duration,
    /// How long a caller waits for a listing refresh it started before answering from
    /// the listing it has (the refresh goes on in the background).
    pub refresh_wait: Duration,
    /// Owner of nodes that come from the remote (WebDAV has no owners).
    pub uid: u32,
    pub gid: u32,
    pub read_only: bool,
    pub cache: CacheLimits,
    /// The time the cache's age limit and LRU order go by, and the replayer's backoff.
    pub clock: Clock,
    /// How uploads are cut (tests make them small to reach every path with small files).
    pub uploads: UploadSizes,
    /// The background poll of the folders that matter (see `poll`).
    pub poll: PollConfig,
    /// How often, at most, downloads record a file's range map in the store while it is
    /// open (it is recorded at the last close and once the file is whole in any case).
    pub ranges_saved_every: Duration,
}

/// Sizes that decide how a file is uploaded.
#[derive(Debug, Clone, Copy)]
pub struct UploadSizes {
    /// Up to this size a file is sent from a snapshot held in memory.
    pub snapshot_limit: u64,
    /// From this size on a file goes in resumable parts where the server allows.
    pub parts_from: u64,
    pub part: u64,
    /// From this size on a changed file sends only the byte ranges written, and a write
    /// to it needs none of its other bytes here, where the server takes partial updates.
    pub partial_from: u64,
}

impl Default for UploadSizes {
    fn default() -> Self {
        UploadSizes {
            snapshot_limit: 4 << 20,
            parts_from: crate::journal::replay::PARTS_FROM,
            part: crate::journal::replay::PART_SIZE,
            partial_from: crate::journal::replay::PARTIAL_FROM,
        }
    }
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            dir_ttl: Duration::from_secs(60),
            attr_ttl: Duration::from_secs(10),
            refresh_wait: Duration::from_millis(50),
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
            read_only: false,
            cache: CacheLimits::default(),
            clock: Clock::default(),
            uploads: UploadSizes::default(),
            poll: PollConfig::default(),
            ranges_saved_every: Duration::from_millis(500),
        }
    }
}

/// What the kernel may hold about the tree (attributes, pages, names) and must forget
/// when the remote changed under it. The FUSE adapter implements it with fuser's
/// `Notifier`; tests record the calls. Called with no lock held, from any thread; an
/// implementation must not block on the kernel (a notification about an inode whose
/// request is being served would wait for that very request).
pub trait KernelCache: Send + Sync {
    /// The attributes and cached pages of `ino` are stale (for a folder: also the list
    /// of its entries).
    fn inval_inode(&self, ino: u64);
    /// The name `name` in folder `parent` was added, removed or now names another node.
    fn inval_entry(&self, parent: u64, name: &str);
}

/// Attributes of a node as the kernel sees them.
#[derive(Debug, Clone)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub atime: SystemTime,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
}

#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: String,
    pub attr: Attr,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the whole mount down with poisoned locks.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn check_name(name: &str) -> FsResult<()> {
    if name.len() > 255 {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(FsError::Invalid("bad file name"));
    }
    Ok(())
}

/// Longest path (bytes) accepted for something that must reach the server. Servers
/// store a path under their own root, within the file system's 4096-byte PATH_MAX
/// (Apache answers 403 beyond it), and take it in a request line of about 8 KB,
/// percent-encoded (414 beyond). A change that could never be sent is refused here with
/// ENAMETOOLONG instead of waiting in the journal forever.
pub const MAX_REMOTE_PATH: usize = 3800;
const MAX_ENCODED_PATH: usize = 7600;

fn check_remote_path(path: &str) -> FsResult<()> {
    let encoded = percent_encoding::utf8_percent_encode(path, percent_encoding::NON_ALPHANUMERIC)
        .map(str::len)
        .sum::<usize>();
    if path.len() > MAX_REMOTE_PATH || encoded > MAX_ENCODED_PATH {
        return Err(FsError::NameTooLong);
    }
    Ok(())
}

/// Scratch files davdrive itself puts on the remote (partial uploads, capability probes);
/// they never show in the mount.
pub fn is_internal_name(name: &str) -> bool {
    name.contains(".davdrive-part-") || name.starts_with(".davdrive-range-probe-")
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}
