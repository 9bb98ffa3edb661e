//! Tenant isolation (SPEC section 7): a thread belongs to the tenant of the key that created
//! it. Another tenant probing every route with its ids gets exactly what a nonexistent id
//! gets, finds nothing in its own lists or through pagination cursors, reaches no upstream,
//! and changes nothing: the owner's export is byte-identical afterwards.

use std::collections::BTreeSet;

use fake_openrouter::Reply;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::support::*;

/// Marks every piece of tenant A's content, so leaks can be looked for by substring.
const MARK: &str = "A-secret";

const A_REASONING: &str = r#"[ {"type":"reasoning.text","text":"A-secret reasoning \u00e9 \"q\"","signature":"A-secret-sig","format":"unknown","index":0} ]"#;

const A_THREAD: &str = r#"{"metadata":{"owner":"A-secret-owner"},"system":"A-secret system","model":"test/model-a","messages":[
 {"role":"user","content":"A-secret question"},
 {"role":"assistant","content":null,"model":"test/model-a","reasoning":"A-secret thinking","tool_calls":[{"id":"call_a","type":"function","function":{"name":"lookup","arguments":"{\"q\":\"A-secret\"}"}}],"reasoning_details":REASONING},
 {"role":"tool","tool_call_id":"call_a","content":"A-secret tool result"}]}"#;

/// What tenant A owns: two threads, and on the first imported reasoning, a completed and a
/// failed turn, appended messages.
struct Owned {
    thread: String,
    second: String,
    messages: Vec<String>,
    turns: Vec<String>,
}

async fn tenant_a_data(app: &App, a: &Api) -> Owned {
    let body = A_THREAD.replace("REASONING", A_REASONING);
    let created = a
        .send_text(Method::POST, "/v1/threads", &body)
        .await
        .expect(201);
    let thread = id_of(&created);
    let completed = a
        .turn_with(
            &thread,
            r#"{"input":"the same turn body"}"#,
            &[("Idempotency-Key", "shared-idempotency-key")],
        )
        .await
        .expect(200);
    assert_eq!(completed["status"], "completed", "{completed}");
    app.fake.push(Reply::raw(
        400,
        r#"{"error":{"message":"A-secret upstream refusal","code":400}}"#,
    ));
    let failed = a
        .turn(
            &thread,
            &json!({"input": "A-secret input of a failed turn"}),
        )
        .await;
    let failed_turn = failed.expect_error(502, "upstream_error")["turn_id"]
        .as_str()
        .unwrap()
        .to_owned();
    a.post(
        &format!("/v1/threads/{thread}/messages"),
        &json!({"messages": [{"role": "user", "content": "A-secret appended"}]}),
    )
    .await
    .expect(201);
    let second = a
        .new_thread_id(&json!({"metadata": {"owner": "A-secret-second"}}))
        .await;
    let messages: Vec<String> = a.messages(&thread).await.iter().map(id_of).collect();
    assert_eq!(
        messages.len(),
        7,
        "3 imported, 2 of the completed turn, 1 failed, 1 appended"
    );
    let turns: Vec<String> = a.turns(&thread).await.iter().map(id_of).collect();
    assert_eq!(turns, vec![id_of(&completed), failed_turn]);
    assert_reasoning_endpoint(a, &thread, &messages[1], A_REASONING).await;
    Owned {
        thread,
        second,
        messages,
        turns,
    }
}

/// A route to probe: method, path template, body, headers.
type Route = (
    Method,
    &'static str,
    Option<&'static str>,
    &'static [(&'static str, &'static str)],
);

