//! Evidence profiles: the file format and its errors, the placeholders' escaping (a property
//! test over every built-in template), detection on recorded metric-name sets of real
//! exporters and clients, and the whole path against a REAL Prometheus: an alert for a second
//! watched service without a `job` label gets that service's evidence, never the demo app's,
//! and an alert for an unwatched service proposes nothing and says why.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use aiops_core::config::{ActionKind, DiagnosisConfig};
use aiops_core::model::{OutcomeStats, ProfileSource, PrometheusHealth, Recommendation};
use aiops_diagnosis::evidence::{self, keys};
use aiops_diagnosis::profile::{HTTP_KEYS, ProfileError, ProfileSet, Scope, Vars};
use aiops_diagnosis::testkit::{self, ErrorIncident};
use aiops_diagnosis::{Engine, EngineError, Prom};
use chrono::{DateTime, Duration, DurationRound, Utc};

use crate::evidence::{alert, rules_file};

// ---- the file format --------------------------------------------------------------------------

const GOOD: &str = r#"
version = 1
[[profile]]
name = "myapp"
description = "my app's queue"
detect = ["myapp_queue_depth"]
[[profile.item]]
key = "queue_depth"
label = "queue depth"
unit = "count"
query = "sum(myapp_queue_depth{job=$job})"
baseline = "sum(avg_over_time(myapp_queue_depth{job=$job}[$window] $at))"
"#;

fn parse_err(text: &str) -> ProfileError {
    ProfileSet::parse(text, "extra.toml").unwrap_err()
}

