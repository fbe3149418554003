//! The Slack payloads people see, pinned: firing (with a diagnosis and a proposed action),
//! resolved (referring to the original), and a truncated group with content cut visibly.

use aiops_core::alertmanager::Notification;
use aiops_webhook::TestAdvisor;
use aiops_webhook::message::{Changes, Message, MessageKind, MessageRef, Truncation};
use aiops_webhook::slack;
use chrono::{TimeZone, Utc};
use serde_json::Value;

use crate::support::*;

fn at() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 4, 5).unwrap()
}

fn notification(v: &Value) -> Notification {
    Notification::parse(v.to_string().as_bytes()).unwrap()
}

fn firing() -> Message {
    let n = notification(&payload("HighErrorRatio", &[alert("0123456789abcdef")]));
    let advice = TestAdvisor::advice_for(&n, "m-1a2b3c4d5e6f", at());
    Message {
        id: "m-1a2b3c4d5e6f".into(),
        kind: MessageKind::Firing,
        created_at: at(),
        notification: n,
        advice: Some(advice),
        original: None,
        new_alerts: 1,
        dashboard_url: Some("http://127.0.0.1:3000/d/aiops/aiops-demo".into()),
        action: None,
        truncation: None,
        changes: Default::default(),
    }
}

/// Every block stays within Slack's limits.
fn assert_within_limits(p: &Value) {
    let blocks = p["blocks"].as_array().unwrap();
    assert!(blocks.len() <= slack::BLOCKS_MAX);
    for b in blocks {
        match b["type"].as_str().unwrap() {
            "header" => {
                assert!(b["text"]["text"].as_str().unwrap().chars().count() <= slack::HEADER_MAX);
            }
            "section" => {
                if let Some(t) = b["text"]["text"].as_str() {
                    assert!(
                        t.chars().count() <= slack::SECTION_MAX,
                        "{} chars",
                        t.chars().count()
                    );
                }
                for f in b["fields"].as_array().into_iter().flatten() {
                    assert!(f["text"].as_str().unwrap().chars().count() <= slack::FIELD_MAX);
                }
            }
            _ => {}
        }
    }
}

#[test]
fn firing_with_diagnosis_and_action() {
    let m = firing();
    let p = slack::slack_payload(&m);
    assert_within_limits(&p);
    insta::assert_json_snapshot!("firing", p);
    insta::assert_snapshot!("firing_plain", slack::plain_text(&m));
}

#[test]
fn resolved_refers_to_the_original() {
    let n = notification(&payload(
        "HighErrorRatio",
        &[alert("0123456789abcdef").resolved()],
    ));
    let original = firing();
    let m = Message {
        id: "m-6f5e4d3c2b1a".into(),
        kind: MessageKind::Resolved,
        created_at: at() + chrono::Duration::minutes(7),
        notification: n,
        advice: None,
        original: Some(MessageRef {
            id: original.id.clone(),
            title: slack::title(&original),
            at: original.created_at,
        }),
        new_alerts: 0,
        dashboard_url: original.dashboard_url.clone(),
        action: None,
        truncation: None,
        changes: Default::default(),
    };
    let p = slack::slack_payload(&m);
    assert_within_limits(&p);
    insta::assert_json_snapshot!("resolved", p);
}

#[test]
fn an_action_outcome_follows_up_on_the_alert() {
    let original = firing();
    let mut identity = original.notification.clone();
    identity.alerts.clear();
    let m = Message {
        id: "m-0a0b0c0d0e0f".into(),
        kind: MessageKind::Action,
        created_at: at() + chrono::Duration::minutes(3),
        notification: identity,
        advice: None,
        original: Some(MessageRef {
            id: original.id.clone(),
            title: slack::title(&original),
            at: original.created_at,
        }),
        new_alerts: 0,
        dashboard_url: None,
        action: Some(aiops_webhook::message::ActionNote {
            action_id: "3f9c2a1b".into(),
            state: "succeeded".into(),
            action: "restart".into(),
            unit: "aiops-demo-app.service".into(),
            actor: "aiops-webhook".into(),
            text: "verified: error ratio back to 0.2% 35 s after the restart".into(),
        }),
        truncation: None,
        changes: Default::default(),
    };
    let p = slack::slack_payload(&m);
    assert_within_limits(&p);
    insta::assert_json_snapshot!("action_succeeded", p);
    let text = slack::plain_text(&m);
    assert!(
        text.contains("restart of aiops-demo-app.service verified"),
        "{text}"
    );
    assert!(text.contains("error ratio back to 0.2%"), "{text}");
    assert!(text.contains(&original.id), "{text}");
}

