//! The disk cache, driven through the core (no kernel) against a real WebDAV server:
//! age expiry with a clock moved forward, LRU order under a size cap, pinned and dirty
//! content never evicted, ENOSPC on a cache disk full of unsent changes and recovery,
//! damaged content never served, a cold read resumed after an outage, random reads that
//! fetch small ranges, and concurrent readers sharing one download.

mod common;

use std::path::Path;
use std::time::Duration;

use davdrive::cache::sweeper;
use davdrive::cache::CacheLimits;
use davdrive::fs::Evicted;
use davdrive::store::ROOT_INO;

use common::drive::Drive;
use common::{Fault, Server};

const DAY: Duration = Duration::from_secs(86400);
const MIB: usize = 1 << 20;

/// Default limits, but no free space to keep: the test disk's own usage must not
/// trigger evictions.
fn no_min_free() -> CacheLimits {
    CacheLimits {
        min_free: 0,
        ..CacheLimits::default()
    }
}

fn put_on_server(server: &Server, name: &str, data: &[u8]) {
    std::fs::write(server.path(name), data).unwrap();
}

#[test]
fn content_unused_for_the_max_age_is_swept_and_fetched_again() {
    let d = Drive::new(no_min_free());
    let data = common::pattern(300_000, 1);
    put_on_server(&d.server, "old.bin", &data);
    put_on_server(&d.server, "recent.bin", &common::pattern(1000, 2));
    assert_eq!(d.read("old.bin"), data);
    d.clock.advance(6 * DAY);
    d.read("recent.bin");
    // Six days: nothing is old enough yet.
    assert_eq!(sweeper::sweep(d.core()).unwrap().expired, 0);
    d.clock.advance(DAY + Duration::from_secs(3600));
    let report = sweeper::sweep(d.core()).unwrap();
    assert_eq!(report.expired, 1, "{report:?}");
    assert_eq!(d.cached_bytes("old.bin"), 0);
    assert!(!d.content_path("old.bin").exists());
    assert_eq!(d.cached_bytes("recent.bin"), 1000);
    // Still listed, and read again from the server.
    let gets = d.server.proxy.count("GET");
    assert_eq!(d.read("old.bin"), data);
    assert!(d.server.proxy.count("GET") > gets);
}

#[test]
fn over_the_size_cap_least_recently_used_goes_first() {
    let d = Drive::new(CacheLimits {
        max_size: Some(3 * 100_000 + 50_000),
        min_free: 0,
        ..CacheLimits::default()
    });
    for name in ["a", "b", "c", "d"] {
        put_on_server(
            &d.server,
            name,
            &common::pattern(100_000, name.len() as u64),
        );
    }
    for name in ["b", "a", "d", "c"] {
        d.read(name);
        d.clock.advance(Duration::from_secs(120));
    }
    // Used again: now the most recent.
    d.read("b");
    let report = sweeper::sweep(d.core()).unwrap();
    assert_eq!(report.evicted, 1, "{report:?}");
    assert_eq!(d.cached_bytes("a"), 0, "a was the least recently used");
    for name in ["b", "c", "d"] {
        assert_eq!(d.cached_bytes(name), 100_000, "{name} must stay");
    }
}

