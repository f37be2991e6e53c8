//! The namespace: lookup, attributes, directory handles, and the changes that record
//! their journal entry in the same transaction: mkdir, create, symlink, unlink, rmdir,
//! rename, setattr, access times (truncation: `io.rs`). Lock order: see `fs/mod.rs`.

use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use rusqlite::Connection;

use super::{check_name, check_remote_path, join, lock, Attr, Core, DirEntry, FsError, FsResult};
use crate::journal;
use crate::store::{self, Kind, NewNode, Node, RangeSet, ROOT_INO};

/// A file being removed takes its base copy on the server with it (queued like any
/// change: the server may be away).
pub(super) fn forget_base_copy(tx: &Connection, n: &Node) -> rusqlite::Result<()> {
    if let Some(copy) = &n.base_copy {
        journal::record_scratch_removal(tx, n.ino, copy)?;
        store::set_base_copy(tx, n.ino, None)?;
    }
    Ok(())
}

/// Subfolders of `n` for its link count, in the caller's transaction (0 for a file).
fn subdirs_in(tx: &Connection, n: &Node) -> rusqlite::Result<u32> {
    match n.kind {
        Kind::Dir => store::subdir_count(tx, n.ino).map(clamp_links),
        _ => Ok(0),
    }
}

fn clamp_links(n: u64) -> u32 {
    n.min(u32::MAX as u64 - 2) as u32
}

impl Core {
    /// Never called with the store locked (it counts a folder's subfolders there).
    pub(super) fn node_attr(&self, n: &Node) -> Attr {
        let subdirs = match n.kind {
            Kind::Dir => self.subdirs(n.ino),
            _ => 0,
        };
        self.node_attr_with(n, subdirs)
    }

    /// `node_attr` with the folder's subfolders counted already (`subdirs_in`, in the
    /// transaction that read the node).
    pub(super) fn node_attr_with(&self, n: &Node, subdirs: u32) -> Attr {
        let (size, mtime_ns) = match lock(&self.open_files).get(&n.ino) {
            Some(of) if n.kind == Kind::File => {
                let st = lock(&of.state);
                (st.size, st.mtime_ns)
            }
            _ => (n.size, n.mtime_ns),
        };
        let mtime = store::ns_to_system_time(mtime_ns);
        let nlink = match n.kind {
            // `.`, the entry in its parent, and each subfolder's `..`.
            Kind::Dir => 2 + subdirs,
            // Unlinked while open: still readable through its descriptors, in no folder.
            _ if n.parent == 0 && n.ino != ROOT_INO => 0,
            _ => 1,
        };
        Attr {
            ino: n.ino,
            kind: n.kind,
            size,
            mtime,
            ctime: store::ns_to_system_time(n.ctime_ns.max(mtime_ns)),
            atime: store::ns_to_system_time(self.atime_ns(n, mtime_ns)),
            // A link's own mode means nothing on Linux: it shows as rwxrwxrwx.
            mode: if n.kind == Kind::Symlink {
                0o777
            } else {
                n.mode & 0o7777
            },
            uid: n.uid,
            gid: n.gid,
            nlink,
        }
    }

    /// The access time of `n` as the kernel sees it: the one recorded (by a read or by
    /// `utimensat`), or the mtime before any was.
    pub(super) fn atime_ns(&self, n: &Node, mtime_ns: i64) -> i64 {
        let open = lock(&self.open_files)
            .get(&n.ino)
            .and_then(|of| lock(&of.state).atime_ns);
        open.or(n.atime_ns).unwrap_or(mtime_ns)
    }

    /// Subfolders of `dir` known here (a folder not listed yet counts none).
    pub(super) fn subdirs(&self, dir: u64) -> u32 {
        self.store
            .write(|tx| store::subdir_count(tx, dir))
            .map(clamp_links)
            .unwrap_or(0)
    }

