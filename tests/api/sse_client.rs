//! A client for streaming turns: posts `"stream": true`, reads the `text/event-stream`
//! answer event by event, and notes when each event arrived, so tests can tell relayed
//! chunks from buffered ones.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, CONTENT_TYPE};
use serde_json::Value;

use crate::helpers::{Api, Resp};

/// One server-sent event of a streaming turn, with the moment it was read.
#[derive(Clone, Debug)]
pub struct ServerEvent {
    /// The `event:` name (`turn.started`, `chunk`, `turn.completed`, `turn.failed`).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    pub at: Instant,
}

impl ServerEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| {
            panic!("event {} data is not JSON ({e}): {}", self.event, self.data)
        })
    }
}

/// The whole answer to a streaming turn request.
#[derive(Debug)]
pub struct Streamed {
    pub status: u16,
    pub headers: HeaderMap,
    /// The exact body text.
    pub text: String,
    pub events: Vec<ServerEvent>,
    /// SSE comments (keep-alives), with their arrival times.
    pub comments: Vec<(String, Instant)>,
    /// When the request was sent.
    pub sent_at: Instant,
}

impl Streamed {
    pub fn content_type(&self) -> String {
        self.headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    /// The answer as a plain response (for JSON errors answered before the stream began).
    pub fn resp(&self) -> Resp {
        Resp {
            status: self.status,
            headers: self.headers.clone(),
            text: self.text.clone(),
            what: "POST (stream) .../turns".into(),
        }
    }

    /// The names of the events, in order, chunks collapsed to one `chunk*` entry each run.
    pub fn outline(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for event in &self.events {
            let name = if event.event == "chunk" {
                "chunk*".to_owned()
            } else {
                event.event.clone()
            };
            if names.last() != Some(&name) {
                names.push(name);
            }
        }
        names
    }

    /// `turn.started` data; asserts it is the first event.
    pub fn started(&self) -> Value {
        assert_eq!(self.status, 200, "{}", self.text);
        assert!(
            self.content_type().starts_with("text/event-stream"),
            "content type {}: {}",
            self.content_type(),
            self.text
        );
        let first = self
            .events
            .first()
            .unwrap_or_else(|| panic!("no events: {}", self.text));
        assert_eq!(first.event, "turn.started", "{}", self.text);
        first.json()
    }

    /// The data of every `chunk` event, exactly as received.
    pub fn chunks(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e.event == "chunk")
            .map(|e| e.data.clone())
            .collect()
    }

    pub fn last(&self) -> &ServerEvent {
        self.events
            .last()
            .unwrap_or_else(|| panic!("no events: {}", self.text))
    }

    /// The Turn of `turn.completed`, which must end the stream.
    pub fn completed(&self) -> Value {
        self.started();
        let last = self.last();
        assert_eq!(last.event, "turn.completed", "{}", self.text);
        let turn = last.json();
        assert_eq!(turn["status"], "completed", "{turn}");
        turn
    }

    /// The `turn.failed` data `{turn_id, error}`, which must end the stream.
    pub fn failed(&self) -> Value {
        self.started();
        let last = self.last();
        assert_eq!(last.event, "turn.failed", "{}", self.text);
        last.json()
    }

    /// Only the expected events: started first, chunks, one final event last.
    pub fn assert_well_formed(&self) {
        let outline = self.outline();
        let ok = matches!(
            outline
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice(),
            ["turn.started", "turn.completed" | "turn.failed"]
                | ["turn.started", "chunk*", "turn.completed" | "turn.failed"]
        );
        assert!(ok, "event outline {outline:?}: {}", self.text);
    }
}

/// An incremental parser of the service's SSE (lines end in `\n`).
#[derive(Default)]
pub struct EventParser {
    line: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

pub enum Item {
    Event(String, String),
    Comment(String),
}

impl EventParser {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Item> {
        let mut items = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let line = String::from_utf8_lossy(&std::mem::take(&mut self.line))
                .trim_end_matches('\r')
                .to_owned();
            if line.is_empty() {
                if self.event.is_some() || self.data.is_some() {
                    let event = self.event.take().unwrap_or_else(|| "message".into());
                    items.push(Item::Event(event, self.data.take().unwrap_or_default()));
                }
            } else if let Some(comment) = line.strip_prefix(':') {
                items.push(Item::Comment(comment.trim_start().to_owned()));
            } else {
                let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
                let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
                match field {
                    "event" => self.event = Some(value),
                    "data" => match &mut self.data {
                        Some(data) => {
                            data.push('\n');
                            data.push_str(&value);
                        }
                        None => self.data = Some(value),
                    },
                    _ => {}
                }
            }
        }
        items
    }
}

impl Api {
    /// Sends a turn request with `"stream": true` in `text` (exact bytes) and returns the
    /// response as soon as its head arrived.
    pub async fn open_stream(
        &self,
        thread_id: &str,
        text: &str,
        headers: &[(&str, &str)],
    ) -> (reqwest::Response, Instant) {
        let mut request = self
            .http
            .post(format!("{}/v1/threads/{thread_id}/turns", self.base))
            .header(CONTENT_TYPE, "application/json")
            .body(text.to_owned());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let sent_at = Instant::now();
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("streaming turn on {thread_id}: {e}"));
        (response, sent_at)
    }

    /// Runs a streaming turn to the end of its answer. `body` gets `"stream": true`.
    pub async fn stream_turn(&self, thread_id: &str, body: &Value) -> Streamed {
        let mut body = body.clone();
        body["stream"] = Value::Bool(true);
        self.stream_turn_with(thread_id, &body.to_string(), &[])
            .await
    }

    /// Runs a streaming turn whose request body is exactly `text`.
    pub async fn stream_turn_with(
        &self,
        thread_id: &str,
        text: &str,
        headers: &[(&str, &str)],
    ) -> Streamed {
        let (response, sent_at) = self.open_stream(thread_id, text, headers).await;
        read_stream(response, sent_at).await
    }
}

/// Reads a streaming answer to its end (at most 30 s).
pub async fn read_stream(mut response: reqwest::Response, sent_at: Instant) -> Streamed {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut parser = EventParser::default();
    let mut raw = Vec::new();
    let mut events = Vec::new();
    let mut comments = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "stream not finished after 30 s: {}",
                    String::from_utf8_lossy(&raw)
                )
            })
            .unwrap_or_else(|e| {
                panic!(
                    "reading the stream failed: {e}: {}",
                    String::from_utf8_lossy(&raw)
                )
            });
        let Some(bytes) = chunk else { break };
        let at = Instant::now();
        raw.extend_from_slice(&bytes);
        for item in parser.push(&bytes) {
            match item {
                Item::Event(event, data) => events.push(ServerEvent { event, data, at }),
                Item::Comment(text) => comments.push((text, at)),
            }
        }
    }
    Streamed {
        status,
        headers,
        text: String::from_utf8_lossy(&raw).into_owned(),
        events,
        comments,
        sent_at,
    }
}

/// Reads events from an open streaming answer until `stop` says so; returns what was read.
/// The response stays usable (or can be dropped to disconnect).
pub async fn read_events_until(
    response: &mut reqwest::Response,
    mut stop: impl FnMut(&[ServerEvent]) -> bool,
) -> Vec<ServerEvent> {
    let mut parser = EventParser::default();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !stop(&events) {
        let bytes = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("events in time")
            .expect("stream readable")
            .expect("stream not ended");
        let at = Instant::now();
        for item in parser.push(&bytes) {
            if let Item::Event(event, data) = item {
                events.push(ServerEvent { event, data, at });
            }
        }
    }
    events
}
