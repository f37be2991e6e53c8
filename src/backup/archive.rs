//! The backup archive: a gzip'd tar holding `davdrive/state.db` (davdrive's own state
//! store), each source under `sources/<its absolute path>`, and `MANIFEST.json` last, which
//! lists every file with its size and SHA-256 so `verify` can check each one, and what
//! could not be backed up.
//!
//! SQLite databases (recognised by their header) are copied with SQLite's online backup
//! API: the copy is one consistent snapshot even while another process writes. Other
//! files are copied to a scratch file first; one that changes while being read is read
//! again once, then kept as read and named in the manifest's problems.
//!
//! Over 600 lines with its unit tests (the code is under 500).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cache::hex;

pub const MANIFEST: &str = "MANIFEST.json";
pub const STATE_ENTRY: &str = "davdrive/state.db";
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub host: String,
    /// Unix seconds.
    pub created_at: i64,
    pub davdrive_version: String,
    pub sources: Vec<String>,
    pub files: Vec<ManifestFile>,
    /// What is missing or may be inconsistent, one line each.
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ManifestFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// Copied with the SQLite backup API.
    pub sqlite: bool,
}

/// What `build` made.
#[derive(Debug)]
pub struct Built {
    pub sha256: String,
    pub size: u64,
    pub files: usize,
    pub problems: Vec<String>,
}

/// Passes writes on and hashes them.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub fn is_sqlite(path: &Path) -> bool {
    let mut head = [0u8; 16];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head == SQLITE_HEADER
}

