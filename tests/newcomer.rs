//! What someone used to `rclone mount` or davfs2 expects: mountpoints already mounted
//! or holding files refused, a URL naming a file refused, read-only said where it
//! shows, backups only when asked for, one record per conflict, quiet logs, clear
//! errors, mount options, one configuration model, `ctl` path forms, the metrics
//! endpoint.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::*;

/// `davdrive mount URL MNT --cache-dir CACHE EXTRA…` in the foreground, expected to
/// fail: returns its one `davdrive:` error line (asserting there is exactly one).
fn mount_fails(url: &str, mnt: &Path, cache: &Path, extra: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("mount")
        .arg(url)
        .arg(mnt)
        .arg("--cache-dir")
        .arg(cache)
        .args(["--request-timeout", "5s"])
        .args(extra)
        .env("DAVDRIVE_LOG", "info")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "mount on {} succeeded",
        mnt.display()
    );
    one_error_line(&out)
}

fn one_error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("davdrive: "))
        .collect();
    assert_eq!(errors.len(), 1, "stderr:\n{stderr}");
    errors[0].to_string()
}

fn is_read_only_mount(mnt: &Path) -> bool {
    let c = std::ffi::CString::new(mnt.as_os_str().as_encoded_bytes()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_flag & libc::ST_RDONLY != 0
}

fn erofs<T: std::fmt::Debug>(r: std::io::Result<T>) -> bool {
    r.err().and_then(|e| e.raw_os_error()) == Some(libc::EROFS)
}

#[test]
fn a_folder_already_mounted_is_refused_and_the_first_mount_stays() {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    let m = Mount::start(&server.url(), base.path(), &[]);
    fs::write(m.path("a.txt"), b"first mount").unwrap();

    // Another cache dir, the same folder: the second mount would hide the first.
    let line = mount_fails(&server.url(), &m.mnt, &base.path().join("cache2"), &[]);
    assert!(line.contains("already a mount point"), "{line}");
    assert!(line.contains("davdrive unmount"), "{line}");
    // Also with --allow-non-empty: that is about files, not mounts.
    let line = mount_fails(
        &server.url(),
        &m.mnt,
        &base.path().join("cache3"),
        &["--allow-non-empty"],
    );
    assert!(line.contains("already a mount point"), "{line}");
    // The first one is the only one, and it still serves.
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mnt = m.mnt.to_string_lossy().to_string();
    assert_eq!(
        info.lines()
            .filter(|l| l.split(' ').nth(4) == Some(mnt.as_str()))
            .count(),
        1
    );
    assert_eq!(fs::read(m.path("a.txt")).unwrap(), b"first mount");
}

#[test]
fn a_folder_holding_files_is_refused_unless_allowed() {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    fs::write(mnt.join("mine.txt"), b"local file").unwrap();

    let line = mount_fails(&server.url(), &mnt, &base.path().join("cache"), &[]);
    assert!(line.contains("is not empty"), "{line}");
    assert!(line.contains("--allow-non-empty"), "{line}");
    assert!(!is_mounted(&mnt));
    // Refused the same way in the background mode, by the command that was run.
    let out = Command::new(BIN)
        .arg("mount")
        .arg(server.url())
        .arg(&mnt)
        .arg("--cache-dir")
        .arg(base.path().join("cache"))
        .arg("--daemon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(one_error_line(&out).contains("is not empty"));
    assert!(!is_mounted(&mnt));

    // Asked for: mounted over it, the local file hidden until unmounted.
    let mut m = Mount::start(&server.url(), base.path(), &["--allow-non-empty"]);
    assert!(!m.path("mine.txt").exists());
    m.unmount();
    assert_eq!(fs::read(mnt.join("mine.txt")).unwrap(), b"local file");
}

#[test]
fn a_url_naming_a_file_is_refused() {
    let server = Server::start();
    fs::write(server.path("report.txt"), b"a file, not a folder").unwrap();
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let url = format!("{}report.txt", server.url());
    let line = mount_fails(&url, &mnt, &base.path().join("cache"), &[]);
    assert!(line.contains("names a file"), "{line}");
    assert!(!is_mounted(&mnt));
}

#[test]
fn read_only_is_asked_for_and_said_at_mount_in_status_health_and_log() {
    let server = Server::start();
    fs::write(server.path("kept.txt"), b"server file").unwrap();
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let cache = base.path().join("cache");
    // In the background: the command that mounts says so.
    let out = Command::new(BIN)
        .arg("mount")
        .arg(server.url())
        .arg(&mnt)
        .arg("--cache-dir")
        .arg(&cache)
        .args(["--read-only", "--daemon"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{said}");
    let mnt = fs::canonicalize(&mnt).unwrap();
    let unmount = || {
        let out = Command::new(BIN).arg("unmount").arg(&mnt).output().unwrap();
        assert!(out.status.success());
    };
    assert!(said.contains("mounted read-only"), "{said}");
    assert!(said.contains("--read-only"), "{said}");
    assert!(is_read_only_mount(&mnt));
    assert_eq!(fs::read(mnt.join("kept.txt")).unwrap(), b"server file");
    assert!(erofs(fs::write(mnt.join("new.txt"), b"x")));
    assert!(erofs(fs::remove_file(mnt.join("kept.txt"))));
    assert!(erofs(fs::create_dir(mnt.join("d"))));

    let ctl = |args: &[&str]| {
        Command::new(BIN)
            .arg("ctl")
            .arg("--mount")
            .arg(&mnt)
            .args(args)
            .output()
            .unwrap()
    };
    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = ctl(&all);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["result"].clone()
    };
    let st = json(&["status"]);
    assert_eq!(st["read_only"], true, "{st}");
    assert!(
        st["read_only_reason"]
            .as_str()
            .unwrap()
            .contains("--read-only"),
        "{st}"
    );
    assert_eq!(st["journal"]["waiting"], 0);
    let text = String::from_utf8_lossy(&ctl(&["status"]).stdout).into_owned();
    assert!(text.contains("READ-ONLY"), "{text}");
    let h = json(&["health"]);
    assert_eq!(h["read_only"], true, "{h}");
    let text = String::from_utf8_lossy(&ctl(&["health"]).stdout).into_owned();
    assert!(text.contains("READ-ONLY"), "{text}");
    let log = fs::read_to_string(cache.join("davdrive.log")).unwrap_or_default();
    unmount();
    // The log says it from the first line on (the daemon's own log holds the rest).
    let log = log + &said;
    assert!(log.contains("read-only"), "{log}");
    // Nothing reached the server.
    assert!(!server.path("new.txt").exists());
    assert!(server.path("kept.txt").exists());

    // Without it, the same cache dir mounts read-write and status says so.
    let m = Mount::start(&server.url(), base.path(), &[]);
    let st = ctl_json(&m, &["status"]);
    assert_eq!(st["read_only"], false, "{st}");
    fs::write(m.path("new.txt"), b"now writable").unwrap();
}

#[test]
fn backups_run_only_when_configured() {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    let m = Mount::start(&server.url(), base.path(), &[]);
    let st = ctl_json(&m, &["backup", "status"]);
    assert!(st["schedule"].is_null(), "{st}");
    assert!(st["next_at"].is_null(), "{st}");
    let (ok, text, _) = ctl(&m, &["backup", "status"]);
    assert!(ok);
    assert!(!text.is_empty());
    drop(m);

    // Naming a source schedules the daily run at the default time.
    let src = base.path().join("data.txt");
    fs::write(&src, b"to keep").unwrap();
    let base2 = tempfile::tempdir().unwrap();
    let m = Mount::start(
        &server.url(),
        base2.path(),
        &["--backup-source", src.to_str().unwrap()],
    );
    let st = ctl_json(&m, &["backup", "status"]);
    assert_eq!(st["schedule"], "00:00:00", "{st}");
    drop(m);
    // A time alone schedules one too (davdrive's own state).
    let base3 = tempfile::tempdir().unwrap();
    let m = Mount::start(&server.url(), base3.path(), &["--backup-at", "03:30"]);
    let st = ctl_json(&m, &["backup", "status"]);
    assert_eq!(st["schedule"], "03:30:00", "{st}");
    // Nothing was uploaded by a schedule nobody asked for.
    assert!(!server.path(".davdrive/backups").exists());
}

/// Saving by rename (write a temporary file, rename it over the original) while another
/// client changed the original: one conflict, recorded once, cleared by one resolve.
/// Both shapes the journal can hold: the temporary file already sent (a move onto the
/// original) and never sent (its upload rewritten to the original's name).
#[test]
fn a_conflict_is_recorded_once_and_resolved_once() {
    for tmp_sent_first in [true, false] {
        let server = Server::start();
        let base = tempfile::tempdir().unwrap();
        let m = Mount::start(&server.url(), base.path(), &[]);
        fs::write(m.path("doc.txt"), b"version 1").unwrap();
        let tmp = m.path(".doc.txt.tmp");
        if tmp_sent_first {
            fs::write(&tmp, b"ours, saved by rename").unwrap();
        }
        let (ok, _, err) = ctl(&m, &["sync", "--wait"]);
        assert!(ok, "{err}");
        wait_server_has(&server, "doc.txt", b"version 1");

        server.proxy.set_fault(Fault::Refuse);
        if !tmp_sent_first {
            fs::write(&tmp, b"ours, saved by rename").unwrap();
        }
        fs::rename(&tmp, m.path("doc.txt")).unwrap();
        server.put_as_another_client("doc.txt", b"theirs, meanwhile");
        server.proxy.clear_fault();
        let (ok, _, err) = ctl(&m, &["sync", "--wait"]);
        assert!(ok, "{err}");

        let list = ctl_json(&m, &["conflicts"]);
        let open: Vec<_> = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["resolved"] == false)
            .collect();
        assert_eq!(open.len(), 1, "sent first: {tmp_sent_first}: {list}");
        let c = open[0];
        assert_eq!(c["path"], "/doc.txt", "{c}");
        assert_ne!(c["conflict_path"], c["path"], "{c}");
        assert_eq!(ctl_json(&m, &["status"])["conflicts"], 1);
        let metrics = ctl_json(&m, &["metrics"]);
        let metrics = metrics.as_str().unwrap();
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("davdrive_conflicts") && l.trim_end().ends_with(" 1")),
            "{metrics}"
        );
        // Both versions exist on the server.
        assert_eq!(
            fs::read(server.path("doc.txt")).unwrap(),
            b"theirs, meanwhile"
        );
        let copy = server_entry_starting(&server, "doc (conflict").expect("conflict copy");
        assert_eq!(
            fs::read(server.path(&copy)).unwrap(),
            b"ours, saved by rename"
        );

        // The mount shows both once it lists the folder again.
        wait_until(10, "the conflict copy in the mount", || {
            m.path(&copy).exists()
        });
        assert_eq!(fs::read(m.path(&copy)).unwrap(), b"ours, saved by rename");
        let (ok, _, err) = ctl(&m, &["conflicts", "resolve", "doc.txt", "--keep", "local"]);
        assert!(ok, "{err}");
        assert_eq!(ctl_json(&m, &["status"])["conflicts"], 0);
        let (ok, out, err) = ctl(&m, &["sync", "--wait"]);
        assert!(ok, "{out}{err}");
        wait_server_has(&server, "doc.txt", b"ours, saved by rename");
    }
}
