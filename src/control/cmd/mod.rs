//! One file per command: its handler (typed arguments from `protocol::Request` in, a
//! reply out, serialized as the `result` of the reply line) and the human rendering of
//! that reply for `davdrive ctl`. A file holds two commands where they share everything
//! (`pin`/`unpin`, `backup verify`/`restore`, `migrate status`/`pause`/`resume`,
//! `backup run`/`backup-job`); its first lines say so.
//!
//! Replies are typed structs, shared by the daemon and the client. Those of backups and
//! migrations are the types `crate::backup` and `crate::migrate` answer with, named
//! again in their command's file; `status`'s jobs are `crate::jobs::JobReport`s.

pub mod backup_list;
pub mod backup_run;
pub mod backup_status;
pub mod backup_verify;
pub mod cache;
pub mod conflicts;
pub mod conflicts_resolve;
pub mod evict;
pub mod health;
pub mod journal;
pub mod journal_drop;
pub mod journal_retry;
pub mod ls;
pub mod metrics;
pub mod migrate_cancel;
pub mod migrate_errors;
pub mod migrate_list;
pub mod migrate_start;
pub mod migrate_status;
pub mod pin;
pub mod status;
pub mod sync;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::protocol::Request;
use super::{CmdError, CmdResult, Context};

/// Runs one request (blocking: commands call into the core).
pub fn dispatch(ctx: &Context, req: &Request) -> CmdResult {
    fn reply<T: Serialize>(r: Result<T, CmdError>) -> CmdResult {
        Ok(serde_json::to_value(r?)?)
    }
    match req {
        Request::Status {} => reply(status::run(ctx)),
        Request::Health {} => reply(health::run(ctx)),
        Request::Metrics {} => reply(metrics::run(ctx)),
        Request::Sync(a) => reply(sync::run(ctx, a)),
        Request::Journal(a) => reply(journal::run(ctx, a)),
        Request::JournalRetry(a) => reply(journal_retry::run(ctx, a)),
        Request::JournalDrop(a) => reply(journal_drop::run(ctx, a)),
        Request::Pin(a) => reply(pin::run(ctx, a, true)),
        Request::Unpin(a) => reply(pin::run(ctx, a, false)),
        Request::Evict(a) => reply(evict::run(ctx, a)),
        Request::Cache {} => reply(cache::run(ctx)),
        Request::Ls(a) => reply(ls::run(ctx, a)),
        Request::Conflicts {} => reply(conflicts::run(ctx)),
        Request::ConflictsResolve(a) => reply(conflicts_resolve::run(ctx, a)),
        Request::BackupRun {} => reply(backup_run::run(ctx)),
        Request::BackupJob(a) => reply(backup_run::job(ctx, a)),
        Request::BackupStatus {} => reply(backup_status::status(ctx)),
        Request::BackupList {} => reply(backup_list::list(ctx)),
        Request::BackupVerify(a) => reply(backup_verify::verify(ctx, a)),
        Request::BackupRestore(a) => reply(backup_verify::restore(ctx, a)),
        Request::MigrateStart(a) => reply(migrate_start::start(ctx, a)),
        Request::MigrateStatus(a) => reply(migrate_status::status(ctx, a)),
        Request::MigrateList {} => reply(migrate_list::list(ctx)),
        Request::MigratePause(a) => reply(migrate_status::pause(ctx, a)),
        Request::MigrateResume(a) => reply(migrate_status::resume(ctx, a)),
        Request::MigrateCancel(a) => reply(migrate_cancel::cancel(ctx, a)),
        Request::MigrateErrors(a) => reply(migrate_errors::errors(ctx, a)),
    }
}