#[test]
fn the_builtin_profiles_are_valid_and_complete() {
    let set = ProfileSet::builtin();
    let names: Vec<&str> = set.all().iter().map(|p| p.name.as_str()).collect();
    for want in [
        "aiops-demo",
        "http-prom-client",
        "http-go-promhttp",
        "http-otel",
        "process",
        "node-systemd",
        "node-exporter",
        "nginx-exporter",
        "postgres-exporter",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    // The HTTP profiles provide the keys the generic rules and the catalog's HTTP entries use.
    for name in [
        "aiops-demo",
        "http-prom-client",
        "http-go-promhttp",
        "http-otel",
    ] {
        let p = set.get(name).unwrap();
        for key in HTTP_KEYS {
            assert!(p.item(key).is_some(), "{name} lacks {key}");
        }
    }
    assert_eq!(set.get("node-exporter").unwrap().scope, Scope::Host);
    assert_eq!(set.get("node-systemd").unwrap().scope, Scope::Host);
    // The demo profile is the demo plan: its 15 items, the two counters since the process
    // started (for verification), and up.
    let plan = evidence::plan("aiops-demo-app", 3600, Utc::now());
    assert_eq!(plan.len(), 18);
    assert_eq!(plan.last().unwrap().key, keys::UP);
}

#[test]
fn a_good_file_parses_and_merges_over_the_builtins() {
    let extra = ProfileSet::parse(GOOD, "extra.toml").unwrap();
    let p = extra.get("myapp").unwrap();
    assert_eq!(p.items[0].key, "queue_depth");
    assert_eq!(p.origin, "extra.toml");

    // A profile of a built-in's name replaces it; new ones follow.
    let replace = GOOD.replace("\"myapp\"", "\"process\"");
    let merged = ProfileSet::builtin().merged(ProfileSet::parse(&replace, "extra.toml").unwrap());
    let process = merged.get("process").unwrap();
    assert_eq!(process.items.len(), 1);
    assert_eq!(process.origin, "extra.toml");
    assert!(merged.get("http-otel").is_some());

    // Through the configuration: a file, with and without the built-ins.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("profiles.toml");
    std::fs::write(&file, GOOD).unwrap();
    let with = ProfileSet::from_config(&DiagnosisConfig {
        profiles_file: Some(file.clone()),
        ..DiagnosisConfig::default()
    })
    .unwrap();
    assert!(with.get("myapp").is_some() && with.get("aiops-demo").is_some());
    let only = ProfileSet::from_config(&DiagnosisConfig {
        profiles_file: Some(file),
        builtin_profiles: false,
        ..DiagnosisConfig::default()
    })
    .unwrap();
    assert_eq!(only.names(), "myapp");
    let missing = ProfileSet::from_config(&DiagnosisConfig {
        profiles_file: Some(dir.path().join("nope.toml")),
        ..DiagnosisConfig::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        missing.contains("nope.toml") && missing.contains("diagnosis.profiles_file"),
        "{missing}"
    );
}

#[test]
fn errors_name_the_file_the_profile_and_the_field() {
    for (text, profile, field, says) in [
        (
            GOOD.replace("detect =", "detects ="),
            "\"myapp\"",
            "detects",
            "unknown field",
        ),
        (
            GOOD.replace("label =", "lable ="),
            "\"myapp\"",
            "item[0] (queue_depth).lable",
            "unknown field",
        ),
        (
            GOOD.replace("unit = \"count\"", "unit = \"furlongs\""),
            "\"myapp\"",
            "item[0] (queue_depth).unit",
            "furlongs",
        ),
        (
            GOOD.replace("{job=$job})\"\nbaseline", "{job=$jobb})\"\nbaseline"),
            "\"myapp\"",
            "item[0] (queue_depth).query",
            "$jobb",
        ),
        (
            GOOD.replace(
                "sum(myapp_queue_depth{job=$job})",
                "sum(myapp_queue_depth) > $job",
            ),
            "\"myapp\"",
            "item[0] (queue_depth).query",
            "not where a string literal goes",
        ),
        (
            GOOD.replace("[$window] $at", "[1h]"),
            "\"myapp\"",
            "item[0] (queue_depth).baseline",
            "$window",
        ),
        (
            GOOD.replace("key = \"queue_depth\"", "key = \"error_ratio\""),
            "\"myapp\"",
            "item[0] (error_ratio).unit",
            "Ratio",
        ),
        (
            GOOD.replace("key = \"queue_depth\"", "key = \"up\""),
            "\"myapp\"",
            "item[0] (up).key",
            "measured by the engine itself",
        ),
        (
            GOOD.replace("name = \"myapp\"", "name = \"My App\""),
            "\"My App\"",
            "name",
            "kebab-case",
        ),
        (
            GOOD.replace("description = \"my app's queue\"\n", ""),
            "\"myapp\"",
            "description",
            "missing field",
        ),
        (
            GOOD.replace("detect = [\"myapp_queue_depth\"]", "detect = [\"my-app\"]"),
            "\"myapp\"",
            "detect[0]",
            "not a metric name",
        ),
        (
            format!("{GOOD}{}", &GOOD[GOOD.find("[[profile]]").unwrap()..]),
            "\"myapp\"",
            "name",
            "already has this name",
        ),
    ] {
        match parse_err(&text) {
            ProfileError::Profile {
                origin,
                profile: p,
                field: f,
                message,
            } => {
                assert_eq!(origin, "extra.toml");
                assert_eq!(p, profile, "{message}");
                assert_eq!(f, field, "{message}");
                assert!(message.contains(says), "{f}: {message}");
            }
            other => panic!("{other:?}"),
        }
    }
    for (text, says) in [
        ("version = 2\n[[profile]]\n", "version = 2"),
        ("[[profile]]\nname = \"a\"\n", "`version = 1` is missing"),
        ("version = 1\n", "no `[[profile]]`"),
        (
            "version = 1\nprofiles = []\n",
            "unknown top-level key `profiles`",
        ),
    ] {
        let e = parse_err(text).to_string();
        assert!(e.contains(says) && e.contains("extra.toml"), "{e}");
    }
    assert!(matches!(
        parse_err("version = [\n"),
        ProfileError::Syntax { .. }
    ));

    // A file: the error names its path.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    std::fs::write(&file, GOOD.replace("label =", "lable =")).unwrap();
    let e = ProfileSet::load(&file).unwrap_err().to_string();
    assert!(
        e.contains(&file.display().to_string()) && e.contains("myapp") && e.contains("lable"),
        "{e}"
    );
}

#[test]
fn a_watched_service_naming_an_unknown_profile_is_refused_at_start() {
    let config = aiops_core::Config::from_toml(
        "[watch.web]\njob = \"web\"\nprofiles = [\"http-prom-clinet\"]\n",
        Path::new("t.toml"),
    )
    .unwrap();
    let e = Engine::from_config(&config).unwrap_err();
    assert!(matches!(
        e,
        EngineError::Profiles(ProfileError::Unknown { .. })
    ));
    let e = e.to_string();
    assert!(
        e.contains("watch.web.profiles")
            && e.contains("http-prom-clinet")
            && e.contains("http-prom-client"),
        "{e}"
    );
}

#[test]
fn http_measures_for_aiops_rules() {
    let set = ProfileSet::builtin();
    let m = set
        .http_measures(&["process", "http-otel"], "a\"b")
        .unwrap();
    assert_eq!(m.profile, "http-otel");
    assert!(
        m.error_ratio
            .contains(r#"{job="a\"b",http_response_status_code=~"5.."}"#),
        "{}",
        m.error_ratio
    );
    assert!(
        m.request_rate
            .starts_with("sum(rate(http_server_request_duration_seconds_count{job=")
    );
    assert!(
        m.latency_p99
            .unwrap()
            .starts_with("histogram_quantile(0.99,")
    );
    // The demo's are its recording rules.
    let d = set
        .http_measures(&["aiops-demo"], "aiops-demo-app")
        .unwrap();
    assert_eq!(
        d.error_ratio,
        r#"job:http_request_error_ratio:rate30s{job="aiops-demo-app"}"#
    );
    // nginx's stub_status has a request rate but no error ratio; process no HTTP at all.
    assert_eq!(set.http_measures(&["nginx-exporter", "process"], "x"), None);
    assert_eq!(set.http_measures(&["nope"], "x"), None);
}

// ---- every built-in template keeps a hostile value inside one literal --------------------------

/// The PromQL outside string literals (each literal replaced by `S`) and the decoded literals, in
/// order; `None` when a literal is not closed or holds an escape PromQL does not have.
fn literals(q: &str) -> Option<(String, Vec<String>)> {
    let mut code = String::new();
    let mut lits = Vec::new();
    let mut chars = q.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                let mut lit = String::new();
                loop {
                    match chars.next()? {
                        d if d == c => break,
                        '\\' => match chars.next()? {
                            '\\' => lit.push('\\'),
                            '"' => lit.push('"'),
                            '\'' => lit.push('\''),
                            'n' => lit.push('\n'),
                            'r' => lit.push('\r'),
                            't' => lit.push('\t'),
                            'x' => {
                                let h: String = chars.by_ref().take(2).collect();
                                lit.push(char::from_u32(u32::from_str_radix(&h, 16).ok()?)?);
                            }
                            'u' => {
                                let h: String = chars.by_ref().take(4).collect();
                                lit.push(char::from_u32(u32::from_str_radix(&h, 16).ok()?)?);
                            }
                            _ => return None,
                        },
                        '\n' => return None,
                        d => lit.push(d),
                    }
                }
                code.push('S');
                lits.push(lit);
            }
            '`' => {
                let mut lit = String::new();
                loop {
                    match chars.next()? {
                        '`' => break,
                        d => lit.push(d),
                    }
                }
                code.push('S');
                lits.push(lit);
            }
            c => code.push(c),
        }
    }
    Some((code, lits))
}

