//! The pure engine over recorded evidence snapshots (`tests/fixtures/*.json`), table-driven.
//!
//! Each fixture holds an alert and the evidence gathered for it. The table says what the engine
//! must conclude; the explanations are pinned with insta. `REGENERATE_FIXTURES=1 cargo test -p
//! aiops-diagnosis regenerate_fixtures -- --ignored` rewrites the fixtures from the compact specs
//! at the bottom (queries exactly as `evidence::plan` writes them).

use std::collections::BTreeMap;
use std::path::PathBuf;

use aiops_core::config::{ActionKind, RemediationConfig};
use aiops_core::model::{
    Diagnosis, Evidence, EvidenceItem, OutcomeStats, PrometheusHealth, Recommendation,
};
use aiops_diagnosis::evidence::{self, AlertContext, keys};
use aiops_diagnosis::{Catalog, diagnose};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Fixture {
    alert: AlertContext,
    evidence: Evidence,
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load(name: &str) -> Fixture {
    let path = fixtures_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn allowed() -> BTreeMap<String, Vec<ActionKind>> {
    RemediationConfig::default().allowed
}

fn no_past(_: &str, _: ActionKind) -> OutcomeStats {
    OutcomeStats::default()
}

fn run(f: &Fixture) -> Diagnosis {
    diagnose(
        &f.alert,
        &f.evidence,
        &Catalog::builtin(),
        no_past,
        &allowed(),
    )
}

/// What the engine must conclude.
#[derive(Debug)]
enum Expect {
    Act(ActionKind),
    NoAction,
    Blind,
}

#[test]
fn every_catalog_entry_over_recorded_evidence() {
    let table: &[(&str, Expect, Option<&str>)] = &[
        (
            "bad_state_errors",
            Expect::Act(ActionKind::Restart),
            Some("process-bad-state"),
        ),
        (
            "bad_state_latency",
            Expect::Act(ActionKind::Restart),
            Some("process-bad-state"),
        ),
        ("traffic_surge", Expect::NoAction, Some("traffic-surge")),
        (
            "errors_after_restart",
            Expect::NoAction,
            Some("errors-after-restart"),
        ),
        (
            "in_process_fault",
            Expect::Act(ActionKind::Restart),
            Some("in-process-fault"),
        ),
        (
            "runaway_cpu",
            Expect::Act(ActionKind::Restart),
            Some("runaway-cpu"),
        ),
        (
            "memory_leak",
            Expect::Act(ActionKind::Restart),
            Some("memory-leak"),
        ),
        (
            "cache_thrash",
            Expect::Act(ActionKind::ClearCache),
            Some("cache-thrash"),
        ),
        (
            "target_down",
            Expect::Act(ActionKind::Restart),
            Some("target-down"),
        ),
        ("blind_unreachable", Expect::Blind, Some("monitoring-blind")),
        ("blind_not_scraped", Expect::Blind, Some("monitoring-blind")),
        (
            "blind_up_zero",
            Expect::Blind,
            Some("target-unhealthy-scrape"),
        ),
        ("no_pattern", Expect::NoAction, None),
    ];
    let catalog = Catalog::builtin();
    let mut covered = std::collections::BTreeSet::new();
    for (name, expect, top) in table {
        let f = load(name);
        let d = run(&f);
        let got_top = d.hypotheses.first().map(|h| h.id.as_str());
        assert_eq!(got_top, *top, "{name}: top hypothesis; {d:#?}");
        match (expect, &d.recommendation) {
            (
                Expect::Act(a),
                Recommendation::Act {
                    action,
                    unit,
                    confidence,
                    ..
                },
            ) => {
                assert_eq!(action, a, "{name}");
                assert_eq!(unit.as_str(), "aiops-demo-app.service", "{name}");
                assert!(*confidence > 0.0 && *confidence < 1.0, "{name}");
            }
            (Expect::NoAction, Recommendation::NoAction { reason }) => {
                assert!(!reason.is_empty(), "{name}");
            }
            (Expect::Blind, Recommendation::Blind { reason }) => {
                assert!(reason.contains("monitoring is blind"), "{name}: {reason}");
                // Blindness never carries an action in any hypothesis.
                assert!(d.hypotheses.iter().all(|h| h.action.is_none()), "{name}");
            }
            (e, r) => panic!("{name}: expected {e:?}, got {r:?}"),
        }
        // Confidence is in range and ranking is ordered.
        for w in d.hypotheses.windows(2) {
            assert!(w[0].confidence >= w[1].confidence, "{name}: unordered");
        }
        // The explanation carries numbers and matches the snapshot.
        assert!(
            d.explanation.contains("12:03 UTC"),
            "{name}: {}",
            d.explanation
        );
        insta::assert_snapshot!(format!("explain_{name}"), wrap(&d.explanation));
        if let Some(t) = top {
            covered.insert(t.to_string());
        }
    }
    // Entries on the unit's own evidence from systemd have their table in unit_engine.rs.
    let on_unit = |e: &&aiops_diagnosis::catalog::Entry| {
        e.when
            .iter()
            .chain(&e.when_any)
            .any(|c| c.key.starts_with("unit."))
    };
    for e in catalog.entries.iter().filter(|e| !on_unit(e)) {
        assert!(
            covered.contains(&e.id),
            "no fixture shows catalog entry {}",
            e.id
        );
    }
}

/// Wraps at 100 columns so snapshot diffs are readable.
fn wrap(s: &str) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in s.split(' ') {
        if line > 0 && line + word.len() > 100 {
            out.push('\n');
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.len();
    }
    out
}

#[test]
fn a_restart_will_not_help_says_why_with_numbers() {
    let d = run(&load("traffic_surge"));
    let Recommendation::NoAction { reason } = &d.recommendation else {
        panic!("{:?}", d.recommendation)
    };
    assert!(
        reason.contains("a restart will not help: traffic is 6.2× its baseline"),
        "{reason}"
    );
    assert!(reason.contains("scale out or shed load"), "{reason}");

    let d = run(&load("errors_after_restart"));
    let Recommendation::NoAction { reason } = &d.recommendation else {
        panic!("{:?}", d.recommendation)
    };
    assert!(
        reason.contains("a restart will not help: the process was restarted 4.0 min ago"),
        "{reason}"
    );
}

#[test]
fn past_outcomes_change_the_confidence() {
    let f = load("bad_state_errors");
    let conf = |stats: OutcomeStats| {
        let d = diagnose(
            &f.alert,
            &f.evidence,
            &Catalog::builtin(),
            |name, action| {
                assert_eq!(name, "HighErrorRatio");
                assert_eq!(action, ActionKind::Restart);
                stats
            },
            &allowed(),
        );
        match d.recommendation {
            Recommendation::Act { confidence, .. } => {
                (confidence, d.hypotheses[0].reasoning.clone())
            }
            other => panic!("{other:?}"),
        }
    };
    let (fresh, _) = conf(OutcomeStats::default());
    let (good, why_good) = conf(OutcomeStats {
        succeeded: 4,
        failed: 0,
        consecutive_failures: 0,
    });
    let (bad, why_bad) = conf(OutcomeStats {
        succeeded: 0,
        failed: 4,
        consecutive_failures: 4,
    });
    assert!(good > fresh && fresh > bad, "{good} {fresh} {bad}");
    assert!(
        why_good.contains("restart fixed HighErrorRatio 4 of 4 times before"),
        "{why_good}"
    );
    assert!(
        why_bad.contains("restart fixed HighErrorRatio 0 of 4 times before"),
        "{why_bad}"
    );
}

#[test]
fn failed_restarts_can_demote_a_hypothesis_below_another() {
    // cache_thrash matches cache-thrash (clear-cache, 0.75) and process-bad-state (restart, 0.7).
    let f = load("cache_thrash");
    let d = diagnose(
        &f.alert,
        &f.evidence,
        &Catalog::builtin(),
        |_, a| match a {
            ActionKind::ClearCache => OutcomeStats {
                succeeded: 0,
                failed: 3,
                consecutive_failures: 3,
            },
            ActionKind::Restart => OutcomeStats::default(),
        },
        &allowed(),
    );
    assert_eq!(
        d.hypotheses[0].id, "process-bad-state",
        "{:#?}",
        d.hypotheses
    );
    assert!(matches!(
        d.recommendation,
        Recommendation::Act {
            action: ActionKind::Restart,
            ..
        }
    ));
}

#[test]
fn crafted_or_unlisted_units_are_refused_never_acted_on() {
    let base = load("bad_state_errors");
    let cases: &[(Option<&str>, &str)] = &[
        (Some("x.service; reboot"), "is not a valid unit name"),
        (Some("../../etc/passwd"), "is not a valid unit name"),
        (Some("$(reboot).service"), "is not a valid unit name"),
        (Some("--force.service"), "is not a valid unit name"),
        (Some("nginx.service"), "not on the allow-list"),
        (None, "no `unit` label"),
    ];
    for (label, why) in cases {
        let mut alert = base.alert.clone();
        match label {
            Some(l) => alert.labels.insert("unit".into(), (*l).to_owned()),
            None => alert.labels.remove("unit"),
        };
        let d = diagnose(
            &alert,
            &base.evidence,
            &Catalog::builtin(),
            no_past,
            &allowed(),
        );
        match &d.recommendation {
            Recommendation::Refused { reason } => {
                assert!(reason.contains(why), "{label:?}: {reason}");
                if let Some(l) = label {
                    assert!(
                        reason.contains(&format!("{l:?}")) || reason.contains(l),
                        "{reason}"
                    );
                }
                assert!(
                    d.explanation.contains("Recommendation refused"),
                    "{}",
                    d.explanation
                );
            }
            other => panic!("{label:?} gave {other:?}"),
        }
    }
    // Allow-listed, but not for this action.
    let only_cache: BTreeMap<String, Vec<ActionKind>> = [(
        "aiops-demo-app.service".to_owned(),
        vec![ActionKind::ClearCache],
    )]
    .into();
    let d = diagnose(
        &base.alert,
        &base.evidence,
        &Catalog::builtin(),
        no_past,
        &only_cache,
    );
    match d.recommendation {
        Recommendation::Refused { reason } => {
            assert!(
                reason.contains("permits only clear-cache on aiops-demo-app.service"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unreachable_prometheus_is_blind_even_with_a_permissive_catalog() {
    // A catalog that would restart on anything cannot override the sanity gate.
    let catalog = Catalog::parse(
        r#"version = 1
[[entry]]
id = "always-restart"
cause = "always"
action = "restart"
risk = "high"
confidence = 1.0
when = [{ key = "up", missing = true }]
"#,
        "test",
    )
    .unwrap();
    for name in ["blind_unreachable", "blind_not_scraped", "blind_up_zero"] {
        let f = load(name);
        let d = diagnose(&f.alert, &f.evidence, &catalog, no_past, &allowed());
        assert!(
            matches!(d.recommendation, Recommendation::Blind { .. }),
            "{name}: {:?}",
            d.recommendation
        );
        assert!(d.hypotheses.is_empty(), "{name}");
    }
}

#[test]
fn diagnoses_round_trip_through_json() {
    let d = run(&load("bad_state_errors"));
    let back: Diagnosis = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
    assert_eq!(back, d);
}

#[test]
fn fixture_evidence_ids_are_content_derived() {
    for entry in std::fs::read_dir(fixtures_dir()).unwrap() {
        let path = entry.unwrap().path();
        // Evidence fixtures only (tests/fixtures/metric_names/ holds detection's).
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let f: Fixture = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            f.evidence.id,
            evidence::evidence_id(&f.evidence),
            "{}",
            path.display()
        );
    }
}

// ---- Fixture specs -------------------------------------------------------------------------

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

const MIB: f64 = 1024.0 * 1024.0;

/// (key, value, baseline)
type Spec = &'static [(&'static str, Option<f64>, Option<f64>)];

fn healthy() -> Vec<(&'static str, Option<f64>, Option<f64>)> {
    vec![
        (keys::ERROR_RATIO, Some(0.002), Some(0.004)),
        (keys::REQUEST_RATE, Some(12.0), Some(11.5)),
        (keys::LATENCY_P50, Some(0.004), Some(0.004)),
        (keys::LATENCY_P99, Some(0.045), Some(0.040)),
        (keys::CPU, Some(0.05), Some(0.04)),
        (keys::MEMORY, Some(40.0 * MIB), Some(39.5 * MIB)),
        (keys::MEMORY_GROWTH, Some(0.0), Some(0.0)),
        (keys::UPTIME, Some(11_520.0), None),
        (keys::RESTARTS, Some(0.0), None),
        (keys::CACHE_FILL, Some(0.31), None),
        (keys::CACHE_HIT_RATIO, Some(0.86), Some(0.85)),
        (keys::FAULT_ERRORS, Some(0.0), None),
        (keys::FAULT_CPU, Some(0.0), None),
        (keys::FAULT_LATENCY, Some(0.0), None),
        (keys::FAULT_LEAK, Some(0.0), None),
        (keys::UP, Some(1.0), None),
    ]
}

fn with(overrides: Spec) -> Vec<(&'static str, Option<f64>, Option<f64>)> {
    let mut v = healthy();
    for (k, val, base) in overrides {
        let slot = v.iter_mut().find(|(key, _, _)| key == k).unwrap();
        *slot = (k, *val, *base);
    }
    v
}

fn alert(name: &str) -> AlertContext {
    AlertContext {
        alertname: name.into(),
        labels: [
            ("alertname", name),
            ("job", "aiops-demo-app"),
            ("instance", "127.0.0.1:8080"),
            ("service", "aiops-demo-app"),
            ("severity", "critical"),
            ("unit", "aiops-demo-app.service"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        annotations: [("summary".to_owned(), format!("{name} on aiops-demo-app"))].into(),
        starts_at: t("2026-11-28T12:03:00Z"),
        fingerprint: "4f1c2b9a0d3e7f65".into(),
        group_key: Some(format!(
            "{{}}:{{alertname=\"{name}\", service=\"aiops-demo-app\"}}"
        )),
    }
}

fn build(
    alert: AlertContext,
    values: &[(&'static str, Option<f64>, Option<f64>)],
    health: PrometheusHealth,
) -> Fixture {
    let now = t("2026-11-28T12:05:00Z");
    let unreachable = matches!(health, PrometheusHealth::Unreachable(_));
    let items: Vec<EvidenceItem> = evidence::plan("aiops-demo-app", 3600, alert.starts_at)
        .into_iter()
        .map(|p| {
            let (_, value, baseline) = values.iter().find(|(k, _, _)| *k == p.key).copied().unwrap_or(("", None, None));
            EvidenceItem {
                key: p.key,
                label: p.label,
                unit: p.unit,
                query: p.query,
                at: now,
                value: if unreachable { None } else { value },
                baseline: if unreachable || p.baseline_query.is_none() { None } else { baseline },
                baseline_query: p.baseline_query,
                error: unreachable.then(|| {
                    "cannot reach Prometheus at http://127.0.0.1:9090/api/v1/query: Connection refused; check that it runs and that prometheus.url is right".to_owned()
                }),
            }
        })
        .collect();
    let target_up = if unreachable {
        None
    } else {
        values
            .iter()
            .find(|(k, _, _)| *k == keys::UP)
            .and_then(|(_, v, _)| *v)
            .map(|v| v >= 1.0)
    };
    let mut ev = Evidence {
        id: String::new(),
        gathered_at: now,
        prometheus_url: "http://127.0.0.1:9090".into(),
        prometheus: health,
        target_up,
        items,
        unit: None,
        scope: None,
    };
    ev.id = evidence::evidence_id(&ev);
    Fixture {
        alert,
        evidence: ev,
    }
}

#[test]
#[ignore = "rewrites tests/fixtures; run with REGENERATE_FIXTURES=1"]
fn regenerate_fixtures() {
    if std::env::var_os("REGENERATE_FIXTURES").is_none() {
        return;
    }
    let ok = PrometheusHealth::Reachable;
    let all_none: Vec<_> = healthy()
        .into_iter()
        .map(|(k, _, _)| (k, None, None))
        .collect();
    let fixtures: Vec<(&str, Fixture)> = vec![
        ("bad_state_errors", build(alert("HighErrorRatio"), &with(&[
            (keys::ERROR_RATIO, Some(0.231), Some(0.004)),
        ]), ok.clone())),
        ("bad_state_latency", build(alert("HighLatencyP99"), &with(&[
            (keys::LATENCY_P99, Some(0.62), Some(0.04)),
            (keys::LATENCY_P50, Some(0.31), Some(0.004)),
        ]), ok.clone())),
        ("traffic_surge", build(alert("HighLatencyP99"), &with(&[
            (keys::REQUEST_RATE, Some(74.4), Some(12.0)),
            (keys::LATENCY_P99, Some(0.41), Some(0.04)),
            (keys::ERROR_RATIO, Some(0.08), Some(0.004)),
            (keys::CPU, Some(0.93), Some(0.1)),
        ]), ok.clone())),
        ("errors_after_restart", build(alert("HighErrorRatio"), &with(&[
            (keys::ERROR_RATIO, Some(0.25), Some(0.004)),
            (keys::UPTIME, Some(240.0), None),
            (keys::RESTARTS, Some(1.0), None),
        ]), ok.clone())),
        // The demo's replay case: the app was restarted minutes ago (which alone would mean "a
        // restart will not help"), but it reports an injected in-process fault right now.
        ("in_process_fault", build(alert("HighErrorRatio"), &with(&[
            (keys::ERROR_RATIO, Some(0.29), Some(0.004)),
            (keys::UPTIME, Some(180.0), None),
            (keys::RESTARTS, Some(1.0), None),
            (keys::FAULT_ERRORS, Some(1.0), None),
        ]), ok.clone())),
        ("runaway_cpu", build(alert("HighCpuUsage"), &with(&[
            (keys::CPU, Some(1.91), Some(0.05)),
            (keys::LATENCY_P99, Some(0.08), Some(0.04)),
        ]), ok.clone())),
        ("memory_leak", build(alert("MemoryGrowth"), &with(&[
            (keys::MEMORY_GROWTH, Some(MIB), Some(0.0)),
            (keys::MEMORY, Some(600.0 * MIB), Some(40.0 * MIB)),
            (keys::UPTIME, Some(7200.0), None),
        ]), ok.clone())),
        ("cache_thrash", build(alert("HighLatencyP99"), &with(&[
            (keys::CACHE_FILL, Some(1.0), None),
            (keys::CACHE_HIT_RATIO, Some(0.12), Some(0.85)),
            (keys::LATENCY_P50, Some(0.08), Some(0.004)),
            (keys::LATENCY_P99, Some(0.3), Some(0.04)),
        ]), ok.clone())),
        ("target_down", build(alert("TargetDown"), &{
            let mut v = all_none.clone();
            v.retain(|(k, _, _)| *k != keys::UP);
            v.push((keys::UP, Some(0.0), None));
            v
        }, ok.clone())),
        ("blind_unreachable", build(alert("HighErrorRatio"), &all_none,
            PrometheusHealth::Unreachable("cannot reach Prometheus at http://127.0.0.1:9090/api/v1/query: Connection refused; check that it runs and that prometheus.url is right".into()))),
        ("blind_not_scraped", build(alert("HighErrorRatio"), &all_none, ok.clone())),
        ("blind_up_zero", build(alert("HighErrorRatio"), &with(&[
            (keys::UP, Some(0.0), None),
            (keys::ERROR_RATIO, Some(0.3), Some(0.004)),
        ]), ok.clone())),
        ("no_pattern", build(alert("HighErrorRatio"), &with(&[
            (keys::ERROR_RATIO, Some(0.06), Some(0.05)),
        ]), ok)),
    ];
    std::fs::create_dir_all(fixtures_dir()).unwrap();
    for (name, f) in fixtures {
        let text = serde_json::to_string_pretty(&f).unwrap() + "\n";
        std::fs::write(fixtures_dir().join(format!("{name}.json")), text).unwrap();
    }
}
