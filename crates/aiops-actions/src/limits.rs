//! Safety limits that survive restarts: `<state_dir>/limits.json`.
//!
//! Read and written only under the store's lock (see [`crate::store::Locked::limits`]), so the
//! check ("is the unit in its cooldown?") and the booking ("an action starts now") are one step
//! for every process. The checks themselves are pure functions of the recorded runs and a clock.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use aiops_core::config::ActionKind;
use aiops_core::fsutil::{self, FsError};
use aiops_core::model::OutcomeStats;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::store::StoreError;

/// Schema version of `limits.json`.
pub const LIMITS_SCHEMA: u32 = 1;

/// Runs older than this are forgotten (longer than any cooldown, hour or start-limit interval
/// we honour).
const KEEP: chrono::TimeDelta = chrono::TimeDelta::days(2);

/// One action that started executing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub unit: String,
    pub kind: ActionKind,
    pub at: DateTime<Utc>,
}

/// What `limits.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitsState {
    pub schema: u32,
    /// Every action started in the last two days, oldest first.
    pub runs: Vec<Run>,
    /// Outcomes per `alertname/action` (e.g. `HighErrorRatio/restart`).
    pub outcomes: BTreeMap<String, OutcomeStats>,
}

impl Default for LimitsState {
    fn default() -> Self {
        Self {
            schema: LIMITS_SCHEMA,
            runs: Vec::new(),
            outcomes: BTreeMap::new(),
        }
    }
}

/// systemd's start rate limit of a unit (`StartLimitBurst` within `StartLimitIntervalUSec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartLimit {
    pub burst: u32,
    /// `None`: `infinity` or 0, i.e. no rate limiting.
    pub interval: Option<Duration>,
}

/// The key of an outcome record.
pub fn outcome_key(alertname: &str, kind: ActionKind) -> String {
    format!("{alertname}/{kind}")
}

impl LimitsState {
    pub const FILE: &str = "limits.json";

    pub fn load(path: &Path) -> Result<Self, StoreError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(FsError::new("cannot read", path, e).into()),
        };
        #[derive(Deserialize)]
        struct Probe {
            schema: u32,
        }
        match serde_json::from_slice::<Probe>(&bytes) {
            Ok(p) if p.schema > LIMITS_SCHEMA => {
                return Err(StoreError::FutureSchema {
                    path: path.to_owned(),
                    found: p.schema,
                    supported: LIMITS_SCHEMA,
                });
            }
            _ => {}
        }
        match serde_json::from_slice::<Self>(&bytes) {
            Ok(s) => Ok(s),
            // The limits must never silently reset to "no cooldown": leave the file where it
            // is and refuse to act until someone looks.
            Err(e) => Err(StoreError::LimitsUnreadable {
                path: path.to_owned(),
                message: e.to_string(),
            }),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| StoreError::Encode {
            what: "limits".into(),
            source,
        })?;
        fsutil::write_atomic(path, &bytes)?;
        Ok(())
    }

    /// Books an action that starts now and forgets old runs.
    pub fn record_run(&mut self, unit: &str, kind: ActionKind, at: DateTime<Utc>) {
        self.runs.retain(|r| at - r.at < KEEP);
        self.runs.push(Run {
            unit: unit.to_owned(),
            kind,
            at,
        });
    }

    /// When the unit's cooldown ends, if it has not yet.
    pub fn cooldown_until(
        &self,
        unit: &str,
        now: DateTime<Utc>,
        cooldown: Duration,
    ) -> Option<DateTime<Utc>> {
        let cooldown = chrono::TimeDelta::from_std(cooldown).unwrap_or(chrono::TimeDelta::MAX);
        self.runs
            .iter()
            .filter(|r| r.unit == unit)
            .map(|r| r.at + cooldown)
            .max()
            .filter(|until| *until > now)
    }

    /// Actions started in the hour before `now`, over all units.
    pub fn runs_last_hour(&self, now: DateTime<Utc>) -> usize {
        self.runs
            .iter()
            .filter(|r| now - r.at < chrono::TimeDelta::hours(1))
            .count()
    }

    /// When the oldest run of the last hour drops out of the window.
    pub fn hourly_slot_frees_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.runs
            .iter()
            .filter(|r| now - r.at < chrono::TimeDelta::hours(1))
            .map(|r| r.at + chrono::TimeDelta::hours(1))
            .min()
    }

    /// `Some(explanation)` when one more restart of `unit` now would exceed systemd's start limit,
    /// counting our own restarts within its interval.
    pub fn start_limit_would_trip(
        &self,
        unit: &str,
        now: DateTime<Utc>,
        limit: StartLimit,
    ) -> Option<String> {
        let interval = limit.interval?;
        if limit.burst == 0 {
            return None;
        }
        let window = chrono::TimeDelta::from_std(interval).unwrap_or(chrono::TimeDelta::MAX);
        let ours = self
            .runs
            .iter()
            .filter(|r| r.unit == unit && r.kind == ActionKind::Restart && now - r.at < window)
            .count() as u32;
        (ours + 1 > limit.burst).then(|| {
            format!(
                "restarting {unit} now would trip systemd's start limit: it allows {} starts within {}, and aiops restarted it {ours} time(s) in that window; wait, or raise StartLimitBurst",
                limit.burst,
                format_duration(interval)
            )
        })
    }

    pub fn outcome(&self, alertname: &str, kind: ActionKind) -> OutcomeStats {
        self.outcomes
            .get(&outcome_key(alertname, kind))
            .copied()
            .unwrap_or_default()
    }

    /// Records a verification result (what the breaker counts).
    pub fn record_outcome(&mut self, alertname: &str, kind: ActionKind, fixed: bool) {
        let s = self
            .outcomes
            .entry(outcome_key(alertname, kind))
            .or_default();
        if fixed {
            s.succeeded += 1;
            s.consecutive_failures = 0;
        } else {
            s.failed += 1;
            s.consecutive_failures += 1;
        }
    }

    /// Closes the breaker again (an operator decided to try once more).
    pub fn reset_breaker(&mut self, alertname: &str, kind: ActionKind) -> bool {
        match self.outcomes.get_mut(&outcome_key(alertname, kind)) {
            Some(s) if s.consecutive_failures > 0 => {
                s.consecutive_failures = 0;
                true
            }
            _ => false,
        }
    }
}

