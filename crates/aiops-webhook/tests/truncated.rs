//! Truncated groups (issue 17, point 6) with a real Alertmanager on loopback: its receiver has
//! `max_alerts: 1`, so every notification carries one alert and counts the rest in
//! `truncatedAlerts`. The receiver fetches the group's alerts from Alertmanager's API, so the
//! message at the Slack sink and the advisor see all of them; an update names the alerts that
//! joined and left; and when the API cannot be reached, the message says how many alerts were
//! left out and why they are missing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiops_core::alertmanager::Notification;
use aiops_diagnosis::testkit::{Server, start_alertmanager};
use aiops_testkit::tools;
use aiops_webhook::{Advice, Advisor, TestAdvisor};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::support::*;

/// The group label, with characters a filter matcher must escape.
const SERVICE: &str = r#"demo "app" \ eu"#;

/// Gives [`TestAdvisor`]'s canned advice and records the alerts of every notification it is
/// asked about (what the diagnosis sees).
#[derive(Default)]
struct Recording {
    seen: Mutex<Vec<Vec<String>>>,
}

impl Recording {
    fn seen(&self) -> Vec<Vec<String>> {
        self.seen.lock().unwrap().clone()
    }
}

impl Advisor for Recording {
    fn advise(&self, n: &Notification, message_id: &str) -> Option<Advice> {
        let mut names: Vec<String> = n
            .alerts
            .iter()
            .map(|a| format!("{} on {}", a.labels["alertname"], a.labels["instance"]))
            .collect();
        names.sort();
        self.seen.lock().unwrap().push(names);
        Some(TestAdvisor::advice_for(n, message_id, Utc::now()))
    }
}

fn labels(alertname: &str, instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("alertname".to_owned(), alertname.to_owned()),
        ("instance".to_owned(), instance.to_owned()),
        ("service".to_owned(), SERVICE.to_owned()),
        ("severity".to_owned(), "critical".to_owned()),
    ])
}

/// Posts alerts to Alertmanager in one request: `(alertname, instance, firing)`, all started at
/// `started`; a resolved one ends now.
fn post_alerts(am: &Server, started: DateTime<Utc>, alerts: &[(&str, &str, bool)]) {
    let now = Utc::now();
    let body: Vec<Value> = alerts
        .iter()
        .map(|(name, instance, firing)| {
            let mut a = json!({
                "labels": labels(name, instance),
                "annotations": {"summary": format!("{name} on {instance}")},
                "startsAt": started.to_rfc3339(),
                "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=up",
            });
            if !firing {
                a["endsAt"] = Value::from(now.to_rfc3339());
            }
            a
        })
        .collect();
    let resp = client()
        .post(format!("{}/api/v2/alerts", am.url))
        .send_json(Value::from(body))
        .unwrap();
    assert!(
        resp.status().is_success(),
        "POST /api/v2/alerts: {}",
        resp.status()
    );
}

struct Stack {
    // Dropped in this order: the receiver first (Alertmanager may still be posting to it).
    receiver: Receiver,
    am: Server,
    sink: Sink,
    advisor: Arc<Recording>,
    _dir: tempfile::TempDir,
}

/// Alertmanager (receiver `aiops`, `max_alerts: 1`, grouped by service, quick intervals) posting
/// to a receiver that fetches truncated groups from `fetch_from` (this Alertmanager when `None`).
/// `None` when Alertmanager is not installed (after saying so).
fn start(fetch_from: Option<&str>) -> Option<Stack> {
    tools::require(&["prometheus-alertmanager", "alertmanager"])?;
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let rdir = dir.path().join("receiver");
    std::fs::create_dir_all(&rdir).unwrap();
    let config_path = write_config(&rdir, Some(&sink.url()), "");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let am_config = format!(
        "route:\n  receiver: aiops\n  group_by: [service]\n  group_wait: 1s\n  group_interval: 2s\n  repeat_interval: 1h\nreceivers:\n  - name: aiops\n    webhook_configs:\n      - url: \"http://{addr}/\"\n        send_resolved: true\n        max_alerts: 1\n        http_config:\n          authorization:\n            type: Bearer\n            credentials_file: {:?}\n",
        rdir.join("token")
    );
    let am = start_alertmanager(&dir.path().join("am"), &am_config)
        .expect("found above")
        .expect("alertmanager starts");
    let mut config = aiops_core::Config::load(&config_path).unwrap();
    config.alertmanager.url = fetch_from.unwrap_or(&am.url).to_owned();
    let advisor = Arc::new(Recording::default());
    let receiver = Receiver::start_config(
        &rdir,
        config,
        Some(listener),
        advisor.clone(),
        fast_options(),
    );
    Some(Stack {
        receiver,
        am,
        sink,
        advisor,
        _dir: dir,
    })
}

/// The messages at the sink, as their JSON text.
fn messages(sink: &Sink) -> Vec<String> {
    sink.delivered().iter().map(Value::to_string).collect()
}

