//! Long-running jobs of the daemon (backups, migrations), as `ctl status` lists them.
//! A job registers itself; the registry asks it for its report when asked itself.
//!
//! A report is typed once, here: the daemon serializes it among `status`'s `jobs` and
//! `davdrive ctl` reads it back to show it (`control/cmd/status.rs`). A key renamed here
//! is renamed on the socket: the shapes are pinned by `tests/backup.rs` and
//! `tests/migrate.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::backup::RunProgress;
use crate::migrate::MigrationJob;

/// What a job is: its `kind` on the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Backup,
    Migration,
}

impl fmt::Display for Kind {
    /// As on the socket.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.serialize(f)
    }
}

/// One job among `status`'s `jobs`: `{"id", "kind", "state", ...}`, the rest by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum JobReport {
    /// A backup run, as `backup-status` shows it while it runs. First: a migration's
    /// report lacks its `name` and byte counts, so never reads as one.
    Backup(RunProgress),
    Migration(MigrationJob),
}

impl JobReport {
    pub fn kind(&self) -> Kind {
        match self {
            JobReport::Backup(b) => b.kind,
            JobReport::Migration(m) => m.kind,
        }
    }
}

/// Something a job shows of itself.
pub trait Job: Send + Sync {
    fn report(&self) -> JobReport;
    /// A finished job drops out of the list.
    fn finished(&self) -> bool;
}

#[derive(Default)]
pub struct Jobs {
    running: Mutex<BTreeMap<String, Arc<dyn Job>>>,
}

impl Jobs {
    pub fn add(&self, id: String, job: Arc<dyn Job>) {
        self.lock().insert(id, job);
    }

    /// The jobs not finished yet, oldest id first.
    pub fn list(&self) -> Vec<JobReport> {
        let mut running = self.lock();
        running.retain(|_, j| !j.finished());
        running.values().map(|j| j.report()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<dyn Job>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Each kind's report on the socket, and read back as the same kind.
    #[test]
    fn reports_keep_their_keys_and_read_back_as_their_kind() {
        let backup = JobReport::Backup(RunProgress {
            id: "backup-5".into(),
            kind: Kind::Backup,
            name: "backup-h-1.tar.gz".into(),
            state: "uploading".into(),
            done_bytes: 1,
            total_bytes: 2,
        });
        let migration = JobReport::Migration(MigrationJob {
            id: "migration-7".into(),
            kind: Kind::Migration,
            state: Some("paused".into()),
            percent: Some(40.0),
            src: Some("/data".into()),
            dest: Some("/Archive".into()),
        });
        let unread = JobReport::Migration(MigrationJob {
            id: "migration-8".into(),
            kind: Kind::Migration,
            state: None,
            percent: None,
            src: None,
            dest: None,
        });
        let cases = [
            (
                backup,
                json!({"id": "backup-5", "kind": "backup", "name": "backup-h-1.tar.gz",
                    "state": "uploading", "done_bytes": 1, "total_bytes": 2}),
            ),
            (
                migration,
                json!({"id": "migration-7", "kind": "migration", "state": "paused",
                    "percent": 40.0, "src": "/data", "dest": "/Archive"}),
            ),
            (
                unread,
                json!({"id": "migration-8", "kind": "migration", "state": null,
                    "percent": null, "src": null, "dest": null}),
            ),
        ];
        for (report, wire) in cases {
            assert_eq!(serde_json::to_value(&report).unwrap(), wire);
            assert_eq!(JobReport::deserialize(&wire).unwrap(), report);
            assert_eq!(report.kind().to_string(), wire["kind"]);
        }
    }
}