#[test]
fn pinned_and_dirty_content_is_never_evicted_and_pins_survive_a_restart() {
    let mut d = Drive::new(CacheLimits {
        max_size: Some(0),
        min_free: 0,
        ..CacheLimits::default()
    });
    std::fs::create_dir(d.server.path("album")).unwrap();
    for i in 0..3 {
        put_on_server(
            &d.server,
            &format!("album/{i}.jpg"),
            &common::pattern(50_000, i),
        );
    }
    put_on_server(&d.server, "plain.txt", &common::pattern(10_000, 9));
    d.read("plain.txt");
    let album = d.ino("album");
    d.core().set_pinned(album, true).unwrap();
    // Pinning fetches the whole subtree.
    assert_eq!(d.core().fetch_pinned().unwrap(), 3);
    // A change not yet uploaded: the remote is down.
    d.server.proxy.set_fault(Fault::Refuse);
    d.core().health.mark_offline("test");
    d.write_new("draft.txt", b"unsent words").unwrap();
    d.clock.advance(30 * DAY);
    let report = sweeper::sweep(d.core()).unwrap();
    assert_eq!(report.expired, 1, "only the plain file goes: {report:?}");
    assert_eq!(d.cached_bytes("plain.txt"), 0);
    assert_eq!(d.cached_bytes("draft.txt"), 12);
    assert_eq!(
        d.core().evict(d.ino("draft.txt")).unwrap(),
        Evicted::Dirty,
        "evicting unsent content must be refused"
    );
    let photo = d.core().lookup(album, "1.jpg").unwrap().ino;
    assert_eq!(d.core().evict(photo).unwrap(), Evicted::Pinned);
    // The pin is stored: it holds after a restart, offline, with the content readable.
    d.stop();
    d.start();
    assert!(d.core().is_pinned(photo).unwrap());
    d.core().health.mark_offline("test");
    let (fh, _) = d.core().open(photo, false).unwrap();
    assert_eq!(
        d.core().read(fh, 0, 50_000).unwrap(),
        common::pattern(50_000, 1)
    );
    d.core().release(fh).unwrap();
    assert_eq!(sweeper::sweep(d.core()).unwrap().expired, 0);
    // Unpinned, it is ordinary clean content again.
    d.core().set_pinned(album, false).unwrap();
    assert!(matches!(
        d.core().evict(photo).unwrap(),
        Evicted::Freed(50_000)
    ));
}

