//! `ctl migrate` against real mounts and a real WebDAV server: a 2,000-file tree with
//! unicode names, a 200 MiB file and an unreadable file, cut by `kill -9` and finished
//! after a restart without sending finished files again; pause and resume; the remote
//! down during part of a run; `--delete-source` removing only verified files; a
//! migration three times the cache's size limit; a re-run sending only what changed; a
//! re-run with `--delete-source` freeing the source of what the server has; and bad input
//! refused with clear errors. Outcomes are checked on the server's side.

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// `ctl --json` expected to fail: its error text.
fn ctl_error(m: &Mount, args: &[&str]) -> String {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (ok, out, err) = ctl(m, &all);
    assert!(!ok, "ctl {args:?} should have failed: {out}");
    let v: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("ctl {args:?}: not JSON ({e}): {out} {err}"));
    assert_eq!(v["ok"], false);
    v["error"].as_str().unwrap().to_string()
}

fn start(m: &Mount, src: &Path, dest: &str, extra: &[&str]) -> i64 {
    let mut args = vec!["migrate", "start", src.to_str().unwrap(), dest];
    args.extend_from_slice(extra);
    let r = ctl_json(m, &args);
    r["id"].as_i64().unwrap()
}

fn status(m: &Mount, id: i64) -> Value {
    ctl_json(m, &["migrate", "status", &id.to_string()])[0].clone()
}

fn files(st: &Value, key: &str) -> u64 {
    st["files"][key].as_u64().unwrap()
}