fn marker_vars() -> Vars {
    Vars {
        job: Some("PJOB".into()),
        instance: Some("PINSTANCE".into()),
        unit: Some("PUNIT".into()),
        service: Some("PSERVICE".into()),
    }
}

fn hostile() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        "\\PC*",
        "[\"'`\\\\\\n{}()\\[\\]#$=~!, a-z]{0,24}",
        Just("\"} or vector(1) or up{a=\"".to_owned()),
        Just("x\\\"} # comment\n".to_owned()),
        Just("`) or on() vector(1) #".to_owned()),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    #[test]
    fn a_hostile_value_stays_inside_one_string_literal_in_every_builtin_template(
        job in hostile(), instance in hostile(), unit in hostile(), service in hostile(),
    ) {
        let set = ProfileSet::builtin();
        let evil = Vars {
            job: Some(job.clone()),
            instance: Some(instance.clone()),
            unit: Some(unit.clone()),
            service: Some(service.clone()),
        };
        let swap = |lit: &str| match lit {
            "PJOB" => job.clone(),
            "PINSTANCE" => instance.clone(),
            "PUNIT" => unit.clone(),
            "PSERVICE" => service.clone(),
            other => other.to_owned(),
        };
        let mut checked = 0;
        for p in set.all() {
            for item in &p.items {
                for t in std::iter::once(&item.query).chain(item.baseline.as_ref()) {
                    let reference = t.render(&marker_vars(), "1h", "@ 1.000").unwrap();
                    let rendered = t.render(&evil, "1h", "@ 1.000").unwrap();
                    let (ref_code, ref_lits) = literals(&reference).expect("the template's own literals are closed");
                    let Some((code, lits)) = literals(&rendered) else {
                        return Err(proptest::test_runner::TestCaseError::fail(format!(
                            "{} {}: a literal does not close: {rendered}", p.name, item.key
                        )));
                    };
                    // The same code outside literals: the value added no matcher, operator or comment.
                    proptest::prop_assert_eq!(&code, &ref_code, "{} {}: {}", p.name, item.key, rendered);
                    // Each placeholder is exactly one literal holding exactly the value.
                    let want: Vec<String> = ref_lits.iter().map(|l| swap(l)).collect();
                    proptest::prop_assert_eq!(&lits, &want, "{} {}: {}", p.name, item.key, rendered);
                    checked += 1;
                }
            }
        }
        proptest::prop_assert!(checked > 50, "{checked}");
    }
}

