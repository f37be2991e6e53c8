//! `ctl evict`: the cached content of files goes (refused for changes not yet
//! uploaded); of a folder, its clean files (`Core::evict`, `Core::evict_folder`).

use serde::{Deserialize, Serialize};

use crate::control::client::human_size;
use crate::control::protocol::PathsArgs;
use crate::control::{paths_arg, resolve, CmdError, Context};
use crate::fs::Evicted;

/// What happened to one path given.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EvictReply {
    Folder(FolderEvicted),
    File(FileEvicted),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FileEvicted {
    pub path: String,
    pub evicted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A folder: its clean files went; `kept` changed, pinned or open ones.
#[derive(Debug, Serialize, Deserialize)]
pub struct FolderEvicted {
    pub path: String,
    pub evicted: bool,
    pub files: u64,
    pub bytes: u64,
    pub kept: u64,
    pub reason: Option<String>,
}

pub fn run(ctx: &Context, args: &PathsArgs) -> Result<Vec<EvictReply>, CmdError> {
    let mut results = Vec::new();
    let mut refused = Vec::new();
    for given in paths_arg(args)? {
        let (path, ino) = resolve(ctx, given)?;
        let outcome = match ctx.core.evict(ino) {
            Ok(Evicted::Freed(n)) => EvictReply::File(FileEvicted {
                path,
                evicted: true,
                bytes: Some(n),
                reason: None,
            }),
            Ok(Evicted::NotCached) => EvictReply::File(FileEvicted {
                path,
                evicted: false,
                bytes: None,
                reason: Some("not cached".into()),
            }),
            Ok(why) => {
                let reason = match why {
                    Evicted::Dirty => "it has changes not yet uploaded; evicting would lose them",
                    Evicted::Pinned => "it is pinned; unpin it first",
                    Evicted::Open => "it is open",
                    _ => unreachable!(),
                };
                refused.push(format!("{path}: {reason}"));
                EvictReply::File(FileEvicted {
                    path,
                    evicted: false,
                    bytes: None,
                    reason: Some(reason.into()),
                })
            }
            // A folder: its clean files go; changed, pinned and open ones stay (that is
            // what evicting a folder means, not a refusal).
            Err(crate::fs::FsError::IsDir) => EvictReply::Folder(evict_folder(ctx, &path, ino)?),
            Err(e) => return Err(CmdError(format!("{path}: {e}"))),
        };
        results.push(outcome);
    }
    if !refused.is_empty() {
        return Err(CmdError(format!("refused: {}", refused.join("; "))));
    }
    Ok(results)
}

fn evict_folder(ctx: &Context, path: &str, ino: u64) -> Result<FolderEvicted, CmdError> {
    let done = ctx
        .core
        .evict_folder(ino)
        .map_err(|e| CmdError(format!("{path}: {e}")))?;
    Ok(FolderEvicted {
        path: path.to_string(),
        evicted: done.files > 0,
        files: done.files,
        bytes: done.bytes,
        kept: done.kept,
        reason: (done.kept > 0).then(|| "changed, pinned or open files are kept".into()),
    })
}

pub fn render(r: &[EvictReply]) -> String {
    r.iter()
        .map(|e| match e {
            EvictReply::Folder(f) => format!(
                "evicted {} file(s) in {} ({}), kept {}\n",
                f.files,
                f.path,
                human_size(f.bytes),
                f.kept
            ),
            EvictReply::File(f) if f.evicted => format!(
                "evicted {} ({})\n",
                f.path,
                human_size(f.bytes.unwrap_or(0))
            ),
            EvictReply::File(f) => {
                format!("kept {}: {}\n", f.path, f.reason.as_deref().unwrap_or(""))
            }
        })
        .collect()
}
