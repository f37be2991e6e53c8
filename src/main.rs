use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, CommandFactory, Parser, Subcommand};

use davdrive::config::{self, parse_duration, MountConfig};

/// Mount a WebDAV share as a local folder. Writes land on the local disk first and reach
/// the server through a durable journal, also across outages and crashes.
#[derive(Parser)]
#[command(name = "davdrive", version, about, long_about = None)]
// Settings from the file and the environment come first on the command line built for
// clap: a flag given later (the user's) wins.
#[command(args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mount the WebDAV collection at URL on MOUNTPOINT.
    ///
    /// Example: davdrive mount https://cloud.example.org/remote.php/dav/files/me/ ~/drive --user me --password-file ~/.davpass
    #[command(after_help = MOUNT_AFTER_HELP)]
    Mount(Box<MountArgs>),
    /// Unmount a davdrive mount. Changes not yet sent stay in the journal and are sent at
    /// the next mount.
    Unmount {
        /// The folder the share is mounted on.
        mountpoint: PathBuf,
    },
    /// Talk to a running mount: status, sync, journal, pin/evict, conflicts, metrics.
    ///
    /// Example: davdrive ctl --mount ~/drive status
    Ctl(CtlArgs),
    /// Serve a local folder over WebDAV (for trying davdrive without a server of your own).
    Serve {
        /// The folder to serve.
        dir: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
    },
    /// Print a shell completion script.
    ///
    /// Example: davdrive completions bash > /etc/bash_completion.d/davdrive
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Args)]
struct MountArgs {
    /// http(s) URL of the WebDAV collection to mount (no password in it).
    url: String,
    /// An existing empty folder to mount it on (not already a mount point).
    mountpoint: PathBuf,
    /// Mount even if the folder holds files (they are hidden while mounted).
    #[arg(long)]
    allow_non_empty: bool,
    /// Mount read-only: writes fail with EROFS and nothing is sent to the server.
    #[arg(long)]
    read_only: bool,
    /// Mount a plain web server read-only: directories are read from its HTML index
    /// pages (Apache, nginx), files with ranged GETs; writes fail with EROFS. Without
    /// it, a server that does not speak WebDAV but serves index pages is mounted so too.
    #[arg(long)]
    http: bool,
    /// Where cached content, the state store and the journal live.
    /// Default: $XDG_CACHE_HOME/davdrive/<id from URL and mountpoint>.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// User name for the server.
    #[arg(long)]
    user: Option<String>,
    /// File holding the password (one line). The DAVDRIVE_PASSWORD environment variable
    /// works too; the password is never taken from the command line.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// File holding a bearer token (one line), sent instead of a user and password.
    #[arg(long, conflicts_with_all = ["user", "password_file"])]
    bearer_token_file: Option<PathBuf>,
    /// PEM file with a CA certificate to trust (for a server with a private CA).
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Return once the mount is ready and keep serving in the background
    /// (log in <cache dir>/davdrive.log).
    #[arg(long)]
    daemon: bool,
    /// How long a directory listing is trusted before asking the server again.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    dir_ttl: Duration,
    /// How long the kernel may cache file attributes.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    attr_ttl: Duration,
    /// How long an operation waits for a folder listing refresh it started before
    /// answering from the cached listing (the refresh goes on in the background).
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    refresh_wait: Duration,
    /// How often pinned folders, folders of open files and recently used ones are
    /// checked for changes made on the server by others (0 turns it off).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    poll_interval: Duration,
    /// How often to check that the server is reachable.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    health_interval: Duration,
    /// Timeout of one request to the server.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// FUSE worker threads.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Let other users than the one mounting see the files (needs user_allow_other in
    /// /etc/fuse.conf when not root).
    #[arg(long)]
    allow_other: bool,
    /// Cached content not used for this long is removed (pinned and unsent content
    /// never is): 30m, 12h, 7d.
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    cache_max_age: Duration,
    /// Size cap of the cache (like 5G). Default: 10 GiB or 20% of the cache's
    /// filesystem, whichever is smaller.
    #[arg(long, value_parser = config::parse_size)]
    cache_max_size: Option<u64>,
    /// Keep at least this much free on the cache's filesystem, evicting if needed.
    #[arg(long, default_value = "1G", value_parser = config::parse_size)]
    cache_min_free: u64,
    /// Files from this size on are uploaded in resumable parts where the server takes
    /// PUT with Content-Range; smaller ones go as one streaming PUT.
    #[arg(long, default_value = "256M", value_parser = config::parse_size)]
    upload_parts_from: u64,
    /// Size of those parts: at most this much is sent again after a cut connection.
    #[arg(long, default_value = "64M", value_parser = config::parse_size)]
    upload_part_size: u64,
    /// Files from this size on send only the byte ranges written where the server takes
    /// partial updates, and a write to one needs none of its other bytes here.
    #[arg(long, default_value = "8M", value_parser = config::parse_size)]
    partial_updates_from: u64,
    /// The largest folder listing (PROPFIND reply) read from the server; a larger one is
    /// refused and the listing held before is kept.
    #[arg(long, default_value = "64M", value_parser = config::parse_size)]
    max_listing_size: u64,
    /// Let the kernel read fully cached files opened read-only straight from the cache
    /// (FUSE passthrough; Linux 6.9 or later, as root). The kernel then refuses, with
    /// EIO, to open such a file for writing until its readers have closed it.
    #[arg(long)]
    passthrough: bool,
    /// Where the control socket for `davdrive ctl` listens. Default:
    /// <cache dir>/control.sock.
    #[arg(long)]
    control_socket: Option<PathBuf>,
    /// Settings file (TOML): any option of this command by name, `dir_ttl = "5s"`.
    /// Default: $DAVDRIVE_CONFIG, else ~/.config/davdrive/config.toml if it exists.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the settings in effect, and where each came from, and exit.
    #[arg(long)]
    print_config: bool,
    /// Every file and folder is owned by this user id (default: the mounting user).
    #[arg(long)]
    uid: Option<u32>,
    /// Every file and folder has this group id (default: the mounting user's group).
    #[arg(long)]
    gid: Option<u32>,
    /// Permission bits removed from every file and folder (octal, like 022 or 077).
    #[arg(long, value_parser = config::parse_mode)]
    umask: Option<u32>,
    /// Permission bits of every file (octal, like 0644); wins over --umask.
    #[arg(long, value_parser = config::parse_mode)]
    file_mode: Option<u32>,
    /// Permission bits of every folder (octal, like 0755); wins over --umask.
    #[arg(long, value_parser = config::parse_mode)]
    dir_mode: Option<u32>,

