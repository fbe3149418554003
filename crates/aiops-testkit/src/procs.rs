//! Processes seen through `/proc`, and stopping the ones a test started.
//!
//! For suites that start a supervisor and must prove it leaves nothing behind: [`descendants`]
//! lists the process tree below a pid, [`alive`] tells whether one of them still runs, and
//! [`stop_within`] ends a child the suite started (SIGTERM, then SIGKILL after a grace period).

use std::collections::BTreeSet;
use std::process::Child;
use std::time::{Duration, Instant};

/// Every live (not zombie) process below `root`: children, grandchildren..., from `/proc`.
pub fn descendants(root: u32) -> BTreeSet<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((state, ppid)) = parse_stat(&stat)
            && state != 'Z'
        {
            parents.push((pid, ppid));
        }
    }
    let mut found = BTreeSet::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, ppid) in &parents {
            if ppid == p && found.insert(pid) {
                frontier.push(pid);
            }
        }
    }
    found
}

/// State and parent pid from a `/proc/PID/stat` line. The command name may hold spaces and
/// parentheses, so the fields are read after the last `)`.
pub fn parse_stat(stat: &str) -> Option<(char, u32)> {
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| parse_stat(&s))
        .is_some_and(|(state, _)| state != 'Z')
}

/// The command name of `pid` (`/proc/PID/comm`, at most 15 bytes).
pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_owned())
}

/// Sends SIGTERM to `pid` (a process the caller started); a pid that is gone is not an error.
pub fn terminate(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// Ends `child`: SIGTERM, up to `grace` for it to exit, then SIGKILL. Returns whether it exited
/// by itself within the grace period.
pub fn stop_within(child: &mut Child, grace: Duration) -> bool {
    terminate(child.id());
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn reads_the_process_tree() {
        assert_eq!(
            parse_stat("123 (a (b) c) S 77 123 0"),
            Some(('S', 77)),
            "a command name with spaces and parentheses"
        );
        assert_eq!(parse_stat("garbage"), None);

        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        assert!(descendants(std::process::id()).contains(&pid));
        assert!(alive(pid));
        assert_eq!(comm(pid).as_deref(), Some("sleep"));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!alive(pid));
        assert!(!descendants(std::process::id()).contains(&pid));
    }

    #[test]
    fn stop_within_terminates_then_kills() {
        let mut polite = Command::new("sleep").arg("30").spawn().unwrap();
        assert!(stop_within(&mut polite, Duration::from_secs(10)));
        assert!(!alive(polite.id()));

        let mut stubborn = Command::new("sh")
            .args(["-c", "trap '' TERM; sleep 30 & wait"])
            .spawn()
            .unwrap();
        // Give the shell a moment to install its trap.
        std::thread::sleep(Duration::from_millis(200));
        assert!(!stop_within(&mut stubborn, Duration::from_millis(300)));
        assert!(!alive(stubborn.id()));
    }
}
