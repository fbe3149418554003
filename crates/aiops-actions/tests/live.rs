//! Stale checks and verification against a real Prometheus and Alertmanager (skipped, with the
//! reason, when the binaries are missing).
//!
//! Prometheus scrapes a small metrics endpoint of this test whose error ratio the supervisor's
//! restart brings back to normal, as a restart of the demo app clears its in-process fault.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aiops_actions::{ActionState, Gate, GateOptions, Proposal, Refusal};
use aiops_core::config::ActionKind;
use aiops_diagnosis::testkit::{self, PrometheusSpec};
use aiops_testkit::tools;

use crate::support::*;

/// Serves `demo_error_ratio <value>` on 127.0.0.1:0 until dropped; while `down` is set it
/// closes every connection without answering, so Prometheus's scrapes fail (`up` 0).
struct Metrics {
    addr: String,
    ratio: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Metrics {
    fn start(ratio: f64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let value = Arc::new(AtomicU64::new(ratio.to_bits()));
        let stop = Arc::new(AtomicBool::new(false));
        let down = Arc::new(AtomicBool::new(false));
        let (v, st, dn) = (value.clone(), stop.clone(), down.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                if dn.load(Ordering::SeqCst) {
                    continue;
                }
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let body = format!(
                    "# TYPE demo_error_ratio gauge\ndemo_error_ratio{{job_hint=\"demo\"}} {}\n",
                    f64::from_bits(v.load(Ordering::SeqCst))
                );
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self {
            addr,
            ratio: value,
            down,
            stop,
        }
    }

    fn set(&self, ratio: f64) {
        self.ratio.store(ratio.to_bits(), Ordering::SeqCst);
    }
}

impl Drop for Metrics {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(&self.addr);
    }
}

const RULES: &str = "groups:\n  - name: test\n    rules:\n      - alert: HighErrorRatio\n        expr: demo_error_ratio > 0.05\n        labels:\n          severity: critical\n";

/// Waits (bounded) until `query` has (or has not) a result.
fn wait_for(prom: &aiops_diagnosis::prom::Prom, query: &str, present: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if prom
            .instant(query, None)
            .map(|s| s.is_empty() != present)
            .unwrap_or(false)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{query} did not become {present} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Prometheus (scraping `metrics` as job `app` every second, with [`RULES`]) and Alertmanager,
/// both real, under `dir`; `None` (after saying why) when a binary is missing.
fn start_stack(
    dir: &std::path::Path,
    metrics: &Metrics,
) -> Option<(testkit::Server, testkit::Server)> {
    let spec = PrometheusSpec {
        config: format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [rules.yml]\nscrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: ['{}']\n",
            metrics.addr
        ),
        files: BTreeMap::from([("rules.yml".to_owned(), RULES.to_owned())]),
        ..PrometheusSpec::default()
    };
    let Some(prom) = testkit::start_prometheus(&dir.join("prom"), &spec) else {
        tools::missing("prometheus");
        return None;
    };
    let Some(am) = testkit::start_alertmanager(&dir.join("am"), testkit::QUIET_ALERTMANAGER) else {
        tools::missing("alertmanager");
        return None;
    };
    Some((prom.unwrap(), am.unwrap()))
}

/// A gate on the real stack whose restarts go through `sup`, polling every 250 ms, and a client
/// of the same Prometheus; waits until the alert's condition holds.
fn open_gate(
    dir: &std::path::Path,
    sup: &Supervisor,
    prom: &testkit::Server,
    am: &testkit::Server,
    verify_timeout_secs: u64,
) -> (Gate, aiops_diagnosis::prom::Prom) {
    let mut c = config(dir, &sup.socket);
    c.prometheus.url = prom.url.clone();
    c.alertmanager.url = am.url.clone();
    c.remediation.verify_timeout_secs = verify_timeout_secs;
    let options = GateOptions {
        poll_interval: Duration::from_millis(250),
        ..GateOptions::default()
    };
    let g = Gate::open_with(&c, &prometheus::Registry::new(), options).unwrap();
    let client = aiops_diagnosis::prom::Prom::new(&c.prometheus);
    wait_for(&client, "demo_error_ratio > 0.05", true);
    (g, client)
}

/// Posts `a` to Alertmanager as firing (so that the gate finds it still firing) and returns it,
/// without fingerprints (Alertmanager's own apply), with a diagnosis whose evidence is
/// `demo_error_ratio`.
fn firing_in(
    am: &testkit::Server,
    mut a: aiops_actions::AlertRef,
) -> (aiops_actions::AlertRef, aiops_core::model::Diagnosis) {
    a.fingerprints.clear();
    testkit::post_alert(&am.url, &a.labels, &BTreeMap::new(), a.starts_at).unwrap();
    let mut d = diagnosis(UNIT, ActionKind::Restart);
    d.evidence.items[0].query = "demo_error_ratio".into();
    (a, d)
}

/// The message of a refusal as stale; panics on anything else.
fn stale_message(r: Result<aiops_actions::Finished, aiops_actions::GateError>) -> String {
    match r {
        Err(aiops_actions::GateError::Refused {
            reason: Refusal::Stale,
            message,
        }) => message,
        other => panic!("expected a refusal as stale, got {other:?}"),
    }
}

/// Proposes the action for `alert` and has alice approve it; returns the outcome and the
/// progress lines the approval printed.
fn propose_and_approve(
    g: &Gate,
    alert: &aiops_actions::AlertRef,
    d: &aiops_core::model::Diagnosis,
) -> (aiops_actions::Finished, Vec<String>) {
    let Proposal::Pending { id, .. } = g.propose(alert, d).unwrap() else {
        panic!("no pending action proposed")
    };
    let lines = std::sync::Mutex::new(Vec::new());
    let f = g
        .approve(Some(id.as_str()), &alice(), false, &|m| {
            lines.lock().unwrap().push(m.to_owned());
        })
        .unwrap();
    (f, lines.into_inner().unwrap())
}

#[test]
fn stale_checks_and_verification_against_real_prometheus_and_alertmanager() {
    let dir = tempdir();
    let metrics = Arc::new(Metrics::start(0.231));
    let Some((prom, am)) = start_stack(dir.path(), &metrics) else {
        return;
    };
    let healed = metrics;
    let sup = Supervisor::start_with(dir.path(), Arc::new(move || healed.set(0.001)));
    let (g, _) = open_gate(dir.path(), &sup, &prom, &am, 60);

    // The alert fires in Alertmanager with exactly these labels.
    let (a, d) = firing_in(&am, alert("live", UNIT));
    let labels = a.labels.clone();

    // An alert Alertmanager does not know is stale.
    let mut unknown = alert("ghost", UNIT);
    unknown.labels.insert("instance".into(), "elsewhere".into());
    let Proposal::Pending { id: ghost, .. } = g.propose(&unknown, &d).unwrap() else {
        panic!()
    };
    let message = stale_message(g.approve(Some(ghost.as_str()), &alice(), false, &|_| {}));
    assert!(message.contains("no longer fires"), "{message}");
    assert!(!message.contains("evidence no longer holds"), "{message}");
    g.reject(ghost.as_str(), &alice(), "test").unwrap();

    // Fresh: approved without --force, restarted, verified with the number.
    let (f, lines) = propose_and_approve(&g, &a, &d);
    assert!(f.fixed, "{f:?} {lines:?}");
    assert_eq!(f.action.state, ActionState::Succeeded);
    assert!(!f.action.forced);
    assert!(
        f.summary.starts_with("verified: error ratio back to 0.1% ")
            && f.summary.ends_with(" s after the restart"),
        "{}",
        f.summary
    );
    assert_eq!(sup.restarts(), 1);
    let stats = g.outcome_stats("HighErrorRatio", ActionKind::Restart);
    assert_eq!((stats.succeeded, stats.consecutive_failures), (1, 0));

    // The alert still fires in Alertmanager, but the evidence no longer holds: stale, with numbers.
    let mut again = alert("live2", UNIT);
    again.labels = labels;
    again.fingerprints.clear();
    let Proposal::Pending { id: late, .. } = g.propose(&again, &d).unwrap() else {
        panic!()
    };
    let message = stale_message(g.approve(Some(late.as_str()), &bob(), false, &|_| {}));
    assert!(
        message.contains("the evidence no longer holds"),
        "{message}"
    );
    assert!(
        message.contains("error ratio is 0.1% now (23.1% when proposed)"),
        "{message}"
    );
    assert!(!message.contains("no longer fires"), "{message}");
    assert_eq!(sup.restarts(), 1);
    assert!(g.audit_verify().ok);
}

#[test]
fn a_target_that_is_down_after_the_restart_is_not_a_recovery() {
    let dir = tempdir();
    let metrics = Arc::new(Metrics::start(0.231));
    let Some((prom, am)) = start_stack(dir.path(), &metrics) else {
        return;
    };
    // The "restart" leaves the service unreachable: every rate and ratio series of it goes
    // stale, so the alert's expression is empty although nothing was fixed.
    let broken = metrics;
    let sup = Supervisor::start_with(
        dir.path(),
        Arc::new(move || broken.down.store(true, Ordering::SeqCst)),
    );
    let (g, client) = open_gate(dir.path(), &sup, &prom, &am, 8);

    let mut a = alert("down", UNIT);
    a.labels.insert("job".into(), "app".into());
    let (a, d) = firing_in(&am, a);
    let (f, lines) = propose_and_approve(&g, &a, &d);
    assert_eq!(sup.restarts(), 1);
    // The expression did go empty (the series are stale) ...
    wait_for(&client, "demo_error_ratio > 0.05", false);
    // ... and yet the outcome is a failure that says why.
    assert!(!f.fixed, "{f:?} {lines:?}");
    assert_eq!(f.action.state, ActionState::Failed);
    assert!(
        f.summary.starts_with("not fixed after 8 s: ")
            && f.summary
                .contains("job app is down (its `up` is not 1 since the restart)"),
        "{}",
        f.summary
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("job app is down (its `up` is not 1 since the restart)")),
        "{lines:?}"
    );
    assert!(g.audit_verify().ok);
}