/// A cache on a tiny filesystem of its own.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn new(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "mounting a tmpfs for the cache failed (tests run as root)"
        );
        Tmpfs(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn a_cache_disk_full_of_unsent_changes_fails_writes_with_enospc_then_recovers() {
    let fs = Tmpfs::new("6m");
    let state = tempfile::tempdir_in(fs.path()).unwrap();
    let mut d = Drive::with_state(no_min_free(), state);
    // Listed once while online, as a mount does first.
    let fh = d.core().opendir(ROOT_INO).unwrap();
    d.core().releasedir(fh);
    d.server.proxy.set_fault(Fault::Refuse);
    d.core().health.mark_offline("test");
    let mut written = Vec::new();
    let mut enospc = false;
    for i in 0..10 {
        let data = common::pattern(MIB, 100 + i);
        match d.write_new(&format!("f{i}"), &data) {
            Ok(()) => written.push((format!("f{i}"), data)),
            Err(errno) => {
                assert_eq!(
                    errno,
                    libc::ENOSPC,
                    "a full cache disk must say ENOSPC (file {i})"
                );
                enospc = true;
                break;
            }
        }
    }
    assert!(enospc, "6 MiB cannot hold 10 MiB of unsent files");
    assert!(written.len() >= 2);
    // What was written before is intact.
    for (name, data) in &written {
        assert_eq!(&d.read(name), data, "{name} damaged by the full disk");
    }
    // The remote comes back: uploads make the content clean, hence evictable.
    d.server.proxy.clear_fault();
    d.wait_drained();
    for (name, data) in &written {
        assert_eq!(&std::fs::read(d.server.path(name)).unwrap(), data);
    }
    let big = common::pattern(3 * MIB, 7);
    d.write_new("after.bin", &big)
        .expect("writes succeed again once uploads made room");
    d.wait_drained();
    assert_eq!(std::fs::read(d.server.path("after.bin")).unwrap(), big);
    d.stop();
}

#[test]
fn damaged_or_truncated_content_is_never_served() {
    let mut d = Drive::new(no_min_free());
    let data = common::pattern(2 * MIB + 123, 5);
    put_on_server(&d.server, "doc.bin", &data);
    put_on_server(&d.server, "short.bin", &data);
    assert_eq!(d.read("doc.bin"), data);
    assert_eq!(d.read("short.bin"), data);
    d.wait_hashed("doc.bin");
    d.wait_hashed("short.bin");
    let damaged = d.content_path("doc.bin");
    let truncated = d.content_path("short.bin");
    d.stop();
    // Flip bytes in the middle (same length), and cut the other file short.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&damaged)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"XXXXXXXX", MIB as u64).unwrap();
    drop(f);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap();
    f.set_len(1000).unwrap();
    drop(f);
    d.start();
    assert_eq!(d.read("doc.bin"), data, "damaged cached content was served");
    assert_eq!(
        d.read("short.bin"),
        data,
        "truncated cached content was served"
    );
}

#[test]
fn an_interrupted_cold_read_resumes_from_what_is_cached() {
    let d = Drive::new(no_min_free());
    let size = 64 * MIB;
    let data = common::pattern(size, 11);
    put_on_server(&d.server, "movie.bin", &data);
    let ino = d.ino("movie.bin");
    let (fh, _) = d.core().open(ino, false).unwrap();
    let mut got = Vec::new();
    while got.len() < MIB {
        got.extend(d.core().read(fh, got.len() as u64, 128 << 10).unwrap());
    }
    // The network goes away mid-read.
    d.server.proxy.set_fault(Fault::Refuse);
    d.core().health.mark_offline("test");
    let mut failed = false;
    while got.len() < size {
        match d.core().read(fh, got.len() as u64, 128 << 10) {
            Ok(chunk) => got.extend(chunk),
            Err(e) => {
                assert_eq!(e.errno(), libc::EIO);
                failed = true;
                break;
            }
        }
    }
    assert!(
        failed,
        "read-ahead cannot have fetched all of it before the outage"
    );
    assert_eq!(&got[..], &data[..got.len()]);
    d.core().release(fh).unwrap();
    // Downloads under way when the network went keep what they got: each holds the
    // file open, and the last of them to end records the range map.
    common::wait_until(30, "the downloads under way to end", || {
        !d.core().is_open(ino)
    });
    let cached = d.cached_bytes("movie.bin") as usize;
    assert!(
        cached >= got.len(),
        "{cached} bytes cached after reading {}",
        got.len()
    );
    let before = d.server.proxy.reply_bytes("GET");
    d.server.proxy.clear_fault();
    common::wait_until(10, "back online", || d.core().health.is_online());
    assert_eq!(d.read("movie.bin"), data);
    let refetched = d.server.proxy.reply_bytes("GET") - before;
    assert!(
        refetched <= size - cached,
        "fetched {refetched} bytes to complete a file of which {cached} were cached"
    );
}

#[test]
fn random_reads_of_a_cold_file_fetch_little_more_than_they_read() {
    let d = Drive::new(no_min_free());
    let size = 64 * MIB;
    let data = common::pattern(size, 13);
    put_on_server(&d.server, "disk.img", &data);
    let ino = d.ino("disk.img");
    let (fh, _) = d.core().open(ino, false).unwrap();
    // 4 KiB reads at scattered 4 KiB-aligned offsets, as a database or a VM image has.
    let mut x: u64 = 0x9e37_79b9;
    let reads = 100;
    for _ in 0..reads {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let offset = (x >> 33) % (size as u64 / 4096) * 4096;
        let got = d.core().read(fh, offset, 4096).unwrap();
        assert_eq!(got, &data[offset as usize..offset as usize + 4096]);
    }
    d.core().release(fh).unwrap();
    d.server.proxy.wait_idle(Duration::from_secs(10));
    // A megabyte per read would be about 50 MiB here; a small range each is about 6.
    let fetched = d.server.proxy.reply_bytes("GET");
    assert!(
        fetched <= reads * (64 << 10) + 2 * MIB,
        "{reads} random 4 KiB reads fetched {fetched} bytes"
    );
}

#[test]
fn concurrent_readers_of_one_range_share_one_download() {
    let d = Drive::new(no_min_free());
    let size = 16 * MIB;
    let data = common::pattern(size, 12);
    put_on_server(&d.server, "shared.bin", &data);
    let ino = d.ino("shared.bin");
    // A slow server, so the readers overlap.
    d.server
        .proxy
        .set_fault(Fault::Delay(Duration::from_millis(100)));
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let (fh, _) = d.core().open(ino, false).unwrap();
                    let got = d.core().read(fh, 0, 4 * MIB as u32).unwrap();
                    d.core().release(fh).unwrap();
                    got
                })
            })
            .collect();
        for r in readers {
            assert_eq!(r.join().unwrap(), &data[..4 * MIB]);
        }
    });
    d.server.proxy.clear_fault();
    assert!(
        d.server.proxy.reply_bytes("GET") <= 5 * MIB,
        "four readers of the same 4 MiB downloaded {} bytes",
        d.server.proxy.reply_bytes("GET")
    );
}

