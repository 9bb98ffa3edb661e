//! Hostile input, table-driven: malformed and mistyped JSON, unknown fields, oversized and
//! deeply nested bodies, invalid UTF-8, invalid and traversal ids, SQL metacharacters, header
//! abuse and wrong methods. Every answer is a 4xx with the contract's error JSON, nothing is
//! stored, nothing reaches the upstream, and the service keeps serving.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;
use crate::support::*;

pub(crate) const DROP: &str = "'; DROP TABLE threads; --";
pub(crate) const OR_TRUE: &str = "\" OR 1=1 --";

struct Case {
    label: String,
    method: Method,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Option<Vec<u8>>,
    /// Acceptable answers: status and error code. Code "" means hyper answered itself
    /// (431 for oversized headers), without a body of ours.
    expect: Vec<(u16, &'static str)>,
}

impl Case {
    fn or(mut self, status: u16, code: &'static str) -> Case {
        self.expect.push((status, code));
        self
    }

    fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Case {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Replaces the JSON content type with this one.
    fn content_type(mut self, value: impl Into<Vec<u8>>) -> Case {
        self.headers.retain(|(name, _)| name != "content-type");
        self.headers.push(("content-type".to_owned(), value.into()));
        self
    }

    fn no_content_type(mut self) -> Case {
        self.headers.retain(|(name, _)| name != "content-type");
        self
    }
}

/// A request with a JSON content type (when it has a body).
fn case(
    label: &str,
    method: Method,
    path: &str,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
) -> Case {
    let body: Vec<u8> = body.into();
    let has_body = !body.is_empty();
    Case {
        label: label.to_owned(),
        method,
        path: path.to_owned(),
        headers: if has_body {
            vec![("content-type".to_owned(), b"application/json".to_vec())]
        } else {
            Vec::new()
        },
        body: has_body.then_some(body),
        expect: vec![(status, code)],
    }
}

fn get(label: &str, path: &str, status: u16, code: &'static str) -> Case {
    case(label, Method::GET, path, "", status, code)
}

/// A request without a body.
fn bare(label: &str, method: Method, path: &str, status: u16, code: &'static str) -> Case {
    case(label, method, path, "", status, code)
}

pub(crate) fn nested_arrays(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn nested_objects(depth: usize) -> String {
    let mut text = "{\"a\":".repeat(depth);
    text.push('1');
    text.push_str(&"}".repeat(depth));
    text
}

/// The ids of the fixture the corpus aims at.
struct Fixture {
    thread: String,
    message: String,
    turn: String,
}

#[rustfmt::skip]
fn corpus(f: &Fixture) -> Vec<Case> {
    use Method as M;
    const BAD: u16 = 400;
    const IJ: &str = "invalid_json";
    const IR: &str = "invalid_request";
    let t = &f.thread;
    let threads = "/v1/threads";
    let thread = format!("/v1/threads/{t}");
    let turns = format!("/v1/threads/{t}/turns");
    let messages = format!("/v1/threads/{t}/messages");
    let context = format!("/v1/threads/{t}/context");
    let user = |content: &str| format!(r#"{{"messages":[{{"role":"user","content":{content}}}]}}"#);
    let deep = nested_arrays(10_000);
    let deep_objects = nested_objects(10_000);
    let too_many: Vec<String> = (0..10_001).map(|i| format!(r#"{{"role":"user","content":"m{i}"}}"#)).collect();
    let too_many = format!(r#"{{"messages":[{}]}}"#, too_many.join(","));
    let many_keys: Vec<String> = (0..17).map(|i| format!("\"k{i}\":\"v\"")).collect();
    let mut big_body = br#"{"system":""#.to_vec();
    big_body.extend(std::iter::repeat_n(b'x', 9_000_000));
    big_body.extend(br#""}"#);
    let random = random_id();
    let big_string = "y".repeat(2 << 20);
    vec![
        // Malformed JSON.
        case("open brace", M::POST, threads, "{", BAD, IJ),
        case("truncated", M::POST, threads, r#"{"metadata":"#, BAD, IJ),
        case("trailing comma", M::POST, threads, r#"{"system":"x",}"#, BAD, IJ),
        case("single quotes", M::POST, threads, "{'system':'x'}", BAD, IJ),
        case("two documents", M::POST, threads, r#"{"system":"x"}{"system":"y"}"#, BAD, IJ),
        case("bare word", M::POST, &turns, "input", BAD, IJ),
        case("byte order mark", M::POST, threads, b"\xef\xbb\xbf{}".to_vec(), BAD, IJ),
        case("missing value", M::POST, &turns, r#"{"input":}"#, BAD, IJ),
        case("comment", M::POST, &turns, r#"{"input":"x" /* c */}"#, BAD, IJ),
        case("NaN", M::POST, &turns, r#"{"params":{"temperature":NaN}}"#, BAD, IJ),
        case("raw control character", M::POST, threads, b"{\"system\":\"a\x00b\"}".to_vec(), BAD, IJ),
        case("invalid utf-8 in a string", M::POST, threads, b"{\"system\":\"\xff\xfe\"}".to_vec(), BAD, IJ),
        case("invalid utf-8 outside strings", M::POST, &turns, b"{\xc3\x28:1}".to_vec(), BAD, IJ),
        case("invalid utf-8 in content", M::POST, &messages, [br#"{"messages":[{"role":"user","content":""#.as_slice(), b"\xed\xa0\x80", br#""}]}"#].concat(), BAD, IJ),
        case("bad escape", M::POST, threads, r#"{"system":"\x41"}"#, BAD, IJ),
        case("lone surrogate escape in system", M::POST, threads, r#"{"system":"\ud800"}"#, BAD, IJ).or(BAD, IR),
        // Not an object.
        case("array body", M::POST, threads, "[1,2,3]", BAD, IR),
        case("string body", M::POST, &turns, r#""hello""#, BAD, IR),
        case("null body", M::PATCH, &thread, "null", BAD, IR),
        case("number body", M::POST, &messages, "42", BAD, IR),
        // Wrong types.
        case("metadata string", M::POST, threads, r#"{"metadata":"x"}"#, BAD, IR),
        case("metadata number value", M::POST, threads, r#"{"metadata":{"k":1}}"#, BAD, IR),
        case("model number", M::POST, threads, r#"{"model":5}"#, BAD, IR),
        case("system array", M::PATCH, &thread, r#"{"system":["x"]}"#, BAD, IR),
        case("reasoning string", M::POST, threads, r#"{"reasoning":"high"}"#, BAD, IR),
        case("reasoning_replay unknown", M::PATCH, &thread, r#"{"reasoning_replay":"sometimes"}"#, BAD, IR),
        case("params array", M::POST, threads, r#"{"params":[1]}"#, BAD, IR),
        case("params.messages", M::POST, &turns, r#"{"params":{"messages":[]}}"#, BAD, IR),
        case("params.stream", M::POST, &turns, r#"{"params":{"stream":true}}"#, BAD, IR),
        case("messages object", M::POST, threads, r#"{"messages":{"role":"user"}}"#, BAD, IR),
        case("unknown role", M::POST, &messages, r#"{"messages":[{"role":"robot","content":"x"}]}"#, BAD, IR),
        case("content number", M::POST, &messages, user("5"), BAD, IR),
        case("tool without id", M::POST, &messages, r#"{"messages":[{"role":"tool","content":"x"}]}"#, BAD, IR),
        case("tool_calls on user", M::POST, &turns, r#"{"input":{"role":"user","content":"x","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}}"#, BAD, IR),
        case("stream string", M::POST, &turns, r#"{"input":"x","stream":"yes"}"#, BAD, IR),
        case("stream overflow number", M::POST, &turns, r#"{"stream":1e999}"#, BAD, IR).or(BAD, IJ),
        case("input number", M::POST, &turns, r#"{"input":42}"#, BAD, IR),
        case("reasoning_details object", M::POST, &turns, r#"{"input":{"role":"assistant","content":"x","reasoning_details":{}}}"#, BAD, IR),
        case("messages in patch", M::PATCH, &thread, r#"{"messages":[]}"#, BAD, IR),
        case("empty messages", M::POST, &messages, r#"{"messages":[]}"#, BAD, IR),
        // Unknown fields.
        case("unknown thread field", M::POST, threads, r#"{"metadat":{}}"#, BAD, IR),
        case("unknown turn field", M::POST, &turns, r#"{"inptu":"x"}"#, BAD, IR),
        case("unknown message field", M::POST, &messages, r#"{"messages":[{"role":"user","content":"x","extra":1}]}"#, BAD, IR),
        case("unknown append field", M::POST, &messages, r#"{"messages":[{"role":"user","content":"x"}],"more":1}"#, BAD, IR),
        case("tenant field", M::POST, threads, r#"{"tenant":"someone-else"}"#, BAD, IR),
        case("id in patch", M::PATCH, &thread, r#"{"id":"x"}"#, BAD, IR),
        case("input and stream on context", M::GET, &context, r#"{"input":"x"}"#, BAD, IR),
        // Limits.
        case("17 metadata keys", M::POST, threads, format!(r#"{{"metadata":{{{}}}}}"#, many_keys.join(",")), BAD, IR),
        case("65-char metadata key", M::POST, threads, format!(r#"{{"metadata":{{"{}":"v"}}}}"#, "k".repeat(65)), BAD, IR),
        case("513-char metadata value", M::PATCH, &thread, format!(r#"{{"metadata":{{"k":"{}"}}}}"#, "v".repeat(513)), BAD, IR),
        case("empty metadata key", M::POST, threads, r#"{"metadata":{"":"v"}}"#, BAD, IR),
        case("2 MB metadata value", M::POST, threads, format!(r#"{{"metadata":{{"k":"{big_string}"}}}}"#), BAD, IR),
        case("2 MB model", M::POST, &turns, format!(r#"{{"model":"{big_string}"}}"#), BAD, IR),
        case("300-char name", M::POST, &messages, format!(r#"{{"messages":[{{"role":"user","content":"x","name":"{}"}}]}}"#, "n".repeat(300)), BAD, IR),
        case("10,001 messages", M::POST, threads, too_many, BAD, IR),
        case("9 MB body", M::POST, threads, big_body, 413, "payload_too_large"),
        get("limit 0", "/v1/threads?limit=0", BAD, IR),
        get("limit 101", &format!("{messages}?limit=101"), BAD, IR),
        get("limit -1", &format!("{turns}?limit=-1"), BAD, IR),
        get("limit word", "/v1/threads?limit=abc", BAD, IR),
        get("limit float", "/v1/threads?limit=1e2", BAD, IR),
        get("limit huge", "/v1/threads?limit=99999999999999999999", BAD, IR),
        get("order sideways", "/v1/threads?order=sideways", BAD, IR),
        get("unknown query", "/v1/threads?tenant=other", BAD, IR),
        get("query on a route without one", &format!("{thread}?tenant=other"), BAD, IR),
        get("context reasoning not json", &format!("{context}?reasoning=high"), BAD, IR),
        get("context params messages", &format!("{context}?params=%7B%22messages%22%3A%5B%5D%7D"), BAD, IR),
        // Deep nesting (serde_json's recursion limit is 128).
        case("deep params", M::POST, &turns, format!(r#"{{"params":{{"x":{deep}}}}}"#), BAD, IJ),
        case("deep params objects", M::PATCH, &thread, format!(r#"{{"params":{{"x":{deep_objects}}}}}"#), BAD, IJ),
        case("deep thread params", M::POST, threads, format!(r#"{{"params":{{"x":{deep}}}}}"#), BAD, IJ),
        case("deep reasoning", M::POST, threads, format!(r#"{{"reasoning":{{"x":{deep}}}}}"#), BAD, IJ),
        case("deep metadata", M::POST, threads, format!(r#"{{"metadata":{{"k":{deep}}}}}"#), BAD, IJ).or(BAD, IR),
        case("deep input", M::POST, &turns, format!(r#"{{"input":{deep}}}"#), BAD, IJ).or(BAD, IR),
        case("deep content", M::POST, &turns, format!(r#"{{"input":{{"role":"user","content":[{deep}]}}}}"#), BAD, IJ),
        case("deep reasoning_details", M::POST, &messages, format!(r#"{{"messages":[{{"role":"assistant","content":"x","reasoning_details":[{deep}]}}]}}"#), BAD, IJ),
        case("deep tool_calls", M::POST, &messages, format!(r#"{{"messages":[{{"role":"assistant","content":null,"tool_calls":[{{"id":"c","type":"function","function":{{"name":"f","arguments":"{{}}"}},"x":{deep}}}]}}]}}"#), BAD, IJ),
        case("deep body", M::POST, threads, deep.clone(), BAD, IJ).or(BAD, IR),
        case("deep unknown field", M::POST, threads, format!(r#"{{"zzz":{deep}}}"#), BAD, IJ).or(BAD, IR),
        // Ids.
        get("id not a uuid", "/v1/threads/not-a-uuid", BAD, IR),
        get("traversal id", "/v1/threads/..%2F..%2Fetc%2Fpasswd", BAD, IR),
        get("traversal message id", &format!("{messages}/..%2F..%2Fetc%2Fpasswd"), BAD, IR),
        get("traversal turn id", &format!("{turns}/..%5C..%5Cwindows"), BAD, IR),
        get("nul id", "/v1/threads/%00", BAD, IR),
        get("id with nul suffix", &format!("{thread}%00"), BAD, IR),
        get("invalid utf-8 id", "/v1/threads/%FF%FE", BAD, IR),
        get("sql id", "/v1/threads/'%3B%20DROP%20TABLE%20threads%3B%20--", BAD, IR),
        get("sql id 2", "/v1/threads/%22%20OR%201%3D1%20--", BAD, IR),
        get("10 KB id", &format!("/v1/threads/{}", "a".repeat(10_000)), BAD, IR),
        get("dot segments", "/v1/threads/%2e%2e/%2e%2e/etc/passwd", 404, "not_found"),
        get("nonexistent thread", &format!("/v1/threads/{random}"), 404, "not_found"),
        get("nil uuid", "/v1/threads/00000000-0000-0000-0000-000000000000", 404, "not_found"),
        get("message id as thread id", &format!("/v1/threads/{}", f.message), 404, "not_found"),
        get("message id as turn id", &format!("{turns}/{}", f.message), 404, "not_found"),
        get("turn id as message id", &format!("{messages}/{}", f.turn), 404, "not_found"),
        get("nonexistent message", &format!("{messages}/{random}/reasoning_details"), 404, "not_found"),
        get("message without reasoning", &format!("{messages}/{}/reasoning_details", f.message), 404, "not_found"),
        get("cursor not an id", &format!("{messages}?after=not-an-id"), BAD, IR),
        get("cursor of nothing", &format!("{messages}?after={random}"), BAD, IR),
        get("route below a leaf", &format!("{messages}/{}/reasoning_details/x", f.message), 404, "not_found"),
        // SQL metacharacters where they cannot be data.
        get("sql limit", "/v1/threads?limit=1%27%3B%20DROP%20TABLE%20threads%3B--", BAD, IR),
        get("sql order", "/v1/threads?order=%22%20OR%201%3D1%20--", BAD, IR),
        get("sql after", &format!("{messages}?after=%27%20OR%201%3D1%20--"), BAD, IR),
        get("sql before", "/v1/threads?before=1%20OR%201%3D1", BAD, IR),
        case("sql role", M::POST, &messages, format!(r#"{{"messages":[{{"role":"{DROP}","content":"x"}}]}}"#), BAD, IR),
        case("sql reasoning_replay", M::PATCH, &thread, format!(r#"{{"reasoning_replay":"{DROP}"}}"#), BAD, IR),
        case("sql reasoning", M::POST, threads, format!(r#"{{"reasoning":"{DROP}"}}"#), BAD, IR),
        case("sql params", M::POST, &turns, format!(r#"{{"params":"{DROP}"}}"#), BAD, IR),
        // Headers.
        get("empty authorization", threads, 401, "unauthorized").header("authorization", ""),
        get("100 KB authorization", threads, 401, "unauthorized").or(431, "").header("authorization", format!("Bearer {}", "A".repeat(100_000))),
        get("sql authorization", threads, 401, "unauthorized").header("authorization", format!("Bearer tk_{DROP}")),
        get("150 headers", threads, 431, ""),
        case("text/plain", M::POST, threads, r#"{"system":"x"}"#, 415, "unsupported_media_type").content_type("text/plain"),
        case("form", M::POST, &messages, "messages=x", 415, "unsupported_media_type").content_type("application/x-www-form-urlencoded"),
        case("multipart", M::POST, threads, "--B\r\nContent-Disposition: form-data; name=\"system\"\r\n\r\nx\r\n--B--\r\n", 415, "unsupported_media_type").content_type("multipart/form-data; boundary=B"),
        case("no content type", M::POST, &turns, r#"{"input":"x"}"#, 415, "unsupported_media_type").no_content_type(),
        case("content type garbage", M::PATCH, &thread, r#"{"system":"x"}"#, 415, "unsupported_media_type").content_type(b"\xff\xfe".to_vec()),
        case("duplicate content type, text first", M::POST, &messages, user("\"dup\""), 415, "unsupported_media_type").content_type("text/plain").header("content-type", "application/json"),
        case("duplicate content type, json first", M::POST, &messages, user("\"dup\""), 415, "unsupported_media_type").or(BAD, IR).header("content-type", "text/plain"),
        case("idempotency key too long", M::POST, &turns, r#"{"input":"x"}"#, BAD, IR).header("idempotency-key", "k".repeat(300)),
        case("idempotency key empty", M::POST, &turns, r#"{"input":"x"}"#, BAD, IR).header("idempotency-key", ""),
        case("idempotency key non-ascii", M::POST, &turns, r#"{"input":"x"}"#, BAD, IR).header("idempotency-key", b"\xff\xfe".to_vec()),
        // Methods.
        case("PUT threads", M::PUT, threads, "{}", 405, "method_not_allowed"),
        bare("DELETE threads", M::DELETE, threads, 405, "method_not_allowed"),
        case("POST a thread", M::POST, &thread, "{}", 405, "method_not_allowed"),
        case("PATCH messages", M::PATCH, &messages, "{}", 405, "method_not_allowed"),
        bare("DELETE a turn", M::DELETE, &format!("{turns}/{}", f.turn), 405, "method_not_allowed"),
        bare("DELETE a message", M::DELETE, &format!("{messages}/{}", f.message), 405, "method_not_allowed"),
        bare("TRACE", M::TRACE, threads, 405, "method_not_allowed"),
        bare("custom method", M::from_bytes(b"BREW").unwrap(), threads, 405, "method_not_allowed"),
        case("POST healthz", M::POST, "/healthz", "{}", 405, "method_not_allowed"),
        case("POST export", M::POST, &format!("{thread}/export"), "{}", 405, "method_not_allowed"),
        case("PUT context", M::PUT, &context, "{}", 405, "method_not_allowed"),
    ]
    .into_iter()
    .map(|mut c| {
        if c.label == "150 headers" {
            for i in 0..150 {
                c.headers.push((format!("x-junk-{i}"), b"v".to_vec()));
            }
        }
        c
    })
    .collect()
}

/// Sends one case; returns what is wrong with the answer, if anything.
async fn check(api: &Api, c: &Case) -> Option<String> {
    let headers: Vec<(&str, Vec<u8>)> = c
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.clone()))
        .collect();
    let resp = match try_raw(api, c.method.clone(), &c.path, &headers, c.body.clone()).await {
        Ok(resp) => resp,
        Err(e) => return Some(format!("{}: no answer: {e}", c.label)),
    };
    let short = |text: &str| text.chars().take(300).collect::<String>();
    let accepted = c.expect.iter().any(|(status, code)| {
        if resp.status != *status {
            return false;
        }
        match *code {
            // hyper's own answer.
            "" => true,
            code => error_shape(&resp).is_ok_and(|e| e["code"] == code),
        }
    });
    if accepted {
        if resp.status == 431 {
            eprintln!(
                "note: `{}` answered 431 by hyper, without our error JSON",
                c.label
            );
        }
        return None;
    }
    Some(format!(
        "{} ({} {}): expected one of {:?}, got {} {}",
        c.label,
        c.method,
        short(&c.path),
        c.expect,
        resp.status,
        short(&resp.text)
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_4xx_error_json_and_change_nothing() {
    let app = spawn_app().await;
    let key = create_key(&app.db_url, "victim", "victim").await;
    let api = keyed(&app.base, &key.key);
    let thread = api
        .new_thread_id(
            &json!({"metadata": {"k": "v"}, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    let turn = id_of(&api.turn_ok(&thread, &json!({"input": "more"})).await);
    let message = id_of(&api.messages(&thread).await[0]);
    let fixture = Fixture {
        thread: thread.clone(),
        message,
        turn,
    };
    let before = api.snapshot().await;
    let counts = db_counts(&app.db_path());
    let upstream = app.fake.requests().len();

    let cases = corpus(&fixture);
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        if let Some(problem) = check(&api, c).await {
            failures.push(problem);
        }
        // The service keeps serving after each one.
        let health = app.get("/healthz").await;
        assert_eq!(health.status, 200, "after {}: {health:?}", c.label);
    }
    let counts_after = db_counts(&app.db_path());
    if counts_after != counts {
        failures.push(format!(
            "the database changed: rows {counts} -> {counts_after}"
        ));
    }
    let upstream_after = app.fake.requests().len();
    if upstream_after != upstream {
        failures.push(format!(
            "{} hostile requests reached the upstream",
            upstream_after - upstream
        ));
    }
    assert!(
        failures.is_empty(),
        "{} problems over {} hostile requests:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(api.snapshot().await, before, "stored data changed");
    assert_eq!(sqlite_integrity(&app.db_path()), "ok");
    assert!(!app.logs().contains("panicked"), "{}", app.logs());
    api.turn_ok(&thread, &json!({"input": "still serving"}))
        .await;
}

/// Any token is a valid HTTP method, and each distinct metric label value is a series kept
/// for the process's life: made-up methods are counted under one label, `other`, so a
/// client cannot grow `/metrics` (and the service's memory) without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_share_one_metrics_label() {
    let app = spawn_app().await;
    let headers: [(&str, Vec<u8>); 0] = [];
    for i in 0..20 {
        let method = Method::from_bytes(format!("BREW{i}").as_bytes()).unwrap();
        for path in ["/v1/threads", "/no/such/route"] {
            let resp = try_raw(&app.api, method.clone(), path, &headers, None)
                .await
                .expect("an answer");
            assert!(matches!(resp.status, 404 | 405), "{path}: {resp:?}");
        }
    }
    let metrics = app.get("/metrics").await.text;
    assert!(!metrics.contains("BREW"), "{metrics}");
    for series in [
        r#"threadkeeper_http_requests_total{method="other",route="/v1/threads",status="405"} 20"#,
        r#"threadkeeper_http_requests_total{method="other",route="unmatched",status="404"} 20"#,
    ] {
        assert!(metrics.contains(series), "no `{series}` in:\n{metrics}");
    }
}

/// A body whose chunked framing is broken is a bad request (400 with the error JSON), not
/// "too large": only a body over the limit is 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_badly_framed_body_is_400_not_413() {
    use std::io::{Read, Write};
    let app = spawn_app().await;
    let addr = app.service.addr();
    let answer = tokio::task::spawn_blocking(move || {
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        tcp.write_all(
            b"POST /v1/threads HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
              Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        )
        .unwrap();
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains(r#""code":"invalid_request""#), "{answer}");
    assert!(answer.contains("could not be read"), "{answer}");
    assert_eq!(app.get("/v1/threads").await.json()["data"], json!([]));
}
