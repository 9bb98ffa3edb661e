//! Shared test plumbing: start the real `threadkeeper` binary on port 0 against its own
//! SQLite file and its own in-process fake OpenRouter, talk to it over HTTP, and read raw
//! JSON bytes out of answers without re-serialising them.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader};
use std::ops::Deref;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use fake_openrouter::{FakeConfig, FakeUpstream};
use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::Method;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// The upstream key the service is started with; it must never leak.
pub const TEST_KEY: &str = "sk-or-test-key";
/// The service's default model when `--default-model` is not given.
pub const DEFAULT_MODEL: &str = "deepseek/deepseek-v3.2-exp";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Configuration the environment could carry into a child process; every test sets its own.
pub const AMBIENT_ENV: [&str; 15] = [
    "OPENROUTER_API_KEY",
    "OPENROUTER_BASE_URL",
    "THREADKEEPER_BIND",
    "THREADKEEPER_DATABASE_URL",
    "THREADKEEPER_DEFAULT_MODEL",
    "THREADKEEPER_DEFAULT_REASONING",
    "THREADKEEPER_UPSTREAM_TIMEOUT",
    "THREADKEEPER_MAX_BODY",
    "THREADKEEPER_UPSTREAM_ATTEMPTS",
    "THREADKEEPER_LOG_FORMAT",
    "THREADKEEPER_SHUTDOWN_GRACE",
    "THREADKEEPER_SQLITE_SYNCHRONOUS",
    "THREADKEEPER_ALLOW_UNAUTHENTICATED",
    "THREADKEEPER_RATE_LIMIT_PER_MINUTE",
    "THREADKEEPER_CONTEXT_CACHE",
];

/// Runs a `threadkeeper` command (export, import, keys, ...) to its end, logging at warn.
pub fn run_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_threadkeeper"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run threadkeeper")
}

/// Runs `serve` on a fresh database with `extra` flags, expecting it to refuse to start;
/// returns its stderr. Bounded: a serve that wrongly accepts the flags would run forever.
pub async fn serve_refusing(extra: &[&str]) -> String {
    serve_refusing_with_env(extra, &[]).await
}

/// `serve_refusing` with these environment variables set.
pub async fn serve_refusing_with_env(extra: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_threadkeeper"));
    command
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--database-url",
            &db_url_in(dir.path()),
        ])
        .args(extra)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for var in AMBIENT_ENV {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    let mut child = command.spawn().expect("spawn serve");
    for _ in 0..100 {
        if child.try_wait().expect("try_wait").is_some() {
            let out = child.wait_with_output().expect("serve output");
            assert!(!out.status.success(), "serve accepted {extra:?}");
            return String::from_utf8_lossy(&out.stderr).into_owned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("serve accepted {extra:?} and kept running");
}
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start one test's service and fake upstream.
#[derive(Clone, Debug)]
pub struct Opts {
    /// Extra `serve` flags, e.g. `["--upstream-attempts", "1"]`.
    pub args: Vec<String>,
    /// `OPENROUTER_API_KEY`; `None` leaves it unset.
    pub api_key: Option<String>,
    pub fake: FakeConfig,
    pub rust_log: String,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            args: Vec::new(),
            api_key: Some(TEST_KEY.into()),
            fake: FakeConfig::default(),
            rust_log: "info".into(),
        }
    }
}

impl Opts {
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    pub fn strict(mut self) -> Self {
        self.fake.strict = true;
        self
    }

    pub fn without_key(mut self) -> Self {
        self.api_key = None;
        self
    }

    pub fn rust_log(mut self, filter: &str) -> Self {
        self.rust_log = filter.into();
        self
    }

    /// The fake's `default_delay`: between generated stream events, or before an unscripted
    /// JSON body.
    pub fn fake_delay(mut self, delay: Duration) -> Self {
        self.fake.default_delay = delay;
        self
    }
}

