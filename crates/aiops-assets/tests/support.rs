//! Helpers shared by the test modules: the repository, the real tools, child processes that
//! die with the test, bounded waits, and an HTTP client for loopback.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root (two levels above this crate).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The first of `names` found on `PATH`.
pub fn find_tool(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Finds a tool or prints why the test is skipped (CI installs them all, so CI never skips).
macro_rules! tool_or_skip {
    ($test:expr, $($name:expr),+) => {
        match $crate::support::find_tool(&[$($name),+]) {
            Some(p) => p,
            None => {
                eprintln!(
                    "SKIPPED {}: none of {:?} is on PATH (apt-get install prometheus prometheus-alertmanager)",
                    $test,
                    [$($name),+]
                );
                return;
            }
        }
    };
}
pub(crate) use tool_or_skip;

/// Runs a command to completion; panics with its output unless it succeeded.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{text}",
        out.status
    );
    text
}

/// `N` distinct ports the kernel had free a moment ago (all bound at once, then released), for
/// components the test does not start: a connection to them is refused.
pub fn closed_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local_addr").port())
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process killed (by its pid) and reaped when dropped, on every exit path.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
    pub name: &'static str,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Proc {
        let file = fs::File::create(&log).expect("create log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc { child, log, name }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The port from the `msg="Listening on" address=127.0.0.1:PORT` line that Prometheus and
    /// Alertmanager log once bound (they are started on port 0).
    pub fn listening_port(&mut self) -> u16 {
        let name = self.name;
        wait_for(
            &format!("{name} to listen"),
            Duration::from_secs(60),
            || {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!(
                        "{name} exited ({status}) before listening:\n{}",
                        self.log_text()
                    );
                }
                self.log_text()
                    .lines()
                    .filter(|l| l.contains("msg=\"Listening on\""))
                    .find_map(|l| l.rsplit("address=127.0.0.1:").next()?.trim().parse().ok())
            },
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client for loopback only: no proxy from the environment, bounded time, and non-2xx answers
/// returned rather than turned into errors (so a query's error message can be shown).
pub fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}
