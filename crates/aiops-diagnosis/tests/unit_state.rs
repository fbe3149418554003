//! The unit-state reader against fake `systemctl` and `journalctl` programs (shell scripts in a
//! temporary directory): recorded output, a program that hangs, one that fails, one that is
//! missing, one that writes too much. No systemd needed; the last test runs the real programs
//! when they are on PATH, whatever this machine is.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use aiops_core::unit::UnitName;
use aiops_diagnosis::unit_state::{
    ActiveState, JournalAccess, Limits, LoadState, Programs, ServiceResult, StartLimitCheck,
    Truncation, UnitStateError, UnitStateReader, journal_command, show_command,
};
use chrono::{DateTime, Utc};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/systemd");

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn nginx() -> UnitName {
    UnitName::parse("nginx.service").unwrap()
}

/// A temporary directory of fake programs.
struct Fakes {
    dir: tempfile::TempDir,
}

impl Fakes {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes an executable `/bin/sh` script `name` with `body`.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// A program that records its argv (one per line) and prints `fixture`. Asked for the
    /// dependencies' properties (`show --no-pager --property=Id,...`), it records that argv
    /// apart (`NAME.deps.argv`) and prints the fixture named in `NAME.deps`, if any.
    fn replaying(&self, name: &str, fixture: &str) -> PathBuf {
        let argv = self.path(&format!("{name}.argv"));
        let deps = self.path(&format!("{name}.deps"));
        self.script(
            name,
            &format!(
                "case \"$3\" in\n\
                 --property=Id,*) for a in \"$@\"; do printf '%s\\n' \"$a\"; done > '{deps}.argv'\n\
                 \x20 [ -f '{deps}' ] && cat \"{FIXTURES}/$(cat '{deps}')\"; exit 0;;\n\
                 esac\n\
                 for a in \"$@\"; do printf '%s\\n' \"$a\"; done > '{argv}'\ncat '{FIXTURES}/{fixture}'",
                argv = argv.display(),
                deps = deps.display(),
            ),
        )
    }

    /// What the fake `name` prints for the dependencies' properties.
    fn dependencies(&self, name: &str, fixture: &str) {
        std::fs::write(self.path(&format!("{name}.deps")), fixture).unwrap();
    }

    fn argv(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.path(&format!("{name}.argv")))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn reader(&self, systemctl: PathBuf, journalctl: PathBuf, limits: Limits) -> UnitStateReader {
        UnitStateReader {
            programs: Programs {
                systemctl,
                journalctl,
            },
            limits,
        }
    }
}

fn wall_clock_targets() -> bool {
    aiops_testkit::tools::run() != aiops_testkit::tools::Run::Hermetic
}

