//! `aiops recommend`: on-demand diagnosis of the alerts Alertmanager reports as firing.
//!
//! Asks Alertmanager's API v2 which alerts fire (active, not silenced, not inhibited), runs the
//! diagnosis engine on each (evidence from Prometheus, the catalog, the allow-list), and prints
//! the recommendation, the explanation and the evidence with its PromQL. It proposes only: the
//! receiver creates pending actions, `aiops pending` lists them.

use std::fmt::Write as _;
use std::time::Duration;

use aiops_core::alertmanager::ApiAlert;
use aiops_core::model::{Diagnosis, OutcomeStats, PrometheusHealth, Recommendation};
use aiops_diagnosis::{AlertContext, Engine};
use anyhow::Context as _;

use crate::exit::{self, Exit};

/// How long Alertmanager may take to list its alerts.
const ALERTMANAGER_TIMEOUT: Duration = Duration::from_secs(5);

/// Arguments of `aiops recommend`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Diagnose only this alert (by alertname); default: every alert Alertmanager reports firing.
    #[arg(long)]
    pub alert: Option<String>,
}

pub fn run(args: &Args, config: &aiops_core::Config, json: bool) -> anyhow::Result<()> {
    let engine = Engine::from_config(config).context("cannot load the diagnosis catalog")?;
    let alerts = firing_alerts(&config.alertmanager.url)?;
    let selected: Vec<&ApiAlert> = match &args.alert {
        None => alerts.iter().collect(),
        Some(name) => {
            let hits: Vec<&ApiAlert> = alerts
                .iter()
                .filter(|a| a.labels.get("alertname") == Some(name))
                .collect();
            if hits.is_empty() {
                let mut names: Vec<&str> = alerts
                    .iter()
                    .filter_map(|a| a.labels.get("alertname").map(String::as_str))
                    .collect();
                names.dedup();
                let firing = if names.is_empty() {
                    "no alert is firing".to_owned()
                } else {
                    format!("firing: {}", names.join(", "))
                };
                return Err(Exit::new(
                    exit::NOT_FOUND,
                    format!(
                        "alert {name:?} is not firing according to Alertmanager at {} ({firing})",
                        config.alertmanager.url
                    ),
                )
                .into());
            }
            hits
        }
    };

    let allowed = &config.remediation.allowed;
    // No outcome history here: the receiver's action store feeds it when it diagnoses.
    let past = |_: &str, _: aiops_core::config::ActionKind| OutcomeStats::default();
    let contexts: Vec<AlertContext> = selected
        .iter()
        .map(|a| AlertContext::from_api_alert(a))
        .collect();
    // Several alerts are diagnosed side by side (each diagnosis asks Prometheus two batched
    // queries at once); the usual single alert needs no thread of its own.
    let diagnoses: Vec<Diagnosis> = match contexts.as_slice() {
        [ctx] => vec![engine.diagnose_alert(ctx, past, allowed)],
        _ => std::thread::scope(|s| {
            let handles: Vec<_> = contexts
                .iter()
                .map(|ctx| {
                    let engine = &engine;
                    s.spawn(move || engine.diagnose_alert(ctx, past, allowed))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a diagnosis thread panicked"))
                .collect()
        }),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&diagnoses).context("cannot serialize the diagnoses")?
        );
    } else {
        print!(
            "{}",
            render_human(&contexts, &diagnoses, &config.alertmanager.url)
        );
    }

    // The diagnoses were printed (they say "blind"); the exit code tells scripts why.
    if let Some(d) = diagnoses
        .iter()
        .find(|d| matches!(d.evidence.prometheus, PrometheusHealth::Unreachable(_)))
    {
        let detail = match &d.evidence.prometheus {
            PrometheusHealth::Unreachable(e) => e.clone(),
            PrometheusHealth::Reachable => String::new(),
        };
        return Err(Exit::new(
            exit::UNAVAILABLE,
            format!(
                "cannot reach Prometheus at {} ({detail}); check that it runs and that prometheus.url in the configuration is right",
                config.prometheus.url
            ),
        )
        .into());
    }
    Ok(())
}

