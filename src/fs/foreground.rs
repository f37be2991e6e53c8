//! When the last call that changes the drive came in through the mount. The replayer
//! yields to a burst of them: while a program such as `tar -x` writes file after file,
//! each of its calls waits for the daemon, and uploads running beside it at full width
//! (with the server on the same machine, its work too) take the CPU and the state
//! store's writer those calls wait for. Uploads then go one at a time, and at full width
//! again once the burst pauses.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct ForegroundWrites {
    since: Instant,
    /// Microseconds from `since` to the last such call, plus one; 0 before any.
    last_us: AtomicU64,
}

impl Default for ForegroundWrites {
    fn default() -> Self {
        ForegroundWrites {
            since: Instant::now(),
            last_us: AtomicU64::new(0),
        }
    }
}

impl ForegroundWrites {
    /// A call that changes the drive came in now.
    pub fn note(&self) {
        let us = self.since.elapsed().as_micros() as u64 + 1;
        self.last_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Whether such a call came in within the last `within`.
    pub fn streaming(&self, within: Duration) -> bool {
        let last = self.last_us.load(Ordering::Relaxed);
        last != 0 && self.since.elapsed().as_micros() as u64 + 1 - last < within.as_micros() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_seen_until_it_pauses() {
        let f = ForegroundWrites::default();
        assert!(
            !f.streaming(Duration::from_secs(3600)),
            "nothing written yet"
        );
        f.note();
        assert!(f.streaming(Duration::from_secs(3600)));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!f.streaming(Duration::from_millis(10)), "paused for 20 ms");
    }
}
