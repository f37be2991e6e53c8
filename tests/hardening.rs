//! Hostile servers and other local users: a cache dir that is not ours, links planted
//! in the cache, listings with duplicate names, sizes that lie, replies too large, a
//! server that stops answering, and names made to drive a terminal.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::drive::Drive;
use davdrive::cache::CacheLimits;
use davdrive::clock::Clock;
use davdrive::daemon::{Daemon, DaemonConfig};
use davdrive::fs::{Core, CoreConfig};
use davdrive::health::Health;
use davdrive::remote::webdav::{WebDav, WebDavConfig};
use davdrive::remote::{Remote, RemoteError};
use davdrive::store::ROOT_INO;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

const NOBODY: u32 = 65534;

// ----- the cache dir is ours or refused ---------------------------------------------

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::chown(p, Some(uid), None).unwrap();
}

/// `davdrive mount` with this cache dir: its exit status and stderr. The check comes
/// before any request, so no server is needed.
fn mount_with_cache(cache: &Path, mnt: &Path) -> (bool, String) {
    let out = std::process::Command::new(common::BIN)
        .arg("mount")
        .arg("http://127.0.0.1:9/dav/")
        .arg(mnt)
        .arg("--cache-dir")
        .arg(cache)
        .env("DAVDRIVE_PASSWORD", "x")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_cache_dir_owned_by_another_user_is_refused() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "runs as root, to chown");
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let cache = tmp.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
    chown(&cache, NOBODY);

    let err = davdrive::cache::secure_cache_dir(&cache).unwrap_err();
    assert!(err.contains("owned by uid 65534"), "{err}");
    let (ok, stderr) = mount_with_cache(&cache, &mnt);
    assert!(!ok);
    assert!(stderr.contains("owned by uid 65534"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    // Nothing was made or used in it: no state store, no lock, and its mode untouched.
    assert!(!cache.join("state.db").exists());
    assert!(!cache.join("lock").exists());
    let m = std::fs::metadata(&cache).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (NOBODY, 0o700));

    // A dir of ours holding a file another user owns (a state store they planted).
    let ours = tmp.path().join("ours");
    std::fs::create_dir(&ours).unwrap();
    std::fs::write(ours.join("state.db"), b"").unwrap();
    chown(&ours.join("state.db"), NOBODY);
    let err = davdrive::cache::secure_cache_dir(&ours).unwrap_err();
    assert!(err.contains("state.db is owned by uid 65534"), "{err}");

    // A folder above it that another user owns: they could move ours away.
    let theirs = tmp.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    chown(&theirs, NOBODY);
    let err = davdrive::cache::secure_cache_dir(&theirs.join("cache")).unwrap_err();
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert!(!theirs.join("cache").exists(), "not created inside");
}

#[test]
fn a_group_or_world_writable_cache_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    for (mode, who) in [(0o770, "its group"), (0o707, "everyone")] {
        let cache = tmp.path().join(format!("cache-{mode:o}"));
        std::fs::create_dir(&cache).unwrap();
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(mode)).unwrap();
        let (ok, stderr) = mount_with_cache(&cache, &mnt);
        assert!(!ok);
        assert!(
            stderr.contains(&format!("writable by {who}")) && stderr.contains("chmod 700"),
            "{stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(!cache.join("state.db").exists());
    }
    // A folder above it writable by others, without the sticky bit of /tmp.
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = davdrive::cache::secure_cache_dir(&open.join("cache")).unwrap_err();
    assert!(err.contains("writable by everyone"), "{err}");
    // With the sticky bit, as /tmp, others cannot move what is ours: accepted.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    davdrive::cache::secure_cache_dir(&open.join("cache")).unwrap();
    // A link at the top of the cache dir is refused, not followed.
    let linked = tmp.path().join("linked");
    std::fs::create_dir(&linked).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", linked.join("state.db")).unwrap();
    let err = davdrive::cache::secure_cache_dir(&linked).unwrap_err();
    assert!(err.contains("symbolic link"), "{err}");
}