#[test]
fn a_truncated_group_is_cut_visibly() {
    let alerts: Vec<A> = (0..25).map(|i| alert(&format!("fp{i:02}"))).collect();
    let mut v = payload(&"VeryLongAlertName".repeat(12), &alerts);
    v["truncatedAlerts"] = Value::from(40);
    v["commonAnnotations"]["description"] =
        Value::from("A description that goes on and on. ".repeat(120));
    v["commonLabels"]["service"] = Value::from("<!channel> *bold* & <http://evil|click>");
    let n = notification(&v);
    let m = Message {
        id: "m-777777777777".into(),
        kind: MessageKind::Firing,
        created_at: at(),
        notification: n,
        advice: None,
        original: None,
        new_alerts: 25,
        dashboard_url: None,
        action: None,
        truncation: None,
        changes: Default::default(),
    };
    let p = slack::slack_payload(&m);
    assert_within_limits(&p);
    let text = p.to_string();
    assert!(
        text.contains("… and 55 more (40 truncated by Alertmanager: truncatedAlerts = 40)"),
        "{text}"
    );
    assert!(text.contains("characters more)"), "{text}");
    assert!(!text.contains("<!channel>"), "labels are escaped: {text}");
    insta::assert_json_snapshot!("truncated", p);
}

#[test]
fn advice_given_again_after_the_store_refused_the_action() {
    let original = firing();
    let mut refused = firing();
    refused.advice.as_mut().unwrap().proposal = aiops_webhook::Proposal::Retry {
        reason: "the action could not be stored (cannot write /var/lib/aiops/actions/.a-1.tmp: No space left on device (os error 28)); the receiver diagnoses this alert again while it fires and posts the command to approve here once the action is stored".into(),
    };
    let p = slack::slack_payload(&refused);
    assert_within_limits(&p);
    insta::assert_snapshot!("firing_store_refused_plain", slack::plain_text(&refused));
    let m = Message {
        id: "m-0a1b2c3d4e5f".into(),
        kind: MessageKind::Advice,
        created_at: at() + chrono::Duration::minutes(3),
        original: Some(MessageRef {
            id: original.id.clone(),
            title: slack::title(&original),
            at: original.created_at,
        }),
        new_alerts: 0,
        ..firing()
    };
    let p = slack::slack_payload(&m);
    assert_within_limits(&p);
    insta::assert_snapshot!("advice_again_plain", slack::plain_text(&m));
}

/// A notification Alertmanager truncated, completed from its API: the update names the alerts
/// that joined and left, and says what was fetched.
#[test]
fn an_update_of_a_fetched_group_names_who_joined_and_left() {
    let original = firing();
    let mut v = payload(
        "HighLatencyP99",
        &[
            alert("0123456789abcdef"),
            alert("1123456789abcdef"),
            alert("2123456789abcdef"),
        ],
    );
    v["alerts"][2]["labels"]["instance"] = Value::from("aiops-demo-app:8080");
    let m = Message {
        id: "m-5a5a5a5a5a5a".into(),
        kind: MessageKind::Update,
        created_at: at() + chrono::Duration::minutes(2),
        notification: notification(&v),
        advice: None,
        original: Some(MessageRef {
            id: original.id.clone(),
            title: slack::title(&original),
            at: original.created_at,
        }),
        new_alerts: 1,
        dashboard_url: None,
        action: None,
        truncation: Some(Truncation {
            truncated: 3,
            fetched: 2,
            error: None,
        }),
        changes: Changes::new(
            vec!["HighLatencyP99 on aiops-demo-app:8080".into()],
            vec![
                "HighLatencyP99 on host-9:8080".into(),
                "HighLatencyP99 on <!channel>".into(),
            ],
        ),
    };
    let p = slack::slack_payload(&m);
    assert_within_limits(&p);
    let text = p.to_string();
    assert!(
        text.contains("*Joined (1):* HighLatencyP99 on aiops-demo-app:8080."),
        "{text}"
    );
    assert!(!text.contains("<!channel>"), "names are escaped: {text}");
    insta::assert_json_snapshot!("update_joined_left", p);
    insta::assert_snapshot!("update_joined_left_plain", slack::plain_text(&m));
}

