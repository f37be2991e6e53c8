//! The background poll on the core over the in-memory remote, without a kernel. Each
//! round is run by the test (`Core::poll_once`), so nothing waits on a timer:
//! - on a server that propagates folder ETags, unchanged folders cost one PROPFIND Depth 0
//!   each and only the changed one is listed; that is learnt, never assumed, and a server
//!   that stops propagating is found out by the periodic audit listing;
//! - elsewhere folders are listed within the round's request budget, round-robin, and
//!   every pinned folder is covered over several rounds;
//! - which folders: pinned, open files' and recently used ones, not others; none offline;
//! - changes reach the kernel through the `KernelCache` callback (the changed inode, the
//!   added and removed names), pinned files are fetched again, and a dirty file changed
//!   on the server becomes a conflict as with any listing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use davdrive::fs::{CoreConfig, KernelCache, PollConfig, PollReport};
use davdrive::remote::memory::{FolderEtags, MemItem, MemRemote, Method};

/// A kernel that only records what it is told to forget.
#[derive(Default)]
struct RecordingKernel {
    calls: Mutex<Vec<Inval>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Inval {
    Inode(u64),
    Entry(u64, String),
}

impl KernelCache for RecordingKernel {
    fn inval_inode(&self, ino: u64) {
        self.calls.lock().unwrap().push(Inval::Inode(ino));
    }
    fn inval_entry(&self, parent: u64, name: &str) {
        self.calls
            .lock()
            .unwrap()
            .push(Inval::Entry(parent, name.to_string()));
    }
}

impl RecordingKernel {
    fn take(&self) -> Vec<Inval> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

mod common;

use common::bare::{bare_core, BareCore};

/// A core with no background task (each poll round is run by the test), telling a
/// recording kernel what changed.
struct Setup {
    base: BareCore,
    kernel: Arc<RecordingKernel>,
}

impl std::ops::Deref for Setup {
    type Target = BareCore;
    fn deref(&self) -> &BareCore {
        &self.base
    }
}

/// Folders are polled only where a test says: no recent folders unless asked for, no
/// audit listing unless asked for, a budget no test reaches unless it sets one.
fn poll_config() -> PollConfig {
    PollConfig {
        interval: Duration::from_secs(30),
        budget: 1000,
        recent: 0,
        audit_every: 0,
        ..PollConfig::default()
    }
}

fn setup(mem: MemRemote, poll: PollConfig) -> Setup {
    let base = bare_core(
        mem,
        CoreConfig {
            // Nothing here lists a folder again on its own: what changes is the poll's.
            dir_ttl: Duration::from_secs(3600),
            attr_ttl: Duration::from_secs(3600),
            poll,
            ..CoreConfig::default()
        },
    );
    let kernel = Arc::new(RecordingKernel::default());
    base.core.set_kernel_cache(kernel.clone());
    Setup { base, kernel }
}

impl Setup {
    /// The inode at `path`, looked up as the kernel would (listing what was never listed).
    fn ino(&self, path: &str) -> u64 {
        self.core.resolve_path(path).unwrap()
    }

    /// The node at `path` as the table has it now, asking the remote nothing.
    fn node(&self, path: &str) -> Option<davdrive::store::Node> {
        self.core.node_at(path).unwrap()
    }

    fn read(&self, path: &str) -> Vec<u8> {
        let ino = self.ino(path);
        let (fh, _) = self.core.open(ino, false).unwrap();
        let data = self.core.read(fh, 0, 1 << 20).unwrap();
        self.core.release(fh).unwrap();
        data
    }

    /// PROPFINDs since the log was cleared, as (method, path), sorted.
    fn propfinds(&self) -> Vec<(Method, String)> {
        let mut v: Vec<(Method, String)> = self
            .mem
            .requests()
            .into_iter()
            .filter(|(m, _)| matches!(m, Method::Stat | Method::List))
            .collect();
        v.sort_by_key(|(m, p)| (p.clone(), *m as u8));
        v
    }

    fn poll(&self) -> PollReport {
        let r = self.core.poll_once();
        assert_eq!(r.skipped, None, "{r:?}");
        assert_eq!(r.errors, 0, "{r:?}");
        r
    }

