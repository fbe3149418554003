//! Memory under the worst case the receiver is built for: Slack down, the outbox full of the
//! largest groups a notification may carry (near `webhook.max_body_bytes`), more of them waiting
//! in the journal. The real binary's peak RSS (VmHWM) must stay well under the `MemoryMax=` of
//! the shipped unit, or systemd would kill it exactly when messages are piling up.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

/// The unit the receiver ships with: its `MemoryMax=` is the figure the test holds it to.
const UNIT: &str = include_str!("../../../systemd/aiops-webhook.service");

/// `MemoryMax=` of the unit, in bytes (`256M` and the like).
fn memory_max() -> u64 {
    let value = UNIT
        .lines()
        .find_map(|l| l.trim().strip_prefix("MemoryMax="))
        .expect("systemd/aiops-webhook.service sets MemoryMax=");
    let (digits, unit) = value.split_at(
        value
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(value.len()),
    );
    let n: u64 = digits.parse().expect("MemoryMax= is a number with a unit");
    n * match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        other => panic!("MemoryMax= unit {other:?} is not understood by this test"),
    }
}

/// A field of /proc/PID/status in bytes (`VmHWM`, `VmRSS`).
fn status_bytes(pid: i32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("/proc/{pid}/status has no {field}"));
    kib * 1024
}

/// A firing group of about `target` bytes of JSON: many alerts with long annotations, which is
/// how a large group looks (a fleet-wide alert with descriptions).
pub fn large_group(group: &str, target: usize) -> Value {
    let text = "disk latency above the threshold on the volume; check the controller. ".repeat(5);
    let one = |i: usize| {
        json!({
            "status": "firing",
            "labels": {"alertname": group, "service": "aiops-demo-app", "severity": "critical",
                       "instance": format!("host-{i:05}:9100"), "device": format!("nvme{i}n1")},
            "annotations": {"summary": format!("{group} on host-{i:05}"), "description": text},
            "startsAt": "2026-11-28T12:03:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=up",
            "fingerprint": format!("{i:016x}"),
        })
    };
    let per_alert = one(0).to_string().len() + 1;
    let alerts: Vec<Value> = (0..target / per_alert).map(one).collect();
    let mut p = payload(group, &[]);
    p["status"] = json!("firing");
    p["alerts"] = Value::Array(alerts);
    p
}

/// Posts `body` until it is acknowledged (a 503 says when to come back, as Alertmanager
/// would); returns how many 503s it got.
fn post_acknowledged(addr: std::net::SocketAddr, body: &[u8]) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut refused = 0;
    loop {
        let a = post_raw(addr, "/", Some("application/json"), Some(TOKEN), body);
        match a.status {
            200 => return refused,
            503 if Instant::now() < deadline => {
                assert!(a.retry_after.is_some(), "a 503 says when to retry: {a:?}");
                refused += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            _ => panic!("a large group was not acknowledged: {a:?}"),
        }
    }
}

fn health(addr: std::net::SocketAddr) -> Value {
    serde_json::from_str(&get(addr, "/healthz").1).unwrap()
}