/// One running `threadkeeper serve` child process. Killed (SIGKILL) on drop.
pub struct Service {
    child: Child,
    pub base: String,
    logs: Arc<Mutex<String>>,
    /// Whether its `RUST_LOG` logs each request at info (what `logs()` waits for).
    logs_requests: bool,
}

impl Service {
    /// Starts `threadkeeper serve` and waits for its `listening on` line.
    pub fn start(db_url: &str, upstream_url: &str, opts: &Opts) -> Service {
        let mut command = Command::new(env!("CARGO_BIN_EXE_threadkeeper"));
        command
            .arg("serve")
            .args(["--bind", "127.0.0.1:0", "--database-url", db_url])
            .args(["--upstream-url", upstream_url])
            .args(&opts.args)
            .env("RUST_LOG", &opts.rust_log)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Ambient configuration must not leak into a test.
        for var in AMBIENT_ENV {
            command.env_remove(var);
        }
        if let Some(key) = &opts.api_key {
            command.env("OPENROUTER_API_KEY", key);
        }
        let mut child = command.spawn().expect("spawn threadkeeper serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            let mut tx = Some(tx);
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let text = strip_ansi(&String::from_utf8_lossy(&line));
                sink.lock().unwrap().push_str(&text);
                if let Some(addr) = listening_addr(&text) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "threadkeeper did not log `listening on` within {STARTUP_TIMEOUT:?}; logs:\n{}",
                    logs.lock().unwrap()
                );
            }
        };
        let level = opts.rust_log.split(',').next().unwrap_or_default();
        Service {
            child,
            base: format!("http://{addr}"),
            logs,
            logs_requests: ["info", "debug", "trace"].contains(&level),
        }
    }

    pub fn api(&self) -> Api {
        Api::new(&self.base)
    }

    /// Everything the process logged up to now. The service writes its log lines out in
    /// batches (every 20 ms), so a request with a marker id is logged first and waited for:
    /// lines go out in order, so once the marker's line is here, every earlier one is too.
    pub fn logs(&self) -> String {
        self.settle_logs();
        self.logs.lock().unwrap().clone()
    }

    fn settle_logs(&self) {
        use std::io::{Read, Write};
        if !self.logs_requests {
            // No request line to wait for: give the service's writer its 20 ms, and more.
            std::thread::sleep(Duration::from_millis(200));
            return;
        }
        static MARKERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let marker = format!(
            "log-marker-{}-{}",
            std::process::id(),
            MARKERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let asked = std::net::TcpStream::connect_timeout(&self.addr(), Duration::from_secs(2))
            .and_then(|mut stream| {
                stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                write!(
                    stream,
                    "GET /healthz HTTP/1.1\r\nhost: test\r\nx-request-id: {marker}\r\n\
                     connection: close\r\n\r\n"
                )?;
                stream.read_to_end(&mut Vec::new())
            });
        if asked.is_err() {
            // Not serving (stopped or killed): what it wrote before is all there is; give
            // the reader of its stderr a moment to catch up.
            std::thread::sleep(Duration::from_millis(100));
            return;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !self.logs.lock().unwrap().contains(&marker) {
            assert!(
                std::time::Instant::now() < deadline,
                "the service did not log the marker request {marker} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `host:port` the service listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.base
            .trim_start_matches("http://")
            .parse()
            .expect("service address")
    }

    /// Sends a signal by name (`TERM`, `INT`) with the shell's `kill` builtin (every POSIX
    /// shell has one; a `kill` executable may not be installed).
    pub fn signal(&self, name: &str) {
        let status = Command::new("sh")
            .args(["-c", "kill -s \"$0\" \"$1\"", name, &self.pid().to_string()])
            .status()
            .expect("run sh");
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Sends SIGTERM and waits (up to 10 s) for the process to exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(10))
            .await
            .expect("exited within 10 s of SIGTERM")
    }

    /// Waits up to `limit` for the process to exit on its own; `None` if it is still running.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

fn listening_addr(line: &str) -> Option<String> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    addr.contains(':').then_some(addr)
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One test's world: a fake upstream, a temp dir holding the SQLite file, the service.
pub struct App {
    pub fake: FakeUpstream,
    pub dir: TempDir,
    pub db_url: String,
    pub service: Service,
    pub api: Api,
    opts: Opts,
}

impl Deref for App {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

pub async fn spawn_app() -> App {
    spawn_app_with(Opts::default()).await
}

pub async fn spawn_app_with(opts: Opts) -> App {
    let fake = FakeUpstream::start(opts.fake.clone())
        .await
        .expect("start the fake upstream");
    let dir = tempfile::tempdir().expect("temp dir");
    let db_url = db_url_in(dir.path());
    let service = Service::start(&db_url, &fake.base_url(), &opts);
    let api = service.api();
    App {
        fake,
        dir,
        db_url,
        service,
        api,
        opts,
    }
}

pub fn db_url_in(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("test.db").display())
}

impl App {
    /// SIGKILL the service and start a new one on the same database file and fake.
    pub fn restart(&mut self) {
        self.service.kill();
        self.service = Service::start(&self.db_url, &self.fake.base_url(), &self.opts);
        self.api = self.service.api();
    }

    /// A second service process on the same database file and the same fake.
    pub fn spawn_peer(&self) -> Service {
        Service::start(&self.db_url, &self.fake.base_url(), &self.opts)
    }

    pub fn logs(&self) -> String {
        self.service.logs()
    }

    /// The SQLite file of this app.
    pub fn db_path(&self) -> std::path::PathBuf {
        self.dir.path().join("test.db")
    }

    /// Gives the thread stored settings no turn can use (as a database edited by hand
    /// might), behind the service's back.
    pub fn spoil_settings(&self, thread_id: &str) {
        let db = rusqlite::Connection::open(self.db_path()).expect("open the database");
        db.busy_timeout(Duration::from_secs(10))
            .expect("busy timeout");
        db.execute(
            "UPDATE threads SET reasoning_replay = 'bogus' WHERE id = ?",
            [thread_id],
        )
        .expect("spoil the settings");
    }

    /// Lets the lease of the turn running on `thread_id` lapse behind its back, as if its
    /// process had stalled past it (the turn itself runs on, unaware).
    pub fn lapse_lease(&self, thread_id: &str) {
        let db = rusqlite::Connection::open(self.db_path()).expect("open the database");
        db.busy_timeout(Duration::from_secs(10))
            .expect("busy timeout");
        let lapsed = db
            .execute(
                "UPDATE threads SET lease_expires_at = 0 \
                 WHERE id = ? AND lease_turn_id IS NOT NULL",
                [thread_id],
            )
            .expect("lapse the lease");
        assert_eq!(lapsed, 1, "no turn holds {thread_id}");
    }
}

/// `PRAGMA integrity_check` of a SQLite file, read with python3's sqlite3 module (the
/// test binary has no SQLite client of its own).
pub fn sqlite_integrity(path: &Path) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
             print(';'.join(r[0] for r in c.execute('PRAGMA integrity_check')))",
        ])
        .arg(path)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "integrity_check failed to run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// An HTTP client for one service; keeps a transcript of every answer it got.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    transcript: Arc<Mutex<Vec<String>>>,
}

