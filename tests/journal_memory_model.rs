//! Model-based property test of the sync journal against the in-memory remote
//! (`davdrive::remote::memory::MemRemote`): the same idea as `journal_model.rs`, without
//! a server or sockets, so thousands of random cases run in a couple of minutes.
//!
//! Each case is a random sequence of local operations on the core (create, write at an
//! offset, truncate, rename files and whole trees into other directories, mkdir, rmdir,
//! unlink, a file kept open across steps, eviction and pins), interleaved with outages,
//! 503 storms, transient 423/408 refusals, clean restarts and crashes of the core on the
//! same state dir, and changes made by ANOTHER CLIENT directly on the remote while local
//! changes may still wait in the journal (put, delete of a file or a whole tree, mkdir,
//! a folder replaced by a file, a move).
//!
//! The model records the local operations. An other-client change marks what it may
//! affect ("tainted"): its target and, found through the waiting journal entries, every
//! local node whose waiting changes meet it (following waiting moves). What it does not
//! meet has an exact outcome: their version replaces ours, their delete wins. What it
//! meets is held only to the rule "nothing is lost": every local version not yet on the
//! server when the other client struck must end on the server, at its path or in a
//! conflict copy, and the other client's bytes must survive somewhere.
//!
//! Checked after every step: every untainted file reads back through the core with the
//! model's bytes, every untainted directory holds exactly the model's entries (plus
//! conflict copies and tainted names). After a settle (journal drained online) and at the
//! end: the server holds every untainted entry exactly, every precise other-client
//! outcome, no unexplained entry, no lost bytes; at the end also nothing set aside, no
//! upload scratch file left, every recorded conflict copy present, and the local view
//! walked through a restarted core equal to the server's tree.
//!
//! Run:       cargo test --test journal_memory_model
//! Cases:     DAVDRIVE_MODEL_CASES=N (default 2,000, about 2 minutes on two busy cores)
//!            for the property test, drawn from a fixed seed; DAVDRIVE_MODEL_SEED=<n> or
//!            =random draws others.
//! Long soak: DAVDRIVE_MODEL_SEED=random DAVDRIVE_MODEL_CASES=100000 \
//!              cargo test --release --test journal_memory_model \
//!              -- --nocapture remote_and_local_follow_the_model
//! Logs:      DAVDRIVE_LOG=davdrive=debug (with --nocapture).
//! History:   DAVDRIVE_MODEL_HISTORY=file writes, for the first failing case of a run
//!            (before shrinking, which may not reproduce it), every step, request and
//!            change of the server's tree in order.
//! Failures shrink to a minimal action sequence, persisted (with its seed) in
//! tests/journal_memory_model.proptest-regressions and replayed first on the next run.
//! Replay:    put the printed `[Create { .. }, ..]` list in a file, then
//!            DAVDRIVE_MODEL_REPLAY=that-file DAVDRIVE_MODEL_TRACE=1 cargo test \
//!              --test journal_memory_model replay_from_env -- --nocapture
//!            (the trace prints server, model and journal after every step; most
//!            failures depend on timing, so run it a few times).
//!
//! Findings. The property test found the bugs below; each fix is pinned by a fixed
//! scenario at the end of this file, and the model describes their outcomes: a folder
//! removed here while another client put something in it stays, as theirs, with their
//! files (`revive_parents`); a new folder whose name they took goes beside their file;
//! a rename of a file they deleted or rewrote ends with theirs in place and ours, if
//! held whole, under the new name; conflict copies are numbered within a second.
//! The failures of long runs that depended on timing, whose shrunk replays passed, were
//! found with the history (DAVDRIVE_MODEL_HISTORY, above) and were engine bugs too: a
//! part upload written while sent whose hash was never recorded, a folder move carrying
//! the file another client put in its place, a move that found no source taking their
//! file at its destination for ours, an upload of a file removed while open retried
//! until set aside, a base copy's removal held to the file's new ETag, uploads handed to
//! a conflict copy at a folder's old path, a recreated folder or a move aside meeting a
//! name taken, a rename of a file removed while open keeping a copy of it, renames after
//! one that went aside carrying the other client's file off (the local file then
//! unreadable), the removal of an abandoned upload's parts forgotten when the server
//! went away first, a rename of a removed file judged by the removal of its scratch
//! file (which takes anything) instead of by its own delete, that removal naming
//! the scratch file where it was before a waiting rename of its folder carried it off,
//! a folder going aside taking along the upload of a file made at its old name
//! after it was renamed away, a part upload resumed after the file was written
//! through a handle still open, recording a hash of bytes the server never got, a
//! rename going aside from a conflict name leaving that conflict open with its copy
//! gone, and an upload whose parts went to a scratch file, then sent as a partial
//! update, leaving the scratch file behind (the two kept their progress in the same
//! columns; the entry now names its scratch file), and a truncation while read-ahead
//! downloads ran left to their close to commit (a settle found the journal empty
//! before it). The last scenario pins a cost, not an outcome: files queued behind a slow
//! entry must not make the replayer's empty passes take the store's writer.
//! One outcome is accepted by default: "folder-move-etag" (a file last sent as a
//! partial update, whose server version's hash is therefore unknown here, edited again
//! after our rename of its folder gave it a new ETag, goes up as a conflict copy of our
//! own previous version: nothing is lost, the copy is spurious). It was thought gone,
//! and came back in the fixed seed's 2,000 cases once in a few runs. Everything else
//! is generated and checked.
//! To hunt for something else past a known failure, DAVDRIVE_MODEL_ALLOW=<comma-separated
//! names> waives scenarios: they are then not generated, or their outcome is accepted:
//!   scratch            (fixed) part-upload scratch files left on the server
//!   mkcol-over-file    (fixed) a new folder whose name another client took (MKCOL set aside)
//!   dir-delete         (fixed) a folder delete replayed as a recursive DELETE of their files
//!   crash-open         (not met since) a file held open at a crash read back, after the
//!                      final restart, at an older size
//!   conflict-name      (fixed) two conflicts on one path within a second: same copy name
//!   move-of-deleted    (fixed) a rename of a file another client deleted is set aside
//!   move-adopts-etag   (fixed) a rename takes the other client's version for ours
//!   blind-delete       (fixed) a removed file whose upload sent nothing: unconditional DELETE
//!   fetch-pending-move (fixed) uncached content under a waiting rename fetched under the new name
//!   delete-takes-folder (fixed) a file's delete meeting their folder deletes it recursively
//!   folder-move-etag   (waived by default, see above) files in a renamed folder keep
//!                      stale ETags: our own edit conflicts
//!   evict-under-move   (fixed: content is fetched from where the server has it, so
//!                      eviction below a folder whose rename waits is fine)
//!   listing-pending-move  (fixed) a folder listed while its rename waits lost its clean files
//! All of them at once:
//!   DAVDRIVE_MODEL_ALLOW=scratch,mkcol-over-file,dir-delete,crash-open,conflict-name,\
//!   move-of-deleted,move-adopts-etag,blind-delete,fetch-pending-move,delete-takes-folder,\
//!   folder-move-etag,evict-under-move,listing-pending-move

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use davdrive::clock::Clock;
use davdrive::daemon::{Daemon, DaemonConfig};
use davdrive::fs::{is_internal_name, Core, CoreConfig, Evicted, FsError, UploadSizes};
use davdrive::journal::{self, Op};
use davdrive::remote::memory::{MemItem, MemRemote, Method, Outcome, Rule, RuleId};
use davdrive::remote::Remote;
use davdrive::store::{Kind, ROOT_INO};
use proptest::prelude::*;

/// Listings go stale quickly, so merges of remote listings run all the time.
const DIR_TTL: Duration = Duration::from_millis(30);
/// Small cut sizes: files of a few KB reach the snapshot, streamed and part uploads, and
/// partial updates (files from 3000 bytes send the ranges written; written while evicted,
/// they are written without their other bytes, which stay on the server's base copy).
const UPLOADS: UploadSizes = UploadSizes {
    snapshot_limit: 2000,
    parts_from: 6000,
    part: 2048,
    partial_from: 3000,
};
/// The health probe's period (and first retry while offline): short, so the replay goes
/// on soon after an outage or a freeze ends.
const PROBE_INTERVAL: Duration = Duration::from_millis(5);
/// Names for files and directories alike, so renames replace and collide.
const NAMES: [&str; 6] = ["a", "b c", "d#1", "é.txt", "e+f", "x"];
/// Transient refusals injected per case at most (each `times(3)`), so that no entry can
/// reach `MAX_ATTEMPTS` through them.
const MAX_LOCKS: usize = 3;

// ----- model ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Item {
    Dir,
    File(Vec<u8>),
    /// Deleted by the other client: nothing may be at this path on the server.
    Gone,
}

