//! The daemon: [`Daemon::start`] opens a drive's state and starts every background
//! task — journal replayer, health probe, cache sweeper, folder poller, control socket
//! server, backup scheduler, migration worker and, when asked, the metrics endpoint —
//! and [`Daemon::shutdown`] stops them all through the one shutdown signal every task
//! was given. `davdrive mount` runs a daemon under a FUSE session (`fuse::session`);
//! the tests run the same one without a kernel, so what they exercise is what a mount
//! runs.
//!
//! `process`: the daemon as a process (started in the background, unmounted).

pub mod process;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backup::{BackupConfig, Backups};
use crate::clock::Clock;
use crate::fs::{Core, CoreConfig};
use crate::health::{self, Health};
use crate::jobs::Jobs;
use crate::journal;
use crate::migrate::Migrations;
use crate::remote::Remote;

/// What a daemon is started with. [`DaemonConfig::new`] gives the defaults of a mount
/// for everything but the state dir.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Where cached content, the state store and the journal live.
    pub state_dir: PathBuf,
    /// How the core behaves. Its clock is the one given to [`Daemon::start`].
    pub core: CoreConfig,
    /// Whether the remote answered when the daemon started: the first health state.
    pub online: bool,
    /// How long that first check took; shown as the last check until the probe runs.
    pub first_latency: Option<Duration>,
    pub health_interval: Duration,
    /// Where the control socket listens.
    pub control_socket: PathBuf,
    /// The folder the drive is mounted on: paths given to the control socket are read
    /// from it, and migrations refuse sources inside it. Without a kernel, a name
    /// nothing is mounted on.
    pub mountpoint: PathBuf,
    pub backup: BackupConfig,
    /// Why the drive is read-only, if it is: nothing is written and no backup is
    /// scheduled.
    pub read_only: Option<String>,
    /// Serve the metrics over HTTP on this address.
    pub metrics_addr: Option<SocketAddr>,
    /// Let `metrics_addr` be other than loopback.
    pub metrics_allow_remote: bool,
    /// Run the cache sweeper. Tests that sweep by hand, to see what one sweep does,
    /// turn it off.
    pub sweeper: bool,
    /// List the root before the tasks start when the remote answers, as mounting does:
    /// a server that goes away a moment later leaves a drive that can still create in
    /// its root and list it.
    pub list_root: bool,
    /// How the remote is named in the log (a mount: its URL without credentials).
    pub remote_name: String,
}

impl DaemonConfig {
    pub fn new(state_dir: impl Into<PathBuf>) -> DaemonConfig {
        let state_dir = state_dir.into();
        let mut backup = BackupConfig::new("localhost");
        // Backups are scheduled only when asked for.
        backup.at = None;
        DaemonConfig {
            core: CoreConfig::default(),
            online: true,
            first_latency: None,
            health_interval: Duration::from_secs(15),
            control_socket: state_dir.join("control.sock"),
            mountpoint: state_dir.join("mnt"),
            backup,
            read_only: None,
            metrics_addr: None,
            metrics_allow_remote: false,
            sweeper: true,
            list_root: false,
            remote_name: "the remote".into(),
            state_dir,
        }
    }
}

/// Why a daemon did not start, in one line for the user.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// A running daemon. Dropped without [`Daemon::shutdown`] (a failed test), its tasks
/// are still told to stop.
pub struct Daemon {
    core: Arc<Core>,
    health: Health,
    jobs: Arc<Jobs>,
    backups: Arc<Backups>,
    migrations: Arc<Migrations>,
    control_socket: PathBuf,
    metrics_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    replayer: Option<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
    rt: Handle,
}

impl Daemon {
    /// Opens the state in `cfg.state_dir` and starts every background task on the
    /// current tokio runtime (call it inside one, or with its handle entered). Fails,
    /// before any task runs, when the state cannot be opened, the control socket or
    /// the metrics address is taken, or interrupted migrations or backups cannot be
    /// taken up again.
    pub fn start(
        mut cfg: DaemonConfig,
        remote: Arc<dyn Remote>,
        clock: Clock,
    ) -> Result<Daemon, StartError> {
        let rt = Handle::try_current()
            .map_err(|e| StartError(format!("the daemon needs a tokio runtime: {e}")))?;
        let health = Health::new(cfg.online);
        if cfg.first_latency.is_some() {
            // The check just made is the first one status reports.
            health.mark_online(cfg.first_latency);
        }
        cfg.core.clock = clock;
        cfg.core.read_only = cfg.read_only.is_some();
        let core = Core::load(
            &cfg.state_dir,
            remote.clone(),
            rt.clone(),
            health.clone(),
            cfg.core,
        )
        .map_err(|e| {
            StartError(format!(
                "cannot open the cache in {}: {e}",
                cfg.state_dir.display()
            ))
        })?;

        // A socket a live daemon answers on means this one must not start.
        let control = crate::control::bind(&cfg.control_socket).map_err(StartError)?;
        // An address in use or refused fails the start too.
        let metrics_listener = match cfg.metrics_addr {
            Some(addr) => {
                crate::metrics::check_addr(addr, cfg.metrics_allow_remote).map_err(StartError)?;
                Some(
                    listen_tcp(addr)
                        .map_err(|e| StartError(format!("--metrics-addr {addr}: {e}")))?,
                )
            }
            None => None,
        };
        let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());

