//! Scripted replies: what the fake answers to one chat-completions request.
//!
//! This module owns the [`Reply`] / [`SseEvent`] vocabulary, its constructors and builders, and its
//! serde form (the JSON the admin API `POST /_fake/replies` accepts). Turning a reply into bytes on a
//! socket lives in `render`; generating the default completion lives in `generate`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One OpenRouter whitespace padding unit, exactly as OpenRouter writes it while the model works
/// (a newline, nine spaces, a newline). Recorded non-streaming bodies start with several of them.
pub const PADDING_UNIT: &str = "\n         \n";

/// Padding units the generated default reply sends before its JSON (matches the shortest recordings).
pub(crate) const GENERATED_PADDING: usize = 2;

/// One scripted answer to one chat-completions request. Queue with [`crate::FakeUpstream::push`];
/// when the queue is empty the fake answers with [`Reply::generated`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ReplyForm", into = "ReplyForm")]
pub struct Reply {
    pub(crate) kind: ReplyKind,
    /// Explicit delay; `None` means "not scripted" (generated replies then use the config default).
    pub(crate) delay: Option<Duration>,
    pub(crate) headers: Vec<(String, String)>,
    /// Padding units before a JSON body; `None` means the kind's default (0, or 2 for generated).
    pub(crate) padding: Option<usize>,
}

/// What kind of answer a [`Reply`] is. Its serde form is the `"kind"` tag of the admin JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum ReplyKind {
    /// Exact body bytes with `content-type: application/json`.
    #[serde(alias = "recorded")]
    Raw { status: u16, body: String },
    /// Exact SSE text in one write, status 200.
    Sse { body: String },
    /// SSE written event by event, flushed, honouring delays.
    SseEvents { events: Vec<SseEvent> },
    /// The generated default completion (streaming or not, as the request asks).
    Generated,
    /// Never send headers.
    Hang,
    /// Headers plus the first `bytes` bytes of `body`, then silence.
    StallAfter {
        bytes: usize,
        body: String,
        #[serde(default = "ok_status")]
        status: u16,
    },
    /// Close the TCP connection without any response.
    Close,
}

fn ok_status() -> u16 {
    200
}

/// One step of a [`Reply::sse_events`] stream.
///
/// Serde form: `{"data":"..."}`, `{"comment":"..."}`, `"done"`, `{"delay_ms":250}`, `"cut"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SseEvent {
    /// Written as `data: <text>\n\n`.
    Data(String),
    /// Written as `: <text>\n\n` (OpenRouter sends `: OPENROUTER PROCESSING`).
    Comment(String),
    /// Written as `data: [DONE]\n\n`.
    Done,
    /// Wait before writing the next event (the bytes so far are already flushed).
    #[serde(rename = "delay_ms", with = "duration_ms")]
    Delay(Duration),
    /// Close the connection abruptly: the chunked body is never terminated.
    Cut,
}

impl Reply {
    fn of(kind: ReplyKind) -> Reply {
        Reply {
            kind,
            delay: None,
            headers: Vec::new(),
            padding: None,
        }
    }

    /// Send exactly `body` with `status` and `content-type: application/json`.
    pub fn raw(status: u16, body: impl Into<String>) -> Reply {
        Reply::of(ReplyKind::Raw {
            status,
            body: body.into(),
        })
    }

    /// Same as [`Reply::raw`]; reads better when replaying a recorded body (whose padding is kept).
    pub fn recorded(status: u16, body: impl Into<String>) -> Reply {
        Reply::raw(status, body)
    }

    /// Status 200, `content-type: text/event-stream`, exactly `body` as the SSE text.
    pub fn sse(body: impl Into<String>) -> Reply {
        Reply::of(ReplyKind::Sse { body: body.into() })
    }

    /// Status 200 SSE written event by event, each flushed on its own, so clients see chunks arrive
    /// over time.
    pub fn sse_events(events: Vec<SseEvent>) -> Reply {
        Reply::of(ReplyKind::SseEvents { events })
    }

    /// The generated default completion (what an empty queue answers); useful after scripted errors.
    pub fn generated() -> Reply {
        Reply::of(ReplyKind::Generated)
    }

