//! The plain HTTP backend, read-only: a directory is the HTML index page a web server
//! generates for it (Apache's mod_autoindex, nginx's autoindex), a file is read with
//! ranged GETs, and its size, mtime and ETag come from a HEAD (the sizes on index pages
//! are rounded by Apache and absent for some servers, so they are never used).
//!
//! Links on an index page are untrusted input, like hrefs in a multistatus: only links
//! that resolve to a direct child of the listed directory on the same server count.

use std::path::Path;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE, ETAG, LAST_MODIFIED};
use reqwest::{Method, StatusCode};
use url::Url;

pub use super::client::ConnectionConfig as HttpConfig;
use super::client::{header_string, normalize, redirects_to_slash, status_error, HttpClient};
use super::multistatus::decode_path;
use super::{Entry, Precondition, PutReply, RangeReply, Remote, RemoteError, ServerInfo};

/// HEADs in flight at once while listing a directory.
const HEADS_AT_ONCE: usize = 8;
/// An index page larger than this is refused rather than held in memory.
const MAX_INDEX_PAGE: usize = 16 << 20;

pub struct HttpIndex {
    http: HttpClient,
}

impl std::fmt::Debug for HttpIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpIndex")
            .field("base", &self.http.base_url().as_str())
            .finish_non_exhaustive()
    }
}

/// A link of an index page naming a direct child of the listed directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexLink {
    /// Decoded name.
    pub name: String,
    /// The link ends with '/'.
    pub is_dir: bool,
}

/// The direct children an HTML index page of `dir_url` links to, in page order, each
/// once. Sort links (`?C=N;O=D`), the parent, anchors, other hosts, deeper paths and
/// names that would smuggle a path component (`..`, an encoded '/', NUL) are dropped.
pub fn parse_index(html: &str, dir_url: &Url) -> Vec<IndexLink> {
    let Ok(dir) = decode_path(dir_url.path()) else {
        return Vec::new();
    };
    let page = scraper::Html::parse_document(html);
    let anchors = scraper::Selector::parse("a[href]").expect("valid selector");
    let mut out: Vec<IndexLink> = Vec::new();
    for a in page.select(&anchors) {
        let href = a.value().attr("href").unwrap_or_default();
        match child_link(href, dir_url, &dir) {
            Ok(link) => {
                // Apache's pre layout links the icon and the name: one entry each.
                if !out.iter().any(|l| l.name == link.name) {
                    out.push(link);
                }
            }
            Err(why) => tracing::debug!(href, "skipping link on index page: {why}"),
        }
    }
    out
}

/// The child `href` (as written on the page of `dir_url`, whose decoded segments are
/// `dir`) names, or why it names none.
fn child_link(href: &str, dir_url: &Url, dir: &[String]) -> Result<IndexLink, &'static str> {
    let href = href.trim();
    if href.is_empty() || href.contains(['?', '#']) {
        return Err("empty, a query (sort order) or an anchor");
    }
    let has_scheme = href
        .split_once(':')
        .is_some_and(|(s, _)| !s.is_empty() && !s.contains('/'));
    if !(has_scheme || href.starts_with('/')) {
        // Relative: one segment, maybe with the "./" Apache puts before names with ':'.
        let bare = href.strip_prefix("./").unwrap_or(href);
        let bare = bare.strip_suffix('/').unwrap_or(bare);
        if bare.contains(['/', '\\']) {
            return Err("'/' inside the name");
        }
    }
    let url = dir_url.join(href).map_err(|_| "not a URL")?;
    if url.origin() != dir_url.origin() {
        return Err("another host or scheme");
    }
    let mut segments = decode_path(url.path()).map_err(|_| "hostile or undecodable path")?;
    if segments.len() != dir.len() + 1 || segments[..dir.len()] != *dir {
        return Err("not a direct child of the directory");
    }
    Ok(IndexLink {
        name: segments.pop().expect("one segment more than the directory"),
        is_dir: url.path().ends_with('/'),
    })
}

