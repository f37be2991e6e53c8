//! Nothing lost: outages, kill -9 of the daemon, remounts while the remote is down, and
//! conflicts, through real FUSE mounts. Checked on the server side by SHA-256.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use common::*;

fn setup() -> (Server, tempfile::TempDir, Mount) {
    setup_with(&[])
}

fn setup_with(extra: &[&str]) -> (Server, tempfile::TempDir, Mount) {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    let m = Mount::start(&server.url(), base.path(), extra);
    (server, base, m)
}

fn wait_online(m: &Mount, server: &Server) {
    // A write that reaches the server proves the replay runs again.
    let probe = format!("probe-{}", std::process::id());
    fs::write(m.path(&probe), b"p").unwrap();
    wait_until(60, "remote back online", || server.path(&probe).exists());
    fs::remove_file(m.path(&probe)).unwrap();
}

#[test]
fn kill_9_while_offline_loses_nothing() {
    let (server, _b, mut m) = setup();
    fs::write(server.path("existing.txt"), b"was there").unwrap();
    fs::create_dir(server.path("gone-later")).unwrap();
    fs::write(server.path("gone-later/x"), b"x").unwrap();
    // Known to the cache before the outage.
    assert_eq!(fs::read(m.path("existing.txt")).unwrap(), b"was there");
    assert!(m.path("gone-later/x").exists());

    server.proxy.set_fault(Fault::Refuse);
    let mut want: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for d in 0..5 {
        fs::create_dir(m.path(&format!("d{d}"))).unwrap();
    }
    for i in 0..200usize {
        let rel = format!("d{}/f{i:03}.bin", i % 5);
        let len = if i % 40 == 0 { 6 << 20 } else { 1000 + i * 37 };
        let data = pattern(len, i as u64);
        fs::write(m.path(&rel), &data).unwrap();
        want.insert(rel, data);
    }
    // Renames (also across directories, and a directory) and deletes while offline.
    for i in (0..200usize).step_by(17) {
        let from = format!("d{}/f{i:03}.bin", i % 5);
        let to = format!("d{}/renamed-{i:03}.bin", (i + 1) % 5);
        fs::rename(m.path(&from), m.path(&to)).unwrap();
        let data = want.remove(&from).unwrap();
        want.insert(to, data);
    }
    for i in (3..200usize).step_by(23) {
        let rel = format!("d{}/f{i:03}.bin", i % 5);
        if want.remove(&rel).is_some() {
            fs::remove_file(m.path(&rel)).unwrap();
        }
    }
    fs::rename(m.path("d4"), m.path("d4-moved")).unwrap();
    want = want
        .into_iter()
        .map(|(k, v)| (k.replacen("d4/", "d4-moved/", 1), v))
        .collect();
    fs::remove_file(m.path("existing.txt")).unwrap();
    fs::remove_file(m.path("gone-later/x")).unwrap();
    fs::remove_dir(m.path("gone-later")).unwrap();
    // A file still open (written, not closed) when the daemon dies.
    let mut open = fs::File::create(m.path("open-at-crash.bin")).unwrap();
    let open_data = pattern(1 << 20, 999);
    open.write_all(&open_data).unwrap();

    m.kill9();
    drop(open);
    // Start again while the remote is still down: it mounts from the cache.
    m.spawn();
    assert!(
        m.log_text().contains("mounting from the cache"),
        "{}",
        m.log_text()
    );
    for (rel, data) in want.iter().take(20) {
        assert_eq!(
            &fs::read(m.path(rel)).unwrap(),
            data,
            "{rel} readable offline"
        );
    }
    want.insert("open-at-crash.bin".into(), open_data);

    server.proxy.clear_fault();
    wait_until(120, "every file on the server with its bytes", || {
        want.iter().all(|(rel, data)| {
            sha256_file(&server.path(rel)).as_deref() == Some(sha256(data).as_str())
        })
    });
    wait_until(60, "deleted things gone on the server", || {
        !server.path("existing.txt").exists()
            && !server.path("gone-later").exists()
            && !server.path("d4").exists()
    });
    // Nothing else on the server than what should be there (beside Apache's property
    // database, see `is_property_store`).
    let mut found = Vec::new();
    for d in fs::read_dir(&server.root).unwrap() {
        let d = d.unwrap();
        if is_property_store(&d.file_name()) {
            continue;
        }
        if d.file_type().unwrap().is_dir() {
            for f in fs::read_dir(d.path()).unwrap() {
                let f = f.unwrap();
                if is_property_store(&f.file_name()) {
                    continue;
                }
                found.push(format!(
                    "{}/{}",
                    d.file_name().to_string_lossy(),
                    f.file_name().to_string_lossy()
                ));
            }
        } else {
            found.push(d.file_name().to_string_lossy().into_owned());
        }
    }
    found.sort();
    let expected: Vec<String> = want.keys().cloned().collect();
    assert_eq!(found, expected);
}