    /// Accept the request and never send headers, until the client gives up.
    pub fn hang() -> Reply {
        Reply::of(ReplyKind::Hang)
    }

    /// Status 200, then the first `bytes` bytes of `body`, then nothing more (the body never ends).
    /// The content type is `text/event-stream` when `body` looks like SSE, else `application/json`.
    pub fn stall_after(bytes: usize, body: impl Into<String>) -> Reply {
        Reply::of(ReplyKind::StallAfter {
            bytes,
            body: body.into(),
            status: 200,
        })
    }

    /// Close the TCP connection without sending any response (a connection failure).
    pub fn close() -> Reply {
        Reply::of(ReplyKind::Close)
    }

    /// Wait this long before the headers (or, with padding, between the padding and the body).
    pub fn with_delay(mut self, delay: Duration) -> Reply {
        self.delay = Some(delay);
        self
    }

    /// Add a response header, e.g. `Retry-After`. A `content-type` given here replaces the default.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Prepend `units` of OpenRouter's whitespace padding ([`PADDING_UNIT`]) to a JSON body. The
    /// padding goes out with the headers at once; the body follows after the delay, the way
    /// OpenRouter keeps a connection alive while the model works. Ignored for SSE, hang and close.
    pub fn with_padding(mut self, units: usize) -> Reply {
        self.padding = Some(units);
        self
    }
}

/// The admin API's JSON form of a [`Reply`]: the kind's fields plus the optional builder fields.
#[derive(Serialize, Deserialize)]
struct ReplyForm {
    #[serde(flatten)]
    kind: ReplyKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    padding: Option<usize>,
}

impl From<ReplyForm> for Reply {
    fn from(form: ReplyForm) -> Reply {
        Reply {
            kind: form.kind,
            delay: form.delay_ms.map(Duration::from_millis),
            headers: form.headers.into_iter().collect(),
            padding: form.padding,
        }
    }
}

impl From<Reply> for ReplyForm {
    fn from(reply: Reply) -> ReplyForm {
        ReplyForm {
            kind: reply.kind,
            delay_ms: reply.delay.map(millis),
            headers: reply.headers.into_iter().collect(),
            padding: reply.padding,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Durations travel as whole milliseconds in the admin JSON.
mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(super::millis(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn admin_json_round_trips() {
        let json = r#"[
            {"kind":"raw","status":429,"body":"{}","headers":{"Retry-After":"2"}},
            {"kind":"recorded","status":200,"body":"x","padding":3,"delay_ms":50},
            {"kind":"sse_events","events":[{"comment":"OPENROUTER PROCESSING"},{"delay_ms":20},{"data":"{}"},"done","cut"]},
            {"kind":"generated"},{"kind":"hang"},{"kind":"close"},
            {"kind":"stall_after","bytes":3,"body":"abcdef"}
        ]"#;
        let replies: Vec<Reply> = serde_json::from_str(json).unwrap();
        assert_eq!(
            replies[0],
            Reply::raw(429, "{}").with_header("Retry-After", "2")
        );
        assert_eq!(
            replies[1],
            Reply::recorded(200, "x")
                .with_padding(3)
                .with_delay(Duration::from_millis(50))
        );
        assert_eq!(
            replies[2],
            Reply::sse_events(vec![
                SseEvent::Comment("OPENROUTER PROCESSING".into()),
                SseEvent::Delay(Duration::from_millis(20)),
                SseEvent::Data("{}".into()),
                SseEvent::Done,
                SseEvent::Cut,
            ])
        );
        assert_eq!(replies[6], Reply::stall_after(3, "abcdef"));
        let again: Vec<Reply> =
            serde_json::from_str(&serde_json::to_string(&replies).unwrap()).unwrap();
        assert_eq!(again, replies);
    }

    #[test]
    fn unknown_kind_is_an_error_not_a_panic() {
        assert!(serde_json::from_str::<Reply>(r#"{"kind":"teapot"}"#).is_err());
        assert!(serde_json::from_str::<Reply>(r#"{"kind":"raw"}"#).is_err());
    }
}
