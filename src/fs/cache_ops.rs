//! The cache operations of the core: what the sweeper, pinning and the control socket
//! use. Eviction removes clean content only: dirty content, content of files with any
//! change waiting in the journal, pinned content and files open right now are never
//! evicted. (Below a folder whose rename waits, evicted content is fetched again from
//! the old path, where the server still has it.)

use std::sync::Arc;

use super::{lock, Core, FsError, FsResult, KernelCache};
use crate::cache::{self, sha256_prefix};
use crate::clock::Clock;
use rusqlite::Connection;

use crate::store::{self, nodes, Kind};
use nodes::{has_unsent_changes, pinned_set};

/// Clean cached files up to this size are hashed before their first read in a run;
/// larger ones in the background, so that no open waits for more than a small file's
/// hash (until checked they are read through davdrive, never handed to passthrough).
const VERIFY_AT_OPEN_LIMIT: u64 = 8 << 20;

/// Cached files and bytes, by state.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct CacheUsage {
    pub files: u64,
    pub bytes: u64,
    pub dirty_files: u64,
    pub dirty_bytes: u64,
    pub pinned_files: u64,
    pub pinned_bytes: u64,
}

impl CacheUsage {
    pub fn clean_bytes(&self) -> u64 {
        self.bytes.saturating_sub(self.dirty_bytes)
    }
}

/// The outcome of evicting one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evicted {
    /// Its content is gone; this many bytes were freed.
    Freed(u64),
    NotCached,
    /// It has changes not yet uploaded: evicting would lose them.
    Dirty,
    /// Pinned (itself or a directory above it): unpin first.
    Pinned,
    /// Open right now.
    Open,
}

/// What evicting a folder did: its clean files went; changed, pinned and open ones
/// stayed (that is what evicting a folder means, not a refusal).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FolderEvicted {
    pub files: u64,
    pub bytes: u64,
    /// Files kept: changed, pinned or open.
    pub kept: u64,
}

/// A clean, unpinned cached file, in least-recently-used order.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub ino: u64,
    pub bytes: u64,
    pub last_access: i64,
}

/// Whether `ino` is pinned, or lies below a pinned directory.
fn pinned_at(conn: &Connection, ino: u64) -> rusqlite::Result<bool> {
    let mut cur = ino;
    while let Some(n) = store::get_node(conn, cur)? {
        if n.pinned {
            return Ok(true);
        }
        if n.parent == 0 || n.ino == store::ROOT_INO {
            break;
        }
        cur = n.parent;
    }
    Ok(false)
}

