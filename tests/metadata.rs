//! Mode, owner and times travel with the file as WebDAV dead properties: a fresh cache
//! (or another machine) sees them. Where the server keeps none, the old behaviour stays.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;

fn utimens(p: &Path, atime_s: i64, mtime_s: i64) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: atime_s,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: mtime_s,
            tv_nsec: 0,
        },
    ];
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) },
        0,
        "utimensat {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

fn drained(m: &Mount) {
    let (ok, out, err) = ctl(m, &["sync", "--wait", "--timeout", "60s"]);
    assert!(ok, "sync --wait: {out} {err}");
    let st = ctl_json(m, &["status"]);
    assert_eq!(st["journal"]["waiting"], 0, "{st}");
    assert_eq!(st["journal"]["failed"], 0, "{st}");
}

/// Unmounts, wipes the cache folder, and mounts again: only the server remains.
fn fresh_cache(m: &mut Mount) {
    m.unmount();
    fs::remove_dir_all(&m.cache).unwrap();
    m.spawn();
}

/// Makes a file and a folder with mode, owner and times of their own.
fn make_tree(m: &Mount) {
    fs::write(m.path("f.txt"), b"content").unwrap();
    fs::create_dir(m.path("d")).unwrap();
    fs::write(m.path("d/inner"), b"inner").unwrap();
    fs::set_permissions(m.path("f.txt"), fs::Permissions::from_mode(0o751)).unwrap();
    std::os::unix::fs::chown(m.path("f.txt"), Some(123), Some(456)).unwrap();
    utimens(&m.path("f.txt"), 1_000_000_000, 1_200_000_000);
    fs::set_permissions(m.path("d"), fs::Permissions::from_mode(0o700)).unwrap();
    utimens(&m.path("d/inner"), 1_100_000_000, 1_100_000_000);
    utimens(&m.path("d"), 1_300_000_000, 1_300_000_000);
}

