//! The service under test: the real release binary, started on a fresh SQLite file and a
//! random loopback port, its log going to a file (reading it through a pipe would cost the
//! bench CPU and could stall the service if the pipe filled).

use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::stats;

pub struct Service {
    child: Option<Child>,
    pub pid: u32,
    pub addr: SocketAddr,
    pub log: PathBuf,
    pub database: PathBuf,
    /// The `--attach` helper (e.g. `perf record -p PID`), if one runs.
    attached: Option<Child>,
}

/// How to start services.
#[derive(Clone, Debug)]
pub struct Launcher {
    pub binary: PathBuf,
    pub dir: PathBuf,
    /// A command the service runs under (e.g. `valgrind --tool=callgrind`); its pid must be
    /// the service's own, as valgrind's is.
    pub wrap: Vec<String>,
    /// Extra time to allow for start-up and shutdown (a wrapper such as valgrind is slow).
    pub slow: bool,
}

/// `target/release/threadkeeper`, next to this executable (or the given path).
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(format!("--service-bin {}: no such file", path.display()))
        };
    }
    let me = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let dir = me
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", me.display()))?;
    let binary = dir.join(format!("threadkeeper{}", std::env::consts::EXE_SUFFIX));
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "the service binary {} is missing: run `cargo build --release --workspace` first \
             (the bench drives the real release build of threadkeeper, found next to the \
             bench's own executable)",
            binary.display()
        ))
    }
}

impl Launcher {
    /// Starts `threadkeeper serve` on a fresh database `<dir>/<name>.db` with `upstream_url`,
    /// and waits for its `listening on` log line.
    pub fn start(&self, name: &str, upstream_url: &str) -> Result<Service, String> {
        let database = self.dir.join(format!("{name}.db"));
        let log = self.dir.join(format!("{name}.log"));
        let log_file =
            File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let mut argv: Vec<String> = self.wrap.clone();
        argv.push(self.binary.display().to_string());
        let program = argv.remove(0);
        let mut command = Command::new(program);
        command
            .args(argv)
            .arg("serve")
            .arg("--bind")
            .arg("127.0.0.1:0")
            .arg("--database-url")
            .arg(format!("sqlite://{}", database.display()))
            .arg("--upstream-url")
            .arg(upstream_url)
            .arg("--shutdown-grace")
            .arg("5s");
        // Settings from the environment would change what is measured.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            if key.starts_with("THREADKEEPER_") || key == "OPENROUTER_BASE_URL" {
                command.env_remove(key);
            }
        }
        command
            .env("OPENROUTER_API_KEY", "bench")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        // If the bench dies (even by SIGKILL), the service goes with it.
        // SAFETY: prctl is async-signal-safe and touches only the child being started.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        let pid = child.id();
        let mut service = Service {
            child: Some(child),
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            database,
            attached: None,
        };
        let limit = if self.slow {
            Duration::from_secs(120)
        } else {
            Duration::from_secs(30)
        };
        service.addr = service.wait_listening(limit)?;
        Ok(service)
    }
}

impl Service {
    fn wait_listening(&mut self, limit: Duration) -> Result<SocketAddr, String> {
        let start = Instant::now();
        loop {
            let text = read_lossy(&self.log);
            if let Some(addr) = listening_addr(&text) {
                return Ok(addr);
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "the service exited ({status}) before listening; its log:\n{}",
                        tail(&text, 2000)
                    ));
                }
            }
            if start.elapsed() > limit {
                return Err(format!(
                    "the service did not log `listening on` within {limit:?}; its log:\n{}",
                    tail(&text, 2000)
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Size of the database file with its WAL and shared-memory files.
    pub fn database_bytes(&self) -> u64 {
        ["", "-wal", "-shm"]
            .iter()
            .filter_map(|suffix| {
                let mut path = self.database.clone().into_os_string();
                path.push(suffix);
                std::fs::metadata(path).ok().map(|m| m.len())
            })
            .sum()
    }

    pub fn rss(&self) -> Result<u64, String> {
        stats::rss_bytes(self.pid)
    }

    pub fn peak_rss(&self) -> Result<u64, String> {
        stats::status_bytes(self.pid, "VmHWM")
    }

    /// Fails when the process has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "the service exited ({status}); its log:\n{}",
                    tail(&read_lossy(&self.log), 2000)
                ));
            }
        }
        Ok(())
    }

    /// Runs `command` (with `{pid}` replaced) under `sh -c` beside the service, e.g.
    /// `perf record -g -p {pid} -o perf.data`; it gets SIGINT when the service stops.
    pub fn attach(&mut self, command: &str) -> Result<(), String> {
        let command = command.replace("{pid}", &self.pid.to_string());
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {command}"))
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run --attach command: {e}"))?;
        self.attached = Some(child);
        // Give a profiler time to attach before load starts.
        std::thread::sleep(Duration::from_secs(1));
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(mut self, grace: Duration) -> Result<(), String> {
        self.stop_attached();
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        signal(child.id(), libc::SIGTERM);
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if start.elapsed() < grace => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "the service (pid {}) did not stop within {grace:?} of SIGTERM; killed",
                        self.pid
                    ));
                }
            }
        }
    }

    fn stop_attached(&mut self) {
        if let Some(mut helper) = self.attached.take() {
            signal(helper.id(), libc::SIGINT);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(60) {
                if let Ok(Some(_)) = helper.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = helper.kill();
            let _ = helper.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop_attached();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) on a child process this bench started and has not reaped yet.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// The address in the first `listening on ADDR` line, ANSI colours ignored.
fn listening_addr(log: &str) -> Option<SocketAddr> {
    log.lines().find_map(|line| {
        let plain = strip_ansi(line);
        let rest = plain.split_once("listening on ")?.1;
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || ".:[]".contains(c)))
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    })
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... final byte in @..~
            for d in chars.by_ref() {
                if ('@'..='~').contains(&d) && d != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_listening_line() {
        let log = "2025 INFO threadkeeper::cli: listening on 127.0.0.1:43210\n";
        assert_eq!(
            listening_addr(log),
            Some(SocketAddr::from(([127, 0, 0, 1], 43210)))
        );
        let coloured = "\u{1b}[32m INFO\u{1b}[0m listening on 127.0.0.1:5\n";
        assert_eq!(
            listening_addr(coloured),
            Some(SocketAddr::from(([127, 0, 0, 1], 5)))
        );
        assert_eq!(listening_addr("starting\n"), None);
        let json = r#"{"message":"listening on 127.0.0.1:7","level":"INFO"}"#;
        assert_eq!(
            listening_addr(json),
            Some(SocketAddr::from(([127, 0, 0, 1], 7)))
        );
    }
}
