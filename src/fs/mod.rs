//! The filesystem core: POSIX operations over the node table, the content files, the
//! sync journal and the remote. The FUSE adapter is a thin shell around this; tests drive
//! it directly, without a kernel.
//!
//! Lock order (never the other way round, never across a network call):
//!   `store` (the state store's writer, `Store::lock`) → `open_files` map → a file's
//!   in-flight downloads → `OpenFile::state`.
//! The state store's reader (`Store::read`: a second, read-only connection, its own
//! lock) is taken with no other lock held; while it is held only `open_files` →
//! `OpenFile::state` may be taken (`file_state` asks `is_write_dirty`). It never waits
//! for the writer (WAL), so `ctl status`, `ls`, `metrics` and `cache` answer while FUSE
//! work holds `store`.
//! Nothing is locked while `OpenFile::state` is held. Downloads run as tasks and are
//! waited for with nothing locked (see `fetch`).
//! Leaf locks, taken alone or last and released before anything else is locked:
//!   `handles`, `dir_handles`, `content_gen`, `dir_digests`, `verified`, `verifying`,
//!   the listing refreshes' map (`listing::Refreshes`) and `remote_changes`.
//! The FUSE adapter's own lock (`fuse::Opens`) is taken before any of the core's and
//! never held across a call into the core that can block on the network.

mod cache_ops;
mod changes;
pub mod conflicts;
pub mod error;
mod fetch;
mod import;
mod listing;
mod partial;
pub mod poll;

pub use import::{ImportOwner, UploadStates};
pub use poll::{PollConfig, PollReport};

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use rusqlite::Connection;
use tokio::sync::Notify;

pub use cache_ops::{CacheUsage, Candidate, Evicted, FolderEvicted};
pub use conflicts::{Keep, ResolveError};
pub use error::{FsError, FsResult};

use crate::cache::{CacheLimits, ContentFiles};
use crate::clock::Clock;
use crate::health::Health;
use crate::journal;
use crate::remote::{Remote, RemoteError};
use crate::store::{self, Kind, NewNode, Node, RangeSet, ROOT_INO};

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

/// Per-file state shared by all open handles of one inode.
struct OpenFile {
    file: File,
    downloads: fetch::Downloads,
    state: Mutex<OpenState>,
}

struct OpenState {
    opens: u32,
    size: u64,
    ranges: RangeSet,
    mtime_ns: i64,
    /// Written since the last commit to the journal.
    write_dirty: bool,
    /// The byte ranges written since the last commit (what `Node::written` gains then).
    written: RangeSet,
    /// Counts writes, so a commit knows whether a write slipped in while it ran.
    write_seq: u64,
    /// Access time recorded while open (None: not read or set since the open).
    atime_ns: Option<i64>,
    /// ctime as the store has it, for the relatime rule.
    ctime_ns: i64,
}

struct Handle {
    ino: u64,
    writable: bool,
}

pub struct Core {
    pub cfg: CoreConfig,
    store: store::Store,
    content: ContentFiles,
    remote: Arc<dyn Remote>,
    rt: tokio::runtime::Handle,
    pub health: Health,
    /// Wakes the replayer when the journal got something new.
    pub journal_changed: Arc<Notify>,
    /// Bumped whenever the replayer finishes or gives up on an entry: `sync --wait`,
    /// backups and migrations wait on it instead of polling.
    journal_progress: tokio::sync::watch::Sender<u64>,
    open_files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    handles: Mutex<HashMap<u64, Handle>>,
    dir_handles: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    /// Folder listings being refreshed (see listing.rs).
    refreshes: listing::Refreshes,
    /// Content generation per inode: bumped when cached content is replaced by a newer
    /// remote version, so the kernel's page cache is kept only while it is still right.
    content_gen: Mutex<HashMap<u64, (u64, u64)>>,
    next_fh: AtomicU64,
    cache_dir: PathBuf,
    /// What the replayer started or finished changing on the remote: a listing fetched
    /// across a change inside it may be stale and is not merged.
    remote_changes: changes::RemoteChanges,
    /// Whether the server takes `PUT` with `Content-Range`, once asked.
    pub partial_put: tokio::sync::OnceCell<bool>,
    /// Whether the server takes partial updates (ranges written into a file, and COPY and
    /// MOVE held to a version), once asked (see `remote::PartialSupport`).
    pub partial_updates: tokio::sync::OnceCell<bool>,
    /// One per file while its base copy is made (see `partial.rs`): a write and an
    /// upload never make two.
    copy_locks: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
    /// Whether the server honours If-Match / If-None-Match, once asked.
    pub preconditions: tokio::sync::OnceCell<bool>,
    /// Per directory, a digest of the entries the kernel was last given.
    dir_digests: Mutex<HashMap<u64, u64>>,
    /// This core itself, for download tasks.
    me: Weak<Core>,
    /// Wakes the cache sweeper when content was added (it checks the size limits).
    pub cache_grew: Arc<Notify>,
    /// Fully cached files whose content was hashed (checked or recorded) in this run.
    verified: Mutex<HashSet<u64>>,
    /// Large cached files being hashed in the background (one check each at a time).
    verifying: Mutex<HashSet<u64>>,
    /// What the kernel caches, to be told of remote changes (set by the FUSE adapter).
    kernel: OnceLock<Arc<dyn KernelCache>>,
    /// The background poll's memory: what it saw of each folder, what it learnt of
    /// the server, what folders were used lately, its last round (see `poll`).
    poll: poll::PollState,
    /// The largest file the cache's file system holds, once measured (`max_file_size`).
    max_file_size: OnceLock<u64>,
    /// Whether the server keeps dead properties (mode, owner, times), once found out.
    pub dead_props: OnceLock<bool>,
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

/// A file being removed takes its base copy on the server with it (queued like any
/// change: the server may be away).
fn forget_base_copy(tx: &Connection, n: &Node) -> rusqlite::Result<()> {
    if let Some(copy) = &n.base_copy {
        journal::record_scratch_removal(tx, n.ino, copy)?;
        store::set_base_copy(tx, n.ino, None)?;
    }
    Ok(())
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

impl Core {
    /// Opens the state in `cache_dir` (creating it) and recovers from an earlier crash:
    /// files that were being written get their upload queued, orphans are removed.
    pub fn load(
        cache_dir: &Path,
        remote: Arc<dyn Remote>,
        rt: tokio::runtime::Handle,
        health: Health,
        cfg: CoreConfig,
    ) -> FsResult<Arc<Core>> {
        crate::cache::secure_cache_dir(cache_dir)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))?;
        let state = store::Store::open(&cache_dir.join("state.db"))?;
        let content = ContentFiles::new(cache_dir)?;
        let core = Arc::new_cyclic(|me| Core {
            cfg,
            store: state,
            content,
            remote,
            rt,
            health,
            journal_changed: Arc::new(Notify::new()),
            open_files: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            dir_handles: Mutex::new(HashMap::new()),
            refreshes: listing::Refreshes::default(),
            content_gen: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            cache_dir: cache_dir.to_path_buf(),
            remote_changes: changes::RemoteChanges::default(),
            partial_put: tokio::sync::OnceCell::new(),
            partial_updates: tokio::sync::OnceCell::new(),
            copy_locks: Mutex::new(HashMap::new()),
            preconditions: tokio::sync::OnceCell::new(),
            me: me.clone(),
            dir_digests: Mutex::new(HashMap::new()),
            cache_grew: Arc::new(Notify::new()),
            verified: Mutex::new(HashSet::new()),
            verifying: Mutex::new(HashSet::new()),
            kernel: OnceLock::new(),
            poll: poll::PollState::default(),
            max_file_size: OnceLock::new(),
            dead_props: OnceLock::new(),
            journal_progress: tokio::sync::watch::channel(0).0,
        });
        core.recover()?;
        Ok(core)
    }