fn is_html(headers: &HeaderMap) -> bool {
    header_string(headers, CONTENT_TYPE).is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        t.starts_with("text/html") || t.starts_with("application/xhtml+xml")
    })
}

fn last_segment(path: &str) -> String {
    path.rsplit('/').next().unwrap_or_default().to_string()
}

fn dir_entry(name: String) -> Entry {
    Entry {
        name,
        is_dir: true,
        size: 0,
        mtime: None,
        etag: None,
        checksum: None,
        meta: None,
    }
}

impl HttpIndex {
    pub fn new(cfg: HttpConfig) -> Result<HttpIndex, RemoteError> {
        Ok(HttpIndex {
            http: HttpClient::new(cfg)?,
        })
    }

    /// The base URL requests are made against (no credentials).
    pub fn base_url(&self) -> &Url {
        self.http.base_url()
    }

    /// The index page of directory `path` (normalized), as text.
    async fn index_page(&self, path: &str, url: &Url) -> Result<String, RemoteError> {
        self.http
            .retrying("GET", path, || async {
                let resp = self
                    .http
                    .send(self.http.request(Method::GET, url.clone()), path)
                    .await?;
                match resp.status() {
                    StatusCode::OK if is_html(resp.headers()) => {
                        let progress = super::client::Progress::new();
                        let body = self
                            .http
                            .body_capped(resp, &progress, MAX_INDEX_PAGE as u64)
                            .await?;
                        Ok(String::from_utf8_lossy(&body).into_owned())
                    }
                    StatusCode::OK => Err(RemoteError::BadReply(format!(
                        "{path}: not an HTML index page (Content-Type {:?})",
                        header_string(resp.headers(), CONTENT_TYPE).unwrap_or_default()
                    ))),
                    s => Err(status_error(s)),
                }
            })
            .await
    }

    /// HEAD of `path`: a file with its size, mtime and ETag; a directory when the server
    /// redirects to the path with a trailing slash; `None` when it is not there.
    async fn head(&self, path: &str) -> Result<Option<Entry>, RemoteError> {
        let url = self.http.url_for(path, false)?;
        let resp = self
            .http
            .retrying("HEAD", path, || async {
                self.http
                    .send(self.http.request(Method::HEAD, url.clone()), path)
                    .await
                    .and_then(|r| match r.status() {
                        s if s.is_server_error() && s != StatusCode::NOT_IMPLEMENTED => {
                            Err(status_error(s))
                        }
                        _ => Ok(r),
                    })
            })
            .await?;
        let name = last_segment(path);
        let headers = resp.headers();
        let size = match resp.status() {
            s if s.is_success() => headers
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok()),
            StatusCode::NOT_FOUND => return Ok(None),
            s if s.is_redirection() && redirects_to_slash(headers, &url) => {
                return Ok(Some(dir_entry(name)))
            }
            // Servers that do not do HEAD: the size comes from a one-byte GET instead.
            StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => None,
            s => return Err(status_error(s)),
        };
        let mut entry = Entry {
            name,
            is_dir: false,
            size: size.unwrap_or(0),
            mtime: header_string(headers, LAST_MODIFIED)
                .and_then(|v| httpdate::parse_http_date(&v).ok()),
            etag: header_string(headers, ETAG),
            checksum: None,
            meta: None,
        };
        if size.is_none() {
            let probe = self.http.get_range(path, 0, 1).await?;
            entry.size = probe.total_size.ok_or_else(|| {
                RemoteError::BadReply(format!("{path}: the server gives no size"))
            })?;
            entry.etag = entry.etag.or(probe.etag);
        }
        Ok(Some(entry))
    }
}

#[async_trait]
impl Remote for HttpIndex {
    async fn stat(&self, path: &str) -> Result<Option<Entry>, RemoteError> {
        let path = normalize(path);
        if path == "/" {
            let url = self.http.url_for("/", true)?;
            return match self.index_page(&path, &url).await {
                Ok(_) => Ok(Some(dir_entry(String::new()))),
                Err(RemoteError::NotFound) => Ok(None),
                Err(e) => Err(e),
            };
        }
        self.head(&path).await
    }

