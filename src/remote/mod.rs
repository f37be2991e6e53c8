//! The remote side: one trait every backend implements, and the error enum of this layer.
//!
//! Paths given to a `Remote` are decoded, '/'-separated and relative to the mounted
//! collection: "/" is the root, "/dir/a file.txt" a file in it. Backends encode them.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

pub mod client;
pub mod http;
pub mod memory;
pub mod multistatus;
pub mod webdav;

/// One resource as the server reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Decoded last path segment ("" for the collection that was asked about).
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
    pub mtime: Option<SystemTime>,
    /// Exactly as the server sent it, quotes and `W/` prefix included.
    pub etag: Option<String>,
    /// `oc:checksums` (Nextcloud, ownCloud): "SHA1:… MD5:…", when the server offers it.
    pub checksum: Option<String>,
    /// Mode, owner, times (and a symlink's target) a davdrive stored on the resource as
    /// dead properties, when the server keeps them.
    pub meta: Option<Meta>,
}

/// One entry per name in a listing of `dir`, whatever the server sent. The node table
/// holds one node per name, and a server may list a name twice (a file and a folder, or
/// the same resource under two spellings of its href): the rest of the listing must
/// still apply. The rule: a folder wins over a file (what is below it stays reachable);
/// between two of the same kind, the first in the reply wins. Each one left out is
/// logged.
pub fn unique_names<T>(dir: &str, items: Vec<T>, entry: impl Fn(&T) -> &Entry) -> Vec<T> {
    use std::collections::HashMap;
    let mut at: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<Option<T>> = Vec::with_capacity(items.len());
    for item in items {
        let e = entry(&item);
        match at.get(&e.name) {
            None => {
                at.insert(e.name.clone(), out.len());
                out.push(Some(item));
            }
            Some(&i) => {
                let kept = entry(out[i].as_ref().expect("kept"));
                let replace = e.is_dir && !kept.is_dir;
                let (won, lost) = if replace { (e, kept) } else { (kept, e) };
                let kind = |d: bool| if d { "folder" } else { "file" };
                tracing::warn!(
                    "listing of {dir}: the server lists {:?} twice; keeping the {} and \
                     leaving out the {}",
                    won.name,
                    kind(won.is_dir),
                    kind(lost.is_dir)
                );
                if replace {
                    out[i] = Some(item);
                }
            }
        }
    }
    out.into_iter().flatten().collect()
}

/// The XML namespace of davdrive's dead properties.
pub const META_NS: &str = "urn:davdrive:meta";

/// POSIX metadata kept on the server as dead properties in `META_NS` (see the README's
/// semantics section): `mode` (octal permission bits, "0751"), `uid`, `gid` (decimal),
/// `mtime`, `atime` (decimal nanoseconds since the epoch), `etag` (the version the
/// properties were written for: a file replaced by a client that does not write them
/// keeps stale ones, which are then ignored) and, for a symbolic link, `link` (its
/// target, percent-encoded UTF-8).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Meta {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime_ns: Option<i64>,
    pub atime_ns: Option<i64>,
    pub etag: Option<String>,
    pub link: Option<String>,
}

impl Meta {
    /// The properties' (name, value) pairs, values as XML text (escaped).
    pub fn props(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(m) = self.mode {
            out.push(("mode", format!("{:04o}", m & 0o7777)));
        }
        if let Some(v) = self.uid {
            out.push(("uid", v.to_string()));
        }
        if let Some(v) = self.gid {
            out.push(("gid", v.to_string()));
        }
        if let Some(v) = self.mtime_ns {
            out.push(("mtime", v.to_string()));
        }
        if let Some(v) = self.atime_ns {
            out.push(("atime", v.to_string()));
        }
        if let Some(v) = &self.etag {
            out.push(("etag", quick_xml::escape::escape(v.as_str()).into_owned()));
        }
        if let Some(v) = &self.link {
            out.push((
                "link",
                percent_encoding::utf8_percent_encode(v, META_LINK_SET).to_string(),
            ));
        }
        out
    }

    /// Reads one property (by local name) of the namespace; unknown names are ignored.
    pub fn set_prop(&mut self, name: &str, value: &str) {
        let v = value.trim();
        match name {
            "mode" => self.mode = u32::from_str_radix(v, 8).ok().map(|m| m & 0o7777),
            "uid" => self.uid = v.parse().ok(),
            "gid" => self.gid = v.parse().ok(),
            "mtime" => self.mtime_ns = v.parse().ok(),
            "atime" => self.atime_ns = v.parse().ok(),
            "etag" if !v.is_empty() => self.etag = Some(v.to_string()),
            "link" => {
                self.link = percent_encoding::percent_decode_str(v)
                    .decode_utf8()
                    .ok()
                    .map(|s| s.into_owned())
                    .filter(|s| !s.is_empty() && !s.contains('\0'))
            }
            _ => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Meta::default()
    }
}

/// What a symlink target keeps unencoded in its property: printable ASCII but `%`.
const META_LINK_SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'&')
    .add(b'"')
    .add(b'\'');

