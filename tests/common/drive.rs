//! A drive driven through the core, without a kernel: a real WebDAV server, the daemon
//! `davdrive mount` runs (every background task but the cache sweeper), a clock tests
//! can move, and clean restarts and crashes over the same state.

use std::sync::Arc;
use std::time::Duration;

use davdrive::cache::CacheLimits;
use davdrive::clock::Clock;
use davdrive::daemon::{Daemon, DaemonConfig};
use davdrive::fs::{Core, CoreConfig, UploadSizes};
use davdrive::journal;
use davdrive::remote::webdav::{WebDav, WebDavConfig};
use davdrive::remote::Remote;
use davdrive::store::ROOT_INO;

use super::Server;

const MIB: usize = 1 << 20;

pub struct Drive {
    pub server: Server,
    pub state: tempfile::TempDir,
    pub clock: Clock,
    /// What each start of the daemon is given; a test may change it between a stop and
    /// a start.
    pub config: DaemonConfig,
    daemon: Option<Daemon>,
}

impl Drive {
    pub fn new(limits: CacheLimits) -> Drive {
        Drive::with_state(limits, tempfile::tempdir().unwrap())
    }

    /// A drive whose uploads are cut as `uploads` says.
    pub fn with_uploads(limits: CacheLimits, uploads: UploadSizes) -> Drive {
        Drive::configured(tempfile::tempdir().unwrap(), |c| {
            c.core.cache = limits;
            c.core.uploads = uploads;
        })
    }

    pub fn with_state(limits: CacheLimits, state: tempfile::TempDir) -> Drive {
        Drive::configured(state, |c| c.core.cache = limits)
    }

    /// A drive on `state` whose daemon is started with the defaults below as `adjust`
    /// leaves them.
    pub fn configured(state: tempfile::TempDir, adjust: impl FnOnce(&mut DaemonConfig)) -> Drive {
        // Against an external server the tests run with umask 0 (see `Server::start`).
        super::private(state.path());
        if let Ok(filter) = std::env::var("DAVDRIVE_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let mut config = DaemonConfig::new(state.path());
        config.core = CoreConfig {
            dir_ttl: Duration::from_millis(200),
            attr_ttl: Duration::from_millis(200),
            // Tests that look for another client's change wait for the refresh they
            // start, however busy the machine (the default answers sooner).
            refresh_wait: Duration::from_secs(5),
            ..CoreConfig::default()
        };
        config.health_interval = Duration::from_millis(100);
        // The cache tests sweep by hand, to see what one sweep does.
        config.sweeper = false;
        adjust(&mut config);
        let mut d = Drive {
            server: Server::start(),
            state,
            clock: Clock::default(),
            config,
            daemon: None,
        };
        d.start();
        d
    }

    /// Starts the daemon, as a mount does: online if the server answers.
    pub fn start(&mut self) {
        self.try_start().unwrap();
    }

    /// `start`, for a test of a start that fails.
    pub fn try_start(&mut self) -> Result<(), davdrive::daemon::StartError> {
        let _guard = self.server.rt.enter();
        let mut cfg = WebDavConfig::new(url::Url::parse(&self.server.url()).unwrap());
        cfg.request_timeout = Duration::from_secs(5);
        cfg.retries = 1;
        let remote: Arc<dyn Remote> = Arc::new(WebDav::new(cfg).unwrap());
        let mut config = self.config.clone();
        config.online = self.server.proxy.state.lock().unwrap().fault.is_none();
        self.daemon = Some(Daemon::start(config, remote, self.clock.clone())?);
        Ok(())
    }

    /// A clean stop, as at unmount; returns once nothing of the old daemon runs.
    pub fn stop(&mut self) {
        let daemon = self.daemon.take().unwrap();
        let core = Arc::downgrade(daemon.core());
        daemon.shutdown();
        super::wait_gone(core);
    }

    /// A stop as by `kill -9`: the tasks die wherever they are, nothing is committed.
    /// Returns once nothing of the old daemon runs.
    pub fn crash(&mut self) {
        let daemon = self.daemon.take().unwrap();
        let core = Arc::downgrade(daemon.core());
        daemon.abort();
        super::wait_gone(core);
    }

    pub fn core(&self) -> &Arc<Core> {
        self.daemon.as_ref().unwrap().core()
    }

    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().unwrap()
    }

    pub fn ino(&self, name: &str) -> u64 {
        self.core().lookup(ROOT_INO, name).unwrap().ino
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        let ino = self.ino(name);
        let (fh, _) = self.core().open(ino, false).unwrap();
        let mut out = Vec::new();
        super::read_rest(self.core(), fh, &mut out);
        self.core().release(fh).unwrap();
        out
    }

    pub fn write_new(&self, name: &str, data: &[u8]) -> Result<(), i32> {
        let (attr, fh) = self
            .core()
            .create(ROOT_INO, name, 0o644, 0, 0)
            .map_err(|e| {
                eprintln!("create {name}: {e}");
                e.errno()
            })?;
        let _ = attr;
        let mut result = Ok(());
        for (i, part) in data.chunks(MIB).enumerate() {
            if let Err(e) = self.core().write(fh, (i * MIB) as u64, part) {
                eprintln!("write {name}: {e}");
                result = Err(e.errno());
                break;
            }
        }
        let flushed = self.core().flush(fh).map_err(|e| e.errno());
        self.core().release(fh).unwrap();
        result.and(flushed)
    }

    pub fn cached_bytes(&self, name: &str) -> u64 {
        let ino = self.ino(name);
        (self.core().db())
            .write(|tx| davdrive::store::get_node(tx, ino))
            .unwrap()
            .unwrap()
            .cached_bytes
    }

    pub fn content_path(&self, name: &str) -> std::path::PathBuf {
        self.core().content().path(self.ino(name))
    }

    pub fn wait_drained(&self) {
        super::wait_until(60, "the journal to drain", || {
            self.core().db().write(|tx| journal::stats(tx)).unwrap().0 == 0
        });
    }

    pub fn wait_hashed(&self, name: &str) {
        let ino = self.ino(name);
        super::wait_until(10, "the cached file to be hashed", || {
            self.core()
                .db()
                .write(|tx| davdrive::store::get_node(tx, ino))
                .unwrap()
                .unwrap()
                .sha256
                .is_some()
        });
    }
}

impl Drop for Drive {
    fn drop(&mut self) {
        // Before the server's runtime goes: the tasks are told to stop.
        self.daemon.take();
    }
}
