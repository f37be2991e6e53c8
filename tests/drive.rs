//! The drive through a real FUSE mount against a real WebDAV server; outcomes are checked
//! on the server side, not only through the mount.

mod common;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;

use common::*;

fn setup() -> (Server, tempfile::TempDir, Mount) {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    let m = Mount::start(&server.url(), base.path(), &[]);
    (server, base, m)
}

/// Waits until the server holds exactly `data` at `rel`.
#[test]
fn large_file_written_and_read_back() {
    let (server, _b, m) = setup();
    let data = pattern(50 << 20, 1);
    fs::write(m.path("big.bin"), &data).unwrap();
    assert_eq!(sha256(&fs::read(m.path("big.bin")).unwrap()), sha256(&data));
    wait_server_has(&server, "big.bin", &data);
}

#[test]
fn random_write_in_the_middle_append_and_truncate() {
    let (server, _b, m) = setup();
    let mut data = pattern(20 << 20, 2);
    fs::write(server.path("mid.bin"), &data).unwrap();
    // Random write in the middle of a file that was only on the server.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(m.path("mid.bin"))
        .unwrap();
    f.seek(SeekFrom::Start(10_000_123)).unwrap();
    f.write_all(b"davdrive was here").unwrap();
    drop(f);
    data[10_000_123..10_000_123 + 17].copy_from_slice(b"davdrive was here");
    wait_server_has(&server, "mid.bin", &data);

    // Append.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(m.path("mid.bin"))
        .unwrap();
    f.write_all(b"tail").unwrap();
    drop(f);
    data.extend_from_slice(b"tail");
    wait_server_has(&server, "mid.bin", &data);

    // Truncate down, then up (the new part reads as zeros).
    let f = fs::OpenOptions::new()
        .write(true)
        .open(m.path("mid.bin"))
        .unwrap();
    f.set_len(1000).unwrap();
    drop(f);
    data.truncate(1000);
    wait_server_has(&server, "mid.bin", &data);
    let f = fs::OpenOptions::new()
        .write(true)
        .open(m.path("mid.bin"))
        .unwrap();
    f.set_len(5000).unwrap();
    drop(f);
    data.resize(5000, 0);
    wait_server_has(&server, "mid.bin", &data);
    assert_eq!(fs::read(m.path("mid.bin")).unwrap(), data);
}

#[test]
fn rename_files_and_directories() {
    let (server, _b, m) = setup();
    fs::create_dir(m.path("d1")).unwrap();
    fs::write(m.path("d1/a.txt"), b"a").unwrap();
    fs::write(m.path("b.txt"), b"b").unwrap();
    fs::write(m.path("c.txt"), b"c").unwrap();
    wait_server_has(&server, "c.txt", b"c");

    fs::rename(m.path("d1/a.txt"), m.path("d1/a2.txt")).unwrap();
    fs::rename(m.path("d1"), m.path("d2")).unwrap();
    // Over an existing file.
    fs::rename(m.path("b.txt"), m.path("c.txt")).unwrap();

    wait_server_has(&server, "d2/a2.txt", b"a");
    wait_server_has(&server, "c.txt", b"b");
    wait_until(30, "old names gone on the server", || {
        !server.path("d1").exists() && !server.path("b.txt").exists()
    });
    assert_eq!(fs::read(m.path("d2/a2.txt")).unwrap(), b"a");
    assert!(!m.path("b.txt").exists());
}

#[test]
fn mkdir_rmdir_unlink_and_enotempty() {
    let (server, _b, m) = setup();
    fs::create_dir_all(m.path("x/y")).unwrap();
    fs::write(m.path("x/y/f"), b"1").unwrap();
    wait_server_has(&server, "x/y/f", b"1");
    let err = fs::remove_dir(m.path("x")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTEMPTY));
    // A directory whose only child exists on the server side is not empty either.
    fs::create_dir(server.path("remote-dir")).unwrap();
    fs::write(server.path("remote-dir/child"), b"c").unwrap();
    wait_until(10, "remote-dir visible after the listing TTL", || {
        m.path("remote-dir").exists()
    });
    let err = fs::remove_dir(m.path("remote-dir")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTEMPTY));

    fs::remove_file(m.path("x/y/f")).unwrap();
    fs::remove_dir(m.path("x/y")).unwrap();
    fs::remove_dir(m.path("x")).unwrap();
    assert!(!m.path("x").exists());
    wait_until(30, "x gone on the server", || !server.path("x").exists());
    assert!(server.path("remote-dir/child").exists());
}

