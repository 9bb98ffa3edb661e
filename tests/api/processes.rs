//! Processes and durability: one turn at a time per thread (also across processes sharing a
//! database), SIGKILL and restart, the `migrate` command, health endpoints.

use std::process::Command;
use std::time::Duration;

use fake_openrouter::Reply;
use serde_json::json;

use crate::helpers::*;

const SLOW: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_turn_on_a_busy_thread_is_409_and_stores_nothing() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    let other = app.new_thread_id(&json!({})).await;
    app.fake.push(Reply::generated().with_delay(SLOW));
    let api = app.api.clone();
    let thread = id.clone();
    let slow = tokio::spawn(async move { api.turn(&thread, &json!({"input": "slow one"})).await });
    wait_for_requests(&app.fake, 1).await;

    app.turn(&id, &json!({"input": "second"}))
        .await
        .expect_error(409, "thread_busy");
    app.turn(&id, &json!({}))
        .await
        .expect_error(409, "thread_busy");
    app.post(
        &format!("/v1/threads/{id}/messages"),
        &json!({"messages": [{"role": "user", "content": "sneaky"}]}),
    )
    .await
    .expect_error(409, "thread_busy");
    app.delete(&format!("/v1/threads/{id}"))
        .await
        .expect_error(409, "thread_busy");
    // Reads still work, and show the turn in progress with its stored input.
    let turns = app.turns(&id).await;
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0]["status"], "in_progress");
    assert!(turns[0].get("completed_at").is_none());
    assert_eq!(app.messages(&id).await.len(), 1);
    // Other threads are not blocked.
    app.turn_ok(&other, &json!({"input": "meanwhile"})).await;

    let first = slow.await.unwrap().expect(200);
    assert_eq!(first["status"], "completed");
    let contents: Vec<String> = app
        .messages(&id)
        .await
        .iter()
        .map(|m| m["content"].to_string())
        .collect();
    assert_eq!(contents.len(), 2, "{contents:?}");
    assert!(!contents
        .iter()
        .any(|c| c.contains("second") || c.contains("sneaky")));
    // Free again.
    app.turn_ok(&id, &json!({"input": "third"})).await;
    let requests = app.fake.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests
        .iter()
        .all(|r| !r.body.contains("second") && !r.body.contains("sneaky")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_busy_holds_across_two_processes_on_one_database() {
    let app = spawn_app().await;
    let peer = app.spawn_peer();
    let peer_api = peer.api();
    let id = app.new_thread_id(&json!({})).await;
    app.fake.push(Reply::generated().with_delay(SLOW));
    let api = app.api.clone();
    let thread = id.clone();
    let slow =
        tokio::spawn(async move { api.turn(&thread, &json!({"input": "in process A"})).await });
    wait_for_requests(&app.fake, 1).await;

    peer_api
        .turn(&id, &json!({"input": "in process B"}))
        .await
        .expect_error(409, "thread_busy");
    peer_api
        .post(
            &format!("/v1/threads/{id}/messages"),
            &json!({"messages": [{"role": "user", "content": "x"}]}),
        )
        .await
        .expect_error(409, "thread_busy");
    peer_api
        .delete(&format!("/v1/threads/{id}"))
        .await
        .expect_error(409, "thread_busy");
    assert_eq!(peer_api.turns(&id).await[0]["status"], "in_progress");

    let first = slow.await.unwrap().expect(200);
    // Process B sees A's reply and continues the thread.
    let second = peer_api.turn_ok(&id, &json!({"input": "now B"})).await;
    let sent = app.fake.requests()[1].json();
    assert_eq!(sent["messages"][1]["content"], first["output"]["content"]);
    assert_eq!(second["output"]["seq"], 4);

    // Turns on different threads in both processes at once both complete.
    let x = app.new_thread_id(&json!({})).await;
    let y = peer_api.new_thread_id(&json!({})).await;
    app.fake
        .push(Reply::generated().with_delay(Duration::from_millis(500)));
    app.fake
        .push(Reply::generated().with_delay(Duration::from_millis(500)));
    let (body_x, body_y) = (json!({"input": "x"}), json!({"input": "y"}));
    let (rx, ry) = tokio::join!(app.turn(&x, &body_x), peer_api.turn(&y, &body_y));
    rx.expect(200);
    ry.expect(200);
    assert_eq!(app.thread(&y).await["message_count"], 2);
    assert_eq!(peer_api.thread(&x).await["message_count"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_sigkill_and_restart() {
    let mut app =
        spawn_app_with(Opts::default().strict().args(&["--upstream-attempts", "1"])).await;
    let tools = json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]);
    let a = app
        .new_thread_id(&json!({
            "metadata": {"k": "v"},
            "system": "sys",
            "params": {"tools": tools},
            "messages": [{"role": "user", "content": "imported"}]
        }))
        .await;
    let t1 = app.turn_ok(&a, &json!({"input": "look it up"})).await;
    let call_id = t1["output"]["tool_calls"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.turn_ok(
        &a,
        &json!({"input": {"role": "tool", "tool_call_id": call_id, "content": "found"}}),
    )
    .await;
    let b = app.new_thread_id(&json!({})).await;
    app.fake.push(Reply::raw(
        400,
        r#"{"error":{"message":"nope","code":400}}"#,
    ));
    app.turn(&b, &json!({"input": "fails"}))
        .await
        .expect_error(502, "upstream_error");
    let assistant = t1["output_message_id"].as_str().unwrap().to_owned();
    let details_path = format!("/v1/threads/{a}/messages/{assistant}/reasoning_details");
    let details_before = app.get(&details_path).await;
    assert_eq!(details_before.status, 200);
    let before = app.snapshot().await;

    app.restart();

    assert_eq!(
        app.snapshot().await,
        before,
        "state after SIGKILL + restart"
    );
    let details_after = app.get(&details_path).await;
    assert_eq!(details_after.text, details_before.text);
    assert_eq!(
        details_after.header("repr-digest"),
        details_before.header("repr-digest")
    );

    // The conversation continues where it was: the strict fake accepts the replayed bytes.
    let t3 = app
        .turn_ok(&a, &json!({"input": "and after the restart?"}))
        .await;
    assert_eq!(t3["output"]["seq"], 7);
    let last = app.fake.requests().last().unwrap().clone();
    assert_eq!(last.reply_status, 200);
    let stored = raw_fields(
        &app.get(&format!("/v1/threads/{a}/messages/{assistant}"))
            .await
            .text,
    );
    let replayed = sent_messages(&last.body)
        .iter()
        .map(|m| raw_fields(m))
        .find(|m| m.get("tool_calls").is_some())
        .unwrap();
    assert_eq!(replayed["reasoning_details"], stored["reasoning_details"]);
    app.turn_ok(&b, &json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_killed_mid_call_keeps_its_stored_input_reads_interrupted_and_frees_the_thread() {
    let mut app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    app.fake.push(Reply::hang());
    let api = app.api.clone();
    let thread = id.clone();
    let pending = tokio::spawn(async move {
        let _ = api
            .http
            .post(format!("{}/v1/threads/{thread}/turns", api.base))
            .json(&json!({"input": "lost in flight?"}))
            .send()
            .await;
    });
    wait_for_requests(&app.fake, 1).await;
    app.restart();
    pending.abort();

    let messages = app.messages(&id).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["content"], "lost in flight?");
    let turns = app.turns(&id).await;
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0]["status"], "interrupted", "{}", turns[0]);
    assert_eq!(turns[0]["error"]["code"], "interrupted", "{}", turns[0]);
    assert_timestamp(&turns[0]["completed_at"]);
    assert!(turns[0].get("output_message_id").is_none());
    assert_eq!(turns[0]["input_message_ids"][0], messages[0]["id"]);

    // The thread takes a new turn at once (no waiting for a lease to expire), and the
    // stored input goes upstream once.
    let started = std::time::Instant::now();
    let retry = app.turn_ok(&id, &json!({})).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(retry["input_message_ids"], json!([]));
    let sent = app.fake.requests().last().unwrap().json();
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "lost in flight?"}])
    );
    assert_eq!(app.messages(&id).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_command_prepares_a_database_and_serve_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = db_url_in(dir.path());
    for _ in 0..2 {
        // Twice: migrations are idempotent.
        let out = Command::new(env!("CARGO_BIN_EXE_threadkeeper"))
            .args(["migrate", "--database-url", &db_url])
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout.is_empty(),
            "logs go to stderr: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert!(dir.path().join("test.db").exists());
    let fake = fake_openrouter::FakeUpstream::start(Default::default())
        .await
        .unwrap();
    let service = Service::start(&db_url, &fake.base_url(), &Opts::default());
    let api = service.api();
    api.get("/healthz").await.expect(200);
    api.get("/readyz").await.expect(200);
    let id = api.new_thread_id(&json!({})).await;
    api.turn_ok(&id, &json!({"input": "hi"})).await;
}

#[test]
fn an_in_memory_database_is_refused_with_a_message() {
    // Its reader connections would each see their own empty database.
    for command in ["migrate", "serve"] {
        let out = run_cli(&[command, "--database-url", "sqlite::memory:"]);
        assert!(!out.status.success(), "{command}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("in-memory database is not supported"),
            "{command}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_stop_serve_with_a_message() {
    for (flag, value) in [
        ("--upstream-timeout", "soon"),
        // Far enough ahead, a deadline would overflow (a panic in every turn, or at SIGTERM).
        ("--upstream-timeout", "10000000000000000000s"),
        ("--shutdown-grace", "10000000000000000000s"),
        ("--max-body", "lots"),
        ("--default-reasoning", "[1]"),
        ("--upstream-attempts", "0"),
        ("--context-cache", "plenty"),
        ("--upstream-url", "openrouter.ai/api/v1"),
        ("--upstream-url", "ftp://openrouter.ai/api/v1"),
        ("--upstream-url", "https://openrouter.ai/api/v1?x=1"),
    ] {
        let stderr = serve_refusing(&[flag, value]).await;
        assert!(
            stderr.contains(flag.trim_start_matches('-')),
            "{flag}: {stderr}"
        );
    }
}

// Process A stalls past its turn's lease (the lease is made to lapse behind its back) and
// process B takes the thread over with a turn of its own: A's streaming turn ends with
// `turn.failed` `turn_interrupted`, B's completes, and the thread holds no reply of A's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_takes_over_a_stalled_streaming_turn_which_ends_turn_interrupted() {
    let app = spawn_app().await;
    let peer = app.spawn_peer();
    let peer_api = peer.api();
    let id = app.new_thread_id(&json!({})).await;
    app.fake.push(Reply::generated().with_delay(SLOW));
    let api = app.api.clone();
    let thread = id.clone();
    let stalled = tokio::spawn(async move {
        api.stream_turn(&thread, &json!({"input": "in process A"}))
            .await
    });
    wait_for_requests(&app.fake, 1).await;
    app.lapse_lease(&id);

    peer_api
        .turn_ok(&id, &json!({"input": "in process B"}))
        .await;
    let streamed = stalled.await.unwrap();
    streamed.assert_well_formed();
    let failed = streamed.failed();
    assert_eq!(failed["error"]["code"], "turn_interrupted", "{failed}");
    assert_eq!(failed["error"]["turn_id"], failed["turn_id"], "{failed}");
    let turn = peer_api
        .turn_detail(&id, failed["turn_id"].as_str().unwrap())
        .await
        .expect(200);
    assert_eq!(turn["status"], "interrupted", "{turn}");
    // The stream's transcript is kept, whole.
    let transcript = turn["upstream"]["response"].as_str().unwrap_or_default();
    assert!(transcript.trim_end().ends_with("data: [DONE]"), "{turn}");
    let roles: Vec<String> = peer_api
        .messages(&id)
        .await
        .iter()
        .map(|m| m["role"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(roles, ["user", "user", "assistant"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_no_header_can_carry_stops_serve_without_showing_it() {
    let key = "sk-or-secret\nsecond-line";
    let stderr = serve_refusing_with_env(&[], &[("OPENROUTER_API_KEY", key)]).await;
    assert!(stderr.contains("OPENROUTER_API_KEY"), "{stderr}");
    assert!(!stderr.contains("sk-or-secret"), "{stderr}");
}

// A key read from a file often ends with a line break: it is sent without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_with_surrounding_whitespace_is_sent_trimmed() {
    let app = spawn_app_with(Opts {
        api_key: Some(format!("  {TEST_KEY}\r\n")),
        ..Opts::default()
    })
    .await;
    let id = app.new_thread_id(&json!({})).await;
    app.turn_ok(&id, &json!({"input": "hi"})).await;
    let sent = app.fake.requests();
    assert_eq!(
        sent[0].authorization.as_deref(),
        Some(format!("Bearer {TEST_KEY}").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_gives_up_does_not_lose_the_turn() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    app.fake
        .push(Reply::generated().with_delay(Duration::from_millis(1500)));
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let gave_up = impatient
        .post(format!("{}/v1/threads/{id}/turns", app.base))
        .json(&json!({"input": "are you still there?"}))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client was meant to time out");
    // The turn runs to its end without the client.
    let mut status = String::new();
    for _ in 0..100 {
        let turns = app.turns(&id).await;
        status = turns[0]["status"].as_str().unwrap().to_owned();
        if status != "in_progress" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "completed");
    let messages = app.messages(&id).await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1]["role"], "assistant");
}

/// A client that lost its connection when the service died retries with the same
/// `Idempotency-Key` against another live process on the database: the first turn is dead
/// (its process is gone), so the retry runs the model again on the stored input instead of
/// answering `thread_busy` until some process restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_retry_after_the_process_running_the_turn_died_runs_it_again() {
    let mut app = spawn_app().await;
    let peer = app.spawn_peer();
    let peer_api = peer.api();
    let id = app.new_thread_id(&json!({})).await;
    app.fake.push(Reply::hang());
    let body = r#"{"input":"worth retrying"}"#;
    let api = app.api.clone();
    let thread = id.clone();
    let pending = tokio::spawn(async move {
        let _ = api
            .turn_with(&thread, body, &[("Idempotency-Key", "retry-after-crash")])
            .await;
    });
    wait_for_requests(&app.fake, 1).await;
    app.service.kill();
    pending.abort();

    let retry = peer_api
        .turn_with(&id, body, &[("Idempotency-Key", "retry-after-crash")])
        .await
        .expect(200);
    assert_eq!(retry["status"], "completed");
    let turns = peer_api.turns(&id).await;
    assert_eq!(turns.len(), 2);
    assert_eq!(turns[0]["status"], "interrupted", "{}", turns[0]);
    assert_eq!(retry["input_message_ids"], turns[0]["input_message_ids"]);
    let messages = peer_api.messages(&id).await;
    assert_eq!(messages.len(), 2, "the input is not stored twice");
    assert_eq!(messages[0]["content"], "worth retrying");
    let sent = app.fake.requests().last().unwrap().json();
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "worth retrying"}])
    );

    // The key now names the completed turn: a third try replays it.
    let again = peer_api
        .turn_with(&id, body, &[("Idempotency-Key", "retry-after-crash")])
        .await;
    assert_eq!(again.json()["id"], retry["id"]);
    assert_eq!(app.fake.requests().len(), 2);
}

// Two processes writing one database at once, each batching its writes and gathering its
// log writes (src/storage/gathered_wal.rs), SQLite's write lock passing between them all the
// time: every turn of both is stored, each thread reads whole from the other process, and
// the file is intact. (An end-to-end check; the ordering the gathered writes rely on is
// tested deterministically in that module's own tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_writing_at_once_lose_nothing() {
    const THREADS: usize = 8;
    const TURNS: usize = 6;
    let app = spawn_app().await;
    let peer = app.spawn_peer();
    let apis = [app.api.clone(), peer.api()];
    let mut threads = Vec::new();
    for i in 0..THREADS {
        threads.push(apis[i % 2].new_thread_id(&json!({})).await);
    }
    let mut clients = tokio::task::JoinSet::new();
    for (i, thread) in threads.iter().enumerate() {
        let api = apis[i % 2].clone();
        let thread = thread.clone();
        clients.spawn(async move {
            for turn in 0..TURNS {
                api.turn_ok(
                    &thread,
                    &json!({"input": format!("turn {turn} of {thread}")}),
                )
                .await;
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    for (i, thread) in threads.iter().enumerate() {
        // Read from the process that did not write it.
        let reader = &apis[(i + 1) % 2];
        assert_eq!(reader.thread(thread).await["message_count"], 2 * TURNS);
        let turns = reader.turns(thread).await;
        assert_eq!(turns.len(), TURNS);
        assert!(
            turns.iter().all(|t| t["status"] == "completed"),
            "{turns:?}"
        );
    }
    drop(peer);
    assert_eq!(sqlite_integrity(&app.db_path()), "ok");
}
