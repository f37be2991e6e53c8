//! One mount from start to end: reach the remote, start the daemon on the state (every
//! background task, see `crate::daemon`), mount, and on unmount or a signal stop the
//! daemon.
//!
//! Over 600 lines: the checks a mount makes before the kernel sees it (mount point,
//! remote, options, the fallbacks), each with its own message, read as one sequence.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::DavFs;
use crate::clock::Clock;
use crate::config::MountConfig;
use crate::daemon::{Daemon, DaemonConfig};
use crate::fs::CoreConfig;
use crate::remote::client::ConnectionConfig;
use crate::remote::http::HttpIndex;
use crate::remote::webdav::WebDav;
use crate::remote::{Remote, RemoteError, ServerInfo};
use crate::store;
use fuser::{Config, MountOption, Session};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{0}")]
    Setup(String),
    #[error("authentication failed at {url}: wrong user name, password or token")]
    Auth { url: String },
    #[error("{url} asks for credentials: give --user NAME and --password-file FILE (or DAVDRIVE_PASSWORD), or --bearer-token-file FILE")]
    NoCredentials { url: String },
    #[error("{url} names a file, not a folder: give the URL of the folder to mount")]
    NotAFolder { url: String },
    #[error("cannot reach {url}: {reason} (and nothing is cached yet to mount offline)")]
    Unreachable { url: String, reason: String },
    #[error("{url} does not look like a WebDAV collection: {reason}")]
    NotDav { url: String, reason: String },
    #[error("{url} is not an HTML directory index: {reason}")]
    NotIndex { url: String, reason: String },
    #[error("cannot mount on {path}: {source}")]
    Fuse {
        path: String,
        source: std::io::Error,
    },
}

/// Holds the cache dir for one daemon; dropped (and released) when the process ends.
struct CacheLock(#[allow(dead_code)] File);

fn lock_cache_dir(dir: &Path) -> Result<CacheLock, MountError> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dir.join("lock"))
        .map_err(|e| MountError::Setup(format!("cannot open {}: {e}", dir.display())))?;
    use std::os::fd::AsRawFd;
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(MountError::Setup(format!(
            "the cache dir {} is in use by another running davdrive",
            dir.display()
        )));
    }
    Ok(CacheLock(f))
}

/// A mountpoint left behind by a daemon that died answers ENOTCONN; detach it. Asked
/// with statfs, which always goes to the filesystem: a stat may still be answered from
/// the kernel's attribute cache for a while after the daemon died.
fn clear_dead_mount(mountpoint: &Path) {
    let Ok(c) = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes()) else {
        return;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let failed = unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0;
    if failed && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOTCONN) {
        tracing::warn!(
            "{} is a mount left by a davdrive that died; detaching it",
            mountpoint.display()
        );
        let _ = std::process::Command::new("fusermount3")
            .arg("-uz")
            .arg(mountpoint)
            .status();
    }
}

/// A mountpoint must be a folder, not already a mount point (a second mount would hide
/// the first, and one unmount would take both down) and, unless asked otherwise, empty
/// (its files would be hidden while mounted).
pub fn check_mountpoint(mountpoint: &Path, allow_non_empty: bool) -> Result<(), MountError> {
    let shown = mountpoint.display();
    match std::fs::metadata(mountpoint) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(MountError::Setup(format!(
                "mountpoint {shown} is not a directory"
            )))
        }
        Err(e) => return Err(MountError::Setup(format!("mountpoint {shown}: {e}"))),
    }
    if let Some(fstype) = mounted_fstype(mountpoint) {
        return Err(MountError::Setup(format!(
            "{shown} is already a mount point ({fstype}); unmount it first (davdrive unmount {shown})"
        )));
    }
    if !allow_non_empty {
        let mut entries = std::fs::read_dir(mountpoint)
            .map_err(|e| MountError::Setup(format!("mountpoint {shown}: {e}")))?;
        if entries.next().is_some() {
            return Err(MountError::Setup(format!(
                "{shown} is not empty: mounting would hide its files (--allow-non-empty mounts over them anyway)"
            )));
        }
    }
    Ok(())
}

