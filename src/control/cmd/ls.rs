//! `ctl ls [--state] PATH`: a folder's entries (or one file) with their cache state:
//! remote-only, partial, cached, pinned, dirty, conflict.

use serde::{Deserialize, Serialize};

use crate::control::client::{human_size, table};
use crate::control::protocol::LsArgs;
use crate::control::{resolve, CmdError, Context};
use crate::store::{self, Kind};

#[derive(Debug, Serialize, Deserialize)]
pub struct LsReply {
    pub path: String,
    pub entries: Vec<LsEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LsEntry {
    pub name: String,
    /// `dir` or `file`.
    pub kind: String,
    pub size: u64,
    pub cached_bytes: u64,
    pub state: String,
}

pub fn run(ctx: &Context, args: &LsArgs) -> Result<LsReply, CmdError> {
    let given = args.path.as_str();
    let (path, ino) = resolve(ctx, given)?;
    let core = &ctx.core;
    let node = core
        .db()
        .read(|c| store::get_node(c, ino))?
        .ok_or_else(|| CmdError(format!("{path}: gone")))?;
    let targets: Vec<(String, u64)> = if node.kind == Kind::Dir {
        core.ensure_listing(ino)?;
        core.db()
            .read(|c| store::children(c, ino))?
            .into_iter()
            .map(|c| (c.name, c.ino))
            .collect()
    } else {
        vec![(node.name.clone(), ino)]
    };
    let mut out = Vec::new();
    for (name, ino) in targets {
        let n = match core.db().read(|c| store::get_node(c, ino))? {
            Some(n) => n,
            None => continue,
        };
        out.push(LsEntry {
            name,
            kind: if n.kind == Kind::Dir { "dir" } else { "file" }.into(),
            size: n.size,
            cached_bytes: n.cached_bytes,
            state: core.file_state(ino)?.into(),
        });
    }
    Ok(LsReply { path, entries: out })
}

pub fn render(r: &LsReply) -> String {
    let rows = r
        .entries
        .iter()
        .map(|e| {
            let dir = e.kind == "dir";
            vec![
                e.state.clone(),
                if dir { "-".into() } else { human_size(e.size) },
                format!("{}{}", e.name, if dir { "/" } else { "" }),
            ]
        })
        .collect();
    table(&["STATE", "SIZE", "NAME"], rows)
}
