//! Plain HTTP, read-only mounts through a real FUSE mount, against a small web server
//! that serves a folder with index pages shaped like Apache's mod_autoindex (table and
//! list layouts) and nginx's autoindex, ranged GETs, HEAD, and 405 to PROPFIND. The
//! pages follow what Apache 2.4.71 and nginx 1.22.1 generate (escaping included); the
//! unit tests in `src/remote/http.rs` parse their output verbatim.

mod common;

use std::convert::Infallible;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use common::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Style {
    ApacheTable,
    ApacheList,
    Nginx,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// The folder, as a web server with autoindex serves it.
    Index(Style),
    /// The root's index page is full of links that try to escape it.
    Hostile,
    /// Nothing anywhere (neither WebDAV nor an index).
    NotFound,
    /// PROPFIND refused, and the root is a text file, not an index.
    PlainText,
}

struct Site {
    root: PathBuf,
    mode: Mode,
    /// Answer a Range request with 206 (else with the whole file, as some servers do).
    ranges: bool,
    /// What PROPFIND gets: this status, or (None) the same as a GET, as servers that
    /// serve every method alike do.
    propfind: Option<StatusCode>,
    /// "METHOD /raw/path" of every request, in order.
    requests: Mutex<Vec<String>>,
}

struct WebServer {
    _rt: tokio::runtime::Runtime,
    _tmp: tempfile::TempDir,
    root: PathBuf,
    addr: SocketAddr,
    site: Arc<Site>,
}

impl WebServer {
    fn start(mode: Mode) -> WebServer {
        WebServer::start_with(mode, true, Some(StatusCode::METHOD_NOT_ALLOWED))
    }

