//! The data that crosses crate boundaries: evidence, diagnoses and recommendations.
//!
//! `aiops-diagnosis` produces these, `aiops-actions` stores them with pending actions and in the
//! audit log, `aiops-webhook` renders them for Slack and `aiops` prints them. They serialize to
//! the JSON kept in the state directory, so a field rename is a schema change.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::ActionKind;
use crate::unit::UnitName;

/// What a number measures, for formatting (`23.1%`, `412 ms`, `18.2 MiB`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueUnit {
    /// 0..1, shown as a percentage.
    Ratio,
    Seconds,
    Bytes,
    /// CPU cores in use (rate of CPU seconds).
    Cores,
    PerSecond,
    /// Growth rate of a byte count, e.g. memory.
    BytesPerSecond,
    Count,
    /// 0 or 1.
    Bool,
}

impl ValueUnit {
    /// Formats `v` for people: `23.1%`, `412 ms`, `18.2 MiB`, `0.93 cores`, `12.0/s`.
    pub fn format(self, v: f64) -> String {
        if v.is_nan() {
            return "NaN".into();
        }
        match self {
            ValueUnit::Ratio => format!("{:.1}%", v * 100.0),
            ValueUnit::Seconds if v.abs() < 0.001 && v != 0.0 => format!("{:.2} ms", v * 1000.0),
            ValueUnit::Seconds if v.abs() < 0.01 => format!("{:.1} ms", v * 1000.0),
            ValueUnit::Seconds if v.abs() < 1.0 => format!("{:.0} ms", v * 1000.0),
            ValueUnit::Seconds if v.abs() < 120.0 => format!("{v:.1} s"),
            ValueUnit::Seconds if v.abs() < 7200.0 => format!("{:.1} min", v / 60.0),
            ValueUnit::Seconds => format!("{:.1} h", v / 3600.0),
            ValueUnit::Bytes => format!("{:.1} MiB", v / (1024.0 * 1024.0)),
            ValueUnit::Cores => format!("{v:.2} cores"),
            ValueUnit::PerSecond => format!("{v:.1}/s"),
            ValueUnit::BytesPerSecond if v.abs() < 1024.0 * 1024.0 => {
                format!("{:.1} KiB/s", v / 1024.0)
            }
            ValueUnit::BytesPerSecond => format!("{:.1} MiB/s", v / (1024.0 * 1024.0)),
            ValueUnit::Count => format!("{v:.0}"),
            ValueUnit::Bool => (if v != 0.0 { "yes" } else { "no" }).into(),
        }
    }
}

/// One measured fact, with the PromQL that produced it so anyone can replay it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceItem {
    /// Stable key the catalog refers to, e.g. `error_ratio`, `latency_p99`.
    pub key: String,
    /// Words for people, e.g. "error ratio".
    pub label: String,
    pub unit: ValueUnit,
    /// Instant query evaluated at `at`.
    pub query: String,
    pub at: DateTime<Utc>,
    /// `None`: the query returned no series.
    pub value: Option<f64>,
    /// The same measure over the baseline window, if one applies.
    pub baseline_query: Option<String>,
    pub baseline: Option<f64>,
    /// The query failed (not the same as no data).
    pub error: Option<String>,
}

impl EvidenceItem {
    /// `23.1% (baseline 0.4%)`, `no data`, or `query failed: ...`.
    pub fn describe(&self) -> String {
        if let Some(e) = &self.error {
            return format!("query failed: {e}");
        }
        let Some(v) = self.value else {
            return "no data".into();
        };
        match self.baseline {
            Some(b) => format!("{} (baseline {})", self.unit.format(v), self.unit.format(b)),
            None => self.unit.format(v),
        }
    }
}

/// Whether Prometheus answered at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "detail", rename_all = "snake_case")]
pub enum PrometheusHealth {
    Reachable,
    Unreachable(String),
}

/// Everything gathered for one diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Content-derived id (`ev-` + 12 hex digits), referenced by the audit log.
    pub id: String,
    pub gathered_at: DateTime<Utc>,
    pub prometheus_url: String,
    pub prometheus: PrometheusHealth,
    /// The watched target's `up`: `None` when Prometheus does not scrape it at all.
    pub target_up: Option<bool>,
    pub items: Vec<EvidenceItem>,
    /// The alert's unit as systemd sees it, when its `unit` label is a valid unit name and the
    /// engine reads systemd (absent in evidence stored before it did, and then not hashed into
    /// the id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<UnitSnapshot>,
    /// Which watched service and evidence profiles the items come from (absent in evidence
    /// stored before profiles existed, and then not hashed into the id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<EvidenceScope>,
}

