//! The WebDAV backend against the built-in dav-server, and against tiny hand-written
//! HTTP servers for the replies a well-behaved server never gives.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use davdrive::remote::webdav::{WebDav, WebDavConfig};
use davdrive::remote::{BodyHash, Precondition, Remote, RemoteError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Mount point below the server root, with a space to exercise base-path encoding.
const MOUNT: &str = "mnt point";

struct Setup {
    _tmp: tempfile::TempDir,
    /// The directory the server serves as the mount's root.
    root: PathBuf,
    /// Scratch space for local files to upload.
    local: PathBuf,
    dav: WebDav,
}

async fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    let root = served.join(MOUNT);
    let local = tmp.path().join("local");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&local).unwrap();
    let (addr, _task) = davdrive::serve::bind(served, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = url::Url::parse(&format!("http://{addr}/mnt%20point/")).unwrap();
    let dav = WebDav::new(WebDavConfig::new(url)).unwrap();
    Setup {
        _tmp: tmp,
        root,
        local,
        dav,
    }
}

fn local_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

async fn put(
    s: &Setup,
    path: &str,
    data: &[u8],
    cond: Precondition,
) -> Result<Option<String>, RemoteError> {
    let f = local_file(&s.local, "upload", data);
    s.dav
        .put(path, &f, data.len() as u64, cond, None, None)
        .await
        .map(|r| r.etag)
}

#[tokio::test]
async fn mkcol_put_stat_get() {
    let s = setup().await;
    s.dav.mkcol("/dir").await.unwrap();
    // An existing collection is not an error.
    s.dav.mkcol("/dir").await.unwrap();
    assert!(s.root.join("dir").is_dir());

    let data = b"hello, webdav".to_vec();
    let f = local_file(&s.local, "a", &data);
    let mtime = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let reply = s
        .dav
        .put(
            "/dir/a.txt",
            &f,
            data.len() as u64,
            Precondition::None,
            Some(mtime),
            None,
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(s.root.join("dir/a.txt")).unwrap(), data);

    let e = s.dav.stat("/dir/a.txt").await.unwrap().unwrap();
    assert_eq!(e.name, "a.txt");
    assert!(!e.is_dir);
    assert_eq!(e.size, data.len() as u64);
    assert!(e.mtime.is_some());
    assert!(e.etag.is_some());
    // The PUT reply's ETag and the PROPFIND getetag name the same version.
    assert_eq!(reply.etag, e.etag);

    let d = s.dav.stat("/dir").await.unwrap().unwrap();
    assert!(d.is_dir);
    assert_eq!(d.name, "dir");
    let root = s.dav.stat("/").await.unwrap().unwrap();
    assert!(root.is_dir);
    assert_eq!(root.name, "");

    // Only the first `len` bytes of the local file are sent.
    let f = local_file(&s.local, "b", b"0123456789");
    let hash = BodyHash::default();
    s.dav
        .put("/dir/short", &f, 4, Precondition::None, None, Some(&hash))
        .await
        .unwrap();
    assert_eq!(std::fs::read(s.root.join("dir/short")).unwrap(), b"0123");
    // The body was hashed as it went: the hash names exactly the bytes sent.
    assert_eq!(hash.of(4).as_deref(), Some(sha_hex(b"0123").as_str()));
    assert_eq!(hash.of(10), None, "only 4 bytes were sent");
    // The rest, written into the file as a range, feeds the same hash: together they
    // name the whole file.
    assert!(s.dav.partial_put_supported().await.unwrap());
    (s.dav.put_range("/dir/short", &f, 4, 6, Some(&hash)))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(s.root.join("dir/short")).unwrap(),
        b"0123456789"
    );
    assert_eq!(hash.of(10), Some(sha_hex(b"0123456789")));

    // A local file shorter than `len` fails before anything is sent.
    let err = s
        .dav
        .put("/dir/long", &f, 11, Precondition::None, None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::Local(_)), "{err:?}");
    assert!(!s.root.join("dir/long").exists());

    let info = s.dav.probe().await.unwrap();
    assert!(info.dav_classes.iter().any(|c| c == "1"), "{info:?}");
}

