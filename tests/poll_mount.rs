//! The background poll through a real mount of the built-in server: a pinned folder
//! follows what another client does on the server, with nothing here opening it, and
//! the kernel forgets what it cached of the old version at once (the listing and
//! attribute TTLs are an hour here, so only the poll and the kernel notifications can
//! show the change). `ctl status` and the metrics tell of the poll.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::*;

const INTERVAL: Duration = Duration::from_secs(1);

/// `ctl ls` of a folder: name → (size, cached bytes, state).
fn cache_of(m: &Mount, dir: &str) -> Vec<(String, u64, u64, String)> {
    let ls = ctl_json(m, &["ls", dir]);
    ls["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["size"].as_u64().unwrap(),
                e["cached_bytes"].as_u64().unwrap(),
                e["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_pinned_folder_follows_the_server_without_being_opened() {
    let server = Server::start_builtin();
    fs::create_dir(server.path("keep")).unwrap();
    fs::write(server.path("keep/a.txt"), b"version one").unwrap();
    let base = tempfile::tempdir().unwrap();
    let m = Mount::start(
        &server.url(),
        base.path(),
        &[
            "--poll-interval",
            "1s",
            "--dir-ttl",
            "1h",
            "--attr-ttl",
            "1h",
        ],
    );
    let r = ctl_json(&m, &["pin", m.path("keep").to_str().unwrap()]);
    assert_eq!(r["files_fetched"], 1);
    // The kernel now holds a.txt's attributes (for an hour) and its pages.
    let a = m.path("keep/a.txt");
    let b = m.path("keep/b.txt");
    assert_eq!(fs::read(&a).unwrap(), b"version one");
    assert!(fs::metadata(&b).is_err());

    // Another client rewrites a.txt and adds b.txt.
    server.put_as_another_client("keep/a.txt", b"version two, longer");
    server.put_as_another_client("keep/b.txt", b"a new file");
    let changed = Instant::now();
    // Only stat here: a read would fetch what the poll is to fetch.
    wait_until(30, "the change to show through the mount", || {
        fs::metadata(&a).map(|md| md.len()).ok() == Some(19)
            && fs::metadata(&b).map(|md| md.len()).ok() == Some(10)
    });
    let took = changed.elapsed();
    assert!(
        took <= 2 * INTERVAL + Duration::from_millis(1500),
        "seen after {took:?}, more than two poll intervals (and the round itself)"
    );

    // Both are kept offline: cached whole, so reading them asks the server for nothing.
    wait_until(30, "the new versions to be cached", || {
        let files = cache_of(&m, "keep");
        files.len() == 2
            && files
                .iter()
                .all(|(_, size, cached, state)| size == cached && state == "pinned")
    });
    let gets = server.proxy.count("GET");
    assert_eq!(fs::read(&a).unwrap(), b"version two, longer");
    assert_eq!(fs::read(&b).unwrap(), b"a new file");
    assert_eq!(server.proxy.count("GET"), gets, "reads went to the server");

    // `ctl status` tells of the poll, in text and JSON; so do the metrics.
    // The round is recorded once it ends, which can be after its re-fetches landed.
    wait_until(30, "the poll round to be recorded", || {
        ctl_json(&m, &["status"])["poll"]["changes_total"]
            .as_u64()
            .is_some_and(|n| n >= 2)
    });
    let st = ctl_json(&m, &["status"]);
    let poll = &st["poll"];
    assert_eq!(poll["interval_s"], 1, "{poll}");
    assert!(poll["changes_total"].as_u64().unwrap() >= 2, "{poll}");
    assert!(poll["rounds"].as_u64().unwrap() >= 1, "{poll}");
    assert!(
        ["unknown", "propagated", "not_propagated"]
            .contains(&poll["folder_etags"].as_str().unwrap()),
        "{poll}"
    );
    let last = &poll["last"];
    assert!(last["at"].as_i64().unwrap() > 0, "{poll}");
    assert!(last["folders"].as_u64().unwrap() >= 1, "{poll}");
    for field in ["listed", "requests", "changes", "deferred", "took_ms"] {
        assert!(last[field].is_u64(), "{field} in {poll}");
    }
    let (ok, text, _) = ctl(&m, &["status"]);
    assert!(ok);
    assert!(
        text.lines().any(|l| l.starts_with("poll:")
            && l.contains("every 1 s")
            && l.contains("folder(s) checked")),
        "{text}"
    );
    let metrics = ctl_json(&m, &["metrics"]);
    let metrics = metrics.as_str().unwrap();
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing: {metrics}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert!(value("davdrive_polls_total") >= 1);
    assert!(value("davdrive_poll_changes_total") >= 2);
    assert!(value("davdrive_poll_requests_total") >= 1);
}

#[test]
fn no_poll_with_an_interval_of_zero() {
    let server = Server::start_builtin();
    let base = tempfile::tempdir().unwrap();
    let m = Mount::start(&server.url(), base.path(), &["--poll-interval", "0"]);
    let st = ctl_json(&m, &["status"]);
    assert_eq!(st["poll"]["interval_s"], 0);
    assert!(st["poll"]["last"].is_null());
    let (_, text, _) = ctl(&m, &["status"]);
    assert!(text.contains("poll:          off"), "{text}");
}
