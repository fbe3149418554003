//! What alert text can do to a Slack payload: nothing. Whatever the labels, annotations, alert
//! names, unit names, URLs and the executor's sentences say, the serialized payload holds no
//! mention (`<!channel>`, `<!here>`, `<!everyone>`, `<@U…>`, `<#C…>`) and no link but the ones
//! the renderer makes with its own labels, and the fallback `text` always ends with the message id.

use aiops_core::alertmanager::Notification;
use aiops_webhook::TestAdvisor;
use aiops_webhook::message::{ActionNote, Message, MessageKind, MessageRef};
use aiops_webhook::slack;
use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};

/// The labels the renderer gives its own links.
const OWN_LINK_LABELS: [&str; 3] = ["Alert source (Prometheus)", "Dashboard", "Alertmanager"];

/// Text an attacker would write: Slack's control sequences, pieces of them, entities, markup
/// and plain words, in any order.
fn hostile() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("<!channel>".to_owned()),
        Just("<!here>".to_owned()),
        Just("<!everyone>".to_owned()),
        Just("<!subteam^S012AB>".to_owned()),
        Just("<@U012ABCDEF>".to_owned()),
        Just("<#C012ABCDEF|general>".to_owned()),
        Just("<https://evil.example/x|click here>".to_owned()),
        Just("<http://evil.example>".to_owned()),
        Just("&lt;!channel&gt;".to_owned()),
        Just("&amp;".to_owned()),
        Just("http://a.example/?q=1|x".to_owned()),
        Just("*bold* `code` _it_ ~s~".to_owned()),
        "[<>!@#|&;a-zA-Z0-9:/ .*`_~\n-]{0,12}",
        "\\PC{0,8}",
    ];
    proptest::collection::vec(piece, 0..6).prop_map(|v| v.concat())
}

fn at() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 4, 5).unwrap()
}

/// Everything an alert group may carry, each from `hostile()`.
#[derive(Debug, Clone)]
struct Evil {
    alertname: String,
    service: String,
    unit: String,
    instance: String,
    severity: String,
    extra_key: String,
    extra_value: String,
    summary: String,
    description: String,
    generator_url: String,
    external_url: String,
    actor: String,
    sentence: String,
    long: usize,
}

fn evil() -> impl Strategy<Value = Evil> {
    (
        (hostile(), hostile(), hostile(), hostile(), hostile()),
        ("[a-z_]{1,8}", hostile(), hostile(), hostile()),
        (
            prop_oneof![Just("https://prom.example/g?x=".to_owned()), hostile()],
            hostile(),
        ),
        (hostile(), hostile(), 0usize..3),
    )
        .prop_map(
            |(
                (alertname, service, unit, instance, severity),
                (extra_key, extra_value, summary, description),
                (url_start, url_end),
                (actor, sentence, long),
            )| Evil {
                alertname,
                service,
                unit,
                instance,
                severity,
                extra_key,
                extra_value,
                summary,
                description,
                generator_url: url_start + &url_end,
                external_url: format!("http://am.example/{url_end}"),
                actor,
                sentence,
                long,
            },
        )
}

impl Evil {
    /// Repeats the summary so that `text` must be cut (long = 2) or nearly (long = 1).
    fn summary(&self) -> String {
        match self.long {
            0 => self.summary.clone(),
            1 => format!("{}{}", self.summary, "<!channel>".repeat(250)),
            _ => format!("{}{}", "&<!here>".repeat(700), self.summary),
        }
    }

    fn notification(&self, firing: bool) -> Notification {
        let labels = json!({
            "alertname": self.alertname, "service": self.service, "unit": self.unit,
            "instance": self.instance, "severity": self.severity,
            self.extra_key.clone(): self.extra_value,
        });
        let annotations = json!({"summary": self.summary(), "description": self.description});
        let v = json!({
            "receiver": "aiops",
            "status": if firing { "firing" } else { "resolved" },
            "version": "4",
            "groupKey": "{}:{alertname=\"x\"}",
            "truncatedAlerts": 0,
            "groupLabels": {"alertname": self.alertname},
            "commonLabels": labels,
            "commonAnnotations": annotations,
            "externalURL": self.external_url,
            "alerts": (0..2).map(|i| json!({
                "status": if firing { "firing" } else { "resolved" },
                "labels": {
                    "alertname": self.alertname, "service": self.service, "unit": self.unit,
                    "severity": self.severity, "instance": format!("{}{i}", self.instance),
                    self.extra_key.clone(): self.extra_value,
                },
                "annotations": annotations,
                "startsAt": "2026-11-28T12:03:00Z",
                "endsAt": if firing { "0001-01-01T00:00:00Z" } else { "2026-11-28T12:10:00Z" },
                "generatorURL": self.generator_url,
                "fingerprint": format!("000000000000000{i}"),
            })).collect::<Vec<_>>(),
        });
        Notification::parse(v.to_string().as_bytes()).expect("a valid v4 payload")
    }

