//! Crash safety: SIGKILL the real binary while many turns run (before the upstream answers,
//! while streams flow, right after some completed), restart it on the same file, and check
//! the database is intact, no acknowledged turn is lost or doubled, running turns read
//! `interrupted`, and every thread takes a new turn at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_openrouter::Reply;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::sse_client::{EventParser, Item};

/// What one client saw of its turn before the process died (or not).
#[derive(Debug, Default)]
struct Seen {
    thread: String,
    input: String,
    /// From `turn.started`, or from the completed answer.
    turn_id: Option<String>,
    /// The Turn the client received as completed: acknowledged, so it must survive.
    completed: Option<Value>,
    chunks: usize,
}

/// Live counters the kill moments are chosen by.
#[derive(Default)]
struct Progress {
    completed: AtomicUsize,
    /// Streaming clients that have read at least three chunks.
    deep_streams: AtomicUsize,
}

/// Posts one turn and reads what it can; a dying server ends it without a panic.
async fn client(
    api: Api,
    thread: String,
    input: String,
    stream: bool,
    progress: Arc<Progress>,
) -> Seen {
    let mut seen = Seen {
        thread: thread.clone(),
        input: input.clone(),
        ..Seen::default()
    };
    let body = json!({"input": input, "stream": stream}).to_string();
    let sent = api
        .http
        .post(format!("{}/v1/threads/{thread}/turns", api.base))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    let Ok(mut response) = sent else { return seen };
    if response.status() != 200 {
        panic!("{input}: answered {}", response.status());
    }
    if !stream {
        if let Ok(text) = response.text().await {
            let turn: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(turn["status"], "completed", "{turn}");
            seen.turn_id = Some(id_of(&turn));
            seen.completed = Some(turn);
            progress.completed.fetch_add(1, Ordering::SeqCst);
        }
        return seen;
    }
    let mut parser = EventParser::default();
    while let Ok(Some(bytes)) = response.chunk().await {
        for item in parser.push(&bytes) {
            let Item::Event(event, data) = item else {
                continue;
            };
            let value: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
            match event.as_str() {
                "turn.started" => seen.turn_id = value["turn_id"].as_str().map(str::to_owned),
                "chunk" => {
                    seen.chunks += 1;
                    if seen.chunks == 3 {
                        progress.deep_streams.fetch_add(1, Ordering::SeqCst);
                    }
                }
                "turn.completed" => {
                    seen.completed = Some(value);
                    progress.completed.fetch_add(1, Ordering::SeqCst);
                }
                other => panic!("{input}: unexpected event {other}: {data}"),
            }
        }
    }
    seen
}

/// When to pull the plug.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// Every request has reached the fake, none is answered yet.
    BeforeUpstreamAnswers,
    /// At least this many streams are flowing (three chunks read).
    WhileStreaming(usize),
    /// Right after this many clients received a completed turn.
    AfterCompletions(usize),
}

#[derive(Debug, Default)]
struct Figures {
    sent: usize,
    started: usize,
    completed: usize,
    acknowledged: usize,
    interrupted: usize,
    lost: usize,
    doubled: usize,
}

const THREADS: usize = 20;