#[test]
fn a_forced_restart_with_prometheus_down_is_unconfirmed_and_spares_the_breaker() {
    let dir = tempdir();
    let metrics = Arc::new(Metrics::start(0.231));
    let Some((prom, am)) = start_stack(dir.path(), &metrics) else {
        return;
    };
    let sup = Supervisor::start(dir.path());
    let (g, _) = open_gate(dir.path(), &sup, &prom, &am, 3);
    let (a, d) = firing_in(&am, alert("blind", UNIT));
    let Proposal::Pending { id, .. } = g.propose(&a, &d).unwrap() else {
        panic!("no pending action proposed")
    };
    // Prometheus goes away (ended by its pid); Alertmanager still lists the alert.
    drop(prom);

    // Unforced: stale, and the refusal says what --force would give up.
    let message = stale_message(g.approve(Some(id.as_str()), &alice(), false, &|_| {}));
    assert!(
        message.contains("cannot re-check the evidence"),
        "{message}"
    );
    assert!(
        message.contains("--force skips only the re-checks")
            && message.contains("cooldown, hourly cap, breaker")
            && message.contains("recovery cannot be verified either")
            && message.contains("recorded as unconfirmed"),
        "{message}"
    );

    // Forced: it says what it overrides, restarts, and ends unconfirmed, not failed.
    let lines = std::sync::Mutex::new(Vec::new());
    let f = g
        .approve(Some(id.as_str()), &alice(), true, &|m| {
            lines.lock().unwrap().push(m.to_owned());
        })
        .unwrap();
    let lines = lines.into_inner().unwrap();
    assert_eq!(sup.restarts(), 1);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("--force skips only the re-checks")),
        "{lines:?}"
    );
    assert!(f.action.forced);
    assert!(!f.fixed);
    assert_eq!(f.action.state, ActionState::Unconfirmed, "{}", f.summary);
    let outcome = f.action.outcome.as_ref().unwrap();
    assert!(outcome.unconfirmed && !outcome.fixed);
    assert_eq!(
        outcome.reason,
        Some(aiops_actions::UnconfirmedReason::PrometheusSilent)
    );
    assert!(
        f.summary.starts_with(
            "unconfirmed (Prometheus not answering): aiops-demo-app.service is active again with a new invocation, but Prometheus did not answer for 3 s"
        ) && f.summary.contains("Not counted as a failure toward the breaker"),
        "{}",
        f.summary
    );
    // The breaker counts nothing: no success, no failure.
    let stats = g.outcome_stats("HighErrorRatio", ActionKind::Restart);
    assert_eq!(
        (stats.succeeded, stats.failed, stats.consecutive_failures),
        (0, 0, 0)
    );
    assert!(
        g.audit_log()
            .tail(100)
            .unwrap()
            .iter()
            .any(|e| e.event == "unconfirmed")
    );
    assert!(g.audit_verify().ok);
}

