//! Whether the remote is reachable. One shared state, read by everyone through a watch
//! channel; changed by the probe loop and by any request that meets a transport error.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::remote::Remote;

#[derive(Debug, Clone)]
pub struct HealthState {
    pub online: bool,
    pub since: SystemTime,
    pub last_check: Option<SystemTime>,
    pub last_latency: Option<Duration>,
    pub last_error: Option<String>,
    /// RFC 4331 quota of the server (bytes available, bytes used) as last reported; both
    /// None where the server reports none. `df` on the mount shows it (see `Core::statfs`).
    pub quota: (Option<u64>, Option<u64>),
}

#[derive(Clone)]
pub struct Health {
    tx: Arc<watch::Sender<HealthState>>,
}

impl Health {
    pub fn new(online: bool) -> Health {
        let (tx, _) = watch::channel(HealthState {
            online,
            since: SystemTime::now(),
            last_check: None,
            last_latency: None,
            last_error: None,
            quota: (None, None),
        });
        Health { tx: Arc::new(tx) }
    }

    pub fn is_online(&self) -> bool {
        self.tx.borrow().online
    }

    pub fn state(&self) -> HealthState {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<HealthState> {
        self.tx.subscribe()
    }

    pub fn mark_offline(&self, reason: &str) {
        self.tx.send_if_modified(|s| {
            s.last_error = Some(reason.to_string());
            if s.online {
                tracing::warn!("remote is offline: {reason}");
                s.online = false;
                s.since = SystemTime::now();
                true
            } else {
                false
            }
        });
    }

    pub fn mark_online(&self, latency: Option<Duration>) {
        self.tx.send_if_modified(|s| {
            if latency.is_some() {
                s.last_check = Some(SystemTime::now());
                s.last_latency = latency;
            }
            if !s.online {
                tracing::info!("remote is online again");
                s.online = true;
                s.since = SystemTime::now();
                s.last_error = None;
                true
            } else {
                false
            }
        });
    }

    /// Runs one probe and records what it found.
    pub async fn check(&self, remote: &dyn Remote) -> bool {
        match remote.probe().await {
            Ok(info) => {
                self.mark_online(Some(info.latency));
                true
            }
            Err(e) => {
                self.tx
                    .send_modify(|s| s.last_check = Some(SystemTime::now()));
                self.mark_offline(&e.to_string());
                false
            }
        }
    }
}

impl Health {
    /// Asks the server for its quota (one PROPFIND Depth 0) and keeps the answer. A
    /// failure keeps the last answer: a quota does not vanish when one request fails.
    pub async fn refresh_quota(&self, remote: &dyn Remote) {
        if let Ok(q) = remote.quota().await {
            self.tx.send_if_modified(|s| {
                let changed = s.quota != q;
                s.quota = q;
                changed
            });
        }
    }

    pub fn quota(&self) -> (Option<u64>, Option<u64>) {
        self.tx.borrow().quota
    }
}

/// Probes every `interval` while online; while offline, sooner (1 s doubling up to the
/// interval), so a returning remote is noticed quickly.
pub async fn probe_loop(
    health: Health,
    remote: Arc<dyn Remote>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let first_retry = Duration::from_secs(1).min(interval);
    let mut offline_wait = first_retry;
    if health.is_online() {
        health.refresh_quota(remote.as_ref()).await;
    }
    loop {
        let wait = if health.is_online() {
            offline_wait = first_retry;
            interval
        } else {
            let w = offline_wait;
            offline_wait = (offline_wait * 2).min(interval);
            w
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        if health.check(remote.as_ref()).await {
            health.refresh_quota(remote.as_ref()).await;
        }
    }
}