#[test]
fn an_open_after_the_attr_ttl_finds_a_newer_version() {
    let d = Drive::new(no_min_free());
    put_on_server(&d.server, "page.html", b"version one");
    let ino = d.ino("page.html");
    assert_eq!(d.read("page.html"), b"version one");
    std::thread::sleep(Duration::from_millis(30));
    put_on_server(&d.server, "page.html", b"version two");
    std::thread::sleep(Duration::from_millis(250));
    // Opened by inode, as the kernel does while it trusts its entry: no lookup. The
    // open refreshes the folder's listing (one request for all its files), never a
    // PROPFIND of the file itself.
    let count = |href: &str| d.server.proxy.count_at("PROPFIND", href);
    let (file_props, dir_props) = (
        count(&d.server.href("/page.html")),
        count(&d.server.href("/")),
    );
    let (fh, keep_cache) = d.core().open(ino, false).unwrap();
    assert!(
        !keep_cache,
        "the kernel must drop its pages of the old version"
    );
    assert_eq!(d.core().read(fh, 0, 100).unwrap(), b"version two");
    d.core().release(fh).unwrap();
    assert_eq!(count(&d.server.href("/page.html")), file_props);
    // The folder's listing (the health probe asks for "/" too, now and then).
    assert!(count(&d.server.href("/")) > dir_props);
    // Unchanged since: the next open keeps the kernel's pages and downloads nothing.
    let gets = d.server.proxy.count("GET");
    let (fh, keep_cache) = d.core().open(ino, false).unwrap();
    assert!(keep_cache);
    assert_eq!(d.core().read(fh, 0, 100).unwrap(), b"version two");
    d.core().release(fh).unwrap();
    assert_eq!(d.server.proxy.count("GET"), gets);
}