#[tokio::test]
async fn odd_names_round_trip() {
    let s = setup().await;
    let names = [
        "a b.txt",
        "ünïcödé ✓",
        "100%",
        "%41",
        "#hash",
        "what?",
        "a+b",
        "semi;colon&amp=x",
        "日本語.txt",
        "quote'\"",
    ];
    s.dav.mkcol("/odd dir #1?").await.unwrap();
    for n in names {
        put(
            &s,
            &format!("/odd dir #1?/{n}"),
            n.as_bytes(),
            Precondition::None,
        )
        .await
        .unwrap();
        assert!(s.root.join("odd dir #1?").join(n).is_file(), "{n}");
    }
    s.dav.mkcol("/odd dir #1?/sub+dir %").await.unwrap();

    let listed: BTreeSet<String> = s
        .dav
        .list("/odd dir #1?")
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            assert_eq!(e.is_dir, e.name == "sub+dir %", "{e:?}");
            e.name
        })
        .collect();
    let mut want: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
    want.insert("sub+dir %".into());
    assert_eq!(listed, want);

    for n in names {
        let e = s
            .dav
            .stat(&format!("/odd dir #1?/{n}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e.name, n);
        assert_eq!(e.size, n.len() as u64);
    }
    assert!(s
        .dav
        .list("/odd dir #1?/sub+dir %")
        .await
        .unwrap()
        .is_empty());

    // The root listing shows the directory, not itself.
    let top: Vec<_> = s.dav.list("/").await.unwrap();
    assert_eq!(top.len(), 1);
    assert_eq!(top[0].name, "odd dir #1?");
    assert!(top[0].is_dir);
}

#[tokio::test]
async fn get_range() {
    let s = setup().await;
    let data: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
        .collect();
    let etag = put(&s, "/big.bin", &data, Precondition::None)
        .await
        .unwrap();

    let (off, len) = (1024 * 1024 + 123, 1024 * 1024);
    let r = s.dav.get_range("/big.bin", off, len).await.unwrap();
    assert_eq!(r.offset, off);
    assert_eq!(r.total_size, Some(data.len() as u64));
    assert_eq!(r.data.len() as u64, len);
    assert!(r.data[..] == data[off as usize..(off + len) as usize]);
    assert_eq!(r.etag, etag);

    // A range running past the end is cut at the end.
    let r = s
        .dav
        .get_range("/big.bin", data.len() as u64 - 10, 100)
        .await
        .unwrap();
    assert_eq!(&r.data[..], &data[data.len() - 10..]);

    // Past the end: nothing, but the size is known.
    let r = s
        .dav
        .get_range("/big.bin", data.len() as u64 + 5, 10)
        .await
        .unwrap();
    assert!(r.data.is_empty());
    assert_eq!(r.total_size, Some(data.len() as u64));

    let err = s.dav.get_range("/missing", 0, 10).await.unwrap_err();
    assert!(matches!(err, RemoteError::NotFound), "{err:?}");
}

#[tokio::test]
async fn preconditions() {
    let s = setup().await;
    let first = put(&s, "/f", b"one", Precondition::IfNoneMatch)
        .await
        .unwrap()
        .expect("etag");

    // Something exists there now.
    let err = put(&s, "/f", b"two", Precondition::IfNoneMatch)
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::PreconditionFailed), "{err:?}");
    assert_eq!(std::fs::read(s.root.join("f")).unwrap(), b"one");

    // Based on the current version: accepted.
    let second = put(&s, "/f", b"three", Precondition::IfMatch(first.clone()))
        .await
        .unwrap()
        .expect("etag");
    assert_ne!(first, second);

    // Based on a version that is gone: refused, file untouched.
    let err = put(&s, "/f", b"four", Precondition::IfMatch(first))
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::PreconditionFailed), "{err:?}");
    assert_eq!(std::fs::read(s.root.join("f")).unwrap(), b"three");

    // The etag from PROPFIND works as well as the one from the PUT reply.
    let stat_tag = s.dav.stat("/f").await.unwrap().unwrap().etag.unwrap();
    put(&s, "/f", b"five", Precondition::IfMatch(stat_tag))
        .await
        .unwrap();

    // If-Match on a missing resource fails too.
    let err = put(&s, "/nope", b"x", Precondition::IfMatch("\"abc\"".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::PreconditionFailed), "{err:?}");
}