const A: (&str, &str) = ("HighErrorRatio", "aiops-demo-app:8080");
const B: (&str, &str) = ("HighLatencyP99", "aiops-demo-app:8080");
const C: (&str, &str) = ("HighErrorRatio", "aiops-demo-app:8081");
const D: (&str, &str) = ("HighLatencyP99", "aiops-demo-app:8081");

fn name((alertname, instance): (&str, &str)) -> String {
    format!("{alertname} on {instance}")
}

#[test]
fn a_truncated_group_is_fetched_whole_and_updates_name_who_joined_and_left() {
    let Some(s) = start(None) else { return };
    // Now: Alertmanager 0.3x notifies a group at once, without group_wait, when its first
    // alert started longer ago than group_wait.
    let started = Utc::now();
    post_alerts(
        &s.am,
        started,
        &[(A.0, A.1, true), (B.0, B.1, true), (C.0, C.1, true)],
    );

    wait_until(Duration::from_secs(60), "the firing message", || {
        !s.sink.delivered().is_empty()
    });
    let firing = s.sink.delivered()[0].clone();
    let text = firing.to_string();
    assert!(
        firing["text"]
            .as_str()
            .unwrap()
            .contains("firing (3 alerts)"),
        "{text}"
    );
    // Alertmanager sent one alert; the message lists all three.
    for (alertname, instance) in [A, B, C] {
        assert!(
            text.contains(&format!("alertname={alertname}, instance={instance}")),
            "{alertname} on {instance} is listed: {text}"
        );
    }
    assert!(
        text.contains("the group's alerts were fetched from its API (2 added)"),
        "{text}"
    );
    assert!(!text.contains("truncatedAlerts = 2"), "{text}");
    // The diagnosis saw the whole group.
    let mut all = vec![name(A), name(B), name(C)];
    all.sort();
    assert_eq!(s.advisor.seen(), vec![all]);
    assert_eq!(
        metric(
            s.receiver.addr,
            "aiops_truncated_fetches_total{result=\"ok\"}"
        ),
        1.0
    );

    // D joins and C resolves.
    post_alerts(&s.am, started, &[(D.0, D.1, true), (C.0, C.1, false)]);
    // As Slack's mrkdwn has them.
    let left = format!("*Left (1):* {}.", name(C));
    let joined = format!("*Joined (1):* {}.", name(D));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline
        && !messages(&s.sink).iter().any(|m| m.contains(&left))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let all = messages(&s.sink);
    assert!(
        all.iter().any(|m| m.contains(&left)),
        "an update names C as left: {all:#?}"
    );
    let updates: Vec<&String> = all.iter().skip(1).collect();
    assert!(
        updates.iter().any(|m| m.contains(&joined)),
        "an update names D as joined: {updates:#?}"
    );
    assert!(
        updates.iter().all(|m| m.contains("firing, updated")),
        "{updates:#?}"
    );
    assert!(
        !updates
            .iter()
            .any(|m| m.contains("listed alerts still firing")),
        "{updates:#?}"
    );
    // A and B neither joined nor left.
    for other in [name(A), name(B)] {
        assert!(
            !updates.iter().any(|m| m.contains(&format!(":* {other}"))),
            "{other} is not named as a change: {updates:#?}"
        );
    }
    assert!(
        metric(
            s.receiver.addr,
            "aiops_truncated_fetches_total{result=\"ok\"}"
        ) >= 2.0
    );
    assert_eq!(
        metric(
            s.receiver.addr,
            "aiops_truncated_fetches_total{result=\"error\"}"
        ),
        0.0
    );
}

#[test]
fn when_the_group_cannot_be_fetched_the_message_says_how_many_alerts_are_missing_and_why() {
    // The receiver asks an address where nothing listens.
    let Some(s) = start(Some("http://127.0.0.1:9")) else {
        return;
    };
    let started = Utc::now();
    post_alerts(
        &s.am,
        started,
        &[(A.0, A.1, true), (B.0, B.1, true), (C.0, C.1, true)],
    );
    wait_until(Duration::from_secs(60), "the firing message", || {
        !s.sink.delivered().is_empty()
    });
    let text = s.sink.delivered()[0].to_string();
    assert!(
        text.contains("2 alerts could not be fetched from its API (cannot reach Alertmanager at http://127.0.0.1:9"),
        "{text}"
    );
    assert!(
        text.contains("this message and the diagnosis see only the 1 alert it carried"),
        "{text}"
    );
    assert!(
        text.contains("(2 truncated by Alertmanager, not fetched)"),
        "{text}"
    );
    assert_eq!(s.advisor.seen().len(), 1);
    assert_eq!(s.advisor.seen()[0].len(), 1);
    assert_eq!(
        metric(
            s.receiver.addr,
            "aiops_truncated_fetches_total{result=\"error\"}"
        ),
        1.0
    );
}
