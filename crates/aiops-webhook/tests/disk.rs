//! When the disk refuses writes the receiver answers 503 + Retry-After, reports itself
//! unhealthy, acknowledges nothing it did not persist, and recovers when the disk does.
//!
//! The failing disk is a file size limit (RLIMIT_FSIZE via util-linux `prlimit`): writes past
//! it fail with EFBIG exactly as they would on a full file system, deterministically and
//! without root. The small state volume is a tmpfs in a mount namespace of the receiver's own
//! (`unshare -rm`): real statvfs figures, real ENOSPC, no root either.

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use aiops_webhook::NoAdvisor;

use crate::support::*;

#[test]
fn a_full_disk_means_503_unhealthy_and_nothing_acknowledged_is_lost() {
    if aiops_testkit::tools::require(&["prlimit"]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let config = write_config(dir.path(), Some(&sink.url()), "");
    // 48 KiB per file: the journal segment fills after a few dozen notifications.
    let mut child = ChildGuard::webhook(&config, &["prlimit", "--fsize=49152:unlimited", "--"]);
    let addr = child.addr();
    let mut acked = Vec::new();
    let mut refused = Vec::new();
    for i in 0..200 {
        let group = format!("Disk{i}");
        let a = post(addr, &payload(&group, &[alert(&format!("d{i}"))]));
        match a.status {
            200 => acked.push(group),
            503 => {
                assert_eq!(a.retry_after.as_deref(), Some("5"));
                let e = a.body["error"].as_str().unwrap();
                assert!(e.contains("cannot persist"), "{e}");
                refused.push(group);
            }
            s => panic!("unexpected {s}: {:?}", a.body),
        }
    }
    assert!(
        !acked.is_empty() && refused.len() > 100,
        "acked {} refused {}",
        acked.len(),
        refused.len()
    );
    let (status, body) = get(addr, "/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("journal not writable"), "{body}");
    assert!(
        metric(
            addr,
            "aiops_notifications_rejected_total{reason=\"not_persisted\"}"
        ) >= refused.len() as f64
    );

    // The disk gets space again: the receiver recovers by itself.
    let st = std::process::Command::new("prlimit")
        .args(["--pid", &child.pid().to_string(), "--fsize=unlimited"])
        .status()
        .unwrap();
    assert!(st.success());
    wait_until(Duration::from_secs(15), "healthz to recover", || {
        get(addr, "/healthz").0 == 200
    });
    assert_eq!(
        post(addr, &payload("AfterRecovery", &[alert("r")])).status,
        200
    );
    acked.push("AfterRecovery".into());
    wait_until(
        Duration::from_secs(30),
        "every acknowledged notification at the sink",
        || {
            let got: HashSet<String> = sink
                .texts()
                .iter()
                .map(|t| t.split_whitespace().nth(1).unwrap().to_owned())
                .collect();
            acked.iter().all(|g| got.contains(g))
        },
    );
    // A restart (journal recovery included) changes nothing: refused ones never appear.
    child.kill();
    let restarted = ChildGuard::webhook(&config, &[]);
    assert_eq!(
        post(restarted.addr(), &payload("Final", &[alert("z")])).status,
        200
    );
    wait_until(Duration::from_secs(15), "the final message", || {
        sink.texts().iter().any(|t| t.contains("Final firing"))
    });
    let texts = sink.texts();
    let got: Vec<String> = texts
        .iter()
        .map(|t| t.split_whitespace().nth(1).unwrap().to_owned())
        .collect();
    for g in &refused {
        assert!(
            !got.contains(g),
            "{g} was refused with 503 but delivered: the journal kept an unacknowledged record"
        );
    }
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "no duplicates: {got:?}");
}

/// The texts' group names (the second word of "🔥 Group firing ...").
fn delivered_groups(sink: &Sink) -> HashSet<String> {
    sink.texts()
        .iter()
        .filter_map(|t| t.split_whitespace().nth(1).map(str::to_owned))
        .collect()
}

/// Fills `path` until `free` (as the receiver reports it) is down to `leave` bytes.
fn ballast(path: &std::path::Path, free: u64, leave: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    let mut left = free.saturating_sub(leave);
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    f.sync_all().unwrap();
}

#[test]
fn a_state_volume_down_to_its_reserve_refuses_new_notifications_and_delivers_the_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let Some(prefix) = small_volume(&dir.path().join("state"), 32) else {
        eprintln!("SKIPPED: unshare -rm (user and mount namespaces) does not work here");
        return;
    };
    let sink = Sink::start();
    sink.outage(Behavior::ServerError);
    let config = write_config(dir.path(), Some(&sink.url()), "state_reserve_mib = 8");
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let child = ChildGuard::webhook(&config, &prefix);
    let addr = child.addr();
    assert_eq!(
        metric(addr, "aiops_state_volume_reserve_bytes"),
        (8 * 1024 * 1024) as f64
    );
    let size = metric(addr, "aiops_state_volume_size_bytes");
    assert_eq!(
        size,
        (32 * 1024 * 1024) as f64,
        "the tmpfs is the state volume"
    );

    // Acknowledged while Slack is down: these must be delivered whatever happens next.
    let acked: Vec<String> = (0..20).map(|i| format!("Acked{i}")).collect();
    for g in &acked {
        assert_eq!(post(addr, &payload(g, &[alert(g)])).status, 200);
    }
    wait_until(
        Duration::from_secs(20),
        "the messages in the outbox",
        || metric(addr, "aiops_outbox_depth") == acked.len() as f64,
    );

    // Something else fills the volume down to half the reserve.
    let free = metric(addr, "aiops_state_volume_free_bytes") as u64;
    let ballast_path = child.in_namespace(&dir.path().join("state/ballast"));
    ballast(&ballast_path, free, 4 * 1024 * 1024);
    let a = post(addr, &payload("Refused", &[alert("x")]));
    assert_eq!(a.status, 503, "{:?}", a.body);
    assert_eq!(a.retry_after.as_deref(), Some("5"));
    let e = a.body["error"].as_str().unwrap();
    assert!(
        e.contains("keeps for notifications already acknowledged"),
        "{e}"
    );
    assert_eq!(
        metric(
            addr,
            "aiops_notifications_rejected_total{reason=\"disk_reserve\"}"
        ),
        1.0
    );
    let (status, health) = get(addr, "/healthz");
    assert_eq!(status, 503, "{health}");
    assert!(health.contains("new notifications are refused"), "{health}");
    assert!(metric(addr, "aiops_state_volume_free_bytes") < (8 * 1024 * 1024) as f64);

    // Slack comes back: everything acknowledged is delivered and recorded from the reserve.
    sink.recover();
    wait_until(
        Duration::from_secs(30),
        "every acknowledged message at the sink",
        || {
            let got = delivered_groups(&sink);
            acked.iter().all(|g| got.contains(g))
        },
    );
    wait_until(Duration::from_secs(10), "the outbox to drain", || {
        metric(addr, "aiops_outbox_depth") == 0.0
    });
    assert!(!delivered_groups(&sink).contains("Refused"));

    // Space comes back: the receiver accepts again by itself.
    std::fs::remove_file(&ballast_path).unwrap();
    wait_until(Duration::from_secs(10), "healthz to recover", || {
        get(addr, "/healthz").0 == 200
    });
    assert_eq!(post(addr, &payload("Later", &[alert("l")])).status, 200);
    wait_until(Duration::from_secs(10), "the later message", || {
        delivered_groups(&sink).contains("Later")
    });
}

