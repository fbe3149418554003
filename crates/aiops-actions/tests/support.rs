//! Test helpers that read like the domain: a firing alert, its diagnosis, a gate on a temp state
//! dir, and a real supervisor that restarts a real child process.

use std::collections::BTreeMap;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiops_actions::supervisor_protocol::{self as sp, Request, Response};
use aiops_actions::{Actor, AlertRef, Gate, GateOptions};
use aiops_core::Config;
use aiops_core::config::{ActionKind, ExecutorKind};
use aiops_core::model::{
    Diagnosis, Evidence, EvidenceItem, Hypothesis, PrometheusHealth, Recommendation, Risk,
    ValueUnit,
};
use aiops_core::unit::UnitName;
use chrono::Utc;

pub const UNIT: &str = "aiops-demo-app.service";

/// An address where nothing listens: Prometheus and Alertmanager are "down" unless a test
/// starts real ones.
pub const NOBODY_HOME: &str = "http://127.0.0.1:1";

pub fn alice() -> Actor {
    Actor {
        uid: Some(1000),
        name: "alice".into(),
    }
}

pub fn bob() -> Actor {
    Actor {
        uid: Some(1001),
        name: "bob".into(),
    }
}

/// A firing `HighErrorRatio` group for `unit_label`.
pub fn alert(group: &str, unit_label: &str) -> AlertRef {
    let mut labels = BTreeMap::new();
    labels.insert("alertname".to_owned(), "HighErrorRatio".to_owned());
    labels.insert("service".to_owned(), "aiops-demo-app".to_owned());
    labels.insert("unit".to_owned(), unit_label.to_owned());
    AlertRef {
        group_key: format!("{{}}:{{alertname=\"HighErrorRatio\", group=\"{group}\"}}"),
        alertname: "HighErrorRatio".into(),
        fingerprints: vec![format!("{:016x}", fastrand_like(group))],
        labels,
        starts_at: Utc::now() - chrono::TimeDelta::seconds(40),
    }
}

