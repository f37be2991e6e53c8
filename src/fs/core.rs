//! The `Core` struct: what the filesystem core holds, how it is opened (`Core::load`),
//! and the plumbing every other file of `fs/` uses: node and path look-ups, remote calls
//! from FUSE threads, the journal's progress signal. Lock order: see `fs/mod.rs`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::open_files::{Handle, OpenFile};
use super::{changes, listing, poll, CoreConfig, DirEntry, FsError, FsResult, KernelCache};
use crate::cache::ContentFiles;
use crate::clock::Clock;
use crate::health::Health;
use crate::remote::{Remote, RemoteError};
use crate::store::{self, Node};

pub struct Core {
    pub cfg: CoreConfig,
    pub(super) store: store::Store,
    pub(super) content: ContentFiles,
    pub(super) remote: Arc<dyn Remote>,
    pub(super) rt: tokio::runtime::Handle,
    pub health: Health,
    /// Wakes the replayer when the journal got something new.
    pub journal_changed: Arc<Notify>,
    /// Bumped whenever the replayer finishes or gives up on an entry: `sync --wait`,
    /// backups and migrations wait on it instead of polling.
    pub(super) journal_progress: tokio::sync::watch::Sender<u64>,
    pub(super) open_files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    pub(super) handles: Mutex<HashMap<u64, Handle>>,
    pub(super) dir_handles: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    /// Folder listings being refreshed (see listing.rs).
    pub(super) refreshes: listing::Refreshes,
    /// Content generation per inode: bumped when cached content is replaced by a newer
    /// remote version, so the kernel's page cache is kept only while it is still right.
    pub(super) content_gen: Mutex<HashMap<u64, (u64, u64)>>,
    pub(super) next_fh: AtomicU64,
    pub(super) cache_dir: PathBuf,
    /// What the replayer started or finished changing on the remote: a listing fetched
    /// across a change inside it may be stale and is not merged.
    pub(super) remote_changes: changes::RemoteChanges,
    /// Whether the server takes `PUT` with `Content-Range`, once asked.
    pub partial_put: Arc<tokio::sync::OnceCell<bool>>,
    /// Whether the server takes partial updates (ranges written into a file, and COPY and
    /// MOVE held to a version), once asked (see `remote::PartialSupport`).
    pub partial_updates: tokio::sync::OnceCell<bool>,
    /// One per file while its base copy is made (see `partial.rs`): a write and an
    /// upload never make two.
    pub(super) copy_locks: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
    /// Whether the server honours If-Match / If-None-Match, once asked.
    pub preconditions: tokio::sync::OnceCell<bool>,
    /// Per directory, a digest of the entries the kernel was last given, and when (in
    /// the clock's ms) it last read them with their attributes.
    pub(super) dir_digests: Mutex<HashMap<u64, (u64, i64)>>,
    /// This core itself, for download tasks.
    pub(super) me: Weak<Core>,
    /// Wakes the cache sweeper when content was added (it checks the size limits).
    pub cache_grew: Arc<Notify>,
    /// Fully cached files whose content was hashed (checked or recorded) in this run.
    pub(super) verified: Mutex<HashSet<u64>>,
    /// Large cached files being hashed in the background (one check each at a time).
    pub(super) verifying: Mutex<HashSet<u64>>,
    /// What the kernel caches, to be told of remote changes (set by the FUSE adapter).
    pub(super) kernel: OnceLock<Arc<dyn KernelCache>>,
    /// The background poll's memory: what it saw of each folder, what it learnt of
    /// the server, what folders were used lately, its last round (see `poll`).
    pub(super) poll: poll::PollState,
    /// The largest file the cache's file system holds, once measured (`max_file_size`).
    pub(super) max_file_size: OnceLock<u64>,
    /// Whether the server keeps dead properties (mode, owner, times), once found out.
    pub dead_props: OnceLock<bool>,
    /// When a call through the mount last changed the drive (the replayer yields to a
    /// burst of them).
    pub foreground: super::foreground::ForegroundWrites,
    /// Scheduling passes of the replayer that took the store's writer (each starts the
    /// entries it found): a pass that finds nothing must not, and tests count them.
    pub replay_passes_on_writer: AtomicU64,
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
            partial_put: Arc::default(),
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
            foreground: Default::default(),
            replay_passes_on_writer: AtomicU64::new(0),
            journal_progress: tokio::sync::watch::channel(0).0,
        });
        core.recover()?;
        Ok(core)
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

    /// The state store: `write` on its writer for a unit of work (the replayer, the
    /// control socket), `read` on its read-only connection, which answers while the
    /// writer is busy (see `store::Store`).
    pub fn db(&self) -> &store::Store {
        &self.store
    }

    pub(super) fn node(&self, ino: u64) -> FsResult<Node> {
        self.store
            .write(|tx| store::get_node(tx, ino))?
            .ok_or(FsError::NotFound)
    }

    pub(super) fn path(&self, ino: u64) -> FsResult<String> {
        self.store
            .write(|tx| store::path_of(tx, ino))?
            .ok_or(FsError::NotFound)
    }

    /// Where the server holds node `ino` now: its path here with the renames that still
    /// wait undone (see `journal::remote_path_of`), and its path here.
    pub(super) fn remote_path(&self, ino: u64) -> FsResult<(String, String)> {
        self.store.write(|tx| {
            let here = store::path_of(tx, ino)?.ok_or(FsError::NotFound)?;
            let there = crate::journal::remote_path_of(tx, &here)?;
            Ok((there, here))
        })
    }

    /// Every call that changes the drive starts here: refused on a read-only mount, and
    /// noted, so the replayer yields to a burst of them (`foreground`).
    pub(super) fn ensure_writable(&self) -> FsResult<()> {
        if self.cfg.read_only {
            Err(FsError::ReadOnly)
        } else {
            self.foreground.note();
            Ok(())
        }
    }

    /// Waits for `fut` on the runtime, blocking this thread: the one place the core waits
    /// for async work. Called from FUSE threads, the daemon's own threads (backups,
    /// migrations) and the runtime's blocking pool (`spawn_blocking`: the control
    /// commands, listing refreshes, the poll, the replayer's fetches), and at start
    /// from the thread that entered the runtime to start the daemon (the root's first
    /// listing). Never from a runtime worker: a worker blocked on a future that needs
    /// the workers deadlocks once all of them wait so; tokio refuses it with a panic
    /// ("Cannot start a runtime from within a runtime"), in release builds too.
    pub(super) fn block_on<F: std::future::Future>(&self, fut: F) -> F::Output {
        self.rt.block_on(fut)
    }

    /// Runs a remote call (see `block_on` for the threads that may), marking the remote
    /// offline on transport errors.
    pub(super) fn call<T>(
        &self,
        path: &str,
        fut: impl std::future::Future<Output = Result<T, RemoteError>>,
    ) -> FsResult<T> {
        match self.block_on(fut) {
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

    /// The replayer is changing the remote (called before and after each change).
    /// The replayer finished, or gave up on, a journal entry.
    pub fn journal_progressed(&self) {
        self.journal_progress.send_modify(|n| *n += 1);
    }

    /// Changes whenever the journal made progress (see `journal_progressed`).
    /// Nothing is running, nothing may start, and nothing waits out a backoff: every
    /// change left in the journal is set aside or held back by one that is, and waiting
    /// longer will not drain it.
    pub fn journal_stuck(&self) -> FsResult<bool> {
        let now = self.clock().now_ms();
        // On the writer: what the replayer decides is what counts here.
        Ok(self.store.write(|c| {
            Ok::<_, rusqlite::Error>(
                !crate::journal::anything_running(c)?
                    && crate::journal::ready(c, &Default::default(), 1, now, i64::MAX)?.is_empty()
                    && crate::journal::next_retry_at(c, now)?.is_none(),
            )
        })?)
    }

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
        self.block_on(async {
            tokio::select! {
                _ = progress.changed() => {}
                _ = health.changed() => {}
                _ = tokio::time::sleep(at_most) => {}
            }
        });
    }

    /// The replayer starts or finishes changing these remote paths (see `changes`).
    pub fn remote_changing(&self, paths: &[&str]) {
        self.remote_changes.changed(paths);
    }

    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.rt
    }

    pub fn clock(&self) -> &Clock {
        &self.cfg.clock
    }
}
