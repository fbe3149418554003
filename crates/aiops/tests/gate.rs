//! The gate's commands: the real `aiops` binary against a real executor (a `Gate` serving its
//! control socket) and a real supervisor restarting a real child process; snapshots of the
//! human output with ids and times fixed or redacted.

use std::collections::BTreeMap;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiops_actions::supervisor_protocol::{self as sp, Request, Response};
use aiops_actions::{Action, ActionId, AlertRef, Gate, GateOptions, Proposal};
use aiops_core::Config;
use aiops_core::config::{ActionKind, ExecutorKind};
use aiops_core::model::{
    Diagnosis, Evidence, EvidenceItem, Hypothesis, PrometheusHealth, Recommendation, Risk,
    ValueUnit,
};
use aiops_core::unit::UnitName;
use chrono::{DateTime, TimeDelta, Utc};

const UNIT: &str = "aiops-demo-app.service";

fn alert(group: &str) -> AlertRef {
    let mut labels = BTreeMap::new();
    labels.insert("alertname".to_owned(), "HighErrorRatio".to_owned());
    labels.insert("unit".to_owned(), UNIT.to_owned());
    AlertRef {
        group_key: format!("{{}}:{{alertname=\"HighErrorRatio\", g=\"{group}\"}}"),
        alertname: "HighErrorRatio".into(),
        fingerprints: vec!["0123456789abcdef".into()],
        labels,
        starts_at: Utc::now() - TimeDelta::seconds(45),
    }
}

fn diagnosis() -> Diagnosis {
    let now = Utc::now();
    let item = |key: &str, label: &str, unit, query: &str, value, baseline| EvidenceItem {
        key: key.into(),
        label: label.into(),
        unit,
        query: query.into(),
        at: now,
        value: Some(value),
        baseline_query: None,
        baseline: Some(baseline),
        error: None,
    };
    Diagnosis {
        alertname: "HighErrorRatio".into(),
        labels: BTreeMap::new(),
        evidence: Evidence {
            id: "ev-0123456789ab".into(),
            gathered_at: now,
            prometheus_url: "http://127.0.0.1:1".into(),
            prometheus: PrometheusHealth::Reachable,
            target_up: Some(true),
            items: vec![
                item("error_ratio", "error ratio", ValueUnit::Ratio, "job:http_request_error_ratio:rate30s{job=\"aiops-demo-app\"}", 0.231, 0.004),
                item("cpu", "CPU", ValueUnit::Cores, "job:process_cpu_seconds:rate30s{job=\"aiops-demo-app\"}", 0.05, 0.04),
            ],
            unit: None,
            scope: None,
        },
        hypotheses: vec![
            Hypothesis {
                id: "bad-process-state".into(),
                cause: "the process is in a bad state (errors with normal load)".into(),
                confidence: 0.8,
                action: Some(ActionKind::Restart),
                risk: Risk::Low,
                reasoning: "errors up, load and CPU normal".into(),
            },
            Hypothesis {
                id: "traffic-surge".into(),
                cause: "a traffic surge".into(),
                confidence: 0.1,
                action: None,
                risk: Risk::Low,
                reasoning: "request rate normal".into(),
            },
        ],
        recommendation: Recommendation::Act {
            action: ActionKind::Restart,
            unit: UnitName::parse(UNIT).unwrap(),
            risk: Risk::Low,
            confidence: 0.8,
            hypothesis: "bad-process-state".into(),
        },
        explanation: "The error ratio is 23.1% against a baseline of 0.4% since the alert started, while the request rate and CPU are normal: the process itself is failing requests. A restart clears its in-memory state.".into(),
    }
}

