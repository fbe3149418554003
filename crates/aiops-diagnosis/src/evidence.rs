//! Evidence for one firing alert, gathered concurrently from Prometheus.
//!
//! [`plan`] decides *what* to ask (pure: the keys, labels, units and exact PromQL of every item);
//! [`gather`] asks it and returns an [`Evidence`] whose every item keeps its own query,
//! evaluation time and value so anyone can replay it in the Prometheus UI.
//!
//! How values are fetched is an implementation detail that never shows in the evidence:
//! [`evaluate`] asks all "now" queries in ONE batched request and all baselines in a second one,
//! both at once ([`Prom::instant_batch`]; two HTTP calls instead of one per query). If a batch
//! fails although Prometheus answered (one bad sub-query fails the whole union), every query of
//! that batch is asked on its own ([`evaluate_each`]), so one bad item cannot blind the whole
//! diagnosis, and only the failing item carries an error. If Prometheus cannot be reached, that
//! is not retried: every item carries the error and the evidence says so.
//!
//! Time: "now" items are evaluated at the gathering time; baseline items at the moment the alert
//! started, over the preceding `diagnosis.baseline_secs` (default 1 h), and their query pins that
//! moment with PromQL's `@` modifier, so a baseline query gives the same answer whenever it is
//! replayed.
//!
//! What to ask comes from evidence profiles ([`crate::profile`]): [`gather`] maps the alert to
//! a watched service ([`watched_service`]: its `service` label, else its `unit` label, else its
//! `job` label, against `[watch.NAME]`), takes that service's configured profiles or detects
//! them from the metric names Prometheus holds for the job (ONE bounded call,
//! [`Prom::metric_names`]), and plans their items ([`plan_profiles`]). An alert that maps to no
//! watched service gets no profile at all, never another service's: only its own expression and
//! value (from Prometheus' rules API) and, in the engine, its unit's systemd evidence.
//!
//! Safety: the job is the alert's `job` label only if it is a plain identifier
//! ([`crate::prom::is_plain_identifier`]), else the watched service's configured job; it, like
//! every other placeholder value, enters PromQL only through [`crate::prom::label_value`]. No
//! other alert text is ever part of a query.

use std::collections::BTreeMap;

use aiops_core::alertmanager::{Alert, ApiAlert};
use aiops_core::config::WatchConfig;
use aiops_core::model::{
    Evidence, EvidenceItem, EvidenceScope, ProfileSource, PrometheusHealth, ValueUnit,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::profile::{self, Profile, ProfileSet, Vars};
use crate::prom::{Prom, PromError, is_plain_identifier};

/// The alert a diagnosis is about, whichever way it arrived (webhook or API v2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertContext {
    pub alertname: String,
    /// As received, unvalidated.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: DateTime<Utc>,
    pub fingerprint: String,
    /// Alertmanager's group key, when the alert came in a webhook notification.
    #[serde(default)]
    pub group_key: Option<String>,
}

impl AlertContext {
    /// From an alert inside a webhook notification (pass the notification's `groupKey`).
    pub fn from_alert(alert: &Alert, group_key: Option<&str>) -> Self {
        Self {
            alertname: alert.labels.get("alertname").cloned().unwrap_or_default(),
            labels: alert.labels.clone(),
            annotations: alert.annotations.clone(),
            starts_at: alert.starts_at,
            fingerprint: alert.fingerprint.clone(),
            group_key: group_key.map(str::to_owned),
        }
    }

    /// From an alert listed by Alertmanager's `GET /api/v2/alerts`.
    pub fn from_api_alert(alert: &ApiAlert) -> Self {
        Self {
            alertname: alert.labels.get("alertname").cloned().unwrap_or_default(),
            labels: alert.labels.clone(),
            annotations: alert.annotations.clone(),
            starts_at: alert.starts_at,
            fingerprint: alert.fingerprint.clone(),
            group_key: None,
        }
    }

    /// The `unit` label as sent (validate with `UnitName::parse` before any use).
    pub fn unit_label(&self) -> Option<&str> {
        self.labels.get("unit").map(String::as_str)
    }

    /// The alert's `job` label if it is a plain identifier; `None` otherwise (a hostile or
    /// missing label is never used).
    pub fn plain_job(&self) -> Option<&str> {
        self.labels
            .get("job")
            .map(String::as_str)
            .filter(|j| is_plain_identifier(j))
    }
}