/// Waits until migration `id` has ended; returns its last status.
fn wait_ended(m: &Mount, id: i64, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let st = status(m, id);
        let state = st["state"].as_str().unwrap().to_string();
        if state != "running" && state != "paused" {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "migration {id} did not end: {st}\nlog tail:\n{}",
            tail(&m.log_text())
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_status(m: &Mount, id: i64, secs: u64, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let st = status(m, id);
        if cond(&st) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {st}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A counter of the migration's worker (`copies` begun, `checks` of copied files made).
fn worker(st: &Value, key: &str) -> u64 {
    st["worker"][key].as_u64().unwrap()
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Writes `n` files of a few KiB in nested folders (some names unicode) under `dir`;
/// returns relative path → SHA-256.
fn make_tree(dir: &Path, n: usize, seed: u64) -> Vec<(String, String)> {
    make_tree_of(dir, n, seed, KIB)
}

/// `make_tree` with files of at least `min_size` bytes.
fn make_tree_of(dir: &Path, n: usize, seed: u64, min_size: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in 0..n {
        let sub = match i % 4 {
            0 => format!("d{}/e{}", i % 10, i % 5),
            1 => format!("d{}/Ünïcødé-{}", i % 10, i % 3),
            2 => format!("d{}", i % 10),
            _ => format!("d{}/e{}/深い/f{}", i % 10, i % 5, i % 2),
        };
        let name = match i % 3 {
            0 => format!("file-{i}.txt"),
            1 => format!("фото-{i} é.bin"),
            _ => format!("日本語 {i} 🙂.dat"),
        };
        let rel = format!("{sub}/{name}");
        let data = pattern(min_size + (i * 37) % (6 * KIB), seed + i as u64);
        fs::create_dir_all(dir.join(&sub)).unwrap();
        fs::write(dir.join(&rel), &data).unwrap();
        out.push((rel, sha256(&data)));
    }
    out
}

/// Asserts the server holds each file under `dest` with the given SHA-256.
fn assert_on_server(server: &Server, dest: &str, files: &[(String, String)]) {
    for (rel, sha) in files {
        let p = server.path(&format!("{dest}/{rel}"));
        assert_eq!(
            sha256_file(&p).as_deref(),
            Some(sha.as_str()),
            "{rel} on the server"
        );
    }
}

/// PUT requests the proxy saw, by decoded path.
fn puts(server: &Server) -> HashMap<String, usize> {
    requests(server, "PUT")
}

/// Requests of `method` the proxy saw, by decoded path.
fn requests(server: &Server, method_wanted: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for (method, path) in server.proxy.state.lock().unwrap().requests.iter() {
        if method == method_wanted {
            let p = percent_encoding::percent_decode_str(path)
                .decode_utf8_lossy()
                .into_owned();
            *out.entry(p).or_default() += 1;
        }
    }
    out
}

/// A regular file whose read fails with EIO even for root (who reads through any mode
/// bits, so chmod 000 proves nothing here): the memory file of a live process, bound
/// over a file of the tree. Reading it at offset 0 asks for an unmapped address.
struct UnreadableFile {
    path: PathBuf,
    holder: std::process::Child,
}

impl UnreadableFile {
    fn new(path: PathBuf) -> UnreadableFile {
        fs::write(&path, b"placeholder").unwrap();
        let holder = Command::new("sleep").arg("600").spawn().unwrap();
        let mem = format!("/proc/{}/mem", holder.id());
        let st = Command::new("mount")
            .arg("--bind")
            .arg(&mem)
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success(), "mount --bind {mem} failed");
        let err = fs::read(&path).expect_err("the bound file must not be readable");
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
        UnreadableFile { path, holder }
    }
}

impl Drop for UnreadableFile {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

/// Items of a migration in some states, read from the state store of a dead daemon.
fn items_in_states(cache: &Path, id: i64, states: &[&str]) -> Vec<String> {
    let conn = rusqlite::Connection::open(cache.join("state.db")).unwrap();
    let list = states
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(",");
    let mut st = conn
        .prepare(&format!(
            "SELECT rel_path FROM migration_items WHERE migration_id = ?1 AND kind = 'file' \
             AND state IN ({list})"
        ))
        .unwrap();
    st.query_map([id], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_large_tree_lands_verified_across_a_kill_9_without_resending_finished_files() {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("uploaded_files");
    fs::create_dir_all(&src).unwrap();
    let mut tree = make_tree(&src, 2000, 1);
    // 200 MiB, each MiB different.
    fs::create_dir_all(src.join("big")).unwrap();
    {
        use std::io::Write;
        let block = pattern(MIB, 77);
        let mut f = fs::File::create(src.join("big/large.bin")).unwrap();
        let mut all = sha2::Sha256::default();
        for i in 0..200u32 {
            let mut b = block.clone();
            b[..4].copy_from_slice(&i.to_le_bytes());
            f.write_all(&b).unwrap();
            sha2::Digest::update(&mut all, &b);
        }
        let sha = sha2::Digest::finalize(all)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        tree.push(("big/large.bin".into(), sha));
    }
    let unreadable = UnreadableFile::new(src.join("d3/unreadable.dat"));
    mkfifo(&src.join("d1/a-pipe"));
    std::os::unix::fs::symlink("../d2", src.join("d1/link-to-d2")).unwrap();

    let mut m = Mount::start(&server.url(), base.path(), &[]);
    let id = start(&m, &src, m.path("archive").to_str().unwrap(), &[]);

    // `ctl status` lists it among the jobs while it runs.
    let st = ctl_json(&m, &["status"]);
    let jobs = st["jobs"].as_array().unwrap();
    assert!(
        jobs.iter()
            .any(|j| j["id"] == format!("migration-{id}") && j["kind"] == "migration"),
        "{st}"
    );

    // kill -9 mid-way.
    wait_status(&m, id, 120, "600 files verified", |s| {
        files(s, "done") >= 600
    });
    m.kill9();
    server.proxy.wait_idle(Duration::from_secs(30));
    let finished = items_in_states(&m.cache, id, &["landed", "verified"]);
    let not_finished = items_in_states(&m.cache, id, &["pending", "importing", "staged"]);
    assert!(finished.len() >= 600, "{}", finished.len());
    assert!(
        !not_finished.is_empty(),
        "killed too late to prove anything"
    );
    let puts_at_kill = puts(&server);

    m.spawn();
    let st = wait_ended(&m, id, 240);
    assert_eq!(st["state"], "completed_with_errors", "{st}");
    assert_eq!(files(&st, "total"), 2002, "{st}");
    assert_eq!(files(&st, "done"), 2001, "{st}");
    assert_eq!(files(&st, "failed"), 1, "{st}");

    // Everything else is on the server, byte for byte.
    assert_on_server(&server, "archive", &tree);
    assert!(!server.path("archive/d3/unreadable.dat").exists());
    assert!(!server.path("archive/d1/a-pipe").exists());
    assert!(!server.path("archive/d1/link-to-d2").exists());

    // Files that had landed before the kill were not sent again.
    let puts_now = puts(&server);
    for rel in &finished {
        let path = format!("/archive/{rel}");
        if rel.starts_with("big/") {
            continue; // sent in parts to a scratch name
        }
        assert_eq!(
            puts_now.get(&path).copied().unwrap_or(0),
            puts_at_kill.get(&path).copied().unwrap_or(0),
            "{path} was sent again after the restart"
        );
        assert_eq!(puts_now.get(&path), Some(&1), "{path}");
    }
    let small_puts: usize = puts_now
        .iter()
        .filter(|(p, _)| p.starts_with("/archive/") && !p.contains("big"))
        .map(|(_, n)| n)
        .sum();
    // Only a copy in flight at the kill may have gone twice.
    assert!(
        small_puts <= 2000 + 8,
        "{small_puts} PUTs for 2000 small files"
    );

    // The unreadable file, the pipe and the link are listed with their reasons.
    let errors = ctl_json(&m, &["migrate", "errors", &id.to_string()]);
    let items = errors["items"].as_array().unwrap();
    let reason = |path: &str| -> String {
        items
            .iter()
            .find(|e| e["path"] == path)
            .unwrap_or_else(|| panic!("{path} not listed: {errors}"))["error"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(reason("d3/unreadable.dat").contains("Input/output error"));
    assert!(reason("d1/a-pipe").contains("FIFO"));
    assert!(reason("d1/link-to-d2").contains("symbolic link"));
    let (ok, text, _) = ctl(&m, &["migrate", "errors", &id.to_string()]);
    assert!(ok && text.contains("d3/unreadable.dat"), "{text}");

    // The mtime of a file in the drive is its source's.
    let src_mtime = fs::metadata(src.join(&tree[5].0))
        .unwrap()
        .modified()
        .unwrap();
    let dest_mtime = fs::metadata(m.path(&format!("archive/{}", tree[5].0)))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(src_mtime, dest_mtime);
    drop(unreadable);
}

#[test]
fn pause_resume_and_the_remote_down_during_the_run() {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("src");
    // 600 files of 64 KiB or more, with a cache of 16 MiB: the worker keeps at most
    // 8 MiB of unsent copies, so it cannot run far ahead of the uploads.
    let tree = make_tree_of(&src, 600, 2, 64 * KIB);
    let m = Mount::start(&server.url(), base.path(), &["--cache-max-size", "16M"]);
    let id = start(&m, &src, "p", &[]);

    wait_status(&m, id, 60, "some files verified", |s| {
        files(s, "done") >= 20
    });
    let st = ctl_json(&m, &["migrate", "pause", &id.to_string()]);
    assert_eq!(st["state"], "paused");
    // Pausing twice is refused; `ctl status` shows it paused.
    let e = ctl_error(&m, &["migrate", "pause", &id.to_string()]);
    assert!(e.contains("only a running migration"), "{e}");
    // The worker takes the pause: it ends once the file it had is copied.
    let paused = wait_status(&m, id, 30, "the worker to stop", |s| {
        s["worker"]["running"] == false
    });
    let pending = files(&paused, "pending");
    let copies = worker(&paused, "copies");
    assert!(pending > 0, "it had finished before the pause: {paused}");
    let jobs = ctl_json(&m, &["status"])["jobs"].clone();
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .any(|j| j["state"] == "paused"),
        "{jobs}"
    );

    // What was staged before the pause still uploads. Each upload that lands would wake
    // a worker waiting for room in the cache (600 files of 64 KiB do not fit in half of
    // 16 MiB): a worker still running would copy more meanwhile.
    wait_until(60, "the journal to drain while paused", || {
        ctl_json(&m, &["status"])["journal"]["waiting"] == 0
    });
    let st = status(&m, id);
    assert_eq!(
        worker(&st, "copies"),
        copies,
        "copies made while paused: {st}"
    );
    assert_eq!(
        files(&st, "pending"),
        pending,
        "files copied while paused: {st}"
    );
    assert_eq!(st["worker"]["running"], false, "{st}");

    // Resumed with the remote down: copies go on being staged in the drive meanwhile.
    server.proxy.set_fault(Fault::Refuse);
    let down = status(&m, id);
    ctl_json(&m, &["migrate", "resume", &id.to_string()]);
    wait_status(&m, id, 60, "files staged while the remote is down", |s| {
        files(s, "pending") + 30 <= files(&down, "pending")
    });
    let st = status(&m, id);
    // The counter that stood still while paused moves once resumed.
    assert!(worker(&st, "copies") >= copies + 30, "{st}");
    assert!(
        files(&st, "done") <= files(&down, "done") + 4,
        "verified while the server was down? {down} {st}"
    );
    server.proxy.set_fault(Fault::None);
    let st = wait_ended(&m, id, 120);
    assert_eq!(st["state"], "completed", "{st}");
    assert_eq!(files(&st, "done"), 600);
    assert_on_server(&server, "p", &tree);
    let e = ctl_error(&m, &["migrate", "resume", &id.to_string()]);
    assert!(e.contains("only a paused migration"), "{e}");
}

#[test]
fn delete_source_removes_only_verified_files() {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("src");
    let tree = make_tree(&src, 60, 3);
    fs::write(src.join("d0/refuse-me.txt"), b"the server says no").unwrap();
    fs::write(src.join("d1/scratch.tmp"), b"excluded").unwrap();
    server.proxy.state.lock().unwrap().canned.push(Canned {
        method: "PUT".into(),
        path_contains: "refuse-me".into(),
        status: 403,
        body: "forbidden".into(),
    });
    let m = Mount::start(&server.url(), base.path(), &[]);

    // With the remote down (the mount was used before, as a user's is), everything is
    // staged and nothing is verified: no source may go yet.
    fs::read_dir(&m.mnt).unwrap().count();
    server.proxy.set_fault(Fault::Refuse);
    let id = start(
        &m,
        &src,
        m.path("moved").to_str().unwrap(),
        &["--delete-source", "--exclude", "*.tmp", "--verify", "full"],
    );
    let staged = wait_status(&m, id, 60, "all staged", |s| {
        s["walk_done"] == true && files(s, "pending") == 0
    });
    // The worker goes over every copied file on each check (landed? verified? source to
    // remove?): two more checks since all were staged, and none may have gone.
    let checks = worker(&staged, "checks");
    wait_status(&m, id, 30, "two more checks of the staged files", |s| {
        worker(s, "checks") >= checks + 2
    });
    for (rel, _) in &tree {
        assert!(
            src.join(rel).exists(),
            "{rel} removed before it was verified"
        );
    }
    assert_eq!(files(&status(&m, id), "source_deleted"), 0);

    server.proxy.set_fault(Fault::None);
    let st = wait_ended(&m, id, 120);
    assert_eq!(st["state"], "completed_with_errors", "{st}");
    let errors = ctl_json(&m, &["migrate", "errors", &id.to_string()]);
    assert_eq!(errors["total"], 1, "{errors}");
    assert_eq!(st["excluded"], 1);
    assert_eq!(files(&st, "source_deleted"), 60, "{st}");
    assert_on_server(&server, "moved", &tree);
    for (rel, _) in &tree {
        assert!(
            !src.join(rel).exists(),
            "{rel}: verified but its source is kept"
        );
    }
    // Refused by the server: listed, and its source kept.
    assert!(src.join("d0/refuse-me.txt").exists());
    let errors = ctl_json(&m, &["migrate", "errors", &id.to_string()]);
    let refused = errors["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "d0/refuse-me.txt")
        .unwrap_or_else(|| panic!("{errors}"))
        .clone();
    assert!(
        refused["error"].as_str().unwrap().contains("refused"),
        "{refused}"
    );
    // Excluded: neither copied nor removed.
    assert!(src.join("d1/scratch.tmp").exists());
    assert!(!server.path("moved/d1/scratch.tmp").exists());
    // Emptied source folders went too; the one with the refused file stays.
    assert!(!src.join("d5").exists());
    assert!(src.join("d0").exists());
}

#[test]
fn a_migration_three_times_the_cache_limit_completes() {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let limit = 16 * MIB as u64;
    let mut tree = Vec::new();
    for i in 0..24 {
        let data = pattern(2 * MIB, 100 + i);
        let rel = format!("part-{i:02}.bin");
        fs::write(src.join(&rel), &data).unwrap();
        tree.push((rel, sha256(&data)));
    }
    let m = Mount::start(&server.url(), base.path(), &["--cache-max-size", "16M"]);
    let id = start(&m, &src, "bulk", &[]);
    let mut most_dirty = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = ctl_json(&m, &["status"]);
        most_dirty = most_dirty.max(st["cache"]["dirty_bytes"].as_u64().unwrap());
        let mst = status(&m, id);
        if mst["state"] != "running" {
            assert_eq!(mst["state"], "completed", "{mst}");
            break;
        }
        assert!(Instant::now() < deadline, "did not complete: {mst}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_on_server(&server, "bulk", &tree);
    // The worker waited for uploads instead of filling the cache with unsent copies.
    assert!(most_dirty <= limit, "{most_dirty} bytes staged at once");
    // Migrated content went first: the cache is back under its limit.
    wait_until(30, "the cache under its limit", || {
        ctl_json(&m, &["status"])["cache"]["bytes"]
            .as_u64()
            .unwrap()
            <= limit
    });
}

#[test]
fn a_rerun_sends_only_the_changed_file_and_bad_input_is_refused() {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("src");
    let mut tree = make_tree(&src, 30, 4);
    let m = Mount::start(&server.url(), base.path(), &[]);
    let first = start(&m, &src, "docs", &["--verify", "size"]);
    let st = wait_ended(&m, first, 60);
    assert_eq!(st["state"], "completed", "{st}");
    assert_on_server(&server, "docs", &tree);
    let before = puts(&server);

    // One file changes (size and mtime); the run again sends it and nothing else.
    let changed = tree[7].0.clone();
    let data = pattern(3 * KIB, 999);
    let was = fs::metadata(src.join(&changed))
        .unwrap()
        .modified()
        .unwrap();
    fs::write(src.join(&changed), &data).unwrap();
    fs::File::options()
        .write(true)
        .open(src.join(&changed))
        .unwrap()
        .set_modified(was + Duration::from_secs(2))
        .unwrap();
    tree[7].1 = sha256(&data);
    let second = start(&m, &src, m.path("docs").to_str().unwrap(), &[]);
    assert_ne!(first, second);
    // --watch follows it to the end (no terminal here: the bar is not drawn).
    let (ok, text, err) = ctl(&m, &["migrate", "status", &second.to_string(), "--watch"]);
    assert!(ok, "{err}");
    assert!(text.contains("completed"), "{text}");
    let st = status(&m, second);
    assert_eq!(st["state"], "completed", "{st}");
    assert_eq!(files(&st, "skipped"), 29, "{st}");
    assert_eq!(files(&st, "done"), 1, "{st}");
    assert_on_server(&server, "docs", &tree);
    let after = puts(&server);
    let sent: Vec<(&String, usize)> = after
        .iter()
        .map(|(p, n)| (p, n - before.get(p).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(sent, vec![(&format!("/docs/{changed}"), 1)]);

    // Listing, human status.
    let list = ctl_json(&m, &["migrate", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 2);
    let (ok, text, _) = ctl(&m, &["migrate", "status", &first.to_string()]);
    assert!(ok && text.contains("files: 30 total, 30 done"), "{text}");

    // Bad input.
    let id = first.to_string();
    let inside = m.path("docs");
    let e = ctl_error(&m, &["migrate", "start", inside.to_str().unwrap(), "x"]);
    assert!(e.contains("inside the mount"), "{e}");
    let missing = base.path().join("nope");
    let e = ctl_error(&m, &["migrate", "start", missing.to_str().unwrap(), "x"]);
    assert!(e.contains("No such file"), "{e}");
    let e = ctl_error(
        &m,
        &["migrate", "start", src.to_str().unwrap(), "/tmp/elsewhere"],
    );
    assert!(e.contains("outside the mount"), "{e}");
    let e = ctl_error(
        &m,
        &[
            "migrate",
            "start",
            src.to_str().unwrap(),
            "x",
            "--exclude",
            "a[b",
        ],
    );
    assert!(e.contains("--exclude"), "{e}");
    let e = ctl_error(
        &m,
        &[
            "migrate",
            "start",
            src.to_str().unwrap(),
            &format!("docs/{changed}"),
        ],
    );
    assert!(e.contains("is a file"), "{e}");
    let e = ctl_error(&m, &["migrate", "status", "999"]);
    assert!(e.contains("no migration 999"), "{e}");
    let e = ctl_error(&m, &["migrate", "pause", &id]);
    assert!(e.contains("is completed"), "{e}");
    let e = ctl_error(&m, &["migrate", "cancel", &id]);
    assert!(e.contains("ended already"), "{e}");
    let (ok, _, err) = ctl(
        &m,
        &[
            "migrate",
            "start",
            src.to_str().unwrap(),
            "x",
            "--verify",
            "md5",
        ],
    );
    assert!(!ok && err.contains("md5"), "{err}");

    // --follow-symlinks copies what a link points to.
    let linked_src = base.path().join("linked");
    fs::create_dir_all(&linked_src).unwrap();
    fs::write(base.path().join("outside.txt"), b"pointed at").unwrap();
    std::os::unix::fs::symlink(base.path().join("outside.txt"), linked_src.join("link.txt"))
        .unwrap();
    let linked = start(&m, &linked_src, "linked", &["--follow-symlinks"]);
    let st = wait_ended(&m, linked, 60);
    assert_eq!(st["state"], "completed", "{st}");
    assert_eq!(
        fs::read(server.path("linked/link.txt")).unwrap(),
        b"pointed at"
    );

    // Cancel: stops, says what it left.
    let third_src = base.path().join("third");
    make_tree(&third_src, 200, 5);
    let third = start(&m, &third_src, "third", &[]);
    let r = ctl_json(&m, &["migrate", "cancel", &third.to_string()]);
    assert_eq!(r["state"], "cancelled");
    let left = r["landed_files"].as_u64().unwrap()
        + r["staged_files"].as_u64().unwrap()
        + r["not_copied_files"].as_u64().unwrap();
    assert!(left <= 200, "{r}");
    // The reply came once the worker had stopped: what it says is final.
    let st = status(&m, third);
    assert_eq!(st["state"], "cancelled");
    assert_eq!(st["worker"]["running"], false, "{st}");
    let pending = files(&st, "pending");
    assert_eq!(pending, r["not_copied_files"].as_u64().unwrap(), "{r} {st}");
    let copies = worker(&st, "copies");
    // What was staged still uploads, waking any worker that waits on uploads; none copies.
    wait_until(60, "the journal to drain after the cancel", || {
        ctl_json(&m, &["status"])["journal"]["waiting"] == 0
    });
    let st = status(&m, third);
    assert_eq!(
        worker(&st, "copies"),
        copies,
        "copies went on after cancel: {st}"
    );
    assert_eq!(
        files(&st, "pending"),
        pending,
        "copies went on after cancel: {st}"
    );
}

#[test]
fn a_rerun_with_delete_source_frees_the_source_of_what_the_server_has() {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("uploads");
    let mut tree = make_tree(&src, 40, 6);
    let m = Mount::start(&server.url(), base.path(), &[]);

    // Migrated, looked at: nothing was asked of the source.
    let first = start(&m, &src, "moved", &[]);
    let st = wait_ended(&m, first, 60);
    assert_eq!(st["state"], "completed", "{st}");
    assert_eq!(st["source"], Value::Null, "{st}");
    assert_on_server(&server, "moved", &tree);
    for (rel, _) in &tree {
        assert!(
            src.join(rel).exists(),
            "{rel} removed without --delete-source"
        );
    }

    // In between, one source file changes, and another client rewrites the server's copy
    // of another file in place: same size, other bytes, the drive not told.
    let changed = tree[3].0.clone();
    let changed_data = pattern(5 * KIB + 11, 3030);
    fs::write(src.join(&changed), &changed_data).unwrap();
    tree[3].1 = sha256(&changed_data);
    let (altered, altered_sha) = tree[8].clone();
    let altered_on_server = server.path(&format!("moved/{altered}"));
    let len = fs::metadata(&altered_on_server).unwrap().len() as usize;
    let theirs = pattern(len, 4040);
    fs::write(&altered_on_server, &theirs).unwrap();
    let puts_before = puts(&server);
    let gets_before = requests(&server, "GET");

    let second = start(&m, &src, "moved", &["--delete-source"]);
    let st = wait_ended(&m, second, 60);
    assert_eq!(st["state"], "completed_with_errors", "{st}");
    assert_eq!(files(&st, "total"), 40, "{st}");
    assert_eq!(files(&st, "source_deleted"), 39, "{st}");
    assert_eq!(files(&st, "failed"), 1, "{st}");
    let source = &st["source"];
    assert_eq!(source["removed"], 39, "{st}");
    assert_eq!(source["kept"], 1, "{st}");
    assert_eq!(source["kept_because"]["server_differs"], 1, "{st}");
    assert_eq!(source["to_do"], 0, "{st}");

    // Every file the server has with the source's bytes is gone from the source — the
    // changed one too, once its new content was sent and verified.
    let same: Vec<(String, String)> = tree
        .iter()
        .filter(|(r, _)| *r != altered)
        .cloned()
        .collect();
    assert_on_server(&server, "moved", &same);
    for (rel, _) in &same {
        assert!(
            !src.join(rel).exists(),
            "{rel}: on the server, but its source is kept"
        );
    }
    let sent: Vec<(String, usize)> = puts(&server)
        .into_iter()
        .map(|(p, n)| {
            let before = puts_before.get(&p).copied().unwrap_or(0);
            (p, n - before)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(sent, vec![(format!("/moved/{changed}"), 1)]);

    // The unchanged files were trusted on the first run's verification, the server still
    // naming the version it read; the file the other client rewrote was read back.
    let gets = requests(&server, "GET");
    let read_back = |rel: &str| {
        let p = format!("/moved/{rel}");
        gets.get(&p).copied().unwrap_or(0) - gets_before.get(&p).copied().unwrap_or(0)
    };
    assert!(read_back(&altered) >= 1, "{altered} was not read back");
    for (rel, _) in same.iter().filter(|(r, _)| *r != changed) {
        assert_eq!(read_back(rel), 0, "{rel} read back though verified before");
    }

    // The other client's copy is kept, not overwritten; so is the source, listed with
    // its reason.
    assert_eq!(fs::read(&altered_on_server).unwrap(), theirs);
    assert_eq!(
        sha256_file(&src.join(&altered)).as_deref(),
        Some(altered_sha.as_str())
    );
    let errors = ctl_json(&m, &["migrate", "errors", &second.to_string()]);
    assert_eq!(errors["total"], 1, "{errors}");
    let item = &errors["items"][0];
    assert_eq!(item["path"], altered.as_str(), "{errors}");
    let reason = item["error"].as_str().unwrap();
    assert!(
        reason.contains("not as in the source") && reason.contains("SHA-256"),
        "{reason}"
    );

    // SRC itself stays; folders emptied go, the one holding the kept file stays.
    assert!(src.is_dir());
    assert!(src.join(&altered).parent().unwrap().is_dir());
    assert!(altered.starts_with("d8/"), "{altered}");
    assert!(!src.join("d5").exists());

    // The human status says it too.
    let (ok, text, _) = ctl(&m, &["migrate", "status", &second.to_string()]);
    assert!(
        ok && text.contains("source: 39 file(s) removed, 1 kept (1 not the same on the server)"),
        "{text}"
    );
}

#[test]
fn a_rerun_with_delete_source_checks_the_server_as_verify_asks() {
    let server = Server::start();
    let base = tempfile::tempdir().unwrap();
    let m = Mount::start(&server.url(), base.path(), &[]);

    // --verify size: the server's size and ETag; a copy another client rewrote in place
    // (same size) has another ETag, and is kept.
    let src = base.path().join("by-size");
    let tree = make_tree(&src, 12, 7);
    let first = start(&m, &src, "by-size", &["--verify", "size"]);
    assert_eq!(wait_ended(&m, first, 60)["state"], "completed");
    let (altered, _) = tree[2].clone();
    let on_server = server.path(&format!("by-size/{altered}"));
    let theirs = pattern(fs::metadata(&on_server).unwrap().len() as usize, 5050);
    fs::write(&on_server, &theirs).unwrap();
    let gets_before = requests(&server, "GET");
    let second = start(
        &m,
        &src,
        "by-size",
        &["--delete-source", "--verify", "size"],
    );
    let st = wait_ended(&m, second, 60);
    assert_eq!(st["state"], "completed_with_errors", "{st}");
    assert_eq!(st["source"]["removed"], 11, "{st}");
    assert_eq!(st["source"]["kept_because"]["server_differs"], 1, "{st}");
    for (rel, _) in &tree {
        assert_eq!(src.join(rel).exists(), *rel == altered, "{rel}");
    }
    assert_eq!(fs::read(&on_server).unwrap(), theirs);
    let errors = ctl_json(&m, &["migrate", "errors", &second.to_string()]);
    assert_eq!(errors["items"][0]["path"], altered.as_str(), "{errors}");
    assert!(
        errors["items"][0]["error"]
            .as_str()
            .unwrap()
            .contains("ETag"),
        "{errors}"
    );
    assert_eq!(
        requests(&server, "GET"),
        gets_before,
        "size checks read nothing"
    );

    // A size verification does not stand for a full one: a full re-run reads each file
    // back before its source goes.
    let src = base.path().join("then-full");
    let tree = make_tree(&src, 6, 8);
    let first = start(&m, &src, "then-full", &["--verify", "size"]);
    assert_eq!(wait_ended(&m, first, 60)["state"], "completed");
    let gets_before = requests(&server, "GET");
    let second = start(&m, &src, "then-full", &["--delete-source"]);
    let st = wait_ended(&m, second, 60);
    assert_eq!(st["state"], "completed", "{st}");
    assert_eq!(st["source"]["removed"], 6, "{st}");
    assert_eq!(st["source"]["kept"], 0, "{st}");
    let gets = requests(&server, "GET");
    for (rel, _) in &tree {
        assert!(!src.join(rel).exists(), "{rel}");
        let p = format!("/then-full/{rel}");
        assert!(
            gets.get(&p).copied().unwrap_or(0) > gets_before.get(&p).copied().unwrap_or(0),
            "{rel} was not read back"
        );
    }
    assert!(src.is_dir());
}

/// The replies of the `migrate-*` commands on the control socket, as scripts read them
/// (`ctl --json`): every key and the kind of every value, pinned. Over the daemon
/// without a kernel: the replies are the daemon's, whatever serves the mount.
#[test]
fn migrate_replies_keep_their_shape_on_the_socket() {
    use davdrive::cache::CacheLimits;
    use davdrive::control::protocol::MigrateStatusArgs;
    use davdrive::control::protocol::{IdArgs, MigrateErrorsArgs, MigrateStartArgs};
    use davdrive::control::Request;
    use davdrive::migrate::Verify;
    use serde_json::json;

    let d = common::drive::Drive::new(CacheLimits {
        min_free: 0,
        ..CacheLimits::default()
    });
    let socket = d.daemon().control_socket().to_path_buf();
    let ask = |req: Request| ctl_socket(&socket, &req);
    let src = tempfile::tempdir().unwrap();
    fs::create_dir(src.path().join("d")).unwrap();
    fs::write(src.path().join("d/a.txt"), b"a").unwrap();
    fs::write(src.path().join("b.txt"), b"bb").unwrap();
    std::os::unix::fs::symlink("b.txt", src.path().join("link")).unwrap();
    let start = |dest: &str| MigrateStartArgs {
        src: src.path().to_path_buf(),
        dest: dest.into(),
        verify: Verify::Full,
        delete_source: false,
        exclude: None,
        follow_symlinks: false,
    };
    let status_of = |id: i64| ask(Request::MigrateStatus(MigrateStatusArgs { id: Some(id) }));

    // Offline, so that it stays running (its copies wait for the remote): paused,
    // resumed, cancelled.
    d.server.proxy.set_fault(Fault::Refuse);
    wait_until(10, "the drive to see the remote down", || {
        !d.core().health.is_online()
    });
    let first = ask(Request::MigrateStart(start("first")));
    let id = first["id"].as_i64().unwrap();
    let options = json!({"verify": "string", "delete_source": "bool", "exclude": [],
        "follow_symlinks": "bool"});
    let files = json!({"total": "int", "done": "int", "failed": "int", "skipped": "int",
        "pending": "int", "staged": "int", "landed": "int", "source_deleted": "int"});
    let status = |error: Value, finished_at: Value, source: Value| {
        json!({"id": "int", "src": "string", "dest": "string", "state": "string",
            "phase": "string", "error": error, "options": options, "created_at": "int",
            "started_at": "int", "finished_at": finished_at, "walk_done": "bool",
            "files": files, "dirs": "int", "other_skipped": "int", "other_failed": "int",
            "excluded": "int", "bytes": {"total": "int", "done": "int", "staged": "int"},
            "percent": "float", "rate_bytes_per_s": null, "eta_s": null, "errors": "int",
            "source": source, "worker": {"running": "bool", "copies": "int", "checks": "int"}})
    };
    // A running migration shows its rate and ETA once its worker has run for half a
    // second: numbers then, null before.
    let timeless = |v: &Value| {
        let mut s = shape(v);
        for k in ["rate_bytes_per_s", "eta_s"] {
            assert!(s[k].is_null() || s[k] == "int", "{k}: {v}");
            s[k] = Value::Null;
        }
        s
    };
    assert_eq!(
        timeless(&first),
        status(Value::Null, Value::Null, Value::Null),
        "{first}"
    );
    let paused = ask(Request::MigratePause(IdArgs { id }));
    assert_eq!(paused["state"], "paused");
    assert_eq!(
        shape(&paused),
        status(Value::Null, Value::Null, Value::Null),
        "{paused}"
    );
    // Among `status`'s jobs while paused.
    let jobs = ask(Request::Status {})["jobs"].clone();
    assert_eq!(
        shape(&jobs),
        json!([{"id": "string", "kind": "string", "state": "string", "percent": "float",
            "src": "string", "dest": "string"}]),
        "{jobs}"
    );
    assert_eq!(jobs[0]["kind"], "migration", "{jobs}");
    assert_eq!(jobs[0]["id"], format!("migration-{id}"), "{jobs}");
    assert_eq!(jobs[0]["state"], "paused", "{jobs}");
    let resumed = ask(Request::MigrateResume(IdArgs { id }));
    assert_eq!(resumed["state"], "running");
    assert_eq!(
        timeless(&resumed),
        status(Value::Null, Value::Null, Value::Null),
        "{resumed}"
    );
    let cancelled = ask(Request::MigrateCancel(IdArgs { id }));
    assert_eq!(
        shape(&cancelled),
        json!({"id": "int", "state": "string", "dest": "string", "landed_files": "int",
            "landed_bytes": "int", "staged_files": "int", "staged_bytes": "int",
            "not_copied_files": "int", "not_copied_bytes": "int", "walk_done": "bool"}),
        "{cancelled}"
    );

    // Online: to its end, the link skipped and the source kept.
    d.server.proxy.clear_fault();
    let mut args = start("second");
    args.delete_source = true;
    args.verify = Verify::Size;
    let id = ask(Request::MigrateStart(args))["id"].as_i64().unwrap();
    let mut ended = Value::Null;
    wait_until(60, "the migration to end", || {
        ended = status_of(id)[0].clone();
        ended["state"] != "running"
    });
    assert_eq!(ended["state"], "completed", "{ended}");
    let source = json!({"removed": "int", "kept": "int", "to_do": "int", "kept_because": {
        "copy_failed": "int", "server_differs": "int", "changed_since_copied": "int",
        "not_removable": "int", "excluded": "int", "not_a_regular_file": "int"}});
    let ended_shape = status(Value::Null, "int".into(), source);
    assert_eq!(shape(&ended), ended_shape, "{ended}");
    let current = ask(Request::MigrateStatus(MigrateStatusArgs { id: None }));
    assert_eq!(shape(&current), json!([ended_shape]), "{current}");
    let list = ask(Request::MigrateList {});
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert_eq!(shape(&list[1]), ended_shape, "{list}");
    let errors = ask(Request::MigrateErrors(MigrateErrorsArgs {
        id,
        limit: None,
    }));
    assert_eq!(
        shape(&errors),
        json!({"id": "int", "total": "int", "items": [{"path": "string", "kind": "string",
            "state": "string", "error": "string"}]}),
        "{errors}"
    );
}
