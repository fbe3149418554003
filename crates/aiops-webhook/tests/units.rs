//! The watched units' state on the running receiver's `/metrics`: the poller `run_with` starts
//! reads every watched unit with `systemctl show` and exports the `aiops_unit_*` series the
//! generated rules (`aiops rules`) read. There is no systemd here, so `systemctl` is a fake that
//! prints a `systemctl show` output recorded on a real host
//! (`crates/aiops-diagnosis/tests/systemd/`) and logs its argv.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aiops_webhook::{NoAdvisor, Options, UnitPolling};

use crate::support::*;

fn recorded(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../aiops-diagnosis/tests/systemd")
        .join(name)
}

/// A `systemctl` that answers `show ... -- myapp.service` with the recorded output and fails
/// (logging it) for any other unit.
fn fake_systemctl(dir: &Path) -> PathBuf {
    let path = dir.join("systemctl");
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> {log:?}\nfor last; do :; done\ncase \"$1 $last\" in\n  'show myapp.service') cat {show:?} ;;\n  *) echo \"Unit $last could not be found.\" >&2; exit 1 ;;\nesac\n",
        log = dir.join("systemctl.log"),
        show = recorded("show-myapp-oom-killed.txt"),
    );
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn options(systemctl: PathBuf) -> Options {
    let mut units = UnitPolling {
        interval: Duration::from_millis(200),
        ..UnitPolling::default()
    };
    units.reader.programs.systemctl = systemctl;
    Options {
        units,
        ..fast_options()
    }
}

const WATCH: &str = "[watch.myapp]\nunit = \"myapp.service\"\njob = \"myapp\"\n";

