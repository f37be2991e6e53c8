//! The HTTP(S) connection every backend shares: one `reqwest` client with the same TLS,
//! authentication, timeouts, retries and URL encoding, so WebDAV and plain HTTP mounts
//! behave alike on the wire.
//!
//! Over 600 lines: authentication (basic, digest, bearer), TLS, timeouts that follow
//! progress, retries and URL encoding are one client; split, each would need the
//! others.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::{HeaderMap, CONTENT_RANGE, ETAG, LOCATION, RANGE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use url::Url;

use super::{RangeReply, RangeStream, RemoteError};

/// Everything but RFC 3986 "unreserved" is encoded in a path segment: space, `%`, `#`,
/// `?`, `+` (some servers decode it as a space), sub-delims and all non-ASCII.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Transfers get `request_timeout` plus the time this rate needs for their bytes, so a
/// large PUT on a slow link is not cut off while a dead connection still fails eventually.
const MIN_TRANSFER_RATE: u64 = 64 * 1024;

/// The slowest a request may move, measured over each stretch of the idle timeout: a
/// server that trickles a byte now and then (or takes a body and never answers) is cut
/// as one that stopped, not waited for until the total deadline.
pub const MIN_PROGRESS_RATE: u64 = 1024;

/// Default cap on the body of one PROPFIND reply (`--max-listing-size`).
pub const DEFAULT_MAX_LISTING: u64 = 64 << 20;

/// How far one request has come: bytes moved either way, and when the last moved. Fed by
/// the request body as the connection takes it and by the response body as it arrives;
/// `HttpClient::watched` cuts the request when it stops moving.
#[derive(Debug)]
pub struct Progress {
    started: Instant,
    /// Milliseconds after `started` of the last byte moved (or of the start).
    last_ms: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
}