/// The folder of the pid file and the control socket's link, in /tmp when there is no
/// XDG_RUNTIME_DIR, is used only when it is ours: another user who made it first could
/// plant links there for root to write through.
#[test]
fn a_runtime_folder_another_user_made_first_is_not_used() {
    let tmp = tempfile::tempdir().unwrap();
    let theirs = tmp.path().join("davdrive-0");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o777)).unwrap();
    chown(&theirs, NOBODY);
    let err = davdrive::cache::private_dir(&theirs.join("davdrive")).unwrap_err();
    assert!(err.contains("not a private folder"), "{err}");
    // A link in place of the folder.
    let linked = tmp.path().join("davdrive-1");
    std::fs::create_dir(&linked).unwrap();
    std::os::unix::fs::symlink(tmp.path(), linked.join("davdrive")).unwrap();
    let err = davdrive::cache::private_dir(&linked.join("davdrive")).unwrap_err();
    assert!(err.contains("a link"), "{err}");
    // Ours: made 0700 and accepted.
    let ours = tmp.path().join("davdrive-2").join("davdrive");
    davdrive::cache::private_dir(&ours).unwrap();
    assert_eq!(std::fs::metadata(&ours).unwrap().mode() & 0o777, 0o700);
}

/// Every file under the cache dir is 0600 and every folder 0700, including a state store
/// an older version left 0644.
#[test]
fn everything_in_the_cache_dir_is_private() {
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("stray.log"), b"old").unwrap();
    std::fs::set_permissions(
        state.path().join("stray.log"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut d = Drive::with_state(CacheLimits::default(), state);
    std::fs::write(d.server.path("f.txt"), b"hello").unwrap();
    assert_eq!(d.read("f.txt"), b"hello");
    d.write_new("new.txt", b"written").unwrap();
    d.wait_drained();
    d.stop();
    // An older version's state store, readable by all.
    let db = d.state.path().join("state.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    d.start();
    assert_eq!(d.read("f.txt"), b"hello");
    let mut seen = 0;
    for e in walkdir::WalkDir::new(d.state.path()) {
        let e = e.unwrap();
        let m = e.path().symlink_metadata().unwrap();
        let want = if m.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(
            m.mode() & 0o777,
            want,
            "{} is {:o}",
            e.path().display(),
            m.mode() & 0o777
        );
        seen += 1;
    }
    assert!(seen > 5, "walked {seen}");
    assert!(d.state.path().join("state.db-wal").exists());
}

/// Links planted at the predictable content paths are never followed: what they point
/// at stays as it was, and the drive reads and writes right.
#[test]
fn a_link_planted_in_the_content_folder_is_never_followed() {
    let d = Drive::new(CacheLimits::default());
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("precious");
    std::fs::write(&target, b"root's own file, not to be touched").unwrap();
    let target_dir = outside.path().join("dir");
    std::fs::create_dir(&target_dir).unwrap();

    let data = common::pattern(300_000, 7);
    std::fs::write(d.server.path("a.bin"), &data).unwrap();
    std::fs::write(d.server.path("b.bin"), &data).unwrap();
    let a = d.ino("a.bin");
    let b = d.ino("b.bin");
    assert_ne!(a & 0xff, b & 0xff, "in two folders of content/");
    // A link at the file's own name, and a link in place of the other's folder.
    let pa = d.core().content().path(a);
    std::fs::create_dir_all(pa.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&target, &pa).unwrap();
    let pb = d.core().content().path(b);
    let _ = std::fs::remove_dir_all(pb.parent().unwrap());
    std::os::unix::fs::symlink(&target_dir, pb.parent().unwrap()).unwrap();

    assert_eq!(d.read("a.bin"), data);
    assert_eq!(d.read("b.bin"), data);
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"root's own file, not to be touched"
    );
    assert_eq!(std::fs::read_dir(&target_dir).unwrap().count(), 0);
    assert!(!pa.symlink_metadata().unwrap().file_type().is_symlink());
    assert!(pb.parent().unwrap().symlink_metadata().unwrap().is_dir());

    // A hard link to a file of someone else, planted for a file about to be written:
    // replaced, not written through.
    d.write_new("c.txt", b"first").unwrap();
    d.wait_drained();
    let c = d.ino("c.txt");
    d.core().evict(c).unwrap();
    let pc = d.core().content().path(c);
    assert!(!pc.exists());
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"victim").unwrap();
    chown(&victim, NOBODY);
    std::fs::hard_link(&victim, &pc).unwrap();
    let (fh, _) = d.core().open(c, true).unwrap();
    d.core().write(fh, 0, b"second").unwrap();
    d.core().flush(fh).unwrap();
    d.core().release(fh).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"victim");
    d.wait_drained();
    common::wait_server_has(&d.server, "c.txt", b"second");
}