    /// Waits (with a deadline) until the pinned file at `path` is fully cached and the
    /// poll's fetches are over, so that no download holds a file open when the test
    /// goes on (an open file keeps its version through a listing).
    fn wait_cached(&self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let n = self.node(path).unwrap();
            if n.fully_cached()
                && !self.core.is_open(n.ino)
                && self.core.poll_status().refetching == 0
            {
                return;
            }
            assert!(Instant::now() < deadline, "{path} was not fetched again");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn stat(path: &str) -> (Method, String) {
    (Method::Stat, path.to_string())
}

fn list(path: &str) -> (Method, String) {
    (Method::List, path.to_string())
}

#[test]
fn with_propagated_folder_etags_only_the_changed_folder_is_listed() {
    let mem = MemRemote::new();
    mem.set_folder_etags(FolderEtags::Propagated);
    for d in ["a", "b", "c"] {
        mem.other_mkdir(&format!("/{d}")).unwrap();
        mem.other_put(&format!("/{d}/f"), b"1".to_vec()).unwrap();
    }
    let s = setup(mem, poll_config());
    for d in ["/a", "/b", "/c"] {
        let ino = s.ino(d);
        s.core.set_pinned(ino, true).unwrap();
    }

    // Nothing is known of the server's folder ETags: every folder is listed.
    let r = s.poll();
    assert_eq!((r.folders, r.listed, r.requests), (3, 3, 3), "{r:?}");
    assert_eq!(r.folder_etags, "unknown");
    for d in ["/a", "/b", "/c"] {
        s.wait_cached(&format!("{d}/f"));
    }

    // A file's new version comes with a new ETag of its folder: now it is known.
    s.mem.other_put("/a/f", b"2".to_vec()).unwrap();
    let r = s.poll();
    // Learnt at the first folder; the others are then asked for their ETag.
    assert_eq!(
        (r.folders, r.listed, r.requests, r.changes),
        (3, 1, 3, 1),
        "{r:?}"
    );
    assert_eq!(r.folder_etags, "propagated");
    s.wait_cached("/a/f");

    // One Depth 0 per folder, one listing: the changed folder's.
    s.mem.clear_log();
    s.mem.other_put("/b/f", b"22".to_vec()).unwrap();
    let r = s.poll();
    assert_eq!(
        s.propfinds(),
        [stat("/a"), stat("/b"), list("/b"), stat("/c")]
    );
    assert_eq!(
        (r.folders, r.listed, r.requests, r.changes),
        (3, 1, 4, 1),
        "{r:?}"
    );
    assert_eq!(s.node("/b/f").unwrap().size, 2);

    // Nothing changed: three Depth 0 requests, nothing listed.
    s.mem.clear_log();
    let r = s.poll();
    assert_eq!(s.propfinds(), [stat("/a"), stat("/b"), stat("/c")]);
    assert_eq!((r.listed, r.changes), (0, 0), "{r:?}");

    // A folder made in /c moves the ETags of /c (and of the root, not polled here).
    s.mem.other_mkdir("/c/deeper").unwrap();
    s.mem.clear_log();
    let r = s.poll();
    assert_eq!(
        s.propfinds(),
        [stat("/a"), stat("/b"), stat("/c"), list("/c")]
    );
    assert_eq!(r.changes, 1, "{r:?}");
    assert!(s.node("/c/deeper").is_some());
    assert_eq!(s.read("/b/f"), b"22");
}

#[test]
fn a_new_version_of_an_open_file_is_taken_once_it_is_closed() {
    let mem = MemRemote::new();
    mem.set_folder_etags(FolderEtags::Propagated);
    mem.other_mkdir("/o").unwrap();
    mem.other_put("/o/f", b"1".to_vec()).unwrap();
    let s = setup(mem, poll_config());
    s.poll(); // nothing polled yet: nothing pinned, open or used
    let f = s.ino("/o/f");
    s.mem.other_put("/o/f", b"22".to_vec()).unwrap();
    let (fh, _) = s.core.open(f, false).unwrap();
    assert_eq!(s.poll().listed, 1, "the folder of an open file is polled");
    s.mem.other_put("/o/f", b"333".to_vec()).unwrap();
    let r = s.poll();
    assert_eq!(r.folder_etags, "propagated");
    // Open: it keeps its version; the ETag of its folder moves no more after this.
    s.mem.other_put("/o/f", b"4444".to_vec()).unwrap();
    let r = s.poll();
    assert_eq!((r.listed, r.changes), (1, 0), "{r:?}");
    assert_eq!(s.node("/o/f").unwrap().size, 1);
    s.core.release(fh).unwrap();
    // Closed (and no longer polled for being open): pinned now, it is listed again
    // although its folder's ETag is the one seen last.
    let o = s.ino("/o");
    s.core.set_pinned(o, true).unwrap();
    s.mem.clear_log();
    let r = s.poll();
    assert_eq!(s.propfinds(), [list("/o")]);
    assert_eq!(r.changes, 1, "{r:?}");
    assert_eq!(s.node("/o/f").unwrap().size, 4);
}

#[test]
fn a_server_whose_folder_etags_follow_only_names_is_not_taken_as_propagating() {
    // Apache's and dav-server's folder ETags come from the folder's mtime: a file
    // rewritten in place leaves them as they were.
    let mem = MemRemote::new();
    mem.set_folder_etags(FolderEtags::Members);
    mem.other_mkdir("/m").unwrap();
    mem.other_put("/m/f", b"1".to_vec()).unwrap();
    let s = setup(mem, poll_config());
    let m = s.ino("/m");
    s.core.set_pinned(m, true).unwrap();
    s.poll();
    s.wait_cached("/m/f");
    // Names coming and going move the ETag: no evidence either way.
    s.mem.other_put("/m/g", b"g".to_vec()).unwrap();
    assert_eq!(s.poll().folder_etags, "unknown");
    s.wait_cached("/m/g");
    // A new version under the same ETag: not propagating, so folders are listed.
    s.mem.other_put("/m/f", b"22".to_vec()).unwrap();
    let r = s.poll();
    assert_eq!(
        (r.folder_etags.as_str(), r.changes),
        ("not_propagated", 1),
        "{r:?}"
    );
    s.mem.clear_log();
    s.poll();
    assert_eq!(s.propfinds(), [list("/m")]);
}

#[test]
fn the_audit_listing_finds_a_server_that_stopped_propagating() {
    let mem = MemRemote::new();
    mem.set_folder_etags(FolderEtags::Propagated);
    mem.other_mkdir("/x").unwrap();
    mem.other_put("/x/f", b"1".to_vec()).unwrap();
    let s = setup(
        mem,
        PollConfig {
            audit_every: 4,
            ..poll_config()
        },
    );
    let x = s.ino("/x");
    s.core.set_pinned(x, true).unwrap();
    s.poll(); // round 1: listed
    s.wait_cached("/x/f");
    s.mem.other_put("/x/f", b"2".to_vec()).unwrap();
    assert_eq!(s.poll().folder_etags, "propagated"); // round 2
    s.wait_cached("/x/f");
    // The server stops moving folder ETags for content; Depth 0 cannot see the change.
    s.mem.set_folder_etags(FolderEtags::Members);
    s.mem.other_put("/x/f", b"333".to_vec()).unwrap();
    let r = s.poll(); // round 3
    assert_eq!((r.listed, r.changes), (0, 0), "{r:?}");
    // Round 4 is an audit: the folder is listed whatever its ETag says.
    let r = s.poll();
    assert_eq!((r.listed, r.changes), (1, 1), "{r:?}");
    assert_eq!(r.folder_etags, "not_propagated");
    assert_eq!(s.node("/x/f").unwrap().size, 3);
}

#[test]
fn without_folder_etags_folders_are_listed_within_the_budget_and_all_are_covered() {
    let mem = MemRemote::new();
    mem.other_mkdir("/p").unwrap();
    for i in 0..10 {
        mem.other_mkdir(&format!("/p/s{i}")).unwrap();
        mem.other_put(&format!("/p/s{i}/f"), b"x".to_vec()).unwrap();
    }
    let s = setup(
        mem,
        PollConfig {
            budget: 4,
            ..poll_config()
        },
    );
    let p = s.ino("/p");
    s.core.set_pinned(p, true).unwrap();
    let fh = s.core.opendir(p).unwrap(); // the subfolders are known, not listed
    s.core.releasedir(fh);
    let folders: Vec<String> = std::iter::once("/p".to_string())
        .chain((0..10).map(|i| format!("/p/s{i}")))
        .collect();

    // 11 folders, 4 requests a round: all of them in 3 rounds, none twice.
    s.mem.clear_log();
    for round in 1..=3 {
        let before = s.propfinds().len();
        let r = s.poll();
        assert!(r.requests <= 4, "round {round}: {r:?}");
        assert_eq!(s.propfinds().len() - before, r.requests);
        assert_eq!((r.listed, r.deferred), (4, 7), "round {round}: {r:?}");
        assert_eq!(r.folder_etags, "not_propagated");
    }
    let mut listed: BTreeMap<String, usize> = BTreeMap::new();
    for (m, p) in s.propfinds() {
        assert_eq!(m, Method::List, "no folder ETags: nothing but listings");
        *listed.entry(p).or_default() += 1;
    }
    // Round-robin: each once, and the twelfth request starts the next cycle.
    for f in &folders {
        let want = if f == "/p" { 2 } else { 1 };
        assert_eq!(listed.get(f), Some(&want), "{f} in {listed:?}");
    }

    for i in 0..10 {
        s.wait_cached(&format!("/p/s{i}/f"));
    }
    // Round-robin goes on where it stopped: a change anywhere is found within a cycle.
    s.mem.other_put("/p/s9/new", b"n".to_vec()).unwrap();
    s.mem.other_put("/p/s0/f", b"changed".to_vec()).unwrap();
    let mut changes = 0;
    let mut reports = Vec::new();
    s.mem.clear_log();
    for _ in 0..3 {
        let r = s.poll();
        changes += r.changes;
        reports.push(r);
    }
    assert_eq!(changes, 2, "{reports:?} {:?}", s.propfinds());
    assert!(s.node("/p/s9/new").is_some());
    assert_eq!(s.node("/p/s0/f").unwrap().size, 7);
}

#[test]
fn open_and_recently_used_folders_are_polled_others_and_offline_not() {
    let mem = MemRemote::new();
    for d in ["idle", "used", "open"] {
        mem.other_mkdir(&format!("/{d}")).unwrap();
        mem.other_put(&format!("/{d}/f"), b"1".to_vec()).unwrap();
    }
    let s = setup(
        mem,
        PollConfig {
            recent: 8,
            recent_for: Duration::from_secs(600),
            ..poll_config()
        },
    );
    s.ino("/idle/f");
    s.clock.advance(Duration::from_secs(3600));
    // The root and /open were used an hour ago too: only what is used now counts.
    let f = s.ino("/open/f");
    let (fh, _) = s.core.open(f, false).unwrap();
    s.clock.advance(Duration::from_secs(3600));
    s.ino("/used/f");
    s.mem.clear_log();
    s.poll();
    assert_eq!(s.propfinds(), [list("/"), list("/open"), list("/used")]);
    s.core.release(fh).unwrap();

    // Offline: the round is skipped and sends nothing.
    s.core.health.mark_offline("test");
    s.mem.clear_log();
    let r = s.core.poll_once();
    assert_eq!(r.skipped.as_deref(), Some("offline"));
    assert!(s.mem.requests().is_empty());
    let status = s.core.poll_status();
    assert_eq!(status.last.unwrap().skipped.as_deref(), Some("offline"));
    assert_eq!(status.rounds, 1, "a skipped round is no round");
}

#[test]
fn changes_reach_the_kernel_and_pinned_files_are_fetched_again() {
    let mem = MemRemote::new();
    mem.other_mkdir("/d").unwrap();
    mem.other_put("/d/old", b"version one".to_vec()).unwrap();
    mem.other_put("/d/gone", b"bye".to_vec()).unwrap();
    mem.other_mkdir("/u").unwrap();
    mem.other_put("/u/clean", b"cached here".to_vec()).unwrap();
    let s = setup(
        mem,
        PollConfig {
            recent: 8,
            ..poll_config()
        },
    );
    let d = s.ino("/d");
    s.core.set_pinned(d, true).unwrap();
    // An unpinned folder in use, with a clean cached file.
    assert_eq!(s.read("/u/clean"), b"cached here");
    let r = s.poll();
    assert_eq!(
        r.refetch, 2,
        "pinned files found by the first listing: {r:?}"
    );
    s.wait_cached("/d/old");
    s.wait_cached("/d/gone");
    s.kernel.take();

    let old = s.ino("/d/old");
    let clean = s.ino("/u/clean");
    s.mem
        .other_put("/d/old", b"version two, longer".to_vec())
        .unwrap();
    s.mem.other_put("/d/new", b"hello".to_vec()).unwrap();
    s.mem.other_delete("/d/gone").unwrap();
    s.mem.other_put("/u/clean", b"theirs".to_vec()).unwrap();
    let r = s.poll();
    assert_eq!(r.changes, 4, "{r:?}");
    assert_eq!(r.refetch, 2, "the changed and the new pinned file: {r:?}");
    let new = s.node("/d/new").expect("the new file is in the table").ino;
    let calls = s.kernel.take();
    for want in [
        Inval::Inode(old),
        Inval::Entry(d, "new".into()),
        Inval::Entry(d, "gone".into()),
        Inval::Inode(d),
        Inval::Inode(clean),
    ] {
        assert!(calls.contains(&want), "{want:?} not in {calls:?}");
    }
    assert!(!calls.contains(&Inval::Inode(new)), "{calls:?}");

    // The clean unpinned file lost its stale content; the pinned ones are cached again,
    // and reading them asks the server for nothing.
    let c = s.node("/u/clean").unwrap();
    assert_eq!((c.size, c.cached_bytes), (6, 0));
    s.wait_cached("/d/old");
    s.wait_cached("/d/new");
    assert_eq!(s.node("/d/old").unwrap().cached_bytes, 19);
    s.mem.clear_log();
    assert_eq!(s.read("/d/old"), b"version two, longer");
    assert_eq!(s.read("/d/new"), b"hello");
    assert_eq!(s.mem.count(Method::Get), 0);
    assert!(s.node("/d/gone").is_none());
}

#[test]
fn a_dirty_file_changed_on_the_server_becomes_a_conflict() {
    let mem = MemRemote::new();
    mem.other_mkdir("/w").unwrap();
    mem.other_put("/w/doc.txt", b"base".to_vec()).unwrap();
    let s = setup(
        mem,
        PollConfig {
            recent: 8,
            ..poll_config()
        },
    );
    let doc = s.ino("/w/doc.txt");
    let (fh, _) = s.core.open(doc, true).unwrap();
    s.core.write(fh, 0, b"ours").unwrap();
    s.core.release(fh).unwrap();
    // No replayer runs yet: the upload waits while another machine writes.
    s.mem
        .other_put("/w/doc.txt", b"theirs, newer".to_vec())
        .unwrap();
    let r = s.poll();
    assert_eq!(r.listed, 2, "the root and /w: {r:?}");
    // The local change stays as it is, as with any listing.
    assert_eq!(s.read("/w/doc.txt"), b"ours");
    assert!(s.node("/w/doc.txt").unwrap().dirty);

    // The upload then meets the other version: both are kept, and it is recorded.
    let (tx, rx) = tokio::sync::watch::channel(false);
    s.rt.spawn(davdrive::journal::replay::run(s.core.clone(), rx));
    let deadline = Instant::now() + Duration::from_secs(20);
    let conflicts = || -> i64 {
        s.core
            .db()
            .write(|c| c.query_row("SELECT COUNT(*) FROM conflicts", [], |r| r.get(0)))
            .unwrap()
    };
    while conflicts() == 0 {
        assert!(Instant::now() < deadline, "no conflict recorded");
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = tx.send(true);
    let snap = s.mem.snapshot();
    assert_eq!(
        snap.get("/w/doc.txt"),
        Some(&MemItem::File(b"theirs, newer".to_vec()))
    );
    assert!(
        snap.iter()
            .any(|(p, item)| p.starts_with("/w/doc (conflict ")
                && *item == MemItem::File(b"ours".to_vec())),
        "{snap:?}"
    );
}

/// What this machine uploaded, with its mode and times as dead properties, is no change
/// to the next poll: nothing is counted, and the kernel is told nothing about it.
#[test]
fn files_uploaded_from_here_are_no_change_to_the_poll() {
    let mem = MemRemote::new();
    mem.other_mkdir("/w").unwrap();
    let s = setup(
        mem,
        PollConfig {
            recent: 8,
            ..poll_config()
        },
    );
    let w = s.ino("/w");
    for i in 0..5 {
        let (_, fh) = s.core.create(w, &format!("f{i}"), 0o644, 0, 0).unwrap();
        s.core.write(fh, 0, b"data").unwrap();
        s.core.release(fh).unwrap();
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    s.rt.spawn(davdrive::journal::replay::run(s.core.clone(), rx));
    let deadline = Instant::now() + Duration::from_secs(20);
    while s
        .core
        .db()
        .write(|tx| davdrive::journal::stats(tx))
        .unwrap()
        .0
        > 0
    {
        assert!(Instant::now() < deadline, "the uploads did not land");
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = tx.send(true);
    s.kernel.take();
    let r = s.poll();
    assert!(r.listed >= 1, "{r:?}");
    assert_eq!(r.changes, 0, "{r:?}");
    assert!(s.kernel.take().is_empty());
}
