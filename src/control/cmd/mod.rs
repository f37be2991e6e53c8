//! One file per command: its handler (typed arguments from `protocol::Request` in, a
//! reply out, serialized as the `result` of the reply line) and the human rendering of
//! that reply for `davdrive ctl`. A file holds two commands where they share everything
//! (`pin`/`unpin`, `backup verify`/`restore`, `migrate status`/`pause`/`resume`,
//! `backup run`/`backup-job`); its first lines say so.
//!
//! Replies are typed structs, shared by the daemon and the client, except those of
//! backups and migrations, which `crate::backup` and `crate::migrate` build as JSON.

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
        Request::BackupJob(a) => backup_run::job(ctx, a),
        Request::BackupStatus {} => backup_status::status(ctx),
        Request::BackupList {} => backup_list::list(ctx),
        Request::BackupVerify(a) => backup_verify::verify(ctx, a),
        Request::BackupRestore(a) => backup_verify::restore(ctx, a),
        Request::MigrateStart(a) => migrate_start::start(ctx, a),
        Request::MigrateStatus(a) => migrate_status::status(ctx, a),
        Request::MigrateList {} => migrate_list::list(ctx),
        Request::MigratePause(a) => migrate_status::pause(ctx, a),
        Request::MigrateResume(a) => migrate_status::resume(ctx, a),
        Request::MigrateCancel(a) => migrate_cancel::cancel(ctx, a),
        Request::MigrateErrors(a) => migrate_errors::errors(ctx, a),
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
        Request::BackupJob(_) => pretty(r),
        Request::BackupStatus {} => backup_status::render(r),
        Request::BackupList {} => backup_list::render(r),
        Request::BackupVerify(_) | Request::BackupRestore(_) => backup_verify::render(r),
        Request::MigrateStart(_) => migrate_start::render(r),
        Request::MigrateStatus(_) | Request::MigratePause(_) | Request::MigrateResume(_) => {
            migrate_status::render(r)
        }
        Request::MigrateList {} => migrate_list::render(r),
        Request::MigrateCancel(_) => migrate_cancel::render(r),
        Request::MigrateErrors(_) => migrate_errors::render(r),
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
            "jobs": [{"kind": "backup", "id": "backup-1", "name": "b1", "state": "running"}],
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
}
