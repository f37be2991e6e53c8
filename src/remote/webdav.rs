//! The WebDAV backend: `Remote` over HTTP(S) with `reqwest`.
//!
//! Idempotent requests (PROPFIND, GET, MKCOL, DELETE) are retried here with exponential
//! backoff on transport and server errors. PUT and MOVE are not: the sync journal above
//! retries them, and knows whether a half-done attempt matters.
//!
//! Over 600 lines: one method per WebDAV request the `Remote` trait names, each with
//! its status mapping; the body parsing is in `multistatus.rs`.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH};
use reqwest::{Method, Response, StatusCode};
use tokio::io::AsyncReadExt;
use url::Url;

pub use super::client::ConnectionConfig as WebDavConfig;
use super::client::{
    header_string, normalize, quote_etag, redirects_to_slash, response_error, status_error,
    transport_error, HttpClient, Progress,
};
use super::multistatus::{parse_multistatus_from, ParsedEntry};
use super::{
    BodyHash, Entry, Meta, PartialSupport, Precondition, PutReply, RangeReply, RangeWrite, Remote,
    RemoteError, ServerInfo, META_NS,
};

/// Asking for named props rather than `<allprop/>` keeps replies small and avoids
/// expensive live props (quota, checksums) on servers that compute them.
const PROPFIND_BODY: &str = concat!(
    r#"<?xml version="1.0" encoding="utf-8"?>"#,
    r#"<D:propfind xmlns:D="DAV:" xmlns:oc="http://owncloud.org/ns" xmlns:dd="urn:davdrive:meta"><D:prop>"#,
    r#"<D:resourcetype/><D:getcontentlength/><D:getlastmodified/><D:getetag/>"#,
    // Nextcloud and ownCloud give the checksums they keep; others list it as not found.
    r#"<oc:checksums/>"#,
    // davdrive's dead properties (`super::Meta`), where a davdrive stored them.
    r#"<dd:mode/><dd:uid/><dd:gid/><dd:mtime/><dd:atime/><dd:etag/><dd:link/>"#,
    r#"</D:prop></D:propfind>"#,
);

pub struct WebDav {
    http: HttpClient,
    /// What the server does with partial updates, once found out.
    partial: tokio::sync::OnceCell<PartialSupport>,
}

impl fmt::Debug for WebDav {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebDav")
            .field("base", &self.http.base_url().as_str())
            .finish_non_exhaustive()
    }
}

/// What a PROPFIND found.
enum Found {
    Entries(Vec<ParsedEntry>),
    Missing,
    /// The server redirected to the same path with a trailing slash: it is a collection.
    AddSlash,
}

fn method(name: &'static str) -> Method {
    Method::from_bytes(name.as_bytes()).expect("valid method name")
}

