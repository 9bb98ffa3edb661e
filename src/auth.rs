//! Service keys and tenants (SPEC section 7): key generation and hashing, the per-request
//! check of `Authorization: Bearer <key>`, open mode, and the optional per-key rate limit.
//!
//! Keys are `tk_` followed by 43 URL-safe base64 characters (32 random bytes). Only their
//! SHA-256 is stored: a fast hash is right for 256-bit random secrets, which cannot be
//! guessed, unlike passwords. Keys are read from the database on every request, so a key
//! created or revoked by `threadkeeper keys` while `serve` runs counts at the next request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use base64::Engine;
use rand::RngCore;

use crate::error::ApiError;
use crate::storage::{sha256_hex, Storage};

/// The tenant of open mode (no key was ever created).
pub const OPEN_TENANT: &str = "default";
/// Longer Authorization headers are refused without looking further.
const MAX_AUTHORIZATION_LEN: usize = 512;
/// `last_used_at` is written at most this often per key, not on every request.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "tk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

pub fn hash_key(key: &str) -> String {
    sha256_hex(key.as_bytes())
}

/// Byte comparison whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    /// The key used; `None` in open mode.
    pub key_id: Option<String>,
}

pub struct Auth {
    /// Set once a key is seen to exist: from then on every request needs one.
    keys_exist: AtomicBool,
    limiter: Option<RateLimiter>,
    touched: Mutex<HashMap<String, Instant>>,
}

impl Auth {
    pub fn new(rate_limit_per_minute: u32) -> Self {
        Self {
            keys_exist: AtomicBool::new(false),
            limiter: (rate_limit_per_minute > 0).then(|| RateLimiter::new(rate_limit_per_minute)),
            touched: Mutex::new(HashMap::new()),
        }
    }

    /// Checks a request's `Authorization` header and applies the rate limit.
    pub async fn authenticate(
        &self,
        storage: &Storage,
        authorization: Option<&HeaderValue>,
    ) -> Result<Principal, ApiError> {
        let principal = self.identify(storage, authorization).await?;
        if let Some(limiter) = &self.limiter {
            let bucket = principal.key_id.as_deref().unwrap_or(OPEN_TENANT);
            limiter.take(bucket).map_err(ApiError::TooManyRequests)?;
        }
        Ok(principal)
    }

    async fn identify(
        &self,
        storage: &Storage,
        authorization: Option<&HeaderValue>,
    ) -> Result<Principal, ApiError> {
        if !self.keys_exist.load(Ordering::Relaxed) {
            if storage.keys_exist().await? {
                self.keys_exist.store(true, Ordering::Relaxed);
            } else {
                return Ok(Principal {
                    tenant: OPEN_TENANT.into(),
                    key_id: None,
                });
            }
        }
        let key = authorization
            .filter(|v| v.len() <= MAX_AUTHORIZATION_LEN)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| token.starts_with("tk_"))
            .ok_or(ApiError::Unauthorized)?;
        let hash = hash_key(key);
        let found = storage
            .find_active_key(&hash)
            .await?
            .filter(|k| constant_time_eq(k.key_sha256.as_bytes(), hash.as_bytes()))
            .ok_or(ApiError::Unauthorized)?;
        self.touch(storage, &found.id).await;
        Ok(Principal {
            tenant: found.tenant,
            key_id: Some(found.id),
        })
    }

    /// Records the key's last use, at most once a minute per key and process.
    async fn touch(&self, storage: &Storage, key_id: &str) {
        let due = {
            let Ok(mut touched) = self.touched.lock() else {
                return;
            };
            let now = Instant::now();
            match touched.get(key_id) {
                Some(at) if now.duration_since(*at) < TOUCH_EVERY => false,
                _ => {
                    touched.insert(key_id.to_owned(), now);
                    true
                }
            }
        };
        if due {
            if let Err(e) = storage.touch_key(key_id).await {
                tracing::warn!(error = %e, "could not record a key's last use");
            }
        }
    }
}

/// A token bucket per key: `per_minute` requests, refilled evenly.
struct RateLimiter {
    per_minute: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    fn new(per_minute: u32) -> Self {
        Self {
            per_minute: f64::from(per_minute),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token, or says how long until one is there.
    fn take(&self, bucket: &str) -> Result<(), Duration> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        let per_second = self.per_minute / 60.0;
        let (tokens, at) = buckets
            .entry(bucket.to_owned())
            .or_insert((self.per_minute, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * per_second).min(self.per_minute);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_prefixed() {
        let a = generate_key();
        let b = generate_key();
        assert!(a.starts_with("tk_") && a.len() == 46, "{a}");
        assert_ne!(a, b);
        assert_eq!(hash_key(&a).len(), 64);
        assert!(constant_time_eq(
            hash_key(&a).as_bytes(),
            hash_key(&a).as_bytes()
        ));
        assert!(!constant_time_eq(
            hash_key(&a).as_bytes(),
            hash_key(&b).as_bytes()
        ));
    }

    #[test]
    fn rate_limiter_refuses_past_the_budget_and_says_when() {
        let limiter = RateLimiter::new(2);
        assert!(limiter.take("k").is_ok());
        assert!(limiter.take("k").is_ok());
        let wait = limiter.take("k").err().unwrap_or_default();
        assert!(
            wait > Duration::from_secs(20) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(limiter.take("other").is_ok());
    }
}
