//! POSIX behaviour through a real FUSE mount: parent folder times, access times, EFBIG,
//! link counts, an unlinked open file, `df` with the server's quota, and which extended
//! attributes are not supported.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

fn setup() -> (Server, tempfile::TempDir, Mount) {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    let m = Mount::start(&server.url(), base.path(), &[]);
    (server, base, m)
}

fn times(p: &Path) -> (SystemTime, SystemTime) {
    let md = fs::metadata(p).unwrap();
    let ctime = UNIX_EPOCH
        + Duration::from_secs(md.ctime() as u64)
        + Duration::from_nanos(md.ctime_nsec() as u64);
    (md.modified().unwrap(), ctime)
}

/// Sets atime and mtime of `p` (nanoseconds since the epoch) with `utimensat`.
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
        "utimensat: {}",
        std::io::Error::last_os_error()
    );
}

/// Runs `change` and checks that it moved the mtime and ctime of every folder in `dirs`.
fn moves_times_of(m: &Mount, dirs: &[&str], what: &str, change: impl FnOnce()) {
    let before: Vec<_> = dirs.iter().map(|d| times(&m.path(d))).collect();
    change();
    for (d, (mtime0, ctime0)) in dirs.iter().zip(before) {
        let (mtime1, ctime1) = times(&m.path(d));
        assert!(mtime1 > mtime0, "{what}: mtime of {d} did not move");
        assert!(ctime1 > ctime0, "{what}: ctime of {d} did not move");
        assert_eq!(mtime1, ctime1, "{what}: {d} mtime and ctime differ");
    }
}

#[test]
fn create_mkdir_unlink_rmdir_and_rename_move_parent_folder_times() {
    let (_s, _b, m) = setup();
    fs::create_dir(m.path("d1")).unwrap();
    fs::create_dir(m.path("d2")).unwrap();
    moves_times_of(&m, &["d1"], "create", || {
        fs::write(m.path("d1/f"), b"x").unwrap()
    });
    moves_times_of(&m, &["d1"], "mkdir", || {
        fs::create_dir(m.path("d1/sub")).unwrap()
    });
    moves_times_of(&m, &["d1", "d2"], "rename across folders", || {
        fs::rename(m.path("d1/f"), m.path("d2/f")).unwrap()
    });
    moves_times_of(&m, &["d2"], "rename within a folder", || {
        fs::rename(m.path("d2/f"), m.path("d2/g")).unwrap()
    });
    moves_times_of(&m, &["d2"], "unlink", || {
        fs::remove_file(m.path("d2/g")).unwrap()
    });
    moves_times_of(&m, &["d1"], "rmdir", || {
        fs::remove_dir(m.path("d1/sub")).unwrap()
    });
    moves_times_of(&m, &["", "d1"], "rename of a folder into another", || {
        fs::rename(m.path("d2"), m.path("d1/d2")).unwrap()
    });
    // The times are kept in the state store: they survive a remount.
    let kept = times(&m.path("d1"));
    let mut m = m;
    m.remount();
    assert_eq!(times(&m.path("d1")), kept);
}

#[test]
fn access_times_follow_relatime_and_are_kept() {
    let (server, _b, mut m) = setup();
    fs::write(server.path("a.txt"), b"hello").unwrap();
    let md = fs::metadata(m.path("a.txt")).unwrap();
    assert_eq!(
        md.accessed().unwrap(),
        md.modified().unwrap(),
        "never read yet"
    );

    let before_read = SystemTime::now() - Duration::from_millis(5);
    assert_eq!(fs::read(m.path("a.txt")).unwrap(), b"hello");
    let md = fs::metadata(m.path("a.txt")).unwrap();
    let first = md.accessed().unwrap();
    assert!(first >= before_read, "a read records the access time");
    assert!(first > md.modified().unwrap());

    // relatime: read again, nothing newer to record (accessed after the last change and
    // less than a day ago).
    assert_eq!(fs::read(m.path("a.txt")).unwrap(), b"hello");
    assert_eq!(
        fs::metadata(m.path("a.txt")).unwrap().accessed().unwrap(),
        first
    );

    // utimensat with distinct times keeps both, across a remount.
    utimens(&m.path("a.txt"), 1_000_000_000, 1_500_000_000);
    let md = fs::metadata(m.path("a.txt")).unwrap();
    assert_eq!(md.atime(), 1_000_000_000);
    assert_eq!(md.mtime(), 1_500_000_000);
    m.remount();
    let md = fs::metadata(m.path("a.txt")).unwrap();
    assert_eq!((md.atime(), md.mtime()), (1_000_000_000, 1_500_000_000));

    // An access time older than the modification: the next read records one again.
    let mut f = fs::File::open(m.path("a.txt")).unwrap();
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).unwrap();
    let md = f.metadata().unwrap();
    assert!(
        md.atime() > 1_500_000_000,
        "read after an older atime records it"
    );
}

