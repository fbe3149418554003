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
//! Safety: the job selector is the alert's `job` label only if it is a plain identifier
//! ([`crate::prom::is_plain_identifier`]), else `diagnosis.job`; either way it enters PromQL only
//! through [`crate::prom::label_value`]. No other alert text is ever part of a query.

use std::collections::BTreeMap;

use aiops_core::alertmanager::{Alert, ApiAlert};
use aiops_core::config::DiagnosisConfig;
use aiops_core::model::{Evidence, EvidenceItem, PrometheusHealth, ValueUnit};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::prom::{Prom, PromError, is_plain_identifier, label_value};

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

    /// The Prometheus job to look at: the alert's `job` label if it is a plain identifier,
    /// else `fallback` (`diagnosis.job`).
    pub fn job<'a>(&'a self, fallback: &'a str) -> &'a str {
        match self.labels.get("job") {
            Some(j) if is_plain_identifier(j) => j,
            _ => fallback,
        }
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
    pub key: &'static str,
    pub label: &'static str,
    pub unit: ValueUnit,
    pub query: String,
    pub baseline_query: Option<String>,
}

/// What to ask about `job` (the exact queries; pure).
///
/// The longest window a recording rule of `prometheus/rules.yml` reads: the memory slope's
/// `deriv(...[1m])` (rates and quantiles use 30 s). The baseline ends this long before the alert
/// started (see [`gather`]).
pub const RULE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// `baseline_end` is when the incident's signal began (see [`gather`]); `baseline_secs` the
/// window before it.
pub fn plan(job: &str, baseline_secs: u64, baseline_end: DateTime<Utc>) -> Vec<PlannedItem> {
    let j = label_value(job);
    let sel = format!("{{job={j}}}");
    let w = duration(baseline_secs.max(60));
    let at = at_modifier(baseline_end);
    // Baseline of a recorded series: its average over the window ending at the alert's start.
    let avg = |metric: &str| format!("avg_over_time({metric}{sel}[{w}] {at})");
    let rec = |key, label, unit, metric: &str| PlannedItem {
        key,
        label,
        unit,
        query: format!("{metric}{sel}"),
        baseline_query: Some(avg(metric)),
    };
    let fault = |key, label, kind: &str| PlannedItem {
        key,
        label,
        unit: ValueUnit::Bool,
        query: format!("max(demo_fault_active{{job={j},kind=\"{kind}\"}})"),
        baseline_query: None,
    };
    vec![
        rec(
            keys::ERROR_RATIO,
            "error ratio",
            ValueUnit::Ratio,
            "job:http_request_error_ratio:rate30s",
        ),
        rec(
            keys::REQUEST_RATE,
            "request rate",
            ValueUnit::PerSecond,
            "job:http_requests:rate30s",
        ),
        rec(
            keys::LATENCY_P50,
            "p50 latency",
            ValueUnit::Seconds,
            "job:http_request_duration_seconds:p50_30s",
        ),
        rec(
            keys::LATENCY_P99,
            "p99 latency",
            ValueUnit::Seconds,
            "job:http_request_duration_seconds:p99_30s",
        ),
        rec(
            keys::CPU,
            "CPU",
            ValueUnit::Cores,
            "job:process_cpu_seconds:rate30s",
        ),
        PlannedItem {
            key: keys::MEMORY,
            label: "resident memory",
            unit: ValueUnit::Bytes,
            query: format!("sum(process_resident_memory_bytes{sel})"),
            baseline_query: Some(format!(
                "sum(avg_over_time(process_resident_memory_bytes{sel}[{w}] {at}))"
            )),
        },
        rec(
            keys::MEMORY_GROWTH,
            "memory growth",
            ValueUnit::BytesPerSecond,
            "job:process_resident_memory_bytes:deriv1m",
        ),
        PlannedItem {
            key: keys::UPTIME,
            label: "uptime",
            unit: ValueUnit::Seconds,
            query: format!("time() - max(process_start_time_seconds{sel})"),
            baseline_query: None,
        },
        PlannedItem {
            key: keys::RESTARTS,
            label: "restarts in the last hour",
            unit: ValueUnit::Count,
            query: format!("sum(changes(process_start_time_seconds{sel}[1h]))"),
            baseline_query: None,
        },
        PlannedItem {
            key: keys::CACHE_FILL,
            label: "cache fill",
            unit: ValueUnit::Ratio,
            query: format!("sum(demo_cache_entries{sel}) / sum(demo_cache_capacity{sel})"),
            baseline_query: None,
        },
        rec(
            keys::CACHE_HIT_RATIO,
            "cache hit ratio",
            ValueUnit::Ratio,
            "job:demo_cache_hit_ratio:rate30s",
        ),
        fault(keys::FAULT_ERRORS, "errors fault active", "errors"),
        fault(keys::FAULT_CPU, "CPU fault active", "cpu"),
        fault(keys::FAULT_LATENCY, "latency fault active", "latency"),
        fault(keys::FAULT_LEAK, "leak fault active", "leak"),
        PlannedItem {
            key: keys::UP,
            label: "target up",
            unit: ValueUnit::Bool,
            query: format!("min(up{sel})"),
            baseline_query: None,
        },
        // Raw counters: since the current processes started (Prometheus's own scrapes of
        // /metrics and health checks are no traffic). Verification restricts them to processes
        // started after its action and puts the ratio in the alert's expression in place of the
        // recorded ratio, so both keep the `job` label the rules aggregate by
        // (crates/aiops-actions/src/verify.rs).
        PlannedItem {
            key: keys::REQUESTS_SINCE_START,
            label: "requests since the process started",
            unit: ValueUnit::Count,
            query: format!(
                "sum by (job) (http_requests_total{{job={j},route!~\"/metrics|/healthz\"}})"
            ),
            baseline_query: None,
        },
        PlannedItem {
            key: keys::ERROR_RATIO_SINCE_START,
            label: "error ratio since the process started",
            unit: ValueUnit::Ratio,
            query: format!(
                "(sum by (job) (http_requests_total{{job={j},route!~\"/metrics|/healthz\",status=~\"5..\"}}) or 0 * sum by (job) (http_requests_total{{job={j},route!~\"/metrics|/healthz\"}})) / sum by (job) (http_requests_total{{job={j},route!~\"/metrics|/healthz\"}})"
            ),
            baseline_query: None,
        },
    ]
}

