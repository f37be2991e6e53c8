//! Content files: one sparse file per node under `<cache dir>/content/`, named by inode
//! number and reached without following links. Which byte ranges of a file are present
//! is kept in the node table, not here.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::euid;

/// The content files, reached only through a handle on `<cache dir>/content` and the
/// folder handles below it, never by following a link: a symbolic link, hard link,
/// FIFO or anything not a plain file of ours found where a content file should be is
/// removed (with a warning) and replaced by an empty file. The range map then says more
/// than the file holds, which the integrity check at first serve catches: the content is
/// fetched again.
pub struct ContentFiles {
    dir: PathBuf,
    fd: std::os::fd::OwnedFd,
}

fn cstr(s: &str) -> std::ffi::CString {
    std::ffi::CString::new(s).expect("no NUL in generated names")
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fstat(fd: libc::c_int) -> io::Result<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

fn is_ours_plain_file(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_uid == euid() && st.st_nlink == 1
}

impl ContentFiles {
    pub fn new(cache_dir: &Path) -> io::Result<ContentFiles> {
        use std::os::fd::FromRawFd;
        use std::os::unix::fs::DirBuilderExt;
        let dir = cache_dir.join("content");
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::other("cache path with a NUL byte"))?;
        let fd = cvt(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        })
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let st = fstat(std::os::fd::AsRawFd::as_raw_fd(&fd))?;
        if st.st_uid != euid() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is owned by uid {}, not by us", dir.display(), st.st_uid),
            ));
        }
        if st.st_mode & 0o077 != 0 {
            cvt(unsafe { libc::fchmod(std::os::fd::AsRawFd::as_raw_fd(&fd), 0o700) })?;
        }
        Ok(ContentFiles { dir, fd })
    }

    fn raw(&self) -> libc::c_int {
        std::os::fd::AsRawFd::as_raw_fd(&self.fd)
    }

    fn names(ino: u64) -> (String, String) {
        (format!("{:02x}", ino & 0xff), ino.to_string())
    }

    /// Spread over 256 folders so none grows huge. For messages and for handing a
    /// content file to code that opens it with `O_NOFOLLOW` itself.
    pub fn path(&self, ino: u64) -> PathBuf {
        let (sub, name) = Self::names(ino);
        self.dir.join(sub).join(name)
    }

    /// A handle on the folder of `ino`'s content file; with `create`, made if missing.
    /// Anything else at that name (a link, a file, a folder of someone else) is removed
    /// and the folder made anew.
    fn subdir(&self, ino: u64, create: bool) -> io::Result<Option<std::os::fd::OwnedFd>> {
        use std::os::fd::FromRawFd;
        let (sub, _) = Self::names(ino);
        let c = cstr(&sub);
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        for _ in 0..3 {
            let r = unsafe { libc::openat(self.raw(), c.as_ptr(), flags) };
            if r >= 0 {
                let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(r) };
                let st = fstat(r)?;
                if st.st_uid == euid() {
                    if st.st_mode & 0o077 != 0 {
                        cvt(unsafe { libc::fchmod(r, 0o700) })?;
                    }
                    return Ok(Some(fd));
                }
                tracing::warn!(
                    "{}: owned by uid {}, not by us; replacing it",
                    self.dir.join(&sub).display(),
                    st.st_uid
                );
                self.remove_tree(&sub)?;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOENT) if !create => return Ok(None),
                Some(libc::ENOENT) => {
                    match cvt(unsafe { libc::mkdirat(self.raw(), c.as_ptr(), 0o700) }) {
                        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                        _ => {}
                    }
                }
                // A link or a file planted where the folder should be.
                Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
                    tracing::warn!(
                        "{}: not a folder (a link?); removing it, never following it",
                        self.dir.join(&sub).display()
                    );
                    cvt(unsafe { libc::unlinkat(self.raw(), c.as_ptr(), 0) })?;
                }
                _ => return Err(e),
            }
        }
        Err(io::Error::other(format!(
            "{}: cannot make a folder of ours there",
            self.dir.join(&sub).display()
        )))
    }

    /// Removes a folder planted in `content/` and what is in it (not following links).
    fn remove_tree(&self, sub: &str) -> io::Result<()> {
        // A path under our own content handle: /proc/self/fd/N/sub resolves the handle,
        // and remove_dir_all does not follow links inside.
        let p = PathBuf::from(format!("/proc/self/fd/{}", self.raw())).join(sub);
        std::fs::remove_dir_all(p)
    }

    fn open_in(&self, ino: u64, flags: libc::c_int, create: bool) -> io::Result<Option<File>> {
        use std::os::fd::{AsRawFd, FromRawFd};
        let Some(sub) = self.subdir(ino, create)? else {
            return Ok(None);
        };
        let (_, name) = Self::names(ino);
        let c = cstr(&name);
        let base = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
        let mut exclusive = false;
        for _ in 0..3 {
            let f = if create {
                base | libc::O_CREAT | if exclusive { libc::O_EXCL } else { 0 }
            } else {
                base
            };
            let r = unsafe { libc::openat(sub.as_raw_fd(), c.as_ptr(), f, 0o600 as libc::c_uint) };
            if r >= 0 {
                let file = unsafe { File::from_raw_fd(r) };
                let st = fstat(r)?;
                if is_ours_plain_file(&st) {
                    if st.st_mode & 0o077 != 0 {
                        cvt(unsafe { libc::fchmod(r, 0o600) })?;
                    }
                    // Back to blocking I/O (it changes nothing for plain files anyway).
                    let fl = cvt(unsafe { libc::fcntl(r, libc::F_GETFL) })?;
                    cvt(unsafe { libc::fcntl(r, libc::F_SETFL, fl & !libc::O_NONBLOCK) })?;
                    return Ok(Some(file));
                }
                tracing::warn!(
                    "{}: not a plain file of ours (mode {:o}, owner {}, {} links); \
                     removing it, its content is fetched again",
                    self.path(ino).display(),
                    st.st_mode,
                    st.st_uid,
                    st.st_nlink
                );
            } else {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::ENOENT) if !create => return Ok(None),
                    Some(libc::EEXIST) if exclusive => {}
                    Some(libc::ELOOP) => tracing::warn!(
                        "{}: a symbolic link; removing it, never following it",
                        self.path(ino).display()
                    ),
                    // A folder where the file should be.
                    Some(libc::EISDIR) => {
                        tracing::warn!("{}: a folder; removing it", self.path(ino).display());
                        let p =
                            PathBuf::from(format!("/proc/self/fd/{}", sub.as_raw_fd())).join(&name);
                        std::fs::remove_dir_all(p)?;
                        exclusive = true;
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            match cvt(unsafe { libc::unlinkat(sub.as_raw_fd(), c.as_ptr(), 0) }) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            if !create {
                return Ok(None);
            }
            exclusive = true;
        }
        Err(io::Error::other(format!(
            "{}: cannot make a content file of ours there",
            self.path(ino).display()
        )))
    }

    /// Opens the content file for reading and writing, creating it empty if missing.
    pub fn open(&self, ino: u64) -> io::Result<File> {
        self.open_in(ino, libc::O_RDWR, true)
            .map(|f| f.expect("created when missing"))
    }

    /// Opens the content file for reading; `None` when there is none.
    pub fn open_read(&self, ino: u64) -> io::Result<Option<File>> {
        self.open_in(ino, libc::O_RDONLY, false)
    }

    pub fn len(&self, ino: u64) -> io::Result<u64> {
        Ok(match self.open_read(ino)? {
            Some(f) => f.metadata()?.len(),
            None => 0,
        })
    }

    pub fn remove(&self, ino: u64) {
        let r = (|| {
            let Some(sub) = self.subdir(ino, false)? else {
                return Ok(());
            };
            let (_, name) = Self::names(ino);
            let c = cstr(&name);
            use std::os::fd::AsRawFd;
            cvt(unsafe { libc::unlinkat(sub.as_raw_fd(), c.as_ptr(), 0) }).map(|_| ())
        })();
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("could not remove content file of inode {ino}: {e}"),
        }
    }

    /// Gives the content of `from` to `to` (a conflict copy takes over the local version).
    pub fn rename(&self, from: u64, to: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // Opening checks what is there is a plain file of ours.
        if self.open_read(from)?.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no content file", self.path(from).display()),
            ));
        }
        let src = self.subdir(from, false)?.ok_or(io::ErrorKind::NotFound)?;
        let dst = self.subdir(to, true)?.expect("created");
        let (a, b) = (cstr(&Self::names(from).1), cstr(&Self::names(to).1));
        cvt(unsafe { libc::renameat(src.as_raw_fd(), a.as_ptr(), dst.as_raw_fd(), b.as_ptr()) })
            .map(|_| ())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
