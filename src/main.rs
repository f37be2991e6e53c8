//! The `davdrive` command line: the clap definitions of every command and their
//! conversion into calls of the library (settings in `config`, the mount in
//! `fuse::session`, the background process and unmounting in `daemon::process`, the
//! control client in `control::client`). Nothing else lives here.
//!
//! Over 600 lines: the clap definitions of every command and flag, with their help
//! texts.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

use davdrive::config::{self, parse_duration, MountArgs};
use davdrive::control::cmd;
use davdrive::control::protocol::{Keep, Request};
use davdrive::daemon::process;
use davdrive::migrate::Verify;

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
        /// How each landed file is checked against the server.
        #[arg(long, value_enum, default_value_t = Verify::Full)]
        verify: Verify,
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
        #[arg(long, value_enum)]
        keep: Keep,
    },
}

fn ctl(args: CtlArgs) -> ExitCode {
    use davdrive::control::client;
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
    let req = match args.command.into_request(&p) {
        Ok(Ctl::Send(req)) => req,
        Ok(Ctl::SyncWait(t)) => {
            return match cmd::sync::sync_wait(&socket, t, args.json) {
                Ok(reply) => print_reply(&Request::Sync(Default::default()), &reply, args.json),
                Err(e) => fail(e),
            }
        }
        Ok(Ctl::BackupRunWait(t)) => return backup_run_wait(&socket, t, args.json),
        Ok(Ctl::WatchMigration(id)) => {
            return match cmd::migrate_status::watch_migration(&socket, id, args.json) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(format!("davdrive ctl migrate status: {e}")),
            };
        }
        Err(e) => return fail(e),
    };
    let reply = match client::request(&socket, &req, Duration::from_secs(600)) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    print_reply(&req, &reply, args.json)
}

/// What a `ctl` command line asks for: one request, or one of the commands that follow
/// the daemon with a series of them.
enum Ctl {
    Send(Request),
    /// `sync --wait`
    SyncWait(Duration),
    /// `backup run --wait`
    BackupRunWait(Duration),
    /// `migrate status --watch`
    WatchMigration(Option<i64>),
}

impl CtlCmd {
    /// The request a command line makes; `p` turns a path given into one the daemon
    /// reads (see `in_mount`).
    fn into_request(self, p: &dyn Fn(String) -> String) -> Result<Ctl, String> {
        use davdrive::control::protocol::*;
        let ps = |given: Vec<String>| PathsArgs {
            paths: given.into_iter().map(p).collect(),
        };
        Ok(Ctl::Send(match self {
            CtlCmd::Status => Request::Status {},
            CtlCmd::Sync {
                wait: true,
                timeout,
            } => return Ok(Ctl::SyncWait(timeout)),
            CtlCmd::Sync { wait: false, .. } => Request::Sync(SyncArgs::default()),
            CtlCmd::Journal {
                failed,
                action: None,
            } => Request::Journal(JournalArgs { failed }),
            CtlCmd::Journal {
                action: Some(JournalCmd::Retry { id, all }),
                ..
            } => Request::JournalRetry(JournalRetryArgs { id, all }),
            CtlCmd::Journal {
                action: Some(JournalCmd::Drop { id, yes }),
                ..
            } => Request::JournalDrop(JournalDropArgs { id, yes }),
            CtlCmd::Pin { paths } => Request::Pin(ps(paths)),
            CtlCmd::Unpin { paths } => Request::Unpin(ps(paths)),
            CtlCmd::Evict { paths } => Request::Evict(ps(paths)),
            CtlCmd::Cache => Request::Cache {},
            CtlCmd::Ls { path, .. } => Request::Ls(LsArgs { path: p(path) }),
            CtlCmd::Conflicts { action: None } => Request::Conflicts {},
            CtlCmd::Conflicts {
                action: Some(ConflictsCmd::Resolve { path, keep }),
            } => Request::ConflictsResolve(ConflictsResolveArgs {
                path: p(path),
                keep,
            }),
            CtlCmd::Health => Request::Health {},
            CtlCmd::Metrics => Request::Metrics {},
            CtlCmd::Backup { action } => match action {
                BackupCmd::Run {
                    wait: true,
                    timeout,
                } => return Ok(Ctl::BackupRunWait(timeout)),
                BackupCmd::Run { wait: false, .. } => Request::BackupRun {},
                BackupCmd::Status => Request::BackupStatus {},
                BackupCmd::List => Request::BackupList {},
                BackupCmd::Verify { name } => Request::BackupVerify(BackupNameArgs { name }),
                BackupCmd::Restore { name, to, force } => {
                    Request::BackupRestore(BackupRestoreArgs {
                        name,
                        to: cmd::backup_verify::absolute_target(&to)?,
                        force,
                    })
                }
            },
            CtlCmd::Migrate { action } => match action {
                MigrateCmd::Start {
                    src_dir,
                    dest,
                    verify,
                    delete_source,
                    exclude,
                    follow_symlinks,
                } => Request::MigrateStart(MigrateStartArgs {
                    // The daemon has another working directory.
                    src: std::path::absolute(&src_dir).unwrap_or(src_dir),
                    dest: p(dest),
                    verify,
                    delete_source,
                    exclude: Some(exclude),
                    follow_symlinks,
                }),
                MigrateCmd::Status { id, watch: true } => return Ok(Ctl::WatchMigration(id)),
                MigrateCmd::Status { id, .. } => Request::MigrateStatus(MigrateStatusArgs { id }),
                MigrateCmd::List => Request::MigrateList {},
                MigrateCmd::Pause { id } => Request::MigratePause(IdArgs { id }),
                MigrateCmd::Resume { id } => Request::MigrateResume(IdArgs { id }),
                MigrateCmd::Cancel { id } => Request::MigrateCancel(IdArgs { id }),
                MigrateCmd::Errors { id } => {
                    Request::MigrateErrors(MigrateErrorsArgs { id, limit: None })
                }
            },
        }))
    }
}

