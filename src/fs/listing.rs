//! Folder listings: fetched from the remote, merged into the node table, and refreshed
//! in the background so that a slow server never stalls what the cache can answer.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::watch;

use super::{check_name, is_internal_name, lock, Core, FsError, FsResult};
use crate::journal;
use crate::remote::Entry as RemoteEntry;
use crate::store::{self, Kind, NewNode, Node, RangeSet, ROOT_INO};

/// Listing refreshes in flight, one per folder.
#[derive(Default)]
pub(super) struct Refreshes {
    /// Folder inode -> when its refresh started, and a receiver that turns true at its end.
    running: Mutex<HashMap<u64, (Instant, watch::Receiver<bool>)>>,
    /// The last refresh to end took longer than the refresh wait: until one is quick
    /// again, nobody waits for a refresh.
    slow: AtomicBool,
}

impl Refreshes {
    /// Registers a refresh of `dir`. Returns the sender to end it with (None when one is
    /// already running) and a receiver of its end.
    fn register(&self, dir: u64) -> (Option<watch::Sender<bool>>, watch::Receiver<bool>) {
        let mut running = lock(&self.running);
        if let Some((_, rx)) = running.get(&dir) {
            // A refresh that died without ending (a panic drops its sender) must not
            // keep the folder from ever being refreshed again.
            if rx.has_changed().is_ok() {
                return (None, rx.clone());
            }
        }
        let (tx, rx) = watch::channel(false);
        running.insert(dir, (Instant::now(), rx.clone()));
        (Some(tx), rx)
    }

    fn running(&self, dir: u64) -> Option<watch::Receiver<bool>> {
        lock(&self.running)
            .get(&dir)
            .map(|(_, rx)| rx.clone())
            .filter(|rx| rx.has_changed().is_ok())
    }

    /// Ends the refresh of `dir`; `slow` says whether it took longer than the wait.
    fn finish(&self, dir: u64, tx: watch::Sender<bool>, slow: Option<bool>) {
        lock(&self.running).remove(&dir);
        if let Some(slow) = slow {
            self.slow.store(slow, Ordering::Relaxed);
        }
        let _ = tx.send(true);
    }

    /// Whether the server is answering listings slower than `wait`: the last refresh was
    /// slow, or one has been running longer than that.
    fn server_slow(&self, wait: Duration) -> bool {
        self.slow.load(Ordering::Relaxed)
            || lock(&self.running)
                .values()
                .any(|(started, rx)| started.elapsed() > wait && rx.has_changed().is_ok())
    }
}

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

/// What a listing saw of a folder on the server, for the poll to compare with the next
/// one: the folder's own ETag and digests of its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Seen {
    pub etag: Option<String>,
    /// Names and kinds.
    pub names: u64,
    /// Names, kinds, each file's version (ETag, size, mtime) and the properties: what a
    /// listing applies. Subfolders' ETags are left out: a listing applies nothing of them.
    pub full: u64,
}

impl Seen {
    fn of(etag: Option<String>, entries: &[RemoteEntry]) -> Seen {
        use std::hash::{Hash, Hasher};
        let mut sorted: Vec<&RemoteEntry> = entries
            .iter()
            .filter(|e| !is_internal_name(&e.name))
            .collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let mut names = std::collections::hash_map::DefaultHasher::new();
        let mut full = std::collections::hash_map::DefaultHasher::new();
        for e in sorted {
            (&e.name, e.is_dir).hash(&mut names);
            (&e.name, e.is_dir, &e.meta).hash(&mut full);
            if !e.is_dir {
                let etag = e.etag.as_deref().map(|t| t.trim_start_matches("W/"));
                (etag, e.size, e.mtime, &e.checksum).hash(&mut full);
            }
        }
        Seen {
            etag,
            names: names.finish(),
            full: full.finish(),
        }
    }
}

/// A listing fetched and merged.
#[derive(Debug, Clone)]
pub(super) struct Listed {
    pub seen: Seen,
    pub applied: Applied,
}

impl Core {
    /// Makes sure the node table holds a listing of directory `ino` no older than the
    /// listing TTL (see `ensure_listing_within`).
    pub fn ensure_listing(&self, ino: u64) -> FsResult<()> {
        self.ensure_listing_within(ino, self.cfg.dir_ttl)
    }

