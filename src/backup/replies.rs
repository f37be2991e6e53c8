//! What the backup service answers, typed once: the daemon serializes these as the
//! replies of the `backup-*` control commands and `davdrive ctl` reads them back to show
//! them (`control/cmd/backup_*.rs`). A key renamed here is renamed on the socket: the
//! shapes are pinned by `tests/backup.rs`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::jobs::Kind;
pub use crate::store::backups::BackupRow;

/// A run as it goes (`backup-job` while it runs, `backup-status`'s `running`, and the
/// run among `ctl status`'s jobs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunProgress {
    /// `backup-<id>`: the run among the other jobs.
    pub id: String,
    /// Always `backup`.
    pub kind: Kind,
    pub name: String,
    /// What the run does now ("making the archive", "uploading", …), then its end state.
    pub state: String,
    pub done_bytes: u64,
    pub total_bytes: u64,
}

/// One run: its record in the log and, while it runs, its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupJob {
    #[serde(flatten)]
    pub run: BackupRow,
    /// Until the run has finished (the retention after a success included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<RunProgress>,
}

/// The daily schedule's latest decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleDecision {
    /// When it decided: unix seconds, the drive's clock.
    pub decided_at: i64,
    /// The run it started then (a backup id), if any…
    pub ran: Option<i64>,
    /// …and why it did.
    pub why: Option<String>,
    /// When it runs next.
    pub next_at: i64,
}

/// What the backup folder on the remote holds: listed, or why it could not be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RemoteArchives {
    Listed { count: usize, bytes: u64 },
    Unknown { error: String },
}

/// `backup-status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupStatus {
    pub last: Option<BackupRow>,
    pub last_success: Option<BackupRow>,
    pub running: Option<RunProgress>,
    /// The daily run's local time (`HH:MM:SS`); none: off.
    pub schedule: Option<String>,
    pub next_at: Option<i64>,
    /// None before the schedule has decided anything, or when it is off.
    pub scheduler: Option<ScheduleDecision>,
    pub keep_days: u32,
    /// The folder in the drive the archives go to.
    pub dir: String,
    pub sources: Vec<PathBuf>,
    pub remote: RemoteArchives,
}

/// One archive on the remote (`backup-list`), with what this mount's log knows of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveEntry {
    pub name: String,
    pub size: u64,
    /// Unix seconds, from the name.
    pub made_at: i64,
    /// The log's state of the run that made it, or "not in this mount's log".
    pub state: String,
    pub sha256: Option<String>,
}

/// `backup-verify`, and `backup-restore` with where to and how many entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verified {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    /// Entries read to the end of the archive.
    pub entries: usize,
    /// Files that match the manifest.
    pub files_checked: usize,
    /// What the backup noted when it was made (sources it could not read).
    pub problems: Vec<String>,
    /// Restores only: entries unpacked…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_entries: Option<usize>,
    /// …into this folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}
