//! The export format (SPEC section 8): NDJSON, one object a line, the thread first, then its
//! messages in `seq` order, then its turns with their audit records.
//!
//! Stored raw values (content, tool_calls, reasoning, reasoning_details, usage, errors, the
//! upstream request and response) may hold line breaks, so each is carried as a JSON string
//! holding its exact bytes, in a field named after it with `_raw` appended. Reading a line
//! back gives those bytes unchanged, so export -> import -> export is byte-identical.

use serde::Deserialize;

use super::json::ObjectWriter;
use super::message::Role;
use super::records::{AuditRecord, MessageRecord, ThreadRecord, TurnRecord, UsageTotals};
use super::thread::{parse_params, Metadata, ReasoningReplay};

/// A thread with everything that belongs to it.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadExport {
    pub thread: ThreadRecord,
    pub messages: Vec<MessageRecord>,
    pub turns: Vec<TurnRecord>,
}

pub fn write(export: &ThreadExport) -> String {
    let mut out = String::new();
    let t = &export.thread;
    let mut w = ObjectWriter::new();
    w.string("object", "thread")
        .string("id", &t.id)
        .string("created_at", &t.created_at)
        .string("updated_at", &t.updated_at)
        .raw(
            "metadata",
            &serde_json::to_string(&t.metadata).unwrap_or_else(|_| "{}".into()),
        )
        .opt_string("model", t.model.as_deref())
        .opt_string("system", t.system.as_deref())
        .opt_string("reasoning_raw", t.reasoning.as_deref())
        .opt_string("reasoning_replay", t.reasoning_replay.as_deref())
        .opt_string("params_raw", t.params.as_deref())
        .int("message_count", t.message_count)
        .opt_string("last_message_id", t.last_message_id.as_deref());
    if let Some(u) = &t.usage {
        w.raw("usage", &u.to_json());
    }
    push_line(&mut out, w.finish());

    for m in &export.messages {
        let mut w = ObjectWriter::new();
        w.string("object", "message")
            .string("id", &m.id)
            .string("thread_id", &m.thread_id)
            .int("seq", m.seq)
            .string("role", &m.role)
            .opt_string("content_raw", m.content.as_deref())
            .opt_string("name", m.name.as_deref())
            .opt_string("tool_calls_raw", m.tool_calls.as_deref())
            .opt_string("tool_call_id", m.tool_call_id.as_deref())
            .opt_string("reasoning_raw", m.reasoning.as_deref())
            .opt_string("reasoning_details_raw", m.reasoning_details.as_deref())
            .opt_string(
                "reasoning_details_sha256",
                m.reasoning_details_sha256.as_deref(),
            )
            .opt_string("turn_id", m.turn_id.as_deref())
            .string("created_at", &m.created_at)
            .opt_string("model", m.model.as_deref())
            .opt_string("requested_model", m.requested_model.as_deref())
            .opt_string("provider", m.provider.as_deref())
            .opt_string("generation_id", m.generation_id.as_deref())
            .opt_string("finish_reason", m.finish_reason.as_deref())
            .opt_string("native_finish_reason", m.native_finish_reason.as_deref())
            .opt_string("usage_raw", m.usage.as_deref());
        push_line(&mut out, w.finish());
    }

    for t in &export.turns {
        let a = &t.audit;
        let mut upstream = ObjectWriter::new();
        upstream
            .opt_string("request_raw", a.request.as_deref())
            .opt_string("response_raw", a.response.as_deref())
            .bool("response_is_json", a.response_is_json)
            .opt_int("status", a.status)
            .int("attempts", a.attempts)
            .opt_string("started_at", a.started_at.as_deref())
            .opt_string("finished_at", a.finished_at.as_deref());
        let mut w = ObjectWriter::new();
        w.string("object", "turn")
            .string("id", &t.id)
            .string("thread_id", &t.thread_id)
            .string("status", &t.status)
            .string("input_message_ids_raw", &t.input_message_ids)
            .opt_string("output_message_id", t.output_message_id.as_deref())
            .string("model", &t.model)
            .string("created_at", &t.created_at)
            .opt_string("completed_at", t.completed_at.as_deref())
            .opt_int("latency_ms", t.latency_ms)
            .opt_string("usage_raw", t.usage.as_deref())
            .opt_string("generation_id", t.generation_id.as_deref())
            .opt_string("error_raw", t.error.as_deref())
            .opt_string("idempotency_key", t.idempotency_key.as_deref())
            .opt_string("request_sha256", t.request_sha256.as_deref())
            .raw("upstream", &upstream.finish());
        push_line(&mut out, w.finish());
    }
    out
}