    fn start_with(mode: Mode, ranges: bool, propfind: Option<StatusCode>) -> WebServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("site");
        fs::create_dir_all(&root).unwrap();
        let site = Arc::new(Site {
            root: root.clone(),
            mode,
            ranges,
            propfind,
            requests: Mutex::new(Vec::new()),
        });
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let s = site.clone();
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(handle(&s, req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        WebServer {
            _rt: rt,
            _tmp: tmp,
            root,
            addr,
            site,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn put(&self, rel: &str, data: &[u8]) {
        let p = self.root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    /// How many requests `METHOD /raw/path` the server got.
    fn count(&self, method: &str, raw_path: &str) -> usize {
        let want = format!("{method} {raw_path}");
        self.requests().iter().filter(|r| **r == want).count()
    }

    fn requests(&self) -> Vec<String> {
        self.site.requests.lock().unwrap().clone()
    }
}

fn reply(status: StatusCode, headers: &[(&str, String)], body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    b.body(Full::new(Bytes::from(body))).unwrap()
}

fn handle(site: &Site, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let raw = req.uri().path().to_string();
    site.requests
        .lock()
        .unwrap()
        .push(format!("{} {raw}", req.method()));
    match site.mode {
        Mode::NotFound => return reply(StatusCode::NOT_FOUND, &[], b"not found".to_vec()),
        Mode::PlainText if req.method() == Method::GET || req.method() == Method::HEAD => {
            let ct = ("Content-Type", "text/plain".to_string());
            return reply(StatusCode::OK, &[ct], b"just text\n".to_vec());
        }
        _ => {}
    }
    let as_get = req.method() == Method::GET
        || req.method() == Method::HEAD
        || (req.method().as_str() == "PROPFIND" && site.propfind.is_none());
    if !as_get {
        let allow = ("Allow", "GET, HEAD".to_string());
        let status = site.propfind.unwrap_or(StatusCode::METHOD_NOT_ALLOWED);
        return reply(status, &[allow], Vec::new());
    }
    let head = req.method() == Method::HEAD;
    // Decode as a web server does, refusing what would leave the served folder.
    let Ok(decoded) = percent_decode_str(&raw).decode_utf8() else {
        return reply(StatusCode::BAD_REQUEST, &[], Vec::new());
    };
    let rel: Vec<&str> = decoded.split('/').filter(|s| !s.is_empty()).collect();
    if rel.iter().any(|s| *s == ".." || *s == ".") {
        return reply(StatusCode::BAD_REQUEST, &[], Vec::new());
    }
    let path = rel.iter().fold(site.root.clone(), |p, s| p.join(s));
    let Ok(meta) = fs::metadata(&path) else {
        return reply(StatusCode::NOT_FOUND, &[], b"not found".to_vec());
    };
    if meta.is_dir() {
        if !raw.ends_with('/') {
            let loc = ("Location", format!("{raw}/"));
            return reply(StatusCode::MOVED_PERMANENTLY, &[loc], Vec::new());
        }
        let page = if site.mode == Mode::Hostile && rel.is_empty() {
            HOSTILE_PAGE.to_string()
        } else {
            index_page(&path, &raw, style_of(site.mode))
        };
        let ct = ("Content-Type", "text/html; charset=utf-8".to_string());
        let body = if head { Vec::new() } else { page.into_bytes() };
        return reply(StatusCode::OK, &[ct], body);
    }
    let data = fs::read(&path).unwrap();
    let mtime = meta.modified().unwrap();
    let secs = mtime.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let mut headers = vec![
        ("Content-Type", "application/octet-stream".to_string()),
        ("Last-Modified", httpdate::fmt_http_date(mtime)),
        ("ETag", format!("\"{:x}-{:x}\"", data.len(), secs)),
        ("Accept-Ranges", "bytes".to_string()),
    ];
    if head {
        // hyper writes no Content-Length of its own for an empty HEAD body.
        headers.push(("Content-Length", data.len().to_string()));
        return reply(StatusCode::OK, &headers, Vec::new());
    }
    let range = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
        .filter(|_| site.ranges);
    match range {
        Some((start, _)) if start >= data.len() => {
            headers.push(("Content-Range", format!("bytes */{}", data.len())));
            reply(StatusCode::RANGE_NOT_SATISFIABLE, &headers, Vec::new())
        }
        Some((start, end)) => {
            let end = end.min(data.len() - 1);
            headers.push((
                "Content-Range",
                format!("bytes {start}-{end}/{}", data.len()),
            ));
            reply(
                StatusCode::PARTIAL_CONTENT,
                &headers,
                data[start..=end].to_vec(),
            )
        }
        None => reply(StatusCode::OK, &headers, data),
    }
}

fn style_of(mode: Mode) -> Style {
    match mode {
        Mode::Index(s) => s,
        _ => Style::Nginx,
    }
}

/// What nginx leaves unescaped in an href (it escapes ':' and '&').
const NGINX_HREF: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// What Apache leaves unescaped in an href: also '&' (escaped as HTML) and ':' (the
/// name then gets "./" so it does not read as a scheme).
const APACHE_HREF: &AsciiSet = &NGINX_HREF.remove(b'&').remove(b':').remove(b'@');

/// Apache writes "%c3%a9" where others write "%C3%A9".
fn lowercase_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut hex_left = 0;
    for c in s.chars() {
        if c == '%' {
            hex_left = 2;
            out.push(c);
        } else if hex_left > 0 {
            hex_left -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The index page of folder `dir` (served at `raw`, ending in '/') in `style`, in the
/// shape the real servers give it.
fn index_page(dir: &Path, raw: &str, style: Style) -> String {
    let mut entries: Vec<(String, bool, u64)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (e.file_name().into_string().unwrap(), m.is_dir(), m.len())
        })
        .collect();
    entries.sort();
    let title = percent_decode_str(raw).decode_utf8().unwrap().into_owned();
    let parent = {
        let t = raw.trim_end_matches('/');
        format!("{}/", &t[..t.rfind('/').unwrap_or(0)])
    };
    let mut out = String::new();
    match style {
        Style::ApacheTable | Style::ApacheList => {
            // Apache titles the directory without its trailing slash, and links the
            // parent by absolute path; names with ':' get "./" so they are not a scheme.
            let title = html_escape(title.trim_end_matches('/'));
            let title = if title.is_empty() { "/".into() } else { title };
            out += "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01//EN\" \"http://www.w3.org/TR/html4/strict.dtd\">\n<html>\n <head>\n";
            out += &format!(
                "  <title>Index of {title}</title>\n </head>\n <body>\n<h1>Index of {title}</h1>\n"
            );
            let href = |name: &str, is_dir: bool| {
                let enc = lowercase_escapes(&utf8_percent_encode(name, APACHE_HREF).to_string());
                let enc = if name.contains(':') {
                    format!("./{enc}")
                } else {
                    enc
                };
                html_escape(&format!("{enc}{}", if is_dir { "/" } else { "" }))
            };
            if style == Style::ApacheTable {
                out += "  <table>\n   <tr><th valign=\"top\"><img src=\"/icons/blank.gif\" alt=\"[ICO]\"></th><th><a href=\"?C=N;O=D\">Name</a></th><th><a href=\"?C=M;O=A\">Last modified</a></th><th><a href=\"?C=S;O=A\">Size</a></th><th><a href=\"?C=D;O=A\">Description</a></th></tr>\n   <tr><th colspan=\"5\"><hr></th></tr>\n";
                if raw != "/" {
                    out += &format!("<tr><td valign=\"top\"><img src=\"/icons/back.gif\" alt=\"[PARENTDIR]\"></td><td><a href=\"{parent}\">Parent Directory</a></td><td>&nbsp;</td><td align=\"right\">  - </td><td>&nbsp;</td></tr>\n");
                }
                for (name, is_dir, len) in &entries {
                    let (icon, alt, size) = if *is_dir {
                        ("folder", "[DIR]", "  - ".to_string())
                    } else {
                        // Apache rounds: "8.0M", "12K".
                        (
                            "unknown",
                            "[   ]",
                            format!("{:.1}M", *len as f64 / 1048576.0),
                        )
                    };
                    let shown = html_escape(name) + if *is_dir { "/" } else { "" };
                    out += &format!("<tr><td valign=\"top\"><img src=\"/icons/{icon}.gif\" alt=\"{alt}\"></td><td><a href=\"{}\">{shown}</a></td><td align=\"right\">2026-11-23 10:00  </td><td align=\"right\">{size}</td><td>&nbsp;</td></tr>\n", href(name, *is_dir));
                }
                out += "   <tr><th colspan=\"5\"><hr></th></tr>\n</table>\n";
            } else {
                out += "<ul>";
                if raw != "/" {
                    out += &format!("<li><a href=\"{parent}\"> Parent Directory</a></li>\n");
                }
                for (name, is_dir, _) in &entries {
                    let shown = html_escape(name) + if *is_dir { "/" } else { "" };
                    out += &format!(
                        "<li><a href=\"{}\"> {shown}</a></li>\n",
                        href(name, *is_dir)
                    );
                }
                out += "</ul>\n";
            }
            out += "<address>Apache/2.4.62 (Debian) Server at 127.0.0.1 Port 80</address>\n</body></html>\n";
        }
        Style::Nginx => {
            let title = html_escape(&title);
            out += &format!("<html>\r\n<head><title>Index of {title}</title></head>\r\n<body>\r\n<h1>Index of {title}</h1><hr><pre><a href=\"../\">../</a>\r\n");
            // Directories first, as nginx lists them; long names are cut in the text.
            let (dirs, files): (Vec<_>, Vec<_>) = entries.iter().partition(|e| e.1);
            for (name, is_dir, len) in dirs.into_iter().chain(files) {
                let slash = if *is_dir { "/" } else { "" };
                let href =
                    html_escape(&format!("{}{slash}", utf8_percent_encode(name, NGINX_HREF)));
                let mut shown: String = format!("{name}{slash}");
                if shown.chars().count() > 50 {
                    shown = shown.chars().take(47).collect::<String>() + "..>";
                }
                let pad = 51usize.saturating_sub(shown.chars().count());
                let size = if *is_dir {
                    "-".to_string()
                } else {
                    len.to_string()
                };
                out += &format!(
                    "<a href=\"{href}\">{}</a>{} 23-Nov-2026 10:00 {size:>19}\r\n",
                    html_escape(&shown),
                    " ".repeat(pad)
                );
            }
            out += "</pre><hr></body>\r\n</html>\r\n";
        }
    }
    out
}

/// Every kind of link a confused or hostile index page could carry, and one good one.
const HOSTILE_PAGE: &str = r##"<html><head><title>Index of /</title></head><body>
<h1>Index of /</h1><hr><pre><a href="../">../</a>
<a href="../../../../etc/passwd">passwd</a>
<a href="/etc/passwd">passwd (absolute)</a>
<a href="%2e%2e/%2e%2e/etc/">etc</a>
<a href="..%2Fescape.txt">escape</a>
<a href="a%2Fb.txt">a/b</a>
<a href="sub/../../up.txt">up</a>
<a href="deep/er.txt">deeper</a>
<a href="http://evil.example/steal.txt">other host</a>
<a href="//evil.example/steal2.txt">scheme-relative</a>
<a href="ok.txt?download=1">query</a>
<a href="?C=N;O=D">sort</a>
<a href="#top">anchor</a>
<a href="nul%00.txt">nul</a>
<a href="javascript:alert(1)">script</a>
<a href="ok.txt">ok.txt</a>
</pre><hr></body></html>
"##;

/// The names in a mounted folder, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn is_read_only_mount(mnt: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mnt = mnt.to_string_lossy();
    info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.len() > 5 && f[4] == mnt && f[5].split(',').any(|o| o == "ro")
    })
}

fn assert_erofs<T: std::fmt::Debug>(what: &str, r: std::io::Result<T>) {
    match r {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}"),
        Ok(v) => panic!("{what} succeeded on a read-only mount: {v:?}"),
    }
}

