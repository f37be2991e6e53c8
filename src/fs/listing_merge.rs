//! Merging a folder listing fetched from the server into the node table: new names are
//! inserted, newer versions drop clean cached content, names gone on the server go here
//! too unless they hold local changes, and the kernel is told what changed.

use std::collections::{HashMap, HashSet};

use rusqlite::Connection;

use super::{check_name, is_internal_name, Core, FsResult};
use crate::journal;
use crate::remote::Entry as RemoteEntry;
use crate::store::{self, Kind, NewNode, Node, RangeSet};

/// What one merged listing changed in the node table.
#[derive(Debug, Default, Clone)]
pub(super) struct Applied {
    /// Files and links that took a newer remote version.
    pub changed: Vec<u64>,
    /// Nodes whose mode, owner or times another machine changed.
    pub meta: Vec<u64>,
    /// Names that appeared, with their new inode.
    pub added: Vec<(String, u64)>,
    /// Names that went (a name whose kind changed went and appeared).
    pub removed: Vec<String>,
    /// The folder's first listing: what it added was found, not changed.
    pub first: bool,
    /// A file open here has a newer version on the server, not taken yet: a later
    /// listing takes it, whatever the folder's ETag says then.
    pub held_open: bool,
}

impl Applied {
    /// Changes found: each name that came, went or changed version or metadata.
    pub fn count(&self) -> usize {
        if self.first {
            return 0;
        }
        self.changed.len() + self.meta.len() + self.added.len() + self.removed.len()
    }
}

