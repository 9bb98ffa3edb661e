//! The generated default completion, built byte by byte in the shape of the recorded DeepSeek V3.2
//! and Kimi K2.5 answers (key order included), because clients and tests compare raw bytes.
//!
//! The JSON is written by hand rather than through `serde_json::json!`: serde_json (without
//! `preserve_order`) would sort the keys, and the reasoning text deliberately carries a `\u00e9`
//! escape that a re-serialising client would silently turn into a raw `é`.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;

use crate::request::ChatRequest;

/// Provider the fake claims served the request.
pub(crate) const PROVIDER: &str = "DeepSeek";
/// Date suffix OpenRouter appends to the requested slug when reporting the served model.
const MODEL_DATE: &str = "20250929";
/// Prices in units of 1e-8 USD per token (DeepSeek V3.2 Exp list prices: $0.27/M in, $0.40/M out).
const PROMPT_PRICE: u64 = 27;
const COMPLETION_PRICE: u64 = 40;
/// Characters of the user's text quoted back in content and reasoning.
const QUOTE_CHARS: usize = 60;

/// Everything decided for one generated reply; rendered as a JSON body or as an SSE stream.
#[derive(Clone, Debug)]
pub(crate) struct Generation {
    pub id: String,
    pub created: u64,
    /// Served model slug (unescaped).
    pub model: String,
    /// Content pieces as JSON string literal contents (already escaped); one per stream delta.
    pub content: Vec<String>,
    /// Reasoning pieces as JSON string literal contents; `None` when reasoning is not shown.
    pub reasoning: Option<Vec<String>>,
    pub tool_call: Option<ToolCall>,
    pub usage: String,
}

#[derive(Clone, Debug)]
pub(crate) struct ToolCall {
    pub id: String,
    pub name: String,
}

impl Generation {
    /// Decide the reply to `request`: content and reasoning are deterministic, ids are random.
    pub fn new(request: &ChatRequest) -> Generation {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut rng = rand::rng();
        let quote = truncate(&request.last_user_text, QUOTE_CHARS);
        let turn = request.user_turns;
        let reasoning = request.reasoning.then(|| reasoning_pieces(&quote, turn));
        let tool_call = request.tool_to_call.as_ref().map(|name| ToolCall {
            id: format!("call_{:032x}", rng.random::<u128>()),
            name: name.clone(),
        });
        let content = if tool_call.is_some() {
            Vec::new()
        } else {
            words(&format!("Reply #{turn} to: {quote}"))
        };
        let reasoning_chars = reasoning.as_ref().map_or(0, |p| literal_chars(p));
        let reasoning_tokens = if reasoning.is_some() {
            reasoning_chars / 4 + 1
        } else {
            0
        };
        let completion_tokens = literal_chars(&content) / 4 + 1 + reasoning_tokens;
        let prompt_tokens = (request.body_len / 4).max(1);
        Generation {
            id: format!("gen-{created}-{}", Alphanumeric.sample_string(&mut rng, 20)),
            created,
            model: format!("{}-{MODEL_DATE}", request.model),
            usage: usage(
                prompt_tokens as u64,
                completion_tokens as u64,
                reasoning_tokens as u64,
            ),
            content,
            reasoning,
            tool_call,
        }
    }

    /// The reasoning as one JSON string literal (with quotes), or `null`.
    pub fn reasoning_literal(&self) -> String {
        match &self.reasoning {
            Some(pieces) => format!("\"{}\"", pieces.concat()),
            None => "null".to_owned(),
        }
    }

    pub fn finish_reason(&self) -> &'static str {
        if self.tool_call.is_some() {
            "tool_calls"
        } else {
            "stop"
        }
    }

    /// The non-streaming JSON body (without padding), shaped like the Kimi K2.5 recording.
    pub fn completion_body(&self) -> String {
        let reasoning = self.reasoning_literal();
        let content = match self.tool_call {
            Some(_) => "null".to_owned(),
            None => format!("\"{}\"", self.content.concat()),
        };
        let mut message = format!(
            r#"{{"role":"assistant","content":{content},"refusal":null,"reasoning":{reasoning}"#
        );
        if let Some(call) = &self.tool_call {
            message.push_str(&format!(
                r#","tool_calls":[{{"type":"function","index":0,"id":"{}","function":{{"name":"{}","arguments":"{{}}"}}}}]"#,
                escape(&call.id),
                escape(&call.name)
            ));
        }
        if self.reasoning.is_some() {
            message.push_str(&format!(
                r#","reasoning_details":[{{"type":"reasoning.text","text":{reasoning},"format":"unknown","index":0}}]"#
            ));
        }
        message.push('}');
        let finish = self.finish_reason();
        format!(
            r#"{{"id":"{id}","object":"chat.completion","created":{created},"model":"{model}","provider":"{PROVIDER}","system_fingerprint":null,"choices":[{{"index":0,"logprobs":null,"finish_reason":"{finish}","native_finish_reason":"{finish}","message":{message}}}],"usage":{usage}}}"#,
            id = self.id,
            created = self.created,
            model = escape(&self.model),
            usage = self.usage,
        )
    }
}

/// Reasoning that quotes the request and carries the byte-exactness traps: an escaped `\"`, a
/// `\u00e9`-style escape, and non-ASCII characters written raw.
fn reasoning_pieces(quote: &str, turn: usize) -> Vec<String> {
    let mut pieces: Vec<String> = ["The", " user", " wrote", " \\\""]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    pieces.extend(words(quote));
    pieces.extend(
        [
            "\\\"",
            " (turn",
            &format!(" {turn})."),
            " Caf\\u00e9",
            "-style",
            " na\\u00efve",
            " check",
            " of",
            " r\u{e9}sum\u{e9}",
            " bytes",
            " \u{2014}",
            " fine",
            " \u{2713}",
        ]
        .iter()
        .map(|s| (*s).to_owned()),
    );
    pieces
}

/// Split text into escaped word pieces (" word" style, as providers stream tokens).
fn words(text: &str) -> Vec<String> {
    text.split_inclusive(' ').map(escape).collect()
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}\u{2026}", &text[..cut]),
        None => text.to_owned(),
    }
}

fn literal_chars(pieces: &[String]) -> usize {
    pieces.iter().map(|p| p.chars().count()).sum()
}

/// JSON string escaping exactly as serde_json writes it: `"` `\` and control characters escaped
/// (`\n`-style where JSON has a short form, else `\u00xx` lowercase), everything else raw.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// The usage block in the recordings' key order, with cost in USD.
fn usage(prompt: u64, completion: u64, reasoning: u64) -> String {
    let prompt_cost = prompt * PROMPT_PRICE;
    let completion_cost = completion * COMPLETION_PRICE;
    let cost = dollars(prompt_cost + completion_cost);
    format!(
        r#"{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{total},"cost":{cost},"is_byok":false,"prompt_tokens_details":{{"cached_tokens":0,"cache_write_tokens":0,"audio_tokens":0,"video_tokens":0}},"cost_details":{{"upstream_inference_cost":{cost},"upstream_inference_prompt_cost":{pc},"upstream_inference_completions_cost":{cc}}},"completion_tokens_details":{{"reasoning_tokens":{reasoning},"image_tokens":0,"audio_tokens":0}}}}"#,
        total = prompt + completion,
        pc = dollars(prompt_cost),
        cc = dollars(completion_cost),
    )
}

/// Format 1e-8 USD units as a plain decimal (`0.00000566`), never in exponent form.
fn dollars(units: u64) -> String {
    let text = format!("{}.{:08}", units / 100_000_000, units % 100_000_000);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
#[path = "generate_tests.rs"]
mod tests;