/// `1min 30s`, `10s`, `250ms`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_millis() != 0 && secs < 60 {
        return format!("{} ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = Vec::new();
    if h > 0 {
        out.push(format!("{h}h"));
    }
    if m > 0 {
        out.push(format!("{m}min"));
    }
    if s > 0 || out.is_empty() {
        out.push(format!("{s}s"));
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn cooldown_hourly_limit_and_start_limit() {
        let mut l = LimitsState::default();
        l.record_run("a.service", ActionKind::Restart, t("2026-01-01T12:00:00Z"));
        let now = t("2026-01-01T12:02:00Z");
        assert_eq!(
            l.cooldown_until("a.service", now, Duration::from_secs(300)),
            Some(t("2026-01-01T12:05:00Z"))
        );
        assert_eq!(
            l.cooldown_until("b.service", now, Duration::from_secs(300)),
            None
        );
        assert_eq!(l.runs_last_hour(now), 1);
        assert_eq!(l.runs_last_hour(t("2026-01-01T13:00:01Z")), 0);
        let limit = StartLimit {
            burst: 2,
            interval: Some(Duration::from_secs(600)),
        };
        assert!(l.start_limit_would_trip("a.service", now, limit).is_none());
        l.record_run("a.service", ActionKind::Restart, now);
        let msg = l.start_limit_would_trip("a.service", now, limit).unwrap();
        assert!(
            msg.contains("start limit") && msg.contains("2 starts within 10min"),
            "{msg}"
        );
        assert!(
            l.start_limit_would_trip(
                "a.service",
                now,
                StartLimit {
                    burst: 2,
                    interval: None
                }
            )
            .is_none()
        );
    }

    #[test]
    fn the_breaker_counts_consecutive_failures() {
        let mut l = LimitsState::default();
        for _ in 0..3 {
            l.record_outcome("HighErrorRatio", ActionKind::Restart, false);
        }
        assert_eq!(
            l.outcome("HighErrorRatio", ActionKind::Restart)
                .consecutive_failures,
            3
        );
        l.record_outcome("HighErrorRatio", ActionKind::Restart, true);
        let s = l.outcome("HighErrorRatio", ActionKind::Restart);
        assert_eq!((s.succeeded, s.failed, s.consecutive_failures), (1, 3, 0));
        l.record_outcome("HighErrorRatio", ActionKind::Restart, false);
        assert!(l.reset_breaker("HighErrorRatio", ActionKind::Restart));
        assert!(!l.reset_breaker("HighErrorRatio", ActionKind::Restart));
    }
}