    fn recover(&self) -> FsResult<()> {
        let mut conn = self.store.lock();
        // IMMEDIATE: it writes, and a deferred transaction that must upgrade while another
        // connection writes fails at once instead of waiting (busy_timeout).
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if store::get_node(&tx, ROOT_INO)?.is_none() {
            let ino = store::insert_node(
                &tx,
                &NewNode {
                    parent: 0,
                    name: "",
                    kind: Kind::Dir,
                    size: 0,
                    mtime_ns: store::now_ns(),
                    mode: 0o755,
                    uid: self.cfg.uid,
                    gid: self.cfg.gid,
                    etag: None,
                    on_remote: true,
                    dirty: false,
                    ranges: RangeSet::default(),
                    listed_at: None,
                    last_access: self.cfg.clock.now_s(),
                },
            )?;
            debug_assert_eq!(ino, ROOT_INO);
        }
        journal::reset_running(&tx)?;
        // Files unlinked while open die with the process that held them.
        let orphans = store::nodes::orphans(&tx)?;
        for ino in &orphans {
            store::delete_node(&tx, *ino)?;
        }
        // Files written but not closed when the daemon died: what reached the content
        // file is all there is, so its size is the file's and it is queued (an upload
        // already waiting covers it). This holds for files with a waiting upload too: a
        // file reopened and written (grown or cut) after its last close has a node that
        // still says the size of that close.
        let dirty = store::nodes::dirty_files(&tx)?;
        // A read-only mount queues nothing: they wait for the next read-write mount.
        let dirty = if self.cfg.read_only {
            Vec::new()
        } else {
            dirty
        };
        for ino in &dirty {
            let node = store::get_node(&tx, *ino)?.expect("selected above");
            let size = if node.fully_cached() {
                // Writes to a file all here are recorded at close: what reached the
                // content file is the file, and which bytes changed is not known.
                let size = self.content.len(*ino)?;
                store::set_local_content(&tx, *ino, size, node.mtime_ns)?;
                store::forget_written(&tx, *ino)?;
                size
            } else {
                // Written without the rest of it here (partial updates): each write was
                // recorded (size, ranges present and written) before its bytes went
                // into the content file. A write cut off by the crash may leave zeros
                // in its range, as on a local disk; the bytes not here stay the
                // server's.
                let f = self.content.open(*ino)?;
                if f.metadata()?.len() < node.size {
                    f.set_len(node.size)?;
                }
                node.size
            };
            if let Some(path) = store::path_of(&tx, *ino)? {
                tracing::info!("recovering unfinished write of {path} ({size} bytes)");
                journal::record_put(&tx, *ino, &path)?;
            }
        }
        tx.commit()?;
        drop(conn);
        for ino in orphans {
            self.content.remove(ino);
        }
        // Upload snapshots of earlier versions lived here; they are held in memory now.
        let _ = std::fs::remove_dir_all(self.cache_dir.join("uploads"));
        Ok(())
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    pub fn remote(&self) -> &Arc<dyn Remote> {
        &self.remote
    }

    pub fn content(&self) -> &ContentFiles {
        &self.content
    }

    /// The state store's writer, for the replayer and the control socket. Keep the
    /// guard short.
    pub fn store(&self) -> MutexGuard<'_, Connection> {
        self.store.lock()
    }

    /// The state store: `read` on its read-only connection answers while the writer is
    /// busy (see `store::Store`).
    pub fn db(&self) -> &store::Store {
        &self.store
    }

    /// Whether file `ino` has writes not yet committed to the journal.
    pub fn is_write_dirty(&self, ino: u64) -> bool {
        let of = lock(&self.open_files).get(&ino).cloned();
        of.map(|of| lock(&of.state).write_dirty).unwrap_or(false)
    }

    /// Never called with the store locked (it counts a folder's subfolders there).
    fn node_attr(&self, n: &Node) -> Attr {
        let (size, mtime_ns) = match lock(&self.open_files).get(&n.ino) {
            Some(of) if n.kind == Kind::File => {
                let st = lock(&of.state);
                (st.size, st.mtime_ns)
            }
            _ => (n.size, n.mtime_ns),
        };
        let mtime = store::ns_to_system_time(mtime_ns);
        let nlink = match n.kind {
            // `.`, the entry in its parent, and each subfolder's `..`.
            Kind::Dir => 2 + self.subdirs(n.ino),
            // Unlinked while open: still readable through its descriptors, in no folder.
            _ if n.parent == 0 && n.ino != ROOT_INO => 0,
            _ => 1,
        };
        Attr {
            ino: n.ino,
            kind: n.kind,
            size,
            mtime,
            ctime: store::ns_to_system_time(n.ctime_ns.max(mtime_ns)),
            atime: store::ns_to_system_time(self.atime_ns(n, mtime_ns)),
            // A link's own mode means nothing on Linux: it shows as rwxrwxrwx.
            mode: if n.kind == Kind::Symlink {
                0o777
            } else {
                n.mode & 0o7777
            },
            uid: n.uid,
            gid: n.gid,
            nlink,
        }
    }

