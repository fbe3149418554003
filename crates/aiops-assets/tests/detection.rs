//! Detection on the real thing: the demo app's faults, scraped and evaluated by a real Prometheus
//! with the rendered rules, routed by a real Alertmanager to a stand-in receiver. Measures the
//! time from "fault on" to the notification, against the detection floor.
//!
//! The figures in docs/BENCHMARKS.md ("Alerting floor") come from the ignored test:
//! `cargo test -p aiops-assets --test tests -- --ignored alerting_floor_figures --nocapture`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aiops_assets::Ports;
use aiops_assets::floor::DETECTION_FLOOR;
use aiops_demo_app::BackgroundServer;
use aiops_testkit::tools;

use crate::support::{
    Proc, Receiver, closed_ports, http, instant, start_alertmanager, start_prometheus, wait_for,
};

/// The whole detection path, fresh for each measurement (no earlier alert to resolve first).
struct Stack {
    app: BackgroundServer,
    receiver: Receiver,
    prom_base: String,
    // Dropped (killed) before the directory they write into.
    _prom: Proc,
    _am: Proc,
    _dir: tempfile::TempDir,
}

/// Prometheus and Alertmanager, or `None` after `tools::require` said why (or failed the test).
fn tools() -> Option<(PathBuf, PathBuf)> {
    Some((
        tools::require(&["prometheus"])?,
        tools::require(&["prometheus-alertmanager", "alertmanager"])?,
    ))
}

impl Stack {
    fn start(prometheus: &std::path::Path, alertmanager: &std::path::Path) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = BackgroundServer::start_ephemeral().expect("start the demo app");
        let receiver = Receiver::start();
        let [grafana, prom_placeholder, am_placeholder] = closed_ports();
        let mut ports = Ports {
            demo_app: app.addr().port(),
            webhook: receiver.port,
            prometheus: prom_placeholder,
            alertmanager: am_placeholder,
            grafana,
        };
        let token = dir.path().join("webhook-token");
        std::fs::write(&token, "t0ken\n").expect("write token");
        let etc = dir.path().join("etc");
        let r = aiops_assets::render(&etc, &ports, &token).expect("render");
        let (am, am_port) = start_alertmanager(alertmanager, dir.path(), &r.alertmanager_config);
        ports.alertmanager = am_port;
        let prom = start_prometheus(prometheus, dir.path(), &etc, &mut ports, &token);
        let prom_base = Ports::url(ports.prometheus);
        let agent = http();
        // The app has been scraped twice (rates exist) and Alertmanager is known to Prometheus.
        wait_for(
            "two scrapes of the demo app",
            Duration::from_secs(60),
            || {
                let r = instant(
                    &agent,
                    &prom_base,
                    "count_over_time(up{job=\"aiops-demo-app\"}[1m]) >= 2",
                )
                .ok()?;
                (!r.is_empty()).then_some(())
            },
        );
        wait_for(
            "Prometheus to know Alertmanager",
            Duration::from_secs(30),
            || {
                let mut resp = agent
                    .get(format!("{prom_base}/api/v1/alertmanagers"))
                    .call()
                    .ok()?;
                let v: serde_json::Value = resp.body_mut().read_json().ok()?;
                (v["data"]["activeAlertmanagers"].as_array()?.len() == 1).then_some(())
            },
        );
        Stack {
            app,
            receiver,
            prom_base,
            _prom: prom,
            _am: am,
            _dir: dir,
        }
    }

    /// Switches a fault on (for 3 minutes) with `query` (e.g. `errors?ratio=0.3`) and returns the
    /// time until the receiver got `alert` firing.
    fn detect(&self, query: &str, alert: &str, traffic: bool) -> Duration {
        let load = traffic.then(|| Load::start(&self.app.url()));
        let agent = http();
        let sep = if query.contains('?') { '&' } else { '?' };
        let t0 = Instant::now();
        let resp = agent
            .post(format!(
                "{}/admin/faults/{query}{sep}duration=180",
                self.app.url()
            ))
            .send_empty()
            .expect("start the fault");
        assert!(
            resp.status().is_success(),
            "fault {query}: {}",
            resp.status()
        );
        let got = wait_for(
            &format!("{alert} to reach the receiver"),
            Duration::from_secs(150),
            || {
                self.receiver.received().into_iter().find(|n| {
                    n.body["status"] == "firing" && n.body["groupLabels"]["alertname"] == alert
                })
            },
        );
        drop(load);
        let labels = &got.body["alerts"][0]["labels"];
        assert_eq!(labels["service"], "aiops-demo-app", "{}", got.body);
        assert_eq!(labels["unit"], "aiops-demo-app.service", "{}", got.body);
        got.at - t0
    }

    fn rule_value(&self, expr: &str) -> String {
        instant(&http(), &self.prom_base, expr)
            .ok()
            .and_then(|r| {
                r.first()
                    .map(|s| s["value"][1].as_str().unwrap_or("?").to_owned())
            })
            .unwrap_or_else(|| "none".into())
    }
}