/// Stable keys of the evidence items, as the catalog names them.
pub mod keys {
    pub const ERROR_RATIO: &str = "error_ratio";
    pub const REQUEST_RATE: &str = "request_rate";
    pub const LATENCY_P50: &str = "latency_p50";
    pub const LATENCY_P99: &str = "latency_p99";
    pub const CPU: &str = "cpu";
    pub const MEMORY: &str = "memory";
    pub const MEMORY_GROWTH: &str = "memory_growth";
    pub const UPTIME: &str = "uptime";
    pub const RESTARTS: &str = "restarts";
    pub const CACHE_FILL: &str = "cache_fill";
    pub const CACHE_HIT_RATIO: &str = "cache_hit_ratio";
    pub const FAULT_ERRORS: &str = "fault_errors";
    pub const FAULT_CPU: &str = "fault_cpu";
    pub const FAULT_LATENCY: &str = "fault_latency";
    pub const FAULT_LEAK: &str = "fault_leak";
    pub const UP: &str = "up";
    /// Requests the job's current processes answered since they started (their counters
    /// restart with the process): verification reads it after a restart.
    pub const REQUESTS_SINCE_START: &str = "requests_since_start";
    /// The share of those requests answered with a 5xx status.
    pub const ERROR_RATIO_SINCE_START: &str = "error_ratio_since_start";
    /// The alert's own expression, for an alert that maps to no watched service.
    pub const ALERT_VALUE: &str = "alert_value";
    /// Not an item: 1 when Prometheus answered, 0 when it could not be reached.
    pub const PROMETHEUS_REACHABLE: &str = "prometheus_reachable";

    /// Every key a catalog condition may name.
    pub const ALL: &[&str] = &[
        ERROR_RATIO,
        REQUEST_RATE,
        LATENCY_P50,
        LATENCY_P99,
        CPU,
        MEMORY,
        MEMORY_GROWTH,
        UPTIME,
        RESTARTS,
        CACHE_FILL,
        CACHE_HIT_RATIO,
        FAULT_ERRORS,
        FAULT_CPU,
        FAULT_LATENCY,
        FAULT_LEAK,
        UP,
        REQUESTS_SINCE_START,
        ERROR_RATIO_SINCE_START,
        PROMETHEUS_REACHABLE,
    ];
}

/// One item to ask for: what [`gather`] will query.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedItem {
    pub key: String,
    pub label: String,
    pub unit: ValueUnit,
    pub query: String,
    pub baseline_query: Option<String>,
}

/// The longest window a recording rule of `prometheus/rules.yml` reads: the memory slope's
/// `deriv(...[1m])` (rates and quantiles use 30 s). The baseline ends this long before the alert
/// started (see [`gather`]).
pub const RULE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// How far before the alert's start detection looks for metric names.
pub const DETECTION_LOOKBACK: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// What to ask about the demo app's `job`: the built-in `aiops-demo` profile and `up` (the
/// exact queries; pure).
///
/// `baseline_end` is when the incident's signal began (see [`gather`]); `baseline_secs` the
/// window before it.
pub fn plan(job: &str, baseline_secs: u64, baseline_end: DateTime<Utc>) -> Vec<PlannedItem> {
    let set = ProfileSet::builtin();
    let demo = set
        .get(profile::DEMO_PROFILE)
        .expect("the built-in profiles hold the demo app's");
    let vars = Vars {
        job: Some(job.to_owned()),
        ..Vars::default()
    };
    plan_profiles(&[demo], &vars, baseline_secs, baseline_end).0
}