// ---- detection on recorded metric-name sets -----------------------------------------------------

fn names(fixture: &str) -> BTreeSet<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/metric_names")
        .join(fixture);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn detected(set: &ProfileSet, n: &BTreeSet<String>) -> Vec<String> {
    set.detect(n).iter().map(|p| p.name.clone()).collect()
}

#[test]
fn detection_picks_the_right_profiles_for_recorded_metric_sets() {
    let set = ProfileSet::builtin();
    for (fixture, want) in [
        ("prom_client.txt", &["http-prom-client", "process"][..]),
        (
            "go_promhttp_process.txt",
            &["http-go-promhttp", "process"][..],
        ),
        ("otel_semconv.txt", &["http-otel"][..]),
        // The exporters' own process_* and promhttp metrics are not nginx's or PostgreSQL's.
        ("nginx_exporter.txt", &["nginx-exporter"][..]),
        ("postgres_exporter.txt", &["postgres-exporter"][..]),
        ("redis_exporter.txt", &["redis-exporter"][..]),
        (
            "node_exporter.txt",
            &[
                "http-go-promhttp",
                "process",
                "node-systemd",
                "node-exporter",
            ][..],
        ),
    ] {
        assert_eq!(detected(&set, &names(fixture)), want, "{fixture}");
    }
    // A service's job plus the host's node_exporter names (what the one detection call returns
    // for a host running node_exporter): the service's profiles and the host's.
    let mut both = names("prom_client.txt");
    both.extend(
        names("node_exporter.txt")
            .into_iter()
            .filter(|n| n.starts_with("node_")),
    );
    assert_eq!(
        detected(&set, &both),
        [
            "http-prom-client",
            "process",
            "node-systemd",
            "node-exporter"
        ]
    );
    // Nothing known: nothing detected (and never the demo app's profile).
    assert!(
        detected(&set, &names("otel_semconv.txt"))
            .iter()
            .all(|p| p != "aiops-demo")
    );
    assert!(detected(&set, &BTreeSet::from(["up".to_owned()])).is_empty());
}

// ---- against a real Prometheus ------------------------------------------------------------------

/// Merges OpenMetrics texts family by family (a family must be contiguous and appear once).
fn merge_openmetrics(texts: &[String]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut families: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for text in texts {
        let mut current = String::new();
        for line in text.lines() {
            if line == "# EOF" {
                break;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                current = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                if !families.contains_key(&current) {
                    order.push(current.clone());
                    families.insert(current.clone(), vec![line.to_owned()]);
                }
                continue;
            }
            families
                .get_mut(&current)
                .expect("a sample follows its # TYPE")
                .push(line.to_owned());
        }
    }
    let mut out = String::new();
    for f in order {
        for l in &families[&f] {
            out.push_str(l);
            out.push('\n');
        }
    }
    out.push_str("# EOF\n");
    out
}

struct Live {
    server: testkit::Server,
    demo: ErrorIncident,
    _dir: tempfile::TempDir,
}

