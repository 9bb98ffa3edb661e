//! The fake over real HTTP: generated replies, auth, validation, strict mode, the queue, the
//! request log and the admin API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{post, post_with, raw_reasoning_details, ASK, ASK_STREAM};
use fake_openrouter::{FakeConfig, FakeUpstream, Reply, PADDING_UNIT};
use serde_json::Value;

async fn fake() -> FakeUpstream {
    FakeUpstream::start(FakeConfig::default()).await.unwrap()
}

#[tokio::test]
async fn generated_reply_is_padded_deepseek_json() {
    let fake = fake().await;
    assert!(fake.base_url().starts_with("http://127.0.0.1:"));
    assert!(fake.base_url().ends_with("/api/v1"));
    let response = post(&fake, ASK).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = response.text().await.unwrap();
    assert!(body.starts_with(&PADDING_UNIT.repeat(2)));
    let value: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        value["choices"][0]["message"]["content"],
        "Reply #1 to: Say hi in Portuguese"
    );
    assert_eq!(
        value["choices"][0]["message"]["reasoning_details"][0]["format"],
        "unknown"
    );
    let recorded = fake.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].body, ASK);
    assert_eq!(
        recorded[0].authorization.as_deref(),
        Some("Bearer sk-or-test")
    );
    assert_eq!(recorded[0].path, "/api/v1/chat/completions");
    assert_eq!(recorded[0].reply_status, 200);
    assert_eq!(recorded[0].json()["model"], "deepseek/deepseek-v3.2-exp");
}

