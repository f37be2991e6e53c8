//! What a migration shows of itself, typed once: the daemon serializes these as the
//! replies of the `migrate-*` control commands and `davdrive ctl` reads them back to show
//! them (`control/cmd/migrate_*.rs`). A key renamed here is renamed on the socket: the
//! shapes are pinned by `tests/migrate.rs`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Options;
use crate::jobs::Kind;

/// One migration's progress (`migrate-start`, `-status`, `-list`, `-pause`, `-resume`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationStatus {
    pub id: i64,
    pub src: String,
    pub dest: String,
    /// `running`, `paused`, or one of `FINAL_STATES`.
    pub state: String,
    /// What a running migration does: `walking`, `copying` or `verifying`; otherwise
    /// its state.
    pub phase: String,
    pub error: Option<String>,
    /// As given at the start; none if the stored options do not read.
    pub options: Option<Options>,
    /// Unix seconds.
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The walk of SRC has recorded every item.
    pub walk_done: bool,
    pub files: FileCounts,
    pub dirs: u64,
    /// Items neither file nor folder (symlinks, devices) skipped, or failed.
    pub other_skipped: u64,
    pub other_failed: u64,
    /// Left out by `--exclude`.
    pub excluded: u64,
    pub bytes: ByteCounts,
    /// Of the bytes (of the files if none), one decimal; 0 until the walk is done.
    pub percent: f64,
    /// While it runs, since the worker started.
    pub rate_bytes_per_s: Option<u64>,
    pub eta_s: Option<u64>,
    /// Items with an error recorded (`migrate-errors` lists them).
    pub errors: u64,
    /// With `--delete-source` only.
    pub source: Option<SourceReport>,
    pub worker: WorkerReport,
}

/// A migration among `ctl status`'s jobs: its progress in short.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationJob {
    /// `migration-<id>`: the migration among the other jobs.
    pub id: String,
    /// Always `migration`.
    pub kind: Kind,
    /// As `MigrationStatus`'s; these four are none if its status could not be read.
    pub state: Option<String>,
    pub percent: Option<f64>,
    pub src: Option<String>,
    pub dest: Option<String>,
}

/// Files by where they are in the migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileCounts {
    pub total: u64,
    /// Verified on the remote (the source removed or not).
    pub done: u64,
    pub failed: u64,
    pub skipped: u64,
    /// Not copied yet.
    pub pending: u64,
    /// Copied into the drive, not on the remote yet.
    pub staged: u64,
    /// On the remote, not verified yet.
    pub landed: u64,
    pub source_deleted: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ByteCounts {
    pub total: u64,
    pub done: u64,
    pub staged: u64,
}

/// With `--delete-source`: source files removed, kept (and why), and still to decide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceReport {
    pub removed: u64,
    pub kept: u64,
    /// A count per reason: the codes of `store::migrations::SourceKept`, `excluded` and
    /// `not_a_regular_file`.
    pub kept_because: BTreeMap<String, u64>,
    pub to_do: u64,
}

/// The migration's worker thread, if this daemon has one for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    pub running: bool,
    pub copies: u64,
    pub checks: u64,
}

/// `migrate-cancel`: what the cancelled migration left where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cancelled {
    pub id: i64,
    /// Always `cancelled`.
    pub state: String,
    pub dest: String,
    /// On the server: they stay.
    pub landed_files: u64,
    pub landed_bytes: u64,
    /// Copied into the drive: still uploaded.
    pub staged_files: u64,
    pub staged_bytes: u64,
    pub not_copied_files: u64,
    pub not_copied_bytes: u64,
    /// False if SRC was not fully walked.
    pub walk_done: bool,
}

/// `migrate-errors`: the items that failed or were skipped, with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Errors {
    pub id: i64,
    /// All of them; `items` holds at most the limit asked for.
    pub total: u64,
    pub items: Vec<ErrorItem>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorItem {
    /// Relative to SRC.
    pub path: String,
    pub kind: String,
    pub state: String,
    pub error: String,
}
