//! Service keys and open mode (SPEC section 7): keys created or revoked by the CLI while
//! `serve` runs count at the next request, revoking every key does not reopen the service,
//! `keys list` and the database never hold a key, malformed credentials are 401 with the
//! Bearer challenge, the per-key rate limit, and the refusal to serve open on a non-loopback
//! address.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;
use crate::support::*;

/// Every `/v1` route, with ids that name nothing: without a key each is 401, before any
/// id, body or query is looked at.
fn v1_routes() -> Vec<(Method, String, Option<&'static str>)> {
    let t = random_id();
    let m = random_id();
    vec![
        (Method::GET, "/v1/threads".into(), None),
        (Method::GET, "/v1/threads?limit=0".into(), None),
        (Method::POST, "/v1/threads".into(), Some("{}")),
        (Method::POST, "/v1/threads".into(), Some("{not json")),
        (Method::GET, format!("/v1/threads/{t}"), None),
        (Method::GET, "/v1/threads/not-an-id".into(), None),
        (Method::PATCH, format!("/v1/threads/{t}"), Some("{}")),
        (Method::DELETE, format!("/v1/threads/{t}"), None),
        (Method::GET, format!("/v1/threads/{t}/messages"), None),
        (
            Method::POST,
            format!("/v1/threads/{t}/messages"),
            Some(r#"{"messages":[{"role":"user","content":"x"}]}"#),
        ),
        (Method::GET, format!("/v1/threads/{t}/messages/{m}"), None),
        (
            Method::GET,
            format!("/v1/threads/{t}/messages/{m}/reasoning_details"),
            None,
        ),
        (Method::GET, format!("/v1/threads/{t}/turns"), None),
        (
            Method::POST,
            format!("/v1/threads/{t}/turns"),
            Some(r#"{"input":"x"}"#),
        ),
        (Method::GET, format!("/v1/threads/{t}/turns/{m}"), None),
        (Method::GET, format!("/v1/threads/{t}/context"), None),
        (Method::GET, format!("/v1/threads/{t}/export"), None),
    ]
}

/// Request headers as raw bytes.
type Headers<'a> = Vec<(&'a str, Vec<u8>)>;

async fn assert_every_route_refused(api: &Api, headers: &[(&str, Vec<u8>)], why: &str) {
    for (method, path, body) in v1_routes() {
        let mut all: Vec<(&str, Vec<u8>)> = headers.to_vec();
        if body.is_some() {
            all.push(("content-type", b"application/json".to_vec()));
        }
        let resp = try_raw(
            api,
            method,
            &path,
            &all,
            body.map(|b| b.as_bytes().to_vec()),
        )
        .await
        .unwrap_or_else(|e| panic!("{why}: {e}"));
        assert_eq!(resp.status, 401, "{why}: {resp:?}");
        assert_unauthorized(&resp);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_created_and_revoked_while_serving_count_at_the_next_request() {
    let mut app = spawn_app().await;
    // Open mode: no key was ever created.
    app.get("/v1/threads").await.expect(200);

    let k1 = create_key(&app.db_url, "first", "acme").await;
    // No restart: the next request needs a key.
    assert_unauthorized(&app.get("/v1/threads").await);
    let a1 = keyed(&app.base, &k1.key);
    let thread = a1.new_thread_id(&json!({"metadata": {"by": "k1"}})).await;

    let k2 = create_key(&app.db_url, "second", "acme").await;
    let a2 = keyed(&app.base, &k2.key);
    // A thread belongs to the tenant, not to the key that created it.
    a2.thread(&thread).await;

    revoke_key(&app.db_url, &k1.id).await;
    assert_unauthorized(&a1.get("/v1/threads").await);
    assert_unauthorized(&a1.get(&format!("/v1/threads/{thread}")).await);
    a2.thread(&thread).await;

    revoke_key(&app.db_url, &k2.id).await;
    assert_unauthorized(&a2.get("/v1/threads").await);
    // Revoking every key does not reopen the service, also not after a restart.
    assert_unauthorized(&app.get("/v1/threads").await);
    app.restart();
    assert_unauthorized(&app.api.get("/v1/threads").await);
    assert_unauthorized(&keyed(&app.service.base, &k1.key).get("/v1/threads").await);

    // A key made now works at once on the restarted process, on the same tenant's data.
    let k3 = create_key(&app.db_url, "third", "acme").await;
    let a3 = keyed(&app.service.base, &k3.key);
    assert_eq!(a3.thread(&thread).await["metadata"]["by"], "k1");

    let (listing, rows) = list_keys(&app.db_url).await;
    for key in [&k1, &k2, &k3] {
        assert!(
            !listing.contains(&key.key),
            "keys list shows a key:\n{listing}"
        );
        let row = rows
            .iter()
            .find(|r| r.id == key.id)
            .unwrap_or_else(|| panic!("{} not listed:\n{listing}", key.id));
        assert_eq!(row.tenant, "acme");
        assert_timestamp(&json!(row.created));
        let want = if key.id == k3.id { "active" } else { "revoked" };
        assert_eq!(row.status, want, "{listing}");
        // Every key here was used at least once.
        assert_timestamp(&json!(row.last_used));
    }
    assert_eq!(
        rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["first", "second", "third"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_hash_of_each_key_is_stored() {
    let app = spawn_app().await;
    let keys = [
        create_key(&app.db_url, "one", "t1").await,
        create_key(&app.db_url, "two", "t2").await,
    ];
    for key in &keys {
        keyed(&app.base, &key.key)
            .get("/v1/threads")
            .await
            .expect(200);
    }
    revoke_key(&app.db_url, &keys[1].id).await;
    let (listing, rows) = list_keys(&app.db_url).await;
    assert_eq!(rows[0].last_used.len(), 24, "{listing}");
    for key in &keys {
        let stored = sqlite_query(
            &app.db_path(),
            &format!(
                "SELECT key_sha256 FROM service_keys WHERE id = '{}'",
                key.id
            ),
        );
        let want: String = {
            use sha2::Digest;
            sha2::Sha256::digest(key.key.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        assert_eq!(stored, want, "service_keys.key_sha256 of {}", key.id);
        for (file, bytes) in db_files(&app.db_path()) {
            assert!(
                !contains_bytes(&bytes, key.key.as_bytes()),
                "{file} contains a service key"
            );
            // Not even the random part without its prefix.
            assert!(
                !contains_bytes(&bytes, &key.key.as_bytes()[3..]),
                "{file} contains a service key's random part"
            );
        }
        assert!(!listing.contains(&key.key[3..]), "{listing}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_wrong_credentials_are_401_with_the_bearer_challenge() {
    let app = spawn_app().await;
    let key = create_key(&app.db_url, "good", "t").await;
    let good = key.key.clone();
    let mut flipped = good.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    // Over 512 bytes: refused, even a good key padded with blanks (inside the value: hyper
    // trims blanks at its ends).
    let padded = format!("Bearer{}{good}", " ".repeat(600));
    let long = format!("Bearer tk_{}", "A".repeat(100_000));
    let cases: Vec<(&str, Headers)> = vec![
        ("no header", vec![]),
        ("empty", vec![("authorization", b"".to_vec())]),
        ("scheme only", vec![("authorization", b"Bearer".to_vec())]),
        (
            "scheme and blank",
            vec![("authorization", b"Bearer ".to_vec())],
        ),
        (
            "key without scheme",
            vec![("authorization", good.as_bytes().to_vec())],
        ),
        (
            "basic scheme",
            vec![("authorization", format!("Basic {good}").into_bytes())],
        ),
        (
            "token scheme",
            vec![("authorization", format!("Token {good}").into_bytes())],
        ),
        (
            "one character changed",
            vec![("authorization", format!("Bearer {flipped}").into_bytes())],
        ),
        (
            "truncated",
            vec![(
                "authorization",
                format!("Bearer {}", &good[..30]).into_bytes(),
            )],
        ),
        (
            "prefix only",
            vec![("authorization", b"Bearer tk_".to_vec())],
        ),
        (
            "the upstream key",
            vec![("authorization", format!("Bearer {TEST_KEY}").into_bytes())],
        ),
        (
            "sql in the token",
            vec![("authorization", b"Bearer tk_' OR '1'='1".to_vec())],
        ),
        (
            "sql in the token 2",
            vec![(
                "authorization",
                b"Bearer tk_\"; DROP TABLE service_keys; --".to_vec(),
            )],
        ),
        (
            "non-ascii bytes",
            vec![("authorization", b"Bearer tk_\xff\xfe\xfd".to_vec())],
        ),
        (
            "over 512 bytes",
            vec![("authorization", padded.into_bytes())],
        ),
        ("100 KB", vec![("authorization", long.into_bytes())]),
        (
            "two tokens",
            vec![(
                "authorization",
                format!("Bearer {good} {good}").into_bytes(),
            )],
        ),
        (
            "duplicate header, bad first",
            vec![
                ("authorization", b"Bearer tk_nope".to_vec()),
                ("authorization", format!("Bearer {good}").into_bytes()),
            ],
        ),
    ];
    let anonymous = Api::new(&app.base);
    for (label, headers) in &cases {
        let resp = try_raw(&anonymous, Method::GET, "/v1/threads", headers, None)
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(resp.status, 401, "{label}: {resp:?}");
        assert_unauthorized(&resp);
    }
    // Each route, without a key and with a wrong one.
    assert_every_route_refused(&anonymous, &[], "no key").await;
    assert_every_route_refused(
        &anonymous,
        &[("authorization", format!("Bearer {flipped}").into_bytes())],
        "wrong key",
    )
    .await;
    // The scheme is case-insensitive (RFC 9110); the good key still works.
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let headers = [("authorization", format!("{scheme} {good}").into_bytes())];
        let resp = try_raw(&anonymous, Method::GET, "/v1/threads", &headers, None)
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{scheme}: {resp:?}");
    }
    // What needs no key: probes, metrics and the API description.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"] {
        let resp = anonymous.get(path).await;
        assert_eq!(resp.status, 200, "{resp:?}");
    }
    assert!(!app.logs().contains("panicked"), "{}", app.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_without_a_tenant_owns_the_open_mode_data() {
    let app = spawn_app().await;
    let open = app
        .new_thread_id(&json!({"metadata": {"made": "open"}}))
        .await;
    let run = cli(&app.db_url, &["keys", "create", "--name", "ops"], "info").await;
    assert!(run.status.success(), "{run:?}");
    let key = run.stdout.trim().to_owned();
    assert_key_format(&key);
    let ops = keyed(&app.base, &key);
    assert_eq!(ops.thread(&open).await["metadata"]["made"], "open");
    let other = create_key(&app.db_url, "other", "elsewhere").await;
    keyed(&app.base, &other.key)
        .get(&format!("/v1/threads/{open}"))
        .await
        .expect_error(404, "not_found");
    let (_, rows) = list_keys(&app.db_url).await;
    assert_eq!(rows[0].tenant, "default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_cli_refuses_bad_arguments() {
    let app = spawn_app().await;
    let empty = cli(&app.db_url, &["keys", "create", "--name", ""], "info").await;
    assert!(!empty.status.success(), "{empty:?}");
    assert!(empty.stdout.is_empty(), "{empty:?}");
    let blank_tenant = cli(
        &app.db_url,
        &["keys", "create", "--name", "x", "--tenant", " "],
        "info",
    )
    .await;
    assert!(!blank_tenant.status.success(), "{blank_tenant:?}");
    let unknown = cli(&app.db_url, &["keys", "revoke", &random_id()], "info").await;
    assert!(!unknown.status.success(), "{unknown:?}");
    let not_an_id = cli(
        &app.db_url,
        &["keys", "revoke", "'; DELETE FROM service_keys; --"],
        "info",
    )
    .await;
    assert!(!not_an_id.status.success(), "{not_an_id:?}");
    // None of that created a key: the service is still open.
    app.get("/v1/threads").await.expect(200);
    let (_, rows) = list_keys(&app.db_url).await;
    assert!(rows.is_empty(), "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_per_key_and_answers_429_with_retry_after() {
    let app = spawn_app_with(Opts::default().args(&["--rate-limit-per-minute", "3"])).await;
    let a = create_key(&app.db_url, "a", "ta").await;
    let b = create_key(&app.db_url, "b", "ta").await;
    let a = keyed(&app.base, &a.key);
    let b = keyed(&app.base, &b.key);
    for _ in 0..3 {
        a.get("/v1/threads").await.expect(200);
    }
    let limited = a.post("/v1/threads", &json!({})).await;
    limited.expect_error(429, "rate_limited");
    let retry: u64 = limited
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {limited:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("Retry-After is not seconds ({e}): {limited:?}"));
    assert!((1..=21).contains(&retry), "{limited:?}");
    // The refused create stored nothing; another key of the same tenant has its own budget.
    let list = b.get("/v1/threads").await.expect(200);
    assert_eq!(list["data"], json!([]));
    // Probes do not count against anyone.
    for _ in 0..5 {
        app.get("/healthz").await.expect(200);
    }
    a.get("/v1/threads").await.expect_error(429, "rate_limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn there_is_no_rate_limit_by_default() {
    let app = spawn_app().await;
    let key = create_key(&app.db_url, "busy", "busy").await;
    let api = keyed(&app.base, &key.key);
    for _ in 0..120 {
        api.get("/v1/threads").await.expect(200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_refuses_a_non_loopback_bind() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = db_url_in(dir.path());
    match serve_on("0.0.0.0:0", &db_url, "http://127.0.0.1:9", &[]) {
        Started::Listening(p) => panic!(
            "serve listened on {} without keys:\n{}",
            p.listening,
            p.logs()
        ),
        Started::Exited { status, logs } => {
            assert!(!status.success(), "exit status {status}: {logs}");
            for hint in ["refusing", "keys create", "--allow-unauthenticated"] {
                assert!(logs.contains(hint), "no `{hint}` in:\n{logs}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_unauthenticated_serves_open_on_a_non_loopback_bind() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = db_url_in(dir.path());
    let process = match serve_on(
        "0.0.0.0:0",
        &db_url,
        "http://127.0.0.1:9",
        &["--allow-unauthenticated"],
    ) {
        Started::Listening(p) => p,
        Started::Exited { status, logs } => panic!("exited {status}:\n{logs}"),
    };
    assert!(
        process.listening.ip().is_unspecified(),
        "{}",
        process.listening
    );
    let api = Api::new(&process.loopback_base());
    let id = api.new_thread_id(&json!({"metadata": {"k": "v"}})).await;
    api.thread(&id).await;
    assert!(
        process.logs().contains("--allow-unauthenticated"),
        "no warning about serving open:\n{}",
        process.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_bind_starts_once_a_key_exists_even_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = db_url_in(dir.path());
    let key = create_key(&db_url, "net", "net").await;
    {
        let process = match serve_on("0.0.0.0:0", &db_url, "http://127.0.0.1:9", &[]) {
            Started::Listening(p) => p,
            Started::Exited { status, logs } => panic!("exited {status}:\n{logs}"),
        };
        let base = process.loopback_base();
        assert_unauthorized(&Api::new(&base).get("/v1/threads").await);
        keyed(&base, &key.key).get("/v1/threads").await.expect(200);
    }
    // Every key revoked: it still starts (keys exist), and stays closed.
    revoke_key(&db_url, &key.id).await;
    let process = match serve_on("0.0.0.0:0", &db_url, "http://127.0.0.1:9", &[]) {
        Started::Listening(p) => p,
        Started::Exited { status, logs } => panic!("exited {status}:\n{logs}"),
    };
    let base = process.loopback_base();
    assert_unauthorized(&Api::new(&base).get("/v1/threads").await);
    assert_unauthorized(&keyed(&base, &key.key).get("/v1/threads").await);
    let resp = Api::new(&base)
        .send(Method::GET, "/healthz", None, None)
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
}

// A request with a query string its route does not take is refused 400, but only once its
// key is checked: without a valid key it hears 401, as for every other mistake in it. Routes
// that need no key refuse the query string at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_query_string_is_refused_after_the_key_check() {
    let app = spawn_app().await;
    let key = create_key(&app.db_url, "a", "ta").await;
    let owner = keyed(&app.base, &key.key);
    let thread = id_of(
        &owner
            .send_text(Method::POST, "/v1/threads", "{}")
            .await
            .expect(201),
    );
    let anonymous = Api::new(&app.base);
    let stray = [
        (Method::GET, format!("/v1/threads/{thread}?colour=red")),
        (Method::POST, "/v1/threads?colour=red".to_owned()),
        (Method::DELETE, format!("/v1/threads/{thread}?colour=red")),
    ];
    for (method, path) in &stray {
        let resp = try_raw(&anonymous, method.clone(), path, &[], None)
            .await
            .unwrap();
        assert_eq!(resp.status, 401, "{method} {path} without a key: {resp:?}");
        assert_unauthorized(&resp);
        let resp = try_raw(
            &anonymous,
            method.clone(),
            path,
            &[("authorization", format!("Bearer {}", key.key).into_bytes())],
            Some(b"{}".to_vec()),
        )
        .await
        .unwrap();
        assert_eq!(resp.status, 400, "{method} {path} with the key: {resp:?}");
    }
    // Nothing was deleted by the refused DELETE.
    owner.thread(&thread).await;
    let resp = anonymous.get("/healthz?colour=red").await;
    assert_eq!(resp.status, 400, "{resp:?}");
}
