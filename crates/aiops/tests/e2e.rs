//! The whole loop on the demo stack, with the real Prometheus and Alertmanager binaries:
//! `aiops stress errors` → the recommendation reaches a Slack-protocol sink and is stored as a
//! pending action → `aiops approve` → the app restarts → the alert resolves → the verified
//! outcome is reported → the audit chain holds. It measures the detection latency (fault on →
//! recommendation stored) against the configured floor, and checks that stopping the demo
//! leaves no process behind.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aiops_testkit::procs::{alive, descendants, stop_within, terminate};
use aiops_testkit::slack::Sink;
use aiops_testkit::{free_ports, tools, wait_until};
use serde_json::Value;

/// The directory holding `aiops` and, built next to it by the same `cargo test --workspace` (or
/// the Nix package's build), `aiops-webhook` and `aiops-demo-app`; `None`, after saying why (or
/// failing, when tools are required), when either is missing. Nothing is built here: a nested
/// `cargo build` would compile the workspace again under another target layout.
fn binaries() -> Option<PathBuf> {
    let aiops = PathBuf::from(env!("CARGO_BIN_EXE_aiops"));
    let dir = aiops.parent().expect("a directory").to_owned();
    for sibling in ["aiops-webhook", "aiops-demo-app"] {
        if !dir.join(sibling).is_file() {
            tools::missing(sibling);
            return None;
        }
    }
    Some(dir)
}

/// A running `aiops demo`, stopped (TERM, then KILL) on drop.
struct Demo {
    child: Option<Child>,
    ports: Vec<u16>,
    state: PathBuf,
    config: PathBuf,
    bin: PathBuf,
    out: PathBuf,
}

