//! Child processes of `aiops demo`: start, watch, restart with backoff, stop without orphans.
//!
//! Every child runs in its own process group, so stopping it signals everything it spawned, and
//! a terminal's Ctrl-C reaches only the supervisor, which then stops the children in order. Each
//! child also gets `PR_SET_PDEATHSIG(SIGKILL)`, so even a SIGKILLed supervisor leaves nothing
//! running. Because that signal fires when the *thread* that forked the child exits, every
//! spawn happens on the supervisor's main thread, which lives until the end.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// How to run one component.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Short name used in messages and for the log file (`logs/<name>.log`).
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    /// Where stdout and stderr go (appended).
    pub log: PathBuf,
    /// Forward the child's stdout to ours instead of the log (the receiver's messages).
    pub stdout_to_terminal: bool,
}

/// One supervised child and its restart bookkeeping.
#[derive(Debug)]
pub struct Supervised {
    pub spec: Spec,
    child: Option<Child>,
    started_at: Instant,
    /// Restarts so far, whether after a crash or on request.
    pub restarts: u32,
    /// An id that changes with every start, like systemd's InvocationID.
    pub invocation_id: String,
    crash_streak: u32,
    restart_at: Option<Instant>,
}

/// How long a child may take to exit after SIGTERM before its group gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// A child that ran this long before crashing restarts with the shortest backoff again.
const STABLE_AFTER: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Supervised {
    /// Starts the child.
    pub fn start(spec: Spec) -> anyhow::Result<Self> {
        let child = spawn(&spec)?;
        Ok(Self {
            spec,
            child: Some(child),
            started_at: Instant::now(),
            restarts: 0,
            invocation_id: new_invocation_id(),
            crash_streak: 0,
            restart_at: None,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Checks whether the child died; if so, schedules a restart with backoff and returns its
    /// exit status and the delay. Starts it again when a scheduled restart is due.
    pub fn poll(&mut self) -> anyhow::Result<Option<(ExitStatus, Duration)>> {
        if let Some(child) = &mut self.child {
            if let Some(status) = child.try_wait().context("wait for child")? {
                // Whatever the child left behind in its group goes with it.
                let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                self.child = None;
                if self.started_at.elapsed() >= STABLE_AFTER {
                    self.crash_streak = 0;
                }
                let delay = backoff(self.crash_streak);
                self.crash_streak += 1;
                self.restart_at = Some(Instant::now() + delay);
                return Ok(Some((status, delay)));
            }
            return Ok(None);
        }
        if let Some(at) = self.restart_at
            && Instant::now() >= at
        {
            self.restart_at = None;
            self.respawn()?;
        }
        Ok(None)
    }

    /// Stops the child (SIGTERM to its group, SIGKILL after a grace period) and starts it again.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.restart_at = None;
        self.respawn()
    }

    fn respawn(&mut self) -> anyhow::Result<()> {
        self.child = Some(spawn(&self.spec)?);
        self.started_at = Instant::now();
        self.restarts += 1;
        self.invocation_id = new_invocation_id();
        Ok(())
    }

    /// Stops the child and everything in its process group. Returns whether SIGKILL was needed.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        self.restart_at = None;
        let pgid = Pid::from_raw(child.id() as i32);
        let _ = killpg(pgid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                // The leader is gone; make sure no straggler in its group survives it.
                let _ = killpg(pgid, Signal::SIGKILL);
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = child.wait();
        true
    }
}

fn backoff(streak: u32) -> Duration {
    (Duration::from_millis(500) * 2u32.saturating_pow(streak.min(8))).min(MAX_BACKOFF)
}

fn new_invocation_id() -> String {
    let mut bytes = [0u8; 16];
    if let Ok(mut f) = File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut bytes);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn spawn(spec: &Spec) -> anyhow::Result<Child> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .with_context(|| format!("open the log file {}", spec.log.display()))?;
    let stdout = if spec.stdout_to_terminal {
        Stdio::inherit()
    } else {
        Stdio::from(log.try_clone().context("duplicate log handle")?)
    };
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::from(log))
        .process_group(0);
    set_parent_death_signal(&mut cmd);
    cmd.spawn()
        .with_context(|| format!("start {} ({})", spec.name, spec.program.display()))
}

/// Makes the kernel SIGKILL the child if the supervisor dies without stopping it.
#[allow(unsafe_code)]
fn set_parent_death_signal(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which
    // is async-signal-safe; it allocates nothing and touches no locks.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &std::path::Path, script: &str) -> Spec {
        Spec {
            name: "test",
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![],
            log: dir.join("test.log"),
            stdout_to_terminal: false,
        }
    }

    fn alive(pid: u32) -> bool {
        nix::sys::signal::kill(Pid::from_raw(pid as i32), None).is_ok()
    }

    #[test]
    fn a_child_that_ignores_sigterm_is_killed_with_its_group() {
        let dir = tempfile::tempdir().unwrap();
        // The shell ignores TERM and starts a grandchild that does too.
        let grandchild_file = dir.path().join("grandchild");
        let mut s = Supervised::start(spec(
            dir.path(),
            &format!(
                "trap '' TERM; sleep 300 & echo $! > {}; wait",
                grandchild_file.display()
            ),
        ))
        .unwrap();
        let pid = s.pid().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut grandchild = None;
        while grandchild.is_none() && Instant::now() < deadline {
            grandchild = std::fs::read_to_string(&grandchild_file)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok());
            std::thread::sleep(Duration::from_millis(20));
        }
        let grandchild = grandchild.expect("grandchild started");
        assert!(s.stop(), "SIGTERM was ignored, so SIGKILL was needed");
        assert!(!alive(pid));
        // The grandchild may linger as a zombie of init for a moment; give it a bounded wait.
        let deadline = Instant::now() + Duration::from_secs(2);
        while alive(grandchild) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z"),
            "grandchild {grandchild} survived: {stat}"
        );
    }

    #[test]
    fn a_crashed_child_is_restarted_with_backoff() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Supervised::start(spec(dir.path(), "exit 3")).unwrap();
        let first_id = s.invocation_id.clone();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut crash = None;
        while crash.is_none() && Instant::now() < deadline {
            crash = s.poll().unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        let (status, delay) = crash.expect("the child exited");
        assert_eq!(status.code(), Some(3));
        assert_eq!(delay, Duration::from_millis(500));
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.restarts == 0 && Instant::now() < deadline {
            s.poll().unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(s.restarts, 1);
        assert_ne!(s.invocation_id, first_id);
        s.stop();
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(20), MAX_BACKOFF);
    }
}
