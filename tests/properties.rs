//! Property tests over the library's pure domain code: this is the bounded fuzz target run in
//! CI (`cargo test --test properties`). Every property runs a fixed number of generated cases
//! (see `config()`), so the whole file finishes in seconds; raise `PROPTEST_CASES` locally to
//! fuzz longer. A failure prints the minimal input that breaks the property.
//!
//! What is checked:
//! - request parsers (`parse_turn`, `parse_create`, `parse_patch`, `parse_input`,
//!   `export::read`) never panic on arbitrary bytes or JSON-like text, and refuse with a 400;
//! - generated JSON (odd number spellings, escapes, surrogate pairs, whitespace) given as an
//!   assistant message's content, reasoning_details and tool-call arguments reaches the
//!   upstream body built by `context::build_request` byte for byte, and that body is JSON;
//! - the streamed-reasoning merger always yields a JSON array, and keeps objects objects;
//! - `json::ObjectWriter` escapes any string so that it reads back the same;
//! - export `write -> read -> write` is the identity.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::Value;

use threadkeeper::domain::context::{build_request, resolve, Defaults};
use threadkeeper::domain::export::{self, ThreadExport};
use threadkeeper::domain::json::ObjectWriter;
use threadkeeper::domain::message::parse_input;
use threadkeeper::domain::reasoning::ReasoningMerger;
use threadkeeper::domain::records::{
    AuditRecord, MessageRecord, ThreadRecord, TurnRecord, UsageTotals,
};
use threadkeeper::domain::thread::{parse_create, parse_patch};
use threadkeeper::domain::turn::{parse_turn, Overrides};
use threadkeeper::error::ApiError;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(256),
        max_shrink_iters: 2048,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------- JSON text generators

/// Whitespace JSON allows between tokens.
fn ws() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["", "", "", " ", "\n", "\t", " \r\n  "]).prop_map(str::to_owned)
}

/// Numbers as a client or a provider may spell them. `in_range` leaves out the ones
/// serde_json's `Value` refuses (out of f64 range).
fn number(in_range: bool) -> impl Strategy<Value = String> {
    let mut odd = vec![
        "0",
        "-0",
        "-0.0",
        "0.0",
        "1.50e3",
        "1E-7",
        "1e+5",
        "1.0",
        "0.1",
        "-1.5E+300",
        "5e-324",
        "2.2250738585072014e-308",
        "1.7976931348623157e308",
        "9007199254740993",
        "123456789012345678901234567890",
        "1.000000000000000000000001",
        "1e0",
        "-0e-0",
    ];
    if !in_range {
        odd.extend(["1e999", "-1E400"]);
    }
    prop_oneof![
        prop::sample::select(odd).prop_map(str::to_owned),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        (
            any::<i32>(),
            prop::option::of("[0-9]{1,20}"),
            prop::option::of((
                prop::sample::select(vec!["e", "E"]),
                prop::sample::select(vec!["", "+", "-"]),
                // With up to 10 integer digits, e+290 stays inside f64 (found in CI: e299 did
                // not); out-of-range numbers come from the list above.
                0u32..290
            )),
        )
            .prop_map(|(int, frac, exp)| {
                let mut text = int.to_string();
                if let Some(frac) = frac {
                    text.push('.');
                    text.push_str(&frac);
                }
                if let Some((e, sign, n)) = exp {
                    text.push_str(&format!("{e}{sign}{n}"));
                }
                text
            }),
    ]
}

/// One piece of a JSON string literal's interior.
fn string_piece(lone_surrogates: bool) -> BoxedStrategy<String> {
    let plain = any::<char>().prop_map(|c| {
        // Characters that must be escaped are generated as escapes below.
        if c == '"' || c == '\\' || (c as u32) < 0x20 {
            String::from("x")
        } else {
            String::from(c)
        }
    });
    let escape = prop::sample::select(vec![
        "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\u0000", "\\u001f", "\\u007f",
        "\\u2028", "\\u00e9", "\\u00E9", "\\uFFFF",
    ])
    .prop_map(str::to_owned);
    let bmp = (0u32..0xD800).prop_map(|n| format!("\\u{n:04x}"));
    let pair = (0xD800u32..0xDC00, 0xDC00u32..0xE000, any::<bool>()).prop_map(|(hi, lo, upper)| {
        let text = format!("\\u{hi:04x}\\u{lo:04x}");
        if upper {
            text.to_uppercase().replace("\\U", "\\u")
        } else {
            text
        }
    });
    let raw_unicode = prop::sample::select(vec!["é", "😀", "\u{2028}", "\u{feff}", "中", "\u{7f}"])
        .prop_map(str::to_owned);
    if lone_surrogates {
        let lone = (0xD800u32..0xE000).prop_map(|n| format!("\\u{n:04x}"));
        prop_oneof![4 => plain, 2 => escape, 1 => bmp, 1 => pair, 1 => raw_unicode, 1 => lone]
            .boxed()
    } else {
        prop_oneof![4 => plain, 2 => escape, 1 => bmp, 1 => pair, 1 => raw_unicode].boxed()
    }
}

