//! A core on the in-memory remote with no background task at all: no replayer, no
//! probe, no poll loop. For tests that run each step themselves (a poll round, a
//! listing, a replay) and count what it did; everything else uses the daemon
//! (`drive.rs`).

use std::sync::Arc;

use davdrive::clock::Clock;
use davdrive::fs::{Core, CoreConfig};
use davdrive::health::Health;
use davdrive::remote::memory::MemRemote;
use davdrive::remote::Remote;

pub struct BareCore {
    pub rt: tokio::runtime::Runtime,
    pub mem: Arc<MemRemote>,
    /// The core's clock (`cfg.clock` is replaced by it).
    pub clock: Clock,
    pub core: Arc<Core>,
    _state: tempfile::TempDir,
}

/// Loads a core over `mem` on a fresh state dir, online, with `cfg` and a clock the
/// test holds.
pub fn bare_core(mem: MemRemote, cfg: CoreConfig) -> BareCore {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let mem = Arc::new(mem);
    let remote: Arc<dyn Remote> = mem.clone();
    let clock = Clock::default();
    let core = {
        let _guard = rt.enter();
        Core::load(
            state.path(),
            remote,
            rt.handle().clone(),
            Health::new(true),
            CoreConfig {
                clock: clock.clone(),
                ..cfg
            },
        )
        .unwrap()
    };
    BareCore {
        rt,
        mem,
        clock,
        core,
        _state: state,
    }
}
