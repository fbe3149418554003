//! When the disk refuses writes the receiver answers 503 + Retry-After, reports itself
//! unhealthy, acknowledges nothing it did not persist, and recovers when the disk does.
//!
//! The failing disk is a file size limit (RLIMIT_FSIZE via util-linux `prlimit`): writes past
//! it fail with EFBIG exactly as they would on a full file system, deterministically and
//! without root.

use std::collections::HashSet;
use std::time::Duration;

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
