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

/// `Authorization` the proxy asks for: user `user`, password `dv-9f3Kq7-pw`.
const AUTH: &str = "Basic dXNlcjpkdi05ZjNLcTctcHc=";

fn mount_failing_helper_run(out: &Output) -> String {
    assert!(!out.status.success());
    one_error_line(out)
}

#[test]
fn errors_say_what_to_do_in_one_line() {
    let server = Server::start();
    server.proxy.state.lock().unwrap().require_auth = Some(AUTH.into());
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    // No credentials at all: the server asks for some.
    let line = mount_fails(&server.url(), &mnt, &base.path().join("c1"), &[]);
    assert!(line.contains("asks for credentials"), "{line}");
    assert!(line.contains("--user"), "{line}");
    // Wrong ones: that is what it says.
    let out = Command::new(BIN)
        .arg("mount")
        .arg(server.url())
        .arg(&mnt)
        .arg("--cache-dir")
        .arg(base.path().join("c2"))
        .args(["--user", "user"])
        .env("DAVDRIVE_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert!(mount_failing_helper_run(&out).contains("wrong user name, password or token"));

    // Unmounting a folder that is not mounted: one line, from one program.
    let out = Command::new(BIN).arg("unmount").arg(&mnt).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("is not mounted"), "{err}");

    // ctl on a folder that is no davdrive mount names the folder, not a socket.
    let out = Command::new(BIN)
        .args(["ctl", "--mount"])
        .arg(&mnt)
        .arg("status")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("is not a davdrive mount"), "{err}");
    assert!(!err.contains(".sock"), "{err}");
}

