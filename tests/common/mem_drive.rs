//! The daemon `davdrive mount` runs, without a kernel, over the in-memory remote
//! (`davdrive::remote::memory::MemRemote`) on a runtime of the test's own, as the memory
//! model test runs it: clean restarts and crashes over the same state. `drive.rs` is the
//! same over a real WebDAV server; `bare.rs` a core with no background task.

use std::sync::Arc;
use std::time::Duration;

use davdrive::clock::Clock;
use davdrive::daemon::{Daemon, DaemonConfig};
use davdrive::fs::Core;
use davdrive::remote::memory::MemRemote;

pub struct MemDrive {
    pub rt: tokio::runtime::Runtime,
    pub mem: Arc<MemRemote>,
    pub state: tempfile::TempDir,
    pub clock: Clock,
    /// What each start of the daemon is given, `online` included (what the mount found
    /// the remote to be); a test may change it between a stop and a start.
    pub config: DaemonConfig,
    daemon: Option<Daemon>,
}

impl MemDrive {
    /// A daemon on a fresh state dir over an empty in-memory remote, started online with
    /// the defaults below as `adjust` leaves them.
    pub fn new(adjust: impl FnOnce(&mut DaemonConfig)) -> MemDrive {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state = tempfile::tempdir().unwrap();
        super::private(state.path());
        let mut config = DaemonConfig::new(state.path());
        config.health_interval = Duration::from_millis(50);
        // As mounting does: a root never listed could not be created in offline.
        config.list_root = true;
        adjust(&mut config);
        let mut d = MemDrive {
            rt,
            mem: Arc::new(MemRemote::new()),
            state,
            clock: Clock::default(),
            config,
            daemon: None,
        };
        d.start();
        d
    }

    pub fn start(&mut self) {
        let _guard = self.rt.enter();
        let daemon = Daemon::start(self.config.clone(), self.mem.clone(), self.clock.clone());
        self.daemon = Some(daemon.unwrap());
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
}

impl Drop for MemDrive {
    fn drop(&mut self) {
        // Before the runtime goes: the tasks are told to stop.
        if let Some(d) = self.daemon.take() {
            d.abort();
        }
    }
}
