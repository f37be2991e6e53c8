//! Counters for `davdrive ctl metrics`, in the Prometheus text format. A handful of
//! process-wide atomics: one mount per process, and the exposition format is a few lines.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// Upper bounds of the request latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
pub struct Metrics {
    /// (method, status) → count; status 0 is a request that got no answer.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub evictions: AtomicU64,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    pub fn request(&self, method: &str, status: u16, took: Duration) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((method.to_string(), status))
            .or_default() += 1;
        let secs = took.as_secs_f64();
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// The exposition, with the gauges only the caller knows.
    pub fn render(&self, journal_waiting: u64, journal_failed: u64, conflicts: u64) -> String {
        let mut out = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.push_str(
            "# HELP davdrive_requests_total WebDAV requests by method and status (0: no answer).\n",
        );
        out.push_str("# TYPE davdrive_requests_total counter\n");
        for ((method, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "davdrive_requests_total{{method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP davdrive_request_seconds WebDAV request latency.\n");
        out.push_str("# TYPE davdrive_request_seconds histogram\n");
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "davdrive_request_seconds_bucket{{le=\"{bound}\"}} {}",
                get(&self.latency_buckets[i])
            );
        }
        let count = get(&self.latency_count);
        let _ = writeln!(
            out,
            "davdrive_request_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "davdrive_request_seconds_sum {}",
            get(&self.latency_sum_us) as f64 / 1e6
        );
        let _ = writeln!(out, "davdrive_request_seconds_count {count}");
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        one(
            "davdrive_bytes_uploaded_total",
            "counter",
            "Bytes sent in uploads.",
            get(&self.bytes_up),
        );
        one(
            "davdrive_bytes_downloaded_total",
            "counter",
            "Bytes received in downloads.",
            get(&self.bytes_down),
        );
        one(
            "davdrive_cache_hits_total",
            "counter",
            "Reads served entirely from the cache.",
            get(&self.cache_hits),
        );
        one(
            "davdrive_cache_misses_total",
            "counter",
            "Reads that had to download.",
            get(&self.cache_misses),
        );
        one(
            "davdrive_cache_evictions_total",
            "counter",
            "Files whose cached content was evicted.",
            get(&self.evictions),
        );
        one(
            "davdrive_journal_waiting",
            "gauge",
            "Journal entries waiting to be replayed.",
            journal_waiting,
        );
        one(
            "davdrive_journal_failed",
            "gauge",
            "Journal entries set aside as failed.",
            journal_failed,
        );
        one(
            "davdrive_conflicts",
            "gauge",
            "Conflicts not yet resolved.",
            conflicts,
        );
        out
    }
}
