//! `aiops stress` against the real demo app (in-process, port 0): the fault it switches on shows
//! in the app, its summary counts what the app answered, and bad input is refused up front.

use std::process::{Command, Output};

use aiops_demo_app::BackgroundServer;
use serde_json::Value;

fn aiops(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aiops"))
        .args(args)
        // No configuration or running demo of the developer's may leak in.
        .env("AIOPS_CONFIG", "/nonexistent/aiops-test-config.toml")
        .env_remove("XDG_STATE_HOME")
        .env("HOME", "/nonexistent")
        .output()
        .expect("run aiops")
}

/// The demo app's fault list (`GET /admin/faults`).
fn active_faults(url: &str) -> Value {
    ureq::get(format!("{url}/admin/faults"))
        .call()
        .unwrap()
        .into_body()
        .read_json()
        .unwrap()
}

fn summary(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json summary")
}

#[test]
fn errors_mode_switches_the_fault_on_and_sees_its_share() {
    let app = BackgroundServer::start_ephemeral().expect("start the demo app");
    let url = app.url();
    let stress = [
        "--json",
        "stress",
        "errors",
        "--ratio",
        "0.5",
        "--duration",
        "3s",
        "--rate",
        "0",
        "--concurrency",
        "4",
        "--url",
        &url,
    ];
    let out = aiops(&stress);
    // The config file named by AIOPS_CONFIG does not exist: stress must say so, not guess.
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/aiops-test-config.toml"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let empty = tempfile::NamedTempFile::new().unwrap();
    let config = empty.path().to_str().unwrap();
    let out = aiops(&[&["--config", config][..], &stress].concat());
    let s = summary(&out);
    let sent = s["sent"].as_u64().unwrap();
    assert!(sent >= 100, "only {sent} requests in 3 s: {s}");
    let share = s["error_share"].as_f64().unwrap();
    assert!((share - 0.5).abs() <= 0.05, "asked 50%, saw {share}: {s}");
    assert_eq!(s["client_errors"], 0, "{s}");
    assert_eq!(s["interrupted"], false);
    assert!(
        s["fault"].as_str().unwrap().contains("errors (ratio=0.5)"),
        "{s}"
    );
    assert!(s["p99_ms"].as_f64().is_some(), "{s}");
    // The app itself counted the same 5xx (a label-exact series, not a guess), and ended the
    // fault when its time was up.
    let metrics = || {
        ureq::get(format!("{url}/metrics"))
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap()
    };
    aiops_testkit::wait_until(
        std::time::Duration::from_secs(3),
        "the app to end the errors fault on time",
        || metrics().contains("demo_fault_active{kind=\"errors\"} 0"),
    );
    let metrics = metrics();
    let server_errors: u64 = s["server_errors"].as_u64().unwrap();
    let counted: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("http_requests_total{") && l.contains("status=\"500\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted as u64, server_errors);
}

#[test]
fn no_traffic_only_switches_the_fault() {
    let app = BackgroundServer::start_ephemeral().expect("start the demo app");
    let empty = tempfile::NamedTempFile::new().unwrap();
    let out = aiops(&[
        "--config",
        empty.path().to_str().unwrap(),
        "--json",
        "stress",
        "latency",
        "--delay-ms",
        "50",
        "--duration",
        "30s",
        "--no-traffic",
        "--url",
        &app.url(),
    ]);
    let s = summary(&out);
    assert_eq!(s["sent"], 0, "{s}");
    let faults = active_faults(&app.url());
    assert!(
        faults.to_string().contains("latency"),
        "the latency fault is on: {faults}"
    );
}

#[test]
fn bad_input_is_refused_before_anything_happens() {
    let app = BackgroundServer::start_ephemeral().expect("start the demo app");
    let empty = tempfile::NamedTempFile::new().unwrap();
    let config = empty.path().to_str().unwrap();
    let url = app.url();
    for (args, code, needle) in [
        (
            vec!["stress", "errors", "--ratio", "1.5", "--url", &url],
            2,
            "--ratio",
        ),
        (
            vec!["stress", "cpu", "--threads", "0", "--url", &url],
            2,
            "--threads",
        ),
        (
            vec!["stress", "errors", "--duration", "5 parsecs", "--url", &url],
            2,
            "duration",
        ),
        (
            vec!["stress", "traffic", "--no-traffic", "--url", &url],
            2,
            "--no-traffic",
        ),
        (
            vec!["stress", "errors", "--url", "http://127.0.0.1:9"],
            6,
            "cannot reach the demo app at http://127.0.0.1:9",
        ),
    ] {
        let mut full = vec!["--config", config];
        full.extend(args.iter().copied());
        let out = aiops(&full);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    // Nothing was switched on by any of them.
    let faults = active_faults(&url);
    assert!(
        !faults.to_string().contains("errors") && !faults.to_string().contains("cpu"),
        "{faults}"
    );
}