impl Item {
    fn mem(&self) -> Option<MemItem> {
        match self {
            Item::Dir => Some(MemItem::Dir),
            Item::File(b) => Some(MemItem::File(b.clone())),
            Item::Gone => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum St {
    /// Untainted: made or last changed here, no other client touched it. Exact.
    Ours,
    /// The other client's version. `precise`: it met no waiting local change, so the
    /// server must hold exactly this at this path; otherwise its bytes must survive
    /// somewhere.
    Theirs { precise: bool },
    /// Touched by an other-client change that met waiting local changes: the outcome is
    /// left to the conflict rules; checked only through the survivors.
    Unknown,
}

#[derive(Debug, Clone)]
struct MEntry {
    item: Item,
    /// Local inode (0 when unknown).
    ino: u64,
    st: St,
}

/// A local version that was not on the server yet when an other-client change met it.
#[derive(Debug, Clone)]
struct Survivor {
    ino: u64,
    data: Vec<u8>,
    path: String,
}

#[derive(Debug, Clone)]
struct OpenH {
    fh: u64,
    ino: u64,
    wrote: bool,
}

#[derive(Default)]
struct Model {
    m: BTreeMap<String, MEntry>,
    survivors: Vec<Survivor>,
    pinned: HashSet<u64>,
    open: Option<OpenH>,
}

#[derive(Clone, Copy, PartialEq)]
enum Want {
    Dir,
    File,
    Any,
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn parent_of(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &p[..i],
    }
}

fn name_of(p: &str) -> &str {
    &p[p.rfind('/').map_or(0, |i| i + 1)..]
}

/// Whether `p` is `dir` or lies below it.
fn at_or_under(p: &str, dir: &str) -> bool {
    dir == "/"
        || p == dir
        || (p.len() > dir.len() && p.starts_with(dir) && p.as_bytes()[dir.len()] == b'/')
}

fn strictly_under(p: &str, dir: &str) -> bool {
    p != dir && at_or_under(p, dir)
}

fn is_conflict_path(p: &str) -> bool {
    p.contains("(conflict")
}

fn ours_bytes(len: usize, seed: u8) -> Vec<u8> {
    common::pattern(len, seed as u64 + 1)
}

/// The other client's content never equals ours by accident.
fn their_bytes(len: usize, seed: u8) -> Vec<u8> {
    common::pattern(len.max(1), seed as u64 + 100_000)
}

impl Model {
    fn ours(&self, want: Want) -> Vec<String> {
        self.m
            .iter()
            .filter(|(_, e)| e.st == St::Ours)
            .filter(|(_, e)| match want {
                Want::Dir => e.item == Item::Dir,
                Want::File => matches!(e.item, Item::File(_)),
                Want::Any => true,
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn pick(&self, i: usize, want: Want, with_root: bool) -> Option<String> {
        let mut c = self.ours(want);
        if with_root {
            c.push("/".into());
        }
        (!c.is_empty()).then(|| c[i % c.len()].clone())
    }

    fn ino_of(&self, p: &str) -> u64 {
        if p == "/" {
            ROOT_INO
        } else {
            self.m[p].ino
        }
    }

    fn below(&self, p: &str) -> Vec<String> {
        self.m
            .keys()
            .filter(|k| strictly_under(k, p))
            .cloned()
            .collect()
    }

    fn path_of_ino(&self, ino: u64) -> Option<String> {
        if ino == 0 {
            return None;
        }
        self.m
            .iter()
            .find(|(_, e)| e.ino == ino)
            .map(|(k, _)| k.clone())
    }

    /// Moves `src` and everything below it to `dst` (which must be free).
    fn move_tree(&mut self, src: &str, dst: &str, f: impl Fn(&mut MEntry)) {
        let moved: Vec<String> = self
            .m
            .keys()
            .filter(|k| at_or_under(k, src))
            .cloned()
            .collect();
        for k in moved {
            let mut e = self.m.remove(&k).unwrap();
            f(&mut e);
            self.m.insert(format!("{dst}{}", &k[src.len()..]), e);
        }
    }

    fn remove_tree(&mut self, p: &str) {
        self.m.retain(|k, _| !at_or_under(k, p));
    }

    /// Whether `p` or a directory above it is pinned.
    fn pinned_at(&self, p: &str) -> bool {
        let mut cur = p.to_string();
        loop {
            if self.pinned.contains(&self.ino_of(&cur)) {
                return true;
            }
            if cur == "/" {
                return false;
            }
            cur = parent_of(&cur).to_string();
        }
    }
}

// ----- actions -------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Action {
    Create {
        dir: usize,
        name: u8,
        len: u16,
        seed: u8,
    },
    Write {
        file: usize,
        at: u16,
        len: u16,
        seed: u8,
    },
    Truncate {
        file: usize,
        len: u16,
    },
    Rename {
        node: usize,
        dir: usize,
        name: u8,
    },
    Mkdir {
        dir: usize,
        name: u8,
    },
    Rmdir {
        dir: usize,
    },
    Unlink {
        file: usize,
    },
    /// Opens a file for writing (if none is open) and writes through that handle
    /// without closing it.
    OpenWrite {
        file: usize,
        at: u16,
        len: u16,
        seed: u8,
    },
    /// Closes the handle `OpenWrite` keeps.
    Release,
    Evict {
        file: usize,
    },
    Pin {
        node: usize,
        on: bool,
    },
    Outage(bool),
    Storm503(bool),
    /// A transient refusal (423 or 408), three times, of one method at one path.
    Lock {
        node: usize,
        method: u8,
        code: u8,
    },
    /// Lets the replayer drain (when the remote is reachable) and checks the server.
    Settle,
    Restart,
    Crash,
    OtherPut {
        pick: usize,
        fresh: bool,
        name: u8,
        len: u16,
        seed: u8,
    },
    OtherDelete {
        pick: usize,
    },
    OtherMkdir {
        dir: usize,
        name: u8,
    },
    /// The other client deletes a folder and puts a file under its name.
    OtherReplaceDir {
        pick: usize,
        len: u16,
        seed: u8,
    },
    OtherMove {
        pick: usize,
        dir: usize,
        name: u8,
    },
}

fn action() -> impl Strategy<Value = Action> {
    let name = 0u8..NAMES.len() as u8;
    prop_oneof![
        5 => (any::<usize>(), name.clone(), 0u16..9000, any::<u8>())
            .prop_map(|(dir, name, len, seed)| Action::Create { dir, name, len, seed }),
        4 => (any::<usize>(), any::<u16>(), 1u16..3000, any::<u8>())
            .prop_map(|(file, at, len, seed)| Action::Write { file, at, len, seed }),
        1 => (any::<usize>(), 0u16..9000).prop_map(|(file, len)| Action::Truncate { file, len }),
        4 => (any::<usize>(), any::<usize>(), name.clone())
            .prop_map(|(node, dir, name)| Action::Rename { node, dir, name }),
        4 => (any::<usize>(), name.clone()).prop_map(|(dir, name)| Action::Mkdir { dir, name }),
        1 => any::<usize>().prop_map(|dir| Action::Rmdir { dir }),
        2 => any::<usize>().prop_map(|file| Action::Unlink { file }),
        2 => (any::<usize>(), any::<u16>(), 1u16..3000, any::<u8>())
            .prop_map(|(file, at, len, seed)| Action::OpenWrite { file, at, len, seed }),
        1 => Just(Action::Release),
        1 => any::<usize>().prop_map(|file| Action::Evict { file }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(node, on)| Action::Pin { node, on }),
        2 => any::<bool>().prop_map(Action::Outage),
        1 => any::<bool>().prop_map(Action::Storm503),
        1 => (any::<usize>(), 0u8..5, 0u8..2)
            .prop_map(|(node, method, code)| Action::Lock { node, method, code }),
        2 => Just(Action::Settle),
        1 => Just(Action::Restart),
        1 => Just(Action::Crash),
        3 => (any::<usize>(), any::<bool>(), name.clone(), 1u16..9000, any::<u8>())
            .prop_map(|(pick, fresh, name, len, seed)| Action::OtherPut { pick, fresh, name, len, seed }),
        2 => any::<usize>().prop_map(|pick| Action::OtherDelete { pick }),
        1 => (any::<usize>(), name.clone()).prop_map(|(dir, name)| Action::OtherMkdir { dir, name }),
        1 => (any::<usize>(), 1u16..4000, any::<u8>())
            .prop_map(|(pick, len, seed)| Action::OtherReplaceDir { pick, len, seed }),
        1 => (any::<usize>(), any::<usize>(), name)
            .prop_map(|(pick, dir, name)| Action::OtherMove { pick, dir, name }),
    ]
}

// ----- harness -------------------------------------------------------------------------

struct Live {
    daemon: Daemon,
}

struct Harness {
    live: Option<Live>,
    remote: Arc<MemRemote>,
    clock: Clock,
    state: tempfile::TempDir,
    outage: bool,
    storm: Option<RuleId>,
    locks: usize,
    /// A refusal for good was injected: entries may be set aside.
    refusal: bool,
    /// `CoreConfig::dir_ttl` of the next start.
    ttl: Duration,
    rt: tokio::runtime::Runtime,
}

fn init_logging() {
    if let Ok(filter) = std::env::var("DAVDRIVE_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

fn state_dir() -> tempfile::TempDir {
    // On tmpfs when there is one: the store syncs, and a disk makes that the bottleneck.
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("davdrive-model-")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Also on a failed assertion: stop the tasks without waiting or asserting.
        if let Some(live) = self.live.take() {
            live.daemon.abort();
        }
        // The first failure of a run (before any shrinking) leaves what the server saw.
        static WRITTEN: std::sync::Once = std::sync::Once::new();
        if let (true, Ok(file)) = (
            std::thread::panicking(),
            std::env::var("DAVDRIVE_MODEL_HISTORY"),
        ) {
            WRITTEN.call_once(|| {
                let _ = std::fs::write(&file, self.remote.history().join("\n"));
            });
        }
    }
}

impl Harness {
    fn new() -> Harness {
        init_logging();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut h = Harness {
            live: None,
            remote: {
                let remote = MemRemote::new();
                remote.keep_history();
                Arc::new(remote)
            },
            clock: Clock::default(),
            state: state_dir(),
            outage: false,
            storm: None,
            locks: 0,
            refusal: false,
            ttl: DIR_TTL,
            rt,
        };
        h.start();
        // The root is listed once while online, as a first mount does.
        let fh = h.core().opendir(ROOT_INO).unwrap();
        h.core().releasedir(fh);
        h
    }

    /// Starts the daemon a mount runs (replayer, health probe, control socket and the
    /// rest) on the state dir, without a kernel.
    fn start(&mut self) {
        let _guard = self.rt.enter();
        let remote: Arc<dyn Remote> = self.remote.clone();
        let daemon = Daemon::start(
            DaemonConfig {
                core: CoreConfig {
                    dir_ttl: self.ttl,
                    attr_ttl: Duration::from_millis(50),
                    // The view is compared with the server once every listing is stale:
                    // each look waits for its refresh, however busy the machine.
                    refresh_wait: Duration::from_secs(10),
                    uploads: UPLOADS,
                    ..CoreConfig::default()
                },
                online: !self.outage && self.storm.is_none(),
                health_interval: PROBE_INTERVAL,
                // Eviction is one of the actions, at chosen moments.
                sweeper: false,
                list_root: false,
                ..DaemonConfig::new(self.state.path())
            },
            remote,
            self.clock.clone(),
        )
        .unwrap();
        self.live = Some(Live { daemon });
    }

    fn core(&self) -> &Arc<Core> {
        self.live.as_ref().unwrap().daemon.core()
    }

    /// Clean stop (unmount) or crash (killed: tasks die wherever they are).
    fn stop(&mut self, crash: bool) {
        let entries: Vec<String> = self
            .journal()
            .iter()
            .map(|e| {
                format!(
                    "{}#{} {} {}{}{} base {:?} sent {:?}",
                    e.id,
                    e.ino,
                    e.op.as_str(),
                    e.path,
                    e.dest
                        .as_deref()
                        .map(|d| format!(" -> {d}"))
                        .unwrap_or_default(),
                    if e.attempted { " attempted" } else { "" },
                    e.base_etag,
                    self.core()
                        .db()
                        .write(|tx| journal::sent_hashes(tx, e.id))
                        .unwrap()
                        .iter()
                        .map(|h| &h[..8])
                        .collect::<Vec<_>>()
                )
            })
            .collect();
        self.remote
            .note(format!("  journal at the stop: {}", entries.join("; ")));
        let daemon = self.live.take().unwrap().daemon;
        let old = Arc::downgrade(daemon.core());
        if crash {
            daemon.abort();
        } else {
            daemon.shutdown();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while old.strong_count() > 0 {
            assert!(
                Instant::now() < deadline,
                "the old core's tasks did not end"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn restart(&mut self, crash: bool) {
        self.stop(crash);
        self.start();
    }

    fn set_outage(&mut self, on: bool) {
        self.outage = on;
        self.remote.set_offline(on);
    }

    fn set_storm(&mut self, on: bool) {
        match (on, self.storm) {
            (true, None) => {
                self.storm = Some(
                    self.remote
                        .inject(Rule::any_method().outcome(Outcome::Status(503))),
                )
            }
            (false, Some(id)) => {
                self.remote.remove_rule(id);
                self.storm = None;
            }
            _ => {}
        }
    }

    /// Whether a failed read or write of uncached content is explained by the remote
    /// being unreachable.
    fn excusable(&self, e: &FsError) -> bool {
        match e {
            FsError::Offline { .. } => true,
            // Known issue "fetch-pending-move": uncached content under a rename that
            // waits is fetched under the new name, which the server does not have yet.
            FsError::Remote {
                source: davdrive::remote::RemoteError::NotFound,
                ..
            } if allowed("fetch-pending-move") => {
                self.outage
                    || self.storm.is_some()
                    || self.journal().iter().any(|e| e.op == Op::Move)
            }
            FsError::Remote { .. } => self.outage || self.storm.is_some(),
            _ => false,
        }
    }

    fn read_ino(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        let core = self.core();
        let (fh, _) = core.open(ino, false)?;
        let mut out = Vec::new();
        let r = loop {
            match core.read(fh, out.len() as u64, 1 << 16) {
                Ok(c) if c.is_empty() => break Ok(()),
                Ok(c) => out.extend_from_slice(&c),
                Err(e) => break Err(e),
            }
        };
        core.release(fh).unwrap();
        r.map(|_| out)
    }

    fn write_ino(&self, ino: u64, at: u64, data: &[u8]) -> Result<(), FsError> {
        let core = self.core();
        let (fh, _) = core.open(ino, true)?;
        let r = core.write(fh, at, data).and_then(|_| core.flush(fh));
        core.release(fh).unwrap();
        r
    }

    fn resolve(&self, path: &str) -> u64 {
        let mut ino = ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = self
                .core()
                .lookup(ino, part)
                .unwrap_or_else(|e| panic!("lookup {part} in {path}: {e}"))
                .ino;
        }
        ino
    }

    fn split(&self, path: &str) -> (u64, String) {
        (self.resolve(parent_of(path)), name_of(path).to_string())
    }

    /// Names in directory `ino` as the core lists them.
    fn local_names(&self, ino: u64) -> Vec<(String, u64, Kind)> {
        let fh = self
            .core()
            .opendir(ino)
            .unwrap_or_else(|e| panic!("opendir {ino}: {e}"));
        let entries = self.core().readdir(fh).unwrap();
        self.core().releasedir(fh);
        entries
            .iter()
            .filter(|e| e.name != "." && e.name != "..")
            .map(|e| (e.name.clone(), e.attr.ino, e.attr.kind))
            .collect()
    }

    /// Known issue "listing-pending-move": a folder at or below the destination of a
    /// waiting rename lists as what the server still holds at that path, and the merge
    /// drops its clean entries. When waived, such folders are neither walked nor changed.
    fn unlistable(&self, dir: &str) -> bool {
        allowed("listing-pending-move")
            && self
                .journal()
                .iter()
                .any(|e| e.op == Op::Move && e.dest.as_deref().is_some_and(|d| at_or_under(dir, d)))
    }

    fn stats(&self) -> (u64, u64) {
        let (w, f, _) = self.core().db().write(|tx| journal::stats(tx)).unwrap();
        (w, f)
    }

    fn journal(&self) -> Vec<journal::Entry> {
        self.core()
            .db()
            .write(|tx| journal::list(tx, false))
            .unwrap()
    }

    /// Waits until nothing waits in the journal, skipping backoffs by moving the clock.
    /// Returns false at the deadline.
    fn drain_for(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.stats().0 == 0 {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            self.clock.advance(Duration::from_secs(600));
            let _ = self.core().db().write(|tx| journal::retry_waiting_now(tx));
            self.core().journal_changed.notify_one();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Like `drain`, but also returns once entries are set aside and what waits makes no
    /// progress (held back behind them).
    fn drain_or_stuck(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut last, mut since) = (self.stats(), Instant::now());
        loop {
            let now = self.stats();
            if now.0 == 0 {
                return;
            }
            if now != last {
                (last, since) = (now, Instant::now());
            } else if now.1 > 0
                && since.elapsed() > Duration::from_millis(300)
                && !self
                    .core()
                    .db()
                    .write(|tx| journal::anything_running(tx))
                    .unwrap()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "journal did not drain after {what}: {:#?}",
                self.journal()
            );
            self.clock.advance(Duration::from_secs(600));
            let _ = self.core().db().write(|tx| journal::retry_waiting_now(tx));
            self.core().journal_changed.notify_one();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn drain(&self, what: &str) {
        if !self.drain_for(Duration::from_secs(30)) {
            panic!("journal did not drain after {what}: {:#?}", self.journal());
        }
    }

    /// Stops the replayer from reaching the remote and waits until nothing is in flight:
    /// the server and the journal hold still while the other client acts.
    fn freeze(&self) {
        self.remote.set_offline(true);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self
            .core()
            .db()
            .write(|tx| journal::anything_running(tx))
            .unwrap()
        {
            assert!(Instant::now() < deadline, "replay did not stop");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn unfreeze(&self) {
        self.remote.set_offline(self.outage);
    }

    /// Files of davdrive's own on the server (upload scratch files, base copies, range
    /// probes): none may be left once the journal has drained.
    fn scratch_left(&self) -> Vec<String> {
        (self.remote.snapshot().into_keys())
            .filter(|k| k.split('/').any(is_internal_name))
            .collect()
    }

    fn server(&self) -> BTreeMap<String, MemItem> {
        self.remote
            .snapshot()
            .into_iter()
            .filter(|(k, _)| !k.split('/').any(is_internal_name))
            .collect()
    }

    /// The whole local view, walked through the core: every directory listed, every file
    /// read.
    fn local_tree(&self) -> BTreeMap<String, MemItem> {
        let mut out = BTreeMap::new();
        let mut stack = vec![("/".to_string(), ROOT_INO)];
        while let Some((dir, ino)) = stack.pop() {
            for (name, ino, kind) in self.local_names(ino) {
                let p = join(&dir, &name);
                if kind == Kind::Dir {
                    out.insert(p.clone(), MemItem::Dir);
                    stack.push((p, ino));
                } else {
                    let data = self
                        .read_ino(ino)
                        .unwrap_or_else(|e| panic!("read {p} through the core: {e}"));
                    out.insert(p, MemItem::File(data));
                }
            }
        }
        out
    }
}

/// Contents shortened to length and hash, for readable failures.
fn digest<'a>(
    m: impl IntoIterator<Item = (&'a String, Option<&'a MemItem>)>,
) -> BTreeMap<String, String> {
    m.into_iter()
        .map(|(k, v)| {
            let d = match v {
                Some(MemItem::Dir) => "dir".to_string(),
                Some(MemItem::File(b)) => {
                    format!("{} bytes {}", b.len(), &common::sha256(b)[..12])
                }
                None => "gone".to_string(),
            };
            (k.clone(), d)
        })
        .collect()
}

fn server_digest(s: &BTreeMap<String, MemItem>) -> BTreeMap<String, String> {
    digest(s.iter().map(|(k, v)| (k, Some(v))))
}

fn model_digest(m: &Model) -> BTreeMap<String, String> {
    m.m.iter()
        .map(|(k, e)| {
            let d = match &e.item {
                Item::Dir => "dir".to_string(),
                Item::File(b) => format!("{} bytes {}", b.len(), &common::sha256(b)[..12]),
                Item::Gone => "gone".to_string(),
            };
            (k.clone(), format!("{d} {:?} ino {}", e.st, e.ino))
        })
        .collect()
}

// ----- other-client changes: what they meet in the journal -----------------------------

/// What an other-client change at `roots` (server paths) meets in the waiting journal.
struct Reach {
    /// The roots and every place waiting moves carry them (or things out of them) to.
    roots: Vec<String>,
    /// Nodes whose waiting entries name a path at or below one of those places.
    inos: HashSet<u64>,
    /// Where each original root ends up once the waiting moves are replayed.
    images: Vec<String>,
    /// Files with a waiting upload.
    pending_puts: HashSet<u64>,
}

fn reach(entries: &[journal::Entry], start: &[String]) -> Reach {
    let mut roots: Vec<String> = start.to_vec();
    let mut images: Vec<String> = start.to_vec();
    let mut inos = HashSet::new();
    for e in entries {
        let named = std::iter::once(e.path.as_str()).chain(e.dest.as_deref());
        // A waiting move onto a folder the change lands in meets it too: on the server
        // that folder is what the move replaces (ours, removed here), and what they put
        // in it keeps it there, so our moved folder may go aside instead.
        let lands_in_target = e.op == Op::Move
            && e.dest
                .as_deref()
                .is_some_and(|d| roots.iter().any(|r| at_or_under(r, d)));
        if lands_in_target
            || named
                .clone()
                .any(|p| roots.iter().any(|r| at_or_under(p, r)))
        {
            inos.insert(e.ino);
        }
        let (Op::Move, Some(d)) = (e.op, e.dest.as_deref()) else {
            continue;
        };
        let mut more = Vec::new();
        for r in &roots {
            if at_or_under(r, &e.path) {
                more.push(format!("{d}{}", &r[e.path.len()..]));
            } else if at_or_under(&e.path, r) {
                more.push(d.to_string());
            }
        }
        roots.extend(more);
        roots.sort();
        roots.dedup();
        for i in images.iter_mut() {
            if at_or_under(i, &e.path) {
                *i = format!("{d}{}", &i[e.path.len()..]);
            }
        }
    }
    let pending_puts = entries
        .iter()
        .filter(|e| e.op == Op::Put)
        .map(|e| e.ino)
        .collect();
    Reach {
        roots,
        inos,
        images,
        pending_puts,
    }
}

/// Marks what an other-client change at `roots` may affect. Returns the images of the
/// roots and whether the change met no waiting local change (its outcome is exact then).
/// Entries at or below `destroys` (images) that are the other client's become Unknown
/// when the outcome is not exact: this change may legitimately replace them.
fn touch(h: &Harness, m: &mut Model, roots: &[String], destroys: &[usize]) -> (Vec<String>, bool) {
    let entries = h.journal();
    let r = reach(&entries, roots);
    let mut area: Vec<String> =
        m.m.keys()
            .filter(|k| r.roots.iter().any(|root| at_or_under(k, root)))
            .cloned()
            .collect();
    let by_ino: Vec<String> =
        m.m.iter()
            .filter(|(_, e)| e.ino != 0 && r.inos.contains(&e.ino))
            .map(|(k, _)| k.clone())
            .collect();
    for k in by_ino {
        area.extend(
            m.m.keys()
                .filter(|x| at_or_under(x, &k))
                .cloned()
                .collect::<Vec<_>>(),
        );
    }
    area.sort();
    area.dedup();
    let open_ino = m.open.as_ref().filter(|o| o.wrote).map(|o| o.ino);
    let area_inos: HashSet<u64> = area
        .iter()
        .map(|k| m.m[k].ino)
        .filter(|i| *i != 0)
        .collect();
    // The open file, wherever it is now (the model may have lost track of its inode).
    let open_path = open_ino.and_then(|i| {
        h.core()
            .db()
            .write(|tx| davdrive::store::path_of(tx, i))
            .unwrap()
    });
    let open_met = open_ino.is_some_and(|i| area_inos.contains(&i))
        || open_path.is_some_and(|p| r.roots.iter().any(|root| at_or_under(&p, root)));
    // Below a folder already touched by the other client, the folder itself may still
    // be moved aside (a file took its name): nothing below it is exact.
    let under_touched = r.images.iter().any(|q| {
        let mut cur = q.as_str();
        while cur != "/" {
            cur = parent_of(cur);
            if m.m.get(cur).is_some_and(|e| e.st != St::Ours) {
                return true;
            }
        }
        false
    });
    let precise = r.inos.is_empty() && !open_met && !under_touched;
    // A survivor this change meets while its version is on the server (nothing waits)
    // may now legitimately go: their change wins over a version that was synced.
    // So may one whose very bytes sit where the change strikes, even with an upload of
    // the node still waiting: that version reached the server before their change did
    // (the waiting upload may find nothing left to send).
    let server = h.server();
    let on_server_here = |data: &[u8]| {
        let want = MemItem::File(data.to_vec());
        server
            .iter()
            .any(|(k, v)| *v == want && r.roots.iter().any(|root| at_or_under(k, root)))
    };
    m.survivors.retain(|s| {
        let idle = !r.pending_puts.contains(&s.ino) && open_ino != Some(s.ino);
        let here = on_server_here(&s.data);
        !(here || (idle && area_inos.contains(&s.ino)))
    });
    // Their own earlier bytes that this change overwrites or deletes on the server are
    // theirs to lose: wherever the model expected them (a waiting rename may have been
    // thought to carry them elsewhere), they are owed no more.
    let struck_bytes: Vec<&MemItem> = server
        .iter()
        .filter(|(k, _)| destroys.iter().any(|i| at_or_under(k, &roots[*i])))
        .map(|(_, v)| v)
        .collect();
    for e in m.m.values_mut() {
        if let (St::Theirs { precise: false }, Item::File(b)) = (e.st, &e.item) {
            if struck_bytes.contains(&&MemItem::File(b.clone())) {
                e.st = St::Unknown;
            }
        }
    }
    if precise {
        return (r.images, true);
    }
    // What the change overwrites or deletes, wherever waiting moves carry it.
    let gone = reach(
        &entries,
        &destroys
            .iter()
            .map(|i| roots[*i].clone())
            .collect::<Vec<_>>(),
    )
    .roots;
    for k in &area {
        let e = m.m.get_mut(k).unwrap();
        if let (St::Ours, Item::File(data)) = (e.st, &e.item) {
            let waiting = r.pending_puts.contains(&e.ino) || open_ino == Some(e.ino);
            if waiting && !on_server_here(data) {
                m.survivors.push(Survivor {
                    ino: e.ino,
                    data: data.clone(),
                    path: k.clone(),
                });
            }
        }
        let destroyed = gone.iter().any(|g| at_or_under(k, g));
        e.st = match e.st {
            St::Ours => St::Unknown,
            St::Theirs { .. } if destroyed => St::Unknown,
            St::Theirs { .. } => St::Theirs { precise: false },
            St::Unknown => St::Unknown,
        };
    }
    // The target's own path, where waiting moves take what was there elsewhere, and every
    // place on the way: what ends up there depends on how the conflict goes (a folder of
    // ours may go aside and leave it to theirs, or never be made where their file is
    // and so never carry it on), so nothing new is made there here.
    for p in roots.iter().chain(&r.roots) {
        if !m.m.contains_key(p) {
            set_entry(m, p, Item::Gone, St::Unknown, false);
        }
    }
    (r.images, false)
}

/// Sets the model entry at `p`, keeping the inode of what was there.
fn set_entry(m: &mut Model, p: &str, item: Item, st: St, keep_ino: bool) {
    let ino = match m.m.get(p) {
        Some(e) if keep_ino => e.ino,
        _ => 0,
    };
    m.m.insert(p.to_string(), MEntry { item, ino, st });
}

/// The folders above `target` (a server path) that something else took the place of
/// locally (a folder removed here, then a file made at its name), with their removal
/// still waiting. The other client's change below them meets that local change.
fn ancestors_replaced_here(h: &Harness, m: &Model, target: &str) -> Vec<String> {
    let entries = h.journal();
    let mut out = Vec::new();
    let mut cur = target;
    while parent_of(cur) != "/" {
        cur = parent_of(cur);
        let image = reach(&entries, &[cur.to_string()]).images.remove(0);
        if m.m.get(&image).is_some_and(|e| e.item != Item::Dir) {
            out.push(cur.to_string());
        }
    }
    out
}

/// A folder removed here keeps what another client put in it before the removal reached
/// the server (a folder goes only while it is empty there): the folders above `q` that
/// the model no longer has come back as the other client's.
fn revive_parents(m: &mut Model, q: &str) {
    let mut cur = q;
    while parent_of(cur) != "/" {
        cur = parent_of(cur);
        if m.m.contains_key(cur) {
            break;
        }
        set_entry(m, cur, Item::Dir, St::Theirs { precise: false }, false);
    }
}

fn apply_other(h: &mut Harness, m: &mut Model, a: &Action) {
    h.freeze();
    let raw = h.remote.snapshot();
    let server = h.server();
    // The other client leaves conflict copies alone (they hold the only copy of bytes
    // this test checks for), the folders holding them, and upload scratch files.
    let usable = |p: &String| {
        !raw.keys().any(|k| {
            at_or_under(k, p) && (is_conflict_path(k) || k.split('/').any(is_internal_name))
        })
    };
    let files: Vec<String> = server
        .iter()
        .filter(|(k, v)| matches!(v, MemItem::File(_)) && usable(k))
        .map(|(k, _)| k.clone())
        .collect();
    let dirs: Vec<String> = server
        .iter()
        .filter(|(k, v)| **v == MemItem::Dir && usable(k))
        .map(|(k, _)| k.clone())
        .collect();
    let all: Vec<String> = files.iter().chain(dirs.iter()).cloned().collect();
    // Known issue "mkcol-over-file": a file put where our new folder's creation waits
    // sets that creation aside (405) instead of moving our folder beside it.
    let waiting_mkcol = |p: &str| {
        allowed("mkcol-over-file") && h.journal().iter().any(|e| e.op == Op::Mkcol && e.path == p)
    };
    // Known issue "dir-delete": a folder's delete is replayed as a recursive DELETE that
    // takes whatever the other client put there meanwhile.
    let waiting_dir_delete = |p: &str| {
        allowed("dir-delete") && {
            let entries = h.journal();
            let r = reach(&entries, &[p.to_string()]);
            entries.iter().any(|e| {
                e.op == Op::Delete && e.is_dir && r.roots.iter().any(|r| at_or_under(r, &e.path))
            })
        }
    };
    // Known issue "move-of-deleted": a waiting rename of a file whose source the other
    // client removes is set aside ("not found on the remote").
    // Known issue "move-adopts-etag": a waiting rename of a file whose source the other
    // client rewrote moves their version and records its ETag as ours, over our content.
    let move_source = |p: &str, issue: &str| {
        allowed(issue) && {
            let entries = h.journal();
            let r = reach(&entries, &[p.to_string()]);
            entries.iter().any(|e| {
                e.op == Op::Move && !e.is_dir && r.roots.iter().any(|r| at_or_under(&e.path, r))
            })
        }
    };
    let removes_move_source = |p: &str| move_source(p, "move-of-deleted");
    // Known issue "delete-takes-folder": a file's delete meeting a folder takes it for an
    // empty upload of ours and deletes it recursively.
    let file_delete_above = |p: &str| {
        allowed("delete-takes-folder") && {
            let entries = h.journal();
            let r = reach(&entries, &[p.to_string()]);
            entries.iter().any(|e| {
                e.op == Op::Delete && !e.is_dir && r.roots.iter().any(|r| at_or_under(r, &e.path))
            })
        }
    };
    // Known issue "blind-delete": a removed file whose upload was attempted but sent
    // nothing leaves a delete with no ETag and no hash: an unconditional DELETE.
    let blind_delete = |p: &str| {
        allowed("blind-delete") && {
            let entries = h.journal();
            let r = reach(&entries, &[p.to_string()]);
            entries.iter().any(|e| {
                e.op == Op::Delete
                    && !e.is_dir
                    && e.base_etag.is_none()
                    && h.core()
                        .db()
                        .write(|tx| journal::sent_hashes(tx, e.id))
                        .unwrap()
                        .is_empty()
                    && r.roots.iter().any(|r| at_or_under(&e.path, r))
            })
        }
    };
    let rewrites_move_source = |p: &str| move_source(p, "move-adopts-etag");
    let nth = |v: &[String], i: usize| (!v.is_empty()).then(|| v[i % v.len()].clone());
    let parent_choice = |i: usize| {
        let mut c = dirs.clone();
        c.push("/".into());
        c[i % c.len()].clone()
    };
    match a {
        Action::OtherPut {
            pick,
            fresh,
            name,
            len,
            seed,
        } => {
            let target = match (*fresh, nth(&files, *pick)) {
                (false, Some(f)) => f,
                _ => join(&parent_choice(*pick), NAMES[*name as usize]),
            };
            if server.get(&target) == Some(&MemItem::Dir)
                || is_conflict_path(&target)
                || waiting_mkcol(&target)
                || waiting_dir_delete(&target)
                || rewrites_move_source(&target)
                || blind_delete(&target)
                || (file_delete_above(&target) && !files.contains(&target))
            {
                return h.unfreeze();
            }
            let data = their_bytes(*len as usize, *seed);
            let mut roots = vec![target.clone()];
            roots.extend(ancestors_replaced_here(h, m, &target));
            let (images, precise) = touch(h, m, &roots, &[0]);
            h.remote.other_put(&target, data.clone()).unwrap();
            let q = &images[0];
            if precise {
                for k in m.below(q) {
                    m.m.remove(&k);
                }
            }
            set_entry(m, q, Item::File(data), St::Theirs { precise }, true);
            revive_parents(m, q);
        }
        Action::OtherDelete { pick } => {
            let Some(target) = nth(&all, *pick) else {
                return h.unfreeze();
            };
            if removes_move_source(&target) {
                return h.unfreeze();
            }
            let (images, precise) = touch(h, m, std::slice::from_ref(&target), &[0]);
            h.remote.other_delete(&target).unwrap();
            let q = &images[0];
            if precise {
                for k in m.below(q) {
                    m.m.remove(&k);
                }
                set_entry(m, q, Item::Gone, St::Theirs { precise: true }, true);
            } else if !m.m.contains_key(q) {
                set_entry(m, q, Item::Gone, St::Unknown, false);
            }
        }
        Action::OtherMkdir { dir, name } => {
            let target = join(&parent_choice(*dir), NAMES[*name as usize]);
            if server.contains_key(&target)
                || waiting_dir_delete(&target)
                || file_delete_above(&target)
            {
                return h.unfreeze();
            }
            let mut roots = vec![target.clone()];
            roots.extend(ancestors_replaced_here(h, m, &target));
            let (images, precise) = touch(h, m, &roots, &[0]);
            h.remote.other_mkdir(&target).unwrap();
            if precise {
                set_entry(
                    m,
                    &images[0],
                    Item::Dir,
                    St::Theirs { precise: true },
                    false,
                );
            } else if !m.m.contains_key(&images[0]) {
                set_entry(m, &images[0], Item::Dir, St::Unknown, false);
            }
            revive_parents(m, &images[0]);
        }
        Action::OtherReplaceDir { pick, len, seed } => {
            let Some(target) = nth(&dirs, *pick) else {
                return h.unfreeze();
            };
            if waiting_mkcol(&target)
                || waiting_dir_delete(&target)
                || removes_move_source(&target)
                || blind_delete(&target)
                || (file_delete_above(&target) && !files.contains(&target))
            {
                return h.unfreeze();
            }
            let data = their_bytes(*len as usize, *seed);
            let mut roots = vec![target.clone()];
            roots.extend(ancestors_replaced_here(h, m, &target));
            let (images, precise) = touch(h, m, &roots, &[0]);
            h.remote.other_delete(&target).unwrap();
            h.remote.other_put(&target, data.clone()).unwrap();
            let q = &images[0];
            if precise {
                for k in m.below(q) {
                    m.m.remove(&k);
                }
            }
            set_entry(m, q, Item::File(data), St::Theirs { precise }, false);
            revive_parents(m, q);
        }
        Action::OtherMove { pick, dir, name } => {
            let Some(src) = nth(&all, *pick) else {
                return h.unfreeze();
            };
            let dst = join(&parent_choice(*dir), NAMES[*name as usize]);
            if at_or_under(&dst, &src)
                || at_or_under(&src, &dst)
                || is_conflict_path(&dst)
                || waiting_mkcol(&dst)
                || waiting_dir_delete(&dst)
                || removes_move_source(&src)
                || removes_move_source(&dst)
                || rewrites_move_source(&dst)
                || blind_delete(&dst)
                || file_delete_above(&dst)
                || server.get(&dst).is_some_and(|_| !usable(&dst))
            {
                return h.unfreeze();
            }
            let mut roots = vec![src.clone(), dst.clone()];
            roots.extend(ancestors_replaced_here(h, m, &dst));
            let (images, precise) = touch(h, m, &roots, &[1]);
            h.remote.other_move(&src, &dst).unwrap();
            let (qs, qd) = (images[0].clone(), images[1].clone());
            if precise {
                m.remove_tree(&qd);
                m.move_tree(&qs, &qd, |e| {
                    e.ino = 0;
                    if e.st == St::Ours {
                        e.st = St::Theirs { precise: true };
                    }
                });
                set_entry(m, &qs, Item::Gone, St::Theirs { precise: true }, false);
            } else {
                // The other client's own versions travel with their move.
                let theirs: Vec<String> =
                    m.m.iter()
                        .filter(|(k, e)| at_or_under(k, &qs) && matches!(e.st, St::Theirs { .. }))
                        .map(|(k, _)| k.clone())
                        .collect();
                for k in theirs {
                    let mut e = m.m.remove(&k).unwrap();
                    e.st = St::Theirs { precise: false };
                    e.ino = 0;
                    m.m.insert(format!("{qd}{}", &k[qs.len()..]), e);
                }
                if !m.m.contains_key(&qd) {
                    set_entry(m, &qd, Item::Gone, St::Unknown, false);
                }
                if !m.m.contains_key(&qs) {
                    set_entry(m, &qs, Item::Gone, St::Unknown, false);
                }
            }
            revive_parents(m, &qd);
        }
        _ => unreachable!(),
    }
    h.unfreeze();
}

// ----- local actions -------------------------------------------------------------------

/// Whether directory `p` (in the model) holds, locally, anything the model does not know
/// (conflict copies, folders moved aside).
fn has_strangers(h: &Harness, m: &Model, p: &str) -> bool {
    h.local_names(m.ino_of(p))
        .iter()
        .any(|(n, _, _)| !m.m.contains_key(&join(p, n)))
}

fn apply(h: &mut Harness, m: &mut Model, a: &Action) {
    if !allowed_here(h, m, a) {
        return;
    }
    match a {
        Action::Create {
            dir,
            name,
            len,
            seed,
        } => {
            let d = m.pick(*dir, Want::Dir, true).unwrap();
            let n = NAMES[*name as usize];
            let p = join(&d, n);
            if m.m.contains_key(&p) {
                return;
            }
            let data = ours_bytes(*len as usize, *seed);
            let (attr, fh) = h
                .core()
                .create(m.ino_of(&d), n, 0o644, 0, 0)
                .unwrap_or_else(|e| panic!("create {p}: {e}"));
            h.core().write(fh, 0, &data).unwrap();
            h.core().flush(fh).unwrap();
            h.core().release(fh).unwrap();
            m.m.insert(
                p,
                MEntry {
                    item: Item::File(data),
                    ino: attr.ino,
                    st: St::Ours,
                },
            );
        }
        Action::Write {
            file,
            at,
            len,
            seed,
        } => {
            let Some(p) = m.pick(*file, Want::File, false) else {
                return;
            };
            let ino = m.ino_of(&p);
            let Item::File(cur) = &m.m[&p].item else {
                unreachable!()
            };
            let at = (*at as usize) % (cur.len() + 1);
            let data = ours_bytes(*len as usize, *seed);
            match h.write_ino(ino, at as u64, &data) {
                Ok(()) => {}
                Err(e) if h.excusable(&e) => return,
                Err(e) => panic!("write {p}: {e}"),
            }
            // Its close committed the writes of every handle of the file.
            if let Some(o) = m.open.as_mut().filter(|o| o.ino == ino) {
                o.wrote = false;
            }
            let Item::File(cur) = &mut m.m.get_mut(&p).unwrap().item else {
                unreachable!()
            };
            if cur.len() < at + data.len() {
                cur.resize(at + data.len(), 0);
            }
            cur[at..at + data.len()].copy_from_slice(&data);
        }
        Action::Truncate { file, len } => {
            let Some(p) = m.pick(*file, Want::File, false) else {
                return;
            };
            let ino = m.ino_of(&p);
            match h
                .core()
                .setattr(ino, None, None, None, Some(*len as u64), None)
            {
                Ok(_) => {}
                Err(e) if h.excusable(&e) => return,
                Err(e) => panic!("truncate {p}: {e}"),
            }
            if let Some(o) = m.open.as_mut().filter(|o| o.ino == ino) {
                o.wrote = true;
            }
            let Item::File(cur) = &mut m.m.get_mut(&p).unwrap().item else {
                unreachable!()
            };
            cur.resize(*len as usize, 0);
        }
        Action::Rename { node, dir, name } => {
            let Some(src) = m.pick(*node, Want::Any, false) else {
                return;
            };
            let d = m.pick(*dir, Want::Dir, true).unwrap();
            let n = NAMES[*name as usize];
            let dst = join(&d, n);
            let src_is_dir = m.m[&src].item == Item::Dir;
            if dst == src || (src_is_dir && at_or_under(&d, &src)) {
                return;
            }
            let mut replaced_dir = false;
            if let Some(existing) = m.m.get(&dst) {
                if existing.st != St::Ours {
                    return;
                }
                let ok = match (src_is_dir, &existing.item) {
                    (true, Item::Dir) => {
                        replaced_dir = true;
                        m.below(&dst).is_empty() && !has_strangers(h, m, &dst)
                    }
                    (false, Item::File(_)) => true,
                    _ => false,
                };
                if !ok {
                    return;
                }
            }
            let sp = m.ino_of(parent_of(&src));
            match h.core().rename(sp, name_of(&src), m.ino_of(&d), n, false) {
                Ok(()) => {}
                // A conflict copy landed in the directory since it was looked at.
                Err(FsError::NotEmpty) if replaced_dir && has_strangers(h, m, &dst) => return,
                Err(e) => panic!("rename {src} -> {dst}: {e}"),
            }
            if let Some(gone) = m.m.remove(&dst) {
                m.pinned.remove(&gone.ino);
            }
            m.move_tree(&src, &dst, |_| {});
        }
        Action::Mkdir { dir, name } => {
            let d = m.pick(*dir, Want::Dir, true).unwrap();
            let n = NAMES[*name as usize];
            let p = join(&d, n);
            if m.m.contains_key(&p) {
                return;
            }
            let attr = h
                .core()
                .mkdir(m.ino_of(&d), n, 0o755, 0, 0)
                .unwrap_or_else(|e| panic!("mkdir {p}: {e}"));
            m.m.insert(
                p,
                MEntry {
                    item: Item::Dir,
                    ino: attr.ino,
                    st: St::Ours,
                },
            );
        }
        Action::Rmdir { dir } => {
            let Some(p) = m.pick(*dir, Want::Dir, false) else {
                return;
            };
            let below = m.below(&p);
            let pp = m.ino_of(parent_of(&p));
            if below.iter().any(|k| m.m[k].st == St::Ours) {
                let e = h.core().rmdir(pp, name_of(&p)).unwrap_err();
                assert_eq!(e.errno(), libc::ENOTEMPTY, "rmdir {p}: {e}");
                return;
            }
            if !below.is_empty() || has_strangers(h, m, &p) {
                return;
            }
            match h.core().rmdir(pp, name_of(&p)) {
                Ok(()) => {}
                Err(FsError::NotEmpty) if has_strangers(h, m, &p) => return,
                Err(e) => panic!("rmdir {p}: {e}"),
            }
            let gone = m.m.remove(&p).unwrap();
            m.pinned.remove(&gone.ino);
        }
        Action::Unlink { file } => {
            let Some(p) = m.pick(*file, Want::File, false) else {
                return;
            };
            h.core()
                .unlink(m.ino_of(parent_of(&p)), name_of(&p))
                .unwrap_or_else(|e| panic!("unlink {p}: {e}"));
            let gone = m.m.remove(&p).unwrap();
            m.pinned.remove(&gone.ino);
        }
        Action::OpenWrite {
            file,
            at,
            len,
            seed,
        } => {
            let (fh, ino) = match &m.open {
                Some(o) => (o.fh, o.ino),
                None => {
                    let Some(p) = m.pick(*file, Want::File, false) else {
                        return;
                    };
                    let ino = m.ino_of(&p);
                    let fh = match h.core().open(ino, true) {
                        Ok((fh, _)) => fh,
                        Err(e) if h.excusable(&e) => return,
                        Err(e) => panic!("open {p}: {e}"),
                    };
                    m.open = Some(OpenH {
                        fh,
                        ino,
                        wrote: false,
                    });
                    (fh, ino)
                }
            };
            // Unlinked meanwhile (an orphan), or touched by the other client: no writes.
            let Some(p) = m.path_of_ino(ino).filter(|p| m.m[p].st == St::Ours) else {
                return;
            };
            let Item::File(cur) = &m.m[&p].item else {
                unreachable!()
            };
            let at = (*at as usize) % (cur.len() + 1);
            let data = ours_bytes(*len as usize, *seed);
            match h.core().write(fh, at as u64, &data) {
                Ok(_) => {}
                Err(e) if h.excusable(&e) => return,
                Err(e) => panic!("write through the open handle of {p}: {e}"),
            }
            m.open.as_mut().unwrap().wrote = true;
            let Item::File(cur) = &mut m.m.get_mut(&p).unwrap().item else {
                unreachable!()
            };
            if cur.len() < at + data.len() {
                cur.resize(at + data.len(), 0);
            }
            cur[at..at + data.len()].copy_from_slice(&data);
        }
        Action::Release => release(h, m),
        Action::Evict { file } => {
            let Some(p) = m.pick(*file, Want::File, false) else {
                return;
            };
            let ino = m.ino_of(&p);
            let r = h
                .core()
                .evict(ino)
                .unwrap_or_else(|e| panic!("evict {p}: {e}"));
            match r {
                Evicted::Freed(_) => {
                    assert!(!m.pinned_at(&p), "evict {p}: evicted a pinned file");
                    // Content below a folder whose rename waits may go: it is fetched
                    // again from where the server has it (the old path), which the
                    // read-back after every step checks.
                }
                Evicted::Pinned => {
                    assert!(m.pinned_at(&p), "evict {p}: says pinned, nothing is")
                }
                Evicted::NotCached | Evicted::Dirty | Evicted::Open => {}
            }
        }
        Action::Pin { node, on } => {
            let Some(p) = m.pick(*node, Want::Any, false) else {
                return;
            };
            let ino = m.ino_of(&p);
            h.core()
                .set_pinned(ino, *on)
                .unwrap_or_else(|e| panic!("pin {p}: {e}"));
            if *on {
                m.pinned.insert(ino);
            } else {
                m.pinned.remove(&ino);
            }
        }
        Action::Outage(on) => h.set_outage(*on),
        Action::Storm503(on) => h.set_storm(*on),
        Action::Lock { node, method, code } => {
            if h.locks >= MAX_LOCKS {
                return;
            }
            let Some(p) = m.pick(*node, Want::Any, false) else {
                return;
            };
            let method = [
                Method::Put,
                Method::Move,
                Method::Delete,
                Method::Mkcol,
                Method::PutRange,
            ][*method as usize];
            let code = [423, 408][*code as usize];
            h.remote.inject(
                Rule::on(method)
                    .at(&p)
                    .outcome(Outcome::Status(code))
                    .times(3),
            );
            h.locks += 1;
        }
        Action::Settle => {
            if h.outage || h.storm.is_some() {
                return;
            }
            if h.drain_for(Duration::from_secs(3)) && h.stats().1 == 0 {
                check_server(h, m, &format!("settle after {a:?}"), false);
            }
        }
        Action::Restart => {
            h.restart(false);
            m.open = None;
        }
        Action::Crash => {
            // Known issue "crash-open": writes to a file still open at a crash are cut to
            // the size of its last committed upload when one still waits.
            if let Some(o) = m.open.as_mut().filter(|o| o.wrote && allowed("crash-open")) {
                h.core().flush(o.fh).unwrap();
                o.wrote = false;
            }
            h.restart(true);
            m.open = None;
        }
        Action::OtherPut { .. }
        | Action::OtherDelete { .. }
        | Action::OtherMkdir { .. }
        | Action::OtherReplaceDir { .. }
        | Action::OtherMove { .. } => apply_other(h, m, a),
    }
}

/// With "listing-pending-move" waived: namespace changes that list a folder at or below
/// the destination of a waiting rename are skipped (see `Harness::unlistable`).
fn allowed_here(h: &Harness, m: &Model, a: &Action) -> bool {
    if !allowed("listing-pending-move") {
        return true;
    }
    let dirs: Vec<String> = match a {
        Action::Create { dir, .. } | Action::Mkdir { dir, .. } => {
            vec![m.pick(*dir, Want::Dir, true).unwrap()]
        }
        Action::Rename { node, dir, name } => {
            let Some(src) = m.pick(*node, Want::Any, false) else {
                return true;
            };
            let d = m.pick(*dir, Want::Dir, true).unwrap();
            let dst = join(&d, NAMES[*name as usize]);
            vec![parent_of(&src).to_string(), src, d, dst]
        }
        Action::Rmdir { dir } => match m.pick(*dir, Want::Dir, false) {
            Some(p) => vec![parent_of(&p).to_string(), p],
            None => return true,
        },
        Action::Unlink { file } => match m.pick(*file, Want::File, false) {
            Some(p) => vec![parent_of(&p).to_string()],
            None => return true,
        },
        _ => return true,
    };
    !dirs.iter().any(|d| h.unlistable(d))
}

fn release(h: &Harness, m: &mut Model) {
    if let Some(o) = m.open.take() {
        h.core().flush(o.fh).unwrap();
        h.core().release(o.fh).unwrap();
    }
}

// ----- checks --------------------------------------------------------------------------

/// Known issue "folder-move-etag": files in a renamed folder keep their old ETag, and an
/// upload of one may then take our own previous version for somebody else's and put
/// our edit into a conflict copy beside it. When waived, such a file (found by a copy
/// with its model bytes beside it) leaves the model's exact part.
fn self_conflict<'a>(want: &[u8], siblings: impl Iterator<Item = (&'a str, Vec<u8>)>) -> bool {
    // The copy is named after the name the upload was recorded under, which a waiting
    // rename may have changed since: any conflict copy beside it holding our bytes.
    allowed("folder-move-etag")
        && siblings
            .into_iter()
            .any(|(n, data)| is_conflict_path(n) && data == want)
}

/// After every step: the untainted part of the local view is exactly the model.
fn check_local(h: &Harness, m: &mut Model, ctx: &str) {
    let mut demote = Vec::new();
    let mut stack = vec!["/".to_string()];
    while let Some(dir) = stack.pop() {
        if h.unlistable(&dir) {
            continue;
        }
        let names = h.local_names(m.ino_of(&dir));
        let copies: Vec<(String, u64)> = names
            .iter()
            .filter(|(n, _, k)| is_conflict_path(n) && *k == Kind::File)
            .map(|(n, i, _)| (n.clone(), *i))
            .collect();
        let mut seen = HashSet::new();
        for (name, ino, kind) in names {
            let p = join(&dir, &name);
            seen.insert(p.clone());
            let Some(e) = m.m.get(&p) else {
                assert!(
                    is_conflict_path(&name),
                    "{ctx}: local entry {p} is not in the model\nmodel: {:#?}",
                    model_digest(m)
                );
                continue;
            };
            if e.st != St::Ours {
                continue;
            }
            assert_eq!(ino, e.ino, "{ctx}: {p} is another node locally");
            match &e.item {
                Item::Dir => {
                    assert_eq!(kind, Kind::Dir, "{ctx}: {p} is not a directory locally");
                    stack.push(p);
                }
                Item::File(want) => {
                    assert_eq!(kind, Kind::File, "{ctx}: {p} is not a file locally");
                    match h.read_ino(ino) {
                        Ok(got) if &got == want => {}
                        Ok(_)
                            if self_conflict(
                                want,
                                copies.iter().filter_map(|(n, i)| {
                                    h.read_ino(*i).ok().map(|d| (n.as_str(), d))
                                }),
                            ) =>
                        {
                            demote.push(p.clone())
                        }
                        Ok(got) => panic!(
                            "{ctx}: local content of {p}: {} bytes {}, want {} bytes {}",
                            got.len(),
                            &common::sha256(&got)[..12],
                            want.len(),
                            &common::sha256(want)[..12]
                        ),
                        Err(e) if h.excusable(&e) => {}
                        Err(e) => panic!("{ctx}: read {p}: {e}"),
                    }
                }
                Item::Gone => unreachable!(),
            }
        }
        for (p, e) in m.m.range(dir.clone()..) {
            if e.st == St::Ours && parent_of(p) == dir && p != &dir {
                assert!(
                    seen.contains(p),
                    "{ctx}: {p} is missing locally\nmodel: {:#?}",
                    model_digest(m)
                );
            }
        }
    }
    for p in demote {
        m.m.get_mut(&p).unwrap().st = St::Unknown;
    }
}

/// With the journal drained: the server against the model. `end`: also the conflict
/// copies recorded.
fn check_server(h: &Harness, m: &Model, ctx: &str, end: bool) {
    let server = h.server();
    let skip = m.open.as_ref().filter(|o| o.wrote).map(|o| o.ino);
    let mut problems = Vec::new();
    for (p, e) in &m.m {
        if e.ino != 0 && skip == Some(e.ino) {
            continue;
        }
        match e.st {
            St::Ours | St::Theirs { precise: true } => {
                let want = e.item.mem();
                let excused = match (&e.item, e.st) {
                    (Item::File(b), St::Ours) => self_conflict(
                        b,
                        server.iter().filter_map(|(k, v)| match v {
                            MemItem::File(d) if parent_of(k) == parent_of(p) => {
                                Some((name_of(k), d.clone()))
                            }
                            _ => None,
                        }),
                    ),
                    _ => false,
                };
                if server.get(p) != want.as_ref() && !excused {
                    problems.push(format!(
                        "{p} ({:?}): server has {:?}, want {:?}",
                        e.st,
                        digest([(p, server.get(p))]).into_values().next(),
                        digest([(p, want.as_ref())]).into_values().next()
                    ));
                }
            }
            St::Theirs { precise: false } => {
                if let Item::File(b) = &e.item {
                    if !server.values().any(|v| *v == MemItem::File(b.clone())) {
                        problems.push(format!(
                            "the other client's {} bytes written at {p} are nowhere on the server",
                            b.len()
                        ));
                    }
                }
            }
            St::Unknown => {}
        }
    }
    // Bytes of the other client's whose place the model does not know exactly ("must
    // survive somewhere"): a folder of ours that held them may have carried them along.
    let anywhere: Vec<&Vec<u8>> =
        m.m.values()
            .filter(|e| e.st == (St::Theirs { precise: false }))
            .filter_map(|e| match &e.item {
                Item::File(b) => Some(b),
                _ => None,
            })
            .collect();
    for (p, item) in &server {
        if m.m.contains_key(p) || is_conflict_path(p) {
            continue;
        }
        if matches!(item, MemItem::File(b) if anywhere.contains(&b)) {
            continue;
        }
        // A folder holding such bytes: a folder of ours that carried them along and was
        // then removed here stays, as theirs, with their files.
        let inside = format!("{p}/");
        let holds_theirs = || {
            server.iter().any(|(k, v)| {
                k.starts_with(&inside) && matches!(v, MemItem::File(b) if anywhere.contains(&b))
            })
        };
        if *item == MemItem::Dir && holds_theirs() {
            continue;
        }
        let mut cur = p.as_str();
        let mut explained = false;
        while cur != "/" {
            cur = parent_of(cur);
            if m.m.get(cur).is_some_and(|e| e.st != St::Ours) {
                explained = true;
                break;
            }
        }
        if !explained {
            problems.push(format!("{p} on the server is not explained by the model"));
        }
    }
    for s in &m.survivors {
        if s.data.is_empty() || skip == Some(s.ino) {
            continue;
        }
        // At its path, in a conflict copy, or wherever the folders holding it went.
        let want = MemItem::File(s.data.clone());
        if !server.values().any(|v| *v == want) {
            problems.push(format!(
                "local version of {} ({} bytes {}), not on the server when the other client \
                 struck, is lost (node now at {:?})",
                s.path,
                s.data.len(),
                &common::sha256(&s.data)[..12],
                m.path_of_ino(s.ino)
            ));
        }
    }
    if end {
        let rows: Vec<(String, String, String)> = h
            .core()
            .db()
            .write(|conn| {
                let mut st = conn
                    .prepare("SELECT path, conflict_path, COALESCE(reason, '') FROM conflicts WHERE resolved = 0")?;
                let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                rows.collect::<Result<_, _>>()
            })
            .unwrap();
        for (path, copy, reason) in rows {
            // Only copies of files: a recreated folder (same path), a folder created at
            // the destination of its move, or our folder moved beside theirs is an
            // ordinary folder that waiting renames may move on.
            if !is_conflict_path(&copy) || !reason.is_empty() {
                continue;
            }
            // Recorded at replay time; a later rename of a folder above may have moved it.
            let name = name_of(&copy);
            let present = server.contains_key(&copy) || server.keys().any(|k| name_of(k) == name);
            if !present {
                problems.push(format!(
                    "conflict {path} -> {copy} ({reason}): the copy is not on the server"
                ));
            }
        }
    }
    if !problems.is_empty() && std::env::var("DAVDRIVE_MODEL_TRACE").is_ok() {
        eprintln!("requests: {:?}", h.remote.requests());
    }
    assert!(
        problems.is_empty(),
        "{ctx}:\n  {}\nmodel: {:#?}\nserver: {:#?}\njournal: {:#?}",
        problems.join("\n  "),
        model_digest(m),
        server_digest(&server),
        h.journal()
    );
}

/// The model in one line (path, node, length or "dir", state), for the history.
fn model_brief(m: &Model) -> String {
    let entries: Vec<String> =
        m.m.iter()
            .map(|(p, e)| {
                let what = match &e.item {
                    Item::Dir => "dir".to_string(),
                    Item::File(b) => format!("{} {}", b.len(), &common::sha256(b)[..8]),
                    Item::Gone => "gone".to_string(),
                };
                let st = match e.st {
                    St::Ours => "",
                    St::Theirs { precise: true } => " theirs",
                    St::Theirs { precise: false } => " theirs?",
                    St::Unknown => " unknown",
                };
                format!("{p}#{} {what}{st}", e.ino)
            })
            .collect();
    let open = m
        .open
        .as_ref()
        .map(|o| format!(" | open #{}", o.ino))
        .unwrap_or_default();
    format!("{}{open}", entries.join(", "))
}

fn check(actions: Vec<Action>) {
    let mut h = Harness::new();
    let mut m = Model::default();
    let trace = std::env::var("DAVDRIVE_MODEL_TRACE").is_ok();
    for (i, a) in actions.iter().enumerate() {
        h.remote.note(format!("step {i} {a:?}"));
        apply(&mut h, &mut m, a);
        h.remote.note(format!("  model: {}", model_brief(&m)));
        if trace {
            eprintln!(
                "step {i} {a:?}\n  server {:?}\n  model {:?}\n  journal {:?}",
                server_digest(&h.server()),
                model_digest(&m),
                h.journal()
                    .iter()
                    .map(|e| format!(
                        "{} {} {:?} a{} f{}",
                        e.op.as_str(),
                        e.path,
                        e.dest,
                        e.attempts,
                        e.failed
                    ))
                    .collect::<Vec<_>>()
            );
        }
        check_local(&h, &mut m, &format!("after step {i} {a:?} of {actions:?}"));
    }
    let ctx = format!("after {actions:?}");
    release(&h, &mut m);
    h.set_outage(false);
    h.set_storm(false);
    h.remote.clear_rules();
    // Known issue "conflict-name": a second conflict on a path within the same second gets
    // the same conflict name, its upload fails (412) and is set aside. Retried in another
    // second (as an administrator would), it goes through.
    for _ in 0..3 {
        h.drain_or_stuck(&ctx);
        let failed = h.failed();
        let collided = !failed.is_empty()
            && failed
                .iter()
                .all(|e| e.last_error.as_deref().is_some_and(|m| m.contains("412")));
        if !(collided && allowed("conflict-name")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1100));
        h.core().db().write(|tx| journal::retry(tx, None)).unwrap();
        h.core().journal_changed.notify_one();
    }
    h.drain_or_stuck(&ctx);
    let failed = h.core().db().write(|tx| journal::list(tx, true)).unwrap();
    assert!(
        failed.is_empty() || h.refusal,
        "{ctx}: entries set aside: {failed:#?}\nconflicts: {:#?}\nserver: {:#?}",
        h.conflicts(),
        server_digest(&h.server())
    );
    let scratch = h.scratch_left();
    assert!(
        scratch.is_empty() || allowed("scratch"),
        "{ctx}: upload scratch files left: {scratch:?}"
    );
    check_server(&h, &m, &ctx, true);
    // The local view agrees, after a restart and with every listing stale.
    h.ttl = Duration::ZERO;
    h.restart(false);
    let server = h.server();
    let local = h.local_tree();
    assert_eq!(
        server_digest(&local),
        server_digest(&server),
        "{ctx}: local view (left) != server (right)"
    );
    assert_eq!(h.stats(), (0, 0), "{ctx}: the walk queued changes");
}

/// Scenarios waived unless `DAVDRIVE_MODEL_ALLOW` says otherwise (see the header).
const WAIVED_BY_DEFAULT: &str = "folder-move-etag";

fn allowed(issue: &str) -> bool {
    let list =
        std::env::var("DAVDRIVE_MODEL_ALLOW").unwrap_or_else(|_| WAIVED_BY_DEFAULT.to_string());
    list.split(',').any(|i| i.trim() == issue)
}

/// The cases a run draws: fixed, so the suite runs the same cases every time (the
/// outcome can still depend on timing); `DAVDRIVE_MODEL_SEED=<n>` or `=random` for others.
fn seed() -> proptest::test_runner::RngSeed {
    use proptest::test_runner::RngSeed;
    match std::env::var("DAVDRIVE_MODEL_SEED").as_deref() {
        Ok("random") => RngSeed::Random,
        Ok(n) => n.parse().map(RngSeed::Fixed).unwrap_or(RngSeed::Random),
        Err(_) => RngSeed::Fixed(20261130),
    }
}

fn cases() -> u32 {
    std::env::var("DAVDRIVE_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// Reads actions back from their `Debug` form (`[Create { dir: 1, ... }, Outage(true)]`).
fn parse_actions(text: &str) -> Vec<Action> {
    let text = text.trim().trim_start_matches("actions =").trim();
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.trim_end().strip_suffix(']'))
        .expect("a list in [ ]");
    let (mut out, mut depth, mut cur) = (Vec::new(), 0, String::new());
    for c in inner.chars().chain(std::iter::once(',')) {
        match c {
            '{' | '(' => depth += 1,
            '}' | ')' => depth -= 1,
            ',' if depth == 0 => {
                if !cur.trim().is_empty() {
                    out.push(parse_action(cur.trim()));
                }
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out
}

fn parse_action(s: &str) -> Action {
    let kind: String = s.chars().take_while(|c| c.is_alphanumeric()).collect();
    let body = s[kind.len()..].trim().trim_matches(|c| "{}()".contains(c));
    let fields: std::collections::HashMap<&str, &str> = body
        .split(',')
        .filter_map(|kv| kv.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    fn get<T: std::str::FromStr>(f: &std::collections::HashMap<&str, &str>, k: &str) -> T {
        f.get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("field {k} in {f:?}"))
    }
    let f = &fields;
    let flag = || body.trim().trim_end_matches(',').trim() == "true";
    match kind.as_str() {
        "Create" => Action::Create {
            dir: get(f, "dir"),
            name: get(f, "name"),
            len: get(f, "len"),
            seed: get(f, "seed"),
        },
        "Write" => Action::Write {
            file: get(f, "file"),
            at: get(f, "at"),
            len: get(f, "len"),
            seed: get(f, "seed"),
        },
        "Truncate" => Action::Truncate {
            file: get(f, "file"),
            len: get(f, "len"),
        },
        "Rename" => Action::Rename {
            node: get(f, "node"),
            dir: get(f, "dir"),
            name: get(f, "name"),
        },
        "Mkdir" => Action::Mkdir {
            dir: get(f, "dir"),
            name: get(f, "name"),
        },
        "Rmdir" => Action::Rmdir { dir: get(f, "dir") },
        "Unlink" => Action::Unlink {
            file: get(f, "file"),
        },
        "OpenWrite" => Action::OpenWrite {
            file: get(f, "file"),
            at: get(f, "at"),
            len: get(f, "len"),
            seed: get(f, "seed"),
        },
        "Release" => Action::Release,
        "Evict" => Action::Evict {
            file: get(f, "file"),
        },
        "Pin" => Action::Pin {
            node: get(f, "node"),
            on: get(f, "on"),
        },
        "Outage" => Action::Outage(flag()),
        "Storm503" => Action::Storm503(flag()),
        "Lock" => Action::Lock {
            node: get(f, "node"),
            method: get(f, "method"),
            code: get(f, "code"),
        },
        "Settle" => Action::Settle,
        "Restart" => Action::Restart,
        "Crash" => Action::Crash,
        "OtherPut" => Action::OtherPut {
            pick: get(f, "pick"),
            fresh: get(f, "fresh"),
            name: get(f, "name"),
            len: get(f, "len"),
            seed: get(f, "seed"),
        },
        "OtherDelete" => Action::OtherDelete {
            pick: get(f, "pick"),
        },
        "OtherMkdir" => Action::OtherMkdir {
            dir: get(f, "dir"),
            name: get(f, "name"),
        },
        "OtherReplaceDir" => Action::OtherReplaceDir {
            pick: get(f, "pick"),
            len: get(f, "len"),
            seed: get(f, "seed"),
        },
        "OtherMove" => Action::OtherMove {
            pick: get(f, "pick"),
            dir: get(f, "dir"),
            name: get(f, "name"),
        },
        other => panic!("unknown action {other}"),
    }
}

/// Replays the action list in `DAVDRIVE_MODEL_REPLAY` (a file holding `[Action, ...]` as
/// printed by a failure, minus the `actions = ` prefix), for debugging with
/// DAVDRIVE_MODEL_TRACE=1 and DAVDRIVE_LOG.
#[test]
fn replay_from_env() {
    let Ok(file) = std::env::var("DAVDRIVE_MODEL_REPLAY") else {
        return;
    };
    let text = std::fs::read_to_string(file).unwrap();
    check(parse_actions(&text));
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 2000,
        rng_seed: seed(),
        ..ProptestConfig::default()
    })]

    #[test]
    fn remote_and_local_follow_the_model(actions in proptest::collection::vec(action(), 1..40)) {
        check(actions);
    }
}

// ----- fixed scenarios -----------------------------------------------------------------

impl Harness {
    fn mkdir(&self, path: &str) -> u64 {
        let (p, n) = self.split(path);
        self.core()
            .mkdir(p, &n, 0o755, 0, 0)
            .unwrap_or_else(|e| panic!("mkdir {path}: {e}"))
            .ino
    }

    fn create(&self, path: &str, data: &[u8]) -> u64 {
        let (p, n) = self.split(path);
        let (attr, fh) = self
            .core()
            .create(p, &n, 0o644, 0, 0)
            .unwrap_or_else(|e| panic!("create {path}: {e}"));
        self.core().write(fh, 0, data).unwrap();
        self.core().flush(fh).unwrap();
        self.core().release(fh).unwrap();
        attr.ino
    }

    fn mv(&self, from: &str, to: &str) {
        let (sp, sn) = self.split(from);
        let (dp, dn) = self.split(to);
        self.core()
            .rename(sp, &sn, dp, &dn, false)
            .unwrap_or_else(|e| panic!("mv {from} {to}: {e}"));
    }

    fn unlink(&self, path: &str) {
        let (p, n) = self.split(path);
        self.core()
            .unlink(p, &n)
            .unwrap_or_else(|e| panic!("unlink {path}: {e}"));
    }

    fn rmdir(&self, path: &str) {
        let (p, n) = self.split(path);
        self.core()
            .rmdir(p, &n)
            .unwrap_or_else(|e| panic!("rmdir {path}: {e}"));
    }

    fn read(&self, path: &str) -> Vec<u8> {
        self.read_ino(self.resolve(path))
            .unwrap_or_else(|e| panic!("read {path}: {e}"))
    }

    fn failed(&self) -> Vec<journal::Entry> {
        self.core()
            .db()
            .write(|tx| journal::list(tx, true))
            .unwrap()
    }

    fn conflicts(&self) -> Vec<(String, String)> {
        self.core()
            .db()
            .write(|conn| {
                let mut st =
                    conn.prepare("SELECT path, conflict_path FROM conflicts ORDER BY id")?;
                let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<Result<_, _>>()
            })
            .unwrap()
    }

    /// Drains (online), with nothing set aside, and checks that the local view walked
    /// through a restarted core is the server's tree; returns that tree.
    fn settle_and_compare(&mut self, what: &str) -> BTreeMap<String, MemItem> {
        self.set_outage(false);
        self.drain(what);
        assert!(
            self.failed().is_empty(),
            "{what}: set aside: {:#?}",
            self.failed()
        );
        self.ttl = Duration::ZERO;
        self.restart(false);
        self.ttl = DIR_TTL;
        let server = self.server();
        assert_eq!(
            server_digest(&self.local_tree()),
            server_digest(&server),
            "{what}: local view (left) != server (right)"
        );
        server
    }
}

fn file(data: &[u8]) -> MemItem {
    MemItem::File(data.to_vec())
}

/// Folder creations and moves made offline, nested deep and moved into each other,
/// replay in an order the server accepts.
#[test]
fn deep_folder_moves_made_offline_replay() {
    const SCRIPT: &str = "
        mkdir d18 d18/d27 d18/d27/d2c d18/d27/d39 d18/d3c d18/d3c/d4a d18/d27/d2c/d51
        mv d18/d3c d18/d27/d2c/d51/d72
        mkdir d18/d27/d39/d74 d18/d27/d39/d74/d7b
        mv d18/d27/d2c/d51/d72/d4a d18/d27/d2c/d51/d72/d8b
        mkdir d18/d27/d8d
        mv d18/d27/d2c/d51/d72/d8b d18/d27/d2c/da2
        mkdir d18/d27/d2c/da2/daa
        mv d18/d27 d18/dcb
        mv d18/dcb/d2c/d51/d72 d18/dcb/d2c/da2/daa/dcd
        mv d18/dcb/d2c/da2/daa/dcd d18/dcb/d2c/ddf
        mv d18/dcb/d2c d18/dcb/d39/d74/d7b/df7
        mv d18/dcb/d39/d74/d7b/df7 d18/dcb/d8d/d14c
        rmdir d18/dcb/d8d/d14c/da2/daa";
    let mut h = Harness::new();
    h.set_outage(true);
    let mut want: std::collections::BTreeSet<String> = Default::default();
    for line in SCRIPT.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let w: Vec<String> = line.split_whitespace().map(|p| format!("/{p}")).collect();
        match &w[0][1..] {
            "mkdir" => {
                for p in &w[1..] {
                    h.mkdir(p);
                    want.insert(p.clone());
                }
            }
            "mv" => {
                h.mv(&w[1], &w[2]);
                let moved: Vec<String> = want
                    .iter()
                    .filter(|p| at_or_under(p, &w[1]))
                    .cloned()
                    .collect();
                for p in moved {
                    want.remove(&p);
                    want.insert(format!("{}{}", w[2], &p[w[1].len()..]));
                }
            }
            "rmdir" => {
                h.rmdir(&w[1]);
                want.remove(&w[1]);
            }
            other => panic!("{other}?"),
        }
    }
    let server = h.settle_and_compare("deep folder moves");
    let want: BTreeMap<String, MemItem> = want.into_iter().map(|p| (p, MemItem::Dir)).collect();
    assert_eq!(server, want);
    h.stop(false);
}

/// Edits inside a folder that another client deleted meanwhile: the folder comes back
/// with both files, and the conflict is recorded.
#[test]
fn folder_deleted_on_the_server_comes_back_with_local_changes() {
    let mut h = Harness::new();
    h.mkdir("/offd");
    h.create("/offd/doc.txt", &ours_bytes(3000, 1));
    h.drain("setup");
    h.set_outage(true);
    let doc = h.resolve("/offd/doc.txt");
    h.write_ino(doc, 100, &ours_bytes(500, 2)).unwrap();
    let mut edited = ours_bytes(3000, 1);
    edited[100..600].copy_from_slice(&ours_bytes(500, 2));
    let new = ours_bytes(7000, 3);
    h.create("/offd/new.txt", &new);
    h.remote.other_delete("/offd").unwrap();
    let server = h.settle_and_compare("folder deleted on the server");
    assert_eq!(server.get("/offd/doc.txt"), Some(&file(&edited)));
    assert_eq!(server.get("/offd/new.txt"), Some(&file(&new)));
    let conflicts = h.conflicts();
    assert!(
        conflicts.iter().any(|(p, _)| p == "/offd"),
        "no conflict recorded for /offd: {conflicts:?}"
    );
    h.stop(false);
}

/// The same, but the other client put a file where the folder was: their file stays,
/// our folder goes beside it as `offd (conflict ...)`, here and on the server.
#[test]
fn folder_replaced_by_a_file_on_the_server_moves_aside() {
    let mut h = Harness::new();
    h.mkdir("/offd");
    h.create("/offd/doc.txt", &ours_bytes(3000, 1));
    h.drain("setup");
    h.set_outage(true);
    let doc = h.resolve("/offd/doc.txt");
    h.write_ino(doc, 100, &ours_bytes(500, 2)).unwrap();
    let mut edited = ours_bytes(3000, 1);
    edited[100..600].copy_from_slice(&ours_bytes(500, 2));
    let new = ours_bytes(7000, 3);
    h.create("/offd/new.txt", &new);
    let theirs = their_bytes(1234, 1);
    h.remote.other_delete("/offd").unwrap();
    h.remote.other_put("/offd", theirs.clone()).unwrap();
    let server = h.settle_and_compare("folder replaced by a file on the server");
    assert_eq!(server.get("/offd"), Some(&file(&theirs)), "their file");
    let aside: Vec<&String> = server
        .keys()
        .filter(|k| k.starts_with("/offd (conflict") && !k[1..].contains('/'))
        .collect();
    assert!(
        aside.iter().any(|d| {
            server.get(&format!("{d}/doc.txt")) == Some(&file(&edited))
                && server.get(&format!("{d}/new.txt")) == Some(&file(&new))
        }),
        "our files are not in a folder beside theirs: {:#?}",
        server_digest(&server)
    );
    let local: Vec<String> = h
        .local_names(ROOT_INO)
        .into_iter()
        .filter(|(n, _, k)| n.starts_with("offd (conflict") && *k == Kind::Dir)
        .map(|(n, _, _)| n)
        .collect();
    assert!(
        local.iter().any(|d| {
            h.read(&format!("/{d}/doc.txt")) == edited && h.read(&format!("/{d}/new.txt")) == new
        }),
        "the local view has no such folder: {local:?}"
    );
    h.stop(false);
}

/// Locked (423) and timed-out (408) answers to a file's upload are waited out: the
/// upload lands once the backoff is over, and is never set aside.
#[test]
fn locked_and_timed_out_uploads_land_after_backoff() {
    let mut h = Harness::new();
    h.create("/f", &ours_bytes(1500, 1));
    h.drain("setup");
    let ino = h.resolve("/f");
    for (i, code) in [423u16, 408].into_iter().enumerate() {
        let before = h.remote.count_at(Method::Put, "/f");
        h.remote.inject(
            Rule::on(Method::Put)
                .at("/f")
                .outcome(Outcome::Status(code))
                .times(5),
        );
        let data = ours_bytes(1500 + i * 100, 10 + i as u8);
        h.write_ino(ino, 0, &data).unwrap();
        h.drain(&format!("{code} storm"));
        assert!(
            h.failed().is_empty(),
            "{code}: set aside: {:#?}",
            h.failed()
        );
        assert_eq!(
            h.remote.read("/f"),
            Some(data),
            "{code}: content on the server"
        );
        assert!(
            h.remote.count_at(Method::Put, "/f") >= before + 6,
            "{code}: the refusals were not all met"
        );
    }
    h.settle_and_compare("after the storms");
    h.stop(false);
}

/// A creation refused for good holds back only what depends on it.
#[test]
fn a_refused_folder_holds_back_only_its_own_files() {
    let mut h = Harness::new();
    h.refusal = true;
    h.remote.inject(
        Rule::on(Method::Mkcol)
            .at("/stuck")
            .outcome(Outcome::Status(403)),
    );
    let stuck = h.mkdir("/stuck");
    for i in 0..1000u64 {
        let (attr, fh) = h
            .core()
            .create(stuck, &format!("f{i:04}"), 0o644, 0, 0)
            .unwrap();
        h.core()
            .write(fh, 0, &common::pattern(10 + (i as usize % 50), i))
            .unwrap();
        h.core().release(fh).unwrap();
        assert!(attr.ino > 0);
    }
    h.create("/elsewhere.txt", b"elsewhere");
    // Generous: a loaded machine runs 1,000 creations in a debug build slowly.
    let deadline = Instant::now() + Duration::from_secs(90);
    while h.remote.read("/elsewhere.txt").as_deref() != Some(&b"elsewhere"[..]) {
        assert!(
            Instant::now() < deadline,
            "/elsewhere.txt never landed: {:?}",
            h.stats()
        );
        h.clock.advance(Duration::from_secs(600));
        h.core().journal_changed.notify_one();
        std::thread::sleep(Duration::from_millis(5));
    }
    let (waiting, failed) = h.stats();
    assert!(
        waiting >= 1000,
        "the 1,000 files should still wait: {waiting}"
    );
    assert_eq!(failed, 1);
    let aside = h.failed();
    assert_eq!(aside.len(), 1, "{aside:#?}");
    assert_eq!((aside[0].op, aside[0].path.as_str()), (Op::Mkcol, "/stuck"));
    let err = aside[0].last_error.clone().unwrap_or_default();
    assert!(err.contains("403"), "last error: {err}");
    assert!(
        h.remote.snapshot().keys().all(|k| !k.starts_with("/stuck")),
        "nothing of /stuck may reach the server"
    );
    h.stop(false);
}

// ----- bugs found by the property test, pinned down --------------------------------------

/// "fetch-pending-move", "listing-pending-move", "evict-under-move": below a folder
/// whose rename waits (the server refuses the MOVE for a while), evicted content is
/// fetched from the old path, where the server still has it, and a listing of the
/// folder reads the old path too instead of dropping its clean files.
#[test]
fn under_a_waiting_folder_rename_content_and_listing_come_from_the_old_path() {
    let mut h = Harness::new();
    h.remote.other_mkdir("/d").unwrap();
    h.remote.other_mkdir("/d/sub").unwrap();
    h.remote.other_put("/d/a", b"file a".to_vec()).unwrap();
    h.remote.other_put("/d/sub/b", b"file b".to_vec()).unwrap();
    h.ttl = Duration::ZERO;
    h.restart(false);
    assert_eq!(h.read("/d/a"), b"file a");
    assert_eq!(h.read("/d/sub/b"), b"file b");
    let held = h
        .remote
        .inject(Rule::on(Method::Move).outcome(Outcome::Status(503)));
    h.core()
        .rename(ROOT_INO, "d", ROOT_INO, "e", false)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.remote.count(Method::Move) == 0 {
        assert!(Instant::now() < deadline, "the rename was never tried");
        std::thread::sleep(Duration::from_millis(1));
    }
    for p in ["/e/a", "/e/sub/b"] {
        assert!(matches!(
            h.core().evict(h.resolve(p)).unwrap(),
            Evicted::Freed(_)
        ));
    }
    // Listed afresh (TTL zero) while the rename waits: the clean files stay.
    let names: Vec<String> = h
        .local_names(h.resolve("/e"))
        .into_iter()
        .map(|n| n.0)
        .collect();
    assert_eq!(names, ["a", "sub"]);
    let names: Vec<String> = h
        .local_names(h.resolve("/e/sub"))
        .into_iter()
        .map(|n| n.0)
        .collect();
    assert_eq!(names, ["b"]);
    assert_eq!(h.read("/e/a"), b"file a");
    assert_eq!(h.read("/e/sub/b"), b"file b");
    assert!(
        h.remote.count_at(Method::Get, "/d/a") >= 2,
        "fetched from the old path"
    );
    h.remote.remove_rule(held);
    h.drain("the rename");
    assert_eq!(h.remote.read("/e/sub/b").as_deref(), Some(&b"file b"[..]));
    assert_eq!(h.read("/e/a"), b"file a");
    h.stop(false);
}

/// A folder renamed here onto a name another client took meanwhile: ours goes beside
/// theirs as `name (conflict …)` on the server and locally, and the changes waiting
/// inside ours follow it there instead of landing in their folder.
#[test]
fn a_folder_renamed_onto_their_new_folder_goes_beside_it_with_its_changes() {
    let mut h = Harness::new();
    h.remote.other_mkdir("/a").unwrap();
    h.remote
        .other_put("/a/f", b"our old file".to_vec())
        .unwrap();
    h.ttl = Duration::ZERO;
    h.restart(false);
    assert_eq!(h.read("/a/f"), b"our old file");
    h.set_outage(true);
    h.core()
        .rename(ROOT_INO, "a", ROOT_INO, "b", false)
        .unwrap();
    h.create("/b/new.txt", b"written after the rename");
    h.remote.other_mkdir("/b").unwrap();
    h.remote
        .other_put("/b/theirs.txt", b"theirs".to_vec())
        .unwrap();
    h.set_outage(false);
    h.drain("the rename");
    let server = h.server();
    let aside = server
        .keys()
        .find(|k| k.starts_with("/b (conflict ") && !k[1..].contains('/'))
        .cloned()
        .unwrap_or_else(|| panic!("our folder beside theirs: {server:#?}"));
    let under = |dir: &str| -> Vec<String> {
        let mut v: Vec<String> = server
            .keys()
            .filter_map(|k| k.strip_prefix(&format!("{dir}/")).map(String::from))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        under("/b"),
        ["theirs.txt"],
        "their folder holds only theirs"
    );
    assert_eq!(under(&aside), ["f", "new.txt"]);
    assert_eq!(
        h.remote.read(&format!("{aside}/new.txt")).as_deref(),
        Some(&b"written after the rename"[..])
    );
    assert!(h.failed().is_empty(), "{:#?}", h.failed());
    h.settle_and_compare("after the rename onto their folder");
    h.stop(false);
}

/// "blind-delete": a file created here whose upload was claimed but sent nothing (the
/// daemon died in between), then removed, left a delete with no ETag and no hash: an
/// unconditional DELETE of whatever another client had put at that name meanwhile.
#[test]
fn a_removed_file_whose_upload_sent_nothing_deletes_nothing_of_theirs() {
    let mut h = Harness::new();
    h.set_outage(true);
    let ino = h.create("/x", b"ours, never sent");
    // The replayer claimed the upload and died before sending a byte.
    h.core()
        .db()
        .write(|c| {
            c.execute(
                "UPDATE journal SET attempted = 1 WHERE ino = ?1",
                [ino as i64],
            )
        })
        .unwrap();
    h.remote.other_put("/x", b"theirs".to_vec()).unwrap();
    h.core().unlink(ROOT_INO, "x").unwrap();
    h.set_outage(false);
    h.drain("the removal");
    assert_eq!(h.remote.read("/x").as_deref(), Some(&b"theirs"[..]));
    assert!(h.failed().is_empty(), "{:#?}", h.failed());
    h.stop(false);
}

/// A part upload cut off after its first part, then the file shrinks below the part size
/// (or is deleted): the next attempt is a plain PUT, and the scratch file of the parts
/// stays on the server for good.
#[test]
fn an_abandoned_part_upload_leaves_no_scratch_file() {
    let mut h = Harness::new();
    h.remote.inject(
        Rule::on(Method::PutRange)
            .outcome(Outcome::Status(503))
            .times(2),
    );
    let big1 = h.create("/big1", &ours_bytes(7000, 1));
    h.create("/big2", &ours_bytes(7000, 2));
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.journal().iter().filter(|e| e.attempts > 0).count() < 2 {
        assert!(Instant::now() < deadline, "{:#?}", h.journal());
        std::thread::sleep(Duration::from_millis(1));
    }
    h.core()
        .setattr(big1, None, None, None, Some(100), None)
        .unwrap();
    h.core().unlink(ROOT_INO, "big2").unwrap();
    h.drain("parts cut off");
    assert_eq!(h.remote.read("/big1"), Some(ours_bytes(100, 1)));
    let left = h.scratch_left();
    assert!(
        left.is_empty(),
        "scratch files left on the server: {left:?}"
    );
    h.stop(false);
}

/// A folder created here while offline, and a file the other client put under the same
/// name meanwhile: the folder (with what was made in it) should go beside their file as
/// `x (conflict ...)`, as for a folder replaced by a file. The MKCOL is set aside instead
/// (405), and everything inside waits behind it for good.
#[test]
fn a_new_folder_whose_name_another_client_took_moves_aside() {
    let mut h = Harness::new();
    h.set_outage(true);
    h.mkdir("/x");
    let ours = ours_bytes(1000, 1);
    h.create("/x/f", &ours);
    let theirs = their_bytes(500, 1);
    h.remote.other_put("/x", theirs.clone()).unwrap();
    h.set_outage(false);
    let drained = h.drain_for(Duration::from_secs(10));
    assert!(
        drained && h.failed().is_empty(),
        "not drained, or set aside: {:#?}",
        h.journal()
    );
    let server = h.server();
    assert_eq!(server.get("/x"), Some(&file(&theirs)));
    assert!(
        server
            .iter()
            .any(|(k, v)| k.starts_with("/x (conflict") && k.ends_with("/f") && *v == file(&ours)),
        "{:#?}",
        server_digest(&server)
    );
    h.stop(false);
}

/// A folder removed here while another client puts a file into it (or replaces it with a
/// file): the replayed delete is a recursive DELETE with no check, and their file is
/// gone. For files, "somebody else's newer version wins over a delete" (delete.rs).
#[test]
fn a_folder_deleted_here_keeps_what_another_client_put_there() {
    let mut h = Harness::new();
    h.mkdir("/d");
    h.mkdir("/e");
    h.drain("setup");
    h.set_outage(true);
    h.rmdir("/d");
    h.rmdir("/e");
    let theirs = their_bytes(700, 1);
    h.remote.other_put("/d/theirs.txt", theirs.clone()).unwrap();
    h.remote.other_delete("/e").unwrap();
    h.remote.other_put("/e", theirs.clone()).unwrap();
    let server = h.settle_and_compare("folders deleted here, written there");
    assert!(
        server.get("/d/theirs.txt") == Some(&file(&theirs))
            && server.get("/e") == Some(&file(&theirs)),
        "their files /d/theirs.txt and /e are gone: {:#?}",
        server_digest(&server)
    );
    h.stop(false);
}

/// A file written (not closed) when the daemon is killed, while an earlier upload of it
/// still waits: recovery keeps the old size, so what the open file grew by is cut off.
#[test]
fn growth_of_an_open_file_survives_a_crash() {
    let mut h = Harness::new();
    h.set_outage(true);
    let ino = h.create("/f", &ours_bytes(100, 1));
    let (fh, _) = h.core().open(ino, true).unwrap();
    h.core().write(fh, 100, &ours_bytes(50, 2)).unwrap();
    h.restart(true);
    let mut want = ours_bytes(100, 1);
    want.extend_from_slice(&ours_bytes(50, 2));
    assert_eq!(h.read("/f").len(), 150, "local size after the crash");
    let server = h.settle_and_compare("open file at a crash");
    assert_eq!(server.get("/f"), Some(&file(&want)));
    h.stop(false);
}

/// The same with a truncation of the open file: recovery keeps the old, larger size, the
/// content file is shorter, and the upload can never read it (set aside after retries).
#[test]
fn truncation_of_an_open_file_survives_a_crash() {
    let mut h = Harness::new();
    h.set_outage(true);
    let ino = h.create("/g", &ours_bytes(3000, 1));
    let (_fh, _) = h.core().open(ino, true).unwrap();
    h.core()
        .setattr(ino, None, None, None, Some(20), None)
        .unwrap();
    h.restart(true);
    h.set_outage(false);
    let drained = h.drain_for(Duration::from_secs(10));
    assert!(
        drained && h.failed().is_empty(),
        "not drained, or set aside: {:#?}",
        h.journal()
    );
    assert_eq!(h.remote.read("/g"), Some(ours_bytes(20, 1)));
    h.stop(false);
}

/// Two conflicts on one path within the same second: a rename onto a name another client
/// took (ours goes aside as `f (conflict host time)`), then an upload of the same file,
/// whose conflict copy gets the very same name: its If-None-Match upload fails (412) and
/// the upload is set aside; our latest version never reaches the server.
#[test]
fn a_second_conflict_on_a_path_within_a_second_keeps_our_version() {
    let mut h = Harness::new();
    h.create("/src", &ours_bytes(1000, 1));
    h.drain("setup");
    h.set_outage(true);
    h.mv("/src", "/f");
    let latest = ours_bytes(1200, 2);
    h.write_ino(h.resolve("/f"), 0, &latest).unwrap();
    let theirs = their_bytes(800, 1);
    h.remote.other_put("/f", theirs.clone()).unwrap();
    h.set_outage(false);
    let drained = h.drain_for(Duration::from_secs(10));
    assert!(
        drained && h.failed().is_empty(),
        "not drained, or set aside: {:#?}\nconflicts: {:?}",
        h.journal(),
        h.conflicts()
    );
    let server = h.server();
    assert_eq!(server.get("/f"), Some(&file(&theirs)));
    assert!(
        server.values().any(|v| *v == file(&latest)),
        "our latest version is not on the server: {:#?}",
        server_digest(&server)
    );
    h.stop(false);
}

/// A file renamed here (its content unchanged) while another client deleted it: their
/// delete of an unchanged file should win (or ours come back under the new name). The
/// rename is set aside instead ("not found on the remote"), and the local view keeps a
/// file the server will never have.
#[test]
fn a_rename_of_a_file_another_client_deleted_ends() {
    let mut h = Harness::new();
    h.mkdir("/d");
    h.create("/x", &ours_bytes(1000, 1));
    h.drain("setup");
    h.set_outage(true);
    h.mv("/x", "/d/x");
    h.remote.other_delete("/x").unwrap();
    h.set_outage(false);
    let drained = h.drain_for(Duration::from_secs(10));
    assert!(
        drained && h.failed().is_empty(),
        "not drained, or set aside: {:#?}",
        h.journal()
    );
    h.settle_and_compare("rename of a file deleted there");
    h.stop(false);
}

/// A file removed here while another client replaced it with a folder of their own: the
/// replayed delete meets a collection (size 0), takes it for "an upload of ours cut before
/// its first byte" (delete.rs, `remote_is_ours`), and deletes their folder recursively.
#[test]
fn a_file_deleted_here_spares_a_folder_another_client_made_there() {
    let mut h = Harness::new();
    h.create("/a", &ours_bytes(1000, 1));
    h.drain("setup");
    h.set_outage(true);
    h.core().unlink(ROOT_INO, "a").unwrap();
    let theirs = their_bytes(600, 1);
    h.remote.other_delete("/a").unwrap();
    h.remote.other_mkdir("/a").unwrap();
    h.remote.other_put("/a/theirs.txt", theirs.clone()).unwrap();
    let server = h.settle_and_compare("file deleted here, folder made there");
    assert!(
        server.get("/a/theirs.txt") == Some(&file(&theirs)),
        "their folder is gone: {:#?}",
        server_digest(&server)
    );
    h.stop(false);
}

/// A file renamed here while another client rewrote it under its old name: their version
/// stays at the old name, ours goes to the new one, and a conflict says so. (The first
/// replayer carried their version to our name and took its ETag for ours.)
#[test]
fn a_rename_does_not_take_another_clients_version_for_ours() {
    let mut h = Harness::new();
    let ours = ours_bytes(1000, 1);
    h.create("/a", &ours);
    h.drain("setup");
    h.set_outage(true);
    h.mv("/a", "/b");
    let theirs = their_bytes(1500, 1);
    h.remote.other_put("/a", theirs.clone()).unwrap();
    h.set_outage(false);
    h.drain("rename of a file rewritten there");
    assert_eq!(h.remote.read("/a"), Some(theirs.clone()));
    assert_eq!(h.remote.read("/b"), Some(ours.clone()));
    assert!(
        h.conflicts()
            .iter()
            .any(|c| format!("{c:?}").contains("/a")),
        "{:?}",
        h.conflicts()
    );
    h.stop(false);
}

/// A rename of a file that is then removed here, while another client rewrote it at the
/// old name: the MOVE would carry their version to our name, where our delete would take
/// it. Theirs stays where it is.
#[test]
fn a_renamed_then_removed_file_spares_their_version_at_the_old_name() {
    let mut h = Harness::new();
    h.create("/a", &ours_bytes(1000, 2));
    h.drain("setup");
    h.set_outage(true);
    h.mv("/a", "/b");
    h.unlink("/b");
    let theirs = their_bytes(1500, 2);
    h.remote.other_put("/a", theirs.clone()).unwrap();
    h.set_outage(false);
    h.drain("rename and removal of a file rewritten there");
    assert_eq!(h.remote.read("/a"), Some(theirs));
    assert_eq!(h.remote.read("/b"), None);
    h.stop(false);
}

#[test]
fn a_folder_renamed_here_that_another_client_replaced_by_a_file_leaves_their_file() {
    let mut h = Harness::new();
    h.mkdir("/d");
    h.create("/d/kept", &ours_bytes(100, 1));
    h.drain("setup");
    h.set_outage(true);
    h.mv("/d", "/e");
    h.create("/e/new", &ours_bytes(200, 2));
    h.remote.other_delete("/d").unwrap();
    let theirs = their_bytes(300, 3);
    h.remote.other_put("/d", theirs.clone()).unwrap();
    h.set_outage(false);
    h.drain("rename of a folder another client replaced by a file");
    // A MOVE would have carried their file to /e, where our new file could not go.
    assert_eq!(h.remote.read("/d"), Some(theirs));
    assert_eq!(h.remote.read("/e/new"), Some(ours_bytes(200, 2)));
    assert!(
        h.conflicts().iter().any(|(p, c)| p == "/d" && c == "/e"),
        "{:?}",
        h.conflicts()
    );
    h.stop(false);
}

#[test]
fn a_part_upload_written_while_sent_and_then_removed_leaves_nothing_of_ours() {
    let mut h = Harness::new();
    h.set_outage(true);
    let ino = h.create("/f", &ours_bytes(7000, 4));
    let (fh, _) = h.core().open(ino, true).unwrap();
    // The second part waits on the wire while a write through the open handle lands
    // in a later part: the server gets a mix of both versions.
    h.remote.inject(
        Rule::on(Method::PutRange)
            .outcome(Outcome::Delay(Duration::from_secs(2)))
            .times(1),
    );
    // Reading the file back from its path after the MOVE fails: before the fix, the
    // hash of what went out was never recorded.
    let cut = h
        .remote
        .inject(Rule::on(Method::Get).at("/f").outcome(Outcome::Transport));
    h.set_outage(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.remote.count(Method::PutRange) == 0 {
        assert!(Instant::now() < deadline, "no part was sent");
        std::thread::sleep(Duration::from_millis(1));
    }
    h.core().write(fh, 5000, &[7u8; 100]).unwrap();
    // The upload ends (done), or it moved the scratch file over /f and failed reading
    // it back.
    while !(h.journal().is_empty() || h.remote.count_at(Method::Get, "/f") > 0) {
        assert!(Instant::now() < deadline, "the upload did not end");
        std::thread::sleep(Duration::from_millis(1));
    }
    h.set_outage(true);
    h.freeze();
    h.core().release(fh).unwrap();
    h.unlink("/f");
    h.remote.remove_rule(cut);
    h.set_outage(false);
    h.drain("removal of a file whose parts met a write");
    assert!(
        h.remote.read("/f").is_none(),
        "our own version is left behind"
    );
    assert!(h.conflicts().is_empty(), "{:?}", h.conflicts());
    h.stop(false);
}

#[test]
fn a_rename_onto_a_name_another_client_took_after_deleting_the_source_keeps_both() {
    let mut h = Harness::new();
    let ours = ours_bytes(1200, 5);
    h.create("/a", &ours);
    h.drain("setup");
    h.set_outage(true);
    h.mv("/a", "/b");
    h.remote.other_delete("/a").unwrap();
    let theirs = their_bytes(1700, 5);
    h.remote.other_put("/b", theirs.clone()).unwrap();
    h.set_outage(false);
    h.drain("rename onto their new file, the source deleted there");
    // Before: the MOVE's 404 with something at /b was taken for our own earlier MOVE,
    // and their file for ours.
    let server = h.server();
    assert_eq!(server.get("/b"), Some(&MemItem::File(theirs)));
    assert!(
        server
            .iter()
            .any(|(p, v)| is_conflict_path(p) && *v == MemItem::File(ours.clone())),
        "our version is nowhere: {:?}",
        server.keys()
    );
    h.stop(false);
}

#[test]
fn a_file_cut_and_removed_while_open_during_its_part_upload_leaves_nothing() {
    let mut h = Harness::new();
    h.set_outage(true);
    let ino = h.create("/f", &ours_bytes(9807, 6));
    let (fh, _) = h.core().open(ino, true).unwrap();
    h.remote.inject(
        Rule::on(Method::PutRange)
            .outcome(Outcome::Delay(Duration::from_secs(2)))
            .times(1),
    );
    h.set_outage(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.remote.count(Method::PutRange) == 0 {
        assert!(Instant::now() < deadline, "no part was sent");
        std::thread::sleep(Duration::from_millis(1));
    }
    // While a part is on the wire: a write and a cut through the open handle (the
    // store's size follows at its close), then the file is removed, still open.
    h.core().write(fh, 8000, &[9u8; 900]).unwrap();
    h.core()
        .setattr(ino, None, None, None, Some(4557), None)
        .unwrap();
    h.unlink("/f");
    h.drain_or_stuck("an open file cut and removed during its upload");
    assert!(h.failed().is_empty(), "set aside: {:#?}", h.failed());
    h.core().release(fh).unwrap();
    h.drain("its release");
    assert!(h.failed().is_empty(), "{:#?}", h.failed());
    let left: Vec<String> = h.remote.snapshot().into_keys().collect();
    assert!(left.is_empty(), "left on the server: {left:?}");
    h.stop(false);
}

#[test]
fn a_file_renamed_away_and_back_then_removed_spares_their_new_version() {
    let mut h = Harness::new();
    h.create("/d", &ours_bytes(1500, 7));
    h.drain("setup");
    h.set_outage(true);
    h.mv("/d", "/e");
    h.mv("/e", "/d");
    h.unlink("/d");
    let theirs = their_bytes(2100, 7);
    h.remote.other_put("/d", theirs.clone()).unwrap();
    h.set_outage(false);
    h.drain("renames away and back, then a removal, over their new version");
    // Before: the second rename's 404 with a file at /d was taken for our own earlier
    // MOVE, its ETag adopted, and our delete then removed their version.
    assert_eq!(h.remote.read("/d"), Some(theirs));
    h.stop(false);
}

#[test]
fn a_folder_renamed_onto_their_file_after_they_replaced_it_goes_beside_both() {
    let mut h = Harness::new();
    h.mkdir("/d");
    h.drain("setup");
    h.set_outage(true);
    h.mv("/d", "/e");
    h.create("/e/new", &ours_bytes(300, 8));
    h.remote.other_delete("/d").unwrap();
    let (at_d, at_e) = (their_bytes(400, 8), their_bytes(500, 9));
    h.remote.other_put("/d", at_d.clone()).unwrap();
    h.remote.other_put("/e", at_e.clone()).unwrap();
    h.set_outage(false);
    // Before: recreating our folder at /e met their file there (405), and the move was
    // set aside for good.
    h.drain("a folder replaced by a file, renamed onto another file of theirs");
    assert!(h.failed().is_empty(), "{:#?}", h.failed());
    let server = h.server();
    assert_eq!(server.get("/d"), Some(&MemItem::File(at_d)));
    assert_eq!(server.get("/e"), Some(&MemItem::File(at_e)));
    assert!(
        server.iter().any(|(p, v)| p.starts_with("/e (conflict")
            && p.ends_with("/new")
            && *v == MemItem::File(ours_bytes(300, 8))),
        "{:?}",
        server.keys()
    );
    h.stop(false);
}

#[test]
fn uploads_handed_to_a_conflict_copy_keep_their_folder_s_new_name() {
    let mut h = Harness::new();
    h.mkdir("/d");
    let ino = h.create("/d/f", &ours_bytes(500, 10));
    h.drain("setup");
    // Our upload is on the wire (held) when the folder is renamed here and the file
    // written again: that second upload names the folder's new path.
    h.remote.inject(
        Rule::on(Method::Put)
            .at("/d/f")
            .outcome(Outcome::Delay(Duration::from_secs(2)))
            .times(1),
    );
    h.write_ino(ino, 0, &ours_bytes(600, 11)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.remote.count_at(Method::Put, "/d/f") == 0 {
        assert!(Instant::now() < deadline, "the upload did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
    h.remote.other_put("/d/f", their_bytes(700, 10)).unwrap();
    h.mv("/d", "/e");
    let last = ours_bytes(800, 12);
    h.write_ino(ino, 0, &last).unwrap();
    h.drain("a conflict on an upload while its folder was renamed here");
    let server = h.server();
    // Before: the second upload was handed to the copy at the folder's old path, and
    // recreated the folder there.
    assert!(
        !server.keys().any(|p| at_or_under(p, "/d")),
        "{:?}",
        server.keys()
    );
    assert!(
        server
            .iter()
            .any(|(p, v)| p.starts_with("/e/") && *v == MemItem::File(last.clone())),
        "{:?}",
        server.keys()
    );
    h.stop(false);
}

#[test]
fn two_renames_onto_a_name_another_client_took_go_beside_it_under_two_names() {
    let mut h = Harness::new();
    let (first, second) = (ours_bytes(300, 13), ours_bytes(400, 14));
    h.create("/e", &first);
    h.create("/a", &second);
    h.drain("setup");
    h.set_outage(true);
    h.mv("/e", "/d");
    h.mv("/a", "/d");
    let theirs = their_bytes(500, 13);
    h.remote.other_put("/d", theirs.clone()).unwrap();
    h.set_outage(false);
    // Before: both went for the same conflict name within a second, and the second
    // move was set aside for good.
    h.drain_or_stuck("two renames onto their new file");
    assert!(h.failed().is_empty(), "{:#?}", h.failed());
    let server = h.server();
    assert_eq!(server.get("/d"), Some(&MemItem::File(theirs)));
    for ours in [first, second] {
        assert!(
            server
                .iter()
                .any(|(p, v)| is_conflict_path(p) && *v == MemItem::File(ours.clone())),
            "{:?}",
            server.keys()
        );
    }
    h.stop(false);
}

/// A file renamed here and then removed while still open, while another client rewrote
/// it at the old name: the waiting rename must judge by what our delete knows of our
/// version, not keep the open file's bytes as a copy (nothing of ours is left to keep).
/// Theirs stays where it is, and no conflict claims a copy of ours was kept.
#[test]
fn a_renamed_file_removed_while_open_spares_their_version_and_keeps_nothing() {
    let mut h = Harness::new();
    let ino = h.create("/a", &ours_bytes(1000, 3));
    h.drain("setup");
    h.set_outage(true);
    h.mv("/a", "/b");
    let (fh, _) = h.core().open(ino, true).unwrap();
    h.unlink("/b");
    let theirs = their_bytes(1500, 3);
    h.remote.other_put("/a", theirs.clone()).unwrap();
    h.set_outage(false);
    h.drain_or_stuck("rename and removal of an open file rewritten there");
    assert_eq!(h.remote.read("/a"), Some(theirs.clone()));
    assert_eq!(h.remote.read("/b"), None);
    assert!(h.conflicts().is_empty(), "{:?}", h.conflicts());
    h.core().release(fh).unwrap();
    h.drain("its release");
    assert!(h.failed().is_empty(), "{:#?}", h.failed());
    let left: Vec<String> = h.remote.snapshot().into_keys().collect();
    assert_eq!(left, vec!["/a".to_string()]);
    h.stop(false);
}

/// A file of theirs we only listed (no hash of it known), renamed here onto a name
/// another client then took, and on and back: the first MOVE goes aside, and the renames
/// after it must follow our version there. Left at the old name, they carried the other
/// client's file away and back, and the local file took its new ETag with our size: a
/// read of it failed for good.
#[test]
fn renames_after_one_moved_aside_follow_our_version() {
    let mut h = Harness::new();
    h.remote.other_put("/d", their_bytes(1000, 4)).unwrap();
    h.ttl = Duration::ZERO;
    h.restart(false);
    h.local_tree();
    h.ttl = DIR_TTL;
    h.set_outage(true);
    h.mv("/d", "/a");
    h.mv("/a", "/x");
    h.mv("/x", "/a");
    let theirs = their_bytes(1500, 5);
    h.remote.other_put("/a", theirs.clone()).unwrap();
    let server = h.settle_and_compare("renames after one moved aside");
    assert_eq!(server.get("/a"), Some(&file(&theirs)));
    let ours: Vec<&String> = server
        .iter()
        .filter(|(_, v)| **v == file(&their_bytes(1000, 4)))
        .map(|(k, _)| k)
        .collect();
    assert!(
        ours.len() == 1 && is_conflict_path(ours[0]),
        "the first version must be beside theirs, once: {:?}",
        server_digest(&server)
    );
    h.stop(false);
}

/// A file renamed twice here, the first name taken meanwhile by another client's
/// folder: the first MOVE goes aside, the second takes our version from there to the
/// name the user gave it. It ends there, and no open conflict is left naming a copy
/// that is gone (whose "keep theirs" would remove the file the rename made).
#[test]
fn a_rename_on_from_a_conflict_name_settles_that_conflict() {
    let mut h = Harness::new();
    let ours = ours_bytes(1200, 6);
    h.create("/x", &ours);
    h.drain("setup");
    h.set_outage(true);
    h.mv("/x", "/b c");
    h.mv("/b c", "/d");
    h.remote.other_mkdir("/b c").unwrap();
    let server = h.settle_and_compare("a rename through a name their folder took");
    assert_eq!(server.get("/d"), Some(&file(&ours)));
    assert_eq!(server.get("/b c"), Some(&MemItem::Dir));
    assert!(
        !server.keys().any(|k| is_conflict_path(k)),
        "{:?}",
        server.keys()
    );
    let open = h
        .core()
        .db()
        .write(|c| davdrive::store::conflicts::open_count(c))
        .unwrap();
    assert_eq!(open, 0, "open conflicts: {:?}", h.conflicts());
    h.stop(false);
}

/// A part upload cut off, the file then cut below the part size and sent whole, and the
/// removal of the parts already sent failing once (the server went away right after the
/// PUT): the upload ends, so the removal must wait in the journal, not be forgotten with
/// the scratch file left on the server for good.
#[test]
fn parts_of_an_abandoned_upload_go_even_if_their_first_removal_fails() {
    let mut h = Harness::new();
    h.remote.inject(
        Rule::on(Method::PutRange)
            .outcome(Outcome::Status(503))
            .times(1),
    );
    let big = h.create("/big", &ours_bytes(7000, 7));
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.journal().iter().all(|e| e.attempts == 0) {
        assert!(Instant::now() < deadline, "{:#?}", h.journal());
        std::thread::sleep(Duration::from_millis(1));
    }
    let scratch = davdrive::journal::scratch_path("/big", big);
    assert!(h.remote.read(&scratch).is_some(), "no part was sent");
    h.remote.inject(
        Rule::on(Method::Delete)
            .at(&scratch)
            .outcome(Outcome::Transport)
            .times(1),
    );
    h.core()
        .setattr(big, None, None, None, Some(100), None)
        .unwrap();
    h.drain("parts cut off, their removal failing once");
    assert_eq!(h.remote.read("/big"), Some(ours_bytes(100, 7)));
    assert_eq!(h.remote.count_at(Method::Delete, &scratch), 2);
    assert_eq!(h.remote.read(&scratch), None, "the scratch file stayed");
    h.stop(false);
}

/// A new file renamed and removed here while its first upload was starting (before it
/// had sent or hashed anything), while another client put a file at its first name. No
/// version of ours was ever there: the waiting rename must not carry their file to our
/// name, where our delete (its base then taken from the moved file) removed it.
#[test]
fn a_file_removed_while_its_first_upload_starts_spares_their_file_at_its_old_name() {
    let mut h = Harness::new();
    // A server ignoring preconditions is asked first: the upload waits on that question.
    h.remote.set_preconditions_honored(false);
    h.remote.inject(
        Rule::on(Method::Stat)
            .at("/x")
            .outcome(Outcome::Delay(Duration::from_millis(500)))
            .times(1),
    );
    h.create("/x", &ours_bytes(358, 8));
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.remote.count_at(Method::Stat, "/x") == 0 {
        assert!(Instant::now() < deadline, "the upload did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
    h.set_outage(true);
    h.mv("/x", "/a");
    h.unlink("/a");
    let theirs = their_bytes(3809, 8);
    h.remote.other_put("/x", theirs.clone()).unwrap();
    h.set_outage(false);
    h.drain("a rename and removal during the first upload");
    assert!(
        h.remote.read("/x") == Some(theirs) && h.remote.read("/a").is_none(),
        "their file must stay at /x, alone: {:?}",
        server_digest(&h.server())
    );
    h.stop(false);
}

/// A file of ours on the server, rewritten here, whose upload in parts is refused for a
/// while, then renamed and removed here while another client put a file at its
/// old name. The removal of the upload's scratch file waits between the rename and the
/// file's delete: the rename must judge the file by that delete, not by the scratch
/// file's removal (which takes whatever is at its own name), or it carries their file
/// to our name, where our delete removes it.
#[test]
fn a_rename_of_a_removed_file_is_judged_by_its_delete_not_by_its_scratch_removal() {
    let mut h = Harness::new();
    let ino = h.create("/x", &ours_bytes(7000, 9));
    h.drain("the first upload");
    // The upload's parts are refused for now: it waits to try again.
    h.remote
        .inject(Rule::on(Method::PutRange).outcome(Outcome::Status(503)));
    h.write_ino(ino, 0, &ours_bytes(7000, 10)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.journal().iter().all(|e| e.attempts == 0) {
        assert!(Instant::now() < deadline, "the upload was not tried");
        std::thread::sleep(Duration::from_millis(1));
    }
    h.freeze();
    h.mv("/x", "/a");
    h.unlink("/a");
    let entries = h.journal();
    let at = |f: &dyn Fn(&journal::Entry) -> bool| entries.iter().position(f);
    let (mv, scratch, del) = (
        at(&|e| e.op == Op::Move),
        at(&|e| e.op == Op::Delete && e.path.contains(".davdrive-part-")),
        at(&|e| e.op == Op::Delete && e.path == "/a"),
    );
    assert!(
        matches!((mv, scratch, del), (Some(m), Some(s), Some(d)) if m < s && s < d),
        "the scratch file's removal waits between the rename and the delete: {entries:#?}"
    );
    h.remote.clear_rules();
    let theirs = their_bytes(87, 9);
    h.remote.other_put("/x", theirs.clone()).unwrap();
    h.unfreeze();
    h.drain("a rename and removal of a file whose upload left parts");
    assert!(
        h.remote.read("/x") == Some(theirs) && h.remote.read("/a").is_none(),
        "their file must stay at /x, alone: {:?}",
        server_digest(&h.server())
    );
    let left = h.scratch_left();
    assert!(left.is_empty(), "scratch files left: {left:?}");
    h.stop(false);
}

/// A file whose upload in parts was cut off (its parts wait in a scratch file beside
/// it), its folder renamed here, then the file removed: the scratch file moves with the
/// folder on the server, and its removal, queued after that rename, must name it there.
#[test]
fn an_abandoned_upload_s_parts_are_removed_where_its_folder_went() {
    let mut h = Harness::new();
    h.mkdir("/d");
    let ino = h.create("/d/f", &ours_bytes(7000, 11));
    h.drain("the first upload");
    h.remote
        .inject(Rule::on(Method::PutRange).outcome(Outcome::Status(503)));
    h.write_ino(ino, 0, &ours_bytes(7000, 12)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.journal().iter().all(|e| e.attempts == 0) {
        assert!(Instant::now() < deadline, "the upload was not tried");
        std::thread::sleep(Duration::from_millis(1));
    }
    h.freeze();
    let scratch = davdrive::journal::scratch_path("/d/f", ino);
    assert!(h.remote.read(&scratch).is_some(), "no part was sent");
    h.mv("/d", "/e");
    h.unlink("/e/f");
    h.remote.clear_rules();
    h.unfreeze();
    h.drain("a folder renamed and the file removed, its parts on the server");
    let left = h.scratch_left();
    assert!(left.is_empty(), "scratch files left: {left:?}");
    assert!(
        h.remote.read("/e/f").is_none() && h.server().contains_key("/e"),
        "{:?}",
        server_digest(&h.server())
    );
    h.stop(false);
}

/// A file removed here, a folder made at its name and renamed away, and a new file made
/// at the name, all while the server was away; meanwhile another client rewrote the
/// first file. Their file keeps the name, so our folder's creation goes aside (and its
/// rename follows it), but the new file is not inside that folder: its upload must meet
/// their file at the name as a conflict, not follow the folder's conflict name.
#[test]
fn a_file_made_where_a_folder_went_aside_from_is_not_taken_along() {
    let mut h = Harness::new();
    h.mkdir("/d");
    h.create("/d/f", &ours_bytes(500, 13));
    h.drain("the first upload");
    h.set_outage(true);
    h.unlink("/d/f");
    h.mkdir("/d/f");
    h.mv("/d/f", "/g");
    let ours = ours_bytes(700, 14);
    h.create("/d/f", &ours);
    let theirs = their_bytes(900, 13);
    h.remote.other_put("/d/f", theirs.clone()).unwrap();
    h.set_outage(false);
    h.drain("a folder aside and a new file at its name");
    let server = h.server();
    assert_eq!(
        h.remote.read("/d/f"),
        Some(theirs),
        "{:?}",
        server_digest(&server)
    );
    assert!(
        matches!(server.get("/g"), Some(MemItem::Dir)),
        "{:?}",
        server_digest(&server)
    );
    // A conflict of the file (no reason given), not only the folder's (which moved on
    // from that name to /g): its copy holds our new file.
    let file_conflicts: Vec<String> = h
        .core()
        .db()
        .write(|conn| {
            let mut st = conn.prepare(
                "SELECT conflict_path FROM conflicts \
                 WHERE path = '/d/f' AND COALESCE(reason, '') = ''",
            )?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()
        })
        .unwrap();
    assert!(
        file_conflicts.len() == 1 && h.remote.read(&file_conflicts[0]) == Some(ours),
        "our new file must be a conflict copy of /d/f: {file_conflicts:?}\n{:?}\nconflicts: {:?}",
        server_digest(&server),
        h.conflicts()
    );
    h.stop(false);
}

/// A large file whose upload in parts was cut off before its last step, then written
/// through a handle kept open: the next attempt must not go on from the parts already
/// sent (they hold the bytes from before that write, which is not committed yet and so
/// leaves the file's recorded version as it was), or the hash it records for our version
/// is not what the server holds. A later rename would then take our own file for
/// somebody else's.
#[test]
fn a_resumed_part_upload_of_a_file_written_through_an_open_handle_starts_over() {
    let mut h = Harness::new();
    h.remote.inject(
        Rule::on(Method::Move)
            .at("/f")
            .outcome(Outcome::Status(503))
            .times(1),
    );
    let ino = h.create("/f", &ours_bytes(7000, 21));
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.remote.count(Method::Move) == 0 {
        assert!(
            Instant::now() < deadline,
            "the upload did not reach its last step"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    h.freeze();
    let (fh, _) = h.core().open(ino, true).unwrap();
    h.core().write(fh, 100, &their_bytes(300, 21)).unwrap();
    h.unfreeze();
    h.drain("the upload tried again with the file open and written");
    let on_server = h.remote.read("/f").expect("uploaded");
    let recorded = h
        .core()
        .db()
        .write(|tx| davdrive::store::get_node(tx, ino))
        .unwrap()
        .unwrap()
        .sha256;
    assert_eq!(
        recorded.as_deref(),
        Some(common::sha256(&on_server).as_str()),
        "the hash recorded for our version is not what the server holds"
    );
    h.core().flush(fh).unwrap();
    h.core().release(fh).unwrap();
    h.mv("/f", "/g");
    h.drain("the rename");
    let server = h.server();
    assert!(
        server.len() == 1 && server.contains_key("/g"),
        "{:?}",
        server_digest(&server)
    );
    h.stop(false);
}

/// A file renamed twice here while both new names were taken by another client's files:
/// the first MOVE goes aside, and the second, from that conflict name on, goes aside
/// again. Our version ends beside theirs at the last name, and the first conflict, whose
/// copy moved on, is settled: left open, it named a copy that is not there.
#[test]
fn a_rename_going_aside_from_a_conflict_name_settles_that_conflict() {
    let mut h = Harness::new();
    let ours = ours_bytes(1300, 7);
    h.create("/x", &ours);
    h.drain("setup");
    h.set_outage(true);
    h.mv("/x", "/b");
    h.mv("/b", "/c");
    h.remote.other_put("/b", their_bytes(900, 8)).unwrap();
    h.remote.other_put("/c", their_bytes(800, 9)).unwrap();
    let server = h.settle_and_compare("two renames onto names another client took");
    assert_eq!(server.get("/b"), Some(&file(&their_bytes(900, 8))));
    assert_eq!(server.get("/c"), Some(&file(&their_bytes(800, 9))));
    let copies: Vec<&String> = server
        .iter()
        .filter(|(_, v)| **v == file(&ours))
        .map(|(k, _)| k)
        .collect();
    assert!(
        copies.len() == 1 && copies[0].starts_with("/c (conflict"),
        "our version must be beside theirs at the last name, once: {:?}",
        server_digest(&server)
    );
    let open: Vec<String> = h
        .core()
        .db()
        .write(|conn| {
            let mut st = conn.prepare("SELECT conflict_path FROM conflicts WHERE resolved = 0")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()
        })
        .unwrap();
    assert!(
        open.len() == 1 && open[0] == *copies[0],
        "open conflicts: {open:?} of {:?}",
        h.conflicts()
    );
    h.stop(false);
}

/// A folder whose creation the server is slow to answer, and files made in it one by
/// one meanwhile (further apart than a burst, so the replayer runs at full width): all
/// of them wait behind the creation. The replayer's passes that find nothing to start
/// must not take the store's writer, which every call through the mount waits for.
/// They did: each new file woke a walk of the whole journal under the writer, so a
/// long queue behind a slow entry slowed every call in proportion to its length.
#[test]
fn files_queued_behind_a_slow_folder_creation_cost_the_writer_no_passes() {
    let mut h = Harness::new();
    h.remote.inject(
        Rule::on(Method::Mkcol)
            .at("/slow")
            .outcome(Outcome::Delay(Duration::from_secs(3600)))
            .times(1),
    );
    h.mkdir("/slow");
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.remote.count(Method::Mkcol) == 0 {
        assert!(
            Instant::now() < deadline,
            "the folder's creation did not start"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let before = h.core().replay_passes_on_writer.load(Ordering::Relaxed);
    for i in 0..12 {
        // Past the burst gap: the replayer looks for work after each file.
        std::thread::sleep(Duration::from_millis(150));
        h.create(&format!("/slow/f{i}"), &ours_bytes(100, i));
    }
    // Each file's upload waits for the folder: the journal holds all of them.
    assert_eq!(h.journal().len(), 13, "{:#?}", h.journal());
    let passes = h.core().replay_passes_on_writer.load(Ordering::Relaxed) - before;
    assert_eq!(passes, 0, "passes that found nothing took the writer");
    h.stop(true);
}

/// A file of ours on the server, cut here below its size there: its upload goes whole,
/// in parts, and the server refuses the parts after the first. It is then written past
/// its old size, so the next attempt sends only what was written (a partial update,
/// with progress of its own). The part the first attempt sent sits in a scratch file,
/// which must go too: the entry ended without moving it over the file.
#[test]
fn parts_sent_before_an_upload_turned_partial_are_removed() {
    let mut h = Harness::new();
    let first = ours_bytes(8000, 13);
    let ino = h.create("/x", &first);
    h.drain("the first upload");
    h.remote
        .inject(Rule::on(Method::PutRange).outcome(Outcome::Status(503)));
    h.core()
        .setattr(ino, None, None, None, Some(7000), None)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.journal().iter().all(|e| e.attempts == 0) {
        assert!(Instant::now() < deadline, "the upload was not tried");
        std::thread::sleep(Duration::from_millis(1));
    }
    h.freeze();
    let scratch = davdrive::journal::scratch_path("/x", ino);
    assert!(h.remote.read(&scratch).is_some(), "no part was sent");
    let tail = ours_bytes(1500, 14);
    h.write_ino(ino, 7000, &tail).unwrap();
    h.remote.clear_rules();
    h.remote.clear_log();
    h.unfreeze();
    h.drain("an upload in parts that turned into a partial update");
    assert!(
        h.remote.count(Method::Copy) > 0,
        "not sent as a partial update: {:?}",
        h.remote.requests()
    );
    let want = [&first[..7000], &tail[..]].concat();
    assert!(
        h.remote.read("/x") == Some(want),
        "{:?}",
        server_digest(&h.server())
    );
    let left = h.scratch_left();
    assert!(left.is_empty(), "scratch files left: {left:?}");
    h.stop(false);
}

/// A file another client put on the server, not cached here, read from its start: the
/// read-ahead goes on with downloads the slow server keeps running after the reader
/// closed the file. It is then cut (no program has it open). The cut is committed when
/// `setattr` returns, its upload in the journal: before, the last download's close
/// committed it, whenever that came, and a crash until then lost it.
#[test]
fn a_truncation_while_read_ahead_runs_is_committed_at_once() {
    let mut h = Harness::new();
    let data = their_bytes(4 << 20, 15);
    h.remote.other_put("/f", data.clone()).unwrap();
    let ino = h.resolve("/f");
    let core = h.core().clone();
    let (fh, _) = core.open(ino, false).unwrap();
    assert_eq!(core.read(fh, 0, 128 << 10).unwrap(), &data[..128 << 10]);
    h.remote.inject(
        Rule::on(Method::Get)
            .outcome(Outcome::Delay(Duration::from_secs(3)))
            .times(4),
    );
    // Sequential now: the read-ahead starts downloads past what is here.
    assert_eq!(
        core.read(fh, 128 << 10, 128 << 10).unwrap(),
        &data[128 << 10..256 << 10]
    );
    core.release(fh).unwrap();
    // The downloads hold the file from the read on; they reach the server on threads
    // of their own, a moment later on a busy machine.
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.remote.gets_running() == 0 {
        assert!(Instant::now() < deadline, "no read-ahead is running");
        std::thread::sleep(Duration::from_millis(1));
    }
    core.setattr(ino, None, None, None, Some(3 << 20), None)
        .unwrap();
    let waiting = h.journal();
    assert!(
        h.remote.gets_running() > 0,
        "the read-ahead ended before the cut was looked at"
    );
    assert!(
        waiting.iter().any(|e| e.op == Op::Put && e.ino == ino),
        "the cut is not in the journal: {waiting:#?}"
    );
    // A crash now keeps it.
    drop(core);
    h.set_outage(true);
    h.restart(true);
    assert_eq!(h.core().getattr(ino).unwrap().size, 3 << 20);
    assert!(
        h.journal().iter().any(|e| e.op == Op::Put && e.ino == ino),
        "the cut's upload is gone after a crash: {:#?}",
        h.journal()
    );
    h.stop(true);
}

/// A file above the snapshot size and below the part size goes as one streamed PUT. It is
/// written through a handle still open while that PUT waits on the wire, then removed
/// and closed: the server takes bytes that the hash taken before sending does not name,
/// and the local file is gone when the PUT returns, so what went out cannot be hashed
/// again; reading it back from the server fails. Before, the delete that followed knew
/// only the first hash, had no base, and kept our own version on the server as somebody
/// else's. The bytes are now hashed as they stream.
#[test]
fn a_streamed_upload_written_while_it_goes_then_removed_leaves_nothing() {
    let mut h = Harness::new();
    h.set_outage(true);
    let ino = h.create("/s", &ours_bytes(2500, 16));
    let (fh, _) = h.core().open(ino, true).unwrap();
    h.remote.inject(
        Rule::on(Method::Put)
            .at("/s")
            .outcome(Outcome::Delay(Duration::from_secs(3)))
            .times(1),
    );
    h.remote.inject(
        Rule::on(Method::Get)
            .at("/s")
            .outcome(Outcome::Transport)
            .times(1),
    );
    h.set_outage(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.remote.count_at(Method::Put, "/s") == 0 {
        assert!(Instant::now() < deadline, "the upload did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
    h.core().write(fh, 1000, &[7u8; 300]).unwrap();
    h.unlink("/s");
    h.core().release(fh).unwrap();
    h.drain("removal of a file written while its upload went");
    assert!(
        h.remote.read("/s").is_none(),
        "our own version is left behind: {:?}",
        server_digest(&h.server())
    );
    assert!(h.conflicts().is_empty(), "{:?}", h.conflicts());
    assert!(h.failed().is_empty(), "{:#?}", h.failed());
    h.stop(false);
}

/// The same for a partial update: a write through a handle still open lands in the range
/// that waits on the wire, so the base copy takes a mix of versions that the hash taken
/// first does not name; the file is removed and closed, and the reply to the look after
/// the MOVE is lost. Before, the delete that followed knew only that first hash and kept
/// our own version on the server as somebody else's. The copy is now read back and
/// hashed before the MOVE when the file was written meanwhile.
#[test]
fn a_partial_update_written_while_it_goes_then_removed_leaves_nothing() {
    let mut h = Harness::new();
    let ino = h.create("/p", &ours_bytes(4000, 17));
    h.drain("the first upload");
    h.freeze();
    h.write_ino(ino, 100, &[1u8; 100]).unwrap();
    let (fh, _) = h.core().open(ino, true).unwrap();
    h.remote.inject(
        Rule::on(Method::PutRange)
            .outcome(Outcome::Delay(Duration::from_secs(3)))
            .times(1),
    );
    h.remote.clear_log();
    h.unfreeze();
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.remote.count(Method::PutRange) == 0 {
        assert!(
            Instant::now() < deadline,
            "the partial update did not start"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        h.remote.count(Method::Copy) > 0,
        "not sent as a partial update: {:?}",
        h.remote.requests()
    );
    h.core().write(fh, 150, &[9u8; 10]).unwrap();
    h.remote.inject(
        Rule::on(Method::Stat)
            .at("/p")
            .outcome(Outcome::Transport)
            .times(1),
    );
    h.unlink("/p");
    h.core().release(fh).unwrap();
    h.drain("removal of a file written while its partial update went");
    assert!(
        h.remote.read("/p").is_none(),
        "our own version is left behind: {:?}",
        server_digest(&h.server())
    );
    assert!(h.conflicts().is_empty(), "{:?}", h.conflicts());
    assert!(h.failed().is_empty(), "{:#?}", h.failed());
    let left = h.scratch_left();
    assert!(left.is_empty(), "left on the server: {left:?}");
    h.stop(false);
}

/// A new file renamed here while its first upload waits, where another client made a
/// folder (with a file in it) at the old name meanwhile: the upload meets their folder
/// and our file goes up as a conflict copy. Before, the file's node took their folder
/// for its version, and the waiting rename then carried their folder, files and all, to
/// our new name (and, after they replaced that folder by a file, their file). Their
/// folder now stays where they made it and the rename has nothing to move.
#[test]
fn a_rename_waiting_behind_a_conflict_with_their_folder_leaves_their_folder() {
    let mut h = Harness::new();
    let cut = h
        .remote
        .inject(Rule::on(Method::Put).at("/x").outcome(Outcome::Transport));
    let ours = ours_bytes(275, 18);
    h.create("/x", &ours);
    // Tried once, cut off: the rename is then an entry of its own.
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.journal().iter().all(|e| !e.attempted) {
        assert!(Instant::now() < deadline, "the upload was not tried");
        std::thread::sleep(Duration::from_millis(1));
    }
    h.set_outage(true);
    h.freeze();
    h.remote.remove_rule(cut);
    h.mv("/x", "/y");
    assert_eq!(h.journal().len(), 2, "{:#?}", h.journal());
    h.remote.other_mkdir("/x").unwrap();
    let theirs = their_bytes(4426, 18);
    h.remote.other_put("/x/f", theirs.clone()).unwrap();
    let server = h.settle_and_compare("a rename behind a conflict with their folder");
    assert_eq!(server.get("/x"), Some(&MemItem::Dir), "{:?}", server.keys());
    assert_eq!(server.get("/x/f"), Some(&MemItem::File(theirs)));
    assert!(!server.contains_key("/y"), "{:?}", server_digest(&server));
    assert!(
        server
            .iter()
            .any(|(p, v)| is_conflict_path(p) && *v == MemItem::File(ours.clone())),
        "our version is nowhere: {:?}",
        server_digest(&server)
    );
    h.stop(false);
}

/// A file not cached here, read while a rename of its folder waits (the server refuses
/// it for now), after another client rewrote it (or a server gave it a new ETag, as some
/// do to the files of a moved folder): it is read from the old path, whose ETag is no
/// longer the one recorded. Before, that was taken for a file standing where ours had
/// left, the new path had nothing yet, and the read failed: "not found on the remote".
/// The old path holds the file as the server has it; it is read as a read at its own
/// path would.
#[test]
fn a_file_under_a_waiting_rename_reads_after_its_etag_moved() {
    let mut h = Harness::new();
    // Listings stay fresh: none tells the new ETag before the read.
    h.ttl = Duration::from_secs(600);
    h.restart(false);
    let dir = h.mkdir("/a");
    let ino = h.create("/a/f", &ours_bytes(1651, 19));
    h.drain("the folder and its file");
    h.remote
        .inject(Rule::on(Method::Move).outcome(Outcome::Status(423)));
    h.mv("/a", "/x");
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.remote.count(Method::Move) == 0 {
        assert!(Instant::now() < deadline, "the rename was not tried");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(h.local_names(dir).len(), 1);
    let theirs = their_bytes(1651, 19);
    h.remote.other_put("/a/f", theirs.clone()).unwrap();
    h.core().evict(ino).unwrap();
    h.remote.clear_log();
    let got = h.read_ino(ino);
    assert!(
        got.as_ref().is_ok_and(|d| *d == theirs),
        "{:?}: {:?}",
        got.map(|d| d.len()),
        h.remote.requests()
    );
    h.remote.clear_rules();
    let server = h.settle_and_compare("the rename");
    assert_eq!(server.get("/x/f"), Some(&MemItem::File(theirs)));
    h.stop(false);
}

/// The same for a partial update: a file of ours on the server is written here, and while
/// its ranges are on the wire it is renamed here and another client replaces it by a
/// folder with a file in it. The update's MOVE over the file meets their folder and keeps
/// ours in a conflict copy; their folder stays where they made it, and the rename has
/// nothing to move.
#[test]
fn a_rename_waiting_behind_a_partial_update_that_met_their_folder_leaves_their_folder() {
    let mut h = Harness::new();
    let first = ours_bytes(4000, 20);
    let ino = h.create("/x", &first);
    h.drain("the first upload");
    h.remote.inject(
        Rule::on(Method::PutRange)
            .outcome(Outcome::Delay(Duration::from_secs(2)))
            .times(1),
    );
    h.remote.clear_log();
    h.write_ino(ino, 100, &[3u8; 100]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.remote.count(Method::PutRange) == 0 {
        assert!(Instant::now() < deadline, "the update did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        h.remote.count(Method::Copy) > 0,
        "{:?}",
        h.remote.requests()
    );
    h.mv("/x", "/y");
    h.remote.other_delete("/x").unwrap();
    h.remote.other_mkdir("/x").unwrap();
    let theirs = their_bytes(4426, 20);
    h.remote.other_put("/x/f", theirs.clone()).unwrap();
    let server = h.settle_and_compare("a rename behind a partial update that met their folder");
    assert_eq!(server.get("/x"), Some(&MemItem::Dir), "{:?}", server.keys());
    assert_eq!(server.get("/x/f"), Some(&MemItem::File(theirs)));
    assert!(!server.contains_key("/y"), "{:?}", server_digest(&server));
    let mut ours = first.clone();
    ours[100..200].fill(3);
    assert!(
        server
            .iter()
            .any(|(p, v)| is_conflict_path(p) && *v == MemItem::File(ours.clone())),
        "our version is nowhere: {:?}",
        server_digest(&server)
    );
    h.stop(false);
}

// ----- parts sent while a large file is written ------------------------------------------

/// How large the file of these scenarios is: five parts and a bit.
const EARLY_LEN: usize = 5 * UPLOADS.part as usize + 100;

/// A harness that knows the server takes parts (a first large upload asked it).
fn early_harness() -> Harness {
    let h = Harness::new();
    h.create("/warm", &ours_bytes(UPLOADS.parts_from as usize + 10, 40));
    h.drain("the upload that learns the server takes parts");
    assert_eq!(h.core().partial_put.get(), Some(&true));
    h
}

/// Creates `path` and writes its first `upto` bytes of `data`, in pieces, through a
/// handle left open.
fn write_open(h: &Harness, path: &str, data: &[u8], upto: usize) -> (u64, u64) {
    let (p, n) = h.split(path);
    let (attr, fh) = h.core().create(p, &n, 0o644, 0, 0).unwrap();
    write_pieces(h, fh, data, 0, upto);
    (attr.ino, fh)
}

fn write_pieces(h: &Harness, fh: u64, data: &[u8], from: usize, to: usize) {
    for at in (from..to).step_by(1000) {
        let end = (at + 1000).min(to);
        h.core().write(fh, at as u64, &data[at..end]).unwrap();
    }
}

/// Waits until the server holds at least `bytes` of scratch file `scratch`.
fn wait_for_scratch(h: &Harness, scratch: &str, bytes: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held = h.remote.read(scratch).map_or(0, |d| d.len());
        if held >= bytes {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{scratch}: {held} bytes on the server, waited for {bytes}; requests {:?}",
            h.remote.requests()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Parts of a file written whole through a handle held open go while it is written:
/// the server holds them before the close, and the close sends only the rest.
#[test]
fn a_large_file_sends_its_parts_while_it_is_written() {
    let mut h = early_harness();
    let data = ours_bytes(EARLY_LEN, 41);
    let (ino, fh) = write_open(&h, "/big", &data, 7000);
    let scratch = journal::scratch_path("/big", ino);
    // 7000 bytes written: the first three parts are finished.
    wait_for_scratch(&h, &scratch, 3 * UPLOADS.part as usize);
    assert_eq!(h.remote.read(&scratch).unwrap(), data[..6144]);
    assert!(
        h.remote.read("/big").is_none(),
        "moved into place before the close"
    );
    write_pieces(&h, fh, &data, 7000, data.len());
    h.core().flush(fh).unwrap();
    h.core().release(fh).unwrap();
    h.drain("the rest of the upload");
    assert_eq!(h.remote.read("/big").as_deref(), Some(&data[..]));
    assert!(h.scratch_left().is_empty(), "{:?}", h.scratch_left());
    // One request per part: nothing was sent twice.
    let parts =
        h.remote.count_at(Method::Put, &scratch) + h.remote.count_at(Method::PutRange, &scratch);
    assert_eq!(parts, 6, "{:?}", h.remote.requests());
    assert!(h.failed().is_empty(), "{:#?}", h.failed());
    h.stop(false);
}

/// A write below a part already sent: the parts sent early do not count, and the file
/// goes whole after the close, with the write in it.
#[test]
fn a_write_below_a_part_sent_early_sends_the_file_whole() {
    let mut h = early_harness();
    let mut data = ours_bytes(EARLY_LEN, 42);
    let (ino, fh) = write_open(&h, "/big", &data, 7000);
    let scratch = journal::scratch_path("/big", ino);
    wait_for_scratch(&h, &scratch, 2 * UPLOADS.part as usize);
    data[10..30].copy_from_slice(&[9u8; 20]);
    h.core().write(fh, 10, &data[10..30]).unwrap();
    write_pieces(&h, fh, &data, 7000, data.len());
    h.core().flush(fh).unwrap();
    h.core().release(fh).unwrap();
    h.drain("the upload after the close");
    assert_eq!(h.remote.read("/big").as_deref(), Some(&data[..]));
    assert!(h.scratch_left().is_empty(), "{:?}", h.scratch_left());
    assert!(
        h.remote.count_at(Method::Put, &scratch) >= 2,
        "the first part was not sent again: {:?}",
        h.remote.requests()
    );
    h.stop(false);
}

/// Removed while its parts go: nothing of it stays on the server.
#[test]
fn a_large_file_removed_while_its_parts_go_leaves_nothing() {
    let mut h = early_harness();
    let data = ours_bytes(EARLY_LEN, 43);
    let (ino, fh) = write_open(&h, "/big", &data, 7000);
    wait_for_scratch(
        &h,
        &journal::scratch_path("/big", ino),
        UPLOADS.part as usize,
    );
    h.unlink("/big");
    write_pieces(&h, fh, &data, 7000, data.len());
    h.core().flush(fh).unwrap();
    h.core().release(fh).unwrap();
    h.drain("the removal");
    assert!(h.remote.read("/big").is_none());
    assert!(h.scratch_left().is_empty(), "{:?}", h.scratch_left());
    assert!(h.conflicts().is_empty(), "{:?}", h.conflicts());
    assert!(h.failed().is_empty(), "{:#?}", h.failed());
    h.stop(false);
}

/// The daemon dies while the parts go: after the restart the file goes up as the cache
/// has it, and its removal then leaves nothing of the parts on the server.
#[test]
fn a_crash_while_parts_go_early_leaves_no_scratch_file() {
    let mut h = early_harness();
    let data = ours_bytes(EARLY_LEN, 44);
    let (ino, _fh) = write_open(&h, "/big", &data, 7000);
    wait_for_scratch(
        &h,
        &journal::scratch_path("/big", ino),
        2 * UPLOADS.part as usize,
    );
    h.restart(true);
    h.drain("the upload after the restart");
    let here = h.read("/big");
    assert_eq!(here, data[..here.len()], "the cache lost what was written");
    assert_eq!(h.remote.read("/big").as_deref(), Some(&here[..]));
    h.unlink("/big");
    h.drain("the removal");
    assert!(h.remote.read("/big").is_none());
    assert!(h.scratch_left().is_empty(), "{:?}", h.scratch_left());
    assert!(h.failed().is_empty(), "{:#?}", h.failed());
    h.stop(false);
}

/// A writer that pauses: its entry gives its turn back (parked, with the reason shown),
/// and the next write wakes it at once, long before the fallback retry.
#[test]
fn a_paused_writer_parks_its_upload_and_the_next_write_wakes_it() {
    let mut h = early_harness();
    let data = ours_bytes(EARLY_LEN, 45);
    let (ino, fh) = write_open(&h, "/big", &data, 6500);
    let scratch = journal::scratch_path("/big", ino);
    wait_for_scratch(&h, &scratch, 3 * UPLOADS.part as usize);
    wait_until_parked(&h, ino);
    let parked_at = Instant::now();
    write_pieces(&h, fh, &data, 6500, 9000);
    wait_for_scratch(&h, &scratch, 4 * UPLOADS.part as usize);
    assert!(
        parked_at.elapsed() < Duration::from_secs(30),
        "the write did not wake the parked upload"
    );
    write_pieces(&h, fh, &data, 9000, data.len());
    h.core().flush(fh).unwrap();
    h.core().release(fh).unwrap();
    h.drain("the rest");
    assert_eq!(h.remote.read("/big").as_deref(), Some(&data[..]));
    assert!(h.scratch_left().is_empty(), "{:?}", h.scratch_left());
    h.stop(false);
}

/// The folder of a file whose parts go is renamed: the rename waits for the upload, and
/// the file lands in the renamed folder with nothing left behind.
#[test]
fn a_folder_renamed_while_its_file_sends_parts_early_gets_the_file() {
    folder_renamed_under_early_parts(false);
}

/// The same while the upload is parked (its writer paused): it resumes under the
/// folder's new name once written on, and nothing is left under the old one.
#[test]
fn a_folder_renamed_while_its_file_s_upload_is_parked_gets_the_file() {
    folder_renamed_under_early_parts(true);
}

fn folder_renamed_under_early_parts(parked: bool) {
    let mut h = early_harness();
    h.mkdir("/d");
    h.drain("the folder");
    let data = ours_bytes(EARLY_LEN, 46 + parked as u8);
    let written = if parked { 6500 } else { 7000 };
    let (ino, fh) = write_open(&h, "/d/big", &data, written);
    let parts = if parked { 3 } else { 1 };
    let scratch = journal::scratch_path("/d/big", ino);
    wait_for_scratch(&h, &scratch, parts * UPLOADS.part as usize);
    if parked {
        wait_until_parked(&h, ino);
    }
    h.mv("/d", "/e");
    write_pieces(&h, fh, &data, written, data.len());
    h.core().flush(fh).unwrap();
    h.core().release(fh).unwrap();
    h.drain("the upload and the rename");
    assert_eq!(h.remote.read("/e/big").as_deref(), Some(&data[..]));
    assert!(h.remote.read("/d/big").is_none());
    assert!(h.scratch_left().is_empty(), "{:?}", h.scratch_left());
    assert!(h.failed().is_empty(), "{:#?}", h.failed());
    h.stop(false);
}

/// Waits until the upload of `ino` gave its turn back, waiting for its writer.
fn wait_until_parked(h: &Harness, ino: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let parked = |e: &journal::Entry| {
        e.ino == ino
            && !e.failed
            && (e.last_error.as_deref()).is_some_and(|m| m.contains("still being written"))
    };
    while !h.journal().iter().any(parked) {
        assert!(Instant::now() < deadline, "never parked: {:?}", h.journal());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// As `rsync` and `tar` do: the file's times are set and it is renamed right after the
/// close. The parts sent early still count (a change of name or times is no change of
/// content): nothing is sent twice.
#[test]
fn parts_sent_early_survive_a_change_of_times_and_a_rename_after_the_close() {
    let mut h = early_harness();
    let data = ours_bytes(EARLY_LEN, 48);
    let (ino, fh) = write_open(&h, "/.big.tmp", &data, data.len());
    let scratch = journal::scratch_path("/.big.tmp", ino);
    wait_for_scratch(&h, &scratch, 5 * UPLOADS.part as usize);
    h.core().flush(fh).unwrap();
    h.core().release(fh).unwrap();
    let then = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    h.core()
        .setattr(ino, Some(0o600), None, None, None, Some(then))
        .unwrap();
    h.mv("/.big.tmp", "/big");
    h.drain("the upload and the rename");
    assert_eq!(h.remote.read("/big").as_deref(), Some(&data[..]));
    assert!(h.scratch_left().is_empty(), "{:?}", h.scratch_left());
    let parts =
        h.remote.count_at(Method::Put, &scratch) + h.remote.count_at(Method::PutRange, &scratch);
    assert_eq!(parts, 6, "{:?}", h.remote.requests());
    h.stop(false);
}

/// A new folder's MKCOL meets another client's file at its name (405), and the file is
/// gone again (moved or removed by them) before the look that follows: the folder is
/// made at the next attempt, not set aside for a person.
#[test]
fn a_new_folder_whose_name_was_taken_only_for_a_moment_is_made() {
    let mut h = Harness::new();
    h.set_outage(true);
    h.mkdir("/x");
    h.remote.other_put("/x", their_bytes(500, 2)).unwrap();
    h.remote.inject(
        Rule::on(Method::Stat)
            .at("/x")
            .outcome(Outcome::Delay(Duration::from_secs(2)))
            .times(1),
    );
    h.remote.clear_log();
    h.set_outage(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.remote.count_at(Method::Stat, "/x") == 0 {
        assert!(
            Instant::now() < deadline,
            "no look at /x: {:?}",
            h.remote.requests()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        h.remote.count_at(Method::Mkcol, "/x") > 0,
        "looked before the MKCOL: {:?}",
        h.remote.requests()
    );
    h.remote.other_delete("/x").unwrap();
    h.drain("the folder");
    assert!(h.failed().is_empty(), "{:#?}", h.failed());
    assert!(
        matches!(h.server().get("/x"), Some(MemItem::Dir)),
        "{:?}",
        server_digest(&h.server())
    );
    h.stop(false);
}
