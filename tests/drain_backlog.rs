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
    d.core()
        .opendir(ROOT_INO)
        .map(|fh| d.core().releasedir(fh))
        .unwrap();
    d.server.proxy.set_fault(Fault::Refuse);
    d.core().health.mark_offline("test");
    // Ten folders of small files, as an unpacked archive makes.
    let mut dirs = Vec::new();
    for i in 0..10 {
        dirs.push(
            d.core()
                .mkdir(ROOT_INO, &format!("dir{i}"), 0o755, 0, 0)
                .unwrap()
                .ino,
        );
    }
    for i in 0..n {
        let (_, fh) = d
            .core()
            .create(dirs[i % dirs.len()], &format!("f{i}.txt"), 0o644, 0, 0)
            .unwrap();
        d.core()
            .write(fh, 0, format!("file {i}\n").as_bytes())
            .unwrap();
        d.core().release(fh).unwrap();
    }
    let (waiting, _, _) = d.core().db().write(|tx| journal::stats(tx)).unwrap();
    assert_eq!(waiting as usize, n + dirs.len());
    let back = Instant::now();
    d.server.proxy.clear_fault();
    common::wait_until(600, "the backlog to drain", || {
        d.core().db().write(|tx| journal::stats(tx)).unwrap().0 == 0
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
        .map(|i| {
            std::fs::read_dir(d.server.path(&format!("dir{i}")))
                .unwrap()
                .count()
        })
        .sum();
    assert_eq!(on_server, n);
}

#[test]
fn changes_behind_a_refused_entry_wait_while_an_unrelated_file_lands() {
    let d = Drive::new(CacheLimits::default());
    d.core()
        .opendir(ROOT_INO)
        .map(|fh| d.core().releasedir(fh))
        .unwrap();
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
        let (_, fh) = d
            .core()
            .create(stuck, &format!("{i}"), 0o644, 0, 0)
            .unwrap();
        d.core().write(fh, 0, b"held back").unwrap();
        d.core().release(fh).unwrap();
    }
    d.server.proxy.clear_fault();
    common::wait_until(30, "the mkcol to be set aside", || {
        d.core().db().write(|tx| journal::stats(tx)).unwrap().1 == 1
    });
    d.write_new("elsewhere.txt", b"unrelated").unwrap();
    common::wait_until(10, "the unrelated file to land", || {
        std::fs::read(d.server.path("elsewhere.txt"))
            .ok()
            .as_deref()
            == Some(&b"unrelated"[..])
    });
    // On the server a moment before its entry is marked done.
    common::wait_until(10, "the unrelated file's entry to end", || {
        d.core().db().write(|tx| journal::stats(tx)).unwrap().0 == 1000
    });
    let (failed, (waiting, _, _)) = d
        .core()
        .db()
        .write(|tx| Ok::<_, rusqlite::Error>((journal::list(tx, true)?, journal::stats(tx)?)))
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].path, "/stuck");
    assert!(
        failed[0].last_error.as_deref().unwrap().contains("403"),
        "{failed:?}"
    );
    assert_eq!(waiting, 1000, "the files inside wait for their folder");
    assert!(!d.server.path("stuck").exists());
}

fn resolve(d: &Drive, path: &str) -> u64 {
    path.split('/')
        .filter(|p| !p.is_empty())
        .fold(ROOT_INO, |ino, name| {
            d.core()
                .lookup(ino, name)
                .unwrap_or_else(|e| panic!("{path}: {e}"))
                .ino
        })
}

fn split(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some(("", name)) => ("/", name),
        Some((dir, name)) => (dir, name),
        None => ("/", path),
    }
}

/// The tree under `dir` on the server, as "path" or "path/" for folders.
fn server_tree(root: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            if e.file_type().is_dir() {
                format!("{rel}/")
            } else {
                rel
            }
        })
        .collect();
    out.sort();
    out
}

/// A burst of directory work made with the server down, that the first journal lost a
/// directory creation to (create + remove coalescing missed a name the directory had
/// through its parent's rename). After the replay the server holds the mount's tree.
#[test]
fn a_burst_of_directory_renames_made_offline_replays_exactly() {
    let d = Drive::new(CacheLimits::default());
    d.core()
        .opendir(ROOT_INO)
        .map(|fh| d.core().releasedir(fh))
        .unwrap();
    d.server.proxy.set_fault(Fault::Refuse);
    d.core().health.mark_offline("test");
    let script = "\
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
    for line in script.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[0] {
            "mkdir" => {
                for p in &words[1..] {
                    let (dir, name) = split(p);
                    let parent = resolve(&d, dir);
                    d.core().mkdir(parent, name, 0o755, 0, 0).unwrap();
                }
            }
            "mv" => {
                let ((sd, sn), (dd, dn)) = (split(words[1]), split(words[2]));
                let (sp, dp) = (resolve(&d, sd), resolve(&d, dd));
                d.core().rename(sp, sn, dp, dn, false).unwrap();
            }
            "rmdir" => {
                let (dir, name) = split(words[1]);
                let parent = resolve(&d, dir);
                d.core().rmdir(parent, name).unwrap();
            }
            other => panic!("{other}"),
        }
    }
    d.server.proxy.clear_fault();
    common::wait_until(30, "the journal to drain", || {
        d.core().db().write(|tx| journal::stats(tx)).unwrap() == (0, 0, None)
    });
    assert_eq!(
        server_tree(&d.server.root),
        [
            "d18/",
            "d18/dcb/",
            "d18/dcb/d39/",
            "d18/dcb/d39/d74/",
            "d18/dcb/d39/d74/d7b/",
            "d18/dcb/d8d/",
            "d18/dcb/d8d/d14c/",
            "d18/dcb/d8d/d14c/d51/",
            "d18/dcb/d8d/d14c/da2/",
            "d18/dcb/d8d/d14c/ddf/",
        ]
    );
}

