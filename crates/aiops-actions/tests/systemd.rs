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
    assert!(calls.contains("show --property=ActiveState,SubState,InvocationID,NRestarts,MainPID,StartLimitBurst,StartLimitIntervalUSec -- aiops-demo-app.service\n"), "{calls}");
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
    };
    let err = e
        .restart(&UnitName::parse(UNIT).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("Access denied"), "{err}");
}
