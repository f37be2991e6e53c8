//! The flags of `davdrive mount` and their validation into a [`MountConfig`]: what the
//! command line, the settings file and the environment (all three arrive here as flags,
//! see `layers`) say, checked in one place.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{parse_duration, parse_mode, parse_size, MountConfig};

/// The options of `davdrive mount`. Every one can also come from the settings file or the
/// environment (see [`super::layered_mount_args`]).
#[derive(Args, Debug)]
pub struct MountArgs {
    /// http(s) URL of the WebDAV collection to mount (no password in it).
    pub url: String,
    /// An existing empty folder to mount it on (not already a mount point).
    pub mountpoint: PathBuf,
    /// Mount even if the folder holds files (they are hidden while mounted).
    #[arg(long)]
    pub allow_non_empty: bool,
    /// Mount read-only: writes fail with EROFS and nothing is sent to the server.
    #[arg(long)]
    pub read_only: bool,
    /// Mount a plain web server read-only: directories are read from its HTML index
    /// pages (Apache, nginx), files with ranged GETs; writes fail with EROFS. Without
    /// it, a server that does not speak WebDAV but serves index pages is mounted so too.
    #[arg(long)]
    pub http: bool,
    /// Where cached content, the state store and the journal live.
    /// Default: $XDG_CACHE_HOME/davdrive/<id from URL and mountpoint>.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// User name for the server.
    #[arg(long)]
    pub user: Option<String>,
    /// File holding the password (one line). The DAVDRIVE_PASSWORD environment variable
    /// works too; the password is never taken from the command line.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// File holding a bearer token (one line), sent instead of a user and password.
    #[arg(long, conflicts_with_all = ["user", "password_file"])]
    pub bearer_token_file: Option<PathBuf>,
    /// PEM file with a CA certificate to trust (for a server with a private CA).
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// Return once the mount is ready and keep serving in the background
    /// (log in <cache dir>/davdrive.log).
    #[arg(long)]
    pub daemon: bool,
    /// How long a directory listing is trusted before asking the server again.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub dir_ttl: Duration,
    /// How long the kernel may cache file attributes.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub attr_ttl: Duration,
    /// How long an operation waits for a folder listing refresh it started before
    /// answering from the cached listing (the refresh goes on in the background).
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub refresh_wait: Duration,
    /// How often pinned folders, folders of open files and recently used ones are
    /// checked for changes made on the server by others (0 turns it off).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// How often to check that the server is reachable.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub health_interval: Duration,
    /// Timeout of one request to the server.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// FUSE worker threads.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Let other users than the one mounting see the files (needs user_allow_other in
    /// /etc/fuse.conf when not root).
    #[arg(long)]
    pub allow_other: bool,
    /// Cached content not used for this long is removed (pinned and unsent content
    /// never is): 30m, 12h, 7d.
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    pub cache_max_age: Duration,
    /// Size cap of the cache (like 5G). Default: 10 GiB or 20% of the cache's
    /// filesystem, whichever is smaller.
    #[arg(long, value_parser = parse_size)]
    pub cache_max_size: Option<u64>,
    /// Keep at least this much free on the cache's filesystem, evicting if needed.
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    pub cache_min_free: u64,
    /// Files from this size on are uploaded in resumable parts where the server takes
    /// PUT with Content-Range; smaller ones go as one streaming PUT.
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub upload_parts_from: u64,
    /// Size of those parts: at most this much is sent again after a cut connection.
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    pub upload_part_size: u64,
    /// Files from this size on send only the byte ranges written where the server takes
    /// partial updates, and a write to one needs none of its other bytes here.
    #[arg(long, default_value = "8M", value_parser = parse_size)]
    pub partial_updates_from: u64,
    /// The largest folder listing (PROPFIND reply) read from the server; a larger one is
    /// refused and the listing held before is kept.
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    pub max_listing_size: u64,
    /// Let the kernel read fully cached files opened read-only straight from the cache
    /// (FUSE passthrough; Linux 6.9 or later, as root). The kernel then refuses, with
    /// EIO, to open such a file for writing until its readers have closed it.
    #[arg(long)]
    pub passthrough: bool,
    /// Where the control socket for `davdrive ctl` listens. Default:
    /// <cache dir>/control.sock.
    #[arg(long)]
    pub control_socket: Option<PathBuf>,
    /// Settings file (TOML): any option of this command by name, `dir_ttl = "5s"`.
    /// Default: $DAVDRIVE_CONFIG, else ~/.config/davdrive/config.toml if it exists.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the settings in effect, and where each came from, and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Every file and folder is owned by this user id (default: the mounting user).
    #[arg(long)]
    pub uid: Option<u32>,
    /// Every file and folder has this group id (default: the mounting user's group).
    #[arg(long)]
    pub gid: Option<u32>,
    /// Permission bits removed from every file and folder (octal, like 022 or 077).
    #[arg(long, value_parser = parse_mode)]
    pub umask: Option<u32>,
    /// Permission bits of every file (octal, like 0644); wins over --umask.
    #[arg(long, value_parser = parse_mode)]
    pub file_mode: Option<u32>,
    /// Permission bits of every folder (octal, like 0755); wins over --umask.
    #[arg(long, value_parser = parse_mode)]
    pub dir_mode: Option<u32>,

    /// Serve the metrics (Prometheus text format) over HTTP on this address, like
    /// 127.0.0.1:9184. Loopback only, unless --metrics-allow-remote: the endpoint has
    /// no authentication.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Let --metrics-addr listen on an address other machines can reach.
    #[arg(long)]
    pub metrics_allow_remote: bool,

