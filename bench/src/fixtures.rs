//! Realistic conversation history for the context-rebuild scenario, shaped like the recordings
//! in `tests/fixtures/upstream-recordings`: user prose, assistant answers with `reasoning` plus a
//! `reasoning_details` array of 1-4 KB (Anthropic signed text, OpenAI summary + encrypted blob,
//! DeepSeek/GLM plain text, Gemini text + encrypted), and now and then a tool call and its result.
//! Deterministic (a fixed-seed xorshift), so every run imports the same bytes.

use serde_json::{json, Value};

/// The model the service uses by default; assistant messages carry it so that the default
/// `reasoning_replay: same_model` replays their `reasoning_details` in every context.
pub const MODEL: &str = "deepseek/deepseek-v3.2-exp";

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in lo..=hi.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.range(0, items.len() - 1)]
    }
}

const WORDS: &[&str] = &[
    "the",
    "a",
    "thread",
    "context",
    "model",
    "reasoning",
    "token",
    "window",
    "cache",
    "provider",
    "request",
    "answer",
    "function",
    "weather",
    "Florence",
    "Italy",
    "signature",
    "block",
    "replay",
    "stream",
    "chunk",
    "latency",
    "budget",
    "user",
    "assistant",
    "tool",
    "call",
    "result",
    "because",
    "therefore",
    "however",
    "should",
    "could",
    "would",
    "first",
    "then",
    "finally",
    "check",
    "verify",
    "compare",
    "bytes",
    "exact",
    "order",
    "keys",
    "number",
    "format",
    "escape",
    "whitespace",
    "database",
    "transaction",
    "commit",
    "lease",
    "turn",
    "message",
    "history",
    "summary",
    "detail",
    "step",
    "plan",
    "consider",
    "option",
    "café",
    "naïve",
    "résumé",
    "—",
    "✓",
    "data",
    "value",
    "is",
    "are",
    "was",
    "with",
    "for",
    "to",
    "of",
    "in",
    "on",
    "and",
    "or",
    "not",
    "this",
    "that",
    "it",
    "we",
    "I",
    "need",
];

/// Prose of about `bytes` bytes: sentences, paragraphs, a quoted phrase now and then (so the
/// JSON carries `\"` and `\n` escapes) and raw non-ASCII.
pub fn prose(rng: &mut Rng, bytes: usize) -> String {
    let mut out = String::with_capacity(bytes + 64);
    let mut sentence = 0usize;
    while out.len() < bytes {
        let words = rng.range(6, 18);
        for i in 0..words {
            let word = rng.pick(WORDS);
            if i == 0 {
                let mut chars = word.chars();
                if let Some(first) = chars.next() {
                    out.extend(first.to_uppercase());
                    out.push_str(chars.as_str());
                }
            } else if rng.range(0, 30) == 0 {
                out.push_str(" \"");
                out.push_str(word);
                out.push('"');
            } else {
                out.push(' ');
                out.push_str(word);
            }
        }
        out.push('.');
        sentence += 1;
        if sentence.is_multiple_of(5) {
            out.push_str("\n\n");
        } else {
            out.push(' ');
        }
    }
    out
}

fn prose_between(rng: &mut Rng, lo: usize, hi: usize) -> String {
    let bytes = rng.range(lo, hi);
    prose(rng, bytes)
}

fn blob_between(rng: &mut Rng, lo: usize, hi: usize, alphabet: &[u8]) -> String {
    let len = rng.range(lo, hi);
    blob(rng, len, alphabet)
}

fn blob(rng: &mut Rng, len: usize, alphabet: &[u8]) -> String {
    let mut out: String = (0..len)
        .map(|_| char::from(alphabet[rng.range(0, alphabet.len() - 1)]))
        .collect();
    out.push('=');
    out
}

const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URLSAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const HEX: &[u8] = b"0123456789abcdef";

