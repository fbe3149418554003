//! The systemd executor's argv, output parsing, time bound and start-limit awareness, with a
//! stand-in `systemctl` script (a real systemd as PID 1 is exercised by the Debian VM suite).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aiops_actions::exec::{ExecError, Executor, SystemdExecutor};
use aiops_actions::{Gate, GateError, GateOptions, Proposal, Refusal};
use aiops_core::config::ActionKind;
use aiops_core::unit::UnitName;

use crate::support::*;

/// A `systemctl` that records its argv, one line per call, and answers `show` with a start limit
/// of one start per 10 minutes and an invocation id that changes with every restart.
fn fake_systemctl(dir: &Path) -> (PathBuf, PathBuf) {
    let log = dir.join("systemctl.log");
    let count = dir.join("restarts");
    std::fs::write(&count, "0").unwrap();
    let script = dir.join("systemctl");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
printf '%s\n' "$*" >> '{log}'
case "$1" in
  show) n=$(cat '{count}'); printf 'ActiveState=active\nSubState=running\nInvocationID=%032x\nNRestarts=%s\nMainPID=4242\nStartLimitBurst=1\nStartLimitIntervalUSec=10min\n' "$n" "$n" ;;
  --no-ask-password) n=$(cat '{count}'); echo $((n + 1)) > '{count}' ;;
  *) echo "unexpected: $*" >&2; exit 1 ;;
esac
"#,
            log = log.display(),
            count = count.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, log)
}

