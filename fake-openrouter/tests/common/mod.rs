//! Helpers shared by the HTTP-level tests: a reqwest client and a raw TCP client for the cases
//! (hang, stall, close) where the exact bytes on the socket matter.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use fake_openrouter::FakeUpstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const ASK: &str = r#"{"model":"deepseek/deepseek-v3.2-exp","messages":[{"role":"user","content":"Say hi in Portuguese"}],"usage":{"include":true}}"#;
pub const ASK_STREAM: &str = r#"{"model":"deepseek/deepseek-v3.2-exp","messages":[{"role":"user","content":"Say hi in Portuguese"}],"stream":true}"#;

pub async fn post(fake: &FakeUpstream, body: &str) -> reqwest::Response {
    post_with(fake, body, Some("Bearer sk-or-test"))
        .await
        .unwrap()
}

pub async fn post_with(
    fake: &FakeUpstream,
    body: &str,
    authorization: Option<&str>,
) -> reqwest::Result<reqwest::Response> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut request = client
        .post(format!("{}/chat/completions", fake.base_url()))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.send().await
}

/// Send a chat-completions request over a fresh TCP connection and return the socket.
pub async fn raw_post(addr: SocketAddr, body: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /api/v1/chat/completions HTTP/1.1\r\nhost: fake\r\ncontent-type: application/json\r\nauthorization: Bearer k\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// Read whatever arrives within `wait`: `Some(bytes)` (empty at EOF), `None` on timeout.
pub async fn read_within(stream: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut buffer = vec![0; 64 * 1024];
    match tokio::time::timeout(wait, stream.read(&mut buffer)).await {
        Ok(Ok(n)) => Some(buffer[..n].to_vec()),
        Ok(Err(_)) => Some(Vec::new()),
        Err(_) => None,
    }
}

/// Read until `needle` has arrived (or panic after `wait`), returning everything read.
pub async fn read_until(stream: &mut TcpStream, needle: &str, wait: Duration) -> String {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match read_within(stream, left).await {
            Some(bytes) if !bytes.is_empty() => seen.extend(bytes),
            other => panic!(
                "no {needle:?} ({other:?}); got {:?}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// The exact bytes of the first `"reasoning_details":` value in a body, found without parsing.
pub fn raw_reasoning_details(body: &str) -> String {
    let key = r#""reasoning_details":"#;
    let start = body.find(key).unwrap() + key.len();
    let mut depth = 0;
    let mut in_string = false;
    let mut escaped = false;
    for (offset, c) in body[start..].char_indices() {
        match (in_string, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (true, false, '"') => in_string = false,
            (false, _, '"') => in_string = true,
            (false, _, '[' | '{') => depth += 1,
            (false, _, ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return body[start..start + offset + 1].to_owned();
                }
            }
            _ => {}
        }
    }
    panic!("unterminated reasoning_details in {body}")
}