impl Core {
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.rt
    }

    pub fn clock(&self) -> &Clock {
        &self.cfg.clock
    }

    /// Lets the FUSE adapter hear of what the kernel must forget: attributes, pages and
    /// names that changed on the remote. Set once; later calls are ignored.
    pub fn set_kernel_cache(&self, k: Arc<dyn KernelCache>) {
        let _ = self.kernel.set(k);
    }

    /// Tells the kernel (when there is one) that what it holds of `ino` is stale.
    pub(super) fn kernel_inval_inode(&self, ino: u64) {
        if let Some(k) = self.kernel.get() {
            k.inval_inode(ino);
        }
    }

    /// Tells the kernel (when there is one) that `name` in `parent` changed.
    pub(super) fn kernel_inval_entry(&self, parent: u64, name: &str) {
        if let Some(k) = self.kernel.get() {
            k.inval_entry(parent, name);
        }
    }

    /// Content of `ino` was dropped because the remote has a newer version: the kernel's
    /// pages and our record of them are stale.
    pub(super) fn content_dropped(&self, ino: u64) {
        self.bump_content_gen(ino);
        lock(&self.verified).remove(&ino);
        self.kernel_inval_inode(ino);
    }

    /// Whether `ino` or a directory above it is pinned.
    pub fn is_pinned(&self, ino: u64) -> FsResult<bool> {
        Ok(pinned_at(&self.store.lock(), ino)?)
    }

    /// Pins or unpins `ino` (a directory pins everything below it). Pins persist; the
    /// content of newly pinned files is fetched by `fetch_pinned`.
    pub fn set_pinned(&self, ino: u64, pinned: bool) -> FsResult<()> {
        let n = nodes::set_pinned(&self.store.lock(), ino, pinned)?;
        if n == 0 {
            return Err(FsError::NotFound);
        }
        if pinned {
            // The sweeper fetches what pinned files miss.
            self.cache_grew.notify_one();
        }
        Ok(())
    }

    /// Fetches whatever pinned files (and files below pinned directories) miss. Returns
    /// how many files were completed; stops quietly while the remote is unreachable.
    pub fn fetch_pinned(&self) -> FsResult<usize> {
        let roots = nodes::pinned_roots(&self.store.lock())?;
        let mut done = 0;
        let mut stack = roots;
        while let Some((ino, kind)) = stack.pop() {
            if !self.health.is_online() {
                break;
            }
            if kind == Kind::Dir {
                if let Err(e) = self.ensure_listing_unnoted(ino, self.cfg.dir_ttl) {
                    tracing::warn!("pinned directory (inode {ino}) could not be listed: {e}");
                    continue;
                }
                for c in store::children(&self.store.lock(), ino)? {
                    stack.push((c.ino, c.kind));
                }
                continue;
            }
            let node = self.node(ino)?;
            if node.fully_cached() {
                continue;
            }
            match self.fetch_whole(ino) {
                Ok(()) => done += 1,
                Err(e) => tracing::warn!("pinned file (inode {ino}) could not be fetched: {e}"),
            }
        }
        Ok(done)
    }

    /// Downloads every missing byte of file `ino`.
    pub fn fetch_whole(&self, ino: u64) -> FsResult<()> {
        let of = self.open_file(ino)?;
        let size = lock(&of.state).size;
        let result = self.fetch_range(&of, ino, 0, size, false);
        self.close_open_file(ino);
        result
    }

    /// Evicts the cached content of every clean file below folder `ino`.
    pub fn evict_folder(&self, ino: u64) -> FsResult<FolderEvicted> {
        let files: Vec<u64> = self
            .store
            .read(|c| store::subtrees(c, &[ino]))?
            .into_iter()
            .filter(|n| n.is_file)
            .map(|n| n.ino)
            .collect();
        let mut done = FolderEvicted::default();
        for f in files {
            match self.evict(f)? {
                Evicted::Freed(n) => {
                    done.files += 1;
                    done.bytes += n;
                }
                Evicted::NotCached => {}
                _ => done.kept += 1,
            }
        }
        Ok(done)
    }

    /// Removes the cached content of `ino`, if that loses nothing. The node stays, so the
    /// file still lists and is fetched again when read.
    pub fn evict(&self, ino: u64) -> FsResult<Evicted> {
        let pinned = self.is_pinned(ino)?;
        let conn = self.store.lock();
        let node = store::get_node(&conn, ino)?.ok_or(FsError::NotFound)?;
        if node.kind != Kind::File {
            return Err(FsError::IsDir);
        }
        if node.cached_bytes == 0 && node.ranges.is_empty() {
            return Ok(Evicted::NotCached);
        }
        if has_unsent_changes(&conn, ino)? {
            return Ok(Evicted::Dirty);
        }
        if pinned {
            return Ok(Evicted::Pinned);
        }
        // Checked under the store lock, which an open takes first: no open slips in.
        if self.is_open(ino) {
            return Ok(Evicted::Open);
        }
        store::drop_content(&conn, ino)?;
        self.content.remove(ino);
        lock(&self.verified).remove(&ino);
        crate::metrics::add(&crate::metrics::METRICS.evictions, 1);
        Ok(Evicted::Freed(node.cached_bytes))
    }

    /// Clean, unpinned, closed cached files, least recently used first.
    pub fn eviction_candidates(&self) -> FsResult<Vec<Candidate>> {
        let conn = self.store.lock();
        let pinned = pinned_set(&conn)?;
        let rows: Vec<Candidate> = nodes::clean_cached_by_age(&conn)?
            .into_iter()
            .map(|(ino, bytes, last_access)| Candidate {
                ino,
                bytes,
                last_access,
            })
            .collect();
        drop(conn);
        Ok(rows
            .into_iter()
            .filter(|c| !pinned.contains(&c.ino) && !self.is_open(c.ino))
            .collect())
    }

    /// Cached files and bytes, by state.
    /// Read on the store's read-only connection: never waits for the writer.
    pub fn cache_usage(&self) -> FsResult<CacheUsage> {
        let (pinned, files) = self
            .store
            .read(|c| Ok::<_, rusqlite::Error>((pinned_set(c)?, nodes::cached_files(c)?)))?;
        let mut u = CacheUsage::default();
        for (ino, bytes, dirty) in files {
            u.files += 1;
            u.bytes += bytes;
            if dirty {
                u.dirty_files += 1;
                u.dirty_bytes += bytes;
            }
            if pinned.contains(&ino) {
                u.pinned_files += 1;
                u.pinned_bytes += bytes;
            }
        }
        Ok(u)
    }

    /// On a full cache disk: evicts clean content, least recently used first, until
    /// `needed` bytes are free. Returns whether
    /// anything was freed; if not, the disk is full of content that must not be lost.
    pub(super) fn make_room(&self, needed: u64) -> bool {
        let want = needed;
        let mut freed = 0u64;
        if let Ok(candidates) = self.eviction_candidates() {
            for c in candidates {
                if let Ok((_, avail)) = cache::fs_space(&self.cache_dir) {
                    if avail >= want && freed > 0 {
                        break;
                    }
                }
                if let Ok(Evicted::Freed(n)) = self.evict(c.ino) {
                    freed += n;
                }
            }
        }
        if freed == 0 {
            let waiting = self.cache_usage().map(|u| u.dirty_bytes).unwrap_or(0);
            tracing::error!(
                "the cache disk is full of changes not yet uploaded ({waiting} bytes): \
                 writes fail with ENOSPC until uploads make room"
            );
        } else {
            tracing::info!("cache disk full: evicted {freed} bytes of clean content");
        }
        freed > 0
    }

    /// Makes sure the cache disk has room for `bytes` more, plus a reserve that keeps
    /// the state store writable (the journal must be able to record uploads, which is
    /// what frees space). Evicts clean content if needed; fails with ENOSPC when the
    /// disk is full of content that must not be lost.
    pub(super) fn ensure_space(&self, bytes: u64) -> FsResult<()> {
        let (total, avail) = cache::fs_space(&self.cache_dir)?;
        let reserve = (total / 20).min(16 << 20);
        let want = bytes.saturating_add(reserve);
        if avail >= want {
            return Ok(());
        }
        if self.make_room(want) && cache::fs_space(&self.cache_dir)?.1 >= want {
            return Ok(());
        }
        Err(FsError::NoSpace(format!(
            "{avail} bytes free on the cache disk, {bytes} needed"
        )))
    }

    /// A file became fully cached from the remote: hash it in the background and record
    /// the hash against the ETag its content is bound to. (Chunks are not checked one by
    /// one against that ETag: a file changed on the server in the middle of a download
    /// can be stitched from two versions; see the README.)
    pub(super) fn record_complete_download(&self, ino: u64) {
        let Some(me) = self.me.upgrade() else { return };
        self.rt.spawn_blocking(move || {
            tracing::debug!("hashing the fully cached content of inode {ino}");
            if let Err(e) = me.hash_clean_content(ino, true) {
                tracing::debug!("could not hash cached content of inode {ino}: {e}");
            }
        });
    }

    /// Hashes the content file of a clean, fully cached file. With `record`, stores the
    /// hash; without, compares with the stored one. Returns whether the content is good
    /// (true also when there is nothing to check).
    fn hash_clean_content(&self, ino: u64, record: bool) -> FsResult<bool> {
        let node = self.node(ino)?;
        if node.dirty || !node.fully_cached() || node.content_etag != node.etag {
            return Ok(true);
        }
        let expected = node.sha256.clone();
        if !record && expected.is_none() {
            // Not hashed yet: a download whose background check against the server's
            // checksum has not run is checked here, before it is served.
            let Some(spec) = &node.remote_checksum else {
                return Ok(true);
            };
            let path = self.content.path(ino);
            return Ok(crate::cache::checksum_matches(spec, &path, node.size)? != Some(false));
        }
        let path = self.content.path(ino);
        let sha = match sha256_prefix(&path, node.size) {
            Ok(s) => s,
            // Shorter than the file: truncated.
            Err(e) if e.kind() == std::io::ErrorKind::Other => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        if record {
            if let Some(spec) = &node.remote_checksum {
                if let Some(false) = crate::cache::checksum_matches(spec, &path, node.size)? {
                    let name = self.path(ino).unwrap_or_default();
                    tracing::error!(
                        "{name}: the downloaded content does not match the server's checksum \
                         ({spec}); dropping it, it is fetched again at the next read"
                    );
                    let conn = self.store.lock();
                    if has_unsent_changes(&conn, ino)? {
                        return Ok(false);
                    }
                    if self.is_open(ino) {
                        // Open files keep their content until closed; bound to no
                        // version, it is dropped at the next open (see below).
                        store::versions::unbind_content(&conn, ino)?;
                        lock(&self.verified).remove(&ino);
                    } else {
                        store::drop_content(&conn, ino)?;
                        self.content.remove(ino);
                        drop(conn);
                        self.content_dropped(ino);
                    }
                    return Ok(false);
                }
            }
            let recorded = store::versions::record_content_hash(
                &self.store.lock(),
                ino,
                &sha,
                node.etag.as_deref(),
                node.size,
            )?;
            if recorded {
                lock(&self.verified).insert(ino);
            }
            return Ok(true);
        }
        let good = expected.as_deref() == Some(sha.as_str());
        if good {
            lock(&self.verified).insert(ino);
        }
        Ok(good)
    }

    /// Before a clean cached file is served for the first time in this run: content
    /// bound to another remote version, cut short, or not matching its recorded hash is
    /// a miss and is dropped, never served.
    pub(super) fn check_cached_content(&self, ino: u64) -> FsResult<()> {
        let verified = lock(&self.verified).contains(&ino); // a leaf lock: released here
        if verified || self.is_open(ino) {
            return Ok(());
        }
        let node = self.node(ino)?;
        if node.kind != Kind::File || node.dirty || node.ranges.is_empty() {
            return Ok(());
        }
        let bound_elsewhere = node.content_etag != node.etag;
        let on_disk = self.content.len(ino)?;
        let short = on_disk < node.ranges.end();
        if !bound_elsewhere && !short && node.size > VERIFY_AT_OPEN_LIMIT {
            // Hashing this at open would stall it for long: checked in the background
            // (and dropped if damaged); until then it is not handed to passthrough.
            if !lock(&self.verifying).insert(ino) {
                return Ok(()); // already being checked
            }
            if let Some(me) = self.me.upgrade() {
                self.rt.spawn_blocking(move || {
                    let good = me.hash_clean_content(ino, false);
                    lock(&me.verifying).remove(&ino);
                    if let Ok(false) = good {
                        let path = me.path(ino).unwrap_or_default();
                        tracing::warn!(
                            "{path}: cached content is damaged (hash mismatch); dropping it"
                        );
                        let conn = me.store.lock();
                        if !me.is_open(ino) && !has_unsent_changes(&conn, ino).unwrap_or(true) {
                            let _ = store::drop_content(&conn, ino);
                            me.content.remove(ino);
                            drop(conn);
                            me.content_dropped(ino);
                        }
                    }
                });
            }
            return Ok(());
        }
        let damaged = !bound_elsewhere && !short && !self.hash_clean_content(ino, false)?;
        if !(bound_elsewhere || short || damaged) {
            if node.fully_cached() && node.sha256.is_some() {
                lock(&self.verified).insert(ino);
            }
            return Ok(());
        }
        let path = self.path(ino).unwrap_or_default();
        tracing::warn!(
            "{path}: cached content is {}; dropping it, it will be fetched again",
            if bound_elsewhere {
                "of another remote version"
            } else if short {
                "truncated"
            } else {
                "damaged (hash mismatch)"
            }
        );
        let conn = self.store.lock();
        if self.is_open(ino) || has_unsent_changes(&conn, ino)? {
            return Ok(());
        }
        store::drop_content(&conn, ino)?;
        self.content.remove(ino);
        drop(conn);
        self.content_dropped(ino);
        Ok(())
    }

    /// At open, once the file's folder listing is older than the attribute TTL: refreshes
    /// that listing, which answers for every file in the folder with one request (never a
    /// request per file). A newer remote version drops clean cached content (and the
    /// kernel's pages of it); a dirty file keeps its content and meets the newer version
    /// as a conflict at upload. A slow or unreachable remote: the cached version is
    /// served (see `ensure_listing_within`).
    pub(super) fn revalidate(&self, ino: u64) -> FsResult<()> {
        let node = self.node(ino)?;
        if node.kind != Kind::File || !node.on_remote || node.dirty || self.is_open(ino) {
            return Ok(());
        }
        self.ensure_listing_within(node.parent, self.cfg.attr_ttl)
    }

    /// For FUSE passthrough: the content file of a read-only handle `fh`, opened
    /// read-only, when the kernel may read it directly: the file is clean, every byte is
    /// here and verified, and nobody has it open for writing.
    pub fn passthrough_file(&self, fh: u64) -> Option<std::fs::File> {
        let (ino, writable, of) = self.handle(fh).ok()?;
        if writable
            || lock(&self.handles)
                .values()
                .any(|h| h.ino == ino && h.writable)
        {
            return None;
        }
        {
            let st = lock(&of.state);
            if st.write_dirty || !st.ranges.covers(0, st.size) {
                return None;
            }
        }
        let conn = self.store.lock();
        if has_unsent_changes(&conn, ino).ok()? {
            return None;
        }
        drop(conn);
        if !lock(&self.verified).contains(&ino) {
            return None;
        }
        self.content.open_read(ino).ok().flatten()
    }

    /// The inode at mount-relative `path` ("/a/b"), looking names up as the kernel would.
    pub fn resolve_path(&self, path: &str) -> FsResult<u64> {
        let mut ino = store::ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = self.lookup(ino, part)?.ino;
        }
        Ok(ino)
    }

    /// A file's cache state in one word: `dirty` (changes not yet uploaded), `conflict`
    /// (a conflict copy, or a file with one, not yet resolved), `pinned`, `cached`,
    /// `partial`, `remote-only`; directories are `dir` or `pinned`.
    /// Read on the store's read-only connection: never waits for the writer.
    pub fn file_state(&self, ino: u64) -> FsResult<&'static str> {
        self.store.read(|conn| self.file_state_in(conn, ino))
    }

    fn file_state_in(&self, conn: &Connection, ino: u64) -> FsResult<&'static str> {
        let pinned = pinned_at(conn, ino)?;
        let node = store::get_node(conn, ino)?.ok_or(FsError::NotFound)?;
        if node.kind == Kind::Dir {
            return Ok(if pinned { "pinned" } else { "dir" });
        }
        if has_unsent_changes(conn, ino)? || self.is_write_dirty(ino) {
            return Ok("dirty");
        }
        let path = store::path_of(conn, ino)?.unwrap_or_default();
        if store::conflicts::in_open_conflict(conn, &path)? {
            return Ok("conflict");
        }
        if pinned {
            return Ok("pinned");
        }
        Ok(if node.fully_cached() {
            "cached"
        } else if !node.ranges.is_empty() {
            "partial"
        } else {
            "remote-only"
        })
    }

    /// Makes failed journal entries (entry `id`, or all with None) wait to be tried again
    /// from the start, and wakes the replayer; returns how many. `NotFound` if there is
    /// no entry `id`.
    pub fn retry_journal(&self, id: Option<i64>) -> FsResult<usize> {
        let n = self.store.write(|tx| crate::journal::retry(tx, id))?;
        if let (0, Some(_)) = (n, id) {
            return Err(FsError::NotFound);
        }
        self.journal_changed.notify_one();
        Ok(n)
    }

    /// Drops journal entry `id` (an administrator gave up on it). The content of a dropped
    /// upload is copied to `<cache dir>/recovered/` first, and the file goes back to the
    /// remote's version (or away, if the remote never had it). Returns where the content
    /// was saved.
    pub fn drop_journal_entry(&self, id: i64) -> FsResult<Option<std::path::PathBuf>> {
        let entry = {
            let conn = self.store.lock();
            let entry = crate::journal::get(&conn, id)?.ok_or(FsError::NotFound)?;
            if crate::journal::is_running(&conn, id)? {
                return Err(FsError::Invalid(
                    "the entry is being replayed right now; try again",
                ));
            }
            match entry.op {
                crate::journal::Op::Put => entry,
                // Dropping a metadata change leaves the server's properties as they are.
                crate::journal::Op::Delete | crate::journal::Op::Meta => {
                    crate::journal::complete(&conn, id)?;
                    return Ok(None);
                }
                // Without them the tree here and on the server would part for good.
                crate::journal::Op::Mkcol | crate::journal::Op::Move => {
                    return Err(FsError::Invalid(
                        "a directory creation or a rename cannot be dropped (what follows \
                         depends on it); retry it, or undo it in the mount",
                    ))
                }
            }
        };
        let ino = entry.ino;
        if self.is_open(ino) {
            return Err(FsError::Invalid("the file is open; close it first"));
        }
        // A file changed here without all of it: the rest (its base version's bytes) is
        // fetched first, so what is saved is the whole of the version given up.
        if let Ok(n) = self.node(ino) {
            if n.kind == Kind::File && !n.fully_cached() && n.dirty {
                self.fetch_all(ino).map_err(|e| {
                    tracing::warn!("{}: cannot fetch the rest of it to save it: {e}", entry.path);
                    FsError::Invalid(
                        "the parts of this file that are not here cannot be fetched now                          (is the server reachable?); try again",
                    )
                })?;
            }
        }
        // The copy is made before the store is locked (it may be large); the entry is
        // checked again after.
        let node = self.node(ino).ok();
        let saved = match &node {
            Some(n) => {
                let dir = self.cache_dir.join("recovered");
                std::os::unix::fs::DirBuilderExt::mode(
                    std::fs::DirBuilder::new().recursive(true),
                    0o700,
                )
                .create(&dir)?;
                let base = entry.path.rsplit('/').next().unwrap_or("file");
                let dest = dir.join(format!("{id}-{base}"));
                let mut out = std::os::unix::fs::OpenOptionsExt::mode(
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true),
                    0o600,
                )
                .open(&dest)?;
                if let Some(mut src) = self.content.open_read(ino)? {
                    std::io::copy(&mut src, &mut out)?;
                }
                out.set_len(n.size)?;
                Some(dest)
            }
            None => None,
        };
        let mut conn = self.store.lock();
        if crate::journal::get(&conn, id)?.is_none()
            || crate::journal::is_running(&conn, id)?
            || self.is_open(ino)
        {
            return Err(FsError::Invalid(
                "the entry or its file changed meanwhile; look again",
            ));
        }
        let node = store::get_node(&conn, ino)?;
        let tx = conn.transaction()?;
        crate::journal::complete(&tx, id)?;
        let more_puts = store::journal::any_put_of(&tx, ino)?;
        let mut remove_content = false;
        if let Some(n) = &node {
            if let (false, Some(copy)) = (more_puts, &n.base_copy) {
                crate::journal::record_scratch_removal(&tx, ino, copy)?;
                store::set_base_copy(&tx, ino, None)?;
            }
            if !more_puts && n.on_remote {
                // Back to the remote's version: the next listing or open fetches it.
                store::versions::forget_local_changes(&tx, ino)?;
                store::mark_listing_due(&tx, n.parent)?;
                remove_content = true;
            } else if !more_puts {
                // The remote never had it: without its upload it is gone.
                store::journal::delete_all_of(&tx, ino)?;
                store::delete_node(&tx, ino)?;
                remove_content = true;
            }
        }
        tx.commit()?;
        drop(conn);
        if remove_content {
            self.content.remove(ino);
            self.content_dropped(ino);
        }
        Ok(saved)
    }
}