/// Prints a reply as JSON or for a person; the exit status says whether it is ok.
fn print_reply(req: &Request, reply: &serde_json::Value, json: bool) -> ExitCode {
    let ok = reply["ok"].as_bool() == Some(true);
    if json {
        println!("{reply}");
    } else if ok {
        print!("{}", cmd::render(req, &reply["result"]));
    } else {
        eprintln!(
            "davdrive ctl {}: {}",
            req.name(),
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
    match cmd::backup_run::run_and_wait(socket, timeout, json_out) {
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
    limit_malloc_arenas();
    let mut argv = std::env::args_os();
    let arg0 = argv.next().unwrap_or_default();
    if Path::new(&arg0).file_name() == Some(davdrive::mount_helper::HELPER_NAME.as_ref()) {
        return mount_helper(argv.collect());
    }
    let all: Vec<OsString> = std::env::args_os().collect();
    if all.get(1).is_some_and(|a| a == "mount") {
        let user = &all[2..];
        let (argv, sources) = match config::layered_mount_args(user) {
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
            print!("{}", config::render_config(&argv, &sources));
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
        Cmd::Unmount { mountpoint } => match process::unmount(&mountpoint) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
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

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("davdrive: {msg}");
    ExitCode::FAILURE
}

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
    let (layered, _) = match config::layered_mount_args(&argv[1..]) {
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
        return match config::build_config(&args) {
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
    let cfg = match config::build_config(&args) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if args.daemon && !process::is_child() {
        return match process::start_in_background(&cfg.cache_dir, argv) {
            Ok(d) => {
                let mode = d.mode.map(|m| format!(" {m}")).unwrap_or_default();
                eprintln!("davdrive: mounted{mode}; log in {}", d.log.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        };
    }
    init_logging();
    let is_child = process::is_child();
    let log_path = cfg.cache_dir.join("davdrive.log");
    let result = davdrive::fuse::session::run(cfg, |r| {
        if is_child {
            process::report_to_parent(r, &log_path);
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// glibc gives each thread that allocates at once an arena of its own, up to eight per
/// core, and keeps what is freed in each: after three `ls -l` of a 50,000-entry folder
/// the daemon held 102 MiB, with two arenas 54 MiB (peak 61 MiB). The daemon's threads
/// are a few FUSE threads and two runtime workers, so two arenas cost no waiting worth
/// measuring. Done before any thread starts; `MALLOC_ARENA_MAX` set by the user wins.
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no thread runs yet.
        #[cfg(target_env = "gnu")]
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
