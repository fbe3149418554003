//! Why did this alert fire, and what (if anything) should a human approve?
//!
//! Layout, from the edge to the core:
//!
//! - [`prom`]: the Prometheus HTTP API client, the only code in the project that talks to
//!   Prometheus (blocking ureq, typed errors, PromQL label escaping).
//! - [`evidence`]: [`AlertContext`] (the alert, from a webhook or the API) and the evidence of
//!   one alert, gathered concurrently: each item keeps its exact PromQL, time and value, and a
//!   baseline over the window before the alert started.
//! - [`profile`]: evidence profiles, what to ask Prometheus about a service, as data
//!   (`profiles.toml`, embedded; extended by `diagnosis.profiles_file`), validated at load.
//! - [`catalog`]: symptom patterns → likely cause, action, risk (`catalog.toml`, embedded;
//!   replaceable by `diagnosis.catalog_file`), validated at load.
//! - [`engine`]: the pure diagnosis: sanity gate, matching, confidence, ranking, the
//!   plain-English explanation and the recommendation.
//! - [`Engine`]: gather + diagnose in one call, what the receiver and `aiops recommend` use.
//! - [`testkit`] (feature `testkit`): real Prometheus and Alertmanager processes for tests.
//!
//! Architecture invariants: the engine does no I/O (same evidence → same diagnosis); alert text
//! never enters PromQL unescaped; a unit becomes part of an `Act` recommendation only after
//! `UnitName::parse` and the allow-list both accept it; when Prometheus cannot see the service
//! the recommendation is `Blind`, never an action; an alert that maps to no watched service
//! (`[watch.NAME]`) is never diagnosed with another service's evidence and gets no action.

use std::collections::BTreeMap;

use aiops_core::config::{ActionKind, DiagnosisConfig, WatchConfig};
use aiops_core::model::{Diagnosis, OutcomeStats};
use chrono::{DateTime, Utc};

pub mod catalog;
pub mod engine;
pub mod evidence;
pub mod profile;
pub mod prom;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod unit_state;

pub use catalog::{Catalog, CatalogError};
pub use engine::diagnose;
pub use evidence::AlertContext;
pub use profile::{HttpMeasures, ProfileError, ProfileSet};
pub use prom::{Prom, PromError};

/// Why an engine cannot be built from the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Profiles(#[from] ProfileError),
}

/// Gathers evidence from Prometheus and diagnoses, with one catalog, one set of evidence
/// profiles and one configuration.
#[derive(Debug, Clone)]
pub struct Engine {
    pub prom: Prom,
    pub catalog: Catalog,
    /// The evidence profiles (built-in and `diagnosis.profiles_file`).
    pub profiles: ProfileSet,
    /// The watched services (`Config::watched`): what an alert is mapped to.
    pub watched: BTreeMap<String, WatchConfig>,
    pub config: DiagnosisConfig,
    /// Reads the alert's unit from systemd (`None`: not on this host, e.g. under `aiops demo`).
    pub units: Option<unit_state::UnitStateReader>,
}

/// How long a diagnosis waits for the unit's evidence from systemd, at most.
pub const UNIT_EVIDENCE_BUDGET: std::time::Duration = std::time::Duration::from_secs(3);

/// How far before the alert's start the unit's journal is read.
pub const JOURNAL_LEAD: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// The limits the engine reads systemd with: each command bounded well inside the budget.
pub fn engine_unit_limits() -> unit_state::Limits {
    unit_state::Limits {
        timeout: std::time::Duration::from_secs(2),
        ..unit_state::Limits::default()
    }
}

/// Starts reading the unit named by `ctx`'s `unit` label on a thread of its own; `None` when
/// the label is missing or not a valid unit name (nothing is run then).
fn start_unit_read(
    reader: &unit_state::UnitStateReader,
    ctx: &AlertContext,
    now: DateTime<Utc>,
) -> Option<(
    aiops_core::unit::UnitName,
    std::sync::mpsc::Receiver<aiops_core::model::UnitSnapshot>,
)> {
    let unit = aiops_core::unit::UnitName::parse(ctx.unit_label()?).ok()?;
    let since = (ctx.starts_at - JOURNAL_LEAD).min(now);
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = reader.clone();
    let u = unit.clone();
    std::thread::Builder::new()
        .name("unit-evidence".into())
        .spawn(move || {
            let _ = tx.send(reader.read(&u, since, now).snapshot());
        })
        .ok()?;
    Some((unit, rx))
}