#[test]
fn mode_owner_and_times_survive_a_wiped_cache() {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    let mut m = Mount::start(&server.url(), base.path(), &[]);
    make_tree(&m);
    drained(&m);
    fresh_cache(&mut m);

    let f = fs::metadata(m.path("f.txt")).unwrap();
    assert_eq!(f.mode() & 0o7777, 0o751);
    assert_eq!((f.uid(), f.gid()), (123, 456));
    assert_eq!((f.atime(), f.mtime()), (1_000_000_000, 1_200_000_000));
    let d = fs::metadata(m.path("d")).unwrap();
    assert_eq!(d.mode() & 0o7777, 0o700);
    assert_eq!(d.mtime(), 1_300_000_000);
    assert_eq!(
        fs::metadata(m.path("d/inner")).unwrap().mtime(),
        1_100_000_000
    );
    assert_eq!(fs::read(m.path("f.txt")).unwrap(), b"content");

    // A change of metadata alone travels too (a journal entry of its own).
    fs::set_permissions(m.path("f.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    drained(&m);
    fresh_cache(&mut m);
    assert_eq!(
        fs::metadata(m.path("f.txt")).unwrap().mode() & 0o7777,
        0o640
    );
    let (ok, out, _) = ctl(&m, &["health"]);
    assert!(ok);
    assert!(
        out.contains("mode, owner and times kept on the server"),
        "{out}"
    );
}

/// A file replaced on the server by a client that writes no properties: its stale
/// properties are not taken for the new version's.
#[test]
fn properties_of_an_older_version_are_ignored() {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    let mut m = Mount::start(&server.url(), base.path(), &[]);
    fs::write(m.path("f"), b"ours").unwrap();
    utimens(&m.path("f"), 1_000_000_000, 1_000_000_000);
    drained(&m);
    m.unmount();
    server.put_as_another_client("f", b"theirs, longer");
    fs::remove_dir_all(&m.cache).unwrap();
    m.spawn();
    let md = fs::metadata(m.path("f")).unwrap();
    assert_ne!(md.mtime(), 1_000_000_000);
    assert_eq!(fs::read(m.path("f")).unwrap(), b"theirs, longer");
}

/// `rsync -a` into the mount, then again from a second mount with a fresh cache: the
/// second run finds every file up to date and sends nothing.
#[test]
fn rsync_from_a_fresh_cache_sends_nothing_the_second_time() {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("src");
    fs::create_dir_all(src.join("sub/deeper")).unwrap();
    for (i, rel) in ["a.txt", "sub/b.bin", "sub/deeper/c", "x y.txt"]
        .iter()
        .enumerate()
    {
        fs::write(src.join(rel), pattern(1000 + i * 777, i as u64)).unwrap();
        fs::set_permissions(
            src.join(rel),
            fs::Permissions::from_mode([0o644, 0o600, 0o755, 0o640][i]),
        )
        .unwrap();
    }
    let mut m = Mount::start(&server.url(), base.path(), &[]);
    let rsync = |m: &Mount| {
        let out = std::process::Command::new("rsync")
            .args(["-a", "--itemize-changes"])
            .arg(format!("{}/", src.display()))
            .arg(m.path("dst"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rsync: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = rsync(&m);
    assert!(first.contains(">f+++++++++ a.txt"), "{first}");
    drained(&m);
    fresh_cache(&mut m);
    let second = rsync(&m);
    assert_eq!(second, "", "the second rsync changed something");
    // And the content is the source's.
    assert_eq!(
        fs::read(m.path("dst/sub/deeper/c")).unwrap(),
        fs::read(src.join("sub/deeper/c")).unwrap()
    );
}

/// A server without dead properties (nginx): everything works as before, metadata stays
/// on this machine, `ctl health` says so, and nothing is set aside.
#[test]
fn a_server_without_dead_properties_keeps_the_old_behaviour() {
    let server = Server::start_without_props();
    let base = tempfile::tempdir().unwrap();
    let mut m = Mount::start(&server.url(), base.path(), &[]);
    make_tree(&m);
    drained(&m);
    // Kept here while the cache lives.
    assert_eq!(
        fs::metadata(m.path("f.txt")).unwrap().mode() & 0o7777,
        0o751
    );
    let (ok, out, _) = ctl(&m, &["health"]);
    assert!(ok);
    assert!(out.contains("keeps no dead properties"), "{out}");
    assert_eq!(
        m.log_text().matches("keeps no dead properties").count(),
        1,
        "said once"
    );
    // A fresh cache sees the defaults, and the content.
    fresh_cache(&mut m);
    let f = fs::metadata(m.path("f.txt")).unwrap();
    assert_eq!(f.mode() & 0o7777, 0o644);
    assert_eq!(fs::read(m.path("f.txt")).unwrap(), b"content");
    assert_eq!(fs::read(m.path("d/inner")).unwrap(), b"inner");
    // Once found out, changes send nothing for the server's properties.
    fs::set_permissions(m.path("f.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    drained(&m);
    let asked = server.proxy.count("PROPPATCH");
    fs::set_permissions(m.path("f.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(m.path("f.txt"), b"changed").unwrap();
    drained(&m);
    assert_eq!(server.proxy.count("PROPPATCH"), asked);
    wait_server_has(&server, "f.txt", b"changed");
}

/// A symbolic link is kept as a small file holding its target, marked by a property: it
/// survives a wiped cache, and davdrive never follows it (a link out of the mount is
/// only text on the server).
#[test]
fn symbolic_links_survive_a_wiped_cache() {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    let mut m = Mount::start(&server.url(), base.path(), &[]);
    fs::create_dir(m.path("dir")).unwrap();
    fs::write(m.path("dir/real.txt"), b"real").unwrap();
    std::os::unix::fs::symlink("real.txt", m.path("dir/rel")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", m.path("out")).unwrap();
    std::os::unix::fs::symlink("../missing/ünïcode target", m.path("dir/dangling")).unwrap();
    assert_eq!(
        fs::read(m.path("dir/rel")).unwrap(),
        b"real",
        "the kernel follows it"
    );
    let md = fs::symlink_metadata(m.path("out")).unwrap();
    assert!(md.file_type().is_symlink());
    assert_eq!(md.len(), "/etc/passwd".len() as u64);
    drained(&m);
    // On the server: the target as text, nothing followed or copied.
    assert_eq!(fs::read(server.path("out")).unwrap(), b"/etc/passwd");

    fresh_cache(&mut m);
    assert!(fs::symlink_metadata(m.path("out"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read_link(m.path("out")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        fs::read_link(m.path("dir/rel")).unwrap(),
        Path::new("real.txt")
    );
    assert_eq!(
        fs::read_link(m.path("dir/dangling")).unwrap(),
        Path::new("../missing/ünïcode target")
    );
    assert_eq!(fs::read(m.path("dir/rel")).unwrap(), b"real");
    // Renamed and removed like any entry.
    fs::rename(m.path("dir/rel"), m.path("rel2")).unwrap();
    fs::remove_file(m.path("dir/dangling")).unwrap();
    drained(&m);
    fresh_cache(&mut m);
    assert_eq!(
        fs::read_link(m.path("rel2")).unwrap(),
        Path::new("real.txt")
    );
    assert!(fs::symlink_metadata(m.path("dir/dangling")).is_err());
}

/// Without dead properties a link could not be told from a file: refused, as before.
#[test]
fn symbolic_links_are_refused_where_the_server_keeps_no_properties() {
    let server = Server::start_without_props();
    let base = tempfile::tempdir().unwrap();
    let m = Mount::start(&server.url(), base.path(), &[]);
    let e = std::os::unix::fs::symlink("x", m.path("link")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    assert!(fs::symlink_metadata(m.path("link")).is_err());
}