/// One answer: status, headers and the exact body text.
#[derive(Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    /// `METHOD path`, for failure messages.
    pub what: String,
}

impl fmt::Debug for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {} {}", self.what, self.status, self.text)
    }
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("{self:?}: answer is not JSON: {e}"))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// Asserts the status and returns the JSON body.
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected status: {self:?}");
        self.json()
    }

    /// Asserts an error answer of the contract's shape with this status and code; returns
    /// the `error` object.
    pub fn expect_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "unexpected status: {self:?}");
        let error = assert_error_shape(self);
        assert_eq!(error["code"], code, "unexpected error code: {self:?}");
        error
    }
}

/// `{"error":{"type","code","message","param"?,"turn_id"?,"upstream_status"?}}`, JSON typed.
pub fn assert_error_shape(resp: &Resp) -> Value {
    error_shape(resp).unwrap_or_else(|problem| panic!("{problem}: {resp:?}"))
}

/// The `error` object when the answer has the contract's error shape, else what is wrong.
pub fn error_shape(resp: &Resp) -> Result<Value, String> {
    let ct = resp.header("content-type").unwrap_or_default();
    if !ct.starts_with("application/json") {
        return Err(format!("error content type is `{ct}`"));
    }
    let body: Value =
        serde_json::from_str(&resp.text).map_err(|e| format!("error body is not JSON: {e}"))?;
    let top = body.as_object().ok_or("error body is not an object")?;
    if top.len() != 1 {
        return Err("error envelope has keys besides `error`".into());
    }
    let error = body["error"].as_object().ok_or("no `error` object")?;
    for key in ["type", "code", "message"] {
        if !error.get(key).is_some_and(Value::is_string) {
            return Err(format!("error.{key} is missing or not a string"));
        }
    }
    for (key, value) in error {
        let ok = match key.as_str() {
            "type" | "code" | "message" => true,
            "param" | "turn_id" => value.is_string(),
            "upstream_status" => value.is_u64(),
            _ => false,
        };
        if !ok {
            return Err(format!("unexpected error field `{key}`: {value}"));
        }
    }
    Ok(body["error"].clone())
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .expect("reqwest client"),
            transcript: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Every header and body this client received, for leak checks.
    pub fn transcript(&self) -> Vec<String> {
        self.transcript.lock().unwrap().clone()
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Resp {
        self.send_with(method, path, &[], content_type, body).await
    }

    /// [`Api::send`] with extra request headers.
    pub async fn send_with(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Resp {
        let what = format!("{method} {path}");
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(ct) = content_type {
            request = request.header(CONTENT_TYPE, ct);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: request failed: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("{what}: reading the body failed: {e}"));
        self.transcript
            .lock()
            .unwrap()
            .push(format!("{headers:?}\n{text}"));
        Resp {
            status,
            headers,
            text,
            what,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None, None).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, None, None).await
    }

    /// Sends JSON text exactly as given.
    pub async fn send_text(&self, method: Method, path: &str, text: &str) -> Resp {
        self.send(
            method,
            path,
            Some("application/json"),
            Some(text.as_bytes().to_vec()),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send_text(Method::POST, path, &body.to_string()).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Resp {
        self.send_text(Method::PATCH, path, &body.to_string()).await
    }

    pub async fn create_thread(&self, body: &Value) -> Value {
        self.post("/v1/threads", body).await.expect(201)
    }

    pub async fn new_thread_id(&self, body: &Value) -> String {
        id_of(&self.create_thread(body).await)
    }

    pub async fn turn(&self, thread_id: &str, body: &Value) -> Resp {
        self.post(&format!("/v1/threads/{thread_id}/turns"), body)
            .await
    }

    /// A turn request with exact body text and extra headers (e.g. `Idempotency-Key`).
    pub async fn turn_with(&self, thread_id: &str, text: &str, headers: &[(&str, &str)]) -> Resp {
        self.send_with(
            Method::POST,
            &format!("/v1/threads/{thread_id}/turns"),
            headers,
            Some("application/json"),
            Some(text.as_bytes().to_vec()),
        )
        .await
    }

    /// Runs a turn that must complete; returns the Turn.
    pub async fn turn_ok(&self, thread_id: &str, body: &Value) -> Value {
        let turn = self.turn(thread_id, body).await.expect(200);
        assert_eq!(turn["status"], "completed", "{turn}");
        turn
    }

    pub async fn thread(&self, thread_id: &str) -> Value {
        self.get(&format!("/v1/threads/{thread_id}"))
            .await
            .expect(200)
    }

    pub async fn messages(&self, thread_id: &str) -> Vec<Value> {
        let list = self
            .get(&format!("/v1/threads/{thread_id}/messages?limit=100"))
            .await
            .expect(200);
        list["data"].as_array().cloned().unwrap_or_default()
    }

    pub async fn turns(&self, thread_id: &str) -> Vec<Value> {
        let list = self
            .get(&format!("/v1/threads/{thread_id}/turns?limit=100"))
            .await
            .expect(200);
        list["data"].as_array().cloned().unwrap_or_default()
    }

    /// One turn with its audit record, as text (raw bytes matter).
    pub async fn turn_detail(&self, thread_id: &str, turn_id: &str) -> Resp {
        let resp = self
            .get(&format!("/v1/threads/{thread_id}/turns/{turn_id}"))
            .await;
        assert_eq!(resp.status, 200, "{resp:?}");
        resp
    }

    /// The context the next turn would send, as exact text.
    pub async fn context(&self, thread_id: &str, query: &str) -> String {
        let resp = self
            .get(&format!("/v1/threads/{thread_id}/context{query}"))
            .await;
        assert_eq!(resp.status, 200, "{resp:?}");
        resp.text
    }

    /// Every observable byte of the database through the API: the thread list, and per
    /// thread its messages, turns and each turn's audit record.
    pub async fn snapshot(&self) -> String {
        let threads = self.get("/v1/threads?limit=100").await;
        assert_eq!(threads.status, 200, "{threads:?}");
        let mut out = threads.text.clone();
        for thread in threads.json()["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let id = id_of(&thread);
            out.push_str(
                &self
                    .get(&format!("/v1/threads/{id}/messages?limit=100"))
                    .await
                    .text,
            );
            let turns = self.get(&format!("/v1/threads/{id}/turns?limit=100")).await;
            out.push_str(&turns.text);
            for turn in turns.json()["data"].as_array().cloned().unwrap_or_default() {
                out.push_str(&self.turn_detail(&id, &id_of(&turn)).await.text);
            }
        }
        out
    }
}

pub fn id_of(object: &Value) -> String {
    object["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {object}"))
        .to_owned()
}

/// The exact bytes of a nested value: each step is an object key or an array index.
pub fn raw_at(json: &str, path: &[&str]) -> Option<String> {
    let mut current: Box<RawValue> = serde_json::from_str(json.trim_start())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {json}"));
    for step in path {
        let text = current.get();
        current = if text.starts_with('[') {
            let index: usize = step.parse().ok()?;
            let mut items: Vec<Box<RawValue>> = serde_json::from_str(text).ok()?;
            if index >= items.len() {
                return None;
            }
            items.swap_remove(index)
        } else if text.starts_with('{') {
            let mut fields: BTreeMap<String, Box<RawValue>> = serde_json::from_str(text).ok()?;
            fields.remove(*step)?
        } else {
            return None;
        };
    }
    Some(current.get().to_owned())
}

/// The top-level fields of an object, each as its exact bytes.
pub fn raw_fields(json: &str) -> BTreeMap<String, String> {
    let fields: BTreeMap<String, Box<RawValue>> = serde_json::from_str(json.trim_start())
        .unwrap_or_else(|e| panic!("not a JSON object ({e}): {json}"));
    fields
        .into_iter()
        .map(|(k, v)| (k, v.get().to_owned()))
        .collect()
}

/// The items of an array, each as its exact bytes.
pub fn raw_items(json: &str) -> Vec<String> {
    let items: Vec<Box<RawValue>> = serde_json::from_str(json.trim_start())
        .unwrap_or_else(|e| panic!("not a JSON array ({e}): {json}"));
    items.into_iter().map(|v| v.get().to_owned()).collect()
}

/// The keys of a JSON object in the order they appear in the text.
pub fn keys_in_order(json: &str) -> Vec<String> {
    struct Keys(Vec<String>);
    impl<'de> Deserialize<'de> for Keys {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((key, IgnoredAny)) = map.next_entry::<String, IgnoredAny>()? {
                        keys.push(key);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_str::<Keys>(json)
        .unwrap_or_else(|e| panic!("not a JSON object ({e}): {json}"))
        .0
}

/// The exact `messages` items of an upstream request body.
pub fn sent_messages(body: &str) -> Vec<String> {
    raw_items(&raw_at(body, &["messages"]).unwrap_or_else(|| panic!("no messages: {body}")))
}

/// `sha-256=:<base64>:` of some bytes (RFC 9530 Repr-Digest).
pub fn repr_digest(bytes: &[u8]) -> String {
    let digest = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes));
    format!("sha-256=:{digest}:")
}

/// Asserts the `reasoning_details` endpoint serves exactly `expected` with its digest.
pub async fn assert_reasoning_endpoint(
    api: &Api,
    thread_id: &str,
    message_id: &str,
    expected: &str,
) {
    let resp = api
        .get(&format!(
            "/v1/threads/{thread_id}/messages/{message_id}/reasoning_details"
        ))
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.text, expected,
        "reasoning_details endpoint bytes differ"
    );
    assert!(
        resp.header("content-type")
            .unwrap_or_default()
            .starts_with("application/json"),
        "{resp:?}"
    );
    assert_eq!(
        resp.header("repr-digest").as_deref(),
        Some(repr_digest(expected.as_bytes()).as_str()),
        "Repr-Digest of {resp:?}"
    );
}

/// Asserts that no top-level field of a resource is `null`, except those allowed.
pub fn assert_no_nulls(object: &Value, allowed: &[&str]) {
    let map = object
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {object}"));
    for (key, value) in map {
        if value.is_null() {
            assert!(
                allowed.contains(&key.as_str()),
                "`{key}` is null in {object}"
            );
        }
    }
}

/// Asserts an id is a UUIDv7 string.
pub fn assert_uuid_v7(id: &str) {
    let uuid = uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("`{id}` is not a UUID: {e}"));
    assert_eq!(uuid.get_version_num(), 7, "`{id}` is not a UUIDv7");
}

