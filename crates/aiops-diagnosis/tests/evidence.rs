//! Evidence from a REAL Prometheus holding a recorded incident: an hour of steady traffic, then
//! 25% errors with the `errors` fault on, backfilled with promtool together with the repo's
//! recording rules (prometheus/rules.yml). Skips, saying why, when prometheus is missing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use aiops_core::config::{ActionKind, PrometheusConfig, RemediationConfig};
use aiops_core::model::{OutcomeStats, PrometheusHealth, Recommendation};
use aiops_diagnosis::evidence::{self, AlertContext, keys};
use aiops_diagnosis::testkit::{self, ErrorIncident};
use aiops_diagnosis::{Catalog, Engine, Prom};
use chrono::{DateTime, Duration, DurationRound, Utc};

pub struct Recorded {
    pub server: testkit::Server,
    pub incident: ErrorIncident,
    pub _dir: tempfile::TempDir,
}

pub fn rules_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../prometheus/rules.yml")
}

/// The incident ends half a minute ago; the alert fired a minute after the errors began.
pub fn incident() -> ErrorIncident {
    let end = (Utc::now() - Duration::seconds(30))
        .duration_trunc(Duration::seconds(15))
        .unwrap();
    let start = end - Duration::minutes(80);
    ErrorIncident {
        job: "aiops-demo-app".into(),
        instance: "127.0.0.1:8080".into(),
        start,
        incident_at: end - Duration::minutes(10),
        end,
        rps: 12.0,
        error_ratio: 0.25,
        process_start: start - Duration::hours(3),
        step_secs: 15,
    }
}

pub fn start_recorded() -> Option<Recorded> {
    let dir = tempfile::tempdir().unwrap();
    let incident = incident();
    let om = incident.openmetrics(Some("dead-app"));
    match testkit::prometheus_with_history(
        dir.path(),
        &om,
        &rules_file(),
        incident.start,
        incident.end,
    ) {
        None => {
            aiops_testkit::tools::missing("prometheus");
            None
        }
        Some(r) => Some(Recorded {
            server: r.expect("prometheus with history starts"),
            incident,
            _dir: dir,
        }),
    }
}

