//! What the security tests need beyond the shared harness: the `threadkeeper` CLI (keys,
//! export) run against a test's database, clients that carry a service key, requests with
//! arbitrary header bytes, `serve` started on any bind address, and the SQLite file read as
//! bytes (leak checks) and as row counts (nothing changed).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::Method;

use crate::helpers::{Api, Resp, AMBIENT_ENV};

const BIN: &str = env!("CARGO_BIN_EXE_threadkeeper");
const CLI_TIMEOUT: Duration = Duration::from_secs(30);
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

fn clean_command(rust_log: &str) -> Command {
    let mut command = Command::new(BIN);
    for var in AMBIENT_ENV {
        command.env_remove(var);
    }
    command
        .env("RUST_LOG", rust_log)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    command
}

/// What one CLI run printed.
#[derive(Debug)]
pub struct CliRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `threadkeeper <args> --database-url <db_url>` to its end (at most 30 s).
pub async fn cli(db_url: &str, args: &[&str], rust_log: &str) -> CliRun {
    let mut command = tokio::process::Command::from(clean_command(rust_log));
    command
        .args(args)
        .args(["--database-url", db_url])
        .kill_on_drop(true);
    let output = tokio::time::timeout(CLI_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("threadkeeper {args:?} did not finish in {CLI_TIMEOUT:?}"))
        .expect("run threadkeeper");
    CliRun {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A service key as `keys create` printed it, with the CLI run that made it.
#[derive(Debug, Clone)]
pub struct Key {
    pub id: String,
    pub key: String,
    /// Everything `keys create` wrote to stderr.
    pub stderr: String,
}

/// `tk_` and 43 URL-safe base64 characters (32 random bytes).
pub fn assert_key_format(key: &str) {
    let body = key
        .strip_prefix("tk_")
        .unwrap_or_else(|| panic!("key `{key}` does not start with tk_"));
    assert_eq!(body.len(), 43, "key `{key}`: not 43 characters after tk_");
    assert!(
        body.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "key `{key}` is not base64url"
    );
}

/// `keys create --name NAME --tenant TENANT`; checks the key is alone on stdout, once.
pub async fn create_key_logged(db_url: &str, name: &str, tenant: &str, rust_log: &str) -> Key {
    let run = cli(
        db_url,
        &["keys", "create", "--name", name, "--tenant", tenant],
        rust_log,
    )
    .await;
    assert!(run.status.success(), "keys create failed: {run:?}");
    let key = run
        .stdout
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("keys create stdout is not one line: {run:?}"))
        .to_owned();
    assert!(
        !key.contains('\n'),
        "keys create printed more than the key: {run:?}"
    );
    assert_key_format(&key);
    assert!(
        !run.stderr.contains(&key),
        "keys create wrote the key to stderr: {run:?}"
    );
    let id = run
        .stderr
        .split("created key ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no `created key <id>` on stderr: {run:?}"))
        .to_owned();
    crate::helpers::assert_uuid_v7(&id);
    Key {
        id,
        key,
        stderr: run.stderr,
    }
}

pub async fn create_key(db_url: &str, name: &str, tenant: &str) -> Key {
    create_key_logged(db_url, name, tenant, "info").await
}

/// `keys revoke ID`, which must succeed.
pub async fn revoke_key(db_url: &str, id: &str) -> CliRun {
    let run = cli(db_url, &["keys", "revoke", id], "info").await;
    assert!(run.status.success(), "keys revoke failed: {run:?}");
    run
}

/// One row of `keys list`.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub tenant: String,
    pub created: String,
    pub last_used: String,
    pub status: String,
}

/// `keys list`: the raw output and its rows (names in these tests have no spaces).
pub async fn list_keys(db_url: &str) -> (String, Vec<KeyRow>) {
    let run = cli(db_url, &["keys", "list"], "info").await;
    assert!(run.status.success(), "keys list failed: {run:?}");
    let mut lines = run.stdout.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header,
        ["id", "name", "tenant", "created", "last used", "status"],
        "keys list header: {run:?}"
    );
    let rows = lines
        .map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cols.len(), 6, "keys list row `{line}`");
            KeyRow {
                id: cols[0].into(),
                name: cols[1].into(),
                tenant: cols[2].into(),
                created: cols[3].into(),
                last_used: cols[4].into(),
                status: cols[5].into(),
            }
        })
        .collect();
    (run.stdout, rows)
}

/// An API client whose every request carries `Authorization: Bearer <key>` (a request that
/// sets its own Authorization header replaces it).
pub fn keyed(base: &str, key: &str) -> Api {
    let mut api = Api::new(base);
    let mut value = HeaderValue::from_str(&format!("Bearer {key}")).expect("header value");
    value.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, value);
    api.http = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client");
    api
}

