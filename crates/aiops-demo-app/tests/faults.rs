//! Fault injection, in-process: each fault changes what it should and ends on time.

use std::time::{Duration, Instant};

use crate::support::{self, delete, get, post, wait_until};

fn active_kinds(addr: std::net::SocketAddr) -> Vec<String> {
    let r = get(addr, "/admin/faults");
    assert_eq!(r.status, 200);
    r.json()["faults"]
        .as_array()
        .expect("faults array")
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn error_share_is_within_five_points_of_the_ratio() {
    let app = support::app();
    let a = app.addr();
    let r = post(a, "/admin/faults/errors?ratio=0.3&duration=120");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["started"]["setting"], 0.3);

    let mut failed = 0;
    for i in 0..1000 {
        let path = if i % 2 == 0 {
            "/".to_owned()
        } else {
            format!("/api/items/{}", i % 50 + 1)
        };
        match get(a, &path).status {
            500 => failed += 1,
            200 => {}
            other => panic!("unexpected status {other} for {path}"),
        }
        if i % 100 == 0 {
            assert_eq!(get(a, "/healthz").status, 200, "health is never broken");
        }
    }
    let share = f64::from(failed) / 1000.0;
    assert!((share - 0.3).abs() <= 0.05, "error share {share}");

    let m = support::scrape(a);
    assert_eq!(m.value("demo_fault_active", &[("kind", "errors")]), 1.0);
    assert_eq!(m.value("demo_fault_setting", &[("kind", "errors")]), 0.3);
    assert_eq!(
        m.sum("http_requests_total", &[("status", "500")]),
        f64::from(failed)
    );
    assert_eq!(
        m.sum(
            "http_requests_total",
            &[("route", "/healthz"), ("status", "200")]
        ),
        10.0
    );

    let r = delete(a, "/admin/faults/errors");
    assert_eq!(r.json()["ended"], true);
    assert_eq!(delete(a, "/admin/faults/errors").json()["ended"], false);
    assert!(
        (0..100).all(|_| get(a, "/").status == 200),
        "no errors once ended"
    );
    let m = support::scrape(a);
    assert_eq!(m.value("demo_fault_active", &[("kind", "errors")]), 0.0);
    assert_eq!(m.value("demo_fault_setting", &[("kind", "errors")]), 0.0);
}

#[test]
fn latency_shows_in_the_histogram_and_ends_on_time() {
    if !aiops_testkit::tools::live() {
        return;
    }
    let app = support::app();
    let a = app.addr();
    let started = Instant::now();
    let r = post(a, "/admin/faults/latency?delay_ms=300&duration=2");
    assert_eq!(r.status, 200, "{}", r.text());

    let t = Instant::now();
    assert_eq!(get(a, "/api/items/3").status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    assert_eq!(get(a, "/healthz").status, 200);
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "health is not delayed"
    );

    let m = support::scrape(a);
    let bucket = |le| {
        m.value(
            "http_request_duration_seconds_bucket",
            &[("method", "GET"), ("route", "/api/items/{id}"), ("le", le)],
        )
    };
    assert_eq!(bucket("0.25"), 0.0);
    assert_eq!(bucket("0.5"), 1.0);
    assert!(
        m.value(
            "http_request_duration_seconds_sum",
            &[("method", "GET"), ("route", "/api/items/{id}")]
        ) >= 0.3
    );
    assert_eq!(m.value("demo_fault_setting", &[("kind", "latency")]), 0.3);

    assert!(wait_until(Duration::from_secs(5), || active_kinds(a).is_empty()));
    let ended = started.elapsed();
    assert!(
        ended >= Duration::from_millis(1900),
        "ended early: {ended:?}"
    );
    assert!(ended <= Duration::from_secs(4), "ended late: {ended:?}");
    let t = Instant::now();
    assert_eq!(get(a, "/api/items/3").status, 200);
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "still delayed: {:?}",
        t.elapsed()
    );
    assert_eq!(
        support::scrape(a).value("demo_fault_active", &[("kind", "latency")]),
        0.0
    );
}

