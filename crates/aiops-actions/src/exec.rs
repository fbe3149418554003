//! The only code that changes anything outside the state directory.
//!
//! Nothing here goes through a shell or is built from alert text: a unit reaches an executor as
//! an [`UnitName`] that was checked against the allow-list just before, and is passed as one
//! argv element after `--` (systemd) or as one JSON string (demo supervisor). Every call is
//! bounded in time. All functions block; the gate calls them from blocking threads.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aiops_core::model::UnitSnapshot;
use aiops_core::unit::UnitName;
use aiops_diagnosis::unit_state::{self, Limit, UnitStateError, UnitStateReader};
use serde::{Deserialize, Serialize};

use crate::limits::StartLimit;
use crate::supervisor_protocol as sp;

/// Why an executor could not do its job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("{program} could not be started: {message}")]
    Spawn { program: String, message: String },
    #[error("{what} did not finish within {secs} s and was killed")]
    Timeout { what: String, secs: u64 },
    #[error("{what} failed: {message}")]
    Failed { what: String, message: String },
    #[error("unexpected output from {what}: {message}")]
    Parse { what: String, message: String },
    #[error("cannot reach the demo supervisor at {path}: {message}; is `aiops demo` running?")]
    Supervisor { path: PathBuf, message: String },
}

/// A unit's state as systemd (or the demo supervisor) reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitStatus {
    pub active_state: String,
    pub sub_state: Option<String>,
    /// Changes on every start; verification waits for a new one.
    pub invocation_id: Option<String>,
    pub n_restarts: Option<u32>,
    pub main_pid: Option<u32>,
    /// systemd's start rate limit (`None` where the executor has none).
    pub start_limit: Option<StartLimit>,
}

/// Restarts units and reports their state.
pub trait Executor: Send + Sync + std::fmt::Debug {
    fn status(&self, unit: &UnitName) -> Result<UnitStatus, ExecError>;
    fn restart(&self, unit: &UnitName) -> Result<(), ExecError>;
    /// Words for messages: "systemd", "the demo supervisor".
    fn describe(&self) -> &'static str;
    /// The unit's own evidence (its `systemctl show` state and its systemd journal), read just
    /// before a restart and written into the audit log as the unit's forensic state. `None`:
    /// this executor has no such state (the demo supervisor). What could not be read is in the
    /// snapshot's `errors`; it never stops the restart.
    fn unit_snapshot(&self, _unit: &UnitName) -> Option<UnitSnapshot> {
        None
    }
}

/// `systemctl`, with a fixed argv and a time bound.
#[derive(Debug, Clone)]
pub struct SystemdExecutor {
    /// The systemctl binary; `systemctl` from `$PATH` by default.
    pub program: PathBuf,
    /// The journalctl binary, for the unit's journal before a restart; from `$PATH` by default.
    pub journalctl: PathBuf,
    pub timeout: Duration,
}

impl Default for SystemdExecutor {
    fn default() -> Self {
        Self {
            program: PathBuf::from("systemctl"),
            journalctl: PathBuf::from("journalctl"),
            timeout: Duration::from_secs(90),
        }
    }
}

/// Each command of the forensic read before a restart is bounded to this (or to the
/// executor's own timeout, when shorter): it delays the approved restart by at most three.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(3);

/// How far back the forensic read looks in the unit's journal.
pub const SNAPSHOT_JOURNAL_SINCE: Duration = Duration::from_secs(15 * 60);

impl SystemdExecutor {
    /// The argv of a restart (without the program).
    pub fn restart_argv(unit: &UnitName) -> Vec<String> {
        vec![
            "--no-ask-password".into(),
            "restart".into(),
            "--".into(),
            unit.as_str().into(),
        ]
    }

    /// The argv of a status query (without the program): `aiops-diagnosis`' `systemctl show`,
    /// parsed by its parser.
    pub fn show_argv(unit: &UnitName) -> Vec<String> {
        unit_state::show_command(std::path::Path::new("systemctl"), unit).args
    }

    /// The unit-state reader on this executor's programs, each command bounded to `timeout`.
    fn reader(&self, timeout: Duration) -> UnitStateReader {
        let mut r = UnitStateReader::default();
        r.programs.systemctl = self.program.clone();
        r.programs.journalctl = self.journalctl.clone();
        r.limits.timeout = timeout;
        r
    }

    fn run(&self, argv: &[String], what: &str) -> Result<String, ExecError> {
        run_bounded(&self.program, argv, self.timeout, what)
    }
}

