//! Content files: one sparse file per node under `<cache dir>/content/`, named by inode
//! number. Which byte ranges of a file are present is kept in the node table.

pub mod sweeper;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the cache may keep: clean, unpinned content goes when unused for `max_age`, and
/// least recently used first when the cache passes `max_size` or the disk under it has
/// less than `min_free` left.
#[derive(Debug, Clone)]
pub struct CacheLimits {
    pub max_age: Duration,
    /// None: 10 GiB or 20% of the cache's filesystem, whichever is smaller.
    pub max_size: Option<u64>,
    pub min_free: u64,
    /// How often the sweeper runs on its own (it also runs at start).
    pub sweep_every: Duration,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_size: None,
            min_free: 1 << 30,
            sweep_every: Duration::from_secs(3600),
        }
    }
}

impl CacheLimits {
    /// The size cap for a cache on a filesystem of `fs_total` bytes.
    pub fn max_size_for(&self, fs_total: u64) -> u64 {
        self.max_size.unwrap_or((10u64 << 30).min(fs_total / 5))
    }
}

/// Total and available bytes of the filesystem holding `path`.
pub fn fs_space(path: &Path) -> io::Result<(u64, u64)> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::other("path with a NUL byte"))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let unit = st.f_frsize as u64;
    Ok((st.f_blocks as u64 * unit, st.f_bavail as u64 * unit))
}

/// SHA-256 (hex) of the first `len` bytes of the file at `path`, which must have them.
pub fn sha256_prefix(path: &Path, len: u64) -> io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let f = open_nofollow(path)?;
    let mut h = Sha256::new();
    let n = io::copy(&mut f.take(len), &mut h)?;
    if n != len {
        return Err(io::Error::other(format!(
            "{}: has {n} bytes, {len} expected",
            path.display()
        )));
    }
    Ok(hex(&h.finalize()))
}

/// Checks the first `len` bytes of `path` against the strongest checksum in `spec`
/// (`oc:checksums`: "SHA1:… MD5:… ADLER32:…", SHA256 too). `None` when `spec` holds no
/// algorithm known here.
pub fn checksum_matches(spec: &str, path: &Path, len: u64) -> io::Result<Option<bool>> {
    use sha2::Digest;
    use std::io::Read;
    let mut best: Option<(&str, String)> = None;
    for part in spec.split_whitespace() {
        let Some((algo, value)) = part.split_once(':') else {
            continue;
        };
        let algo = algo.to_ascii_uppercase();
        let rank = |a: &str| ["MD5", "SHA1", "SHA256"].iter().position(|x| *x == a);
        let Some(r) = rank(&algo) else { continue };
        if best.as_ref().is_none_or(|(b, _)| rank(b).unwrap_or(0) < r) {
            let name = ["MD5", "SHA1", "SHA256"][r];
            best = Some((name, value.to_ascii_lowercase()));
        }
    }
    let Some((algo, want)) = best else {
        return Ok(None);
    };
    let mut f = open_nofollow(path)?.take(len);
    let mut buf = vec![0u8; 1 << 20];
    let mut md5 = md5::Md5::new();
    let mut sha1 = sha1::Sha1::new();
    let mut sha256 = sha2::Sha256::new();
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        match algo {
            "MD5" => md5.update(&buf[..n]),
            "SHA1" => sha1.update(&buf[..n]),
            _ => sha256.update(&buf[..n]),
        }
    }
    let got = match algo {
        "MD5" => hex(&md5.finalize()),
        "SHA1" => hex(&sha1.finalize()),
        _ => hex(&sha256.finalize()),
    };
    Ok(Some(got == want))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Opens `path` for reading without following a symbolic link at its last component.
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

fn euid() -> u32 {
    unsafe { libc::geteuid() }
}

