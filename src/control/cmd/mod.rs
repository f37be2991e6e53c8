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