#[test]
fn every_fault_ends_on_time_and_the_leak_stays() {
    if !aiops_testkit::tools::live() {
        return;
    }
    let app = support::app();
    let a = app.addr();
    let started = Instant::now();
    for path in [
        "/admin/faults/errors?ratio=0.5&duration=1",
        "/admin/faults/cpu?threads=1&duration=1",
        "/admin/faults/latency?delay_ms=10&duration=1",
        "/admin/faults/leak?bytes_per_sec=4194304&duration=1",
    ] {
        let r = post(a, path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    let m = support::scrape(a);
    for (kind, setting) in [
        ("errors", 0.5),
        ("cpu", 1.0),
        ("latency", 0.01),
        ("leak", 4194304.0),
    ] {
        assert_eq!(
            m.value("demo_fault_active", &[("kind", kind)]),
            1.0,
            "{kind}"
        );
        assert_eq!(
            m.value("demo_fault_setting", &[("kind", kind)]),
            setting,
            "{kind}"
        );
    }
    let listed = get(a, "/admin/faults").json();
    for f in listed["faults"].as_array().unwrap() {
        let remaining = f["remaining_secs"].as_f64().unwrap();
        assert!(remaining > 0.0 && remaining <= 1.0, "{f}");
    }

    assert!(
        wait_until(Duration::from_secs(5), || active_kinds(a).is_empty()),
        "faults did not end"
    );
    let ended = started.elapsed();
    assert!(
        ended >= Duration::from_millis(900),
        "ended early: {ended:?}"
    );
    assert!(ended <= Duration::from_secs(3), "ended late: {ended:?}");

    let m = support::scrape(a);
    for kind in ["errors", "cpu", "latency", "leak"] {
        assert_eq!(
            m.value("demo_fault_active", &[("kind", kind)]),
            0.0,
            "{kind}"
        );
        assert_eq!(
            m.value("demo_fault_setting", &[("kind", kind)]),
            0.0,
            "{kind}"
        );
    }
    // 4 MiB/s for 1 s, in tenths: about 4 MiB, and it stays after the fault ended.
    let leaked = m.value("demo_leaked_bytes", &[]);
    assert!(
        (2.0 * 1048576.0..=4.5 * 1048576.0).contains(&leaked),
        "leaked {leaked}"
    );
    assert_eq!(app.app().faults().leaked_bytes() as f64, leaked);
    assert_eq!(
        get(a, "/admin/faults").json()["leaked_bytes"].as_f64(),
        Some(leaked)
    );
}

#[test]
fn a_new_fault_replaces_one_of_its_kind() {
    if !aiops_testkit::tools::live() {
        return;
    }
    let app = support::app();
    let a = app.addr();
    assert_eq!(
        post(a, "/admin/faults/latency?delay_ms=5&duration=1").status,
        200
    );
    let replaced = Instant::now();
    assert_eq!(
        post(a, "/admin/faults/latency?delay_ms=7&duration=3").status,
        200
    );
    let listed = get(a, "/admin/faults").json();
    let faults = listed["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 1, "{listed}");
    assert_eq!(faults[0]["setting"], 0.007);
    // The first one's timer (1 s) must not end the second (3 s).
    assert!(wait_until(Duration::from_secs(6), || active_kinds(a).is_empty()));
    let ended = replaced.elapsed();
    assert!(
        ended >= Duration::from_millis(2900),
        "ended by the old timer: {ended:?}"
    );
}

#[test]
fn bad_parameters_get_400_naming_the_parameter_and_what_is_allowed() {
    let app = support::app();
    let a = app.addr();
    for (path, param, allowed) in [
        ("/admin/faults/errors?ratio=1.5", "`ratio`", "from 0 to 1"),
        ("/admin/faults/errors", "`ratio`", "required"),
        (
            "/admin/faults/errors?ratio=0.2&duration=0",
            "`duration`",
            "from 1 to 3600",
        ),
        (
            "/admin/faults/errors?ratio=0.2&duration=3601",
            "`duration`",
            "from 1 to 3600",
        ),
        ("/admin/faults/cpu?threads=0", "`threads`", "from 1 to"),
        ("/admin/faults/cpu?threads=two", "`threads`", "integer"),
        (
            "/admin/faults/latency?delay_ms=60001",
            "`delay_ms`",
            "from 1 to 60000",
        ),
        (
            "/admin/faults/leak?bytes_per_sec=-1",
            "`bytes_per_sec`",
            "from 1 to 67108864",
        ),
        (
            "/admin/faults/leak?rate=5",
            "`rate`",
            "allowed: bytes_per_sec, duration",
        ),
    ] {
        let r = post(a, path);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        let v = r.json();
        let message = v["error"].as_str().unwrap();
        assert!(message.contains(param), "{path}: {message}");
        assert!(message.contains(allowed), "{path}: {message}");
        assert!(
            v["hint"]
                .as_str()
                .unwrap()
                .contains("example: POST /admin/faults/"),
            "{v}"
        );
    }
    let r = post(a, "/admin/faults/meltdown?duration=5");
    assert_eq!(r.status, 404);
    assert!(
        r.text().contains("errors, cpu, latency, leak"),
        "{}",
        r.text()
    );
    assert_eq!(get(a, "/admin/faults/errors").status, 405);
    assert!(active_kinds(a).is_empty(), "nothing started");
}