/// The worst case, measured: Slack down (500s), the largest groups posted four at a time, every
/// queue at its byte bound (`webhook.queue_mib`, small here so that a few hundred megabytes of
/// notifications reach it; `AIOPS_MEMORY_QUEUE_MIB=16` runs it with the default), then Slack
/// back and every acknowledged group delivered. Before the outbox held rendered messages and
/// was bounded in bytes, each queued message of such a group held about 3 MiB: 120 of them
/// peaked at 375 MiB. With 1 MiB of rendered messages the outbox is full after about 100 groups.
#[test]
fn with_slack_down_an_outbox_of_the_largest_groups_stays_under_memory_max() {
    if !aiops_testkit::tools::live() {
        return;
    }
    let queue_mib: u64 = std::env::var("AIOPS_MEMORY_QUEUE_MIB").ok().map_or(1, |v| {
        v.parse()
            .expect("AIOPS_MEMORY_QUEUE_MIB is a number of MiB")
    });
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    sink.outage(Behavior::ServerError);
    let config = write_config(
        dir.path(),
        Some(&sink.url()),
        &format!("queue_mib = {queue_mib}"),
    );
    let mut rx = ChildGuard::webhook(&config, &[]);
    let addr = rx.addr();
    let pid = rx.pid();
    let limit = memory_max();
    let max_body = aiops_core::Config::default().webhook.max_body_bytes;
    let target = max_body * 93 / 100;

    // `AIOPS_MEMORY_GROUPS=1100` fills the outbox to its count bound (1,000) at the default.
    let groups: u64 = std::env::var("AIOPS_MEMORY_GROUPS")
        .ok()
        .map_or(160, |v| v.parse().expect("AIOPS_MEMORY_GROUPS is a number"));
    let body = |i: u64| large_group(&format!("Large{i:03}"), target).to_string();
    let len = body(0).len();
    assert!(len <= max_body && len > max_body * 85 / 100, "{len}");
    let started = Instant::now();
    let refused: u32 = std::thread::scope(|s| {
        let posters: Vec<_> = (0..4)
            .map(|t| {
                s.spawn(move || {
                    (0..groups)
                        .filter(|i| i % 4 == t)
                        .map(|i| post_acknowledged(addr, body(i).as_bytes()))
                        .sum::<u32>()
                })
            })
            .collect();
        posters.into_iter().map(|p| p.join().unwrap()).sum()
    });
    let posted = started.elapsed();
    // Wait for processing to settle: the checkpoint and the outbox no longer move.
    let mut last = (u64::MAX, u64::MAX);
    let mut steady = 0;
    let deadline = Instant::now() + Duration::from_secs(180 + groups / 10);
    while Instant::now() < deadline && steady < 10 {
        let h = health(addr);
        let now = (
            h["processed_checkpoint"].as_u64().unwrap(),
            h["outbox_depth"].as_u64().unwrap(),
        );
        steady = if now == last { steady + 1 } else { 0 };
        last = now;
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        steady, 10,
        "processing did not settle within 180 s: {last:?}"
    );
    let h = health(addr);
    let hwm = status_bytes(pid, "VmHWM");
    let rss = status_bytes(pid, "VmRSS");
    let outbox_bytes = h["outbox_bytes"].as_u64().unwrap();
    let depth = h["outbox_depth"].as_u64().unwrap();
    eprintln!(
        "{groups} groups of {} KiB posted in {posted:?} ({refused} times 503 while the in-flight \
         bound was full); queue_mib {queue_mib}: outbox {depth} messages holding {} KiB, \
         {} records processed; VmHWM {:.1} MiB, VmRSS {:.1} MiB; MemoryMax {} MiB",
        len / 1024,
        outbox_bytes / 1024,
        h["processed_checkpoint"],
        hwm as f64 / 1048576.0,
        rss as f64 / 1048576.0,
        limit >> 20,
    );
    assert_eq!(h["journal_durable_seq"].as_u64(), Some(groups), "{h}");
    let bound = queue_mib << 20;
    if queue_mib <= 1 {
        // The byte bound is what stopped processing (not the count bound of 1,000): the outbox
        // reached it, went no further than one message past it, and the rest waits on disk.
        assert!(outbox_bytes >= bound, "the outbox reached its bound: {h}");
        assert!(outbox_bytes < bound + bound / 2, "and stayed near it: {h}");
        assert!(h["processed_checkpoint"].as_u64().unwrap() < groups, "{h}");
    }
    assert!(
        hwm < limit / 4 * 3,
        "peak RSS {} MiB is not under three quarters of MemoryMax={} MiB",
        hwm >> 20,
        limit >> 20
    );

    // Nothing acknowledged is lost: once Slack is back, every group arrives, once.
    sink.recover();
    wait_until(
        Duration::from_secs(120),
        "every large group delivered after the outage",
        || sink.delivered().len() as u64 >= groups,
    );
    let mut texts = sink.texts();
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len() as u64, groups, "each group once");
    assert!(
        rx.terminate(Duration::from_secs(20))
            .is_some_and(|s| s.success())
    );
}