#[test]
fn processed_notifications_do_not_stay_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let r = Receiver::start(dir.path(), Some(&sink.url()), Arc::new(NoAdvisor));
    // About 3 MiB of notifications, far below the old 16 MiB journal segment.
    let n = 2000;
    for i in 0..n {
        let g = format!("Kept{i}");
        assert_eq!(post(r.addr, &payload(&g, &[alert(&g)])).status, 200);
    }
    wait_until(Duration::from_secs(60), "every message delivered", || {
        sink.delivered().len() == n
    });
    let journal = dir.path().join("state/webhook/journal");
    let state_log = dir.path().join("state/webhook/state/log");
    // Idle, everything processed: the journal's segments go, the state log is compacted.
    wait_until(Duration::from_secs(20), "processed data reclaimed", || {
        du(&journal) < 64 * 1024 && du(&state_log) < 1536 * 1024
    });
}

/// The smallest state volume the configuration guide promises, in MiB.
const MINIMUM_VOLUME_MIB: u64 = 32;

/// A burst of 10,000 notifications of as many groups (the worst case for the state: every group
/// is remembered) against a state volume of the documented minimum size (or
/// `AIOPS_BURST_VOLUME_MIB`). The receiver may refuse some for a while (503, as Alertmanager
/// would be told); retried as Alertmanager retries, every one is acknowledged and delivered
/// exactly once, and the receiver ends healthy: it never wedges on its own data.
#[test]
fn a_burst_of_10000_notifications_fits_the_minimum_state_volume() {
    // Minutes of fsync-bound work whose retries are bounded in time: a stress test, not hermetic.
    if !aiops_testkit::tools::live() {
        return;
    }
    let mib = std::env::var("AIOPS_BURST_VOLUME_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MINIMUM_VOLUME_MIB);
    let dir = tempfile::tempdir().unwrap();
    let Some(prefix) = small_volume(&dir.path().join("state"), mib) else {
        eprintln!("SKIPPED: unshare -rm (user and mount namespaces) does not work here");
        return;
    };
    let sink = Sink::start();
    let config = write_config(dir.path(), Some(&sink.url()), "");
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let child = ChildGuard::webhook(&config, &prefix);
    let addr = child.addr();
    let n = 10_000;
    let senders = 4;
    let started = std::time::Instant::now();
    let min_free = std::sync::atomic::AtomicU64::new(u64::MAX);
    let refusals = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..senders {
            let (min_free, refusals) = (&min_free, &refusals);
            s.spawn(move || {
                for i in (t..n).step_by(senders) {
                    let g = format!("Burst{i}");
                    let body = payload(&g, &[alert(&g)]);
                    // Alertmanager's retries, bounded: 503 + Retry-After means "later".
                    let mut tries = 0;
                    loop {
                        let status = post(addr, &body).status;
                        if status == 200 {
                            break;
                        }
                        assert_eq!(status, 503, "{g}");
                        refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tries += 1;
                        assert!(tries < 600, "{g} still refused after {tries} tries");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    if i % 250 == 0 {
                        let free = metric(addr, "aiops_state_volume_free_bytes") as u64;
                        min_free.fetch_min(free, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    wait_until(Duration::from_secs(300), "every message delivered", || {
        sink.delivered().len() >= n
    });
    let refusals = refusals.load(std::sync::atomic::Ordering::Relaxed);
    let min_free = min_free.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "state volume {mib} MiB: {n} notifications acknowledged and delivered in {:.0} s; {refusals} answers 503 on the way; lowest free seen {:.1} MiB",
        started.elapsed().as_secs_f64(),
        min_free as f64 / 1048576.0
    );
    let (status, health) = get(addr, "/healthz");
    assert_eq!(status, 200, "{health}");
    assert_eq!(sink.delivered().len(), n, "each once");
    assert_eq!(delivered_groups(&sink).len(), n);
}