    /// One message of every kind for this group.
    fn messages(&self) -> Vec<Message> {
        let firing = self.notification(true);
        let advice = TestAdvisor::advice_for(&firing, "m-1a2b3c4d5e6f", at());
        let base = Message {
            id: "m-1a2b3c4d5e6f".into(),
            kind: MessageKind::Firing,
            created_at: at(),
            notification: firing.clone(),
            advice: Some(advice),
            original: None,
            new_alerts: 2,
            dashboard_url: Some("http://127.0.0.1:3000/d/aiops".into()),
            action: None,
            truncation: None,
            changes: Default::default(),
        };
        let original = MessageRef {
            id: base.id.clone(),
            title: slack::title(&base),
            at: at(),
        };
        let mut update = base.clone();
        update.kind = MessageKind::Update;
        update.new_alerts = 0;
        let mut reminder = base.clone();
        reminder.kind = MessageKind::Reminder;
        reminder.original = Some(original.clone());
        let resolved = Message {
            id: "m-6f5e4d3c2b1a".into(),
            kind: MessageKind::Resolved,
            notification: self.notification(false),
            advice: None,
            original: Some(original.clone()),
            ..base.clone()
        };
        let mut identity = firing;
        identity.alerts.clear();
        let action = |state: &str| Message {
            id: "m-0a0b0c0d0e0f".into(),
            kind: MessageKind::Action,
            notification: identity.clone(),
            advice: None,
            original: Some(original.clone()),
            dashboard_url: None,
            action: Some(ActionNote {
                action_id: "3f9c2a1b".into(),
                state: state.into(),
                action: "restart".into(),
                unit: self.unit.clone(),
                actor: self.actor.clone(),
                text: self.sentence.clone(),
            }),
            ..base.clone()
        };
        let mut all = vec![base.clone(), update, reminder, resolved];
        for state in [
            "approved",
            "succeeded",
            "failed",
            "unconfirmed",
            "rejected",
            "expired",
        ] {
            all.push(action(state));
        }
        all
    }
}