/// `reasoning` text and a `reasoning_details` array in one of the recorded providers' shapes.
fn reasoning(rng: &mut Rng, shape: usize) -> (String, Value) {
    let text = prose_between(rng, 600, 2200);
    let details = match shape % 4 {
        0 => json!([{
            "type": "reasoning.text",
            "text": text,
            "format": "anthropic-claude-v1",
            "index": 0,
            "signature": blob_between(rng, 400, 900, BASE64),
        }]),
        1 => json!([
            {"type": "reasoning.summary", "summary": text, "format": "openai-responses-v1", "index": 0},
            {
                "type": "reasoning.encrypted",
                "data": format!("gAAAAAB{}", blob_between(rng, 800, 1800, URLSAFE)),
                "format": "openai-responses-v1",
                "id": format!("rs_{}", blob(rng, 48, HEX).trim_end_matches('=')),
                "index": 0,
            },
        ]),
        2 => json!([{"type": "reasoning.text", "text": text, "format": "unknown", "index": 0}]),
        _ => json!([
            {"type": "reasoning.text", "text": text, "format": "google-gemini-v1", "index": 0},
            {
                "type": "reasoning.encrypted",
                "data": blob_between(rng, 300, 1000, BASE64),
                "format": "google-gemini-v1",
                "index": 0,
            },
        ]),
    };
    (text, details)
}

/// Messages (each a JSON text) adding up to at least `target_bytes`, ending with an assistant
/// answer so that the next turn's user input follows naturally.
pub fn history(rng: &mut Rng, target_bytes: usize) -> Vec<String> {
    let mut messages = Vec::new();
    let mut total = 0usize;
    let mut exchange = 0usize;
    while total < target_bytes {
        let mut push = |m: Value| {
            let text = m.to_string();
            total += text.len() + 1;
            messages.push(text);
        };
        push(json!({"role": "user", "content": prose_between(rng, 150, 900)}));
        if exchange % 5 == 4 {
            // A tool call with its reasoning, and the tool's result.
            let (text, details) = reasoning(rng, exchange);
            let id = format!("call_{}", blob(rng, 24, HEX).trim_end_matches('='));
            push(json!({
                "role": "assistant",
                "content": null,
                "reasoning": text,
                "reasoning_details": details,
                "tool_calls": [{
                    "id": id,
                    "type": "function",
                    "function": {"name": "weather", "arguments": "{\"location\": \"Florence, Italy\"}"},
                }],
                "model": MODEL,
            }));
            push(
                json!({"role": "tool", "tool_call_id": id, "content": "{\"temperature_c\": 31, \"sky\": \"clear\"}"}),
            );
        }
        let (text, details) = reasoning(rng, exchange + 1);
        push(json!({
            "role": "assistant",
            "content": prose_between(rng, 200, 1200),
            "reasoning": text,
            "reasoning_details": details,
            "model": MODEL,
        }));
        exchange += 1;
    }
    messages
}

/// Splits messages into JSON bodies `{"messages":[...]}` of about `max_bytes` each.
pub fn batches(messages: &[String], max_bytes: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut size = 0usize;
    for m in messages {
        if !current.is_empty() && size + m.len() > max_bytes {
            out.push(format!("{{\"messages\":[{}]}}", current.join(",")));
            current.clear();
            size = 0;
        }
        size += m.len() + 1;
        current.push(m);
    }
    if !current.is_empty() {
        out.push(format!("{{\"messages\":[{}]}}", current.join(",")));
    }
    out
}

/// `count` small user messages as one append body.
pub fn small_messages(start: usize, count: usize) -> String {
    let items: Vec<String> = (start..start + count)
        .map(|i| {
            format!(
                r#"{{"role":"user","content":"note {i:06}: a short message for the memory test"}}"#
            )
        })
        .collect();
    format!("{{\"messages\":[{}]}}", items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_reaches_size_and_parses() {
        let mut rng = Rng::new(7);
        let messages = history(&mut rng, 40_000);
        let total: usize = messages.iter().map(|m| m.len()).sum();
        assert!(total >= 40_000);
        for body in batches(&messages, 16_000) {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            assert!(v["messages"].is_array());
        }
        let last: Value =
            serde_json::from_str(messages.last().map_or("", |m| m.as_str())).unwrap_or(Value::Null);
        assert_eq!(last["role"], "assistant");
    }

    #[test]
    fn reasoning_details_are_1_to_4_kb() {
        let mut rng = Rng::new(3);
        for shape in 0..8 {
            let (_, details) = reasoning(&mut rng, shape);
            let len = details.to_string().len();
            assert!((600..=4600).contains(&len), "{len}");
        }
    }
}
