//! Folder listings: fetched from the remote, merged into the node table (the merge is in
//! `listing_merge.rs`), and refreshed in the background so that a slow server never
//! stalls what the cache can answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::watch;

use super::listing_merge::Applied;
use super::{is_internal_name, lock, Core, FsError, FsResult};
use crate::remote::Entry as RemoteEntry;
use crate::store::{self, Kind, Node, ROOT_INO};

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

    /// `ensure_listing`, then `f` on the writer. While the folder's listing is fresh (the
    /// usual case) that is one transaction: the freshness check and `f` together, instead
    /// of one look at the folder and another for `f` (each FUSE call of a `tar -x` or a
    /// walk pays it). A stale listing is refreshed first as `ensure_listing` does; `f`
    /// then runs in a transaction of its own.
    pub(super) fn in_listed<T>(
        &self,
        dir: u64,
        f: impl Fn(&Connection) -> FsResult<T>,
    ) -> FsResult<T> {
        self.poll.note_use(dir, &self.cfg);
        let fresh = self.store.write(|tx| {
            let node = store::get_node(tx, dir)?.ok_or(FsError::NotFound)?;
            if node.kind != Kind::Dir {
                return Err(FsError::NotDir);
            }
            if self.listing_older_than(&node, self.cfg.dir_ttl) {
                return Ok(None);
            }
            f(tx).map(Some)
        })?;
        match fresh {
            Some(v) => Ok(v),
            None => {
                self.ensure_listing_unnoted(dir, self.cfg.dir_ttl)?;
                self.store.write(|tx| f(tx))
            }
        }
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
        self.block_on(async {
            let _ = tokio::time::timeout(wait, done.wait_for(|d| *d)).await;
        });
        Ok(())
    }

    /// Lists a folder that was never listed. A listing of it already running (another
    /// caller's) is waited for instead of sent twice.
    fn list_first_time(&self, ino: u64) -> FsResult<()> {
        if let Some(mut running) = self.refreshes.running(ino) {
            self.block_on(async {
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
        self.store
            .write(|tx| store::mark_listing_due(tx, ROOT_INO))?;
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
