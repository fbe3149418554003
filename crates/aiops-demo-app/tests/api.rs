//! Routes, metrics and the cache, in-process.

use aiops_core::config::DemoAppConfig;

use crate::support::{self, get, post, post_json, request};

#[test]
fn metrics_parse_and_count_requests_by_route_and_status() {
    let app = support::app();
    let a = app.addr();
    for _ in 0..3 {
        assert_eq!(get(a, "/").status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(a, "/api/items/5").status, 200);
    }
    assert_eq!(get(a, "/api/items/abc").status, 400);
    assert_eq!(get(a, "/nope/deeper").status, 404);
    assert_eq!(request(a, "DELETE", "/", &[], b"").status, 405);
    let order = r#"{"item_id": 5, "quantity": 1, "customer": "Ada"}"#;
    assert_eq!(post_json(a, "/api/orders", order).status, 201);

    let m = support::scrape(a);
    let count = |method, route, status| {
        m.value(
            "http_requests_total",
            &[("method", method), ("route", route), ("status", status)],
        )
    };
    assert_eq!(count("GET", "/", "200"), 3.0);
    assert_eq!(count("GET", "/api/items/{id}", "200"), 2.0);
    assert_eq!(count("GET", "/api/items/{id}", "400"), 1.0);
    assert_eq!(count("GET", "unmatched", "404"), 1.0);
    assert_eq!(count("DELETE", "/", "405"), 1.0);
    assert_eq!(count("POST", "/api/orders", "201"), 1.0);
    assert_eq!(
        count("GET", "/", "500"),
        0.0,
        "pre-initialised error series"
    );
    assert!(
        m.get(
            "http_requests_total",
            &[("method", "GET"), ("route", "/"), ("status", "500")]
        )
        .is_some()
    );
    assert_eq!(
        m.value(
            "http_request_duration_seconds_count",
            &[("method", "GET"), ("route", "/")]
        ),
        3.0
    );

    // Bounded cardinality: no label value is ever a raw path.
    for s in &m.samples {
        if let Some(route) = s.labels.get("route") {
            assert!(
                [
                    "/",
                    "/healthz",
                    "/metrics",
                    "/api/items/{id}",
                    "/api/search",
                    "/api/orders",
                    "/admin/faults",
                    "/admin/faults/{kind}",
                    "/admin/cache/clear",
                    "unmatched"
                ]
                .contains(&route.as_str()),
                "raw route label {route:?}"
            );
        }
    }

    assert_eq!(
        m.get("demo_build_info", &[("version", aiops_demo_app::VERSION)]),
        Some(1.0)
    );
    assert!(
        m.get("http_requests_in_flight", &[])
            .is_some_and(|v| v >= 1.0),
        "the scrape itself is in flight"
    );
    assert!(m.get("process_cpu_seconds_total", &[]).is_some());
    assert!(m.value("process_resident_memory_bytes", &[]) > 0.0);
    assert!(m.value("process_start_time_seconds", &[]) > 1.6e9);
    assert!(m.value("process_open_fds", &[]) > 0.0);
    assert!(m.value("process_max_fds", &[]) > 0.0);
    for kind in ["errors", "cpu", "latency", "leak"] {
        assert_eq!(m.get("demo_fault_active", &[("kind", kind)]), Some(0.0));
        assert_eq!(m.get("demo_fault_setting", &[("kind", kind)]), Some(0.0));
    }
    assert_eq!(m.get("demo_leaked_bytes", &[]), Some(0.0));
    assert_eq!(m.get("demo_cache_capacity", &[]), Some(10_000.0));
}