fn sample_tree(server: &WebServer) {
    server.put("hello.txt", b"hello, world\n");
    server.put("README Upper.TXT", b"upper\n");
    server.put("with space.txt", b"spaced\n");
    server.put("ünïcødé €.txt", b"unicode\n");
    server.put("100% & more.txt", b"percent\n");
    server.put("time: 10:00.txt", b"colon\n");
    server.put("sub dir/inner.txt", b"inner\n");
    server.put("sub dir/deeper/leaf.bin", &pattern(3000, 7));
    fs::create_dir_all(server.root.join("empty dir")).unwrap();
}

#[test]
fn listing_matches_in_every_index_style() {
    for style in [Style::ApacheTable, Style::ApacheList, Style::Nginx] {
        let server = WebServer::start(Mode::Index(style));
        sample_tree(&server);
        let base = tempfile::tempdir().unwrap();
        let m = Mount::start(&server.url(), base.path(), &["--http"]);
        assert!(is_read_only_mount(&m.mnt), "{style:?}: not mounted ro");
        assert_eq!(
            listing(&m.mnt),
            vec![
                "100% & more.txt",
                "README Upper.TXT",
                "empty dir",
                "hello.txt",
                "sub dir",
                "time: 10:00.txt",
                "with space.txt",
                "ünïcødé €.txt",
            ],
            "{style:?}"
        );
        assert_eq!(listing(&m.path("sub dir")), vec!["deeper", "inner.txt"]);
        assert_eq!(listing(&m.path("sub dir/deeper")), vec!["leaf.bin"]);
        assert!(listing(&m.path("empty dir")).is_empty());
        assert!(m.path("sub dir").is_dir());
        // Sizes are exact (from HEAD), not the index page's rounded ones.
        let leaf = fs::metadata(m.path("sub dir/deeper/leaf.bin")).unwrap();
        assert_eq!(leaf.len(), 3000, "{style:?}");
        assert_eq!(
            fs::read(m.path("sub dir/deeper/leaf.bin")).unwrap(),
            pattern(3000, 7)
        );
        for (name, want) in [
            ("hello.txt", &b"hello, world\n"[..]),
            ("with space.txt", b"spaced\n"),
            ("ünïcødé €.txt", b"unicode\n"),
            ("100% & more.txt", b"percent\n"),
            ("time: 10:00.txt", b"colon\n"),
            ("README Upper.TXT", b"upper\n"),
        ] {
            assert_eq!(fs::read(m.path(name)).unwrap(), want, "{style:?} {name}");
        }
        // The mtime is the server's Last-Modified.
        let server_mtime = fs::metadata(server.root.join("hello.txt"))
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mounted_mtime = fs::metadata(m.path("hello.txt"))
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(mounted_mtime, server_mtime, "{style:?}");
    }
}

