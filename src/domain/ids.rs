//! Identifiers (UUIDv7 strings) and timestamps (RFC 3339 UTC with milliseconds).

use chrono::{SecondsFormat, Utc};
use uuid::Uuid;

use crate::error::ApiError;

/// A new time-ordered id: UUIDv7, so ids sort in creation order (lists page by id).
pub fn new_id() -> String {
    Uuid::now_v7().to_string()
}

/// Parses an id from a path or cursor into its canonical lowercase hyphenated form, so that
/// `ABC...` and `abc...` name the same row.
pub fn parse_id(text: &str, what: &str) -> Result<String, ApiError> {
    Uuid::try_parse(text)
        .map(|id| id.to_string())
        .map_err(|_| ApiError::invalid_param(what, format!("`{what}` is not a valid id")))
}

/// Now, as the contract writes timestamps: `2026-01-02T03:04:05.678Z`.
pub fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Now, in unix milliseconds (lease expiry arithmetic).
pub fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_canonical_and_time_ordered() {
        let a = new_id();
        let b = new_id();
        assert!(a < b, "v7 ids sort in creation order");
        assert_eq!(parse_id(&a.to_uppercase(), "id").ok(), Some(a));
        assert!(parse_id("../etc/passwd", "thread_id").is_err());
        assert!(parse_id("", "thread_id").is_err());
    }

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        let t = now();
        assert!(t.ends_with('Z'));
        assert_eq!(t.len(), "2026-01-02T03:04:05.678Z".len());
    }
}