/// The largest file the file system holding `dir` allows, found as davdrive finds it.
fn largest_file_in(dir: &Path) -> u64 {
    let f = tempfile::tempfile_in(dir).unwrap();
    let fits = |len: u64| f.set_len(len).is_ok();
    assert!(
        !fits(i64::MAX as u64),
        "the cache's file system has no size limit below 2^63: EFBIG cannot happen there"
    );
    let (mut lo, mut hi) = (0u64, i64::MAX as u64);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid
        } else {
            hi = mid
        }
    }
    lo
}

#[test]
fn truncate_and_write_past_the_largest_file_give_efbig() {
    let (server, _b, m) = setup();
    let max = largest_file_in(&m.cache);
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(m.path("big"))
        .unwrap();
    f.write_all_at(b"start", 0).unwrap();
    let e = f.set_len(max + 1).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EFBIG), "truncate: {e}");
    let e = f.write_at(b"x", max).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EFBIG), "write: {e}");
    // Nothing changed: the file is what was written, and it lands as such.
    assert_eq!(f.metadata().unwrap().len(), 5);
    drop(f);
    wait_server_has(&server, "big", b"start");
}

#[test]
fn folder_link_counts_count_subfolders() {
    let (server, _b, m) = setup();
    fs::create_dir(m.path("d")).unwrap();
    assert_eq!(fs::metadata(m.path("d")).unwrap().nlink(), 2);
    fs::create_dir(m.path("d/a")).unwrap();
    fs::create_dir(m.path("d/b")).unwrap();
    fs::write(m.path("d/f"), b"file").unwrap();
    assert_eq!(fs::metadata(m.path("d")).unwrap().nlink(), 4);
    fs::remove_dir(m.path("d/a")).unwrap();
    assert_eq!(fs::metadata(m.path("d")).unwrap().nlink(), 3);
    assert_eq!(fs::metadata(m.path("d/f")).unwrap().nlink(), 1);
    // Folders that came from the server count too.
    fs::create_dir_all(server.path("s/x")).unwrap();
    fs::create_dir_all(server.path("s/y")).unwrap();
    fs::create_dir_all(server.path("s/z")).unwrap();
    wait_until(10, "the server's folders listed", || {
        fs::read_dir(m.path("s")).map(|d| d.count()).unwrap_or(0) == 3
    });
    assert_eq!(fs::metadata(m.path("s")).unwrap().nlink(), 5);
}

#[test]
fn an_unlinked_open_file_has_no_links() {
    let (_s, _b, m) = setup();
    fs::write(m.path("gone"), b"still here").unwrap();
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("gone"))
        .unwrap();
    assert_eq!(f.metadata().unwrap().nlink(), 1);
    fs::remove_file(m.path("gone")).unwrap();
    assert_eq!(f.metadata().unwrap().nlink(), 0);
    let mut data = String::new();
    f.read_to_string(&mut data).unwrap();
    assert_eq!(data, "still here");
    f.write_all(b"!").unwrap();
    assert_eq!(f.metadata().unwrap().nlink(), 0);
    assert!(!m.path("gone").exists());
}