#[test]
fn large_file_is_read_by_ranges_and_then_from_the_cache() {
    let server = WebServer::start(Mode::Index(Style::Nginx));
    let data = pattern(12 << 20, 3);
    server.put("big.bin", &data);
    let base = tempfile::tempdir().unwrap();
    let mut m = Mount::start(&server.url(), base.path(), &["--http"]);
    assert_eq!(sha256(&fs::read(m.path("big.bin")).unwrap()), sha256(&data));
    let gets = server.count("GET", "/big.bin");
    assert!(gets >= 1, "the file was not fetched from the server");
    // A 12 MiB file in one request would mean the ranges were ignored.
    assert!(gets > 1, "expected ranged GETs, got {gets} GET(s)");

    // Second read: from the cache, not the server.
    assert_eq!(sha256(&fs::read(m.path("big.bin")).unwrap()), sha256(&data));
    assert_eq!(server.count("GET", "/big.bin"), gets);

    // Across a remount too (the kernel's page cache is gone then): the disk cache.
    m.remount();
    assert_eq!(sha256(&fs::read(m.path("big.bin")).unwrap()), sha256(&data));
    assert_eq!(
        server.count("GET", "/big.bin"),
        gets,
        "the second mount fetched the cached file again"
    );
    // Sizes came from HEAD, once per listing at least.
    assert!(server.count("HEAD", "/big.bin") >= 1);
}

