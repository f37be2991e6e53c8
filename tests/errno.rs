//! The errno table: `FsError::errno` is the one place an error of the core becomes what
//! a program sees. Every variant, and every kind of remote or local failure behind one,
//! is listed here with the errno it must give; a variant added to `FsError` fails to
//! compile here until it is given its row.

use std::collections::BTreeSet;

use davdrive::fs::FsError;
use davdrive::remote::RemoteError;
use davdrive::store::StoreError;
use libc::*;

/// The variant's name. No wildcard arm: a new variant stops this test compiling.
fn variant(e: &FsError) -> &'static str {
    match e {
        FsError::NotFound => "NotFound",
        FsError::Exists => "Exists",
        FsError::NotEmpty => "NotEmpty",
        FsError::NotDir => "NotDir",
        FsError::IsDir => "IsDir",
        FsError::Invalid(_) => "Invalid",
        FsError::NameTooLong => "NameTooLong",
        FsError::Unsupported(_) => "Unsupported",
        FsError::ReadOnly => "ReadOnly",
        FsError::NoSpace(_) => "NoSpace",
        FsError::Offline { .. } => "Offline",
        FsError::Remote { .. } => "Remote",
        FsError::TooBig => "TooBig",
        FsError::BadHandle => "BadHandle",
        FsError::Io(_) => "Io",
        FsError::Store(_) => "Store",
    }
}

const VARIANTS: usize = 16;

fn remote(source: RemoteError) -> FsError {
    FsError::Remote {
        path: "/f".into(),
        source,
    }
}

fn io(code: i32) -> FsError {
    FsError::Io(std::io::Error::from_raw_os_error(code))
}

fn sqlite(code: i32) -> FsError {
    FsError::Store(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(code),
        None,
    )))
}

fn table() -> Vec<(FsError, i32)> {
    vec![
        (FsError::NotFound, ENOENT),
        (FsError::Exists, EEXIST),
        (FsError::NotEmpty, ENOTEMPTY),
        (FsError::NotDir, ENOTDIR),
        (FsError::IsDir, EISDIR),
        (FsError::Invalid("x"), EINVAL),
        (FsError::NameTooLong, ENAMETOOLONG),
        // Hard links, special files: refused, not "not implemented".
        (FsError::Unsupported("hard links"), EPERM),
        (FsError::ReadOnly, EROFS),
        (FsError::NoSpace("cache full".into()), ENOSPC),
        // Not cached and the remote unreachable: fails at once, never hangs.
        (FsError::Offline { path: "/f".into() }, EIO),
        (remote(RemoteError::NotFound), ENOENT),
        (remote(RemoteError::Unauthorized(401)), EACCES),
        (remote(RemoteError::Unauthorized(403)), EACCES),
        (remote(RemoteError::ReadOnly), EROFS),
        (remote(RemoteError::Transport("refused".into())), EIO),
        (remote(RemoteError::PreconditionFailed), EIO),
        (remote(RemoteError::ChallengeRenewed), EIO),
        (
            remote(RemoteError::Refused {
                status: 409,
                message: "Conflict".into(),
            }),
            EIO,
        ),
        (
            remote(RemoteError::Server {
                status: 503,
                retry_after: None,
            }),
            EIO,
        ),
        (remote(RemoteError::BadReply("xml".into())), EIO),
        (remote(RemoteError::NotDav("html".into())), EIO),
        (remote(RemoteError::Local("read".into())), EIO),
        (FsError::TooBig, EFBIG),
        (FsError::BadHandle, EBADF),
        // The cache's disk: full or over quota is ENOSPC, a file past its limit EFBIG,
        // anything else EIO.
        (io(ENOSPC), ENOSPC),
        (io(EDQUOT), ENOSPC),
        (io(EFBIG), EFBIG),
        (io(EACCES), EIO),
        (io(EIO), EIO),
        // The state store: a full disk is ENOSPC too.
        (sqlite(rusqlite::ffi::SQLITE_FULL), ENOSPC),
        (sqlite(rusqlite::ffi::SQLITE_CORRUPT), EIO),
        (
            FsError::Store(StoreError::TooNew { found: 9, known: 8 }),
            EIO,
        ),
    ]
}

#[test]
fn every_error_of_the_core_gives_its_errno() {
    let mut wrong = Vec::new();
    for (e, want) in table() {
        let got = e.errno();
        if got != want {
            wrong.push(format!("{e:?}: errno {got}, want {want}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_table_has_a_row_for_every_variant() {
    let covered: BTreeSet<&str> = table().iter().map(|(e, _)| variant(e)).collect();
    assert_eq!(covered.len(), VARIANTS, "rows for {covered:?}");
}