/// A JSON string literal, quotes included, escapes as written.
fn string_lit(lone_surrogates: bool) -> impl Strategy<Value = String> {
    prop::collection::vec(string_piece(lone_surrogates), 0..12)
        .prop_map(|pieces| format!("\"{}\"", pieces.concat()))
}

/// Knobs of the JSON text generator.
#[derive(Clone, Copy)]
struct Flavor {
    /// Lone surrogate escapes and out-of-range numbers: valid JSON grammar, which serde's
    /// `Value` nevertheless refuses.
    exotic: bool,
}

/// Any JSON value as text, with arbitrary whitespace, nesting and spellings.
fn json_text(flavor: Flavor) -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        prop::sample::select(vec!["null", "true", "false"]).prop_map(str::to_owned),
        number(!flavor.exotic),
        string_lit(flavor.exotic),
    ];
    leaf.prop_recursive(4, 48, 5, move |inner| {
        prop_oneof![
            prop::collection::vec((ws(), inner.clone(), ws()), 0..5).prop_map(|items| {
                let items: Vec<String> = items
                    .into_iter()
                    .map(|(a, v, b)| format!("{a}{v}{b}"))
                    .collect();
                format!("[{}]", items.join(","))
            }),
            prop::collection::vec(
                (ws(), string_lit(flavor.exotic), ws(), ws(), inner, ws()),
                0..5
            )
            .prop_map(|fields| {
                let fields: Vec<String> = fields
                    .into_iter()
                    .map(|(a, k, b, c, v, d)| format!("{a}{k}{b}:{c}{v}{d}"))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
    .boxed()
}

/// A JSON array of generated values, as text.
fn json_array(flavor: Flavor) -> impl Strategy<Value = String> {
    (
        ws(),
        prop::collection::vec((ws(), json_text(flavor), ws()), 0..5),
    )
        .prop_map(|(pad, items)| {
            let items: Vec<String> = items
                .into_iter()
                .map(|(a, v, b)| format!("{a}{v}{b}"))
                .collect();
            format!("[{pad}{}]", items.join(","))
        })
}

/// Valid JSON that is an object with request-like keys, to get past the first checks.
fn request_like() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "input",
        "model",
        "reasoning",
        "reasoning_replay",
        "stream",
        "params",
        "metadata",
        "system",
        "messages",
        "role",
        "content",
        "tool_calls",
        "tool_call_id",
        "name",
        "reasoning_details",
        "unknown",
    ]);
    let flavor = Flavor { exotic: true };
    let message = prop::collection::vec(
        (
            prop::sample::select(vec![
                "role",
                "content",
                "name",
                "tool_calls",
                "tool_call_id",
                "reasoning",
                "reasoning_details",
                "model",
            ]),
            prop_oneof![
                prop::sample::select(vec![
                    "\"user\"",
                    "\"assistant\"",
                    "\"tool\"",
                    "\"system\"",
                    "null",
                    "\"\""
                ])
                .prop_map(str::to_owned),
                json_text(flavor),
            ],
        ),
        0..6,
    )
    .prop_map(|fields| {
        let fields: Vec<String> = fields
            .into_iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!("{{{}}}", fields.join(","))
    });
    let value = prop_oneof![
        json_text(flavor),
        message.clone(),
        prop::collection::vec(message, 0..4).prop_map(|m| format!("[{}]", m.join(","))),
    ];
    prop::collection::vec((key, value), 0..6).prop_map(|fields| {
        let fields: Vec<String> = fields
            .into_iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!("{{{}}}", fields.join(","))
    })
}

/// JSON-ish token soup: mostly invalid, sometimes valid, good at reaching parser corners.
fn json_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            "\"",
            "\\",
            "null",
            "true",
            "fals",
            "-",
            "0",
            "1e",
            ".5",
            "\"input\"",
            "\"messages\"",
            "\"role\"",
            "\"assistant\"",
            "\"content\"",
            "\"params\"",
            "\"stream\"",
            "\"metadata\"",
            "\"\\u\"",
            "\"\\ud800\"",
            " ",
            "\n",
        ])
        .prop_map(str::to_owned),
        string_lit(true),
    ];
    prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