    /// Serve the metrics (Prometheus text format) over HTTP on this address, like
    /// 127.0.0.1:9184. Loopback only, unless --metrics-allow-remote: the endpoint has
    /// no authentication.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Let --metrics-addr listen on an address other machines can reach.
    #[arg(long)]
    metrics_allow_remote: bool,

    /// A local file or folder to back up daily to the remote (repeatable). SQLite
    /// databases are copied consistently while in use; davdrive's own state goes with
    /// them. Without sources or --backup-at, no backup is scheduled.
    #[arg(long)]
    backup_source: Vec<PathBuf>,
    /// Daily backup at this local time (HH:MM), or `off`. Default: 00:00 once sources
    /// are named; given alone, backs up davdrive's own state.
    #[arg(long)]
    backup_at: Option<String>,
    /// Keep backups this many days (the newest successful one is always kept). Default 30.
    #[arg(long)]
    backup_keep_days: Option<u32>,
    /// gzip level of backup archives, 0 (none) to 9 (smallest). Default 6.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=9))]
    backup_compression: Option<u32>,
    /// Folder in the drive for the archives. Default /.davdrive/backups/<host>.
    #[arg(long)]
    backup_dir: Option<String>,
}

#[derive(Args)]
struct CtlArgs {
    /// The mount's control socket.
    #[arg(long, global = true, conflicts_with = "mount")]
    socket: Option<PathBuf>,
    /// The mountpoint of the mount to talk to (finds its control socket). Default: the
    /// mount the current folder is in.
    #[arg(long, global = true)]
    mount: Option<PathBuf>,
    /// Print the raw JSON reply.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCmd,
}