    async fn list(&self, path: &str) -> Result<Vec<Entry>, RemoteError> {
        let path = normalize(path);
        let url = self.http.url_for(&path, true)?;
        let page = self.index_page(&path, &url).await?;
        let links = parse_index(&page, &url);
        let path = &path;
        let mut entries: Vec<Entry> = futures_util::stream::iter(links)
            .map(|link| async move {
                if link.is_dir {
                    return Ok(Some(dir_entry(link.name)));
                }
                let child = format!("{}/{}", path.trim_end_matches('/'), link.name);
                match self.head(&child).await {
                    // Listed, then gone: the listing is simply older than the file.
                    Ok(None) => Ok(None),
                    Ok(Some(e)) => Ok(Some(e)),
                    // One unreadable file (403 and such) must not hide its siblings.
                    Err(RemoteError::Refused { status, message }) => {
                        tracing::warn!("{child}: HTTP {status} {message}; left out of {path}");
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(HEADS_AT_ONCE)
            .try_filter_map(|e| async move { Ok(e) })
            .try_collect()
            .await?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(super::unique_names(path, entries, |e| e))
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
        _path: &str,
        _local: &Path,
        _len: u64,
        _cond: Precondition,
        _mtime: Option<SystemTime>,
        _hash: Option<&super::BodyHash>,
    ) -> Result<PutReply, RemoteError> {
        Err(RemoteError::ReadOnly)
    }

    async fn put_bytes(
        &self,
        _path: &str,
        _data: bytes::Bytes,
        _cond: Precondition,
        _mtime: Option<SystemTime>,
    ) -> Result<PutReply, RemoteError> {
        Err(RemoteError::ReadOnly)
    }

    async fn put_range(
        &self,
        _path: &str,
        _local: &Path,
        _offset: u64,
        _len: u64,
        _hash: Option<&super::BodyHash>,
    ) -> Result<PutReply, RemoteError> {
        Err(RemoteError::ReadOnly)
    }

    async fn partial_put_supported(&self) -> Result<bool, RemoteError> {
        Ok(false)
    }

    async fn mkcol(&self, _path: &str) -> Result<(), RemoteError> {
        Err(RemoteError::ReadOnly)
    }

    async fn delete(&self, _path: &str, _is_dir: bool) -> Result<(), RemoteError> {
        Err(RemoteError::ReadOnly)
    }

    async fn delete_if_match(&self, _path: &str, _etag: &str) -> Result<(), RemoteError> {
        Err(RemoteError::ReadOnly)
    }

    async fn rename(&self, _from: &str, _to: &str, _is_dir: bool) -> Result<(), RemoteError> {
        Err(RemoteError::ReadOnly)
    }

    async fn rename_no_replace(
        &self,
        _from: &str,
        _to: &str,
        _is_dir: bool,
    ) -> Result<(), RemoteError> {
        Err(RemoteError::ReadOnly)
    }

    /// A GET of the root that answers with an HTML page. The body is not read: the
    /// health check runs every few seconds and a large index would cost each time.
    async fn probe(&self) -> Result<ServerInfo, RemoteError> {
        let started = Instant::now();
        let url = self.http.url_for("/", true)?;
        let resp = self
            .http
            .send(self.http.request(Method::GET, url), "/")
            .await?;
        match resp.status() {
            StatusCode::OK if is_html(resp.headers()) => Ok(ServerInfo {
                latency: started.elapsed(),
                dav_classes: Vec::new(),
            }),
            StatusCode::OK => Err(RemoteError::BadReply(format!(
                "GET answered with Content-Type {:?}, not an HTML index page",
                header_string(resp.headers(), CONTENT_TYPE).unwrap_or_default()
            ))),
            s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                Err(RemoteError::Unauthorized(s.as_u16()))
            }
            s => Err(status_error(s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(html: &str, dir: &str) -> Vec<(String, bool)> {
        parse_index(html, &Url::parse(dir).unwrap())
            .into_iter()
            .map(|l| (l.name, l.is_dir))
            .collect()
    }

    fn owned(v: &[(&str, bool)]) -> Vec<(String, bool)> {
        v.iter().map(|(n, d)| (n.to_string(), *d)).collect()
    }

    // Captured from Apache 2.4.71 and nginx 1.22.1 (Debian 12) serving one folder.

    /// Apache, `IndexOptions FancyIndexing HTMLTable` (Debian's default): sort links in
    /// the header row, names with ':' written as "./name", rounded sizes.
    const APACHE_TABLE: &str = r#"<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN" "http://www.w3.org/TR/html4/strict.dtd">
<html>
 <head>
  <title>Index of /</title>
 </head>
 <body>
<h1>Index of /</h1>
  <table>
   <tr><th valign="top">&nbsp;</th><th><a href="?C=N;O=D">Name</a></th><th><a href="?C=M;O=A">Last modified</a></th><th><a href="?C=S;O=A">Size</a></th><th><a href="?C=D;O=A">Description</a></th></tr>
   <tr><th colspan="5"><hr></th></tr>
<tr><td valign="top">&nbsp;</td><td><a href="%c3%bcn%c3%afc%c3%b8d%c3%a9%20%e2%82%ac.txt">ünïcødé €.txt</a></td><td align="right">2026-11-23 23:37  </td><td align="right">  1 </td><td>&nbsp;</td></tr>
<tr><td valign="top">&nbsp;</td><td><a href="100%25%20&amp;%20more.txt">100% &amp; more.txt</a></td><td align="right">2026-11-23 23:37  </td><td align="right">  1 </td><td>&nbsp;</td></tr>
<tr><td valign="top">&nbsp;</td><td><a href="a-very-long-file-name-that-nginx-will-cut-in-the-listing-text.txt">a-very-long-file-name-that-nginx-will-cut-in-the-listing-text.txt</a></td><td align="right">2026-11-23 23:37  </td><td align="right">  1 </td><td>&nbsp;</td></tr>
<tr><td valign="top">&nbsp;</td><td><a href="big.bin">big.bin</a></td><td align="right">2026-11-23 23:37  </td><td align="right"> 20K</td><td>&nbsp;</td></tr>
<tr><td valign="top">&nbsp;</td><td><a href="hello.txt">hello.txt</a></td><td align="right">2026-11-23 23:37  </td><td align="right">  6 </td><td>&nbsp;</td></tr>
<tr><td valign="top">&nbsp;</td><td><a href="sub%20dir/">sub dir/</a></td><td align="right">2026-11-23 23:37  </td><td align="right">  - </td><td>&nbsp;</td></tr>
<tr><td valign="top">&nbsp;</td><td><a href="./time:%2010:00.txt">time: 10:00.txt</a></td><td align="right">2026-11-23 23:37  </td><td align="right">  1 </td><td>&nbsp;</td></tr>
<tr><td valign="top">&nbsp;</td><td><a href="with%20space.txt">with space.txt</a></td><td align="right">2026-11-23 23:37  </td><td align="right">  1 </td><td>&nbsp;</td></tr>
   <tr><th colspan="5"><hr></th></tr>
</table>
</body></html>
"#;

    /// Apache, a subdirectory: the "Parent Directory" link is an absolute path.
    const APACHE_TABLE_SUB: &str = r#"<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN" "http://www.w3.org/TR/html4/strict.dtd">
<html>
 <head>
  <title>Index of /sub dir</title>
 </head>
 <body>
<h1>Index of /sub dir</h1>
  <table>
   <tr><th valign="top">&nbsp;</th><th><a href="?C=N;O=D">Name</a></th><th><a href="?C=M;O=A">Last modified</a></th><th><a href="?C=S;O=A">Size</a></th><th><a href="?C=D;O=A">Description</a></th></tr>
   <tr><th colspan="5"><hr></th></tr>
<tr><td valign="top">&nbsp;</td><td><a href="/">Parent Directory</a></td><td>&nbsp;</td><td align="right">  - </td><td>&nbsp;</td></tr>
<tr><td valign="top">&nbsp;</td><td><a href="inner.txt">inner.txt</a></td><td align="right">2026-11-23 23:37  </td><td align="right">  1 </td><td>&nbsp;</td></tr>
   <tr><th colspan="5"><hr></th></tr>
</table>
</body></html>
"#;

    /// Apache without FancyIndexing: a plain list.
    const APACHE_LIST: &str = r#"<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN" "http://www.w3.org/TR/html4/strict.dtd">
<html>
 <head>
  <title>Index of /plain</title>
 </head>
 <body>
<h1>Index of /plain</h1>
<ul><li><a href="/"> Parent Directory</a></li>
<li><a href="%c3%bcn%c3%afc%c3%b8d%c3%a9%20%e2%82%ac.txt"> ünïcødé €.txt</a></li>
<li><a href="100%25%20&amp;%20more.txt"> 100% &amp; more.txt</a></li>
<li><a href="a-very-long-file-name-that-nginx-will-cut-in-the-listing-text.txt"> a-very-long-file-name-that-nginx-will-cut-in-the-listing-text.txt</a></li>
<li><a href="big.bin"> big.bin</a></li>
<li><a href="hello.txt"> hello.txt</a></li>
<li><a href="sub%20dir/"> sub dir/</a></li>
<li><a href="./time:%2010:00.txt"> time: 10:00.txt</a></li>
<li><a href="with%20space.txt"> with space.txt</a></li>
</ul>
</body></html>
"#;

    /// nginx autoindex: a `<pre>` of links, directories first, long names cut in the
    /// text (not the href), ':' and '&' percent-encoded, exact sizes.
    const NGINX: &str = r#"<html>
<head><title>Index of /</title></head>
<body>
<h1>Index of /</h1><hr><pre><a href="../">../</a>
<a href="sub%20dir/">sub dir/</a>                                           23-Nov-2026 23:37                   -
<a href="100%25%20%26%20more.txt">100% &amp; more.txt</a>                                    23-Nov-2026 23:37                   1
<a href="a-very-long-file-name-that-nginx-will-cut-in-the-listing-text.txt">a-very-long-file-name-that-nginx-will-cut-in-th..&gt;</a> 23-Nov-2026 23:37                   1
<a href="big.bin">big.bin</a>                                            23-Nov-2026 23:37               20000
<a href="hello.txt">hello.txt</a>                                          23-Nov-2026 23:37                   6
<a href="time%3A%2010%3A00.txt">time: 10:00.txt</a>                                    23-Nov-2026 23:37                   1
<a href="with%20space.txt">with space.txt</a>                                     23-Nov-2026 23:37                   1
<a href="%C3%BCn%C3%AFc%C3%B8d%C3%A9%20%E2%82%AC.txt">ünïcødé €.txt</a>                                23-Nov-2026 23:37                   1
</pre><hr></body>
</html>
"#;

    /// The folder the captures were made of.
    fn expected() -> Vec<(String, bool)> {
        let mut v = owned(&[
            ("100% & more.txt", false),
            (
                "a-very-long-file-name-that-nginx-will-cut-in-the-listing-text.txt",
                false,
            ),
            ("big.bin", false),
            ("hello.txt", false),
            ("sub dir", true),
            ("time: 10:00.txt", false),
            ("with space.txt", false),
            ("ünïcødé €.txt", false),
        ]);
        v.sort();
        v
    }

    fn sorted(mut v: Vec<(String, bool)>) -> Vec<(String, bool)> {
        v.sort();
        v
    }

    #[test]
    fn apache_fancy_table() {
        assert_eq!(
            sorted(names(APACHE_TABLE, "http://127.0.0.1:38472/")),
            expected()
        );
        assert_eq!(
            names(APACHE_TABLE_SUB, "http://127.0.0.1:38472/sub%20dir/"),
            owned(&[("inner.txt", false)])
        );
    }

    #[test]
    fn apache_plain_list() {
        assert_eq!(
            sorted(names(APACHE_LIST, "http://127.0.0.1:38472/plain/")),
            expected()
        );
    }

    #[test]
    fn nginx_pre() {
        assert_eq!(sorted(names(NGINX, "http://127.0.0.1:38471/")), expected());
        // Directories first, then files, as on the page.
        assert_eq!(
            names(NGINX, "http://127.0.0.1:38471/")[0],
            ("sub dir".into(), true)
        );
    }

    #[test]
    fn index_of_a_mount_below_the_server_root() {
        // The same page, for a mount of /pub/docs/: relative links still resolve.
        let dir = "http://127.0.0.1:38471/pub/docs/";
        assert_eq!(sorted(names(NGINX, dir)), expected());
    }

    const DIR: &str = "http://127.0.0.1:8080/pub/docs/";

    #[test]
    fn apache_pre_layout_icon_links_count_once() {
        // FancyIndexing without HTMLTable links the icon and the name.
        let html = r#"<pre><img src="/icons/blank.gif" alt="Icon "> <a href="?C=N;O=D">Name</a>
<hr><img src="/icons/back.gif" alt="[PARENTDIR]"> <a href="/pub/">Parent Directory</a>
<a href="x.txt"><img src="/icons/text.gif" alt="[TXT]"></a> <a href="x.txt">x.txt</a>   2026-11-23 10:00   12K
</pre>"#;
        assert_eq!(names(html, DIR), owned(&[("x.txt", false)]));
    }

    #[test]
    fn hostile_links_are_skipped() {
        let html = r##"<html><body><pre>
<a href="../">../</a>
<a href="../../etc/passwd">passwd</a>
<a href="..">up</a>
<a href="%2e%2e/">encoded up</a>
<a href="/etc/passwd">abs</a>
<a href="/pub/docs/../../../etc/shadow">dotted abs</a>
<a href="http://evil.example/pub/docs/x.txt">other host</a>
<a href="https://127.0.0.1:8080/pub/docs/x.txt">other scheme</a>
<a href="//evil.example/pub/docs/y.txt">scheme-relative</a>
<a href="a%2Fb.txt">encoded slash</a>
<a href="a/b.txt">deeper</a>
<a href="a%00b">nul</a>
<a href="x.txt?download=1">query</a>
<a href="?C=M;O=A">sort</a>
<a href="#top">anchor</a>
<a href="x.txt#frag">fragment</a>
<a href="javascript:alert(1)">script</a>
<a href="mailto:root@example.org">mail</a>
<a href="..\..\etc\passwd">backslashes</a>
<a href="%ff%fe">not utf-8</a>
<a href="">empty</a>
<a href="ok.txt">ok</a>
<a href="http://127.0.0.1:8080/pub/docs/abs%20ok.txt">same host</a>
</pre></body></html>"##;
        assert_eq!(
            names(html, DIR),
            owned(&[("ok.txt", false), ("abs ok.txt", false)])
        );
    }

    #[test]
    fn root_of_the_server() {
        let html = r#"<h1>Index of /</h1><hr><pre><a href="../">../</a>
<a href="pub/">pub/</a>   23-Nov-2026 10:00   -
<a href="/top.txt">top.txt</a>
</pre>"#;
        assert_eq!(
            names(html, "http://127.0.0.1:8080/"),
            owned(&[("pub", true), ("top.txt", false)])
        );
    }

    #[test]
    fn not_html_gives_no_entries() {
        assert!(names("\u{0}\u{1}binary junk <<<>>>", DIR).is_empty());
        assert!(names("", DIR).is_empty());
    }
}
