//! Black-box tests of threadkeeper over HTTP: each test starts the real binary on port 0
//! with its own SQLite file and its own fake OpenRouter, and checks both what the API
//! answers and what reached the upstream.

// Tests may panic on a broken expectation; that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audit_requests;
mod concurrency;
mod context_cache;
mod crash;
mod errors;
mod failures;
mod faults;
mod helpers;
mod idempotency;
mod malformed;
mod messages;
mod operations;
mod pagination;
mod processes;
mod reasoning_replay;
mod shutdown;
mod sse_client;
mod streaming;
mod streaming_failures;
mod streaming_merge;
mod streaming_recordings;
mod threads;
mod turns;