// ----- a hostile server ----------------------------------------------------------------

type Body = BoxBody<Bytes, std::io::Error>;

fn full(status: u16, headers: &[(&str, String)], body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.body(Full::new(body.into()).map_err(|e| match e {}).boxed())
        .unwrap()
}

/// One `<response>` of a listing of the mount root (`/base/`).
fn response(name: &str, dir: bool, length: &str, etag: &str) -> String {
    let (href, kind) = if dir {
        (format!("/base/{name}/"), "<D:collection/>")
    } else {
        (format!("/base/{name}"), "")
    };
    let len = if dir {
        String::new()
    } else {
        format!("<D:getcontentlength>{length}</D:getcontentlength>")
    };
    format!(
        "<D:response><D:href>{href}</D:href><D:propstat><D:prop>\
         <D:resourcetype>{kind}</D:resourcetype>{len}<D:getetag>\"{etag}\"</D:getetag>\
         <D:getlastmodified>Sun, 06 Nov 1994 08:49:37 GMT</D:getlastmodified>\
         </D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
    )
}

fn multistatus(responses: &[String]) -> String {
    let mut s = String::from(r#"<?xml version="1.0"?><D:multistatus xmlns:D="DAV:">"#);
    s += &response("", true, "", "root").replace("/base//", "/base/");
    for r in responses {
        s += r;
    }
    s + "</D:multistatus>"
}

#[derive(Default)]
struct Hostile {
    /// The Depth 1 listing of the root.
    listing: String,
    /// Instead of `listing`: a listing this many bytes long, streamed.
    huge_listing: Option<u64>,
    /// What GET serves, by name (Range honoured, Content-Range with the true size).
    files: HashMap<String, Vec<u8>>,
    /// Names whose HEAD is refused (405), so their size comes from a ranged GET.
    no_head: Vec<String>,
    /// Take a PUT's body, then never answer.
    stall_put: bool,
    /// Serve GETs one byte every this long.
    trickle: Option<Duration>,
}

struct HostileServer {
    rt: tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    state: Arc<Mutex<Hostile>>,
    /// Body bytes the server produced for listings.
    listing_bytes: Arc<AtomicU64>,
}

impl HostileServer {
    fn start() -> HostileServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(Mutex::new(Hostile::default()));
        let listing_bytes = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (st, lb, rq) = (state.clone(), listing_bytes.clone(), requests.clone());
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (st, lb, rq) = (st.clone(), lb.clone(), rq.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let (st, lb, rq) = (st.clone(), lb.clone(), rq.clone());
                        async move { Ok::<_, Infallible>(serve(req, st, lb, rq).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        HostileServer {
            rt,
            addr,
            state,
            listing_bytes,
        }
    }

    fn config(&self) -> WebDavConfig {
        let mut cfg =
            WebDavConfig::new(url::Url::parse(&format!("http://{}/base/", self.addr)).unwrap());
        cfg.retries = 0;
        cfg.request_timeout = Duration::from_secs(60);
        cfg.idle_timeout = Duration::from_secs(2);
        cfg
    }

    fn set(&self, f: impl FnOnce(&mut Hostile)) {
        f(&mut self.state.lock().unwrap());
    }

    /// A core over this server, its state in `state`.
    fn core(&self, state: &Path, cfg: WebDavConfig) -> Arc<Core> {
        let _guard = self.rt.enter();
        let remote: Arc<dyn Remote> = Arc::new(WebDav::new(cfg).unwrap());
        Core::load(
            state,
            remote,
            self.rt.handle().clone(),
            Health::new(true),
            CoreConfig {
                dir_ttl: Duration::ZERO,
                attr_ttl: Duration::ZERO,
                refresh_wait: Duration::from_secs(10),
                ..CoreConfig::default()
            },
        )
        .unwrap()
    }
}

async fn serve(
    req: Request<hyper::body::Incoming>,
    st: Arc<Mutex<Hostile>>,
    listing_bytes: Arc<AtomicU64>,
    requests: Arc<Mutex<Vec<String>>>,
) -> Response<Body> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    requests.lock().unwrap().push(format!("{method} {path}"));
    let name = path.trim_start_matches("/base/").to_string();
    let range = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let xml = || vec![("content-type", "application/xml".to_string())];
    match method.as_str() {
        "PROPFIND" => {
            let depth = req.headers().get("depth").map(|v| v.as_bytes().to_vec());
            if depth.as_deref() == Some(b"0") {
                return full(207, &xml(), multistatus(&[]));
            }
            let (huge, listing) = {
                let s = st.lock().unwrap();
                (s.huge_listing, s.listing.clone())
            };
            match huge {
                None => {
                    listing_bytes.fetch_add(listing.len() as u64, Ordering::Relaxed);
                    full(207, &xml(), listing)
                }
                Some(total) => {
                    // A listing of `total` bytes, made as it is sent: it stops being made
                    // once the client stops reading.
                    let head =
                        Bytes::from(r#"<?xml version="1.0"?><D:multistatus xmlns:D="DAV:">"#);
                    let mut i = 0u64;
                    let stream =
                        futures_util::stream::unfold((0u64, Some(head)), move |(sent, first)| {
                            let lb = listing_bytes.clone();
                            async move {
                                if sent >= total {
                                    return None;
                                }
                                let chunk = match first {
                                    Some(h) => h,
                                    None => {
                                        let mut s = String::new();
                                        while s.len() < 64 << 10 {
                                            i += 1;
                                            s += &response(&format!("f{i}"), false, "1", "e");
                                        }
                                        Bytes::from(s)
                                    }
                                };
                                lb.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                                let n = chunk.len() as u64;
                                Some((Ok(Frame::data(chunk)), (sent + n, None)))
                            }
                        });
                    Response::builder()
                        .status(207)
                        .header("content-type", "application/xml")
                        .body(StreamBody::new(stream).boxed())
                        .unwrap()
                }
            }
        }
        "HEAD" => {
            let s = st.lock().unwrap();
            if s.no_head.contains(&name) {
                return full(405, &[], "");
            }
            match s.files.get(&name) {
                Some(d) => {
                    let mut r = full(200, &[], "");
                    r.headers_mut()
                        .insert("content-length", d.len().to_string().parse().unwrap());
                    r
                }
                None => full(404, &[], ""),
            }
        }
        "GET" => {
            let (data, trickle) = {
                let s = st.lock().unwrap();
                (s.files.get(&name).cloned(), s.trickle)
            };
            let Some(data) = data else {
                return full(404, &[], "");
            };
            if let Some(every) = trickle {
                let stream = futures_util::stream::unfold(0usize, move |i| {
                    let data = data.clone();
                    async move {
                        if i >= data.len() {
                            return None;
                        }
                        tokio::time::sleep(every).await;
                        Some((
                            Ok(Frame::data(Bytes::copy_from_slice(&data[i..i + 1]))),
                            i + 1,
                        ))
                    }
                });
                return Response::builder()
                    .status(200)
                    .body(StreamBody::new(stream).boxed())
                    .unwrap();
            }
            let total = data.len() as u64;
            let Some((a, b)) = range.as_deref().and_then(|r| {
                let r = r.strip_prefix("bytes=")?;
                let (a, b) = r.split_once('-')?;
                Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
            }) else {
                return full(200, &[], data);
            };
            if a >= total {
                return full(416, &[("content-range", format!("bytes */{total}"))], "");
            }
            let b = b.min(total - 1);
            full(
                206,
                &[("content-range", format!("bytes {a}-{b}/{total}"))],
                data[a as usize..=b as usize].to_vec(),
            )
        }
        "PUT" => {
            let stall = st.lock().unwrap().stall_put;
            // Take the whole body, as a server does.
            let _ = req.into_body().collect().await;
            if stall {
                std::future::pending::<()>().await;
            }
            full(201, &[("etag", "\"put\"".to_string())], "")
        }
        _ => full(405, &[], ""),
    }
}

fn read_all(core: &Core, ino: u64) -> Result<Vec<u8>, i32> {
    let (fh, _) = core.open(ino, false).map_err(|e| e.errno())?;
    let mut out = Vec::new();
    let result = loop {
        match core.read(fh, out.len() as u64, 128 << 10) {
            Ok(c) if c.is_empty() => break Ok(out),
            Ok(c) => out.extend_from_slice(&c),
            Err(e) => break Err(e.errno()),
        }
    };
    core.release(fh).unwrap();
    result
}

fn names(core: &Core) -> Vec<String> {
    let fh = core.opendir(ROOT_INO).unwrap();
    let mut v: Vec<String> = core
        .readdir(fh)
        .unwrap()
        .iter()
        .map(|e| e.name.clone())
        .filter(|n| n != "." && n != "..")
        .collect();
    core.releasedir(fh);
    v.sort();
    v
}

#[test]
fn duplicate_names_keep_one_and_the_rest_of_the_listing_applies() {
    let srv = HostileServer::start();
    srv.set(|h| {
        h.listing = multistatus(&[
            response("dup", false, "3", "f"),
            response("dup", true, "", "d"),
            response("twice.txt", false, "2", "a"),
            response("twice.txt", false, "4", "b"),
            response("x.txt", false, "5", "x"),
        ]);
        h.files.insert("twice.txt".into(), b"ab".to_vec());
    });
    // The remote layer: one entry per name, by the documented rule.
    let dav = WebDav::new(srv.config()).unwrap();
    let mut list = srv.rt.block_on(dav.list("/")).unwrap();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    let got: Vec<(&str, bool, u64)> = list
        .iter()
        .map(|e| (e.name.as_str(), e.is_dir, e.size))
        .collect();
    assert_eq!(
        got,
        [
            ("dup", true, 0),
            ("twice.txt", false, 2),
            ("x.txt", false, 5)
        ]
    );

    // Through the core: the listing applies, and a later one too.
    let state = tempfile::tempdir().unwrap();
    let core = srv.core(state.path(), srv.config());
    assert_eq!(names(&core), ["dup", "twice.txt", "x.txt"]);
    assert!(core.lookup(ROOT_INO, "dup").unwrap().kind == davdrive::store::Kind::Dir);
    assert_eq!(
        read_all(&core, core.lookup(ROOT_INO, "twice.txt").unwrap().ino),
        Ok(b"ab".to_vec())
    );
    srv.set(|h| {
        h.listing = multistatus(&[
            response("dup", true, "", "d"),
            response("dup", false, "3", "f"),
            response("twice.txt", false, "2", "a"),
            response("x.txt", false, "5", "x"),
            response("new.txt", false, "1", "n"),
        ])
    });
    assert_eq!(names(&core), ["dup", "new.txt", "twice.txt", "x.txt"]);
}

#[test]
fn sizes_that_are_not_sizes_are_learned_from_the_server() {
    let srv = HostileServer::start();
    let neg = common::pattern(5000, 1);
    let nan = common::pattern(70_000, 2);
    let huge = common::pattern(10, 3);
    srv.set(|h| {
        h.listing = multistatus(&[
            response("neg", false, "-5", "n"),
            response("nan", false, "twelve", "a"),
            response("huge", false, "99999999999999999999", "h"),
            response("frac", false, "1.5", "f"),
            response("ok", false, "3", "o"),
        ]);
        h.files.insert("neg".into(), neg.clone());
        h.files.insert("nan".into(), nan.clone());
        h.files.insert("huge".into(), huge.clone());
        h.files.insert("ok".into(), b"abc".to_vec());
        // "frac" is listed but the server will not say anything about it.
        h.no_head.push("nan".into());
    });
    let dav = WebDav::new(srv.config()).unwrap();
    let list = srv.rt.block_on(dav.list("/")).unwrap();
    let size = |n: &str| list.iter().find(|e| e.name == n).map(|e| e.size);
    assert_eq!(size("neg"), Some(5000), "from HEAD");
    assert_eq!(size("nan"), Some(70_000), "from a ranged GET");
    assert_eq!(size("huge"), Some(10));
    assert_eq!(size("ok"), Some(3));
    assert_eq!(size("frac"), None, "left out: no size to be had");

    let state = tempfile::tempdir().unwrap();
    let core = srv.core(state.path(), srv.config());
    let ino = |n: &str| core.lookup(ROOT_INO, n).unwrap().ino;
    assert_eq!(read_all(&core, ino("neg")), Ok(neg));
    assert_eq!(read_all(&core, ino("nan")), Ok(nan));
    assert_eq!(read_all(&core, ino("huge")), Ok(huge));
}

#[test]
fn a_body_longer_or_shorter_than_listed_is_a_changed_file() {
    let srv = HostileServer::start();
    let long = common::pattern(20, 4);
    let short = common::pattern(20, 5);
    srv.set(|h| {
        h.listing = multistatus(&[
            response("long", false, "10", "v1"),
            response("short", false, "30", "v1"),
        ]);
        h.files.insert("long".into(), long.clone());
        h.files.insert("short".into(), short.clone());
    });
    let state = tempfile::tempdir().unwrap();
    let core = srv.core(state.path(), srv.config());
    let long_ino = core.lookup(ROOT_INO, "long").unwrap().ino;
    let short_ino = core.lookup(ROOT_INO, "short").unwrap().ino;
    // Never cut to the listed size, never padded: the read fails.
    assert_eq!(read_all(&core, long_ino), Err(libc::EIO));
    assert_eq!(read_all(&core, short_ino), Err(libc::EIO));
    let node = |ino| {
        core.db()
            .write(|tx| davdrive::store::get_node(tx, ino))
            .unwrap()
            .unwrap()
    };
    assert_eq!(node(long_ino).cached_bytes, 0, "nothing of it kept");

    // The server lists the versions it serves: the folder is listed again and both
    // read whole.
    srv.set(|h| {
        h.listing = multistatus(&[
            response("long", false, "20", "v2"),
            response("short", false, "20", "v2"),
        ])
    });
    assert_eq!(read_all(&core, long_ino), Ok(long));
    assert_eq!(read_all(&core, short_ino), Ok(short));
}

#[test]
fn a_listing_over_the_cap_is_refused_and_the_old_one_kept() {
    let srv = HostileServer::start();
    srv.set(|h| h.listing = multistatus(&[response("keep.txt", false, "1", "k")]));
    let mut cfg = srv.config();
    cfg.max_listing_bytes = 256 << 10;
    let state = tempfile::tempdir().unwrap();
    let core = srv.core(state.path(), cfg.clone());
    assert_eq!(names(&core), ["keep.txt"]);

    // 200 MB of listing, made as it is read.
    srv.set(|h| h.huge_listing = Some(200 << 20));
    let before = srv.listing_bytes.load(Ordering::Relaxed);
    let dav = WebDav::new(cfg).unwrap();
    match srv.rt.block_on(dav.list("/")) {
        Err(RemoteError::BadReply(m)) => assert!(m.contains("cap"), "{m}"),
        other => panic!("{other:?}"),
    }
    // The old listing stays, and a name of the refused one is not there.
    assert_eq!(names(&core), ["keep.txt"]);
    assert!(core.lookup(ROOT_INO, "f1").is_err());
    // Read no further than the cap and what was in flight: never the whole.
    let sent = srv.listing_bytes.load(Ordering::Relaxed) - before;
    assert!(sent < 40 << 20, "the server made {sent} bytes of listing");
}

#[test]
fn a_request_that_stops_moving_is_cut_within_the_deadline() {
    let srv = HostileServer::start();
    srv.set(|h| {
        h.stall_put = true;
        h.files.insert("slow".into(), vec![b'x'; 100]);
        h.trickle = Some(Duration::from_millis(2500));
    });
    let dav = WebDav::new(srv.config()).unwrap();
    let local = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(local.path(), vec![7u8; 8 << 20]).unwrap();

    // A part upload the server takes and never answers: cut after 2 s without progress,
    // not after the 60 s request timeout (nor the 188 s an 8 MiB transfer is allowed).
    let started = Instant::now();
    let err = srv
        .rt
        .block_on(dav.put_range("/part", local.path(), 0, 8 << 20, None))
        .unwrap_err();
    assert!(err.is_transport() && err.is_retryable(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let err = srv
        .rt
        .block_on(dav.put(
            "/whole",
            local.path(),
            8 << 20,
            davdrive::remote::Precondition::None,
            None,
            None,
        ))
        .unwrap_err();
    assert!(err.is_transport(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    // A body trickled a byte every 2.5 s: moving, but slower than the floor.
    let started = Instant::now();
    let err = srv.rt.block_on(dav.get_range("/slow", 0, 100)).unwrap_err();
    assert!(err.is_transport(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

// ----- names made to drive a terminal ----------------------------------------------------

#[test]
fn ctl_output_shows_control_characters_escaped() {
    let server = common::Server::start();
    let evil = "evil\n\x1b[31mred\u{202e}txt";
    std::fs::write(server.path(evil), b"x").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut m = common::Mount::start(&server.url(), tmp.path(), &[]);
    let listed: Vec<_> = std::fs::read_dir(m.path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(listed.iter().any(|n| n == evil), "{listed:?}");

    let raw = |out: &str| out.contains('\x1b') || out.contains('\u{202e}');
    let root = m.mnt.to_str().unwrap().to_string();
    let (ok, out, err) = common::ctl(&m, &["ls", &root]);
    assert!(ok, "{err}");
    assert!(!raw(&out), "raw control characters in: {out:?}");
    assert!(out.contains("evil\\n\\x1b[31mred\\u{202e}txt"), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.contains("red")).count(),
        1,
        "{out}"
    );
    // --json stays exact.
    let v = common::ctl_json(&m, &["ls", &root]);
    let exact = serde_json::to_string(evil).unwrap();
    assert!(v.to_string().contains(exact.trim_matches('"')), "{v}");

    // A change waiting in the journal under such a name.
    server.proxy.set_fault(common::Fault::Refuse);
    let queued = "queued\x1b]0;title\x07\r.txt";
    std::fs::write(m.path(queued), b"y").unwrap();
    let (ok, out, err) = common::ctl(&m, &["journal"]);
    assert!(ok, "{err}");
    assert!(
        !out.contains('\x1b') && !out.contains('\x07') && !out.contains('\r'),
        "{out:?}"
    );
    assert!(out.contains("queued\\x1b]0;title\\x07\\r.txt"), "{out}");
    server.proxy.clear_fault();
    let (ok, out, err) = common::ctl(&m, &["sync", "--wait"]);
    assert!(ok, "{out} {err}");
    common::wait_server_has(&server, queued, b"y");
    m.unmount();
}

/// Through the journal: a part of a large upload that the server takes and never
/// answers is cut within the deadline, and the upload goes on from there.
#[test]
fn a_stalled_part_upload_is_cut_and_retried() {
    if let Ok(filter) = std::env::var("DAVDRIVE_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let server = common::Server::start();
    let state = tempfile::tempdir().unwrap();
    let mut cfg = WebDavConfig::new(url::Url::parse(&server.url()).unwrap());
    cfg.request_timeout = Duration::from_secs(60);
    cfg.idle_timeout = Duration::from_secs(2);
    cfg.retries = 1;
    let daemon = {
        let _guard = server.rt.enter();
        let remote: Arc<dyn Remote> = Arc::new(WebDav::new(cfg).unwrap());
        let mut daemon_cfg = DaemonConfig::new(state.path());
        daemon_cfg.core.uploads = davdrive::fs::UploadSizes {
            snapshot_limit: 64 << 10,
            parts_from: 1 << 20,
            part: 128 << 10,
            partial_from: davdrive::journal::replay::PARTIAL_FROM,
        };
        daemon_cfg.health_interval = Duration::from_millis(200);
        Daemon::start(daemon_cfg, remote, Clock::default()).unwrap()
    };
    let core = daemon.core();
    let data = common::pattern(48 << 20, 9);
    let (_, fh) = core.create(ROOT_INO, "big.bin", 0o644, 0, 0).unwrap();
    for (i, part) in data.chunks(1 << 20).enumerate() {
        core.write(fh, (i << 20) as u64, part).unwrap();
    }
    core.flush(fh).unwrap();
    core.release(fh).unwrap();
    // Once a few parts went, the next is taken and never answered (held for 10 min).
    // (Counted apart from the capability probes' PUTs, which come first.)
    let parts = || {
        let st = server.proxy.state.lock().unwrap();
        st.requests
            .iter()
            .filter(|(m, p)| m == "PUT" && p.contains(".davdrive-part-"))
            .count()
    };
    common::wait_until(60, "parts to be sent", || parts() >= 3);
    server
        .proxy
        .set_fault(common::Fault::Delay(Duration::from_secs(600)));
    let stalled_at = parts();
    common::wait_until(30, "a part to stall", || parts() > stalled_at);
    let started = Instant::now();
    server.proxy.clear_fault();
    // The stalled part is cut (2 s without progress) and sent again; the rest follows.
    common::wait_server_has(&server, "big.bin", &data);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}