/// The items of `profiles` for `vars` (pure), followed by `up` when there is a job: the first
/// profile providing a key wins. An item whose template needs a value `vars` lacks is left out;
/// the notes say which and why.
pub fn plan_profiles(
    profiles: &[&Profile],
    vars: &Vars,
    baseline_secs: u64,
    baseline_end: DateTime<Utc>,
) -> (Vec<PlannedItem>, Vec<String>) {
    let w = duration(baseline_secs.max(60));
    let at = at_modifier(baseline_end);
    let mut items: Vec<PlannedItem> = Vec::new();
    let mut notes = Vec::new();
    for p in profiles {
        let mut skipped: BTreeMap<&'static str, Vec<&str>> = BTreeMap::new();
        for i in &p.items {
            if items.iter().any(|x| x.key == i.key) {
                continue;
            }
            let query = match i.query.render(vars, &w, &at) {
                Ok(q) => q,
                Err(missing) => {
                    skipped.entry(missing.name()).or_default().push(&i.key);
                    continue;
                }
            };
            let baseline_query = i
                .baseline
                .as_ref()
                .and_then(|b| b.render(vars, &w, &at).ok());
            items.push(PlannedItem {
                key: i.key.clone(),
                label: i.label.clone(),
                unit: i.unit,
                query,
                baseline_query,
            });
        }
        for (placeholder, keys) in skipped {
            notes.push(format!(
                "profile {} left out {} (it needs ${placeholder}, which this alert's service has none of)",
                p.name,
                keys.join(", ")
            ));
        }
    }
    if let Some(job) = &vars.job {
        items.push(PlannedItem {
            key: keys::UP.to_owned(),
            label: "target up".to_owned(),
            unit: ValueUnit::Bool,
            query: format!("min(up{{job={}}})", crate::prom::label_value(job)),
            baseline_query: None,
        });
    }
    (items, notes)
}

/// The watched service an alert is about: the entry named by its `service` label, else the one
/// whose unit is its `unit` label, else the one whose job is its `job` label; with the label
/// that matched. Pure.
pub fn watched_service<'w>(
    ctx: &AlertContext,
    watched: &'w BTreeMap<String, WatchConfig>,
) -> Option<(&'w str, &'w WatchConfig, &'static str)> {
    let label = |k: &str| ctx.labels.get(k).map(String::as_str);
    if let Some(s) = label("service") {
        if let Some((name, w)) = watched.get_key_value(s) {
            return Some((name, w, "service"));
        }
    }
    if let Some(u) = label("unit") {
        if let Some((name, w)) = watched.iter().find(|(_, w)| w.unit.as_deref() == Some(u)) {
            return Some((name, w, "unit"));
        }
    }
    if let Some(j) = label("job") {
        if let Some((name, w)) = watched.iter().find(|(_, w)| w.job.as_deref() == Some(j)) {
            return Some((name, w, "job"));
        }
    }
    None
}

/// What a diagnosis reads for one alert, before any item is asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub items: Vec<PlannedItem>,
    pub scope: EvidenceScope,
    /// Set when Prometheus could not be reached while choosing the profiles.
    pub unreachable: Option<String>,
}

/// Maps `ctx` to a watched service, chooses its profiles (configured, else detected with ONE
/// bounded call of [`Prom::metric_names`]) and plans their items.
pub fn plan_alert(
    prom: &Prom,
    ctx: &AlertContext,
    profiles: &ProfileSet,
    watched: &BTreeMap<String, WatchConfig>,
    baseline_secs: u64,
    now: DateTime<Utc>,
) -> Plan {
    let baseline_at = baseline_end(ctx, now);
    let Some((name, w, matched_by)) = watched_service(ctx, watched) else {
        return Plan {
            items: Vec::new(),
            scope: EvidenceScope {
                service: None,
                matched_by: None,
                job: None,
                job_from: None,
                profiles: Vec::new(),
                profiles_from: ProfileSource::None,
                notes: vec![not_watched(ctx, watched)],
            },
            unreachable: None,
        };
    };
    let (job, job_from) = match (ctx.plain_job(), &w.job) {
        (Some(j), _) => (Some(j.to_owned()), Some("the alert's job label".to_owned())),
        (None, Some(j)) => (Some(j.clone()), Some(format!("watch.{name}.job"))),
        (None, None) => (None, None),
    };
    let vars = Vars {
        job: job.clone(),
        instance: ctx.labels.get("instance").cloned(),
        unit: w.unit.clone(),
        service: Some(name.to_owned()),
    };
    let mut notes = Vec::new();
    let mut unreachable = None;
    let (chosen, from): (Vec<&Profile>, ProfileSource) = if !w.profiles.is_empty() {
        let mut chosen = Vec::new();
        for p in &w.profiles {
            match profiles.get(p) {
                Some(p) => chosen.push(p),
                None => notes.push(format!(
                    "watch.{name}.profiles names {p:?}, which is no evidence profile (known: {})",
                    profiles.names()
                )),
            }
        }
        (chosen, ProfileSource::Configured)
    } else if let Some(job) = &job {
        let start = (ctx.starts_at.min(now)) - DETECTION_LOOKBACK;
        match prom.metric_names(&profiles.detection_matchers(job), start, now) {
            Ok(names) => {
                let names: std::collections::BTreeSet<String> = names.into_iter().collect();
                let found = profiles.detect(&names);
                if found.is_empty() {
                    notes.push(format!(
                        "no evidence profile matches the {} metric names Prometheus holds for job {job}; list profiles in watch.{name}.profiles or add one (docs/PROFILES.md)",
                        names.len()
                    ));
                }
                (found, ProfileSource::Detected)
            }
            Err(e) => {
                if e.is_unreachable() {
                    unreachable = Some(e.to_string());
                }
                notes.push(format!(
                    "the evidence profiles of job {job} could not be detected: {e}"
                ));
                (Vec::new(), ProfileSource::None)
            }
        }
    } else {
        notes.push(format!(
            "watch.{name} has neither a job nor profiles, so Prometheus holds nothing known about it"
        ));
        (Vec::new(), ProfileSource::None)
    };
    let from = if chosen.is_empty() {
        ProfileSource::None
    } else {
        from
    };
    let (items, skipped) = plan_profiles(&chosen, &vars, baseline_secs, baseline_at);
    notes.extend(skipped);
    Plan {
        items,
        scope: EvidenceScope {
            service: Some(name.to_owned()),
            matched_by: Some(matched_by.to_owned()),
            job,
            job_from,
            profiles: chosen.iter().map(|p| p.name.clone()).collect(),
            profiles_from: from,
            notes,
        },
        unreachable,
    }
}