#[test]
fn promtool_accepts_the_exposition() {
    let app = support::app();
    get(app.addr(), "/api/items/1");
    let metrics = get(app.addr(), "/metrics");
    // Prometheus 3 fails a scrape whose Content-Type is missing or not a known exposition format
    // (2.x guessed); this is the text format's own type.
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let body = metrics.body;
    let Some(promtool) = aiops_testkit::tools::require(&["promtool"]) else {
        return;
    };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool check metrics");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cache_hits_misses_bound_and_clear() {
    let app = support::app_with(&DemoAppConfig {
        cache_capacity: 10,
        ..DemoAppConfig::default()
    });
    let a = app.addr();
    let first = get(a, "/api/items/77");
    let second = get(a, "/api/items/77");
    assert_eq!(first.header("x-cache"), Some("miss"));
    assert_eq!(second.header("x-cache"), Some("hit"));
    assert_eq!(
        first.body, second.body,
        "a hit returns what the miss computed"
    );
    assert_eq!(first.json()["id"], 77);

    for id in 100..130 {
        assert_eq!(get(a, &format!("/api/items/{id}")).status, 200);
    }
    let m = support::scrape(a);
    assert_eq!(m.value("demo_cache_capacity", &[]), 10.0);
    let entries = m.value("demo_cache_entries", &[]);
    assert!((1.0..=10.0).contains(&entries), "entries {entries}");
    assert_eq!(m.value("demo_cache_hits_total", &[]), 1.0);
    assert_eq!(m.value("demo_cache_misses_total", &[]), 31.0);

    let cleared = post(a, "/admin/cache/clear");
    assert_eq!(cleared.status, 200);
    assert_eq!(cleared.json()["cleared"].as_f64(), Some(entries));
    assert_eq!(support::scrape(a).value("demo_cache_entries", &[]), 0.0);
    assert_eq!(get(a, "/api/items/77").header("x-cache"), Some("miss"));
}

#[test]
fn search_answers_and_explains_bad_queries() {
    let app = support::app();
    let a = app.addr();
    let r = get(a, "/api/search?q=Blue+LAMP&limit=3");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["total"], 16);
    assert_eq!(v["results"].as_array().unwrap().len(), 3);
    assert_eq!(
        get(a, "/api/search?q=blue+lamp&limit=3").header("x-cache"),
        Some("hit")
    );

    for (path, param) in [
        ("/api/search", "`q`"),
        ("/api/search?q=", "`q`"),
        ("/api/search?q=lamp&limit=0", "`limit`"),
        ("/api/search?q=lamp&limit=51", "`limit`"),
        ("/api/search?q=lamp&colour=red", "`colour`"),
    ] {
        let r = get(a, path);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(r.error().contains(param), "{path}: {}", r.text());
    }
}

#[test]
fn orders_are_validated_field_by_field() {
    let app = support::app();
    let a = app.addr();
    let r = post_json(
        a,
        "/api/orders",
        r#"{"item_id": 42, "quantity": 1, "customer": "Ada"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(v["item_id"], 42);
    assert_eq!(v["total_cents"], v["unit_price_cents"]);

    for (body, field) in [
        (
            r#"{"item_id": "42", "quantity": 1, "customer": "Ada"}"#,
            "`item_id`",
        ),
        (
            r#"{"item_id": 42, "quantity": 1000, "customer": "Ada"}"#,
            "`quantity`",
        ),
        (r#"{"item_id": 42, "quantity": 1}"#, "`customer`"),
        (
            r#"{"item_id": 42, "quantity": 1, "customer": "Ada", "coupon": "x"}"#,
            "`coupon`",
        ),
    ] {
        let r = post_json(a, "/api/orders", body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.error().contains(field), "{body}: {}", r.text());
    }
    let r = post_json(a, "/api/orders", "{not json");
    assert_eq!(r.status, 400);
    assert!(r.error().contains("not JSON"), "{}", r.text());
    let r = request(
        a,
        "POST",
        "/api/orders",
        &[("Content-Type", "text/plain")],
        b"hi",
    );
    assert_eq!(r.status, 415, "{}", r.text());
}

#[test]
fn unknown_paths_are_404_json_and_wrong_methods_405() {
    let app = support::app();
    let a = app.addr();
    let r = get(a, "/does/not/exist");
    assert_eq!(r.status, 404);
    assert!(r.error().contains("/does/not/exist"), "{}", r.text());
    assert_eq!(get(a, "/api/items/0").status, 404);
    assert_eq!(get(a, "/healthz/").status, 404);

    let r = post(a, "/healthz");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET"));
    let r = get(a, "/admin/cache/clear");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    let r = get(a, "/healthz");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    let r = get(a, "/");
    assert_eq!(r.json()["service"], "aiops-demo-app");
    assert_eq!(r.json()["version"], aiops_demo_app::VERSION);
}
