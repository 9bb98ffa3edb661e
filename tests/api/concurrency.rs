//! Many turns at once: one turn at a time per thread, decided in the database, so it holds
//! for 50 simultaneous requests and across two processes sharing one file, without SQLite
//! lock errors ever reaching a client or the logs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fake_openrouter::Reply;
use serde_json::{json, Value};

use crate::helpers::*;

/// Words that mean SQLite's lock leaked out of the storage layer.
fn mentions_sqlite_lock(text: &str) -> bool {
    let lower = text.to_lowercase();
    lower.contains("sqlite_busy")
        || lower.contains("database is locked")
        || lower.contains("(code: 5)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_simultaneous_turns_on_one_thread_run_exactly_one() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    app.fake
        .push(Reply::generated().with_delay(Duration::from_secs(3)));
    let mut tasks = Vec::new();
    for n in 0..50 {
        let api = app.api.clone();
        let thread = id.clone();
        tasks.push(tokio::spawn(async move {
            api.turn(&thread, &json!({"input": format!("racer {n}")}))
                .await
        }));
    }
    let mut completed = Vec::new();
    let mut busy = 0;
    for task in tasks {
        let resp = task.await.unwrap();
        assert!(!mentions_sqlite_lock(&resp.text), "{resp:?}");
        match resp.status {
            200 => completed.push(resp.json()),
            409 => {
                resp.expect_error(409, "thread_busy");
                busy += 1;
            }
            _ => panic!("unexpected answer: {resp:?}"),
        }
    }
    assert_eq!((completed.len(), busy), (1, 49), "completed, thread_busy");
    let winner = &completed[0];
    assert_eq!(winner["status"], "completed");

    let messages = app.messages(&id).await;
    assert_eq!(messages.len(), 2, "exactly one input + reply pair");
    assert_eq!(messages[0]["id"], winner["input_message_ids"][0]);
    assert_eq!(messages[1]["id"], winner["output_message_id"]);
    assert_eq!(app.turns(&id).await.len(), 1);
    let requests = app.fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].json()["messages"][0]["content"],
        messages[0]["content"]
    );
    app.turn_ok(&id, &json!({"input": "after the race"})).await;
    assert!(!mentions_sqlite_lock(&app.logs()), "{}", app.logs());
}

/// How one worker's attempts went.
#[derive(Debug, Default)]
struct Tally {
    completed: Option<Value>,
    busy: usize,
    streamed: bool,
}