/// Why an alert maps to no watched service, in words.
fn not_watched(ctx: &AlertContext, watched: &BTreeMap<String, WatchConfig>) -> String {
    let shown: Vec<String> = ["service", "unit", "job"]
        .into_iter()
        .map(|k| match ctx.labels.get(k) {
            Some(v) => format!("{k}={v:?}"),
            None => format!("no {k} label"),
        })
        .collect();
    format!(
        "the alert maps to no watched service ({}; watched: {}), so no evidence profile is read for it and no other service's numbers stand in",
        shown.join(", "),
        watched.keys().cloned().collect::<Vec<_>>().join(", ")
    )
}

/// When the baseline ends: the alert's condition held from `starts_at` on, but the series it
/// reads carried the incident for up to their window before that, so one (longest) window
/// earlier, so the incident's own ramp does not count as "normal".
pub fn baseline_end(ctx: &AlertContext, now: DateTime<Utc>) -> DateTime<Utc> {
    (ctx.starts_at - chrono::Duration::from_std(RULE_WINDOW).expect("small")).min(now)
}

/// Gathers the evidence of `ctx` at `now`: plans it ([`plan_alert`]), asks every item, and for
/// an alert that maps to no watched service its own expression and value.
///
/// Never fails: an unreachable Prometheus gives [`PrometheusHealth::Unreachable`] and items
/// carrying the error, which the engine's sanity gate turns into "monitoring is blind".
pub fn gather(
    prom: &Prom,
    ctx: &AlertContext,
    profiles: &ProfileSet,
    watched: &BTreeMap<String, WatchConfig>,
    baseline_secs: u64,
    now: DateTime<Utc>,
) -> Evidence {
    let plan = plan_alert(prom, ctx, profiles, watched, baseline_secs, now);
    let baseline_at = baseline_end(ctx, now);
    let mut scope = plan.scope;
    let mut ev = if scope.service.is_none() {
        alert_own_evidence(prom, ctx, now, &mut scope.notes)
    } else {
        gather_planned(prom, plan.items, now, baseline_at)
    };
    if let (Some(e), PrometheusHealth::Reachable) = (plan.unreachable, &ev.prometheus) {
        if ev.items.is_empty() {
            ev.prometheus = PrometheusHealth::Unreachable(e);
        }
    }
    ev.scope = Some(scope);
    ev.id = evidence_id(&ev);
    ev
}

