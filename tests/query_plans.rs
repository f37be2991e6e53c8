//! No statement on a hot path scans a large table of the state store.
//!
//! Drives a core over the in-memory remote through what a walk, an editor and the
//! replayer do (lookup, getattr, readdir, open, read, write, create, mkdir, rename,
//! unlink, rmdir, setattr, a listing that adds and one that removes, the replay of
//! every kind of change), records every statement the store runs (SQLite's statement
//! trace), and asks SQLite for the plan of each. A plan that visits every row of
//! `nodes`, `journal` or `migration_items` fails the test: those tables grow with the
//! drive (100,000 files) and the backlog, and a scan per FUSE reply makes walks
//! quadratic.
//!
//! The few statements that visit every row on purpose (once per pass, never per reply)
//! are listed in `WHOLE_TABLE_BY_DESIGN` with the reason.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use davdrive::clock::Clock;
use davdrive::fs::{Core, CoreConfig};
use davdrive::health::{self, Health};
use davdrive::journal;
use davdrive::remote::memory::{MemRemote, Method, Outcome, Rule};
use davdrive::remote::Remote;
use davdrive::store::ROOT_INO;
use rusqlite::trace::{TraceEvent, TraceEventCodes};
use tokio::sync::watch;

static SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn record(e: TraceEvent<'_>) {
    if let TraceEvent::Stmt(stmt, _) = e {
        SEEN.lock().unwrap().insert(stmt.sql().into_owned());
    }
}

const LARGE_TABLES: [&str; 3] = ["nodes", "journal", "migration_items"];

/// Statements that read a whole large table on purpose, with why that is fine: each
/// runs once per pass over the data (start-up, a sweep, a status), not once per request.
/// Matched on a distinctive part of the SQL text.
const WHOLE_TABLE_BY_DESIGN: &[(&str, &str)] = &[
    // The replayer's scheduling pass reads the journal in order, once per wake-up, and
    // stops as soon as it has enough entries to run.
    ("FROM journal ORDER BY id", "replay scheduling pass"),
    // The status counts: once per `ctl status`, and by `sync --wait` between progress.
    ("MIN(created_at) FROM journal", "status counts"),
    // Cache usage (`ctl status`, `cache`, metrics, a sweep) walks the partial index of
    // cached files and the one of pins: rows with content or a pin, never all nodes.
    (
        "dirty != 0 OR ino IN (SELECT ino FROM journal) FROM nodes",
        "cache usage, over cached files",
    ),
    (
        "(SELECT ino FROM nodes WHERE pinned != 0 UNION",
        "pinned set, from the pins",
    ),
];

fn by_design(sql: &str) -> bool {
    WHOLE_TABLE_BY_DESIGN
        .iter()
        .any(|(part, _)| sql.contains(part))
}

/// The plan lines of `sql` that scan a large table ("SCAN nodes", also through an
/// index: a full index walk grows with the table as much).
fn full_scans(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
    let mut st = match conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")) {
        Ok(st) => st,
        // Statements that cannot be explained (PRAGMA, BEGIN, COMMIT) touch no table.
        Err(_) => return Vec::new(),
    };
    // Unbound parameters are NULL; the plan does not depend on their values.
    let nulls = vec![rusqlite::types::Null; st.parameter_count()];
    let details: Vec<String> = st
        .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default();
    details
        .into_iter()
        .filter(|d| {
            LARGE_TABLES.iter().any(|t| {
                d == &format!("SCAN {t}")
                    || d.starts_with(&format!("SCAN {t} "))
                    || d.starts_with(&format!("SCAN {t}\t"))
            })
        })
        .collect()
}