/// Gathers every planned item for `ctx` at `now` and derives the evidence id.
///
/// Never fails: an unreachable Prometheus gives [`PrometheusHealth::Unreachable`] and items
/// carrying the error, which the engine's sanity gate turns into "monitoring is blind".
pub fn gather(
    prom: &Prom,
    ctx: &AlertContext,
    config: &DiagnosisConfig,
    now: DateTime<Utc>,
) -> Evidence {
    // The alert's condition held from `starts_at` on, but the recorded series it reads carried
    // the incident for up to their window before that: end the baseline one (longest) window
    // earlier, so the incident's own ramp does not count as "normal".
    let baseline_at =
        (ctx.starts_at - chrono::Duration::from_std(RULE_WINDOW).expect("small")).min(now);
    let planned = plan(ctx.job(&config.job), config.baseline_secs, baseline_at);
    gather_planned(prom, planned, now, baseline_at)
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
            key: p.key.to_owned(),
            label: p.label.to_owned(),
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
    fn the_job_comes_from_a_plain_label_or_the_config() {
        let mut ctx = AlertContext {
            alertname: "HighErrorRatio".into(),
            labels: [("job".to_owned(), "web-1".to_owned())].into(),
            annotations: BTreeMap::new(),
            starts_at: t("2026-11-28T12:03:00Z"),
            fingerprint: "f".into(),
            group_key: None,
        };
        assert_eq!(ctx.job("cfg"), "web-1");
        ctx.labels
            .insert("job".into(), "x\"} or vector(1) or {a=\"".into());
        assert_eq!(ctx.job("cfg"), "cfg");
        ctx.labels.remove("job");
        assert_eq!(ctx.job("cfg"), "cfg");
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
            assert!(keys::ALL.contains(&i.key), "{}", i.key);
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