    /// Makes sure folder `ino`'s listing is no older than `max_age`, as far as the server
    /// lets it be without stalling the caller:
    /// - a folder never listed is listed now (there is nothing else to answer with);
    /// - a folder listed before is refreshed in the background, one refresh per folder
    ///   at a time. The caller that starts it waits for it at most `refresh_wait`; one
    ///   arriving while it runs, or while the server is slow, answers at once from the
    ///   listing it has. So cached files open and read at local speed whatever the
    ///   server does, and no lock is held across the network call.
    ///
    /// Offline, a folder listed before is served as it was; one never listed fails.
    pub(super) fn ensure_listing_within(&self, ino: u64, max_age: Duration) -> FsResult<()> {
        // A folder in use is one the background poll keeps fresh.
        self.poll.note_use(ino, &self.cfg);
        self.ensure_listing_unnoted(ino, max_age)
    }

    /// `ensure_listing_within` for background work (the sweeper's walk of pinned
    /// folders), which does not make a folder one of the recently used.
    pub(super) fn ensure_listing_unnoted(&self, ino: u64, max_age: Duration) -> FsResult<()> {
        let node = self.node(ino)?;
        if node.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        if !self.listing_older_than(&node, max_age) {
            return Ok(());
        }
        if node.listed_at.is_none() {
            return self.list_first_time(ino);
        }
        if !self.health.is_online() {
            return Ok(());
        }
        let Some(mut done) = self.start_refresh(ino) else {
            return Ok(());
        };
        if self.refreshes.server_slow(self.cfg.refresh_wait) {
            return Ok(());
        }
        let wait = self.cfg.refresh_wait;
        self.rt.block_on(async {
            let _ = tokio::time::timeout(wait, done.wait_for(|d| *d)).await;
        });
        Ok(())
    }

    /// Lists a folder that was never listed. A listing of it already running (another
    /// caller's) is waited for instead of sent twice.
    fn list_first_time(&self, ino: u64) -> FsResult<()> {
        if let Some(mut running) = self.refreshes.running(ino) {
            self.rt.block_on(async {
                let _ = running.wait_for(|d| *d).await;
            });
            if self.node(ino)?.listed_at.is_some() {
                return Ok(());
            }
        }
        if !self.health.is_online() {
            return Err(FsError::Offline {
                path: self.path(ino)?,
            });
        }
        let (registered, _done) = self.refreshes.register(ino);
        let result = self.fetch_and_merge(ino);
        if let Some(tx) = registered {
            self.refreshes.finish(ino, tx, None);
        }
        result.map(|_| ())
    }

    /// Lists folder `ino` for the background poll, unless a refresh of it is running
    /// already (None: that one applies what changed). The same fetch and merge as any
    /// listing; registered like a refresh, so a caller arriving meanwhile waits for it
    /// (or answers from the cached listing) instead of sending another.
    /// The poll counts its requests: `sent` counts this one's, and it does not ask again
    /// when the replayer changed the folder meanwhile (None: the next round does).
    pub(super) fn poll_listing(&self, ino: u64, sent: &mut usize) -> FsResult<Option<Listed>> {
        let (registered, _done) = self.refreshes.register(ino);
        let Some(tx) = registered else {
            return Ok(None);
        };
        let started = Instant::now();
        let result = self.fetch_and_merge_tries(ino, 0, sent);
        self.refreshes
            .finish(ino, tx, Some(started.elapsed() > self.cfg.refresh_wait));
        result
    }

    /// Starts a background refresh of folder `ino`; returns a receiver that turns true
    /// when it ends, or None when one was already running.
    fn start_refresh(&self, ino: u64) -> Option<tokio::sync::watch::Receiver<bool>> {
        let me = self.me.upgrade()?;
        let (tx, done) = self.refreshes.register(ino);
        let tx = tx?;
        self.rt.spawn_blocking(move || {
            let started = Instant::now();
            if let Err(e) = me.fetch_and_merge(ino) {
                tracing::warn!(
                    "refreshing the listing of inode {ino} failed, serving the cached one: {e}"
                );
            }
            me.refreshes
                .finish(ino, tx, Some(started.elapsed() > me.cfg.refresh_wait));
        });
        Some(done)
    }

    /// Asks the remote for folder `ino`'s entries and merges them. The replayer changing
    /// the remote meanwhile makes the listing ask again (three times, then the local
    /// view stays: None). Returns what the listing saw and what it changed here.
    fn fetch_and_merge(&self, ino: u64) -> FsResult<Option<Listed>> {
        self.fetch_and_merge_tries(ino, 3, &mut 0)
    }