#[test]
fn server_ignoring_ranges_still_reads_right() {
    use std::io::{Read, Seek, SeekFrom};
    let server = WebServer::start_with(
        Mode::Index(Style::Nginx),
        false,
        Some(StatusCode::METHOD_NOT_ALLOWED),
    );
    let data = pattern(9 << 20, 5);
    server.put("whole.bin", &data);
    let base = tempfile::tempdir().unwrap();
    let m = Mount::start(&server.url(), base.path(), &["--http"]);
    // A read in the middle first: the 200 reply must be cut at the right offset.
    let mut f = fs::File::open(m.path("whole.bin")).unwrap();
    let at = (6 << 20) + 12345;
    f.seek(SeekFrom::Start(at as u64)).unwrap();
    let mut buf = vec![0u8; 100_000];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(buf, &data[at..at + buf.len()]);
    drop(f);
    assert_eq!(
        sha256(&fs::read(m.path("whole.bin")).unwrap()),
        sha256(&data)
    );
}

#[test]
fn writes_fail_with_erofs_and_queue_nothing() {
    let server = WebServer::start(Mode::Index(Style::ApacheTable));
    sample_tree(&server);
    let base = tempfile::tempdir().unwrap();
    let m = Mount::start(&server.url(), base.path(), &["--http"]);
    assert_eq!(fs::read(m.path("hello.txt")).unwrap(), b"hello, world\n");

    assert_erofs("create", fs::File::create(m.path("new.txt")));
    assert_erofs(
        "open for writing",
        fs::OpenOptions::new().write(true).open(m.path("hello.txt")),
    );
    assert_erofs(
        "open for appending",
        fs::OpenOptions::new()
            .append(true)
            .open(m.path("hello.txt")),
    );
    assert_erofs("write", fs::write(m.path("hello.txt"), b"changed"));
    assert_erofs("mkdir", fs::create_dir(m.path("newdir")));
    assert_erofs("rm", fs::remove_file(m.path("hello.txt")));
    assert_erofs("rmdir", fs::remove_dir(m.path("empty dir")));
    assert_erofs(
        "rename",
        fs::rename(m.path("hello.txt"), m.path("renamed.txt")),
    );
    let c =
        std::ffi::CString::new(m.path("hello.txt").into_os_string().into_encoded_bytes()).unwrap();
    let truncated = unsafe { libc::truncate(c.as_ptr(), 0) };
    assert_erofs(
        "truncate",
        if truncated == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        },
    );
    use std::os::unix::fs::PermissionsExt;
    assert_erofs(
        "chmod",
        fs::set_permissions(m.path("hello.txt"), fs::Permissions::from_mode(0o600)),
    );

    // Nothing changed, on either side, and nothing waits to be sent.
    assert_eq!(fs::read(m.path("hello.txt")).unwrap(), b"hello, world\n");
    assert_eq!(
        fs::read(server.root.join("hello.txt")).unwrap(),
        b"hello, world\n"
    );
    assert!(!m.path("new.txt").exists() && !m.path("newdir").exists());
    let db = rusqlite::Connection::open(m.cache.join("state.db")).unwrap();
    let queued: i64 = db
        .query_row("SELECT COUNT(*) FROM journal", [], |r| r.get(0))
        .unwrap();
    assert_eq!(queued, 0, "a read-only mount queued changes");
    // Only reads reached the server.
    let methods: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.split(' ').next().unwrap().to_string())
        .filter(|m| m != "GET" && m != "HEAD")
        .collect();
    assert!(methods.is_empty(), "non-read requests: {methods:?}");
}

#[test]
fn hostile_index_yields_no_escaping_entries() {
    let server = WebServer::start(Mode::Hostile);
    server.put("ok.txt", b"fine\n");
    let base = tempfile::tempdir().unwrap();
    let m = Mount::start(&server.url(), base.path(), &["--http"]);
    assert_eq!(listing(&m.mnt), vec!["ok.txt"]);
    assert_eq!(fs::read(m.path("ok.txt")).unwrap(), b"fine\n");
    // None of the hostile targets was even asked for.
    for r in server.requests() {
        let path = r.split_once(' ').unwrap().1;
        assert!(
            path == "/" || path == "/ok.txt",
            "davdrive requested {r} from a hostile index"
        );
    }
}

