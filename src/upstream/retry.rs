//! When and how long to wait before another upstream attempt.

use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::time::Instant;

const BASE_DELAY: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// A `Retry-After` longer than this is cut short: the client is waiting.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Statuses received before any reply byte that another attempt may cure.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Exponential backoff with jitter, or the server's `Retry-After` (capped); false when the
/// wait would pass the turn's deadline.
pub async fn pause(attempt: u32, retry_after: Option<Duration>, deadline: Instant) -> bool {
    let wait = match retry_after {
        Some(after) => after.min(MAX_RETRY_AFTER),
        None => {
            let exp = BASE_DELAY.saturating_mul(1 << attempt.saturating_sub(1).min(10));
            let capped = exp.min(MAX_BACKOFF);
            // Full jitter in [capped/2, capped]: concurrent turns do not retry in lockstep.
            let half = capped / 2;
            half + rand::rng().random_range(Duration::ZERO..=half)
        }
    };
    if Instant::now() + wait >= deadline {
        return false;
    }
    tokio::time::sleep(wait).await;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        let later = SystemTime::now() + Duration::from_secs(120);
        let parsed = parse_retry_after(&httpdate::fmt_http_date(later));
        assert!(parsed.is_some_and(|d| d > Duration::from_secs(100)));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn only_transient_statuses_retry() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(retryable_status(s));
        }
        for s in [200, 400, 401, 402, 403, 404, 422] {
            assert!(!retryable_status(s));
        }
    }
}
