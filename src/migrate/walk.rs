//! The walk of SRC: depth first over open directory handles (walkdir), recording items
//! in batches as it goes, so memory does not grow with the tree.

use std::path::Path;
use std::time::UNIX_EPOCH;

use globset::{Glob, GlobSet, GlobSetBuilder};
use walkdir::WalkDir;

use super::db::{self, NewItem, INSERT_BATCH};
use super::{Control, MigrateError, MigrateResult, Migrations, Options};

/// The `--exclude` globs, matched against paths relative to SRC ("a/b.tmp"); `*` also
/// matches across `/`, so `*.tmp` excludes such files at any depth.
pub fn excludes(globs: &[String]) -> MigrateResult<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        let glob =
            Glob::new(g).map_err(|e| MigrateError::BadInput(format!("--exclude {g:?}: {e}")))?;
        b.add(glob);
    }
    b.build()
        .map_err(|e| MigrateError::BadInput(format!("--exclude: {e}")))
}

fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub fn source_mtime_ns(meta: &std::fs::Metadata) -> i64 {
    mtime_ns(meta)
}

fn special_kind(ft: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "a named pipe (FIFO)"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

pub enum Walked {
    Done,
    Stopped,
}

/// Walks `src`, recording its items under migration `id`. Stops early (resumable: a
/// walk started again skips what it recorded) when the control asks.
pub fn walk(
    m: &Migrations,
    id: i64,
    src: &Path,
    opts: &Options,
    control: &Control,
) -> MigrateResult<Walked> {
    let globs = excludes(&opts.exclude)?;
    // Never walk into the drive itself or its cache (SRC may hold them).
    let avoid: Vec<&Path> = m
        .mountpoint
        .as_deref()
        .into_iter()
        .chain([m.core.cache_dir()])
        .collect();
    let mut excluded = 0u64;
    let mut batch: Vec<NewItem> = Vec::with_capacity(INSERT_BATCH);
    let mut it = WalkDir::new(src)
        .follow_links(opts.follow_symlinks)
        .min_depth(1)
        .into_iter();
    loop {
        let entry = match it.next() {
            None => break,
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                // An unreadable directory, a symlink loop, a link to nowhere.
                let rel = e
                    .path()
                    .and_then(|p| p.strip_prefix(src).ok())
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let reason = match e.loop_ancestor() {
                    Some(a) => format!("symbolic link loop (back to {})", a.display()),
                    None => e
                        .io_error()
                        .map(|io| format!("cannot read: {io}"))
                        .unwrap_or_else(|| e.to_string()),
                };
                batch.push(NewItem {
                    rel_path: rel,
                    kind: "other",
                    size: 0,
                    mtime_ns: 0,
                    state: "failed",
                    error: Some(reason),
                });
                continue;
            }
        };
        let path = entry.path();
        let ft = entry.file_type();
        if avoid.contains(&path) {
            if ft.is_dir() {
                it.skip_current_dir();
            }
            continue;
        }
        let rel_os = path.strip_prefix(src).unwrap_or(path);
        let Some(rel) = rel_os.to_str() else {
            if ft.is_dir() {
                it.skip_current_dir();
            }
            batch.push(NewItem {
                rel_path: rel_os.to_string_lossy().into_owned(),
                kind: if ft.is_dir() { "dir" } else { "other" },
                size: 0,
                mtime_ns: 0,
                state: "failed",
                error: Some("name is not valid UTF-8 (names in the drive must be)".into()),
            });
            continue;
        };
        if globs.is_match(rel) {
            excluded += 1;
            if ft.is_dir() {
                it.skip_current_dir();
            }
            continue;
        }
        let item = if ft.is_symlink() {
            NewItem {
                rel_path: rel.into(),
                kind: "symlink",
                size: 0,
                mtime_ns: 0,
                state: "skipped",
                error: Some("symbolic link, not followed (--follow-symlinks follows them)".into()),
            }
        } else if ft.is_dir() || ft.is_file() {
            let meta = entry.metadata();
            let (size, mtime) = match &meta {
                Ok(md) => (if ft.is_file() { md.len() } else { 0 }, mtime_ns(md)),
                Err(_) => (0, 0),
            };
            NewItem {
                rel_path: rel.into(),
                kind: if ft.is_dir() { "dir" } else { "file" },
                size,
                mtime_ns: mtime,
                state: "pending",
                error: None,
            }
        } else {
            NewItem {
                rel_path: rel.into(),
                kind: "other",
                size: 0,
                mtime_ns: 0,
                state: "failed",
                error: Some(format!(
                    "{}: only files and folders are copied",
                    special_kind(&ft)
                )),
            }
        };
        batch.push(item);
        if batch.len() >= INSERT_BATCH {
            m.db().write(|c| db::insert_items(c, id, &batch))?;
            batch.clear();
            if control.take_stop().is_some() {
                return Ok(Walked::Stopped);
            }
        }
    }
    m.db().write(|c| db::insert_items(c, id, &batch))?;
    m.db().write(|c| db::set_walk_done(c, id, excluded))?;
    Ok(Walked::Done)
}