#[tokio::test]
async fn rename_and_delete() {
    let s = setup().await;
    s.dav.mkcol("/d").await.unwrap();
    put(&s, "/d/a", b"aaa", Precondition::None).await.unwrap();
    put(&s, "/d/other", b"o", Precondition::None).await.unwrap();

    s.dav.rename("/d/a", "/d/b c", false).await.unwrap();
    assert!(s.dav.stat("/d/a").await.unwrap().is_none());
    assert_eq!(s.dav.stat("/d/b c").await.unwrap().unwrap().size, 3);

    // Overwrite: T replaces an existing target.
    s.dav.rename("/d/b c", "/d/other", false).await.unwrap();
    assert_eq!(std::fs::read(s.root.join("d/other")).unwrap(), b"aaa");

    s.dav.rename("/d", "/e #2", true).await.unwrap();
    assert!(s.dav.stat("/d").await.unwrap().is_none());
    let names: Vec<_> = s
        .dav
        .list("/e #2")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["other"]);

    s.dav.delete("/e #2/other", false).await.unwrap();
    assert!(s.dav.stat("/e #2/other").await.unwrap().is_none());
    // Already gone is fine.
    s.dav.delete("/e #2/other", false).await.unwrap();

    put(&s, "/e #2/x", b"x", Precondition::None).await.unwrap();
    s.dav.delete("/e #2", true).await.unwrap();
    assert!(!s.root.join("e #2").exists());
    assert!(s.dav.stat("/e #2").await.unwrap().is_none());

    let err = s.dav.list("/e #2").await.unwrap_err();
    assert!(matches!(err, RemoteError::NotFound), "{err:?}");
    let err = s.dav.rename("/gone", "/x", false).await.unwrap_err();
    assert!(matches!(err, RemoteError::NotFound), "{err:?}");
}

#[tokio::test]
async fn dead_port_is_transport_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = url::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    let dav = WebDav::new(WebDavConfig::new(url)).unwrap();
    let started = Instant::now();
    let err = dav.stat("/x").await.unwrap_err();
    assert!(err.is_transport(), "{err:?}");
    // Three quick retries (200 + 400 + 800 ms), no connect timeout.
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = dav.probe().await.unwrap_err();
    assert!(err.is_transport(), "{err:?}");
}

/// A one-reply-per-connection HTTP server answering every request with `reply` and
/// recording the requests it got (head and body, as text).
struct Fake {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn fake_server(reply: String) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                let n = sock.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(i + 4);
                }
            };
            let Some(head_end) = head_end else { continue };
            // Read the body too: closing with unread input would reset the connection.
            let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
            let body_len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            while buf.len() < head_end + body_len {
                let n = sock.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            log.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf).into_owned());
            sock.write_all(reply.as_bytes()).await.unwrap();
            let _ = sock.shutdown().await;
        }
    });
    Fake { addr, seen }
}