/// Offline, a file in a folder is edited and another created; meanwhile another client
/// removes the folder on the server. Back online, the folder is created again with both
/// files, and a conflict says what happened.
#[test]
fn changes_inside_a_folder_removed_on_the_server_are_kept() {
    let d = Drive::new(CacheLimits::default());
    let offd = d.core().mkdir(ROOT_INO, "offd", 0o755, 0, 0).unwrap().ino;
    let (_, fh) = d.core().create(offd, "doc.txt", 0o644, 0, 0).unwrap();
    d.core().write(fh, 0, b"first version").unwrap();
    d.core().release(fh).unwrap();
    d.wait_drained();
    d.server.proxy.set_fault(Fault::Refuse);
    d.core().health.mark_offline("test");
    let doc = d.core().lookup(offd, "doc.txt").unwrap().ino;
    let (fh, _) = d.core().open(doc, true).unwrap();
    d.core().write(fh, 0, b"second version").unwrap();
    d.core().release(fh).unwrap();
    let (_, fh) = d.core().create(offd, "new.txt", 0o644, 0, 0).unwrap();
    d.core().write(fh, 0, b"new file").unwrap();
    d.core().release(fh).unwrap();
    std::fs::remove_dir_all(d.server.path("offd")).unwrap();
    d.server.proxy.clear_fault();
    common::wait_until(30, "the journal to drain", || {
        d.core().db().write(|tx| journal::stats(tx)).unwrap() == (0, 0, None)
    });
    assert_eq!(
        std::fs::read(d.server.path("offd/doc.txt")).unwrap(),
        b"second version"
    );
    assert_eq!(
        std::fs::read(d.server.path("offd/new.txt")).unwrap(),
        b"new file"
    );
    let reasons: Vec<String> = d
        .core()
        .db()
        .write(|c| {
            c.prepare("SELECT path || ': ' || reason FROM conflicts WHERE reason IS NOT NULL")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()
        })
        .unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("/offd: folder removed on the server")),
        "{reasons:?}"
    );
}

/// The same, but the other client put a file where the folder was: the file stays, our
/// folder goes beside it under a conflict name, on the server and in the mount.
#[test]
fn changes_inside_a_folder_replaced_by_a_file_go_beside_it() {
    let d = Drive::new(CacheLimits::default());
    let offd = d.core().mkdir(ROOT_INO, "offd", 0o755, 0, 0).unwrap().ino;
    let (_, fh) = d.core().create(offd, "doc.txt", 0o644, 0, 0).unwrap();
    d.core().write(fh, 0, b"first version").unwrap();
    d.core().release(fh).unwrap();
    d.wait_drained();
    d.server.proxy.set_fault(Fault::Refuse);
    d.core().health.mark_offline("test");
    let doc = d.core().lookup(offd, "doc.txt").unwrap().ino;
    let (fh, _) = d.core().open(doc, true).unwrap();
    d.core().write(fh, 0, b"second version").unwrap();
    d.core().release(fh).unwrap();
    let (_, fh) = d.core().create(offd, "new.txt", 0o644, 0, 0).unwrap();
    d.core().write(fh, 0, b"new file").unwrap();
    d.core().release(fh).unwrap();
    std::fs::remove_dir_all(d.server.path("offd")).unwrap();
    std::fs::write(d.server.path("offd"), b"their file").unwrap();
    d.server.proxy.clear_fault();
    common::wait_until(30, "the journal to drain", || {
        d.core().db().write(|tx| journal::stats(tx)).unwrap() == (0, 0, None)
    });
    assert_eq!(std::fs::read(d.server.path("offd")).unwrap(), b"their file");
    let aside = common::server_entry_starting(&d.server, "offd (conflict ")
        .expect("our folder beside their file");
    assert_eq!(
        std::fs::read(d.server.path(&format!("{aside}/doc.txt"))).unwrap(),
        b"second version"
    );
    assert_eq!(
        std::fs::read(d.server.path(&format!("{aside}/new.txt"))).unwrap(),
        b"new file"
    );
    // The mount shows our folder under its new name, with both files.
    let local = d.core().lookup(ROOT_INO, &aside).unwrap().ino;
    assert_eq!(local, offd);
    assert!(d.core().lookup(local, "new.txt").is_ok());
}
