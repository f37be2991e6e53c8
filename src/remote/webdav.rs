//! The WebDAV backend: `Remote` over HTTP(S) with `reqwest`.
//!
//! Idempotent requests (PROPFIND, GET, MKCOL, DELETE) are retried here with exponential
//! backoff on transport and server errors. PUT and MOVE are not: the sync journal above
//! retries them, and knows whether a half-done attempt matters.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::{
    HeaderMap, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH,
    LOCATION, RANGE,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use tokio::io::AsyncReadExt;
use url::Url;

use super::multistatus::{parse_multistatus, ParsedEntry};
use super::{Entry, Precondition, PutReply, RangeReply, Remote, RemoteError, ServerInfo};

/// Everything but RFC 3986 "unreserved" is encoded in a path segment: space, `%`, `#`,
/// `?`, `+` (some servers decode it as a space), sub-delims and all non-ASCII.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Asking for named props rather than `<allprop/>` keeps replies small and avoids
/// expensive live props (quota, checksums) on servers that compute them.
const PROPFIND_BODY: &str = concat!(
    r#"<?xml version="1.0" encoding="utf-8"?>"#,
    r#"<D:propfind xmlns:D="DAV:"><D:prop>"#,
    r#"<D:resourcetype/><D:getcontentlength/><D:getlastmodified/><D:getetag/>"#,
    r#"</D:prop></D:propfind>"#,
);

const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Transfers get `request_timeout` plus the time this rate needs for their bytes, so a
/// large PUT on a slow link is not cut off while a dead connection still fails eventually.
const MIN_TRANSFER_RATE: u64 = 64 * 1024;

#[derive(Clone)]
pub struct WebDavConfig {
    /// URL of the collection to mount, e.g. `https://host/remote.php/dav/files/me/`.
    pub base_url: Url,
    pub user: Option<String>,
    pub password: Option<String>,
    pub bearer_token: Option<String>,
    /// Extra CA certificate(s), PEM, trusted on top of the built-in roots.
    pub ca_cert_pem: Option<Vec<u8>>,
    pub connect_timeout: Duration,
    /// Deadline for one request without a large body (see `MIN_TRANSFER_RATE`).
    pub request_timeout: Duration,
    /// Extra attempts for idempotent requests after a transport or 5xx error.
    pub retries: u32,
}

impl WebDavConfig {
    pub fn new(base_url: Url) -> Self {
        WebDavConfig {
            base_url,
            user: None,
            password: None,
            bearer_token: None,
            ca_cert_pem: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            retries: 3,
        }
    }
}

// Hand-written so secrets never reach a log line through `{:?}`.
impl fmt::Debug for WebDavConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("WebDavConfig")
            .field("base_url", &self.base_url.as_str())
            .field("user", &self.user)
            .field("password", &redact(&self.password))
            .field("bearer_token", &redact(&self.bearer_token))
            .field("ca_cert_pem", &self.ca_cert_pem.as_ref().map(|p| p.len()))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

enum Auth {
    None,
    Basic {
        user: String,
        password: Option<String>,
    },
    Bearer(String),
}

pub struct WebDav {
    client: reqwest::Client,
    /// Base URL without credentials, query or fragment; its path ends with '/'.
    base: Url,
    auth: Auth,
    request_timeout: Duration,
    retries: u32,
}