/// About 40 requests/s from 4 paced clients (what `aiops stress` sends by default), until
/// dropped; bounded to 10 minutes.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(url: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..4)
            .map(|i| {
                let (stop, url) = (stop.clone(), url.to_owned());
                std::thread::spawn(move || {
                    let agent = http();
                    let start = Instant::now();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed)
                        && start.elapsed() < Duration::from_secs(600)
                    {
                        let path = if n % 2 == 0 {
                            "/".to_owned()
                        } else {
                            format!("/api/items/{}", (n + i) % 20 + 1)
                        };
                        let _ = agent.get(format!("{url}{path}")).call();
                        n += 1;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                })
            })
            .collect();
        Load { stop, threads }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn the_error_fault_reaches_the_receiver_within_a_minute() {
    let Some((prometheus, alertmanager)) = tools() else {
        return;
    };
    let stack = Stack::start(&prometheus, &alertmanager);
    let took = stack.detect("errors?ratio=0.3", "HighErrorRatio", true);
    eprintln!(
        "HighErrorRatio notified {:.1} s after the fault (floor {} s)",
        took.as_secs_f64(),
        DETECTION_FLOOR.as_secs()
    );
    assert!(took < Duration::from_secs(60), "took {took:?}");
    // Not faster than the pending period allows: `for` really holds the alert back.
    assert!(took >= aiops_assets::floor::ALERT_FOR, "took {took:?}");
}

#[test]
#[ignore = "takes about 9 minutes; produces the figures of docs/BENCHMARKS.md"]
fn alerting_floor_figures() {
    let (prometheus, alertmanager) = tools().expect("prometheus and alertmanager on PATH");
    let mut rows = Vec::new();
    let mut run = |name: &str, query: &str, alert: &str, traffic: bool, baseline: Duration| {
        let stack = Stack::start(&prometheus, &alertmanager);
        let warmup = (!baseline.is_zero()).then(|| Load::start(&stack.app.url()));
        if let Some(_w) = &warmup {
            std::thread::sleep(baseline); // the scenario is "steady traffic for this long"
        }
        let took = stack.detect(query, alert, traffic);
        drop(warmup);
        let value = match alert {
            "HighErrorRatio" => {
                stack.rule_value("job:http_request_error_ratio:rate30s{job=\"aiops-demo-app\"}")
            }
            "HighLatencyP99" => stack
                .rule_value("job:http_request_duration_seconds:p99_30s{job=\"aiops-demo-app\"}"),
            "HighCpuUsage" => {
                stack.rule_value("job:process_cpu_seconds:rate30s{job=\"aiops-demo-app\"}")
            }
            _ => stack
                .rule_value("job:process_resident_memory_bytes:deriv1m{job=\"aiops-demo-app\"}"),
        };
        eprintln!("{name}: {:.1} s (signal then: {value})", took.as_secs_f64());
        rows.push((name.to_owned(), took));
    };
    // AIOPS_FLOOR_ONLY=cpu (a word of the scenario names) runs a subset.
    let only = std::env::var("AIOPS_FLOOR_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || name.contains(only.as_str());
    let zero = Duration::ZERO;
    let mut scenarios: Vec<(String, &str, &str, bool, Duration)> = (1..=5)
        .map(|i| {
            let name = format!("errors 30%, traffic starts with the fault, run {i}");
            (name, "errors?ratio=0.3", "HighErrorRatio", true, zero)
        })
        .collect();
    scenarios.extend([
        (
            "errors 30% after 60 s of steady traffic".to_owned(),
            "errors?ratio=0.3",
            "HighErrorRatio",
            false,
            Duration::from_secs(60),
        ),
        (
            "latency +400 ms, traffic starts with the fault".to_owned(),
            "latency?delay_ms=400",
            "HighLatencyP99",
            true,
            zero,
        ),
        (
            "cpu 1 thread, idle app".to_owned(),
            "cpu?threads=1",
            "HighCpuUsage",
            false,
            zero,
        ),
        (
            "cpu 2 threads, idle app".to_owned(),
            "cpu?threads=2",
            "HighCpuUsage",
            false,
            zero,
        ),
        (
            "leak 1 MiB/s, idle app".to_owned(),
            "leak?bytes_per_sec=1048576",
            "MemoryGrowth",
            false,
            zero,
        ),
    ]);
    for (name, query, alert, traffic, baseline) in scenarios {
        if wanted(&name) {
            run(&name, query, alert, traffic, baseline);
        }
    }
    println!("| scenario | fault → notification | floor |");
    println!("| --- | ---: | ---: |");
    for (name, took) in &rows {
        println!(
            "| {name} | {:.1} s | {} s |",
            took.as_secs_f64(),
            DETECTION_FLOOR.as_secs()
        );
    }
}