        if cfg.list_root && cfg.online {
            if let Err(e) = core.list_root_for_mount() {
                tracing::warn!("cannot list the root of {} yet: {e}", cfg.remote_name);
            }
        }

        // Before the replayer: migrations cut off by a crash undo their partial copies
        // before those could be sent.
        let jobs = Arc::new(Jobs::default());
        let migrations =
            Migrations::start(core.clone(), jobs.clone(), Some(cfg.mountpoint.clone()))
                .map_err(|e| StartError(format!("cannot resume migrations: {e}")))?;
        let mut backup_cfg = cfg.backup;
        if cfg.read_only.is_some() {
            // Backups are uploads: nothing to schedule on a remote that cannot take them.
            backup_cfg.at = None;
        }
        let backups = Backups::start(core.clone(), backup_cfg, jobs.clone())
            .map_err(|e| StartError(format!("backups: {e}")))?;

        let (shutdown, stop) = watch::channel(false);
        let mut tasks = vec![
            rt.spawn(backups.clone().schedule(stop.clone())),
            rt.spawn(crate::control::serve(
                control,
                Arc::new(crate::control::Context {
                    core: core.clone(),
                    mountpoint: cfg.mountpoint,
                    started: SystemTime::now(),
                    jobs: jobs.clone(),
                    backups: backups.clone(),
                    migrations: migrations.clone(),
                    read_only: cfg.read_only,
                    metrics_addr,
                }),
                stop.clone(),
            )),
        ];
        if let (Some(listener), Some(addr)) = (metrics_listener, metrics_addr) {
            tracing::info!("metrics: http://{addr}/metrics");
            let core = core.clone();
            tasks.push(rt.spawn(crate::metrics::serve(
                listener,
                Arc::new(move || {
                    crate::control::cmd::metrics::gauges(&core).unwrap_or_else(|e| {
                        tracing::warn!("metrics: cannot read the gauges: {}", e.0);
                        Default::default()
                    })
                }),
                stop.clone(),
            )));
        }
        tasks.push(rt.spawn(health::probe_loop(
            health.clone(),
            remote,
            cfg.health_interval,
            stop.clone(),
        )));
        let replayer = rt.spawn(journal::replay::run(core.clone(), stop.clone()));
        tasks.push(rt.spawn(crate::fs::poll::run(core.clone(), stop.clone())));
        if cfg.sweeper {
            tasks.push(rt.spawn(crate::cache::sweeper::run(core.clone(), stop)));
        }
        Ok(Daemon {
            core,
            health,
            jobs,
            backups,
            migrations,
            control_socket: cfg.control_socket,
            metrics_addr,
            shutdown,
            replayer: Some(replayer),
            tasks,
            rt,
        })
    }

    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    pub fn jobs(&self) -> &Arc<Jobs> {
        &self.jobs
    }

    pub fn backups(&self) -> &Arc<Backups> {
        &self.backups
    }

    pub fn migrations(&self) -> &Arc<Migrations> {
        &self.migrations
    }

    /// Where the control socket listens.
    pub fn control_socket(&self) -> &std::path::Path {
        &self.control_socket
    }

    /// Where the metrics endpoint listens, if it does.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// A clean stop, as at unmount: migrations stop after their current file (they
    /// resume at the next start), everything written is handed to the journal, every
    /// task is told to stop, and the replayer gets a moment to finish what it is
    /// sending; the network is not waited for beyond that. Call it outside the
    /// runtime's threads.
    pub fn shutdown(mut self) {
        self.migrations.shutdown();
        self.core.commit_all();
        self.backups.stop();
        let _ = self.shutdown.send(true);
        if let Some(replayer) = self.replayer.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(3), replayer).await });
        }
        let waiting = self
            .core
            .db()
            .read(journal::stats)
            .map(|s| s.0)
            .unwrap_or(0);
        if waiting > 0 {
            tracing::info!(
                "{waiting} change(s) wait in the journal; they are sent at the next mount"
            );
        }
        let _ = std::fs::remove_file(&self.control_socket);
    }

    /// A stop as by `kill -9`, for tests of crash recovery: the tasks are cancelled
    /// wherever they are and nothing is committed or flushed. (Migration and backup
    /// threads cannot be cancelled; they are asked to stop.)
    pub fn abort(mut self) {
        for t in self.tasks.iter().chain(&self.replayer) {
            t.abort();
        }
        // A killed process holds no socket: the aborted tasks are waited for (they end
        // at once), so the control socket's listener is closed when this returns and
        // the next start finds it stale, as after a real crash. Outside the runtime's
        // threads, like `shutdown`.
        let tasks: Vec<_> = self.tasks.drain(..).chain(self.replayer.take()).collect();
        self.rt.block_on(async {
            for t in tasks {
                let _ = t.await;
            }
        });
        self.migrations.shutdown();
        self.backups.stop();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// A listening TCP socket as `tokio::net::TcpListener::bind` makes one (address reuse,
/// a backlog of 1024), without an async context.
fn listen_tcp(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