impl fmt::Debug for WebDav {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebDav")
            .field("base", &self.base.as_str())
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
    /// One PROPFIND Depth 0 of the mounted collection, without retries.
    async fn propfind_root(&self, body: &'static str) -> Result<Response, RemoteError> {
        let rb = self
            .request(method("PROPFIND"), self.base.clone())
            .header("Depth", "0")
            .header(CONTENT_TYPE, "application/xml; charset=utf-8")
            .body(body);
        self.send(rb, "/").await
    }
    /// One PUT of `len` bytes with its precondition.
    async fn put_body(
        &self,
        path: &str,
        len: u64,
        body: reqwest::Body,
        cond: &Precondition,
        mtime: Option<SystemTime>,
    ) -> Result<PutReply, RemoteError> {
        let mut rb = self
            .request(Method::PUT, self.url_for(path, false)?)
            .timeout(self.transfer_timeout(len))
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
        let reply = put_reply(self.send(rb, path).await?);
        if reply.is_ok() {
            crate::metrics::add(&crate::metrics::METRICS.bytes_up, len);
        }
        reply
    }
    pub fn new(cfg: WebDavConfig) -> Result<WebDav, RemoteError> {
        let mut base = cfg.base_url.clone();
        if !matches!(base.scheme(), "http" | "https") {
            return Err(RemoteError::Local(format!(
                "unsupported URL scheme {:?}",
                base.scheme()
            )));
        }
        // Credentials in the URL are moved out of it, so no URL we log or put in an
        // error ever carries a password.
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let (mut user, mut password) = (cfg.user.clone(), cfg.password.clone());
        if !base.username().is_empty() && user.is_none() {
            user = Some(decode(base.username()));
            password = password.or_else(|| base.password().map(decode));
        }
        let _ = base.set_username("");
        let _ = base.set_password(None);
        base.set_query(None);
        base.set_fragment(None);
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }

        let auth = match (user, cfg.bearer_token.clone()) {
            (Some(user), _) => Auth::Basic { user, password },
            (None, Some(token)) => Auth::Bearer(token),
            (None, None) => Auth::None,
        };

        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(cfg.connect_timeout)
            .tcp_keepalive(Duration::from_secs(30))
            // Redirects would silently turn PROPFIND/PUT into GET or drop the body; the
            // one redirect that matters (missing trailing slash) is handled in `stat`.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("davdrive/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &cfg.ca_cert_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| RemoteError::Local(format!("bad CA certificate: {e}")))?;
            if certs.is_empty() {
                return Err(RemoteError::Local(
                    "no certificate in the CA PEM data".into(),
                ));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| RemoteError::Local(format!("HTTP client setup: {e}")))?;