/// The alert's own expression (from Prometheus' rules API) and its value for the alert's
/// series: all there is to ask about an alert that maps to no watched service.
fn alert_own_evidence(
    prom: &Prom,
    ctx: &AlertContext,
    now: DateTime<Utc>,
    notes: &mut Vec<String>,
) -> Evidence {
    let mut health = PrometheusHealth::Reachable;
    let mut items = Vec::new();
    match prom.alert_rule(&ctx.alertname) {
        Ok(Some(rule)) => {
            let (value, error) = match prom.instant(&rule.query, Some(now)) {
                Ok(samples) => {
                    // The alert's series: the one whose labels the alert carries.
                    let own = samples.iter().find(|s| {
                        s.labels
                            .iter()
                            .filter(|(k, _)| k.as_str() != "__name__")
                            .all(|(k, v)| ctx.labels.get(k) == Some(v))
                    });
                    (own.or(samples.first()).map(|s| s.value), None)
                }
                Err(e) => {
                    if e.is_unreachable() {
                        health = PrometheusHealth::Unreachable(e.to_string());
                    }
                    (None, Some(e.to_string()))
                }
            };
            items.push(EvidenceItem {
                key: keys::ALERT_VALUE.to_owned(),
                label: "the alert's expression".to_owned(),
                unit: ValueUnit::Count,
                query: rule.query,
                at: now,
                value: value.filter(|v| v.is_finite()),
                baseline_query: None,
                baseline: None,
                error,
            });
        }
        Ok(None) => notes.push(format!(
            "Prometheus has no alerting rule named {:?} loaded, so the alert's expression cannot be shown",
            ctx.alertname
        )),
        Err(e) => {
            if e.is_unreachable() {
                health = PrometheusHealth::Unreachable(e.to_string());
            }
            notes.push(format!("cannot read the alert's rule from Prometheus: {e}"));
        }
    }
    Evidence {
        id: String::new(),
        gathered_at: now,
        prometheus_url: prom.url().to_owned(),
        prometheus: health,
        target_up: None,
        items,
        unit: None,
        scope: None,
    }
}

/// [`gather`] for items already planned: "now" queries evaluated at `now`, baselines at
/// `baseline_at` (they pin that moment with `@` themselves). Public so tests can add an item
/// that fails and check that it blinds nothing else.
pub fn gather_planned(
    prom: &Prom,
    planned: Vec<PlannedItem>,
    now: DateTime<Utc>,
    baseline_at: DateTime<Utc>,
) -> Evidence {
    let current: Vec<&str> = planned.iter().map(|p| p.query.as_str()).collect();
    let baselines: Vec<&str> = planned
        .iter()
        .filter_map(|p| p.baseline_query.as_deref())
        .collect();
    // The two batches do not depend on each other: ask both at once.
    let (current, baselines) = std::thread::scope(|s| {
        let b = s.spawn(|| evaluate(prom, &baselines, baseline_at));
        let c = evaluate(prom, &current, now);
        (c, b.join().unwrap_or_else(|_| panicked(baselines.len())))
    });

    let mut unreachable = None;
    let mut note = |e: &PromError| {
        if e.is_unreachable() && unreachable.is_none() {
            unreachable = Some(e.to_string());
        }
    };
    let Evaluation {
        results: current,
        fetch: current_fetch,
    } = current;
    let Evaluation {
        results: baselines,
        fetch: baseline_fetch,
    } = baselines;
    let mut baselines = baselines.into_iter();
    let mut items = Vec::with_capacity(planned.len());
    for (p, value) in planned.into_iter().zip(current) {
        let mut error = None;
        let value = value.unwrap_or_else(|e| {
            note(&e);
            error = Some(describe_error(&current_fetch, &e));
            None
        });
        let baseline = match p.baseline_query {
            None => None,
            Some(_) => match baselines.next() {
                Some(Ok(v)) => v,
                Some(Err(e)) => {
                    note(&e);
                    error.get_or_insert_with(|| describe_error(&baseline_fetch, &e));
                    None
                }
                None => None,
            },
        };
        items.push(EvidenceItem {
            key: p.key,
            label: p.label,
            unit: p.unit,
            query: p.query,
            at: now,
            value: value.filter(|v| v.is_finite()),
            baseline_query: p.baseline_query,
            baseline: baseline.filter(|v| v.is_finite()),
            error,
        });
    }
    let target_up = match unreachable {
        Some(_) => None,
        None => items
            .iter()
            .find(|i| i.key == keys::UP)
            .and_then(|i| i.value)
            .map(|v| v >= 1.0),
    };
    let mut ev = Evidence {
        id: String::new(),
        gathered_at: now,
        prometheus_url: prom.url().to_owned(),
        prometheus: match unreachable {
            Some(e) => PrometheusHealth::Unreachable(e),
            None => PrometheusHealth::Reachable,
        },
        target_up,
        items,
        unit: None,
        scope: None,
    };
    ev.id = evidence_id(&ev);
    ev
}