#[test]
fn conflict_keeps_both_versions() {
    let (server, _b, m) = setup();
    fs::write(m.path("shared.txt"), b"version 1").unwrap();
    wait_until(30, "v1 on the server", || {
        fs::read(server.path("shared.txt")).ok().as_deref() == Some(&b"version 1"[..])
    });
    server.proxy.set_fault(Fault::Refuse);
    fs::write(m.path("shared.txt"), b"edited here while offline").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    server.put_as_another_client("shared.txt", b"edited on the server");
    server.proxy.clear_fault();

    let conflict = || server_entry_starting(&server, "shared (conflict ");
    wait_until(60, "conflict copy on the server", || conflict().is_some());
    let name = conflict().unwrap();
    assert!(name.ends_with(").txt"), "{name}");
    assert_eq!(
        fs::read(server.path(&name)).unwrap(),
        b"edited here while offline"
    );
    assert_eq!(
        fs::read(server.path("shared.txt")).unwrap(),
        b"edited on the server"
    );
    // The mount shows both too.
    wait_until(10, "server version through the mount", || {
        fs::read(m.path("shared.txt")).ok().as_deref() == Some(&b"edited on the server"[..])
    });
    assert_eq!(
        fs::read(m.path(&name)).unwrap(),
        b"edited here while offline"
    );
    assert!(m.log_text().contains("conflict"));
}

#[test]
fn offline_reads_of_uncached_data_fail_fast_and_cached_work() {
    let (server, _b, mut m) = setup();
    fs::write(server.path("cached.txt"), b"cached").unwrap();
    fs::write(server.path("never-read.bin"), pattern(100_000, 5)).unwrap();
    fs::create_dir(server.path("sub")).unwrap();
    fs::write(server.path("sub/inner"), b"inner").unwrap();
    assert_eq!(fs::read(m.path("cached.txt")).unwrap(), b"cached");
    assert!(m.path("sub/inner").exists());
    assert!(m.path("never-read.bin").exists());

    server.proxy.set_fault(Fault::Refuse);
    let start = Instant::now();
    let err = fs::read(m.path("never-read.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(fs::read(m.path("cached.txt")).unwrap(), b"cached");
    let names: Vec<String> = fs::read_dir(m.path("sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["inner"]);
    wait_until(10, "log names the file", || {
        m.log_text().contains("never-read.bin")
    });

    // A clean remount while the remote is down serves the cache, and writes queue.
    m.remount();
    assert_eq!(fs::read(m.path("cached.txt")).unwrap(), b"cached");
    fs::write(m.path("sub/offline-new.txt"), b"queued").unwrap();
    fs::remove_file(m.path("cached.txt")).unwrap();
    server.proxy.clear_fault();
    wait_online(&m, &server);
    wait_until(60, "queued changes applied", || {
        fs::read(server.path("sub/offline-new.txt")).ok().as_deref() == Some(&b"queued"[..])
            && !server.path("cached.txt").exists()
    });
}

#[test]
fn permanent_refusal_keeps_the_data_and_the_rest_goes_on() {
    let (server, _b, m) = setup();
    server.proxy.state.lock().unwrap().canned.push(Canned {
        method: "PUT".into(),
        path_contains: "/refused".into(),
        status: 403,
        body: "no".into(),
    });
    fs::write(m.path("refused.txt"), b"keep me").unwrap();
    fs::write(m.path("fine.txt"), b"fine").unwrap();
    wait_until(30, "later entries replayed", || {
        server.path("fine.txt").exists()
    });
    assert!(!server.path("refused.txt").exists());
    // Still readable locally, and the log says why.
    assert_eq!(fs::read(m.path("refused.txt")).unwrap(), b"keep me");
    wait_until(10, "log line for the refusal", || {
        m.log_text().contains("set aside") && m.log_text().contains("refused.txt")
    });
}

#[test]
fn interrupted_large_upload_resumes_where_the_server_stopped() {
    let (server, _b, m) = setup_with(&["--upload-parts-from", "32M", "--upload-part-size", "8M"]);
    let data = pattern(48 << 20, 77);
    let src = _b.path().join("large.src");
    fs::write(&src, &data).unwrap();
    // The upload is cut once 20 MiB have passed, as a dropped connection would.
    server.proxy.set_fault(Fault::CutRequest(20 << 20));
    // Written by another process: a descriptor of this (multi-threaded) test process
    // is duplicated into every child another test forks, and each such copy closing
    // is a flush that would upload the file half-written.
    run(
        &format!("cp {} {}", src.display(), m.path("large.bin").display()),
        _b.path(),
    );
    wait_until(120, "large file complete on the server", || {
        sha256_file(&server.path("large.bin")).as_deref() == Some(sha256(&data).as_str())
    });
    let log = m.log_text();
    let sent = server.proxy.body_bytes("PUT");
    if log.contains("server accepts PUT with Content-Range") {
        assert!(log.contains("resuming upload at byte"), "resumed:\n{log}");
        // Sent: what was cut, then only the rest (in 8 MiB parts); not the whole file
        // again.
        assert!(sent < (48 + 20 + 8) << 20, "sent {sent} bytes");
    } else {
        // nginx and rclone write only whole files: the upload starts over, once.
        assert!(
            log.contains("server does not accept PUT with Content-Range"),
            "capability detected:\n{log}"
        );
        assert!(sent < (48 + 20 + 48 + 8) << 20, "sent {sent} bytes");
    }
    // No scratch file left behind, and none ever shown in the mount.
    let names: Vec<String> = fs::read_dir(&server.root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !is_property_store(n))
        .map(|n| n.into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["large.bin"]);
    assert!(fs::read_dir(&m.mnt).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("davdrive")));
}

/// A child process group ended with the test, whatever its outcome.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // The group: the shell and the dd it runs.
            unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
            let _ = self.0.wait();
        }
    }
}