/// The demo app's incident (25% errors at 12/s, its fault flag on) and a second service, web2,
/// in the prom-client convention without any demo metric (40% errors at 5/s), recorded side by
/// side; the repository's rules plus one alert about a service nobody watches.
fn start_live() -> Option<Live> {
    let dir = tempfile::tempdir().unwrap();
    let demo = crate::evidence::incident();
    let web2 = ErrorIncident {
        job: "web2".into(),
        instance: "127.0.0.1:3000".into(),
        rps: 5.0,
        error_ratio: 0.4,
        ..demo
    };
    let web2_text: String = {
        // Drop the demo-only families (and web2's own up, which the demo text's family holds).
        let full = web2.openmetrics(None);
        let mut keep = true;
        full.lines()
            .filter(|l| {
                if let Some(rest) = l.strip_prefix("# TYPE ") {
                    keep = !rest.starts_with("demo_");
                }
                keep
            })
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let om = merge_openmetrics(&[demo.openmetrics(Some("dead-app")), web2_text]);
    let mut rules = std::fs::read_to_string(rules_file()).unwrap();
    rules.push_str(
        "  - name: unwatched\n    rules:\n      - alert: DeadAppDown\n        expr: up{job=\"dead-app\"} == 0\n        labels:\n          service: dead-app\n",
    );
    let rules_path = dir.path().join("all-rules.yml");
    std::fs::write(&rules_path, rules).unwrap();
    match testkit::prometheus_with_history(dir.path(), &om, &rules_path, demo.start, demo.end) {
        None => {
            aiops_testkit::tools::missing("prometheus");
            None
        }
        Some(r) => Some(Live {
            server: r.expect("prometheus with history starts"),
            demo,
            _dir: dir,
        }),
    }
}

fn engine(url: &str, watch: &str) -> (Engine, aiops_core::Config) {
    let text = format!("[prometheus]\nurl = \"{url}\"\ntimeout_ms = 5000\n{watch}");
    let config = aiops_core::Config::from_toml(&text, Path::new("live.toml")).unwrap();
    let mut e = Engine::from_config(&config).unwrap();
    // This host's systemd knows neither unit; the point here is Prometheus' evidence.
    e.units = None;
    (e, config)
}

const TWO_SERVICES: &str = r#"
[watch.aiops-demo-app]
unit = "aiops-demo-app.service"
job = "aiops-demo-app"
profiles = ["aiops-demo"]
allowed_actions = ["restart", "clear-cache"]
alert_rules = false

[watch.web2]
unit = "web2.service"
job = "web2"
allowed_actions = ["restart"]
"#;

fn web2_alert(starts_at: DateTime<Utc>, labels: &[(&str, &str)]) -> aiops_diagnosis::AlertContext {
    let mut ctx = alert("HighErrorRatio", starts_at, None);
    ctx.labels.remove("service");
    ctx.labels.remove("unit");
    for (k, v) in labels {
        ctx.labels.insert((*k).into(), (*v).into());
    }
    ctx
}

fn close(a: Option<f64>, b: f64, tol: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() <= tol)
}

