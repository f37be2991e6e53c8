//! The error enum of the filesystem core, and the one place it becomes an errno.

use crate::remote::RemoteError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("already exists")]
    Exists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("name too long")]
    NameTooLong,
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    #[error("read-only file system")]
    ReadOnly,
    #[error("no space left in the cache: {0}")]
    NoSpace(String),
    #[error("{path}: not cached and the remote is unreachable")]
    Offline { path: String },
    #[error("{path}: {source}")]
    Remote {
        path: String,
        #[source]
        source: RemoteError,
    },
    /// Past the largest file the cache's file system holds.
    #[error("file too large for the cache's file system")]
    TooBig,
    #[error("bad file handle")]
    BadHandle,
    #[error("cache I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for FsError {
    fn from(e: rusqlite::Error) -> Self {
        FsError::Store(StoreError::Sqlite(e))
    }
}

impl FsError {
    /// The errno a program sees. Every error of the core goes through here.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::Invalid(_) => libc::EINVAL,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::Unsupported(_) => libc::EPERM,
            FsError::ReadOnly => libc::EROFS,
            FsError::NoSpace(_) => libc::ENOSPC,
            FsError::Offline { .. } => libc::EIO,
            FsError::Remote { source, .. } => match source {
                RemoteError::NotFound => libc::ENOENT,
                RemoteError::Unauthorized(_) => libc::EACCES,
                RemoteError::ReadOnly => libc::EROFS,
                _ => libc::EIO,
            },
            FsError::BadHandle => libc::EBADF,
            FsError::TooBig => libc::EFBIG,
            FsError::Io(e) => match e.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => libc::ENOSPC,
                Some(libc::EFBIG) => libc::EFBIG,
                _ => libc::EIO,
            },
            FsError::Store(StoreError::Sqlite(e))
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) =>
            {
                libc::ENOSPC
            }
            FsError::Store(_) => libc::EIO,
        }
    }

    /// Errors a user should find in the log (the others are ordinary answers).
    pub fn worth_logging(&self) -> bool {
        matches!(
            self,
            FsError::Offline { .. }
                | FsError::Remote { .. }
                | FsError::Io(_)
                | FsError::Store(_)
                | FsError::NoSpace(_)
        )
    }
}

pub type FsResult<T> = Result<T, FsError>;