/// A supervisor restarting a real `sleep` child.
struct Supervisor {
    socket: PathBuf,
    restarts: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    child: Arc<Mutex<Option<Child>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Supervisor {
    fn start(dir: &Path) -> Self {
        let socket = dir.join("supervisor.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let restarts = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let sleep = || Command::new("sleep").arg("600").spawn().unwrap();
        let child = Arc::new(Mutex::new(Some(sleep())));
        let thread = {
            let (restarts, stop, child) = (restarts.clone(), stop.clone(), child.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let handler = |req: &Request| -> Response {
                        let mut c = child.lock().unwrap();
                        if matches!(req, Request::Restart { .. }) {
                            if let Some(mut old) = c.take() {
                                let _ = old.kill();
                                let _ = old.wait();
                            }
                            *c = Some(sleep());
                            restarts.fetch_add(1, Ordering::SeqCst);
                        }
                        let n = restarts.load(Ordering::SeqCst);
                        Response {
                            ok: true,
                            active_state: Some("active".into()),
                            invocation_id: Some(format!("{n:032x}")),
                            main_pid: c.as_ref().map(Child::id),
                            n_restarts: Some(n),
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
            stop,
            child,
            thread: Some(thread),
        }
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
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The executor, serving its control socket on its own runtime, and a config file for the CLI.
struct Stack {
    config_path: PathBuf,
    config: Config,
    gate: Arc<Gate>,
    supervisor: Supervisor,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    rt: Option<tokio::runtime::Runtime>,
    /// Last: fields drop in order, and the sockets live in here.
    dir: tempfile::TempDir,
}

impl Stack {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let supervisor = Supervisor::start(dir.path());
        let mut config = Config {
            state_dir: dir.path().join("state"),
            ..Config::default()
        };
        config.prometheus.url = "http://127.0.0.1:1".into();
        config.alertmanager.url = "http://127.0.0.1:1".into();
        config.remediation.executor = ExecutorKind::Demo;
        config.remediation.demo_supervisor_socket = Some(supervisor.socket.clone());
        config.remediation.verify_timeout_secs = 1;
        config.webhook.control_socket = dir.path().join("control.sock");
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config.to_toml()).unwrap();
        let options = GateOptions {
            poll_interval: Duration::from_millis(50),
            ..GateOptions::default()
        };
        let gate =
            Arc::new(Gate::open_with(&config, &prometheus::Registry::new(), options).unwrap());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (g, path) = (gate.clone(), config.webhook.control_socket.clone());
        rt.spawn(async move {
            g.serve_control(&path, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        for _ in 0..500 {
            if std::os::unix::net::UnixStream::connect(&config.webhook.control_socket).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Self {
            dir,
            config_path,
            config,
            gate,
            supervisor,
            stop: Some(tx),
            rt: Some(rt),
        }
    }

    fn propose(&self, group: &str) -> String {
        match self.gate.propose(&alert(group), &diagnosis()).unwrap() {
            Proposal::Pending { id, .. } => id.to_string(),
            other => panic!("{other:?}"),
        }
    }

    fn aiops(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_aiops"))
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .env_remove("AIOPS_CONFIG")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Replaces every match of `pattern` (`9` = any digit, anything else literal) with `with`.
fn mask(text: &str, pattern: &str, with: &str) -> String {
    let (t, p) = (text.as_bytes(), pattern.as_bytes());
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let hit = i + p.len() <= t.len()
            && p.iter().zip(&t[i..i + p.len()]).all(|(pc, tc)| {
                if *pc == b'9' {
                    tc.is_ascii_digit()
                } else {
                    pc == tc
                }
            });
        if hit {
            out.extend_from_slice(with.as_bytes());
            i += p.len();
        } else {
            out.push(t[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Replaces the action id, times, clock readings and pids.
fn redact(text: &str, id: &str) -> String {
    let s = text.replace(id, "[ID]");
    let s = mask(&s, "9999-99-99 99:99:99 UTC", "[TIME]");
    let s = mask(&s, "99:99:99", "[HH:MM:SS]");
    s.lines()
        .map(|l| match l.find("main pid ") {
            Some(p) => format!("{}main pid [PID]", &l[..p]),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_whole_gate_through_the_cli() {
    let stack = Stack::start();
    let id = stack.propose("cli");

    let o = stack.aiops(&["pending"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&id)
            && out.contains("HighErrorRatio")
            && out.contains(&format!("aiops approve {id}")),
        "{out}"
    );

    let o = stack.aiops(&["--json", "pending"]);
    let list: Vec<Action> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list[0].id.as_str(), id);

    let o = stack.aiops(&["show", &id]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("job:http_request_error_ratio:rate30s{job=\"aiops-demo-app\"}"),
        "{out}"
    );
    assert!(
        out.contains("23.1% (baseline 0.4%)")
            && out.contains("query failed: cannot reach Prometheus"),
        "{out}"
    );

    // Stale without --force (no Alertmanager to confirm): refused, exit 3, says how to force.
    let o = stack.aiops(&["approve", &id]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("hint: add --force"), "{}", stderr(&o));
    assert_eq!(stack.supervisor.restarts.load(Ordering::SeqCst), 0);

    // Forced: says what it overrides, runs, streams progress, and (no Prometheus to confirm
    // recovery) ends unconfirmed, not as a failure: exit 7.
    let o = stack.aiops(&["approve", "--force"]);
    assert_eq!(o.status.code(), Some(7), "{}\n{}", stdout(&o), stderr(&o));
    assert_eq!(stack.supervisor.restarts.load(Ordering::SeqCst), 1);
    let whoami = aiops_actions::Actor::from_uid(nix::unistd::getuid().as_raw()).to_string();
    let progress = redact(&stdout(&o), &id).replace(&whoami, "[ME]");
    insta::assert_snapshot!("approve_forced_unconfirmed", progress);

    // A second approval names who approved it and when.
    let o = stack.aiops(&["approve", &id]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("was already carried out: approved by"),
        "{}",
        stderr(&o)
    );

    let o = stack.aiops(&["history"]);
    assert!(o.status.success());
    assert!(
        stdout(&o).contains("unconfirmed") && stdout(&o).contains(&id),
        "{}",
        stdout(&o)
    );

    let o = stack.aiops(&["show", "deadbeef"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let o = stack.aiops(&["reject", "nothex", "--reason", "x"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));

    let o = stack.aiops(&["audit", "verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("ok: ") && stdout(&o).contains("chain intact, head matches"),
        "{}",
        stdout(&o)
    );

    // Offline verification of an edited copy names the line (1 proposed, 2 refused, 3 approved).
    let log = stack.config.state_dir.join("audit.jsonl");
    let copy = stack.dir.path().join("copy.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(
        &copy,
        text.replacen("\"event\":\"approved\"", "\"event\":\"rejected\"", 1),
    )
    .unwrap();
    let o = stack.aiops(&["audit", "verify", "--file", copy.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).starts_with("FAILED: ") && stdout(&o).contains("(first bad line: 3)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn reject_records_the_reason() {
    let stack = Stack::start();
    let id = stack.propose("rej");
    let o = stack.aiops(&["reject", &id, "--reason", "deploy in progress"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = stack.aiops(&["approve"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("nothing is pending approval"),
        "{}",
        stderr(&o)
    );
    let o = stack.aiops(&["approve", &id]);
    assert!(stderr(&o).contains("deploy in progress"), "{}", stderr(&o));
}

#[test]
fn no_daemon_means_unavailable_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        state_dir: dir.path().join("state"),
        webhook: aiops_core::config::WebhookConfig {
            control_socket: dir.path().join("absent.sock"),
            ..Default::default()
        },
        ..Config::default()
    };
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config.to_toml()).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_aiops"))
        .arg("--config")
        .arg(&path)
        .arg("pending")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(6));
    assert!(
        stderr(&o).contains("is aiops-webhook running? (systemctl status aiops-webhook)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn polkit_rule_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config
        .remediation
        .allowed
        .insert("zz-other.service".into(), vec![ActionKind::Restart]);
    config
        .remediation
        .allowed
        .insert("cache-only.service".into(), vec![ActionKind::ClearCache]);
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config.to_toml()).unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_aiops"))
            .arg("--config")
            .arg(&path)
            .args(["policy", "polkit", "--user", "aiops"])
            .output()
            .unwrap()
    };
    let (a, b) = (run(), run());
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);
    insta::assert_snapshot!("polkit_rule", stdout(&a));
}

/// Fixes ids and times so that the human renderers can be snapshot exactly.
fn fixed(mut a: Action, t0: DateTime<Utc>) -> Action {
    a.id = ActionId::parse("3f9c01ab").unwrap();
    a.created_at = t0;
    a.updated_at = t0 + TimeDelta::seconds(90);
    a.last_seen = t0 + TimeDelta::seconds(60);
    a.expires_at = t0 + TimeDelta::hours(1);
    a.alert.starts_at = t0 - TimeDelta::seconds(45);
    a.diagnosis.evidence.gathered_at = t0 - TimeDelta::seconds(2);
    for t in &mut a.history {
        t.at = t0;
    }
    a
}

#[test]
fn human_output_snapshots() {
    let stack = Stack::start();
    stack.propose("snap");
    let t0: DateTime<Utc> = "2026-11-28T12:03:40Z".parse().unwrap();
    let mut a = fixed(stack.gate.list(false).unwrap().remove(0), t0);
    a.seen_count = 3;
    insta::assert_snapshot!(
        "pending",
        aiops::gate::render_pending(std::slice::from_ref(&a), t0 + TimeDelta::seconds(125))
    );
    insta::assert_snapshot!("pending_empty", aiops::gate::render_pending(&[], t0));

    let real = stack.gate.list(false).unwrap().remove(0);
    let mut show = stack.gate.show(real.id.as_str()).unwrap();
    show.action = a.clone();
    show.evidence_now_at = t0 + TimeDelta::seconds(400);
    show.evidence_now[0].now = Some(0.003);
    show.evidence_now[0].error = None;
    show.evidence_now[1].now = None;
    show.evidence_now[1].error = Some(
        "cannot reach Prometheus at http://127.0.0.1:1/api/v1/query: Connection refused".into(),
    );
    insta::assert_snapshot!("show", aiops::gate::render_show(&show));

    let mut done = a.clone();
    let alice = aiops_actions::Actor {
        uid: Some(1000),
        name: "alice".into(),
    };
    done.transition(
        aiops_actions::ActionState::Approved,
        &alice,
        t0 + TimeDelta::seconds(80),
        None,
    )
    .unwrap();
    done.transition(
        aiops_actions::ActionState::Executing,
        &aiops_actions::Actor::system(),
        t0 + TimeDelta::seconds(80),
        None,
    )
    .unwrap();
    done.transition(
        aiops_actions::ActionState::Verifying,
        &aiops_actions::Actor::system(),
        t0 + TimeDelta::seconds(81),
        None,
    )
    .unwrap();
    let summary = "verified: error ratio back to 0.2% 35 s after the restart".to_owned();
    done.transition(
        aiops_actions::ActionState::Succeeded,
        &aiops_actions::Actor::system(),
        t0 + TimeDelta::seconds(116),
        Some(summary.clone()),
    )
    .unwrap();
    done.outcome = Some(aiops_actions::state::Outcome {
        fixed: true,
        unconfirmed: false,
        reason: None,
        summary: summary.clone(),
        recovery_secs: Some(35.0),
        value_after: Some(0.002),
    });
    let finished = aiops_actions::Finished {
        action: done.clone(),
        fixed: true,
        summary,
    };
    insta::assert_snapshot!("approve_finished", aiops::gate::render_finished(&finished));
    let mut rejected = a;
    rejected.id = ActionId::parse("0a1b2c3d").unwrap();
    rejected
        .transition(
            aiops_actions::ActionState::Rejected,
            &alice,
            t0 + TimeDelta::seconds(30),
            Some("deploy in progress".into()),
        )
        .unwrap();
    insta::assert_snapshot!("history", aiops::gate::render_history(&[done, rejected]));
}

/// `aiops show` prints the unit's systemd evidence in full (every fact, the journal's counts and
/// whole excerpt, the commands) and the state the audit log recorded before the restart.
#[test]
fn show_prints_the_units_evidence_and_its_state_before_the_restart() {
    let stack = Stack::start();
    stack.propose("unit");
    let t0: DateTime<Utc> = "2026-12-02T03:05:00Z".parse().unwrap();
    let real = stack.gate.list(false).unwrap().remove(0);
    let mut show = stack.gate.show(real.id.as_str()).unwrap();
    assert_eq!(show.before_restart, None, "a pending action never ran");
    let mut a = fixed(real, t0);
    let snap = aiops_diagnosis::testkit::recorded_unit_snapshot(t0);
    a.diagnosis.evidence.unit = Some(snap.clone());
    show.action = a;
    show.evidence_now_at = t0 + TimeDelta::seconds(400);
    for e in &mut show.evidence_now {
        e.now = Some(0.003);
        e.error = None;
    }
    show.before_restart = Some(aiops_actions::gate::BeforeRestart {
        audit_seq: 7,
        at: t0 + TimeDelta::seconds(80),
        snapshot: Some(aiops_diagnosis::testkit::recorded_unit_snapshot(
            t0 + TimeDelta::seconds(80),
        )),
        note: None,
    });
    let text = aiops::gate::render_show(&show);
    // The whole excerpt, not the three lines Slack gets.
    let journal = snap.journal.as_ref().unwrap();
    assert!(journal.last_errors.len() > 3, "{journal:?}");
    for l in &journal.last_errors {
        let start: String = l.text.chars().take(40).collect();
        assert!(text.contains(&start), "{start:?} missing from:\n{text}");
    }
    insta::assert_snapshot!("show_unit", text);
}

/// After an approved restart, `aiops show` prints what the audit's `executing` entry recorded
/// (the demo supervisor keeps no unit state, and says so).
#[test]
fn show_after_a_restart_reports_the_audited_state_before_it() {
    let stack = Stack::start();
    let id = stack.propose("forensic");
    let _ = stack.aiops(&["approve", "--force", &id]);
    let o = stack.aiops(&["show", &id]);
    let text = stdout(&o);
    assert!(
        text.contains("before the restart (audit entry")
            && text.contains("note: the demo supervisor keeps no unit state to record")
            && text.contains("no unit state was recorded"),
        "{text}{}",
        stderr(&o)
    );
    let show = stack.gate.show(&id).unwrap();
    let b = show.before_restart.expect("the executing entry");
    assert_eq!(b.snapshot, None);
}