pub fn alert(name: &str, starts_at: DateTime<Utc>, job: Option<&str>) -> AlertContext {
    let mut labels: BTreeMap<String, String> = [
        ("alertname", name),
        ("service", "aiops-demo-app"),
        ("severity", "critical"),
        ("unit", "aiops-demo-app.service"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if let Some(j) = job {
        labels.insert("job".into(), j.into());
    }
    AlertContext {
        alertname: name.into(),
        labels,
        annotations: BTreeMap::new(),
        starts_at,
        fingerprint: "0123456789abcdef".into(),
        group_key: None,
    }
}

fn engine(url: &str, timeout_ms: u64) -> Engine {
    let config = aiops_core::Config {
        prometheus: PrometheusConfig {
            url: url.to_owned(),
            timeout_ms,
        },
        ..Default::default()
    };
    Engine::from_config(&config).unwrap()
}

fn allowed() -> BTreeMap<String, Vec<ActionKind>> {
    RemediationConfig::default().allowed
}

fn close(a: Option<f64>, b: f64, tol: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() <= tol)
}

/// Every recorded series the evidence reads is a rule of prometheus/rules.yml, and the
/// baseline's gap ([`evidence::RULE_WINDOW`]) is the longest range any rule reads.
#[test]
fn the_planned_series_and_the_baseline_gap_match_the_rules() {
    let rules = std::fs::read_to_string(rules_file()).expect("prometheus/rules.yml");
    let records: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record:"))
        .map(str::trim)
        .collect();
    let planned = evidence::plan("aiops-demo-app", 3600, Utc::now());
    let recorded: Vec<&str> = planned
        .iter()
        .filter_map(|p| p.query.split('{').next())
        .filter(|name| name.starts_with("job:"))
        .collect();
    assert!(recorded.len() >= 6, "{recorded:?}");
    for name in recorded {
        assert!(
            records.contains(&name),
            "{name} is not a recording rule of prometheus/rules.yml: {records:?}"
        );
    }
    let longest = rules
        .split('[')
        .skip(1)
        .filter_map(|s| s.split(']').next())
        .filter_map(|r| {
            let (n, unit) = r.split_at(r.len().checked_sub(1)?);
            let n: u64 = n.parse().ok()?;
            Some(match unit {
                "s" => n,
                "m" => n * 60,
                _ => return None,
            })
        })
        .max();
    assert_eq!(
        longest.map(std::time::Duration::from_secs),
        Some(evidence::RULE_WINDOW)
    );
}

#[test]
fn evidence_from_a_real_prometheus_matches_the_recorded_incident() {
    let Some(rec) = start_recorded() else { return };
    let inc = &rec.incident;
    let starts_at = inc.incident_at + Duration::minutes(1);
    let ctx = alert("HighErrorRatio", starts_at, Some("aiops-demo-app"));
    let e = engine(&rec.server.url, 5000);
    let now = inc.end;
    let d = e.diagnose_alert_at(&ctx, now, |_, _| OutcomeStats::default(), &allowed());
    let ev = &d.evidence;
    assert_eq!(ev.prometheus, PrometheusHealth::Reachable);
    assert_eq!(ev.target_up, Some(true));
    assert_eq!(ev.id, evidence::evidence_id(ev));

    // Each item keeps exactly the planned query and its evaluation time.
    // The baseline ends one rule window before the alert started: when the incident began.
    let baseline_end = starts_at - Duration::from_std(evidence::RULE_WINDOW).unwrap();
    assert_eq!(baseline_end, inc.incident_at);
    let planned = evidence::plan("aiops-demo-app", 3600, baseline_end);
    for (item, p) in ev.items.iter().zip(&planned) {
        assert_eq!(item.key, p.key);
        assert_eq!(item.query, p.query);
        assert_eq!(item.baseline_query, p.baseline_query);
        assert_eq!(item.at, now);
        assert!(item.error.is_none(), "{}: {:?}", item.key, item.error);
    }
    let v = |k| ev.value(k);
    let b = |k| ev.get(k).and_then(|i| i.baseline);
    assert!(
        close(v(keys::ERROR_RATIO), 0.25, 0.01),
        "{:?}",
        v(keys::ERROR_RATIO)
    );
    // The window ends when the alert started, a minute into the errors: 4 of ~240 samples.
    assert!(
        close(b(keys::ERROR_RATIO), 0.0, 0.005),
        "{:?}",
        b(keys::ERROR_RATIO)
    );
    assert!(
        close(v(keys::REQUEST_RATE), 12.0, 0.3),
        "{:?}",
        v(keys::REQUEST_RATE)
    );
    assert!(
        close(b(keys::REQUEST_RATE), 12.0, 0.3),
        "{:?}",
        b(keys::REQUEST_RATE)
    );
    assert!(
        close(v(keys::LATENCY_P50), 0.0025, 0.0001),
        "{:?}",
        v(keys::LATENCY_P50)
    );
    assert!(
        close(v(keys::LATENCY_P99), 0.00495, 0.0001),
        "{:?}",
        v(keys::LATENCY_P99)
    );
    assert!(close(v(keys::CPU), 0.04, 0.002), "{:?}", v(keys::CPU));
    assert!(close(v(keys::MEMORY), 41_943_040.0, 1.0));
    assert!(close(v(keys::MEMORY_GROWTH), 0.0, 1.0));
    let uptime = (now - inc.process_start).num_seconds() as f64;
    assert!(
        close(v(keys::UPTIME), uptime, 1.0),
        "{:?} vs {uptime}",
        v(keys::UPTIME)
    );
    assert_eq!(v(keys::RESTARTS), Some(0.0));
    assert_eq!(v(keys::FAULT_ERRORS), Some(1.0));
    assert_eq!(v(keys::FAULT_CPU), Some(0.0));
    assert!(close(v(keys::CACHE_FILL), 0.3, 1e-9));
    assert!(close(v(keys::CACHE_HIT_RATIO), 0.9, 0.01));
    assert_eq!(v(keys::UP), Some(1.0));

    // A replay of the baseline query at any time gives the same answer (`@` pins it).
    let prom = Prom::new(&PrometheusConfig {
        url: rec.server.url.clone(),
        timeout_ms: 5000,
    });
    let item = ev.get(keys::REQUEST_RATE).unwrap();
    let replay = prom
        .instant_value(item.baseline_query.as_ref().unwrap(), None)
        .unwrap();
    assert_eq!(replay, item.baseline);

    // And the engine concludes what the recording shows.
    match &d.recommendation {
        Recommendation::Act {
            action,
            unit,
            hypothesis,
            ..
        } => {
            assert_eq!(*action, ActionKind::Restart);
            assert_eq!(unit.as_str(), "aiops-demo-app.service");
            assert_eq!(hypothesis, "in-process-fault");
        }
        other => panic!("{other:?}\n{}", d.explanation),
    }
    assert!(
        d.explanation
            .contains("Error ratio is 25.0% against a baseline of 0.0%"),
        "{}",
        d.explanation
    );
    insta::assert_snapshot!("real_prometheus_explanation", redact_times(&d.explanation));
}

/// Replaces `HH:MM UTC` and uptimes, which depend on when the test runs.
pub fn redact_times(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < s.len() {
        if i + 9 <= s.len()
            && b[i].is_ascii_digit()
            && b[i + 1].is_ascii_digit()
            && b[i + 2] == b':'
            && b[i + 3].is_ascii_digit()
            && b[i + 4].is_ascii_digit()
            && &s[i + 5..i + 9] == " UTC"
        {
            out.push_str("[HH:MM] UTC");
            i += 9;
        } else {
            let c = s[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

#[test]
fn a_target_that_is_not_scraped_or_down_makes_the_engine_blind() {
    let Some(rec) = start_recorded() else { return };
    let starts_at = rec.incident.incident_at + Duration::minutes(1);
    let e = engine(&rec.server.url, 5000);
    let past = |_: &str, _: ActionKind| OutcomeStats::default();

    // An alert for a job Prometheus has never scraped.
    let d = e.diagnose_alert_at(
        &alert("HighErrorRatio", starts_at, Some("not-scraped")),
        rec.incident.end,
        past,
        &allowed(),
    );
    assert_eq!(d.evidence.target_up, None);
    match &d.recommendation {
        Recommendation::Blind { reason } => {
            assert!(reason.contains("returns no series"), "{reason}");
        }
        other => panic!("{other:?}"),
    }

    // A job whose scrapes fail (up == 0): blind for a symptom alert ...
    let d = e.diagnose_alert_at(
        &alert("HighErrorRatio", starts_at, Some("dead-app")),
        rec.incident.end,
        past,
        &allowed(),
    );
    assert_eq!(d.evidence.target_up, Some(false));
    assert!(
        matches!(d.recommendation, Recommendation::Blind { .. }),
        "{:?}",
        d.recommendation
    );
    // ... and the catalog's target-down entry for TargetDown itself.
    let d = e.diagnose_alert_at(
        &alert("TargetDown", starts_at, Some("dead-app")),
        rec.incident.end,
        past,
        &allowed(),
    );
    match &d.recommendation {
        Recommendation::Act { hypothesis, .. } => assert_eq!(hypothesis, "target-down"),
        other => panic!("{other:?}"),
    }

    // A hostile job label is not used at all: the configured job is.
    let d = e.diagnose_alert_at(
        &alert(
            "HighErrorRatio",
            starts_at,
            Some("x\"} or vector(1) or {a=\""),
        ),
        rec.incident.end,
        past,
        &allowed(),
    );
    assert!(
        d.evidence
            .items
            .iter()
            .all(|i| i.query.contains("job=\"aiops-demo-app\""))
    );
    assert!(d.recommendation.is_actionable(), "{:?}", d.recommendation);
}

#[test]
fn an_unreachable_prometheus_is_blind_within_the_timeout() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = engine(&format!("http://127.0.0.1:{port}"), 500);
    // And one that accepts connections but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let e2 = engine(&format!("http://{}", silent.local_addr().unwrap()), 500);
    for e in [e, e2] {
        let t = std::time::Instant::now();
        let d = e.diagnose_alert(
            &alert("HighErrorRatio", Utc::now(), None),
            |_, _| OutcomeStats::default(),
            &allowed(),
        );
        let took = t.elapsed();
        assert!(took < std::time::Duration::from_secs(3), "{took:?}");
        assert!(matches!(
            d.evidence.prometheus,
            PrometheusHealth::Unreachable(_)
        ));
        match &d.recommendation {
            Recommendation::Blind { reason } => {
                assert!(reason.contains("cannot reach Prometheus"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(d.hypotheses.iter().all(|h| h.action.is_none()));
        let _ = Catalog::builtin();
    }
    drop(silent);
}

fn same(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b || (a.is_nan() && b.is_nan()),
        (None, None) => true,
        _ => false,
    }
}

fn values(results: &[evidence::QueryResult]) -> Vec<Option<f64>> {
    results
        .iter()
        .map(|r| *r.as_ref().expect("query answered"))
        .collect()
}

#[test]
fn batched_values_equal_per_item_values_for_every_item() {
    let Some(rec) = start_recorded() else { return };
    let inc = &rec.incident;
    let starts_at = inc.incident_at + Duration::minutes(1);
    let now = inc.end;
    let prom = Prom::new(&PrometheusConfig {
        url: rec.server.url.clone(),
        timeout_ms: 5000,
    });
    // The healthy job, the job whose scrapes fail (no app series, up == 0) and one never scraped.
    for job in ["aiops-demo-app", "dead-app", "not-scraped"] {
        let planned = evidence::plan(job, 3600, starts_at);
        let current: Vec<&str> = planned.iter().map(|p| p.query.as_str()).collect();
        let baselines: Vec<&str> = planned
            .iter()
            .filter_map(|p| p.baseline_query.as_deref())
            .collect();
        assert_eq!(current.len(), 18);
        assert_eq!(baselines.len(), 8);
        for (queries, at) in [(&current, now), (&baselines, starts_at)] {
            let batched = evidence::evaluate(&prom, queries, at);
            assert_eq!(batched.fetch, evidence::Fetch::Batched, "{job}");
            let each = evidence::evaluate_each(&prom, queries, at);
            let (b, e) = (values(&batched.results), values(&each));
            for (i, q) in queries.iter().enumerate() {
                assert!(
                    same(b[i], e[i]),
                    "{job}: {q}: batched {:?} vs alone {:?}",
                    b[i],
                    e[i]
                );
            }
            if job == "aiops-demo-app" {
                // Every item of the healthy job has data, so nothing is vacuously equal.
                assert!(b.iter().all(Option::is_some), "{job}: {b:?}");
            }
        }

        // And what the evidence shows is exactly the per-item answer, for every item.
        let ev = evidence::gather_planned(&prom, planned.clone(), now, starts_at);
        assert_eq!(ev.items.len(), planned.len());
        for (item, p) in ev.items.iter().zip(&planned) {
            assert_eq!(item.query, p.query);
            assert_eq!(item.baseline_query, p.baseline_query);
            assert!(
                item.error.is_none(),
                "{job}: {}: {:?}",
                item.key,
                item.error
            );
            let alone = prom.instant_value(&p.query, Some(now)).unwrap();
            assert_eq!(
                item.value,
                alone.filter(|v| v.is_finite()),
                "{job}: {}",
                item.key
            );
            if let Some(bq) = &p.baseline_query {
                // Replayed at any time: `@` pins it, so "now" gives the same answer.
                let replay = prom.instant_value(bq, None).unwrap();
                assert_eq!(
                    item.baseline,
                    replay.filter(|v| v.is_finite()),
                    "{job}: {bq}"
                );
            }
        }
    }
}

#[test]
fn a_bad_item_falls_back_to_per_item_queries_and_blinds_nothing_else() {
    use aiops_core::model::ValueUnit;
    let Some(rec) = start_recorded() else { return };
    let inc = &rec.incident;
    let starts_at = inc.incident_at + Duration::minutes(1);
    let now = inc.end;
    let prom = Prom::new(&PrometheusConfig {
        url: rec.server.url.clone(),
        timeout_ms: 5000,
    });
    let good = evidence::plan("aiops-demo-app", 3600, starts_at);
    let reference = evidence::gather_planned(&prom, good.clone(), now, starts_at);

    let mut planned = good;
    // A query that does not parse, among the "now" queries.
    planned.insert(
        3,
        evidence::PlannedItem {
            key: "broken".into(),
            label: "broken".into(),
            unit: ValueUnit::Count,
            query: "sum(".into(),
            baseline_query: None,
        },
    );
    // A scalar (fine alone, refused inside the batch) with a range-vector baseline (refused
    // either way): the scalar must still get its value, the baseline its error.
    planned.push(evidence::PlannedItem {
        key: "scalar".into(),
        label: "scalar".into(),
        unit: ValueUnit::Count,
        query: "scalar(vector(3))".into(),
        baseline_query: Some("up[5m]".into()),
    });
    let now_queries: Vec<&str> = planned.iter().map(|p| p.query.as_str()).collect();
    assert!(matches!(
        evidence::evaluate(&prom, &now_queries, now).fetch,
        evidence::Fetch::FellBack(aiops_diagnosis::PromError::Api { .. })
    ));

    let ev = evidence::gather_planned(&prom, planned, now, starts_at);
    assert_eq!(ev.prometheus, PrometheusHealth::Reachable);
    assert_eq!(ev.target_up, Some(true));
    let broken = ev.get("broken").unwrap();
    let err = broken.error.as_deref().unwrap();
    assert!(
        err.contains("bad_data") && err.contains("failed the batched evaluation"),
        "{err}"
    );
    assert_eq!(broken.value, None);
    let scalar = ev.get("scalar").unwrap();
    assert_eq!(scalar.value, Some(3.0));
    let err = scalar.error.as_deref().unwrap();
    assert!(
        err.contains("range vector") && err.contains("failed the batched evaluation"),
        "{err}"
    );
    // Every other item is exactly what the all-good batch gave, with no error.
    for want in &reference.items {
        let got = ev.get(&want.key).unwrap();
        assert_eq!(got, want, "{}", want.key);
    }
    assert_eq!(
        ev.items.iter().filter(|i| i.error.is_some()).count(),
        2,
        "{:#?}",
        ev.items
    );
}
