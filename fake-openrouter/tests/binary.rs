//! The `fake-openrouter` binary: announces its URL on one stdout line and serves it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[tokio::test]
async fn binary_prints_its_url_and_serves() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-openrouter"))
        .args([
            "--bind",
            "127.0.0.1:0",
            "--no-auth",
            "--strict",
            "--delay-ms",
            "1",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim_end()
        .strip_prefix("fake-openrouter listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_owned();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/api/v1"),
        "{url}"
    );
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{url}/chat/completions"))
        .body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    let status = response.status();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(status, 200);
}

#[test]
fn bad_bind_address_fails_cleanly() {
    let output = Command::new(env!("CARGO_BIN_EXE_fake-openrouter"))
        .args(["--bind", "not-an-address"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot listen on not-an-address"));
}