fn assert_refusal(what: &str, result: Result<(), ApiError>) -> Result<(), TestCaseError> {
    if let Err(e) = result {
        prop_assert_eq!(e.status().as_u16(), 400, "{} refused with {:?}", what, e);
        let code = e.body().code;
        prop_assert!(
            code == "invalid_json" || code == "invalid_request",
            "{}: code {}",
            what,
            code
        );
    }
    Ok(())
}

fn check_parsers(body: &[u8]) -> Result<(), TestCaseError> {
    assert_refusal("parse_turn", parse_turn(body).map(|_| ()))?;
    assert_refusal("parse_create", parse_create(body).map(|_| ()))?;
    assert_refusal("parse_patch", parse_patch(body).map(|_| ()))?;
    if let Ok(raw) = serde_json::from_slice::<&RawValue>(body) {
        assert_refusal("parse_input", parse_input(raw).map(|_| ()))?;
    }
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = export::read(text);
    }
    Ok(())
}

// ---------------------------------------------------------------- (a) parsers

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parsers_refuse_arbitrary_bytes_with_400(body in prop::collection::vec(any::<u8>(), 0..300)) {
        check_parsers(&body)?;
    }

    #[test]
    fn parsers_refuse_json_soup_with_400(body in json_soup()) {
        check_parsers(body.as_bytes())?;
    }

    #[test]
    fn parsers_take_or_refuse_request_like_objects(body in request_like()) {
        check_parsers(body.as_bytes())?;
    }
}

// ---------------------------------------------------------------- (b) the context rebuild

/// The top-level fields of a JSON object as their exact bytes.
fn raw_fields(text: &str) -> BTreeMap<String, String> {
    let fields: BTreeMap<String, Box<RawValue>> =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not an object ({e}): {text}"));
    fields
        .into_iter()
        .map(|(k, v)| (k, v.get().to_owned()))
        .collect()
}

fn thread_record(id: &str, model: &str, system: Option<String>) -> ThreadRecord {
    ThreadRecord {
        id: id.into(),
        created_at: "2026-01-01T00:00:00.000Z".into(),
        updated_at: "2026-01-01T00:00:00.000Z".into(),
        metadata: BTreeMap::new(),
        model: Some(model.into()),
        system,
        reasoning: None,
        reasoning_replay: None,
        params: None,
        message_count: 0,
        last_message_id: None,
        usage: None,
    }
}

