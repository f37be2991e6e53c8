//! Feedback on long work, against real mounts: `ctl sync --wait` writes progress lines
//! when its output is not a terminal and ends with the drained message; `journal` and
//! `journal --failed` say in words that nothing is there; `migrate status` names its
//! state once and counts excluded files.

mod common;

use std::fs;
use std::time::Duration;

use common::*;

#[test]
fn sync_wait_prints_progress_lines_then_drained_and_an_empty_journal_is_said_in_words() {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    let m = Mount::start(&server.url(), base.path(), &[]);

    // Nothing was written yet.
    let (ok, out, err) = ctl(&m, &["journal"]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "The journal is empty: every change is on the server."
    );

    // Changes made while the server is away wait in the journal.
    server.proxy.set_fault(Fault::Refuse);
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("f{i}.bin"), pattern(200_000, i)))
        .collect();
    for (name, data) in &files {
        fs::write(m.path(name), data).unwrap();
    }
    let waiting = ctl_json(&m, &["status"])["journal"]["waiting"]
        .as_u64()
        .unwrap();
    assert!(waiting >= 3, "{waiting}");

    // Every request now takes 1.5 s: the drain outlasts the first one-second report.
    server
        .proxy
        .set_fault(Fault::Delay(Duration::from_millis(1500)));
    let (ok, out, err) = ctl(&m, &["sync", "--wait"]);
    assert!(ok, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with(&format!("sync: {waiting} change(s) to send (")),
        "{out}"
    );
    assert!(lines[0].ends_with("remote online"), "{out}");
    let progress: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("sync: ") && l.contains(" change(s) sent, "))
        .collect();
    assert!(!progress.is_empty(), "no progress line:\n{out}");
    for l in &progress {
        assert!(l.contains(&format!(" of {waiting} change(s) sent")), "{l}");
    }
    // Bytes are counted as they are sent, before the server answers: a report comes
    // while the uploads wait for their answers (1.5 s, longer than a report's second).
    assert!(
        progress.iter().any(
            |l| l.contains(&format!(": 0 of {waiting} change(s) sent, "))
                && !l.contains(" sent, 0 B of ")
        ),
        "{out}"
    );
    assert_eq!(
        lines.last().unwrap(),
        &"journal drained (0 failed entries set aside)",
        "{out}"
    );
    // Nothing in between but those lines.
    assert_eq!(lines.len(), progress.len() + 2, "{out}");
    server.proxy.clear_fault();
    for (name, data) in &files {
        assert_eq!(fs::read(server.path(name)).unwrap(), *data);
    }

    let (ok, out, err) = ctl(&m, &["journal", "--failed"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "No failed changes: nothing is set aside.");
    let (ok, out, _) = ctl(&m, &["--json", "journal", "--failed"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["result"], serde_json::json!([]));
}

#[test]
fn migrate_status_names_the_state_once_and_counts_excluded_files() {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    let m = Mount::start(&server.url(), base.path(), &[]);
    let src = base.path().join("src");
    fs::create_dir_all(src.join("cache")).unwrap();
    fs::write(src.join("a.txt"), b"a").unwrap();
    fs::write(src.join("b.txt"), b"bb").unwrap();
    fs::write(src.join("scratch.tmp"), b"tmp").unwrap();
    fs::write(src.join("cache/x.dat"), b"x").unwrap();
    let r = ctl_json(
        &m,
        &[
            "migrate",
            "start",
            src.to_str().unwrap(),
            "moved",
            "--exclude",
            "*.tmp",
            "--exclude",
            "cache",
        ],
    );
    let id = r["id"].as_i64().unwrap();
    let mut last = serde_json::Value::Null;
    wait_until(60, "the migration to end", || {
        last = ctl_json(&m, &["migrate", "status", &id.to_string()])[0].clone();
        last["state"] != "running"
    });
    assert_eq!(last["state"], "completed", "{last}");
    assert_eq!(last["excluded"], 2, "{last}");

    let (ok, out, err) = ctl(&m, &["migrate", "status", &id.to_string()]);
    assert!(ok, "{err}");
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("migration {id}: completed ")),
        "{out}"
    );
    assert!(!out.contains("completed (completed)"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("files: 2 total, 2 done")
                && l.contains(", 2 excluded,")),
        "{out}"
    );
    // --watch through a pipe: plain lines, then the same summary.
    let (ok, out, err) = ctl(&m, &["migrate", "status", &id.to_string(), "--watch"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with(&format!("migration {id}: 2 of 2 file(s), 3 B of 3 B, ")),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&format!("migration {id}: completed ")),
        "{out}"
    );
    assert_eq!(fs::read(server.path("moved/a.txt")).unwrap(), b"a");
    assert!(!server.path("moved/scratch.tmp").exists());
}
