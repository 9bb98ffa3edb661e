//! A scripted fake of OpenRouter's `POST /api/v1/chat/completions`, speaking the real protocol
//! with its quirks as recorded in `tests/fixtures/upstream-recordings/` (see its `SOURCES.md`):
//! whitespace padding before JSON bodies, `: OPENROUTER PROCESSING` SSE comments, reasoning as
//! `reasoning` + `reasoning_details` (`reasoning.text`, `format:"unknown"`, `index:0`), usage in a
//! separate `"choices":[]` chunk, provider errors wrapped with the provider's JSON in
//! `metadata.raw`.
//!
//! Used in-process by integration tests ([`FakeUpstream`]) and as the binary `fake-openrouter`
//! for the README quick start.
//!
//! # Behaviour
//!
//! * Each chat-completions request consumes one queued [`Reply`] (FIFO); with an empty queue it
//!   gets the generated default completion ([`Reply::generated`]): deterministic content
//!   `Reply #<user turn> to: <last user text>`, reasoning quoting the request (with a `\u00e9`
//!   escape, an escaped quote and raw non-ASCII, to catch clients that re-serialise), and a tool
//!   call to the first tool when the request has `tools` and ends with a user message.
//! * Authentication (unless `require_auth` is false): no `Authorization: Bearer <token>` gives 401
//!   `{"error":{"message":"No auth credentials found","code":401}}`.
//! * Invalid JSON or no `messages` array gives 400 `{"error":{"message":"...","code":400}}`.
//! * Strict mode: assistant messages sent back must carry `reasoning_details` byte-identical to a
//!   value the fake sent (non-streaming bodies, scripted or generated; for generated streams, the
//!   fragments merged into one block and serialised compactly in the fragments' key order), and
//!   tool-call turns that came with reasoning must return it (DeepSeek's rule). Violations get a
//!   400 in OpenRouter's "Provider returned error" shape. Checks run before a queued reply is used;
//!   rejected requests do not consume one.
//! * Every chat-completions request is recorded ([`FakeUpstream::requests`]) with the exact body.
//!
//! # Admin API
//!
//! * `POST /_fake/replies`: a JSON array of replies, queued in order; answers 204. Each reply is
//!   an object with a `kind` and that kind's fields, plus optional `delay_ms` (number),
//!   `headers` (object of name to value) and `padding` (number of padding units):
//!   - `{"kind":"raw","status":429,"body":"..."}` (`"recorded"` is accepted as an alias)
//!   - `{"kind":"sse","body":"data: {...}\n\ndata: [DONE]\n\n"}`
//!   - `{"kind":"sse_events","events":[{"comment":"OPENROUTER PROCESSING"},{"delay_ms":100},
//!     {"data":"{...}"},"done","cut"]}`
//!   - `{"kind":"generated"}`, `{"kind":"hang"}`, `{"kind":"close"}`
//!   - `{"kind":"stall_after","bytes":40,"body":"..."}` (optional `"status"`, default 200)
//! * `GET /_fake/requests`: a JSON array of
//!   `{"path":"/api/v1/chat/completions","body":"<exact body>","authorization_present":true,"reply_status":200}`
//!   (`reply_status` is 0 when no status line was sent: hang, close).
//! * `POST /_fake/reset`: clear queue, recorded requests and strict memory; answers 204.
//! * `POST /_fake/strict` with `{"strict":true}`: switch strict mode; answers 204.
//!
//! Malformed admin requests get 400 with an `{"error":...}` body.

mod admin;
mod chat;
mod generate;
mod generate_stream;
mod render;
mod reply;
mod request;
mod server;
mod state;
mod strict;

pub mod recordings;

use std::time::Duration;

pub use reply::{Reply, SseEvent, PADDING_UNIT};
pub use server::FakeUpstream;
pub use state::RecordedRequest;

/// How a [`FakeUpstream`] behaves when nothing is scripted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeConfig {
    /// Start in strict mode (see the crate docs); switchable with [`FakeUpstream::set_strict`].
    pub strict: bool,
    /// Answer 401 to requests without `Authorization: Bearer <token>`.
    pub require_auth: bool,
    /// Delay of generated replies: between stream events, or before an unscripted JSON body
    /// (after its padding). Scripted replies only wait for their own `with_delay`.
    pub default_delay: Duration,
}

impl Default for FakeConfig {
    fn default() -> FakeConfig {
        FakeConfig {
            strict: false,
            require_auth: true,
            default_delay: Duration::ZERO,
        }
    }
}