/// The type of the filesystem mounted exactly on `path`, if one is (from
/// /proc/self/mountinfo, whose paths escape space, tab, newline and backslash in octal).
pub fn mounted_fstype(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.as_os_str().as_encoded_bytes();
    info.lines().rev().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let point = left.split(' ').nth(4)?;
        (unescape_mountinfo(point) == want)
            .then(|| right.split(' ').next().unwrap_or("unknown").to_string())
    })
}

fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Store key naming the kind of remote last reached from this cache dir, so a mount
/// made while the server is down keeps the kind (and read-only-ness) it had.
const REMOTE_KIND: &str = "remote.kind";
const KIND_HTTP: &str = "http";
const KIND_WEBDAV: &str = "webdav";

/// The backend of a mount, whether it is read-only, and what the first probe found.
struct Connected {
    remote: Arc<dyn Remote>,
    /// Plain HTTP (read-only for good).
    http: bool,
    probe: Result<ServerInfo, RemoteError>,
    /// Why a WebDAV mount became a plain HTTP one, for the log once mounted (a daemon
    /// logs to its file only from then on).
    fell_back: Option<String>,
}

/// Picks the backend: plain HTTP with `--http`; otherwise WebDAV, falling back to plain
/// HTTP (read-only) when the server does not speak WebDAV but serves an HTML index.
fn connect(cfg: &MountConfig, rt: &tokio::runtime::Runtime) -> Result<Connected, MountError> {
    let url = cfg.display_url();
    let mut conn = ConnectionConfig::new(cfg.url.clone());
    conn.user = cfg.user.clone();
    conn.password = cfg.password.clone();
    conn.bearer_token = cfg.bearer_token.clone();
    conn.ca_cert_pem = cfg.ca_cert_pem.clone();
    conn.request_timeout = cfg.request_timeout;
    // A request that stops moving is cut after as long as one may take to start.
    conn.idle_timeout = cfg.request_timeout;
    conn.max_listing_bytes = cfg.max_listing_size;
    let setup = |e: RemoteError| MountError::Setup(format!("{url}: {e}"));
    let http = |conn: ConnectionConfig| -> Result<Arc<dyn Remote>, MountError> {
        Ok(Arc::new(HttpIndex::new(conn).map_err(setup)?))
    };

    if cfg.http {
        let remote = http(conn)?;
        let probe = rt.block_on(remote.probe());
        return Ok(Connected {
            remote,
            http: true,
            probe,
            fell_back: None,
        });
    }
    let dav: Arc<dyn Remote> = Arc::new(WebDav::new(conn.clone()).map_err(setup)?);
    match rt.block_on(dav.probe()) {
        Err(RemoteError::NotDav(why)) => {
            let remote = http(conn)?;
            match rt.block_on(remote.probe()) {
                Ok(info) => Ok(Connected {
                    remote,
                    http: true,
                    probe: Ok(info),
                    fell_back: Some(format!(
                        "{url} does not speak WebDAV ({why}) but serves an HTML index: \
                         mounted read-only over plain HTTP"
                    )),
                }),
                Err(RemoteError::Unauthorized(_)) => Err(auth_error(cfg, url)),
                Err(e) => Err(MountError::NotDav {
                    url,
                    reason: format!("{why}, and its index page is not usable: {e}"),
                }),
            }
        }
        // Down now, but plain HTTP when last reached: stay read-only, offline.
        Err(e)
            if (e.is_transport() || matches!(e, RemoteError::Server { .. }))
                && last_remote_kind(&cfg.cache_dir).as_deref() == Some(KIND_HTTP) =>
        {
            Ok(Connected {
                remote: http(conn)?,
                http: true,
                probe: Err(e),
                fell_back: None,
            })
        }
        probe => Ok(Connected {
            remote: dav,
            http: false,
            probe,
            fell_back: None,
        }),
    }
}

/// A 401/403: wrong credentials, or none given to a server that wants some.
fn auth_error(cfg: &MountConfig, url: String) -> MountError {
    if cfg.user.is_none() && cfg.password.is_none() && cfg.bearer_token.is_none() {
        MountError::NoCredentials { url }
    } else {
        MountError::Auth { url }
    }
}

