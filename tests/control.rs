//! The control socket and `davdrive ctl`, against real mounts: every command, status
//! following the remote down and back, `sync --wait`, pins across a remount, dirty content
//! refused eviction, a client of another uid refused, malformed and oversized requests,
//! 50 clients at once, and a stale socket left by a killed daemon.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn setup() -> (Server, tempfile::TempDir, Mount) {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    let m = Mount::start(&server.url(), base.path(), &[]);
    (server, base, m)
}

fn socket(m: &Mount) -> std::path::PathBuf {
    m.cache.join("control.sock")
}

/// One raw request line on an open connection; returns the reply.
fn raw(conn: &UnixStream, line: &[u8]) -> Option<Value> {
    let mut w = conn;
    w.write_all(line).ok()?;
    let mut reply = String::new();
    BufReader::new(conn).read_line(&mut reply).ok()?;
    serde_json::from_str(&reply).ok()
}

#[test]
fn status_follows_the_remote_and_sync_wait_drains() {
    let (server, _b, m) = setup();
    let st = ctl_json(&m, &["status"]);
    assert_eq!(st["online"], true);
    assert_eq!(st["journal"]["waiting"], 0);
    assert_eq!(st["limits"]["max_age_s"], 7 * 86400);
    // Human output too.
    let (ok, text, _) = ctl(&m, &["status"]);
    assert!(ok);
    assert!(text.contains("remote:        online"), "{text}");

    // Listed once while online, as any use of a new mount does.
    fs::read_dir(&m.mnt).unwrap().count();
    server.proxy.set_fault(Fault::Refuse);
    fs::write(m.path("offline.txt"), b"written while the server is down").unwrap();
    wait_until(10, "status to say offline", || {
        ctl_json(&m, &["status"])["online"] == false
    });
    let st = ctl_json(&m, &["status"]);
    assert_eq!(st["journal"]["waiting"], 1);
    assert_eq!(st["journal"]["waiting_bytes"], 32);
    assert_eq!(st["cache"]["dirty_files"], 1);
    // The file's state, without the socket.
    let out = Command::new("getfattr")
        .args(["-n", "user.davdrive.state", "--only-values"])
        .arg(m.path("offline.txt"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "dirty");
    // Evicting unsent content is refused, with the reason.
    let (ok, _, err) = ctl(&m, &["evict", "offline.txt"]);
    assert!(!ok);
    assert!(err.contains("not yet uploaded"), "{err}");
    // sync --wait while down waits for the server up to its timeout, then says why.
    let (ok, _, err) = ctl(&m, &["sync", "--wait", "--timeout", "2s"]);
    assert!(!ok);
    assert!(
        err.contains("offline") && err.contains("not drained after 2s"),
        "{err}"
    );

    server.proxy.clear_fault();
    let (ok, out, err) = ctl(&m, &["sync", "--wait"]);
    assert!(ok, "{out} {err}");
    assert!(out.contains("drained"), "{out}");
    assert_eq!(
        fs::read(server.path("offline.txt")).unwrap(),
        b"written while the server is down"
    );
    let st = ctl_json(&m, &["status"]);
    assert_eq!(st["online"], true);
    assert_eq!(st["journal"]["waiting"], 0);
    assert_eq!(st["cache"]["dirty_files"], 0);
    // Clean now: it can go.
    let ev = ctl_json(&m, &["evict", "offline.txt"]);
    assert_eq!(ev[0]["evicted"], true);
    let ls = ctl_json(&m, &["ls", "--state", "."]);
    let entry = ls["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "offline.txt")
        .unwrap()
        .clone();
    assert_eq!(entry["state"], "remote-only");

    let h = ctl_json(&m, &["health"]);
    assert_eq!(h["online"], true);
    assert!(h["dav_classes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "1"));
    let metrics = ctl_json(&m, &["metrics"]);
    let text = metrics.as_str().unwrap();
    assert!(
        text.contains("davdrive_requests_total{method=\"PUT\",status=\"201\"}"),
        "{text}"
    );
    assert!(
        text.contains("davdrive_request_duration_seconds_bucket{le=\"+Inf\",method=\"PUT\"}"),
        "{text}"
    );
    assert!(text.contains("davdrive_cache_evictions_total 1"), "{text}");
}

#[test]
fn pins_fetch_and_survive_a_remount_and_paths_outside_are_refused() {
    let (server, _b, mut m) = setup();
    fs::create_dir(server.path("trip")).unwrap();
    fs::write(server.path("trip/map.pdf"), pattern(300_000, 1)).unwrap();
    fs::write(server.path("trip/tickets.pdf"), pattern(5_000, 2)).unwrap();
    let trip = m.path("trip");
    let r = ctl_json(&m, &["pin", trip.to_str().unwrap()]);
    assert_eq!(r["files_fetched"], 2);
    let ls = ctl_json(&m, &["ls", "trip"]);
    for e in ls["entries"].as_array().unwrap() {
        assert_eq!(e["state"], "pinned", "{e}");
    }
    m.remount();
    // Offline after the remount, the pinned files read.
    server.proxy.set_fault(Fault::Refuse);
    assert_eq!(
        fs::read(m.path("trip/map.pdf")).unwrap(),
        pattern(300_000, 1)
    );
    let ls = ctl_json(&m, &["ls", "trip"]);
    assert!(ls["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["state"] == "pinned"));
    let (ok, _, err) = ctl(&m, &["evict", "trip/map.pdf"]);
    assert!(!ok);
    assert!(err.contains("pinned"), "{err}");
    ctl_json(&m, &["unpin", "trip"]);
    let ev = ctl_json(&m, &["evict", "trip/map.pdf"]);
    assert_eq!(ev[0]["evicted"], true);
    // Outside the mount.
    let (ok, _, err) = ctl(&m, &["pin", "/etc/passwd"]);
    assert!(!ok);
    assert!(err.contains("outside the mount"), "{err}");
    let (ok, _, err) = ctl(&m, &["pin", "../x"]);
    assert!(!ok);
    assert!(err.contains(".."), "{err}");
    let cache = ctl_json(&m, &["cache"]);
    assert!(cache["usage"]["files"].as_u64().unwrap() >= 1);
}

#[test]
fn failed_entries_are_listed_retried_and_dropped_with_their_content_kept() {
    let (server, _b, m) = setup();
    server.proxy.state.lock().unwrap().canned.push(Canned {
        method: "PUT".into(),
        path_contains: "refused".into(),
        status: 403,
        body: "no".into(),
    });
    fs::write(m.path("refused-1.txt"), b"first").unwrap();
    fs::write(m.path("refused-2.txt"), b"second").unwrap();
    wait_until(30, "two failed entries", || {
        ctl_json(&m, &["journal", "--failed"])
            .as_array()
            .unwrap()
            .len()
            == 2
    });
    let failed = ctl_json(&m, &["journal", "--failed"]);
    let id_of = |name: &str| {
        failed
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"].as_str().unwrap().ends_with(name))
            .unwrap()["id"]
            .as_i64()
            .unwrap()
    };
    let (first, second) = (id_of("refused-1.txt"), id_of("refused-2.txt"));
    assert!(failed[0]["last_error"].as_str().unwrap().contains("403"));
    let (ok, text, _) = ctl(&m, &["journal", "--failed"]);
    assert!(ok);
    assert!(text.contains("FAILED"), "{text}");
    // Waiting cannot drain a journal whose changes are all set aside: `sync --wait`
    // says so at once, naming them, instead of waiting out its timeout.
    let started = std::time::Instant::now();
    let (ok, _, err) = ctl(&m, &["sync", "--wait", "--timeout", "60s"]);
    assert!(!ok);
    assert!(
        err.contains("2 change(s) need attention") && err.contains("refused-1.txt"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(30), "{err}");

    // Dropping asks for confirmation, then keeps the content where it says.
    let (ok, _, err) = ctl(&m, &["journal", "drop", &first.to_string()]);
    assert!(!ok);
    assert!(err.contains("--yes"), "{err}");
    let r = ctl_json(&m, &["journal", "drop", &first.to_string(), "--yes"]);
    let saved = r["content_saved_at"].as_str().unwrap();
    assert_eq!(fs::read(saved).unwrap(), b"first");
    assert!(
        !m.path("refused-1.txt").exists(),
        "never on the server: gone with its upload"
    );

    // The server accepts now: a retry sends it.
    server.proxy.state.lock().unwrap().canned.clear();
    let r = ctl_json(&m, &["journal", "retry", "--all"]);
    assert_eq!(r["retried"], 1);
    let (ok, _, err) = ctl(&m, &["sync", "--wait"]);
    assert!(ok, "{err}");
    assert_eq!(fs::read(server.path("refused-2.txt")).unwrap(), b"second");
    assert!(!server.path("refused-1.txt").exists());
    let (ok, _, err) = ctl(&m, &["journal", "retry", &second.to_string()]);
    assert!(!ok, "entry {second} is done");
    assert!(err.contains("no journal entry"), "{err}");
}

#[test]
fn conflicts_are_listed_and_resolved() {
    let (server, _b, m) = setup();
    fs::write(m.path("plan.txt"), b"v1").unwrap();
    wait_server_has(&server, "plan.txt", b"v1");
    server.proxy.set_fault(Fault::Refuse);
    fs::write(m.path("plan.txt"), b"ours").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    fs::write(server.path("plan.txt"), b"theirs").unwrap();
    server.proxy.clear_fault();
    wait_until(60, "the conflict", || {
        ctl_json(&m, &["conflicts"]).as_array().unwrap().len() == 1
    });
    let c = ctl_json(&m, &["conflicts"])[0].clone();
    assert_eq!(c["path"], "/plan.txt");
    assert_eq!(c["resolved"], false);
    let copy = c["conflict_path"]
        .as_str()
        .unwrap()
        .trim_start_matches('/')
        .to_string();
    assert_eq!(ctl_json(&m, &["status"])["conflicts"], 1);
    wait_until(30, "the conflict copy on the server", || {
        fs::read(server.path(&copy)).ok().as_deref() == Some(&b"ours"[..])
    });
    let r = ctl_json(&m, &["conflicts", "resolve", "plan.txt", "--keep", "local"]);
    assert_eq!(r["kept"], "local");
    let (ok, _, err) = ctl(&m, &["sync", "--wait"]);
    assert!(ok, "{err}");
    assert_eq!(fs::read(server.path("plan.txt")).unwrap(), b"ours");
    assert!(!server.path(&copy).exists());
    assert_eq!(ctl_json(&m, &["status"])["conflicts"], 0);
    let (ok, _, err) = ctl(&m, &["conflicts", "resolve", "plan.txt", "--keep", "local"]);
    assert!(!ok);
    assert!(err.contains("no unresolved conflict"), "{err}");
}

#[test]
fn bad_requests_get_error_replies_and_the_daemon_stays_up() {
    let (_server, _b, m) = setup();
    let conn = UnixStream::connect(socket(&m)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let r = raw(&conn, b"this is not json\n").unwrap();
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("malformed"));
    let r = raw(&conn, b"{\"cmd\":\"self-destruct\"}\n").unwrap();
    assert!(r["error"].as_str().unwrap().contains("unknown command"));
    let r = raw(&conn, b"{\"version\":99,\"cmd\":\"status\"}\n").unwrap();
    assert!(r["error"].as_str().unwrap().contains("version"));
    let r = raw(&conn, b"{\"cmd\":\"pin\",\"args\":{\"paths\":[1,2]}}\n").unwrap();
    assert_eq!(r["ok"], false);
    // An argument of the wrong type: an error reply naming the command.
    let r = raw(
        &conn,
        b"{\"cmd\":\"journal-drop\",\"args\":{\"id\":\"42\"}}\n",
    )
    .unwrap();
    assert_eq!(r["ok"], false);
    let e = r["error"].as_str().unwrap();
    assert!(e.starts_with("journal-drop: bad arguments"), "{e}");
    // Arguments null or left out, as older clients send them, are taken for none.
    let r = raw(
        &conn,
        b"{\"version\":1,\"cmd\":\"journal\",\"args\":null}\n",
    )
    .unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let r = raw(&conn, b"{\"cmd\":\"ls\"}\n").unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let r = raw(&conn, &[0xff, 0xfe, b'\n']).unwrap();
    assert_eq!(r["ok"], false);
    // Still usable after all that.
    let r = raw(&conn, b"{\"version\":1,\"cmd\":\"status\"}\n").unwrap();
    assert_eq!(r["ok"], true);

    // Over 1 MiB: an error reply, then the connection is closed.
    let conn = UnixStream::connect(socket(&m)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let big = vec![b'x'; (1 << 20) + 100];
    let _ = (&conn).write_all(&big);
    let mut reply = String::new();
    let mut reader = BufReader::new(&conn);
    reader.read_line(&mut reply).unwrap();
    let r: Value = serde_json::from_str(&reply).unwrap();
    assert!(r["error"].as_str().unwrap().contains("longer than"));
    let mut rest = String::new();
    assert_eq!(
        reader.read_line(&mut rest).unwrap_or(0),
        0,
        "closed after it"
    );

    // 50 clients at once.
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|_| {
                s.spawn(|| {
                    let c = UnixStream::connect(socket(&m)).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    raw(&c, b"{\"version\":1,\"cmd\":\"status\"}\n").unwrap()
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap()["ok"], true);
        }
    });
    assert!(is_mounted(&m.mnt));
    assert!(fs::read_dir(&m.mnt).is_ok());
}

#[test]
fn another_user_is_refused() {
    let (_server, b, m) = setup();
    // Open the way to the socket, so only the daemon's own check stands.
    use std::os::unix::fs::PermissionsExt;
    let mut dir = m.cache.clone();
    while dir != b.path() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        dir.pop();
    }
    fs::set_permissions(b.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(socket(&m), fs::Permissions::from_mode(0o666)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(socket(&m))
        .arg("status")
        .output()
        .expect("setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("permission denied"), "{err}");
    wait_until(10, "a log line about the refusal", || {
        m.log_text().contains("refused a connection from uid 65534")
    });
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_is_not() {
    let (server, b, mut m) = setup();
    m.kill9();
    assert!(
        socket(&m).exists(),
        "a killed daemon leaves its socket file"
    );
    m.spawn();
    assert_eq!(ctl_json(&m, &["status"])["online"], true);
    // A second mount that would use the same socket fails clearly.
    let other = b.path().join("other");
    fs::create_dir_all(other.join("mnt")).unwrap();
    let out = Command::new(BIN)
        .arg("mount")
        .arg(server.url())
        .arg(other.join("mnt"))
        .arg("--cache-dir")
        .arg(other.join("cache"))
        .arg("--control-socket")
        .arg(socket(&m))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by a running davdrive"), "{err}");
    assert!(!is_mounted(&other.join("mnt")));
    assert_eq!(ctl_json(&m, &["status"])["online"], true);
}