/// Which watched service (`[watch.NAME]`) an alert maps to and which evidence profiles were
/// read for it (see docs/PROFILES.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceScope {
    /// The watched service; `None` when the alert maps to none (then no profile is read and
    /// nothing is proposed).
    pub service: Option<String>,
    /// The alert label that mapped it: `service`, `unit` or `job`.
    pub matched_by: Option<String>,
    /// The Prometheus job the profiles were read for.
    pub job: Option<String>,
    /// Where the job came from: `the alert's job label` or `watch.NAME.job`.
    pub job_from: Option<String>,
    /// The profiles read, in order.
    pub profiles: Vec<String>,
    pub profiles_from: ProfileSource,
    /// What is missing and why, in words (not watched, detection failed, a profile skipped).
    pub notes: Vec<String>,
}

/// How the profiles of a diagnosis were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileSource {
    /// Listed by the watched service's `profiles`.
    Configured,
    /// Detected from the metric names Prometheus holds for the job.
    Detected,
    /// None applied (not watched, or nothing detected).
    None,
}

impl ProfileSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileSource::Configured => "configured",
            ProfileSource::Detected => "detected",
            ProfileSource::None => "none",
        }
    }
}

impl Evidence {
    pub fn get(&self, key: &str) -> Option<&EvidenceItem> {
        self.items.iter().find(|i| i.key == key)
    }

    /// The current value of `key`, if measured.
    pub fn value(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(|i| i.value)
    }
}

/// A unit's own evidence from systemd at one moment, as it is stored and shown: every fact with
/// the command it came from, a summary of its systemd journal, the state of the units it
/// `Requires=` or is `BindsTo=`, and what could not be read (and what to grant).
///
/// Produced by `aiops_diagnosis::unit_state`; kept with the diagnosis, shown by `aiops show`,
/// summarized in Slack, and written into the audit log before a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitSnapshot {
    pub unit: UnitName,
    pub collected_at: DateTime<Utc>,
    /// In a fixed order; keys are `unit.*`, as catalog conditions name them.
    pub facts: Vec<UnitFact>,
    /// `None` when the journal could not be read (see `errors`).
    pub journal: Option<JournalDigest>,
    /// The units it `Requires=` or is `BindsTo=`, as read (empty when it has none or they could
    /// not be read).
    #[serde(default)]
    pub dependencies: Vec<DependencyState>,
    /// What could not be read, each naming the command and what to do.
    #[serde(default)]
    pub errors: Vec<String>,
}

impl UnitSnapshot {
    pub fn fact(&self, key: &str) -> Option<&UnitFact> {
        self.facts.iter().find(|f| f.key == key)
    }

    /// The number a fact holds (booleans are 0 or 1), if known.
    pub fn number(&self, key: &str) -> Option<f64> {
        match self.fact(key)?.value {
            UnitFactValue::Number { value, .. } if value.is_finite() => Some(value),
            _ => None,
        }
    }

    /// The text a fact holds, if known.
    pub fn text(&self, key: &str) -> Option<&str> {
        match &self.fact(key)?.value {
            UnitFactValue::Text(t) => Some(t),
            _ => None,
        }
    }

    /// Whether systemd knows the unit at all (`LoadState=loaded`).
    pub fn loaded(&self) -> bool {
        self.number("unit.loaded") == Some(1.0)
    }
}

/// One fact about a unit and exactly where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitFact {
    /// `unit.restarts`, `unit.failed`, `unit.journal_errors`, ...
    pub key: String,
    /// Words for people: "automatic restarts".
    pub label: String,
    pub value: UnitFactValue,
    /// The property or journal field(s): `NRestarts`, `PRIORITY<=3`.
    pub from: String,
    /// The command(s) it was read from, each a line to paste into a shell.
    pub commands: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitFactValue {
    Number {
        value: f64,
        unit: ValueUnit,
    },
    Text(String),
    /// systemd did not give it.
    Unknown,
}

impl UnitFactValue {
    pub fn describe(&self) -> String {
        match self {
            UnitFactValue::Number { value, unit } => unit.format(*value),
            UnitFactValue::Text(t) => t.clone(),
            UnitFactValue::Unknown => "unknown".into(),
        }
    }
}

/// What the unit's systemd journal said since shortly before the alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalDigest {
    pub since: DateTime<Utc>,
    /// The command it was read with.
    pub command: String,
    pub entries: u32,
    /// By `PRIORITY`, index 0 (emerg) ..= 7 (debug).
    pub by_priority: [u32; 8],
    pub oom_kills: u32,
    pub core_dumps: u32,
    pub last_oom_kill: Option<JournalLine>,
    pub last_core_dump: Option<JournalLine>,
    /// The newest error lines (priority <= 3), oldest first, bounded in number and length,
    /// control characters replaced.
    pub last_errors: Vec<JournalLine>,
    /// Which bound cut the read, if any ("the oldest entries are left out").
    pub truncated: Option<String>,
    /// journalctl could read only the caller's own entries: what it said, and what to grant.
    pub access_limited: Option<String>,
}

