//! Slack outages lose nothing and keep per-group order; 429 is honoured (seconds or an HTTP
//! date) without lengthening the failure backoff; a one-minute outage is delivered before the
//! stuck-outbox alert fires; permanent 4xx are dead-lettered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aiops_webhook::NoAdvisor;

use crate::support::*;

#[test]
fn an_outage_then_recovery_loses_nothing_and_keeps_group_order() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let r = Receiver::start(dir.path(), Some(&sink.url()), Arc::new(NoAdvisor));
    sink.outage(Behavior::ServerError);
    let groups = ["G1", "G2", "G3"];
    for g in groups {
        assert_eq!(post(r.addr, &payload(g, &[alert(g)])).status, 200);
    }
    // Mixed failures while the outage lasts: 500s, then timeouts (slack.timeout_secs = 2).
    wait_until(Duration::from_secs(10), "retries during the outage", || {
        metric(r.addr, "aiops_slack_deliveries_total{outcome=\"retried\"}") >= 3.0
    });
    for g in groups {
        assert_eq!(
            post(r.addr, &payload(g, &[alert(g), alert(&format!("{g}b"))])).status,
            200
        );
        assert_eq!(
            post(
                r.addr,
                &payload(
                    g,
                    &[alert(g).resolved(), alert(&format!("{g}b")).resolved()]
                )
            )
            .status,
            200
        );
    }
    sink.outage(Behavior::Hang(Duration::from_secs(3)));
    wait_until(Duration::from_secs(10), "a timed-out attempt", || {
        sink.seen().iter().any(|s| s.answered == "hang")
    });
    wait_until(Duration::from_secs(10), "the outbox to fill", || {
        metric(r.addr, "aiops_outbox_depth") == 9.0
    });
    assert!(metric(r.addr, "aiops_outbox_oldest_age_seconds") > 0.0);
    assert!(sink.delivered().is_empty());
    sink.recover();
    wait_until(
        Duration::from_secs(20),
        "every message after recovery",
        || sink.delivered().len() == 9,
    );
    let texts = sink.texts();
    for g in groups {
        let mine: Vec<&String> = texts
            .iter()
            .filter(|t| t.contains(&format!("{g} ")))
            .collect();
        assert_eq!(mine.len(), 3, "{g}: {texts:?}");
        assert!(mine[0].contains(&format!("{g} firing")), "{mine:?}");
        assert!(mine[1].contains("updated"), "{mine:?}");
        assert!(mine[2].contains("resolved"), "{mine:?}");
    }
    assert_eq!(metric(r.addr, "aiops_outbox_depth"), 0.0);
    assert_eq!(
        metric(r.addr, "aiops_slack_deliveries_total{outcome=\"dropped\"}"),
        0.0
    );
}

#[test]
fn retry_after_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let r = Receiver::start(dir.path(), Some(&sink.url()), Arc::new(NoAdvisor));
    sink.script([Behavior::RateLimited(2)]);
    assert_eq!(post(r.addr, &payload("Limited", &[alert("l")])).status, 200);
    wait_until(
        Duration::from_secs(10),
        "the delivery after the rate limit",
        || sink.delivered().len() == 1,
    );
    let seen = sink.seen();
    assert_eq!(seen.len(), 2, "one 429, then one success");
    assert_eq!(seen[0].answered, "429");
    let waited = seen[1].at - seen[0].at;
    // max_backoff_secs is 1 in tests, so only Retry-After explains a 2 s wait.
    assert!(
        waited >= Duration::from_millis(1900),
        "retried after {waited:?}"
    );
}

/// A receiver delivering to `sink`, retries capped at `max_backoff_secs` (`None`: the default).
fn receiver_with_backoff(
    dir: &std::path::Path,
    sink: &Sink,
    options: aiops_webhook::Options,
    max_backoff_secs: Option<u64>,
) -> Receiver {
    Receiver::start_with_backoff(
        dir,
        Some(&sink.url()),
        Arc::new(NoAdvisor),
        options,
        max_backoff_secs,
    )
}