#[test]
fn lists_a_directory_of_2000_entries() {
    let (server, _b, m) = setup();
    fs::create_dir(server.path("many")).unwrap();
    for i in 0..2000 {
        fs::write(server.path(&format!("many/file-{i:04}")), i.to_string()).unwrap();
    }
    let names: Vec<String> = fs::read_dir(m.path("many"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2000);
    assert_eq!(
        fs::read_to_string(m.path("many/file-1234")).unwrap(),
        "1234"
    );
}

#[test]
fn odd_names_round_trip_both_ways() {
    let (server, _b, m) = setup();
    let names = [
        "with space.txt",
        "ünïcødé-日本.txt",
        "100%.txt",
        "hash#tag",
        "what?.txt",
        "a+b.txt",
        "semi;colon&amp",
    ];
    for n in names {
        fs::write(m.path(n), n.as_bytes()).unwrap();
        fs::write(server.path(&format!("srv-{n}")), n.as_bytes()).unwrap();
    }
    for n in names {
        wait_server_has(&server, n, n.as_bytes());
        let p = m.path(&format!("srv-{n}"));
        wait_until(
            10,
            &format!("srv-{n} visible after the listing TTL"),
            || p.exists(),
        );
        assert_eq!(fs::read(&p).unwrap(), n.as_bytes(), "{n}");
    }
}

#[test]
fn server_side_change_shows_after_the_ttl() {
    let (server, _b, m) = setup();
    fs::write(server.path("note.txt"), b"first version").unwrap();
    assert_eq!(fs::read(m.path("note.txt")).unwrap(), b"first version");
    // Make sure the server's mtime-based ETag changes.
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(server.path("note.txt"), b"second, longer version").unwrap();
    fs::write(server.path("new.txt"), b"new").unwrap();
    wait_until(10, "new content through the mount", || {
        fs::read(m.path("note.txt")).ok().as_deref() == Some(&b"second, longer version"[..])
    });
    assert_eq!(fs::read(m.path("new.txt")).unwrap(), b"new");
    fs::remove_file(server.path("new.txt")).unwrap();
    wait_until(10, "server-side delete through the mount", || {
        !m.path("new.txt").exists()
    });
}

#[test]
fn ordinary_programs_work_inside() {
    let (server, b, m) = setup();
    // cp -r of a tree.
    let src = b.path().join("src-tree");
    fs::create_dir_all(src.join("a/b")).unwrap();
    fs::write(src.join("a/one"), b"1").unwrap();
    fs::write(src.join("a/b/two"), pattern(300_000, 3)).unwrap();
    run(
        &format!("cp -r {} {}", src.display(), m.path("copied").display()),
        b.path(),
    );
    wait_server_has(&server, "copied/a/b/two", &pattern(300_000, 3));

    // tar -x.
    run(
        &format!(
            "tar -C {} -cf {}/t.tar .",
            src.display(),
            b.path().display()
        ),
        b.path(),
    );
    fs::create_dir(m.path("untar")).unwrap();
    run(
        &format!(
            "tar -C {} -xf {}/t.tar",
            m.path("untar").display(),
            b.path().display()
        ),
        b.path(),
    );
    wait_server_has(&server, "untar/a/one", b"1");

    // git.
    let repo = m.path("repo");
    fs::create_dir(&repo).unwrap();
    run("git init -q . && echo hello > README && git add README && git -c user.name=t -c user.email=t@t commit -qm first", &repo);
    let log = run("git log --oneline", &repo);
    assert!(log.contains("first"), "{log}");
    let status = run("git status --porcelain", &repo);
    assert_eq!(status, "");
    wait_server_has(&server, "repo/README", b"hello\n");
    wait_until(30, "git objects on the server", || {
        server.path("repo/.git/HEAD").exists()
    });

    // An editor-style save: write a temp file, rename it over the original.
    fs::write(m.path("doc.txt"), b"draft 1").unwrap();
    let mut tmp = fs::File::create(m.path(".doc.txt.swp")).unwrap();
    tmp.write_all(b"draft 2, saved safely").unwrap();
    tmp.sync_all().unwrap();
    drop(tmp);
    fs::rename(m.path(".doc.txt.swp"), m.path("doc.txt")).unwrap();
    assert_eq!(
        fs::read(m.path("doc.txt")).unwrap(),
        b"draft 2, saved safely"
    );
    wait_server_has(&server, "doc.txt", b"draft 2, saved safely");
    wait_until(30, "temp file gone on the server", || {
        !server.path(".doc.txt.swp").exists()
    });
}

#[test]
fn inode_numbers_and_tree_survive_a_remount() {
    let (server, _b, mut m) = setup();
    fs::create_dir(m.path("keep")).unwrap();
    fs::write(m.path("keep/file"), b"kept").unwrap();
    let ino_dir = fs::metadata(m.path("keep")).unwrap().ino();
    let ino_file = fs::metadata(m.path("keep/file")).unwrap().ino();
    wait_server_has(&server, "keep/file", b"kept");
    m.remount();
    assert_eq!(fs::metadata(m.path("keep")).unwrap().ino(), ino_dir);
    assert_eq!(fs::metadata(m.path("keep/file")).unwrap().ino(), ino_file);
    assert_eq!(fs::read(m.path("keep/file")).unwrap(), b"kept");
}

#[test]
fn mode_and_mtime_are_kept() {
    use std::os::unix::fs::PermissionsExt;
    let (_server, _b, m) = setup();
    fs::write(m.path("script.sh"), b"#!/bin/sh\necho ok\n").unwrap();
    fs::set_permissions(m.path("script.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    let when = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    fs::File::options()
        .write(true)
        .open(m.path("script.sh"))
        .unwrap()
        .set_modified(when)
        .unwrap();
    let md = fs::metadata(m.path("script.sh")).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o750);
    assert_eq!(md.mtime(), 1_600_000_000);
    let out = run(&format!("{}", m.path("script.sh").display()), &m.mnt);
    assert_eq!(out, "ok\n");
}

#[test]
fn hard_links_and_special_files_are_refused() {
    let (_server, _b, m) = setup();
    fs::write(m.path("f"), b"x").unwrap();
    assert!(fs::hard_link(m.path("f"), m.path("g")).is_err());
    // Symbolic links are kept where the server keeps dead properties (tests/metadata.rs).
    let c = std::ffi::CString::new(m.path("fifo").to_str().unwrap()).unwrap();
    assert_ne!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

#[test]
fn bad_server_replies_are_eio_and_the_mount_keeps_working() {
    let (server, _b, m) = setup();
    for d in ["bad-xml", "err500", "outside"] {
        fs::create_dir(server.path(d)).unwrap();
    }
    fs::write(server.path("fine.txt"), b"fine").unwrap();
    {
        let mut st = server.proxy.state.lock().unwrap();
        st.canned.push(Canned {
            method: "PROPFIND".into(),
            path_contains: "/bad-xml".into(),
            status: 207,
            body: format!("<?xml version=\"1.0\"?><D:multistatus xmlns:D=\"DAV:\"><D:response><D:href>{}</D:hr", server.href("/bad-xml/")),
        });
        st.canned.push(Canned {
            method: "PROPFIND".into(),
            path_contains: "/err500".into(),
            status: 500,
            body: "boom".into(),
        });
        st.canned.push(Canned {
            method: "PROPFIND".into(),
            path_contains: "/outside".into(),
            status: 207,
            body: format!(r#"<?xml version="1.0"?><D:multistatus xmlns:D="DAV:">
<D:response><D:href>{outside}</D:href><D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>
<D:response><D:href>/etc/passwd</D:href><D:propstat><D:prop><D:getcontentlength>10</D:getcontentlength></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>
<D:response><D:href>{outside}../../escape</D:href><D:propstat><D:prop><D:getcontentlength>10</D:getcontentlength></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>
<D:response><D:href>{outside}good.txt</D:href><D:propstat><D:prop><D:getcontentlength>4</D:getcontentlength></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>
</D:multistatus>"#,
                outside = server.href("/outside/")
            ),
        });
    }
    let e = fs::read_dir(m.path("bad-xml"))
        .map(|it| it.count())
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    let e = fs::read_dir(m.path("err500"))
        .map(|it| it.count())
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    let names: Vec<String> = fs::read_dir(m.path("outside"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["good.txt".to_string()]);
    // Still working.
    assert_eq!(fs::read(m.path("fine.txt")).unwrap(), b"fine");
    fs::write(m.path("after.txt"), b"after").unwrap();
    wait_server_has(&server, "after.txt", b"after");
    let log = m.log_text();
    assert!(
        log.contains("malformed reply") || log.contains("BadReply"),
        "log names the bad reply:\n{log}"
    );
}

fn mount_output(url: &str, extra: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let base = tempfile::tempdir().unwrap();
    common::private(base.path());
    let mnt = base.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("mount")
        .arg(url)
        .arg(&mnt)
        .arg("--cache-dir")
        .arg(base.path().join("c"))
        .arg("--daemon");
    cmd.args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let ok = out.status.success();
    if ok {
        std::process::Command::new(BIN)
            .arg("unmount")
            .arg(&mnt)
            .status()
            .unwrap();
    }
    (ok, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn wrong_password_and_dead_url_fail_the_mount_clearly() {
    require_fuse();
    let server = Server::start();
    // "user:right" in Basic auth.
    server.proxy.state.lock().unwrap().require_auth = Some("Basic dXNlcjpyaWdodA==".into());
    let (ok, err) = mount_output(
        &server.url(),
        &["--user", "user"],
        &[("DAVDRIVE_PASSWORD", "s3cr3t-n0pe")],
    );
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains("s3cr3t"), "the password must not show: {err}");

    let (ok, err) = mount_output(
        &server.url(),
        &["--user", "user"],
        &[("DAVDRIVE_PASSWORD", "right")],
    );
    assert!(ok, "{err}");

    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let (ok, err) = mount_output(&format!("http://127.0.0.1:{port}/"), &[], &[]);
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("cannot reach"), "{err}");
}

#[test]
fn a_bearer_token_from_a_file_is_sent_and_never_shown() {
    require_fuse();
    let server = Server::start();
    server.proxy.state.lock().unwrap().require_auth = Some("Bearer t0ken-right".into());
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    fs::write(&token, "t0ken-wrong\n").unwrap();
    let arg = token.to_string_lossy().into_owned();
    let (ok, err) = mount_output(&server.url(), &["--bearer-token-file", &arg], &[]);
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains("t0ken"), "the token must not show: {err}");
    fs::write(&token, "t0ken-right\n").unwrap();
    let (ok, err) = mount_output(&server.url(), &["--bearer-token-file", &arg], &[]);
    assert!(ok, "{err}");
}

#[test]
fn reads_fetch_only_what_is_needed() {
    let (server, _b, m) = setup();
    let data = pattern(8 << 20, 9);
    fs::write(server.path("part.bin"), &data).unwrap();
    let before = server.proxy.count("GET");
    let mut f = fs::File::open(m.path("part.bin")).unwrap();
    f.seek(SeekFrom::Start(4 << 20)).unwrap();
    let mut buf = vec![0u8; 4096];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(buf, data[4 << 20..(4 << 20) + 4096]);
    let after_first = server.proxy.count("GET");
    assert!(after_first > before);
    // The content file holds only what was fetched, not the whole file.
    let on_disk: u64 = walk_blocks(&m.cache.join("content"));
    assert!(
        on_disk < 4 << 20,
        "only a part is cached, {on_disk} bytes on disk"
    );
    // Reading the same range again costs no request.
    drop(f);
    let mut f = fs::File::open(m.path("part.bin")).unwrap();
    f.seek(SeekFrom::Start(4 << 20)).unwrap();
    f.read_exact(&mut buf).unwrap();
    assert_eq!(server.proxy.count("GET"), after_first);
}

fn walk_blocks(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        if md.is_dir() {
            total += walk_blocks(&e.path());
        } else {
            total += md.blocks() * 512;
        }
    }
    total
}

#[test]
fn an_open_after_the_ttl_revalidates_and_a_same_size_change_is_seen() {
    let (server, _b, m) = setup();
    let v1 = pattern(200_000, 1);
    let v2 = pattern(200_000, 2);
    fs::write(server.path("same.bin"), &v1).unwrap();
    assert_eq!(fs::read(m.path("same.bin")).unwrap(), v1);
    // Past the TTLs, unchanged on the server: asked about (listing or PROPFIND of the
    // file), not downloaded again.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let gets = server.proxy.count("GET");
    assert_eq!(fs::read(m.path("same.bin")).unwrap(), v1);
    assert_eq!(
        server.proxy.count("GET"),
        gets,
        "unchanged content was fetched again"
    );
    // Same size, other bytes: neither our cache nor the kernel's pages may serve v1.
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(server.path("same.bin"), &v2).unwrap();
    wait_until(10, "the new version through the mount", || {
        fs::read(m.path("same.bin")).unwrap() == v2
    });
}

#[test]
fn a_5000_entry_listing_costs_one_propfind_and_ls_l_after_it_none() {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    fs::create_dir(server.path("big")).unwrap();
    for i in 0..5000 {
        fs::write(server.path(&format!("big/file-{i:04}.txt")), b"x").unwrap();
    }
    let m = Mount::start(
        &server.url(),
        base.path(),
        &["--dir-ttl", "60s", "--attr-ttl", "60s"],
    );
    let dir = m.path("big");
    let first = run(&format!("ls -l {}", dir.display()), base.path());
    assert_eq!(first.lines().count(), 5001, "ls -l shows every entry");
    assert_eq!(server.proxy.count_at("PROPFIND", &server.href("/big/")), 1);
    let gets = server.proxy.count("GET");
    let second = run(&format!("ls -l {}", dir.display()), base.path());
    assert_eq!(second, first);
    assert_eq!(
        server.proxy.count_at("PROPFIND", &server.href("/big/")),
        1,
        "ls -l within the TTL asked the server again"
    );
    assert_eq!(server.proxy.count("GET"), gets);
}

#[test]
fn passthrough_serves_a_fully_cached_file_read_only() {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    let data = pattern(3 << 20, 21);
    fs::write(server.path("photo.raw"), &data).unwrap();
    let m = Mount::start(&server.url(), base.path(), &["--passthrough"]);
    assert_eq!(fs::read(m.path("photo.raw")).unwrap(), data);
    // Once the download is verified, read-only opens go to the kernel directly.
    wait_until(30, "a passthrough open", || {
        let again = fs::read(m.path("photo.raw")).unwrap();
        assert_eq!(again, data);
        fs::read_to_string(&m.log)
            .unwrap_or_default()
            .contains("served by passthrough")
    });
    let gets = server.proxy.count("GET");
    assert_eq!(fs::read(m.path("photo.raw")).unwrap(), data);
    assert_eq!(server.proxy.count("GET"), gets);
    // Written (no reader open): later reads see the change, through davdrive again.
    fs::OpenOptions::new()
        .append(true)
        .open(m.path("photo.raw"))
        .unwrap()
        .write_all(b"tail")
        .unwrap();
    let mut expected = data.clone();
    expected.extend_from_slice(b"tail");
    assert_eq!(fs::read(m.path("photo.raw")).unwrap(), expected);
    wait_server_has(&server, "photo.raw", &expected);
}
