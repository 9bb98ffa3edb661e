//! Which process holds a lease, and whether it is still alive.
//!
//! A lease names its owner as `<pid>:<start time>` (the start time, from `/proc/<pid>/stat`,
//! tells a live process from a later one that reused the pid). SQLite is a local file, so
//! every process sharing it runs on this machine and can be checked here. Where `/proc` is
//! not available the owner is assumed alive and only the lease's expiry frees it.

/// This process's identity.
pub fn current() -> String {
    let pid = std::process::id();
    match start_time(pid) {
        Some(start) => format!("{pid}:{start}"),
        None => format!("{pid}:?"),
    }
}

/// False only when the owner is known to be gone.
pub fn is_alive(owner: &str) -> bool {
    // This process, the usual holder (a busy thread's lease): no need to ask `/proc`.
    static ME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if owner == ME.get_or_init(current) {
        return true;
    }
    let Some((pid, start)) = owner.split_once(':') else {
        return true;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return true;
    };
    if start == "?" || !std::path::Path::new("/proc/self/stat").exists() {
        return true;
    }
    match start_time(pid) {
        Some(now) => now == start,
        None => false,
    }
}

/// Field 22 of `/proc/<pid>/stat`: the process's start time in clock ticks since boot.
/// `None` when there is no such process, or only its zombie (killed, not yet reaped).
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let me = current();
        assert!(is_alive(&me));
        let pid = std::process::id();
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(!is_alive(&format!("{pid}:1")));
            assert!(!is_alive("4194304999:1"));
        }
        assert!(is_alive("garbage"));
    }
}