    /// The access time of `n` as the kernel sees it: the one recorded (by a read or by
    /// `utimensat`), or the mtime before any was.
    fn atime_ns(&self, n: &Node, mtime_ns: i64) -> i64 {
        let open = lock(&self.open_files)
            .get(&n.ino)
            .and_then(|of| lock(&of.state).atime_ns);
        open.or(n.atime_ns).unwrap_or(mtime_ns)
    }

    /// Subfolders of `dir` known here (a folder not listed yet counts none).
    fn subdirs(&self, dir: u64) -> u32 {
        store::subdir_count(&self.store.lock(), dir)
            .map(|n| n.min(u32::MAX as u64 - 2) as u32)
            .unwrap_or(0)
    }

    fn node(&self, ino: u64) -> FsResult<Node> {
        store::get_node(&self.store.lock(), ino)?.ok_or(FsError::NotFound)
    }

    fn path(&self, ino: u64) -> FsResult<String> {
        store::path_of(&self.store.lock(), ino)?.ok_or(FsError::NotFound)
    }

    /// Where the server holds node `ino` now: its path here with the renames that still
    /// wait undone (see `journal::remote_path_of`), and its path here.
    fn remote_path(&self, ino: u64) -> FsResult<(String, String)> {
        let conn = self.store.lock();
        let here = store::path_of(&conn, ino)?.ok_or(FsError::NotFound)?;
        let there = crate::journal::remote_path_of(&conn, &here)?;
        Ok((there, here))
    }

    fn ensure_writable(&self) -> FsResult<()> {
        if self.cfg.read_only {
            Err(FsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Runs a remote call from a FUSE thread, marking the remote offline on transport errors.
    fn call<T>(
        &self,
        path: &str,
        fut: impl std::future::Future<Output = Result<T, RemoteError>>,
    ) -> FsResult<T> {
        match self.rt.block_on(fut) {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.is_transport() {
                    self.health.mark_offline(&e.to_string());
                }
                Err(FsError::Remote {
                    path: path.to_string(),
                    source: e,
                })
            }
        }
    }

    // ----- directories: see listing.rs --------------------------------------------

    pub fn is_open(&self, ino: u64) -> bool {
        lock(&self.open_files).contains_key(&ino)
    }

    /// The replayer is changing the remote (called before and after each change).
    /// The replayer finished, or gave up on, a journal entry.
    pub fn journal_progressed(&self) {
        self.journal_progress.send_modify(|n| *n += 1);
    }

    /// Changes whenever the journal made progress (see `journal_progressed`).
    pub fn journal_progress(&self) -> tokio::sync::watch::Receiver<u64> {
        self.journal_progress.subscribe()
    }

    /// Blocks (never on a runtime thread) until the journal makes progress, the remote's
    /// health changes, or `at_most` passes.
    pub fn wait_journal_progress(
        &self,
        progress: &mut tokio::sync::watch::Receiver<u64>,
        at_most: Duration,
    ) {
        let mut health = self.health.subscribe();
        self.rt.block_on(async {
            tokio::select! {
                _ = progress.changed() => {}
                _ = health.changed() => {}
                _ = tokio::time::sleep(at_most) => {}
            }
        });
    }

    /// Nothing is running, nothing may start, and nothing waits out a backoff: every
    /// change left in the journal is set aside or held back by one that is, and waiting
    /// longer will not drain it.
    pub fn journal_stuck(&self) -> FsResult<bool> {
        let now = self.clock().now_ms();
        // On the writer: what the replayer decides is what counts here.
        Ok(self.store.write(|c| {
            Ok::<_, rusqlite::Error>(
                !journal::anything_running(c)?
                    && journal::ready(c, &Default::default(), 1, now)?.is_empty()
                    && journal::next_retry_at(c, now)?.is_none(),
            )
        })?)
    }

    /// The replayer starts or finishes changing these remote paths (see `changes`).
    pub fn remote_changing(&self, paths: &[&str]) {
        self.remote_changes.changed(paths);
    }

    /// The cached content of `ino` was replaced behind the kernel's back.
    pub fn content_replaced(&self, ino: u64) {
        self.bump_content_gen(ino);
        lock(&self.verified).remove(&ino);
    }

    /// The kernel forgot inode `ino` (FUSE `forget`): its pages and entries of it are
    /// gone, so what is kept here about them goes too, unless the file is open. Keeps
    /// the per-inode maps as small as the kernel's inode cache, however many inodes a
    /// walk has seen. Everything dropped here is worked out again when needed.
    pub fn forget(&self, ino: u64) {
        if self.is_open(ino) {
            return;
        }
        lock(&self.content_gen).remove(&ino);
        lock(&self.dir_digests).remove(&ino);
        lock(&self.verified).remove(&ino);
    }

    fn bump_content_gen(&self, ino: u64) {
        lock(&self.content_gen).entry(ino).or_insert((0, 0)).0 += 1;
    }

    /// True when the kernel's cached pages of `ino` still match our content; records
    /// that the kernel now holds the current generation.
    fn kernel_cache_valid(&self, ino: u64) -> bool {
        let mut gens = lock(&self.content_gen);
        let e = gens.entry(ino).or_insert((0, u64::MAX));
        let valid = e.1 == e.0;
        e.1 = e.0;
        valid
    }

    pub fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        check_name(name)?;
        self.ensure_listing(parent)?;
        let n = store::get_child(&self.store.lock(), parent, name)?.ok_or(FsError::NotFound)?;
        Ok(self.node_attr(&n))
    }

    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        Ok(self.node_attr(&self.node(ino)?))
    }

