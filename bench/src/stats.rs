//! Latency histograms (HDR, nanoseconds) and the service's CPU time and memory read from procfs.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies in nanoseconds, 3 significant figures, from 1 µs to 2 minutes (u32 counts keep
/// one histogram near 110 KB, which matters with hundreds of clients).
#[derive(Clone, Debug)]
pub struct Hist(Histogram<u32>);

const LOWEST_NS: u64 = 1_000;
const HIGHEST_NS: u64 = 120_000_000_000;

impl Hist {
    pub fn new() -> Hist {
        // The bounds are constants that hdrhistogram accepts; a failure would be a bug here.
        match Histogram::new_with_bounds(LOWEST_NS, HIGHEST_NS, 3) {
            Ok(h) => Hist(h),
            Err(e) => panic!("histogram bounds rejected: {e}"),
        }
    }

    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.saturating_record(ns.clamp(LOWEST_NS, HIGHEST_NS));
    }

    pub fn merge(&mut self, other: &Hist) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Value at quantile `q` (0..=1) in milliseconds; `None` when empty.
    pub fn ms(&self, q: f64) -> Option<f64> {
        (!self.0.is_empty()).then(|| self.0.value_at_quantile(q) as f64 / 1e6)
    }

    pub fn summary(&self) -> Summary {
        let empty = self.0.is_empty();
        let at = |q: f64| {
            if empty {
                0.0
            } else {
                self.0.value_at_quantile(q) as f64 / 1e6
            }
        };
        Summary {
            count: self.0.len(),
            mean_ms: if empty { 0.0 } else { self.0.mean() / 1e6 },
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            max_ms: if empty {
                0.0
            } else {
                self.0.max() as f64 / 1e6
            },
        }
    }
}

impl Default for Hist {
    fn default() -> Hist {
        Hist::new()
    }
}

/// A latency distribution as it goes into the JSON report.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Clock ticks per second (`getconf CLK_TCK`), the unit of utime/stime in /proc/<pid>/stat.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    let rest = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| format!("unexpected {path}: {text}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14 and stime field 15.
    let field = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or_else(|| format!("unexpected {path}: {text}"))
    };
    Ok(field(11)? + field(12)?)
}

/// CPU time of a process in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64, String> {
    Ok(cpu_ticks(pid)? as f64 / clock_ticks_per_second() as f64)
}

/// CPU time of a process's live threads in seconds, from `/proc/<pid>/task/*/schedstat`
/// (nanoseconds on the CPU): fine enough for windows of a few milliseconds, where
/// `cpu_seconds` moves in steps of 1/CLK_TCK. Threads that exit within the window are not
/// counted.
pub fn cpu_seconds_fine(pid: u32) -> Result<f64, String> {
    let dir = format!("/proc/{pid}/task");
    let tasks = std::fs::read_dir(&dir).map_err(|e| format!("cannot read {dir}: {e}"))?;
    let mut nanos: u64 = 0;
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue; // the thread has exited meanwhile
        };
        nanos += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(nanos as f64 / 1e9)
}

/// Busy and total jiffies of the whole machine (first line of /proc/stat).
pub fn machine_jiffies() -> Result<(u64, u64), String> {
    let text = std::fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
    let line = text.lines().next().unwrap_or_default();
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    Ok((total.saturating_sub(idle), total))
}

/// Context switches (voluntary + involuntary) summed over the live threads of a process.
pub fn context_switches(pid: u32) -> Result<u64, String> {
    let dir = format!("/proc/{pid}/task");
    let tasks = std::fs::read_dir(&dir).map_err(|e| format!("cannot read {dir}: {e}"))?;
    let mut total = 0;
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("status")) else {
            continue; // the thread has exited meanwhile
        };
        for line in text.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    Ok(total)
}

/// A `kB` line of /proc/<pid>/status (`VmRSS`, `VmHWM`), in bytes.
pub fn status_bytes(pid: u32, key: &str) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    text.lines()
        .find_map(|line| {
            let value = line.strip_prefix(key)?.strip_prefix(':')?;
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("no {key} in {path}"))
}

pub fn rss_bytes(pid: u32) -> Result<u64, String> {
    status_bytes(pid, "VmRSS")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(cpu_ticks(pid).is_ok());
        assert!(context_switches(pid).is_ok());
        assert!(rss_bytes(pid).map(|b| b > 0).unwrap_or(false));
    }

    #[test]
    fn quantiles_in_ms() {
        let mut h = Hist::new();
        for i in 1..=100u64 {
            h.record(Duration::from_micros(i * 10));
        }
        let p50 = h.ms(0.5).unwrap_or(0.0);
        assert!((p50 - 0.5).abs() < 0.01, "{p50}");
        assert_eq!(h.len(), 100);
    }
}