/// Asserts an RFC 3339 UTC timestamp with milliseconds, e.g. `2025-01-02T03:04:05.678Z`.
pub fn assert_timestamp(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("timestamp is not a string: {value}"));
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("`{text}` is not RFC 3339: {e}"));
    let bytes = text.as_bytes();
    assert!(
        text.len() == 24 && text.ends_with('Z') && bytes[19] == b'.',
        "`{text}` is not UTC with milliseconds"
    );
}

/// Polls a turn until it is no longer `in_progress`; returns it with its audit record.
pub async fn wait_until_settled(api: &Api, thread_id: &str, turn_id: &str) -> Resp {
    for _ in 0..400 {
        let resp = api.turn_detail(thread_id, turn_id).await;
        if resp.json()["status"] != "in_progress" {
            return resp;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("turn {turn_id} still in progress after 10 s");
}

/// Waits until the fake has received `n` requests (a turn is then in progress upstream).
pub async fn wait_for_requests(fake: &FakeUpstream, n: usize) {
    for _ in 0..200 {
        if fake.requests().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "the fake upstream got {} requests, expected {n}",
        fake.requests().len()
    );
}

/// A scripted non-streaming completion body in OpenRouter's shape.
pub fn completion_body(model: &str, message: &str, finish: &str) -> String {
    format!(
        r#"{{"id":"gen-test-{finish}","object":"chat.completion","created":1700000000,"model":"{model}","provider":"Test","system_fingerprint":null,"choices":[{{"index":0,"logprobs":null,"finish_reason":"{finish}","native_finish_reason":"{finish}","message":{message}}}],"usage":{{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"cost":0.0001,"completion_tokens_details":{{"reasoning_tokens":2}}}}}}"#
    )
}