    /// Opens a directory: the entries are fixed now, so offsets stay meaningful.
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        Ok(self.opendir_cached(ino)?.0)
    }

    /// Opens a directory. Also returns whether the kernel may keep what it cached of
    /// this directory's entries: true when they are the same as at the last open, so a
    /// repeated `ls` costs no FUSE round trips. (Changes made through the mount itself
    /// invalidate the kernel's copy on their own.)
    pub fn opendir_cached(&self, ino: u64) -> FsResult<(u64, bool)> {
        self.ensure_listing(ino)?;
        let node = self.node(ino)?;
        let children = store::children(&self.store.lock(), ino)?;
        let mut entries = Vec::with_capacity(children.len() + 2);
        let self_attr = self.node_attr(&node);
        entries.push(DirEntry {
            name: ".".into(),
            attr: self_attr.clone(),
        });
        let parent_attr = if node.parent != 0 {
            self.node(node.parent)
                .map(|p| self.node_attr(&p))
                .unwrap_or(self_attr)
        } else {
            self_attr
        };
        entries.push(DirEntry {
            name: "..".into(),
            attr: parent_attr,
        });
        for c in &children {
            entries.push(DirEntry {
                name: c.name.clone(),
                attr: self.node_attr(c),
            });
        }
        let digest = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            for c in &children {
                (&c.name, c.ino, c.kind == Kind::Dir).hash(&mut h);
            }
            h.finish()
        };
        let unchanged = lock(&self.dir_digests).insert(ino, digest) == Some(digest);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.dir_handles).insert(fh, Arc::new(entries));
        Ok((fh, unchanged))
    }

    pub fn readdir(&self, fh: u64) -> FsResult<Arc<Vec<DirEntry>>> {
        lock(&self.dir_handles)
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)
    }

    pub fn releasedir(&self, fh: u64) {
        lock(&self.dir_handles).remove(&fh);
    }

    // ----- namespace changes ---------------------------------------------------------

    /// Inserts a node created here (not yet on the remote) into directory `parent`.
    #[allow(clippy::too_many_arguments)]
    fn insert_local_child(
        &self,
        tx: &Connection,
        parent: u64,
        name: &str,
        kind: Kind,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> FsResult<u64> {
        let p = store::get_node(tx, parent)?.ok_or(FsError::NotFound)?;
        if p.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        if store::get_child(tx, parent, name)?.is_some() {
            return Err(FsError::Exists);
        }
        check_remote_path(&join(
            &store::path_of(tx, parent)?.ok_or(FsError::NotFound)?,
            name,
        ))?;
        Ok(store::insert_node(
            tx,
            &NewNode {
                parent,
                name,
                kind,
                size: 0,
                mtime_ns: store::now_ns(),
                mode: mode & 0o7777,
                uid,
                gid,
                etag: None,
                on_remote: false,
                // A new file is dirty from birth: even an empty file must reach the
                // remote. Its upload is queued when it is closed (or at the next start
                // after a crash). A new directory is fully known: nothing to list.
                dirty: kind == Kind::File,
                ranges: RangeSet::default(),
                listed_at: (kind == Kind::Dir).then(store::now_ms),
                last_access: self.cfg.clock.now_s(),
            },
        )?)
    }

    pub fn mkdir(&self, parent: u64, name: &str, mode: u32, uid: u32, gid: u32) -> FsResult<Attr> {
        self.ensure_writable()?;
        check_name(name)?;
        self.ensure_listing(parent)?;
        let attr = {
            let mut conn = self.store.lock();
            let tx = conn.transaction()?;
            let ino = self.insert_local_child(&tx, parent, name, Kind::Dir, mode, uid, gid)?;
            let path = store::path_of(&tx, ino)?.ok_or(FsError::NotFound)?;
            journal::record_mkcol(&tx, ino, &path)?;
            store::touch_dir(&tx, parent, store::now_ns())?;
            let n = store::get_node(&tx, ino)?.ok_or(FsError::NotFound)?;
            tx.commit()?;
            n
        };
        // Not under the store lock: the attributes count subfolders in the store.
        let attr = self.node_attr(&attr);
        self.journal_changed.notify_one();
        Ok(attr)
    }

    /// Creates an empty file and opens it. Returns its attributes and a handle.
    pub fn create(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> FsResult<(Attr, u64)> {
        self.ensure_writable()?;
        check_name(name)?;
        self.ensure_listing(parent)?;
        let ino = {
            let mut conn = self.store.lock();
            let tx = conn.transaction()?;
            let ino = self.insert_local_child(&tx, parent, name, Kind::File, mode, uid, gid)?;
            let f = self.content.open(ino)?;
            f.set_len(0)?;
            store::touch_dir(&tx, parent, store::now_ns())?;
            tx.commit()?;
            ino
        };
        let fh = self.open_handle(ino, true)?;
        {
            let of = lock(&self.open_files)
                .get(&ino)
                .cloned()
                .ok_or(FsError::BadHandle)?;
            lock(&of.state).write_dirty = true;
        }
        self.kernel_cache_valid(ino);
        Ok((self.getattr(ino)?, fh))
    }

    /// Creates symbolic link `name` in `parent` pointing at `target`. It is stored as a
    /// small file holding the target, marked as a link by a dead property (see
    /// `remote::Meta`), so it needs a server that keeps dead properties: on one known to
    /// keep none it is refused (`EPERM`), as before. davdrive itself never follows it;
    /// the kernel resolves it for programs, like any symbolic link.
    pub fn symlink(
        &self,
        parent: u64,
        name: &str,
        target: &str,
        uid: u32,
        gid: u32,
    ) -> FsResult<Attr> {
        self.ensure_writable()?;
        check_name(name)?;
        if target.is_empty() || target.contains('\0') {
            return Err(FsError::Invalid("empty symbolic link target"));
        }
        if target.len() > 4095 {
            return Err(FsError::NameTooLong);
        }
        if self.dead_props.get().is_none() && self.health.is_online() {
            // Asked once; offline, the link is kept and the first upload finds out.
            if let Ok(kept) = self.call("/", self.remote.dead_props_supported()) {
                crate::journal::replay::meta::note_support(self, kept);
            }
        }
        if self.dead_props.get() == Some(&false) {
            return Err(FsError::Unsupported(
                "symbolic links need a server that keeps dead properties",
            ));
        }
        self.ensure_listing(parent)?;
        let n = {
            let mut conn = self.store.lock();
            let tx = conn.transaction()?;
            let ino = self.insert_local_child(&tx, parent, name, Kind::Symlink, 0o777, uid, gid)?;
            let f = self.content.open(ino)?;
            f.set_len(0)?;
            f.write_all_at(target.as_bytes(), 0)?;
            let now = store::now_ns();
            store::set_local_content(&tx, ino, target.len() as u64, now)?;
            store::set_link_target(&tx, ino, target)?;
            let path = store::path_of(&tx, ino)?.ok_or(FsError::NotFound)?;
            journal::record_put(&tx, ino, &path)?;
            store::touch_dir(&tx, parent, now)?;
            let n = store::get_node(&tx, ino)?.ok_or(FsError::NotFound)?;
            tx.commit()?;
            n
        };
        self.journal_changed.notify_one();
        Ok(self.node_attr(&n))
    }

    /// The target of symbolic link `ino` (`EINVAL` for anything else, as on a disk).
    pub fn readlink(&self, ino: u64) -> FsResult<String> {
        let n = self.node(ino)?;
        match (n.kind, n.link_target) {
            (Kind::Symlink, Some(t)) => Ok(t),
            _ => Err(FsError::Invalid("not a symbolic link")),
        }
    }

    pub fn unlink(&self, parent: u64, name: &str) -> FsResult<()> {
        self.ensure_writable()?;
        check_name(name)?;
        self.ensure_listing(parent)?;
        let gone = {
            let mut conn = self.store.lock();
            let tx = conn.transaction()?;
            let n = store::get_child(&tx, parent, name)?.ok_or(FsError::NotFound)?;
            if n.kind == Kind::Dir {
                return Err(FsError::IsDir);
            }
            let path = store::path_of(&tx, n.ino)?.ok_or(FsError::NotFound)?;
            journal::record_remove(&tx, &n, &path)?;
            forget_base_copy(&tx, &n)?;
            let gone = self.detach(&tx, &n)?;
            store::touch_dir(&tx, parent, store::now_ns())?;
            tx.commit()?;
            gone
        };
        if let Some(ino) = gone {
            self.content.remove(ino);
        }
        self.journal_changed.notify_one();
        Ok(())
    }

    /// Takes a file out of the namespace. A file still open lives on as an orphan until
    /// its last handle closes; otherwise its row goes now and the caller removes its
    /// content (returned inode) after the commit.
    fn detach(&self, c: &Connection, n: &Node) -> FsResult<Option<u64>> {
        if n.kind == Kind::File && self.is_open(n.ino) {
            store::move_node(c, n.ino, 0, &format!(".orphan-{}", n.ino))?;
            Ok(None)
        } else {
            store::delete_node(c, n.ino)?;
            Ok(Some(n.ino))
        }
    }

    pub fn rmdir(&self, parent: u64, name: &str) -> FsResult<()> {
        self.ensure_writable()?;
        check_name(name)?;
        self.ensure_listing(parent)?;
        let n = store::get_child(&self.store.lock(), parent, name)?.ok_or(FsError::NotFound)?;
        if n.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        // Its remote children count too, so it must be listed.
        self.ensure_listing(n.ino)?;
        {
            let mut conn = self.store.lock();
            let tx = conn.transaction()?;
            let n = store::get_child(&tx, parent, name)?.ok_or(FsError::NotFound)?;
            if store::has_children(&tx, n.ino)? {
                return Err(FsError::NotEmpty);
            }
            let path = store::path_of(&tx, n.ino)?.ok_or(FsError::NotFound)?;
            journal::record_remove(&tx, &n, &path)?;
            store::delete_node(&tx, n.ino)?;
            store::touch_dir(&tx, parent, store::now_ns())?;
            tx.commit()?;
        }
        self.journal_changed.notify_one();
        Ok(())
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        no_replace: bool,
    ) -> FsResult<()> {
        self.ensure_writable()?;
        check_name(name)?;
        check_name(new_name)?;
        self.ensure_listing(parent)?;
        self.ensure_listing(new_parent)?;
        // A directory being replaced must be known to be empty, remote children included.
        let target = store::get_child(&self.store.lock(), new_parent, new_name)?;
        if let Some(t) = target.filter(|t| t.kind == Kind::Dir) {
            self.ensure_listing(t.ino)?;
        }
        let gone = {
            let mut conn = self.store.lock();
            let tx = conn.transaction()?;
            let src = store::get_child(&tx, parent, name)?.ok_or(FsError::NotFound)?;
            let np = store::get_node(&tx, new_parent)?.ok_or(FsError::NotFound)?;
            if np.kind != Kind::Dir {
                return Err(FsError::NotDir);
            }
            if src.kind == Kind::Dir {
                // Not into itself or below itself.
                let mut cur = new_parent;
                while cur != 0 {
                    if cur == src.ino {
                        return Err(FsError::Invalid("cannot move a directory into itself"));
                    }
                    cur = if cur == ROOT_INO {
                        0
                    } else {
                        store::get_node(&tx, cur)?.map(|n| n.parent).unwrap_or(0)
                    };
                }
            }
            let from = store::path_of(&tx, src.ino)?.ok_or(FsError::NotFound)?;
            let to_dir = store::path_of(&tx, new_parent)?.ok_or(FsError::NotFound)?;
            let to = join(&to_dir, new_name);
            check_remote_path(&to)?;
            let mut gone = None;
            if let Some(dst) = store::get_child(&tx, new_parent, new_name)? {
                if dst.ino == src.ino {
                    return Ok(());
                }
                if no_replace {
                    return Err(FsError::Exists);
                }
                match (src.kind, dst.kind) {
                    (Kind::Dir, k) if k != Kind::Dir => return Err(FsError::NotDir),
                    (k, Kind::Dir) if k != Kind::Dir => return Err(FsError::IsDir),
                    (Kind::Dir, Kind::Dir) if store::has_children(&tx, dst.ino)? => {
                        return Err(FsError::NotEmpty)
                    }
                    _ => {}
                }
                journal::record_remove(&tx, &dst, &to)?;
                forget_base_copy(&tx, &dst)?;
                gone = self.detach(&tx, &dst)?;
            }
            journal::record_rename(&tx, &src, &from, &to)?;
            store::move_node(&tx, src.ino, new_parent, new_name)?;
            let now = store::now_ns();
            store::touch_dir(&tx, parent, now)?;
            store::touch_dir(&tx, new_parent, now)?;
            tx.commit()?;
            gone
        };
        if let Some(ino) = gone {
            self.content.remove(ino);
        }
        self.journal_changed.notify_one();
        Ok(())
    }

    /// Changes attributes. `size` truncates or extends; mode and owner are kept locally.
    #[allow(clippy::too_many_arguments)]
    pub fn setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        mtime: Option<SystemTime>,
    ) -> FsResult<Attr> {
        if let Some(new_size) = size {
            self.ensure_writable()?;
            self.truncate(ino, new_size)?;
        }
        if mode.is_some() || uid.is_some() || gid.is_some() || mtime.is_some() {
            if mtime.is_some() {
                self.ensure_writable()?;
            }
            let mtime_ns = mtime.map(store::system_time_to_ns);
            if let Some(of) = lock(&self.open_files).get(&ino).cloned() {
                let mut st = lock(&of.state);
                if let Some(ns) = mtime_ns {
                    st.mtime_ns = ns;
                }
                st.ctime_ns = store::now_ns();
            }
            let conn = self.store.lock();
            let tx = conn.unchecked_transaction()?;
            store::nodes::set_attrs(&tx, ino, mode, uid, gid, mtime_ns, store::now_ns())?;
            let recorded = self.record_meta(&tx, ino)?;
            tx.commit()?;
            drop(conn);
            if recorded {
                self.journal_changed.notify_one();
            }
        }
        self.getattr(ino)
    }

    /// The largest size a content file can have on the cache's file system (ext4 with
    /// 4 KiB blocks: 16 TiB), found once by growing an unnamed sparse scratch file:
    /// nothing is allocated. A file may not grow past it here, so `truncate` and `write`
    /// beyond it fail with `EFBIG` as on that file system, before anything changes.
    pub fn max_file_size(&self) -> u64 {
        *self.max_file_size.get_or_init(|| {
            let f = match tempfile::tempfile_in(&self.cache_dir) {
                Ok(f) => f,
                Err(_) => return i64::MAX as u64,
            };
            let fits = |len: u64| f.set_len(len).is_ok();
            if fits(i64::MAX as u64) {
                return i64::MAX as u64;
            }
            // Invariant: `lo` fits, `hi` does not.
            let (mut lo, mut hi) = (0u64, i64::MAX as u64);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if fits(mid) {
                    lo = mid
                } else {
                    hi = mid
                }
            }
            lo
        })
    }

    fn check_file_size(&self, end: u64) -> FsResult<()> {
        if end > self.max_file_size() {
            Err(FsError::TooBig)
        } else {
            Ok(())
        }
    }

    fn truncate(&self, ino: u64, new_size: u64) -> FsResult<()> {
        self.check_file_size(new_size)?;
        let node = self.node(ino)?;
        tracing::debug!("truncate inode {ino} from {} to {new_size}", node.size);
        if node.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        let of = self.open_file(ino)?;
        let result = (|| {
            let keep = node.size.min(new_size);
            let all_here = lock(&of.state).ranges.covers(0, keep);
            // As for writes: where the server takes partial updates, what is kept need
            // not be here (a file cut below its size on the server is sent whole, its
            // missing parts read from the base copy then).
            let partial = !all_here && self.partial_write_ready(ino, &of)?;
            if !partial {
                self.fetch_range(&of, ino, 0, keep, false)?;
            }
            let conn = partial.then(|| self.store.lock());
            let others_open = {
                let mut st = lock(&of.state);
                if !partial && !st.ranges.covers(0, st.size.min(new_size)) {
                    drop(st);
                    drop(conn);
                    return Err(FsError::Offline {
                        path: self.path(ino)?,
                    });
                }
                let (mut ranges, mut grown) = (st.ranges.clone(), RangeSet::default());
                ranges.truncate(new_size);
                // Growing: the new bytes are zeros, written here.
                grown.insert(st.size.min(new_size), new_size);
                ranges.union(&grown);
                if let Some(conn) = &conn {
                    // Recorded before the content file changes (see `write`).
                    store::set_written_content(conn, ino, new_size, st.mtime_ns, &ranges)?;
                    store::note_written(conn, ino, &grown, new_size)?;
                }
                of.file.set_len(new_size)?;
                let old_size = std::mem::replace(&mut st.size, new_size);
                st.ranges = ranges;
                store::truncate_written(&mut st.written, old_size, new_size);
                st.mtime_ns = store::now_ns();
                st.write_dirty = true;
                st.write_seq += 1;
                st.opens > 1
            };
            drop(conn);
            if others_open {
                // Somebody has it open: their close commits the change.
                store::set_dirty(&self.store.lock(), ino, true)?;
                Ok(())
            } else {
                self.commit_writes(&of, ino, false)
            }
        })();
        self.close_open_file(ino);
        result
    }

    // ----- file content --------------------------------------------------------------

    /// Per-inode open state, created on first open; `opens` counts the references.
    fn open_file(&self, ino: u64) -> FsResult<Arc<OpenFile>> {
        if let Some(of) = lock(&self.open_files).get(&ino) {
            lock(&of.state).opens += 1;
            return Ok(of.clone());
        }
        // The store stays locked until the file is in the map, so a listing merge (which
        // decides under the store lock whether a file is open) cannot slip in between.
        let conn = self.store.lock();
        let node = store::get_node(&conn, ino)?.ok_or(FsError::NotFound)?;
        let mut map = lock(&self.open_files);
        if let Some(of) = map.get(&ino) {
            // Opened by another thread meanwhile.
            lock(&of.state).opens += 1;
            return Ok(of.clone());
        }
        if node.kind != Kind::File {
            return Err(FsError::IsDir);
        }
        let file = self.content.open(ino)?;
        let mut ranges = node.ranges.clone();
        // Never trust a range map beyond what the content file holds (a crash may have
        // lost the tail of a write the map already counted).
        let on_disk = file.metadata()?.len();
        if on_disk < node.size {
            ranges.truncate(on_disk);
        }
        let of = Arc::new(OpenFile {
            file,
            downloads: fetch::Downloads::default(),
            state: Mutex::new(OpenState {
                opens: 1,
                size: node.size,
                ranges,
                mtime_ns: node.mtime_ns,
                write_dirty: false,
                written: RangeSet::default(),
                write_seq: 0,
                atime_ns: node.atime_ns,
                ctime_ns: node.ctime_ns,
            }),
        });
        map.insert(ino, of.clone());
        drop(map);
        drop(conn);
        Ok(of)
    }

    /// Drops one reference; the last one commits pending writes and forgets the state.
    fn close_open_file(&self, ino: u64) {
        let map = lock(&self.open_files);
        let last = match map.get(&ino) {
            Some(of) => {
                let mut st = lock(&of.state);
                st.opens = st.opens.saturating_sub(1);
                st.opens == 0
            }
            None => false,
        };
        if last {
            let of = map.get(&ino).cloned().unwrap();
            drop(map);
            // Commit while the state is still shared, so an open racing with this close
            // finds it (with the current size) instead of the store's older row.
            if let Err(e) = self.commit_writes(&of, ino, false) {
                tracing::error!("could not commit writes of inode {ino}: {e}");
            }
            {
                let _conn = self.store.lock();
                let mut map = lock(&self.open_files);
                let still_unused = map.get(&ino).is_some_and(|of| lock(&of.state).opens == 0);
                if !still_unused {
                    return;
                }
                map.remove(&ino);
            }
            // An orphan (unlinked while open) disappears with its last handle.
            let orphan = store::get_node(&self.store.lock(), ino)
                .ok()
                .flatten()
                .map(|n| n.parent == 0 && n.ino != ROOT_INO)
                .unwrap_or(false);
            if orphan {
                let _ = store::delete_node(&self.store.lock(), ino);
                self.content.remove(ino);
            }
        }
    }

    fn open_handle(&self, ino: u64, writable: bool) -> FsResult<u64> {
        let _of = self.open_file(ino)?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Handle { ino, writable });
        Ok(fh)
    }

    /// Opens a file. Returns the handle and whether the kernel may keep its page cache.
    pub fn open(&self, ino: u64, writable: bool) -> FsResult<(u64, bool)> {
        if writable {
            self.ensure_writable()?;
        }
        if !self.is_open(ino) {
            self.revalidate(ino)?;
            self.check_cached_content(ino)?;
        }
        let fh = self.open_handle(ino, writable)?;
        store::touch_access(&self.store.lock(), ino, self.cfg.clock.now_s())?;
        Ok((fh, self.kernel_cache_valid(ino)))
    }

    fn handle(&self, fh: u64) -> FsResult<(u64, bool, Arc<OpenFile>)> {
        let (ino, writable) = {
            let h = lock(&self.handles);
            let h = h.get(&fh).ok_or(FsError::BadHandle)?;
            (h.ino, h.writable)
        };
        let of = lock(&self.open_files)
            .get(&ino)
            .cloned()
            .ok_or(FsError::BadHandle)?;
        Ok((ino, writable, of))
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let (ino, _, of) = self.handle(fh)?;
        self.note_access(ino, &of)?;
        let file_size = lock(&of.state).size;
        if offset >= file_size {
            return Ok(Vec::new());
        }
        let end = (offset + size as u64).min(file_size);
        self.fetch_range(&of, ino, offset, end, true)?;
        let mut buf = vec![0u8; (end - offset) as usize];
        let mut done = 0;
        while done < buf.len() {
            let n = of.file.read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(buf)
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let (ino, writable, of) = self.handle(fh)?;
        if !writable {
            return Err(FsError::BadHandle);
        }
        // As on a local disk: a write starting at or past the largest size fails with
        // EFBIG, one crossing it is cut short there.
        let max = self.max_file_size();
        if offset >= max && !data.is_empty() {
            return Err(FsError::TooBig);
        }
        let data = &data[..data.len().min((max - offset.min(max)) as usize)];
        let (size, all_here) = {
            let st = lock(&of.state);
            (st.size, st.ranges.covers(0, st.size))
        };
        // A file not all here is written where the server takes partial updates (only
        // the ranges written are sent); elsewhere the rest is fetched first, since the
        // upload sends the whole file.
        let partial = !all_here && self.partial_write_ready(ino, &of)?;
        if !all_here && !partial {
            self.fetch_range(&of, ino, 0, size, false)?;
        }
        let end = offset + data.len() as u64;
        if end > size || !lock(&of.state).write_dirty {
            // Growing the file (or a first write, which makes it unevictable).
            self.ensure_space(end.saturating_sub(size).max(data.len() as u64))?;
        }
        // Written ranges of a file not all here are recorded before its bytes go into
        // the content file, all in the store: after a crash they tell the bytes written
        // here from holes where the server's bytes are (see `recover`).
        let conn = partial.then(|| self.store.lock());
        let first = {
            let mut st = lock(&of.state);
            let mut now = RangeSet::default();
            // Growing past the end: the gap reads as zeros, which are ours too.
            let (from, to) = store::write_span(st.size, offset, end);
            now.insert(from, to);
            let new_size = st.size.max(end);
            if let Some(conn) = &conn {
                let mut ranges = st.ranges.clone();
                ranges.union(&now);
                store::set_written_content(conn, ino, new_size, st.mtime_ns, &ranges)?;
                store::note_written(conn, ino, &now, new_size)?;
            }
            // Under the state lock, so a download finishing now cannot write over it.
            of.file.write_all_at(data, offset)?;
            st.size = new_size;
            st.ranges.union(&now);
            st.written.union(&now);
            st.mtime_ns = store::now_ns();
            st.write_seq += 1;
            !std::mem::replace(&mut st.write_dirty, true)
        };
        drop(conn);
        if first && !partial {
            // Persist "this file has unsent changes" before the first write returns, so
            // a crash with the file still open is recovered at the next start.
            store::set_dirty(&self.store.lock(), ino, true)?;
        }
        Ok(data.len() as u32)
    }

    /// A read: records the access time where the relatime rule asks for it (see
    /// `store::atime_due`), so repeated reads write nothing.
    fn note_access(&self, ino: u64, of: &OpenFile) -> FsResult<()> {
        let now = store::now_ns();
        let due = {
            let st = lock(&of.state);
            let atime = st.atime_ns.unwrap_or(i64::MIN);
            store::atime_due(atime, st.mtime_ns, st.ctime_ns, now)
        };
        if !due {
            return Ok(());
        }
        let conn = self.store.lock();
        store::set_atime(&conn, ino, now)?;
        lock(&of.state).atime_ns = Some(now);
        Ok(())
    }

    /// `utimensat` with an access time.
    pub fn set_atime(&self, ino: u64, atime: SystemTime) -> FsResult<Attr> {
        self.ensure_writable()?;
        let ns = store::system_time_to_ns(atime);
        let recorded = {
            let conn = self.store.lock();
            let tx = conn.unchecked_transaction()?;
            store::set_atime(&tx, ino, ns)?;
            let recorded = self.record_meta(&tx, ino)?;
            tx.commit()?;
            if let Some(of) = lock(&self.open_files).get(&ino) {
                lock(&of.state).atime_ns = Some(ns);
            }
            recorded
        };
        if recorded {
            self.journal_changed.notify_one();
        }
        self.getattr(ino)
    }

    /// Records a change of the mode, owner or times of `ino` for the server (dead
    /// properties), unless the server is known to keep none, or the mount is read-only.
    /// Reads never come here: an access time recorded by a read goes along with the next
    /// upload or metadata change.
    fn record_meta(&self, tx: &Connection, ino: u64) -> FsResult<bool> {
        if self.cfg.read_only || self.dead_props.get() == Some(&false) {
            return Ok(false);
        }
        let Some(node) = store::get_node(tx, ino)? else {
            return Ok(false);
        };
        if node.parent == 0 {
            // The root's properties are the server's; an unlinked file has no path.
            return Ok(false);
        }
        let Some(path) = store::path_of(tx, ino)? else {
            return Ok(false);
        };
        Ok(journal::record_meta(tx, &node, &path)?)
    }

    /// Commits the writes of `ino` to the journal: size, mtime and an upload entry.
    fn commit_writes(&self, of: &OpenFile, ino: u64, durable: bool) -> FsResult<()> {
        if durable {
            of.file.sync_all()?;
        }
        // The store lock first, then the state (the lock order): two commits of the same
        // file cannot pass each other and record an older size last.
        let conn = self.store.lock();
        let (size, mtime_ns, seq, ranges, written) = {
            let st = lock(&of.state);
            if !st.write_dirty {
                drop(st);
                // Committed already (by a close of another descriptor), but perhaps only
                // to the page cache: fsync() wants it on the disk.
                if durable {
                    store::sync_to_disk(&conn)?;
                }
                return Ok(());
            }
            let (ranges, written) = (st.ranges.clone(), st.written.clone());
            (st.size, st.mtime_ns, st.write_seq, ranges, written)
        };
        let work = |c: &Connection| -> rusqlite::Result<()> {
            let tx = c.unchecked_transaction()?;
            store::set_written_content(&tx, ino, size, mtime_ns, &ranges)?;
            store::note_written(&tx, ino, &written, size)?;
            if let Some(path) = store::path_of(&tx, ino)? {
                journal::record_put(&tx, ino, &path)?;
            }
            tx.commit()
        };
        if durable {
            store::with_full_sync(&conn, work)?;
        } else {
            work(&conn)?;
        }
        {
            let mut st = lock(&of.state);
            if st.write_seq == seq {
                st.write_dirty = false;
                st.written.clear();
            }
        }
        drop(conn);
        self.journal_changed.notify_one();
        Ok(())
    }

    /// `close()`: what was written is committed to the journal before this returns.
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        let (ino, writable, of) = self.handle(fh)?;
        if writable {
            self.commit_writes(&of, ino, false)?;
        }
        Ok(())
    }

    /// `fsync()`: like flush, and durable across a power loss.
    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        let (ino, _, of) = self.handle(fh)?;
        self.commit_writes(&of, ino, true)
    }

    pub fn release(&self, fh: u64) -> FsResult<()> {
        let h = lock(&self.handles).remove(&fh).ok_or(FsError::BadHandle)?;
        self.close_open_file(h.ino);
        Ok(())
    }

    /// Commits every file still open with unsent writes (at unmount).
    pub fn commit_all(&self) {
        let open: Vec<(u64, Arc<OpenFile>)> = lock(&self.open_files)
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (ino, of) in open {
            if let Err(e) = self.commit_writes(&of, ino, true) {
                tracing::error!("could not commit writes of inode {ino}: {e}");
            }
        }
    }

    /// `fsyncdir()`: namespace changes are committed as they return; this puts them (and
    /// every earlier commit) on the disk.
    pub fn sync_journal(&self) -> FsResult<()> {
        Ok(store::sync_to_disk(&self.store.lock())?)
    }

    pub fn statfs(&self) -> FsResult<libc::statvfs> {
        let c = std::ffi::CString::new(self.cache_dir.as_os_str().as_encoded_bytes())
            .map_err(|_| FsError::Invalid("cache dir path"))?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return Err(FsError::Io(std::io::Error::last_os_error()));
        }
        apply_quota(&mut st, self.health.quota());
        Ok(st)
    }
}