/// A request with header values given as bytes (anything `http` allows on the wire). The
/// client's default Authorization applies unless `headers` names one.
pub async fn try_raw(
    api: &Api,
    method: Method,
    path: &str,
    headers: &[(&str, Vec<u8>)],
    body: Option<Vec<u8>>,
) -> Result<Resp, String> {
    let what = format!("{method} {path}");
    let mut request = api.http.request(method, format!("{}{path}", api.base));
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("{e}"))?;
        let value = HeaderValue::from_bytes(value).map_err(|e| format!("{e}"))?;
        map.append(name, value);
    }
    request = request.headers(map);
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("{what}: request failed: {e:?}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("{what}: reading the body failed: {e}"))?;
    Ok(Resp {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
        what,
    })
}

/// Asserts a 401 `unauthorized` with the contract's error shape and the Bearer challenge.
pub fn assert_unauthorized(resp: &Resp) {
    resp.expect_error(401, "unauthorized");
    assert_eq!(
        resp.header("www-authenticate").as_deref(),
        Some("Bearer realm=\"threadkeeper\""),
        "{resp:?}"
    );
}

/// A `serve` child started by a test on a bind address of its choice; killed on drop.
pub struct ServeProcess {
    child: Child,
    /// The address it logged (`0.0.0.0:port` for a wildcard bind).
    pub listening: SocketAddr,
    logs: Arc<Mutex<String>>,
}

impl ServeProcess {
    /// `http://127.0.0.1:<port>`: tests only ever talk to loopback.
    pub fn loopback_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.listening.port())
    }

    pub fn logs(&self) -> String {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a `serve` start ended within the start-up timeout.
pub enum Started {
    Listening(ServeProcess),
    Exited { status: ExitStatus, logs: String },
}

/// Starts `threadkeeper serve --bind <bind>` and waits for `listening on` or an exit.
pub fn serve_on(bind: &str, db_url: &str, upstream_url: &str, extra: &[&str]) -> Started {
    let mut command = clean_command("info");
    command
        .args(["serve", "--bind", bind, "--database-url", db_url])
        .args(["--upstream-url", upstream_url])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn threadkeeper serve");
    let stderr = child.stderr.take().expect("piped stderr");
    let logs = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel::<String>();
    let sink = logs.clone();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let mut line = String::new();
        let mut tx = Some(tx);
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if let Ok(mut logs) = sink.lock() {
                logs.push_str(&line);
            }
            if let Some(at) = line.find("listening on ") {
                let addr: String = line[at + "listening on ".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addr);
                }
            }
        }
    });
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Ok(addr) = rx.recv_timeout(Duration::from_millis(50)) {
            let listening = addr
                .parse()
                .unwrap_or_else(|e| panic!("bad listening address `{addr}`: {e}"));
            return Started::Listening(ServeProcess {
                child,
                listening,
                logs,
            });
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            let _ = reader.join();
            let logs = logs.lock().map(|l| l.clone()).unwrap_or_default();
            return Started::Exited { status, logs };
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let logs = logs.lock().map(|l| l.clone()).unwrap_or_default();
            panic!(
                "serve --bind {bind} neither listened nor exited in {STARTUP_TIMEOUT:?}:\n{logs}"
            );
        }
    }
}

/// The SQLite file and its `-wal` and `-shm` companions that exist, with their bytes.
pub fn db_files(db: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let path = PathBuf::from(format!("{}{suffix}", db.display()));
        if let Ok(bytes) = std::fs::read(&path) {
            files.push((path.display().to_string(), bytes));
        }
    }
    assert!(!files.is_empty(), "no database file at {}", db.display());
    files
}

pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Runs a read-only query on the SQLite file with python3's sqlite3 module (the test binary
/// has no SQLite client); rows come back as `a|b|c` lines.
pub fn sqlite_query(db: &Path, sql: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\n\
             c = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)\n\
             print('\\n'.join('|'.join(str(v) for v in r) for r in c.execute(sys.argv[2])))",
        ])
        .arg(db)
        .arg(sql)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "sqlite query failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Row counts of every table that holds client data, and the list of tables.
pub fn db_counts(db: &Path) -> String {
    sqlite_query(
        db,
        "SELECT (SELECT count(*) FROM threads), (SELECT count(*) FROM messages), \
         (SELECT count(*) FROM turns), (SELECT count(*) FROM service_keys), \
         (SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_master \
          WHERE type = 'table' ORDER BY name))",
    )
}

/// A well-formed UUIDv7 that names nothing.
pub fn random_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