fn gone_or_zombie(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn recorded_output_through_fake_programs_keeps_the_exact_argv() {
    let f = Fakes::new();
    let reader = f.reader(
        f.replaying("systemctl", "show-nginx-start-limit-hit.txt"),
        f.replaying("journalctl", "journal-nginx-crash-loop.json"),
        Limits::default(),
    );
    let now = t("2026-12-02T03:00:05Z");
    let ev = reader.read(&nginx(), t("2026-12-02T03:00:00Z"), now);

    let show = ev.show.as_ref().unwrap();
    assert_eq!(f.argv("systemctl"), show.command.args);
    assert_eq!(
        show.command,
        show_command(&reader.programs.systemctl, &nginx())
    );
    assert_eq!(show.state.active_state, Some(ActiveState::Failed));
    assert_eq!(show.state.result, Some(ServiceResult::StartLimitHit));

    let journal = ev.journal.as_ref().unwrap();
    assert_eq!(f.argv("journalctl"), journal.command.args);
    // `since` was pulled back to cover the 10 s start-limit interval.
    assert_eq!(
        journal.command,
        journal_command(
            &reader.programs.journalctl,
            &nginx(),
            t("2026-12-02T02:59:54Z"),
            1000
        )
    );
    assert!(
        journal.command.display().contains("--unit=nginx.service"),
        "{}",
        journal.command.display()
    );
    assert_eq!(journal.summary.entries, 39);
    assert_eq!(journal.summary.truncated, Truncation::None);
    assert_eq!(journal.summary.access, JournalAccess::Full);
    assert_eq!(ev.start_limit, StartLimitCheck::Hit);
    assert_eq!(ev.since_last_start(), Some(Duration::from_secs(4)));
}

#[test]
fn dependencies_are_read_in_one_command_and_a_failed_one_is_named() {
    let f = Fakes::new();
    let reader = f.reader(
        f.replaying("systemctl", "show-myapp-dependency-failed.txt"),
        f.replaying("journalctl", "journal-myapp-without-all.json"),
        Limits::default(),
    );
    f.dependencies("systemctl", "show-deps-postgresql-failed.txt");
    let myapp = UnitName::parse("myapp.service").unwrap();
    let ev = reader.read(&myapp, t("2026-12-02T03:00:00Z"), t("2026-12-02T03:00:30Z"));
    let deps = ev.dependencies.as_ref().unwrap().as_ref().unwrap();
    assert_eq!(
        f.argv("systemctl.deps"),
        [
            "show",
            "--no-pager",
            "--property=Id,LoadState,ActiveState,SubState,Result",
            "--",
            "system.slice",
            "postgresql.service",
            "sysinit.target"
        ]
    );
    assert_eq!(f.argv("systemctl.deps"), deps.command.args);
    let down: Vec<(&str, &str)> = deps
        .states
        .iter()
        .filter(|d| d.down)
        .map(|d| (d.unit.as_str(), d.relation.as_str()))
        .collect();
    assert_eq!(down, [("postgresql.service", "Requires,BindsTo")]);
    let snap = ev.snapshot();
    assert_eq!(snap.number("unit.dependencies_down"), Some(1.0));
    assert_eq!(
        snap.text("unit.failed_dependency"),
        Some("postgresql.service (failed, exit-code)")
    );
    assert!(snap.errors.is_empty(), "{:?}", snap.errors);

    // Dependency output that is not one block per unit is an error of that part only.
    let g = Fakes::new();
    let reader = g.reader(
        g.replaying("systemctl", "show-myapp-dependency-failed.txt"),
        g.replaying("journalctl", "journal-myapp-without-all.json"),
        Limits::default(),
    );
    g.dependencies("systemctl", "show-myapp-running.txt");
    let ev = reader.read(&myapp, t("2026-12-02T03:00:00Z"), t("2026-12-02T03:00:30Z"));
    let err = ev.dependencies.unwrap().unwrap_err();
    assert!(
        matches!(&err, UnitStateError::Unparsable { message, .. } if message.contains("Id=")),
        "{err}"
    );
    assert!(ev.show.is_ok() && ev.journal.is_ok());
}

#[test]
fn start_limit_is_counted_from_the_journal_of_a_running_unit() {
    let f = Fakes::new();
    let reader = f.reader(
        f.replaying("systemctl", "show-myapp-running.txt"),
        f.replaying("journalctl", "journal-nginx-crash-loop.json"),
        Limits::default(),
    );
    // myapp's start limit is 3 starts in 90 s; the recorded journal holds 5 starts within it,
    // and the read (pulled back 90 s) reaches before the interval.
    let ev = reader.read(
        &nginx(),
        t("2026-12-02T03:00:00Z"),
        t("2026-12-02T03:00:30Z"),
    );
    assert_eq!(
        ev.start_limit,
        StartLimitCheck::Counted {
            starts: 5,
            burst: 3,
            interval: Duration::from_secs(90)
        }
    );
    assert!(ev.start_limit.is_near());
}

#[test]
fn a_hanging_program_is_killed_within_the_timeout() {
    let f = Fakes::new();
    let pidfile = f.path("hang.pid");
    let hang = f.script(
        "systemctl",
        &format!("echo $$ > '{}'\nexec sleep 30", pidfile.display()),
    );
    let limits = Limits {
        timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let reader = f.reader(hang, f.path("absent-journalctl"), limits);
    let started = Instant::now();
    let err = reader.read_show(&nginx()).unwrap_err();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "took {took:?}");
    // The bound itself is a wall-clock target: a loaded builder (AIOPS_TESTS=hermetic) only
    // proves the kill below.
    if wall_clock_targets() {
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }
    let UnitStateError::TimedOut {
        unit,
        pid,
        timeout_ms,
        command,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(unit, &nginx());
    assert_eq!(*timeout_ms, 300);
    assert!(
        command.contains("show") && command.ends_with("-- nginx.service"),
        "{command}"
    );
    let recorded: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(*pid, recorded);
    assert!(gone_or_zombie(*pid), "pid {pid} still runs");
    let msg = err.to_string();
    assert!(
        msg.contains("nginx.service") && msg.contains("300 ms") && msg.contains("killed"),
        "{msg}"
    );
}

#[test]
fn a_grandchild_holding_the_pipe_cannot_outlast_the_timeout() {
    // The program exits at once but leaves a process behind that keeps stdout open: its
    // output never ends, and the read still stops at the deadline.
    let f = Fakes::new();
    let pidfile = f.path("grandchild.pid");
    let forks = f.script(
        "systemctl",
        &format!(
            "sleep 30 &\necho $! > '{}'\necho ActiveState=active\nexit 0",
            pidfile.display()
        ),
    );
    let limits = Limits {
        timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let reader = f.reader(forks, f.path("absent"), limits);
    let started = Instant::now();
    let err = reader.read_show(&nginx()).unwrap_err();
    let took = started.elapsed();
    let grandchild = std::fs::read_to_string(&pidfile).unwrap();
    // End the process this test started, by its pid.
    let _ = std::process::Command::new("kill")
        .arg(grandchild.trim())
        .status();
    assert!(matches!(err, UnitStateError::TimedOut { .. }), "{err:?}");
    if wall_clock_targets() {
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }
}

#[test]
fn a_failing_program_is_a_typed_error_with_its_stderr() {
    let f = Fakes::new();
    let fail = f.script(
        "systemctl",
        "echo 'Failed to get properties: Access denied' >&2\nexit 1",
    );
    let reader = f.reader(fail, f.path("absent"), Limits::default());
    let err = reader.read_show(&nginx()).unwrap_err();
    assert_eq!(
        err,
        UnitStateError::Failed {
            unit: nginx(),
            command: show_command(&reader.programs.systemctl, &nginx()).display(),
            status: "exit status 1".into(),
            stderr: "Failed to get properties: Access denied".into(),
        }
    );
}

#[test]
fn systemd_not_running_is_its_own_outcome() {
    // What systemctl says on this kind of machine (a container without systemd as PID 1).
    let f = Fakes::new();
    let no_pid1 = f.script(
        "systemctl",
        "echo 'System has not been booted with systemd as init system (PID 1). Can'\"'\"'t operate.' >&2\necho 'Failed to connect to bus: Host is down' >&2\nexit 1",
    );
    let reader = f.reader(no_pid1, f.path("absent"), Limits::default());
    let err = reader.read_show(&nginx()).unwrap_err();
    assert!(
        matches!(err, UnitStateError::SystemdNotRunning { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("not running as the init system"),
        "{err}"
    );
}

#[test]
fn missing_programs_are_typed_and_blind_nothing_else() {
    let f = Fakes::new();
    let reader = f.reader(
        f.path("no-such-systemctl"),
        f.path("no-such-journalctl"),
        Limits::default(),
    );
    let ev = reader.read(
        &nginx(),
        t("2026-12-02T03:00:00Z"),
        t("2026-12-02T03:00:05Z"),
    );
    match &ev.show {
        Err(UnitStateError::NotInstalled { unit, program, .. }) => {
            assert_eq!(unit, &nginx());
            assert!(program.ends_with("no-such-systemctl"), "{program}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(ev.journal, Err(UnitStateError::NotInstalled { .. })),
        "{:?}",
        ev.journal
    );
    assert!(matches!(ev.start_limit, StartLimitCheck::Unknown { .. }));
    assert_eq!(ev.since_last_start(), None);

    // Only the journal missing: the state is still read.
    let reader = f.reader(
        f.replaying("systemctl", "show-myapp-running.txt"),
        f.path("no-such-journalctl"),
        Limits::default(),
    );
    let ev = reader.read(
        &nginx(),
        t("2026-12-02T03:00:00Z"),
        t("2026-12-02T03:00:05Z"),
    );
    assert!(ev.show.is_ok());
    assert!(ev.journal.is_err());
}

#[test]
fn journal_output_over_the_byte_bound_ends_at_a_whole_line_and_the_child_is_killed() {
    let f = Fakes::new();
    let pidfile = f.path("flood.pid");
    let flood = f.script(
        "journalctl",
        &format!(
            "echo $$ > '{}'\nwhile :; do cat '{FIXTURES}/journal-nginx-crash-loop.json'; done",
            pidfile.display()
        ),
    );
    let limits = Limits {
        journal_max_bytes: 16 * 1024,
        timeout: Duration::from_secs(20),
        ..Limits::default()
    };
    let reader = f.reader(f.path("absent"), flood, limits);
    let started = Instant::now();
    let j = reader
        .read_journal(&nginx(), t("2026-12-02T03:00:00Z"))
        .unwrap();
    if wall_clock_targets() {
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    assert_eq!(j.summary.truncated, Truncation::Bytes);
    assert!(j.summary.entries > 10, "{}", j.summary.entries);
    assert_eq!(j.summary.skipped_lines, 0, "{:?}", j.summary.first_skip);
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(gone_or_zombie(pid), "pid {pid} still runs");
}

#[test]
fn journal_entry_bound_is_reported() {
    let f = Fakes::new();
    let limits = Limits {
        journal_max_entries: 39,
        ..Limits::default()
    };
    let reader = f.reader(
        f.path("absent"),
        f.replaying("journalctl", "journal-nginx-crash-loop.json"),
        limits,
    );
    let j = reader
        .read_journal(&nginx(), t("2026-12-02T03:00:00Z"))
        .unwrap();
    assert_eq!(f.argv("journalctl").last().unwrap(), "--lines=39");
    assert_eq!(j.summary.truncated, Truncation::Entries);
}

#[test]
fn a_journal_the_account_may_not_read_is_reported_as_limited() {
    let f = Fakes::new();
    let limited = f.script(
        "journalctl",
        "echo 'Hint: You are currently not seeing messages from other users and the system.' >&2\necho \"      Users in groups 'adm', 'systemd-journal' can see all messages.\" >&2\nexit 0",
    );
    let reader = f.reader(
        f.replaying("systemctl", "show-myapp-running.txt"),
        limited,
        Limits::default(),
    );
    let ev = reader.read(
        &nginx(),
        t("2026-12-02T03:00:00Z"),
        t("2026-12-02T03:00:05Z"),
    );
    let j = &ev.journal.as_ref().unwrap().summary;
    assert_eq!(j.entries, 0);
    match &j.access {
        JournalAccess::Limited(hint) => assert!(hint.contains("systemd-journal"), "{hint}"),
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&ev.start_limit, StartLimitCheck::Unknown { reason } if reason.contains("not readable")),
        "{:?}",
        ev.start_limit
    );
}

#[test]
fn unparsable_show_output_names_the_unit_command_and_line() {
    let f = Fakes::new();
    let odd = f.script(
        "systemctl",
        "echo ActiveState=active\necho 'garbage without equals'",
    );
    let reader = f.reader(odd, f.path("absent"), Limits::default());
    let err = reader.read_show(&nginx()).unwrap_err();
    let UnitStateError::Unparsable { unit, line, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!((unit, *line), (&nginx(), 2));
    assert!(err.to_string().contains("nginx.service"), "{err}");
}

#[test]
fn a_hostile_label_cannot_become_a_unit() {
    // The reader only takes a `UnitName`; these never become one.
    for hostile in [
        "foo; rm -rf /",
        "--help",
        "nginx.service --all",
        "$(reboot).service",
    ] {
        assert!(UnitName::parse(hostile).is_err(), "{hostile:?}");
    }
    // And the reader's entry points take nothing else: this only compiles while they do.
    let _: fn(&UnitStateReader, &UnitName) -> _ = UnitStateReader::read_show;
    let _: fn(&UnitStateReader, &UnitName, DateTime<Utc>) -> _ = UnitStateReader::read_journal;
}

#[test]
fn the_real_systemctl_and_journalctl_give_a_typed_outcome() {
    // Whatever this machine is (systemd as PID 1, a container without it, no systemd at all),
    // the real programs' output is either parsed or a typed outcome; never a panic or garbage.
    let (Some(systemctl), Some(journalctl)) = (
        aiops_testkit::tools::find(&["systemctl"]),
        aiops_testkit::tools::find(&["journalctl"]),
    ) else {
        eprintln!("SKIPPED: systemctl or journalctl is not on PATH (or AIOPS_TESTS=hermetic)");
        return;
    };
    let reader = UnitStateReader {
        programs: Programs {
            systemctl,
            journalctl,
        },
        limits: Limits::default(),
    };
    let unit = UnitName::parse("aiops-test-no-such-unit.service").unwrap();
    match reader.read_show(&unit) {
        Ok(show) => assert_eq!(show.state.load_state, Some(LoadState::NotFound), "{show:?}"),
        Err(UnitStateError::SystemdNotRunning { .. }) => {}
        Err(e) => panic!("{e}"),
    }
    let journal = reader
        .read_journal(&unit, Utc::now() - chrono::TimeDelta::hours(1))
        .unwrap();
    assert_eq!(journal.summary.entries, 0, "{journal:?}");
    assert_eq!(journal.summary.skipped_lines, 0, "{journal:?}");
}
