//! Listings at real size and with a bad server, on the core over the in-memory remote:
//! - a folder another client shrank by 40,000 entries is applied in one pass (counted in
//!   SQL statements, not timed), keeping what has local changes or is open;
//! - opens of cached files send nothing while their folder's listing is fresh, and one
//!   listing (never a request per file) once it is older than the attribute TTL;
//! - with a server that does not answer, a cached file still opens and reads, and a
//!   known folder still lists, while the refresh waits on the server;
//! - the kernel keeps its copy of an unchanged folder's entries only while the entries
//!   it holds of the children are fresh: past that, a walk's `stat`s would cost a
//!   lookup each, where reading the folder again renews them all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use davdrive::fs::{Core, CoreConfig};
use davdrive::remote::memory::{MemRemote, Method};
use davdrive::store::ROOT_INO;
use rusqlite::trace::{TraceEvent, TraceEventCodes};

mod common;

use common::bare::{bare_core, BareCore as Setup};

fn setup(mem: MemRemote, cfg: CoreConfig) -> Setup {
    bare_core(mem, cfg)
}

fn names(core: &Core, dir: u64) -> Vec<String> {
    let fh = core.opendir(dir).unwrap();
    let names = core
        .readdir(fh)
        .unwrap()
        .iter()
        .skip(2)
        .map(|e| e.name.clone())
        .collect();
    core.releasedir(fh);
    names
}

fn read_all(core: &Core, ino: u64) -> Vec<u8> {
    let (fh, _) = core.open(ino, false).unwrap();
    let data = core.read(fh, 0, 1 << 20).unwrap();
    core.release(fh).unwrap();
    data
}

static STATEMENTS: AtomicU64 = AtomicU64::new(0);

