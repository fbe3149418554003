//! The Prometheus client against a real Prometheus (skipped, with the reason, if it is missing).

use aiops_core::config::PrometheusConfig;
use aiops_diagnosis::prom::{Prom, PromError, RuleKind};
use aiops_diagnosis::testkit::{self, PrometheusSpec};

const RULES: &str = r#"groups:
  - name: t
    rules:
      - record: job:answer:sum
        expr: vector(42)
      - alert: AlwaysFiring
        expr: vector(1) > 0
        for: 1m
        labels: {severity: warning}
"#;

fn start(dir: &std::path::Path) -> Option<testkit::Server> {
    let spec = PrometheusSpec {
        config: "global:\n  evaluation_interval: 1s\nrule_files: [rules.yml]\n".into(),
        files: [("rules.yml".to_owned(), RULES.to_owned())].into(),
        ..Default::default()
    };
    match testkit::start_prometheus(dir, &spec) {
        None => {
            aiops_testkit::tools::missing("prometheus");
            None
        }
        Some(r) => Some(r.expect("prometheus starts")),
    }
}

fn client(url: &str) -> Prom {
    Prom::new(&PrometheusConfig {
        url: url.to_owned(),
        timeout_ms: 5000,
    })
}

#[test]
fn instant_queries_rules_and_errors_against_real_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = start(dir.path()) else {
        return;
    };
    let p = client(&format!("{}/", server.url));
    assert_eq!(p.url(), server.url, "trailing slash is trimmed");

    // Vector with labels.
    let s = p
        .instant(
            r#"label_replace(vector(0.25), "job", "a\"b", "", "")"#,
            None,
        )
        .unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].value, 0.25);
    assert_eq!(s[0].labels["job"], "a\"b");
    // Scalar, NaN and infinities.
    assert_eq!(p.instant("scalar(vector(3))", None).unwrap()[0].value, 3.0);
    assert!(p.instant_value("0/0", None).unwrap().unwrap().is_nan());
    assert_eq!(p.instant_value("1/0", None).unwrap(), Some(f64::INFINITY));
    assert_eq!(
        p.instant_value("-1/0", None).unwrap(),
        Some(f64::NEG_INFINITY)
    );
    // Empty vector, and an explicit evaluation time in the past.
    assert_eq!(p.instant("absent(vector(1))", None).unwrap(), vec![]);
    let at = chrono::Utc::now() - chrono::Duration::minutes(10);
    let t = p.instant_value("time()", Some(at)).unwrap().unwrap();
    assert!(
        (t - at.timestamp_millis() as f64 / 1000.0).abs() < 0.002,
        "{t} vs {at}"
    );
    // A job that is not scraped has no `up` series; the job text is escaped, not spliced.
    assert!(
        p.targets_up("nope\"} or vector(1) or {x=\"", None)
            .unwrap()
            .is_empty()
    );

    // bad_data with Prometheus' own message.
    match p.instant("sum(", None) {
        Err(PromError::Api {
            error_type,
            message,
            ..
        }) => {
            assert_eq!(error_type, "bad_data");
            assert!(message.contains("parse error"), "{message}");
        }
        other => panic!("expected bad_data, got {other:?}"),
    }
    // A range vector is not instant evidence.
    assert!(matches!(
        p.instant("up[1m]", None),
        Err(PromError::Decode { .. })
    ));

    // Rules: the alert's expression is found by name.
    let rules = p.rules().unwrap();
    assert!(
        rules
            .iter()
            .any(|r| r.kind == RuleKind::Recording && r.name == "job:answer:sum")
    );
    let alert = p
        .alert_rule("AlwaysFiring")
        .unwrap()
        .expect("alert rule listed");
    assert_eq!(alert.query, "vector(1) > 0");
    assert_eq!(alert.for_secs, 60.0);
    assert_eq!(alert.group, "t");
    assert!(p.alert_rule("NoSuchAlert").unwrap().is_none());
}

/// What a label value can hold reaches the real Prometheus (2.x and 3.x, whose parser accepts
/// UTF-8 names and is stricter elsewhere) as one string literal, and comes back unchanged: the
/// escaping is Prometheus' own syntax on both, never a way out of the literal.
#[test]
fn hostile_and_utf8_label_values_round_trip_through_real_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = start(dir.path()) else {
        return;
    };
    let p = client(&server.url);
    for value in [
        "aiops-demo-app",
        "a\"} or vector(1) #",
        "back\\slash\\",
        "new\nline\ttab\u{0}nul",
        "grüße 🦀 {job=~\".*\"}",
        "",
    ] {
        let lit = aiops_diagnosis::prom::label_value(value);
        let s = p
            .instant(
                &format!(r#"label_replace(vector(1), "x", {lit}, "", "")"#),
                None,
            )
            .unwrap_or_else(|e| panic!("{lit} was not one literal: {e}"));
        assert_eq!(s.len(), 1, "{lit}");
        assert_eq!(
            s[0].labels.get("x").map(String::as_str).unwrap_or(""),
            value,
            "{lit}"
        );
        // As a matcher it selects nothing (no such series), and is not a parse error either.
        let none = p
            .instant(&format!("up{{job={lit}}}"), None)
            .unwrap_or_else(|e| panic!("up{{job={lit}}}: {e}"));
        assert!(none.is_empty(), "{lit}: {none:?}");
    }
}