        Ok(WebDav {
            client,
            base,
            auth,
            request_timeout: cfg.request_timeout,
            retries: cfg.retries,
        })
    }

    /// The base URL requests are made against (no credentials).
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// URL of a decoded mount-relative path. Collections get a trailing slash: Apache
    /// and others answer PROPFIND/MKCOL/DELETE/MOVE on a collection without it with a
    /// 301, and some treat `MKCOL /x` and `MKCOL /x/` differently.
    fn url_for(&self, path: &str, is_dir: bool) -> Result<Url, RemoteError> {
        let mut p = self.base.path().to_string();
        let mut any = false;
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            // URL parsing resolves dot segments even when percent-encoded, so they
            // would escape the mounted collection: refuse them outright.
            if seg == "." || seg == ".." {
                return Err(RemoteError::Refused {
                    status: 400,
                    message: format!("invalid path {path:?}"),
                });
            }
            p.extend(utf8_percent_encode(seg, SEGMENT));
            p.push('/');
            any = true;
        }
        if any && !is_dir {
            p.pop();
        }
        let mut url = self.base.clone();
        url.set_path(&p);
        Ok(url)
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let rb = self
            .client
            .request(method, url)
            .timeout(self.request_timeout);
        match &self.auth {
            Auth::None => rb,
            Auth::Basic { user, password } => rb.basic_auth(user, password.as_ref()),
            Auth::Bearer(token) => rb.bearer_auth(token),
        }
    }

    /// MOVE; with `overwrite` false the server answers 412 if `to` exists.
    async fn move_to(
        &self,
        from: &str,
        to: &str,
        is_dir: bool,
        overwrite: bool,
    ) -> Result<(), RemoteError> {
        let dest = self.url_for(to, is_dir)?;
        let rb = self
            .request(method("MOVE"), self.url_for(from, is_dir)?)
            .header("Destination", dest.as_str())
            .header("Overwrite", if overwrite { "T" } else { "F" });
        let status = self.send(rb, from).await?.status();
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

    fn transfer_timeout(&self, bytes: u64) -> Duration {
        self.request_timeout + Duration::from_secs(bytes / MIN_TRANSFER_RATE)
    }

    /// Sends one request, logging method, path, status and latency.
    async fn send(&self, rb: RequestBuilder, path: &str) -> Result<Response, RemoteError> {
        let (client, req) = rb.build_split();
        let req = req.map_err(transport_error)?;
        let method = req.method().clone();
        let started = Instant::now();
        match client.execute(req).await {
            Ok(resp) => {
                crate::metrics::METRICS.request(
                    method.as_str(),
                    resp.status().as_u16(),
                    started.elapsed(),
                );
                tracing::debug!(
                    %method,
                    path,
                    status = resp.status().as_u16(),
                    ms = started.elapsed().as_millis() as u64,
                    "webdav request"
                );
                Ok(resp)
            }
            Err(e) => {
                crate::metrics::METRICS.request(method.as_str(), 0, started.elapsed());
                let err = transport_error(e);
                tracing::debug!(
                    %method,
                    path,
                    ms = started.elapsed().as_millis() as u64,
                    "webdav request failed: {err}"
                );
                Err(err)
            }
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or `retries` extra attempts
    /// have been spent on transport/server errors.
    async fn retrying<T, F, Fut>(
        &self,
        what: &str,
        path: &str,
        mut attempt: F,
    ) -> Result<T, RemoteError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RemoteError>>,
    {
        let mut delay = FIRST_BACKOFF;
        let mut tries = 0;
        loop {
            match attempt().await {
                Err(e @ (RemoteError::Transport(_) | RemoteError::Server { .. }))
                    if tries < self.retries =>
                {
                    tries += 1;
                    tracing::debug!(what, path, tries, "retrying in {delay:?} after: {e}");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                other => return other,
            }
        }
    }

    async fn propfind(
        &self,
        path: &str,
        depth: &'static str,
        slash: bool,
    ) -> Result<Found, RemoteError> {
        self.retrying("PROPFIND", path, || async {
            let url = self.url_for(path, slash)?;
            let rb = self
                .request(method("PROPFIND"), url.clone())
                .header("Depth", depth)
                .header(CONTENT_TYPE, "application/xml; charset=utf-8")
                .body(PROPFIND_BODY);
            let resp = self.send(rb, path).await?;
            match resp.status() {
                StatusCode::MULTI_STATUS => {
                    let body = resp.bytes().await.map_err(transport_error)?;
                    let entries = parse_multistatus(&body, self.base.path(), path)?;
                    Ok(Found::Entries(entries))
                }
                StatusCode::NOT_FOUND => Ok(Found::Missing),
                s if s.is_redirection() && !slash && redirects_to_slash(resp.headers(), &url) => {
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

    /// Reads the window `[skip, skip + len)` of a response body, streaming past the
    /// bytes before it and dropping the connection once the window is full.
    async fn read_window(
        mut resp: Response,
        mut skip: u64,
        len: u64,
    ) -> Result<Bytes, RemoteError> {
        let mut out = BytesMut::with_capacity(len.min(8 << 20) as usize);
        while (out.len() as u64) < len {
            let Some(mut chunk) = resp.chunk().await.map_err(transport_error)? else {
                break;
            };
            if skip >= chunk.len() as u64 {
                skip -= chunk.len() as u64;
                continue;
            }
            let _ = chunk.split_to(skip as usize);
            skip = 0;
            let want = (len - out.len() as u64).min(chunk.len() as u64) as usize;
            out.extend_from_slice(&chunk[..want]);
        }
        Ok(out.freeze())
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
            Found::Entries(entries) => entries
                .into_iter()
                .find(|e| e.rel_path == path)
                .map(|e| Some(fix_entry(e.entry)))
                .ok_or_else(|| {
                    RemoteError::BadReply("PROPFIND reply does not describe the resource".into())
                }),
        }
    }

    async fn list(&self, path: &str) -> Result<Vec<Entry>, RemoteError> {
        let path = normalize(path);
        match self.propfind(&path, "1", true).await? {
            Found::Missing => Err(RemoteError::NotFound),
            Found::AddSlash => Err(RemoteError::BadReply("unexpected redirect".into())),
            // Depth 1 includes the collection itself: keep only the children.
            Found::Entries(entries) => Ok(entries
                .into_iter()
                .filter(|e| e.rel_path != path)
                .map(|e| fix_entry(e.entry))
                .collect()),
        }
    }

    async fn get_range(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<RangeReply, RemoteError> {
        let empty = |total_size, etag| RangeReply {
            data: Bytes::new(),
            offset,
            total_size,
            etag,
        };
        if len == 0 {
            return Ok(empty(None, None));
        }
        let last = offset.saturating_add(len - 1);
        self.retrying("GET", path, || async {
            let rb = self
                .request(Method::GET, self.url_for(path, false)?)
                .timeout(self.transfer_timeout(last))
                .header(RANGE, format!("bytes={offset}-{last}"));
            let resp = self.send(rb, path).await?;
            let etag = header_string(resp.headers(), ETAG);
            match resp.status() {
                StatusCode::PARTIAL_CONTENT => {
                    let (start, total) = resp
                        .headers()
                        .get(CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_content_range)
                        .ok_or_else(|| {
                            RemoteError::BadReply("206 without a usable Content-Range".into())
                        })?;
                    // A server may start earlier than asked (e.g. block-aligned), never later.
                    let skip = offset.checked_sub(start).ok_or_else(|| {
                        RemoteError::BadReply(format!(
                            "asked for byte {offset}, got range from {start}"
                        ))
                    })?;
                    let data = Self::read_window(resp, skip, len).await?;
                    crate::metrics::add(&crate::metrics::METRICS.bytes_down, data.len() as u64);
                    Ok(RangeReply {
                        data,
                        offset,
                        total_size: total,
                        etag,
                    })
                }
                StatusCode::OK => {
                    // The server ignored Range and sends the whole file: stream past the
                    // part before `offset` instead of buffering it.
                    let total = resp.content_length();
                    let data = Self::read_window(resp, offset, len).await?;
                    crate::metrics::add(&crate::metrics::METRICS.bytes_down, data.len() as u64);
                    Ok(RangeReply {
                        data,
                        offset,
                        total_size: total,
                        etag,
                    })
                }
                StatusCode::RANGE_NOT_SATISFIABLE => {
                    // Reading at or past the end: "Content-Range: bytes */<size>".
                    let total = resp
                        .headers()
                        .get(CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().strip_prefix("bytes */"))
                        .and_then(|n| n.trim().parse().ok());
                    Ok(empty(total, etag))
                }
                s => Err(status_error(s)),
            }
        })
        .await
    }

    async fn put(
        &self,
        path: &str,
        local: &Path,
        len: u64,
        cond: Precondition,
        mtime: Option<SystemTime>,
    ) -> Result<PutReply, RemoteError> {
        let local_err = |e: std::io::Error| RemoteError::Local(format!("{}: {e}", local.display()));
        let file = tokio::fs::File::open(local).await.map_err(local_err)?;
        let have = file.metadata().await.map_err(local_err)?.len();
        if have < len {
            // Sending fewer bytes than Content-Length promises would only fail mid-upload.
            return Err(RemoteError::Local(format!(
                "{}: has {have} bytes, {len} to upload",
                local.display()
            )));
        }
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file.take(len)));
        self.put_body(path, len, body, &cond, mtime).await
    }

    async fn put_bytes(
        &self,
        path: &str,
        data: bytes::Bytes,
        cond: Precondition,
        mtime: Option<SystemTime>,
    ) -> Result<PutReply, RemoteError> {
        let len = data.len() as u64;
        self.put_body(path, len, reqwest::Body::from(data), &cond, mtime)
            .await
    }

    async fn put_range(
        &self,
        path: &str,
        local: &Path,
        offset: u64,
        len: u64,
    ) -> Result<PutReply, RemoteError> {
        use tokio::io::AsyncSeekExt;
        let local_err = |e: std::io::Error| RemoteError::Local(format!("{}: {e}", local.display()));
        let mut file = tokio::fs::File::open(local).await.map_err(local_err)?;
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
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file.take(len)));
        let rb = self
            .request(Method::PUT, self.url_for(path, false)?)
            .timeout(self.transfer_timeout(len))
            .header(CONTENT_LENGTH, len)
            .header(
                CONTENT_RANGE,
                format!("bytes {}-{}/*", offset, offset + len - 1),
            )
            .body(body);
        let reply = put_reply(self.send(rb, path).await?);
        if reply.is_ok() {
            crate::metrics::add(&crate::metrics::METRICS.bytes_up, len);
        }
        reply
    }

    async fn partial_put_supported(&self) -> Result<bool, RemoteError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = format!("/.davdrive-range-probe-{}-{nanos}", std::process::id());
        let url = self.url_for(&path, false)?;
        let put = |body: &'static str, range: Option<&'static str>| {
            let mut rb = self
                .request(Method::PUT, url.clone())
                .header(CONTENT_LENGTH, body.len())
                .body(body);
            if let Some(r) = range {
                rb = rb.header(CONTENT_RANGE, r);
            }
            rb
        };
        let first = self.send(put("ab", None), &path).await?.status();
        if !first.is_success() {
            return Ok(false);
        }
        let second = self
            .send(put("cd", Some("bytes 2-3/*")), &path)
            .await?
            .status();
        let supported = if second.is_success() {
            let got = self
                .send(self.request(Method::GET, url.clone()), &path)
                .await?;
            got.bytes().await.map_err(transport_error)?.as_ref() == b"abcd"
        } else {
            false
        };
        let _ = self.send(self.request(Method::DELETE, url), &path).await;
        tracing::info!(
            "server {} PUT with Content-Range",
            if supported {
                "accepts"
            } else {
                "does not accept"
            }
        );
        Ok(supported)
    }

    async fn mkcol(&self, path: &str) -> Result<(), RemoteError> {
        self.retrying("MKCOL", path, || async {
            let rb = self.request(method("MKCOL"), self.url_for(path, true)?);
            let status = self.send(rb, path).await?.status();
            // 405: something already exists there (after a retry, likely our own MKCOL).
            if status.is_success() || status == StatusCode::METHOD_NOT_ALLOWED {
                Ok(())
            } else {
                Err(status_error(status))
            }
        })
        .await
    }

    async fn delete(&self, path: &str, is_dir: bool) -> Result<(), RemoteError> {
        self.retrying("DELETE", path, || async {
            let rb = self.request(Method::DELETE, self.url_for(path, is_dir)?);
            let status = self.send(rb, path).await?.status();
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
        self.retrying("DELETE", path, || async {
            let rb = self
                .request(Method::DELETE, self.url_for(path, false)?)
                .header(IF_MATCH, quote_etag(etag));
            let status = self.send(rb, path).await?.status();
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
        let body = resp.bytes().await.map_err(transport_error)?;
        let entries = parse_multistatus(&body, self.base.path(), "/")?;
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
                let body = resp.bytes().await.map_err(transport_error)?;
                parse_multistatus(&body, self.base.path(), "/")?;
            }
            s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                return Err(RemoteError::Unauthorized(s.as_u16()))
            }
            s if s.is_success() => {
                return Err(RemoteError::BadReply(format!(
                    "PROPFIND answered {s} instead of 207 Multi-Status"
                )))
            }
            s => return Err(status_error(s)),
        }
        let latency = started.elapsed();

        // The DAV classes are informative only: an OPTIONS failure does not fail the probe.
        let rb = self.request(Method::OPTIONS, self.base.clone());
        let dav_classes = match self.send(rb, "/").await {
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

/// The outcome of a PUT: its status, and the new version's ETag when sent.
fn put_reply(resp: Response) -> Result<PutReply, RemoteError> {
    let status = resp.status();
    if !status.is_success() {
        return Err(status_error(status));
    }
    // Nextcloud sends the plain ETag only sometimes, OC-ETag always.
    let etag =
        header_string(resp.headers(), ETAG).or_else(|| header_string(resp.headers(), "OC-ETag"));
    Ok(PutReply { etag })
}

/// "/a//b/" -> "/a/b", "" -> "/".
fn normalize(path: &str) -> String {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    format!("/{}", segs.join("/"))
}

/// Some servers (dav-server among them) put a bare `abc` in `getetag` while sending
/// `"abc"` in ETag headers. Quote bare tags so both spellings compare equal and can be
/// sent back in `If-Match`.
fn fix_entry(mut e: Entry) -> Entry {
    e.etag = e.etag.map(|t| quote_etag(&t));
    e
}

fn quote_etag(tag: &str) -> String {
    if tag.starts_with('"') || tag.starts_with("W/\"") {
        tag.to_string()
    } else {
        format!("\"{tag}\"")
    }
}

fn header_string(headers: &HeaderMap, name: impl reqwest::header::AsHeaderName) -> Option<String> {
    headers.get(name)?.to_str().ok().map(String::from)
}

/// Does a redirect point at `url` plus a trailing slash?
fn redirects_to_slash(headers: &HeaderMap, url: &Url) -> bool {
    headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|loc| url.join(loc).ok())
        .is_some_and(|loc| loc.path() == format!("{}/", url.path()))
}

/// "bytes 100-199/1000" -> (100, Some(1000)); the total may be "*".
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

fn status_error(status: StatusCode) -> RemoteError {
    match status.as_u16() {
        404 => RemoteError::NotFound,
        412 => RemoteError::PreconditionFailed,
        401 => RemoteError::Unauthorized(401),
        s @ (429 | 500..=599) => RemoteError::Server { status: s },
        s => RemoteError::Refused {
            status: s,
            message: status.canonical_reason().unwrap_or("").to_string(),
        },
    }
}

/// A reqwest error as text with its whole cause chain (the top level alone says little
/// more than "error sending request"), and without the URL.
fn transport_error(e: reqwest::Error) -> RemoteError {
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_builder() {
        RemoteError::Local(msg)
    } else {
        RemoteError::Transport(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dav(url: &str) -> WebDav {
        WebDav::new(WebDavConfig::new(Url::parse(url).unwrap())).unwrap()
    }

    #[test]
    fn urls_are_encoded_per_segment() {
        let d = dav("http://h/dav/my%20share");
        assert_eq!(d.base.path(), "/dav/my%20share/");
        let url = |p, dir| d.url_for(p, dir).unwrap().to_string();
        assert_eq!(url("/", true), "http://h/dav/my%20share/");
        assert_eq!(url("/", false), "http://h/dav/my%20share/");
        assert_eq!(
            url("/a b/c%#?+é.txt", false),
            "http://h/dav/my%20share/a%20b/c%25%23%3F%2B%C3%A9.txt"
        );
        assert_eq!(url("/dir", true), "http://h/dav/my%20share/dir/");
        assert_eq!(url("/...", false), "http://h/dav/my%20share/...");
        assert!(d.url_for("/a/../../etc", false).is_err());
        assert!(d.url_for("/./x", false).is_err());
    }

    #[test]
    fn credentials_leave_the_url() {
        let mut cfg = WebDavConfig::new(Url::parse("https://me:s%40cret@h/x/?q#f").unwrap());
        cfg.retries = 0;
        let d = WebDav::new(cfg).unwrap();
        assert_eq!(d.base.as_str(), "https://h/x/");
        match &d.auth {
            Auth::Basic { user, password } => {
                assert_eq!(user, "me");
                assert_eq!(password.as_deref(), Some("s@cret"));
            }
            _ => panic!("expected basic auth"),
        }
        let mut cfg = WebDavConfig::new(Url::parse("https://h/").unwrap());
        cfg.password = Some("hunter2".into());
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("bytes 5-9/100"), Some((5, Some(100))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("bytes 9-5/100"), None);
    }

    #[test]
    fn etag_quoting() {
        assert_eq!(quote_etag("abc"), "\"abc\"");
        assert_eq!(quote_etag("\"abc\""), "\"abc\"");
        assert_eq!(quote_etag("W/\"abc\""), "W/\"abc\"");
    }

    #[test]
    fn status_mapping() {
        assert!(matches!(
            status_error(StatusCode::NOT_FOUND),
            RemoteError::NotFound
        ));
        assert!(matches!(
            status_error(StatusCode::PRECONDITION_FAILED),
            RemoteError::PreconditionFailed
        ));
        assert!(matches!(
            status_error(StatusCode::UNAUTHORIZED),
            RemoteError::Unauthorized(401)
        ));
        assert!(matches!(
            status_error(StatusCode::FORBIDDEN),
            RemoteError::Refused { status: 403, .. }
        ));
        assert!(matches!(
            status_error(StatusCode::TOO_MANY_REQUESTS),
            RemoteError::Server { status: 429 }
        ));
        assert!(matches!(
            status_error(StatusCode::BAD_GATEWAY),
            RemoteError::Server { status: 502 }
        ));
        assert!(matches!(
            status_error(StatusCode::CONFLICT),
            RemoteError::Refused { status: 409, .. }
        ));
    }
}
