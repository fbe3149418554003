//! The same notification never produces a second message; changes and resolutions do, in
//! order per group, even while advice is being computed.

use std::sync::Arc;
use std::time::Duration;

use aiops_webhook::{NoAdvisor, Options, TestAdvisor};

use crate::support::*;

fn message_id(body: &serde_json::Value) -> String {
    let text = body["text"].as_str().unwrap();
    text.rsplit('[')
        .next()
        .unwrap()
        .trim_end_matches(']')
        .to_owned()
}

#[test]
fn five_identical_posts_make_one_message_and_resolution_one_follow_up() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let r = Receiver::start(dir.path(), Some(&sink.url()), Arc::new(NoAdvisor));
    let firing = payload("HighErrorRatio", &[alert("aaa")]);
    for _ in 0..5 {
        assert_eq!(post(r.addr, &firing).status, 200);
    }
    wait_until(Duration::from_secs(10), "the firing message", || {
        sink.delivered().len() == 1
    });
    wait_until(Duration::from_secs(10), "all five to be processed", || {
        metric(
            r.addr,
            "aiops_notifications_suppressed_total{reason=\"duplicate\"}",
        ) == 4.0
    });
    let resolved = payload("HighErrorRatio", &[alert("aaa").resolved()]);
    for _ in 0..3 {
        assert_eq!(post(r.addr, &resolved).status, 200);
    }
    wait_until(Duration::from_secs(10), "the follow-up", || {
        sink.delivered().len() == 2
    });
    wait_until(
        Duration::from_secs(10),
        "all resolved posts to be processed",
        || {
            metric(
                r.addr,
                "aiops_notifications_suppressed_total{reason=\"duplicate\"}",
            ) == 6.0
        },
    );
    let d = sink.delivered();
    assert_eq!(d.len(), 2, "{d:#?}");
    let original = message_id(&d[0]);
    assert!(
        d[0]["text"]
            .as_str()
            .unwrap()
            .contains("HighErrorRatio firing")
    );
    assert!(
        d[1]["text"]
            .as_str()
            .unwrap()
            .contains("HighErrorRatio resolved")
    );
    let follow_up = d[1].to_string();
    assert!(
        follow_up.contains(&format!("Resolves message `{original}`")),
        "{follow_up}"
    );
    assert!(
        follow_up.contains("HighErrorRatio firing"),
        "quotes the original title: {follow_up}"
    );
    assert_eq!(
        metric(
            r.addr,
            "aiops_notifications_received_total{status=\"firing\"}"
        ),
        5.0
    );
    assert_eq!(
        metric(
            r.addr,
            "aiops_notifications_received_total{status=\"resolved\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(
            r.addr,
            "aiops_slack_deliveries_total{outcome=\"delivered\"}"
        ),
        2.0
    );
    // Restarting does not re-send anything.
    r.stop().unwrap();
    let r = Receiver::start(dir.path(), Some(&sink.url()), Arc::new(NoAdvisor));
    assert_eq!(post(r.addr, &resolved).status, 200);
    wait_until(
        Duration::from_secs(10),
        "the re-sent resolution to be processed",
        || {
            metric(
                r.addr,
                "aiops_notifications_suppressed_total{reason=\"duplicate\"}",
            ) == 1.0
        },
    );
    assert_eq!(sink.delivered().len(), 2);
}

#[test]
fn a_group_that_gains_alerts_gets_an_update() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let r = Receiver::start(dir.path(), Some(&sink.url()), Arc::new(NoAdvisor));
    post(r.addr, &payload("HighLatencyP99", &[alert("a")]));
    post(
        r.addr,
        &payload("HighLatencyP99", &[alert("a"), alert("b")]),
    );
    post(
        r.addr,
        &payload("HighLatencyP99", &[alert("a"), alert("b")]),
    );
    post(
        r.addr,
        &payload(
            "HighLatencyP99",
            &[alert("a").resolved(), alert("b").resolved()],
        ),
    );
    wait_until(Duration::from_secs(10), "three messages", || {
        sink.delivered().len() == 3
    });
    let texts = sink.texts();
    assert!(texts[0].contains("HighLatencyP99 firing"), "{texts:?}");
    assert!(texts[1].contains("firing, updated (2 alerts)"), "{texts:?}");
    assert!(
        sink.delivered()[1]
            .to_string()
            .contains("*Joined (1):* HighLatencyP99 on host-b."),
        "the update names the alert that joined: {:?}",
        sink.delivered()[1]
    );
    assert!(texts[2].contains("HighLatencyP99 resolved"), "{texts:?}");
}