fn http_reply(status: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn fake_dav(fake: &Fake, retries: u32) -> WebDav {
    let url = url::Url::parse(&format!("http://{}/base/", fake.addr)).unwrap();
    let mut cfg = WebDavConfig::new(url);
    cfg.retries = retries;
    cfg.user = Some("alice".into());
    cfg.password = Some("s3cret-pass".into());
    WebDav::new(cfg).unwrap()
}

#[tokio::test]
async fn malformed_multistatus_is_bad_reply() {
    let body =
        r#"<?xml version="1.0"?><D:multistatus xmlns:D="DAV:"><D:response><D:href>/base/x</D:hre"#;
    let fake = fake_server(http_reply(
        "207 Multi-Status",
        "Content-Type: application/xml\r\n",
        body,
    ))
    .await;
    let dav = fake_dav(&fake, 2);
    let err = dav.stat("/x").await.unwrap_err();
    assert!(matches!(err, RemoteError::BadReply(_)), "{err:?}");
    let err = dav.list("/").await.unwrap_err();
    assert!(matches!(err, RemoteError::BadReply(_)), "{err:?}");
    // Not retried: the same request would get the same reply.
    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    let req = &seen[0];
    assert!(req.starts_with("PROPFIND /base/x HTTP/1.1"), "{req}");
    assert!(req.to_lowercase().contains("depth: 0"), "{req}");
    assert!(req.contains("getetag"), "{req}");
    // Over plain http the password goes out only once the server asks (it may want
    // Digest, which never sends it in the clear).
    assert!(
        !req.to_lowercase().contains("authorization"),
        "credentials sent unasked: {req}"
    );
    assert!(
        seen[1].starts_with("PROPFIND /base/ HTTP/1.1"),
        "{}",
        seen[1]
    );
}

#[tokio::test]
async fn server_error_is_retried_then_reported() {
    let fake = fake_server(http_reply("500 Internal Server Error", "", "oops")).await;
    let dav = fake_dav(&fake, 1);
    let err = dav.stat("/x").await.unwrap_err();
    assert!(
        matches!(err, RemoteError::Server { status: 500, .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains("s3cret-pass"));
    assert_eq!(fake.seen.lock().unwrap().len(), 2, "one retry");

    // PUT is left to the caller's journal: exactly one attempt.
    fake.seen.lock().unwrap().clear();
    let tmp = tempfile::tempdir().unwrap();
    let f = local_file(tmp.path(), "f", b"data");
    let mtime = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let err = dav
        .put(
            "/dir/a b+c.txt",
            &f,
            4,
            Precondition::IfNoneMatch,
            Some(mtime),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RemoteError::Server { status: 500, .. }),
        "{err:?}"
    );
    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let req = seen[0].to_lowercase();
    assert!(
        req.starts_with("put /base/dir/a%20b%2bc.txt http/1.1"),
        "{req}"
    );
    assert!(req.contains("if-none-match: *"), "{req}");
    assert!(req.contains("x-oc-mtime: 1700000000"), "{req}");
    assert!(req.contains("content-length: 4"), "{req}");
    assert!(req.ends_with("\r\n\r\ndata"), "{req}");
}

#[tokio::test]
async fn status_mapping_from_fake_servers() {
    let fake = fake_server(http_reply("401 Unauthorized", "", "")).await;
    let err = fake_dav(&fake, 0).stat("/x").await.unwrap_err();
    assert!(matches!(err, RemoteError::Unauthorized(401)), "{err:?}");

    let fake = fake_server(http_reply("403 Forbidden", "", "")).await;
    let dav = fake_dav(&fake, 0);
    let err = dav.probe().await.unwrap_err();
    assert!(matches!(err, RemoteError::Unauthorized(403)), "{err:?}");
    let err = dav.mkcol("/x").await.unwrap_err();
    assert!(
        matches!(err, RemoteError::Refused { status: 403, .. }),
        "{err:?}"
    );

    let fake = fake_server(http_reply("429 Too Many Requests", "", "")).await;
    let err = fake_dav(&fake, 0).delete("/x", false).await.unwrap_err();
    assert!(
        matches!(err, RemoteError::Server { status: 429, .. }),
        "{err:?}"
    );

    let fake = fake_server(http_reply("409 Conflict", "", "")).await;
    let err = fake_dav(&fake, 0)
        .rename("/a", "/b/c", false)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RemoteError::Refused { status: 409, .. }),
        "{err:?}"
    );
    let req = fake.seen.lock().unwrap()[0].to_lowercase();
    let dest = format!("destination: http://{}/base/b/c", fake.addr);
    assert!(req.contains(&dest), "{req}");
    assert!(req.contains("overwrite: t"), "{req}");
}

#[tokio::test]
async fn range_ignored_by_server() {
    // A server that ignores Range and sends the whole file with 200.
    let fake = fake_server(http_reply("200 OK", "ETag: \"v1\"\r\n", "0123456789")).await;
    let dav = fake_dav(&fake, 0);
    let r = dav.get_range("/f", 3, 4).await.unwrap();
    assert_eq!(&r.data[..], b"3456");
    assert_eq!(r.offset, 3);
    assert_eq!(r.total_size, Some(10));
    assert_eq!(r.etag.as_deref(), Some("\"v1\""));
    let req = fake.seen.lock().unwrap()[0].to_lowercase();
    assert!(req.contains("range: bytes=3-6"), "{req}");
}

/// A folder's own entry comes with its listing (one PROPFIND Depth 1), and a PROPFIND
/// Depth 0 of a folder finds it, or nothing once it is gone.
#[tokio::test]
async fn a_folders_own_entry_with_its_listing_and_alone() {
    let s = setup().await;
    s.dav.mkcol("/d").await.unwrap();
    put(&s, "/d/a.txt", b"a", Precondition::None).await.unwrap();
    let (me, children) = s.dav.list_dir("/d").await.unwrap();
    let me = me.expect("the folder's own entry");
    assert!(me.is_dir);
    let names: Vec<&str> = children.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a.txt"]);
    let alone = s.dav.stat_dir("/d").await.unwrap().expect("the folder");
    assert!(alone.is_dir);
    assert_eq!(alone.etag, me.etag, "the same version, asked twice");
    let (root, _) = s.dav.list_dir("/").await.unwrap();
    assert!(root.is_some_and(|r| r.is_dir));
    s.dav.delete("/d", true).await.unwrap();
    assert_eq!(s.dav.stat_dir("/d").await.unwrap(), None);
}

fn sha_hex(data: &[u8]) -> String {
    use sha2::Digest;
    davdrive::cache::hex(&sha2::Sha256::digest(data))
}