/// Every route that takes a thread id, with `{m}` and `{u}` standing for a message and a
/// turn id.
fn routes() -> Vec<Route> {
    const JSON: &[(&str, &str)] = &[("content-type", "application/json")];
    const IDEMPOTENT: &[(&str, &str)] = &[
        ("content-type", "application/json"),
        ("idempotency-key", "shared-idempotency-key"),
    ];
    vec![
        (Method::GET, "/v1/threads/{t}", None, &[]),
        (
            Method::PATCH,
            "/v1/threads/{t}",
            Some(r#"{"metadata":{"pwned":"yes"},"system":"pwned"}"#),
            JSON,
        ),
        (Method::PATCH, "/v1/threads/{t}", Some("{}"), JSON),
        (Method::DELETE, "/v1/threads/{t}", None, &[]),
        (
            Method::POST,
            "/v1/threads/{t}/messages",
            Some(r#"{"messages":[{"role":"user","content":"pwned"}]}"#),
            JSON,
        ),
        (Method::GET, "/v1/threads/{t}/messages", None, &[]),
        (
            Method::GET,
            "/v1/threads/{t}/messages?limit=100&order=desc",
            None,
            &[],
        ),
        (Method::GET, "/v1/threads/{t}/messages?after={m}", None, &[]),
        (Method::GET, "/v1/threads/{t}/messages/{m}", None, &[]),
        (
            Method::GET,
            "/v1/threads/{t}/messages/{m}/reasoning_details",
            None,
            &[],
        ),
        (
            Method::POST,
            "/v1/threads/{t}/turns",
            Some(r#"{"input":"pwned"}"#),
            JSON,
        ),
        (
            Method::POST,
            "/v1/threads/{t}/turns",
            Some(r#"{"input":"pwned","stream":true}"#),
            JSON,
        ),
        (Method::POST, "/v1/threads/{t}/turns", Some("{}"), JSON),
        (Method::POST, "/v1/threads/{t}/turns", None, &[]),
        (
            Method::POST,
            "/v1/threads/{t}/turns",
            Some(r#"{"input":"the same turn body"}"#),
            IDEMPOTENT,
        ),
        (Method::GET, "/v1/threads/{t}/turns", None, &[]),
        (Method::GET, "/v1/threads/{t}/turns?after={u}", None, &[]),
        (Method::GET, "/v1/threads/{t}/turns/{u}", None, &[]),
        (Method::GET, "/v1/threads/{t}/context", None, &[]),
        (
            Method::GET,
            "/v1/threads/{t}/context?model=x%2Fy&reasoning_replay=all",
            None,
            &[],
        ),
        (
            Method::GET,
            "/v1/threads/{t}/context",
            Some(r#"{"model":"x/y"}"#),
            JSON,
        ),
        (Method::GET, "/v1/threads/{t}/export", None, &[]),
    ]
}

async fn send_route(
    api: &Api,
    method: &Method,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Resp {
    let headers: Vec<(&str, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| (*k, v.as_bytes().to_vec()))
        .collect();
    try_raw(
        api,
        method.clone(),
        path,
        &headers,
        body.map(|b| b.as_bytes().to_vec()),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Asserts `foreign` answers exactly as `unknown` (same status, content type and body), and
/// that this is a 404.
fn assert_same_as_nonexistent(foreign: &Resp, unknown: &Resp) {
    assert_eq!(foreign.status, 404, "{foreign:?}");
    foreign.expect_error(404, "not_found");
    assert_eq!(
        (
            foreign.status,
            &foreign.text,
            foreign.header("content-type")
        ),
        (
            unknown.status,
            &unknown.text,
            unknown.header("content-type")
        ),
        "another tenant's id is told apart from a nonexistent one: {foreign:?} vs {unknown:?}"
    );
}

/// The ids a list of `order`, paged with `after` or `before` = `cursor`, must show when it
/// filters `own` by id order and nothing else.
fn expected_page(own: &BTreeSet<String>, order: &str, param: &str, cursor: &str) -> Vec<String> {
    let mut ids: Vec<String> = own
        .iter()
        .filter(|id| match (order, param) {
            ("asc", "after") | ("desc", "before") => id.as_str() > cursor,
            _ => id.as_str() < cursor,
        })
        .cloned()
        .collect();
    if order == "desc" {
        ids.reverse();
    }
    ids
}

fn page_ids(list: &Value) -> Vec<String> {
    list["data"].as_array().unwrap().iter().map(id_of).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_gets_404_on_every_route_and_changes_nothing() {
    let app = spawn_app().await;

    // Open mode, before any key: this data belongs to the `default` tenant.
    let open_thread = app
        .new_thread_id(&json!({"messages": [{"role": "user", "content": "A-secret open mode"}]}))
        .await;
    let open_turn = id_of(
        &app.turn_ok(&open_thread, &json!({"input": "A-secret open"}))
            .await,
    );
    let open_message = id_of(&app.messages(&open_thread).await[0]);

    let key_a = create_key(&app.db_url, "alice", "tenant-a").await;
    let key_b = create_key(&app.db_url, "bob", "tenant-b").await;
    let a = keyed(&app.base, &key_a.key);
    let b = keyed(&app.base, &key_b.key);
    assert_unauthorized(&app.get(&format!("/v1/threads/{open_thread}")).await);

    let owned = tenant_a_data(&app, &a).await;

    // Tenant B's own data; its idempotency key is the one A used, on B's own thread.
    let b_thread = b
        .new_thread_id(&json!({"messages": [{"role": "user", "content": "B's own"}]}))
        .await;
    let b_turn = b
        .turn_with(
            &b_thread,
            r#"{"input":"the same turn body"}"#,
            &[("Idempotency-Key", "shared-idempotency-key")],
        )
        .await
        .expect(200);
    assert_eq!(b_turn["status"], "completed");
    assert!(
        !owned.turns.contains(&id_of(&b_turn)),
        "an idempotency key replayed another tenant's turn"
    );
    let b_second = b.new_thread_id(&json!({})).await;
    let b_threads: BTreeSet<String> = [b_thread.clone(), b_second.clone()].into();
    let b_turns: BTreeSet<String> = b.turns(&b_thread).await.iter().map(id_of).collect();

    let export_before = a.get(&format!("/v1/threads/{}/export", owned.thread)).await;
    assert_eq!(export_before.status, 200, "{export_before:?}");
    let snapshot_before = a.snapshot().await;
    let b_snapshot_before = b.snapshot().await;
    let counts_before = db_counts(&app.db_path());
    let upstream_before = app.fake.requests().len();

    // Every route with A's ids (and the open-mode ids), against the same route with ids that
    // name nothing.
    let foreign_threads = [
        owned.thread.as_str(),
        owned.second.as_str(),
        open_thread.as_str(),
    ];
    let mut probes = 0;
    for (method, template, body, headers) in routes() {
        let messages: Vec<&str> = if template.contains("{m}") {
            owned
                .messages
                .iter()
                .map(String::as_str)
                .chain([open_message.as_str()])
                .collect()
        } else {
            vec![""]
        };
        let turns: Vec<&str> = if template.contains("{u}") {
            owned
                .turns
                .iter()
                .map(String::as_str)
                .chain([open_turn.as_str()])
                .collect()
        } else {
            vec![""]
        };
        for api in [&b, &a] {
            for thread in foreign_threads {
                // A probes only the open-mode thread: it is foreign to A as well.
                if std::ptr::eq(api, &a) && thread != open_thread {
                    continue;
                }
                for m in &messages {
                    for u in &turns {
                        let fill = |t: &str, m: &str, u: &str| {
                            template
                                .replace("{t}", t)
                                .replace("{m}", m)
                                .replace("{u}", u)
                        };
                        let foreign =
                            send_route(api, &method, &fill(thread, m, u), body, headers).await;
                        let unknown = send_route(
                            api,
                            &method,
                            &fill(&random_id(), &random_id(), &random_id()),
                            body,
                            headers,
                        )
                        .await;
                        assert_same_as_nonexistent(&foreign, &unknown);
                        probes += 1;
                    }
                }
            }
        }
        // A's message or turn under B's own thread.
        if template.contains("{m}") || template.contains("{u}") {
            let ids: Vec<&str> = owned
                .messages
                .iter()
                .chain(owned.turns.iter())
                .map(String::as_str)
                .collect();
            for id in ids {
                let path = template
                    .replace("{t}", &b_thread)
                    .replace("{m}", id)
                    .replace("{u}", id);
                if path.contains('?') {
                    // Cursors are checked below.
                    continue;
                }
                let foreign = send_route(&b, &method, &path, body, headers).await;
                let unknown_path = template
                    .replace("{t}", &b_thread)
                    .replace("{m}", &random_id())
                    .replace("{u}", &random_id());
                let unknown = send_route(&b, &method, &unknown_path, body, headers).await;
                assert_same_as_nonexistent(&foreign, &unknown);
                probes += 1;
            }
        }
    }
    assert!(probes > 100, "only {probes} probes");

    // B's lists show only B's threads, whatever the cursor.
    let list = b.get("/v1/threads?limit=100").await.expect(200);
    assert_eq!(
        page_ids(&list).into_iter().collect::<BTreeSet<_>>(),
        b_threads
    );
    for cursor in foreign_threads.iter().copied().chain([b_thread.as_str()]) {
        for order in ["asc", "desc"] {
            for param in ["after", "before"] {
                let list = b
                    .get(&format!(
                        "/v1/threads?limit=100&order={order}&{param}={cursor}"
                    ))
                    .await
                    .expect(200);
                assert_eq!(
                    page_ids(&list),
                    expected_page(&b_threads, order, param, cursor),
                    "threads {order} {param}={cursor}: {list}"
                );
                assert_eq!(list["has_more"], false);
            }
        }
    }
    // Turn cursors filter by id order in B's own thread; A's turn ids reveal nothing.
    for cursor in owned.turns.iter().chain([&open_turn]) {
        for order in ["asc", "desc"] {
            for param in ["after", "before"] {
                let list = b
                    .get(&format!(
                        "/v1/threads/{b_thread}/turns?limit=100&order={order}&{param}={cursor}"
                    ))
                    .await
                    .expect(200);
                assert_eq!(
                    page_ids(&list),
                    expected_page(&b_turns, order, param, cursor),
                    "turns {order} {param}={cursor}: {list}"
                );
            }
        }
    }
    // A message cursor from another tenant is refused exactly like a random id.
    for cursor in owned.messages.iter().chain([&open_message]) {
        for param in ["after", "before"] {
            let foreign = b
                .get(&format!("/v1/threads/{b_thread}/messages?{param}={cursor}"))
                .await;
            let other = random_id();
            let unknown = b
                .get(&format!("/v1/threads/{b_thread}/messages?{param}={other}"))
                .await;
            let error = foreign.expect_error(400, "invalid_request");
            assert!(
                error["message"]
                    .as_str()
                    .unwrap()
                    .contains("not a message of this thread"),
                "{foreign:?}"
            );
            assert_eq!(foreign.status, unknown.status);
            assert_eq!(
                foreign.text.replace(cursor.as_str(), "ID"),
                unknown.text.replace(&other, "ID"),
                "a foreign message cursor is told apart from a random one"
            );
        }
    }

    // Nothing of A (nor of open mode) is in anything B can read.
    let b_view = b.snapshot().await;
    assert!(!b_view.contains(MARK), "B sees A's content: {b_view}");
    let b_context = b.context(&b_thread, "").await;
    assert!(!b_context.contains(MARK), "{b_context}");
    let b_export = b.get(&format!("/v1/threads/{b_thread}/export")).await;
    assert_eq!(b_export.status, 200);
    assert!(!b_export.text.contains(MARK), "{}", b_export.text);
    for id in owned.messages.iter().chain(&owned.turns) {
        assert!(!b_view.contains(id.as_str()), "B's view names {id}");
    }
    let a_list = a.get("/v1/threads?limit=100").await.expect(200);
    assert_eq!(
        page_ids(&a_list).into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([owned.thread.clone(), owned.second.clone()])
    );

    // Nothing changed and nothing reached the upstream.
    assert_eq!(
        app.fake.requests().len(),
        upstream_before,
        "a probe reached the upstream"
    );
    let export_after = a.get(&format!("/v1/threads/{}/export", owned.thread)).await;
    assert_eq!(export_after.status, 200);
    assert!(
        export_after.text == export_before.text,
        "A's export changed:\nbefore: {}\nafter:  {}",
        export_before.text,
        export_after.text
    );
    assert_eq!(a.snapshot().await, snapshot_before, "A's data changed");
    assert_eq!(b.snapshot().await, b_snapshot_before, "B's data changed");
    assert_eq!(db_counts(&app.db_path()), counts_before);
    assert_eq!(sqlite_integrity(&app.db_path()), "ok");
    // The owner still runs turns; the open-mode thread is still stored, just unreachable.
    a.turn_ok(&owned.thread, &json!({"input": "still mine"}))
        .await;
    let open_rows = sqlite_query(
        &app.db_path(),
        &format!("SELECT tenant, message_count FROM threads WHERE id = '{open_thread}'"),
    );
    assert_eq!(open_rows, "default|3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_cursor_error_names_the_parameter_it_came_from() {
    let app = spawn_app().await;
    let thread = app
        .new_thread_id(&json!({"messages": [{"role": "user", "content": "x"}]}))
        .await;
    for param in ["after", "before"] {
        let resp = app
            .get(&format!(
                "/v1/threads/{thread}/messages?{param}={}",
                random_id()
            ))
            .await;
        let error = resp.expect_error(400, "invalid_request");
        assert_eq!(error["param"], param, "{resp:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_into_a_tenant_is_invisible_to_others() {
    let app = spawn_app().await;
    let a = create_key(&app.db_url, "a", "ta").await;
    let b = create_key(&app.db_url, "b", "tb").await;
    let a = keyed(&app.base, &a.key);
    let b = keyed(&app.base, &b.key);
    let body = A_THREAD.replace("REASONING", A_REASONING);
    let thread = id_of(
        &a.send_text(Method::POST, "/v1/threads", &body)
            .await
            .expect(201),
    );
    a.turn_ok(&thread, &json!({"input": "A-secret more"})).await;
    let export = a.get(&format!("/v1/threads/{thread}/export")).await;
    assert_eq!(export.status, 200);

    // Restore it into a new database under tenant `tb` (`import --tenant`): only B sees it
    // there, A's key (in this database) does not exist, open mode is closed.
    let dir = tempfile::tempdir().unwrap();
    let other_db = db_url_in(dir.path());
    let file = dir.path().join("a.ndjson");
    std::fs::write(&file, &export.text).unwrap();
    let run = cli(
        &other_db,
        &["import", file.to_str().unwrap(), "--tenant", "tb"],
        "info",
    )
    .await;
    assert!(run.status.success(), "{run:?}");
    let kb = create_key(&other_db, "b", "tb").await;
    let kc = create_key(&other_db, "c", "tc").await;
    let service = Service::start(&other_db, &app.fake.base_url(), &Opts::default());
    let restored = keyed(&service.base, &kb.key)
        .get(&format!("/v1/threads/{thread}/export"))
        .await;
    assert_eq!(restored.status, 200, "{restored:?}");
    assert_eq!(
        restored.text, export.text,
        "import -> export is not byte-identical"
    );
    keyed(&service.base, &kc.key)
        .get(&format!("/v1/threads/{thread}/export"))
        .await
        .expect_error(404, "not_found");
    // In the first database, B still sees nothing of A.
    b.get(&format!("/v1/threads/{thread}/export"))
        .await
        .expect_error(404, "not_found");
}

/// Keys for tenants `ta` and `tb`, and a new empty thread of `ta`.
async fn two_tenants_and_a_thread_of_a(app: &App) -> (Api, Api, String) {
    let a = create_key(&app.db_url, "a", "ta").await;
    let b = create_key(&app.db_url, "b", "tb").await;
    let a = keyed(&app.base, &a.key);
    let b = keyed(&app.base, &b.key);
    let thread = id_of(
        &a.send_text(Method::POST, "/v1/threads", "{}")
            .await
            .expect(201),
    );
    (a, b, thread)
}

// A thread with a turn running is known to this process as busy; another tenant posting a
// turn to its id must still get the 404 of a thread that does not exist, not the 409 that
// would tell it the thread exists and is running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_gets_404_for_a_thread_with_a_turn_running() {
    let app = spawn_app_with(Opts::default().fake_delay(std::time::Duration::from_secs(4))).await;
    let (a, b, thread) = two_tenants_and_a_thread_of_a(&app).await;
    let running = tokio::spawn({
        let (a, thread) = (a.clone(), thread.clone());
        async move { a.turn(&thread, &json!({"input": "slow one"})).await }
    });
    // Once the model has been called, the turn is running: A's next turn is refused...
    wait_for_requests(&app.fake, 1).await;
    a.turn(&thread, &json!({"input": "me too"}))
        .await
        .expect_error(409, "thread_busy");
    // ...and B, on the same id, finds no thread.
    b.turn(&thread, &json!({"input": "probe"}))
        .await
        .expect_error(404, "not_found");
    running.await.unwrap().expect(200);
}

// Another tenant's DELETE is answered 404 and changes nothing, down to the owner's cached
// context: the owner's next turn still finds its context in memory, without reading the
// thread again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_delete_leaves_the_owners_cached_context() {
    let app = spawn_app().await;
    let (a, b, thread) = two_tenants_and_a_thread_of_a(&app).await;
    a.turn(&thread, &json!({"input": "one"})).await.expect(200);
    let reads = |metrics: &str, source: &str| -> u64 {
        let series = format!("threadkeeper_context_reads_total{{source=\"{source}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series.as_str()))
            .map_or(0, |n| n.trim().parse().unwrap_or(0))
    };
    let before = app.get("/metrics").await.text;
    b.send_text(Method::DELETE, &format!("/v1/threads/{thread}"), "")
        .await
        .expect_error(404, "not_found");
    a.turn(&thread, &json!({"input": "two"})).await.expect(200);
    let after = app.get("/metrics").await.text;
    assert_eq!(
        reads(&after, "database"),
        reads(&before, "database"),
        "the owner's turn read its thread again:\n{after}"
    );
    assert_eq!(reads(&after, "cache"), reads(&before, "cache") + 1);
}