fn count_statement(e: TraceEvent<'_>) {
    if let TraceEvent::Stmt(..) = e {
        STATEMENTS.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn a_folder_shrunk_by_40000_entries_is_applied_in_one_pass() {
    const N: usize = 40_000;
    let mem = MemRemote::new();
    mem.other_mkdir("/big").unwrap();
    for i in 0..N {
        mem.other_put(&format!("/big/f{i:05}"), vec![b'x'; 3])
            .unwrap();
    }
    mem.other_mkdir("/big/sub").unwrap();
    mem.other_put("/big/sub/deep", b"d".to_vec()).unwrap();
    let s = setup(
        mem,
        CoreConfig {
            dir_ttl: Duration::from_secs(60),
            // The test waits for every refresh: what it checks is the result.
            refresh_wait: Duration::from_secs(600),
            ..CoreConfig::default()
        },
    );
    let core = &s.core;
    let big = core.lookup(ROOT_INO, "big").unwrap();
    assert_eq!(names(core, big.ino).len(), N + 1);
    let sub = core.lookup(big.ino, "sub").unwrap();
    assert_eq!(names(core, sub.ino), ["deep"]);

    // Local changes and an open file stay when the server drops the entries.
    let changed = core.lookup(big.ino, "f00007").unwrap();
    let (fh, _) = core.open(changed.ino, true).unwrap();
    core.write(fh, 0, b"ours").unwrap();
    core.release(fh).unwrap();
    let open = core.lookup(big.ino, "f00008").unwrap();
    let (open_fh, _) = core.open(open.ino, false).unwrap();

    // The journal would put f00007 back; keep it from replaying during the check.
    s.mem.set_offline(true);
    core.health.mark_offline("test");
    for i in 0..N {
        s.mem.other_delete(&format!("/big/f{i:05}")).unwrap();
    }
    s.mem.other_delete("/big/sub").unwrap();
    s.mem.set_offline(false);
    core.health.mark_online(None);

    s.clock.advance(Duration::from_secs(61));
    STATEMENTS.store(0, Ordering::Relaxed);
    core.db()
        .write(|c| {
            c.trace_v2(TraceEventCodes::SQLITE_TRACE_STMT, Some(count_statement));
            Ok::<_, rusqlite::Error>(())
        })
        .unwrap();
    let left = names(core, big.ino);
    core.db()
        .write(|c| {
            c.trace_v2(TraceEventCodes::empty(), None);
            Ok::<_, rusqlite::Error>(())
        })
        .unwrap();
    let statements = STATEMENTS.load(Ordering::Relaxed);

    assert_eq!(
        left,
        ["f00007", "f00008"],
        "what has local changes or is open stays"
    );
    assert!(
        core.lookup(big.ino, "f00009").is_err(),
        "removed on the server, removed here"
    );
    assert!(
        core.getattr(sub.ino).is_err(),
        "a removed folder goes with what is below it"
    );
    // A statement per removed node would be 40,000 and more.
    assert!(
        statements < 200,
        "applying the listing ran {statements} statements"
    );
    core.release(open_fh).unwrap();
    s.rt.shutdown_background();
}

#[test]
fn opens_send_nothing_while_the_listing_is_fresh_and_one_listing_after() {
    const FILES: usize = 200;
    let mem = MemRemote::new();
    mem.other_mkdir("/d").unwrap();
    for i in 0..FILES {
        mem.other_put(&format!("/d/f{i}"), format!("v1 {i}").into_bytes())
            .unwrap();
    }
    let s = setup(
        mem,
        CoreConfig {
            dir_ttl: Duration::from_secs(60),
            attr_ttl: Duration::from_secs(10),
            refresh_wait: Duration::from_secs(600),
            ..CoreConfig::default()
        },
    );
    let core = &s.core;
    let d = core.lookup(ROOT_INO, "d").unwrap();
    let inos: Vec<u64> = (0..FILES)
        .map(|i| core.lookup(d.ino, &format!("f{i}")).unwrap().ino)
        .collect();
    for (i, ino) in inos.iter().enumerate() {
        assert_eq!(read_all(core, *ino), format!("v1 {i}").into_bytes());
    }

    // Fresh listing, cached content: nothing goes to the server.
    s.mem.clear_log();
    for ino in &inos {
        read_all(core, *ino);
    }
    assert_eq!(s.mem.requests(), vec![]);

    // Past the attribute TTL: one listing of the folder answers for all of its files,
    // and a version another client wrote meanwhile is the one read.
    s.mem.other_put("/d/f3", b"v2 3".to_vec()).unwrap();
    s.clock.advance(Duration::from_secs(11));
    s.mem.clear_log();
    for (i, ino) in inos.iter().enumerate() {
        let want = if i == 3 {
            b"v2 3".to_vec()
        } else {
            format!("v1 {i}").into_bytes()
        };
        assert_eq!(read_all(core, *ino), want);
    }
    assert_eq!(
        s.mem.requests(),
        vec![
            (Method::List, "/d".to_string()),
            (Method::Get, "/d/f3".to_string())
        ]
    );
    s.rt.shutdown_background();
}

#[test]
fn the_kernel_keeps_a_folder_it_read_within_the_entry_ttl_and_reads_it_again_after() {
    let mem = MemRemote::new();
    mem.other_mkdir("/d").unwrap();
    for i in 0..50 {
        mem.other_put(&format!("/d/f{i}"), b"x".to_vec()).unwrap();
    }
    let s = setup(
        mem,
        CoreConfig {
            dir_ttl: Duration::from_secs(60),
            attr_ttl: Duration::from_secs(10),
            ..CoreConfig::default()
        },
    );
    let core = &s.core;
    let d = core.lookup(ROOT_INO, "d").unwrap().ino;
    let open = |keep_expected: bool, when: &str| {
        let (fh, keep) = core.opendir_cached(d).unwrap();
        core.releasedir(fh);
        assert_eq!(keep, keep_expected, "{when}");
    };
    open(false, "first open: the kernel has nothing to keep");
    open(
        true,
        "unchanged, read just now: kept (an `ls` again costs no round trip)",
    );
    s.clock.advance(Duration::from_secs(6));
    open(true, "unchanged, read 6 s ago");
    // Past the entry TTL (the attribute TTL here), though the listing is still fresh
    // and unchanged: read again, with attributes, which renews every entry at once.
    s.clock.advance(Duration::from_secs(5));
    open(
        false,
        "read 11 s ago: the kernel's entries of the children expired",
    );
    open(true, "read again just now");
    // A change is never kept, whenever it was read.
    s.mem.other_put("/d/new", b"y".to_vec()).unwrap();
    s.clock.advance(Duration::from_secs(61));
    open(false, "a new entry");
    assert!(names(core, d).contains(&"new".to_string()));
    s.rt.shutdown_background();
}

#[test]
fn a_server_that_does_not_answer_stalls_no_cached_read() {
    let mem = MemRemote::new();
    mem.other_mkdir("/d").unwrap();
    mem.other_put("/d/cached", b"cached bytes".to_vec())
        .unwrap();
    mem.other_put("/d/other", b"other bytes".to_vec()).unwrap();
    let s = setup(
        mem,
        CoreConfig {
            dir_ttl: Duration::from_secs(60),
            attr_ttl: Duration::from_secs(10),
            refresh_wait: Duration::from_millis(100),
            ..CoreConfig::default()
        },
    );
    let core = s.core.clone();
    let d = core.lookup(ROOT_INO, "d").unwrap();
    let cached = core.lookup(d.ino, "cached").unwrap().ino;
    let other = core.lookup(d.ino, "other").unwrap().ino;
    read_all(&core, cached);
    read_all(&core, other);

    // Every request now hangs for an hour; both listings are due.
    s.mem.set_latency(Duration::from_secs(3600));
    s.clock.advance(Duration::from_secs(120));
    s.mem.clear_log();
    let (tx, rx) = std::sync::mpsc::channel();
    let c = core.clone();
    std::thread::spawn(move || {
        let a = c.lookup(ROOT_INO, "d").map(|a| a.ino);
        let first = read_all(&c, cached);
        let listed = names(&c, d.ino);
        let second = read_all(&c, other);
        let _ = tx.send((a, first, listed, second));
    });
    // Generous: the server would take an hour; a stalled read never comes back.
    let (a, first, listed, second) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("cached reads waited for the server");
    assert_eq!(a.unwrap(), d.ino);
    assert_eq!(first, b"cached bytes");
    assert_eq!(listed, ["cached", "other"]);
    assert_eq!(second, b"other bytes");
    // The refreshes were sent and are still waiting on the server.
    let lists = s
        .mem
        .requests()
        .iter()
        .filter(|(m, _)| *m == Method::List)
        .count();
    assert!(lists >= 1, "a refresh was started: {:?}", s.mem.requests());
    assert_eq!(s.mem.count(Method::Get), 0);
    s.rt.shutdown_background();
}
