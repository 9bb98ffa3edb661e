//! Replies that unfold over time: incremental SSE, padding before a delayed body, hang, stall,
//! close and cut, observed from the client side.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{post, raw_post, read_until, read_within, ASK, ASK_STREAM};
use fake_openrouter::{FakeConfig, FakeUpstream, Reply, SseEvent, PADDING_UNIT};
use futures_util::StreamExt;

const GAP: Duration = Duration::from_millis(500);

async fn fake() -> FakeUpstream {
    FakeUpstream::start(FakeConfig::default()).await.unwrap()
}

#[tokio::test]
async fn sse_events_arrive_incrementally() {
    let fake = fake().await;
    fake.push(Reply::sse_events(vec![
        SseEvent::Comment("OPENROUTER PROCESSING".into()),
        SseEvent::Data(r#"{"n":1}"#.into()),
        SseEvent::Delay(GAP),
        SseEvent::Data(r#"{"n":2}"#.into()),
        SseEvent::Done,
    ]));
    let started = Instant::now();
    let response = post(&fake, ASK_STREAM).await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains(r#"{"n":1}"#) {
        seen.push_str(&String::from_utf8_lossy(
            &stream.next().await.unwrap().unwrap(),
        ));
    }
    // The first event is readable before the second one is even written.
    assert!(!seen.contains(r#"{"n":2}"#));
    let first_at = started.elapsed();
    assert!(first_at < GAP, "{first_at:?}");
    while let Some(chunk) = stream.next().await {
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(started.elapsed() >= GAP);
    assert_eq!(
        seen,
        ": OPENROUTER PROCESSING\n\ndata: {\"n\":1}\n\ndata: {\"n\":2}\n\ndata: [DONE]\n\n"
    );
}

#[tokio::test]
async fn padding_goes_out_before_the_delayed_body() {
    let fake = fake().await;
    fake.push(
        Reply::raw(200, r#"{"ok":true}"#)
            .with_padding(3)
            .with_delay(GAP),
    );
    let mut socket = raw_post(fake.addr(), ASK).await;
    let started = Instant::now();
    let head = read_until(&mut socket, &PADDING_UNIT.repeat(3), GAP).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(!head.contains("ok"));
    let rest = read_until(&mut socket, r#"{"ok":true}"#, GAP * 3).await;
    assert!(started.elapsed() >= GAP, "{rest}");
}

#[tokio::test]
async fn generated_stream_honours_default_delay() {
    let fake = FakeUpstream::start(FakeConfig {
        default_delay: Duration::from_millis(15),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let started = Instant::now();
    let mut stream = post(&fake, ASK_STREAM).await.bytes_stream();
    let mut chunks = 0;
    while let Some(chunk) = stream.next().await {
        chunk.unwrap();
        chunks += 1;
    }
    assert!(chunks > 10, "{chunks}");
    assert!(started.elapsed() >= Duration::from_millis(15 * 10));
}

#[tokio::test]
async fn hang_never_sends_headers() {
    let fake = fake().await;
    fake.push(Reply::hang());
    let mut socket = raw_post(fake.addr(), ASK).await;
    assert_eq!(read_within(&mut socket, GAP).await, None);
    assert_eq!(fake.requests()[0].reply_status, 0);
    fake.push(Reply::hang());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let error = client
        .post(format!("{}/chat/completions", fake.base_url()))
        .header("authorization", "Bearer k")
        .body(ASK)
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout());
    // The server still answers others, and shuts down despite the hung connections.
    assert_eq!(post(&fake, ASK).await.status(), 200);
    tokio::time::timeout(Duration::from_secs(2), fake.shutdown())
        .await
        .unwrap();
}

#[tokio::test]
async fn stall_sends_a_prefix_then_nothing() {
    let fake = fake().await;
    fake.push(Reply::stall_after(10, r#"{"id":"gen-123456789"}"#));
    let mut socket = raw_post(fake.addr(), ASK).await;
    let seen = read_until(&mut socket, r#"{"id":"gen"#, GAP).await;
    assert!(seen.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(seen.contains("content-type: application/json"));
    assert!(!seen.contains("gen-"));
    assert_eq!(read_within(&mut socket, GAP).await, None);

    fake.push(Reply::stall_after(6, "data: {}\n\ndata: [DONE]\n\n"));
    let response = post(&fake, ASK_STREAM).await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = response.bytes_stream();
    assert_eq!(&stream.next().await.unwrap().unwrap()[..], b"data: ");
    assert!(tokio::time::timeout(GAP, stream.next()).await.is_err());
}

#[tokio::test]
async fn close_drops_the_connection_without_a_response() {
    let fake = fake().await;
    fake.push(Reply::close());
    let mut socket = raw_post(fake.addr(), ASK).await;
    assert_eq!(read_within(&mut socket, GAP).await, Some(Vec::new()));
    assert_eq!(fake.requests()[0].reply_status, 0);
    fake.push(Reply::close());
    let error = common::post_with(&fake, ASK, Some("Bearer k"))
        .await
        .unwrap_err();
    assert!(!error.is_timeout(), "{error}");
    assert_eq!(post(&fake, ASK).await.status(), 200);
}

#[tokio::test]
async fn cut_aborts_a_stream_midway() {
    let fake = fake().await;
    fake.push(Reply::sse_events(vec![
        SseEvent::Data("{}".into()),
        SseEvent::Cut,
        SseEvent::Done,
    ]));
    let mut socket = raw_post(fake.addr(), ASK_STREAM).await;
    let seen = read_until(&mut socket, "data: {}\n\n", GAP).await;
    assert!(seen.contains("transfer-encoding: chunked"));
    let mut rest = Vec::new();
    while let Some(bytes) = read_within(&mut socket, GAP).await {
        if bytes.is_empty() {
            break;
        }
        rest.extend(bytes);
    }
    // EOF without the terminating zero-length chunk (and without [DONE]).
    assert!(
        !String::from_utf8_lossy(&rest).contains("0\r\n\r\n"),
        "{rest:?}"
    );
    assert!(!String::from_utf8_lossy(&rest).contains("[DONE]"));

    fake.push(Reply::sse_events(vec![
        SseEvent::Data("{}".into()),
        SseEvent::Cut,
    ]));
    let mut stream = post(&fake, ASK_STREAM).await.bytes_stream();
    let mut failed = false;
    while let Some(chunk) = stream.next().await {
        failed |= chunk.is_err();
    }
    assert!(failed);
}
