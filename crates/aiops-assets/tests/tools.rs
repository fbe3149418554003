//! promtool and amtool accept the repository's files and a rendered tree, and the rule unit tests
//! pass.

use std::fs;
use std::process::Command;

use aiops_assets::render;

use crate::render::OTHER_PORTS;
use crate::support::{repo, run_ok, tool_or_skip};

#[test]
fn promtool_checks_the_repository_config_and_rules() {
    let promtool = tool_or_skip!("promtool");
    let out = run_ok(
        Command::new(&promtool)
            .arg("check")
            .arg("config")
            .arg(repo().join("prometheus/prometheus.yml")),
    );
    assert!(out.contains("SUCCESS: 1 rule files found"), "{out}");
    let out = run_ok(
        Command::new(&promtool)
            .arg("check")
            .arg("rules")
            .arg(repo().join("prometheus/rules.yml")),
    );
    let expected = aiops_assets::floor::RECORDING_RULES.len() + 8; // 7 alert names, TargetDown twice
    assert!(
        out.contains(&format!("SUCCESS: {expected} rules found")),
        "{out}"
    );
}

#[test]
fn promtool_unit_tests_of_every_alert_pass() {
    let promtool = tool_or_skip!("promtool");
    let mut files: Vec<_> = fs::read_dir(repo().join("prometheus/tests"))
        .expect("prometheus/tests")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 7,
        "one test file per alert plus the recording rules: {files:?}"
    );
    let out = run_ok(
        Command::new(&promtool)
            .arg("test")
            .arg("rules")
            .args(&files),
    );
    assert_eq!(out.matches("SUCCESS").count(), files.len(), "{out}");
    // Every alert is exercised by some test file, firing at least once.
    let all: String = files
        .iter()
        .map(|f| fs::read_to_string(f).expect("read"))
        .collect();
    for name in aiops_assets::floor::ALERT_NAMES {
        assert!(
            all.contains(&format!(
                "alertname: {name}\n        exp_alerts:\n          - exp_labels:"
            )),
            "no test asserts {name} firing with its annotations"
        );
        assert!(
            all.contains(&format!("alertname: {name}\n        exp_alerts: []")),
            "no test asserts {name} staying quiet"
        );
    }
}

#[test]
fn promtool_checks_a_rendered_tree() {
    let promtool = tool_or_skip!("promtool");
    let dir = tempfile::tempdir().expect("tempdir");
    let r = render(dir.path(), &OTHER_PORTS, &dir.path().join("token")).expect("render");
    let out = run_ok(
        Command::new(&promtool)
            .arg("check")
            .arg("config")
            .arg(&r.prometheus_config),
    );
    assert!(out.contains("SUCCESS: 1 rule files found"), "{out}");
}

#[test]
fn amtool_checks_the_repository_and_a_rendered_config() {
    let amtool = tool_or_skip!("amtool");
    let out = run_ok(
        Command::new(&amtool)
            .arg("check-config")
            .arg(repo().join("prometheus/alertmanager.yml")),
    );
    assert!(
        out.contains("SUCCESS") && out.contains("1 inhibit rules") && out.contains("1 receivers"),
        "{out}"
    );

    // A token path that needs quoting in YAML (spaces, quotes, a colon, a hash).
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("my \"secret\": #1");
    fs::write(&token, "t0ken\n").expect("write token");
    let r = render(dir.path(), &OTHER_PORTS, &token).expect("render");
    let out = run_ok(
        Command::new(&amtool)
            .arg("check-config")
            .arg(&r.alertmanager_config),
    );
    assert!(out.contains("SUCCESS"), "{out}");
}
