//! The cache sweeper: at start, every `sweep_every`, and whenever content was added, it
//! fetches what pinned files miss and evicts clean, unpinned content: first what has not
//! been used for `max_age`, then least recently used content while the cache is over its
//! size cap or the disk under it has less than `min_free` left.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::fs::{Core, Evicted, FsResult};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Files evicted for age.
    pub expired: usize,
    /// Files evicted for size or free space.
    pub evicted: usize,
    pub freed_bytes: u64,
}

/// One pass of the age and size policy.
pub fn sweep(core: &Core) -> FsResult<SweepReport> {
    let limits = &core.cfg.cache;
    let mut report = SweepReport::default();
    let oldest_kept = core.clock().now_s() - limits.max_age.as_secs() as i64;
    let mut candidates = core.eviction_candidates()?;
    // Candidates come least recently used first: the expired ones lead.
    let expired = candidates
        .iter()
        .take_while(|c| c.last_access < oldest_kept)
        .count();
    // A candidate removed or changed meanwhile is simply not evicted.
    for c in candidates.drain(..expired) {
        if let Ok(Evicted::Freed(n)) = core.evict(c.ino) {
            report.expired += 1;
            report.freed_bytes += n;
        }
    }
    let (fs_total, mut avail) = super::fs_space(core.cache_dir())?;
    let max_size = limits.max_size_for(fs_total);
    let mut used = core.cache_usage()?.bytes;
    for c in candidates {
        if used <= max_size && avail >= limits.min_free {
            break;
        }
        if let Ok(Evicted::Freed(n)) = core.evict(c.ino) {
            report.evicted += 1;
            report.freed_bytes += n;
            used = used.saturating_sub(n);
            avail = avail.saturating_add(n);
        }
    }
    if report.expired + report.evicted > 0 {
        tracing::info!(
            "cache sweep: {} files unused for {:?} and {} more for space evicted, {} bytes freed",
            report.expired,
            limits.max_age,
            report.evicted,
            report.freed_bytes
        );
    }
    Ok(report)
}

/// Runs the sweeper until shutdown.
pub async fn run(core: Arc<Core>, mut shutdown: watch::Receiver<bool>) {
    let every = core.cfg.cache.sweep_every;
    loop {
        let c = core.clone();
        let result = tokio::task::spawn_blocking(move || {
            let fetched = c.fetch_pinned();
            (sweep(&c), fetched)
        })
        .await;
        match result {
            Ok((Err(e), _)) | Ok((_, Err(e))) => tracing::warn!("cache sweep failed: {e}"),
            Err(e) => tracing::error!("cache sweep panicked: {e}"),
            _ => {}
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(every) => {}
            // Content was added: check the size limits again, at most once a second.
            _ = core.cache_grew.notified() => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