/// A truncated notification whose group could not be fetched says how many alerts are missing
/// and why.
#[test]
fn a_truncated_group_that_could_not_be_fetched_says_so() {
    let mut v = payload("HighErrorRatio", &[alert("0123456789abcdef")]);
    v["truncatedAlerts"] = Value::from(2);
    let m = Message {
        id: "m-6b6b6b6b6b6b".into(),
        truncation: Some(Truncation {
            truncated: 2,
            fetched: 0,
            error: Some(
                "cannot reach Alertmanager at http://127.0.0.1:9093: io: Connection refused (os error 111)"
                    .into(),
            ),
        }),
        notification: notification(&v),
        advice: None,
        ..firing()
    };
    let p = slack::slack_payload(&m);
    assert_within_limits(&p);
    insta::assert_snapshot!("truncated_not_fetched_plain", slack::plain_text(&m));
}

/// A unit snapshot from output recorded on a real host (myapp OOM-killed, then dumping core),
/// with one journal line of hostile text as its newest error.
fn recorded_unit() -> aiops_core::model::UnitSnapshot {
    let now = Utc.with_ymd_and_hms(2026, 12, 2, 3, 5, 0).unwrap();
    let mut snap = aiops_diagnosis::testkit::recorded_unit_snapshot(now);
    let j = snap.journal.as_mut().unwrap();
    j.last_errors.push(aiops_core::model::JournalLine {
        at: Some(now),
        priority: Some(3),
        source: Some("myapp".into()),
        text: "panic: <!channel> see <https://evil.example|the fix> & `rm -rf`".into(),
        truncated: false,
        from_systemd: false,
    });
    snap
}

fn firing_with_unit(journal_excerpt: bool) -> Message {
    let mut m = firing();
    let advice = m.advice.as_mut().unwrap();
    advice.diagnosis.evidence.unit = Some(recorded_unit());
    advice.diagnosis = aiops_webhook::gate::for_messages(advice.diagnosis.clone(), journal_excerpt);
    m
}

/// Slack gets the unit's state, the journal's counts and its 3 newest error lines, every one
/// through the one escape; `aiops show` is named for the rest.
#[test]
fn firing_with_the_units_systemd_evidence() {
    let whole = recorded_unit();
    assert!(whole.journal.as_ref().unwrap().last_errors.len() > 3);
    let m = firing_with_unit(true);
    let j = m
        .advice
        .as_ref()
        .unwrap()
        .diagnosis
        .evidence
        .unit
        .as_ref()
        .unwrap();
    assert_eq!(j.journal.as_ref().unwrap().last_errors.len(), 3);
    let p = slack::slack_payload(&m);
    assert_within_limits(&p);
    let text = p.to_string();
    assert!(
        !text.contains("<!channel>") && !text.contains("<https://evil"),
        "{text}"
    );
    assert!(text.contains("&lt;!channel&gt;"), "{text}");
    assert!(text.contains("assertion failed: index &lt; len"), "{text}");
    // The fourth newest line is not posted.
    assert!(!text.contains("E xxxx"), "{text}");
    insta::assert_json_snapshot!("firing_unit", p);
    insta::assert_snapshot!("firing_unit_plain", slack::plain_text(&m));
}

/// `slack.journal_excerpt = false`: the counts stay, no journal line reaches Slack.
#[test]
fn firing_with_the_units_evidence_but_no_journal_lines() {
    let m = firing_with_unit(false);
    let p = slack::slack_payload(&m);
    let text = p.to_string();
    assert!(
        text.contains("4 errors, 4 warnings, 2 OOM kills, 3 core dumps"),
        "{text}"
    );
    for line in &recorded_unit().journal.as_ref().unwrap().last_errors {
        let start: String = line.text.chars().take(20).collect();
        assert!(
            !text.contains(&slack::escape(&start)),
            "{start:?} in {text}"
        );
    }
    assert!(!text.contains("Last error lines"), "{text}");
    insta::assert_snapshot!("firing_unit_no_excerpt_plain", slack::plain_text(&m));
}

#[test]
fn slack_journal_excerpt_is_on_unless_set_off() {
    let p = std::path::Path::new("t.toml");
    assert!(
        aiops_core::Config::from_toml("", p)
            .unwrap()
            .slack
            .journal_excerpt
    );
    let off = aiops_core::Config::from_toml("[slack]\njournal_excerpt = false\n", p).unwrap();
    assert!(!off.slack.journal_excerpt);
    // It survives the rendered configuration (what `aiops config show` prints).
    let back = aiops_core::Config::from_toml(&off.to_toml(), p).unwrap();
    assert!(!back.slack.journal_excerpt);
}
