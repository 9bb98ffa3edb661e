//! Stored records as the storage layer returns them. Raw JSON columns stay `String`s holding
//! the exact stored bytes; they are spliced into responses and upstream requests unparsed.

use super::thread::Metadata;

#[derive(Debug, Clone, PartialEq)]
pub struct ThreadRecord {
    pub id: String,
    pub created_at: String,
    pub updated_at: String,
    pub metadata: Metadata,
    pub model: Option<String>,
    pub system: Option<String>,
    pub reasoning: Option<String>,
    pub reasoning_replay: Option<String>,
    pub params: Option<String>,
    pub message_count: i64,
    pub last_message_id: Option<String>,
    pub usage: Option<UsageTotals>,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct UsageTotals {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost: f64,
}

impl UsageTotals {
    /// `{prompt_tokens, completion_tokens, reasoning_tokens, cost}`, as the Thread object and
    /// the export carry it.
    pub fn to_json(&self) -> String {
        let mut usage = super::json::ObjectWriter::new();
        usage
            .int("prompt_tokens", self.prompt_tokens)
            .int("completion_tokens", self.completion_tokens)
            .int("reasoning_tokens", self.reasoning_tokens)
            .raw(
                "cost",
                &serde_json::to_string(&self.cost).unwrap_or_else(|_| "0".into()),
            );
        usage.finish()
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct MessageRecord {
    pub id: String,
    pub thread_id: String,
    pub seq: i64,
    pub role: String,
    pub content: Option<String>,
    pub name: Option<String>,
    pub tool_calls: Option<String>,
    pub tool_call_id: Option<String>,
    pub reasoning: Option<String>,
    pub reasoning_details: Option<String>,
    pub reasoning_details_sha256: Option<String>,
    pub turn_id: Option<String>,
    pub created_at: String,
    pub model: Option<String>,
    pub requested_model: Option<String>,
    pub provider: Option<String>,
    pub generation_id: Option<String>,
    pub finish_reason: Option<String>,
    pub native_finish_reason: Option<String>,
    pub usage: Option<String>,
}

impl MessageRecord {
    /// About how many bytes storing it writes (its raw values).
    pub fn stored_len(&self) -> usize {
        [
            &self.content,
            &self.tool_calls,
            &self.reasoning,
            &self.reasoning_details,
            &self.usage,
        ]
        .iter()
        .map(|v| v.as_ref().map_or(0, String::len))
        .sum()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TurnRecord {
    pub id: String,
    pub thread_id: String,
    pub status: String,
    /// JSON array text.
    pub input_message_ids: String,
    pub output_message_id: Option<String>,
    pub model: String,
    pub created_at: String,
    pub completed_at: Option<String>,
    pub latency_ms: Option<i64>,
    pub usage: Option<String>,
    pub generation_id: Option<String>,
    /// JSON error object text.
    pub error: Option<String>,
    pub idempotency_key: Option<String>,
    /// SHA-256 of the request that came with `idempotency_key`.
    pub request_sha256: Option<String>,
    pub audit: AuditRecord,
}

/// The upstream exchange of a turn (SPEC section 5).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuditRecord {
    /// The body sent, shared: the same bytes are sent, recorded, and kept to build and store
    /// the thread's next request, without copies.
    pub request: Option<std::sync::Arc<str>>,
    pub response: Option<String>,
    pub response_is_json: bool,
    pub status: Option<i64>,
    pub attempts: i64,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}