#[tokio::test]
async fn generated_stream_is_sse_with_done() {
    let fake = fake().await;
    let response = post(&fake, ASK_STREAM).await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = response.text().await.unwrap();
    assert!(body.starts_with(": OPENROUTER PROCESSING\n\n"));
    assert!(body.contains(r#""choices":[],"usage":{"prompt_tokens":"#));
    assert!(body.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn missing_or_empty_auth_is_401_but_recorded() {
    let fake = fake().await;
    for authorization in [None, Some("Bearer "), Some("Basic abc")] {
        let response = post_with(&fake, ASK, authorization).await.unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.text().await.unwrap(),
            r#"{"error":{"message":"No auth credentials found","code":401}}"#
        );
    }
    let recorded = fake.requests();
    assert_eq!(recorded.len(), 3);
    assert_eq!(recorded[0].authorization, None);
    assert_eq!(recorded[2].authorization.as_deref(), Some("Basic abc"));
    assert!(recorded.iter().all(|r| r.reply_status == 401));

    let open = FakeUpstream::start(FakeConfig {
        require_auth: false,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(post_with(&open, ASK, None).await.unwrap().status(), 200);
}

#[tokio::test]
async fn malformed_requests_get_400_json_and_keep_the_queue() {
    let fake = fake().await;
    fake.push(Reply::raw(200, r#"{"scripted":true}"#));
    for body in [
        "{not json",
        r#"{"model":"m"}"#,
        r#"{"messages":"hi"}"#,
        "[]",
        "",
    ] {
        let response = post(&fake, body).await;
        assert_eq!(response.status(), 400, "{body}");
        let value: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert_eq!(value["error"]["code"], 400);
        assert!(value["error"]["message"].is_string());
    }
    let response = post(&fake, ASK).await;
    assert_eq!(response.text().await.unwrap(), r#"{"scripted":true}"#);
}

#[tokio::test]
async fn queue_is_fifo_then_generated_and_headers_apply() {
    let fake = fake().await;
    let recorded_429 = r#"{"error":{"message":"Provider returned error","code":429}}"#;
    fake.push(Reply::recorded(429, recorded_429).with_header("Retry-After", "7"));
    fake.push(Reply::raw(502, "{}").with_header("content-type", "text/plain"));
    let first = post(&fake, ASK).await;
    assert_eq!(first.status(), 429);
    assert_eq!(first.headers()["retry-after"], "7");
    assert_eq!(first.text().await.unwrap(), recorded_429);
    let second = post(&fake, ASK).await;
    assert_eq!(second.status(), 502);
    assert_eq!(second.headers()["content-type"], "text/plain");
    let third = post(&fake, ASK).await;
    assert_eq!(third.status(), 200);
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.reply_status).collect();
    assert_eq!(statuses, [429, 502, 200]);
    fake.push(Reply::raw(500, "{}"));
    fake.reset();
    assert!(fake.requests().is_empty());
    assert_eq!(post(&fake, ASK).await.status(), 200);
}

#[tokio::test]
async fn strict_mode_end_to_end() {
    let fake = FakeUpstream::start(FakeConfig {
        strict: true,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let body = post(&fake, ASK).await.text().await.unwrap();
    let exact = raw_reasoning_details(&body);
    let follow_up = |details: &str| {
        format!(
            r#"{{"model":"deepseek/deepseek-v3.2-exp","messages":[{{"role":"user","content":"Say hi in Portuguese"}},{{"role":"assistant","content":"x","reasoning_details":{details}}},{{"role":"user","content":"again"}}]}}"#
        )
    };
    let ok = post(&fake, &follow_up(&exact)).await;
    assert_eq!(ok.status(), 200);
    let second = ok.text().await.unwrap();
    assert!(second.contains("Reply #2 to: again"));
    let reserialised =
        serde_json::to_string(&serde_json::from_str::<Value>(&exact).unwrap()).unwrap();
    let rejected = post(&fake, &follow_up(&reserialised)).await;
    assert_eq!(rejected.status(), 400);
    let error: Value = serde_json::from_str(&rejected.text().await.unwrap()).unwrap();
    assert_eq!(error["user_id"], "user_fake");
    assert!(error["error"]["metadata"]["raw"]
        .as_str()
        .unwrap()
        .contains("reasoning_details of message 1 were altered or dropped"));
    // Memory survives other requests, is cleared by reset, and strict can be switched off.
    assert_eq!(post(&fake, &follow_up(&exact)).await.status(), 200);
    fake.reset();
    assert_eq!(post(&fake, &follow_up(&exact)).await.status(), 400);
    fake.set_strict(false);
    assert_eq!(post(&fake, &follow_up(&reserialised)).await.status(), 200);
}

#[tokio::test]
async fn admin_api_scripts_and_inspects() {
    let fake = fake().await;
    let client = reqwest::Client::new();
    let admin = |path: &str| format!("http://{}/_fake/{path}", fake.addr());
    let replies = r#"[{"kind":"raw","status":503,"body":"{\"error\":{}}","headers":{"Retry-After":"1"}},{"kind":"generated","padding":0}]"#;
    let pushed = client
        .post(admin("replies"))
        .body(replies)
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 204);
    assert_eq!(post(&fake, ASK).await.status(), 503);
    let generated = post(&fake, ASK).await.text().await.unwrap();
    assert!(generated.starts_with("{\"id\":\"gen-"));
    let _ = post_with(&fake, ASK, None).await.unwrap();
    let listed: Value = client
        .get(admin("requests"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert_eq!(listed[0]["path"], "/api/v1/chat/completions");
    assert_eq!(listed[0]["body"], ASK);
    assert_eq!(listed[0]["reply_status"], 503);
    assert_eq!(listed[0]["authorization_present"], true);
    assert_eq!(listed[2]["authorization_present"], false);
    let bad = client
        .post(admin("replies"))
        .body(r#"[{"kind":"nope"}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let strict = client
        .post(admin("strict"))
        .body(r#"{"strict":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(strict.status(), 204);
    let reset = client.post(admin("reset")).send().await.unwrap();
    assert_eq!(reset.status(), 204);
    assert!(fake.requests().is_empty());
    let unknown = client.get(admin("nothing")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn replays_a_recorded_exchange_byte_for_byte() {
    let exchanges =
        fake_openrouter::recordings::load_fixture("fantasy/TestOpenRouterCommon/kimi/tool.yaml")
            .unwrap();
    let fake = fake().await;
    fake.set_strict(true);
    fake.push(exchanges[0].reply());
    let body = post(&fake, &exchanges[0].request_body)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(body, exchanges[0].response_body);
    // The recorded client re-serialised the details; strict mode catches what OpenRouter let by.
    let second = post(&fake, &exchanges[1].request_body).await;
    assert_eq!(second.status(), 400);
}
