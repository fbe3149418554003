//! The watched units' own state from systemd, exported as metrics.
//!
//! Every `interval` a thread runs `systemctl show` (through `aiops-diagnosis`' unit-state reader:
//! a fixed argv, no shell, bounded in time and size) for each watched unit and sets the
//! `aiops_unit_*` gauges the generated alert rules read (`aiops rules`): whether the unit is
//! failed, its automatic restarts, its memory against `MemoryMax=`, whether it hit its start
//! limit. So a host needs no node_exporter for the rules about its units, and the numbers are
//! the ones the diagnosis quotes. A unit that cannot be read has `aiops_unit_up 0` and no other
//! series (nothing stale stays behind).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aiops_core::unit::UnitName;
use aiops_diagnosis::unit_state::{ActiveState, Limit, ServiceResult, UnitState, UnitStateReader};
use prometheus::{GaugeVec, IntGaugeVec, Opts, Registry};

/// The `ActiveState=` values exported as `aiops_unit_state{state=...}` (one of them is 1).
pub const STATES: [&str; 7] = [
    "active",
    "reloading",
    "inactive",
    "failed",
    "activating",
    "deactivating",
    "other",
];

/// The gauges, registered on the receiver's registry.
#[derive(Debug, Clone)]
pub struct UnitMetrics {
    up: IntGaugeVec,
    state: IntGaugeVec,
    restarts: IntGaugeVec,
    memory_current: GaugeVec,
    memory_max: GaugeVec,
    tasks: GaugeVec,
    cpu_seconds: GaugeVec,
    start_limit_hit: IntGaugeVec,
    oom_killed: IntGaugeVec,
}

fn int_gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unit metrics are registered once");
    g
}

fn gauge(registry: &Registry, name: &str, help: &str) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), &["unit"]).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unit metrics are registered once");
    g
}

impl UnitMetrics {
    pub fn register(registry: &Registry) -> Self {
        Self {
            up: int_gauge(
                registry,
                "aiops_unit_up",
                "1 if the last `systemctl show` of the watched unit succeeded and systemd knows it.",
                &["unit"],
            ),
            state: int_gauge(
                registry,
                "aiops_unit_state",
                "The watched unit's ActiveState: 1 for the current state, 0 for the others.",
                &["unit", "state"],
            ),
            restarts: int_gauge(
                registry,
                "aiops_unit_restarts_total",
                "NRestarts: automatic restarts (Restart=) since the unit was last started by hand; drops to 0 then.",
                &["unit"],
            ),
            memory_current: gauge(
                registry,
                "aiops_unit_memory_current_bytes",
                "MemoryCurrent: the unit's cgroup memory.",
            ),
            memory_max: gauge(
                registry,
                "aiops_unit_memory_max_bytes",
                "MemoryMax= of the unit, when it is finite (absent when unlimited).",
            ),
            tasks: gauge(
                registry,
                "aiops_unit_tasks",
                "TasksCurrent: processes and threads in the unit's cgroup.",
            ),
            cpu_seconds: gauge(
                registry,
                "aiops_unit_cpu_seconds_total",
                "CPUUsageNSec in seconds: CPU time the unit's cgroup used since it started.",
            ),
            start_limit_hit: int_gauge(
                registry,
                "aiops_unit_start_limit_hit",
                "1 if the unit's last run ended with Result=start-limit-hit: systemd no longer starts it by itself.",
                &["unit"],
            ),
            oom_killed: int_gauge(
                registry,
                "aiops_unit_oom_killed",
                "1 if the unit's last run ended with Result=oom-kill.",
                &["unit"],
            ),
        }
    }

    /// Sets the series of `unit` from a reading (`None`: it could not be read). Each series is
    /// set or removed in place, never removed and re-added, so a scrape in between never sees a
    /// watched unit without its series (which would reset a pending alert's `for:`).
    pub fn set(&self, unit: &UnitName, reading: Option<&UnitState>) {
        let u = unit.as_str();
        let known = reading.filter(|s| {
            !matches!(
                s.load_state,
                Some(aiops_diagnosis::unit_state::LoadState::NotFound) | None
            )
        });
        self.up
            .with_label_values(&[u])
            .set(i64::from(known.is_some()));
        // One of STATES; any other (or no) ActiveState= is "other".
        let current = known.map(|s| {
            s.active_state
                .as_ref()
                .map(ActiveState::as_str)
                .filter(|a| STATES.contains(a))
                .unwrap_or("other")
        });
        for state in STATES {
            put_int(
                &self.state,
                &[u, state],
                current.map(|c| i64::from(state == c)),
            );
        }
        let result = |r: ServiceResult| known.map(|s| i64::from(s.result == Some(r)));
        put_int(
            &self.restarts,
            &[u],
            known.and_then(|s| s.restarts).map(i64::from),
        );
        put_int(
            &self.start_limit_hit,
            &[u],
            result(ServiceResult::StartLimitHit),
        );
        put_int(&self.oom_killed, &[u], result(ServiceResult::OomKill));
        put(
            &self.memory_current,
            u,
            known.and_then(|s| s.memory_current).map(|m| m as f64),
        );
        put(
            &self.memory_max,
            u,
            known.and_then(|s| match s.memory_max {
                Some(Limit::Max(m)) => Some(m as f64),
                _ => None,
            }),
        );
        put(
            &self.tasks,
            u,
            known.and_then(|s| s.tasks_current).map(|t| t as f64),
        );
        put(
            &self.cpu_seconds,
            u,
            known.and_then(|s| s.cpu_usage).map(|c| c.as_secs_f64()),
        );
    }