/// What a successful mount reports to whoever started it.
#[derive(Debug, Clone)]
pub struct Ready {
    /// Why the mount is read-only, if it is.
    pub read_only: Option<String>,
}

/// Checks what can be checked without mounting: the mountpoint, and that the server
/// answers and takes the credentials (`mount -f`). A server that is down is not an
/// error here (a mount would go on from its cache).
pub fn check(cfg: &MountConfig) -> Result<(), MountError> {
    clear_dead_mount(&cfg.mountpoint);
    check_mountpoint(&cfg.mountpoint, cfg.allow_non_empty)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| MountError::Setup(format!("cannot start the runtime: {e}")))?;
    let url = cfg.display_url();
    let connected = connect(cfg, &rt)?;
    match connected.probe {
        Ok(_) if !connected.http => names_a_folder(cfg, &connected.remote, &rt),
        Ok(_) => Ok(()),
        Err(RemoteError::Unauthorized(_)) => Err(auth_error(cfg, url)),
        Err(_) => Ok(()),
    }
}

/// A WebDAV URL naming a file would mount as an empty folder: refused.
fn names_a_folder(
    cfg: &MountConfig,
    remote: &Arc<dyn Remote>,
    rt: &tokio::runtime::Runtime,
) -> Result<(), MountError> {
    match rt.block_on(remote.stat("/")) {
        Ok(Some(e)) if !e.is_dir => Err(MountError::NotAFolder {
            url: cfg.display_url(),
        }),
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::debug!("checking that the URL names a folder: {e}");
            Ok(())
        }
    }
}

fn last_remote_kind(cache_dir: &Path) -> Option<String> {
    let db = cache_dir.join("state.db");
    if !db.exists() {
        return None;
    }
    store::get_meta(&store::open(&db).ok()?, REMOTE_KIND)
        .ok()
        .flatten()
}

/// Mounts and serves until unmounted. `ready` is called once: with Ok when the mount is
/// usable, with the error otherwise.
pub fn run(cfg: MountConfig, ready: impl FnOnce(Result<Ready, String>)) -> Result<(), MountError> {
    let mut ready = Some(ready);
    let result = run_inner(cfg, &mut ready);
    if let (Err(e), Some(r)) = (&result, ready.take()) {
        r(Err(e.to_string()));
    }
    result
}

