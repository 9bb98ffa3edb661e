//! Secrets stay secret: a whole session at `RUST_LOG=trace` (open mode, keys created and
//! revoked through the CLI, threads, turns streamed, completed and failed, exports through
//! the API and the CLI) and neither the upstream key nor any service key (nor a wrong key a
//! client tried) appears in the service's or the CLI's logs, in any response header or body,
//! in an export, in what reached the upstream's body, or in the SQLite file, its WAL or its
//! shared-memory file.

use fake_openrouter::Reply;
use reqwest::Method;
use serde_json::json;

use crate::helpers::*;
use crate::support::*;

/// Distinctive, so a substring search cannot miss it or hit something else.
const UPSTREAM_KEY: &str = "sk-or-v1-UPSTREAMSECRET0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b";
/// A well-formed service key that was never created.
const WRONG_KEY: &str = "tk_WRONGKEYWRONGKEYWRONGKEYWRONGKEYWRONGKEYw";

/// Everything a session produced that must not contain a secret.
#[derive(Default)]
struct Places(Vec<(String, Vec<u8>)>);

impl Places {
    fn add(&mut self, what: impl Into<String>, text: impl AsRef<[u8]>) {
        self.0.push((what.into(), text.as_ref().to_vec()));
    }

    fn assert_free_of(&self, secrets: &[(&str, &str)]) {
        let mut leaks = Vec::new();
        for (name, secret) in secrets {
            for (place, bytes) in &self.0 {
                if contains_bytes(bytes, secret.as_bytes()) {
                    leaks.push(format!("{name} in {place}"));
                }
            }
        }
        assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    }
}