/// Posts one notification of group `group`, waits (up to `within`) for its delivery and
/// returns every request the sink saw.
fn seen_once_delivered(
    r: &Receiver,
    sink: &Sink,
    group: &str,
    within: Duration,
) -> Vec<aiops_testkit::slack::Seen> {
    assert_eq!(post(r.addr, &payload(group, &[alert(group)])).status, 200);
    wait_until(within, "the delivery after the rate limits", || {
        sink.delivered().len() == 1
    });
    sink.seen()
}

#[test]
fn retry_after_as_an_http_date_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let r = Receiver::start(dir.path(), Some(&sink.url()), Arc::new(NoAdvisor));
    sink.script([Behavior::RateLimitedUntil(Duration::from_secs(3))]);
    let seen = seen_once_delivered(&r, &sink, "Dated", Duration::from_secs(10));
    assert_eq!(seen.len(), 2, "one 429, then one success");
    let waited = seen[1].at - seen[0].at;
    // The date has whole seconds: 3 s ahead is at least 2 s ahead; backoff alone is under 1 s.
    assert!(
        waited >= Duration::from_millis(1900),
        "retried after {waited:?}"
    );
}

#[test]
fn rate_limiting_does_not_lengthen_the_backoff_of_the_next_failure() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    // Backoff from 50 ms, capped at 60 s: had the ten 429s raised the exponent, the 500 after
    // them would wait 50 ms × 2^10 ≈ 51 s (at least half of it).
    let r = receiver_with_backoff(dir.path(), &sink, fast_options(), Some(60));
    sink.script(std::iter::repeat_n(Behavior::RateLimited(0), 10).chain([Behavior::ServerError]));
    let seen = seen_once_delivered(&r, &sink, "Burst", Duration::from_secs(30));
    assert_eq!(seen.len(), 12, "ten 429s, one 500, one success");
    assert_eq!(seen[10].answered, "500");
    let waited = seen[11].at - seen[10].at;
    assert!(
        waited < Duration::from_secs(2),
        "the first failure after the burst waited {waited:?}"
    );
}

/// The worst case the delivery module states, with the shipped settings: an outage of up to
/// 80 s never lets the oldest message reach `AiopsOutboxStuck`'s threshold.
#[test]
fn the_worst_case_after_a_short_outage_stays_under_the_stuck_outbox_threshold() {
    let config = aiops_core::Config::default();
    let backoff = aiops_webhook::delivery::Backoff {
        initial: aiops_webhook::Options::default().initial_backoff,
        max: Duration::from_secs(config.slack.max_backoff_secs),
    };
    let attempt = Duration::from_secs(config.slack.timeout_secs);
    let threshold = Duration::from_secs_f64(aiops_assets::floor::OUTBOX_STUCK_THRESHOLD_SECS);
    for outage in [1, 10, 30, 60, 80] {
        let outage = Duration::from_secs(outage);
        let worst = aiops_webhook::delivery::worst_case_wait(backoff, attempt, outage);
        assert!(
            worst <= outage + attempt + backoff.max && worst < threshold,
            "after an outage of {outage:?} the oldest message may wait {worst:?}"
        );
    }
}

/// A one-minute Slack outage, half rate limiting and half 5xx, with the shipped backoff: the
/// oldest message is delivered before it is two minutes old (what `AiopsOutboxStuck` alerts on).
#[test]
fn a_one_minute_outage_with_rate_limits_is_delivered_before_the_outbox_counts_as_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let r = receiver_with_backoff(dir.path(), &sink, aiops_webhook::Options::default(), None);
    sink.outage(Behavior::RateLimited(1));
    let posted = Instant::now();
    // The outage (30 s of 429, then 30 s of 500) runs on its own thread while the test waits.
    let outage = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_secs(30));
            sink.outage(Behavior::ServerError);
            std::thread::sleep(Duration::from_secs(30));
            sink.recover();
        });
        seen_once_delivered(&r, &sink, "Outage", Duration::from_secs(400))
    });
    let delivered_at = outage.last().unwrap().at;
    let waited = delivered_at - posted;
    eprintln!("oldest message waited {waited:?} after a 60 s outage (30 s of 429, 30 s of 500)");
    let threshold = Duration::from_secs_f64(aiops_assets::floor::OUTBOX_STUCK_THRESHOLD_SECS);
    assert!(waited < threshold, "the oldest message waited {waited:?}");
}

