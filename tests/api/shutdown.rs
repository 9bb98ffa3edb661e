//! Graceful shutdown: on SIGTERM or SIGINT the service stops accepting connections, lets
//! running turns finish within `--shutdown-grace` and exits 0; a turn still running when
//! the grace period ends reads `interrupted` after the next start.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use fake_openrouter::{Reply, SseEvent};
use serde_json::json;

use crate::helpers::*;
use crate::sse_client::read_events_until;
use crate::streaming::chunk;

/// Polls until a new TCP connection to the service is refused; panics after `limit`.
async fn wait_until_refused(service: &Service, limit: Duration) -> Duration {
    let started = Instant::now();
    let addr = service.addr();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "new connections still accepted {limit:?} after the signal"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_let_a_running_turn_finish_refuse_new_connections_and_exit_zero() {
    for (signal, stream) in [("TERM", false), ("INT", false), ("TERM", true)] {
        let mut app = spawn_app().await;
        let id = app.new_thread_id(&json!({})).await;
        app.fake
            .push(Reply::generated().with_delay(Duration::from_millis(4000)));
        let api = app.api.clone();
        let thread = id.clone();
        let slow = tokio::spawn(async move {
            let body = json!({"input": "finish me"});
            if stream {
                api.stream_turn(&thread, &body).await.completed()
            } else {
                api.turn_ok(&thread, &body).await
            }
        });
        wait_for_requests(&app.fake, 1).await;
        let signalled = Instant::now();
        app.service.signal(signal);

        // The listener closes at once, while the turn still runs.
        wait_until_refused(&app.service, Duration::from_millis(3000)).await;
        assert!(
            app.service.wait_exit(Duration::ZERO).await.is_none(),
            "SIG{signal}: exited before its turn finished"
        );
        let turn = slow.await.unwrap();
        assert!(
            signalled.elapsed() >= Duration::from_millis(2500),
            "SIG{signal}: the turn was not waited for"
        );
        let status = app
            .service
            .wait_exit(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("SIG{signal}: still running"));
        assert!(
            status.success(),
            "SIG{signal} (stream={stream}): exit {status:?}"
        );

        app.restart();
        let turns = app.turns(&id).await;
        assert_eq!(turns.len(), 1);
        assert_eq!(turns[0], turn, "SIG{signal}: stored as answered");
        assert_eq!(app.messages(&id).await.len(), 2);
        app.turn_ok(&id, &json!({"input": "after the restart"}))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_streaming_turn_whose_client_left_finish() {
    let mut app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    let mut events = vec![SseEvent::Data(chunk(
        r#"{"role":"assistant","content":"part 0"}"#,
        None,
    ))];
    for n in 1..6 {
        events.push(SseEvent::Delay(Duration::from_millis(300)));
        events.push(SseEvent::Data(chunk(
            &format!(r#"{{"content":" part {n}"}}"#),
            None,
        )));
    }
    events.push(SseEvent::Data(chunk(r#"{"content":""}"#, Some("stop"))));
    events.push(SseEvent::Done);
    app.fake.push(Reply::sse_events(events));
    let (mut response, _) = app
        .open_stream(&id, r#"{"input":"stream then leave","stream":true}"#, &[])
        .await;
    let seen = read_events_until(&mut response, |e| e.iter().any(|e| e.event == "chunk")).await;
    let turn_id = seen[0].json()["turn_id"].as_str().unwrap().to_owned();
    drop(response);
    let status = app.service.terminate().await;
    assert!(status.success(), "exit {status:?}");

    app.restart();
    let turn = app.turn_detail(&id, &turn_id).await.json();
    assert_eq!(
        turn["status"], "completed",
        "a running streaming turn was cut off by SIGTERM: {turn}"
    );
    assert_eq!(
        turn["output"]["content"],
        "part 0 part 1 part 2 part 3 part 4 part 5"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_short_grace_exits_after_it_and_the_turn_reads_interrupted() {
    let mut app = spawn_app_with(Opts::default().args(&["--shutdown-grace", "1s"])).await;
    let id = app.new_thread_id(&json!({})).await;
    let other = app.new_thread_id(&json!({})).await;
    app.fake.push(Reply::hang());
    let api = app.api.clone();
    let thread = id.clone();
    let pending = tokio::spawn(async move {
        api.http
            .post(format!("{}/v1/threads/{thread}/turns", api.base))
            .json(&json!({"input": "never answered"}))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    wait_for_requests(&app.fake, 1).await;
    let signalled = Instant::now();
    let status = app.service.terminate().await;
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(6),
        "exited {took:?} after SIGTERM with a 1 s grace"
    );
    assert!(status.success(), "exit {status:?}");
    // The client got no turn back (connection closed), certainly not a completed one.
    if let Ok(code) = pending.await.unwrap() {
        assert_ne!(code, 200);
    }

    app.restart();
    let turns = app.turns(&id).await;
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0]["status"], "interrupted", "{}", turns[0]);
    assert_eq!(turns[0]["error"]["code"], "interrupted");
    let messages = app.messages(&id).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["content"], "never answered");
    // The thread is free at once; the other thread was never touched.
    app.turn_ok(&id, &json!({})).await;
    assert_eq!(app.messages(&id).await.len(), 2);
    app.turn_ok(&other, &json!({"input": "hi"})).await;
}

// The grace period counts from the signal, not from when the last connection closed: a turn
// whose client left is cut off `--shutdown-grace` after SIGTERM even though another request
// kept the server draining for most of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_period_counts_from_the_signal_not_from_the_last_connection() {
    let mut app = spawn_app_with(Opts::default().args(&["--shutdown-grace", "4s"])).await;
    let abandoned = app.new_thread_id(&json!({})).await;
    let draining = app.new_thread_id(&json!({})).await;
    app.fake.push(Reply::hang());
    // The abandoned turn's client leaves; the turn runs on, waiting for the model.
    let left = tokio::spawn({
        let api = app.api.clone();
        async move {
            api.turn(&abandoned, &json!({"input": "never answered"}))
                .await
        }
    });
    wait_for_requests(&app.fake, 1).await;
    left.abort();
    // The other turn's client stays until its answer, 2 s after the signal.
    app.fake
        .push(Reply::generated().with_delay(Duration::from_millis(2_000)));
    let slow = tokio::spawn({
        let api = app.api.clone();
        async move { api.turn(&draining, &json!({"input": "slow"})).await }
    });
    wait_for_requests(&app.fake, 2).await;
    let signalled = Instant::now();
    let status = app.service.terminate().await;
    let took = signalled.elapsed();
    assert!(status.success(), "exit {status:?}");
    slow.await.unwrap().expect(200);
    // 4 s after the signal; counted from the drained connection it would be 6 s.
    assert!(
        took >= Duration::from_millis(3_900) && took < Duration::from_millis(5_300),
        "exited {took:?} after SIGTERM with a 4 s grace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_an_idle_service_exits_zero_at_once() {
    let mut app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    app.turn_ok(&id, &json!({"input": "one"})).await;
    let signalled = Instant::now();
    let status = app.service.terminate().await;
    assert!(status.success(), "exit {status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "{:?}",
        signalled.elapsed()
    );
    app.restart();
    assert_eq!(app.messages(&id).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_service_leaves_one_self_contained_database_file() {
    let mut app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    app.turn_ok(&id, &json!({"input": "keep me"})).await;
    app.context(&id, "").await; // a pooled reader has the file open too
    let status = app.service.terminate().await;
    assert!(status.success(), "{status:?}");
    let wal = app.db_path().with_extension("db-wal");
    assert!(
        !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
        "the write-ahead log was left behind"
    );
    // The .db file alone holds everything: copy it without its companions and read it.
    let copy = tempfile::tempdir().unwrap();
    let file = copy.path().join("alone.db");
    std::fs::copy(app.db_path(), &file).unwrap();
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
             print(c.execute('SELECT count(*) FROM messages').fetchone()[0])",
        ])
        .arg(&file)
        .output()
        .expect("run python3");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2", "{out:?}");
}