/// `df` shows the server's space where it reports an RFC 4331 quota (refreshed with the
/// health probe): size = available + used, free = available, counted in the cache
/// disk's fragment size. Inode counts stay the cache disk's (the server has none).
/// Without a quota (or with only "used"), the cache disk's numbers stay: that is where
/// writes land first, and `ENOSPC` comes from it.
fn apply_quota(st: &mut libc::statvfs, quota: (Option<u64>, Option<u64>)) {
    let Some(avail) = quota.0 else { return };
    // `c_ulong`: 32 bits on 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    let frsize = (st.f_frsize as u64).max(1);
    let used = quota.1.unwrap_or(0);
    st.f_blocks = (avail.saturating_add(used) / frsize) as _;
    st.f_bfree = (avail / frsize) as _;
    st.f_bavail = (avail / frsize) as _;
}

#[cfg(test)]
mod quota_tests {
    #[test]
    fn a_server_quota_replaces_the_cache_disk_space() {
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        st.f_frsize = 4096;
        st.f_blocks = 1000;
        st.f_bfree = 500;
        st.f_bavail = 400;
        super::apply_quota(&mut st, (None, Some(7)));
        assert_eq!((st.f_blocks, st.f_bfree, st.f_bavail), (1000, 500, 400));
        super::apply_quota(&mut st, (Some(40960), Some(8192)));
        assert_eq!((st.f_blocks, st.f_bfree, st.f_bavail), (12, 10, 10));
    }
}