fn push_line(out: &mut String, line: String) {
    out.push_str(&line);
    out.push('\n');
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThreadLine {
    object: String,
    id: String,
    created_at: String,
    updated_at: String,
    metadata: Metadata,
    model: Option<String>,
    system: Option<String>,
    reasoning_raw: Option<String>,
    reasoning_replay: Option<String>,
    params_raw: Option<String>,
    message_count: i64,
    last_message_id: Option<String>,
    usage: Option<UsageLine>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageLine {
    prompt_tokens: i64,
    completion_tokens: i64,
    reasoning_tokens: i64,
    cost: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageLine {
    object: String,
    id: String,
    thread_id: String,
    seq: i64,
    role: String,
    content_raw: Option<String>,
    name: Option<String>,
    tool_calls_raw: Option<String>,
    tool_call_id: Option<String>,
    reasoning_raw: Option<String>,
    reasoning_details_raw: Option<String>,
    reasoning_details_sha256: Option<String>,
    turn_id: Option<String>,
    created_at: String,
    model: Option<String>,
    requested_model: Option<String>,
    provider: Option<String>,
    generation_id: Option<String>,
    finish_reason: Option<String>,
    native_finish_reason: Option<String>,
    usage_raw: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TurnLine {
    object: String,
    id: String,
    thread_id: String,
    status: String,
    input_message_ids_raw: String,
    output_message_id: Option<String>,
    model: String,
    created_at: String,
    completed_at: Option<String>,
    latency_ms: Option<i64>,
    usage_raw: Option<String>,
    generation_id: Option<String>,
    error_raw: Option<String>,
    idempotency_key: Option<String>,
    request_sha256: Option<String>,
    upstream: UpstreamLine,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamLine {
    request_raw: Option<String>,
    response_raw: Option<String>,
    response_is_json: bool,
    status: Option<i64>,
    attempts: i64,
    started_at: Option<String>,
    finished_at: Option<String>,
}

/// Reads an export back. Raw values must still be valid JSON (all but an upstream response
/// that was not JSON), ids must be ids, and every line must belong to the thread.
pub fn read(text: &str) -> Result<ThreadExport, String> {
    let mut lines = text
        .split('\n')
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty());
    let (_, first) = lines.next().ok_or("the file is empty")?;
    let t: ThreadLine =
        serde_json::from_str(first).map_err(|e| format!("line 1 (the thread): {e}"))?;
    if t.object != "thread" {
        return Err("line 1 must be the thread".into());
    }
    check_id(&t.id, 1)?;
    check_optional_id(t.last_message_id.as_deref(), 1)?;
    for (raw, name) in [
        (&t.reasoning_raw, "reasoning_raw"),
        (&t.params_raw, "params_raw"),
    ] {
        check_json(raw.as_deref(), name, 1)?;
    }
    // Settings a turn could not use are refused here, as when a thread is created.
    if let Some(replay) = &t.reasoning_replay {
        ReasoningReplay::parse(replay).map_err(|e| format!("line 1 (the thread): {e}"))?;
    }
    if let Some(params) = &t.params_raw {
        let raw: Box<serde_json::value::RawValue> = serde_json::from_str(params)
            .map_err(|e| format!("line 1 (the thread): params_raw: {e}"))?;
        parse_params(&raw, "params_raw").map_err(|e| format!("line 1 (the thread): {e}"))?;
    }
    let thread = ThreadRecord {
        id: t.id,
        created_at: t.created_at,
        updated_at: t.updated_at,
        metadata: t.metadata,
        model: t.model,
        system: t.system,
        reasoning: t.reasoning_raw,
        reasoning_replay: t.reasoning_replay,
        params: t.params_raw,
        message_count: t.message_count,
        last_message_id: t.last_message_id,
        usage: t.usage.map(|u| UsageTotals {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            reasoning_tokens: u.reasoning_tokens,
            cost: u.cost,
        }),
    };
    let mut messages = Vec::new();
    let mut turns = Vec::new();
    for (index, line) in lines {
        let n = index + 1;
        let object = serde_json::from_str::<ObjectTag>(line)
            .map_err(|e| format!("line {n}: {e}"))?
            .object;
        match object.as_str() {
            "message" => {
                let m: MessageLine =
                    serde_json::from_str(line).map_err(|e| format!("line {n}: {e}"))?;
                check_id(&m.id, n)?;
                check_optional_id(m.turn_id.as_deref(), n)?;
                if m.thread_id != thread.id || m.object != "message" {
                    return Err(format!("line {n}: the message belongs to another thread"));
                }
                // New messages are numbered after the last: the numbers must run 1, 2, 3...
                let expected = messages.len() as i64 + 1;
                if m.seq != expected {
                    return Err(format!(
                        "line {n}: message seq {} where {expected} was expected (messages \
                         are numbered from 1, in order, without gaps)",
                        m.seq
                    ));
                }
                if Role::parse(&m.role).is_none() {
                    return Err(format!(
                        "line {n}: `{}` is not a role (system, user, assistant or tool)",
                        m.role
                    ));
                }
                let digest = m
                    .reasoning_details_raw
                    .as_deref()
                    .map(|details| crate::storage::sha256_hex(details.as_bytes()));
                if m.reasoning_details_sha256 != digest {
                    return Err(format!(
                        "line {n}: reasoning_details_sha256 is not the SHA-256 of \
                         reasoning_details_raw"
                    ));
                }
                for (raw, name) in [
                    (&m.content_raw, "content_raw"),
                    (&m.tool_calls_raw, "tool_calls_raw"),
                    (&m.reasoning_raw, "reasoning_raw"),
                    (&m.reasoning_details_raw, "reasoning_details_raw"),
                    (&m.usage_raw, "usage_raw"),
                ] {
                    check_json(raw.as_deref(), name, n)?;
                }
                messages.push(MessageRecord {
                    id: m.id,
                    thread_id: m.thread_id,
                    seq: m.seq,
                    role: m.role,
                    content: m.content_raw,
                    name: m.name,
                    tool_calls: m.tool_calls_raw,
                    tool_call_id: m.tool_call_id,
                    reasoning: m.reasoning_raw,
                    reasoning_details: m.reasoning_details_raw,
                    reasoning_details_sha256: m.reasoning_details_sha256,
                    turn_id: m.turn_id,
                    created_at: m.created_at,
                    model: m.model,
                    requested_model: m.requested_model,
                    provider: m.provider,
                    generation_id: m.generation_id,
                    finish_reason: m.finish_reason,
                    native_finish_reason: m.native_finish_reason,
                    usage: m.usage_raw,
                });
            }
            "turn" => {
                let t: TurnLine =
                    serde_json::from_str(line).map_err(|e| format!("line {n}: {e}"))?;
                check_id(&t.id, n)?;
                check_optional_id(t.output_message_id.as_deref(), n)?;
                if t.thread_id != thread.id || t.object != "turn" {
                    return Err(format!("line {n}: the turn belongs to another thread"));
                }
                if !TURN_STATUSES.contains(&t.status.as_str()) {
                    return Err(format!(
                        "line {n}: `{}` is not a turn status ({})",
                        t.status,
                        TURN_STATUSES.join(", ")
                    ));
                }
                let inputs: Vec<String> =
                    serde_json::from_str(&t.input_message_ids_raw).map_err(|e| {
                        format!("line {n}: `input_message_ids_raw` is not a list of ids: {e}")
                    })?;
                for id in &inputs {
                    check_id(id, n)?;
                }
                check_json(t.usage_raw.as_deref(), "usage_raw", n)?;
                check_json(t.error_raw.as_deref(), "error_raw", n)?;
                check_json(t.upstream.request_raw.as_deref(), "upstream.request_raw", n)?;
                if t.upstream.response_is_json {
                    check_json(
                        t.upstream.response_raw.as_deref(),
                        "upstream.response_raw",
                        n,
                    )?;
                }
                turns.push(TurnRecord {
                    id: t.id,
                    thread_id: t.thread_id,
                    status: t.status,
                    input_message_ids: t.input_message_ids_raw,
                    output_message_id: t.output_message_id,
                    model: t.model,
                    created_at: t.created_at,
                    completed_at: t.completed_at,
                    latency_ms: t.latency_ms,
                    usage: t.usage_raw,
                    generation_id: t.generation_id,
                    error: t.error_raw,
                    idempotency_key: t.idempotency_key,
                    request_sha256: t.request_sha256,
                    audit: AuditRecord {
                        request: t.upstream.request_raw.map(Into::into),
                        response: t.upstream.response_raw,
                        response_is_json: t.upstream.response_is_json,
                        status: t.upstream.status,
                        attempts: t.upstream.attempts,
                        started_at: t.upstream.started_at,
                        finished_at: t.upstream.finished_at,
                    },
                });
            }
            other => return Err(format!("line {n}: unknown object `{other}`")),
        }
    }
    // What the next message's number and the thread's view are computed from.
    if thread.message_count != messages.len() as i64 {
        return Err(format!(
            "line 1 (the thread): message_count is {} but the file holds {} messages",
            thread.message_count,
            messages.len()
        ));
    }
    if thread.last_message_id.as_deref() != messages.last().map(|m| m.id.as_str()) {
        return Err("line 1 (the thread): last_message_id is not the last message's id".into());
    }
    Ok(ThreadExport {
        thread,
        messages,
        turns,
    })
}

/// What a stored turn's status can be.
const TURN_STATUSES: [&str; 4] = ["in_progress", "completed", "failed", "interrupted"];

#[derive(Deserialize)]
struct ObjectTag {
    object: String,
}

/// An id as the service writes them: a UUID, lowercase, with hyphens. Other spellings of a
/// UUID are refused, not stored as typed: stored ids are compared as text, so such a thread
/// could never be found again.
fn check_id(id: &str, line: usize) -> Result<(), String> {
    match uuid::Uuid::try_parse(id) {
        Ok(uuid) if uuid.hyphenated().to_string() == id => Ok(()),
        _ => Err(format!(
            "line {line}: `{id}` is not a valid id (a UUID, lowercase, with hyphens)"
        )),
    }
}

fn check_optional_id(id: Option<&str>, line: usize) -> Result<(), String> {
    id.map_or(Ok(()), |id| check_id(id, line))
}

fn check_json(raw: Option<&str>, field: &str, line: usize) -> Result<(), String> {
    match raw {
        None => Ok(()),
        Some(raw) => serde_json::from_str::<&serde_json::value::RawValue>(raw)
            .map(|_| ())
            .map_err(|e| format!("line {line}: `{field}` is not valid JSON: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread with nothing set but its id and times.
    fn bare_thread() -> ThreadRecord {
        ThreadRecord {
            id: "01a22629-bbf7-7381-8d57-81d2567d2e15".into(),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            updated_at: "2026-01-01T00:00:00.000Z".into(),
            metadata: Default::default(),
            model: None,
            system: None,
            reasoning: None,
            reasoning_replay: None,
            params: None,
            message_count: 0,
            last_message_id: None,
            usage: None,
        }
    }

    const DETAILS: &str = "[ {\"a\":\n1.50e3, \"b\":\"\\ud83d\\ude00\"} ]";

    #[test]
    fn raw_values_with_line_breaks_round_trip_byte_for_byte() {
        let export = ThreadExport {
            thread: ThreadRecord {
                system: Some("line\nbreak".into()),
                reasoning: Some("{\n \"enabled\" : true}".into()),
                message_count: 1,
                last_message_id: Some("01a22629-bbf7-7381-8d57-81d2567d2e16".into()),
                usage: Some(UsageTotals {
                    prompt_tokens: 1,
                    completion_tokens: 2,
                    reasoning_tokens: 3,
                    cost: 0.000_021_6,
                }),
                ..bare_thread()
            },
            messages: vec![MessageRecord {
                id: "01a22629-bbf7-7381-8d57-81d2567d2e16".into(),
                thread_id: "01a22629-bbf7-7381-8d57-81d2567d2e15".into(),
                seq: 1,
                role: "assistant".into(),
                content: Some("null".into()),
                reasoning_details: Some(DETAILS.into()),
                reasoning_details_sha256: Some(crate::storage::sha256_hex(DETAILS.as_bytes())),
                ..Default::default()
            }],
            turns: vec![],
        };
        let text = write(&export);
        assert_eq!(text.lines().count(), 2, "{text}");
        let back = read(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, export);
        assert_eq!(write(&back), text);
    }

    #[test]
    fn thread_settings_a_turn_could_not_use_are_refused() {
        let thread = |replay: Option<&str>, params: Option<&str>| ThreadExport {
            thread: ThreadRecord {
                reasoning_replay: replay.map(str::to_owned),
                params: params.map(str::to_owned),
                ..bare_thread()
            },
            messages: vec![],
            turns: vec![],
        };
        let good = write(&thread(Some("all"), Some(r#"{"temperature":0.5}"#)));
        assert!(read(&good).is_ok());
        for (replay, params) in [
            (Some("bogus"), None),
            (None, Some(r#"{"model":"x"}"#)),
            (None, Some("[1]")),
        ] {
            let text = write(&thread(replay, params));
            let refused = read(&text);
            assert!(refused.is_err(), "{replay:?} {params:?} imported");
        }
    }

    #[test]
    fn foreign_or_broken_lines_are_refused() {
        assert!(read("").is_err());
        assert!(read("{\"object\":\"message\"}").is_err());
        assert!(read("not json").is_err());
    }

    /// What a later turn or lookup relies on is checked, each refusal naming its line.
    #[test]
    fn files_that_would_store_an_unusable_thread_are_refused() {
        let thread_id = "01a22629-bbf7-7381-8d57-81d2567d2e15";
        let message = |seq: i64, id: &str| {
            format!(
                r#"{{"object":"message","id":"{id}","thread_id":"{thread_id}","seq":{seq},"role":"user","content_raw":"\"hi\"","name":null,"tool_calls_raw":null,"tool_call_id":null,"reasoning_raw":null,"reasoning_details_raw":null,"reasoning_details_sha256":null,"turn_id":null,"created_at":"2026-01-01T00:00:00.000Z","model":null,"requested_model":null,"provider":null,"generation_id":null,"finish_reason":null,"native_finish_reason":null,"usage_raw":null}}"#
            )
        };
        let good = ThreadExport {
            thread: ThreadRecord {
                message_count: 2,
                last_message_id: Some("01a22629-bbf7-7381-8d57-81d2567d2e17".into()),
                ..bare_thread()
            },
            messages: vec![],
            turns: vec![],
        };
        let first = write(&good).lines().next().unwrap_or_default().to_owned();
        let file = |lines: &[String]| format!("{first}\n{}\n", lines.join("\n"));
        let one = message(1, "01a22629-bbf7-7381-8d57-81d2567d2e16");
        let two = message(2, "01a22629-bbf7-7381-8d57-81d2567d2e17");
        assert!(read(&file(&[one.clone(), two.clone()])).is_ok());
        let refused = |text: String, why: &str| match read(&text) {
            Ok(_) => panic!("accepted; expected: {why}"),
            Err(e) => assert!(e.contains(why), "{e}"),
        };
        refused(file(&[two.clone(), one.clone()]), "seq 2 where 1");
        refused(file(std::slice::from_ref(&one)), "message_count is 2");
        refused(
            file(&[
                one.clone(),
                message(3, "01a22629-bbf7-7381-8d57-81d2567d2e17"),
            ]),
            "seq 3 where 2",
        );
        refused(
            file(&[one.clone(), two.replace("\"user\"", "\"developer\"")]),
            "not a role",
        );
        refused(
            file(&[
                one.clone(),
                two.replace(
                    "01a22629-bbf7-7381-8d57-81d2567d2e17",
                    "01A22629-BBF7-7381-8D57-81D2567D2E17",
                ),
            ]),
            "is not a valid id",
        );
        refused(
            file(&[
                one.clone(),
                two.replace(
                    r#""reasoning_details_raw":null"#,
                    r#""reasoning_details_raw":"[]""#,
                ),
            ]),
            "reasoning_details_sha256",
        );
        let other_last = first.replace("d2e17", "d2e16");
        refused(format!("{other_last}\n{one}\n{two}\n"), "last_message_id");
    }
}