fn drain(core: &Core, clock: &Clock) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (waiting, failed, _) = core.db().write(|tx| journal::stats(tx)).unwrap();
        assert_eq!(failed, 0, "nothing may be set aside");
        if waiting == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the journal did not drain");
        clock.advance(Duration::from_secs(600));
        let _ = core.db().write(|tx| journal::retry_waiting_now(tx));
        core.journal_changed.notify_one();
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn no_hot_statement_scans_a_large_table() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let state = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    for d in 0..20 {
        mem.other_mkdir(&format!("/dir{d}")).unwrap();
        for f in 0..50 {
            mem.other_put(&format!("/dir{d}/f{f}"), vec![b'x'; 100])
                .unwrap();
        }
    }
    let remote: Arc<dyn Remote> = mem.clone();
    let health = Health::new(true);
    let clock = Clock::default();
    let core = Core::load(
        state.path(),
        remote.clone(),
        rt.handle().clone(),
        health.clone(),
        CoreConfig {
            dir_ttl: Duration::ZERO,
            attr_ttl: Duration::ZERO,
            clock: clock.clone(),
            ..CoreConfig::default()
        },
    )
    .unwrap();
    let (stop, stopped) = watch::channel(false);
    let tasks = [
        rt.spawn(health::probe_loop(
            health,
            remote,
            Duration::from_millis(5),
            stopped.clone(),
        )),
        rt.spawn(journal::replay::run(core.clone(), stopped)),
    ];
    core.db()
        .write(|c| {
            c.trace_v2(TraceEventCodes::SQLITE_TRACE_STMT, Some(record));
            Ok::<_, rusqlite::Error>(())
        })
        .unwrap();
    // The read-only connection too (cache usage, file states, status counts).
    core.db()
        .read(|c| {
            c.trace_v2(TraceEventCodes::SQLITE_TRACE_STMT, Some(record));
            Ok::<_, rusqlite::Error>(())
        })
        .unwrap();

    // A walk: every folder listed, every file looked up and its attributes read.
    let fh = core.opendir(ROOT_INO).unwrap();
    let top: Vec<_> = core.readdir(fh).unwrap().iter().cloned().collect();
    core.releasedir(fh);
    for d in top.iter().filter(|e| e.name.starts_with("dir")) {
        let dir = core.lookup(ROOT_INO, &d.name).unwrap();
        let fh = core.opendir(dir.ino).unwrap();
        for e in core.readdir(fh).unwrap().iter().skip(2) {
            core.lookup(dir.ino, &e.name).unwrap();
            core.getattr(e.attr.ino).unwrap();
        }
        core.releasedir(fh);
    }

    // Reading a file: fetch, then a cached read.
    let dir0 = core.lookup(ROOT_INO, "dir0").unwrap();
    let f0 = core.lookup(dir0.ino, "f0").unwrap();
    for _ in 0..2 {
        let (fh, _) = core.open(f0.ino, false).unwrap();
        assert_eq!(core.read(fh, 0, 4096).unwrap(), vec![b'x'; 100]);
        core.release(fh).unwrap();
    }

    // An editor's save, a new folder, renames of a file and a folder, a truncate, removals.
    let (new, fh) = core.create(dir0.ino, "new.txt", 0o644, 0, 0).unwrap();
    core.write(fh, 0, b"hello").unwrap();
    core.flush(fh).unwrap();
    core.release(fh).unwrap();
    let (fh, _) = core.open(f0.ino, true).unwrap();
    core.write(fh, 0, b"changed").unwrap();
    core.release(fh).unwrap();
    core.setattr(new.ino, Some(0o600), None, None, Some(2), None)
        .unwrap();
    let sub = core.mkdir(dir0.ino, "sub", 0o755, 0, 0).unwrap();
    core.rename(dir0.ino, "new.txt", sub.ino, "moved.txt", false)
        .unwrap();
    core.rename(ROOT_INO, "dir1", ROOT_INO, "dir1 renamed", false)
        .unwrap();
    core.unlink(dir0.ino, "f1").unwrap();
    let gone = core.mkdir(ROOT_INO, "gone", 0o755, 0, 0).unwrap();
    core.rmdir(ROOT_INO, "gone").unwrap();
    let _ = gone;

    // A file another client rewrote meanwhile (a conflict at upload), and a server that
    // refuses once for a while (a backoff).
    let dir3 = core.lookup(ROOT_INO, "dir3").unwrap();
    let f3 = core.lookup(dir3.ino, "f0").unwrap();
    let (fh, _) = core.open(f3.ino, true).unwrap();
    core.write(fh, 0, b"ours").unwrap();
    // Theirs lands before ours is committed (at the release): once committed, the
    // replayer may upload ours first, and theirs would then simply replace it.
    mem.other_put("/dir3/f0", b"theirs".to_vec()).unwrap();
    core.release(fh).unwrap();
    mem.inject(Rule::on(Method::Put).times(1).outcome(Outcome::Status(503)));

    // The replayer sends all of it.
    drain(&core, &clock);
    assert_eq!(
        mem.read("/dir0/sub/moved.txt").as_deref(),
        Some(&b"he"[..]),
        "the replayed changes reach the server"
    );
    let kept_theirs = mem
        .snapshot()
        .keys()
        .any(|p| p.starts_with("/dir3/f0 (conflict"));
    assert!(
        kept_theirs || mem.read("/dir3/f0").as_deref() == Some(&b"ours"[..]),
        "server /dir3/f0: {:?}; under /dir3: {:?}",
        mem.read("/dir3/f0")
            .map(|d| String::from_utf8_lossy(&d).into_owned()),
        mem.snapshot()
            .keys()
            .filter(|p| p.starts_with("/dir3"))
            .collect::<Vec<_>>()
    );

    // Another client removes a folder's files and adds some: the next listing applies it.
    for f in 2..50 {
        mem.other_delete(&format!("/dir2/f{f}")).unwrap();
    }
    mem.other_put("/dir2/theirs", b"t".to_vec()).unwrap();
    let dir2 = core.lookup(ROOT_INO, "dir2").unwrap();
    let fh = core.opendir(dir2.ino).unwrap();
    let names: Vec<String> = core
        .readdir(fh)
        .unwrap()
        .iter()
        .skip(2)
        .map(|e| e.name.clone())
        .collect();
    core.releasedir(fh);
    assert_eq!(names, ["f0", "f1", "theirs"]);

    // Cache management: pin, a round of the background poll, evict.
    core.set_pinned(dir2.ino, true).unwrap();
    let round = core.poll_once();
    assert!(round.listed > 0, "{round:?}");
    core.set_pinned(dir2.ino, false).unwrap();
    core.evict(f0.ino).unwrap();
    // What `ctl status` and `ls --state` read, on the read-only connection.
    core.cache_usage().unwrap();
    core.file_state(f0.ino).unwrap();

    core.db()
        .write(|c| {
            c.trace_v2(TraceEventCodes::empty(), None);
            Ok::<_, rusqlite::Error>(())
        })
        .unwrap();
    core.db()
        .read(|c| {
            c.trace_v2(TraceEventCodes::empty(), None);
            Ok::<_, rusqlite::Error>(())
        })
        .unwrap();
    let _ = stop.send(true);
    for t in tasks {
        let _ = rt.block_on(t);
    }

    let seen = std::mem::take(&mut *SEEN.lock().unwrap());
    assert!(
        seen.len() > 30,
        "the trace saw only {} statements: {seen:#?}",
        seen.len()
    );
    let mut scanning = Vec::new();
    core.db()
        .write(|conn| {
            for sql in &seen {
                if by_design(sql) {
                    continue;
                }
                let scans = full_scans(conn, sql);
                if !scans.is_empty() {
                    scanning.push(format!("{sql}\n    -> {}", scans.join("; ")));
                }
            }
            Ok::<_, rusqlite::Error>(())
        })
        .unwrap();
    assert!(
        scanning.is_empty(),
        "{} statements scan a large table:\n{}",
        scanning.len(),
        scanning.join("\n")
    );
}

/// The check itself sees a scan: a query on an unindexed column is reported.
#[test]
fn the_check_sees_a_full_scan() {
    let state = tempfile::tempdir().unwrap();
    let conn = davdrive::store::open(&state.path().join("s.db")).unwrap();
    assert!(!full_scans(&conn, "SELECT ino FROM nodes WHERE size = ?1").is_empty());
    assert!(full_scans(&conn, "SELECT ino FROM nodes WHERE ino = ?1").is_empty());
}