#[test]
fn restart_argv_and_the_start_limit_refusal() {
    let dir = tempdir();
    let (program, log) = fake_systemctl(dir.path());
    let mut c = config(dir.path(), &dir.path().join("unused.sock"));
    c.remediation.executor = aiops_core::config::ExecutorKind::Systemd;
    let options = GateOptions {
        executor: Some(Arc::new(SystemdExecutor {
            program,
            timeout: Duration::from_secs(10),
            ..SystemdExecutor::default()
        })),
        ..quick()
    };
    let g = Gate::open_with(&c, &prometheus::Registry::new(), options).unwrap();
    let propose = |group: &str| match g
        .propose(&alert(group, UNIT), &diagnosis(UNIT, ActionKind::Restart))
        .unwrap()
    {
        Proposal::Pending { id, .. } => id.to_string(),
        other => panic!("{other:?}"),
    };
    let first = propose("s1");
    g.approve(Some(&first), &alice(), true, &|_| {}).unwrap();
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(
        calls.contains("--no-ask-password restart -- aiops-demo-app.service\n"),
        "{calls}"
    );
    // The status read is aiops-diagnosis' `systemctl show` (one parser for the project).
    assert!(
        calls.contains("show --no-pager --property=LoadState,ActiveState,")
            && calls.contains(",InvocationID,Requires,BindsTo -- aiops-demo-app.service\n"),
        "{calls}"
    );
    let second = propose("s2");
    match g.approve(Some(&second), &alice(), true, &|_| {}) {
        Err(GateError::Refused {
            reason: Refusal::StartLimit,
            message,
        }) => {
            assert!(
                message.contains("would trip systemd's start limit")
                    && message.contains("1 starts within 10min"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    let restarts = std::fs::read_to_string(&log)
        .unwrap()
        .matches(" restart ")
        .count();
    assert_eq!(restarts, 1);
}

#[test]
fn a_hanging_systemctl_is_killed_after_its_timeout() {
    let dir = tempdir();
    let script = dir.path().join("systemctl");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = SystemdExecutor {
        program: script,
        timeout: Duration::from_millis(300),
        ..SystemdExecutor::default()
    };
    let started = std::time::Instant::now();
    let err = e.restart(&UnitName::parse(UNIT).unwrap()).unwrap_err();
    assert!(matches!(err, ExecError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_failing_systemctl_reports_its_stderr() {
    let dir = tempdir();
    let script = dir.path().join("systemctl");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'Failed to restart x.service: Access denied' >&2\nexit 4\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = SystemdExecutor {
        program: script,
        timeout: Duration::from_secs(5),
        ..SystemdExecutor::default()
    };
    let err = e
        .restart(&UnitName::parse(UNIT).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("Access denied"), "{err}");
}

/// A `systemctl` that answers `show` with the output recorded on a real host
/// (`show-myapp-running.txt`: 2 restarts, 480 MiB of a 512 MiB `MemoryMax=`), its invocation id
/// changing with every restart; and a `journalctl` that prints two entries of the last minute
/// (or, with `journal_fails`, fails). Both log their argv to one file, in order.
fn recorded_systemd(dir: &Path, journal_fails: bool) -> (PathBuf, PathBuf, PathBuf) {
    let log = dir.join("calls.log");
    let count = dir.join("restarts");
    std::fs::write(&count, "0").unwrap();
    let show = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../aiops-diagnosis/tests/systemd/show-myapp-running.txt");
    let systemctl = dir.join("systemctl");
    std::fs::write(
        &systemctl,
        format!(
            r#"#!/bin/sh
printf 'systemctl %s\n' "$*" >> '{log}'
case "$1" in
  show) n=$(cat '{count}'); grep -v -e '^InvocationID=' -e '^Requires=' -e '^BindsTo=' '{show}'; printf 'InvocationID=%032x\n' "$n" ;;
  --no-ask-password) n=$(cat '{count}'); echo $((n + 1)) > '{count}' ;;
  *) echo "unexpected: $*" >&2; exit 1 ;;
esac
"#,
            log = log.display(),
            count = count.display(),
            show = show.display(),
        ),
    )
    .unwrap();
    let journalctl = dir.join("journalctl");
    let body = if journal_fails {
        "echo 'Failed to open journal: Input/output error' >&2\nexit 1\n".to_owned()
    } else {
        r#"t=$(date +%s%6N)
printf '{"__REALTIME_TIMESTAMP":"%s","PRIORITY":"3","_SYSTEMD_UNIT":"aiops-demo-app.service","MESSAGE":"fatal: listen tcp :8080: bind: address already in use"}\n' "$t"
printf '{"__REALTIME_TIMESTAMP":"%s","PRIORITY":"6","_SYSTEMD_UNIT":"aiops-demo-app.service","MESSAGE":"serving"}\n' "$((t - 1000000))"
"#
        .to_owned()
    };
    std::fs::write(
        &journalctl,
        format!(
            "#!/bin/sh\nprintf 'journalctl %s\\n' \"$*\" >> '{log}'\n{body}",
            log = log.display()
        ),
    )
    .unwrap();
    for p in [&systemctl, &journalctl] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (systemctl, journalctl, log)
}

fn restart_with_recorded_systemd(
    journal_fails: bool,
) -> (tempfile::TempDir, Gate, aiops_actions::audit::AuditEntry) {
    let dir = tempdir();
    let (program, journalctl, log) = recorded_systemd(dir.path(), journal_fails);
    let mut c = config(dir.path(), &dir.path().join("unused.sock"));
    c.remediation.executor = aiops_core::config::ExecutorKind::Systemd;
    let options = GateOptions {
        executor: Some(Arc::new(SystemdExecutor {
            program,
            journalctl,
            timeout: Duration::from_secs(10),
        })),
        ..quick()
    };
    let g = Gate::open_with(&c, &prometheus::Registry::new(), options).unwrap();
    let id = match g
        .propose(&alert("f1", UNIT), &diagnosis(UNIT, ActionKind::Restart))
        .unwrap()
    {
        Proposal::Pending { id, .. } => id.to_string(),
        other => panic!("{other:?}"),
    };
    let lines = std::sync::Mutex::new(Vec::new());
    g.approve(Some(&id), &alice(), true, &|l| {
        lines.lock().unwrap().push(l.to_owned());
    })
    .unwrap();
    // The restart happened, after the journal was read.
    let calls = std::fs::read_to_string(&log).unwrap();
    let journal_at = calls
        .find("journalctl --unit=aiops-demo-app.service")
        .expect(&calls);
    let restart_at = calls
        .find("systemctl --no-ask-password restart -- aiops-demo-app.service")
        .expect(&calls);
    assert!(journal_at < restart_at, "{calls}");
    assert!(
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("recorded the state of aiops-demo-app.service")),
        "{lines:?}"
    );
    let entries = g.audit_log().tail(100).unwrap();
    let executing = entries
        .into_iter()
        .find(|e| e.event == "executing")
        .expect("an executing entry");
    let report = g.audit_verify();
    assert!(report.ok, "{report:?}");
    // `aiops show` gets it from the same entry.
    let before = g.show(&id).unwrap().before_restart.expect("before_restart");
    assert_eq!(before.audit_seq, executing.seq);
    assert_eq!(before.snapshot, executing.unit_snapshot());
    assert_eq!(before.note, executing.unit_state_note);
    (dir, g, executing)
}

#[test]
fn the_audit_record_of_a_restart_holds_the_units_state_and_journal_before_it() {
    let (_dir, _g, e) = restart_with_recorded_systemd(false);
    let state = e.unit_state.as_deref().expect("unit_state recorded");
    assert!(
        state.len() <= aiops_actions::audit::MAX_UNIT_STATE_BYTES,
        "{}",
        state.len()
    );
    assert_eq!(e.unit_state_note, None);
    let snap = e.unit_snapshot().expect("a UnitSnapshot");
    assert_eq!(snap.unit.as_str(), UNIT);
    assert_eq!(snap.number("unit.restarts"), Some(2.0), "{snap:#?}");
    assert_eq!(snap.number("unit.memory"), Some(503_316_480.0), "{snap:#?}");
    assert_eq!(
        snap.number("unit.memory_max"),
        Some(536_870_912.0),
        "{snap:#?}"
    );
    assert!(snap.errors.is_empty(), "{:?}", snap.errors);
    let j = snap.journal.as_ref().expect("the journal digest");
    assert_eq!(j.errors(), 1);
    assert_eq!(j.entries, 2);
    assert!(
        j.last_errors
            .iter()
            .any(|l| l.text.contains("bind: address already in use")),
        "{j:?}"
    );
}

#[test]
fn a_failed_journal_read_is_recorded_and_the_restart_still_runs() {
    let (_dir, _g, e) = restart_with_recorded_systemd(true);
    let note = e.unit_state_note.as_deref().expect("a note");
    assert!(
        note.contains("partly unreadable") && note.contains("Input/output error"),
        "{note}"
    );
    let snap = e.unit_snapshot().expect("the state part is still recorded");
    assert_eq!(snap.number("unit.restarts"), Some(2.0));
    assert!(snap.journal.is_none());
}