fn run_inner(
    cfg: MountConfig,
    ready: &mut Option<impl FnOnce(Result<Ready, String>)>,
) -> Result<(), MountError> {
    let url = cfg.display_url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("davdrive-io")
        .build()
        .map_err(|e| MountError::Setup(format!("cannot start the runtime: {e}")))?;

    clear_dead_mount(&cfg.mountpoint);
    check_mountpoint(&cfg.mountpoint, cfg.allow_non_empty)?;
    // Ours or refused, before anything in it is opened.
    crate::cache::secure_cache_dir(&cfg.cache_dir).map_err(MountError::Setup)?;
    let _lock = lock_cache_dir(&cfg.cache_dir)?;

    let Connected {
        remote,
        http,
        probe,
        fell_back,
    } = connect(&cfg, &rt)?;
    // Said at mount, in the log, and by `ctl status` and `ctl health`.
    let read_only_reason: Option<String> = if http {
        Some(if cfg.http {
            "plain HTTP mount (--http): the server only serves files".into()
        } else if fell_back.is_some() {
            "no WebDAV at this URL; mounted over plain HTTP from its index pages".into()
        } else {
            "plain HTTP when the server was last reached (it is down now)".into()
        })
    } else if cfg.read_only {
        Some("asked for (--read-only)".into())
    } else {
        None
    };
    let read_only = read_only_reason.is_some();

    let mut first_latency = None;
    let online = match probe {
        Ok(info) => {
            tracing::info!(
                "{url} answers (DAV {:?}, {:?})",
                info.dav_classes,
                info.latency
            );
            first_latency = Some(info.latency);
            true
        }
        Err(RemoteError::Unauthorized(_)) => return Err(auth_error(&cfg, url)),
        Err(e) if e.is_transport() || matches!(e, RemoteError::Server { .. }) => {
            // Mount offline if this cache dir already holds the tree.
            let db = cfg.cache_dir.join("state.db");
            let listed = db.exists()
                && store::open(&db)
                    .ok()
                    .and_then(|c| store::get_node(&c, store::ROOT_INO).ok().flatten())
                    .and_then(|root| root.listed_at)
                    .is_some();
            if !listed {
                return Err(MountError::Unreachable {
                    url,
                    reason: e.to_string(),
                });
            }
            if http {
                tracing::warn!("{url} is unreachable ({e}); mounting from the cache, read-only");
            } else {
                tracing::warn!("{url} is unreachable ({e}); mounting from the cache, changes will be sent when it returns");
            }
            false
        }
        Err(e) if http => {
            return Err(MountError::NotIndex {
                url,
                reason: e.to_string(),
            })
        }
        Err(e) => {
            return Err(MountError::NotDav {
                url,
                reason: e.to_string(),
            })
        }
    };

    if online && !http {
        names_a_folder(&cfg, &remote, &rt)?;
    }

    let daemon = {
        let _guard = rt.enter();
        Daemon::start(
            DaemonConfig {
                core: CoreConfig {
                    dir_ttl: cfg.dir_ttl,
                    attr_ttl: cfg.attr_ttl,
                    refresh_wait: cfg.refresh_wait,
                    cache: cfg.cache.clone(),
                    uploads: cfg.uploads,
                    poll: crate::fs::PollConfig {
                        interval: cfg.poll_interval,
                        ..Default::default()
                    },
                    ..CoreConfig::default()
                },
                online,
                first_latency,
                health_interval: cfg.health_interval,
                control_socket: cfg.control_socket.clone(),
                mountpoint: cfg.mountpoint.clone(),
                backup: cfg.backup.clone(),
                read_only: read_only_reason.clone(),
                metrics_addr: cfg.metrics_addr,
                metrics_allow_remote: cfg.metrics_allow_remote,
                sweeper: true,
                list_root: true,
                remote_name: url.clone(),
                ..DaemonConfig::new(&cfg.cache_dir)
            },
            remote,
            Clock::default(),
        )
        .map_err(|e| MountError::Setup(e.0))?
    };
    let core = daemon.core().clone();
    if online {
        let kind = if http { KIND_HTTP } else { KIND_WEBDAV };
        if let Err(e) = core.db().write(|tx| store::set_meta(tx, REMOTE_KIND, kind)) {
            tracing::warn!("cannot record the kind of remote: {e}");
        }
    }

    let mut options = vec![
        // Shown in /proc/mounts and by mount(8), readable by every user: no credentials.
        MountOption::FSName(crate::config::public_url(&cfg.url)),
        // Type fuse.davdrive in /proc/mounts, so umount(8) and mount(8) know it. As an
        // option for the kernel: fuser hands MountOption::Subtype only to fusermount3,
        // and a root mount does not go through fusermount3 (fusermount3 takes this one).
        MountOption::CUSTOM("subtype=davdrive".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if read_only {
        // The kernel then refuses writes itself, before they reach the core.
        options.push(MountOption::RO);
    }
    let mut fuse_cfg = Config::default();
    if cfg.allow_other {
        fuse_cfg.acl = fuser::SessionACL::All;
    }
    fuse_cfg.mount_options = std::mem::take(&mut options);
    fuse_cfg.n_threads = Some(cfg.threads.max(1));
    let mut session = Session::new(
        DavFs::new(core.clone(), cfg.passthrough, cfg.attrs.clone()),
        &cfg.mountpoint,
        &fuse_cfg,
    )
    .map_err(|source| MountError::Fuse {
        path: cfg.mountpoint.display().to_string(),
        source,
    })?;
    match &read_only_reason {
        Some(why) => tracing::info!(
            "mounted {url} on {}, read-only: {why}",
            cfg.mountpoint.display()
        ),
        None => tracing::info!("mounted {url} on {}", cfg.mountpoint.display()),
    }
    core.set_kernel_cache(Arc::new(KernelNotifier::new(session.notifier())));
    let pid_path = crate::config::pid_file(&cfg.mountpoint);
    let control_link = crate::config::control_link(&cfg.mountpoint);
    // Only in a folder of ours: in /tmp another user may have made it first.
    match pid_path.parent().map(crate::cache::private_dir) {
        Some(Ok(())) => {
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&pid_path)
                .and_then(|mut f| writeln!(f, "{}", std::process::id()));
            let _ = std::fs::remove_file(&control_link);
            if let Err(e) = std::os::unix::fs::symlink(&cfg.control_socket, &control_link) {
                tracing::warn!(
                    "cannot link {} to the control socket: {e}",
                    control_link.display()
                );
            }
        }
        Some(Err(e)) => tracing::warn!(
            "no pid file and no control socket link for this mount (use ctl --socket {}): {e}",
            cfg.control_socket.display()
        ),
        None => {}
    }
    tracing::info!("control socket: {}", cfg.control_socket.display());

    // SIGINT / SIGTERM unmount, which ends the session loop below.
    let mut unmounter = session.unmount_callable();
    let mountpoint = cfg.mountpoint.clone();
    rt.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("signal handler");
        let mut int = signal(SignalKind::interrupt()).expect("signal handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("signal received, unmounting {}", mountpoint.display());
        if let Err(e) = unmounter.unmount() {
            tracing::warn!("unmount: {e}; detaching lazily");
            let _ = std::process::Command::new("fusermount3")
                .arg("-uz")
                .arg(&mountpoint)
                .status();
        }
    });

    if let Some(r) = ready.take() {
        r(Ok(Ready {
            read_only: read_only_reason.clone(),
        }));
    }
    // systemd (Type=notify): the mount is usable from now on. Nothing is sent when not
    // started by systemd.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    if let Some(why) = fell_back {
        tracing::info!("{why}");
    }
    let run_result = session.run();
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("unmounted {}", cfg.mountpoint.display());

    daemon.shutdown();
    let _ = std::fs::remove_file(&pid_path);
    let _ = std::fs::remove_file(&control_link);
    rt.shutdown_timeout(Duration::from_secs(1));
    run_result.map_err(|source| MountError::Fuse {
        path: cfg.mountpoint.display().to_string(),
        source,
    })
}