/// Copies database `src` into a new file `dst` in one step of the online backup API, so
/// the copy is the database as of one moment, whatever writers do meanwhile.
pub fn sqlite_snapshot(src: &Path, dst: &Path) -> Result<(), String> {
    use rusqlite::backup::{Backup, StepResult};
    use rusqlite::{Connection, OpenFlags};
    let _ = fs::remove_file(dst);
    // Read-only first: opening a database for writing may checkpoint its WAL on close.
    let open = |flags| {
        let c = Connection::open_with_flags(src, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        c.busy_timeout(Duration::from_secs(10))?;
        // Fails here, not halfway, when the file is not a usable database.
        crate::store::check_readable(&c)?;
        Ok::<_, rusqlite::Error>(c)
    };
    let from = open(OpenFlags::SQLITE_OPEN_READ_ONLY)
        .or_else(|_| open(OpenFlags::SQLITE_OPEN_READ_WRITE))
        .map_err(|e| format!("cannot open the database: {e}"))?;
    let mut to = Connection::open(dst).map_err(|e| e.to_string())?;
    {
        let backup = Backup::new(&from, &mut to).map_err(|e| e.to_string())?;
        let mut waits = 0;
        loop {
            match backup.step(-1).map_err(|e| e.to_string())? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked => {
                    waits += 1;
                    if waits > 200 {
                        return Err("the database stayed locked for 10 s".into());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {}
            }
        }
    }
    to.close().map_err(|(_, e)| e.to_string())
}

/// (size, mtime) of a file, to see whether it changed while it was read.
fn signature(m: &fs::Metadata) -> (u64, i64, i64) {
    (m.len(), m.mtime(), m.mtime_nsec())
}

/// Copies `src` to `dst`, hashing; returns (size, sha256, changed while read).
fn stable_copy(src: &Path, dst: &Path) -> io::Result<(u64, String, bool)> {
    let mut changed = false;
    for attempt in 0..2 {
        let before = signature(&fs::metadata(src)?);
        let mut from = File::open(src)?;
        let mut out = HashingWriter {
            inner: File::create(dst)?,
            hasher: Sha256::new(),
            bytes: 0,
        };
        io::copy(&mut from, &mut out)?;
        let after = signature(&fs::metadata(src)?);
        changed = before != after || out.bytes != after.0;
        if !changed || attempt == 1 {
            return Ok((out.bytes, hex(&out.hasher.finalize()), changed));
        }
        tracing::info!(
            "{} changed while being read; reading it again",
            src.display()
        );
    }
    unreachable!("the loop returns on its second pass: changed = {changed}")
}

fn sha256_of(path: &Path) -> io::Result<String> {
    let mut h = Sha256::new();
    io::copy(&mut File::open(path)?, &mut h)?;
    Ok(hex(&h.finalize()))
}

/// Builds the archive `out` from the state store `state_db` and `sources`; `progress` is
/// told the bytes of each file added. Scratch copies go to `scratch`.
#[allow(clippy::too_many_arguments)]
pub fn build(
    out: &Path,
    host: &str,
    now_s: i64,
    state_db: &Path,
    sources: &[PathBuf],
    level: u32,
    scratch: &Path,
    progress: &dyn Fn(u64),
) -> Result<Built, String> {
    fs::create_dir_all(scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let file = File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let hashing = HashingWriter {
        inner: io::BufWriter::new(file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut tar = tar::Builder::new(GzEncoder::new(hashing, Compression::new(level)));
    tar.follow_symlinks(false);
    let mut b = ArchiveBuilder {
        tar: &mut tar,
        scratch,
        manifest: Manifest {
            host: host.to_string(),
            created_at: now_s,
            davdrive_version: env!("CARGO_PKG_VERSION").to_string(),
            sources: sources.iter().map(|s| s.display().to_string()).collect(),
            files: Vec::new(),
            problems: Vec::new(),
        },
        progress,
    };
    // The state store is the one part a backup cannot do without.
    b.add_sqlite(
        state_db,
        STATE_ENTRY,
        &fs::metadata(state_db).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("davdrive's state store: {e}"))?;
    for src in sources {
        b.add_source(src);
    }
    let manifest = serde_json::to_vec_pretty(&b.manifest).expect("manifest serialises");
    let problems = std::mem::take(&mut b.manifest.problems);
    let files = b.manifest.files.len();
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(now_s.max(0) as u64);
    header.set_cksum();
    let io_err = |e: io::Error| format!("writing {}: {e}", out.display());
    tar.append_data(&mut header, MANIFEST, &manifest[..])
        .map_err(io_err)?;
    let gz = tar.into_inner().map_err(io_err)?;
    let mut hashing = gz.finish().map_err(io_err)?;
    hashing.flush().map_err(io_err)?;
    hashing
        .inner
        .into_inner()
        .map_err(|e| io_err(e.into_error()))?
        .sync_all()
        .map_err(io_err)?;
    Ok(Built {
        sha256: hex(&hashing.hasher.finalize()),
        size: hashing.bytes,
        files,
        problems,
    })
}

struct ArchiveBuilder<'a, W: Write> {
    tar: &'a mut tar::Builder<W>,
    scratch: &'a Path,
    manifest: Manifest,
    progress: &'a dyn Fn(u64),
}

impl<W: Write> ArchiveBuilder<'_, W> {
    fn problem(&mut self, what: String) {
        tracing::warn!("backup: {what}");
        self.manifest.problems.push(what);
    }

    fn add_source(&mut self, src: &Path) {
        match fs::symlink_metadata(src) {
            Ok(m) => self.add_path(src, &m),
            Err(e) => self.problem(format!("{}: {e}", src.display())),
        }
    }

    fn add_path(&mut self, path: &Path, meta: &fs::Metadata) {
        let name = entry_name(path);
        let ft = meta.file_type();
        let result = if ft.is_dir() {
            self.add_dir(path, &name, meta)
        } else if ft.is_symlink() {
            self.tar
                .append_path_with_name(path, &name)
                .map_err(|e| e.to_string())
        } else if ft.is_file() {
            if is_sqlite(path) {
                self.add_sqlite(path, &name, meta)
            } else {
                self.add_file(path, &name, meta)
            }
        } else {
            // Sockets, pipes and devices are no data to keep.
            tracing::debug!("backup: skipping {} (not a regular file)", path.display());
            Ok(())
        };
        if let Err(e) = result {
            self.problem(format!("{}: {e}", path.display()));
        }
    }

    fn add_dir(&mut self, path: &Path, name: &str, meta: &fs::Metadata) -> Result<(), String> {
        let mut header = header_for(meta, tar::EntryType::Directory, 0);
        self.tar
            .append_data(&mut header, name, io::empty())
            .map_err(|e| e.to_string())?;
        let mut children: Vec<_> = fs::read_dir(path)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        children.sort();
        for child in &children {
            // A database's WAL, shared-memory and rollback files are part of its snapshot.
            if let Some(db) = sqlite_companion_of(child) {
                if children.contains(&db) && is_sqlite(&db) {
                    continue;
                }
            }
            match fs::symlink_metadata(child) {
                Ok(m) => self.add_path(child, &m),
                Err(e) => self.problem(format!("{}: {e}", child.display())),
            }
        }
        Ok(())
    }

    fn add_sqlite(&mut self, path: &Path, name: &str, meta: &fs::Metadata) -> Result<(), String> {
        let copy = self.scratch.join("snapshot.db");
        sqlite_snapshot(path, &copy)?;
        let size = fs::metadata(&copy).map_err(|e| e.to_string())?.len();
        let sha = sha256_of(&copy).map_err(|e| e.to_string())?;
        self.append_copy(&copy, name, meta, size, sha, true)
    }

    fn add_file(&mut self, path: &Path, name: &str, meta: &fs::Metadata) -> Result<(), String> {
        let copy = self.scratch.join("file");
        let (size, sha, changed) = stable_copy(path, &copy).map_err(|e| e.to_string())?;
        if changed {
            self.problem(format!(
                "{}: changed while being read, twice; the copy may be inconsistent",
                path.display()
            ));
        }
        self.append_copy(&copy, name, meta, size, sha, false)
    }

    fn append_copy(
        &mut self,
        copy: &Path,
        name: &str,
        meta: &fs::Metadata,
        size: u64,
        sha256: String,
        sqlite: bool,
    ) -> Result<(), String> {
        let mut header = header_for(meta, tar::EntryType::Regular, size);
        let f = File::open(copy).map_err(|e| e.to_string())?;
        self.tar
            .append_data(&mut header, name, f)
            .map_err(|e| e.to_string())?;
        let _ = fs::remove_file(copy);
        self.manifest.files.push(ManifestFile {
            path: name.to_string(),
            size,
            sha256,
            sqlite,
        });
        (self.progress)(size);
        Ok(())
    }
}

/// `x.db` for `x.db-wal`, `x.db-shm` and `x.db-journal`.
fn sqlite_companion_of(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    ["-wal", "-shm", "-journal"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .map(|base| path.with_file_name(base))
}

fn header_for(meta: &fs::Metadata, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(meta.uid() as u64);
    h.set_gid(meta.gid() as u64);
    h.set_mtime(meta.mtime().max(0) as u64);
    h.set_cksum();
    h
}

/// `sources/home/me/app` for `/home/me/app`.
fn entry_name(path: &Path) -> String {
    let rel = path.strip_prefix("/").unwrap_or(path);
    format!("sources/{}", rel.display())
}

/// What reading an archive to its end found.
#[derive(Debug, Serialize)]
pub struct Checked {
    pub entries: usize,
    pub files_checked: usize,
    pub problems: Vec<String>,
}

/// Reads archive `path` to its end, checking every file against the manifest.
pub fn check(path: &Path) -> Result<Checked, String> {
    let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut tar = tar::Archive::new(GzDecoder::new(io::BufReader::new(f)));
    let mut seen = std::collections::HashMap::new();
    let mut manifest: Option<Manifest> = None;
    let mut entries = 0;
    let bad = |e: io::Error| format!("the archive does not read to its end: {e}");
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        entries += 1;
        let name = entry.path().map_err(bad)?.display().to_string();
        if name == MANIFEST {
            let mut buf = Vec::new();
            entry.read_to_end(&mut buf).map_err(bad)?;
            manifest = Some(
                serde_json::from_slice(&buf).map_err(|e| format!("unreadable manifest: {e}"))?,
            );
            continue;
        }
        let mut h = Sha256::new();
        let n = io::copy(&mut entry, &mut h).map_err(bad)?;
        seen.insert(name, (n, hex(&h.finalize())));
    }
    let manifest = manifest.ok_or("the archive has no manifest (not a davdrive backup?)")?;
    for f in &manifest.files {
        match seen.get(&f.path) {
            None => {
                return Err(format!(
                    "{} is in the manifest but not in the archive",
                    f.path
                ))
            }
            Some((size, sha)) if *size != f.size || *sha != f.sha256 => {
                return Err(format!(
                    "{} does not match its checksum in the manifest",
                    f.path
                ))
            }
            Some(_) => {}
        }
    }
    Ok(Checked {
        entries,
        files_checked: manifest.files.len(),
        problems: manifest.problems,
    })
}

/// Unpacks archive `path` into `to`. Without `force`, refuses (before writing anything)
/// when a file it holds exists there already. Returns the number of entries written.
pub fn extract(path: &Path, to: &Path, force: bool) -> Result<usize, String> {
    let open = || -> Result<tar::Archive<GzDecoder<io::BufReader<File>>>, String> {
        let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(tar::Archive::new(GzDecoder::new(io::BufReader::new(f))))
    };
    let bad = |e: io::Error| format!("reading the archive: {e}");
    if !force {
        let mut existing = Vec::new();
        for entry in open()?.entries().map_err(bad)? {
            let entry = entry.map_err(bad)?;
            if entry.header().entry_type().is_dir() {
                continue;
            }
            let rel = entry.path().map_err(bad)?.into_owned();
            if fs::symlink_metadata(to.join(&rel)).is_ok() {
                existing.push(rel.display().to_string());
            }
        }
        if !existing.is_empty() {
            return Err(format!(
                "{} file(s) exist in {} already (first: {}); nothing was written. \
                 Add --force to write over them",
                existing.len(),
                to.display(),
                existing[0]
            ));
        }
    }
    fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let mut archive = open()?;
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    let mut n = 0;
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        // unpack_in refuses names that would land outside `to` (`..`, absolute paths).
        let inside = entry
            .unpack_in(to)
            .map_err(|e| format!("writing into {}: {e}", to.display()))?;
        if !inside {
            return Err("the archive holds a path outside the target folder".into());
        }
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn state_db(dir: &Path) -> PathBuf {
        let p = dir.join("state.db");
        // A state store as davdrive makes it, with its schema.
        crate::store::open(&p).unwrap();
        p
    }

    #[test]
    fn an_archive_reads_back_and_a_damaged_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        // Incompressible, so damage lands in file data, not only in gzip's framing.
        let noise: Vec<u8> = (0..400_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        fs::write(src.join("sub/noise.bin"), &noise).unwrap();
        std::os::unix::fs::symlink("sub/noise.bin", src.join("link")).unwrap();
        let out = dir.path().join("a.tar.gz");
        let built = build(
            &out,
            "h",
            1,
            &state_db(dir.path()),
            std::slice::from_ref(&src),
            6,
            &dir.path().join("scratch"),
            &|_| {},
        )
        .unwrap();
        assert!(built.problems.is_empty(), "{:?}", built.problems);
        assert_eq!(built.files, 2, "state store and the one regular file");
        assert_eq!(built.sha256, sha256_of(&out).unwrap());
        let checked = check(&out).unwrap();
        assert_eq!(checked.files_checked, 2);

        let to = dir.path().join("to");
        extract(&out, &to, false).unwrap();
        let back = to.join("sources").join(src.strip_prefix("/").unwrap());
        assert_eq!(fs::read(back.join("sub/noise.bin")).unwrap(), noise);
        assert_eq!(
            fs::read_link(back.join("link")).unwrap(),
            Path::new("sub/noise.bin")
        );

        let mut bytes = fs::read(&out).unwrap();
        let cut = bytes.len() * 2 / 3;
        bytes.truncate(cut);
        fs::write(&out, &bytes).unwrap();
        let err = check(&out).unwrap_err();
        assert!(
            err.contains("does not read to its end") || err.contains("manifest"),
            "{err}"
        );
    }

    #[test]
    fn a_file_changing_while_read_is_read_twice_then_named() {
        let dir = tempfile::tempdir().unwrap();
        let busy = dir.path().join("busy.log");
        fs::write(&busy, vec![b'x'; 4 << 20]).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (stop, busy) = (stop.clone(), busy.clone());
            std::thread::spawn(move || {
                let mut f = fs::OpenOptions::new().append(true).open(&busy).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    f.write_all(b"more\n").unwrap();
                }
            })
        };
        let out = dir.path().join("a.tar.gz");
        let built = build(
            &out,
            "h",
            1,
            &state_db(dir.path()),
            std::slice::from_ref(&busy),
            1,
            &dir.path().join("scratch"),
            &|_| {},
        )
        .unwrap();
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        assert_eq!(built.problems.len(), 1, "{:?}", built.problems);
        assert!(built.problems[0].contains("changed while being read"));
        // The copy is still in the archive, and the archive is sound.
        assert_eq!(check(&out).unwrap().files_checked, 2);
    }

    #[test]
    fn hostile_names_in_an_archive_are_not_written_outside() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("evil.tar.gz");
        {
            let f = File::create(&out).unwrap();
            let mut tar = tar::Builder::new(GzEncoder::new(f, Compression::default()));
            let mut h = tar::Header::new_gnu();
            let data = b"owned";
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            // Header::set_path refuses "..", as it should; write the raw name.
            h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../escaped.tx");
            h.set_cksum();
            tar.append(&h, &data[..]).unwrap();
            tar.into_inner().unwrap().finish().unwrap();
        }
        let to = dir.path().join("to");
        let _ = extract(&out, &to, true);
        assert!(!dir.path().join("escaped.tx").exists());
    }
}
