//! The rules `aiops rules` generates for watched services: accepted by promtool and proven by
//! its unit tests (tests/rules/watched.test.yml), with whichever promtool comes first on PATH
//! (`.ci/test` runs this with Debian 12's and with the current one).

use std::path::Path;
use std::process::Command;

use aiops::rules::{Http, Service, Thresholds, render};

fn myapp() -> Service {
    let rate = |sel: &str| format!("sum(rate(http_requests_total{{{sel}}}[2m]))");
    Service {
        name: "myapp".into(),
        unit: Some("myapp.service".into()),
        job: Some("myapp".into()),
        thresholds: Thresholds {
            error_ratio: 0.05,
            latency_p99_seconds: 1.0,
            crash_loop_restarts: 3,
            memory_near_max: 0.9,
            for_secs: 30,
        },
        http: Some(Http {
            error_ratio: format!(
                "({} or 0 * {}) / {}",
                rate(r#"job="myapp",status=~"5..""#),
                rate(r#"job="myapp""#),
                rate(r#"job="myapp""#)
            ),
            request_rate: rate(r#"job="myapp""#),
            latency_p99: Some(
                r#"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{job="myapp"}[2m])))"#
                    .into(),
            ),
        }),
    }
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let Some(promtool) = aiops_testkit::tools::require(&["promtool"]) else {
        return String::new();
    };
    let out = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn generated_rules_pass_promtool_check_and_their_unit_tests() {
    if aiops_testkit::tools::require(&["promtool"]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("watched.rules.yml"), render(&[myapp()])).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rules/watched.test.yml"),
        dir.path().join("watched.test.yml"),
    )
    .unwrap();
    let out = promtool(&["check", "rules", "watched.rules.yml"], dir.path());
    assert!(out.contains("SUCCESS: 6 rules found"), "{out}");
    let out = promtool(&["test", "rules", "watched.test.yml"], dir.path());
    assert!(out.contains("SUCCESS"), "{out}");
}
