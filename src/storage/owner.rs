//! Which process holds a lease, and whether it is still alive.
//!
//! A lease names its owner as `<pid namespace>/<pid>:<start time>` (the start time, from
//! `/proc/<pid>/stat`, tells a live process from a later one that reused the pid). SQLite is
//! a local file, so every process sharing it runs on this machine and can be checked here,
//! unless it runs in another PID namespace (another container sharing the database on a
//! volume): there its pid means nothing, so such an owner is assumed alive and only the
//! lease's expiry frees it, as where `/proc` is not available. An owner without a namespace
//! (`<pid>:<start time>`: written by an earlier version, or where the namespace cannot be
//! read) is taken to be in this one. The namespace comes first so that an earlier version,
//! which reads `<pid>:<start time>`, finds no pid in it and also takes the owner for alive.

/// This process's identity.
pub fn current() -> String {
    let pid = std::process::id();
    let start = start_time(pid).unwrap_or_else(|| "?".to_owned());
    match namespace() {
        Some(namespace) => format!("{namespace}/{pid}:{start}"),
        None => format!("{pid}:{start}"),
    }
}

/// This process's PID namespace (the inode `/proc/self/ns/pid` names), read once.
fn namespace() -> Option<&'static str> {
    static NAMESPACE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    NAMESPACE
        .get_or_init(|| {
            let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
            // `pid:[4026531836]`
            let link = link.to_str()?;
            let inode = link.strip_prefix("pid:[")?.strip_suffix(']')?;
            inode
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| inode.to_owned())
        })
        .as_deref()
}

/// False only when the owner is known to be gone.
pub fn is_alive(owner: &str) -> bool {
    // This process, the usual holder (a busy thread's lease): no need to ask `/proc`.
    static ME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if owner == ME.get_or_init(current) {
        return true;
    }
    let owner = match owner.split_once('/') {
        Some((owner_namespace, _)) if namespace() != Some(owner_namespace) => return true,
        Some((_, owner)) => owner,
        None => owner,
    };
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
            // Without a namespace (an earlier version's, or none readable): this namespace.
            assert!(!is_alive(&format!("{pid}:1")));
            assert!(!is_alive("4194304999:1"));
            if let Some(ns) = namespace() {
                assert!(me.starts_with(&format!("{ns}/{pid}:")), "{me}");
                assert!(!is_alive(&format!("{ns}/{pid}:1")));
                assert!(!is_alive(&format!("{ns}/4194304999:1")));
            }
            // Another namespace's pids cannot be checked from here: only expiry frees them.
            assert!(is_alive("1/4194304999:1"));
            assert!(is_alive(&format!("?/{pid}:1")));
        }
        assert!(is_alive("garbage"));
    }
}
