//! Loading the real OpenRouter recordings in `tests/fixtures/upstream-recordings/` as request /
//! response pairs, so tests can replay real bodies through the fake ([`Exchange::reply`]).
//!
//! Three recording formats exist (see `SOURCES.md` there): fantasy's go-vcr cassettes (exact
//! bytes), pydantic-ai's vcrpy cassettes (JSON re-parsed into YAML, re-serialised here; SSE exact)
//! and ai-sdk-provider's fixture directories (raw JSON text, or SSE rebuilt from a JSONL event
//! log). [`load`] picks the format from the path and the file's shape.

mod aisdk;
mod cassette;

use std::fs;
use std::path::{Path, PathBuf};

use crate::Reply;

/// One recorded request and the response OpenRouter gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    /// The request body: exact for fantasy, re-serialised compactly for the other formats.
    pub request_body: String,
    pub status: u16,
    /// The response body: exact (padding included) except for pydantic-ai's re-parsed JSON.
    pub response_body: String,
    /// Whether the response was `text/event-stream`.
    pub is_sse: bool,
}

impl Exchange {
    /// A reply that sends this response again.
    pub fn reply(&self) -> Reply {
        match (self.is_sse, self.status) {
            (true, 200) => Reply::sse(self.response_body.clone()),
            (true, status) => Reply::raw(status, self.response_body.clone())
                .with_header("content-type", "text/event-stream"),
            (false, status) => Reply::recorded(status, self.response_body.clone()),
        }
    }
}

/// Load the exchanges of one recording: a cassette YAML file (fantasy or pydantic-ai) or an
/// ai-sdk-provider fixture directory.
pub fn load(path: &Path) -> Result<Vec<Exchange>, String> {
    if path.is_dir() {
        return aisdk::load_dir(path).map(|exchange| vec![exchange]);
    }
    let text = read(path)?;
    cassette::load(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `<workspace>/tests/fixtures/upstream-recordings`.
pub fn fixtures_dir() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = crate_dir
        .parent()
        .map_or_else(|| crate_dir.join(".."), Path::to_path_buf);
    workspace
        .join("tests")
        .join("fixtures")
        .join("upstream-recordings")
}

/// [`load`] a recording by its path relative to [`fixtures_dir`], e.g.
/// `"fantasy/TestOpenRouterCommon/kimi/tool.yaml"`.
pub fn load_fixture(relative: &str) -> Result<Vec<Exchange>, String> {
    load(&fixtures_dir().join(relative))
}

/// Every recording under `dir` that [`load`] understands (YAML cassettes and fixture
/// directories), sorted.
pub fn recording_paths(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut found = Vec::new();
    collect(dir, &mut found)?;
    found.sort();
    Ok(found)
}

fn collect(dir: &Path, found: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.is_dir() {
            if path.join("request.json").is_file() {
                found.push(path);
            } else {
                collect(&path, found)?;
            }
        } else if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            found.push(path);
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Remove the whitespace between JSON tokens, keeping key order and string escapes exactly (a
/// serde_json `Value` round trip would sort keys and normalise escapes).
pub(crate) fn minify(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_ascii_whitespace() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests;