/// What a conditional request demands of the remote's current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    None,
    /// `If-Match: <etag>`: only if the remote still has the version we started from.
    IfMatch(String),
    /// `If-None-Match: *`: only if nothing exists there yet.
    IfNoneMatch,
}

/// The bytes of one ranged GET.
#[derive(Debug, Clone)]
pub struct RangeReply {
    pub data: bytes::Bytes,
    /// Offset of `data[0]` in the file.
    pub offset: u64,
    /// Total size of the remote file, when the server said.
    pub total_size: Option<u64>,
    pub etag: Option<String>,
}

/// A ranged GET whose body is read as it arrives: what the headers said, and the bytes
/// in order from `offset` on (never more than asked for).
pub struct RangeStream {
    pub offset: u64,
    /// Total size of the remote file, when the server said.
    pub total_size: Option<u64>,
    pub etag: Option<String>,
    pub body: futures_util::stream::BoxStream<'static, Result<bytes::Bytes, RemoteError>>,
}

impl RangeStream {
    /// A reply already read whole, as one piece.
    pub fn whole(reply: RangeReply) -> RangeStream {
        RangeStream {
            offset: reply.offset,
            total_size: reply.total_size,
            etag: reply.etag,
            body: Box::pin(futures_util::stream::iter([Ok(reply.data)])),
        }
    }
}

/// The SHA-256 of the bytes upload bodies carried, fed as they stream out. It names what
/// an upload may have left on the server without a second pass over the file, even when
/// the file changed while it went (a write through a handle still open). Several bodies
/// may feed one in order: the parts of one upload.
#[derive(Clone, Default)]
pub struct BodyHash(std::sync::Arc<std::sync::Mutex<(sha2::Sha256, u64)>>);

impl BodyHash {
    pub fn feed(&self, bytes: &[u8]) {
        use sha2::Digest;
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        state.0.update(bytes);
        state.1 += bytes.len() as u64;
    }

    /// The hash of everything fed, if that was exactly `len` bytes (a body cut short, or
    /// parts missing, name no version).
    pub fn of(&self, len: u64) -> Option<String> {
        use sha2::Digest;
        let state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (state.1 == len).then(|| crate::cache::hex(&state.0.clone().finalize()))
    }
}

#[derive(Debug, Clone, Default)]
pub struct PutReply {
    /// The new version's ETag when the server returned one (some servers don't).
    pub etag: Option<String>,
}

/// Whether two ETags name the same version, by the weak comparison of RFC 9110: the
/// same opaque tag, weak or not. Apache (mod_dav_fs) marks a tag weak while the file is
/// less than a second old and sends it strong later; the version is the same.
pub fn same_etag(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.trim_start_matches("W/") == b.trim_start_matches("W/"),
        (None, None) => true,
        _ => false,
    }
}

/// How a server takes bytes written into the middle of an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeWrite {
    /// `PUT` with `Content-Range: bytes a-b/*` (Apache mod_dav, the `dav-server` crate).
    ContentRange,
    /// `PATCH` with `X-Update-Range: bytes=a-b` and `Content-Type:
    /// application/x-sabredav-partialupdate` (SabreDAV's partial update plugin: Nextcloud,
    /// ownCloud where it is on).
    SabrePatch,
}

impl RangeWrite {
    pub fn as_str(self) -> &'static str {
        match self {
            RangeWrite::ContentRange => "PUT with Content-Range",
            RangeWrite::SabrePatch => "PATCH with X-Update-Range",
        }
    }
}

/// What a server was seen to do with partial updates (tried on scratch files, never
/// assumed; see `Remote::partial_support`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartialSupport {
    /// How bytes are written into an existing file, if the server takes that: it wrote
    /// two bytes in the middle of a file and kept the bytes after them.
    pub range_write: Option<RangeWrite>,
    /// COPY and MOVE held to a version by an `If` header naming it (RFC 4918 10.4, a
    /// tagged list): a COPY of a source that is not that version and a MOVE onto a
    /// destination that is not, both answered 412 and did nothing.
    pub guarded_copy_move: bool,
}

impl PartialSupport {
    /// Partial updates of files (`journal::replay::partial`) need both.
    pub fn updates(&self) -> bool {
        self.range_write.is_some() && self.guarded_copy_move
    }
}

/// What the server said about itself on the health probe.
#[derive(Debug, Clone, Default)]
pub struct ServerInfo {
    pub latency: Duration,
    pub dav_classes: Vec<String>,
}

