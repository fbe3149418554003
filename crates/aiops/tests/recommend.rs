//! `aiops recommend` against a REAL Prometheus (holding a backfilled error incident and the
//! repo's recording rules) and a REAL Alertmanager with a firing alert posted to its API v2.
//! Skips, saying why, when prometheus or alertmanager is missing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aiops_core::model::{Diagnosis, Recommendation};
use aiops_diagnosis::testkit::{self, ErrorIncident, Server};
use chrono::{Duration, DurationRound, Utc};

struct Stack {
    prometheus: Server,
    alertmanager: Server,
    incident: ErrorIncident,
    dir: tempfile::TempDir,
}

fn rules_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../prometheus/rules.yml")
}

fn incident() -> ErrorIncident {
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

fn start_stack() -> Option<Stack> {
    let dir = tempfile::tempdir().unwrap();
    let incident = incident();
    let om = incident.openmetrics(None);
    let prometheus = match testkit::prometheus_with_history(
        &dir.path().join("prom"),
        &om,
        &rules_file(),
        incident.start,
        incident.end,
    ) {
        None => {
            aiops_testkit::tools::missing("prometheus");
            return None;
        }
        Some(r) => r.expect("prometheus starts"),
    };
    let alertmanager =
        match testkit::start_alertmanager(&dir.path().join("am"), testkit::QUIET_ALERTMANAGER) {
            None => {
                aiops_testkit::tools::missing("alertmanager");
                return None;
            }
            Some(r) => r.expect("alertmanager starts"),
        };
    let labels: BTreeMap<String, String> = [
        ("alertname", "HighErrorRatio"),
        ("job", "aiops-demo-app"),
        ("service", "aiops-demo-app"),
        ("severity", "critical"),
        ("unit", "aiops-demo-app.service"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let annotations = [("summary".to_owned(), "errors".to_owned())].into();
    testkit::post_alert(
        &alertmanager.url,
        &labels,
        &annotations,
        incident.incident_at + Duration::minutes(1),
    )
    .expect("alert posted");
    Some(Stack {
        prometheus,
        alertmanager,
        incident,
        dir,
    })
}

fn write_config(dir: &Path, prom: &str, am: &str) -> PathBuf {
    let path = dir.join(format!("config-{}.toml", fastrand_suffix()));
    std::fs::write(
        &path,
        format!(
            "state_dir = {:?}\n[prometheus]\nurl = {prom:?}\ntimeout_ms = 2000\n[alertmanager]\nurl = {am:?}\n",
            dir.join("state")
        ),
    )
    .unwrap();
    path
}

fn fastrand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn aiops(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aiops"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Replaces what changes between runs: times, ports, ids, uptimes.
fn redact(s: &str, stack: &Stack) -> String {
    let mut s = s
        .replace(&stack.prometheus.url, "[PROMETHEUS]")
        .replace(&stack.alertmanager.url, "[ALERTMANAGER]");
    let patterns: &[(&str, &str)] = &[
        (r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", "[TIME]"),
        (r"\d{2}:\d{2} UTC", "[HH:MM] UTC"),
        (r"ev-[0-9a-f]{12}", "ev-[ID]"),
        (r"fingerprint [0-9a-f]+", "fingerprint [FP]"),
        (r"@ \d+\.\d{3}", "@ [T]"),
    ];
    for (re, with) in patterns {
        s = regex_lite_replace(&s, re, with);
    }
    s
}

/// A tiny matcher for the fixed patterns above (digits, hex, literal text), so the test needs
/// no regex crate.
fn regex_lite_replace(s: &str, pattern: &str, with: &str) -> String {
    // Tokens: \d, [0-9a-f], literal chars; each optionally followed by {n} or +.
    #[derive(Clone, Copy)]
    enum Class {
        Digit,
        Hex,
        Lit(char),
    }
    let mut toks: Vec<(Class, usize, bool)> = Vec::new();
    let p: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < p.len() {
        let class = if p[i] == '\\' && p.get(i + 1) == Some(&'d') {
            i += 2;
            Class::Digit
        } else if p[i] == '\\' {
            i += 2;
            Class::Lit(p[i - 1])
        } else if pattern[i..].starts_with("[0-9a-f]") {
            i += 8;
            Class::Hex
        } else {
            i += 1;
            Class::Lit(p[i - 1])
        };
        let (n, plus) = if p.get(i) == Some(&'{') {
            let end = p[i..].iter().position(|c| *c == '}').unwrap() + i;
            let n: usize = p[i + 1..end].iter().collect::<String>().parse().unwrap();
            i = end + 1;
            (n, false)
        } else if p.get(i) == Some(&'+') {
            i += 1;
            (1, true)
        } else {
            (1, false)
        };
        toks.push((class, n, plus));
    }
    let ok = |c: Class, ch: char| match c {
        Class::Digit => ch.is_ascii_digit(),
        Class::Hex => ch.is_ascii_hexdigit() && !ch.is_ascii_uppercase(),
        Class::Lit(l) => ch == l,
    };
    let chars: Vec<char> = s.chars().collect();
    let try_at = |start: usize| -> Option<usize> {
        let mut j = start;
        for (c, n, plus) in &toks {
            for _ in 0..*n {
                if j < chars.len() && ok(*c, chars[j]) {
                    j += 1;
                } else {
                    return None;
                }
            }
            if *plus {
                while j < chars.len() && ok(*c, chars[j]) {
                    j += 1;
                }
            }
        }
        Some(j)
    };
    let mut out = String::new();
    let mut k = 0;
    while k < chars.len() {
        match try_at(k) {
            Some(end) if end > k => {
                out.push_str(with);
                k = end;
            }
            _ => {
                out.push(chars[k]);
                k += 1;
            }
        }
    }
    out
}

#[test]
fn recommend_against_real_prometheus_and_alertmanager() {
    let Some(stack) = start_stack() else { return };
    let config = write_config(
        stack.dir.path(),
        &stack.prometheus.url,
        &stack.alertmanager.url,
    );

    // Human output: recommendation, explanation with numbers, evidence table with PromQL.
    let out = aiops(&config, &["recommend"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains(
            "Recommendation: restart aiops-demo-app.service (risk low, confidence 90%, in-process-fault) once a human approves"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("Error ratio is 25.0% against a baseline of 0.0%"),
        "{stdout}"
    );
    assert!(stdout.contains("MEASURE"), "{stdout}");
    assert!(
        stdout.contains(r#"job:http_request_error_ratio:rate30s{job="aiops-demo-app"}"#),
        "{stdout}"
    );
    assert!(stdout.contains("`aiops pending`"), "{stdout}");
    insta::assert_snapshot!("recommend_human", redact(&stdout, &stack));

    // JSON: the Diagnosis list, parseable with the shared model.
    let out = aiops(
        &config,
        &["--json", "recommend", "--alert", "HighErrorRatio"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: Vec<Diagnosis> = serde_json::from_slice(&out.stdout).expect("JSON diagnoses");
    assert_eq!(list.len(), 1);
    let d = &list[0];
    assert_eq!(d.alertname, "HighErrorRatio");
    assert_eq!(d.labels["unit"], "aiops-demo-app.service");
    assert!(d.evidence.id.starts_with("ev-"));
    let er = d.evidence.get("error_ratio").unwrap();
    assert!((er.value.unwrap() - 0.25).abs() < 0.01, "{er:?}");
    // The alert started a minute into the incident; the baseline ends a rate window before
    // that, when the incident began.
    assert!(
        er.baseline_query
            .as_deref()
            .unwrap()
            .contains(&format!("@ {}.000", stack.incident.incident_at.timestamp())),
        "{er:?}"
    );
    match &d.recommendation {
        Recommendation::Act { unit, .. } => assert_eq!(unit.as_str(), "aiops-demo-app.service"),
        other => panic!("{other:?}"),
    }

    // An alert that is not firing: exit 4, named.
    let out = aiops(&config, &["recommend", "--alert", "HighCpuUsage"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("\"HighCpuUsage\" is not firing") && err.contains("firing: HighErrorRatio"),
        "{err}"
    );
}

#[test]
fn unreachable_services_exit_unavailable_naming_the_url_and_key() {
    let dead = |_: ()| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let dir = tempfile::tempdir().unwrap();
    let am_dead = dead(());
    let config = write_config(dir.path(), &dead(()), &am_dead);
    let out = aiops(&config, &["recommend"]);
    assert_eq!(out.status.code(), Some(6));
    let err = text(&out.stderr);
    assert!(
        err.contains(&am_dead) && err.contains("alertmanager.url"),
        "{err}"
    );

    // Alertmanager up with a firing alert, Prometheus down: the diagnosis is printed (blind)
    // and the exit code says Prometheus is unavailable.
    let Some(am) = testkit::start_alertmanager(&dir.path().join("am"), testkit::QUIET_ALERTMANAGER)
    else {
        aiops_testkit::tools::missing("alertmanager");
        return;
    };
    let am = am.unwrap();
    let labels: BTreeMap<String, String> = [
        ("alertname", "HighErrorRatio"),
        ("unit", "aiops-demo-app.service"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    testkit::post_alert(&am.url, &labels, &BTreeMap::new(), Utc::now()).unwrap();
    let prom_dead = dead(());
    let config = write_config(dir.path(), &prom_dead, &am.url);
    let t = std::time::Instant::now();
    let out = aiops(&config, &["recommend"]);
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&prom_dead) && err.contains("prometheus.url"),
        "{err}"
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("Recommendation: none, blind: monitoring is blind"),
        "{stdout}"
    );
}
