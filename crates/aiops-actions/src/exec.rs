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

use aiops_core::unit::UnitName;
use serde::{Deserialize, Serialize};

use crate::limits::{StartLimit, parse_timespan};
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
}

/// `systemctl`, with a fixed argv and a time bound.
#[derive(Debug, Clone)]
pub struct SystemdExecutor {
    /// The systemctl binary; `systemctl` from `$PATH` by default.
    pub program: PathBuf,
    pub timeout: Duration,
}

impl Default for SystemdExecutor {
    fn default() -> Self {
        Self {
            program: PathBuf::from("systemctl"),
            timeout: Duration::from_secs(90),
        }
    }
}

/// The properties `status` asks for, in the order systemctl prints them.
pub const SHOW_PROPERTIES: &str =
    "ActiveState,SubState,InvocationID,NRestarts,MainPID,StartLimitBurst,StartLimitIntervalUSec";

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

    /// The argv of a status query (without the program).
    pub fn show_argv(unit: &UnitName) -> Vec<String> {
        vec![
            "show".into(),
            format!("--property={SHOW_PROPERTIES}"),
            "--".into(),
            unit.as_str().into(),
        ]
    }

    fn run(&self, argv: &[String], what: &str) -> Result<String, ExecError> {
        run_bounded(&self.program, argv, self.timeout, what)
    }
}

impl Executor for SystemdExecutor {
    fn status(&self, unit: &UnitName) -> Result<UnitStatus, ExecError> {
        let what = format!("systemctl show {unit}");
        let out = self.run(&Self::show_argv(unit), &what)?;
        parse_show(&out).map_err(|message| ExecError::Parse { what, message })
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

/// Parses `systemctl show --property=...` output strictly: every asked property exactly once,
/// nothing else.
pub fn parse_show(out: &str) -> Result<UnitStatus, String> {
    let wanted: Vec<&str> = SHOW_PROPERTIES.split(',').collect();
    let mut values: std::collections::BTreeMap<&str, &str> = Default::default();
    for line in out.lines().filter(|l| !l.is_empty()) {
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("line {line:?} is not KEY=VALUE"))?;
        if !wanted.contains(&k) {
            return Err(format!("unexpected property {k:?}"));
        }
        if values.insert(k, v).is_some() {
            return Err(format!("property {k} appears twice"));
        }
    }
    let get = |k: &str| {
        values
            .get(k)
            .copied()
            .ok_or_else(|| format!("property {k} is missing"))
    };
    let num = |k: &str| -> Result<u32, String> {
        let v = get(k)?;
        v.parse()
            .map_err(|_| format!("property {k}={v:?} is not a number"))
    };
    let active_state = get("ActiveState")?;
    if active_state.is_empty()
        || !active_state
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-')
    {
        return Err(format!("ActiveState={active_state:?} is not a state"));
    }
    let invocation = get("InvocationID")?;
    if !invocation.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("InvocationID={invocation:?} is not hex"));
    }
    let main_pid = num("MainPID")?;
    let interval = parse_timespan(get("StartLimitIntervalUSec")?)?;
    Ok(UnitStatus {
        active_state: active_state.to_owned(),
        sub_state: Some(get("SubState")?.to_owned()).filter(|s| !s.is_empty()),
        invocation_id: Some(invocation.to_owned()).filter(|s| !s.is_empty()),
        n_restarts: Some(num("NRestarts")?),
        main_pid: (main_pid != 0).then_some(main_pid),
        start_limit: Some(StartLimit {
            burst: num("StartLimitBurst")?,
            interval,
        }),
    })
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

    const SHOW: &str = "ActiveState=active\nSubState=running\nInvocationID=8c1a33b0a3f84c1f9d3e2a1b0c9d8e7f\nNRestarts=2\nMainPID=4242\nStartLimitBurst=5\nStartLimitIntervalUSec=10s\n";

    #[test]
    fn parses_systemctl_show() {
        let s = parse_show(SHOW).unwrap();
        assert_eq!(s.active_state, "active");
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
        assert!(parse_show(&SHOW.replace("NRestarts=2", "NRestarts=two")).is_err());
        assert!(parse_show(&format!("{SHOW}Foo=bar\n")).is_err());
        assert!(parse_show(&format!("{SHOW}MainPID=1\n")).is_err());
        assert!(parse_show(&SHOW.replace("MainPID=4242\n", "")).is_err());
        assert!(parse_show(&SHOW.replace("8c1a", "zz; ")).is_err());
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
        assert_eq!(
            SystemdExecutor::show_argv(&u)[2..],
            ["--", "aiops-demo-app.service"]
        );
    }

    proptest::proptest! {
        #[test]
        fn show_parser_never_panics(s in "\\PC{0,200}") {
            let _ = parse_show(&s);
        }
    }
}
