//! Security tests of threadkeeper, black-box over HTTP and the CLI: service keys and open
//! mode, tenant isolation on every route, a corpus of hostile requests, and secrets that must
//! never leave the process (logs, responses, exports, the database file).
//!
//! Each test starts the real binary on its own SQLite file with its own in-process fake
//! OpenRouter, through the `tests/api` harness, and talks to it on loopback only.

// Tests may panic on a broken expectation; that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The shared harness of `tests/api`; this binary uses only part of it.
#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

mod as_data;
mod hostile;
mod keys;
mod secrets;
mod support;
mod tenants;