/// What the kernel caches, told of remote changes through fuser's `Notifier`. The
/// notifications go from a thread of their own: sent from inside a request handler for
/// the same inode (or from a refresh that request waits for), they could wait on that
/// very request.
struct KernelNotifier {
    tx: std::sync::Mutex<std::sync::mpsc::Sender<Inval>>,
}

enum Inval {
    Inode(u64),
    Entry(u64, String),
}

impl KernelNotifier {
    fn new(notifier: fuser::Notifier) -> KernelNotifier {
        let (tx, rx) = std::sync::mpsc::channel::<Inval>();
        std::thread::Builder::new()
            .name("davdrive-inval".into())
            .spawn(move || {
                for inval in rx {
                    let (what, result) = match &inval {
                        // Attributes and every cached page (a folder: its entry list).
                        Inval::Inode(ino) => (
                            format!("inode {ino}"),
                            notifier.inval_inode(fuser::INodeNo(*ino), 0, 0),
                        ),
                        Inval::Entry(parent, name) => (
                            format!("{name:?} in inode {parent}"),
                            notifier
                                .inval_entry(fuser::INodeNo(*parent), std::ffi::OsStr::new(name)),
                        ),
                    };
                    // ENOENT: the kernel has nothing cached for it; fine.
                    if let Err(e) = result {
                        if e.raw_os_error() != Some(libc::ENOENT) {
                            tracing::debug!("invalidating the kernel's cache of {what}: {e}");
                        }
                    }
                }
            })
            .expect("spawn a thread");
        KernelNotifier {
            tx: std::sync::Mutex::new(tx),
        }
    }

    fn send(&self, inval: Inval) {
        let _ = self.tx.lock().map(|t| t.send(inval));
    }
}

impl crate::fs::KernelCache for KernelNotifier {
    fn inval_inode(&self, ino: u64) {
        self.send(Inval::Inode(ino));
    }

    fn inval_entry(&self, parent: u64, name: &str) {
        self.send(Inval::Entry(parent, name.to_string()));
    }
}