/// What one query gave: its first series' value, `None` for no series, or an error.
pub type QueryResult = Result<Option<f64>, PromError>;

/// How a set of queries was answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetch {
    /// In one batched request (or none at all: no queries).
    Batched,
    /// The batch failed with this error although Prometheus answered; every query was then
    /// asked on its own.
    FellBack(PromError),
    /// Prometheus could not be reached; nothing was retried.
    Unreachable,
}

/// The answers to a set of queries, in their order, and how they were obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub results: Vec<QueryResult>,
    pub fetch: Fetch,
}

/// The error text an item shows. After a fallback it also says that this query is what failed
/// the batch, so nobody wonders why the other items were fetched one by one.
fn describe_error(fetch: &Fetch, e: &PromError) -> String {
    match fetch {
        Fetch::FellBack(_) => format!(
            "{e} (this query also failed the batched evaluation; the other items were asked one by one and are unaffected)"
        ),
        Fetch::Batched | Fetch::Unreachable => e.to_string(),
    }
}

/// Evaluates `queries` at `at`: in one batched request, or, if the batch fails although
/// Prometheus answered, each on its own (concurrently). Each result is the value of the query's
/// first series, exactly as `prom.instant_value(query, Some(at))` gives it.
pub fn evaluate(prom: &Prom, queries: &[&str], at: DateTime<Utc>) -> Evaluation {
    match prom.instant_batch(queries, Some(at)) {
        Ok(samples) => Evaluation {
            results: samples
                .into_iter()
                .map(|s| Ok(s.first().map(|s| s.value)))
                .collect(),
            fetch: Fetch::Batched,
        },
        Err(e) if e.is_unreachable() => Evaluation {
            results: vec![Err(e); queries.len()],
            fetch: Fetch::Unreachable,
        },
        Err(e) => {
            tracing::debug!(error = %e, "the batched evidence query failed; asking each query on its own");
            Evaluation {
                results: evaluate_each(prom, queries, at),
                fetch: Fetch::FellBack(e),
            }
        }
    }
}

/// Evaluates each of `queries` at `at` in its own request, all at once on scoped threads (they
/// wait on the network, not the CPU): the fallback of [`evaluate`], and the reference the
/// batched path is tested against.
pub fn evaluate_each(prom: &Prom, queries: &[&str], at: DateTime<Utc>) -> Vec<QueryResult> {
    std::thread::scope(|s| {
        let handles: Vec<_> = queries
            .iter()
            .map(|q| s.spawn(move || prom.instant_value(q, Some(at))))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(PromError::Decode {
                        url: String::new(),
                        message: "the query thread panicked".into(),
                    })
                })
            })
            .collect()
    })
}

fn panicked(n: usize) -> Evaluation {
    Evaluation {
        results: vec![
            Err(PromError::Decode {
                url: String::new(),
                message: "the query thread panicked".into(),
            });
            n
        ],
        fetch: Fetch::Batched,
    }
}

/// `ev-` + the first 12 hex digits of SHA-256 over the evidence's canonical JSON (with an empty
/// `id`): the same facts always get the same id, different facts a different one.
pub fn evidence_id(ev: &Evidence) -> String {
    let mut copy = ev.clone();
    copy.id = String::new();
    // Struct fields serialize in declaration order and maps are BTreeMaps: the JSON is canonical.
    let json = serde_json::to_vec(&copy).expect("evidence always serializes");
    let digest = Sha256::digest(&json);
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("ev-{hex}")
}

