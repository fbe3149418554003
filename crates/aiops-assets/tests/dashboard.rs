//! grafana/dashboards/aiops.json: its shape, and every query it holds run against a real
//! Prometheus scraping the real demo app.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aiops_assets::{DASHBOARD_UID, DATASOURCE_UID, Ports};
use serde_json::Value;

use crate::support::{closed_ports, http, start_prometheus, tool_or_skip, wait_for};

use aiops_assets::dashboard::{Query, dashboard, queries};

/// Grafana's variables replaced as Grafana would for the default view.
fn substitute(expr: &str, d: &Value) -> String {
    aiops_assets::dashboard::substitute(expr, d)
        .unwrap_or_else(|| panic!("unsubstituted variable in {expr}"))
}

#[test]
fn the_dashboard_has_the_shape_grafana_provisions() {
    let d = dashboard();
    assert_eq!(d["uid"], DASHBOARD_UID);
    assert_eq!(d["schemaVersion"], 39);
    assert!(
        d.get("id").is_none(),
        "a provisioned dashboard carries no numeric id"
    );
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    let mut ids = BTreeSet::new();
    let mut cells: Vec<(String, [i64; 4])> = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        let title = p["title"]
            .as_str()
            .expect("every panel has a title")
            .to_owned();
        assert!(
            ids.insert(p["id"].as_i64().expect("numeric id")),
            "duplicate id in {title}"
        );
        let g = &p["gridPos"];
        let rect = ["x", "y", "w", "h"].map(|k| {
            g[k].as_i64()
                .unwrap_or_else(|| panic!("{title}: gridPos.{k}"))
        });
        assert!(
            rect[2] >= 1 && rect[0] >= 0 && rect[0] + rect[2] <= 24,
            "{title}: fits 24 columns"
        );
        for (other, o) in &cells {
            let overlap = rect[0] < o[0] + o[2]
                && o[0] < rect[0] + rect[2]
                && rect[1] < o[1] + o[3]
                && o[1] < rect[1] + rect[3];
            assert!(!overlap, "panels {title:?} and {other:?} overlap");
        }
        cells.push((title.clone(), rect));
        let kind = p["type"].as_str().expect("type");
        if kind == "row" {
            continue;
        }
        assert!(
            ["timeseries", "stat", "table"].contains(&kind),
            "{title}: current panel type, not {kind}"
        );
        assert_eq!(
            p["datasource"]["uid"], DATASOURCE_UID,
            "{title}: datasource by uid"
        );
        assert!(
            p["description"].as_str().is_some_and(|s| !s.is_empty()),
            "{title}: says what it shows"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: has a query");
        let refs: BTreeSet<&str> = targets
            .iter()
            .map(|t| t["refId"].as_str().expect("refId"))
            .collect();
        assert_eq!(refs.len(), targets.len(), "{title}: refIds unique");
        for t in targets {
            assert_eq!(
                t["datasource"]["uid"], DATASOURCE_UID,
                "{title}: target datasource by uid"
            );
        }
    }
    // The datasource the panels name is the one provisioned.
    assert!(aiops_assets::GRAFANA_DATASOURCE_YML.contains(&format!("uid: {DATASOURCE_UID}\n")));

    let all: String = queries(&d)
        .iter()
        .map(|q| format!("{}\n", q.expr))
        .collect();
    for needle in [
        "http_requests_total",
        "job:http_request_error_ratio:rate30s",
        "job:http_request_duration_seconds:p50_30s",
        "job:http_request_duration_seconds:p99_30s",
        "job:process_cpu_seconds:rate30s",
        "process_resident_memory_bytes",
        "job:demo_cache_hit_ratio:rate30s",
        "demo_fault_active",
        "ALERTS{alertstate=\"firing\"}",
        "aiops_notifications_received_total",
        "aiops_slack_deliveries_total",
        "aiops_outbox_depth",
        "aiops_outbox_oldest_age_seconds",
        "aiops_recommendations_total",
        "aiops_pending_actions",
        "aiops_approvals_total",
        "aiops_executions_total",
        "aiops_alert_to_recommendation_seconds_bucket",
        "aiops_approval_to_recovery_seconds_bucket",
        "aiops_verification_seconds_bucket",
    ] {
        assert!(all.contains(needle), "no panel shows {needle}");
    }
    for (label, metric) in [
        ("status", "aiops_notifications_received_total"),
        ("outcome", "aiops_slack_deliveries_total"),
        ("result", "aiops_approvals_total"),
        ("action, result", "aiops_executions_total"),
        ("alertname, kind", "aiops_recommendations_total"),
    ] {
        assert!(
            all.lines()
                .any(|q| q.contains(metric) && q.contains(&format!("by ({label})"))),
            "{metric} by {label}"
        );
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// Runs `q` and returns the result list, or Prometheus's error.
fn run(agent: &ureq::Agent, base: &str, q: &Query, expr: &str) -> Result<Vec<Value>, String> {
    let t = now();
    let req = if q.instant {
        agent
            .get(format!("{base}/api/v1/query"))
            .query("query", expr)
    } else {
        agent
            .get(format!("{base}/api/v1/query_range"))
            .query("query", expr)
            .query("start", format!("{:.3}", t - 120.0))
            .query("end", format!("{t:.3}"))
            .query("step", "5")
    };
    let mut resp = req.call().map_err(|e| format!("request failed: {e}"))?;
    let body: Value = resp
        .body_mut()
        .read_json()
        .map_err(|e| format!("not JSON: {e}"))?;
    if body["status"] != "success" {
        return Err(format!("{}: {}", body["errorType"], body["error"]));
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// Sends requests to the app's API routes until stopped (at most 10 minutes, at most 100,000).
fn traffic(url: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let agent = http();
        let start = Instant::now();
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed)
            && sent < 100_000
            && start.elapsed() < Duration::from_secs(600)
        {
            // Twenty items, so the cache both misses (first visits) and hits (revisits).
            let path = match sent % 4 {
                0 => "/".to_owned(),
                1 | 2 => format!("/api/items/{}", sent % 20 + 1),
                _ => "/api/search?q=steel&limit=5".to_owned(),
            };
            let _ = agent.get(format!("{url}{path}")).call();
            sent += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
        sent
    })
}

#[test]
fn every_panel_query_runs_against_a_live_prometheus_and_service_panels_have_data() {
    let prometheus = tool_or_skip!("prometheus");
    let d = dashboard();
    let dir = tempfile::tempdir().expect("tempdir");
    let app = aiops_demo_app::BackgroundServer::start_ephemeral().expect("start the demo app");
    // The receiver and Alertmanager are not started: their ports refuse connections, so the
    // receiver's TargetDown fires and gives the "Alerts firing" panel something to show.
    let [webhook, alertmanager, grafana, placeholder] = closed_ports();
    let mut ports = Ports {
        demo_app: app.addr().port(),
        webhook,
        prometheus: placeholder,
        alertmanager,
        grafana,
    };
    let token = dir.path().join("token");
    let prom = start_prometheus(
        &prometheus,
        dir.path(),
        &dir.path().join("etc"),
        &mut ports,
        &token,
    );
    let base = Ports::url(ports.prometheus);
    let agent = http();

    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(app.url(), stop.clone());
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop_guard = StopOnDrop(stop.clone());

    let all: Vec<(Query, String)> = queries(&d)
        .into_iter()
        .map(|q| {
            let e = substitute(&q.expr, &d);
            (q, e)
        })
        .collect();
    // Service panels: data once two scrapes of traffic are in; "Alerts firing": once the
    // receiver's TargetDown has fired (3 evaluations after its first failed scrape).
    let started = Instant::now();
    let missing = |all: &[(Query, String)]| -> Vec<String> {
        all.iter()
            .filter(|(q, _)| !q.is_loop() && !q.origin.starts_with("annotation"))
            .filter(|(q, e)| run(&agent, &base, q, e).map_or(true, |r| r.is_empty()))
            .map(|(q, e)| format!("{}: {e}", q.origin))
            .collect()
    };
    let mut last = Vec::new();
    let ok = wait_for(
        "every service panel to have data",
        Duration::from_secs(150),
        || {
            last = missing(&all);
            if last.is_empty() {
                Some(true)
            } else if started.elapsed() > Duration::from_secs(140) {
                Some(false)
            } else {
                None
            }
        },
    );
    assert!(
        ok,
        "service panels without data after {:?}:\n{}\n{}",
        started.elapsed(),
        last.join("\n"),
        prom.log_text()
    );
    eprintln!(
        "every service panel had data {:.1} s after Prometheus started",
        started.elapsed().as_secs_f64()
    );

    // Every query parses and runs (the receiver's metrics may be empty until it runs).
    let mut empty_loop = Vec::new();
    for (q, e) in &all {
        let result = run(&agent, &base, q, e)
            .unwrap_or_else(|err| panic!("{} does not run: {err}\n  {e}", q.origin));
        if q.is_loop() && result.is_empty() {
            empty_loop.push(q.origin.clone());
        }
    }
    eprintln!(
        "queries on the receiver's metrics, data asserted later by the e2e test: {empty_loop:?}"
    );

    // The Service variable lists the demo app.
    let var = &d["templating"]["list"][0];
    assert_eq!(var["query"]["query"], "label_values(up, job)");
    let jobs = run(
        &agent,
        &base,
        &Query {
            origin: "variable job".into(),
            expr: String::new(),
            instant: true,
        },
        "count by (job) (up)",
    )
    .expect("variable query");
    assert!(
        jobs.iter().any(|s| s["metric"]["job"] == "aiops-demo-app"),
        "{jobs:?}"
    );

    // The alert the "Alerts firing" table shows is the receiver's TargetDown, with its labels.
    let firing = run(
        &agent,
        &base,
        &Query {
            origin: "alerts".into(),
            expr: String::new(),
            instant: true,
        },
        "ALERTS{alertstate=\"firing\"}",
    )
    .expect("ALERTS");
    assert!(
        firing
            .iter()
            .any(|a| a["metric"]["alertname"] == "TargetDown"
                && a["metric"]["service"] == "aiops-webhook"
                && a["metric"]["unit"] == "aiops-webhook.service"),
        "{firing:?}"
    );

    stop.store(true, Ordering::Relaxed);
    let sent = load.join().expect("traffic thread");
    assert!(sent > 0);
    drop(prom);
    drop(app);
}
