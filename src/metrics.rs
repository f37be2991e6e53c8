//! Metrics in the Prometheus/OpenMetrics text format, for `davdrive ctl metrics` and the
//! optional `--metrics-addr` HTTP endpoint. Process-wide (one mount per process), kept by
//! the `prometheus-client` crate so names, labels and escaping follow its conventions:
//! units in names, `_total` on counters.
//!
//! Counters move where the work happens; the gauges are read from the state store when
//! the metrics are asked for (see [`Gauges`]).

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds of the request latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// What the HTTP endpoint answers with: the OpenMetrics text the encoder writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The HTTP status, or `error` for a request that got no answer.
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    method: String,
    /// `timeout`, `connect` or `other`.
    kind: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Why a request got no answer, as the `kind` label of `davdrive_request_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestFailure {
    Timeout,
    Connect,
    Other,
}

impl RequestFailure {
    pub fn of(e: &reqwest::Error) -> RequestFailure {
        if e.is_timeout() {
            RequestFailure::Timeout
        } else if e.is_connect() {
            RequestFailure::Connect
        } else {
            RequestFailure::Other
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            RequestFailure::Timeout => "timeout",
            RequestFailure::Connect => "connect",
            RequestFailure::Other => "other",
        }
    }
}

/// The values only the caller can read (from the state store and the health state), set
/// on the gauges right before they are written out.
#[derive(Clone, Debug, Default)]
pub struct Gauges {
    pub remote_up: bool,
    pub cache_files: u64,
    pub cache_bytes: u64,
    pub dirty_bytes: u64,
    pub journal_waiting: u64,
    pub journal_failed: u64,
    /// Age of the oldest entry waiting in the journal; 0 when it is empty.
    pub oldest_entry_age_s: u64,
    pub conflicts: u64,
    /// Unix seconds of the end of the last successful backup; 0 if there is none.
    pub last_backup_success: i64,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_errors: Family<ErrorLabels, Counter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    pub bytes_up: Counter,
    pub bytes_down: Counter,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub evictions: Counter,
    /// Rounds of the background poll, changes it found, requests it sent.
    pub polls: Counter,
    pub poll_changes: Counter,
    pub poll_requests: Counter,
    remote_up: Gauge,
    cache_files: Gauge,
    cache_bytes: Gauge,
    dirty_bytes: Gauge,
    journal_waiting: Gauge,
    journal_failed: Gauge,
    oldest_entry_age: Gauge,
    conflicts: Gauge,
    last_backup_success: Gauge,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Adds `n` to a counter.
pub fn add(counter: &Counter, n: u64) {
    counter.inc_by(n);
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            // Filled below, once the metrics exist to register.
            registry: Registry::default(),
            requests: Family::default(),
            request_errors: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            bytes_up: Counter::default(),
            bytes_down: Counter::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            evictions: Counter::default(),
            polls: Counter::default(),
            poll_changes: Counter::default(),
            poll_requests: Counter::default(),
            remote_up: Gauge::default(),
            cache_files: Gauge::default(),
            cache_bytes: Gauge::default(),
            dirty_bytes: Gauge::default(),
            journal_waiting: Gauge::default(),
            journal_failed: Gauge::default(),
            oldest_entry_age: Gauge::default(),
            conflicts: Gauge::default(),
            last_backup_success: Gauge::default(),
        };
        let mut r = Registry::with_prefix("davdrive");
        r.register(
            "requests",
            "WebDAV requests by method and HTTP status (error: no answer)",
            m.requests.clone(),
        );
        r.register(
            "request_errors",
            "WebDAV requests that got no answer, by method and why (timeout, connect, other)",
            m.request_errors.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "WebDAV request latency until the answer's headers, by method",
            Unit::Seconds,
            m.latency.clone(),
        );
        r.register_with_unit(
            "uploaded",
            "Bytes sent in uploads",
            Unit::Bytes,
            m.bytes_up.clone(),
        );
        r.register_with_unit(
            "downloaded",
            "Bytes received in downloads",
            Unit::Bytes,
            m.bytes_down.clone(),
        );
        r.register(
            "cache_hits",
            "Reads served entirely from the cache",
            m.cache_hits.clone(),
        );
        r.register(
            "cache_misses",
            "Reads that had to download",
            m.cache_misses.clone(),
        );
        r.register(
            "cache_evictions",
            "Files whose cached content was evicted",
            m.evictions.clone(),
        );
        r.register(
            "polls",
            "Rounds of the background poll of pinned, open and recently used folders",
            m.polls.clone(),
        );
        r.register(
            "poll_changes",
            "Changes the poll found on the server: names added, removed, or with a new \
             version or metadata",
            m.poll_changes.clone(),
        );
        r.register(
            "poll_requests",
            "Requests the poll sent (PROPFIND Depth 0 and Depth 1)",
            m.poll_requests.clone(),
        );
        r.register(
            "remote_up",
            "1 if the server answered the last health check, else 0",
            m.remote_up.clone(),
        );
        r.register(
            "cache_files",
            "Files with content in the cache",
            m.cache_files.clone(),
        );
        r.register_with_unit(
            "cache",
            "Bytes of content in the cache",
            Unit::Bytes,
            m.cache_bytes.clone(),
        );
        r.register_with_unit(
            "cache_dirty",
            "Bytes of cached content not yet on the server",
            Unit::Bytes,
            m.dirty_bytes.clone(),
        );
        r.register(
            "journal_waiting",
            "Journal entries waiting to be replayed",
            m.journal_waiting.clone(),
        );
        r.register(
            "journal_failed",
            "Journal entries set aside as failed",
            m.journal_failed.clone(),
        );
        r.register_with_unit(
            "journal_oldest_entry_age",
            "Age of the oldest journal entry not yet replayed (0: the journal is empty)",
            Unit::Seconds,
            m.oldest_entry_age.clone(),
        );
        r.register(
            "conflicts",
            "Conflicts not yet resolved",
            m.conflicts.clone(),
        );
        r.register_with_unit(
            "backup_last_success_timestamp",
            "Unix time the last successful backup ended (0: none yet)",
            Unit::Seconds,
            m.last_backup_success.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// Counts one request: `Ok(status)` for an answer, `Err(why)` for none.
    pub fn request(&self, method: &str, outcome: Result<u16, RequestFailure>, took: Duration) {
        let status = match outcome {
            Ok(code) => code.to_string(),
            Err(why) => {
                self.request_errors
                    .get_or_create(&ErrorLabels {
                        method: method.to_string(),
                        kind: why.as_str().to_string(),
                    })
                    .inc();
                "error".to_string()
            }
        };
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels {
                method: method.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// The exposition, with the gauges set from `g`.
    pub fn render(&self, g: &Gauges) -> String {
        self.remote_up.set(i64::from(g.remote_up));
        self.cache_files.set(gauge(g.cache_files));
        self.cache_bytes.set(gauge(g.cache_bytes));
        self.dirty_bytes.set(gauge(g.dirty_bytes));
        self.journal_waiting.set(gauge(g.journal_waiting));
        self.journal_failed.set(gauge(g.journal_failed));
        self.oldest_entry_age.set(gauge(g.oldest_entry_age_s));
        self.conflicts.set(gauge(g.conflicts));
        self.last_backup_success.set(g.last_backup_success);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Bytes uploaded so far (for progress reports).
    pub fn uploaded_bytes(&self) -> u64 {
        self.bytes_up.get()
    }
}

/// `s`, with each chunk counted in `davdrive_uploaded_bytes_total` as it is taken for
/// sending.
pub fn count_uploaded<S, E>(s: S) -> impl futures_util::Stream<Item = Result<bytes::Bytes, E>>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>>,
{
    use futures_util::TryStreamExt;
    s.inspect_ok(|chunk| {
        METRICS.bytes_up.inc_by(chunk.len() as u64);
    })
}

/// Whether `addr` may serve the metrics: loopback always, any other address only when
/// the user said so (`--metrics-allow-remote`). The endpoint has no authentication.
pub fn check_addr(addr: SocketAddr, allow_remote: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || allow_remote {
        Ok(())
    } else {
        Err(format!(
            "--metrics-addr {addr}: not a loopback address; the metrics endpoint has no \
             authentication (use 127.0.0.1:PORT, or add --metrics-allow-remote)"
        ))
    }
}

/// Serves `GET /metrics` (any path, in fact) on `listener` until `shutdown` turns true.
/// `gauges` reads the values only the mount knows, each time the metrics are asked for;
/// it runs on a blocking thread (it reads the state store).
pub async fn serve(
    listener: tokio::net::TcpListener,
    gauges: Arc<dyn Fn() -> Gauges + Send + Sync>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    loop {
        let (stream, peer) = tokio::select! {
            conn = listener.accept() => match conn {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("metrics endpoint: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let gauges = gauges.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let gauges = gauges.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(req, gauges).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, "metrics connection ended: {e}");
            }
        });
    }
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    gauges: Arc<dyn Fn() -> Gauges + Send + Sync>,
) -> hyper::Response<String> {
    let reply = |status: u16, ctype: &str, body: String| {
        hyper::Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, ctype)
            .body(body)
            .expect("a valid response")
    };
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return reply(405, "text/plain", "only GET\n".into());
    }
    match tokio::task::spawn_blocking(move || METRICS.render(&gauges())).await {
        Ok(text) => reply(200, CONTENT_TYPE, text),
        Err(e) => reply(500, "text/plain", format!("{e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only_unless_allowed() {
        assert!(check_addr("127.0.0.1:9100".parse().unwrap(), false).is_ok());
        assert!(check_addr("[::1]:9100".parse().unwrap(), false).is_ok());
        let e = check_addr("0.0.0.0:9100".parse().unwrap(), false).unwrap_err();
        assert!(e.contains("--metrics-allow-remote"), "{e}");
        assert!(check_addr("0.0.0.0:9100".parse().unwrap(), true).is_ok());
    }
}