/// A large file copied in: where the server takes parts, they reach it while the copy
/// still holds the file open, `ctl sync --wait` does not wait for the copy, and the
/// close leaves only the rest to send (nothing twice), with no scratch file left.
#[test]
fn a_large_copy_sends_its_parts_before_it_is_closed() {
    let (server, b, m) = setup_with(&["--upload-parts-from", "8M", "--upload-part-size", "1M"]);
    // A first large file has the mount ask whether the server takes parts.
    fs::write(m.path("warm.bin"), pattern(9 << 20, 79)).unwrap();
    wait_until(60, "the first large file on the server", || {
        fs::metadata(server.path("warm.bin")).is_ok_and(|md| md.len() == 9 << 20)
    });
    // Servers that take no `Content-Range` PUT (nginx, rclone) get the file whole after
    // the close, as before; the rest of the test is for those that do.
    let log = m.log_text();
    let takes_parts = log.contains("server accepts PUT with Content-Range");
    assert!(
        takes_parts || log.contains("server does not accept PUT with Content-Range"),
        "capability not asked:\n{log}"
    );
    let sent_before = server.proxy.body_bytes("PUT");
    let data = pattern(16 << 20, 78);
    let src = b.path().join("big.src");
    fs::write(&src, &data).unwrap();
    let go_on = b.path().join("go-on");
    // One writer (dd), fed 12 MiB, then held until `go_on` exists: no other descriptor
    // of the file is ever closed meanwhile (each close is a commit).
    let script = format!(
        "{{ head -c {first} {src}; while [ ! -e {go} ]; do sleep 0.05; done; \
         tail -c +{next} {src}; }} | dd of={dst} bs=1M iflag=fullblock status=none",
        first = 12 << 20,
        next = (12 << 20) + 1,
        src = src.display(),
        go = go_on.display(),
        dst = m.path("big.bin").display(),
    );
    let mut copy = KillOnDrop(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .process_group(0)
            .spawn()
            .unwrap(),
    );
    let scratch_bytes = || {
        server_entry_starting(&server, ".big.bin.davdrive-part-")
            .and_then(|n| fs::metadata(server.path(&n)).ok())
            .map_or(0, |md| md.len())
    };
    if takes_parts {
        wait_until(60, "parts on the server while the copy runs", || {
            scratch_bytes() >= 8 << 20
        });
        let on_server = fs::metadata(server.path("big.bin")).map_or(0, |md| md.len());
        assert_eq!(on_server, 0, "the file itself took bytes before its close");
        let (ok, _, err) = ctl(&m, &["sync", "--wait", "--timeout", "30s"]);
        assert!(
            ok,
            "sync --wait waited for a file still being written: {err}"
        );
        assert!(copy.0.try_wait().unwrap().is_none(), "the copy ended early");
    }
    fs::write(&go_on, b"").unwrap();
    assert!(copy.0.wait().unwrap().success());
    wait_until(60, "the whole file on the server", || {
        sha256_file(&server.path("big.bin")).as_deref() == Some(sha256(&data).as_str())
    });
    let sent = server.proxy.body_bytes("PUT") - sent_before;
    assert!(sent <= 16 << 20, "sent {sent} bytes for 16 MiB");
    assert!(takes_parts || !m.log_text().contains("davdrive-part"));
    assert!(server_entry_starting(&server, ".big.bin.davdrive").is_none());
    let log = m.log_text();
    assert!(!log.contains("set aside"), "{log}");
}

#[test]
fn rename_over_a_file_changed_on_the_server_keeps_theirs() {
    let (server, _b, m) = setup();
    fs::write(server.path("a.txt"), b"mine").unwrap();
    fs::write(server.path("b.txt"), b"old b").unwrap();
    assert_eq!(fs::read(m.path("a.txt")).unwrap(), b"mine");
    assert_eq!(fs::read(m.path("b.txt")).unwrap(), b"old b");
    server.proxy.set_fault(Fault::Refuse);
    fs::rename(m.path("a.txt"), m.path("b.txt")).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    server.put_as_another_client("b.txt", b"their new b");
    server.proxy.clear_fault();
    let aside = || server_entry_starting(&server, "b (conflict ");
    wait_until(60, "our version moved aside", || aside().is_some());
    assert_eq!(fs::read(server.path(&aside().unwrap())).unwrap(), b"mine");
    assert_eq!(fs::read(server.path("b.txt")).unwrap(), b"their new b");
    assert!(!server.path("a.txt").exists());
}
