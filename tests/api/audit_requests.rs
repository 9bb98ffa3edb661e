//! Audit records keep each upstream request byte for byte even though most are stored as
//! the bytes they add to the previous one: long chains, a change of model, a stream, a
//! failed call, a restart (cold memory) and an export -> import all read back exactly.

use std::process::Command;

use fake_openrouter::Reply;
use serde_json::json;

use crate::helpers::*;

/// Turns past the longest chain of differences (32), so a whole copy is stored again.
const TURNS: usize = 40;

/// Total bytes of `upstream_request` as stored.
fn stored_request_bytes(db: &std::path::Path) -> u64 {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
             print(c.execute('SELECT COALESCE(SUM(LENGTH(CAST(upstream_request AS BLOB))), 0) \
             FROM turns').fetchone()[0])",
        ])
        .arg(db)
        .output()
        .expect("run python3");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

async fn assert_audits_match_what_was_sent(api: &Api, fake_bodies: &[String], id: &str) {
    let turns = api.turns(id).await;
    assert_eq!(turns.len(), fake_bodies.len());
    // The list is newest first by default; match each turn with the request it sent.
    let mut turns: Vec<String> = turns.iter().map(id_of).collect();
    turns.sort();
    for (turn, sent) in turns.iter().zip(fake_bodies) {
        let detail = api.turn_detail(id, turn).await;
        assert_eq!(detail.status, 200, "{detail:?}");
        let audited = raw_at(&detail.text, &["upstream", "request"]).expect("an audit request");
        assert_eq!(
            &audited, sent,
            "turn {turn}: the audit differs from the body sent"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_audit_request_reads_back_as_sent_however_it_was_stored() {
    let mut app = spawn_app().await;
    let id = app.new_thread_id(&json!({"system": "keep going"})).await;
    for n in 0..TURNS {
        let body = match n {
            // Another model: the request differs from its first bytes.
            7 => json!({"input": format!("turn {n}"), "model": "other/model"}),
            11 => json!({"input": format!("turn {n}"), "stream": true}),
            _ => json!({"input": format!("turn {n} with some words to make it longer")}),
        };
        if n == 15 {
            // A failed call still audits the request it sent (three attempts).
            for _ in 0..3 {
                app.fake.push(Reply::raw(500, "upstream exploded\n"));
            }
            app.turn(&id, &body)
                .await
                .expect_error(502, "upstream_error");
            continue;
        }
        if n == 20 {
            // Memory of the previous request is gone: the next is stored whole.
            app.restart();
        }
        let reply = app.turn(&id, &body).await;
        assert_eq!(reply.status, 200, "turn {n}: {reply:?}");
    }
    // The failed turn's three attempts sent the same body: keep one per turn.
    let mut sent: Vec<String> = app.fake.requests().into_iter().map(|r| r.body).collect();
    sent.dedup();
    assert_eq!(sent.len(), TURNS);
    assert_audits_match_what_was_sent(&app.api, &sent, &id).await;

    let stored = stored_request_bytes(&app.db_path());
    let total: u64 = sent.iter().map(|b| b.len() as u64).sum();
    assert!(
        stored * 3 < total,
        "requests should mostly be stored as differences: {stored} bytes stored for {total} sent"
    );

    // Export writes every request whole; an import into another database reads the same.
    let export = app.get(&format!("/v1/threads/{id}/export")).await;
    assert_eq!(export.status, 200);
    let other = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("thread.ndjson");
    std::fs::write(&file, &export.text).unwrap();
    let out = run_cli(&[
        "import",
        file.to_str().unwrap(),
        "--database-url",
        &other.db_url,
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_audits_match_what_was_sent(&other.api, &sent, &id).await;
    let again = other.get(&format!("/v1/threads/{id}/export")).await;
    assert_eq!(again.text, export.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_alternating_between_two_processes_audit_exactly() {
    let app = spawn_app().await;
    let peer = app.spawn_peer();
    let peer_api = peer.api();
    let id = app
        .new_thread_id(&json!({"system": "a system prompt long enough to share bytes"}))
        .await;
    for n in 0..8 {
        // Each process stores a request as a difference from the last one *it* stored,
        // which is not always the thread's last.
        let api = if n % 3 == 1 { &peer_api } else { &app.api };
        let body = json!({"input": format!("turn {n}: a question with enough words in it")});
        let reply = api.turn(&id, &body).await;
        assert_eq!(reply.status, 200, "turn {n}: {reply:?}");
    }
    let sent: Vec<String> = app.fake.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(sent.len(), 8);
    assert_audits_match_what_was_sent(&app.api, &sent, &id).await;
    assert_audits_match_what_was_sent(&peer_api, &sent, &id).await;
}