#[test]
fn a_second_watched_service_without_a_job_label_gets_its_own_evidence_never_the_demo_apps() {
    let Some(live) = start_live() else { return };
    let now = live.demo.end;
    let starts_at = live.demo.incident_at + Duration::minutes(1);
    let (e, config) = engine(&live.server.url, TWO_SERVICES);
    let past = |_: &str, _: ActionKind| OutcomeStats::default();

    // Mapped by its service label, by its unit label, and by its job label.
    for (labels, matched_by) in [
        (
            &[("service", "web2"), ("unit", "web2.service")][..],
            "service",
        ),
        (&[("unit", "web2.service")][..], "unit"),
        (&[("job", "web2")][..], "job"),
    ] {
        let ctx = web2_alert(starts_at, labels);
        let d = e.diagnose_alert_at(&ctx, now, past, &config.remediation.allowed);
        let ev = &d.evidence;
        let scope = ev.scope.as_ref().unwrap();
        assert_eq!(scope.service.as_deref(), Some("web2"), "{labels:?}");
        assert_eq!(scope.matched_by.as_deref(), Some(matched_by));
        assert_eq!(scope.job.as_deref(), Some("web2"));
        // Detected from web2's own metric names: prom-client HTTP and process, no demo profile.
        assert_eq!(scope.profiles_from, ProfileSource::Detected);
        assert_eq!(scope.profiles, ["http-prom-client", "process"], "{scope:?}");
        assert_eq!(ev.prometheus, PrometheusHealth::Reachable);
        assert_eq!(ev.target_up, Some(true));
        for i in &ev.items {
            assert!(i.query.contains(r#"job="web2""#), "{}: {}", i.key, i.query);
            assert!(
                !i.query.contains("aiops-demo-app"),
                "{}: {}",
                i.key,
                i.query
            );
            assert!(i.error.is_none(), "{}: {:?}", i.key, i.error);
        }
        assert!(ev.get(keys::FAULT_ERRORS).is_none());
        // web2's numbers (40% of 5/s), not the demo app's (25% of 12/s).
        assert!(
            close(ev.value(keys::ERROR_RATIO), 0.4, 0.02),
            "{:?}",
            ev.value(keys::ERROR_RATIO)
        );
        assert!(
            close(ev.value(keys::REQUEST_RATE), 5.0, 0.3),
            "{:?}",
            ev.value(keys::REQUEST_RATE)
        );
        assert!(
            close(
                ev.get(keys::REQUEST_RATE).and_then(|i| i.baseline),
                5.0,
                0.3
            ),
            "{:?}",
            ev.get(keys::REQUEST_RATE)
        );
        assert!(
            close(
                ev.get(keys::ERROR_RATIO).and_then(|i| i.baseline),
                0.0,
                0.02
            ),
            "{:?}",
            ev.get(keys::ERROR_RATIO)
        );
        assert!(ev.value(keys::LATENCY_P99).is_some());
        assert!(ev.value(keys::CPU).is_some());
        // The catalog's HTTP entries work on this profile: a bad process state, restart web2.
        match &d.recommendation {
            Recommendation::Act {
                action,
                unit,
                hypothesis,
                ..
            } => {
                assert_eq!(*action, ActionKind::Restart);
                assert_eq!(unit.as_str(), "web2.service");
                assert_eq!(hypothesis, "process-bad-state");
            }
            // Mapped by job only: the alert names no unit to act on, and says so.
            Recommendation::Refused { reason } if matched_by == "job" => {
                assert!(reason.contains("no `unit` label"), "{reason}");
            }
            other => panic!("{labels:?}: {other:?}\n{}", d.explanation),
        }
        assert!(
            d.explanation.contains("Error ratio is 40.0%")
                && d.explanation
                    .contains("profiles http-prom-client, process of watched service web2")
                && d.explanation.contains("detected from the metric names"),
            "{}",
            d.explanation
        );
        assert!(!d.explanation.contains("aiops-demo"), "{}", d.explanation);
    }

    // Configured profiles are used as listed, and the diagnosis says so.
    let (e, config) = engine(
        &live.server.url,
        &TWO_SERVICES.replace(
            "job = \"web2\"\n",
            "job = \"web2\"\nprofiles = [\"http-prom-client\"]\n",
        ),
    );
    let d = e.diagnose_alert_at(
        &web2_alert(starts_at, &[("service", "web2"), ("unit", "web2.service")]),
        now,
        past,
        &config.remediation.allowed,
    );
    let scope = d.evidence.scope.as_ref().unwrap();
    assert_eq!(scope.profiles_from, ProfileSource::Configured);
    assert_eq!(scope.profiles, ["http-prom-client"]);
    assert!(d.evidence.get(keys::CPU).is_none());
    assert!(
        d.explanation
            .contains("as configured in watch.web2.profiles"),
        "{}",
        d.explanation
    );

    // And the demo app, also watched, still gets its own.
    let d = e.diagnose_alert_at(
        &alert("HighErrorRatio", starts_at, None),
        now,
        past,
        &config.remediation.allowed,
    );
    assert_eq!(
        d.evidence.scope.as_ref().unwrap().service.as_deref(),
        Some("aiops-demo-app")
    );
    assert!(close(d.evidence.value(keys::ERROR_RATIO), 0.25, 0.01));
}

#[test]
fn an_alert_for_an_unwatched_service_proposes_nothing_and_says_why() {
    let Some(live) = start_live() else { return };
    let now = live.demo.end;
    let starts_at = live.demo.incident_at + Duration::minutes(1);
    let past = |_: &str, _: ActionKind| OutcomeStats::default();
    // With the demo app alone watched (an empty [watch]) and with two services.
    for watch in ["", TWO_SERVICES] {
        let (e, config) = engine(&live.server.url, watch);
        let mut ctx = alert("DeadAppDown", starts_at, Some("dead-app"));
        ctx.labels.insert("service".into(), "dead-app".into());
        ctx.labels.insert("unit".into(), "dead-app.service".into());
        ctx.labels.insert("instance".into(), "127.0.0.1:1".into());
        // Even an allow-list entry for its unit changes nothing: no evidence, no action.
        let mut allowed = config.remediation.allowed.clone();
        allowed.insert("dead-app.service".into(), vec![ActionKind::Restart]);
        let d = e.diagnose_alert_at(&ctx, now, past, &allowed);
        let ev = &d.evidence;
        let scope = ev.scope.as_ref().unwrap();
        assert_eq!(scope.service, None);
        assert_eq!(scope.profiles_from, ProfileSource::None);
        assert!(scope.profiles.is_empty());
        // Only the alert's own expression and value; no other service's numbers.
        assert_eq!(ev.items.len(), 1, "{:#?}", ev.items);
        let own = ev.get(keys::ALERT_VALUE).unwrap();
        assert_eq!(own.query, r#"up{job="dead-app"} == 0"#);
        assert_eq!(own.value, Some(0.0));
        assert!(ev.items.iter().all(|i| !i.query.contains("aiops-demo-app")));
        match &d.recommendation {
            Recommendation::NoAction { reason } => {
                assert!(
                    reason.contains("\"dead-app\" is not a watched service"),
                    "{reason}"
                );
                assert!(reason.contains("proposes nothing"), "{reason}");
            }
            other => panic!("{other:?}\n{}", d.explanation),
        }
        assert!(
            d.hypotheses.iter().all(|h| h.action.is_none()),
            "{:?}",
            d.hypotheses
        );
        assert!(
            d.explanation
                .contains("Its expression `up{job=\"dead-app\"} == 0` is 0 now")
                && d.explanation.contains("is not a watched service"),
            "{}",
            d.explanation
        );
    }
}

/// Every built-in query and baseline, rendered with a hostile value for every placeholder, is
/// PromQL this Prometheus accepts, and the one detection call answers.
#[test]
fn every_builtin_template_is_valid_promql_on_this_prometheus() {
    let Some(live) = start_live() else { return };
    let prom = Prom::new(&aiops_core::config::PrometheusConfig {
        url: live.server.url.clone(),
        timeout_ms: 5000,
    });
    let evil = Vars {
        job: Some("a\"} or vector(1) or up{b=\"".into()),
        instance: Some("i\\'`#".into()),
        unit: Some("u\n\"".into()),
        service: Some("s".into()),
    };
    let at = format!(
        "@ {}.000",
        live.demo
            .end
            .duration_trunc(Duration::seconds(1))
            .unwrap()
            .timestamp()
    );
    let set = ProfileSet::builtin();
    for p in set.all() {
        for item in &p.items {
            for t in std::iter::once(&item.query).chain(item.baseline.as_ref()) {
                let q = t.render(&evil, "1h", &at).unwrap();
                let r = prom.instant(&q, Some(live.demo.end));
                assert!(r.is_ok(), "{} {}: {q}: {:?}", p.name, item.key, r.err());
                // A hostile job matches nothing: no series of any other job leak in.
                if t.uses()
                    .contains(&aiops_diagnosis::profile::Placeholder::Job)
                {
                    assert!(r.unwrap().is_empty(), "{} {}: {q}", p.name, item.key);
                }
            }
        }
    }
    let names = prom
        .metric_names(
            &set.detection_matchers("web2"),
            live.demo.end - Duration::minutes(10),
            live.demo.end,
        )
        .unwrap();
    assert!(
        names.contains(&"http_requests_total".to_owned()),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.starts_with("demo_")), "{names:?}");
}

/// docs/PROFILES.md names every built-in profile and every key and query it reads, and its
/// example file is valid.
#[test]
fn the_docs_name_every_builtin_profile_and_what_it_reads() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/PROFILES.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    for p in ProfileSet::builtin().all() {
        assert!(
            doc.contains(&format!("### `{}`", p.name)),
            "{} undocumented",
            p.name
        );
        for i in &p.items {
            assert!(
                doc.contains(&format!("`{}`", i.key)),
                "{} {} undocumented",
                p.name,
                i.key
            );
            let q = i.query.source().replace('|', "\\|");
            assert!(
                doc.contains(&q),
                "{} {}: {q} not in the docs",
                p.name,
                i.key
            );
        }
    }
    let example = doc
        .split("```toml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .unwrap();
    let set = ProfileSet::parse(example, "docs/PROFILES.md").unwrap();
    assert!(set.get("myapp").is_some());
}

/// Detection through the one `/api/v1/label/__name__/values` call of a real Prometheus holding
/// the recorded metric names of each client and exporter, each under a job of its own, next to
/// a host's node_exporter: every job gets what pure detection says for its names plus the
/// host's.
#[test]
fn detection_through_a_real_prometheus_matches_the_recorded_sets() {
    let dir = tempfile::tempdir().unwrap();
    let end = (Utc::now() - Duration::seconds(30))
        .duration_trunc(Duration::seconds(1))
        .unwrap();
    let fixtures = [
        "prom_client.txt",
        "go_promhttp_process.txt",
        "otel_semconv.txt",
        "nginx_exporter.txt",
        "postgres_exporter.txt",
        "redis_exporter.txt",
        "node_exporter.txt",
    ];
    let job_of = |f: &str| f.trim_end_matches(".txt").replace('_', "-");
    let texts: Vec<String> = fixtures
        .iter()
        .map(|f| {
            let mut t = String::new();
            for n in names(f) {
                t.push_str(&format!("# TYPE {n} unknown\n"));
                for back in [120, 60, 0] {
                    let ts = (end - Duration::seconds(back)).timestamp();
                    t.push_str(&format!(
                        "{n}{{job=\"{}\",instance=\"127.0.0.1:9\"}} 1 {ts}\n",
                        job_of(f)
                    ));
                }
            }
            t
        })
        .collect();
    let spec = testkit::PrometheusSpec {
        config: "global:\n  evaluation_interval: 1h\n".into(),
        openmetrics: Some(merge_openmetrics(&texts)),
        lookback_delta: Some("1h".into()),
        ..Default::default()
    };
    let server = match testkit::start_prometheus(dir.path(), &spec) {
        None => return aiops_testkit::tools::missing("prometheus"),
        Some(r) => r.expect("prometheus starts"),
    };
    let prom = Prom::new(&aiops_core::config::PrometheusConfig {
        url: server.url.clone(),
        timeout_ms: 5000,
    });
    let set = ProfileSet::builtin();
    let host: BTreeSet<String> = names("node_exporter.txt")
        .into_iter()
        .filter(|n| n.starts_with("node_"))
        .collect();
    let watched: BTreeMap<String, aiops_core::config::WatchConfig> = fixtures
        .iter()
        .map(|f| {
            (
                job_of(f),
                aiops_core::config::WatchConfig {
                    unit: Some(format!("{}.service", job_of(f))),
                    job: Some(job_of(f)),
                    ..Default::default()
                },
            )
        })
        .collect();
    for f in fixtures {
        let mut ctx = alert("Anything", end - Duration::minutes(1), None);
        ctx.labels.insert("service".into(), job_of(f));
        let plan = evidence::plan_alert(&prom, &ctx, &set, &watched, 3600, end);
        let mut expected = names(f);
        expected.extend(host.iter().cloned());
        assert_eq!(plan.scope.profiles_from, ProfileSource::Detected, "{f}");
        assert_eq!(plan.scope.profiles, detected(&set, &expected), "{f}");
        assert!(plan.scope.notes.is_empty(), "{f}: {:?}", plan.scope.notes);
        assert!(plan.unreachable.is_none());
    }
}

/// A custom catalog may test the keys of custom profiles, and only when they are configured.
#[test]
fn a_custom_catalog_may_test_a_custom_profiles_keys() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles.toml");
    std::fs::write(&profiles, GOOD).unwrap();
    let catalog = dir.path().join("catalog.toml");
    std::fs::write(
        &catalog,
        "version = 1\n[[entry]]\nid = \"queue-backlog\"\ncause = \"the queue backs up\"\naction = \"none\"\nrisk = \"low\"\nconfidence = 0.8\nadvice = \"the queue holds {queue_depth}\"\nwhen = [{ key = \"queue_depth\", above = 1000 }]\n",
    )
    .unwrap();
    let text = |with_profiles: bool| {
        let mut t = format!(
            "[diagnosis]\ncatalog_file = {:?}\n",
            catalog.display().to_string()
        );
        if with_profiles {
            t.push_str(&format!(
                "profiles_file = {:?}\n",
                profiles.display().to_string()
            ));
        }
        aiops_core::Config::from_toml(&t, Path::new("t.toml")).unwrap()
    };
    let e = Engine::from_config(&text(true)).unwrap();
    assert!(e.catalog.get("queue-backlog").is_some());
    assert!(e.profiles.get("myapp").is_some());
    let err = Engine::from_config(&text(false)).unwrap_err().to_string();
    assert!(
        err.contains("queue_depth") && err.contains("queue-backlog"),
        "{err}"
    );
}