#[test]
fn an_import_made_offline_is_staged_lands_later_and_goes_first_from_the_cache() {
    let d = Drive::new(no_min_free());
    let core = d.core().clone();
    // A directory never listed cannot be written offline (it may hold the name already).
    core.ensure_listing(ROOT_INO).unwrap();
    d.server.proxy.set_fault(Fault::Refuse);
    common::wait_until(10, "the remote to look down", || !core.health.is_online());
    let data = common::pattern(3 * MIB + 17, 7);
    let mtime = std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    let mut seen = 0;
    let ino = core
        .import_file(
            "/deep/er/file.bin",
            &mut &data[..],
            Some(mtime),
            core.default_owner(),
            &mut |n| seen += n,
        )
        .unwrap();
    assert_eq!(seen, data.len() as u64);
    assert!(
        !core.landed(ino).unwrap(),
        "nothing can land while the remote is down"
    );
    assert!(!d.server.path("deep").exists());

    d.server.proxy.set_fault(Fault::None);
    common::wait_until(30, "the import to land", || core.landed(ino).unwrap());
    assert_eq!(
        std::fs::read(d.server.path("deep/er/file.bin")).unwrap(),
        data
    );
    assert_eq!(core.getattr(ino).unwrap().mtime, mtime);

    // Importing again over it replaces the content.
    let ino2 = core
        .import_file(
            "/deep/er/file.bin",
            &mut &b"short"[..],
            None,
            core.default_owner(),
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(ino2, ino);
    common::wait_until(30, "the new content to land", || core.landed(ino).unwrap());
    assert_eq!(
        std::fs::read(d.server.path("deep/er/file.bin")).unwrap(),
        b"short"
    );

    // Landed imports are the first candidates for eviction.
    d.write_new("read-by-user", &common::pattern(MIB, 1))
        .unwrap();
    d.wait_drained();
    core.evict_first(ino).unwrap();
    let order: Vec<u64> = core
        .eviction_candidates()
        .unwrap()
        .iter()
        .map(|c| c.ino)
        .collect();
    assert_eq!(order.first(), Some(&ino), "candidates: {order:?}");
}

#[test]
fn downloads_are_checked_against_the_checksums_a_server_offers() {
    let d = Drive::new(no_min_free());
    std::fs::create_dir(d.server.path("nc")).unwrap();
    put_on_server(&d.server, "nc/good.txt", b"abc");
    put_on_server(&d.server, "nc/bad.txt", b"abc");
    // The listing as Nextcloud gives it (oc:checksums); the bytes come from the server.
    let (dir, good, bad) = (
        d.server.href("/nc/"),
        d.server.href("/nc/good.txt"),
        d.server.href("/nc/bad.txt"),
    );
    let file = |href: &str, etag: &str, sum: &str| {
        format!(
            r#"<d:response><d:href>{href}</d:href><d:propstat><d:prop>
<d:resourcetype/><d:getcontentlength>3</d:getcontentlength><d:getetag>"{etag}"</d:getetag>
<oc:checksums><oc:checksum>{sum}</oc:checksum></oc:checksums>
</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"#
        )
    };
    let body = format!(
        r#"<?xml version="1.0"?><d:multistatus xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">
<d:response><d:href>{dir}</d:href><d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>
{}{}</d:multistatus>"#,
        // SHA1("abc"), and a SHA1 of something else with a right MD5 beside it: the
        // strongest algorithm is the one checked.
        file(
            &good,
            "g1",
            "SHA1:a9993e364706816aba3e25717850c26c9cd0d89d MD5:900150983cd24fb0d6963f7d28e17f72"
        ),
        file(
            &bad,
            "b1",
            "SHA1:0000000000000000000000000000000000000000 MD5:900150983cd24fb0d6963f7d28e17f72"
        ),
    );
    d.server
        .proxy
        .state
        .lock()
        .unwrap()
        .canned
        .push(common::Canned {
            method: "PROPFIND".into(),
            path_contains: dir.clone(),
            status: 207,
            body,
        });
    let core = d.core();
    let ino_of = |name: &str| core.resolve_path(&format!("/nc/{name}")).unwrap();
    let node = |name: &str| {
        let ino = ino_of(name);
        core.db()
            .write(|tx| davdrive::store::get_node(tx, ino))
            .unwrap()
            .unwrap()
    };
    assert_eq!(
        node("good.txt").remote_checksum.as_deref(),
        Some("SHA1:a9993e364706816aba3e25717850c26c9cd0d89d MD5:900150983cd24fb0d6963f7d28e17f72")
    );
    let read = |name: &str| {
        let (fh, _) = core.open(ino_of(name), false).unwrap();
        let data = core.read(fh, 0, 100).unwrap();
        core.release(fh).unwrap();
        data
    };
    assert_eq!(read("good.txt"), b"abc");
    common::wait_until(10, "the good download to be verified and hashed", || {
        node("good.txt").sha256.is_some()
    });
    assert_eq!(node("good.txt").cached_bytes, 3);
    read("bad.txt");
    // Dropped, or (when the check ran while it was still open) bound to no version and
    // dropped at the next open once closed. The download itself holds the file open
    // until its task ends, which can be after the check.
    common::wait_until(10, "the mismatching download to be set aside", || {
        let n = node("bad.txt");
        (n.cached_bytes == 0 || n.content_etag != n.etag) && !core.is_open(ino_of("bad.txt"))
    });
    assert!(node("bad.txt").sha256.is_none());
    // Never served from the cache again: the next read fetches it anew.
    let gets = d.server.proxy.count("GET");
    assert_eq!(read("bad.txt"), b"abc");
    assert!(d.server.proxy.count("GET") > gets, "served from the cache");
}