/// Checks that the cache dir is ours before anything in it is used, as ssh checks the
/// folders holding its keys, and creates it (0700) if missing. Refused, with one line
/// naming the problem:
/// - the dir, or anything at its top level, owned by another user than the one running
///   davdrive (who could then read the state store or plant links for us to follow);
/// - the dir writable by its group or by others;
/// - a folder above it writable by another user (group or others, without the sticky
///   bit of `/tmp`), or owned by another user than root or us: they could move the
///   cache dir away and put one of their own in its place;
/// - a symbolic link at its top level.
///
/// Modes that are merely too open for reading (an older version made `state.db` 0644)
/// are tightened: files 0600, folders 0700.
pub fn secure_cache_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let shown = dir.display();
    let absolute = std::path::absolute(dir).map_err(|e| format!("cache dir {shown}: {e}"))?;
    // Ancestors first: creating the dir inside a folder someone else controls is already
    // a mistake.
    let check_ancestors = |p: &Path| -> Result<(), String> {
        for a in p.ancestors().skip(1) {
            let m = match std::fs::metadata(a) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("cache dir {shown}: {}: {e}", a.display())),
            };
            if m.uid() != 0 && m.uid() != euid() {
                return Err(format!(
                    "cache dir {shown} refused: {} above it is owned by uid {}, who could \
                     replace it (use a cache dir in a folder of yours)",
                    a.display(),
                    m.uid()
                ));
            }
            let sticky = m.mode() & 0o1000 != 0;
            if m.mode() & 0o022 != 0 && !sticky {
                return Err(format!(
                    "cache dir {shown} refused: {} above it is writable by {} (mode {:04o}), \
                     who could replace it",
                    a.display(),
                    if m.mode() & 0o002 != 0 {
                        "everyone"
                    } else {
                        "its group"
                    },
                    m.mode() & 0o7777
                ));
            }
        }
        Ok(())
    };
    check_ancestors(&absolute)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create cache dir {shown}: {e}"))?;
    let real = std::fs::canonicalize(dir).map_err(|e| format!("cache dir {shown}: {e}"))?;
    if real != absolute {
        check_ancestors(&real)?;
    }
    let m = std::fs::metadata(&real).map_err(|e| format!("cache dir {shown}: {e}"))?;
    if !m.is_dir() {
        return Err(format!("cache dir {shown} is not a folder"));
    }
    if m.uid() != euid() {
        return Err(format!(
            "cache dir {shown} refused: it is owned by uid {}, not by uid {} running \
             davdrive (chown it, or choose another --cache-dir)",
            m.uid(),
            euid()
        ));
    }
    if m.mode() & 0o022 != 0 {
        return Err(format!(
            "cache dir {shown} refused: it is writable by {} (mode {:04o}); run \
             `chmod 700 {shown}`",
            if m.mode() & 0o002 != 0 {
                "everyone"
            } else {
                "its group"
            },
            m.mode() & 0o7777
        ));
    }
    if m.mode() & 0o077 != 0 {
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cache dir {shown}: chmod 700: {e}"))?;
    }
    let entries = std::fs::read_dir(&real).map_err(|e| format!("cache dir {shown}: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cache dir {shown}: {e}"))?;
        let p = entry.path();
        let m = std::fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        if m.file_type().is_symlink() {
            return Err(format!(
                "cache dir {shown} refused: {} is a symbolic link (davdrive follows none \
                 in its cache dir; remove it)",
                p.display()
            ));
        }
        if m.uid() != euid() {
            return Err(format!(
                "cache dir {shown} refused: {} is owned by uid {}, not by uid {} running \
                 davdrive",
                p.display(),
                m.uid(),
                euid()
            ));
        }
        if m.mode() & 0o077 != 0 {
            let mode = if m.is_dir() { 0o700 } else { m.mode() & 0o700 };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("{}: chmod: {e}", p.display()))?;
        }
    }
    Ok(())
}

/// For small files of ours outside the cache dir (the pid file and the control socket's
/// link, in `/tmp/davdrive-<uid>` when there is no `XDG_RUNTIME_DIR`): makes `dir` (0700)
/// and checks that it and its parent are real folders of ours that no one else can
/// write. Another user who made `/tmp/davdrive-0` first could otherwise plant links
/// there for root to write through.
pub fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    for d in [dir.parent(), Some(dir)].into_iter().flatten() {
        let m = std::fs::symlink_metadata(d).map_err(|e| format!("{}: {e}", d.display()))?;
        if !m.is_dir() || m.uid() != euid() || m.mode() & 0o022 != 0 {
            return Err(format!(
                "{} is not a private folder of uid {} (owner {}, mode {:04o}{})",
                d.display(),
                euid(),
                m.uid(),
                m.mode() & 0o7777,
                if m.file_type().is_symlink() {
                    ", a link"
                } else {
                    ""
                }
            ));
        }
    }
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_strongest_offered_checksum_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let sha1 = "SHA1:a9993e364706816aba3e25717850c26c9cd0d89d";
        let md5 = "MD5:900150983cd24fb0d6963f7d28e17f72";
        let both = format!("{sha1} {md5}");
        assert_eq!(checksum_matches(&both, &p, 3).unwrap(), Some(true));
        assert_eq!(checksum_matches(md5, &p, 3).unwrap(), Some(true));
        // A wrong SHA1 beside a right MD5: SHA1 is the stronger, it decides.
        let wrong = format!("{md5} SHA1:0000000000000000000000000000000000000000");
        assert_eq!(checksum_matches(&wrong, &p, 3).unwrap(), Some(false));
        assert_eq!(checksum_matches("ADLER32:024d0127", &p, 3).unwrap(), None);
        assert_eq!(checksum_matches("", &p, 3).unwrap(), None);
    }
}
