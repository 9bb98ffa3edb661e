//! Malformed requests, table-driven: each gets a 4xx with the contract's error JSON, and none
//! changes the database or reaches the upstream.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

struct Case {
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
    status: u16,
    code: &'static str,
}

/// A request with a JSON content type (and no body when `body` is empty).
fn c(method: Method, path: &str, body: &str, status: u16, code: &'static str) -> Case {
    Case {
        method,
        path: path.to_owned(),
        content_type: Some("application/json"),
        body: (!body.is_empty()).then(|| body.as_bytes().to_vec()),
        status,
        code,
    }
}

fn typed(content_type: Option<&'static str>, case: Case) -> Case {
    Case {
        content_type,
        ..case
    }
}

/// Ids of the fixture: thread `a` with an imported user message and a completed turn, thread
/// `b` with one message, and a well-formed id that names nothing.
struct Fixture {
    a: String,
    b: String,
    a_turn: String,
    a_user_msg: String,
    b_msg: String,
    unknown: String,
}

#[rustfmt::skip]
fn cases(f: &Fixture) -> Vec<Case> {
    use Method as M;
    let (a, b, unknown) = (&f.a, &f.b, &f.unknown);
    let threads = "/v1/threads";
    let thread = format!("/v1/threads/{a}");
    let turns = format!("{thread}/turns");
    let messages = format!("{thread}/messages");
    let many_keys: Vec<String> = (0..17).map(|i| format!("\"k{i}\":\"v\"")).collect();
    let many_keys = format!("{{\"metadata\":{{{}}}}}", many_keys.join(","));
    let long_key = format!("{{\"metadata\":{{\"{}\":\"v\"}}}}", "k".repeat(65));
    let long_value = format!("{{\"metadata\":{{\"k\":\"{}\"}}}}", "v".repeat(513));
    let big = format!("{{\"system\":\"{}\"}}", "x".repeat(2000));
    let big_input = format!("{{\"input\":\"{}\"}}", "y".repeat(1500));
    let big_messages = format!("{{\"messages\":[{}]}}", vec![r#"{"role":"user","content":"0123456789012345678901234567890123456789"}"#; 40].join(","));
    vec![
        // invalid_json: not JSON, truncated, trailing bytes, control characters, invalid UTF-8
        c(M::POST, threads, r#"{"model":"#, 400, "invalid_json"),
        c(M::POST, threads, "{} {}", 400, "invalid_json"),
        c(M::POST, threads, "not json", 400, "invalid_json"),
        c(M::POST, &turns, r#"{"input":"x",}"#, 400, "invalid_json"),
        c(M::POST, &messages, "{\"messages\":[{\"role\":\"user\",\"content\":\"\x01\"}]}", 400, "invalid_json"),
        Case { body: Some(b"{\"system\":\"\xff\xfe\"}".to_vec()), ..c(M::POST, threads, "", 400, "invalid_json") },
        // A body that is JSON but not an object, even one serde could read positionally.
        c(M::POST, threads, "null", 400, "invalid_request"),
        c(M::POST, threads, "[]", 400, "invalid_request"),
        c(M::POST, threads, r#"[{"k":"v"},"m/positional","sys"]"#, 400, "invalid_request"),
        c(M::POST, threads, "\"string\"", 400, "invalid_request"),
        c(M::POST, &turns, r#"["hello"]"#, 400, "invalid_request"),
        c(M::POST, &turns, "42", 400, "invalid_request"),
        c(M::POST, &messages, r#"[[{"role":"user","content":"x"}]]"#, 400, "invalid_request"),
        c(M::PATCH, &thread, r#"[{"a":"b"}]"#, 400, "invalid_request"),
        // invalid_request: thread fields
        c(M::POST, threads, r#"{"unknown":1}"#, 400, "invalid_request"),
        c(M::POST, threads, r#"{"model":"a","model":"b"}"#, 400, "invalid_request"),
        c(M::POST, threads, r#"{"model":5}"#, 400, "invalid_request"),
        c(M::POST, threads, r#"{"model":""}"#, 400, "invalid_request"),
        c(M::POST, threads, r#"{"system":["x"]}"#, 400, "invalid_request"),
        c(M::POST, threads, r#"{"metadata":{"k":1}}"#, 400, "invalid_request"),
        c(M::POST, threads, r#"{"metadata":"k"}"#, 400, "invalid_request"),
        c(M::POST, threads, &many_keys, 400, "invalid_request"),
        c(M::POST, threads, &long_key, 400, "invalid_request"),
        c(M::POST, threads, &long_value, 400, "invalid_request"),
        c(M::POST, threads, r#"{"reasoning_replay":"sometimes"}"#, 400, "invalid_request"),
        c(M::POST, threads, r#"{"reasoning":"high"}"#, 400, "invalid_request"),
        c(M::POST, threads, r#"{"params":[1]}"#, 400, "invalid_request"),
        c(M::POST, threads, r#"{"params":{"messages":[]}}"#, 400, "invalid_request"),
        c(M::POST, threads, r#"{"params":{"stream":true}}"#, 400, "invalid_request"),
        // invalid_request: messages
        c(M::POST, threads, r#"{"messages":"hi"}"#, 400, "invalid_request"),
        c(M::POST, threads, r#"{"messages":[{"role":"robot","content":"x"}]}"#, 400, "invalid_request"),
        c(M::POST, threads, r#"{"messages":[{"role":"tool","content":"x"}]}"#, 400, "invalid_request"),
        c(M::POST, threads, r#"{"messages":[{"role":"user"}]}"#, 400, "invalid_request"),
        c(M::POST, threads, r#"{"messages":[{"role":"user","content":"x","extra":1}]}"#, 400, "invalid_request"),
        c(M::POST, threads, r#"{"messages":[{"role":"user","content":"x","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}]}"#, 400, "invalid_request"),
        c(M::POST, threads, r#"{"messages":[{"role":"user","content":"x","reasoning":"r"}]}"#, 400, "invalid_request"),
        c(M::POST, threads, r#"{"messages":[{"role":"user","content":"x","reasoning_details":[]}]}"#, 400, "invalid_request"),
        c(M::POST, threads, r#"{"messages":[{"role":"user","content":5}]}"#, 400, "invalid_request"),
        c(M::POST, threads, r#"{"messages":[{"role":"user","content":[]}]}"#, 400, "invalid_request"),
        c(M::POST, threads, r#"{"messages":[{"role":"assistant","content":null}]}"#, 400, "invalid_request"),
        c(M::POST, threads, r#"{"messages":[{"role":"assistant"}]}"#, 400, "invalid_request"),
        c(M::POST, threads, r#"{"messages":[{"role":"user","content":[1,null,"x"]}]}"#, 400, "invalid_request"),
        c(M::POST, &messages, r#"{"messages":[{"role":"user","content":[{"text":"no type"}]}]}"#, 400, "invalid_request"),
        c(M::POST, &turns, r#"{"input":[{"role":"user","content":[{"type":""}]}]}"#, 400, "invalid_request"),
        c(M::POST, threads, r#"{"messages":[{"role":"assistant","content":"x","tool_calls":"nope"}]}"#, 400, "invalid_request"),
        c(M::POST, threads, r#"{"messages":[{"role":"user","content":"ok"},{"role":"user","content":"x","model":"m/x"}]}"#, 400, "invalid_request"),
        // invalid_request: turns
        c(M::POST, &turns, r#"{"input":5}"#, 400, "invalid_request"),
        c(M::POST, &turns, r#"{"inptu":"x"}"#, 400, "invalid_request"),
        c(M::POST, &turns, r#"{"input":"x","stream":"yes"}"#, 400, "invalid_request"),
        c(M::POST, &turns, r#"{"input":"x","params":{"model":"m/x"}}"#, 400, "invalid_request"),
        c(M::POST, &turns, r#"{"input":"x","params":{"reasoning":{}}}"#, 400, "invalid_request"),
        c(M::POST, &turns, r#"{"input":"x","params":{"stream":false}}"#, 400, "invalid_request"),
        c(M::POST, &turns, r#"{"input":"x","params":{"messages":[]}}"#, 400, "invalid_request"),
        c(M::POST, &turns, r#"{"input":"x","params":"temperature=1"}"#, 400, "invalid_request"),
        c(M::POST, &turns, r#"{"input":"x","reasoning_replay":"never"}"#, 400, "invalid_request"),
        c(M::POST, &turns, r#"{"input":"x","model":""}"#, 400, "invalid_request"),
        c(M::POST, &turns, r#"{"input":"x","reasoning":true}"#, 400, "invalid_request"),
        c(M::POST, &turns, r#"{"input":{"role":"assistant","content":"x","bogus":1}}"#, 400, "invalid_request"),
        c(M::POST, &turns, r#"{"input":[{"role":"user","content":"ok"},{"role":"tool","content":"no id"}]}"#, 400, "invalid_request"),
        c(M::POST, &format!("{turns}?colour=red"), r#"{"input":"x"}"#, 400, "invalid_request"),
        // invalid_request: appending and patching
        c(M::POST, &messages, r#"{"messages":[]}"#, 400, "invalid_request"),
        c(M::POST, &messages, "{}", 400, "invalid_request"),
        c(M::POST, &messages, r#"{"messages":[{"role":"user","content":"x"}],"extra":true}"#, 400, "invalid_request"),
        c(M::PATCH, &thread, r#"{"id":"x"}"#, 400, "invalid_request"),
        c(M::PATCH, &thread, r#"{"metadata":"x"}"#, 400, "invalid_request"),
        c(M::PATCH, &thread, r#"{"messages":[]}"#, 400, "invalid_request"),
        // query strings
        c(M::GET, "/v1/threads?limit=0", "", 400, "invalid_request"),
        c(M::GET, "/v1/threads?limit=101", "", 400, "invalid_request"),
        c(M::GET, "/v1/threads?limit=ten", "", 400, "invalid_request"),
        c(M::GET, "/v1/threads?order=sideways", "", 400, "invalid_request"),
        c(M::GET, "/v1/threads?after=123", "", 400, "invalid_request"),
        c(M::GET, "/v1/threads?colour=red", "", 400, "invalid_request"),
        c(M::GET, &format!("{thread}?colour=red"), "", 400, "invalid_request"),
        c(M::GET, &format!("{messages}?after={}", f.b_msg), "", 400, "invalid_request"),
        c(M::GET, &format!("{thread}/context?reasoning=notjson"), "", 400, "invalid_request"),
        c(M::GET, &format!("{thread}/context?params=%5B1%5D"), "", 400, "invalid_request"),
        c(M::GET, &format!("{thread}/context?reasoning_replay=maybe"), "", 400, "invalid_request"),
        c(M::GET, &format!("{thread}/context?input=hi"), "", 400, "invalid_request"),
        // ids: malformed is 400, well-formed but unknown is 404
        c(M::GET, "/v1/threads/not-a-uuid", "", 400, "invalid_request"),
        c(M::GET, "/v1/threads/12345", "", 400, "invalid_request"),
        c(M::DELETE, "/v1/threads/..%2F..%2Fetc", "", 400, "invalid_request"),
        c(M::GET, &format!("{messages}/zzz"), "", 400, "invalid_request"),
        c(M::GET, &format!("{turns}/not-a-turn"), "", 400, "invalid_request"),
        c(M::POST, "/v1/threads/not-a-uuid/turns", r#"{"input":"x"}"#, 400, "invalid_request"),
        c(M::GET, &format!("/v1/threads/{unknown}"), "", 404, "not_found"),
        c(M::PATCH, &format!("/v1/threads/{unknown}"), r#"{"system":"x"}"#, 404, "not_found"),
        c(M::DELETE, &format!("/v1/threads/{unknown}"), "", 404, "not_found"),
        c(M::POST, &format!("/v1/threads/{unknown}/turns"), r#"{"input":"x"}"#, 404, "not_found"),
        c(M::POST, &format!("/v1/threads/{unknown}/messages"), r#"{"messages":[{"role":"user","content":"x"}]}"#, 404, "not_found"),
        c(M::GET, &format!("/v1/threads/{unknown}/messages"), "", 404, "not_found"),
        c(M::GET, &format!("/v1/threads/{unknown}/turns"), "", 404, "not_found"),
        c(M::GET, &format!("/v1/threads/{unknown}/context"), "", 404, "not_found"),
        c(M::GET, &format!("{messages}/{unknown}"), "", 404, "not_found"),
        c(M::GET, &format!("{messages}/{}", f.b_msg), "", 404, "not_found"),
        c(M::GET, &format!("{messages}/{}/reasoning_details", f.a_user_msg), "", 404, "not_found"),
        c(M::GET, &format!("{turns}/{unknown}"), "", 404, "not_found"),
        c(M::GET, &format!("{turns}/{}", f.a_user_msg), "", 404, "not_found"),
        c(M::GET, &format!("/v1/threads/{b}/turns/{}", f.a_turn), "", 404, "not_found"),
        c(M::GET, "/v1/nothing-here", "", 404, "not_found"),
        c(M::PUT, &thread, r#"{"system":"x"}"#, 405, "method_not_allowed"),
        // media type and size (the service runs with --max-body 1KiB)
        typed(Some("text/plain"), c(M::POST, threads, r#"{"system":"x"}"#, 415, "unsupported_media_type")),
        typed(None, c(M::POST, &turns, r#"{"input":"x"}"#, 415, "unsupported_media_type")),
        typed(Some("application/x-www-form-urlencoded"), c(M::POST, &messages, "messages=x", 415, "unsupported_media_type")),
        typed(Some("text/json"), c(M::PATCH, &thread, r#"{"system":"x"}"#, 415, "unsupported_media_type")),
        c(M::POST, threads, &big, 413, "payload_too_large"),
        c(M::POST, &turns, &big_input, 413, "payload_too_large"),
        c(M::POST, &messages, &big_messages, 413, "payload_too_large"),
        c(M::PATCH, &thread, &big, 413, "payload_too_large"),
    ]
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_error_json_and_change_nothing() {
    let app = spawn_app_with(Opts::default().args(&["--max-body", "1KiB"])).await;
    let a = app
        .new_thread_id(&json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello", "reasoning_details": [{"type": "reasoning.text", "text": "x"}]}
        ]}))
        .await;
    let a_turn = id_of(&app.turn_ok(&a, &json!({"input": "more"})).await);
    let b = app
        .new_thread_id(&json!({"messages": [{"role": "user", "content": "in b"}]}))
        .await;
    let fixture = Fixture {
        a_user_msg: id_of(&app.messages(&a).await[0]),
        b_msg: id_of(&app.messages(&b).await[0]),
        a,
        b,
        a_turn,
        unknown: uuid::Uuid::now_v7().to_string(),
    };
    let cases = cases(&fixture);
    assert!(cases.len() >= 25);

    let mut failures = Vec::new();
    for case in &cases {
        // Checked per case, so a failure names the request that changed something.
        let before = app.snapshot().await;
        let upstream_before = app.fake.requests().len();
        let resp = app
            .send(
                case.method.clone(),
                &case.path,
                case.content_type,
                case.body.clone(),
            )
            .await;
        let shape = error_shape(&resp);
        let what = format!(
            "{} {} ({:?})",
            case.method,
            case.path,
            case.body
                .as_deref()
                .map(String::from_utf8_lossy)
                .map(|b| shorten(&b))
        );
        if resp.status != case.status || !shape.as_ref().is_ok_and(|e| e["code"] == case.code) {
            failures.push(format!(
                "{what}: expected {} {}, got {} {} {:?}",
                case.status,
                case.code,
                resp.status,
                shorten(&resp.text),
                shape.err()
            ));
        }
        if app.snapshot().await != before {
            failures.push(format!("{what}: changed the database"));
        }
        if app.fake.requests().len() != upstream_before {
            failures.push(format!("{what}: reached the upstream"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures over {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    app.get("/healthz").await.expect(200);
    // Within the limit, the same routes still work.
    app.post("/v1/threads", &json!({"system": "x".repeat(900)}))
        .await
        .expect(201);
    assert!(!app.logs().contains("panicked"), "{}", app.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_413_also_without_content_length() {
    let app = spawn_app_with(Opts::default().args(&["--max-body", "1KiB"])).await;
    let id = app.new_thread_id(&json!({})).await;
    // Chunked transfer: the size is only known while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(br#"{"input":""#.to_vec()),
        Ok(vec![b'z'; 1500]),
        Ok(br#""}"#.to_vec()),
    ];
    // The server closes a connection whose body it did not read, and says so.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/threads/{id}/turns", app.base))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(
        resp.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert!(app.messages(&id).await.is_empty());
    assert!(app.fake.requests().is_empty());
    // A body just under the limit, with a charset parameter, is fine.
    let text = format!(r#"{{"input":"{}"}}"#, "z".repeat(1000));
    let resp = app
        .send(
            Method::POST,
            &format!("/v1/threads/{id}/turns"),
            Some("application/json; charset=utf-8"),
            Some(text.into_bytes()),
        )
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
}
