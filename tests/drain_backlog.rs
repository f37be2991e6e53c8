//! A backlog of small changes made while the server is down drains once it is back, and
//! one refused change holds back nothing unrelated. Against a real WebDAV server,
//! through the core. `DAVDRIVE_BACKLOG=10000` runs the backlog at the size the README's
//! figure was measured at (default 1,000, to keep the suite quick); it prints how long
//! the drain took.

mod common;

use std::time::Instant;

use davdrive::cache::CacheLimits;
use davdrive::journal;
use davdrive::store::ROOT_INO;

use common::drive::Drive;
use common::{Canned, Fault};

fn backlog_size() -> usize {
    std::env::var("DAVDRIVE_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

#[test]
fn a_backlog_of_small_changes_drains_when_the_server_returns() {
    let n = backlog_size();
    let d = Drive::new(CacheLimits::default());
    d.core().opendir(ROOT_INO).map(|fh| d.core().releasedir(fh)).unwrap();
    d.server.proxy.set_fault(Fault::Refuse);
    d.core().health.mark_offline("test");
    // Ten folders of small files, as an unpacked archive makes.
    let mut dirs = Vec::new();
    for i in 0..10 {
        dirs.push(d.core().mkdir(ROOT_INO, &format!("dir{i}"), 0o755, 0, 0).unwrap().ino);
    }
    for i in 0..n {
        let (_, fh) = d
            .core()
            .create(dirs[i % dirs.len()], &format!("f{i}.txt"), 0o644, 0, 0)
            .unwrap();
        d.core().write(fh, 0, format!("file {i}\n").as_bytes()).unwrap();
        d.core().release(fh).unwrap();
    }
    let (waiting, _, _) = journal::stats(&d.core().store()).unwrap();
    assert_eq!(waiting as usize, n + dirs.len());
    let back = Instant::now();
    d.server.proxy.clear_fault();
    common::wait_until(600, "the backlog to drain", || {
        journal::stats(&d.core().store()).unwrap() .0 == 0
    });
    println!(
        "{} queued changes drained in {:.2} s after the server came back",
        n + dirs.len(),
        back.elapsed().as_secs_f64()
    );
    for i in (0..n).step_by((n / 50).max(1)) {
        assert_eq!(
            std::fs::read(d.server.path(&format!("dir{}/f{i}.txt", i % 10))).unwrap(),
            format!("file {i}\n").as_bytes()
        );
    }
    let on_server: usize = (0..10)
        .map(|i| std::fs::read_dir(d.server.path(&format!("dir{i}"))).unwrap().count())
        .sum();
    assert_eq!(on_server, n);
}

#[test]
fn changes_behind_a_refused_entry_wait_while_an_unrelated_file_lands() {
    let d = Drive::new(CacheLimits::default());
    d.core().opendir(ROOT_INO).map(|fh| d.core().releasedir(fh)).unwrap();
    // The server refuses to create this one folder, for good.
    d.server.proxy.state.lock().unwrap().canned.push(Canned {
        method: "MKCOL".into(),
        path_contains: "stuck".into(),
        status: 403,
        body: "not here".into(),
    });
    d.server.proxy.set_fault(Fault::Refuse);
    d.core().health.mark_offline("test");
    let stuck = d.core().mkdir(ROOT_INO, "stuck", 0o755, 0, 0).unwrap().ino;
    for i in 0..1000 {
        let (_, fh) = d.core().create(stuck, &format!("{i}"), 0o644, 0, 0).unwrap();
        d.core().write(fh, 0, b"held back").unwrap();
        d.core().release(fh).unwrap();
    }
    d.server.proxy.clear_fault();
    common::wait_until(30, "the mkcol to be set aside", || {
        journal::stats(&d.core().store()).unwrap().1 == 1
    });
    d.write_new("elsewhere.txt", b"unrelated").unwrap();
    common::wait_until(10, "the unrelated file to land", || {
        std::fs::read(d.server.path("elsewhere.txt")).ok().as_deref() == Some(&b"unrelated"[..])
    });
    let conn = d.core().store();
    let failed = journal::list(&conn, true).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].path, "/stuck");
    assert!(failed[0].last_error.as_deref().unwrap().contains("403"), "{failed:?}");
    let (waiting, _, _) = journal::stats(&conn).unwrap();
    assert_eq!(waiting, 1000, "the files inside wait for their folder");
    assert!(!d.server.path("stuck").exists());
}