/// `group_alerts` against a real Alertmanager: one group's alerts only, found by label values
/// that need escaping (quotes, backslashes, commas, braces), restricted to the receiver.
#[test]
fn group_alerts_lists_exactly_the_groups_alerts() {
    let dir = tempdir();
    let Some(am) = testkit::start_alertmanager(&dir.path().join("am"), testkit::QUIET_ALERTMANAGER)
    else {
        tools::missing("alertmanager");
        return;
    };
    let am = am.unwrap();
    let tricky = r#"pay "ments" \ eu, {west}=1"#;
    let labels = |name: &str, service: &str, instance: &str| {
        BTreeMap::from([
            ("alertname".to_owned(), name.to_owned()),
            ("service".to_owned(), service.to_owned()),
            ("instance".to_owned(), instance.to_owned()),
        ])
    };
    let at = chrono::Utc::now() - chrono::Duration::minutes(1);
    let annotations = BTreeMap::new();
    for i in 0..3 {
        testkit::post_alert(
            &am.url,
            &labels("GroupedAlert", tricky, &format!("host-{i}:9100")),
            &annotations,
            at,
        )
        .unwrap();
    }
    // Same name, a service that only starts like the group's; and another name.
    testkit::post_alert(
        &am.url,
        &labels("GroupedAlert", r#"pay "ments" \ eu"#, "host-9:9100"),
        &annotations,
        at,
    )
    .unwrap();
    testkit::post_alert(
        &am.url,
        &labels("OtherAlert", tricky, "host-0:9100"),
        &annotations,
        at,
    )
    .unwrap();

    let client = aiops_actions::alerts::AlertmanagerClient::new(&am.url, Duration::from_secs(2));
    let group = BTreeMap::from([
        ("alertname".to_owned(), "GroupedAlert".to_owned()),
        ("service".to_owned(), tricky.to_owned()),
    ]);
    let found = client.group_alerts(&group, Some("quiet")).unwrap();
    let mut instances: Vec<&str> = found
        .alerts
        .iter()
        .map(|a| a.labels["instance"].as_str())
        .collect();
    instances.sort_unstable();
    assert_eq!(
        instances,
        ["host-0:9100", "host-1:9100", "host-2:9100"],
        "{found:#?}"
    );
    assert_eq!(found.more, 0);
    assert!(found.alerts.iter().all(|a| a.labels["service"] == tricky));
    // Another receiver's view of the same labels is empty; a receiver name is no regex.
    assert!(
        client
            .group_alerts(&group, Some("qu.et"))
            .unwrap()
            .alerts
            .is_empty()
    );
    assert_eq!(client.group_alerts(&group, None).unwrap().alerts.len(), 3);
}