/// The human rendering of the `result` of a successful reply to `req`.
pub fn render(req: &Request, r: &Value) -> String {
    match req {
        Request::Status {} => typed(r, status::render),
        Request::Health {} => typed(r, health::render),
        Request::Metrics {} => typed(r, |t: &String| metrics::render(t)),
        Request::Sync(_) => typed(r, sync::render),
        Request::Journal(a) => typed(r, |e: &Vec<_>| journal::render(e, a.failed)),
        Request::JournalRetry(_) => typed(r, journal_retry::render),
        Request::JournalDrop(_) => typed(r, journal_drop::render),
        Request::Pin(_) | Request::Unpin(_) => typed(r, pin::render),
        Request::Evict(_) => typed(r, |e: &Vec<_>| evict::render(e)),
        Request::Cache {} => typed(r, cache::render),
        Request::Ls(_) => typed(r, ls::render),
        Request::Conflicts {} => typed(r, |c: &Vec<_>| conflicts::render(c)),
        Request::ConflictsResolve(_) => typed(r, conflicts_resolve::render),
        Request::BackupRun {} => typed(r, backup_run::render),
        // Sent by `backup run --wait` alone, which shows its own progress.
        Request::BackupJob(_) => pretty(r),
        Request::BackupStatus {} => typed(r, backup_status::render),
        Request::BackupList {} => typed(r, |l: &Vec<_>| backup_list::render(l)),
        Request::BackupVerify(_) | Request::BackupRestore(_) => typed(r, backup_verify::render),
        Request::MigrateStart(_) => typed(r, migrate_start::render),
        Request::MigrateStatus(_) => typed(r, |l: &Vec<_>| migrate_status::render(l)),
        Request::MigratePause(_) | Request::MigrateResume(_) => {
            typed(r, |m| migrate_status::render(std::slice::from_ref(m)))
        }
        Request::MigrateList {} => typed(r, |l: &Vec<_>| migrate_list::render(l)),
        Request::MigrateCancel(_) => typed(r, migrate_cancel::render),
        Request::MigrateErrors(_) => typed(r, migrate_errors::render),
    }
}

/// A reply read as its type and rendered; one that does not read (from a daemon of
/// another version) is shown as it came.
fn typed<T: DeserializeOwned>(r: &Value, render: impl FnOnce(&T) -> String) -> String {
    match T::deserialize(r) {
        Ok(t) => render(&t),
        Err(_) => pretty(r),
    }
}