impl Progress {
    pub fn new() -> std::sync::Arc<Progress> {
        std::sync::Arc::new(Progress {
            started: Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
            bytes: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn moved(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.bytes.fetch_add(n, Ordering::Relaxed);
        self.last_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// A request body that reports to this tracker as the connection takes it.
    pub fn track_body<S>(self: &std::sync::Arc<Self>, stream: S) -> reqwest::Body
    where
        S: futures_util::Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static,
    {
        use futures_util::StreamExt;
        let me = self.clone();
        reqwest::Body::wrap_stream(stream.map(move |chunk| {
            if let Ok(c) = &chunk {
                me.moved(c.len() as u64);
                // Counted as it goes out, so progress moves during a long upload
                // (retries count again).
                crate::metrics::add(&crate::metrics::METRICS.bytes_up, c.len() as u64);
            }
            chunk
        }))
    }

    /// In-memory data sent in pieces, so the tracker sees it go.
    pub fn track_bytes(self: &std::sync::Arc<Self>, data: Bytes) -> reqwest::Body {
        const PIECE: usize = 64 << 10;
        let pieces: Vec<std::io::Result<Bytes>> = (0..data.len())
            .step_by(PIECE)
            .map(|i| Ok(data.slice(i..(i + PIECE).min(data.len()))))
            .collect();
        self.track_body(futures_util::stream::iter(pieces))
    }
}

/// Why a request that stopped moving is cut, or None while it moves. Checked by a
/// watchdog: nothing for `idle`, or less than `MIN_PROGRESS_RATE` over the stretch of
/// `idle` just past (`window` holds where that stretch started: time and bytes).
fn stalled(p: &Progress, idle: Duration, window: &mut (Duration, u64)) -> Option<String> {
    let now = p.started.elapsed();
    let last = Duration::from_millis(p.last_ms.load(Ordering::Relaxed));
    if now.saturating_sub(last) >= idle {
        return Some(format!(
            "no progress for {:.1} s: cut",
            now.saturating_sub(last).as_secs_f64()
        ));
    }
    let bytes = p.bytes.load(Ordering::Relaxed);
    let span = now.saturating_sub(window.0);
    if span >= idle {
        let floor = MIN_PROGRESS_RATE * span.as_secs().max(1);
        if bytes - window.1 < floor {
            return Some(format!(
                "{} bytes in {:.1} s, slower than {MIN_PROGRESS_RATE} bytes/s: cut",
                bytes - window.1,
                span.as_secs_f64()
            ));
        }
        *window = (now, bytes);
    }
    None
}

#[derive(Clone)]
pub struct ConnectionConfig {
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
    /// A request that moves no byte (or fewer than `MIN_PROGRESS_RATE` a second) for this
    /// long is cut, whatever its total deadline; waiting for the reply counts.
    pub idle_timeout: Duration,
    /// The largest PROPFIND reply read; a larger one fails (`BadReply`) before it is all
    /// read, and the listing the caller had stays.
    pub max_listing_bytes: u64,
}

impl ConnectionConfig {
    pub fn new(base_url: Url) -> Self {
        ConnectionConfig {
            base_url,
            user: None,
            password: None,
            bearer_token: None,
            ca_cert_pem: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            retries: 3,
            idle_timeout: Duration::from_secs(30),
            max_listing_bytes: DEFAULT_MAX_LISTING,
        }
    }
}

// Hand-written so secrets never reach a log line through `{:?}`.
impl fmt::Debug for ConnectionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("ConnectionConfig")
            .field("base_url", &self.base_url.as_str())
            .field("user", &self.user)
            .field("password", &redact(&self.password))
            .field("bearer_token", &redact(&self.bearer_token))
            .field("ca_cert_pem", &self.ca_cert_pem.as_ref().map(|p| p.len()))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("retries", &self.retries)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_listing_bytes", &self.max_listing_bytes)
            .finish()
    }
}

enum Auth {
    None,
    /// Basic until the server asks for Digest (Apache `mod_auth_digest`); from then on
    /// Digest, answering the last challenge the server sent.
    Password {
        user: String,
        password: Option<String>,
        digest: Mutex<Option<digest_auth::WwwAuthenticateHeader>>,
        /// Basic may be sent without being asked: over https from the start; over plain
        /// http only once the server has answered 401 without a Digest challenge, so a
        /// Digest server never sees the password in the clear.
        basic: AtomicBool,
    },
    Bearer(String),
}

/// The `Digest` challenge of a 401 reply, if it carries one.
fn digest_challenge(resp: &Response) -> Option<digest_auth::WwwAuthenticateHeader> {
    resp.headers()
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.trim_start().to_ascii_lowercase().starts_with("digest"))
        .and_then(|v| digest_auth::parse(v).ok())
}

pub struct HttpClient {
    client: reqwest::Client,
    /// Base URL without credentials, query or fragment; its path ends with '/'.
    base: Url,
    auth: Auth,
    request_timeout: Duration,
    retries: u32,
    idle_timeout: Duration,
    max_listing_bytes: u64,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    pub fn new(cfg: ConnectionConfig) -> Result<HttpClient, RemoteError> {
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
            (Some(user), _) => Auth::Password {
                user,
                password,
                digest: Mutex::new(None),
                basic: AtomicBool::new(base.scheme() == "https"),
            },
            (None, Some(token)) => Auth::Bearer(token),
            (None, None) => Auth::None,
        };

        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(cfg.connect_timeout)
            .tcp_keepalive(Duration::from_secs(30))
            // Redirects would silently turn PROPFIND/PUT into GET or drop the body; the
            // one redirect that matters (missing trailing slash) is handled by the caller.
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

        Ok(HttpClient {
            client,
            base,
            auth,
            request_timeout: cfg.request_timeout,
            retries: cfg.retries,
            idle_timeout: cfg.idle_timeout,
            max_listing_bytes: cfg.max_listing_bytes,
        })
    }

    /// The base URL requests are made against (no credentials).
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// URL of a decoded mount-relative path. Collections get a trailing slash: Apache
    /// and others answer PROPFIND/MKCOL/DELETE/MOVE on a collection without it with a
    /// 301, and some treat `MKCOL /x` and `MKCOL /x/` differently.
    pub fn url_for(&self, path: &str, is_dir: bool) -> Result<Url, RemoteError> {
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

    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        // Computed before the builder takes method and URL; nothing to do (and nothing
        // cloned) unless a Digest challenge is known.
        let digest = self.digest_answer(&method, &url);
        let rb = self
            .client
            .request(method, url)
            .timeout(self.request_timeout);
        match &self.auth {
            Auth::None => rb,
            Auth::Password {
                user,
                password,
                basic,
                ..
            } => match digest {
                Some(answer) => rb.header(reqwest::header::AUTHORIZATION, answer),
                None if basic.load(Ordering::Relaxed) => rb.basic_auth(user, password.as_ref()),
                None => rb,
            },
            Auth::Bearer(token) => rb.bearer_auth(token),
        }
    }

