//! When and how long to wait before another upstream attempt.

use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::time::Instant;

const BASE_DELAY: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// The longest `Retry-After` waited out: the client is waiting. A longer one is honoured by
/// not retrying: the answer (a 429 or 503 with its `Retry-After`) goes back to the client.
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

/// Exponential backoff with jitter, or the server's `Retry-After`; false (no retry) when the
/// wait would pass the turn's deadline or `MAX_RETRY_AFTER`.
pub async fn pause(attempt: u32, retry_after: Option<Duration>, deadline: Instant) -> bool {
    let wait = match retry_after {
        Some(after) if after > MAX_RETRY_AFTER => return false,
        Some(after) => after,
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

    #[tokio::test]
    async fn a_retry_after_longer_than_the_cap_is_not_waited_out_but_honoured() {
        let far = Instant::now() + Duration::from_secs(3600);
        let started = Instant::now();
        assert!(!pause(1, Some(Duration::from_secs(31)), far).await);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(pause(1, Some(Duration::ZERO), far).await);
        // Nor past the turn's deadline.
        assert!(
            !pause(
                1,
                Some(Duration::from_secs(5)),
                Instant::now() + Duration::from_secs(2)
            )
            .await
        );
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