#[derive(Debug, thiserror::Error, Clone)]
pub enum RemoteError {
    /// Connection refused or reset, DNS failure, timeout, TLS failure: the remote is unreachable.
    #[error("remote unreachable: {0}")]
    Transport(String),
    #[error("not found on the remote")]
    NotFound,
    /// 412: the remote version is not the one the request was based on.
    #[error("remote version changed (412 Precondition Failed)")]
    PreconditionFailed,
    /// 401 or 403 on authentication.
    #[error("authentication refused ({0})")]
    Unauthorized(u16),
    /// The server sent a new Digest challenge to a request that cannot be repeated as it
    /// was (a streamed body): building it again answers the new challenge.
    #[error("the server renewed its authentication challenge")]
    ChallengeRenewed,
    /// A 4xx the server will give again for the same request (403, 405, 409, 413, 507...).
    #[error("remote refused the request: HTTP {status} {message}")]
    Refused { status: u16, message: String },
    /// 5xx, or a 4xx that says "not now" (408, 423 Locked, 425, 429, 507): may succeed
    /// later, not sooner than `retry_after` when the server said so.
    #[error("remote error: HTTP {status}")]
    Server {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// The reply could not be understood (malformed XML, missing fields, hostile hrefs).
    #[error("malformed reply from the remote: {0}")]
    BadReply(String),
    /// The server is a web server that does not speak WebDAV (seen when probing).
    #[error("not a WebDAV server: {0}")]
    NotDav(String),
    /// A write to a backend that cannot write (plain HTTP).
    #[error("the remote is read-only")]
    ReadOnly,
    /// Local I/O while preparing a request (reading the cache file for a PUT).
    #[error("local I/O error: {0}")]
    Local(String),
}

impl RemoteError {
    /// Errors that say "the remote is not there" rather than "it said no".
    pub fn is_transport(&self) -> bool {
        matches!(self, RemoteError::Transport(_))
    }
    /// Worth trying the same request again later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RemoteError::Transport(_)
                | RemoteError::Server { .. }
                | RemoteError::Local(_)
                | RemoteError::ChallengeRenewed
        )
    }
}