impl Executor for SystemdExecutor {
    fn status(&self, unit: &UnitName) -> Result<UnitStatus, ExecError> {
        let what = format!("systemctl show {unit}");
        let reading = self
            .reader(self.timeout)
            .read_show(unit)
            .map_err(|e| show_error(&what, self.timeout, e))?;
        status_from(&reading.state).map_err(|message| ExecError::Parse { what, message })
    }

    fn restart(&self, unit: &UnitName) -> Result<(), ExecError> {
        self.run(
            &Self::restart_argv(unit),
            &format!("systemctl restart {unit}"),
        )
        .map(drop)
    }

    fn describe(&self) -> &'static str {
        "systemd"
    }

    fn unit_snapshot(&self, unit: &UnitName) -> Option<UnitSnapshot> {
        let now = chrono::Utc::now();
        let since = now
            - chrono::TimeDelta::from_std(SNAPSHOT_JOURNAL_SINCE).unwrap_or(chrono::TimeDelta::MAX);
        let evidence = self
            .reader(self.timeout.min(SNAPSHOT_TIMEOUT))
            .read(unit, since, now);
        Some(evidence.snapshot())
    }
}

/// A failed `systemctl show` as an executor error.
fn show_error(what: &str, timeout: Duration, e: UnitStateError) -> ExecError {
    match e {
        UnitStateError::TimedOut { .. } => ExecError::Timeout {
            what: what.to_owned(),
            secs: timeout.as_secs(),
        },
        UnitStateError::Unparsable { message, .. } => ExecError::Parse {
            what: what.to_owned(),
            message,
        },
        e => ExecError::Failed {
            what: what.to_owned(),
            message: e.to_string(),
        },
    }
}

/// What the executor needs from a unit's `systemctl show` state (parsed by
/// `aiops_diagnosis::unit_state::parse_show`): its state, invocation, restarts, main process
/// and start limit. A state without `ActiveState=` is refused.
pub fn status_from(s: &unit_state::UnitState) -> Result<UnitStatus, String> {
    let active_state = match &s.active_state {
        None => return Err("property ActiveState is missing".into()),
        Some(a) => a.as_str().to_owned(),
    };
    let start_limit = s.start_limit_burst.map(|burst| StartLimit {
        burst,
        interval: match s.start_limit_interval {
            Some(Limit::Max(i)) if !i.is_zero() => Some(i),
            _ => None,
        },
    });
    Ok(UnitStatus {
        active_state,
        sub_state: s.sub_state.clone().filter(|v| !v.is_empty()),
        invocation_id: s.invocation_id.clone().filter(|v| !v.is_empty()),
        n_restarts: s.restarts,
        main_pid: s.main_pid.filter(|p| *p != 0),
        start_limit,
    })
}

/// Runs `program argv` without a shell, with a closed stdin, killing it after `timeout`.
fn run_bounded(
    program: &std::path::Path,
    argv: &[String],
    timeout: Duration,
    what: &str,
) -> Result<String, ExecError> {
    let mut child = Command::new(program)
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("SYSTEMD_PAGER", "")
        .env("SYSTEMD_COLORS", "0")
        .spawn()
        .map_err(|e| ExecError::Spawn {
            program: program.display().to_string(),
            message: e.to_string(),
        })?;
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = (&mut stdout).take(1 << 20).read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = (&mut stderr).take(1 << 20).read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ExecError::Timeout {
                    what: what.to_owned(),
                    secs: timeout.as_secs(),
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                return Err(ExecError::Failed {
                    what: what.to_owned(),
                    message: e.to_string(),
                });
            }
        }
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    if status.success() {
        Ok(stdout)
    } else {
        Err(ExecError::Failed {
            what: what.to_owned(),
            message: format!("{status}: {}", stderr.trim()),
        })
    }
}

/// The `aiops demo` supervisor, over its unix socket.
#[derive(Debug, Clone)]
pub struct DemoExecutor {
    pub socket: PathBuf,
    pub timeout: Duration,
}

impl DemoExecutor {
    pub fn new(socket: PathBuf) -> Self {
        Self {
            socket,
            timeout: Duration::from_secs(30),
        }
    }