impl Core {
    /// Merges a fresh remote listing of `dir` into the node table. Names with waiting
    /// journal entries keep their local state; clean files whose remote version changed
    /// lose their cached content; clean nodes gone from the remote go locally too.
    /// Returns None, merging nothing, when the replayer changed the remote since `epoch`.
    /// `remote_dir_path` is where the server has the folder: its old path while a rename
    /// of it (or of a folder above) waits in the journal. What changed is told to the
    /// kernel (attributes, pages and names it may cache), and returned.
    pub(super) fn merge_listing(
        &self,
        dir: u64,
        dir_path: &str,
        remote_dir_path: &str,
        entries: Vec<RemoteEntry>,
        epoch: u64,
    ) -> FsResult<Option<Applied>> {
        let mut dropped_content = Vec::new();
        let mut removed = Vec::new();
        let mut applied = Applied::default();
        // Never listed before: the kernel can hold nothing of its entries.
        // Not a `write`: the epoch is checked under the writer before the transaction,
        // and the dropped content files go after the commit with the writer still held.
        let merged = self.store.with_writer(|conn| -> FsResult<Merge> {
            // Checked under the store lock, which the replayer's commits also take.
            if self.remote_changes.touched_since(epoch, dir_path, true)
                || self
                    .remote_changes
                    .touched_since(epoch, remote_dir_path, true)
            {
                return Ok(Merge::Stale);
            }
            let tx = conn.unchecked_transaction()?;
            // Waiting entries name the folder by the name it had when they were recorded:
            // every name from the one it has now back to the one the server has. (Read
            // under the lock: a rename here since the fetch counts too.)
            let Some(dir_node) = store::get_node(&tx, dir)? else {
                return Ok(Merge::Gone); // removed meanwhile
            };
            let first = dir_node.listed_at.is_none();
            let Some(here_now) = store::path_of(&tx, dir)? else {
                return Ok(Merge::Gone); // removed meanwhile
            };
            let chain = journal::path_chain(&tx, &here_now)?;
            if chain.last().map(String::as_str) != Some(remote_dir_path) {
                // Listed at a path that is no longer where the server has it.
                return Ok(Merge::Stale);
            }
            let mut pending = Vec::new();
            for name in &chain {
                pending.extend(journal::names_pending_under(&tx, name)?);
            }
            pending.sort();
            pending.dedup();
            let is_pending =
                |name: &str| pending.binary_search_by(|p| p.as_str().cmp(name)).is_ok();
            let mut local: HashMap<String, Node> = store::children(&tx, dir)?
                .into_iter()
                .map(|n| (n.name.clone(), n))
                .collect();
            for e in entries {
                if is_internal_name(&e.name) {
                    continue;
                }
                if check_name(&e.name).is_err() {
                    tracing::warn!(
                        "ignoring remote entry with unusable name {:?} in {dir_path}",
                        e.name
                    );
                    continue;
                }
                let existing = local.remove(&e.name);
                if is_pending(&e.name) {
                    continue;
                }
                // Dead properties a davdrive wrote for this very version (a file replaced
                // by a client that writes none keeps stale ones: those are ignored).
                let meta = e.meta.as_ref().filter(|m| {
                    e.is_dir
                        || m.etag.is_none()
                        || crate::remote::same_etag(m.etag.as_deref(), e.etag.as_deref())
                });
                let link = meta.and_then(|m| m.link.as_deref()).filter(|_| !e.is_dir);
                let kind = match (e.is_dir, link) {
                    (true, _) => Kind::Dir,
                    (false, Some(_)) => Kind::Symlink,
                    (false, None) => Kind::File,
                };
                let mtime_ns = meta
                    .and_then(|m| m.mtime_ns)
                    .or_else(|| e.mtime.map(store::system_time_to_ns))
                    .unwrap_or_else(store::now_ns);
                match existing {
                    Some(n) if n.kind == kind => {
                        let same = crate::remote::same_etag(n.etag.as_deref(), e.etag.as_deref());
                        if kind != Kind::Dir && same && !n.dirty {
                            store::refresh_etag(&tx, n.ino, n.etag.as_deref(), e.etag.as_deref())?;
                            if n.remote_checksum != e.checksum {
                                store::set_remote_checksum(&tx, n.ino, e.checksum.as_deref())?;
                            }
                        }
                        if kind != Kind::Dir && !same && !n.dirty {
                            // An open file keeps its content until closed; the next
                            // listing after that picks up the new version.
                            applied.held_open |= self.is_open(n.ino);
                            if !self.is_open(n.ino) {
                                tracing::debug!(
                                    "{dir_path}/{}: remote version changed ({:?} -> {:?})",
                                    n.name,
                                    n.etag,
                                    e.etag
                                );
                                store::versions::adopt_remote_version(
                                    &tx,
                                    n.ino,
                                    e.etag.as_deref(),
                                    e.size,
                                    mtime_ns,
                                )?;
                                store::set_remote_checksum(&tx, n.ino, e.checksum.as_deref())?;
                                if !n.ranges.is_empty() {
                                    dropped_content.push(n.ino);
                                }
                                applied.changed.push(n.ino);
                            }
                        } else if !n.on_remote {
                            store::versions::mark_on_remote(&tx, n.ino)?;
                        }
                        if let (Some(t), false) = (link, n.dirty) {
                            if n.link_target.as_deref() != Some(t) {
                                store::set_link_target(&tx, n.ino, t)?;
                            }
                        }
                        if let Some(m) = meta {
                            // Another machine's chmod, chown or touch. Folder times stay
                            // local (they move with every change inside).
                            let mtime = (kind != Kind::Dir && !n.dirty && !self.is_open(n.ino))
                                .then_some(m.mtime_ns)
                                .flatten();
                            let differs = m.mode.is_some_and(|v| v != n.mode)
                                || m.uid.is_some_and(|v| v != n.uid)
                                || m.gid.is_some_and(|v| v != n.gid)
                                || mtime.is_some_and(|v| v != n.mtime_ns)
                                || m.atime_ns.is_some_and(|v| Some(v) > n.atime_ns);
                            if differs {
                                store::apply_remote_meta(&tx, n.ino, m, mtime)?;
                                applied.meta.push(n.ino);
                            }
                        }
                    }
                    // Our own link, uploaded, whose properties are still on their way.
                    Some(n)
                        if n.kind == Kind::Symlink
                            && kind == Kind::File
                            && crate::remote::same_etag(n.etag.as_deref(), e.etag.as_deref()) => {}
                    Some(n) => {
                        // A file became a directory or the other way round on the remote.
                        if n.dirty
                            || self.is_open(n.ino)
                            || !self
                                .remove_subtrees(&tx, &[n.ino], &mut removed)?
                                .is_empty()
                        {
                            continue;
                        }
                        applied.removed.push(e.name.clone());
                        let ino = self.insert_remote(&tx, dir, &e, kind, mtime_ns)?;
                        applied.added.push((e.name.clone(), ino));
                    }
                    None => {
                        let ino = self.insert_remote(&tx, dir, &e, kind, mtime_ns)?;
                        applied.added.push((e.name.clone(), ino));
                    }
                }
            }
            // What is left exists here but not on the remote.
            let gone: Vec<(u64, String)> = local
                .into_iter()
                .filter(|(name, n)| {
                    !is_pending(name) && n.on_remote && !n.dirty && !self.is_open(n.ino)
                })
                .map(|(name, n)| (n.ino, name))
                .collect();
            let roots: Vec<u64> = gone.iter().map(|(ino, _)| *ino).collect();
            let kept = self.remove_subtrees(&tx, &roots, &mut removed)?;
            applied.removed.extend(
                gone.into_iter()
                    .filter(|(ino, _)| !kept.contains(ino))
                    .map(|(_, name)| name),
            );
            store::nodes::set_listed_at(&tx, dir, self.cfg.clock.now_ms())?;
            tx.commit()?;
            // Still under the store lock: nobody can open these files in between.
            for ino in &dropped_content {
                self.content.remove(*ino);
            }
            Ok(Merge::Done { first })
        })?;
        let first = match merged {
            Merge::Stale => return Ok(None),
            Merge::Gone => return Ok(Some(applied)),
            Merge::Done { first } => first,
        };
        // Removed nodes are gone from the table and inode numbers are never reused: no
        // open can reach these content files any more, so they go without the lock.
        for ino in removed {
            self.content.remove(ino);
        }
        // The kernel forgets what changed: pages and attributes of files that took a
        // newer version (with the content dropped here, or only their size and times),
        // and names that came or went, so a program sees the change at once instead of
        // after the attribute TTL.
        for ino in &dropped_content {
            self.content_dropped(*ino);
        }
        for ino in applied.changed.iter().chain(&applied.meta) {
            if !dropped_content.contains(ino) {
                self.kernel_inval_inode(*ino);
            }
        }
        let names_changed = !applied.added.is_empty() || !applied.removed.is_empty();
        if names_changed && !first {
            for name in applied
                .removed
                .iter()
                .chain(applied.added.iter().map(|(name, _)| name))
            {
                self.kernel_inval_entry(dir, name);
            }
            // Its entry list, link count and times.
            self.kernel_inval_inode(dir);
        }
        applied.first = first;
        Ok(Some(applied))
    }

