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

/// Three watched services (one with a unit, job and targets, one with a unit only, one with a
/// job and an HTTP profile) and one whose rules are its own (`alert_rules = false`).
const TWO_WATCHED: &str = r#"
[watch.nginx]
unit = "nginx.service"
job = "nginx"
targets = ["127.0.0.1:9113"]
profiles = ["nginx-exporter"]
allowed_actions = ["restart"]

[watch.nginx.thresholds]
crash_loop_restarts = 5
for_secs = 60

[watch.postgresql]
unit = "postgresql.service"

[watch.shop]
job = "shop"
profiles = ["http-prom-client"]

[watch.own-rules]
unit = "own.service"
job = "own"
alert_rules = false
"#;

fn aiops_rules(config: &str) -> std::process::Output {
    aiops_with(config, &["rules"])
}

fn aiops_with(config: &str, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_aiops"))
        .arg("--config")
        .arg(&path)
        .args(args)
        .env_remove("AIOPS_CONFIG")
        .output()
        .expect("aiops runs")
}

#[test]
fn aiops_rules_prints_the_watched_services_rules_and_promtool_accepts_them() {
    let out = aiops_rules(TWO_WATCHED);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "aiops rules failed: {stderr}");
    let text = String::from_utf8(out.stdout).unwrap();
    let groups: Vec<_> = text
        .lines()
        .filter_map(|l| l.strip_prefix("  - name: "))
        .collect();
    assert_eq!(
        groups,
        [
            r#""aiops-watch-nginx""#,
            r#""aiops-watch-postgresql""#,
            r#""aiops-watch-shop""#
        ]
    );
    // nginx: its job's target and its unit, with its own thresholds; no HTTP alerts, since
    // stub_status (its profile, nginx-exporter) counts no status codes.
    assert!(text.contains(r#"expr: "up{job=\"nginx\"} == 0""#), "{text}");
    assert!(
        text.contains(r#"increase(aiops_unit_restarts_total{unit=\"nginx.service\"}[5m]) >= 5"#),
        "{text}"
    );
    assert!(text.contains("for: 60s"), "{text}");
    let nginx = &text[..text.find("aiops-watch-postgresql").unwrap()];
    assert!(
        !nginx.contains("HighErrorRatio") && !nginx.contains("HighLatencyP99"),
        "{nginx}"
    );
    // shop: the HTTP alerts from its profile's own queries, for its job; no unit, no unit alerts.
    let shop = &text[text.find("aiops-watch-shop").unwrap()..];
    assert!(
        shop.contains("HighErrorRatio") && shop.contains("HighLatencyP99"),
        "{shop}"
    );
    assert!(
        shop.contains(r#"http_requests_total{job=\"shop\""#),
        "{shop}"
    );
    assert!(!shop.contains("UnitFailed"), "{shop}");
    // postgresql: no job, so no TargetDown; the default thresholds.
    let pg =
        &text[text.find("aiops-watch-postgresql").unwrap()..text.find("aiops-watch-shop").unwrap()];
    assert!(!pg.contains("TargetDown"), "{pg}");
    assert!(
        pg.contains(r#"unit: "postgresql.service""#) && pg.contains("for: 30s"),
        "{pg}"
    );
    assert!(
        !text.contains("own.service"),
        "alert_rules = false got rules:\n{text}"
    );

    let Some(promtool) = aiops_testkit::tools::require(&["promtool"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("watch.rules.yml"), &text).unwrap();
    let check = Command::new(promtool)
        .args(["check", "rules", "watch.rules.yml"])
        .current_dir(dir.path())
        .output()
        .expect("promtool runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        check.status.success(),
        "promtool check rules:\n{report}\n{text}"
    );
    // nginx: TargetDown and the three unit alerts; postgresql: the three unit alerts; shop:
    // TargetDown and the two HTTP alerts.
    assert!(report.contains("SUCCESS: 10 rules found"), "{report}");
}

#[test]
fn aiops_rules_without_watched_services_has_no_generated_rules() {
    // No [watch]: the demo app alone, whose rules are prometheus/rules.yml.
    let out = aiops_rules("");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .ends_with("groups: []\n")
    );
}

#[test]
fn a_bad_watch_entry_is_refused_by_rules_and_config_naming_the_entry_and_field() {
    for (config, needle) in [
        (
            "[watch.web]\njob = \"web\"\ntargets = [\"nohost\"]\n",
            "watch.web.targets",
        ),
        (
            "[watch.web]\nallowed_actions = [\"restart\"]\n",
            "watch.web.unit",
        ),
        (
            "[watch.web.thresholds]\nmemory_near_max = 1.5\n",
            "watch.web.thresholds.memory_near_max",
        ),
        ("[watch.web]\nunitt = \"web.service\"\n", "unitt"),
    ] {
        for args in [&["rules"][..], &["config", "check"], &["config", "show"]] {
            let out = aiops_with(config, args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "aiops {args:?} accepted {config:?}");
            assert!(
                out.stdout.is_empty(),
                "aiops {args:?} printed something for {config:?}"
            );
            assert!(
                stderr.contains("is not valid") && stderr.contains(needle),
                "aiops {args:?} on {config:?}: the error does not name {needle}:\n{stderr}"
            );
        }
    }
}
