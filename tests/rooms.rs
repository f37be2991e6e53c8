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

    // The writer is held, as a long FUSE operation or replay step holds it.
    let writer = core.store();

    // What `ctl status`, `metrics`, `cache` and `ls` read, from another thread.
    let (tx, rx) = mpsc::sync_channel(1);
    let reader = core.clone();
    std::thread::spawn(move || {
        let gauges = davdrive::control::status::gauges(&reader).map_err(|e| e.0);
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
        let _ = tx.send(journal::stats(&blocked.store()).map(|s| s.0));
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "a read on the writer answered while the writer was held"
    );
    drop(writer);
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
