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
    let f = File::open(path)?;
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
    let mut f = File::open(path)?.take(len);
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

pub struct ContentFiles {
    dir: PathBuf,
}

impl ContentFiles {
    pub fn new(cache_dir: &Path) -> io::Result<ContentFiles> {
        let dir = cache_dir.join("content");
        std::fs::create_dir_all(&dir)?;
        Ok(ContentFiles { dir })
    }

    /// Spread over 256 folders so none grows huge.
    pub fn path(&self, ino: u64) -> PathBuf {
        self.dir
            .join(format!("{:02x}", ino & 0xff))
            .join(ino.to_string())
    }

    /// Opens the content file for reading and writing, creating it empty if missing.
    pub fn open(&self, ino: u64) -> io::Result<File> {
        let p = self.path(ino);
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&p)
        };
        match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(p.parent().unwrap())?;
                open()
            }
            r => r,
        }
    }

    pub fn len(&self, ino: u64) -> io::Result<u64> {
        match std::fs::metadata(self.path(ino)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    pub fn remove(&self, ino: u64) {
        match std::fs::remove_file(self.path(ino)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("could not remove content file of inode {ino}: {e}"),
        }
    }

    /// Gives the content of `from` to `to` (a conflict copy takes over the local version).
    pub fn rename(&self, from: u64, to: u64) -> io::Result<()> {
        let dest = self.path(to);
        std::fs::create_dir_all(dest.parent().unwrap())?;
        std::fs::rename(self.path(from), dest)
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