#[derive(Subcommand)]
enum CtlCmd {
    /// Online or not, journal, cache, limits, conflicts, uptime.
    Status,
    /// Run the health check and the replay now.
    Sync {
        /// Return when the journal is empty, or say what still blocks it.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// The changes waiting for the remote.
    Journal {
        /// Only the entries set aside as failed.
        #[arg(long)]
        failed: bool,
        #[command(subcommand)]
        action: Option<JournalCmd>,
    },
    /// Keep files (or everything below directories) cached for offline use.
    Pin {
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Undo pin.
    Unpin {
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Remove the cached content of files (refused for unsent changes).
    Evict {
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Cache totals and the largest and least recently used entries.
    Cache,
    /// Entries with their cache state: remote-only, partial, cached, pinned, dirty, conflict.
    Ls {
        /// Show the cache state (always shown; accepted for clarity).
        #[arg(long)]
        state: bool,
        /// A path inside the mount (absolute) or relative to its root.
        #[arg(default_value = ".")]
        path: String,
    },
    /// Versions changed on both sides.
    Conflicts {
        #[command(subcommand)]
        action: Option<ConflictsCmd>,
    },
    /// Check the server now: latency, DAV classes, partial PUT, quota.
    Health,
    /// Counters in the Prometheus text format.
    Metrics,
    /// Backups of local data (and davdrive's state) to the remote.
    Backup {
        #[command(subcommand)]
        action: BackupCmd,
    },
    /// Move a local folder onto the remote, verified and resumable.
    Migrate {
        #[command(subcommand)]
        action: MigrateCmd,
    },
}

#[derive(Subcommand)]
enum BackupCmd {
    /// Make a backup now.
    Run {
        /// Follow it until it is on the remote (exit status 1 if it fails or is partial).
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long (the backup goes on).
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// The last backup, the next one, and what the remote holds.
    Status,
    /// The archives on the remote.
    List,
    /// Download an archive and check its SHA-256 and every file in it.
    Verify { name: String },
    /// Download, check and unpack an archive into a folder.
    Restore {
        name: String,
        /// The folder to unpack into (made if missing).
        #[arg(long)]
        to: PathBuf,
        /// Write over files that exist there.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum MigrateCmd {
    /// Copy SRC_DIR (a local folder outside the mount) to DEST (a folder in the mount);
    /// returns the migration's id at once, the daemon does the work.
    Start {
        src_dir: PathBuf,
        /// A path inside the mount (absolute) or relative to its root; made if missing.
        dest: String,
        /// full: read each landed file back from the server and compare SHA-256;
        /// size: compare size and ETag.
        #[arg(long, default_value = "full", value_parser = ["full", "size"])]
        verify: String,
        /// Remove each source file once its copy on the server is verified.
        #[arg(long)]
        delete_source: bool,
        /// Leave out paths (relative to SRC_DIR) matching GLOB; may be repeated.
        #[arg(long, value_name = "GLOB")]
        exclude: Vec<String>,
        /// Copy what symbolic links point to (by default they are skipped and listed).
        #[arg(long)]
        follow_symlinks: bool,
    },
    /// Progress: files, bytes, rate, ETA (of the migrations not ended, without ID).
    Status {
        id: Option<i64>,
        /// Show a live progress bar until the migration ends or pauses.
        #[arg(long)]
        watch: bool,
    },
    /// Every migration of this mount.
    List,
    /// Stop taking new files (what is staged still uploads).
    Pause { id: i64 },
    /// Go on with a paused migration.
    Resume { id: i64 },
    /// Stop for good; what landed stays, and the reply says what was left.
    Cancel { id: i64 },
    /// Files that failed, and what was skipped, with the reason.
    Errors { id: i64 },
}

#[derive(Subcommand)]
enum JournalCmd {
    /// Try failed entries again.
    Retry {
        /// The entry (see `journal`).
        id: Option<i64>,
        /// Every failed entry.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Give up on an entry. A dropped upload's content is saved in the cache dir.
    Drop {
        id: i64,
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
enum ConflictsCmd {
    /// Keep one side (or both) of a conflict.
    Resolve {
        path: String,
        #[arg(long, value_parser = ["local", "remote", "both"])]
        keep: String,
    },
}

fn ctl(args: CtlArgs) -> ExitCode {
    use davdrive::control::client;
    use serde_json::json;
    let (socket, mountpoint) = match (&args.socket, &args.mount) {
        (Some(s), _) => (s.clone(), None),
        (None, Some(m)) => match std::fs::canonicalize(m) {
            Ok(m) => {
                let link = config::control_link(&m);
                if std::fs::symlink_metadata(&link).is_err() {
                    return fail(format!("{} is not a davdrive mount", m.display()));
                }
                (link, Some(m))
            }
            Err(e) => return fail(format!("--mount {}: {e}", m.display())),
        },
        // Inside a mount: that one.
        (None, None) => match mount_of_current_folder() {
            Some(m) => (config::control_link(&m), Some(m)),
            None => return fail(
                "not inside a davdrive mount: say which with --mount MOUNTPOINT (or --socket PATH)",
            ),
        },
    };
    // Paths relative to the current folder, when that lies in the mount; otherwise
    // from the mount's root, as before.
    let p = |given: String| in_mount(mountpoint.as_deref(), given);
    let ps = |given: Vec<String>| given.into_iter().map(p).collect::<Vec<_>>();
    let timeout = Duration::from_secs(600);
    let (cmd, req_args) = match args.command {
        CtlCmd::Status => ("status", json!({})),
        CtlCmd::Sync {
            wait: true,
            timeout: t,
        } => {
            return match client::sync_wait(&socket, t, args.json) {
                Ok(reply) => print_reply("sync", &reply, args.json, false),
                Err(e) => fail(e),
            }
        }
        CtlCmd::Sync { wait: false, .. } => ("sync", json!({"wait": false})),
        CtlCmd::Journal {
            failed,
            action: None,
        } => ("journal", json!({"failed": failed})),
        CtlCmd::Journal {
            action: Some(JournalCmd::Retry { id, all }),
            ..
        } => ("journal-retry", json!({"id": id, "all": all})),
        CtlCmd::Journal {
            action: Some(JournalCmd::Drop { id, yes }),
            ..
        } => ("journal-drop", json!({"id": id, "yes": yes})),
        CtlCmd::Pin { paths } => ("pin", json!({"paths": ps(paths)})),
        CtlCmd::Unpin { paths } => ("unpin", json!({"paths": ps(paths)})),
        CtlCmd::Evict { paths } => ("evict", json!({"paths": ps(paths)})),
        CtlCmd::Cache => ("cache", json!({})),
        CtlCmd::Ls { path, .. } => ("ls", json!({"path": p(path)})),
        CtlCmd::Conflicts { action: None } => ("conflicts", json!({})),
        CtlCmd::Conflicts {
            action: Some(ConflictsCmd::Resolve { path, keep }),
        } => ("conflicts-resolve", json!({"path": p(path), "keep": keep})),
        CtlCmd::Health => ("health", json!({})),
        CtlCmd::Metrics => ("metrics", json!({})),
        CtlCmd::Backup {
            action:
                BackupCmd::Run {
                    wait: true,
                    timeout,
                },
        } => return backup_run_wait(&socket, timeout, args.json),
        CtlCmd::Backup {
            action: BackupCmd::Run { wait: false, .. },
        } => ("backup-run", json!({})),
        CtlCmd::Backup {
            action: BackupCmd::Status,
        } => ("backup-status", json!({})),
        CtlCmd::Backup {
            action: BackupCmd::List,
        } => ("backup-list", json!({})),
        CtlCmd::Backup {
            action: BackupCmd::Verify { name },
        } => ("backup-verify", json!({"name": name})),
        CtlCmd::Backup {
            action: BackupCmd::Restore { name, to, force },
        } => {
            let to = match davdrive::control::backup::absolute_target(&to) {
                Ok(t) => t,
                Err(e) => return fail(e),
            };
            (
                "backup-restore",
                json!({"name": name, "to": to, "force": force}),
            )
        }
        CtlCmd::Migrate { action } => match action {
            MigrateCmd::Start {
                src_dir,
                dest,
                verify,
                delete_source,
                exclude,
                follow_symlinks,
            } => {
                // The daemon has another working directory.
                let src = std::path::absolute(&src_dir).unwrap_or(src_dir);
                (
                    "migrate-start",
                    json!({"src": src, "dest": p(dest), "verify": verify,
                        "delete_source": delete_source, "exclude": exclude,
                        "follow_symlinks": follow_symlinks}),
                )
            }
            MigrateCmd::Status { id, watch: true } => {
                return match client::watch_migration(&socket, id, args.json) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fail(format!("davdrive ctl migrate status: {e}")),
                };
            }
            MigrateCmd::Status { id, .. } => ("migrate-status", json!({"id": id})),
            MigrateCmd::List => ("migrate-list", json!({})),
            MigrateCmd::Pause { id } => ("migrate-pause", json!({"id": id})),
            MigrateCmd::Resume { id } => ("migrate-resume", json!({"id": id})),
            MigrateCmd::Cancel { id } => ("migrate-cancel", json!({"id": id})),
            MigrateCmd::Errors { id } => ("migrate-errors", json!({"id": id})),
        },
    };
    let failed_only = req_args["failed"] == true;
    let reply = match client::request(&socket, cmd, req_args, timeout) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    print_reply(cmd, &reply, args.json, failed_only)
}

/// Prints a reply as JSON or for a person; the exit status says whether it is ok.
/// `failed_only`: `journal --failed` was asked.
fn print_reply(cmd: &str, reply: &serde_json::Value, json: bool, failed_only: bool) -> ExitCode {
    use davdrive::control::client;
    let ok = reply["ok"].as_bool() == Some(true);
    if json {
        println!("{reply}");
    } else if ok && cmd == "journal" {
        print!("{}", client::journal_text(&reply["result"], failed_only));
    } else if ok {
        print!("{}", client::render(cmd, &reply["result"]));
    } else {
        eprintln!(
            "davdrive ctl {cmd}: {}",
            reply["error"].as_str().unwrap_or("error")
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The mountpoint of the davdrive mount the current folder is in, if any.
fn mount_of_current_folder() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .find(|d| std::fs::symlink_metadata(config::control_link(d)).is_ok())
        .map(Path::to_path_buf)
}

/// A path given to ctl: absolute ones as they are; a relative one as an absolute path
/// when, taken from the current folder, it lies in the mount (`ctl pin mnt/doc` from
/// the mount's parent, `ctl pin doc` from inside it); otherwise it is from the mount's
/// root, as the daemon reads it.
fn in_mount(mountpoint: Option<&Path>, given: String) -> String {
    let (Some(mnt), false) = (mountpoint, given.starts_with('/')) else {
        return given;
    };
    let Ok(cwd) = std::env::current_dir() else {
        return given;
    };
    let mut abs = PathBuf::new();
    for c in cwd.join(&given).components() {
        match c {
            std::path::Component::ParentDir => {
                abs.pop();
            }
            std::path::Component::CurDir => {}
            other => abs.push(other),
        }
    }
    if abs.starts_with(mnt) {
        abs.to_string_lossy().into_owned()
    } else {
        given
    }
}

fn backup_run_wait(socket: &Path, timeout: Duration, json_out: bool) -> ExitCode {
    match davdrive::control::backup::run_and_wait(socket, timeout, json_out) {
        Ok(w) => {
            if json_out {
                println!("{}", serde_json::json!({"ok": w.ok, "result": w.job}));
            } else if w.ok {
                print!("{}", w.text);
            } else {
                eprintln!("davdrive: {}", w.text);
            }
            if w.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => fail(e),
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    // fuser warns at every unmount that its own second unmount found nothing to do.
    let filter = EnvFilter::try_from_env("DAVDRIVE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,fuser::session=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn main() -> ExitCode {
    let mut argv = std::env::args_os();
    let arg0 = argv.next().unwrap_or_default();
    if Path::new(&arg0).file_name() == Some(davdrive::mount_helper::HELPER_NAME.as_ref()) {
        return mount_helper(argv.collect());
    }
    let all: Vec<OsString> = std::env::args_os().collect();
    if all.get(1).is_some_and(|a| a == "mount") {
        let user = &all[2..];
        let (argv, sources) = match layered_mount_args(user) {
            Ok(x) => x,
            Err(e) => return fail(e),
        };
        let cli = Cli::parse_from(
            [OsString::from("davdrive"), "mount".into()]
                .into_iter()
                .chain(argv.iter().cloned()),
        );
        let Cmd::Mount(args) = cli.command else {
            unreachable!("parsed a mount command")
        };
        if args.print_config {
            print_config(&argv, &sources);
            return ExitCode::SUCCESS;
        }
        return mount(*args, all[1..].to_vec());
    }
    let cli = Cli::parse();
    match cli.command {
        Cmd::Mount(args) => mount(*args, std::env::args_os().skip(1).collect()),
        Cmd::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "davdrive",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Cmd::Unmount { mountpoint } => unmount(&mountpoint),
        Cmd::Ctl(args) => ctl(args),
        Cmd::Serve { dir, addr } => {
            init_logging();
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            match rt.block_on(davdrive::serve::serve(dir, addr)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("davdrive serve: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// What `davdrive mount --help` says after the options.
const MOUNT_AFTER_HELP: &str = "\
Every option can also be set in the settings file (--config; its name with
underscores: dir_ttl = \"5s\", allow_other = true) and in the environment
(DAVDRIVE_DIR_TTL=5s, DAVDRIVE_ALLOW_OTHER=1). The command line wins over the
environment, the environment over the file. --print-config shows the result.

Mount options, for mount -t davdrive URL DIR -o OPTIONS and /etc/fstab (any option
above by its name, cache_dir=/var/cache/d, plus):
  ro, rw              read-only (--read-only) or read-write (the default)
  uid=N, gid=N        owner and group of every file and folder
  umask=022           permission bits removed from every file and folder
  file_mode=0644      permission bits of every file
  dir_mode=0755       permission bits of every folder
  allow_other         let other users than the one mounting see the files
  _netdev, nofail     for mount(8) and systemd: needs the network; do not fail boot
  password_file=FILE  never password=: a password in options shows in ps and fstab";

/// The options of `davdrive mount` that the settings file and the environment can set:
/// all but the positional arguments, help, --config, --print-config and --daemon.
fn mount_specs() -> Vec<config::OptSpec> {
    let cmd = Cli::command();
    let mount = cmd.find_subcommand("mount").expect("the mount command");
    mount
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            if matches!(long, "help" | "config" | "print-config" | "daemon") {
                return None;
            }
            Some(config::OptSpec {
                key: long.replace('-', "_"),
                long: long.to_string(),
                takes_value: a.get_action().takes_values(),
                repeats: matches!(a.get_action(), clap::ArgAction::Append),
            })
        })
        .collect()
}

/// `davdrive mount` arguments with the settings file's first, then the environment's,
/// then `user`'s: later ones win. Returns them with the source of each.
fn layered_mount_args(user: &[OsString]) -> Result<(Vec<OsString>, Vec<config::Source>), String> {
    let specs = mount_specs();
    let mut argv: Vec<OsString> = Vec::new();
    let mut sources = Vec::new();
    if let Some((path, _)) = config::config_file_path(user) {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("settings file {}: {e}", path.display()))?;
        for f in config::file_flags(&path, &text, &specs)? {
            argv.push(f.into());
            sources.push(config::Source::File(path.clone()));
        }
    }
    for (var, flags) in config::env_flags(&specs, |v| std::env::var(v).ok())? {
        for f in flags {
            argv.push(f.into());
            sources.push(config::Source::Env(var.clone()));
        }
    }
    for a in user {
        argv.push(a.clone());
        sources.push(config::Source::Flag);
    }
    Ok((argv, sources))
}

/// `--print-config`: every option with the value in effect and where it came from, in
/// the settings file's syntax.
fn print_config(argv: &[OsString], sources: &[config::Source]) {
    let cmd = Cli::command();
    let mount = cmd.find_subcommand("mount").expect("the mount command");
    let positional: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // Positional arguments: tokens not starting with `--` that are not a flag's value.
    let mut values: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut plain = Vec::new();
    let mut i = 0;
    while i < positional.len() {
        let t = &positional[i];
        let src = sources[i].to_string();
        if let Some(flag) = t.strip_prefix("--") {
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            let takes = mount
                .get_arguments()
                .find(|a| a.get_long() == Some(name))
                .is_some_and(|a| a.get_action().takes_values());
            let value = match (inline, takes) {
                (Some(v), _) => v,
                (None, true) => {
                    i += 1;
                    positional.get(i).cloned().unwrap_or_default()
                }
                (None, false) => "true".into(),
            };
            let key = name.replace('-', "_");
            match values.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push((value, src)),
                None => values.push((key, vec![(value, src)])),
            }
        } else {
            plain.push((t.clone(), src));
        }
        i += 1;
    }
    let quote = |v: &str| {
        // TOML integers have no leading zero: a mode stays a string.
        if v.parse::<i64>().is_ok() && (v == "0" || !v.starts_with('0')) {
            v.to_string()
        } else {
            format!("{v:?}")
        }
    };
    for (name, (v, src)) in ["url", "mountpoint"].iter().zip(plain.iter()) {
        println!("# {name} = {}    # {src}", quote(v));
    }
    for spec in mount_specs() {
        let set = values.iter().find(|(k, _)| *k == spec.key).map(|(_, v)| v);
        let line = match set {
            Some(v) if spec.repeats => {
                let items: Vec<String> = v.iter().map(|(x, _)| quote(x)).collect();
                let mut srcs: Vec<&str> = v.iter().map(|(_, s)| s.as_str()).collect();
                srcs.dedup();
                format!(
                    "{} = [{}]    # {}",
                    spec.key,
                    items.join(", "),
                    srcs.join(", ")
                )
            }
            Some(v) => {
                let (x, src) = v.last().expect("a value");
                let shown = if spec.takes_value {
                    quote(x)
                } else {
                    x.clone()
                };
                format!("{} = {shown}    # {src}", spec.key)
            }
            None => {
                let arg = mount
                    .get_arguments()
                    .find(|a| a.get_long() == Some(spec.long.as_str()));
                let default: Vec<String> = arg
                    .map(|a| {
                        a.get_default_values()
                            .iter()
                            .map(|d| d.to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                match (default.first(), spec.takes_value) {
                    (Some(d), true) => format!("{} = {}    # default", spec.key, quote(d)),
                    (_, false) => format!("{} = false    # default", spec.key),
                    (None, true) => format!("# {} not set", spec.key),
                }
            }
        };
        println!("{line}");
    }
    if std::env::var_os("DAVDRIVE_PASSWORD").is_some() {
        println!("# password: from the environment DAVDRIVE_PASSWORD (not shown)");
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("davdrive: {msg}");
    ExitCode::FAILURE
}

fn build_config(args: &MountArgs) -> Result<MountConfig, String> {
    let url = config::parse_url(&args.url).map_err(|e| e.to_string())?;
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
        None => config::default_cache_dir(&url, &mountpoint),
    };
    let password = match (&args.password_file, std::env::var("DAVDRIVE_PASSWORD")) {
        (Some(f), _) => Some(config::read_password_file(f).map_err(|e| e.to_string())?),
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
                config::read_password_file(f)
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
        cache: davdrive::cache::CacheLimits {
            max_age: args.cache_max_age,
            max_size: args.cache_max_size,
            min_free: args.cache_min_free,
            ..Default::default()
        },
        uploads: davdrive::fs::UploadSizes {
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
        attrs: config::AttrPolicy {
            uid: args.uid,
            gid: args.gid,
            umask: args.umask,
            file_mode: args.file_mode,
            dir_mode: args.dir_mode,
        },
        metrics_addr: match args.metrics_addr {
            Some(addr) => {
                davdrive::metrics::check_addr(addr, args.metrics_allow_remote)?;
                Some(addr)
            }
            None => None,
        },
        metrics_allow_remote: args.metrics_allow_remote,
        cache_dir,
    })
}

/// Backup settings: flags over the settings file over the defaults.
fn backup_config(args: &MountArgs) -> Result<davdrive::backup::BackupConfig, String> {
    use davdrive::backup;
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

const DAEMON_CHILD_ENV: &str = "DAVDRIVE_DAEMON_CHILD";

/// `mount.davdrive SPEC DIR [-sfnv] [-o OPTIONS]`, as mount(8) runs it: the options
/// become `davdrive mount` flags and the mount runs as with `--daemon`.
fn mount_helper(args: Vec<OsString>) -> ExitCode {
    let call = match davdrive::mount_helper::parse(args) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let mut argv: Vec<OsString> = vec!["mount".into()];
    argv.extend(call.mount_args);
    if call.verbose {
        // Safe to show: the password is never among the arguments.
        let shown: Vec<_> = argv.iter().map(|a| a.to_string_lossy()).collect();
        eprintln!("mount.davdrive: davdrive {}", shown.join(" "));
    }
    let (layered, _) = match layered_mount_args(&argv[1..]) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let cli = match Cli::try_parse_from(
        [OsString::from("davdrive"), "mount".into()]
            .into_iter()
            .chain(layered),
    ) {
        Ok(c) => c,
        Err(e) => {
            // clap's message with usage and hints, cut to its first line.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            return fail(first.trim_start_matches("error: "));
        }
    };
    let Cmd::Mount(args) = cli.command else {
        unreachable!("the helper always builds a mount command")
    };
    if call.fake {
        // -f: check everything that can be checked without mounting, the server and
        // the credentials included.
        return match build_config(&args) {
            Ok(cfg) => match davdrive::fuse::session::check(&cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            },
            Err(e) => fail(e),
        };
    }
    mount(*args, argv)
}

/// `argv`: the arguments (without the program name) that run this mount again as the
/// daemon.
fn mount(args: MountArgs, argv: Vec<OsString>) -> ExitCode {
    let cfg = match build_config(&args) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if args.daemon && std::env::var_os(DAEMON_CHILD_ENV).is_none() {
        return spawn_daemon(&cfg.cache_dir, argv);
    }
    init_logging();
    let is_child = std::env::var_os(DAEMON_CHILD_ENV).is_some();
    let log_path = cfg.cache_dir.join("davdrive.log");
    let result = davdrive::fuse::session::run(cfg, |r| {
        if is_child {
            match r {
                Ok(ready) => {
                    match ready.read_only {
                        Some(why) => println!("READY read-only: {why}"),
                        None => println!("READY"),
                    }
                    // From here on the parent is gone: log to the file.
                    redirect_output(&log_path);
                }
                Err(e) => println!("ERROR {e}"),
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn redirect_output(log: &Path) {
    use std::os::fd::AsRawFd;
    if let Ok(f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        unsafe {
            libc::dup2(f.as_raw_fd(), 1);
            libc::dup2(f.as_raw_fd(), 2);
        }
    }
}

/// Starts this same program again with `argv` (a `davdrive mount … --daemon` command
/// line, whatever name this one was called by) in its own session and waits until it
/// reports the mount ready (exit 0) or failed (its error, exit 1).
fn spawn_daemon(cache_dir: &Path, argv: Vec<OsString>) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(format!("cannot find my own executable: {e}")),
    };
    let mut cmd = Command::new(exe);
    // Named davdrive even when this is mount.davdrive, so it mounts instead of parsing
    // helper arguments again.
    cmd.arg0("davdrive")
        .args(argv)
        .env(DAEMON_CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot start the daemon: {e}")),
    };
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // Read beside stdout: a daemon logging much before it is ready would otherwise
    // fill the pipe and wait on it while we wait for READY.
    let stderr_text = std::thread::spawn(move || {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        err
    });
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(rest) = line.strip_prefix("READY") {
            let mode = match rest.trim() {
                "" => String::new(),
                ro => format!(" {ro}"),
            };
            eprintln!(
                "davdrive: mounted{mode}; log in {}",
                cache_dir.join("davdrive.log").display()
            );
            return ExitCode::SUCCESS;
        }
        if let Some(msg) = line.strip_prefix("ERROR ") {
            let _ = child.wait();
            return fail(msg);
        }
    }
    let _ = child.wait();
    let err = stderr_text.join().unwrap_or_default();
    fail(format!(
        "the daemon stopped before the mount was ready: {}",
        err.lines().last().unwrap_or("no message")
    ))
}

fn unmount(mountpoint: &Path) -> ExitCode {
    let mp = std::path::absolute(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let mp = std::fs::canonicalize(&mp).unwrap_or(mp);
    match davdrive::fuse::session::mounted_fstype(&mp) {
        None => return fail(format!("{} is not mounted", mp.display())),
        Some(t) if t != "fuse.davdrive" => {
            return fail(format!("{} is not a davdrive mount ({t})", mp.display()))
        }
        Some(_) => {}
    }
    let pid = std::fs::read_to_string(config::pid_file(&mp))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    // fusermount3's own message becomes part of ours: one line, from one program.
    let out = Command::new("fusermount3")
        .arg("-u")
        .arg(&mp)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let why = String::from_utf8_lossy(&o.stderr);
            let why = why
                .lines()
                .last()
                .unwrap_or("")
                .rsplit(": ")
                .next()
                .unwrap_or("")
                .trim();
            let hint = if why.contains("busy") {
                " (a program has a file or folder in it open)"
            } else {
                ""
            };
            return fail(format!(
                "could not unmount {}: {}{hint}",
                mp.display(),
                if why.is_empty() {
                    "fusermount3 failed"
                } else {
                    why
                }
            ));
        }
        Err(e) => {
            return fail(format!(
                "cannot run fusermount3 (install the fuse3 package): {e}"
            ))
        }
    }
    // Wait for the daemon to hand everything to the journal and exit.
    if let Some(pid) = pid {
        let deadline = Instant::now() + Duration::from_secs(60);
        while process_running(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    ExitCode::SUCCESS
}

/// Alive and not a zombie (an exited daemon whose parent has not reaped it yet).
fn process_running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