/// PromQL duration: `1h`, `90m`, `45s`.
fn duration(secs: u64) -> String {
    if secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else if secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// `@ 1795867380.123`: pins a selector's evaluation time so a replay gives the same answer.
fn at_modifier(t: DateTime<Utc>) -> String {
    let ms = t.timestamp_millis();
    format!("@ {}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_job_label_is_taken_only_when_plain() {
        let mut ctx = AlertContext {
            alertname: "HighErrorRatio".into(),
            labels: [("job".to_owned(), "web-1".to_owned())].into(),
            annotations: BTreeMap::new(),
            starts_at: t("2026-11-28T12:03:00Z"),
            fingerprint: "f".into(),
            group_key: None,
        };
        assert_eq!(ctx.plain_job(), Some("web-1"));
        ctx.labels
            .insert("job".into(), "x\"} or vector(1) or {a=\"".into());
        assert_eq!(ctx.plain_job(), None);
        ctx.labels.remove("job");
        assert_eq!(ctx.plain_job(), None);
    }

    #[test]
    fn alerts_map_to_a_watched_service_by_service_then_unit_then_job() {
        let w = |unit: &str, job: &str| WatchConfig {
            unit: Some(unit.into()),
            job: Some(job.into()),
            ..WatchConfig::default()
        };
        let watched: BTreeMap<String, WatchConfig> = [
            ("a".to_owned(), w("a.service", "job-a")),
            ("b".to_owned(), w("b.service", "job-b")),
            ("c".to_owned(), w("c.service", "job-c")),
        ]
        .into();
        let ctx = |labels: &[(&str, &str)]| AlertContext {
            alertname: "X".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            annotations: BTreeMap::new(),
            starts_at: t("2026-11-28T12:03:00Z"),
            fingerprint: "f".into(),
            group_key: None,
        };
        let name = |labels: &[(&str, &str)]| {
            watched_service(&ctx(labels), &watched).map(|(n, _, by)| (n.to_owned(), by))
        };
        let all = [("service", "a"), ("unit", "b.service"), ("job", "job-c")];
        assert_eq!(name(&all), Some(("a".into(), "service")));
        assert_eq!(name(&all[1..]), Some(("b".into(), "unit")));
        assert_eq!(name(&all[2..]), Some(("c".into(), "job")));
        // A label that names nothing watched does not stop the next one from matching.
        assert_eq!(
            name(&[("service", "zzz"), ("job", "job-b")]),
            Some(("b".into(), "job"))
        );
        assert_eq!(name(&[("service", "zzz"), ("unit", "z.service")]), None);
        assert_eq!(name(&[]), None);
    }

    #[test]
    fn plans_pin_baselines_to_the_alert_start() {
        let p = plan("aiops-demo-app", 3600, t("2026-11-28T12:03:00Z"));
        let er = p.iter().find(|i| i.key == keys::ERROR_RATIO).unwrap();
        assert_eq!(
            er.query,
            r#"job:http_request_error_ratio:rate30s{job="aiops-demo-app"}"#
        );
        assert_eq!(
            er.baseline_query.as_deref(),
            Some(
                r#"avg_over_time(job:http_request_error_ratio:rate30s{job="aiops-demo-app"}[1h] @ 1795867380.000)"#
            )
        );
        // Every key the plan produces is one the catalog may name.
        for i in &p {
            assert!(keys::ALL.contains(&i.key.as_str()), "{}", i.key);
        }
        // A hostile job name stays inside one string literal.
        let p = plan("a\"}[5m]) or vector(1", 90, t("2026-11-28T12:03:00Z"));
        assert!(
            p[0].query.starts_with(
                r#"job:http_request_error_ratio:rate30s{job="a\"}[5m]) or vector(1"}"#
            )
        );
        assert!(p[0].baseline_query.as_ref().unwrap().contains("[90s]"));
    }

    #[test]
    fn evidence_ids_are_content_derived() {
        let ev = Evidence {
            id: String::new(),
            gathered_at: t("2026-11-28T12:05:00Z"),
            prometheus_url: "http://p".into(),
            prometheus: PrometheusHealth::Reachable,
            target_up: Some(true),
            items: vec![],
            unit: None,
            scope: None,
        };
        let a = evidence_id(&ev);
        assert!(a.starts_with("ev-") && a.len() == 15, "{a}");
        let mut with_id = ev.clone();
        with_id.id = a.clone();
        assert_eq!(evidence_id(&with_id), a, "the id itself is not hashed");
        let mut other = ev;
        other.target_up = Some(false);
        assert_ne!(evidence_id(&other), a);
    }
}