    /// A local file or folder to back up daily to the remote (repeatable). SQLite
    /// databases are copied consistently while in use; davdrive's own state goes with
    /// them. Without sources or --backup-at, no backup is scheduled.
    #[arg(long)]
    pub backup_source: Vec<PathBuf>,
    /// Daily backup at this local time (HH:MM), or `off`. Default: 00:00 once sources
    /// are named; given alone, backs up davdrive's own state.
    #[arg(long)]
    pub backup_at: Option<String>,
    /// Keep backups this many days (the newest successful one is always kept). Default 30.
    #[arg(long)]
    pub backup_keep_days: Option<u32>,
    /// gzip level of backup archives, 0 (none) to 9 (smallest). Default 6.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub backup_compression: Option<u32>,
    /// Folder in the drive for the archives. Default /.davdrive/backups/<host>.
    #[arg(long)]
    pub backup_dir: Option<String>,
}

pub fn build_config(args: &MountArgs) -> Result<MountConfig, String> {
    let url = super::parse_url(&args.url).map_err(|e| e.to_string())?;
    let mountpoint = std::fs::canonicalize(&args.mountpoint)
        .or_else(|e| {
            // A dead mount left by a crashed daemon cannot be canonicalised; use it as given.
            if e.raw_os_error() == Some(libc::ENOTCONN) {
                std::path::absolute(&args.mountpoint)
            } else {
                Err(e)
            }
        })
        .map_err(|e| format!("mountpoint {}: {e}", args.mountpoint.display()))?;
    let cache_dir = match &args.cache_dir {
        Some(d) => std::path::absolute(d).map_err(|e| format!("cache dir {}: {e}", d.display()))?,
        None => super::default_cache_dir(&url, &mountpoint),
    };
    let password = match (&args.password_file, std::env::var("DAVDRIVE_PASSWORD")) {
        (Some(f), _) => Some(super::read_password_file(f).map_err(|e| e.to_string())?),
        (None, Ok(p)) => Some(p),
        (None, Err(_)) => None,
    };
    let user = args
        .user
        .clone()
        .or_else(|| (!url.username().is_empty()).then(|| url.username().to_string()));
    let ca_cert_pem = match &args.ca_cert {
        Some(p) => Some(std::fs::read(p).map_err(|e| format!("--ca-cert {}: {e}", p.display()))?),
        None => None,
    };
    Ok(MountConfig {
        url,
        mountpoint,
        user,
        password,
        bearer_token: match &args.bearer_token_file {
            Some(f) => Some(
                super::read_password_file(f)
                    .map_err(|e| format!("--bearer-token-file: {e}"))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        },
        ca_cert_pem,
        dir_ttl: args.dir_ttl,
        attr_ttl: args.attr_ttl,
        refresh_wait: args.refresh_wait,
        poll_interval: args.poll_interval,
        health_interval: args.health_interval,
        request_timeout: args.request_timeout,
        max_listing_size: args.max_listing_size,
        threads: args.threads,
        allow_other: args.allow_other,
        cache: crate::cache::CacheLimits {
            max_age: args.cache_max_age,
            max_size: args.cache_max_size,
            min_free: args.cache_min_free,
            ..Default::default()
        },
        uploads: crate::fs::UploadSizes {
            parts_from: args.upload_parts_from.max(1),
            part: args.upload_part_size.max(1 << 20),
            partial_from: args.partial_updates_from,
            ..Default::default()
        },
        passthrough: args.passthrough,
        control_socket: match &args.control_socket {
            Some(p) => std::path::absolute(p)
                .map_err(|e| format!("--control-socket {}: {e}", p.display()))?,
            None => cache_dir.join("control.sock"),
        },
        backup: backup_config(args)?,
        http: args.http,
        read_only: args.read_only,
        allow_non_empty: args.allow_non_empty,
        attrs: super::AttrPolicy {
            uid: args.uid,
            gid: args.gid,
            umask: args.umask,
            file_mode: args.file_mode,
            dir_mode: args.dir_mode,
        },
        metrics_addr: match args.metrics_addr {
            Some(addr) => {
                crate::metrics::check_addr(addr, args.metrics_allow_remote)?;
                Some(addr)
            }
            None => None,
        },
        metrics_allow_remote: args.metrics_allow_remote,
        cache_dir,
    })
}

/// Backup settings: flags over the settings file over the defaults.
pub fn backup_config(args: &MountArgs) -> Result<crate::backup::BackupConfig, String> {
    use crate::backup;
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into())
        .replace('/', "_");
    let mut cfg = backup::BackupConfig::new(&host);
    for s in &args.backup_source {
        let abs =
            std::path::absolute(s).map_err(|e| format!("backup source {}: {e}", s.display()))?;
        if !cfg.sources.contains(&abs) {
            cfg.sources.push(abs);
        }
    }
    // Backups upload the state store (the whole file listing) and the named sources:
    // only when asked for, by naming sources or a time.
    match args.backup_at.as_ref() {
        Some(at) => cfg.at = backup::parse_at(at).map_err(|e| format!("--backup-at: {e}"))?,
        None if cfg.sources.is_empty() => cfg.at = None,
        None => {}
    }
    if let Some(d) = args.backup_keep_days {
        if d == 0 {
            return Err("--backup-keep-days: keep at least 1 day".into());
        }
        cfg.keep_days = d;
    }
    if let Some(level) = args.backup_compression {
        if level > 9 {
            return Err(format!("backup compression {level}: use 0 to 9"));
        }
        cfg.compression = level;
    }
    if let Some(dir) = args.backup_dir.as_ref() {
        let dir = format!("/{}", dir.trim_matches('/'));
        if dir == "/" || dir.split('/').any(|p| p == "..") {
            return Err(format!(
                "--backup-dir {dir}: give a folder inside the drive"
            ));
        }
        cfg.dir = dir;
    }
    Ok(cfg)
}
