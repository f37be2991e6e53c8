//! The one backoff policy of davdrive: exponential, capped, with jitter, and never
//! sooner than a server's `Retry-After`. The client's quick retries within one request
//! and the replayer's retries of a journal entry use it with different first delays.

use std::time::Duration;

/// A server may not park us for longer than this with `Retry-After`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// Retries inside one request (a dropped connection, a 503 blip).
    pub const REQUEST: Backoff = Backoff {
        first: Duration::from_millis(200),
        cap: Duration::from_secs(5),
    };
    /// Retries of a journal entry.
    pub const REPLAY: Backoff = Backoff {
        first: Duration::from_secs(1),
        cap: Duration::from_secs(300),
    };

    /// The wait after `failures` failed attempts (1 for the first failure). Spread
    /// between 3/4 and 5/4 of the exponential step, so entries that failed together do
    /// not all come back in the same instant; at least what the server asked for.
    pub fn delay(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let step = self
            .first
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
            .min(self.cap);
        let jittered = step.mul_f64(0.75 + fastrand::f64() * 0.5);
        match retry_after {
            Some(asked) => jittered.max(asked.min(MAX_RETRY_AFTER)),
            None => jittered,
        }
    }
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_honours_retry_after() {
        let b = Backoff::REPLAY;
        for _ in 0..100 {
            let d1 = b.delay(1, None);
            assert!(d1 >= Duration::from_millis(750) && d1 <= Duration::from_millis(1250));
            let d4 = b.delay(4, None);
            assert!(d4 >= Duration::from_secs(6) && d4 <= Duration::from_secs(10));
            let big = b.delay(40, None);
            assert!(big >= Duration::from_secs(225) && big <= Duration::from_secs(375));
        }
        assert!(b.delay(1, Some(Duration::from_secs(30))) >= Duration::from_secs(30));
        assert!(b.delay(1, Some(Duration::from_secs(86400))) <= Duration::from_secs(3600));
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
