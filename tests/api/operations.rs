//! Operating it: metrics move as turns run, one request id follows a turn through the JSON
//! logs, and export -> import -> export is byte-identical.

use std::collections::BTreeMap;

use fake_openrouter::Reply;
use serde_json::{json, Value};

use crate::helpers::*;

/// `name{labels} value` lines of a Prometheus text page, by the whole series.
fn series(page: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn looks_like_uuid(text: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .any(|w| w.len() == 36 && w.matches('-').count() == 4)
}

#[tokio::test]
async fn metrics_count_completed_and_failed_turns_under_route_templates() {
    let app = spawn_app_with(Opts::default().args(&["--upstream-attempts", "1"])).await;
    let id = app.new_thread_id(&json!({})).await;
    app.turn_ok(&id, &json!({"input": "one"})).await;
    app.turn_ok(&id, &json!({"input": "two"})).await;
    app.fake.push(Reply::raw(
        400,
        r#"{"error":{"message":"Provider returned error","code":400}}"#,
    ));
    app.turn(&id, &json!({"input": "three"}))
        .await
        .expect_error(502, "upstream_error");
    app.get("/no/such/route").await;

    let page = app.get("/metrics").await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/plain"));
    let m = series(&page.text);
    let get = |key: &str| {
        m.get(key)
            .copied()
            .unwrap_or_else(|| panic!("no series {key} in\n{}", page.text))
    };
    let turns = r#"method="POST",route="/v1/threads/{thread_id}/turns""#;
    assert_eq!(get(r#"threadkeeper_turns_total{status="completed"}"#), 2.0);
    assert_eq!(get(r#"threadkeeper_turns_total{status="failed"}"#), 1.0);
    assert_eq!(get("threadkeeper_turns_in_progress"), 0.0);
    // The first turn read the thread; the next two found their context in the cache.
    assert_eq!(
        get(r#"threadkeeper_context_reads_total{source="database"}"#),
        1.0
    );
    assert_eq!(
        get(r#"threadkeeper_context_reads_total{source="cache"}"#),
        2.0
    );
    // The start-up sweep, the create, then an opening and a closing write per turn: 8 writes,
    // however they were batched.
    assert_eq!(get("threadkeeper_write_batch_size_sum"), 8.0);
    assert_eq!(
        get(&format!(
            "threadkeeper_http_requests_total{{{turns},status=\"200\"}}"
        )),
        2.0
    );
    assert_eq!(
        get(&format!(
            "threadkeeper_http_requests_total{{{turns},status=\"502\"}}"
        )),
        1.0
    );
    assert_eq!(
        get(r#"threadkeeper_http_requests_total{method="GET",route="unmatched",status="404"}"#),
        1.0
    );
    assert_eq!(
        get(&format!(
            "threadkeeper_http_request_duration_seconds_count{{{turns}}}"
        )),
        3.0
    );
    assert!(
        get(&format!(
            "threadkeeper_http_request_duration_seconds_sum{{{turns}}}"
        )) > 0.0
    );
    assert_eq!(
        get(r#"threadkeeper_upstream_attempts_total{outcome="ok"}"#),
        2.0
    );
    assert_eq!(
        get(r#"threadkeeper_upstream_attempts_total{outcome="http_4xx"}"#),
        1.0
    );
    assert_eq!(
        get(r#"threadkeeper_upstream_request_duration_seconds_count{outcome="completed"}"#),
        2.0
    );
    assert_eq!(
        get(r#"threadkeeper_upstream_request_duration_seconds_count{outcome="failed"}"#),
        1.0
    );
    // Histograms, not summaries: they have buckets.
    assert!(m
        .keys()
        .any(|k| k.starts_with("threadkeeper_http_request_duration_seconds_bucket{")));
    for kind in ["prompt", "completion", "reasoning"] {
        assert!(
            get(&format!("threadkeeper_tokens_total{{kind=\"{kind}\"}}")) > 0.0,
            "{kind}"
        );
    }
    assert!(get("threadkeeper_cost_total") > 0.0);
    // Tokens add up to what the thread reports.
    let usage = app.thread(&id).await["usage"].clone();
    assert_eq!(
        get(r#"threadkeeper_tokens_total{kind="prompt"}"#),
        usage["prompt_tokens"].as_f64().unwrap()
    );
    // No id ever becomes a label value.
    assert!(!page.text.lines().any(looks_like_uuid), "{}", page.text);
}

#[tokio::test]
async fn one_request_id_is_on_every_log_line_of_a_turn() {
    let app = spawn_app_with(Opts::default().args(&["--log-format", "json"])).await;
    let id = app.new_thread_id(&json!({})).await;
    let resp = app
        .turn_with(
            &id,
            r#"{"input":"trace me"}"#,
            &[("x-request-id", "req-ops-42")],
        )
        .await;
    let turn = resp.expect(200);
    assert_eq!(resp.header("x-request-id").as_deref(), Some("req-ops-42"));
    let turn_id = turn["id"].as_str().unwrap().to_owned();
    // A request without an id gets a generated one, echoed back.
    let other = app.get(&format!("/v1/threads/{id}")).await;
    assert!(other.header("x-request-id").is_some_and(|v| v.len() >= 32));

    let lines: Vec<Value> = app
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    assert!(!lines.is_empty(), "no JSON log lines:\n{}", app.logs());
    let of_turn: Vec<&Value> = lines
        .iter()
        .filter(|l| l.to_string().contains(&turn_id) || l.to_string().contains("req-ops-42"))
        .collect();
    let messages: Vec<&str> = of_turn
        .iter()
        .filter_map(|l| l["message"].as_str())
        .collect();
    for expected in ["turn completed", "finished processing request"] {
        assert!(
            messages.contains(&expected),
            "no `{expected}` line in {messages:?}"
        );
    }
    for line in &of_turn {
        let text = line.to_string();
        assert!(
            text.contains("req-ops-42"),
            "a line of the turn without its request id: {text}"
        );
    }
    // The last line says where the turn's time went.
    let completed = of_turn
        .iter()
        .find(|l| l["message"] == "turn completed")
        .unwrap();
    for stage in [
        "store_input_us",
        "context_us",
        "upstream_us",
        "store_reply_us",
    ] {
        assert!(completed[stage].is_u64(), "no {stage} on {completed}");
    }
    // `turn started` is a debug line: at info a turn logs two lines, its end and the request's.
    assert!(
        !messages.contains(&"turn started"),
        "a debug line at info: {messages:?}"
    );
    // Both name the thread and the turn (recorded on the request's span).
    for line in of_turn.iter().filter(|l| {
        l["message"] == "turn completed" || l["message"] == "finished processing request"
    }) {
        assert!(
            line["span"]["thread_id"] == id.as_str() && line["span"]["turn_id"] == turn_id.as_str(),
            "turn line without ids: {line}"
        );
    }

    // A streaming turn (its own task) names its turn too; an idempotent repeat names the
    // turn it replays; a refused request names no turn at all.
    let streamed = app
        .turn_with(
            &id,
            r#"{"input":"stream me","stream":true}"#,
            &[("x-request-id", "req-ops-stream")],
        )
        .await;
    assert_eq!(streamed.status, 200, "{streamed:?}");
    let keyed = r#"{"input":"once"}"#;
    let first = app
        .turn_with(&id, keyed, &[("Idempotency-Key", "ops-key")])
        .await
        .expect(200);
    app.turn_with(
        &id,
        keyed,
        &[
            ("Idempotency-Key", "ops-key"),
            ("x-request-id", "req-ops-repeat"),
        ],
    )
    .await
    .expect(200);
    let missing = "01a22629-bbf7-7381-8d57-81d2567d2e15";
    app.turn_with(
        missing,
        r#"{"input":"nobody"}"#,
        &[("x-request-id", "req-ops-404")],
    )
    .await
    .expect_error(404, "not_found");
    let turns = app
        .get(&format!("/v1/threads/{id}/turns"))
        .await
        .expect(200);
    let turn_ids: Vec<&str> = turns["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    let lines: Vec<Value> = app
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    let of_request = |request_id: &str| -> Vec<Value> {
        lines
            .iter()
            .filter(|l| l["span"]["request_id"] == request_id)
            .cloned()
            .collect()
    };
    let stream_lines = of_request("req-ops-stream");
    let streamed_turn = stream_lines
        .iter()
        .find(|l| l["message"] == "turn completed")
        .unwrap_or_else(|| panic!("no turn completed line for the stream: {stream_lines:?}"));
    let streamed_id = streamed_turn["span"]["turn_id"]
        .as_str()
        .unwrap_or_default();
    assert!(turn_ids.contains(&streamed_id), "{streamed_turn}");
    assert_eq!(streamed_turn["span"]["thread_id"], id.as_str());
    let repeat = of_request("req-ops-repeat");
    assert!(
        repeat
            .iter()
            .any(|l| l["message"] == "idempotent repeat: replaying the stored turn"),
        "{repeat:?}"
    );
    for line in &repeat {
        assert_eq!(line["span"]["turn_id"], first["id"], "{line}");
    }
    let refused = of_request("req-ops-404");
    assert!(!refused.is_empty(), "no line for the refused request");
    for line in &refused {
        assert!(line["span"].get("turn_id").is_none(), "{line}");
    }
}

// A log filter that leaves the request's span out (it is `threadkeeper::http`'s) still gets
// the turn's ids on the turn's lines, from a span of the turn's own.
#[tokio::test]
async fn a_filter_without_the_request_span_keeps_the_ids_on_a_turn() {
    let app = spawn_app_with(
        Opts::default()
            .rust_log("warn,threadkeeper::turns=info,threadkeeper::cli=info")
            .args(&["--log-format", "json"]),
    )
    .await;
    let id = app.new_thread_id(&json!({})).await;
    let turn = app.turn_ok(&id, &json!({"input": "hello"})).await;
    let logs = app.logs();
    let completed: Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "turn completed")
        .unwrap_or_else(|| panic!("no turn completed line:\n{logs}"));
    assert_eq!(completed["span"]["name"], "turn", "{completed}");
    assert_eq!(completed["span"]["thread_id"], id.as_str(), "{completed}");
    assert_eq!(completed["span"]["turn_id"], turn["id"], "{completed}");
}

/// Starts a turn whose upstream answers after 1.5 s, waits until the model is called, then
/// lets the turn's lease lapse behind its back (as if its process had stalled past it).
/// Returns the running turn and the index of its request among the fake's.
async fn turn_with_lapsed_lease(app: &App, id: &str) -> (tokio::task::JoinHandle<Resp>, usize) {
    let sent = app.fake.requests().len();
    let running = tokio::spawn({
        let api = app.api.clone();
        let id = id.to_owned();
        async move { api.turn(&id, &json!({"input": "slow"})).await }
    });
    wait_for_requests(&app.fake, sent + 1).await;
    app.lapse_lease(id);
    (running, sent)
}

/// The stalled turn's answer: 409 `turn_interrupted`, its reply not added, its paid exchange
/// in the interrupted turn's audit record (its request read back as the fake received it,
/// request number `sent`). Returns the turn id.
async fn assert_taken_over(app: &App, id: &str, resp: &Resp, sent: usize) -> String {
    let error = resp.expect_error(409, "turn_interrupted");
    assert_eq!(error["type"], "conflict_error", "{resp:?}");
    let turn_id = error["turn_id"].as_str().unwrap().to_owned();
    let turn = app.api.turn_detail(id, &turn_id).await.expect(200);
    assert_eq!(turn["status"], "interrupted", "{turn}");
    assert!(turn["output_message_id"].is_null(), "{turn}");
    // What the paid call cost stays on the turn (the thread's totals count completed turns).
    assert!(
        turn["usage"]["total_tokens"].as_u64().unwrap() > 0,
        "{turn}"
    );
    assert!(turn["generation_id"].as_str().is_some(), "{turn}");
    let upstream = &turn["upstream"];
    assert_eq!(upstream["attempts"], 1, "{turn}");
    assert_eq!(upstream["status"], 200, "{turn}");
    assert_eq!(
        upstream["request"],
        app.fake.requests()[sent].json(),
        "{turn}"
    );
    assert!(
        upstream["response"]["choices"][0]["message"].is_object(),
        "{turn}"
    );
    turn_id
}

// A turn whose lease lapsed while the model worked, and that another turn took over (marking it
// interrupted), is answered 409 `turn_interrupted`: its reply is not added to the thread, its
// paid exchange is kept in its audit record, and its last log line has the stage timings.
#[tokio::test]
async fn a_turn_taken_over_while_the_model_worked_keeps_its_exchange_and_answers_409() {
    let app = spawn_app_with(
        Opts::default()
            .args(&["--log-format", "json"])
            .fake_delay(std::time::Duration::from_millis(1_500)),
    )
    .await;
    let id = app.new_thread_id(&json!({})).await;
    // A turn before it, long enough that the stalled turn's request is stored as a
    // difference from that one's.
    app.turn_ok(&id, &json!({"input": "first ".repeat(100)}))
        .await;
    let (stalled, sent) = turn_with_lapsed_lease(&app, &id).await;
    // The taker: an idempotent request goes to the database (the lease) rather than being
    // answered busy from this process's memory, as a request to another process would.
    let taker = tokio::spawn({
        let api = app.api.clone();
        let id = id.clone();
        async move {
            let body = json!({"input": "taking over"}).to_string();
            api.turn_with(&id, &body, &[("Idempotency-Key", "takeover")])
                .await
        }
    });
    wait_for_requests(&app.fake, 3).await;
    let resp = stalled.await.unwrap();
    let turn_id = assert_taken_over(&app, &id, &resp, sent).await;
    let db = rusqlite::Connection::open(app.db_path()).unwrap();
    let base: Option<String> = db
        .query_row(
            "SELECT upstream_request_base FROM turns WHERE id = ?",
            [&turn_id],
            |r| r.get(0),
        )
        .unwrap();
    assert!(base.is_some(), "stored whole, not as a difference");
    drop(db);
    taker.await.unwrap().expect(200);

    // The taker's context: the inputs, the first turn's reply, no trace of the lost one.
    let context = app.fake.requests()[2].json();
    let roles: Vec<&str> = context["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "user"], "{context}");
    let failed: Vec<Value> = app
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("turn failed") && m.contains("lease lapsed"))
        })
        .collect();
    assert_eq!(failed.len(), 1, "{}", app.logs());
    for stage in [
        "store_input_us",
        "context_us",
        "upstream_us",
        "store_reply_us",
    ] {
        assert!(failed[0][stage].is_u64(), "no {stage} on {}", failed[0]);
    }
    assert!(failed[0]["upstream_us"].as_u64().unwrap() >= 1_000_000);
    // The line names the model the stalled turn called.
    assert_eq!(
        failed[0]["model"],
        app.fake.requests()[sent].json()["model"],
        "{}",
        failed[0]
    );
    let m = series(&app.api.get("/metrics").await.text);
    assert_eq!(
        m.get(r#"threadkeeper_turns_total{status="interrupted"}"#),
        Some(&1.0)
    );
    assert_eq!(
        m.get(r#"threadkeeper_turns_total{status="completed"}"#),
        Some(&2.0)
    );
    assert_eq!(m.get(r#"threadkeeper_turns_total{status="failed"}"#), None);
}

// A turn whose model call fails after another turn took it over is answered what happened to
// it (409 `turn_interrupted`), not the upstream's error: it is interrupted, not failed, and the
// failed exchange stays in its audit record.
#[tokio::test]
async fn an_upstream_error_on_a_turn_taken_over_meanwhile_answers_409_and_keeps_the_exchange() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    let refusal = r#"{"error":{"message":"Provider returned error","code":400}}"#;
    app.fake
        .push(Reply::raw(400, refusal).with_delay(std::time::Duration::from_millis(1_500)));
    let (stalled, _) = turn_with_lapsed_lease(&app, &id).await;
    let taker = app
        .api
        .turn_with(
            &id,
            &json!({"input": "taking over"}).to_string(),
            &[("Idempotency-Key", "takeover")],
        )
        .await;
    taker.expect(200);
    let resp = stalled.await.unwrap();
    let error = resp.expect_error(409, "turn_interrupted");
    let turn_id = error["turn_id"].as_str().unwrap();
    let turn = app.api.turn_detail(&id, turn_id).await.expect(200);
    assert_eq!(turn["status"], "interrupted", "{turn}");
    assert_eq!(turn["upstream"]["status"], 400, "{turn}");
    assert_eq!(turn["upstream"]["attempts"], 1, "{turn}");
    assert_eq!(
        turn["upstream"]["response"],
        json!(serde_json::from_str::<Value>(refusal).unwrap()),
        "{turn}"
    );
    let m = series(&app.api.get("/metrics").await.text);
    assert_eq!(m.get(r#"threadkeeper_turns_total{status="failed"}"#), None);
    assert_eq!(
        m.get(r#"threadkeeper_turns_total{status="interrupted"}"#),
        Some(&1.0)
    );
    // The thread holds the inputs and the taker's reply only.
    let roles: Vec<Value> = app
        .api
        .messages(&id)
        .await
        .iter()
        .map(|m| m["role"].clone())
        .collect();
    assert_eq!(roles, [json!("user"), json!("user"), json!("assistant")]);
}

// Messages appended once a running turn's lease lapsed end that turn: its reply never lands
// after messages its context did not contain.
#[tokio::test]
async fn messages_appended_after_a_turns_lease_lapsed_interrupt_it() {
    let app =
        spawn_app_with(Opts::default().fake_delay(std::time::Duration::from_millis(1_500))).await;
    let id = app.new_thread_id(&json!({})).await;
    let (stalled, sent) = turn_with_lapsed_lease(&app, &id).await;
    app.api
        .post(
            &format!("/v1/threads/{id}/messages"),
            &json!({"messages": [{"role": "user", "content": "meanwhile"}]}),
        )
        .await
        .expect(201);
    let resp = stalled.await.unwrap();
    assert_taken_over(&app, &id, &resp, sent).await;
    let contents: Vec<Value> = app
        .api
        .messages(&id)
        .await
        .iter()
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(contents, [json!("slow"), json!("meanwhile")]);
    // The thread is free at once.
    app.api
        .turn(&id, &json!({"input": "next"}))
        .await
        .expect(200);
}

// A thread deleted while its turn ran (possible once the turn's lease lapsed) answers the
// turn 404, not 500.
#[tokio::test]
async fn a_turn_whose_thread_was_deleted_while_the_model_worked_answers_404() {
    let app =
        spawn_app_with(Opts::default().fake_delay(std::time::Duration::from_millis(1_500))).await;
    let id = app.new_thread_id(&json!({})).await;
    let running = tokio::spawn({
        let api = app.api.clone();
        let id = id.clone();
        async move { api.turn(&id, &json!({"input": "slow"})).await }
    });
    wait_for_requests(&app.fake, 1).await;
    let db = rusqlite::Connection::open(app.db_path()).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    db.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    assert_eq!(
        db.execute("DELETE FROM threads WHERE id = ?", [&id])
            .unwrap(),
        1
    );
    drop(db);
    let resp = running.await.unwrap();
    resp.expect_error(404, "not_found");
    app.api
        .get(&format!("/v1/threads/{id}"))
        .await
        .expect_error(404, "not_found");
    // Counted as what happened to it: taken over, not failed.
    let m = series(&app.api.get("/metrics").await.text);
    assert_eq!(
        m.get(r#"threadkeeper_turns_total{status="interrupted"}"#),
        Some(&1.0)
    );
    assert_eq!(m.get(r#"threadkeeper_turns_total{status="failed"}"#), None);
}

#[tokio::test]
async fn export_import_export_is_byte_identical() {
    let app = spawn_app().await;
    let exotic = "[ {\"type\":\"reasoning.text\",\"text\":\"line\\nbreak \\ud83d\\ude00\",\"n\":1.50e3,\"z\":-0.0,\n\"format\":\"unknown\",\"index\":0} ]";
    let body = format!(
        r#"{{"system":"multi\nline","metadata":{{"k":"v"}},"params":{{"temperature":0.25}},"messages":[{{"role":"user","content":"q"}},{{"role":"assistant","content":"a","model":"m/x","reasoning":"r\u00e9","reasoning_details":{exotic}}}]}}"#
    );
    let thread = app
        .send_text(reqwest::Method::POST, "/v1/threads", &body)
        .await
        .expect(201);
    let id = thread["id"].as_str().unwrap().to_owned();
    app.turn_ok(&id, &json!({"input": "plain"})).await;
    app.turn(&id, &json!({"input": "streamed", "stream": true}))
        .await;
    app.fake.push(Reply::raw(500, "upstream exploded\n"));
    app.fake.push(Reply::raw(500, "upstream exploded\n"));
    app.fake.push(Reply::raw(500, "upstream exploded\n"));
    app.turn(&id, &json!({"input": "fails"}))
        .await
        .expect_error(502, "upstream_error");

    let http = app.get(&format!("/v1/threads/{id}/export")).await;
    assert_eq!(http.status, 200);
    assert_eq!(
        http.header("content-type").as_deref(),
        Some("application/x-ndjson")
    );
    let lines: Vec<Value> = http
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["object"], "thread");
    assert_eq!(
        lines.iter().filter(|l| l["object"] == "message").count(),
        2 + 2 + 1 + 1 + 1
    );
    assert_eq!(lines.iter().filter(|l| l["object"] == "turn").count(), 3);
    assert_eq!(
        lines[2]["reasoning_details_raw"], exotic,
        "raw bytes carried as a string"
    );

    let db = app.db_url.clone();
    let out = run_cli(&["export", "--thread", &id, "--database-url", &db]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        http.text,
        "CLI and HTTP exports differ"
    );

    let other = tempfile::tempdir().unwrap();
    let file = other.path().join("thread.ndjson");
    std::fs::write(&file, &http.text).unwrap();
    let other_db = db_url_in(other.path());
    let out = run_cli(&[
        "import",
        file.to_str().unwrap(),
        "--database-url",
        &other_db,
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "commands keep stdout for output");
    let out = run_cli(&["export", "--thread", &id, "--database-url", &other_db]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        http.text,
        "export -> import -> export changed bytes"
    );

    // Importing twice is refused and changes nothing.
    let out = run_cli(&[
        "import",
        file.to_str().unwrap(),
        "--database-url",
        &other_db,
    ]);
    assert!(!out.status.success());
    // A damaged file is refused with the line named.
    let damaged = other.path().join("damaged.ndjson");
    std::fs::write(
        &damaged,
        http.text
            .replacen("\"object\":\"message\"", "\"object\":\"mystery\"", 1),
    )
    .unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let out = run_cli(&[
        "import",
        damaged.to_str().unwrap(),
        "--database-url",
        &db_url_in(fresh.path()),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 2"),
        "{out:?}"
    );
}

// Commands that read or change a database refuse a path that names none (a typo would
// otherwise create, migrate and answer from an empty database), and a failing command says
// why even when the log filter lets nothing through.
#[tokio::test]
async fn commands_refuse_a_missing_database_and_always_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}", dir.path().join("typo.db").display());
    let thread = "01a22629-bbf7-7381-8d57-81d2567d2e15";
    for args in [
        vec!["export", "--thread", thread, "--database-url", &missing],
        vec!["keys", "list", "--database-url", &missing],
        vec!["keys", "revoke", thread, "--database-url", &missing],
    ] {
        for log in ["warn", "off"] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_threadkeeper"))
                .args(&args)
                .env("RUST_LOG", log)
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("no database at"),
                "{args:?} {log}: {stderr}"
            );
            assert!(out.stdout.is_empty(), "{args:?}");
        }
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "a file was created"
    );

    let db = db_url_in(dir.path());
    let file = dir.path().join("thread.ndjson");
    std::fs::write(&file, "{}\n").unwrap();
    let out = run_cli(&[
        "import",
        file.to_str().unwrap(),
        "--tenant",
        " ",
        "--database-url",
        &db,
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tenant must not be empty"),
        "{out:?}"
    );
}

// A key that `keys create` could not write to stdout is nobody's: it is not kept (a kept one
// would also end open mode for good), and the command fails saying so.
#[tokio::test]
async fn a_key_that_could_not_be_shown_is_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_url_in(dir.path());
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_threadkeeper"))
        .args(["keys", "create", "--name", "ci", "--database-url", &db])
        .env("RUST_LOG", "warn")
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("it was not kept"),
        "{out:?}"
    );
    let list = run_cli(&["keys", "list", "--database-url", &db]);
    assert!(list.status.success(), "{list:?}");
    assert_eq!(
        String::from_utf8_lossy(&list.stdout).lines().count(),
        1,
        "only the header: {list:?}"
    );
}

// A turn exported while it ran is restored as interrupted: nothing runs it where it is
// restored, and a reply its process may still store elsewhere never lands here.
#[tokio::test]
async fn a_turn_exported_while_running_is_imported_interrupted() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    let turn_id = id_of(&app.turn_ok(&id, &json!({"input": "hi"})).await);
    let export = app.api.get(&format!("/v1/threads/{id}/export")).await;
    // The turn's line as a running turn's reads: no end, no reply.
    let text: String = export
        .text
        .lines()
        .map(|line| {
            let mut object: Value = serde_json::from_str(line).unwrap();
            if object["object"] == "turn" {
                object["status"] = json!("in_progress");
                object["completed_at"] = Value::Null;
                object["output_message_id"] = Value::Null;
            }
            format!("{object}\n")
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("thread.ndjson");
    std::fs::write(&file, &text).unwrap();
    let out = run_cli(&[
        "import",
        file.to_str().unwrap(),
        "--database-url",
        &db_url_in(dir.path()),
    ]);
    assert!(out.status.success(), "{out:?}");
    let db = rusqlite::Connection::open(dir.path().join("test.db")).unwrap();
    let (status, code, completed): (String, String, Option<String>) = db
        .query_row(
            "SELECT status, json_extract(error, '$.code'), completed_at FROM turns WHERE id = ?",
            [&turn_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (status.as_str(), code.as_str()),
        ("interrupted", "interrupted")
    );
    assert!(completed.is_some());
}