async fn crash_round(app: &mut App, moment: Moment) -> Figures {
    app.fake.reset();
    let mut threads = Vec::new();
    for _ in 0..THREADS {
        threads.push(app.new_thread_id(&json!({})).await);
    }
    // Slow answers, so turns are in every phase when the process dies: JSON bodies after
    // 0.6 to 2.4 s, streams of ~12 events 120 ms apart (the fake's default delay).
    for i in 0..THREADS {
        let delay = match moment {
            Moment::BeforeUpstreamAnswers => Duration::from_millis(3000),
            _ => Duration::from_millis(600 + 200 * (i as u64 % 10)),
        };
        app.fake.push(Reply::generated().with_delay(delay));
    }
    let progress = Arc::new(Progress::default());
    let mut clients = Vec::new();
    for (i, thread) in threads.iter().enumerate() {
        let stream = match moment {
            Moment::WhileStreaming(_) => i % 4 != 0,
            _ => i % 2 == 1,
        };
        let task = client(
            app.api.clone(),
            thread.clone(),
            format!("crash input {i}"),
            stream,
            progress.clone(),
        );
        clients.push(tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("client finished")
        }));
    }
    let waited = Instant::now();
    loop {
        let now = match moment {
            Moment::BeforeUpstreamAnswers => app.fake.requests().len() >= THREADS,
            Moment::WhileStreaming(n) => progress.deep_streams.load(Ordering::SeqCst) >= n,
            Moment::AfterCompletions(n) => progress.completed.load(Ordering::SeqCst) >= n,
        };
        if now {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(15),
            "{moment:?} never came"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    app.service.kill();
    // Replies no request took must not slow down the turns after the restart.
    app.fake.reset();
    let mut seen = Vec::new();
    for task in clients {
        seen.push(task.await.unwrap());
    }

    app.restart();
    assert_eq!(sqlite_integrity(&app.db_path()), "ok", "after {moment:?}");
    let mut figures = Figures {
        sent: THREADS,
        ..Figures::default()
    };
    for view in &seen {
        check_thread_after_crash(app, view, &mut figures).await;
    }
    // Every thread takes a new turn at once, on its stored input.
    let mut next = Vec::new();
    for view in &seen {
        let api = app.api.clone();
        let thread = view.thread.clone();
        next.push(tokio::spawn(async move {
            api.turn_ok(&thread, &json!({"input": "after the crash"}))
                .await
        }));
    }
    for (task, view) in next.into_iter().zip(&seen) {
        task.await.unwrap();
        let messages = app.messages(&view.thread).await;
        let inputs = messages
            .iter()
            .filter(|m| m["content"] == view.input.as_str())
            .count();
        assert!(inputs <= 1, "{}: input doubled", view.thread);
        assert_eq!(messages.last().unwrap()["role"], "assistant");
    }
    eprintln!("SIGKILL {moment:?}: {figures:?}");
    figures
}

async fn check_thread_after_crash(app: &App, view: &Seen, figures: &mut Figures) {
    let turns = app.turns(&view.thread).await;
    let messages = app.messages(&view.thread).await;
    let copies = messages
        .iter()
        .filter(|m| m["content"] == view.input.as_str())
        .count();
    if turns.len() > 1 || copies > 1 {
        figures.doubled += 1;
    }
    if view.completed.is_some() {
        figures.acknowledged += 1;
    }
    let Some(turn) = turns.first() else {
        // Never stored: the client must not have heard of it.
        if view.turn_id.is_some() {
            figures.lost += 1;
        }
        assert!(messages.is_empty(), "{messages:?}");
        return;
    };
    figures.started += 1;
    if let Some(id) = &view.turn_id {
        if id != &id_of(turn) {
            figures.lost += 1;
        }
    }
    assert_eq!(messages[0]["content"], view.input.as_str());
    assert_eq!(turn["input_message_ids"][0], messages[0]["id"]);
    match turn["status"].as_str().unwrap() {
        "completed" => {
            figures.completed += 1;
            assert_eq!(messages.len(), 2, "{messages:?}");
            assert_eq!(messages[1], turn["output"]);
            if let Some(acknowledged) = &view.completed {
                // In full: the answer the client got is what is stored.
                if acknowledged != turn || acknowledged["output"] != messages[1] {
                    figures.lost += 1;
                }
            }
        }
        "interrupted" => {
            figures.interrupted += 1;
            if view.completed.is_some() {
                figures.lost += 1;
            }
            assert_eq!(turn["error"]["code"], "interrupted", "{turn}");
            assert!(turn.get("output_message_id").is_none(), "{turn}");
            assert_eq!(messages.len(), 1, "the input stays: {messages:?}");
        }
        other => panic!("after restart a turn reads {other}: {turn}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_any_moment_loses_no_acknowledged_turn_and_interrupts_the_running_ones() {
    let mut app = spawn_app_with(Opts::default().fake_delay(Duration::from_millis(120))).await;
    let mut total = Figures::default();
    for moment in [
        Moment::BeforeUpstreamAnswers,
        Moment::WhileStreaming(5),
        Moment::AfterCompletions(3),
        Moment::AfterCompletions(12),
    ] {
        let f = crash_round(&mut app, moment).await;
        assert_eq!(f.lost, 0, "{moment:?}: {f:?}");
        assert_eq!(f.doubled, 0, "{moment:?}: {f:?}");
        assert_eq!(f.completed + f.interrupted, f.started, "{moment:?}: {f:?}");
        match moment {
            Moment::BeforeUpstreamAnswers => {
                assert_eq!((f.started, f.completed), (THREADS, 0), "{f:?}")
            }
            Moment::WhileStreaming(_) => assert!(f.interrupted >= 5, "{f:?}"),
            Moment::AfterCompletions(n) => assert!(f.acknowledged >= n, "{f:?}"),
        }
        total.sent += f.sent;
        total.started += f.started;
        total.completed += f.completed;
        total.acknowledged += f.acknowledged;
        total.interrupted += f.interrupted;
        total.lost += f.lost;
        total.doubled += f.doubled;
    }
    eprintln!("SIGKILL total: {total:?}");
    assert!(total.interrupted > 0 && total.acknowledged > 0, "{total:?}");
    assert!(!app.logs().contains("panicked"), "{}", app.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_peer_takes_over_a_thread_whose_process_was_killed() {
    let mut app = spawn_app().await;
    let peer = app.spawn_peer();
    let peer_api = peer.api();
    let id = app.new_thread_id(&json!({})).await;
    app.fake.push(Reply::hang());
    let api = app.api.clone();
    let thread = id.clone();
    let pending = tokio::spawn(async move {
        let _ = api
            .http
            .post(format!("{}/v1/threads/{thread}/turns", api.base))
            .json(&json!({"input": "dies with its process"}))
            .send()
            .await;
    });
    wait_for_requests(&app.fake, 1).await;
    // While A lives, B must wait.
    peer_api
        .turn(&id, &json!({"input": "B too early"}))
        .await
        .expect_error(409, "thread_busy");
    app.service.kill();
    pending.await.unwrap();

    // No restart: B's next turn on the thread marks A's turn interrupted and runs at once.
    let started = Instant::now();
    let turn = peer_api.turn_ok(&id, &json!({})).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let turns = peer_api.turns(&id).await;
    assert_eq!(turns.len(), 2);
    assert_eq!(turns[0]["status"], "interrupted", "{}", turns[0]);
    assert_eq!(turns[0]["error"]["code"], "interrupted");
    assert_eq!(turns[1]["id"], turn["id"]);
    let messages = peer_api.messages(&id).await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["content"], "dies with its process");
    let sent = app.fake.requests().last().unwrap().json();
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "dies with its process"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_repeat_of_an_interrupted_turn_runs_it_again_after_restart() {
    let mut app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    app.fake.push(Reply::hang());
    let api = app.api.clone();
    let thread = id.clone();
    let body = r#"{"input":"keyed and killed"}"#;
    let pending = tokio::spawn(async move {
        let _ = api
            .http
            .post(format!("{}/v1/threads/{thread}/turns", api.base))
            .header("content-type", "application/json")
            .header("Idempotency-Key", "crash-key")
            .body(body)
            .send()
            .await;
    });
    wait_for_requests(&app.fake, 1).await;
    app.restart();
    pending.await.unwrap();
    let turns = app.turns(&id).await;
    assert_eq!(turns[0]["status"], "interrupted");

    let rerun = app
        .turn_with(&id, body, &[("Idempotency-Key", "crash-key")])
        .await
        .expect(200);
    assert_eq!(rerun["status"], "completed");
    assert_eq!(rerun["input_message_ids"], turns[0]["input_message_ids"]);
    assert_eq!(app.messages(&id).await.len(), 2, "input not stored twice");
    assert_eq!(app.fake.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_synchronous_normal_is_accepted_and_committed_turns_survive_sigkill() {
    let mut app = spawn_app_with(Opts::default().args(&["--sqlite-synchronous", "normal"])).await;
    let id = app.new_thread_id(&json!({})).await;
    let turn = app.turn_ok(&id, &json!({"input": "fast and loose"})).await;
    app.restart();
    assert_eq!(sqlite_integrity(&app.db_path()), "ok");
    assert_eq!(app.turns(&id).await[0], turn);
    assert_eq!(app.messages(&id).await.len(), 2);

    // Anything but full or normal is refused at start (bounded: a serve that accepted it
    // would run forever).
    let stderr = serve_refusing(&["--sqlite-synchronous", "off"]).await;
    assert!(stderr.contains("sqlite-synchronous"), "{stderr}");
}