#[test]
fn reminders_are_optional() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let options = Options {
        reminder_interval: Some(Duration::ZERO),
        ..fast_options()
    };
    let r = Receiver::start_with(dir.path(), Some(&sink.url()), Arc::new(NoAdvisor), options);
    let firing = payload("HighCpuUsage", &[alert("c")]);
    post(r.addr, &firing);
    post(r.addr, &firing);
    wait_until(Duration::from_secs(10), "firing + reminder", || {
        sink.delivered().len() == 2
    });
    assert!(
        sink.texts()[1].contains("HighCpuUsage still firing (reminder)"),
        "{:?}",
        sink.texts()
    );
}

#[test]
fn a_resolution_waits_for_the_firing_advice_while_other_groups_go_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let advisor = Arc::new(TestAdvisor::with_delay(Duration::from_millis(800)));
    let r = Receiver::start(dir.path(), Some(&sink.url()), advisor.clone());
    assert_eq!(post(r.addr, &payload("Slow", &[alert("s")])).status, 200);
    assert_eq!(
        post(r.addr, &payload("Slow", &[alert("s").resolved()])).status,
        200
    );
    // A resolution for a group never seen needs no advice and is not held up by "Slow".
    assert_eq!(
        post(r.addr, &payload("Other", &[alert("o").resolved()])).status,
        200
    );
    wait_until(Duration::from_secs(10), "three messages", || {
        sink.delivered().len() == 3
    });
    let texts = sink.texts();
    assert!(
        texts[0].contains("Other resolved"),
        "other groups are not blocked: {texts:?}"
    );
    assert!(texts[1].contains("Slow firing"), "{texts:?}");
    assert!(texts[2].contains("Slow resolved"), "{texts:?}");
    let firing = sink.delivered()[1].to_string();
    assert!(
        firing.contains("aiops approve a-"),
        "the advice is in the firing message: {firing}"
    );
    wait_until(
        Duration::from_secs(5),
        "the advisor to hear of the resolution",
        || {
            advisor.calls().iter().any(|c| {
                c.starts_with("resolved {}:{alertname=\\\"Slow\\\"}")
                    || c.starts_with("resolved {}:{alertname=\"Slow\"}")
            })
        },
    );
    assert_eq!(
        advisor
            .calls()
            .iter()
            .filter(|c| c.starts_with("advise"))
            .count(),
        1,
        "{:?}",
        advisor.calls()
    );
}

#[test]
fn losing_the_journal_or_the_state_directory_does_not_stall_processing() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let r = Receiver::start(dir.path(), Some(&sink.url()), Arc::new(NoAdvisor));
    for i in 0..5 {
        post(r.addr, &payload(&format!("Before{i}"), &[alert("x")]));
    }
    wait_until(Duration::from_secs(10), "five messages", || {
        sink.delivered().len() == 5
    });
    r.stop().unwrap();
    // The journal removed by hand: new records must not reuse sequence numbers already done.
    std::fs::remove_dir_all(dir.path().join("state/webhook/journal")).unwrap();
    let r = Receiver::start(dir.path(), Some(&sink.url()), Arc::new(NoAdvisor));
    post(r.addr, &payload("AfterJournalLoss", &[alert("y")]));
    wait_until(
        Duration::from_secs(10),
        "the message after the journal loss",
        || sink.delivered().len() == 6,
    );
    r.stop().unwrap();
    // The state removed by hand: whatever the journal still holds is processed again from its
    // first record, and new notifications flow.
    std::fs::remove_dir_all(dir.path().join("state/webhook/state")).unwrap();
    let r = Receiver::start(dir.path(), Some(&sink.url()), Arc::new(NoAdvisor));
    post(r.addr, &payload("AfterStateLoss", &[alert("z")]));
    wait_until(
        Duration::from_secs(10),
        "the message after the state loss",
        || sink.texts().iter().any(|t| t.contains("AfterStateLoss")),
    );
}
