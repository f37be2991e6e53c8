//! Shared test harness: a real WebDAV server (dav-server) on 127.0.0.1 behind a
//! fault-injecting proxy, and real FUSE mounts of the davdrive binary.

#![allow(dead_code, unused_imports)]

pub mod bare;
pub mod drive;
pub mod mem_drive;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub use proxy::{Canned, Fault, Proxy};

pub const BIN: &str = env!("CARGO_BIN_EXE_davdrive");

/// Fails loudly when this machine cannot run FUSE tests, instead of skipping them.
pub fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: FUSE tests cannot run (load the fuse module)"
    );
    assert!(
        Command::new("fusermount3").arg("-V").output().is_ok(),
        "fusermount3 is missing: install the fuse3 package (scripts/test.sh does)"
    );
}

/// A WebDAV server over a temp dir, reached through a proxy, on its own runtime.
///
/// By default the server is davdrive's own (`dav-server`). With
/// `DAVDRIVE_TEST_SERVER_URL` (say `http://127.0.0.1:8081/dav/`) and
/// `DAVDRIVE_TEST_SERVER_ROOT` (the folder that URL serves) set, the tests run against
/// that server instead (Apache, nginx, rclone: see `scripts/interop.sh`), each in a fresh
/// folder of its own.
pub struct Server {
    pub rt: tokio::runtime::Runtime,
    pub tmp: tempfile::TempDir,
    /// The folder the server serves (this test's part of it).
    pub root: PathBuf,
    pub proxy: Proxy,
    pub upstream: std::net::SocketAddr,
    /// URL path of `root` on the server ("/" for dav-server).
    prefix: String,
}

/// The external server to test against, if one is set: (its URL, the folder it serves).
pub fn external_server() -> Option<(url::Url, PathBuf)> {
    let url = std::env::var("DAVDRIVE_TEST_SERVER_URL").ok()?;
    let root = std::env::var("DAVDRIVE_TEST_SERVER_ROOT").ok()?;
    let mut url = url::Url::parse(&url).expect("DAVDRIVE_TEST_SERVER_URL is not a URL");
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Some((url, PathBuf::from(root)))
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(true, true)
    }

    /// The built-in server without dead properties or quota, like nginx's WebDAV
    /// (ignores `DAVDRIVE_TEST_SERVER_URL`: this is about that kind of server).
    pub fn start_without_props() -> Server {
        Server::start_with(false, false)
    }

    /// The built-in server even where `DAVDRIVE_TEST_SERVER_URL` names another: for
    /// tests that arrange its folder themselves.
    pub fn start_builtin() -> Server {
        Server::start_with(true, false)
    }

    fn start_with(props: bool, external_ok: bool) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        if let Some((url, served)) = external_server().filter(|_| external_ok) {
            // The server runs as another user (www-data): what tests make on its side
            // must be writable for it, and what it makes readable for the tests.
            unsafe { libc::umask(0) };
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let name = format!(
                "t-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            let root = served.join(&name);
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
            let upstream = std::net::SocketAddr::new(
                url.host_str()
                    .unwrap()
                    .parse()
                    .expect("the test server must be on an IP address"),
                url.port_or_known_default().unwrap(),
            );
            let proxy = rt.block_on(Proxy::start(upstream));
            // A server that caches listings (rclone) sees the new folder a moment later.
            let folder = format!("{}{name}/", url.as_str());
            let seen = rt.block_on(async {
                let client = reqwest::Client::new();
                for _ in 0..100 {
                    let r = client
                        .request(reqwest::Method::from_bytes(b"PROPFIND").unwrap(), &folder)
                        .header("Depth", "0")
                        .send()
                        .await;
                    if r.is_ok_and(|r| r.status().as_u16() == 207) {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                false
            });
            assert!(seen, "the test server does not show {folder}");
            return Server {
                rt,
                tmp,
                root,
                proxy,
                upstream,
                prefix: format!("{}{name}/", url.path()),
            };
        }
        let root = tmp.path().join("server");
        std::fs::create_dir_all(&root).unwrap();
        let (upstream, proxy) = rt.block_on(async {
            let addr = "127.0.0.1:0".parse().unwrap();
            let (addr, _task) = if props {
                davdrive::serve::bind(root.clone(), addr).await
            } else {
                davdrive::serve::bind_without_props(root.clone(), addr).await
            }
            .unwrap();
            (addr, Proxy::start(addr).await)
        });
        Server {
            rt,
            tmp,
            root,
            proxy,
            upstream,
            prefix: "/".into(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}{}", self.proxy.addr, self.prefix)
    }

    /// The URL path of `rel` on the server ("/big/" is "/dav/t-1-0/big/" on a server
    /// whose collection is at /dav/t-1-0/): what the proxy logs and hrefs hold.
    pub fn href(&self, rel: &str) -> String {
        format!("{}{}", self.prefix, rel.trim_start_matches('/'))
    }

    /// Writes `data` at `rel` as another WebDAV client would: a PUT straight to the
    /// server, past the proxy (and any fault set on it). A server that caches its
    /// folder (rclone) sees such a change at once, unlike one made on its disk.
    pub fn put_as_another_client(&self, rel: &str, data: &[u8]) {
        let url = format!("http://{}{}", self.upstream, self.href(rel));
        let status = self.rt.block_on(async {
            reqwest::Client::new()
                .put(&url)
                .body(data.to_vec())
                .send()
                .await
                .unwrap()
                .status()
        });
        assert!(status.is_success(), "PUT {url}: {status}");
    }

    /// A path on the server side.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }
}

/// A running `davdrive mount` child process.
pub struct Mount {
    pub mnt: PathBuf,
    pub cache: PathBuf,
    pub child: Option<Child>,
    pub log: PathBuf,
    args: Vec<String>,
    url: String,
}

/// Whether the filesystem mounted on `mnt` answers. statfs always asks the daemon, where
/// a stat may be answered from the kernel's cache even after the daemon died.
pub fn answers(mnt: &Path) -> bool {
    let c = std::ffi::CString::new(mnt.as_os_str().as_encoded_bytes()).unwrap();
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 }
}

pub fn is_mounted(mnt: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mnt = mnt.to_string_lossy();
    info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.len() > 4 && f[4] == mnt && l.contains(" - fuse")
    })
}