fn fastrand_like(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// A diagnosis recommending `kind` on `unit`.
pub fn diagnosis(unit: &str, kind: ActionKind) -> Diagnosis {
    let now = Utc::now();
    Diagnosis {
        alertname: "HighErrorRatio".into(),
        labels: BTreeMap::new(),
        evidence: Evidence {
            id: "ev-0123456789ab".into(),
            gathered_at: now,
            prometheus_url: NOBODY_HOME.into(),
            prometheus: PrometheusHealth::Reachable,
            target_up: Some(true),
            items: vec![EvidenceItem {
                key: "error_ratio".into(),
                label: "error ratio".into(),
                unit: ValueUnit::Ratio,
                query: "job:http_request_error_ratio:rate30s{job=\"aiops-demo-app\"}".into(),
                at: now,
                value: Some(0.231),
                baseline_query: None,
                baseline: Some(0.004),
                error: None,
            }],
            unit: None,
            scope: None,
        },
        hypotheses: vec![Hypothesis {
            id: "bad-process-state".into(),
            cause: "the process is in a bad state (errors with normal load)".into(),
            confidence: 0.8,
            action: Some(kind),
            risk: Risk::Low,
            reasoning: "error ratio 23.1% against a baseline of 0.4%".into(),
        }],
        recommendation: Recommendation::Act {
            action: kind,
            unit: UnitName::parse(unit).unwrap(),
            risk: Risk::Low,
            confidence: 0.8,
            hypothesis: "bad-process-state".into(),
        },
        explanation: "Error ratio 23.1% against a baseline of 0.4%; a restart should help.".into(),
    }
}

/// A configuration for tests: state in `dir`, the demo executor on `supervisor`, no limits in
/// the way unless a test sets them.
pub fn config(dir: &Path, supervisor: &Path) -> Config {
    let mut c = Config {
        state_dir: dir.join("state"),
        ..Config::default()
    };
    c.prometheus.url = NOBODY_HOME.into();
    c.prometheus.timeout_ms = 2000;
    c.alertmanager.url = NOBODY_HOME.into();
    c.remediation.executor = ExecutorKind::Demo;
    c.remediation.demo_supervisor_socket = Some(supervisor.to_owned());
    c.remediation.cooldown_secs = 0;
    c.remediation.max_actions_per_hour = 1_000_000;
    c.remediation.breaker_threshold = 1_000_000;
    c.webhook.control_socket = dir.join("control.sock");
    c
}

/// Options that keep verification short (no Prometheus in most tests, so it fails fast).
pub fn quick() -> GateOptions {
    GateOptions {
        poll_interval: Duration::from_millis(20),
        verify_timeout: Some(Duration::from_millis(200)),
        ..GateOptions::default()
    }
}

pub fn gate(config: &Config) -> Gate {
    Gate::open_with(config, &prometheus::Registry::new(), quick()).unwrap()
}

/// A real supervisor on a unix socket: `restart` kills its child (`sleep`) and spawns a new one
/// with a fresh invocation id.
#[derive(Debug)]
pub struct Supervisor {
    pub socket: PathBuf,
    pub restarts: Arc<AtomicU32>,
    /// While set, the unit reports `failed`: a restart does not bring it back.
    pub stuck: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    child: Arc<Mutex<Option<(Child, String)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the supervisor runs as its unit's process.
pub type Spawn = Arc<dyn Fn() -> Child + Send + Sync>;

fn spawn_child(spawn: &Spawn) -> (Child, String) {
    let child = spawn();
    (
        child,
        format!(
            "{:032x}",
            u128::from(fastrand::u64(..)) << 64 | u128::from(fastrand::u64(..))
        ),
    )
}

impl Supervisor {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, Arc::new(|| {}))
    }

    /// Like [`Supervisor::start`]; `on_restart` runs after each restart (a test's stand-in for
    /// "the fault lived in the old process").
    pub fn start_with(dir: &Path, on_restart: Arc<dyn Fn() + Send + Sync>) -> Self {
        let sleep: Spawn = Arc::new(|| {
            Command::new("sleep")
                .arg("600")
                .spawn()
                .expect("spawn sleep")
        });
        Self::start_running(dir, sleep, on_restart)
    }

    /// A supervisor whose unit's process is whatever `spawn` starts (a real demo app, say): a
    /// restart kills it (SIGKILL, waited for) and spawns the next.
    pub fn start_running(
        dir: &Path,
        spawn: Spawn,
        on_restart: Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        let socket = dir.join("supervisor.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let restarts = Arc::new(AtomicU32::new(0));
        let stuck = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let child = Arc::new(Mutex::new(Some(spawn_child(&spawn))));
        let thread = {
            let (restarts, stop, child, stuck) =
                (restarts.clone(), stop.clone(), child.clone(), stuck.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let handler = |req: &Request| -> Response {
                        if req.unit() != UNIT {
                            return Response::error(format!("unknown unit {:?}", req.unit()));
                        }
                        let mut guard = child.lock().unwrap();
                        if matches!(req, Request::Restart { .. }) {
                            if let Some((mut old, _)) = guard.take() {
                                let _ = old.kill();
                                let _ = old.wait();
                            }
                            *guard = Some(spawn_child(&spawn));
                            restarts.fetch_add(1, Ordering::SeqCst);
                            on_restart();
                        }
                        let (c, inv) = guard.as_ref().unwrap();
                        Response {
                            ok: true,
                            active_state: Some(
                                if stuck.load(Ordering::SeqCst) {
                                    "failed"
                                } else {
                                    "active"
                                }
                                .into(),
                            ),
                            invocation_id: Some(inv.clone()),
                            main_pid: Some(c.id()),
                            n_restarts: Some(restarts.load(Ordering::SeqCst)),
                            error: None,
                        }
                    };
                    let _ = sp::serve_one(stream, &handler);
                }
            })
        };
        Self {
            socket,
            restarts,
            stuck,
            stop,
            child,
            thread: Some(thread),
        }
    }

    pub fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::SeqCst)
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop; if the socket is already gone, leave the thread behind rather
        // than hang the test.
        if std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
            && let Some(t) = self.thread.take()
        {
            let _ = t.join();
        }
        if let Some((mut c, _)) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A temp dir traversable by other users (the control socket test connects as `nobody`).
pub fn tempdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    d
}