/// Posts one turn, retrying on 409, until it completes; any other answer fails the test.
async fn worker(api: Api, thread: String, input: String, stream: bool, until: Instant) -> Tally {
    let mut tally = Tally {
        streamed: stream,
        ..Tally::default()
    };
    let mut pause = 5u64;
    while Instant::now() < until {
        let body = json!({"input": input});
        let (status, text, turn) = if stream {
            let s = api.stream_turn(&thread, &body).await;
            let turn = (s.status == 200).then(|| s.completed());
            (s.status, s.text.clone(), turn)
        } else {
            let r = api.turn(&thread, &body).await;
            let turn = (r.status == 200).then(|| r.json());
            (r.status, r.text.clone(), turn)
        };
        assert!(!mentions_sqlite_lock(&text), "{status}: {text}");
        match status {
            200 => {
                let turn = turn.unwrap();
                assert_eq!(turn["status"], "completed", "{turn}");
                tally.completed = Some(turn);
                return tally;
            }
            409 => {
                assert!(text.contains("thread_busy"), "{text}");
                tally.busy += 1;
                tokio::time::sleep(Duration::from_millis(pause)).await;
                pause = (pause * 2).min(80);
            }
            _ => panic!("unexpected answer {status}: {text}"),
        }
    }
    panic!(
        "{input}: no turn completed before the deadline ({} busy)",
        tally.busy
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_never_run_two_turns_of_one_thread_at_once() {
    const THREADS: usize = 5;
    const WORKERS: usize = 8;
    let app = spawn_app_with(Opts::default().fake_delay(Duration::from_millis(25))).await;
    let peer = app.spawn_peer();
    let apis = [app.api.clone(), peer.api()];
    let mut threads = Vec::new();
    for t in 0..THREADS {
        threads.push(apis[t % 2].new_thread_id(&json!({})).await);
    }
    let until = Instant::now() + Duration::from_secs(22);
    let mut tasks = Vec::new();
    for (t, thread) in threads.iter().enumerate() {
        for w in 0..WORKERS {
            // Half the workers go through each process; half of them stream.
            let api = apis[w % 2].clone();
            let input = format!("thread {t} worker {w}");
            let stream = (w / 2) % 2 == 1;
            tasks.push((
                t,
                tokio::spawn(worker(api, thread.clone(), input, stream, until)),
            ));
        }
    }
    let mut per_thread: BTreeMap<usize, Vec<Tally>> = BTreeMap::new();
    for (t, task) in tasks {
        per_thread.entry(t).or_default().push(task.await.unwrap());
    }
    let busy: usize = per_thread.values().flatten().map(|t| t.busy).sum();
    let streamed = per_thread.values().flatten().filter(|t| t.streamed).count();
    eprintln!(
        "two processes: {} turns completed ({} streamed) on {THREADS} threads, {busy} answered thread_busy",
        THREADS * WORKERS,
        streamed
    );

    let requests = app.fake.requests();
    assert_eq!(
        requests.len(),
        THREADS * WORKERS,
        "one upstream call per turn"
    );
    for (t, thread) in threads.iter().enumerate() {
        // Stored: every turn completed, inputs and replies paired in seq order.
        let turns = app.turns(thread).await;
        assert_eq!(turns.len(), WORKERS, "thread {t}");
        let messages = app.messages(thread).await;
        assert_eq!(messages.len(), 2 * WORKERS, "thread {t}");
        let mut inputs: Vec<String> = messages
            .iter()
            .filter(|m| m["role"] == "user")
            .map(|m| m["content"].as_str().unwrap().to_owned())
            .collect();
        inputs.sort();
        let mut wanted: Vec<String> = (0..WORKERS)
            .map(|w| format!("thread {t} worker {w}"))
            .collect();
        wanted.sort();
        assert_eq!(inputs, wanted, "every input stored exactly once");
        let seq_of: BTreeMap<String, u64> = messages
            .iter()
            .map(|m| (id_of(m), m["seq"].as_u64().unwrap()))
            .collect();
        for turn in &turns {
            assert_eq!(turn["status"], "completed", "{turn}");
            let input = turn["input_message_ids"][0].as_str().unwrap();
            let output = turn["output_message_id"].as_str().unwrap();
            assert_eq!(
                seq_of[input] + 1,
                seq_of[output],
                "thread {t}: another turn's message between input and reply"
            );
        }
        // Each upstream call saw every earlier turn of its thread complete: the contexts
        // are 1, 3, 5, ... messages long, each the stored prefix.
        let mut lengths: Vec<usize> = requests
            .iter()
            .filter(|r| r.json()["session_id"] == thread.as_str())
            .map(|r| {
                let sent = r.json()["messages"].as_array().unwrap().clone();
                let prefix: Vec<Value> = messages[..sent.len()]
                    .iter()
                    .map(|m| m["content"].clone())
                    .collect();
                let sent_contents: Vec<Value> = sent.iter().map(|m| m["content"].clone()).collect();
                assert_eq!(
                    sent_contents, prefix,
                    "thread {t}: context is not the stored prefix"
                );
                sent.len()
            })
            .collect();
        lengths.sort_unstable();
        let expected: Vec<usize> = (0..WORKERS).map(|k| 2 * k + 1).collect();
        assert_eq!(lengths, expected, "thread {t}: two turns overlapped");
        // Both processes can go on with the thread.
        apis[t % 2]
            .turn_ok(thread, &json!({"input": "after"}))
            .await;
    }
    for logs in [app.logs(), peer.logs()] {
        assert!(!mentions_sqlite_lock(&logs), "{logs}");
        assert!(!logs.contains("panicked"), "{logs}");
    }
}
