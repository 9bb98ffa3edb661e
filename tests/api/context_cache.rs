//! The in-memory context cache changes what a context costs, never what it holds: messages
//! another process adds, and a thread another process deletes and imports again with other
//! content, show in the next context exactly as the database has them.

use serde_json::json;

use crate::helpers::*;

/// The `content` of each message of a context body.
fn contents(context: &str) -> Vec<String> {
    let body: serde_json::Value = serde_json::from_str(context).expect("context is JSON");
    body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_a_peer_appends_between_turns_reach_the_next_context() {
    let app = spawn_app().await;
    let peer = app.spawn_peer();
    let peer_api = peer.api();
    let id = app.new_thread_id(&json!({})).await;
    let first = app.turn_ok(&id, &json!({"input": "first"})).await;
    // Read twice here so this process holds the context in its cache.
    assert_eq!(app.context(&id, "").await, app.context(&id, "").await);

    peer_api
        .post(
            &format!("/v1/threads/{id}/messages"),
            &json!({"messages": [{"role": "user", "content": "from the peer"}]}),
        )
        .await
        .expect(201);
    // This process's context now equals the peer's, which it read from the database alone.
    assert_eq!(app.context(&id, "").await, peer_api.context(&id, "").await);

    app.turn_ok(&id, &json!({"input": "second"})).await;
    let sent = app.fake.requests().last().expect("a request").json();
    let sent: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default())
        .collect();
    let reply = first["output"]["content"].as_str().unwrap();
    assert_eq!(sent, ["first", reply, "from the peer", "second"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_another_process_deletes_and_imports_again_is_read_anew() {
    let app = spawn_app().await;
    let peer = app.spawn_peer();
    let peer_api = peer.api();
    let thread = app
        .create_thread(&json!({"messages": [
            {"role": "user", "content": "original question"},
            {"role": "assistant", "content": "original answer"}
        ]}))
        .await;
    let id = id_of(&thread);
    app.context(&id, "").await;
    let cached = app.context(&id, "").await;
    assert_eq!(contents(&cached), ["original question", "original answer"]);

    // Same ids, same count, same last message: only the first message's text differs.
    let export = app.get(&format!("/v1/threads/{id}/export")).await;
    assert_eq!(export.status, 200);
    let edited = export.text.replace("original question", "edited question");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("edited.ndjson");
    std::fs::write(&file, edited).unwrap();
    peer_api
        .delete(&format!("/v1/threads/{id}"))
        .await
        .expect(200);
    let out = run_cli(&[
        "import",
        file.to_str().unwrap(),
        "--database-url",
        &app.db_url,
    ]);
    assert!(out.status.success(), "{out:?}");

    let fresh = app.context(&id, "").await;
    assert_eq!(contents(&fresh), ["edited question", "original answer"]);
    assert_eq!(fresh, peer_api.context(&id, "").await);
    app.turn_ok(&id, &json!({"input": "next"})).await;
    let sent = app.fake.requests().last().expect("a request").body.clone();
    assert!(sent.contains("edited question") && !sent.contains("original question"));
}

#[tokio::test]
async fn with_the_cache_off_contexts_are_the_same() {
    let on = spawn_app().await;
    let off = spawn_app_with(Opts::default().args(&["--context-cache", "0"])).await;
    for app in [&on, &off] {
        let id = app.new_thread_id(&json!({"system": "be brief"})).await;
        for input in ["one", "two", "three"] {
            app.turn_ok(&id, &json!({"input": input})).await;
        }
        let context = app.context(&id, "").await;
        let contents = contents(&context);
        assert_eq!(contents.len(), 1 + 6, "{context}");
        assert_eq!(contents[0], "be brief");
        assert_eq!(contents[1], "one");
        assert_eq!(contents[5], "three");
        // The last turn sent what the context showed before it, plus its input.
        let sent = app.fake.requests().last().expect("a request").json();
        assert_eq!(sent["messages"].as_array().unwrap().len(), 1 + 5);
    }
}

#[tokio::test]
async fn each_turn_sends_exactly_the_thread_so_far() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    for n in 0..12 {
        let body = match n {
            4 => json!({"input": format!("turn {n}"), "stream": true}),
            _ => json!({"input": format!("turn {n}")}),
        };
        if n == 7 {
            // A failed turn keeps its input: the next context includes it, with no reply.
            for _ in 0..3 {
                app.fake.push(fake_openrouter::Reply::raw(500, "down\n"));
            }
            app.turn(&id, &body)
                .await
                .expect_error(502, "upstream_error");
            continue;
        }
        let answer = app.turn(&id, &body).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let stored: Vec<(String, String)> = app
        .messages(&id)
        .await
        .iter()
        .map(|m| {
            let content = m["content"].as_str().unwrap_or_default().to_owned();
            (m["role"].as_str().unwrap().to_owned(), content)
        })
        .collect();
    let mut sent: Vec<String> = app.fake.requests().into_iter().map(|r| r.body).collect();
    sent.dedup();
    for body in &sent {
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        let messages: Vec<(String, String)> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let content = m["content"].as_str().unwrap_or_default().to_owned();
                (m["role"].as_str().unwrap().to_owned(), content)
            })
            .collect();
        assert_eq!(
            messages,
            stored[..messages.len()],
            "a turn sent another history"
        );
        assert_eq!(messages.last().unwrap().0, "user");
    }
    let lengths: Vec<usize> = sent
        .iter()
        .map(|b| {
            serde_json::from_str::<serde_json::Value>(b).unwrap()["messages"]
                .as_array()
                .unwrap()
                .len()
        })
        .collect();
    // 1, 3, 5, … then the failed turn's input stays without a reply.
    assert_eq!(lengths, [1, 3, 5, 7, 9, 11, 13, 15, 16, 18, 20, 22]);
}