impl Mount {
    /// Mounts `url` on a fresh folder in `base`, with a short listing TTL for tests.
    pub fn start(url: &str, base: &Path, extra: &[&str]) -> Mount {
        require_fuse();
        private(base);
        let mnt = base.join("mnt");
        let cache = base.join("cache");
        std::fs::create_dir_all(&mnt).unwrap();
        let mut m = Mount {
            mnt: std::fs::canonicalize(&mnt).unwrap(),
            cache,
            child: None,
            log: base.join("davdrive.log"),
            args: extra.iter().map(|s| s.to_string()).collect(),
            url: url.to_string(),
        };
        m.spawn();
        m
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(BIN)
            .arg("mount")
            .arg(&self.url)
            .arg(&self.mnt)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(
                [
                    ("--dir-ttl", "1s"),
                    ("--attr-ttl", "1s"),
                    ("--health-interval", "1s"),
                    // See `Drive::start`: a test looking for a change waits for it.
                    ("--refresh-wait", "5s"),
                    ("--request-timeout", "5s"),
                ]
                .into_iter()
                // A test may set its own.
                .filter(|(flag, _)| !self.args.iter().any(|a| a == flag))
                .flat_map(|(flag, value)| [flag, value]),
            )
            .args(&self.args)
            .env(
                "DAVDRIVE_LOG",
                std::env::var("TEST_DAVDRIVE_LOG").unwrap_or("davdrive=debug,info".into()),
            )
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        // A mount left dead by a killed daemon is listed but does not answer.
        while !(is_mounted(&self.mnt) && answers(&self.mnt)) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "davdrive exited with {status} before mounting; log:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "mount did not come up; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The mount lists the root while mounting. A server with a directory cache of
        // its own (`rclone serve webdav --dir-cache-time`) would keep serving that
        // listing for a moment, and tests put files into its folder right after
        // mounting: wait that moment out.
        if let Some(ms) = std::env::var("DAVDRIVE_TEST_SERVER_DIR_CACHE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            std::thread::sleep(Duration::from_millis(ms));
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel.trim_start_matches('/'))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Clean unmount through `davdrive unmount`; waits for the daemon to exit.
    pub fn unmount(&mut self) {
        if let Some(mut child) = self.child.take() {
            let out = Command::new(BIN)
                .arg("unmount")
                .arg(&self.mnt)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "unmount failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "daemon did not exit after unmount"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// `kill -9` of the daemon, leaving its mount dead, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn remount(&mut self) {
        self.unmount();
        self.spawn();
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The daemon's side of a failed test.
            let log = self.log_text();
            // Without the health probes, which repeat every second.
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .filter(|l| !l.contains("method=OPTIONS") && !l.contains("PROPFIND path=\"/\""))
                .take(40)
                .collect();
            eprintln!("--- last lines of the davdrive log ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if is_mounted(&self.mnt) {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.mnt)
                .status();
        }
    }
}

/// Polls `cond` until it holds, or panics with `what` after `secs`.
/// Makes `dir` private (0700). Against an external server the tests run with umask 0
/// (see `Server::start`), and a cache dir under a folder everyone may write is refused.
pub fn private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
}

pub fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Everything of an old core is gone before a new one starts, as with a process that
/// exited: tasks it spawned (downloads, replays, hashing) end or are cancelled.
pub fn wait_gone(core: std::sync::Weak<davdrive::fs::Core>) {
    wait_until(30, "the old core's tasks to end", || {
        core.strong_count() == 0
    });
}

/// Reads handle `fh` of `core` on from the end of `got` to the end of the file, in
/// 128 KiB reads, as a program reading it through would.
pub fn read_rest(core: &davdrive::fs::Core, fh: u64, got: &mut Vec<u8>) {
    loop {
        let part = core.read(fh, got.len() as u64, 128 << 10).unwrap();
        if part.is_empty() {
            break;
        }
        got.extend_from_slice(&part);
    }
}

pub fn sha256_file(p: &Path) -> Option<String> {
    let data = std::fs::read(p).ok()?;
    Some(sha256(&data))
}

pub fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn run(cmd: &str, dir: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `davdrive ctl --mount M <args>`; returns (success, stdout, stderr).
pub fn ctl(m: &Mount, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("ctl")
        .arg("--mount")
        .arg(&m.mnt)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `ctl --json`: the reply's result, asserting it succeeded.
pub fn ctl_json(m: &Mount, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (ok, out, err) = ctl(m, &all);
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("ctl {args:?}: not JSON ({e}): {out} {err}"));
    assert!(ok, "ctl {args:?} failed: {v}");
    assert_eq!(v["ok"], true);
    assert_eq!(v["version"], 1);
    v["result"].clone()
}

/// Apache's `mod_dav_fs` keeps the dead properties davdrive sets (mode, owner, times)
/// in a `.DAV` folder beside the files; it never lists it over WebDAV.
pub fn is_property_store(name: &std::ffi::OsStr) -> bool {
    name == ".DAV"
}

/// Waits until the server holds exactly `data` at `rel`.
pub fn wait_server_has(server: &Server, rel: &str, data: &[u8]) {
    let want = sha256(data);
    let p = server.path(rel);
    wait_until(60, &format!("{rel} on the server"), || {
        sha256_file(&p).as_deref() == Some(want.as_str())
    });
}

/// The name of the first entry in the server's root starting with `prefix` (a conflict
/// copy, say), if any.
pub fn server_entry_starting(server: &Server, prefix: &str) -> Option<String> {
    std::fs::read_dir(&server.root).unwrap().find_map(|e| {
        let n = e.unwrap().file_name().into_string().unwrap();
        n.starts_with(prefix).then_some(n)
    })
}

/// The shape of a JSON value: every key kept, every leaf replaced by its kind
/// (`"string"`, `"int"`, `"float"`, `"bool"`, null), an array by the shape of its first
/// element. What a reply on the control socket must keep for the scripts that read it.
pub fn shape(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Null => Value::Null,
        Value::Bool(_) => "bool".into(),
        Value::Number(n) if n.is_f64() => "float".into(),
        Value::Number(_) => "int".into(),
        Value::String(_) => "string".into(),
        Value::Array(a) => Value::Array(a.first().map(shape).into_iter().collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
    }
}

/// One request on a control socket: the `result` of its reply, which must be ok.
pub fn ctl_socket(socket: &Path, req: &davdrive::control::Request) -> serde_json::Value {
    let reply = davdrive::control::client::request(socket, req, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{req:?}: {e}"));
    assert_eq!(reply["ok"], true, "{req:?}: {reply}");
    assert_eq!(reply["version"], 1);
    reply["result"].clone()
}
