//! The FUSE adapter: converts kernel requests into calls of the core and replies exactly
//! once. No logic of its own; errors become errnos through `FsError::errno`.
//!
//! Every callback has one shape: enter a span naming the operation, the request id and
//! the inode (`span`), call the core, reply once. Calls davdrive does not support answer
//! their errno with at most a debug line.
//!
//! Over 600 lines: one short callback per FUSE operation, all of the same shape;
//! nothing else.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::fs::{Attr, Core, FsError};
use crate::store::Kind;

pub mod session;

const STATE_XATTR: &str = "user.davdrive.state";

pub struct DavFs {
    core: Arc<Core>,
    ttl: Duration,
    /// Whether fully cached files opened read-only are handed to the kernel to read
    /// directly (FUSE passthrough, Linux 6.9 and later, as root).
    passthrough: AtomicBool,
    /// How each open inode is open. The kernel allows either ordinary opens or
    /// passthrough opens of one inode, all with the same backing file, never both.
    /// Lock order: taken before any lock of the core (`reply_open` asks the core for a
    /// passthrough file under it), never across a call that can wait for the network.
    opens: Mutex<Opens>,
    /// Owner and modes every file shows (`uid=`, `gid=`, `umask=`, `file_mode=`,
    /// `dir_mode=`).
    attrs: crate::config::AttrPolicy,
}

#[derive(Default)]
struct Opens {
    by_inode: HashMap<u64, InodeOpens>,
    /// Handle → (inode, through passthrough).
    handles: HashMap<u64, (u64, bool)>,
}

#[derive(Default)]
struct InodeOpens {
    ordinary: usize,
    /// The backing file registered with the kernel and how many handles use it.
    backing: Option<(BackingId, usize)>,
}

impl DavFs {
    pub fn new(core: Arc<Core>, passthrough: bool, attrs: crate::config::AttrPolicy) -> DavFs {
        let ttl = core.cfg.attr_ttl.min(core.cfg.dir_ttl);
        DavFs {
            core,
            ttl,
            passthrough: AtomicBool::new(passthrough),
            opens: Mutex::new(Opens::default()),
            attrs,
        }
    }

    /// The kernel's view of a node: the core's attributes, with the owner and modes the
    /// mount options fix.
    fn file_attr(&self, a: &Attr) -> FileAttr {
        let mut f = file_attr(a);
        if let Some(uid) = self.attrs.uid {
            f.uid = uid;
        }
        if let Some(gid) = self.attrs.gid {
            f.gid = gid;
        }
        f.perm = self.attrs.perm(a.kind == Kind::Dir, f.perm);
        f
    }

    /// Replies to a successful open: through passthrough when the inode already has a
    /// backing file (read-only opens), or when it has no ordinary opens and the core
    /// allows it; otherwise an ordinary open.
    fn reply_open(&self, ino: u64, fh: u64, writable: bool, flags: FopenFlags, reply: ReplyOpen) {
        let mut opens = self.opens.lock().unwrap_or_else(|e| e.into_inner());
        let state = opens.by_inode.entry(ino).or_default();
        if !writable && self.passthrough.load(Ordering::Relaxed) {
            if state.backing.is_none() && state.ordinary == 0 {
                if let Some(file) = self.core.passthrough_file(fh) {
                    match reply.open_backing(&file) {
                        Ok(id) => state.backing = Some((id, 0)),
                        Err(e) => {
                            tracing::info!(
                                "FUSE passthrough unavailable ({e}); cached reads go through davdrive"
                            );
                            self.passthrough.store(false, Ordering::Relaxed);
                        }
                    }
                }
            }
            if let Some((id, users)) = state.backing.as_mut() {
                *users += 1;
                tracing::debug!("open of inode {ino} served by passthrough");
                // The kernel reads the backing file itself: its page cache for this
                // inode is not ours to keep (and FOPEN_KEEP_CACHE with passthrough fails
                // the open).
                reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), id);
                opens.handles.insert(fh, (ino, true));
                return;
            }
        }
        // A writer while passthrough readers are open is refused by the kernel (EIO).
        state.ordinary += 1;
        opens.handles.insert(fh, (ino, false));
        reply.opened(FileHandle(fh), flags)
    }

    fn forget_open(&self, fh: u64) {
        let mut opens = self.opens.lock().unwrap_or_else(|e| e.into_inner());
        let Some((ino, through_backing)) = opens.handles.remove(&fh) else {
            return;
        };
        if let Some(state) = opens.by_inode.get_mut(&ino) {
            if through_backing {
                if let Some((_, users)) = state.backing.as_mut() {
                    *users -= 1;
                    if *users == 0 {
                        state.backing = None;
                    }
                }
            } else {
                state.ordinary = state.ordinary.saturating_sub(1);
            }
            if state.ordinary == 0 && state.backing.is_none() {
                opens.by_inode.remove(&ino);
            }
        }
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.mtime,
        kind: kind(a.kind),
        perm: a.mode as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn kind(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
    }
}