/// `df` on the mount shows the server's RFC 4331 quota: here the built-in server serves
/// a 64 MiB tmpfs, so the mount's size is that, not the cache disk's.
#[test]
fn df_shows_the_servers_quota() {
    // The quota of an outside server is its own: the built-in one is measured here.
    let server = Server::start_builtin();
    let root = server.root.clone();
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "davdrive-quota-test"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount tmpfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _u = Unmount(root.clone());
    fs::write(root.join("ten-mib"), vec![7u8; 10 << 20]).unwrap();
    let base = tempfile::tempdir().unwrap();
    let m = Mount::start(&server.url(), base.path(), &[]);
    let statvfs = |p: &Path| {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        (st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize)
    };
    let mib = 1u64 << 20;
    wait_until(10, "df shows the server's quota", || {
        let (size, avail) = statvfs(&m.mnt);
        size == 64 * mib && (53 * mib..=54 * mib).contains(&avail)
    });
    let (cache_size, _) = statvfs(&m.cache);
    assert_ne!(cache_size, 64 * mib);
    // Refreshed with the health probe: space taken on the server shows.
    fs::write(root.join("twenty-mib"), vec![7u8; 20 << 20]).unwrap();
    wait_until(10, "df follows the server", || {
        let (_, avail) = statvfs(&m.mnt);
        (33 * mib..=34 * mib).contains(&avail)
    });
}

/// Without a quota from the server, `df` shows the cache disk, where writes land first.
#[test]
fn df_without_a_quota_shows_the_cache_disk() {
    let server = Server::start_without_props();
    let base = tempfile::tempdir().unwrap();
    let m = Mount::start(&server.url(), base.path(), &[]);
    let size = |p: &Path| {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        st.f_blocks * st.f_frsize
    };
    // A health probe has run since the mount started (each one asks for the quota).
    wait_until(10, "a health check", || {
        !ctl_json(&m, &["status"])["last_check"].is_null()
    });
    assert_eq!(size(&m.mnt), size(&m.cache));
}

/// What WebDAV cannot store is refused with the errno the README gives.
#[test]
fn hard_links_and_special_files_are_refused() {
    let (_s, _b, m) = setup();
    fs::write(m.path("f"), b"x").unwrap();
    let e = fs::hard_link(m.path("f"), m.path("g")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "link: {e}");
    for (what, mode) in [
        ("fifo", libc::S_IFIFO),
        ("socket", libc::S_IFSOCK),
        ("char device", libc::S_IFCHR),
        ("block device", libc::S_IFBLK),
    ] {
        let p = std::ffi::CString::new(m.path(what).as_os_str().as_encoded_bytes()).unwrap();
        let r = unsafe { libc::mknod(p.as_ptr(), mode | 0o644, 0) };
        assert_eq!(r, -1, "{what} was made");
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EPERM),
            "{what}"
        );
    }
}

/// `getxattr` of `name` on `p`: the errno, or 0 when it has a value.
fn getxattr_errno(p: &Path, name: &str) -> i32 {
    let path = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    let r = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    if r < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    } else {
        0
    }
}

/// SELinux labels and ACLs are not supported: `ENOTSUP`, which `ls -l` remembers for the
/// whole mount (with `ENODATA` it asked for both of every file it listed, two requests
/// each). `user.` names keep `ENODATA`, and the state attribute still answers.
#[test]
fn only_user_extended_attributes_are_supported() {
    let (_s, _b, m) = setup();
    fs::write(m.path("f"), b"x").unwrap();
    fs::create_dir(m.path("d")).unwrap();
    for p in [m.path("f"), m.path("d")] {
        for name in [
            "security.selinux",
            "security.capability",
            "system.posix_acl_access",
            "system.posix_acl_default",
        ] {
            assert_eq!(getxattr_errno(&p, name), libc::ENOTSUP, "{name} of {p:?}");
        }
        assert_eq!(getxattr_errno(&p, "user.other"), libc::ENODATA, "{p:?}");
    }
    assert_eq!(getxattr_errno(&m.path("f"), "user.davdrive.state"), 0);
}
