//! The real thing (issue 3, item 3): Debian's Prometheus and Alertmanager on loopback with the
//! repository's rules and routing (`prometheus/`, rendered with this test's ports by
//! `aiops-assets`), the demo app with its error fault, the receiver and a Slack-protocol sink.
//! Turning the fault on makes `HighErrorRatio` fire and the sink receive one well-formed
//! message; turning it off yields the resolved follow-up that refers to it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aiops_assets::Ports;
use aiops_demo_app::BackgroundServer;
use aiops_diagnosis::testkit::{PrometheusSpec, start_alertmanager, start_prometheus};
use aiops_testkit::tools;
use aiops_webhook::TestAdvisor;
use serde_json::Value;

use crate::support::*;

/// Ports nothing listens on, as placeholders for components this test does not scrape
/// (Prometheus itself, Grafana) or does not know yet (Alertmanager, rendered again later).
fn placeholder_ports() -> [u16; 3] {
    let ls: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = ls.iter().map(|l| l.local_addr().unwrap().port()).collect();
    [ports[0], ports[1], ports[2]]
}

/// Steady traffic on the demo app so that its error ratio is defined.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(base: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let agent = client();
            // Bounded: at most 20 minutes of one request every 50 ms.
            for _ in 0..24_000 {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let _ = agent.get(format!("{base}/")).call();
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn high_error_ratio(sink: &Sink) -> Vec<Value> {
    sink.delivered()
        .into_iter()
        .filter(|b| {
            b["text"]
                .as_str()
                .is_some_and(|t| t.contains("HighErrorRatio"))
        })
        .collect()
}

#[test]
fn the_error_fault_fires_one_message_and_its_end_one_follow_up() {
    let (Some(_), Some(_)) = (
        tools::require(&["prometheus"]),
        tools::require(&["prometheus-alertmanager", "alertmanager"]),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let app = BackgroundServer::start_ephemeral().expect("start the demo app");
    std::fs::create_dir_all(dir.path().join("receiver")).unwrap();
    let receiver = Receiver::start(
        &dir.path().join("receiver"),
        Some(&sink.url()),
        Arc::new(TestAdvisor::default()),
    );
    let token = dir.path().join("receiver/token");
    let [prom_placeholder, am_placeholder, grafana] = placeholder_ports();
    let mut ports = Ports {
        demo_app: app.addr().port(),
        webhook: receiver.addr.port(),
        prometheus: prom_placeholder,
        alertmanager: am_placeholder,
        grafana,
    };
    let first = aiops_assets::render(&dir.path().join("etc-am"), &ports, &token).unwrap();
    let am_config = std::fs::read_to_string(&first.alertmanager_config).unwrap();
    assert!(am_config.contains(&format!("127.0.0.1:{}", receiver.addr.port())));
    let am = start_alertmanager(&dir.path().join("am"), &am_config)
        .expect("alertmanager is on PATH")
        .expect("alertmanager starts");
    ports.alertmanager = am.url.rsplit(':').next().unwrap().parse().unwrap();
    let second = aiops_assets::render(&dir.path().join("etc"), &ports, &token).unwrap();
    let prom_config = std::fs::read_to_string(&second.prometheus_config).unwrap();
    let rules = std::fs::read_to_string(&second.rules).unwrap();
    let prom = start_prometheus(
        &dir.path().join("prom"),
        &PrometheusSpec {
            config: prom_config,
            files: [("rules.yml".to_owned(), rules)].into(),
            ..PrometheusSpec::default()
        },
    )
    .expect("prometheus is on PATH")
    .expect("prometheus starts");

    let traffic = Traffic::start(app.url());
    // Let Prometheus see healthy traffic first, so the alert is caused by the fault.
    wait_until(
        Duration::from_secs(60),
        "Prometheus to scrape the demo app",
        || {
            let mut r = match client()
                .get(format!(
                    "{}/api/v1/query?query=job:http_requests:rate30s",
                    prom.url
                ))
                .call()
            {
                Ok(r) => r,
                Err(_) => return false,
            };
            let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default())
                .unwrap_or(Value::Null);
            v["data"]["result"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        },
    );
    let resp = client()
        .post(format!(
            "{}/admin/faults/errors?ratio=0.5&duration=300",
            app.url()
        ))
        .send_empty()
        .unwrap();
    assert!(resp.status().is_success(), "fault on: {}", resp.status());

    wait_until(
        Duration::from_secs(120),
        "the HighErrorRatio message at the sink",
        || !high_error_ratio(&sink).is_empty(),
    );
    let resp = client()
        .delete(format!("{}/admin/faults/errors", app.url()))
        .call()
        .unwrap();
    assert!(resp.status().is_success(), "fault off: {}", resp.status());

    let firing = high_error_ratio(&sink)[0].clone();
    let text = firing["text"].as_str().unwrap();
    assert!(text.starts_with("🔴 HighErrorRatio firing"), "{text}");
    let blocks = firing["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    let body = firing.to_string();
    // The annotation from prometheus/rules.yml, the labels, links and the advice all made it.
    assert!(
        body.contains("aiops-demo-app answers too many requests with errors"),
        "{body}"
    );
    assert!(body.contains("*unit*\\naiops-demo-app.service"), "{body}");
    assert!(
        body.contains("/graph?g0.expr="),
        "a link to the alert's source: {body}"
    );
    assert!(body.contains("aiops approve a-"), "{body}");
    let id = text
        .rsplit('[')
        .next()
        .unwrap()
        .trim_end_matches(']')
        .to_owned();

    wait_until(Duration::from_secs(180), "the resolved follow-up", || {
        high_error_ratio(&sink).len() >= 2
    });
    drop(traffic);
    let messages = high_error_ratio(&sink);
    assert_eq!(messages.len(), 2, "{messages:#?}");
    let resolved = &messages[1];
    assert!(
        resolved["text"]
            .as_str()
            .unwrap()
            .starts_with("✅ HighErrorRatio resolved"),
        "{resolved}"
    );
    assert!(
        resolved
            .to_string()
            .contains(&format!("Resolves message `{id}`")),
        "{resolved}"
    );
    eprintln!(
        "real stack: {} message(s) at the sink in all: {:?}",
        sink.delivered().len(),
        sink.texts()
    );
}
