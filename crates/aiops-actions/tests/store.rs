//! Durability of the action store: SIGKILL at random moments, corrupt and future files.

use std::process::Command;
use std::time::Duration;

use aiops_actions::audit::AuditLog;
use aiops_actions::store::{Store, StoreError};
use aiops_core::config::ActionKind;

use crate::support::*;

const WRITER_ENV: &str = "AIOPS_ACTIONS_TEST_WRITER_DIR";

/// Not a test on its own: the child process of `sigkill_during_writes_never_leaves_an_unreadable_file`.
/// Proposes (creates and refreshes) actions in a loop until killed.
#[test]
fn writer_child() {
    let Some(dir) = std::env::var_os(WRITER_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let c = config(&dir, &dir.join("no-supervisor.sock"));
    let g = gate(&c);
    for i in 0..100_000u32 {
        // Eight groups: mostly refreshes of existing files, some creations.
        let a = alert(&format!("k{}", i % 8), UNIT);
        g.propose(&a, &diagnosis(UNIT, ActionKind::Restart))
            .unwrap();
    }
}

#[test]
fn sigkill_during_writes_never_leaves_an_unreadable_file() {
    let dir = tempdir();
    let exe = std::env::current_exe().unwrap();
    let state = dir.path().join("state");
    let mut writes: u64 = 0;
    let mut kills = 0;
    // A child on a loaded machine (or under strace) may not reach its first write within the
    // random kill delay; each round that saw no new write lengthens the delay, up to 2 s, so the
    // kills still land at random points of the writing rather than before it starts.
    let mut slow_start = Duration::ZERO;
    for round in 0..400 {
        if writes >= 500 && kills >= 20 {
            break;
        }
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "store::writer_child",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(WRITER_ENV, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(fastrand::u64(5..60)) + slow_start);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        // Whatever moment it died at, everything that is there must read.
        let (store, _) = Store::open(&state).unwrap();
        let scan = store.lock().unwrap().scan().unwrap();
        assert!(
            scan.problems.is_empty(),
            "round {round}: {:?}",
            scan.problems
        );
        let before = writes;
        writes = scan.actions.iter().map(|a| u64::from(a.seen_count)).sum();
        slow_start = if writes > before {
            Duration::ZERO
        } else {
            (slow_start * 2 + Duration::from_millis(20)).min(Duration::from_secs(2))
        };
        let leftovers: Vec<_> = std::fs::read_dir(store.actions_dir())
            .unwrap()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().ends_with(".json"))
            .collect();
        assert!(leftovers.is_empty(), "round {round}: {leftovers:?}");
        let report = AuditLog::open(&state).unwrap().verify();
        assert!(report.ok, "round {round}: {report:?}");
    }
    assert!(
        writes >= 500,
        "only {writes} writes happened in {kills} kills"
    );
    eprintln!(
        "{writes} completed state writes across {kills} SIGKILLs, every file readable after each"
    );
}

#[test]
fn a_corrupt_file_is_moved_aside_and_reported_with_its_path() {
    let dir = tempdir();
    let (store, _) = Store::open(&dir.path().join("state")).unwrap();
    let bad = store.actions_dir().join("0badf00d.json");
    std::fs::write(&bad, b"{\"schema\": 1, \"id\": ").unwrap();
    let scan = store.lock().unwrap().scan().unwrap();
    assert_eq!(scan.problems.len(), 1);
    let msg = scan.problems[0].to_string();
    assert!(
        msg.contains("0badf00d.json") && msg.contains("moved it aside"),
        "{msg}"
    );
    assert!(!bad.exists());
    assert!(store.actions_dir().join("0badf00d.json.corrupt").exists());
}

#[test]
fn a_future_schema_is_refused_and_left_alone() {
    let dir = tempdir();
    let (store, _) = Store::open(&dir.path().join("state")).unwrap();
    let future = store.actions_dir().join("0000abcd.json");
    std::fs::write(&future, b"{\"schema\": 99, \"whatever\": true}").unwrap();
    let scan = store.lock().unwrap().scan().unwrap();
    assert!(matches!(
        scan.problems[0],
        StoreError::FutureSchema { found: 99, .. }
    ));
    assert!(scan.problems[0].to_string().contains("newer aiops"));
    assert!(future.exists());
}

#[test]
fn stale_temporaries_are_removed_at_open() {
    let dir = tempdir();
    let state = dir.path().join("state");
    Store::open(&state).unwrap();
    let tmp = state.join("actions").join(".0000abcd.json.tmp.123.456");
    std::fs::write(&tmp, b"half").unwrap();
    let (_, report) = Store::open(&state).unwrap();
    assert_eq!(report.stale_temporaries, 1);
    assert!(!tmp.exists());
}

mod round_trip {
    use proptest::prelude::*;

    use crate::support::*;
    use aiops_core::config::ActionKind;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Whatever the labels and explanation, an action survives the trip to disk unchanged.
        #[test]
        fn actions_round_trip_through_their_files(
            labels in proptest::collection::btree_map("[a-z_]{1,10}", "\\PC{0,40}", 0..6),
            explanation in "\\PC{0,200}",
        ) {
            let dir = tempdir();
            let c = config(dir.path(), &dir.path().join("s.sock"));
            let g = gate(&c);
            let mut a = alert("rt", UNIT);
            a.labels.extend(labels.into_iter().filter(|(k, _)| k != "unit"));
            let mut d = diagnosis(UNIT, ActionKind::Restart);
            d.explanation = explanation;
            g.propose(&a, &d).unwrap();
            let back = g.list(false).unwrap().pop().unwrap();
            prop_assert_eq!(back.alert, a);
            prop_assert_eq!(back.diagnosis, d);
        }
    }
}
