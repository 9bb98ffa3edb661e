//! threadkeeper: a conversation-state service for reasoning models.
//!
//! Clients create threads and append turns over REST; each turn stores its input in SQLite,
//! rebuilds the thread's whole context, calls OpenRouter and stores the reply with its
//! `reasoning_details` byte for byte.

pub mod app; // AppState, the router and `serve(listener, shutdown)`
pub mod auth; // service keys, tenants, open mode, rate limit
pub mod cli; // clap commands: serve, migrate
pub mod config; // the one place that reads flags and environment
pub mod domain; // ids, messages, threads, turns; the context rebuild as a pure function
pub mod error; // one error enum mapped to the contract's error JSON
pub mod http; // one module per resource, thin handlers
pub mod memory; // giving memory freed after a burst back to the OS when idle
pub mod storage; // all SQL: connection set-up and whole operations
pub mod telemetry; // tracing subscriber, request ids
pub mod turns; // running a turn: store input, call upstream, store the result
pub mod upstream; // the OpenRouter client: wire types, retries, timeouts