#[test]
fn a_permanent_400_is_dead_lettered_and_the_next_message_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let r = Receiver::start(dir.path(), Some(&sink.url()), Arc::new(NoAdvisor));
    sink.script([Behavior::InvalidBlocks]);
    post(r.addr, &payload("Rejected", &[alert("x")]));
    post(r.addr, &payload("Next", &[alert("y")]));
    wait_until(Duration::from_secs(10), "the next message", || {
        sink.delivered().len() == 1
    });
    assert!(sink.texts()[0].contains("Next firing"));
    assert_eq!(
        metric(r.addr, "aiops_slack_deliveries_total{outcome=\"dropped\"}"),
        1.0
    );
    let dead =
        std::fs::read_to_string(dir.path().join("state/webhook/state/dead-letter.jsonl")).unwrap();
    assert_eq!(dead.lines().count(), 1);
    let rec: serde_json::Value = serde_json::from_str(dead.lines().next().unwrap()).unwrap();
    assert!(
        rec["reason"].as_str().unwrap().contains("invalid_blocks"),
        "{rec}"
    );
    // The message as Slack refused it: rendered, with its id.
    assert!(
        rec["message"]["slack"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("Rejected")),
        "{rec}"
    );
    assert!(
        rec["message"]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("m-")),
        "{rec}"
    );
    // Not retried after a restart either.
    r.stop().unwrap();
    let _r = Receiver::start(dir.path(), Some(&sink.url()), Arc::new(NoAdvisor));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.seen().len(), 2);
}

#[test]
fn without_a_slack_url_messages_are_logged_and_counted_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), None, "");
    let mut child = ChildGuard::webhook(&config, &[]);
    let a = post(child.addr(), &payload("Logged", &[alert("l")]));
    assert_eq!(a.status, 200);
    wait_until(Duration::from_secs(10), "the message in the log", || {
        child.log_text().contains("Logged firing")
    });
    let log = child.log_text();
    assert!(!log.contains("NO BEARER TOKEN"), "a token is configured");
    assert!(log.contains("Logged is happening"), "{log}");
    assert!(
        log.contains("Dashboard: http://127.0.0.1:3000/d/aiops"),
        "{log}"
    );
    let status = child
        .terminate(Duration::from_secs(10))
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_long_outage_keeps_memory_bounded_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let r = Receiver::start(dir.path(), Some(&sink.url()), Arc::new(NoAdvisor));
    sink.outage(Behavior::ServerError);
    let n = aiops_webhook::process::MAX_OUTBOX + 300;
    for i in 0..n {
        assert_eq!(
            post(
                r.addr,
                &payload(&format!("Flood{i}"), &[alert(&format!("f{i}"))])
            )
            .status,
            200
        );
    }
    wait_until(
        Duration::from_secs(20),
        "the outbox to fill up to its bound",
        || metric(r.addr, "aiops_outbox_depth") >= aiops_webhook::process::MAX_OUTBOX as f64,
    );
    // Processing pauses at the bound: the rest waits in the journal, on disk.
    std::thread::sleep(Duration::from_millis(600));
    let depth = metric(r.addr, "aiops_outbox_depth");
    assert!(
        depth < (aiops_webhook::process::MAX_OUTBOX + 512) as f64,
        "outbox depth {depth}"
    );
    let (_, health) = get(r.addr, "/healthz");
    assert!(health.contains("\"processed_checkpoint\""), "{health}");
    sink.recover();
    wait_until(
        Duration::from_secs(60),
        "every message after the outage",
        || sink.delivered().len() == n,
    );
    let texts = sink.texts();
    let unique: std::collections::HashSet<&String> = texts.iter().collect();
    assert_eq!(unique.len(), n, "no duplicates");
}