/// The alerts Alertmanager reports as firing: active, not silenced, not inhibited.
pub fn firing_alerts(base_url: &str) -> anyhow::Result<Vec<ApiAlert>> {
    let base = base_url.trim_end_matches('/');
    let url = format!("{base}/api/v2/alerts");
    // One call per run: no compression (a few KiB on loopback, and it costs both ends CPU) and
    // small buffers (ureq's 128 KiB defaults cost more to fault in than the whole exchange).
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(ALERTMANAGER_TIMEOUT))
        .http_status_as_error(false)
        .accept_encoding("")
        .input_buffer_size(16 * 1024)
        .output_buffer_size(16 * 1024)
        .build()
        .into();
    let unavailable = |why: String| {
        Exit::new(
            exit::UNAVAILABLE,
            format!(
                "cannot reach Alertmanager at {base} ({why}); check that it runs and that alertmanager.url in the configuration is right"
            ),
        )
    };
    let mut resp = agent
        .get(&url)
        .query("active", "true")
        .query("silenced", "false")
        .query("inhibited", "false")
        .call()
        .map_err(|e| unavailable(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(16 * 1024 * 1024)
        .read_to_string()
        .map_err(|e| unavailable(e.to_string()))?;
    if status != 200 {
        let excerpt: String = body.chars().take(200).collect();
        return Err(unavailable(format!("HTTP {status}: {excerpt}")).into());
    }
    let alerts: Vec<ApiAlert> = serde_json::from_str(&body).with_context(|| {
        format!("Alertmanager at {base} answered {url} with something that is not a list of API v2 alerts")
    })?;
    Ok(alerts
        .into_iter()
        .filter(|a| a.status.state == "active")
        .collect())
}

/// The human rendering: per alert the recommendation, the explanation and an evidence table.
pub fn render_human(contexts: &[AlertContext], diagnoses: &[Diagnosis], am_url: &str) -> String {
    let mut out = String::new();
    if diagnoses.is_empty() {
        let _ = writeln!(out, "No alerts are firing (Alertmanager at {am_url}).");
    }
    for (ctx, d) in contexts.iter().zip(diagnoses) {
        let unit = ctx.unit_label().unwrap_or("-");
        let _ = writeln!(
            out,
            "== {} (unit {unit:?}, firing since {} UTC, fingerprint {})",
            d.alertname,
            ctx.starts_at.format("%Y-%m-%d %H:%M:%S"),
            ctx.fingerprint
        );
        let _ = writeln!(
            out,
            "Recommendation: {}",
            recommendation_line(&d.recommendation)
        );
        let _ = writeln!(out);
        for line in wrap(&d.explanation, 100) {
            let _ = writeln!(out, "  {line}");
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Evidence {} from {} at {} UTC:",
            d.evidence.id,
            d.evidence.prometheus_url,
            d.evidence.gathered_at.format("%Y-%m-%d %H:%M:%S")
        );
        out.push_str(&evidence_table(d));
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "aiops recommend only proposes; the receiver (aiops-webhook) creates pending actions. Run `aiops pending` to list what awaits approval."
    );
    out
}

fn recommendation_line(r: &Recommendation) -> String {
    match r {
        Recommendation::Act {
            action,
            unit,
            risk,
            confidence,
            hypothesis,
        } => format!(
            "{action} {unit} (risk {}, confidence {:.0}%, {hypothesis}) once a human approves",
            risk.as_str(),
            confidence * 100.0
        ),
        Recommendation::NoAction { reason } => format!("no action: {reason}"),
        Recommendation::Blind { reason } => format!("none, blind: {reason}"),
        Recommendation::Refused { reason } => format!("refused: {reason}"),
    }
}

fn evidence_table(d: &Diagnosis) -> String {
    let rows: Vec<[String; 4]> = d
        .evidence
        .items
        .iter()
        .map(|i| {
            let now = match (&i.error, i.value) {
                (Some(_), _) => "failed".to_owned(),
                (None, Some(v)) => i.unit.format(v),
                (None, None) => "no data".to_owned(),
            };
            let base = match (&i.baseline_query, i.baseline) {
                (None, _) => "-".to_owned(),
                (Some(_), Some(b)) => i.unit.format(b),
                (Some(_), None) => "no data".to_owned(),
            };
            let query = match &i.baseline_query {
                Some(b) => format!("{}  |  baseline: {b}", i.query),
                None => i.query.clone(),
            };
            [i.label.clone(), now, base, query]
        })
        .collect();
    let header = [
        "MEASURE".to_owned(),
        "NOW".to_owned(),
        "BASELINE".to_owned(),
        "PROMQL".to_owned(),
    ];
    let widths: Vec<usize> = (0..3)
        .map(|c| {
            rows.iter()
                .chain(std::iter::once(&header))
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in std::iter::once(&header).chain(&rows) {
        let _ = writeln!(
            out,
            "  {:<w0$}  {:>w1$}  {:>w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
    for i in d.evidence.items.iter().filter(|i| i.error.is_some()) {
        let _ = writeln!(
            out,
            "  ! {}: {}",
            i.label,
            i.error.as_deref().unwrap_or_default()
        );
    }
    out
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}