/// At the default log level: no line per unsupported call (git and python issue ioctls),
/// every event one line, a replay summarised in one.
#[test]
fn the_log_has_one_line_per_event_and_no_unsupported_calls() {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let cache = base.path().join("cache");
    let out = Command::new(BIN)
        .arg("mount")
        .arg(server.url())
        .arg(&mnt)
        .arg("--cache-dir")
        .arg(&cache)
        .arg("--daemon")
        .env_remove("DAVDRIVE_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mnt = fs::canonicalize(&mnt).unwrap();
    for i in 0..5 {
        fs::write(mnt.join(format!("f{i}.txt")), b"data").unwrap();
    }
    // What `lsattr` and git ask: FS_IOC_GETFLAGS, refused quietly.
    use std::os::fd::AsRawFd;
    let f = fs::File::open(mnt.join("f0.txt")).unwrap();
    for _ in 0..20 {
        let mut flags: libc::c_long = 0;
        let r = unsafe { libc::ioctl(f.as_raw_fd(), 0x8008_6601, &mut flags) };
        assert_eq!(r, -1);
    }
    drop(f);
    let out = Command::new(BIN)
        .args(["ctl", "--mount"])
        .arg(&mnt)
        .args(["sync", "--wait"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = Command::new(BIN).arg("unmount").arg(&mnt).output().unwrap();
    assert!(out.status.success());
    let log = fs::read_to_string(cache.join("davdrive.log")).unwrap();
    assert!(!log.contains("Not Implemented"), "{log}");
    assert!(!log.contains("ioctl"), "{log}");
    for line in log.lines() {
        // tracing's format: a timestamp and a level on every line.
        assert!(
            line.starts_with("20") && line.contains('Z'),
            "a continuation line: {line:?}\n{log}"
        );
        assert!(!line.contains(" DEBUG "), "{line}");
    }
    assert!(
        log.lines()
            .any(|l| l.contains("replayed") && l.contains("change(s) in")),
        "{log}"
    );
    // Each upload is not a line of its own at this level.
    assert!(!log.contains("f3.txt"), "{log}");
}

fn stat_of(p: &Path) -> fs::Metadata {
    fs::metadata(p).unwrap()
}

/// `mount.davdrive` (mount -t davdrive) with the options users of other network
/// filesystems give: ro, uid=, gid=, umask=, file_mode=, dir_mode=; -f checks the
/// credentials.
#[test]
fn mount_options_ro_uid_gid_umask_and_modes() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let server = Server::start();
    server.proxy.state.lock().unwrap().require_auth = Some(AUTH.into());
    fs::create_dir_all(server.path("sub")).unwrap();
    fs::write(server.path("sub/a.txt"), b"server file").unwrap();
    let base = tempfile::tempdir().unwrap();
    let helper = base.path().join("mount.davdrive");
    std::os::unix::fs::symlink(BIN, &helper).unwrap();
    let pw = base.path().join("pw");
    fs::write(&pw, "dv-9f3Kq7-pw\n").unwrap();
    let wrong = base.path().join("wrong");
    fs::write(&wrong, "nope\n").unwrap();
    let mnt = base.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let mnt = fs::canonicalize(&mnt).unwrap();
    let run = |opts: &str, extra: &[&str]| {
        Command::new(&helper)
            .arg(server.url())
            .arg(&mnt)
            .args(extra)
            .arg("-o")
            .arg(opts)
            .output()
            .unwrap()
    };
    let cache = base.path().join("cache");
    let common = format!("user=user,cache_dir={},request_timeout=5s", cache.display());

    // -f with a wrong password fails, and mounts nothing; with the right one it passes.
    let out = run(
        &format!("{common},password_file={}", wrong.display()),
        &["-f"],
    );
    assert!(mount_failing_helper_run(&out).contains("wrong user name, password or token"));
    assert!(!is_mounted(&mnt));
    let out = run(&format!("{common},password_file={}", pw.display()), &["-f"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&mnt));

    let out = run(
        &format!(
            "{common},password_file={},ro,uid=1234,gid=2345,umask=027,_netdev,nofail",
            pw.display()
        ),
        &[],
    );
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{said}");
    assert!(said.contains("read-only"), "{said}");
    let unmount = || {
        let out = Command::new(BIN).arg("unmount").arg(&mnt).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let f = stat_of(&mnt.join("sub/a.txt"));
    let d = stat_of(&mnt.join("sub"));
    assert_eq!((f.uid(), f.gid()), (1234, 2345));
    assert_eq!((d.uid(), d.gid()), (1234, 2345));
    assert_eq!(f.permissions().mode() & 0o7777, 0o640);
    assert_eq!(d.permissions().mode() & 0o7777, 0o750);
    assert!(is_read_only_mount(&mnt));
    assert!(erofs(fs::write(mnt.join("new.txt"), b"x")));
    unmount();

    let out = run(
        &format!(
            "{common},password_file={},rw,file_mode=0600,dir_mode=0711",
            pw.display()
        ),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stat_of(&mnt.join("sub/a.txt")).permissions().mode() & 0o7777,
        0o600
    );
    assert_eq!(
        stat_of(&mnt.join("sub")).permissions().mode() & 0o7777,
        0o711
    );
    assert!(!is_read_only_mount(&mnt));
    fs::write(mnt.join("sub/new.txt"), b"written").unwrap();
    let out = Command::new(BIN)
        .args(["ctl", "--mount"])
        .arg(&mnt)
        .args(["sync", "--wait"])
        .output()
        .unwrap();
    assert!(out.status.success());
    unmount();
    wait_server_has(&server, "sub/new.txt", b"written");
}

/// `davdrive mount … --print-config`, with `env` set: its output.
fn print_config(args: &[&str], env: &[(String, String)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(BIN)
        .arg("mount")
        .args(["http://127.0.0.1:9/dav/", "/nowhere"])
        .args(args)
        .arg("--print-config")
        .envs(env.iter().cloned())
        // No settings file of the machine's.
        .env("XDG_CONFIG_HOME", dir.path())
        .env_remove("DAVDRIVE_CONFIG")
        .output()
        .unwrap()
}

/// `key = value    # source` lines of --print-config, by key.
fn settings(out: &Output) -> Vec<(String, String, String)> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| match l.strip_prefix("# ") {
            // `# user not set`
            Some(rest) => rest
                .strip_suffix(" not set")
                .map(|k| format!("{k} =     # not set")),
            None => Some(l.to_string()),
        })
        .map(|l| {
            let (kv, src) = l.split_once("    # ").unwrap();
            let (k, v) = kv.split_once(" =").unwrap();
            let v = v.trim();
            (k.to_string(), v.to_string(), src.to_string())
        })
        .collect()
}

/// A value for every option, as the settings file writes it.
fn sample(key: &str, default: &str) -> String {
    match key {
        _ if default == "false" => "true".into(),
        "uid" | "gid" => "1000".into(),
        "threads" | "backup_keep_days" | "backup_compression" => "3".into(),
        "url" | "mountpoint" => unreachable!(),
        "umask" | "file_mode" | "dir_mode" => "\"027\"".into(),
        // Sizes: cache_max_size, cache_min_free, upload_part_size, upload_parts_from, ...
        k if k.ends_with("_size") || k.ends_with("_free") || k.ends_with("_from") => {
            "\"2G\"".into()
        }
        "backup_at" => "\"04:00\"".into(),
        "metrics_addr" => "\"127.0.0.1:9184\"".into(),
        "backup_source" => "[\"/srv/a\"]".into(),
        k if k.ends_with("ttl")
            || k.ends_with("wait")
            || k.ends_with("interval")
            || k.ends_with("timeout")
            || k.ends_with("max_age") =>
        {
            "\"7s\"".into()
        }
        _ => "\"/some/where\"".into(),
    }
}

#[test]
fn every_option_from_the_settings_file_and_the_environment_and_flags_win() {
    let defaults = settings(&print_config(&[], &[]));
    assert!(defaults
        .iter()
        .any(|(k, v, s)| k == "dir_ttl" && v == "\"60s\"" && s == "default"));
    assert!(defaults.len() >= 30, "{defaults:?}");
    // The bearer token replaces user and password: one or the other.
    let keys: Vec<&(String, String, String)> = defaults
        .iter()
        .filter(|(k, _, _)| k != "bearer_token_file")
        .collect();

    // Every option from the file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("davdrive.toml");
    let text: String = keys
        .iter()
        .map(|(k, v, _)| format!("{k} = {}\n", sample(k, v)))
        .collect();
    fs::write(&file, &text).unwrap();
    let from_file = settings(&print_config(&["--config", file.to_str().unwrap()], &[]));
    for (k, v, _) in &keys {
        let (_, got, src) = from_file.iter().find(|(x, _, _)| x == k).unwrap();
        assert_eq!(src, &format!("file {}", file.display()), "{k}");
        assert_eq!(got, &sample(k, v), "{k}");
    }

    // Every option from the environment, over the file.
    let env: Vec<(String, String)> = keys
        .iter()
        .map(|(k, v, _)| {
            let value = sample(k, v)
                .trim_matches(|c| c == '"' || c == '[' || c == ']')
                .to_string();
            (format!("DAVDRIVE_{}", k.to_uppercase()), value)
        })
        .collect();
    let from_env = settings(&print_config(&["--config", file.to_str().unwrap()], &env));
    for (k, _, _) in &keys {
        let (_, _, src) = from_env.iter().find(|(x, _, _)| x == k).unwrap();
        if k == "backup_source" {
            // Repeatable: every layer adds.
            assert!(
                src.contains("file") && src.contains("environment"),
                "{k}: {src}"
            );
        } else {
            assert_eq!(
                src,
                &format!("environment DAVDRIVE_{}", k.to_uppercase()),
                "{k}"
            );
        }
    }

    // A flag wins over both.
    let flagged = settings(&print_config(
        &["--config", file.to_str().unwrap(), "--dir-ttl", "9s"],
        &env,
    ));
    let (_, v, src) = flagged.iter().find(|(k, _, _)| k == "dir_ttl").unwrap();
    assert_eq!((v.as_str(), src.as_str()), ("\"9s\"", "command line"));

    // An unknown key: one line naming it and the file.
    fs::write(&file, "dir_ttl = \"5s\"\ncache_max_sise = \"1G\"\n").unwrap();
    let out = print_config(&["--config", file.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("cache_max_sise") && err.contains(file.to_str().unwrap()),
        "{err}"
    );
    // A value of the wrong kind: one line too.
    fs::write(&file, "allow_other = \"sometimes\"\n").unwrap();
    let out = print_config(&["--config", file.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim().lines().count(),
        1
    );
}

/// Settings from the file and the environment take effect on a real mount.
#[test]
fn settings_from_the_file_and_the_environment_take_effect() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start();
    fs::write(server.path("a.txt"), b"server file").unwrap();
    let base = tempfile::tempdir().unwrap();
    let file = base.path().join("davdrive.toml");
    fs::write(&file, "read_only = true\ndir_ttl = \"1s\"\n").unwrap();
    let mnt = base.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let out = Command::new(BIN)
        .arg("mount")
        .arg(server.url())
        .arg(&mnt)
        .arg("--daemon")
        .env("DAVDRIVE_CONFIG", &file)
        .env("DAVDRIVE_CACHE_DIR", base.path().join("cache"))
        .env("DAVDRIVE_FILE_MODE", "0604")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mnt = fs::canonicalize(&mnt).unwrap();
    let mode = fs::metadata(mnt.join("a.txt"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    let ro = is_read_only_mount(&mnt);
    let log_dir_exists = base.path().join("cache/davdrive.log").exists();
    let out = Command::new(BIN).arg("unmount").arg(&mnt).output().unwrap();
    assert!(out.status.success());
    assert_eq!(mode, 0o604);
    assert!(ro);
    assert!(
        log_dir_exists,
        "the cache dir from the environment was not used"
    );
}

fn state_of(p: &Path) -> String {
    let out = Command::new("getfattr")
        .args(["-n", "user.davdrive.state", "--only-values"])
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ctl` from where the user is: shell-relative paths, the mount found from the current
/// folder, options after the subcommand, evict of a folder.
#[test]
fn ctl_paths_resolve_from_the_current_folder() {
    let server = Server::start();
    fs::create_dir_all(server.path("doc/git")).unwrap();
    fs::write(server.path("doc/git/HEAD"), b"ref: refs/heads/main\n").unwrap();
    fs::write(server.path("doc/notes.txt"), b"notes").unwrap();
    let base = tempfile::tempdir().unwrap();
    let m = Mount::start(&server.url(), base.path(), &[]);
    let parent = m.mnt.parent().unwrap().to_path_buf();
    let ctl_in = |dir: &Path, args: &[&str]| {
        let out = Command::new(BIN)
            .arg("ctl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let mnt = m.mnt.to_str().unwrap();
    // From the mount's parent, `mnt/doc/git` is the folder inside the mount.
    let (ok, _, err) = ctl_in(&parent, &["--mount", mnt, "pin", "mnt/doc/git"]);
    assert!(ok, "{err}");
    wait_until(10, "HEAD pinned", || {
        state_of(&m.path("doc/git/HEAD")) == "pinned"
    });
    // Inside the mount, no --mount: found from the current folder; `git` is doc/git.
    let (ok, _, err) = ctl_in(&m.path("doc"), &["unpin", "git"]);
    assert!(ok, "{err}");
    assert_eq!(state_of(&m.path("doc/git/HEAD")), "cached");
    // Options after the subcommand.
    let (ok, out, err) = ctl_in(&parent, &["status", "--mount", mnt]);
    assert!(ok, "{err}");
    assert!(out.contains("remote:"), "{out}");
    let (ok, out, err) = ctl_in(&m.path("doc"), &["status", "--json"]);
    assert!(ok, "{err}");
    assert!(out.starts_with('{'), "{out}");
    // From the mount's root, paths from its root keep working.
    let (ok, _, err) = ctl_in(&parent, &["--mount", mnt, "pin", "doc/notes.txt"]);
    assert!(ok, "{err}");
    wait_until(10, "notes pinned", || {
        state_of(&m.path("doc/notes.txt")) == "pinned"
    });
    let (ok, _, err) = ctl_in(&parent, &["--mount", mnt, "unpin", "doc/notes.txt"]);
    assert!(ok, "{err}");

    // evict of a folder: its clean files, a changed one kept.
    assert_eq!(fs::read(m.path("doc/notes.txt")).unwrap(), b"notes");
    server.proxy.set_fault(Fault::Refuse);
    fs::write(m.path("doc/unsent.txt"), b"not yet on the server").unwrap();
    let (ok, out, err) = ctl_in(&m.path("doc"), &["evict", "."]);
    assert!(ok, "{err}");
    assert!(out.contains("evicted 2 file(s)"), "{out}");
    assert!(out.contains("kept 1"), "{out}");
    assert_eq!(state_of(&m.path("doc/notes.txt")), "remote-only");
    assert_eq!(state_of(&m.path("doc/git/HEAD")), "remote-only");
    assert_eq!(state_of(&m.path("doc/unsent.txt")), "dirty");
    server.proxy.clear_fault();
    // Outside any mount and without --mount: one line saying what to give.
    let (ok, _, err) = ctl_in(base.path(), &["status"]);
    assert!(!ok);
    assert!(err.contains("--mount"), "{err}");
}