#[test]
fn unreachable_prometheus_is_reported_within_the_timeout() {
    // A port that was just free: bind, note it, close. Nothing listens there now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = Prom::new(&PrometheusConfig {
        url: format!("http://127.0.0.1:{port}"),
        timeout_ms: 500,
    });
    let t = std::time::Instant::now();
    let e = p.instant("up", None).unwrap_err();
    assert!(e.is_unreachable(), "{e:?}");
    assert!(t.elapsed() < std::time::Duration::from_secs(2));
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("prometheus.url"),
        "{msg}"
    );
}

#[test]
fn a_silent_server_times_out_as_unreachable() {
    // Accepts connections but never answers: the client must give up after its timeout.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let p = Prom::new(&PrometheusConfig {
        url: format!("http://127.0.0.1:{port}"),
        timeout_ms: 300,
    });
    let t = std::time::Instant::now();
    let e = p.instant("up", None).unwrap_err();
    assert!(e.is_unreachable(), "{e:?}");
    assert!(e.to_string().contains("no answer within 300 ms"), "{e}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        t.elapsed()
    );
    drop(l);
}

/// Sorted by labels, so two answers compare regardless of series order.
fn sorted(mut s: Vec<aiops_diagnosis::prom::Sample>) -> Vec<aiops_diagnosis::prom::Sample> {
    s.sort_by(|a, b| a.labels.cmp(&b.labels));
    s
}

#[test]
fn a_batch_answers_each_query_as_if_it_were_asked_alone() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = start(dir.path()) else {
        return;
    };
    let p = client(&server.url);
    let at = chrono::Utc::now() - chrono::Duration::seconds(5);
    let queries = [
        // Label sets that collide: a plain `or` would keep only the first of these three.
        "vector(1)",
        "vector(2)",
        r#"label_replace(vector(0.25), "job", "a\"b", "", "")"#,
        r#"label_replace(vector(0.5), "job", "a\"b", "", "")"#,
        // Several series in one query, one of them with the same labels as another query's.
        r#"label_replace(vector(3), "k", "x", "", "") or label_replace(vector(4), "k", "y", "", "")"#,
        r#"label_replace(vector(5), "k", "x", "", "")"#,
        // A vector built on time(), NaN and infinities, an empty result, a metric name kept.
        "time() - vector(100)",
        "vector(0) / 0",
        "vector(1) / 0",
        "absent(vector(1))",
        "up{job=\"nope\"}",
        "prometheus_build_info",
        // A trailing comment must not swallow the rest of the batch.
        "vector(7) # the answer",
    ];
    let batch = p.instant_batch(&queries, Some(at)).unwrap();
    assert_eq!(batch.len(), queries.len());
    for (q, got) in queries.iter().zip(batch) {
        let alone = p.instant(q, Some(at)).unwrap();
        assert_eq!(got.len(), alone.len(), "{q}: {got:?} vs {alone:?}");
        for (g, a) in sorted(got).iter().zip(sorted(alone)) {
            assert_eq!(g.labels, a.labels, "{q}");
            assert!(
                g.value == a.value || (g.value.is_nan() && a.value.is_nan()),
                "{q}: {} vs {}",
                g.value,
                a.value
            );
        }
    }
    assert_eq!(
        p.instant_batch(&[], Some(at)).unwrap(),
        Vec::<Vec<_>>::new()
    );

    // A query far longer than a URL should carry (it goes as a form POST) still works.
    let long = format!("vector(1){}", " + vector(0)".repeat(3000));
    assert!(long.len() > 30_000);
    assert_eq!(p.instant_value(&long, Some(at)).unwrap(), Some(1.0));
    let b = p.instant_batch(&[&long, "vector(2)"], Some(at)).unwrap();
    assert_eq!((b[0][0].value, b[1][0].value), (1.0, 2.0));

    // One bad query fails the whole batch with Prometheus' own error; so does a scalar, which
    // label_replace does not take (the evidence module then asks each query alone).
    for bad in ["sum(", "scalar(vector(3))", "up[1m]"] {
        match p.instant_batch(&["vector(1)", bad], Some(at)) {
            Err(PromError::Api { error_type, .. }) => assert_eq!(error_type, "bad_data", "{bad}"),
            other => panic!("{bad}: expected bad_data, got {other:?}"),
        }
    }
}

#[test]
fn batch_queries_mark_each_sub_query() {
    let q = aiops_diagnosis::prom::batch_query(&["a", "b # c"]);
    assert_eq!(
        q,
        "label_replace(\na\n, \"__aiops_item\", \"0\", \"\", \"\") or label_replace(\nb # c\n, \"__aiops_item\", \"1\", \"\", \"\")"
    );
}