    fn insert_remote(
        &self,
        c: &Connection,
        dir: u64,
        e: &RemoteEntry,
        kind: Kind,
        mtime_ns: i64,
    ) -> FsResult<u64> {
        let ino = store::insert_node(
            c,
            &NewNode {
                parent: dir,
                name: &e.name,
                kind,
                size: if kind == Kind::Dir { 0 } else { e.size },
                mtime_ns,
                mode: if kind == Kind::Dir { 0o755 } else { 0o644 },
                uid: self.cfg.uid,
                gid: self.cfg.gid,
                etag: e.etag.as_deref(),
                on_remote: true,
                dirty: false,
                ranges: RangeSet::default(),
                listed_at: None,
                last_access: self.cfg.clock.now_s(),
            },
        )?;
        if e.checksum.is_some() {
            store::set_remote_checksum(c, ino, e.checksum.as_deref())?;
        }
        let meta = e.meta.as_ref().filter(|m| {
            e.is_dir
                || m.etag.is_none()
                || crate::remote::same_etag(m.etag.as_deref(), e.etag.as_deref())
        });
        if let Some(m) = meta {
            store::apply_remote_meta(c, ino, m, None)?;
            if let (Kind::Symlink, Some(t)) = (kind, m.link.as_deref()) {
                store::set_link_target(c, ino, t)?;
            }
        }
        Ok(ino)
    }

    /// Removes the nodes `roots` and everything below them, except a root whose subtree
    /// holds local changes or an open file: that one stays whole, and is returned. The
    /// removed inodes are added to `removed` (their content files go after the commit).
    /// One query for the whole set, however many entries a listing removed.
    fn remove_subtrees(
        &self,
        c: &Connection,
        roots: &[u64],
        removed: &mut Vec<u64>,
    ) -> FsResult<HashSet<u64>> {
        let nodes = store::subtrees(c, roots)?;
        let kept: HashSet<u64> = nodes
            .iter()
            .filter(|n| n.changed || (n.is_file && self.is_open(n.ino)))
            .map(|n| n.root)
            .collect();
        let doomed: Vec<u64> = nodes
            .iter()
            .filter(|n| !kept.contains(&n.root))
            .map(|n| n.ino)
            .collect();
        store::delete_nodes(c, &doomed)?;
        removed.extend(
            nodes
                .iter()
                .filter(|n| n.is_file && !kept.contains(&n.root))
                .map(|n| n.ino),
        );
        Ok(kept)
    }
}

/// How a merge under the writer ended (see `merge_listing`).
enum Merge {
    /// Something changed the folder on the server since the listing was fetched.
    Stale,
    /// The folder was removed here meanwhile.
    Gone,
    /// Merged; `first` when the folder had never been listed.
    Done { first: bool },
}
