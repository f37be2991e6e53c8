//! Backups: a live SQLite database captured consistently, retention with a clock moved
//! forward (31 days of backups keep 30; the newest successful one survives when all are
//! old), a backup made offline uploaded when the remote returns, a corrupted archive
//! failing verify, restore refusing to write over files without --force, a run missed
//! while the daemon was stopped made up at the next start, and, on a real mount, the
//! daily schedule firing and every `ctl backup` command.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use davdrive::backup::{BackupConfig, BackupRow, Backups, RemoteArchives, ScheduleDecision};
use davdrive::cache::CacheLimits;
use davdrive::jobs::Jobs;
use davdrive::store::ROOT_INO;
use serde_json::Value;

use common::drive::Drive;
use common::*;

const DAY: Duration = Duration::from_secs(86400);

fn host() -> String {
    hostname::get().unwrap().to_string_lossy().replace('/', "_")
}

fn config(sources: &[&Path]) -> BackupConfig {
    BackupConfig {
        sources: sources.iter().map(|p| p.to_path_buf()).collect(),
        at: None,
        ..BackupConfig::new(&host())
    }
}

fn drive() -> Drive {
    Drive::new(CacheLimits {
        min_free: 0,
        ..CacheLimits::default()
    })
}

fn start(d: &Drive, cfg: BackupConfig) -> Arc<Backups> {
    Backups::start(d.core().clone(), cfg, Arc::new(Jobs::default())).unwrap()
}

/// Runs a backup and waits for its end; returns its log record.
fn backup_now(b: &Arc<Backups>) -> BackupRow {
    let (id, _) = b.run_now().unwrap();
    wait_for_end(b, id)
}

fn wait_for_end(b: &Arc<Backups>, id: i64) -> BackupRow {
    let mut job = None;
    wait_until(60, "the backup to end", || {
        let j = b.job(id).unwrap();
        // Progress shows until the retention after it is done too.
        let ended = j.progress.is_none()
            && matches!(j.run.state.as_str(), "success" | "partial" | "failed");
        job = Some(j);
        ended
    });
    job.unwrap().run
}

fn server_dir(d: &Drive) -> PathBuf {
    d.server.path(&format!(".davdrive/backups/{}", host()))
}