fn pretty(r: &Value) -> String {
    format!("{}\n", serde_json::to_string_pretty(r).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::*;
    use serde_json::json;

    fn paths() -> PathsArgs {
        PathsArgs {
            paths: vec!["a".into()],
        }
    }

    /// Replies as the daemon wrote them with `json!` before they were typed: each must
    /// read as its type (not fall back to raw JSON) and read as it always did.
    #[test]
    fn replies_of_the_old_shape_render_as_before() {
        let status = json!({
            "online": true, "read_only": false, "read_only_reason": null, "since": 0,
            "last_check": null, "last_check_latency_ms": null, "last_error": "timed out",
            "journal": {"waiting": 2, "waiting_bytes": 2048, "oldest_age_s": 125,
                        "failed": 1, "in_flight": 0},
            "cache": {"files": 3, "bytes": 3145728, "clean_bytes": 1048576,
                      "dirty_files": 1, "dirty_bytes": 2097152, "pinned_files": 0,
                      "pinned_bytes": 0, "disk_free": 1073741824},
            "limits": {"max_age_s": 604800, "max_size": 10737418240u64,
                       "min_free": 1073741824},
            "conflicts": 0,
            "poll": {"interval_s": 0, "rounds": 0, "changes_total": 0,
                     "folder_etags": "unknown", "refetching": 0, "last": null},
            "jobs": [{"kind": "backup", "id": "backup-1", "name": "b1", "state": "running",
                      "done_bytes": 0, "total_bytes": 0}],
            "mountpoint": "/mnt/d", "metrics_url": null, "version": "0.1.0",
            "uptime_s": 3600,
        });
        assert_eq!(
            render(&Request::Status {}, &status),
            "remote:        online since never\n\
             last check:    never\n\
             last error:    timed out\n\
             journal:       2 waiting (2.0 KiB), oldest 2 min old, 0 in flight, 1 failed\n\
             cache:         3 files, 3.0 MiB (clean 1.0 MiB, dirty 2.0 MiB in 1 files, pinned 0 B in 0 files)\n\
             limits:        max age 7 d, max size 10.0 GiB, min free 1.0 GiB (free now 1.0 GiB)\n\
             conflicts:     0\n\
             poll:          off\n\
             jobs:          backup b1: running\n\
             davdrive:      0.1.0 on /mnt/d, up 1 h\n"
        );
        let sync = Request::Sync(SyncArgs::default());
        assert_eq!(
            render(
                &sync,
                &json!({"waiting": 4, "waiting_bytes": 10, "in_flight": 1, "failed": 2,
                        "uploaded_bytes": 0, "online": false})
            ),
            "sync started: remote offline, 4 waiting, 2 failed\n"
        );
        assert_eq!(
            render(&sync, &json!({"drained": true, "failed": 0})),
            "journal drained (0 failed entries set aside)\n"
        );
        assert_eq!(
            render(
                &Request::Pin(paths()),
                &json!({"paths": ["/a", "/b"], "pinned": true, "files_fetched": 3})
            ),
            "pinned /a, /b (3 file(s) fetched now)\n"
        );
        assert_eq!(
            render(
                &Request::Unpin(paths()),
                &json!({"paths": ["/a"], "pinned": false, "files_fetched": 0})
            ),
            "unpinned /a\n"
        );
        assert_eq!(
            render(
                &Request::Evict(paths()),
                &json!([
                    {"path": "/big.iso", "evicted": true, "bytes": 2048},
                    {"path": "/x", "evicted": false, "reason": "not cached"},
                    {"path": "/Videos", "evicted": true, "files": 2, "bytes": 1024,
                     "kept": 1, "reason": "changed, pinned or open files are kept"},
                    {"path": "/Empty", "evicted": false, "files": 0, "bytes": 0,
                     "kept": 0, "reason": null},
                ])
            ),
            "evicted /big.iso (2.0 KiB)\n\
             kept /x: not cached\n\
             evicted 2 file(s) in /Videos (1.0 KiB), kept 1\n\
             evicted 0 file(s) in /Empty (0 B), kept 0\n"
        );
        assert_eq!(
            render(
                &Request::JournalDrop(JournalDropArgs { id: 4, yes: true }),
                &json!({"dropped": 4, "content_saved_at": "/c/recovered/a.txt"})
            ),
            "dropped entry 4; its content is saved at /c/recovered/a.txt\n"
        );
        assert_eq!(
            render(
                &Request::JournalRetry(JournalRetryArgs::default()),
                &json!({"retried": 2})
            ),
            "2 entr(ies) will be tried again\n"
        );
        assert_eq!(
            render(
                &Request::ConflictsResolve(ConflictsResolveArgs {
                    path: "a".into(),
                    keep: Keep::Both
                }),
                &json!({"resolved": "/plan.txt", "kept": "remote", "conflict_copy": "/p (c).txt"})
            ),
            "resolved /plan.txt (kept remote)\n"
        );
        assert_eq!(
            render(&Request::Journal(JournalArgs { failed: true }), &json!([])),
            "No failed changes: nothing is set aside.\n"
        );
        let journal = render(
            &Request::Journal(JournalArgs::default()),
            &json!([{"id": 7, "op": "put", "path": "/a.txt", "dest": null, "attempts": 3,
                     "last_error": "HTTP 507", "failed": true, "age_s": 90}]),
        );
        assert_eq!(
            journal,
            "ID  OP   PATH    TRIES  AGE    LAST ERROR\n\
             7   put  /a.txt  3      1 min  FAILED: HTTP 507\n"
        );
        assert_eq!(
            render(
                &Request::Ls(LsArgs::default()),
                &json!({"path": "/", "entries": [
                    {"name": "d", "kind": "dir", "size": 0, "cached_bytes": 0,
                     "state": "remote-only"},
                    {"name": "f", "kind": "file", "size": 512, "cached_bytes": 512,
                     "state": "cached"}]})
            ),
            "STATE        SIZE   NAME\nremote-only  -      d/\ncached       512 B  f\n"
        );
        assert_eq!(
            render(&Request::Metrics {}, &json!("davdrive_up 1\n")),
            "davdrive_up 1\n"
        );
        // Shapes that must read as their types (the text is checked by the mount tests).
        let health = json!({"online": true, "read_only": false, "read_only_reason": null,
            "latency_ms": 1.5, "dav_classes": ["1", "2"], "partial_put": null,
            "partial_updates": false, "quota_available": null, "quota_used": 10,
            "dead_properties": true});
        let cache = json!({"usage": {"files": 1, "bytes": 2, "dirty_files": 0,
            "dirty_bytes": 0, "pinned_files": 0, "pinned_bytes": 0},
            "largest": [{"path": "/a", "bytes": 2, "last_access": 0}], "oldest": []});
        let conflicts = json!([{"id": 1, "path": "/a", "conflict_path": "/a (c)",
            "local_etag": null, "remote_etag": "\"x\"", "time": 0, "resolved": false}]);
        for (req, reply) in [
            (Request::Health {}, health),
            (Request::Cache {}, cache),
            (Request::Conflicts {}, conflicts),
            (
                Request::BackupRun {},
                json!({"id": 3, "name": "backup-h-1"}),
            ),
        ] {
            let text = render(&req, &reply);
            assert!(
                !text.starts_with(['{', '[']),
                "{req:?} fell back to JSON: {text}"
            );
        }
    }

    /// The replies of backups and migrations, as the daemon wrote them with `json!`
    /// before they were typed, read as their types and shown as they always were.
    #[test]
    fn backup_and_migrate_replies_render_as_before() {
        use crate::migrate::Verify;
        let run = json!({"id": 3, "name": "backup-h-20261123-000000.tar.gz",
            "started_at": 1_700_000_000, "ended_at": 1_700_000_060, "size": 2048,
            "sha256": "ab12", "state": "success", "error": null});
        let failed = json!({"id": 4, "name": "backup-h-20261124-000000.tar.gz",
            "started_at": 1_700_086_400, "ended_at": null, "size": null, "sha256": null,
            "state": "failed", "error": "disk full"});
        let status = |m: Value| {
            let mut base = json!({"id": 7, "src": "/data/up", "dest": "/Archive",
                "state": "running", "phase": "copying", "error": null,
                "options": {"verify": "full", "delete_source": true, "exclude": [],
                            "follow_symlinks": false},
                "created_at": 1_700_000_000, "started_at": 1_700_000_000, "finished_at": null,
                "walk_done": true,
                "files": {"total": 10, "done": 4, "failed": 1, "skipped": 2, "pending": 1,
                          "staged": 1, "landed": 1, "source_deleted": 3},
                "dirs": 2, "other_skipped": 1, "other_failed": 0, "excluded": 5,
                "bytes": {"total": 10_485_760, "done": 4_194_304, "staged": 1024},
                "percent": 40.0, "rate_bytes_per_s": 1_048_576, "eta_s": 6, "errors": 3,
                "source": {"removed": 3, "kept": 4, "to_do": 2, "kept_because": {
                    "copy_failed": 1, "server_differs": 0, "changed_since_copied": 1,
                    "not_removable": 0, "excluded": 2, "not_a_regular_file": 0}},
                "worker": {"running": true, "copies": 5, "checks": 4}});
            for (k, v) in m.as_object().unwrap() {
                base[k] = v.clone();
            }
            base
        };
        let plain = status(
            json!({"state": "completed", "phase": "completed", "source": null,
                "rate_bytes_per_s": null, "eta_s": null, "errors": 0, "error": "stopped",
                "percent": 100.0}),
        );
        let id = IdArgs { id: 7 };
        let cases: Vec<(Request, Value)> = vec![
            (
                Request::BackupStatus {},
                json!({"last": failed, "last_success": run, "running":
                    {"id": "backup-5", "kind": "backup", "name": "b5", "state": "uploading",
                     "done_bytes": 1, "total_bytes": 2},
                    "schedule": "03:00:00", "next_at": 1_700_100_000,
                    "scheduler": {"decided_at": 1, "ran": null, "why": null,
                                  "next_at": 1_700_100_000},
                    "keep_days": 30, "dir": "/.davdrive/backups/h", "sources": ["/etc"],
                    "remote": {"count": 2, "bytes": 4096}}),
            ),
            (
                Request::BackupStatus {},
                json!({"last": null, "last_success": null, "running": null,
                    "schedule": null, "next_at": null, "scheduler": null, "keep_days": 7,
                    "dir": "/b", "sources": [],
                    "remote": {"error": "the remote is unreachable: refused"}}),
            ),
            (
                Request::BackupList {},
                json!([
                    {"name": "backup-h-2.tar.gz", "size": 2048, "made_at": 1_700_000_000,
                     "state": "success", "sha256": "ab"},
                    {"name": "backup-h-1.tar.gz", "size": 10, "made_at": 1_690_000_000,
                     "state": "not in this mount's log", "sha256": null}]),
            ),
            (Request::BackupList {}, json!([])),
            (
                Request::BackupVerify(BackupNameArgs { name: "b".into() }),
                json!({"name": "backup-h-1.tar.gz",
                    "size": 10, "sha256": "ab", "entries": 12, "files_checked": 9,
                    "problems": ["/gone: not found"]}),
            ),
            (
                Request::BackupRestore(BackupRestoreArgs {
                    name: "b".into(),
                    to: "/r".into(),
                    force: false,
                }),
                json!({"name": "backup-h-1.tar.gz", "size": 10, "sha256": "ab", "entries": 12,
                    "files_checked": 9, "problems": [], "restored_entries": 12, "to": "/r"}),
            ),
            (Request::BackupJob(IdArgs { id: 3 }), {
                let mut j = run.clone();
                j["online"] = true.into();
                j
            }),
            (
                Request::MigrateStart(MigrateStartArgs {
                    src: "/d".into(),
                    dest: "A".into(),
                    verify: Verify::Full,
                    delete_source: false,
                    exclude: None,
                    follow_symlinks: false,
                }),
                plain.clone(),
            ),
            (
                Request::MigrateStatus(MigrateStatusArgs { id: None }),
                json!([status(json!({})), plain.clone()]),
            ),
            (
                Request::MigrateStatus(MigrateStatusArgs { id: None }),
                json!([]),
            ),
            (
                Request::MigratePause(id.clone()),
                status(json!({"state": "paused", "phase": "paused",
                    "rate_bytes_per_s": null, "eta_s": null})),
            ),
            (
                Request::MigrateResume(id.clone()),
                status(json!({"walk_done": false, "phase": "walking", "percent": 0.0})),
            ),
            (
                Request::MigrateList {},
                json!([status(json!({})), plain.clone()]),
            ),
            (
                Request::MigrateCancel(id.clone()),
                json!({"id": 7, "state": "cancelled", "dest": "/A",
                    "landed_files": 3, "landed_bytes": 3072, "staged_files": 1, "staged_bytes": 10,
                    "not_copied_files": 6, "not_copied_bytes": 1_048_576, "walk_done": false}),
            ),
            (
                Request::MigrateCancel(id.clone()),
                json!({"id": 7, "state": "cancelled", "dest": "/A",
                    "landed_files": 0, "landed_bytes": 0, "staged_files": 0, "staged_bytes": 0,
                    "not_copied_files": 0, "not_copied_bytes": 0, "walk_done": true}),
            ),
            (
                Request::MigrateErrors(MigrateErrorsArgs { id: 7, limit: None }),
                json!({"id": 7, "total": 3,
                    "items": [
                        {"path": "d/link", "kind": "symlink", "state": "skipped",
                         "error": "a symlink"},
                        {"path": "x.bin", "kind": "file", "state": "failed",
                         "error": "HTTP 507"}]}),
            ),
        ];
        // Times are shown in local time; `@<unix time>` stands for one.
        let want: [&[&str]; 16] = [
            &[
                "last backup:   backup-h-20261124-000000.tar.gz failed (started @1700086400)",
                "               disk full",
                "last success:  backup-h-20261123-000000.tar.gz success (started @1700000000, 2.0 KiB)",
                "running:       uploading",
                "schedule:      daily at 03:00:00, next @1700100000",
                "kept:          30 days, in /.davdrive/backups/h",
                "on the remote: 2 archive(s), 4.0 KiB",
            ],
            &[
                "last backup:   none",
                "last success:  none",
                "running:       no",
                "schedule:      off",
                "kept:          7 days, in /b",
                "on the remote: unknown (the remote is unreachable: refused)",
            ],
            &[
                "NAME               SIZE     MADE                 STATE",
                "backup-h-2.tar.gz  2.0 KiB  @1700000000  success",
                "backup-h-1.tar.gz  10 B     @1690000000  not in this mount's log",
            ],
            &[
                "NAME  SIZE  MADE  STATE",
            ],
            &[
                "backup-h-1.tar.gz: SHA-256 ab matches, 12 entries read to the end, 9 files match the manifest",
                "note from the backup: /gone: not found",
            ],
            &[
                "backup-h-1.tar.gz: SHA-256 ab matches, 12 entries read to the end, 9 files match the manifest",
                "restored 12 entries into /r",
            ],
            &[
                "{",
                "  \"ended_at\": 1700000060,",
                "  \"error\": null,",
                "  \"id\": 3,",
                "  \"name\": \"backup-h-20261123-000000.tar.gz\",",
                "  \"online\": true,",
                "  \"sha256\": \"ab12\",",
                "  \"size\": 2048,",
                "  \"started_at\": 1700000000,",
                "  \"state\": \"success\"",
                "}",
            ],
            &[
                "migration 7 started: /data/up -> /Archive (see `ctl migrate status 7`)",
            ],
            &[
                "migration 7: running (copying)  /data/up -> /Archive",
                "  files: 10 total, 4 done, 1 failed, 2 skipped, 5 excluded, 2 staged, 1 pending",
                "  bytes: 4.0 MiB of 10.0 MiB (40.0%), 1.0 MiB/s, ETA 6 s",
                "  source: 3 file(s) removed, 4 kept (1 not copied, 1 changed since copied, 2 excluded), 2 to do",
                "  3 item(s) to look at: `ctl migrate errors 7`",
                "migration 7: completed  /data/up -> /Archive",
                "  files: 10 total, 4 done, 1 failed, 2 skipped, 5 excluded, 2 staged, 1 pending",
                "  bytes: 4.0 MiB of 10.0 MiB (100.0%)",
                "  error: stopped",
            ],
            &[
                "no migrations",
            ],
            &[
                "migration 7: paused  /data/up -> /Archive",
                "  files: 10 total, 4 done, 1 failed, 2 skipped, 5 excluded, 2 staged, 1 pending",
                "  bytes: 4.0 MiB of 10.0 MiB (40.0%)",
                "  source: 3 file(s) removed, 4 kept (1 not copied, 1 changed since copied, 2 excluded), 2 to do",
                "  3 item(s) to look at: `ctl migrate errors 7`",
            ],
            &[
                "migration 7: running (walking)  /data/up -> /Archive",
                "  files: 10 total, 4 done, 1 failed, 2 skipped, 5 excluded, 2 staged, 1 pending",
                "  bytes: 4.0 MiB of 10.0 MiB (0.0%), 1.0 MiB/s, ETA 6 s",
                "  source: 3 file(s) removed, 4 kept (1 not copied, 1 changed since copied, 2 excluded), 2 to do",
                "  3 item(s) to look at: `ctl migrate errors 7`",
            ],
            &[
                "ID  STATE      DONE    FILES  FAILED  FROM -> TO",
                "7   running    40.0%   6/10   1       /data/up -> /Archive",
                "7   completed  100.0%  6/10   1       /data/up -> /Archive",
            ],
            &[
                "migration 7 cancelled: 3 file(s) (3.0 KiB) are on the server and stay; 1 (10 B) were copied into the drive and are still uploaded; 6 (1.0 MiB) were not copied (SRC was not fully walked yet)",
            ],
            &[
                "migration 7 cancelled: 0 file(s) (0 B) are on the server and stay; 0 (0 B) were copied into the drive and are still uploaded; 0 (0 B) were not copied",
            ],
            &[
                "STATE    PATH    REASON",
                "skipped  d/link  a symlink",
                "failed   x.bin   HTTP 507",
                "… and 1 more",
            ],
        ];
        for ((req, reply), want) in cases.iter().zip(want) {
            let mut want = want.join("\n") + "\n";
            for t in [1_700_086_400, 1_700_000_000, 1_700_100_000, 1_690_000_000] {
                want = want.replace(&format!("@{t}"), &backup_status::time(Some(t)));
            }
            assert_eq!(render(req, reply), want, "{req:?}");
        }
    }
}
