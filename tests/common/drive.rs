//! A drive driven through the core, without a kernel: a real WebDAV server, the
//! replayer and health probe running, a clock tests can move, and restarts over the same
//! state.

use std::sync::Arc;
use std::time::Duration;

use davdrive::cache::CacheLimits;
use davdrive::clock::Clock;
use davdrive::fs::{Core, CoreConfig, UploadSizes};
use davdrive::health::{self, Health};
use davdrive::journal;
use davdrive::remote::webdav::{WebDav, WebDavConfig};
use davdrive::remote::Remote;
use davdrive::store::ROOT_INO;
use tokio::sync::watch;

use super::Server;

const MIB: usize = 1 << 20;

pub struct Drive {
    pub server: Server,
    pub state: tempfile::TempDir,
    core: Option<Arc<Core>>,
    pub clock: Clock,
    pub limits: CacheLimits,
    pub uploads: UploadSizes,
    shutdown: Option<watch::Sender<bool>>,
}

impl Drive {
    pub fn new(limits: CacheLimits) -> Drive {
        Drive::with_state(limits, tempfile::tempdir().unwrap())
    }

    /// A drive whose uploads are cut as `uploads` says.
    pub fn with_uploads(limits: CacheLimits, uploads: UploadSizes) -> Drive {
        Drive::build(limits, tempfile::tempdir().unwrap(), uploads)
    }

    pub fn with_state(limits: CacheLimits, state: tempfile::TempDir) -> Drive {
        Drive::build(limits, state, UploadSizes::default())
    }

    fn build(limits: CacheLimits, state: tempfile::TempDir, uploads: UploadSizes) -> Drive {
        // Against an external server the tests run with umask 0 (see `Server::start`).
        super::private(state.path());
        if let Ok(filter) = std::env::var("DAVDRIVE_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let mut d = Drive {
            server: Server::start(),
            state,
            core: None,
            clock: Clock::default(),
            limits,
            uploads,
            shutdown: None,
        };
        d.start();
        d
    }

    pub fn start(&mut self) {
        let _guard = self.server.rt.enter();
        let mut cfg = WebDavConfig::new(url::Url::parse(&self.server.url()).unwrap());
        cfg.request_timeout = Duration::from_secs(5);
        cfg.retries = 1;
        let remote: Arc<dyn Remote> = Arc::new(WebDav::new(cfg).unwrap());
        let health = Health::new(true);
        let core = Core::load(
            self.state.path(),
            remote.clone(),
            self.server.rt.handle().clone(),
            health.clone(),
            CoreConfig {
                dir_ttl: Duration::from_millis(200),
                attr_ttl: Duration::from_millis(200),
                // Tests that look for another client's change wait for the refresh
                // they start, however busy the machine (the default answers sooner).
                refresh_wait: Duration::from_secs(5),
                cache: self.limits.clone(),
                clock: self.clock.clone(),
                uploads: self.uploads,
                ..CoreConfig::default()
            },
        )
        .unwrap();
        let (tx, rx) = watch::channel(false);
        self.server.rt.spawn(health::probe_loop(
            health,
            remote,
            Duration::from_millis(100),
            rx.clone(),
        ));
        self.server.rt.spawn(journal::replay::run(core.clone(), rx));
        self.core = Some(core);
        self.shutdown = Some(tx);
    }

    pub fn stop(&mut self) {
        let core = self.core.take().unwrap();
        core.commit_all();
        let _ = self.shutdown.take().unwrap().send(true);
        // The tasks hold the core until they see the shutdown.
        let weak = Arc::downgrade(&core);
        drop(core);
        super::wait_until(10, "the core to be dropped", || weak.strong_count() == 0);
    }

    pub fn core(&self) -> &Arc<Core> {
        self.core.as_ref().unwrap()
    }

    pub fn ino(&self, name: &str) -> u64 {
        self.core().lookup(ROOT_INO, name).unwrap().ino
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        let ino = self.ino(name);
        let (fh, _) = self.core().open(ino, false).unwrap();
        let mut out = Vec::new();
        loop {
            let chunk = self.core().read(fh, out.len() as u64, 128 << 10).unwrap();
            if chunk.is_empty() {
                break;
            }
            out.extend_from_slice(&chunk);
        }
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
        let conn = self.core().store();
        davdrive::store::get_node(&conn, ino)
            .unwrap()
            .unwrap()
            .cached_bytes
    }

    pub fn content_path(&self, name: &str) -> std::path::PathBuf {
        self.core().content().path(self.ino(name))
    }

    pub fn wait_drained(&self) {
        super::wait_until(60, "the journal to drain", || {
            journal::stats(&self.core().store()).unwrap().0 == 0
        });
    }

    pub fn wait_hashed(&self, name: &str) {
        let ino = self.ino(name);
        super::wait_until(10, "the cached file to be hashed", || {
            davdrive::store::get_node(&self.core().store(), ino)
                .unwrap()
                .unwrap()
                .sha256
                .is_some()
        });
    }
}

impl Drop for Drive {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
    }
}