    pub fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        check_name(name)?;
        let (n, subdirs) = self.in_listed(parent, |tx| {
            let n = store::get_child(tx, parent, name)?.ok_or(FsError::NotFound)?;
            let subdirs = subdirs_in(tx, &n)?;
            Ok((n, subdirs))
        })?;
        Ok(self.node_attr_with(&n, subdirs))
    }

    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let (n, subdirs) = self.store.write(|tx| {
            let n = store::get_node(tx, ino)?.ok_or(FsError::NotFound)?;
            let subdirs = subdirs_in(tx, &n)?;
            FsResult::Ok((n, subdirs))
        })?;
        Ok(self.node_attr_with(&n, subdirs))
    }

    /// Opens a directory: the entries are fixed now, so offsets stay meaningful.
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        Ok(self.opendir_cached(ino)?.0)
    }

    /// Opens a directory. Also returns whether the kernel may keep what it cached of
    /// this directory's entries: true when they are the same as at the last open, so a
    /// repeated `ls` costs no FUSE round trips, and the kernel read them less than the
    /// entry TTL ago. Past that, its entries of the children have expired: kept, every
    /// `stat` of a walk (`du`, `ls -l`, `rsync`) would cost a lookup of its own, where
    /// reading the folder again (with attributes: readdirplus) renews them all at once.
    /// (Changes made through the mount itself invalidate the kernel's copy on their own.)
    pub fn opendir_cached(&self, ino: u64) -> FsResult<(u64, bool)> {
        self.ensure_listing(ino)?;
        let node = self.node(ino)?;
        let children = self.store.write(|tx| store::children(tx, ino))?;
        let mut entries = Vec::with_capacity(children.len() + 2);
        let self_attr = self.node_attr(&node);
        entries.push(DirEntry {
            name: ".".into(),
            attr: self_attr.clone(),
        });
        let parent_attr = if node.parent != 0 {
            self.node(node.parent)
                .map(|p| self.node_attr(&p))
                .unwrap_or(self_attr)
        } else {
            self_attr
        };
        entries.push(DirEntry {
            name: "..".into(),
            attr: parent_attr,
        });
        for c in &children {
            entries.push(DirEntry {
                name: c.name.clone(),
                attr: self.node_attr(c),
            });
        }
        let digest = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            for c in &children {
                (&c.name, c.ino, c.kind == Kind::Dir).hash(&mut h);
            }
            h.finish()
        };
        let now = self.clock().now_ms();
        let entry_ttl_ms = self.cfg.attr_ttl.min(self.cfg.dir_ttl).as_millis() as i64;
        let unchanged = {
            let mut digests = lock(&self.dir_digests);
            match digests.get(&ino) {
                Some(&(known, read_at)) if known == digest && now - read_at < entry_ttl_ms => true,
                _ => {
                    digests.insert(ino, (digest, now));
                    false
                }
            }
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.dir_handles).insert(fh, Arc::new(entries));
        Ok((fh, unchanged))
    }

    pub fn readdir(&self, fh: u64) -> FsResult<Arc<Vec<DirEntry>>> {
        lock(&self.dir_handles)
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)
    }

    pub fn releasedir(&self, fh: u64) {
        lock(&self.dir_handles).remove(&fh);
    }

    /// Inserts a node created here (not yet on the remote) into directory `parent`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn insert_local_child(
        &self,
        tx: &Connection,
        parent: u64,
        name: &str,
        kind: Kind,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> FsResult<u64> {
        let p = store::get_node(tx, parent)?.ok_or(FsError::NotFound)?;
        if p.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        if store::get_child(tx, parent, name)?.is_some() {
            return Err(FsError::Exists);
        }
        check_remote_path(&join(
            &store::path_of(tx, parent)?.ok_or(FsError::NotFound)?,
            name,
        ))?;
        Ok(store::insert_node(
            tx,
            &NewNode {
                parent,
                name,
                kind,
                size: 0,
                mtime_ns: store::now_ns(),
                mode: mode & 0o7777,
                uid,
                gid,
                etag: None,
                on_remote: false,
                // A new file is dirty from birth: even an empty file must reach the
                // remote. Its upload is queued when it is closed (or at the next start
                // after a crash). A new directory is fully known: nothing to list.
                dirty: kind == Kind::File,
                ranges: RangeSet::default(),
                listed_at: (kind == Kind::Dir).then(store::now_ms),
                last_access: self.cfg.clock.now_s(),
            },
        )?)
    }

    pub fn mkdir(&self, parent: u64, name: &str, mode: u32, uid: u32, gid: u32) -> FsResult<Attr> {
        self.ensure_writable()?;
        check_name(name)?;
        self.ensure_listing(parent)?;
        let attr = self.store.write(|tx| {
            let ino = self.insert_local_child(tx, parent, name, Kind::Dir, mode, uid, gid)?;
            let path = store::path_of(tx, ino)?.ok_or(FsError::NotFound)?;
            journal::record_mkcol(tx, ino, &path)?;
            store::touch_dir(tx, parent, store::now_ns())?;
            let n = store::get_node(tx, ino)?.ok_or(FsError::NotFound)?;
            FsResult::Ok(n)
        })?;
        // Not under the store lock: the attributes count subfolders in the store.
        let attr = self.node_attr(&attr);
        self.journal_changed.notify_one();
        Ok(attr)
    }

    /// Creates an empty file and opens it. Returns its attributes and a handle.
    pub fn create(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> FsResult<(Attr, u64)> {
        self.ensure_writable()?;
        check_name(name)?;
        // One transaction for the node and its empty content file; the file is then open
        // on that content file, with no second look at the store. (`open_file` fills the
        // open-files map under the writer so that a listing merge cannot decide meanwhile
        // whether a file is open; a merge leaves a node created here alone, open or not:
        // it is dirty and not on the server.)
        let (node, file) = self.in_listed(parent, |tx| {
            let ino = self.insert_local_child(tx, parent, name, Kind::File, mode, uid, gid)?;
            let f = self.content.open(ino)?;
            f.set_len(0)?;
            store::touch_dir(tx, parent, store::now_ns())?;
            let node = store::get_node(tx, ino)?.ok_or(FsError::NotFound)?;
            Ok((node, f))
        })?;
        // Written from birth: its first close commits it.
        self.open_new_file(&node, file, true);
        let fh = self.add_handle(node.ino, true);
        self.kernel_cache_valid(node.ino);
        Ok((self.node_attr_with(&node, 0), fh))
    }

    /// Creates symbolic link `name` in `parent` pointing at `target`. It is stored as a
    /// small file holding the target, marked as a link by a dead property (see
    /// `remote::Meta`), so it needs a server that keeps dead properties: on one known to
    /// keep none it is refused (`EPERM`), as before. davdrive itself never follows it;
    /// the kernel resolves it for programs, like any symbolic link.
    pub fn symlink(
        &self,
        parent: u64,
        name: &str,
        target: &str,
        uid: u32,
        gid: u32,
    ) -> FsResult<Attr> {
        self.ensure_writable()?;
        check_name(name)?;
        if target.is_empty() || target.contains('\0') {
            return Err(FsError::Invalid("empty symbolic link target"));
        }
        if target.len() > 4095 {
            return Err(FsError::NameTooLong);
        }
        if self.dead_props.get().is_none() && self.health.is_online() {
            // Asked once; offline, the link is kept and the first upload finds out.
            if let Ok(kept) = self.call("/", self.remote.dead_props_supported()) {
                crate::journal::replay::meta::note_support(self, kept);
            }
        }
        if self.dead_props.get() == Some(&false) {
            return Err(FsError::Unsupported(
                "symbolic links need a server that keeps dead properties",
            ));
        }
        self.ensure_listing(parent)?;
        let n = self.store.write(|tx| {
            let ino = self.insert_local_child(tx, parent, name, Kind::Symlink, 0o777, uid, gid)?;
            let f = self.content.open(ino)?;
            f.set_len(0)?;
            f.write_all_at(target.as_bytes(), 0)?;
            let now = store::now_ns();
            store::set_local_content(tx, ino, target.len() as u64, now)?;
            store::set_link_target(tx, ino, target)?;
            let path = store::path_of(tx, ino)?.ok_or(FsError::NotFound)?;
            journal::record_put(tx, ino, &path)?;
            store::touch_dir(tx, parent, now)?;
            let n = store::get_node(tx, ino)?.ok_or(FsError::NotFound)?;
            FsResult::Ok(n)
        })?;
        self.journal_changed.notify_one();
        Ok(self.node_attr(&n))
    }

    /// The target of symbolic link `ino` (`EINVAL` for anything else, as on a disk).
    pub fn readlink(&self, ino: u64) -> FsResult<String> {
        let n = self.node(ino)?;
        match (n.kind, n.link_target) {
            (Kind::Symlink, Some(t)) => Ok(t),
            _ => Err(FsError::Invalid("not a symbolic link")),
        }
    }

    pub fn unlink(&self, parent: u64, name: &str) -> FsResult<()> {
        self.ensure_writable()?;
        check_name(name)?;
        self.ensure_listing(parent)?;
        let gone = self.store.write(|tx| {
            let n = store::get_child(tx, parent, name)?.ok_or(FsError::NotFound)?;
            if n.kind == Kind::Dir {
                return Err(FsError::IsDir);
            }
            let path = store::path_of(tx, n.ino)?.ok_or(FsError::NotFound)?;
            journal::record_remove(tx, &n, &path)?;
            forget_base_copy(tx, &n)?;
            let gone = self.detach(tx, &n)?;
            store::touch_dir(tx, parent, store::now_ns())?;
            FsResult::Ok(gone)
        })?;
        if let Some(ino) = gone {
            self.content.remove(ino);
        }
        self.journal_changed.notify_one();
        Ok(())
    }

    /// Takes a file out of the namespace. A file still open lives on as an orphan until
    /// its last handle closes; otherwise its row goes now and the caller removes its
    /// content (returned inode) after the commit.
    pub(super) fn detach(&self, c: &Connection, n: &Node) -> FsResult<Option<u64>> {
        if n.kind == Kind::File && self.is_open(n.ino) {
            store::move_node(c, n.ino, 0, &format!(".orphan-{}", n.ino))?;
            Ok(None)
        } else {
            store::delete_node(c, n.ino)?;
            Ok(Some(n.ino))
        }
    }

    pub fn rmdir(&self, parent: u64, name: &str) -> FsResult<()> {
        self.ensure_writable()?;
        check_name(name)?;
        self.ensure_listing(parent)?;
        let n = self
            .store
            .write(|tx| store::get_child(tx, parent, name))?
            .ok_or(FsError::NotFound)?;
        if n.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        // Its remote children count too, so it must be listed.
        self.ensure_listing(n.ino)?;
        self.store.write(|tx| {
            let n = store::get_child(tx, parent, name)?.ok_or(FsError::NotFound)?;
            if store::has_children(tx, n.ino)? {
                return Err(FsError::NotEmpty);
            }
            let path = store::path_of(tx, n.ino)?.ok_or(FsError::NotFound)?;
            journal::record_remove(tx, &n, &path)?;
            store::delete_node(tx, n.ino)?;
            store::touch_dir(tx, parent, store::now_ns())?;
            FsResult::Ok(())
        })?;
        self.journal_changed.notify_one();
        Ok(())
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        no_replace: bool,
    ) -> FsResult<()> {
        self.ensure_writable()?;
        check_name(name)?;
        check_name(new_name)?;
        self.ensure_listing(parent)?;
        self.ensure_listing(new_parent)?;
        // A directory being replaced must be known to be empty, remote children included.
        let target = self
            .store
            .write(|tx| store::get_child(tx, new_parent, new_name))?;
        if let Some(t) = target.filter(|t| t.kind == Kind::Dir) {
            self.ensure_listing(t.ino)?;
        }
        let gone = self.store.write(|tx| {
            let src = store::get_child(tx, parent, name)?.ok_or(FsError::NotFound)?;
            let np = store::get_node(tx, new_parent)?.ok_or(FsError::NotFound)?;
            if np.kind != Kind::Dir {
                return Err(FsError::NotDir);
            }
            if src.kind == Kind::Dir {
                // Not into itself or below itself.
                let mut cur = new_parent;
                while cur != 0 {
                    if cur == src.ino {
                        return Err(FsError::Invalid("cannot move a directory into itself"));
                    }
                    cur = if cur == ROOT_INO {
                        0
                    } else {
                        store::get_node(tx, cur)?.map(|n| n.parent).unwrap_or(0)
                    };
                }
            }
            let from = store::path_of(tx, src.ino)?.ok_or(FsError::NotFound)?;
            let to_dir = store::path_of(tx, new_parent)?.ok_or(FsError::NotFound)?;
            let to = join(&to_dir, new_name);
            check_remote_path(&to)?;
            let mut gone = None;
            if let Some(dst) = store::get_child(tx, new_parent, new_name)? {
                if dst.ino == src.ino {
                    // Onto itself: nothing to do.
                    return Ok(None);
                }
                if no_replace {
                    return Err(FsError::Exists);
                }
                match (src.kind, dst.kind) {
                    (Kind::Dir, k) if k != Kind::Dir => return Err(FsError::NotDir),
                    (k, Kind::Dir) if k != Kind::Dir => return Err(FsError::IsDir),
                    (Kind::Dir, Kind::Dir) if store::has_children(tx, dst.ino)? => {
                        return Err(FsError::NotEmpty)
                    }
                    _ => {}
                }
                journal::record_remove(tx, &dst, &to)?;
                forget_base_copy(tx, &dst)?;
                gone = self.detach(tx, &dst)?;
            }
            journal::record_rename(tx, &src, &from, &to)?;
            store::move_node(tx, src.ino, new_parent, new_name)?;
            let now = store::now_ns();
            store::touch_dir(tx, parent, now)?;
            store::touch_dir(tx, new_parent, now)?;
            FsResult::Ok(Some(gone))
        })?;
        let Some(gone) = gone else {
            return Ok(());
        };
        if let Some(ino) = gone {
            self.content.remove(ino);
        }
        self.journal_changed.notify_one();
        Ok(())
    }

    /// Changes attributes. `size` truncates or extends; mode and owner are kept locally.
    #[allow(clippy::too_many_arguments)]
    pub fn setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        mtime: Option<SystemTime>,
    ) -> FsResult<Attr> {
        if let Some(new_size) = size {
            self.ensure_writable()?;
            self.truncate(ino, new_size)?;
        }
        if mode.is_some() || uid.is_some() || gid.is_some() || mtime.is_some() {
            if mtime.is_some() {
                self.ensure_writable()?;
            }
            self.foreground.note();
            let mtime_ns = mtime.map(store::system_time_to_ns);
            if let Some(of) = lock(&self.open_files).get(&ino).cloned() {
                let mut st = lock(&of.state);
                if let Some(ns) = mtime_ns {
                    st.mtime_ns = ns;
                }
                st.ctime_ns = store::now_ns();
            }
            let (recorded, n, subdirs) = self.store.write(|tx| {
                store::nodes::set_attrs(tx, ino, mode, uid, gid, mtime_ns, store::now_ns())?;
                let recorded = self.record_meta(tx, ino)?;
                // The attributes the reply carries, read in the same transaction.
                let n = store::get_node(tx, ino)?.ok_or(FsError::NotFound)?;
                let subdirs = subdirs_in(tx, &n)?;
                FsResult::Ok((recorded, n, subdirs))
            })?;
            if recorded {
                self.journal_changed.notify_one();
            }
            return Ok(self.node_attr_with(&n, subdirs));
        }
        self.getattr(ino)
    }

    /// `utimensat` with an access time.
    pub fn set_atime(&self, ino: u64, atime: SystemTime) -> FsResult<Attr> {
        self.ensure_writable()?;
        let ns = store::system_time_to_ns(atime);
        let recorded = self.store.write(|tx| {
            store::set_atime(tx, ino, ns)?;
            let recorded = self.record_meta(tx, ino)?;
            // Under the writer, as the commit: a read of the open file's state sees the
            // same time as the store.
            if let Some(of) = lock(&self.open_files).get(&ino) {
                lock(&of.state).atime_ns = Some(ns);
            }
            FsResult::Ok(recorded)
        })?;
        if recorded {
            self.journal_changed.notify_one();
        }
        self.getattr(ino)
    }

    /// Records a change of the mode, owner or times of `ino` for the server (dead
    /// properties), unless the server is known to keep none, or the mount is read-only.
    /// Reads never come here: an access time recorded by a read goes along with the next
    /// upload or metadata change.
    pub(super) fn record_meta(&self, tx: &Connection, ino: u64) -> FsResult<bool> {
        if self.cfg.read_only || self.dead_props.get() == Some(&false) {
            return Ok(false);
        }
        let Some(node) = store::get_node(tx, ino)? else {
            return Ok(false);
        };
        if node.parent == 0 {
            // The root's properties are the server's; an unlinked file has no path.
            return Ok(false);
        }
        let Some(path) = store::path_of(tx, ino)? else {
            return Ok(false);
        };
        Ok(journal::record_meta(tx, &node, &path)?)
    }

    /// The inode at mount-relative `path` ("/a/b"), looking names up as the kernel would.
    pub fn resolve_path(&self, path: &str) -> FsResult<u64> {
        let mut ino = store::ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = self.lookup(ino, part)?.ino;
        }
        Ok(ino)
    }
}