/// The unit's snapshot, or one saying it was not read within [`UNIT_EVIDENCE_BUDGET`] (the
/// reader's own timeouts then end its children).
fn finish_unit_read(
    (unit, rx): (
        aiops_core::unit::UnitName,
        std::sync::mpsc::Receiver<aiops_core::model::UnitSnapshot>,
    ),
    started: std::time::Instant,
    now: DateTime<Utc>,
) -> aiops_core::model::UnitSnapshot {
    let left = UNIT_EVIDENCE_BUDGET.saturating_sub(started.elapsed());
    rx.recv_timeout(left)
        .unwrap_or_else(|_| aiops_core::model::UnitSnapshot {
            errors: vec![format!(
                "cannot read {unit} from systemd: systemctl and journalctl did not answer within {} s; the diagnosis goes on without the unit's own evidence",
                UNIT_EVIDENCE_BUDGET.as_secs()
            )],
            unit,
            collected_at: now,
            facts: Vec::new(),
            journal: None,
            dependencies: Vec::new(),
        })
}

impl Engine {
    /// The engine the configuration describes: its Prometheus, its catalog (built-in unless
    /// `diagnosis.catalog_file` names one), its evidence profiles, its watched services and
    /// its baseline window. Fails when a watched service names a profile nobody defines.
    pub fn from_config(config: &aiops_core::Config) -> Result<Self, EngineError> {
        let profiles = ProfileSet::from_config(&config.diagnosis)?;
        let watched = config.watched();
        profiles.check_watched(&watched)?;
        let catalog = Catalog::from_config_with_keys(
            &config.diagnosis,
            &profiles.keys().into_iter().map(str::to_owned).collect(),
        )?;
        Ok(Self {
            prom: Prom::new(&config.prometheus),
            catalog,
            profiles,
            watched,
            config: config.diagnosis.clone(),
            units: (config.remediation.executor == aiops_core::config::ExecutorKind::Systemd).then(
                || unit_state::UnitStateReader {
                    programs: unit_state::Programs::default(),
                    limits: engine_unit_limits(),
                },
            ),
        })
    }

    /// Gathers evidence now and diagnoses `ctx`. Never fails: an unreachable Prometheus gives a
    /// `Blind` recommendation within `prometheus.timeout_ms`. The unit named by a valid `unit`
    /// label is read from systemd at the same time (see [`unit_state`]), for at most
    /// [`UNIT_EVIDENCE_BUDGET`].
    pub fn diagnose_alert(
        &self,
        ctx: &AlertContext,
        past: impl Fn(&str, ActionKind) -> OutcomeStats,
        allowed: &BTreeMap<String, Vec<ActionKind>>,
    ) -> Diagnosis {
        self.diagnose_alert_at(ctx, Utc::now(), past, allowed)
    }

    /// As [`Engine::diagnose_alert`], with "now" given (replays, tests on recorded data).
    pub fn diagnose_alert_at(
        &self,
        ctx: &AlertContext,
        now: DateTime<Utc>,
        past: impl Fn(&str, ActionKind) -> OutcomeStats,
        allowed: &BTreeMap<String, Vec<ActionKind>>,
    ) -> Diagnosis {
        let started = std::time::Instant::now();
        let unit = self
            .units
            .as_ref()
            .and_then(|r| start_unit_read(r, ctx, now));
        let mut ev = evidence::gather(
            &self.prom,
            ctx,
            &self.profiles,
            &self.watched,
            self.config.baseline_secs,
            now,
        );
        if let Some(pending) = unit {
            ev.unit = Some(finish_unit_read(pending, started, now));
            ev.id = evidence::evidence_id(&ev);
        }
        diagnose(ctx, &ev, &self.catalog, past, allowed)
    }
}