    /// Reads every unit once and sets its series.
    pub fn refresh(&self, reader: &UnitStateReader, units: &[UnitName]) {
        for unit in units {
            match reader.read_show(unit) {
                Ok(r) => self.set(unit, Some(&r.state)),
                Err(e) => {
                    tracing::debug!(unit = %unit, error = %e, "cannot read the watched unit's state");
                    self.set(unit, None);
                }
            }
        }
    }
}

/// Polls `units` every `interval` on a thread of its own until `stop` is set. Nothing is started
/// for an empty list.
pub fn spawn_poller(
    metrics: UnitMetrics,
    reader: UnitStateReader,
    units: Vec<UnitName>,
    interval: Duration,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Option<std::thread::JoinHandle<()>>> {
    if units.is_empty() {
        return Ok(None);
    }
    std::thread::Builder::new()
        .name("unit-metrics".into())
        .spawn(move || {
            let step = Duration::from_millis(100);
            while !stop.load(Ordering::Acquire) {
                metrics.refresh(&reader, &units);
                let mut waited = Duration::ZERO;
                while waited < interval && !stop.load(Ordering::Acquire) {
                    std::thread::sleep(step);
                    waited += step;
                }
            }
        })
        .map(Some)
}

/// Sets the series to `value`, or removes it when there is none.
fn put_int(g: &IntGaugeVec, labels: &[&str], value: Option<i64>) {
    match value {
        Some(v) => g.with_label_values(labels).set(v),
        None => {
            let _ = g.remove_label_values(labels);
        }
    }
}

/// [`put_int`] for a float gauge of one `unit` label.
fn put(g: &GaugeVec, unit: &str, value: Option<f64>) {
    match value {
        Some(v) => g.with_label_values(&[unit]).set(v),
        None => {
            let _ = g.remove_label_values(&[unit]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aiops_diagnosis::unit_state::parse_show;
    use prometheus::Encoder;

    const SHOW: &str = "\
LoadState=loaded
ActiveState=failed
SubState=failed
Result=oom-kill
NRestarts=4
MemoryCurrent=104857600
MemoryMax=134217728
TasksCurrent=7
CPUUsageNSec=2500000000
";

    fn text(registry: &Registry) -> String {
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_reading_becomes_the_unit_series_and_an_unreadable_unit_leaves_only_up_0() {
        let registry = Registry::new();
        let m = UnitMetrics::register(&registry);
        let unit = UnitName::parse("myapp.service").unwrap();
        let state = parse_show(SHOW).unwrap();
        m.set(&unit, Some(&state));
        let t = text(&registry);
        for line in [
            "aiops_unit_up{unit=\"myapp.service\"} 1",
            "aiops_unit_state{state=\"failed\",unit=\"myapp.service\"} 1",
            "aiops_unit_state{state=\"active\",unit=\"myapp.service\"} 0",
            "aiops_unit_restarts_total{unit=\"myapp.service\"} 4",
            "aiops_unit_memory_current_bytes{unit=\"myapp.service\"} 104857600",
            "aiops_unit_memory_max_bytes{unit=\"myapp.service\"} 134217728",
            "aiops_unit_tasks{unit=\"myapp.service\"} 7",
            "aiops_unit_cpu_seconds_total{unit=\"myapp.service\"} 2.5",
            "aiops_unit_oom_killed{unit=\"myapp.service\"} 1",
            "aiops_unit_start_limit_hit{unit=\"myapp.service\"} 0",
        ] {
            assert!(t.contains(line), "{line} missing from:\n{t}");
        }
        m.set(&unit, None);
        let t = text(&registry);
        assert!(t.contains("aiops_unit_up{unit=\"myapp.service\"} 0"), "{t}");
        assert!(!t.contains("aiops_unit_state{"), "{t}");
        assert!(!t.contains("aiops_unit_memory_current_bytes{"), "{t}");
    }

    #[test]
    fn an_unlimited_memory_max_exports_no_limit_series() {
        let registry = Registry::new();
        let m = UnitMetrics::register(&registry);
        let unit = UnitName::parse("myapp.service").unwrap();
        let state = parse_show(
            "LoadState=loaded\nActiveState=active\nMemoryCurrent=1024\nMemoryMax=infinity\n",
        )
        .unwrap();
        m.set(&unit, Some(&state));
        let t = text(&registry);
        assert!(
            t.contains("aiops_unit_memory_current_bytes{unit=\"myapp.service\"} 1024"),
            "{t}"
        );
        assert!(!t.contains("aiops_unit_memory_max_bytes{"), "{t}");
    }
}
