//! ai-sdk-provider fixture directories: `request.json` (body under `body.json`),
//! `response.meta.json` (`status`, `is_sse`) and either `response.json` (raw body text, padding
//! kept) or `response.jsonl` (an SSE event log, turned back into SSE text here).

use std::path::Path;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{minify, read, Exchange};

#[derive(Deserialize)]
struct RequestFile {
    body: RequestBody,
}

#[derive(Deserialize)]
struct RequestBody {
    json: Box<RawValue>,
}

#[derive(Deserialize)]
struct Meta {
    status: u16,
    #[serde(default)]
    is_sse: bool,
}

/// One line of `response.jsonl`.
#[derive(Deserialize)]
struct Line {
    comment: Option<String>,
    json: Option<Box<RawValue>>,
    text: Option<String>,
    delay_ms: Option<u64>,
}

pub(super) fn load_dir(dir: &Path) -> Result<Exchange, String> {
    let context = |e: String| format!("{}: {e}", dir.display());
    let request: RequestFile = parse(&read(&dir.join("request.json"))?).map_err(context)?;
    let meta: Meta = parse(&read(&dir.join("response.meta.json"))?).map_err(context)?;
    let raw = dir.join("response.json");
    let (response_body, is_sse) = if raw.is_file() {
        (read(&raw)?, meta.is_sse)
    } else {
        let log = read(&dir.join("response.jsonl"))?;
        (jsonl_to_sse(&log).map_err(context)?, true)
    };
    Ok(Exchange {
        // The file is pretty-printed; the wire body was compact.
        request_body: minify(request.body.json.get()),
        status: meta.status,
        response_body,
        is_sse,
    })
}

fn parse<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// Rebuild the SSE text from the event log. Timing lines are dropped. A comment line may hold
/// the complete SSE comment as it was on the wire (`": OPENROUTER PROCESSING\n\n"`, which is what
/// the recorded log actually contains) or just its text; both give `: <text>\n\n`.
pub(super) fn jsonl_to_sse(log: &str) -> Result<String, String> {
    let mut sse = String::new();
    for (number, line) in log
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let line: Line =
            parse(line).map_err(|e| format!("response.jsonl line {}: {e}", number + 1))?;
        if let Some(comment) = line.comment {
            if comment.starts_with(':') {
                sse.push_str(comment.trim_end_matches('\n'));
            } else {
                sse.push_str(": ");
                sse.push_str(&comment);
            }
            sse.push_str("\n\n");
        } else if let Some(json) = line.json {
            sse.push_str("data: ");
            sse.push_str(&minify(json.get()));
            sse.push_str("\n\n");
        } else if let Some(text) = line.text {
            sse.push_str("data: ");
            sse.push_str(&text);
            sse.push_str("\n\n");
        } else if line.delay_ms.is_none() {
            return Err(format!("response.jsonl line {}: unknown event", number + 1));
        }
    }
    Ok(sse)
}