#[async_trait]
pub trait Remote: Send + Sync + 'static {
    /// PROPFIND Depth 0. `Ok(None)` when the resource does not exist.
    async fn stat(&self, path: &str) -> Result<Option<Entry>, RemoteError>;
    /// PROPFIND Depth 1: the children of a collection (not the collection itself).
    async fn list(&self, path: &str) -> Result<Vec<Entry>, RemoteError>;
    /// `list` with the collection's own entry, from the same request, where the backend
    /// has it (its ETag tells, on some servers, whether anything inside changed since).
    async fn list_dir(&self, path: &str) -> Result<(Option<Entry>, Vec<Entry>), RemoteError> {
        Ok((None, self.list(path).await?))
    }
    /// PROPFIND Depth 0 of a collection (one request: asked with the trailing slash).
    async fn stat_dir(&self, path: &str) -> Result<Option<Entry>, RemoteError> {
        self.stat(path).await
    }
    /// GET with `Range: bytes=offset-(offset+len-1)`.
    async fn get_range(&self, path: &str, offset: u64, len: u64)
        -> Result<RangeReply, RemoteError>;
    /// `get_range` with the body handed over as it arrives, so what came first can be
    /// used before the rest is here. Retried until the headers; a failure in the body
    /// ends the stream with that error. By default the whole reply, as one piece.
    async fn get_range_stream(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<RangeStream, RemoteError> {
        Ok(RangeStream::whole(self.get_range(path, offset, len).await?))
    }
    /// PUT the first `len` bytes of the local file `local`, streamed; the bytes feed
    /// `hash`, if given, as they go (whatever the reply).
    async fn put(
        &self,
        path: &str,
        local: &std::path::Path,
        len: u64,
        cond: Precondition,
        mtime: Option<SystemTime>,
        hash: Option<&BodyHash>,
    ) -> Result<PutReply, RemoteError>;
    /// PUT `data` (a snapshot held in memory).
    async fn put_bytes(
        &self,
        path: &str,
        data: bytes::Bytes,
        cond: Precondition,
        mtime: Option<SystemTime>,
    ) -> Result<PutReply, RemoteError>;
    /// Writes `len` bytes of `local`, from `offset` on, into the existing file at `path`
    /// at the same offset (`PUT` with `Content-Range: bytes a-b/*`, or SabreDAV's
    /// `PATCH` where the server takes only that). Only for servers where
    /// `partial_put_supported` said yes. The bytes feed `hash`, if given, as they go.
    async fn put_range(
        &self,
        path: &str,
        local: &std::path::Path,
        offset: u64,
        len: u64,
        hash: Option<&BodyHash>,
    ) -> Result<PutReply, RemoteError>;
    /// Whether `PUT` with `Content-Range` writes into an existing file (Apache mod_dav and
    /// dav-server do; many servers refuse or replace the file). Found out by trying it on
    /// a scratch file, never assumed.
    async fn partial_put_supported(&self) -> Result<bool, RemoteError>;
    /// Whether the server takes partial updates: writes of bytes into an existing file
    /// (`put_range`, by `PUT` with `Content-Range` or SabreDAV's `PATCH`), and COPY and
    /// MOVE held to a version (`copy_file`, `move_file_if`). Found out once on scratch
    /// files, never assumed.
    async fn partial_support(&self) -> Result<PartialSupport, RemoteError> {
        Ok(PartialSupport::default())
    }
    /// COPY of the file `from` to `to` (`Overwrite: T`), only while `from` is still the
    /// version `if_etag` names (`PreconditionFailed` otherwise), when one is given. A
    /// server-side copy of `size_hint` bytes may take a while: it is given time by size.
    async fn copy_file(
        &self,
        from: &str,
        to: &str,
        if_etag: Option<&str>,
        size_hint: u64,
    ) -> Result<(), RemoteError> {
        let _ = (from, to, if_etag, size_hint);
        Err(RemoteError::Refused {
            status: 501,
            message: "COPY not supported".into(),
        })
    }
    /// MOVE of the file `from` over `to` (`Overwrite: T`), only while `to` is still the
    /// version `dest_etag` names: `PreconditionFailed` when somebody changed (or removed)
    /// it, `NotFound` when `from` is gone.
    async fn move_file_if(&self, from: &str, to: &str, dest_etag: &str) -> Result<(), RemoteError> {
        let _ = (from, to, dest_etag);
        Err(RemoteError::Refused {
            status: 501,
            message: "MOVE not supported".into(),
        })
    }
    /// Whether the server honours `If-Match` and `If-None-Match` on PUT and DELETE
    /// (`rclone serve webdav` ignores them and writes anyway). Found out on a scratch
    /// file. Where they are ignored, the replayer compares versions before each change.
    async fn preconditions_honored(&self) -> Result<bool, RemoteError> {
        Ok(true)
    }
    /// MKCOL. An existing collection at `path` is not an error.
    async fn mkcol(&self, path: &str) -> Result<(), RemoteError>;
    /// DELETE. A resource already gone is not an error.
    async fn delete(&self, path: &str, is_dir: bool) -> Result<(), RemoteError>;
    /// DELETE of a file only while it is still the version `etag` names (`If-Match`);
    /// `PreconditionFailed` when somebody changed it since.
    async fn delete_if_match(&self, path: &str, etag: &str) -> Result<(), RemoteError>;
    /// MOVE with `Overwrite: T`.
    async fn rename(&self, from: &str, to: &str, is_dir: bool) -> Result<(), RemoteError>;
    /// MOVE with `Overwrite: F`: `PreconditionFailed` when something exists at `to`.
    async fn rename_no_replace(
        &self,
        from: &str,
        to: &str,
        is_dir: bool,
    ) -> Result<(), RemoteError>;
    /// Cheap health check: PROPFIND Depth 0 on the root, plus the server's DAV classes.
    async fn probe(&self) -> Result<ServerInfo, RemoteError>;
    /// PROPPATCH: stores `meta` as dead properties of the resource at `path`. `Ok(false)`
    /// when the server keeps no dead properties (nginx refuses PROPPATCH); the default,
    /// for backends that cannot.
    async fn set_meta(&self, path: &str, is_dir: bool, meta: &Meta) -> Result<bool, RemoteError> {
        let _ = (path, is_dir, meta);
        Ok(false)
    }
    /// Whether the server keeps dead properties: a property set on the mounted
    /// collection and removed again.
    async fn dead_props_supported(&self) -> Result<bool, RemoteError> {
        Ok(false)
    }
    /// Bytes available and used on the server (RFC 4331), where it says.
    async fn quota(&self) -> Result<(Option<u64>, Option<u64>), RemoteError> {
        Ok((None, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str, is_dir: bool, size: u64) -> Entry {
        Entry {
            name: name.into(),
            is_dir,
            size,
            mtime: None,
            etag: None,
            checksum: None,
            meta: None,
        }
    }

    #[test]
    fn a_name_listed_twice_keeps_one_entry() {
        let got = unique_names(
            "/d",
            vec![
                e("a", false, 1),
                e("b", false, 2),
                e("a", true, 0),
                e("b", false, 3),
                e("c", true, 0),
                e("c", false, 4),
            ],
            |x| x,
        );
        // A folder wins over a file wherever it comes; else the first stays. Order kept.
        assert_eq!(
            got,
            vec![e("a", true, 0), e("b", false, 2), e("c", true, 0)]
        );
    }
}