impl Demo {
    fn start(dir: &Path, bin: &Path, ports: &[u16], slack_url_file: &Path) -> Self {
        let state = dir.join("demo");
        let out = dir.join("demo.out");
        let log = std::fs::File::create(&out).unwrap();
        let p = |i: usize| ports[i].to_string();
        let child = Command::new(bin.join("aiops"))
            .args(["demo", "--state-dir"])
            .arg(&state)
            .args(["--app-port", &p(0), "--webhook-port", &p(1)])
            .args(["--prometheus-port", &p(2), "--alertmanager-port", &p(3)])
            .args([
                "--grafana-port",
                &p(4),
                "--no-grafana",
                "--traffic-rate",
                "5",
            ])
            .arg("--slack-webhook-url-file")
            .arg(slack_url_file)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start aiops demo");
        let demo = Demo {
            child: Some(child),
            ports: ports.to_vec(),
            config: state.join("config.toml"),
            state,
            bin: bin.to_owned(),
            out,
        };
        wait_until(Duration::from_secs(60), "aiops demo to be ready", || {
            demo.output().contains("aiops demo is running") || demo.output().contains("aiops: ")
        });
        assert!(
            demo.output().contains("aiops demo is running"),
            "the demo did not start:\n{}",
            demo.output()
        );
        demo
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn aiops(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join("aiops"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run aiops")
    }

    /// Stops the demo with SIGTERM and returns how it exited.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        terminate(child.id());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("aiops demo did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_within(&mut child, Duration::from_secs(15));
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `expr` over the time since `since` (as a dashboard's graph would) and returns how many
/// series answered.
fn range_query(base: &str, expr: &str, since: Instant) -> Result<usize, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = now - since.elapsed().as_secs_f64() - 60.0;
    let mut resp = ureq::get(format!("{base}/api/v1/query_range"))
        .query("query", expr)
        .query("start", format!("{start:.3}"))
        .query("end", format!("{now:.3}"))
        .query("step", "5")
        .call()
        .map_err(|e| e.to_string())?;
    let body: Value = resp.body_mut().read_json().map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(format!("{}: {}", body["errorType"], body["error"]));
    }
    Ok(body["data"]["result"].as_array().map_or(0, Vec::len))
}

/// Every text of every block of a Slack payload, joined (what a reader of the channel sees).
fn slack_text(body: &Value) -> String {
    let mut out = body["text"].as_str().unwrap_or_default().to_owned();
    for b in body["blocks"].as_array().into_iter().flatten() {
        if let Some(t) = b["text"]["text"].as_str() {
            out.push('\n');
            out.push_str(t);
        }
        for f in b["fields"].as_array().into_iter().flatten() {
            out.push('\n');
            out.push_str(f["text"].as_str().unwrap_or_default());
        }
        for e in b["elements"].as_array().into_iter().flatten() {
            out.push('\n');
            out.push_str(e["text"].as_str().unwrap_or_default());
        }
    }
    out
}

#[test]
fn the_whole_loop_on_the_demo_stack() {
    let (Some(_), Some(_), Some(bin)) = (
        tools::require(&["prometheus"]),
        tools::require(&["alertmanager", "prometheus-alertmanager"]),
        binaries(),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let url_file = dir.path().join("slack-url");
    std::fs::write(&url_file, sink.url()).unwrap();
    let mut demo = Demo::start(dir.path(), &bin, &free_ports(5), &url_file);
    let started_children = descendants(demo.pid());
    assert!(
        started_children.len() >= 4,
        "prometheus, alertmanager, the app and the receiver: {started_children:?}"
    );

    // 1. Break it.
    let fault_on = Instant::now();
    let out = demo.aiops(&[
        "stress",
        "errors",
        "--ratio",
        "0.3",
        "--duration",
        "5m",
        "--no-traffic",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Enough traffic for a clear signal, in the background for the rest of the test.
    let mut traffic = KillOnDrop(
        Command::new(bin.join("aiops"))
            .arg("--config")
            .arg(&demo.config)
            .args(["stress", "traffic", "--rate", "20", "--duration", "5m"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // 2. The recommendation is stored as a pending action, and posted with its evidence.
    let mut pending: Vec<Value> = Vec::new();
    wait_until(Duration::from_secs(150), "a pending action", || {
        let out = demo.aiops(&["--json", "pending"]);
        pending = serde_json::from_slice(&out.stdout).unwrap_or_default();
        !pending.is_empty()
    });
    let detection = fault_on.elapsed();
    let floor = aiops_assets::floor::DETECTION_FLOOR;
    eprintln!(
        "detection latency (fault on → recommendation stored): {:.1} s; floor {} s",
        detection.as_secs_f64(),
        floor.as_secs()
    );
    // The floor is the worst case of the alerting chain; diagnosis and storage add a little,
    // and a loaded CI runner more: a generous bound still catches a broken pipeline.
    assert!(
        detection <= floor + Duration::from_secs(45),
        "detection took {detection:?}, floor {floor:?}"
    );
    assert_eq!(pending.len(), 1, "{pending:?}");
    let action = &pending[0];
    let id = action["id"].as_str().unwrap().to_owned();
    assert_eq!(action["kind"], "restart", "{action}");
    assert_eq!(action["unit"], "aiops-demo-app.service", "{action}");

    wait_until(
        Duration::from_secs(30),
        "the firing message at the sink",
        || {
            sink.delivered()
                .iter()
                .any(|b| slack_text(b).contains(&format!("aiops approve {id}")))
        },
    );
    let firing = sink
        .delivered()
        .into_iter()
        .find(|b| slack_text(b).contains(&format!("aiops approve {id}")))
        .unwrap();
    let text = slack_text(&firing);
    assert!(firing["blocks"][0]["type"] == "header", "{firing}");
    assert!(text.contains("HighErrorRatio firing"), "{text}");
    assert!(
        text.contains("Error ratio is"),
        "the explanation with numbers: {text}"
    );
    assert!(
        text.contains("job:http_request_error_ratio:rate30s{job=\"aiops-demo-app\"}"),
        "the evidence's PromQL: {text}"
    );

    // 3. A human approves; the app restarts through the demo's supervisor; recovery is verified.
    let before = demo.aiops(&["--json", "show", &id]);
    assert!(before.status.success(), "{}", stderr(&before));
    let approve_started = Instant::now();
    let out = demo.aiops(&["approve", &id]);
    let approve_took = approve_started.elapsed();
    let said = stdout(&out);
    assert!(out.status.success(), "{said}\n{}", stderr(&out));
    assert!(said.contains("active again: new invocation"), "{said}");
    assert!(said.contains("verified: error ratio back to"), "{said}");
    eprintln!(
        "approval to verified recovery: {:.1} s",
        approve_took.as_secs_f64()
    );
    assert!(
        demo.output().contains("demo app restarted"),
        "{}",
        demo.output()
    );

    let shown: Value =
        serde_json::from_slice(&demo.aiops(&["--json", "show", &id]).stdout).unwrap();
    assert_eq!(shown["action"]["state"], "succeeded", "{shown}");

    // 4. The alert resolves, and the channel hears the approval, the outcome and the resolution.
    wait_until(
        Duration::from_secs(120),
        "the resolved and verified messages",
        || {
            let texts: Vec<String> = sink.delivered().iter().map(slack_text).collect();
            texts.iter().any(|t| t.contains("HighErrorRatio resolved"))
                && texts
                    .iter()
                    .any(|t| t.contains("verified") && t.contains(&id))
                && texts.iter().any(|t| t.contains("approved by"))
        },
    );
    let texts: Vec<String> = sink.delivered().iter().map(slack_text).collect();
    let position = |needle: &str| texts.iter().position(|t| t.contains(needle)).unwrap();
    assert!(
        position("HighErrorRatio firing") < position("approved by"),
        "the approval follows the alert it is about: {texts:#?}"
    );

    // 5. The audit chain holds every step, and verifies.
    let out = demo.aiops(&["audit", "verify"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let audit = std::fs::read_to_string(demo.state.join("aiops/audit.jsonl")).unwrap();
    let events: Vec<String> = audit
        .lines()
        .filter(|l| l.contains(&id))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| v["event"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(events.len() >= 4, "{events:?}");
    for e in [
        "proposed",
        "approved",
        "executing",
        "verifying",
        "succeeded",
    ] {
        assert!(events.iter().any(|x| x == e), "{e} missing from {events:?}");
    }

    // 6. Every panel of the dashboard has data now, the AIOps loop's own panels included.
    let prometheus = format!("http://127.0.0.1:{}", demo.ports[2]);
    let dashboard = aiops_assets::dashboard::dashboard();
    let loop_started = fault_on;
    let mut missing: Vec<String> = Vec::new();
    // The receiver's last counters reach Prometheus with its next scrape: allow a few.
    wait_until(
        Duration::from_secs(60),
        "data in every dashboard panel",
        || {
            missing = aiops_assets::dashboard::queries(&dashboard)
                .iter()
                .filter_map(|q| {
                    let expr = aiops_assets::dashboard::substitute(&q.expr, &dashboard)
                        .unwrap_or_else(|| panic!("{}: unsubstituted variable", q.origin));
                    match range_query(&prometheus, &expr, loop_started) {
                        Ok(n) if n > 0 => None,
                        Ok(_) => Some(format!("{}: no data for {expr}", q.origin)),
                        Err(e) => panic!("{}: {expr} fails: {e}", q.origin),
                    }
                })
                .collect();
            missing.is_empty()
        },
    );

    // 7. Stopping the demo leaves nothing behind.
    traffic.stop();
    let children: BTreeSet<u32> = started_children
        .union(&descendants(demo.pid()))
        .copied()
        .collect();
    let status = demo.stop();
    assert!(status.success(), "{status:?}\n{}", demo.output());
    let left: Vec<u32> = children.into_iter().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

/// A helper process, killed when the test is done with it (or fails before).
struct KillOnDrop(Child);

impl KillOnDrop {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.stop();
    }
}