impl WebDav {
    /// Tries partial updates on two scratch files in the mounted folder (removed after):
    /// a range written into the middle of a file must keep the bytes after it (a server
    /// that ignores `Content-Range` would replace the file with the range, one that
    /// truncates at it would cut it), first by `PUT` with `Content-Range`, else by
    /// SabreDAV's `PATCH`; a COPY and a MOVE held to a version that is not the current
    /// one must be refused (412) and change nothing, and go through with the right one.
    /// A 4xx anywhere means no; a transport error or 5xx is an error (asked again later).
    async fn probe_partial(&self) -> Result<PartialSupport, RemoteError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let a = format!("/.davdrive-range-probe-{}-{nanos}", std::process::id());
        let b = format!("{a}-copy");
        let result = self.probe_partial_on(&a, &b).await;
        for p in [&a, &b] {
            if let Ok(url) = self.http.url_for(p, false) {
                let _ = self
                    .http
                    .send(self.http.request(Method::DELETE, url), p)
                    .await;
            }
        }
        let found = result?;
        tracing::info!(
            "server {} PUT with Content-Range",
            match found.range_write {
                Some(RangeWrite::ContentRange) => "accepts",
                _ => "does not accept",
            }
        );
        tracing::info!(
            "partial updates: {}",
            match (found.range_write, found.guarded_copy_move) {
                (Some(how), true) => format!("the server takes them ({})", how.as_str()),
                (Some(how), false) => format!(
                    "the server takes {} but does not hold COPY and MOVE to a version: \
                     changed files are sent whole",
                    how.as_str()
                ),
                (None, _) =>
                    "the server does not take them: changed files are sent whole".to_string(),
            }
        );
        Ok(found)
    }

    async fn probe_partial_on(&self, a: &str, b: &str) -> Result<PartialSupport, RemoteError> {
        const WANT: &[u8] = b"abXYef";
        let mut found = PartialSupport::default();
        let (url_a, url_b) = (self.http.url_for(a, false)?, self.http.url_for(b, false)?);
        // A refusal (4xx, 501) means "no"; another 5xx or a transport error is not an
        // answer.
        let answered = |status: StatusCode| -> Result<bool, RemoteError> {
            if status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED {
                Err(status_error(status))
            } else {
                Ok(status.is_success())
            }
        };
        let put_whole = || {
            self.http
                .request(Method::PUT, url_a.clone())
                .header(CONTENT_LENGTH, 6)
                .body("abcdef")
        };
        let read = |url: Url, path: String| async move {
            let resp = self
                .http
                .send(self.http.request(Method::GET, url), &path)
                .await?;
            if !resp.status().is_success() {
                return Ok(None);
            }
            Ok::<_, RemoteError>(Some(
                self.http.body_capped(resp, &Progress::new(), 1024).await?,
            ))
        };
        if !answered(self.http.send(put_whole(), a).await?.status())? {
            return Ok(found);
        }
        let ranged = self
            .http
            .request(Method::PUT, url_a.clone())
            .header(CONTENT_LENGTH, 2)
            .header(CONTENT_RANGE, "bytes 2-3/*")
            .body("XY");
        if answered(self.http.send(ranged, a).await?.status())?
            && read(url_a.clone(), a.to_string()).await?.as_deref() == Some(WANT)
        {
            found.range_write = Some(RangeWrite::ContentRange);
        } else {
            // What the PUT did (perhaps replaced the file with "XY") is undone first.
            if !answered(self.http.send(put_whole(), a).await?.status())? {
                return Ok(found);
            }
            let patch = self
                .http
                .request(Method::PATCH, url_a.clone())
                .header(CONTENT_LENGTH, 2)
                .header(CONTENT_TYPE, "application/x-sabredav-partialupdate")
                .header("X-Update-Range", "bytes=2-3")
                .body("XY");
            if answered(self.http.send(patch, a).await?.status())?
                && read(url_a.clone(), a.to_string()).await?.as_deref() == Some(WANT)
            {
                found.range_write = Some(RangeWrite::SabrePatch);
            }
        }
        if found.range_write.is_none() {
            return Ok(found);
        }
        let Some(tag) = self.stat(a).await?.and_then(|e| e.etag) else {
            return Ok(found);
        };
        let wrong = "\"davdrive-no-such-version\"";
        // COPY held to a version the source is not: refused, nothing copied.
        let copy = |tag: &str| {
            self.http
                .request(method("COPY"), url_a.clone())
                .header("Destination", url_b.as_str())
                .header("Overwrite", "T")
                .header("Depth", "0")
                .header("If", tagged_if(&url_a, tag))
        };
        let refused = self.http.send(copy(wrong), a).await?.status();
        if refused.is_server_error() && refused != StatusCode::NOT_IMPLEMENTED {
            return Err(status_error(refused));
        }
        if refused != StatusCode::PRECONDITION_FAILED || self.stat(b).await?.is_some() {
            return Ok(found);
        }
        if !answered(self.http.send(copy(&tag), a).await?.status())?
            || read(url_b.clone(), b.to_string()).await?.as_deref() != Some(WANT)
        {
            return Ok(found);
        }
        // MOVE onto a destination held to a version it is not: refused, nothing moved.
        let mv = |tag: &str| {
            self.http
                .request(method("MOVE"), url_b.clone())
                .header("Destination", url_a.as_str())
                .header("Overwrite", "T")
                .header("If", tagged_if(&url_a, tag))
        };
        let refused = self.http.send(mv(wrong), b).await?.status();
        if refused.is_server_error() && refused != StatusCode::NOT_IMPLEMENTED {
            return Err(status_error(refused));
        }
        if refused != StatusCode::PRECONDITION_FAILED || self.stat(b).await?.is_none() {
            return Ok(found);
        }
        let tag = self.stat(a).await?.and_then(|e| e.etag).unwrap_or(tag);
        if answered(self.http.send(mv(&tag), b).await?.status())?
            && self.stat(b).await?.is_none()
            && read(url_a.clone(), a.to_string()).await?.as_deref() == Some(WANT)
        {
            found.guarded_copy_move = true;
        }
        Ok(found)
    }

    /// One PROPFIND Depth 0 of the mounted collection, without retries.
    async fn propfind_root(&self, body: &'static str) -> Result<Response, RemoteError> {
        let rb = self
            .http
            .request(method("PROPFIND"), self.http.base_url().clone())
            .header("Depth", "0")
            .header(CONTENT_TYPE, "application/xml; charset=utf-8")
            .body(body);
        self.http.send(rb, "/").await
    }
    /// One PUT of `len` bytes with its precondition.
    async fn put_body(
        &self,
        path: &str,
        len: u64,
        body: reqwest::Body,
        progress: &Progress,
        cond: &Precondition,
        mtime: Option<SystemTime>,
    ) -> Result<PutReply, RemoteError> {
        let mut rb = self
            .http
            .request(Method::PUT, self.http.url_for(path, false)?)
            .timeout(self.http.transfer_timeout(len))
            // Set explicitly so the upload is not sent chunked, which some servers reject.
            .header(CONTENT_LENGTH, len)
            .body(body);
        rb = match cond {
            Precondition::None => rb,
            Precondition::IfMatch(etag) => rb.header(IF_MATCH, quote_etag(etag)),
            Precondition::IfNoneMatch => rb.header(IF_NONE_MATCH, "*"),
        };
        if let Some(t) = mtime {
            // Nextcloud/ownCloud set the file's mtime from this; other servers ignore it.
            let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            rb = rb.header("X-OC-Mtime", secs);
        }
        put_reply(self.http.send_tracked(rb, path, progress).await?)
    }
    pub fn new(cfg: WebDavConfig) -> Result<WebDav, RemoteError> {
        Ok(WebDav {
            http: HttpClient::new(cfg)?,
            partial: tokio::sync::OnceCell::new(),
        })
    }

    /// The base URL requests are made against (no credentials).
    pub fn base_url(&self) -> &Url {
        self.http.base_url()
    }

    /// MOVE; with `overwrite` false the server answers 412 if `to` exists.
    async fn move_to(
        &self,
        from: &str,
        to: &str,
        is_dir: bool,
        overwrite: bool,
    ) -> Result<(), RemoteError> {
        let dest = self.http.url_for(to, is_dir)?;
        let rb = self
            .http
            .request(method("MOVE"), self.http.url_for(from, is_dir)?)
            .header("Destination", dest.as_str())
            .header("Overwrite", if overwrite { "T" } else { "F" });
        let status = self.http.send(rb, from).await?.status();
        if status == StatusCode::MULTI_STATUS {
            return Err(RemoteError::Refused {
                status: 207,
                message: "collection only partly moved".into(),
            });
        }
        if status.is_success() {
            Ok(())
        } else {
            Err(status_error(status))
        }
    }

    /// Parses a `207` body as it arrives (on a blocking thread, fed chunk by chunk), so
    /// memory holds the entries and never the whole reply, and refuses it once it passes
    /// `max_listing_bytes`: the caller keeps the listing it had.
    async fn read_multistatus(
        &self,
        mut resp: Response,
        progress: &Progress,
        path: &str,
    ) -> Result<Vec<ParsedEntry>, RemoteError> {
        let cap = self.http.max_listing_bytes();
        let over = || {
            RemoteError::BadReply(format!(
                "the listing of {path} is larger than the cap of {cap} bytes \
                 (--max-listing-size); the listing held before is kept"
            ))
        };
        if resp.content_length().is_some_and(|n| n > cap) {
            return Err(over());
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
        let base = self.http.base_url().path().to_string();
        let request = path.to_string();
        let parser = tokio::task::spawn_blocking(move || {
            let reader = ChunkReader {
                rx,
                current: bytes::Bytes::new(),
            };
            parse_multistatus_from(std::io::BufReader::new(reader), &base, &request)
        });
        let mut total = 0u64;
        let fed = loop {
            match self.http.next_chunk(&mut resp, progress).await {
                Ok(Some(chunk)) => {
                    total += chunk.len() as u64;
                    if total > cap {
                        break Err(over());
                    }
                    if tx.send(chunk).await.is_err() {
                        // The parser stopped (bad XML): its error is the answer.
                        break Ok(());
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        drop(tx);
        let parsed = parser
            .await
            .map_err(|e| RemoteError::Local(format!("listing parser: {e}")))?;
        fed?;
        parsed
    }

    /// The size of a file whose listing gave none that can be believed: from `HEAD`,
    /// else from a one-byte ranged GET's `Content-Range`, else by reading it to its end.
    async fn learn_size(&self, path: &str) -> Result<u64, RemoteError> {
        let url = self.http.url_for(path, false)?;
        let head = self
            .http
            .retrying("HEAD", path, || async {
                let resp = self
                    .http
                    .send(self.http.request(Method::HEAD, url.clone()), path)
                    .await?;
                match resp.status() {
                    s if s.is_server_error() => Err(response_error(&resp)),
                    _ => Ok(resp),
                }
            })
            .await?;
        if head.status().is_success() {
            let len = head
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|n| *n <= i64::MAX as u64);
            if let Some(n) = len {
                return Ok(n);
            }
        } else if head.status() == StatusCode::NOT_FOUND {
            return Err(RemoteError::NotFound);
        }
        if let Some(total) = self.http.get_range(path, 0, 1).await?.total_size {
            return Ok(total);
        }
        self.http
            .retrying("GET", path, || async {
                let progress = Progress::new();
                let mut resp = self
                    .http
                    .send_tracked(self.http.request(Method::GET, url.clone()), path, &progress)
                    .await?;
                if !resp.status().is_success() {
                    return Err(response_error(&resp));
                }
                let mut n = 0u64;
                while let Some(chunk) = self.http.next_chunk(&mut resp, &progress).await? {
                    n += chunk.len() as u64;
                }
                Ok(n)
            })
            .await
    }

    /// Fills in the sizes a listing left unknown (see `learn_size`), eight at a time. A
    /// file whose size cannot be learned for good is left out of the listing, with a
    /// warning; one the server cannot answer about now fails the listing (the one held
    /// before stays).
    async fn with_sizes(&self, entries: Vec<ParsedEntry>) -> Result<Vec<Entry>, RemoteError> {
        use futures_util::StreamExt;
        let results: Vec<Result<Option<Entry>, RemoteError>> =
            futures_util::stream::iter(entries.into_iter().map(|p| async move {
                if p.size_known {
                    return Ok(Some(fix_entry(p.entry)));
                }
                match self.learn_size(&p.rel_path).await {
                    Ok(size) => {
                        tracing::info!(
                            "{}: the server listed no usable size; it has {size} bytes",
                            p.rel_path
                        );
                        Ok(Some(fix_entry(Entry { size, ..p.entry })))
                    }
                    Err(e) if e.is_retryable() => Err(e),
                    Err(e) => {
                        tracing::warn!(
                            "{}: left out of the listing: the server lists no usable size \
                             and will not tell it ({e})",
                            p.rel_path
                        );
                        Ok(None)
                    }
                }
            }))
            .buffered(8)
            .collect()
            .await;
        let mut out = Vec::with_capacity(results.len());
        for r in results {
            if let Some(e) = r? {
                out.push(e);
            }
        }
        Ok(out)
    }

    async fn propfind(
        &self,
        path: &str,
        depth: &'static str,
        slash: bool,
    ) -> Result<Found, RemoteError> {
        self.http
            .retrying("PROPFIND", path, || async {
                let url = self.http.url_for(path, slash)?;
                let rb = self
                    .http
                    .request(method("PROPFIND"), url.clone())
                    .header("Depth", depth)
                    .header(CONTENT_TYPE, "application/xml; charset=utf-8")
                    .body(PROPFIND_BODY);
                let progress = Progress::new();
                let resp = self.http.send_tracked(rb, path, &progress).await?;
                match resp.status() {
                    StatusCode::MULTI_STATUS => Ok(Found::Entries(
                        self.read_multistatus(resp, &progress, path).await?,
                    )),
                    StatusCode::NOT_FOUND => Ok(Found::Missing),
                    s if s.is_redirection()
                        && !slash
                        && redirects_to_slash(resp.headers(), &url) =>
                    {
                        Ok(Found::AddSlash)
                    }
                    s if s.is_success() => Err(RemoteError::BadReply(format!(
                        "PROPFIND answered {s} instead of 207 Multi-Status"
                    ))),
                    s => Err(status_error(s)),
                }
            })
            .await
    }
}

#[async_trait]
impl Remote for WebDav {
    async fn stat(&self, path: &str) -> Result<Option<Entry>, RemoteError> {
        let path = normalize(path);
        let root = path == "/";
        // We don't know yet whether `path` is a collection, so ask without the slash and
        // follow a server's "add a slash" redirect ourselves.
        let found = match self.propfind(&path, "0", root).await? {
            Found::AddSlash => self.propfind(&path, "0", true).await?,
            other => other,
        };
        match found {
            Found::Missing => Ok(None),
            Found::AddSlash => Err(RemoteError::BadReply("redirect loop on PROPFIND".into())),
            Found::Entries(entries) => {
                let found = entries
                    .into_iter()
                    .find(|e| e.rel_path == path)
                    .ok_or_else(|| {
                        RemoteError::BadReply(
                            "PROPFIND reply does not describe the resource".into(),
                        )
                    })?;
                if found.size_known {
                    return Ok(Some(fix_entry(found.entry)));
                }
                let size = self.learn_size(&path).await?;
                Ok(Some(fix_entry(Entry {
                    size,
                    ..found.entry
                })))
            }
        }
    }

    async fn list(&self, path: &str) -> Result<Vec<Entry>, RemoteError> {
        Ok(self.list_dir(path).await?.1)
    }

    async fn list_dir(&self, path: &str) -> Result<(Option<Entry>, Vec<Entry>), RemoteError> {
        let path = normalize(path);
        match self.propfind(&path, "1", true).await? {
            Found::Missing => Err(RemoteError::NotFound),
            Found::AddSlash => Err(RemoteError::BadReply("unexpected redirect".into())),
            // Depth 1 includes the collection itself, apart from its children.
            Found::Entries(entries) => {
                let (me, children): (Vec<_>, Vec<_>) =
                    entries.into_iter().partition(|e| e.rel_path == path);
                let me = me.into_iter().next().map(|p| fix_entry(p.entry));
                let children = super::unique_names(&path, children, |p: &ParsedEntry| &p.entry);
                Ok((me, self.with_sizes(children).await?))
            }
        }
    }

    async fn stat_dir(&self, path: &str) -> Result<Option<Entry>, RemoteError> {
        let path = normalize(path);
        match self.propfind(&path, "0", true).await? {
            Found::Missing => Ok(None),
            Found::AddSlash => Err(RemoteError::BadReply("unexpected redirect".into())),
            Found::Entries(entries) => Ok(entries
                .into_iter()
                .find(|e| e.rel_path == path)
                .map(|p| fix_entry(p.entry))),
        }
    }

    async fn get_range(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<RangeReply, RemoteError> {
        self.http.get_range(path, offset, len).await
    }

    async fn get_range_stream(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<super::RangeStream, RemoteError> {
        self.http.get_range_stream(path, offset, len).await
    }

    async fn put(
        &self,
        path: &str,
        local: &Path,
        len: u64,
        cond: Precondition,
        mtime: Option<SystemTime>,
        hash: Option<&BodyHash>,
    ) -> Result<PutReply, RemoteError> {
        let local_err = |e: std::io::Error| RemoteError::Local(format!("{}: {e}", local.display()));
        let file =
            tokio::fs::File::from_std(crate::cache::open_nofollow(local).map_err(local_err)?);
        let have = file.metadata().await.map_err(local_err)?.len();
        if have < len {
            // Sending fewer bytes than Content-Length promises would only fail mid-upload.
            return Err(RemoteError::Local(format!(
                "{}: has {have} bytes, {len} to upload",
                local.display()
            )));
        }
        let progress = Progress::new();
        let body = progress.track_body(upload_stream(file, len, hash));
        self.put_body(path, len, body, &progress, &cond, mtime)
            .await
    }

    async fn put_bytes(
        &self,
        path: &str,
        data: bytes::Bytes,
        cond: Precondition,
        mtime: Option<SystemTime>,
    ) -> Result<PutReply, RemoteError> {
        let len = data.len() as u64;
        let progress = Progress::new();
        let body = progress.track_bytes(data);
        self.put_body(path, len, body, &progress, &cond, mtime)
            .await
    }

    async fn put_range(
        &self,
        path: &str,
        local: &Path,
        offset: u64,
        len: u64,
        hash: Option<&BodyHash>,
    ) -> Result<PutReply, RemoteError> {
        use tokio::io::AsyncSeekExt;
        let local_err = |e: std::io::Error| RemoteError::Local(format!("{}: {e}", local.display()));
        let mut file =
            tokio::fs::File::from_std(crate::cache::open_nofollow(local).map_err(local_err)?);
        let have = file.metadata().await.map_err(local_err)?.len();
        if len == 0 || have < offset + len {
            return Err(RemoteError::Local(format!(
                "{}: has {have} bytes, {} to upload",
                local.display(),
                offset + len
            )));
        }
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(local_err)?;
        let progress = Progress::new();
        let body = progress.track_body(upload_stream(file, len, hash));
        let (first, last) = (offset, offset + len - 1);
        let url = self.http.url_for(path, false)?;
        let rb = match self.partial.get().and_then(|p| p.range_write) {
            Some(RangeWrite::SabrePatch) => self
                .http
                .request(Method::PATCH, url)
                .header(CONTENT_TYPE, "application/x-sabredav-partialupdate")
                .header("X-Update-Range", format!("bytes={first}-{last}")),
            _ => self
                .http
                .request(Method::PUT, url)
                .header(CONTENT_RANGE, format!("bytes {first}-{last}/*")),
        };
        let rb = rb
            .timeout(self.http.transfer_timeout(len))
            .header(CONTENT_LENGTH, len)
            .body(body);
        put_reply(self.http.send_tracked(rb, path, &progress).await?)
    }

    async fn partial_put_supported(&self) -> Result<bool, RemoteError> {
        Ok(self.partial_support().await?.range_write.is_some())
    }

    async fn partial_support(&self) -> Result<PartialSupport, RemoteError> {
        self.partial
            .get_or_try_init(|| self.probe_partial())
            .await
            .copied()
    }

    async fn copy_file(
        &self,
        from: &str,
        to: &str,
        if_etag: Option<&str>,
        size_hint: u64,
    ) -> Result<(), RemoteError> {
        let src = self.http.url_for(from, false)?;
        let dest = self.http.url_for(to, false)?;
        let mut rb = self
            .http
            .request(method("COPY"), src.clone())
            // The server copies on its own disk before it answers: time by size (at
            // 10 MiB/s at least), and no byte moves meanwhile.
            .timeout(self.http.transfer_timeout(0) + Duration::from_secs(size_hint >> 23))
            .header("Destination", dest.as_str())
            .header("Overwrite", "T")
            .header("Depth", "0");
        if let Some(tag) = if_etag {
            rb = rb.header("If", tagged_if(&src, tag));
        }
        let status = self.http.send_waiting(rb, from).await?.status();
        copy_move_status(status)
    }

    async fn move_file_if(&self, from: &str, to: &str, dest_etag: &str) -> Result<(), RemoteError> {
        let dest = self.http.url_for(to, false)?;
        let rb = self
            .http
            .request(method("MOVE"), self.http.url_for(from, false)?)
            .header("Destination", dest.as_str())
            .header("Overwrite", "T")
            .header("If", tagged_if(&dest, dest_etag));
        let status = self.http.send(rb, from).await?.status();
        copy_move_status(status)
    }

    async fn preconditions_honored(&self) -> Result<bool, RemoteError> {
        // One name per host: a probe cut off (by a 503 storm, say) leaves its scratch
        // file behind, and the next probe, which runs because this one failed, removes it.
        let host = hostname::get()
            .map(|h| h.to_string_lossy().replace(['/', '\\'], "_"))
            .unwrap_or_default();
        let path = format!("/.davdrive-range-probe-conditions-{host}");
        let url = self.http.url_for(&path, false)?;
        let put = |body: &'static str| {
            self.http
                .request(Method::PUT, url.clone())
                .header(CONTENT_LENGTH, body.len())
                .body(body)
        };
        let no_such_version = "\"davdrive-no-such-version\"";
        let probe = async {
            let first = self.http.send(put("a"), &path).await?.status();
            if !first.is_success() {
                return Err(status_error(first));
            }
            let if_match = self
                .http
                .send(put("b").header(IF_MATCH, no_such_version), &path)
                .await?
                .status();
            let if_none_match = self
                .http
                .send(put("c").header(IF_NONE_MATCH, "*"), &path)
                .await?
                .status();
            let delete_if_match = self
                .http
                .send(
                    self.http
                        .request(Method::DELETE, url.clone())
                        .header(IF_MATCH, no_such_version),
                    &path,
                )
                .await?
                .status();
            Ok((if_match, if_none_match, delete_if_match))
        };
        let result = probe.await;
        let cleanup = self
            .http
            .send(self.http.request(Method::DELETE, url), &path)
            .await
            .map(|r| r.status());
        let (if_match, if_none_match, delete_if_match) = result?;
        match cleanup {
            Ok(s) if s.is_success() || s == StatusCode::NOT_FOUND => {}
            // Try again later rather than leave the scratch file on the server.
            Ok(s) => return Err(status_error(s)),
            Err(e) => return Err(e),
        }
        let failed = StatusCode::PRECONDITION_FAILED;
        let honored = if_match == failed && if_none_match == failed && delete_if_match == failed;
        if honored {
            tracing::info!("server honours If-Match and If-None-Match");
        } else {
            tracing::warn!(
                "server ignores If-Match/If-None-Match (PUT {if_match}, PUT {if_none_match}, \
                 DELETE {delete_if_match}); davdrive compares versions before each change \
                 instead (a change landing between the two requests is not caught)"
            );
        }
        Ok(honored)
    }

    async fn mkcol(&self, path: &str) -> Result<(), RemoteError> {
        let status = self
            .http
            .retrying("MKCOL", path, || async {
                let rb = self
                    .http
                    .request(method("MKCOL"), self.http.url_for(path, true)?);
                let status = self.http.send(rb, path).await?.status();
                if status.is_success() || status == StatusCode::METHOD_NOT_ALLOWED {
                    Ok(status)
                } else {
                    Err(status_error(status))
                }
            })
            .await?;
        if status.is_success() {
            return Ok(());
        }
        // 405: something exists there already. A folder (after a retry, likely our own
        // MKCOL) is what was asked for; a file that another client put there is not.
        match self.stat(path).await? {
            Some(e) if e.is_dir => Ok(()),
            _ => Err(RemoteError::Refused {
                status: 405,
                message: "something that is not a folder exists there".into(),
            }),
        }
    }

    async fn delete(&self, path: &str, is_dir: bool) -> Result<(), RemoteError> {
        self.http
            .retrying("DELETE", path, || async {
                let rb = self
                    .http
                    .request(Method::DELETE, self.http.url_for(path, is_dir)?);
                let status = self.http.send(rb, path).await?.status();
                // 207 means part of a collection could not be deleted: report it as a refusal.
                if status == StatusCode::MULTI_STATUS {
                    return Err(RemoteError::Refused {
                        status: 207,
                        message: "collection only partly deleted".into(),
                    });
                }
                if status.is_success() || status == StatusCode::NOT_FOUND {
                    Ok(())
                } else {
                    Err(status_error(status))
                }
            })
            .await
    }

    async fn delete_if_match(&self, path: &str, etag: &str) -> Result<(), RemoteError> {
        self.http
            .retrying("DELETE", path, || async {
                let rb = self
                    .http
                    .request(Method::DELETE, self.http.url_for(path, false)?)
                    .header(IF_MATCH, quote_etag(etag));
                let status = self.http.send(rb, path).await?.status();
                if status.is_success() || status == StatusCode::NOT_FOUND {
                    Ok(())
                } else {
                    Err(status_error(status))
                }
            })
            .await
    }

    async fn rename(&self, from: &str, to: &str, is_dir: bool) -> Result<(), RemoteError> {
        self.move_to(from, to, is_dir, true).await
    }

    async fn rename_no_replace(
        &self,
        from: &str,
        to: &str,
        is_dir: bool,
    ) -> Result<(), RemoteError> {
        self.move_to(from, to, is_dir, false).await
    }

    async fn set_meta(&self, path: &str, is_dir: bool, meta: &Meta) -> Result<bool, RemoteError> {
        let mut body = format!(
            r#"<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:" xmlns:dd="{META_NS}"><D:set><D:prop>"#
        );
        for (name, value) in meta.props() {
            body.push_str(&format!("<dd:{name}>{value}</dd:{name}>"));
        }
        body.push_str("</D:prop></D:set></D:propertyupdate>");
        self.proppatch(path, is_dir, body).await
    }

    async fn dead_props_supported(&self) -> Result<bool, RemoteError> {
        // A server may answer PROPPATCH with success and keep nothing: the value is read
        // back before it counts.
        let token = format!(
            "davdrive-probe-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let set = format!(
            r#"<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:" xmlns:dd="{META_NS}"><D:set><D:prop><dd:probe>{token}</dd:probe></D:prop></D:set></D:propertyupdate>"#
        );
        if !self.proppatch("/", true, set).await? {
            return Ok(false);
        }
        const READ_BACK: &str = concat!(
            r#"<?xml version="1.0" encoding="utf-8"?>"#,
            r#"<D:propfind xmlns:D="DAV:" xmlns:dd="urn:davdrive:meta"><D:prop><dd:probe/></D:prop></D:propfind>"#,
        );
        let resp = self.propfind_root(READ_BACK).await?;
        let kept = resp.status() == StatusCode::MULTI_STATUS
            && resp
                .bytes()
                .await
                .map_err(transport_error)?
                .windows(token.len())
                .any(|w| w == token.as_bytes());
        let remove = format!(
            r#"<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:" xmlns:dd="{META_NS}"><D:remove><D:prop><dd:probe/></D:prop></D:remove></D:propertyupdate>"#
        );
        self.proppatch("/", true, remove).await?;
        Ok(kept)
    }

    async fn quota(&self) -> Result<(Option<u64>, Option<u64>), RemoteError> {
        const QUOTA_BODY: &str = concat!(
            r#"<?xml version="1.0" encoding="utf-8"?>"#,
            r#"<D:propfind xmlns:D="DAV:"><D:prop>"#,
            r#"<D:quota-available-bytes/><D:quota-used-bytes/>"#,
            r#"</D:prop></D:propfind>"#,
        );
        let resp = self.propfind_root(QUOTA_BODY).await?;
        if resp.status() != StatusCode::MULTI_STATUS {
            return Ok((None, None));
        }
        let entries = self.read_multistatus(resp, &Progress::new(), "/").await?;
        Ok(entries
            .into_iter()
            .find(|e| e.rel_path == "/")
            .map(|e| e.quota)
            .unwrap_or((None, None)))
    }

    async fn probe(&self) -> Result<ServerInfo, RemoteError> {
        // No retries: the caller probes to learn the state now, and polls again itself.
        let started = Instant::now();
        let resp = self.propfind_root(PROPFIND_BODY).await?;
        match resp.status() {
            StatusCode::MULTI_STATUS => {
                self.read_multistatus(resp, &Progress::new(), "/").await?;
            }
            s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                return Err(RemoteError::Unauthorized(s.as_u16()))
            }
            // A plain web server: it serves a page, or refuses the method outright
            // (405 nginx, 501 many others, 400 some proxies).
            s if s.is_success()
                || matches!(
                    s,
                    StatusCode::METHOD_NOT_ALLOWED
                        | StatusCode::NOT_IMPLEMENTED
                        | StatusCode::BAD_REQUEST
                ) =>
            {
                return Err(RemoteError::NotDav(format!(
                    "PROPFIND answered {s} instead of 207 Multi-Status"
                )))
            }
            s => return Err(status_error(s)),
        }
        let latency = started.elapsed();

        // The DAV classes are informative only: an OPTIONS failure does not fail the probe.
        let rb = self
            .http
            .request(Method::OPTIONS, self.http.base_url().clone());
        let dav_classes = match self.http.send(rb, "/").await {
            Ok(resp) => resp
                .headers()
                .get_all("DAV")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect(),
            Err(e) => {
                tracing::debug!("OPTIONS failed: {e}");
                Vec::new()
            }
        };
        Ok(ServerInfo {
            latency,
            dav_classes,
        })
    }
}

/// The chunks of a reply body, read on a blocking thread as they arrive.
struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// The outcome of a PUT: its status, and the new version's ETag when sent.
/// An `If` header holding `url` to the version `etag` names (a tagged list, RFC 4918
/// 10.4): `<http://host/dir/file> (["tag"])`. The URL is absolute (the `dav-server` crate
/// takes no other); servers compare its path.
fn tagged_if(url: &Url, etag: &str) -> String {
    format!("<{}> ([{}])", url.as_str(), quote_etag(etag))
}

fn copy_move_status(status: StatusCode) -> Result<(), RemoteError> {
    if status == StatusCode::MULTI_STATUS {
        // A COPY or MOVE of one file answered with a multistatus failed.
        return Err(RemoteError::Refused {
            status: 207,
            message: "the server reported a failure in a multistatus".into(),
        });
    }
    if status.is_success() {
        Ok(())
    } else {
        Err(status_error(status))
    }
}

fn put_reply(resp: Response) -> Result<PutReply, RemoteError> {
    if !resp.status().is_success() {
        return Err(response_error(&resp));
    }
    // Nextcloud sends the plain ETag only sometimes, OC-ETag always.
    let etag =
        header_string(resp.headers(), ETAG).or_else(|| header_string(resp.headers(), "OC-ETag"));
    Ok(PutReply { etag })
}

/// Some servers (dav-server among them) put a bare `abc` in `getetag` while sending
/// `"abc"` in ETag headers. Quote bare tags so both spellings compare equal and can be
/// sent back in `If-Match`.
fn fix_entry(mut e: Entry) -> Entry {
    e.etag = e.etag.map(|t| quote_etag(&t));
    e
}

impl WebDav {
    /// Sends a PROPPATCH. True when every property was set; false when the server keeps
    /// no dead properties: it refuses the method (nginx: 405; others 501 or 403) or
    /// answers a non-2xx status for the properties (RFC 4918 makes them all-or-nothing).
    async fn proppatch(&self, path: &str, is_dir: bool, body: String) -> Result<bool, RemoteError> {
        let (status, reply) = self
            .http
            .retrying("PROPPATCH", path, || {
                let body = body.clone();
                async move {
                    let rb = self
                        .http
                        .request(method("PROPPATCH"), self.http.url_for(path, is_dir)?)
                        .header("Content-Type", "application/xml; charset=utf-8")
                        .body(body);
                    let resp = self.http.send(rb, path).await?;
                    let status = resp.status();
                    // 501: the method is not implemented (no dead properties), not an error
                    // to retry.
                    if status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED {
                        return Err(status_error(status));
                    }
                    let reply = resp.bytes().await.map_err(transport_error)?;
                    Ok((status, reply))
                }
            })
            .await?;
        match status {
            StatusCode::MULTI_STATUS => Ok(all_statuses_ok(&reply)),
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Err(RemoteError::NotFound),
            StatusCode::UNAUTHORIZED => Err(RemoteError::Unauthorized(401)),
            StatusCode::FORBIDDEN
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::CONFLICT
            | StatusCode::UNPROCESSABLE_ENTITY
            | StatusCode::NOT_IMPLEMENTED
            | StatusCode::BAD_REQUEST
            | StatusCode::UNSUPPORTED_MEDIA_TYPE => Ok(false),
            s => Err(status_error(s)),
        }
    }
}

/// Whether every `DAV:status` in a multistatus says 2xx (and there is one at least).
fn all_statuses_ok(body: &[u8]) -> bool {
    use quick_xml::events::Event;
    use quick_xml::name::{Namespace, ResolveResult};
    let mut reader = quick_xml::NsReader::from_reader(body);
    let mut in_status = false;
    let mut seen = 0;
    loop {
        match reader.read_resolved_event() {
            Ok((ns, Event::Start(e))) => {
                in_status = e.local_name().as_ref() == b"status"
                    && matches!(ns, ResolveResult::Bound(Namespace(b"DAV:")));
            }
            Ok((_, Event::Text(t))) if in_status => {
                let text = t.decode().map(|c| c.into_owned()).unwrap_or_default();
                let code = text
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse::<u16>().ok());
                match code {
                    Some(c) if (200..300).contains(&c) => seen += 1,
                    _ => return false,
                }
            }
            Ok((_, Event::End(_))) => in_status = false,
            Ok((_, Event::Eof)) => return seen > 0,
            Err(_) => return false,
            _ => {}
        }
    }
}

/// The body of an upload from a local file. Read in large pieces: each read of a tokio
/// file is a trip to the blocking pool, and the default 4 KiB pieces held uploads to
/// well under the speed of the wire. Each piece feeds `hash` as it goes out.
fn upload_stream(
    file: tokio::fs::File,
    len: u64,
    hash: Option<&BodyHash>,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Sync + 'static {
    use futures_util::StreamExt;
    const PIECE: usize = 1 << 20;
    let hash = hash.cloned();
    tokio_util::io::ReaderStream::with_capacity(file.take(len), PIECE).map(move |piece| {
        if let (Some(h), Ok(piece)) = (&hash, &piece) {
            h.feed(piece);
        }
        piece
    })
}

#[cfg(test)]
mod proppatch_tests {
    #[test]
    fn a_proppatch_reply_is_ok_only_when_every_status_is_2xx() {
        let ok = br#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/a</D:href><D:propstat><D:prop><x:mode xmlns:x="urn:davdrive:meta"/></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#;
        assert!(super::all_statuses_ok(ok));
        let refused = br#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/a</D:href><D:propstat><D:prop/><D:status>HTTP/1.1 403 Forbidden</D:status></D:propstat></D:response></D:multistatus>"#;
        assert!(!super::all_statuses_ok(refused));
        assert!(!super::all_statuses_ok(
            b"<D:multistatus xmlns:D=\"DAV:\"/>"
        ));
    }
}
