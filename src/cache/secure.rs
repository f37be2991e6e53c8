//! Checking that the cache dir, and the private folder of the pid file and the control
//! socket's link, belong to the user running davdrive and nobody else can write them,
//! before anything in them is used.

use std::io;
use std::path::Path;

use super::euid;

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
        let m = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            // Gone since it was listed (SQLite removes its -wal and -shm files when the
            // last connection of a previous run closes): nothing left to check.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{}: {e}", p.display())),
        };
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
            match std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(format!("{}: chmod: {e}", p.display()))
                }
                _ => {}
            }
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