impl JournalDigest {
    /// Entries with priority <= 3.
    pub fn errors(&self) -> u32 {
        self.by_priority[..=3].iter().sum()
    }

    pub fn warnings(&self) -> u32 {
        self.by_priority[4]
    }
}

/// One journal line of an excerpt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalLine {
    pub at: Option<DateTime<Utc>>,
    pub priority: Option<u8>,
    /// The process name (`_COMM`), else its syslog identifier.
    pub source: Option<String>,
    pub text: String,
    /// The message was longer (or multi-line) and was cut.
    pub truncated: bool,
    /// Logged by systemd itself (PID 1), not by the service.
    #[serde(default)]
    pub from_systemd: bool,
}

/// A unit another one `Requires=` or is `BindsTo=`, as `systemctl show` gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DependencyState {
    /// As systemd prints it (any unit type; for reading, never for acting).
    pub unit: String,
    /// `Requires`, `BindsTo`, or `Requires,BindsTo`.
    pub relation: String,
    pub load_state: Option<String>,
    pub active_state: Option<String>,
    pub sub_state: Option<String>,
    pub result: Option<String>,
    /// It is failed, or missing, or stopped while the unit needs it.
    pub down: bool,
}

/// How much harm an action can do if the diagnosis is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    Low,
    Medium,
    High,
}

impl Risk {
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
        }
    }
}

/// One candidate explanation, from a catalog entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hypothesis {
    /// The catalog entry's id.
    pub id: String,
    /// Plain-English cause, e.g. "the process is in a bad state (errors with normal load)".
    pub cause: String,
    /// 0..1.
    pub confidence: f64,
    /// What to do about it; `None` means "no action will help".
    pub action: Option<ActionKind>,
    pub risk: Risk,
    /// Why this entry matched, with the numbers.
    pub reasoning: String,
}

/// What the tool proposes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Recommendation {
    /// Carry out `action` on `unit` once a human approves.
    Act {
        action: ActionKind,
        unit: UnitName,
        risk: Risk,
        confidence: f64,
        /// The hypothesis id this follows from.
        hypothesis: String,
    },
    /// Nothing we can do would help (e.g. a traffic surge); say why.
    NoAction { reason: String },
    /// We cannot see enough to judge (Prometheus unreachable, target not scraped).
    Blind { reason: String },
    /// An action would match, but it is not allowed (unit not allow-listed, invalid label,
    /// breaker open, rate limit); say which.
    Refused { reason: String },
}

impl Recommendation {
    /// Whether this proposes something a human can approve.
    pub fn is_actionable(&self) -> bool {
        matches!(self, Recommendation::Act { .. })
    }
}

/// The engine's verdict on one alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub alertname: String,
    /// Labels of the alert as received (`service`, `unit`, ...), unvalidated.
    pub labels: std::collections::BTreeMap<String, String>,
    pub evidence: Evidence,
    /// Ranked, most likely first.
    pub hypotheses: Vec<Hypothesis>,
    pub recommendation: Recommendation,
    /// Plain English with the numbers, several sentences.
    pub explanation: String,
}

/// How an action fared before for one alert: feeds the confidence of later recommendations and
/// the circuit breaker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeStats {
    pub succeeded: u32,
    pub failed: u32,
    /// Failed verifications since the last success (what the breaker counts).
    pub consecutive_failures: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_format_for_people() {
        assert_eq!(ValueUnit::Ratio.format(0.2312), "23.1%");
        assert_eq!(ValueUnit::Seconds.format(0.412), "412 ms");
        assert_eq!(ValueUnit::Seconds.format(0.0042), "4.2 ms");
        assert_eq!(ValueUnit::Seconds.format(0.00031), "0.31 ms");
        assert_eq!(ValueUnit::Seconds.format(35.0), "35.0 s");
        assert_eq!(ValueUnit::Bytes.format(18.2 * 1024.0 * 1024.0), "18.2 MiB");
        assert_eq!(ValueUnit::Cores.format(0.934), "0.93 cores");
        assert_eq!(ValueUnit::Bool.format(1.0), "yes");
        assert_eq!(ValueUnit::BytesPerSecond.format(51_200.0), "50.0 KiB/s");
        assert_eq!(
            ValueUnit::BytesPerSecond.format(3.0 * 1024.0 * 1024.0),
            "3.0 MiB/s"
        );
    }
}