/// Every string in a JSON value.
fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// `Err` with the offending piece if `s` holds a `<…>` sequence other than one of the
/// renderer's own links (`<http(s)://URL|OWN LABEL>`, URL free of `|`, `<`, `>` and spaces), or a
/// stray `>`.
fn only_own_links(s: &str) -> Result<(), String> {
    let mut rest = s;
    while let Some(open) = rest.find(['<', '>']) {
        let tail = &rest[open..];
        if tail.starts_with('>') {
            return Err(format!("a stray '>' at {tail:?}"));
        }
        let close = tail
            .find('>')
            .ok_or_else(|| format!("an unclosed '<' at {tail:?}"))?;
        let inner = &tail[1..close];
        let (url, label) = inner
            .split_once('|')
            .ok_or_else(|| format!("a control sequence {:?}", &tail[..=close]))?;
        let url_ok = (url.starts_with("http://") || url.starts_with("https://"))
            && !url.contains(['<', '|', ' ', '\n']);
        if !url_ok || !OWN_LINK_LABELS.contains(&label) {
            return Err(format!("a forged link {:?}", &tail[..=close]));
        }
        rest = &tail[close + 1..];
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// No alert text produces a mention or a link anywhere in the payload, and the fallback
    /// `text` always ends with the message id within Slack's limit.
    #[test]
    fn slack_no_alert_text_can_mention_or_link(e in evil()) {
        for m in e.messages() {
            let p = slack::slack_payload(&m);
            let serialized = p.to_string();
            for token in ["<!channel", "<!here", "<!everyone", "<!subteam", "<@", "<#"] {
                prop_assert!(!serialized.contains(token), "{token} in {:?}: {serialized}", m.kind);
            }
            let mut all = Vec::new();
            strings(&p, &mut all);
            for s in all {
                if let Err(problem) = only_own_links(s) {
                    prop_assert!(false, "{problem} in {:?} message: {s:?}", m.kind);
                }
            }
            let text = p["text"].as_str().unwrap();
            let id = format!("[{}]", m.id);
            prop_assert!(text.ends_with(&id), "the id is cut off: {text:?}");
            prop_assert!(text.chars().count() <= slack::SECTION_MAX);
            let header = p["blocks"][0]["text"]["text"].as_str().unwrap();
            prop_assert!(header.chars().count() <= slack::HEADER_MAX);
        }
    }

    /// The escape never lets `<`, `>` through and Slack's unescaping gives the text back.
    #[test]
    fn slack_escape_round_trips(s in hostile()) {
        let e = slack::escape(&s);
        prop_assert!(!e.contains(['<', '>']));
        let back = e.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&");
        prop_assert_eq!(back, s);
    }
}

#[test]
fn slack_a_long_summary_keeps_the_message_id_in_the_text() {
    let e = Evil {
        alertname: "HighErrorRatio".into(),
        service: "aiops-demo-app".into(),
        unit: "aiops-demo-app.service".into(),
        instance: "host".into(),
        severity: "critical".into(),
        extra_key: "job".into(),
        extra_value: "aiops-demo-app".into(),
        summary: "error ratio 23% <!channel> ".repeat(200),
        description: String::new(),
        generator_url: "http://127.0.0.1:9090/graph".into(),
        external_url: "http://127.0.0.1:9093".into(),
        actor: "alice".into(),
        sentence: "verified".into(),
        long: 0,
    };
    let m = &e.messages()[0];
    let p = slack::slack_payload(m);
    let text = p["text"].as_str().unwrap();
    assert!(text.ends_with(" [m-1a2b3c4d5e6f]"), "{text}");
    assert!(text.contains("…"), "cut visibly: {text}");
    assert!(!text.contains("<!channel>"), "{text}");
    assert!(text.contains("&lt;!channel&gt;"), "{text}");
    // The section cuts the bold summary but keeps its start, closed.
    let section = p["blocks"][1]["text"]["text"].as_str().unwrap();
    let (kept, marker) = section.split_once('\n').unwrap();
    assert!(
        kept.starts_with("*error ratio 23% &lt;!channel&gt; ") && kept.ends_with('*'),
        "{section}"
    );
    assert!(marker.starts_with("… (cut, "), "{section}");
}

/// The whole path with a real Alertmanager: an alert pushed to its API (as anyone who can reach
/// it may) with Slack control sequences in its name, labels and annotations reaches the Slack
/// sink through the receiver defused, and the message id ends the fallback text.
#[test]
fn slack_hostile_alert_text_through_real_alertmanager_pages_nobody() {
    use aiops_diagnosis::testkit::{post_alert, start_alertmanager};
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::support::{Receiver, Sink, wait_until};

    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    std::fs::create_dir_all(dir.path().join("receiver")).unwrap();
    let receiver = Receiver::start(
        &dir.path().join("receiver"),
        Some(&sink.url()),
        Arc::new(TestAdvisor::default()),
    );
    let config = format!(
        "route:\n  receiver: aiops\n  group_by: [alertname, service]\n  group_wait: 1s\n  group_interval: 5s\n  repeat_interval: 1h\nreceivers:\n  - name: aiops\n    webhook_configs:\n      - url: \"http://{}/\"\n        http_config:\n          authorization:\n            type: Bearer\n            credentials_file: {:?}\n",
        receiver.addr,
        dir.path().join("receiver/token")
    );
    let Some(am) = start_alertmanager(&dir.path().join("am"), &config) else {
        eprintln!("SKIPPED: alertmanager is not on PATH (apt-get install prometheus-alertmanager)");
        return;
    };
    let am = am.expect("alertmanager starts");
    let labels = BTreeMap::from([
        ("alertname".to_owned(), "Pager<!here>".to_owned()),
        (
            "service".to_owned(),
            "<@U0123ABCD> <#C0123ABCD|general>".to_owned(),
        ),
        ("severity".to_owned(), "critical".to_owned()),
        (
            "unit".to_owned(),
            "<https://evil.example/|aiops-demo-app.service>".to_owned(),
        ),
    ]);
    let annotations = BTreeMap::from([
        (
            "summary".to_owned(),
            format!(
                "<!channel> {}",
                "<https://evil.example/login|log in here> ".repeat(120)
            ),
        ),
        (
            "description".to_owned(),
            "<!everyone> & <!subteam^S0123>".to_owned(),
        ),
    ]);
    post_alert(&am.url, &labels, &annotations, chrono::Utc::now()).unwrap();
    wait_until(
        Duration::from_secs(60),
        "the hostile alert's message at the Slack sink",
        || !sink.delivered().is_empty(),
    );
    let p = sink.delivered()[0].clone();
    let serialized = p.to_string();
    for token in [
        "<!channel",
        "<!here",
        "<!everyone",
        "<!subteam",
        "<@",
        "<#",
        "<https://evil",
    ] {
        assert!(!serialized.contains(token), "{token} in {serialized}");
    }
    let mut all = Vec::new();
    strings(&p, &mut all);
    for s in all {
        only_own_links(s).unwrap_or_else(|problem| panic!("{problem}: {s:?}"));
    }
    let text = p["text"].as_str().unwrap();
    assert!(text.contains("&lt;!channel&gt;"), "{text}");
    let id = text.rsplit_once(" [").map(|(_, id)| id).unwrap_or("");
    assert!(
        id.starts_with("m-") && id.ends_with(']') && text.chars().count() <= slack::SECTION_MAX,
        "the message id ends the cut text: {text}"
    );
}