/// Converts a core error to the errno the program sees, logging the ones a user should
/// know about.
fn errno(op: &str, e: FsError) -> Errno {
    if e.worth_logging() {
        tracing::warn!("{op}: {e}");
    } else {
        tracing::debug!("{op}: {e}");
    }
    Errno::from_i32(e.errno())
}

/// The span every callback runs in: the operation, the kernel's request id and the
/// inode, on every line logged while the request is served (by the core too). At warn
/// level, so that the lines shown at the default level carry it.
fn span(op: &'static str, req: &Request, ino: INodeNo) -> tracing::span::EnteredSpan {
    tracing::warn_span!("fuse", op, req = req.unique().0, ino = ino.0).entered()
}

fn name_str(name: &OsStr) -> Result<&str, Errno> {
    // WebDAV names are UTF-8; a name that is not cannot be stored on the remote.
    name.to_str().ok_or(Errno::EINVAL)
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for DavFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        let _ = config.add_capabilities(InitFlags::FUSE_READDIRPLUS_AUTO);
        if self.passthrough.load(Ordering::Relaxed) {
            // Depth 2: the cache may itself sit on a stacked filesystem (overlayfs).
            let on = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(2).is_ok();
            if !on {
                tracing::info!(
                    "the kernel has no FUSE passthrough; cached reads go through davdrive"
                );
            }
            self.passthrough.store(on, Ordering::Relaxed);
        }
        Ok(())
    }

    fn forget(&self, req: &Request, ino: INodeNo, _nlookup: u64) {
        let _span = span("forget", req, ino);
        self.core.forget(ino.0);
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _span = span("lookup", req, parent);
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.core.lookup(parent.0, name) {
            Ok(a) => reply.entry(&self.ttl, &self.file_attr(&a), Generation(0)),
            Err(FsError::NotFound) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(errno("lookup", e)),
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _span = span("getattr", req, ino);
        match self.core.getattr(ino.0) {
            Ok(a) => reply.attr(&self.ttl, &self.file_attr(&a)),
            Err(e) => reply.error(errno("getattr", e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _span = span("setattr", req, ino);
        match self
            .core
            .setattr(ino.0, mode, uid, gid, size, mtime.map(time))
            .and_then(|a| match atime {
                Some(t) => self.core.set_atime(ino.0, time(t)),
                None => Ok(a),
            }) {
            Ok(a) => reply.attr(&self.ttl, &self.file_attr(&a)),
            Err(e) => reply.error(errno("setattr", e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let _span = span("mknod", req, parent);
        // Only regular files have a WebDAV representation.
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self
            .core
            .create(parent.0, name, mode, req.uid(), req.gid())
            .and_then(|(a, fh)| self.core.release(fh).map(|_| a))
        {
            Ok(a) => reply.entry(&self.ttl, &self.file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno("mknod", e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let _span = span("mkdir", req, parent);
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.core.mkdir(parent.0, name, mode, req.uid(), req.gid()) {
            Ok(a) => reply.entry(&self.ttl, &self.file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno("mkdir", e)),
        }
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _span = span("unlink", req, parent);
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.core.unlink(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("unlink", e)),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _span = span("rmdir", req, parent);
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.core.rmdir(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("rmdir", e)),
        }
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _span = span("rename", req, parent);
        let (name, newname) = match (name_str(name), name_str(newname)) {
            (Ok(a), Ok(b)) => (a, b),
            _ => return reply.error(Errno::EINVAL),
        };
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(Errno::EINVAL);
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        match self
            .core
            .rename(parent.0, name, newparent.0, newname, no_replace)
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("rename", e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _span = span("open", req, ino);
        let writable = flags.acc_mode() != OpenAccMode::O_RDONLY;
        match self.core.open(ino.0, writable) {
            Ok((fh, keep_cache)) => {
                let f = if keep_cache {
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                self.reply_open(ino.0, fh, writable, f, reply)
            }
            Err(e) => reply.error(errno("open", e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _span = span("read", req, ino);
        match self.core.read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno("read", e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _span = span("write", req, ino);
        match self.core.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno("write", e)),
        }
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _span = span("flush", req, ino);
        match self.core.flush(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("flush", e)),
        }
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _span = span("release", req, ino);
        self.forget_open(fh.0);
        match self.core.release(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("release", e)),
        }
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _span = span("fsync", req, ino);
        match self.core.fsync(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("fsync", e)),
        }
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _span = span("opendir", req, ino);
        match self.core.opendir_cached(ino.0) {
            Ok((fh, unchanged)) => {
                let keep = if unchanged {
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_CACHE_DIR | keep)
            }
            Err(e) => reply.error(errno("opendir", e)),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _span = span("readdir", req, ino);
        let entries = match self.core.readdir(fh.0) {
            Ok(e) => e,
            Err(e) => return reply.error(errno("readdir", e)),
        };
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(e.attr.ino),
                (i + 1) as u64,
                kind(e.attr.kind),
                &e.name,
            ) {
                break;
            }
        }
        reply.ok()
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let _span = span("readdirplus", req, ino);
        let entries = match self.core.readdir(fh.0) {
            Ok(e) => e,
            Err(e) => return reply.error(errno("readdirplus", e)),
        };
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(e.attr.ino),
                (i + 1) as u64,
                &e.name,
                &self.ttl,
                &self.file_attr(&e.attr),
                Generation(0),
            ) {
                break;
            }
        }
        reply.ok()
    }

    fn releasedir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _span = span("releasedir", req, ino);
        self.core.releasedir(fh.0);
        reply.ok()
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _span = span("fsyncdir", req, ino);
        match self.core.sync_journal() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("fsyncdir", e)),
        }
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let _span = span("statfs", req, ino);
        match self.core.statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                255,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno("statfs", e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let _span = span("create", req, parent);
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.core.create(parent.0, name, mode, req.uid(), req.gid()) {
            Ok((a, fh)) => {
                {
                    let mut opens = self.opens.lock().unwrap_or_else(|e| e.into_inner());
                    opens.by_inode.entry(a.ino).or_default().ordinary += 1;
                    opens.handles.insert(fh, (a.ino, false));
                }
                reply.created(
                    &self.ttl,
                    &self.file_attr(&a),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                )
            }
            Err(e) => reply.error(errno("create", e)),
        }
    }

    /// `user.davdrive.state` (read-only) tells a file's cache state, for `getfattr -n`.
    /// It is not listed, so `cp -a` and `rsync -X` do not copy it onto other files.
    /// Other `user.` names have no value (`ENODATA`); the other namespaces (`security.`,
    /// `system.`: SELinux labels, ACLs) are not supported at all (`ENOTSUP`), which `ls -l`
    /// remembers for the whole mount instead of asking twice for every file it lists.
    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _span = span("getxattr", req, ino);
        if name != STATE_XATTR {
            let e = if name.as_encoded_bytes().starts_with(b"user.") {
                libc::ENODATA
            } else {
                libc::ENOTSUP
            };
            return reply.error(Errno::from_i32(e));
        }
        let state = match self.core.file_state(ino.0) {
            Ok(s) => s,
            Err(e) => return reply.error(errno("getxattr", e)),
        };
        if size == 0 {
            reply.size(state.len() as u32)
        } else if (size as usize) < state.len() {
            reply.error(Errno::from_i32(libc::ERANGE))
        } else {
            reply.data(state.as_bytes())
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _span = span("setxattr", req, ino);
        // Extended attributes are not stored (WebDAV has no place for them).
        let e = if name == STATE_XATTR {
            libc::EPERM
        } else {
            libc::ENOTSUP
        };
        reply.error(Errno::from_i32(e))
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _span = span("listxattr", req, ino);
        if size == 0 {
            reply.size(0)
        } else {
            reply.data(&[])
        }
    }

    // Calls davdrive does not support. fuser's defaults answer the same errno but warn
    // at every call (git and python issue ioctls by the dozen): a program probing for a
    // feature is not an event for the log.

    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        let _span = span("ioctl", req, ino);
        tracing::debug!("ioctl {cmd:#x} on inode {}: not supported", ino.0);
        reply.error(Errno::ENOTTY)
    }

    fn bmap(
        &self,
        req: &Request,
        ino: INodeNo,
        _blocksize: u32,
        _idx: u64,
        reply: fuser::ReplyBmap,
    ) {
        let _span = span("bmap", req, ino);
        tracing::debug!("bmap: not supported");
        reply.error(Errno::ENOSYS)
    }

    fn poll(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _ph: fuser::PollNotifier,
        _events: fuser::PollEvents,
        _flags: fuser::PollFlags,
        reply: fuser::ReplyPoll,
    ) {
        let _span = span("poll", req, ino);
        // ENOSYS: the kernel stops asking and treats files as always ready.
        tracing::debug!("poll: not supported");
        reply.error(Errno::ENOSYS)
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        let _span = span("fallocate", req, ino);
        tracing::debug!("fallocate: not supported");
        reply.error(Errno::from_i32(libc::EOPNOTSUPP))
    }

    fn lseek(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: fuser::ReplyLseek,
    ) {
        let _span = span("lseek", req, ino);
        // ENOSYS: the kernel then handles SEEK_DATA/SEEK_HOLE itself.
        tracing::debug!("lseek: answered by the kernel");
        reply.error(Errno::ENOSYS)
    }

    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let _span = span("copy_file_range", req, ino_in);
        // ENOSYS: the kernel falls back to reads and writes.
        tracing::debug!("copy_file_range: done by reads and writes");
        reply.error(Errno::ENOSYS)
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _span = span("removexattr", req, ino);
        // None are stored; the computed one cannot be removed.
        let e = if name == STATE_XATTR {
            libc::EPERM
        } else {
            libc::ENODATA
        };
        reply.error(Errno::from_i32(e))
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let _span = span("readlink", req, ino);
        match self.core.readlink(ino.0) {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply.error(errno("readlink", e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let _span = span("symlink", req, parent);
        let name = match name_str(link_name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let Some(target) = target.to_str() else {
            return reply.error(Errno::EINVAL);
        };
        match self
            .core
            .symlink(parent.0, name, target, req.uid(), req.gid())
        {
            Ok(a) => reply.entry(&self.ttl, &self.file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno("symlink", e)),
        }
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _span = span("link", req, ino);
        tracing::debug!("link: hard links are not supported");
        reply.error(Errno::EPERM)
    }
}
