//! The pure engine over the unit's own evidence from systemd, table-driven: recorded
//! `systemctl show` and `journalctl --output=json` output (`tests/systemd/`) parsed exactly as
//! the reader parses it, turned into the snapshot a diagnosis stores, and attached to recorded
//! Prometheus evidence (`tests/fixtures/`). One case per catalog entry that rests on it.

use std::collections::BTreeMap;
use std::path::Path;

use aiops_core::config::{ActionKind, RemediationConfig};
use aiops_core::model::{Diagnosis, Evidence, OutcomeStats, Recommendation, UnitSnapshot};
use aiops_core::unit::UnitName;
use aiops_diagnosis::evidence::{self, AlertContext};
use aiops_diagnosis::unit_state::{
    self, DependencyReading, JournalReading, Limits, ShowReading, StartLimitCheck, UnitEvidence,
    dependency_command, journal_command, parse_show, parse_show_many, show_command,
    summarize_journal,
};
use aiops_diagnosis::{Catalog, diagnose};
use chrono::{DateTime, Utc};
use serde::Deserialize;

const SYSTEMD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/systemd");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

#[derive(Deserialize)]
struct Fixture {
    alert: AlertContext,
    evidence: Evidence,
}

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn read(dir: &str, name: &str) -> String {
    let p = Path::new(dir).join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The snapshot `UnitStateReader::read` would give for these recorded outputs.
fn recorded(
    unit: &str,
    show: &str,
    journal: Option<&str>,
    deps: Option<&str>,
    now: DateTime<Utc>,
) -> UnitSnapshot {
    let unit = UnitName::parse(unit).unwrap();
    let since = t("2026-12-02T02:58:00Z");
    let state = parse_show(&read(SYSTEMD, show)).unwrap();
    let journal = journal.map(|j| {
        let text = read(SYSTEMD, j);
        JournalReading {
            command: journal_command(Path::new("journalctl"), &unit, since, 1000),
            summary: summarize_journal(text.lines(), since, &Limits::default()),
        }
    });
    let dependencies = deps.map(|d| {
        let parsed = parse_show_many(&read(SYSTEMD, d)).unwrap();
        let names: Vec<String> = parsed.iter().map(|(n, _)| n.clone()).collect();
        Ok(DependencyReading {
            command: dependency_command(Path::new("systemctl"), &names),
            states: unit_state::evaluate_dependencies(&state, &parsed),
            left_out: 0,
        })
    });
    let journal = journal.ok_or(unit_state::UnitStateError::NotInstalled {
        unit: unit.clone(),
        command: "journalctl".into(),
        program: "journalctl".into(),
    });
    let ev = UnitEvidence {
        unit: unit.clone(),
        collected_at: now,
        start_limit: StartLimitCheck::assess(
            Some(&state),
            journal.as_ref().ok().map(|j| &j.summary),
            now,
        ),
        show: Ok(ShowReading {
            command: show_command(Path::new("systemctl"), &unit),
            state,
        }),
        journal,
        dependencies,
    };
    ev.snapshot()
}

/// Prometheus evidence `base` (a recorded fixture) for an alert about `unit`, with `snapshot`.
fn case(base: &str, unit: &str, snapshot: UnitSnapshot) -> (AlertContext, Evidence) {
    let f: Fixture = serde_json::from_str(&read(FIXTURES, &format!("{base}.json"))).unwrap();
    let mut alert = f.alert;
    alert.labels.insert("unit".into(), unit.into());
    let mut ev = f.evidence;
    ev.unit = Some(snapshot);
    ev.id = evidence::evidence_id(&ev);
    (alert, ev)
}

fn allowed() -> BTreeMap<String, Vec<ActionKind>> {
    let mut a = RemediationConfig::default().allowed;
    for u in ["nginx.service", "myapp.service"] {
        a.insert(u.into(), vec![ActionKind::Restart]);
    }
    a
}

fn run(alert: &AlertContext, ev: &Evidence) -> Diagnosis {
    diagnose(
        alert,
        ev,
        &Catalog::builtin(),
        |_: &str, _: ActionKind| OutcomeStats::default(),
        &allowed(),
    )
}

fn top(d: &Diagnosis) -> &str {
    d.hypotheses.first().map_or("", |h| h.id.as_str())
}

fn no_action(d: &Diagnosis) -> &str {
    match &d.recommendation {
        Recommendation::NoAction { reason } => reason,
        other => panic!("expected no action, got {other:?}\n{}", d.explanation),
    }
}

const NGINX_EMERG: &str =
    r#"[emerg] 900#900: unknown directive 'worker_connectionz' in /etc/nginx/nginx.conf:13"#;

#[test]
fn crash_loop_proposes_nothing_and_quotes_the_journal() {
    let now = t("2026-12-02T03:00:05Z");
    let snap = recorded(
        "nginx.service",
        "show-nginx-auto-restart.txt",
        Some("journal-nginx-crash-loop.json"),
        None,
        now,
    );
    assert_eq!(snap.number("unit.restarts"), Some(4.0));
    assert_eq!(snap.number("unit.restarting"), Some(1.0));
    assert_eq!(snap.number("unit.exited_with_error"), Some(1.0));
    // TargetDown with the unit allow-listed for restart: a restart would be proposed without
    // systemd's evidence (target-down); with it, nothing is.
    for base in ["target_down", "blind_not_scraped", "blind_up_zero"] {
        let (alert, ev) = case(base, "nginx.service", snap.clone());
        let d = run(&alert, &ev);
        assert_eq!(top(&d), "unit-crash-loop", "{base}: {:#?}", d.hypotheses);
        let reason = no_action(&d);
        assert!(reason.contains("a restart will not help"), "{reason}");
        assert!(reason.contains(NGINX_EMERG), "{base}: {reason}");
        assert!(
            d.explanation.contains(NGINX_EMERG),
            "{base}: {}",
            d.explanation
        );
        assert!(
            d.explanation
                .contains("According to systemd, nginx.service is activating (auto-restart)"),
            "{}",
            d.explanation
        );
        assert!(!d.recommendation.is_actionable());
    }
    // Without the unit's evidence the same TargetDown proposes a restart: the entry is what
    // changes the outcome.
    let (alert, mut ev) = case("target_down", "nginx.service", snap);
    ev.unit = None;
    assert!(run(&alert, &ev).recommendation.is_actionable());
}

#[test]
fn start_limit_hit_says_a_restart_will_not_help() {
    let now = t("2026-12-02T03:00:05Z");
    let snap = recorded(
        "nginx.service",
        "show-nginx-start-limit-hit.txt",
        Some("journal-nginx-crash-loop.json"),
        None,
        now,
    );
    let (alert, ev) = case("target_down", "nginx.service", snap);
    let d = run(&alert, &ev);
    assert_eq!(top(&d), "unit-start-limit-hit", "{:#?}", d.hypotheses);
    let reason = no_action(&d);
    assert!(reason.contains("reset-failed"), "{reason}");
    assert!(reason.contains(NGINX_EMERG), "{reason}");
    insta::assert_snapshot!("unit_start_limit_hit", d.explanation);
}

#[test]
fn oom_killed_proposes_nothing_and_names_the_limit() {
    let now = t("2026-12-02T03:04:45Z");
    let snap = recorded(
        "myapp.service",
        "show-myapp-oom-killed.txt",
        Some("journal-myapp-oom-coredump.json"),
        None,
        now,
    );
    assert_eq!(snap.number("unit.oom_killed"), Some(1.0));
    let (alert, ev) = case("target_down", "myapp.service", snap);
    let d = run(&alert, &ev);
    assert_eq!(top(&d), "unit-oom-killed", "{:#?}", d.hypotheses);
    let reason = no_action(&d);
    assert!(reason.contains("512.0 MiB"), "{reason}");
    assert!(reason.contains("MemoryMax="), "{reason}");
    assert!(d.explanation.contains("OOM-kill line"), "{}", d.explanation);
}

#[test]
fn near_memory_max_proposes_a_restart_of_an_allowed_unit() {
    let now = t("2026-12-02T03:00:30Z");
    // A clean journal: nothing was killed yet.
    let snap = recorded("myapp.service", "show-myapp-running.txt", None, None, now);
    assert!((snap.number("unit.memory_of_max").unwrap() - 0.9375).abs() < 1e-9);
    let (alert, ev) = case("memory_leak", "myapp.service", snap);
    let d = run(&alert, &ev);
    assert_eq!(top(&d), "unit-near-memory-max", "{:#?}", d.hypotheses);
    match &d.recommendation {
        Recommendation::Act { action, unit, .. } => {
            assert_eq!(*action, ActionKind::Restart);
            assert_eq!(unit.as_str(), "myapp.service");
        }
        other => panic!("{other:?}"),
    }
    assert!(d.explanation.contains("93.8%"), "{}", d.explanation);
}

#[test]
fn a_failed_dependency_is_named_and_this_unit_is_left_alone() {
    let now = t("2026-12-02T03:00:30Z");
    let snap = recorded(
        "myapp.service",
        "show-myapp-dependency-failed.txt",
        Some("journal-myapp-without-all.json"),
        Some("show-deps-postgresql-failed.txt"),
        now,
    );
    assert_eq!(snap.number("unit.dependencies_down"), Some(1.0));
    assert_eq!(snap.dependencies.len(), 3);
    let (alert, ev) = case("target_down", "myapp.service", snap);
    let d = run(&alert, &ev);
    assert_eq!(top(&d), "unit-dependency-failed", "{:#?}", d.hypotheses);
    let reason = no_action(&d);
    assert!(
        reason.contains("\"postgresql.service (failed, exit-code)\" is down"),
        "{reason}"
    );
    assert!(reason.contains("not on this unit"), "{reason}");
    assert!(!d.recommendation.is_actionable());
}

#[test]
fn a_running_unit_changes_nothing() {
    // A healthy unit's evidence adds a sentence but no hypothesis.
    let now = t("2026-12-02T03:00:30Z");
    let mut snap = recorded("myapp.service", "show-myapp-running.txt", None, None, now);
    snap.facts.retain(|f| f.key != "unit.memory_of_max");
    let (alert, ev) = case("bad_state_errors", "aiops-demo-app.service", snap);
    let d = run(&alert, &ev);
    assert_eq!(top(&d), "process-bad-state");
    assert!(d.recommendation.is_actionable());
}

#[test]
fn stored_evidence_without_a_unit_still_loads_and_keeps_its_id() {
    let f: Fixture = serde_json::from_str(&read(FIXTURES, "target_down.json")).unwrap();
    assert!(f.evidence.unit.is_none());
    assert_eq!(evidence::evidence_id(&f.evidence), f.evidence.id);
}

#[test]
fn every_unit_fact_is_a_catalog_key_of_its_kind() {
    let now = t("2026-12-02T03:00:30Z");
    let snap = recorded(
        "myapp.service",
        "show-myapp-dependency-failed.txt",
        Some("journal-myapp-oom-coredump.json"),
        Some("show-deps-postgresql-failed.txt"),
        now,
    );
    for f in &snap.facts {
        let numeric = unit_state::CATALOG_KEYS.contains(&f.key.as_str());
        let text = unit_state::CATALOG_TEXT_KEYS.contains(&f.key.as_str());
        assert!(numeric ^ text, "{} is in neither list (or both)", f.key);
        assert!(!f.commands.is_empty(), "{}", f.key);
        match f.value {
            aiops_core::model::UnitFactValue::Text(_) => assert!(text, "{}", f.key),
            aiops_core::model::UnitFactValue::Number { .. } => assert!(numeric, "{}", f.key),
            aiops_core::model::UnitFactValue::Unknown => {}
        }
    }
    for k in unit_state::CATALOG_KEYS
        .iter()
        .chain(unit_state::CATALOG_TEXT_KEYS)
    {
        assert!(snap.fact(k).is_some(), "{k} is never produced");
    }
}

#[test]
fn every_entry_on_unit_evidence_has_a_case_here() {
    let tested = [
        "unit-dependency-failed",
        "unit-start-limit-hit",
        "unit-oom-killed",
        "unit-crash-loop",
        "unit-near-memory-max",
    ];
    let catalog = Catalog::builtin();
    let on_unit: Vec<&str> = catalog
        .entries
        .iter()
        .filter(|e| {
            e.when
                .iter()
                .chain(&e.when_any)
                .any(|c| c.key.starts_with("unit."))
        })
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(on_unit, tested);
}

/// An alert that maps to no watched service: its unit's systemd evidence still explains it,
/// but nothing is ever proposed, not even what the unit evidence alone would justify.
#[test]
fn an_unwatched_unit_is_explained_by_systemd_but_never_acted_on() {
    use aiops_core::model::{EvidenceScope, ProfileSource};
    let unwatched = |ev: &mut Evidence| {
        ev.items.clear();
        ev.target_up = None;
        ev.scope = Some(EvidenceScope {
            service: None,
            matched_by: None,
            job: None,
            job_from: None,
            profiles: Vec::new(),
            profiles_from: ProfileSource::None,
            notes: vec!["the alert maps to no watched service".into()],
        });
        ev.id = evidence::evidence_id(ev);
    };
    // Near MemoryMax, allow-listed: a watched service would get a restart proposed.
    let now = t("2026-12-02T03:00:30Z");
    let snap = recorded("myapp.service", "show-myapp-running.txt", None, None, now);
    let (mut alert, mut ev) = case("memory_leak", "myapp.service", snap);
    alert.labels.insert("service".into(), "myapp".into());
    alert.labels.remove("job");
    assert!(run(&alert, &ev).recommendation.is_actionable());
    unwatched(&mut ev);
    let d = run(&alert, &ev);
    let reason = no_action(&d);
    assert!(
        reason.contains("\"myapp\" is not a watched service"),
        "{reason}"
    );
    assert!(
        d.hypotheses.iter().all(|h| h.action.is_none()),
        "{:#?}",
        d.hypotheses
    );
    assert!(
        d.explanation.contains("myapp.service is active"),
        "{}",
        d.explanation
    );

    // A crash loop: systemd's explanation and the not-watched reason, both.
    let now = t("2026-12-02T03:00:05Z");
    let snap = recorded(
        "nginx.service",
        "show-nginx-auto-restart.txt",
        Some("journal-nginx-crash-loop.json"),
        None,
        now,
    );
    let (mut alert, mut ev) = case("target_down", "nginx.service", snap);
    alert.labels.insert("service".into(), "nginx".into());
    unwatched(&mut ev);
    let d = run(&alert, &ev);
    assert_eq!(top(&d), "unit-crash-loop", "{:#?}", d.hypotheses);
    let reason = no_action(&d);
    assert!(reason.contains(NGINX_EMERG), "{reason}");
    assert!(
        reason.contains("\"nginx\" is not a watched service"),
        "{reason}"
    );
    assert!(!d.recommendation.is_actionable());
}
