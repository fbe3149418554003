//! Why did this alert fire, and what (if anything) should a human approve?
//!
//! Layout, from the edge to the core:
//!
//! - [`prom`]: the Prometheus HTTP API client, the only code in the project that talks to
//!   Prometheus (blocking ureq, typed errors, PromQL label escaping).
//! - [`evidence`]: [`AlertContext`] (the alert, from a webhook or the API) and the evidence of
//!   one alert, gathered concurrently: each item keeps its exact PromQL, time and value, and a
//!   baseline over the window before the alert started.
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
//! the recommendation is `Blind`, never an action.

use std::collections::BTreeMap;

use aiops_core::config::{ActionKind, DiagnosisConfig};
use aiops_core::model::{Diagnosis, OutcomeStats};
use chrono::{DateTime, Utc};

pub mod catalog;
pub mod engine;
pub mod evidence;
pub mod prom;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod unit_state;

pub use catalog::{Catalog, CatalogError};
pub use engine::diagnose;
pub use evidence::AlertContext;
pub use prom::{Prom, PromError};

/// Gathers evidence from Prometheus and diagnoses, with one catalog and configuration.
#[derive(Debug, Clone)]
pub struct Engine {
    pub prom: Prom,
    pub catalog: Catalog,
    pub config: DiagnosisConfig,
}

impl Engine {
    /// The engine the configuration describes: its Prometheus, its catalog (built-in unless
    /// `diagnosis.catalog_file` names one), its baseline window and job.
    pub fn from_config(config: &aiops_core::Config) -> Result<Self, CatalogError> {
        Ok(Self {
            prom: Prom::new(&config.prometheus),
            catalog: Catalog::from_config(&config.diagnosis)?,
            config: config.diagnosis.clone(),
        })
    }

    /// Gathers evidence now and diagnoses `ctx`. Never fails: an unreachable Prometheus gives a
    /// `Blind` recommendation within `prometheus.timeout_ms`.
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
        let ev = evidence::gather(&self.prom, ctx, &self.config, now);
        diagnose(ctx, &ev, &self.catalog, past, allowed)
    }
}
