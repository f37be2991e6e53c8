//! Where things live: the state store's readers do not queue behind its writer, and
//! SQL statements are written in `src/store/` only.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use davdrive::fs::{Core, CoreConfig};
use davdrive::health::Health;
use davdrive::journal;
use davdrive::remote::memory::MemRemote;
use davdrive::store::{self, ROOT_INO};

/// A core over an in-memory remote with one folder created here: one journal entry
/// waits (no replayer runs).
fn core_with_one_waiting_entry(
    rt: &tokio::runtime::Runtime,
    state: &std::path::Path,
) -> (Arc<Core>, u64) {
    let core = Core::load(
        state,
        Arc::new(MemRemote::new()),
        rt.handle().clone(),
        Health::new(true),
        CoreConfig::default(),
    )
    .unwrap();
    let dir = core.mkdir(ROOT_INO, "made-here", 0o755, 0, 0).unwrap().ino;
    (core, dir)
}

#[test]
fn status_reads_answer_while_the_writer_is_held() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let (core, dir) = core_with_one_waiting_entry(&rt, state.path());

    // The writer is held, as a long FUSE operation or replay step holds it: a unit of
    // work on another thread that waits inside its closure until let go.
    let (held_tx, held_rx) = mpsc::sync_channel(0);
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let holder = core.clone();
    let writer = std::thread::spawn(move || {
        holder
            .db()
            .write(|_| {
                held_tx.send(()).unwrap();
                let _ = release_rx.recv();
                Ok::<_, rusqlite::Error>(())
            })
            .unwrap();
    });
    held_rx.recv().unwrap();

    // What `ctl status`, `metrics`, `cache` and `ls` read, from another thread.
    let (tx, rx) = mpsc::sync_channel(1);
    let reader = core.clone();
    std::thread::spawn(move || {
        let gauges = davdrive::control::cmd::metrics::gauges(&reader).map_err(|e| e.0);
        let state = reader.file_state(dir).map_err(|e| e.to_string());
        let listed = reader
            .db()
            .read(|c| store::children(c, ROOT_INO))
            .map(|v| v.into_iter().map(|n| n.name).collect::<Vec<_>>());
        let _ = tx.send((gauges, state, listed));
    });
    // Bounded: a read that queued behind the writer would never come while it is held.
    let (gauges, state, listed) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the status reads waited for the writer");
    let gauges = gauges.unwrap();
    assert_eq!(gauges.journal_waiting, 1);
    assert_eq!(state.unwrap(), "dir");
    assert_eq!(listed.unwrap(), vec!["made-here".to_string()]);

    // The check can tell: a read on the writer does not answer while it is held, and
    // answers once it is let go.
    let (tx, rx) = mpsc::sync_channel(1);
    let blocked = core.clone();
    std::thread::spawn(move || {
        let _ = tx.send(blocked.db().write(|tx| journal::stats(tx)).map(|s| s.0));
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "a read on the writer answered while the writer was held"
    );
    release_tx.send(()).unwrap();
    writer.join().unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(60)).unwrap().unwrap(),
        1
    );
}

#[test]
fn the_reader_sees_commits_and_cannot_write() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let (core, _) = core_with_one_waiting_entry(&rt, state.path());
    core.mkdir(ROOT_INO, "second", 0o755, 0, 0).unwrap();
    let (waiting, _, _) = core.db().read(journal::stats).unwrap();
    assert_eq!(waiting, 2, "the reader sees the last commit");
    let refused = core.db().read(journal::reset_running);
    assert!(refused.is_err(), "the reader is read-only");
}

/// Where SQL is found in one source file: (line number, line) of every statement text
/// (a string starting with an SQL verb) and every call of rusqlite's statement API.
fn sql_in(text: &str) -> Vec<(usize, String)> {
    const VERBS: [&str; 10] = [
        "SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "CREATE", "PRAGMA", "REPLACE", "ALTER",
        "DROP",
    ];
    const CALLS: [&str; 6] = [
        ".prepare(",
        ".prepare_cached(",
        ".query_row(",
        ".query_map(",
        ".execute_batch(",
        "params![",
    ];
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let statement = line.split('"').skip(1).step_by(2).any(|lit| {
            let lit = lit.trim_start();
            VERBS.iter().any(|v| {
                lit.strip_prefix(v)
                    .is_some_and(|rest| rest.starts_with([' ', '\\']))
            })
        });
        // `.execute(` is reqwest's too: it counts when SQL text or parameters go in.
        let call = CALLS.iter().any(|c| line.contains(c));
        if statement || call {
            found.push((i + 1, line.trim().to_string()));
        }
    }
    found
}

fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every SQL statement of davdrive is written in `src/store/`, behind a named
/// operation: nobody else reads or writes the tables by hand.
#[test]
fn sql_lives_in_the_store() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let store = src.join("store");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(files.len() > 20, "the walk found the sources: {files:?}");
    let mut outside = Vec::new();
    let mut inside = 0;
    for f in &files {
        let found = sql_in(&std::fs::read_to_string(f).unwrap());
        if f.starts_with(&store) {
            inside += found.len();
            continue;
        }
        for (n, line) in found {
            outside.push(format!("{}:{n}: {line}", f.display()));
        }
    }
    // The scan sees SQL where it is.
    assert!(inside > 100, "only {inside} statements found in src/store/");
    assert!(
        outside.is_empty(),
        "SQL outside src/store/ (give it a named operation there):\n{}",
        outside.join("\n")
    );
}

#[test]
fn the_sql_scan_sees_statements_and_ignores_other_strings() {
    let found = sql_in(concat!(
        "let n = c.execute(\"DELETE FROM journal WHERE id = ?1\", [id])?;\n",
        "let v: i64 = conn.query_row(q, [], |r| r.get(0))?;\n",
        "let st = format!(\"  SELECT {COLUMNS} FROM nodes\");\n",
        "tx.execute(\n",
        "    \"UPDATE nodes SET x = 1 \\\n",
        "let first = client.execute(req).await;\n",
        ".retrying(\"DELETE\", path, || async {\n",
        "tracing::info!(\"Selected {n} files\");\n",
    ));
    let lines: Vec<usize> = found.iter().map(|(n, _)| *n).collect();
    assert_eq!(lines, [1, 2, 3, 5], "{found:?}");
}

/// Nobody outside `src/store/` holds a connection of the store: every use is a closure
/// (`Store::write`, `Store::read`), and the writer without a transaction
/// (`Store::with_writer`) only where a comment right above says why a `write` will not do.
#[test]
fn the_writer_without_a_transaction_is_used_only_with_a_reason() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let store = src.join("store");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut uses = 0;
    let mut unexplained = Vec::new();
    for f in files.iter().filter(|f| !f.starts_with(&store)) {
        let text = std::fs::read_to_string(f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !(line.contains("store.with_writer(") || line.contains("db().with_writer(")) {
                continue;
            }
            uses += 1;
            let reason = lines[i.saturating_sub(4)..i]
                .iter()
                .any(|l| l.trim_start().starts_with("// Not a `write`"));
            if !reason {
                unexplained.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(uses > 0, "the scan sees the uses");
    assert!(
        unexplained.is_empty(),
        "with_writer without a \"// Not a `write`: ...\" comment above it:\n{}",
        unexplained.join("\n")
    );
}