    /// `fetch_and_merge` asking again at most `retries` times; `sent` counts requests.
    fn fetch_and_merge_tries(
        &self,
        ino: u64,
        retries: usize,
        sent: &mut usize,
    ) -> FsResult<Option<Listed>> {
        let mut attempt = 0;
        loop {
            // The epoch first: a rename replayed after it is seen by the merge, whichever
            // path it made the folder's remote path.
            let epoch = self.remote_changes.current();
            // Under a rename that still waits, the server has the folder at the old path.
            let (there, here) = self.remote_path(ino)?;
            let remote = self.remote.clone();
            *sent += 1;
            let (me, entries) = self.call(&there, async { remote.list_dir(&there).await })?;
            let seen = Seen::of(me.and_then(|e| e.etag), &entries);
            match self.merge_listing(ino, &here, &there, entries, epoch)? {
                Some(applied) => return Ok(Some(Listed { seen, applied })),
                None if attempt < retries => attempt += 1,
                None => return Ok(None),
            }
        }
    }

    /// Lists the root while mounting, so that a server going away right after the mount
    /// leaves a drive that can list and create in its root. The listing is then marked
    /// due again: the first look at the root online lists it afresh, so files another
    /// client adds in between show up as if the mount had not listed it yet.
    pub fn list_root_for_mount(&self) -> FsResult<()> {
        self.ensure_listing(ROOT_INO)?;
        store::mark_listing_due(&self.store.lock(), ROOT_INO)?;
        Ok(())
    }

    fn listing_older_than(&self, node: &Node, max_age: Duration) -> bool {
        if !node.on_remote {
            // Created here and not yet on the remote: the local view is the whole truth.
            return false;
        }
        match node.listed_at {
            None => true,
            Some(at) => self.cfg.clock.now_ms() - at >= max_age.as_millis() as i64,
        }
    }

    /// Merges a fresh remote listing of `dir` into the node table. Names with waiting
    /// journal entries keep their local state; clean files whose remote version changed
    /// lose their cached content; clean nodes gone from the remote go locally too.
    /// Returns None, merging nothing, when the replayer changed the remote since `epoch`.
    /// `remote_dir_path` is where the server has the folder: its old path while a rename
    /// of it (or of a folder above) waits in the journal. What changed is told to the
    /// kernel (attributes, pages and names it may cache), and returned.
    fn merge_listing(
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
        let first;
        {
            let mut conn = self.store.lock();
            // Checked under the store lock, which the replayer's commits also take.
            if self.remote_changes.touched_since(epoch, dir_path, true)
                || self
                    .remote_changes
                    .touched_since(epoch, remote_dir_path, true)
            {
                return Ok(None);
            }
            let tx = conn.transaction()?;
            // Waiting entries name the folder by the name it had when they were recorded:
            // every name from the one it has now back to the one the server has. (Read
            // under the lock: a rename here since the fetch counts too.)
            let Some(dir_node) = store::get_node(&tx, dir)? else {
                return Ok(Some(applied)); // removed meanwhile
            };
            first = dir_node.listed_at.is_none();
            let Some(here_now) = store::path_of(&tx, dir)? else {
                return Ok(Some(applied)); // removed meanwhile
            };
            let chain = journal::path_chain(&tx, &here_now)?;
            if chain.last().map(String::as_str) != Some(remote_dir_path) {
                // Listed at a path that is no longer where the server has it.
                return Ok(None);
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
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresh_that_died_without_ending_does_not_block_the_folder() {
        let r = Refreshes::default();
        let (tx, _rx) = r.register(7);
        let tx = tx.expect("the first refresh of a folder registers");
        assert!(
            r.register(7).0.is_none(),
            "one refresh per folder at a time"
        );
        assert!(r.running(7).is_some());
        // Its task panicked: the sender is dropped without `finish`.
        drop(tx);
        assert!(r.running(7).is_none());
        assert!(
            !r.server_slow(Duration::ZERO),
            "a dead refresh is not a slow server"
        );
        let (tx, _rx) = r.register(7);
        let tx = tx.expect("the folder can be refreshed again");
        r.finish(7, tx, Some(false));
        assert!(r.running(7).is_none());
    }
}
