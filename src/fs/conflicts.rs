//! Resolving a conflict. A conflict leaves the remote's version under the original name
//! and ours beside it under a conflict name; resolving keeps one side (or both) and marks
//! the conflict resolved. What is removed or renamed goes through the ordinary
//! operations, so it is journaled and replayed like any change.

use serde::{Deserialize, Serialize};

use super::{Core, FsError};
use crate::store::ROOT_INO;

/// Which side of a conflict to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Keep {
    /// Ours, under the original name; theirs goes.
    Local,
    /// Theirs, under the original name; our copy goes.
    Remote,
    /// Both, as they are.
    Both,
}

impl Keep {
    pub fn as_str(self) -> &'static str {
        match self {
            Keep::Local => "local",
            Keep::Remote => "remote",
            Keep::Both => "both",
        }
    }
}

/// A conflict, as recorded.
pub struct Conflict {
    pub id: i64,
    /// The original name (the remote's version).
    pub path: String,
    /// Ours, beside it.
    pub conflict_path: String,
}

/// Why a conflict was not resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no unresolved conflict")]
    NoConflict,
    #[error("{path}: the local version ({copy}) is no longer there to keep")]
    LocalGone { path: String, copy: String },
    #[error(
        "{path} has changes not yet uploaded or is open; try again once it is synced and closed"
    )]
    Busy { path: String },
    #[error(transparent)]
    Fs(#[from] FsError),
}

impl From<rusqlite::Error> for ResolveError {
    fn from(e: rusqlite::Error) -> Self {
        ResolveError::Fs(e.into())
    }
}

fn split(path: &str) -> (&str, &str) {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    (if dir.is_empty() { "/" } else { dir }, name)
}

impl Core {
    /// Resolves the newest open conflict at `path` (a mount path, from its root: the
    /// original name or the conflict copy's) keeping `keep`. Keeping ours is refused
    /// while the original has changes not yet uploaded or is open: replacing it would
    /// throw away edits made to it since.
    pub fn resolve_conflict(&self, path: &str, keep: Keep) -> Result<Conflict, ResolveError> {
        let c = self
            .db()
            .write(|c| crate::store::conflicts::latest_open_at(c, path))
            .map(|(id, path, conflict_path)| Conflict {
                id,
                path,
                conflict_path,
            })
            .map_err(|_| ResolveError::NoConflict)?;
        let has_copy = c.conflict_path != c.path && self.resolve_path(&c.conflict_path).is_ok();
        if keep == Keep::Local && !has_copy {
            return Err(ResolveError::LocalGone {
                path: c.path,
                copy: c.conflict_path,
            });
        }
        if keep == Keep::Local {
            // Replacing the original must not throw away edits made to it since.
            if let Ok(ino) = self.resolve_path(&c.path) {
                if self.file_state(ino)? == "dirty" || self.is_open(ino) {
                    return Err(ResolveError::Busy { path: c.path });
                }
            }
        }
        match keep {
            // Ours replaces theirs under the original name (a rename, replayed like any).
            Keep::Local if has_copy => {
                let (from_dir, from_name) = split(&c.conflict_path);
                let (to_dir, to_name) = split(&c.path);
                let from = self.resolve_path(from_dir)?;
                let to = if to_dir == "/" {
                    ROOT_INO
                } else {
                    self.resolve_path(to_dir)?
                };
                self.rename(from, from_name, to, to_name, false)?;
            }
            // Theirs stays; our copy goes.
            Keep::Remote if has_copy => {
                let (dir, name) = split(&c.conflict_path);
                let parent = self.resolve_path(dir)?;
                self.unlink(parent, name)?;
            }
            _ => {}
        }
        self.db()
            .write(|tx| crate::store::conflicts::mark_resolved(tx, c.id))?;
        Ok(c)
    }
}