#[test]
fn the_receiver_exports_a_watched_units_systemctl_show_state_and_nothing_for_unwatched_units() {
    let dir = tempfile::tempdir().unwrap();
    let systemctl = fake_systemctl(dir.path());
    let r = Receiver::start_configured(
        dir.path(),
        None,
        Arc::new(NoAdvisor),
        options(systemctl),
        Some(1),
        WATCH,
    );
    wait_until(
        Duration::from_secs(10),
        "the unit's series on /metrics",
        || {
            get(r.addr, "/metrics")
                .1
                .contains("aiops_unit_up{unit=\"myapp.service\"} 1")
        },
    );
    let (_, text) = get(r.addr, "/metrics");
    // The values of show-myapp-oom-killed.txt: ActiveState=activating, NRestarts=1,
    // MemoryMax=536870912, Result=oom-kill, MemoryCurrent/TasksCurrent/CPUUsageNSec not set.
    for line in [
        "aiops_unit_up{unit=\"myapp.service\"} 1",
        "aiops_unit_state{state=\"activating\",unit=\"myapp.service\"} 1",
        "aiops_unit_state{state=\"failed\",unit=\"myapp.service\"} 0",
        "aiops_unit_state{state=\"active\",unit=\"myapp.service\"} 0",
        "aiops_unit_restarts_total{unit=\"myapp.service\"} 1",
        "aiops_unit_memory_max_bytes{unit=\"myapp.service\"} 536870912",
        "aiops_unit_oom_killed{unit=\"myapp.service\"} 1",
        "aiops_unit_start_limit_hit{unit=\"myapp.service\"} 0",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    // "[not set]" exports no series rather than a number.
    for absent in [
        "aiops_unit_memory_current_bytes{",
        "aiops_unit_tasks{",
        "aiops_unit_cpu_seconds_total{",
    ] {
        assert!(!text.contains(absent), "{absent} in:\n{text}");
    }
    // Only the watched unit: not the demo app (a non-empty [watch] replaces it), nor any other.
    let unit_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("aiops_unit_"))
        .collect();
    assert!(
        unit_lines
            .iter()
            .all(|l| l.contains("unit=\"myapp.service\"")),
        "{unit_lines:?}"
    );
    let log = std::fs::read_to_string(dir.path().join("systemctl.log")).unwrap();
    for call in log.lines() {
        assert!(
            call.starts_with("show --no-pager --property=") && call.ends_with(" -- myapp.service"),
            "unexpected systemctl call {call:?}"
        );
    }

    // It stops with the receiver: no read after `run_with` returned.
    r.stop().unwrap();
    let calls = std::fs::read_to_string(dir.path().join("systemctl.log"))
        .unwrap()
        .lines()
        .count();
    std::thread::sleep(Duration::from_millis(600));
    let after = std::fs::read_to_string(dir.path().join("systemctl.log"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(
        calls, after,
        "systemctl was still run after the receiver stopped"
    );
}

#[test]
fn an_unreadable_watched_unit_is_up_0_with_no_other_series() {
    let dir = tempfile::tempdir().unwrap();
    let systemctl = fake_systemctl(dir.path());
    let r = Receiver::start_configured(
        dir.path(),
        None,
        Arc::new(NoAdvisor),
        options(systemctl),
        Some(1),
        "[watch.gone]\nunit = \"gone.service\"\n",
    );
    wait_until(Duration::from_secs(10), "aiops_unit_up 0", || {
        get(r.addr, "/metrics")
            .1
            .contains("aiops_unit_up{unit=\"gone.service\"} 0")
    });
    let (_, text) = get(r.addr, "/metrics");
    assert!(!text.contains("aiops_unit_state{"), "{text}");
    r.stop().unwrap();
}

#[test]
fn units_are_polled_only_under_the_systemd_executor() {
    let path = Path::new("t.toml");
    let c = aiops_core::Config::from_toml(
        "[watch.b]\nunit = \"b.service\"\n[watch.a]\nunit = \"a.service\"\n[watch.c]\njob = \"c\"\n",
        path,
    )
    .unwrap();
    let names: Vec<String> = aiops_webhook::polled_units(&c)
        .iter()
        .map(|u| u.as_str().to_owned())
        .collect();
    assert_eq!(names, ["a.service", "b.service"]);
    // No [watch]: the demo app's unit.
    let c = aiops_core::Config::from_toml("", path).unwrap();
    let names: Vec<String> = aiops_webhook::polled_units(&c)
        .iter()
        .map(|u| u.as_str().to_owned())
        .collect();
    assert_eq!(names, ["aiops-demo-app.service"]);
    let c = aiops_core::Config::from_toml(
        "[watch.a]\nunit = \"a.service\"\n[remediation]\nexecutor = \"demo\"\ndemo_supervisor_socket = \"/run/x.sock\"\n",
        path,
    )
    .unwrap();
    assert!(aiops_webhook::polled_units(&c).is_empty());
}

/// Every `aiops_unit_*` series the generated alert rules (crates/aiops/src/rules.rs) read is one
/// the receiver registers, with the `unit` label.
#[test]
fn the_generated_rules_read_only_series_the_receiver_exports() {
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../aiops/src/rules.rs"),
    )
    .unwrap();
    let registry = prometheus::Registry::new();
    let m = aiops_webhook::units::UnitMetrics::register(&registry);
    let unit = aiops_core::unit::UnitName::parse("x.service").unwrap();
    let state = aiops_diagnosis::unit_state::parse_show(
        "LoadState=loaded\nActiveState=failed\nNRestarts=1\nMemoryCurrent=1\nMemoryMax=2\n",
    )
    .unwrap();
    m.set(&unit, Some(&state));
    let families = registry.gather();
    let mut read = 0;
    for (at, _) in rules.match_indices("aiops_unit_") {
        let name: String = rules[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name == "aiops_unit_" {
            continue; // `aiops_unit_*` in prose
        }
        let family = families
            .iter()
            .find(|f| f.name() == name)
            .unwrap_or_else(|| panic!("the rules read {name}, which the receiver does not export"));
        assert!(
            family.get_metric().iter().all(|s| s
                .get_label()
                .iter()
                .any(|l| l.name() == "unit" && l.value() == "x.service")),
            "{name} has no unit label"
        );
        // In an expression, the selector names the unit label.
        if rules[at + name.len()..].starts_with("{{") {
            assert!(
                rules[at..].starts_with(&format!("{name}{{{{unit=")),
                "{name} is not selected by unit in the rules"
            );
            read += 1;
        }
    }
    assert!(read >= 4, "the rules read only {read} aiops_unit_ series");
}