async fn whole_session_leaks_no_secret(log_format: &str) {
    let opts = Opts {
        api_key: Some(UPSTREAM_KEY.into()),
        ..Opts::default()
    }
    .rust_log("trace")
    .args(&["--log-format", log_format, "--upstream-attempts", "2"]);
    let app = spawn_app_with(opts).await;
    let mut places = Places::default();

    // Open mode.
    let open = app.new_thread_id(&json!({"system": "open"})).await;
    app.turn_ok(&open, &json!({"input": "open turn"})).await;

    // Keys through the CLI, logging at trace.
    let k1 = create_key_logged(&app.db_url, "leak-one", "leaky", "trace").await;
    let k2 = create_key_logged(&app.db_url, "leak-two", "leaky", "trace").await;
    for key in [&k1, &k2] {
        places.add(format!("keys create stderr ({})", key.id), &key.stderr);
    }
    let a = keyed(&app.base, &k1.key);
    let b = keyed(&app.base, &k2.key);

    let thread = a
        .new_thread_id(&json!({"metadata": {"k": "v"}, "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a", "reasoning_details": [{"type": "reasoning.text", "text": "r"}]}
        ]}))
        .await;
    a.turn_ok(&thread, &json!({"input": "plain turn"})).await;
    let streamed = a
        .turn(&thread, &json!({"input": "streamed turn", "stream": true}))
        .await;
    assert_eq!(streamed.status, 200, "{streamed:?}");
    assert!(
        streamed.text.contains("event: turn.completed"),
        "{streamed:?}"
    );
    // A failure after a retry, and a failed stream.
    app.fake.push(Reply::raw(
        503,
        r#"{"error":{"message":"overloaded","code":503}}"#,
    ));
    app.fake.push(Reply::raw(
        400,
        r#"{"error":{"message":"Provider returned error","code":400,"metadata":{"raw":"{\"error\":\"bad\"}"}}}"#,
    ));
    a.turn(&thread, &json!({"input": "failing turn"}))
        .await
        .expect_error(502, "upstream_error");
    app.fake.push(Reply::raw(
        401,
        r#"{"error":{"message":"No auth credentials found","code":401}}"#,
    ));
    let failed_stream = a
        .turn(&thread, &json!({"input": "failing stream", "stream": true}))
        .await;
    assert!(
        failed_stream.text.contains("turn.failed") || failed_stream.status >= 400,
        "{failed_stream:?}"
    );
    b.get(&format!("/v1/threads/{thread}/context"))
        .await
        .expect(200);
    for turn in a.turns(&thread).await {
        a.turn_detail(&thread, &id_of(&turn)).await;
    }

    // A client trying a key that does not exist, and one trying the upstream key.
    let anonymous = Api::new(&app.base);
    for token in [WRONG_KEY, UPSTREAM_KEY] {
        let resp = try_raw(
            &anonymous,
            Method::GET,
            "/v1/threads",
            &[("authorization", format!("Bearer {token}").into_bytes())],
            None,
        )
        .await
        .unwrap();
        assert_unauthorized(&resp);
        places.add(
            format!("answer to a wrong key: {:?}", resp.headers),
            &resp.text,
        );
    }

    // Exports through the API and the CLI, key listing and revocation through the CLI.
    let export = a.get(&format!("/v1/threads/{thread}/export")).await;
    assert_eq!(export.status, 200);
    places.add("export (API)", &export.text);
    let export_cli = cli(&app.db_url, &["export", "--thread", &thread], "trace").await;
    assert!(export_cli.status.success(), "{export_cli:?}");
    assert_eq!(export_cli.stdout, export.text, "CLI and API exports differ");
    places.add("export (CLI) stdout", &export_cli.stdout);
    places.add("export (CLI) stderr", &export_cli.stderr);
    let list = cli(&app.db_url, &["keys", "list"], "trace").await;
    places.add("keys list stdout", &list.stdout);
    places.add("keys list stderr", &list.stderr);
    let revoke = cli(&app.db_url, &["keys", "revoke", &k2.id], "trace").await;
    assert!(revoke.status.success(), "{revoke:?}");
    places.add("keys revoke stdout", &revoke.stdout);
    places.add("keys revoke stderr", &revoke.stderr);
    assert_unauthorized(&b.get("/v1/threads").await);
    let migrate = cli(&app.db_url, &["migrate"], "trace").await;
    places.add("migrate stderr", &migrate.stderr);

    // The upstream did get the key, in its Authorization header only.
    let requests = app.fake.requests();
    assert!(requests.len() >= 6, "{} upstream requests", requests.len());
    let bearer = format!("Bearer {UPSTREAM_KEY}");
    for (i, request) in requests.iter().enumerate() {
        assert_eq!(request.authorization.as_deref(), Some(bearer.as_str()));
        places.add(format!("upstream request body #{i}"), &request.body);
    }

    // The logs are trace-level indeed, and the request spans are there.
    let logs = app.logs();
    let trace_marker = if log_format == "json" {
        "\"level\":\"TRACE\""
    } else {
        "TRACE"
    };
    assert!(
        logs.contains(trace_marker),
        "no trace-level lines in:\n{logs}"
    );
    assert!(logs.contains("/v1/threads"), "no request spans in the logs");
    places.add("service logs", &logs);
    for api in [&app.api, &a, &b] {
        for (i, entry) in api.transcript().iter().enumerate() {
            places.add(format!("answer #{i} (headers and body)"), entry);
        }
    }
    for (file, bytes) in db_files(&app.db_path()) {
        places.add(file, bytes);
    }

    places.assert_free_of(&[
        ("OPENROUTER_API_KEY", UPSTREAM_KEY),
        ("the upstream key without its prefix", &UPSTREAM_KEY[6..]),
        ("service key 1", &k1.key),
        ("service key 2", &k2.key),
        ("service key 1 without prefix", &k1.key[3..]),
        ("service key 2 without prefix", &k2.key[3..]),
        ("a wrong key a client tried", WRONG_KEY),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_leaks_with_pretty_trace_logs() {
    whole_session_leaks_no_secret("pretty").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_leaks_with_json_trace_logs() {
    whole_session_leaks_no_secret("json").await;
}