fn archives_on_server(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.ends_with(".tar.gz"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn count_on_server(dir: &Path, suffix: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(suffix)
            })
            .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_database_written_during_the_backup_is_restored_consistent() {
    let d = drive();
    let src = tempfile::tempdir().unwrap();
    let db_path = src.path().join("app.sqlite3");
    let db = rusqlite::Connection::open(&db_path).unwrap();
    db.pragma_update(None, "journal_mode", "WAL").unwrap();
    db.execute_batch(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, body TEXT);
         CREATE TABLE lines (order_id INTEGER, body TEXT);",
    )
    .unwrap();
    // Two tables written in one transaction: a torn copy would show different counts.
    let insert = |c: &rusqlite::Connection, n: usize| {
        let tx = c.unchecked_transaction().unwrap();
        for _ in 0..n {
            tx.execute(
                "INSERT INTO orders (body) VALUES (hex(randomblob(200)))",
                [],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO lines VALUES (last_insert_rowid(), hex(randomblob(200)))",
                [],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    };
    insert(&db, 20_000);
    drop(db);
    std::fs::write(src.path().join("notes.txt"), b"plain file beside it").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let db_path = db_path.clone();
        std::thread::spawn(move || {
            let c = rusqlite::Connection::open(&db_path).unwrap();
            c.busy_timeout(Duration::from_secs(10)).unwrap();
            let mut batches = 0u64;
            while !stop.load(Ordering::Relaxed) {
                insert(&c, 50);
                batches += 1;
            }
            batches
        })
    };
    let count = |p: &Path| -> i64 {
        let c = rusqlite::Connection::open(p).unwrap();
        c.query_row("SELECT COUNT(*) FROM orders", [], |r| r.get(0))
            .unwrap()
    };
    // The writer is writing: it has committed a batch since it started.
    wait_until(30, "the writer's first batch", || count(&db_path) > 20_000);
    let before = count(&db_path);
    let b = start(&d, config(&[src.path()]));
    let job = backup_now(&b);
    let after = count(&db_path);
    stop.store(true, Ordering::Relaxed);
    let batches = writer.join().unwrap();
    assert_eq!(job.state, "success", "{job:?}");
    assert!(
        batches > 10,
        "the writer must really have been writing ({batches} batches)"
    );

    let to = tempfile::tempdir().unwrap();
    let restored = b.restore(&job.name, to.path(), false).unwrap();
    assert!(restored.restored_entries.unwrap() >= 4, "{restored:?}");
    let copy = to
        .path()
        .join("sources")
        .join(db_path.strip_prefix("/").unwrap());
    let c = rusqlite::Connection::open(&copy).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let (orders, lines): (i64, i64) = c
        .query_row(
            "SELECT (SELECT COUNT(*) FROM orders), (SELECT COUNT(*) FROM lines)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(orders, lines, "a transaction was torn in the copy");
    assert!(
        (before..=after).contains(&orders),
        "the copy ({orders} rows) is not a state the database went through ({before}..{after})"
    );
    assert_eq!(orders % 50, 0, "whole transactions only");
    // davdrive's own state store is in it too, as a database that opens.
    let state = rusqlite::Connection::open(to.path().join("davdrive/state.db")).unwrap();
    let nodes: i64 = state
        .query_row("SELECT COUNT(*) FROM nodes", [], |r| r.get(0))
        .unwrap();
    assert!(nodes >= 1);
    assert_eq!(
        std::fs::read(
            to.path()
                .join("sources")
                .join(src.path().strip_prefix("/").unwrap())
                .join("notes.txt")
        )
        .unwrap(),
        b"plain file beside it"
    );
    // What the server holds is what the log says.
    let on_server = server_dir(&d).join(&job.name);
    assert_eq!(sha256_file(&on_server).unwrap(), job.sha256.unwrap());
    b.stop();
}

#[test]
fn retention_keeps_thirty_days_and_always_the_newest_success() {
    let d = drive();
    let b = start(&d, config(&[]));
    let mut names = Vec::new();
    for _ in 0..31 {
        let job = backup_now(&b);
        assert_eq!(job.state, "success", "{job:?}");
        names.push(job.name);
        d.clock.advance(DAY);
    }
    d.wait_drained();
    let dir = server_dir(&d);
    let kept = archives_on_server(&dir);
    assert_eq!(kept.len(), 30, "{kept:?}");
    assert_eq!(kept, names[1..].to_vec(), "the oldest goes");
    assert_eq!(count_on_server(&dir, ".sha256"), 30);

    // A later run that is only partial (a source is missing) is not a success.
    let missing = tempfile::tempdir().unwrap().path().join("gone");
    b.stop();
    let b = start(&d, config(&[&missing]));
    let partial = backup_now(&b);
    assert_eq!(partial.state, "partial", "{partial:?}");
    assert!(
        partial.error.as_deref().unwrap().contains("gone"),
        "{partial:?}"
    );

    // Everything is old now: all go but the newest successful one.
    d.clock.advance(100 * DAY);
    let deleted = b.prune().unwrap();
    assert_eq!(deleted.len(), 30, "{deleted:?}");
    assert!(deleted.contains(&partial.name));
    d.wait_drained();
    assert_eq!(archives_on_server(&dir), vec![names[30].clone()]);
    assert_eq!(count_on_server(&dir, ".sha256"), 1);
    b.stop();
}

#[test]
fn a_backup_made_offline_is_uploaded_when_the_remote_returns() {
    let d = drive();
    d.core().ensure_listing(ROOT_INO).unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("data.bin"), pattern(300_000, 3)).unwrap();
    let b = start(&d, config(&[src.path()]));
    d.server.proxy.set_fault(Fault::Refuse);
    wait_until(10, "the remote to look down", || {
        !d.core().health.is_online()
    });
    let (id, name) = b.run_now().unwrap();
    let mut job = b.job(id).unwrap();
    wait_until(30, "the backup to say it waits for the remote", || {
        job = b.job(id).unwrap();
        job.progress
            .as_ref()
            .is_some_and(|p| p.state.starts_with("waiting for the remote"))
    });
    assert_eq!(job.run.state, "uploading");
    assert!(!server_dir(&d).join(&name).exists());
    // Its status says so too.
    let status = b.status().unwrap();
    assert!(
        matches!(status.remote, RemoteArchives::Unknown { .. }),
        "{status:?}"
    );
    assert_eq!(
        status.running.map(|p| p.state),
        job.progress.map(|p| p.state)
    );

    d.server.proxy.set_fault(Fault::None);
    let job = wait_for_end(&b, id);
    assert_eq!(job.state, "success", "{job:?}");
    let sha = job.sha256.as_deref().unwrap();
    assert_eq!(sha256_file(&server_dir(&d).join(&name)).unwrap(), sha);
    let sum = std::fs::read_to_string(server_dir(&d).join(format!("{name}.sha256"))).unwrap();
    assert_eq!(sum, format!("{sha}  {name}\n"));
    // Nothing is left in the spool.
    let spool = d.state.path().join("backup-spool");
    let left: Vec<_> = std::fs::read_dir(&spool)
        .map(|rd| rd.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    b.stop();
}

#[test]
fn verify_catches_a_corrupted_archive_and_restore_needs_force_to_overwrite() {
    let d = drive();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a.txt"), b"first version").unwrap();
    let b = start(&d, config(&[src.path()]));
    let job = backup_now(&b);
    assert_eq!(job.state, "success", "{job:?}");
    let name = job.name.clone();
    let ok = b.verify(&name).unwrap();
    assert_eq!(Some(&ok.sha256), job.sha256.as_ref());
    assert!(ok.files_checked >= 2, "{ok:?}");

    // Restore, change a restored file, restore again: refused, nothing touched.
    let to = tempfile::tempdir().unwrap();
    b.restore(&name, to.path(), false).unwrap();
    let restored = to
        .path()
        .join("sources")
        .join(src.path().strip_prefix("/").unwrap())
        .join("a.txt");
    assert_eq!(std::fs::read(&restored).unwrap(), b"first version");
    std::fs::write(&restored, b"edited after the restore").unwrap();
    let err = b.restore(&name, to.path(), false).unwrap_err().to_string();
    assert!(err.contains("--force"), "{err}");
    assert_eq!(
        std::fs::read(&restored).unwrap(),
        b"edited after the restore"
    );
    b.restore(&name, to.path(), true).unwrap();
    assert_eq!(std::fs::read(&restored).unwrap(), b"first version");

    // One byte flipped on the server.
    let on_server = server_dir(&d).join(&name);
    let mut bytes = std::fs::read(&on_server).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&on_server, &bytes).unwrap();
    let err = b.verify(&name).unwrap_err().to_string();
    assert!(err.contains("SHA-256 mismatch"), "{err}");
    let err = b.restore(&name, tempfile::tempdir().unwrap().path(), false);
    assert!(err.is_err(), "a corrupted archive must not be restored");
    // Unknown and hostile names are refused.
    assert!(b.verify("backup-nope-20200101-000000").is_err());
    assert!(b.verify("../state.db").is_err());
    b.stop();
}

#[test]
fn a_run_missed_while_stopped_is_made_up_at_the_next_start() {
    let d = drive();
    let three = chrono::NaiveTime::from_hms_opt(3, 0, 0).unwrap();
    let at = Some(three);
    let runs = |d: &Drive| -> i64 {
        d.core()
            .db()
            .write(|c| c.query_row("SELECT COUNT(*) FROM backups", [], |r| r.get(0)))
            .unwrap()
    };
    let spawn = |d: &Drive| {
        let b = start(d, BackupConfig { at, ..config(&[]) });
        let (tx, rx) = tokio::sync::watch::channel(false);
        d.server.rt.spawn(b.clone().schedule(rx));
        (b, tx)
    };
    // What the schedule decided at start, once it has: a run it started then is in the
    // log by the time it says so, and its next wake is hours of real time away.
    let decided = |b: &Arc<Backups>| -> ScheduleDecision {
        let mut v = None;
        wait_until(10, "the schedule's decision at start", || {
            v = b.scheduler();
            v.is_some()
        });
        v.unwrap()
    };
    let next = |d: &Drive| davdrive::backup::next_run(d.clock.now_s(), three);
    let (b, tx) = spawn(&d);
    // The first start only plans the next run.
    let first = decided(&b);
    assert_eq!(first.ran, None, "{first:?}");
    assert_eq!(first.next_at, next(&d), "{first:?}");
    assert_eq!(runs(&d), 0);
    backup_now(&b);
    b.stop();
    tx.send(true).unwrap();

    // Restarted within the day: nothing to make up.
    let (b, tx) = spawn(&d);
    let again = decided(&b);
    assert_eq!(again.ran, None, "made up a run: {again:?}");
    assert_eq!(again.next_at, next(&d), "{again:?}");
    assert_eq!(runs(&d), 1);
    b.stop();
    tx.send(true).unwrap();

    // Two days later: the missed run happens at start.
    d.clock.advance(2 * DAY);
    let (b, tx) = spawn(&d);
    let late = decided(&b);
    assert_eq!(runs(&d), 2);
    let id: i64 = d
        .core()
        .db()
        .write(|c| c.query_row("SELECT MAX(id) FROM backups", [], |r| r.get(0)))
        .unwrap();
    assert_eq!(late.ran, Some(id), "{late:?}");
    assert_eq!(
        late.why.as_deref(),
        Some("missed while davdrive was not running"),
        "{late:?}"
    );
    assert_eq!(late.next_at, next(&d), "{late:?}");
    assert_eq!(wait_for_end(&b, id).state, "success");
    b.stop();
    tx.send(true).unwrap();
}

// ----- on a real mount, through `davdrive ctl` -----------------------------------------

#[test]
fn the_schedule_fires_and_ctl_backup_runs_lists_verifies_and_restores() {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("app");
    std::fs::create_dir_all(src.join("uploads")).unwrap();
    std::fs::write(src.join("uploads/photo.jpg"), pattern(200_000, 5)).unwrap();
    // A few seconds from now, local time, as a user would write it.
    let soon = (chrono::Local::now() + chrono::Duration::seconds(4))
        .format("%H:%M:%S")
        .to_string();
    let src_arg = src.to_string_lossy().into_owned();
    let mut m = Mount::start(
        &server.url(),
        base.path(),
        &["--backup-source", &src_arg, "--backup-at", &soon],
    );
    let dir = server.path(&format!(".davdrive/backups/{}", host()));
    wait_until(30, "the scheduled backup on the server", || {
        count_on_server(&dir, ".sha256") == 1
    });
    let mut out = String::new();
    wait_until(10, "the scheduled backup to be done", || {
        let (ok, o, err) = ctl(&m, &["backup", "status"]);
        assert!(ok, "{err}");
        out = o;
        out.contains("running:       no") && out.contains("success")
    });
    assert!(out.contains("daily at"), "{out}");

    let (ok, out, err) = ctl(&m, &["backup", "run", "--wait"]);
    assert!(ok, "backup run --wait: {out} {err}");
    assert!(out.contains("done"), "{out}");
    wait_until(10, "two archives", || archives_on_server(&dir).len() == 2);

    let (ok, out, _) = ctl(&m, &["--json", "backup", "list"]);
    assert!(ok);
    let list: Value = serde_json::from_str(out.trim()).unwrap();
    let list = list["result"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.iter().all(|b| b["state"] == "success"), "{list:?}");
    let name = list[0]["name"].as_str().unwrap().to_string();

    let (ok, out, err) = ctl(&m, &["backup", "verify", &name]);
    assert!(ok, "{err}");
    assert!(out.contains("matches"), "{out}");

    let to = base.path().join("restored");
    let to_arg = to.to_string_lossy().into_owned();
    let (ok, _, err) = ctl(&m, &["backup", "restore", &name, "--to", &to_arg]);
    assert!(ok, "{err}");
    let photo = to
        .join("sources")
        .join(src.strip_prefix("/").unwrap())
        .join("uploads/photo.jpg");
    assert_eq!(std::fs::read(&photo).unwrap(), pattern(200_000, 5));
    let (ok, _, err) = ctl(&m, &["backup", "restore", &name, "--to", &to_arg]);
    assert!(!ok, "a second restore must be refused");
    assert!(err.contains("--force"), "{err}");
    let (ok, _, err) = ctl(
        &m,
        &["backup", "restore", &name, "--to", &to_arg, "--force"],
    );
    assert!(ok, "{err}");

    // A failure is loud: the exit status of run --wait, status, and the log.
    std::fs::remove_dir_all(&src).unwrap();
    let (ok, _, err) = ctl(&m, &["backup", "run", "--wait"]);
    assert!(!ok, "a partial backup must fail run --wait");
    assert!(err.contains("partial"), "{err}");
    let (_, out, _) = ctl(&m, &["backup", "status"]);
    assert!(out.contains("partial"), "{out}");
    m.unmount();
    assert!(m.log_text().contains("backup"), "the log names the problem");
}

/// The replies of the `backup-*` commands on the control socket, as scripts read them
/// (`ctl --json`): every key and the kind of every value, pinned.
#[test]
fn backup_replies_keep_their_shape_on_the_socket() {
    use davdrive::control::protocol::{BackupNameArgs, BackupRestoreArgs, IdArgs};
    use davdrive::control::Request;
    use serde_json::json;

    let d = drive();
    let socket = d.daemon().control_socket().to_path_buf();
    let ask = |req: Request| ctl_socket(&socket, &req);

    // Offline, so that it stays among `status`'s jobs (its upload waits for the remote).
    d.core().ensure_listing(ROOT_INO).unwrap();
    d.server.proxy.set_fault(Fault::Refuse);
    wait_until(10, "the remote to look down", || {
        !d.core().health.is_online()
    });
    let started = ask(Request::BackupRun {});
    assert_eq!(shape(&started), json!({"id": "int", "name": "string"}));
    let id = started["id"].as_i64().unwrap();
    let status = ask(Request::Status {});
    assert_eq!(
        shape(&status["jobs"]),
        json!([{"id": "string", "kind": "string", "name": "string", "state": "string",
            "done_bytes": "int", "total_bytes": "int"}]),
        "{status}"
    );
    assert_eq!(status["jobs"][0]["kind"], "backup", "{status}");
    assert_eq!(status["jobs"][0]["id"], format!("backup-{id}"), "{status}");
    d.server.proxy.set_fault(Fault::None);
    let mut job = Value::Null;
    wait_until(60, "the backup to end", || {
        job = ask(Request::BackupJob(IdArgs { id }));
        job.get("progress").is_none() && job["state"] == "success"
    });
    let run = json!({"id": "int", "name": "string", "started_at": "int", "ended_at": "int",
        "size": "int", "sha256": "string", "state": "string", "error": null});
    let mut with_online = run.clone();
    with_online["online"] = "bool".into();
    assert_eq!(shape(&job), with_online, "{job}");

    let status = ask(Request::BackupStatus {});
    assert_eq!(
        shape(&status),
        json!({"last": run, "last_success": run, "running": null, "schedule": null,
            "next_at": null, "scheduler": null, "keep_days": "int", "dir": "string",
            "sources": [], "remote": {"count": "int", "bytes": "int"}}),
        "{status}"
    );
    let list = ask(Request::BackupList {});
    assert_eq!(
        shape(&list),
        json!([{"name": "string", "size": "int", "made_at": "int", "state": "string",
            "sha256": "string"}]),
        "{list}"
    );
    let name = list[0]["name"].as_str().unwrap().to_string();
    let verified = ask(Request::BackupVerify(BackupNameArgs { name: name.clone() }));
    let checked = json!({"name": "string", "size": "int", "sha256": "string",
        "entries": "int", "files_checked": "int", "problems": []});
    assert_eq!(shape(&verified), checked, "{verified}");
    let to = tempfile::tempdir().unwrap();
    let restored = ask(Request::BackupRestore(BackupRestoreArgs {
        name,
        to: to.path().join("r"),
        force: false,
    }));
    let mut with_target = checked.clone();
    with_target["restored_entries"] = "int".into();
    with_target["to"] = "string".into();
    assert_eq!(shape(&restored), with_target, "{restored}");
}