    /// The `Authorization: Digest …` value for a request, once the server has sent a
    /// challenge.
    fn digest_answer(&self, method: &Method, url: &Url) -> Option<String> {
        let Auth::Password {
            user,
            password,
            digest,
            ..
        } = &self.auth
        else {
            return None;
        };
        let mut challenge = digest.lock().unwrap_or_else(|p| p.into_inner());
        let prompt = challenge.as_mut()?;
        let uri = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let context = digest_auth::AuthContext::new_with_method(
            user.as_str(),
            password.as_deref().unwrap_or(""),
            uri,
            Option::<&[u8]>::None,
            digest_auth::HttpMethod::from(method.as_str().to_string()),
        );
        prompt.respond(&context).ok().map(|a| a.to_header_string())
    }

    /// After a 401 without a Digest challenge: Basic is what the server wants. True when
    /// that is news (the request was sent without credentials and is worth repeating).
    fn learn_basic(&self) -> bool {
        match &self.auth {
            Auth::Password { basic, .. } => !basic.swap(true, Ordering::Relaxed),
            _ => false,
        }
    }

    /// The `Authorization` value for a request about to be repeated after a 401.
    fn answer_for(&self, method: &Method, url: &Url) -> Option<String> {
        use base64::Engine;
        if let Some(digest) = self.digest_answer(method, url) {
            return Some(digest);
        }
        match &self.auth {
            Auth::Password { user, password, .. } => {
                let pair = format!("{user}:{}", password.as_deref().unwrap_or(""));
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            _ => None,
        }
    }

    /// Takes a Digest challenge from a 401 reply. True when it is new (a first
    /// challenge, or a fresh nonce), so the request is worth repeating.
    fn learn_digest(&self, resp: &Response) -> bool {
        let Auth::Password { digest, .. } = &self.auth else {
            return false;
        };
        let Some(fresh) = digest_challenge(resp) else {
            return false;
        };
        let mut current = digest.lock().unwrap_or_else(|p| p.into_inner());
        let renewed = current.as_ref().is_none_or(|c| c.nonce != fresh.nonce);
        *current = Some(fresh);
        renewed
    }

    pub fn transfer_timeout(&self, bytes: u64) -> Duration {
        self.request_timeout + Duration::from_secs(bytes / MIN_TRANSFER_RATE)
    }

    pub fn max_listing_bytes(&self) -> u64 {
        self.max_listing_bytes
    }

    /// Runs `fut` (a request, or the reading of a reply) while it keeps moving: cut with a
    /// `Transport` error once `progress` stalls (see `stalled`).
    pub async fn watched<T>(
        &self,
        progress: &Progress,
        fut: impl Future<Output = Result<T, RemoteError>>,
    ) -> Result<T, RemoteError> {
        watch(self.idle_timeout, progress, fut).await
    }

    /// The next piece of a reply body, counted on `progress`; cut when it stalls.
    pub async fn next_chunk(
        &self,
        resp: &mut Response,
        progress: &Progress,
    ) -> Result<Option<Bytes>, RemoteError> {
        let chunk = self
            .watched(progress, async {
                resp.chunk().await.map_err(transport_error)
            })
            .await?;
        if let Some(c) = &chunk {
            progress.moved(c.len() as u64);
        }
        Ok(chunk)
    }

    /// A whole reply body of at most `cap` bytes: a longer one is refused before it is
    /// all read (a hostile or broken server cannot make us hold more).
    pub async fn body_capped(
        &self,
        mut resp: Response,
        progress: &Progress,
        cap: u64,
    ) -> Result<Bytes, RemoteError> {
        if resp.content_length().is_some_and(|n| n > cap) {
            return Err(too_large(cap));
        }
        let mut out = BytesMut::new();
        while let Some(chunk) = self.next_chunk(&mut resp, progress).await? {
            if (out.len() + chunk.len()) as u64 > cap {
                return Err(too_large(cap));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }

    /// Sends one request, logging method, path, status and latency. Cut when it stops
    /// moving (see `watched`).
    pub async fn send(&self, rb: RequestBuilder, path: &str) -> Result<Response, RemoteError> {
        self.send_tracked(rb, path, &Progress::new()).await
    }

    /// `send`, for a request whose body reports to `progress` (`Progress::track_body`).
    pub async fn send_tracked(
        &self,
        rb: RequestBuilder,
        path: &str,
        progress: &Progress,
    ) -> Result<Response, RemoteError> {
        self.watched(progress, self.send_inner(rb, path)).await
    }

    /// `send` for a request the server works on a while before it answers, moving no
    /// byte meanwhile (a COPY of a large file on the server's disk): bounded by the
    /// request's own timeout, not cut as stalled.
    pub async fn send_waiting(
        &self,
        rb: RequestBuilder,
        path: &str,
    ) -> Result<Response, RemoteError> {
        self.send_inner(rb, path).await
    }

    async fn send_inner(&self, rb: RequestBuilder, path: &str) -> Result<Response, RemoteError> {
        let (client, req) = rb.build_split();
        let req = req.map_err(transport_error)?;
        let method = req.method().clone();
        // A Digest server answers 401 with a (new) challenge: the request goes again
        // with the answer, if its body can be sent twice; if not, the caller's retry
        // builds it again (see `RemoteError::ChallengeRenewed`).
        // Only a password may meet a challenge worth repeating the request for.
        let again = match self.auth {
            Auth::Password { .. } => req.try_clone(),
            _ => None,
        };
        let started = Instant::now();
        let first = client.execute(req).await;
        let first = match first {
            Ok(resp)
                if resp.status() == StatusCode::UNAUTHORIZED
                    && (self.learn_digest(&resp) || self.learn_basic()) =>
            {
                match again {
                    Some(mut req) => {
                        if let Some(answer) = self.answer_for(&method, req.url()) {
                            if let Ok(v) = reqwest::header::HeaderValue::from_str(&answer) {
                                req.headers_mut().insert(reqwest::header::AUTHORIZATION, v);
                            }
                        }
                        client.execute(req).await
                    }
                    None => return Err(RemoteError::ChallengeRenewed),
                }
            }
            other => other,
        };
        match first {
            Ok(resp) => {
                crate::metrics::METRICS.request(
                    method.as_str(),
                    Ok(resp.status().as_u16()),
                    started.elapsed(),
                );
                tracing::debug!(
                    %method,
                    path,
                    status = resp.status().as_u16(),
                    ms = started.elapsed().as_millis() as u64,
                    "remote request"
                );
                Ok(resp)
            }
            Err(e) => {
                crate::metrics::METRICS.request(
                    method.as_str(),
                    Err(crate::metrics::RequestFailure::of(&e)),
                    started.elapsed(),
                );
                let err = transport_error(e);
                tracing::debug!(
                    %method,
                    path,
                    ms = started.elapsed().as_millis() as u64,
                    "remote request failed: {err}"
                );
                Err(err)
            }
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or `retries` extra attempts
    /// have been spent on transport/server errors.
    pub async fn retrying<T, F, Fut>(
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

    /// Reads the window `[skip, skip + len)` of a response body, streaming past the
    /// bytes before it and dropping the connection once the window is full.
    async fn read_window(
        &self,
        mut resp: Response,
        progress: &Progress,
        mut skip: u64,
        len: u64,
    ) -> Result<Bytes, RemoteError> {
        let mut out = BytesMut::with_capacity(len.min(8 << 20) as usize);
        while (out.len() as u64) < len {
            let Some(mut chunk) = self.next_chunk(&mut resp, progress).await? else {
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

    /// GET with `Range: bytes=offset-(offset+len-1)`, retried. A server that ignores
    /// the range and sends the whole file (200) is read past `offset` and cut off.
    pub async fn get_range(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<RangeReply, RemoteError> {
        if len == 0 {
            return Ok(RangeReply {
                data: Bytes::new(),
                offset,
                total_size: None,
                etag: None,
            });
        }
        self.retrying("GET", path, || async {
            let (head, body) = self.range_head(path, offset, len).await?;
            let data = match body {
                Some(b) => self.read_window(b.resp, &b.progress, b.skip, len).await?,
                None => Bytes::new(),
            };
            crate::metrics::add(&crate::metrics::METRICS.bytes_down, data.len() as u64);
            Ok(RangeReply {
                data,
                offset,
                total_size: head.total_size,
                etag: head.etag,
            })
        })
        .await
    }

    /// `get_range` with the body handed over as it arrives (see `Remote::get_range_stream`).
    pub async fn get_range_stream(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<RangeStream, RemoteError> {
        let (head, body) = if len == 0 {
            (RangeHead::default(), None)
        } else {
            self.retrying("GET", path, || self.range_head(path, offset, len))
                .await?
        };
        let idle = self.idle_timeout;
        let body = futures_util::stream::try_unfold((body, len), move |(body, left)| async move {
            let Some(mut b) = body.filter(|_| left > 0) else {
                return Ok(None);
            };
            loop {
                let next = watch(idle, &b.progress, async {
                    b.resp.chunk().await.map_err(transport_error)
                });
                let Some(mut chunk) = next.await? else {
                    return Ok(None);
                };
                b.progress.moved(chunk.len() as u64);
                if b.skip >= chunk.len() as u64 {
                    b.skip -= chunk.len() as u64;
                    continue;
                }
                let _ = chunk.split_to(b.skip as usize);
                b.skip = 0;
                chunk.truncate(left.min(chunk.len() as u64) as usize);
                let left = left - chunk.len() as u64;
                crate::metrics::add(&crate::metrics::METRICS.bytes_down, chunk.len() as u64);
                return Ok(Some((chunk, (Some(b), left))));
            }
        });
        Ok(RangeStream {
            offset,
            total_size: head.total_size,
            etag: head.etag,
            body: Box::pin(body),
        })
    }

    /// One ranged GET up to its headers: what they say, and the body to read (none when
    /// the range starts at or past the file's end).
    async fn range_head(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<(RangeHead, Option<RangeBody>), RemoteError> {
        let last = offset.saturating_add(len - 1);
        let rb = self
            .request(Method::GET, self.url_for(path, false)?)
            .timeout(self.transfer_timeout(last))
            .header(RANGE, format!("bytes={offset}-{last}"));
        let progress = Progress::new();
        let resp = self.send_tracked(rb, path, &progress).await?;
        let etag = header_string(resp.headers(), ETAG);
        let (skip, total_size) = match resp.status() {
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
                (skip, total)
            }
            // The server ignored Range and sends the whole file: stream past the part
            // before `offset` instead of buffering it.
            StatusCode::OK => (offset, resp.content_length()),
            StatusCode::RANGE_NOT_SATISFIABLE => {
                // Reading at or past the end: "Content-Range: bytes */<size>".
                let total_size = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().strip_prefix("bytes */"))
                    .and_then(|n| n.trim().parse().ok());
                return Ok((RangeHead { total_size, etag }, None));
            }
            s => return Err(status_error(s)),
        };
        let body = RangeBody {
            resp,
            progress,
            skip,
        };
        Ok((RangeHead { total_size, etag }, Some(body)))
    }
}

/// What the headers of a ranged GET said.
#[derive(Default)]
struct RangeHead {
    total_size: Option<u64>,
    etag: Option<String>,
}

/// The body of a ranged GET still to be read: `skip` bytes before the range asked for.
struct RangeBody {
    resp: Response,
    progress: std::sync::Arc<Progress>,
    skip: u64,
}

/// `HttpClient::watched` with the client's idle timeout `idle`, for what outlives a
/// borrow of the client (a reply body read as it arrives).
async fn watch<T>(
    idle: Duration,
    progress: &Progress,
    fut: impl Future<Output = Result<T, RemoteError>>,
) -> Result<T, RemoteError> {
    let tick = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let watchdog = async {
        let mut window = (
            progress.started.elapsed(),
            progress.bytes.load(Ordering::Relaxed),
        );
        loop {
            tokio::time::sleep(tick).await;
            if let Some(why) = stalled(progress, idle, &mut window) {
                return why;
            }
        }
    };
    tokio::select! {
        r = fut => r,
        why = watchdog => {
            tracing::warn!("a request was cut: {why}");
            Err(RemoteError::Transport(format!("the server stopped answering ({why})")))
        }
    }
}

fn too_large(cap: u64) -> RemoteError {
    RemoteError::BadReply(format!("reply larger than the cap of {cap} bytes"))
}

/// "/a//b/" -> "/a/b", "" -> "/".
pub fn normalize(path: &str) -> String {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    format!("/{}", segs.join("/"))
}

pub fn quote_etag(tag: &str) -> String {
    if tag.starts_with('"') || tag.starts_with("W/\"") {
        tag.to_string()
    } else {
        format!("\"{tag}\"")
    }
}

pub fn header_string(
    headers: &HeaderMap,
    name: impl reqwest::header::AsHeaderName,
) -> Option<String> {
    headers.get(name)?.to_str().ok().map(String::from)
}

/// Does a redirect point at `url` plus a trailing slash?
pub fn redirects_to_slash(headers: &HeaderMap, url: &Url) -> bool {
    headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|loc| url.join(loc).ok())
        .is_some_and(|loc| loc.path() == format!("{}/", url.path()))
}

/// "bytes 100-199/1000" -> (100, Some(1000)); the total may be "*".
pub fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
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

/// `status_error` for a response, with the server's `Retry-After` when it gave one.
pub fn response_error(resp: &Response) -> RemoteError {
    match status_error(resp.status()) {
        RemoteError::Server { status, .. } => RemoteError::Server {
            status,
            retry_after: resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(crate::backoff::parse_retry_after),
        },
        other => other,
    }
}

pub fn status_error(status: StatusCode) -> RemoteError {
    match status.as_u16() {
        404 => RemoteError::NotFound,
        412 => RemoteError::PreconditionFailed,
        401 => RemoteError::Unauthorized(401),
        // "Not now": timeouts, locks held by another client, rate limits, a full disk
        // that may be emptied; worth trying again later.
        s @ (408 | 423 | 425 | 429 | 500..=599) => RemoteError::Server {
            status: s,
            retry_after: None,
        },
        s => RemoteError::Refused {
            status: s,
            message: status.canonical_reason().unwrap_or("").to_string(),
        },
    }
}

/// A reqwest error as text with its whole cause chain (the top level alone says little
/// more than "error sending request"), and without the URL.
pub fn transport_error(e: reqwest::Error) -> RemoteError {
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
    } else if msg.contains("invalid peer certificate") || msg.contains("certificate verify") {
        // Verification is never turned off; say what to do instead.
        RemoteError::Transport(format!(
            "TLS: the server's certificate is not trusted ({}); for a private CA, pass \
             --ca-cert with its PEM file",
            msg.rsplit(": ").next().unwrap_or(&msg)
        ))
    } else {
        RemoteError::Transport(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(url: &str) -> HttpClient {
        HttpClient::new(ConnectionConfig::new(Url::parse(url).unwrap())).unwrap()
    }

    #[test]
    fn urls_are_encoded_per_segment() {
        let d = client("http://h/dav/my%20share");
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
        let mut cfg = ConnectionConfig::new(Url::parse("https://me:s%40cret@h/x/?q#f").unwrap());
        cfg.retries = 0;
        let d = HttpClient::new(cfg).unwrap();
        assert_eq!(d.base.as_str(), "https://h/x/");
        match &d.auth {
            Auth::Password { user, password, .. } => {
                assert_eq!(user, "me");
                assert_eq!(password.as_deref(), Some("s@cret"));
            }
            _ => panic!("expected basic auth"),
        }
        let mut cfg = ConnectionConfig::new(Url::parse("https://h/").unwrap());
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
            RemoteError::Server { status: 429, .. }
        ));
        assert!(matches!(
            status_error(StatusCode::BAD_GATEWAY),
            RemoteError::Server { status: 502, .. }
        ));
        assert!(matches!(
            status_error(StatusCode::CONFLICT),
            RemoteError::Refused { status: 409, .. }
        ));
    }
}