    fn call(&self, req: &sp::Request) -> Result<sp::Response, ExecError> {
        let err = |message: String| ExecError::Supervisor {
            path: self.socket.clone(),
            message,
        };
        let mut stream = UnixStream::connect(&self.socket).map_err(|e| err(e.to_string()))?;
        stream
            .set_read_timeout(Some(self.timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
            .map_err(|e| err(e.to_string()))?;
        let mut line = serde_json::to_vec(req).expect("a request always serializes");
        line.push(b'\n');
        stream.write_all(&line).map_err(|e| err(e.to_string()))?;
        let mut answer = String::new();
        BufReader::new((&stream).take(sp::MAX_LINE))
            .read_line(&mut answer)
            .map_err(|e| err(format!("no answer: {e}")))?;
        let resp: sp::Response = serde_json::from_str(answer.trim_end())
            .map_err(|e| err(format!("unreadable answer {answer:?}: {e}")))?;
        if resp.ok {
            Ok(resp)
        } else {
            Err(ExecError::Failed {
                what: format!("the demo supervisor's {}", op_name(req)),
                message: resp.error.unwrap_or_else(|| "no reason given".into()),
            })
        }
    }
}

fn op_name(req: &sp::Request) -> &'static str {
    match req {
        sp::Request::Restart { .. } => "restart",
        sp::Request::Status { .. } => "status",
    }
}

fn status_of(resp: sp::Response) -> UnitStatus {
    UnitStatus {
        active_state: resp.active_state.unwrap_or_else(|| "unknown".into()),
        sub_state: None,
        invocation_id: resp.invocation_id,
        n_restarts: resp.n_restarts,
        main_pid: resp.main_pid,
        start_limit: None,
    }
}

impl Executor for DemoExecutor {
    fn status(&self, unit: &UnitName) -> Result<UnitStatus, ExecError> {
        self.call(&sp::Request::Status {
            unit: unit.as_str().to_owned(),
        })
        .map(status_of)
    }

    fn restart(&self, unit: &UnitName) -> Result<(), ExecError> {
        self.call(&sp::Request::Restart {
            unit: unit.as_str().to_owned(),
        })
        .map(drop)
    }

    fn describe(&self) -> &'static str {
        "the demo supervisor"
    }
}

/// `POST {base}/admin/cache/clear` on the demo app.
pub fn clear_cache(base_url: &str, timeout: Duration) -> Result<String, ExecError> {
    let url = format!("{}/admin/cache/clear", base_url.trim_end_matches('/'));
    let what = format!("POST {url}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .post(&url)
        .send_empty()
        .map_err(|e| ExecError::Failed {
            what: what.clone(),
            message: e.to_string(),
        })?;
    let status = resp.status();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .unwrap_or_default();
    if status.is_success() {
        Ok(body)
    } else {
        Err(ExecError::Failed {
            what,
            message: format!("HTTP {status}: {}", body.trim()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aiops_diagnosis::unit_state::parse_show;

    const SHOW: &str = "ActiveState=active\nSubState=running\nInvocationID=8c1a33b0a3f84c1f9d3e2a1b0c9d8e7f\nNRestarts=2\nMainPID=4242\nStartLimitBurst=5\nStartLimitIntervalUSec=10s\n";

    fn status(text: &str) -> Result<UnitStatus, String> {
        let state = parse_show(text).map_err(|e| e.message)?;
        status_from(&state)
    }

    #[test]
    fn the_status_comes_from_unit_states_parser() {
        let s = status(SHOW).unwrap();
        assert_eq!(s.active_state, "active");
        assert_eq!(s.sub_state.as_deref(), Some("running"));
        assert_eq!(
            s.invocation_id.as_deref(),
            Some("8c1a33b0a3f84c1f9d3e2a1b0c9d8e7f")
        );
        assert_eq!(s.n_restarts, Some(2));
        assert_eq!(s.main_pid, Some(4242));
        assert_eq!(
            s.start_limit,
            Some(StartLimit {
                burst: 5,
                interval: Some(Duration::from_secs(10))
            })
        );
    }

    #[test]
    fn refuses_odd_show_output() {
        assert!(status(&SHOW.replace("NRestarts=2", "NRestarts=two")).is_err());
        assert!(status(&SHOW.replace("ActiveState=active\n", "")).is_err());
        assert!(status("not a property line\n").is_err());
        // No main process, no limit: none rather than 0.
        let s = status(&SHOW.replace("MainPID=4242", "MainPID=0")).unwrap();
        assert_eq!(s.main_pid, None);
    }

    #[test]
    fn argv_is_fixed_with_the_unit_after_double_dash() {
        let u = UnitName::parse("aiops-demo-app.service").unwrap();
        assert_eq!(
            SystemdExecutor::restart_argv(&u),
            [
                "--no-ask-password",
                "restart",
                "--",
                "aiops-demo-app.service"
            ]
        );
        let show = SystemdExecutor::show_argv(&u);
        assert_eq!(show[0], "show");
        assert_eq!(show[show.len() - 2..], ["--", "aiops-demo-app.service"]);
    }
}