#[test]
fn server_without_webdav_is_mounted_read_only_automatically() {
    // nginx answers PROPFIND 405, many servers 501, some serve the page as for a GET.
    for propfind in [
        Some(StatusCode::METHOD_NOT_ALLOWED),
        Some(StatusCode::NOT_IMPLEMENTED),
        None,
    ] {
        let server = WebServer::start_with(Mode::Index(Style::ApacheList), true, propfind);
        sample_tree(&server);
        let base = tempfile::tempdir().unwrap();
        let mounted = std::time::SystemTime::now();
        let m = Mount::start(&server.url(), base.path(), &[]);
        assert!(
            server.count("PROPFIND", "/") >= 1,
            "WebDAV was not tried first"
        );
        assert!(is_read_only_mount(&m.mnt), "{propfind:?}");
        wait_until(10, "the fallback logged", || {
            m.log_text().contains("does not speak WebDAV")
        });
        let log = m.log_text();
        let said: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("does not speak WebDAV"))
            .collect();
        assert_eq!(said.len(), 1, "{propfind:?}, log:\n{log}");
        assert!(said[0].contains("read-only"), "{}", said[0]);
        assert_eq!(listing(&m.path("sub dir")), vec!["deeper", "inner.txt"]);
        assert_eq!(fs::read(m.path("with space.txt")).unwrap(), b"spaced\n");
        assert_erofs("create", fs::File::create(m.path("new.txt")));
        assert_erofs("mkdir", fs::create_dir(m.path("d")));

        // The health probe (every second here) keeps finding it online.
        let since = mounted.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        wait_until(10, "a health check after the mount", || {
            status(&m)["last_check"].as_i64().unwrap_or(0) > since + 1
        });
        let st = status(&m);
        assert_eq!(st["online"], true, "{st}");
        assert!(st["last_error"].is_null(), "{st}");
        // Read-only, and why, in the status too.
        assert_eq!(st["read_only"], true, "{st}");
        assert!(
            st["read_only_reason"]
                .as_str()
                .is_some_and(|r| r.contains("plain HTTP")),
            "{st}"
        );
    }
}

/// `davdrive ctl --json status` of a mount.
fn status(m: &Mount) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["ctl", "--json", "--mount"])
        .arg(&m.mnt)
        .arg("status")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["result"].clone()
}

/// Runs `davdrive mount` in the foreground on a server it cannot mount; returns its
/// error line and the whole stderr.
fn failed_mount(url: &str, extra: &[&str]) -> (String, String) {
    require_fuse();
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let started = Instant::now();
    let out = Command::new(BIN)
        .arg("mount")
        .arg(url)
        .arg(&mnt)
        .arg("--cache-dir")
        .arg(base.path().join("cache"))
        .args(["--user", "alice", "--request-timeout", "5s"])
        .args(extra)
        .env("DAVDRIVE_PASSWORD", "s3cret-pw")
        .env("DAVDRIVE_LOG", "davdrive=debug,info")
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(!out.status.success(), "mount succeeded on {url}");
    assert!(!is_mounted(&mnt));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("s3cret-pw"),
        "password in the output:\n{stderr}"
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("davdrive: "))
        .collect();
    assert_eq!(errors.len(), 1, "stderr:\n{stderr}");
    (errors[0].to_string(), stderr)
}

#[test]
fn neither_webdav_nor_index_fails_the_mount_with_one_line() {
    let nothing = WebServer::start(Mode::NotFound);
    let (line, _) = failed_mount(&nothing.url(), &[]);
    assert!(line.contains(&nothing.url()), "{line}");
    assert!(
        line.contains("does not look like a WebDAV collection"),
        "{line}"
    );

    let (line, _) = failed_mount(&nothing.url(), &["--http"]);
    assert!(line.contains("is not an HTML directory index"), "{line}");
    assert!(line.contains("not found"), "{line}");

    // PROPFIND refused, but the root is no index page either.
    let text = WebServer::start(Mode::PlainText);
    let (line, _) = failed_mount(&text.url(), &[]);
    assert!(line.contains("405"), "{line}");
    assert!(line.contains("not an HTML index page"), "{line}");
}