fn defaults() -> Defaults {
    Defaults {
        model: "default/model".into(),
        reasoning: serde_json::from_str(r#"{"enabled":true}"#).unwrap(),
    }
}

/// Content: a string or an array of parts, as a client may send it.
fn content(flavor: Flavor) -> impl Strategy<Value = String> {
    prop_oneof![
        string_lit(flavor.exotic).boxed(),
        content_parts(flavor).boxed()
    ]
}

/// Content parts as the service takes them: a non-empty array of objects, each with a
/// non-empty string `type` and any other members, spelled with arbitrary whitespace.
fn content_parts(flavor: Flavor) -> impl Strategy<Value = String> {
    let member = (
        ws(),
        string_lit(flavor.exotic),
        ws(),
        json_text(flavor),
        ws(),
    )
        // Prefixed so that no other member is also named `type`.
        .prop_map(|(a, key, b, value, c)| format!("{a}\"x{}{b}:{value}{c}", &key[1..]));
    let part = (
        ws(),
        string_lit(false),
        ws(),
        prop::collection::vec(member, 0..3),
    )
        .prop_map(|(a, kind, b, members)| {
            // Prefixed: never a type whose own member is checked (`text`, ...).
            let mut all = vec![format!("{a}\"type\"{b}:\"x-{}", &kind[1..])];
            all.extend(members);
            format!("{{{}}}", all.join(","))
        });
    (ws(), prop::collection::vec((ws(), part, ws()), 1..4)).prop_map(|(pad, parts)| {
        let parts: Vec<String> = parts
            .into_iter()
            .map(|(a, part, b)| format!("{a}{part}{b}"))
            .collect();
        format!("[{pad}{}]", parts.join(","))
    })
}

/// Tool-call arguments: a JSON string, holding JSON text or anything else.
fn arguments(flavor: Flavor) -> impl Strategy<Value = String> {
    prop_oneof![
        string_lit(flavor.exotic).boxed(),
        json_text(flavor)
            .prop_map(|t| serde_json::to_string(&t).unwrap())
            .boxed(),
    ]
}

#[allow(clippy::too_many_arguments)]
fn context_round_trip(
    user_content: &str,
    assistant_content: &str,
    details: &str,
    args: &str,
    tool_call_id: &str,
    system: &str,
    same_model: bool,
    stream: bool,
) -> Result<(), TestCaseError> {
    let id_literal = serde_json::to_string(tool_call_id).unwrap();
    let input = format!(
        r#"[{{"role":"user","content":{user_content},"name":"n"}} , {{"role":"assistant","content":{assistant_content},"model":"m/x","reasoning":"thinking","tool_calls":[{{"id":{id_literal},"type":"function","function":{{"name":"f","arguments":{args}}}}}],"reasoning_details":{details}}},{{"role":"tool","tool_call_id":{id_literal},"content":{user_content}}}]"#
    );
    let raw: Box<RawValue> = serde_json::from_str(&input)
        .map_err(|e| TestCaseError::fail(format!("generator made invalid JSON ({e}): {input}")))?;
    let parsed =
        parse_input(&raw).map_err(|e| TestCaseError::fail(format!("refused: {e}: {input}")))?;
    prop_assert_eq!(parsed.len(), 3);
    prop_assert_eq!(parsed[1].content.as_deref(), Some(assistant_content));
    prop_assert_eq!(parsed[1].reasoning_details.as_deref(), Some(details));
    prop_assert!(parsed[1]
        .tool_calls
        .as_deref()
        .unwrap_or_default()
        .contains(args));

    let thread_id = "0190d3a0-0000-7000-8000-000000000001";
    let records: Vec<MessageRecord> = parsed
        .iter()
        .enumerate()
        .map(|(i, m)| MessageRecord {
            id: format!("0190d3a0-0000-7000-8000-00000000010{i}"),
            thread_id: thread_id.into(),
            seq: i as i64 + 1,
            role: m.role.as_str().into(),
            content: m.content.clone(),
            name: m.name.clone(),
            tool_calls: m.tool_calls.clone(),
            tool_call_id: m.tool_call_id.clone(),
            reasoning: m.reasoning.clone(),
            reasoning_details: m.reasoning_details.clone(),
            requested_model: m.model.clone(),
            model: m.model.clone(),
            ..MessageRecord::default()
        })
        .collect();
    let model = if same_model { "m/x" } else { "other/model" };
    let thread = thread_record(thread_id, model, Some(system.to_owned()));
    let options = resolve(&defaults(), &thread, &Overrides::default(), stream)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let body = build_request(&thread, &records, &options);

    // It is JSON (as strict as the input was), and carries the exact bytes.
    serde_json::from_str::<&RawValue>(&body)
        .map_err(|e| TestCaseError::fail(format!("context is not JSON ({e}): {body}")))?;
    if serde_json::from_str::<Value>(&input).is_ok() {
        serde_json::from_str::<Value>(&body)
            .map_err(|e| TestCaseError::fail(format!("context is not JSON ({e}): {body}")))?;
    }
    prop_assert!(body.contains(assistant_content));
    prop_assert!(body.contains(args));
    if same_model {
        prop_assert!(body.contains(details), "reasoning_details missing");
    }

    // Every message round-trips: the system prompt as a value, the rest field by field.
    let top = raw_fields(&body);
    let quoted_model = format!("\"{model}\"");
    prop_assert_eq!(top.get("model"), Some(&quoted_model));
    prop_assert_eq!(top.contains_key("stream"), stream);
    let sent: Vec<Box<RawValue>> = serde_json::from_str(&top["messages"]).unwrap();
    prop_assert_eq!(sent.len(), 4);
    let system_message = raw_fields(sent[0].get());
    let back: String = serde_json::from_str(&system_message["content"]).unwrap();
    prop_assert_eq!(&back, system);
    for (record, sent) in records.iter().zip(&sent[1..]) {
        let fields = raw_fields(sent.get());
        prop_assert_eq!(fields["role"].clone(), format!("\"{}\"", record.role));
        for (key, stored) in [
            ("content", &record.content),
            ("tool_calls", &record.tool_calls),
        ] {
            prop_assert_eq!(
                fields.get(key),
                stored.as_ref(),
                "{} of {}",
                key,
                sent.get()
            );
        }
        for (key, stored) in [
            ("name", &record.name),
            ("tool_call_id", &record.tool_call_id),
        ] {
            let value: Option<String> = fields
                .get(key)
                .map(|raw| serde_json::from_str(raw).unwrap());
            prop_assert_eq!(&value, stored);
        }
        if record.role == "assistant" {
            prop_assert_eq!(fields.get("reasoning"), record.reasoning.as_ref());
            let expected = if same_model {
                record.reasoning_details.as_ref()
            } else {
                None
            };
            prop_assert_eq!(fields.get("reasoning_details"), expected);
        } else {
            prop_assert!(!fields.contains_key("reasoning_details"));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn context_carries_generated_values_byte_for_byte(
        user_content in content(Flavor { exotic: false }),
        assistant_content in content(Flavor { exotic: false }),
        details in json_array(Flavor { exotic: false }),
        args in arguments(Flavor { exotic: false }),
        tool_call_id in "[a-z_0-9]{1,24}",
        system in any::<String>(),
        same_model in any::<bool>(),
        stream in any::<bool>(),
    ) {
        context_round_trip(&user_content, &assistant_content, &details, &args, &tool_call_id, &system, same_model, stream)?;
    }

    #[test]
    fn context_carries_exotic_values_byte_for_byte(
        user_content in content(Flavor { exotic: true }),
        assistant_content in content(Flavor { exotic: true }),
        details in json_array(Flavor { exotic: true }),
        // Arguments are read as a string to check the tool call's shape, so a lone surrogate
        // there is (rightly) refused; the exotic bytes go in content and reasoning_details.
        args in arguments(Flavor { exotic: false }),
        tool_call_id in any::<String>().prop_filter("non-empty", |s| !s.is_empty()),
        system in any::<String>(),
        same_model in any::<bool>(),
    ) {
        context_round_trip(&user_content, &assistant_content, &details, &args, &tool_call_id, &system, same_model, false)?;
    }

    #[test]
    fn object_writer_escapes_any_string(
        fields in prop::collection::vec((any::<String>(), any::<String>()), 0..6),
        raw in json_text(Flavor { exotic: false }),
    ) {
        let mut w = ObjectWriter::new();
        for (key, value) in &fields {
            w.string(key, value);
        }
        w.raw("\u{0}raw", &raw);
        let text = w.finish();
        let back: serde_json::Map<String, Value> = serde_json::from_str(&text)
            .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {text}")))?;
        let mut expected: BTreeMap<String, Value> = BTreeMap::new();
        for (key, value) in &fields {
            expected.insert(key.clone(), Value::String(value.clone()));
        }
        expected.insert("\u{0}raw".into(), serde_json::from_str(&raw).unwrap());
        let back: BTreeMap<String, Value> = back.into_iter().collect();
        prop_assert_eq!(back, expected);
        prop_assert!(text.contains(&raw));
    }
}

// ---------------------------------------------------------------- (c) reasoning merger

fn fragment_field(flavor: Flavor) -> impl Strategy<Value = (String, String)> {
    let text_value = prop_oneof![4 => string_lit(flavor.exotic).boxed(), 1 => json_text(flavor)];
    prop_oneof![
        3 => prop::sample::select(vec![
            "\"reasoning.text\"", "\"reasoning.summary\"", "\"reasoning.encrypted\"",
            "\"reasoning.future\"", "5", "null", "\"\"",
        ])
        .prop_map(|t| ("\"type\"".to_owned(), t.to_owned())),
        3 => text_value.clone().prop_map(|v| ("\"text\"".to_owned(), v)),
        1 => text_value.prop_map(|v| ("\"summary\"".to_owned(), v)),
        1 => prop_oneof![Just("\"\"".to_owned()), string_lit(flavor.exotic).boxed(), Just("null".to_owned())]
            .prop_map(|v| ("\"signature\"".to_owned(), v)),
        1 => prop::sample::select(vec!["\"unknown\"", "\"anthropic-claude-v1\"", "null", "7"])
            .prop_map(|v| ("\"format\"".to_owned(), v.to_owned())),
        1 => json_text(flavor).prop_map(|v| ("\"id\"".to_owned(), v)),
        1 => json_text(flavor).prop_map(|v| ("\"data\"".to_owned(), v)),
        2 => prop::sample::select(vec!["0", "1", "null", "\"0\"", "0.0", "-0"])
            .prop_map(|v| ("\"index\"".to_owned(), v.to_owned())),
        2 => (prop::sample::select(vec!["\"\"", "\"extra\"", "\"\\u0000\"", "\"text \"", "\"é\""]), json_text(flavor))
            .prop_map(|(k, v)| (k.to_owned(), v)),
    ]
}

fn object_fragment(flavor: Flavor) -> impl Strategy<Value = String> {
    prop::collection::vec((ws(), fragment_field(flavor), ws()), 0..6).prop_map(|fields| {
        let fields: Vec<String> = fields
            .into_iter()
            .map(|(a, (k, v), b)| format!("{a}{k}{b}:{b}{v}{a}"))
            .collect();
        format!("{{{}}}", fields.join(","))
    })
}

fn fragment(flavor: Flavor) -> impl Strategy<Value = String> {
    prop_oneof![6 => object_fragment(flavor).boxed(), 1 => json_text(flavor)]
}

fn merge(fragments: &[String]) -> Option<String> {
    let mut merger = ReasoningMerger::new();
    for f in fragments {
        let raw: Box<RawValue> = serde_json::from_str(f).unwrap_or_else(|e| panic!("{e}: {f}"));
        merger.push(&raw);
    }
    merger.finish()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn merger_always_writes_a_json_array(
        fragments in prop::collection::vec(fragment(Flavor { exotic: true }), 0..12),
    ) {
        let merged = merge(&fragments);
        prop_assert_eq!(merged.is_none(), fragments.is_empty());
        if let Some(merged) = merged {
            let blocks: Vec<Box<RawValue>> = serde_json::from_str(&merged)
                .map_err(|e| TestCaseError::fail(format!("not a JSON array ({e}): {merged}")))?;
            prop_assert!(!blocks.is_empty() && blocks.len() <= fragments.len(), "{} blocks from {} fragments", blocks.len(), fragments.len());
        }
    }

    #[test]
    fn merger_output_parses_whenever_its_input_does(
        fragments in prop::collection::vec(fragment(Flavor { exotic: false }), 1..12),
    ) {
        let merged = merge(&fragments).unwrap();
        // Checked as raw JSON, as the service reads it: a number beyond f64 (`1e400`) is
        // valid JSON that a `Value` refuses, and the merger must keep it as it came.
        let blocks: Vec<&RawValue> = serde_json::from_str(&merged)
            .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {merged}")))?;
        prop_assert!(!blocks.is_empty());
    }

    #[test]
    fn merger_keeps_every_object_an_object(
        fragments in prop::collection::vec(object_fragment(Flavor { exotic: false }), 1..12),
    ) {
        let merged = merge(&fragments).unwrap();
        let blocks: Vec<&RawValue> = serde_json::from_str(&merged).unwrap();
        for block in &blocks {
            prop_assert!(
                block.get().starts_with('{'),
                "a fragment object became {} in {}",
                block.get(),
                merged
            );
        }
    }
}

/// Found in CI by `merger_output_parses_whenever_its_input_does`: a number beyond f64 is
/// kept byte for byte.
#[test]
fn merger_keeps_numbers_beyond_f64_as_they_came() {
    let merged = merge(&[r#"{"":{"":1797693135e299}}"#.into()]);
    assert_eq!(merged.as_deref(), Some(r#"[{"":{"":1797693135e299}}]"#));
}

/// Found by `merger_keeps_every_object_an_object`; kept as a fixed example.
#[test]
fn merger_keeps_a_fragment_whose_only_key_is_empty() {
    let merged = merge(&[
        r#"{"type":"reasoning.text","text":"a"}"#.into(),
        r#"{"":5}"#.into(),
    ]);
    assert_eq!(
        merged.as_deref(),
        Some(r#"[{"type":"reasoning.text","text":"a"},{"":5}]"#)
    );
}

// ---------------------------------------------------------------- (d) export

fn uuid() -> impl Strategy<Value = String> {
    any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string())
}

fn opt_json() -> impl Strategy<Value = Option<String>> {
    prop::option::of(json_text(Flavor { exotic: true }))
}

/// A thread's `reasoning_replay` as stored: one of the three values (import refuses others).
fn opt_replay() -> impl Strategy<Value = Option<String>> {
    prop::option::of(
        prop::sample::select(vec!["same_model", "all", "none"]).prop_map(str::to_owned),
    )
}

/// A thread's `params` as stored: a JSON object of distinct keys, none of those a turn
/// reserves (import refuses others), with any values, spaced any way.
fn opt_params() -> impl Strategy<Value = Option<String>> {
    let key = "[a-z_]{1,12}".prop_filter("not reserved", |k| {
        !["messages", "model", "stream", "reasoning"].contains(&k.as_str())
    });
    prop::option::of(
        (
            ws(),
            prop::collection::btree_map(key, (ws(), json_text(Flavor { exotic: true })), 0..4),
        )
            .prop_map(|(pad, fields)| {
                let fields: Vec<String> = fields
                    .into_iter()
                    .map(|(k, (a, v))| format!("\"{k}\":{a}{v}"))
                    .collect();
                format!("{pad}{{{}}}", fields.join(","))
            }),
    )
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(any::<String>())
}

/// Any finite float, every bit pattern.
fn finite_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        prop::sample::select(vec![
            0.0,
            -0.0,
            0.000_021_6,
            0.1,
            1e-300,
            5e-324,
            f64::MAX,
            0.000_123_45
        ]),
        (0u64..10_000_000).prop_map(|n| n as f64 / 1e8),
    ]
}

/// Costs as a thread's usage totals hold them: sums of per-turn costs as OpenRouter reports
/// them (a few significant digits each), which is where 17-digit floats come from.
fn summed_cost() -> impl Strategy<Value = f64> {
    prop::collection::vec((1u64..100_000, 4i32..9), 1..30)
        .prop_map(|parts| parts.iter().map(|(n, e)| *n as f64 / 10f64.powi(*e)).sum())
}

/// Costs whose shortest decimal form has few digits, which every float parser reads back
/// exactly; used where the property is about everything but float parsing.
fn short_cost() -> impl Strategy<Value = f64> {
    prop_oneof![
        prop::sample::select(vec![0.0, -0.0, 0.000_021_6, 0.1, 0.000_123_45, 1.5]),
        (0u64..10_000_000).prop_map(|n| n as f64 / 1e8),
    ]
}

fn message(thread_id: String) -> impl Strategy<Value = MessageRecord> {
    (
        (
            uuid(),
            // Numbered in `thread_export`, where the message's place is known.
            Just(0i64),
            role(),
            opt_json(),
            opt_text(),
            opt_json(),
            opt_text(),
        ),
        (
            opt_json(),
            opt_json(),
            Just(None::<String>),
            prop::option::of(uuid()),
            any::<String>(),
            opt_text(),
        ),
        (
            opt_text(),
            opt_text(),
            opt_text(),
            opt_text(),
            opt_text(),
            opt_json(),
        ),
    )
        .prop_map(move |(a, b, c)| MessageRecord {
            id: a.0,
            thread_id: thread_id.clone(),
            seq: a.1,
            role: a.2,
            content: a.3,
            name: a.4,
            tool_calls: a.5,
            tool_call_id: a.6,
            reasoning: b.0,
            reasoning_details_sha256: b
                .1
                .as_deref()
                .map(|details| threadkeeper::storage::sha256_hex(details.as_bytes()))
                .or(b.2),
            reasoning_details: b.1,
            turn_id: b.3,
            created_at: b.4,
            model: b.5,
            requested_model: c.0,
            provider: c.1,
            generation_id: c.2,
            finish_reason: c.3,
            native_finish_reason: c.4,
            usage: c.5,
        })
}

fn turn(thread_id: String) -> impl Strategy<Value = TurnRecord> {
    let response = any::<bool>().prop_flat_map(|is_json| {
        let body = if is_json {
            opt_json().boxed()
        } else {
            opt_text().boxed()
        };
        body.prop_map(move |b| (is_json, b))
    });
    (
        (
            uuid(),
            prop::sample::select(vec!["in_progress", "completed", "failed", "interrupted"])
                .prop_map(str::to_owned),
            prop::collection::vec(uuid(), 0..3)
                .prop_map(|ids| serde_json::to_string(&ids).unwrap()),
            prop::option::of(uuid()),
            any::<String>(),
            any::<String>(),
            opt_text(),
        ),
        (
            prop::option::of(any::<i64>()),
            opt_json(),
            opt_text(),
            opt_json(),
            opt_text(),
            opt_text(),
        ),
        (
            opt_json(),
            response,
            prop::option::of(any::<i64>()),
            any::<i64>(),
            opt_text(),
            opt_text(),
        ),
    )
        .prop_map(move |(a, b, c)| TurnRecord {
            id: a.0,
            thread_id: thread_id.clone(),
            status: a.1,
            input_message_ids: a.2,
            output_message_id: a.3,
            model: a.4,
            created_at: a.5,
            completed_at: a.6,
            latency_ms: b.0,
            usage: b.1,
            generation_id: b.2,
            error: b.3,
            idempotency_key: b.4,
            request_sha256: b.5,
            audit: AuditRecord {
                request: c.0.map(Into::into),
                response_is_json: c.1 .0,
                response: c.1 .1,
                status: c.2,
                attempts: c.3,
                started_at: c.4,
                finished_at: c.5,
            },
        })
}

fn thread_export() -> impl Strategy<Value = ThreadExport> {
    uuid().prop_flat_map(|id| {
        let usage = prop::option::of(
            (any::<i64>(), any::<i64>(), any::<i64>(), short_cost()).prop_map(|(p, c, r, cost)| {
                UsageTotals {
                    prompt_tokens: p,
                    completion_tokens: c,
                    reasoning_tokens: r,
                    cost,
                }
            }),
        );
        let thread = (
            (
                any::<String>(),
                any::<String>(),
                prop::collection::btree_map(any::<String>(), any::<String>(), 0..4),
            ),
            (
                opt_text(),
                opt_text(),
                opt_json(),
                opt_replay(),
                opt_params(),
            ),
            usage,
        );
        (
            Just(id.clone()),
            thread,
            prop::collection::vec(message(id.clone()), 0..4),
            prop::collection::vec(turn(id), 0..3),
        )
            .prop_map(|(id, (a, b, usage), mut messages, turns)| {
                // What import checks: messages numbered from 1, the thread's count and last id.
                for (n, m) in messages.iter_mut().enumerate() {
                    m.seq = n as i64 + 1;
                }
                let message_count = messages.len() as i64;
                let last_message_id = messages.last().map(|m| m.id.clone());
                ThreadExport {
                    thread: ThreadRecord {
                        id,
                        created_at: a.0,
                        updated_at: a.1,
                        metadata: a.2,
                        model: b.0,
                        system: b.1,
                        reasoning: b.2,
                        reasoning_replay: b.3,
                        params: b.4,
                        message_count,
                        last_message_id,
                        usage,
                    },
                    messages,
                    turns,
                }
            })
    })
}

/// A message role the service has.
fn role() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["system", "user", "assistant", "tool"]).prop_map(str::to_owned)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn export_write_read_write_is_the_identity(bundle in thread_export()) {
        let text = export::write(&bundle);
        prop_assert_eq!(text.lines().count(), 1 + bundle.messages.len() + bundle.turns.len());
        let back = export::read(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(export::write(&back), text);
        prop_assert_eq!(back, bundle);
    }

    #[test]
    fn export_summed_costs_survive_the_round_trip(cost in summed_cost()) {
        assert_cost_round_trips(cost)?;
    }

    #[test]
    fn export_cost_survives_the_round_trip(cost in finite_f64()) {
        assert_cost_round_trips(cost)?;
    }
}

/// A thread's usage cost, exported and read back, is the same float and the same text.
fn assert_cost_round_trips(cost: f64) -> Result<(), TestCaseError> {
    {
        let bundle = ThreadExport {
            thread: ThreadRecord {
                usage: Some(UsageTotals {
                    prompt_tokens: 1,
                    completion_tokens: 2,
                    reasoning_tokens: 3,
                    cost,
                }),
                ..thread_record("0190d3a0-0000-7000-8000-000000000001", "m", None)
            },
            messages: Vec::new(),
            turns: Vec::new(),
        };
        let text = export::write(&bundle);
        let back = export::read(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(
            back.thread.usage.map(|u| u.cost.to_bits()),
            Some(cost.to_bits()),
            "{}",
            text
        );
        prop_assert_eq!(export::write(&back), text);
    }
    Ok(())
}
