//! The diagnosis engine: a pure function from (alert, evidence, catalog, past outcomes,
//! allow-list) to a [`Diagnosis`]. No I/O, no clock: the same inputs always give the same
//! output, which is what the table-driven tests over recorded evidence rely on.
//!
//! # Order of decisions
//!
//! 1. **Sanity gate.** Prometheus unreachable, the target not scraped at all (no `up` series),
//!    or `up == 0` for any alert but `TargetDown`: the recommendation is
//!    [`Recommendation::Blind`], whatever the catalog says. This is code, not catalog data, so
//!    no catalog file can switch it off. Only catalog entries whose action is `none` are kept as
//!    hypotheses then (they explain the blindness).
//! 2. **Matching.** An entry matches when its alert filters pass, every `when` condition holds
//!    and, if it has `when_any`, at least one of those holds. Conditions on a key without a
//!    value never hold (unless they ask for `missing = true`).
//! 3. **Confidence.** A matching entry starts at its catalog `confidence` (its prior). If it
//!    proposes an action, past outcomes of that action for this alert adjust it with a
//!    Laplace-smoothed success rate `s = (succeeded + 1) / (succeeded + failed + 2)`:
//!    `confidence = clamp(prior × (0.5 + s), 0.01, 0.99)`. With no history `s = 0.5` and the
//!    prior stands; three successes in three tries raise it by 30 %, three failures lower it by
//!    30 %. Entries that propose nothing keep their prior.
//! 4. **Ranking.** Hypotheses sort by confidence, ties by catalog order.
//! 5. **Recommendation** from the best hypothesis: no action → [`Recommendation::NoAction`] with
//!    its advice; an action → [`Recommendation::Act`] only if the alert's `unit` label passes
//!    [`UnitName::parse`] *and* `allowed` lists that action for that unit, else
//!    [`Recommendation::Refused`] naming the label or unit. No hypothesis at all →
//!    `NoAction` ("no known pattern; investigate").
//!
//! The explanation is plain English with the numbers: what fired and since when, how each
//! measure compares with its baseline, the most likely cause and why, and what is proposed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use aiops_core::config::ActionKind;
use aiops_core::model::{
    Diagnosis, Evidence, EvidenceScope, Hypothesis, OutcomeStats, ProfileSource, PrometheusHealth,
    Recommendation, UnitFact, UnitFactValue, UnitSnapshot, ValueUnit,
};
use aiops_core::unit::UnitName;

use crate::catalog::{Catalog, CatalogAction, Condition, Entry};
use crate::evidence::{AlertContext, keys};

/// The alert that means "the target is down"; `up == 0` is its symptom, not blindness.
pub const TARGET_DOWN: &str = "TargetDown";

/// Diagnoses `ctx` from `ev` (see the module docs for the rules).
///
/// `past(alertname, action)` gives earlier outcomes of `action` for that alert; `allowed` is
/// `remediation.allowed` (unit name → permitted actions).
pub fn diagnose(
    ctx: &AlertContext,
    ev: &Evidence,
    catalog: &Catalog,
    past: impl Fn(&str, ActionKind) -> OutcomeStats,
    allowed: &BTreeMap<String, Vec<ActionKind>>,
) -> Diagnosis {
    let facts = Facts { ev };
    // An alert about no watched service: only what its own expression and its unit show, and
    // never an action (nothing says which evidence would justify one).
    let unwatched = ev
        .scope
        .as_ref()
        .filter(|s| s.service.is_none())
        .map(|_| not_watched_reason(ctx));
    let blind = match unwatched {
        Some(_) => None,
        None => sanity_gate(ctx, ev),
    };

    let mut hypotheses: Vec<(usize, Hypothesis)> = Vec::new();
    for (order, entry) in catalog.entries.iter().enumerate() {
        if (blind.is_some() || unwatched.is_some()) && entry.action != CatalogAction::None {
            continue;
        }
        if unwatched.is_some() && !rests_on_unit_evidence(entry) {
            continue;
        }
        let Some(reasons) = matches(entry, &ctx.alertname, &facts) else {
            continue;
        };
        let action = entry.action.action_kind();
        let (confidence, history) = match action {
            Some(a) => adjust(entry.confidence, past(&ctx.alertname, a), &ctx.alertname, a),
            None => (entry.confidence, None),
        };
        let mut reasoning = reasons.join("; ");
        if let Some(h) = history {
            reasoning.push_str("; ");
            reasoning.push_str(&h);
        }
        hypotheses.push((
            order,
            Hypothesis {
                id: entry.id.clone(),
                cause: entry.cause.clone(),
                confidence,
                action,
                risk: entry.risk,
                reasoning,
            },
        ));
    }
    hypotheses.sort_by(|(ao, a), (bo, b)| {
        b.confidence
            .total_cmp(&a.confidence)
            .then_with(|| ao.cmp(bo))
    });
    let hypotheses: Vec<Hypothesis> = hypotheses.into_iter().map(|(_, h)| h).collect();

    let best = hypotheses.first();
    let advice = best
        .and_then(|h| catalog.get(&h.id))
        .and_then(|e| e.advice.as_deref())
        .map(|a| render_advice(a, &facts));
    // Blind to Prometheus, but systemd itself explains the alert (a crash loop, a failed
    // dependency): say that, and still propose nothing.
    let unit_explains = blind.is_some()
        && best.is_some_and(|h| {
            h.action.is_none() && catalog.get(&h.id).is_some_and(rests_on_unit_evidence)
        });
    let recommendation = match (&blind, best) {
        _ if unwatched.is_some() => Recommendation::NoAction {
            reason: match (best, &advice) {
                (Some(_), Some(a)) => format!(
                    "{}; {}",
                    a.trim_end_matches('.'),
                    unwatched.unwrap_or_default()
                ),
                _ => unwatched.unwrap_or_default(),
            },
        },
        (Some(_), Some(h)) if unit_explains => Recommendation::NoAction {
            reason: advice.clone().unwrap_or_else(|| h.cause.clone()),
        },
        (Some(reason), _) => Recommendation::Blind {
            reason: reason.clone(),
        },
        (None, None) => Recommendation::NoAction {
            reason: "no known pattern matches this evidence; investigate with the evidence shown"
                .into(),
        },
        (None, Some(h)) => match h.action {
            None => Recommendation::NoAction {
                reason: advice.clone().unwrap_or_else(|| h.cause.clone()),
            },
            Some(action) => decide_action(ctx, h, action, allowed),
        },
    };

    let mut explanation = explain(
        ctx,
        ev,
        &facts,
        &hypotheses,
        advice.as_deref(),
        &recommendation,
    );
    if unit_explains && let Some(reason) = &blind {
        explanation = format!(
            "{} Prometheus cannot tell: {}.",
            explanation,
            reason.trim_end_matches('.')
        );
    }
    if let Some(s) = ev.scope.as_ref().and_then(scope_sentence) {
        let _ = write!(explanation, " {s}");
    }
    Diagnosis {
        alertname: ctx.alertname.clone(),
        labels: ctx.labels.clone(),
        evidence: ev.clone(),
        hypotheses,
        recommendation,
        explanation,
    }
}

/// Why nothing is proposed for an alert that maps to no watched service.
fn not_watched_reason(ctx: &AlertContext) -> String {
    let who = ctx
        .labels
        .get("service")
        .or_else(|| ctx.labels.get("unit"))
        .or_else(|| ctx.labels.get("job"))
        .map(|v| format!("{v:?}"))
        .unwrap_or_else(|| "the service this alert is about".to_owned());
    format!(
        "{who} is not a watched service: no [watch.NAME] entry has the alert's service label as its name, its unit label as its unit or its job label as its job, so aiops reads no evidence profile for it and proposes nothing (it would have to guess from another service's numbers); add a [watch.NAME] entry for it to have it diagnosed"
    )
}

/// Which service and profiles the evidence comes from, in one sentence.
fn scope_sentence(scope: &EvidenceScope) -> Option<String> {
    let Some(service) = scope.service.as_deref() else {
        return (!scope.notes.is_empty()).then(|| {
            format!(
                "Evidence: {}.",
                scope
                    .notes
                    .iter()
                    .map(|n| n.trim_end_matches('.'))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        });
    };
    let job = scope
        .job
        .as_deref()
        .map(|j| {
            format!(
                ", job {j}{}",
                scope
                    .job_from
                    .as_deref()
                    .map(|f| format!(" from {f}"))
                    .unwrap_or_default()
            )
        })
        .unwrap_or_default();
    let mut s = match (scope.profiles.as_slice(), scope.profiles_from) {
        ([], _) => {
            format!("Evidence: no evidence profile applies to watched service {service}{job}")
        }
        (p, ProfileSource::Detected) => format!(
            "Evidence: profile{} {} of watched service {service}{job}, detected from the metric names Prometheus holds",
            if p.len() > 1 { "s" } else { "" },
            p.join(", ")
        ),
        (p, _) => format!(
            "Evidence: profile{} {} of watched service {service}{job}, as configured in watch.{service}.profiles",
            if p.len() > 1 { "s" } else { "" },
            p.join(", ")
        ),
    };
    for n in &scope.notes {
        let _ = write!(s, "; {n}");
    }
    s.push('.');
    Some(s)
}

/// Whether an entry's conditions test the unit's own evidence from systemd (`unit.*`).
fn rests_on_unit_evidence(entry: &Entry) -> bool {
    entry
        .when
        .iter()
        .chain(&entry.when_any)
        .any(|c| c.key.starts_with("unit."))
}

/// What systemd says about the unit, in one sentence; `None` when it was not read.
fn unit_sentence(u: &UnitSnapshot) -> Option<String> {
    let text = |k: &str| u.text(k);
    let num = |k: &str| u.fact(k).map(|f| f.value.describe());
    // Nothing was read from systemctl show: nothing to say.
    u.fact("unit.loaded")?;
    if !u.loaded() {
        return Some(format!(
            "systemd does not know {} (load state {})",
            u.unit,
            text("unit.load_state").unwrap_or("unknown")
        ));
    }
    let mut parts = vec![format!(
        "according to systemd, {} is {}{}",
        u.unit,
        text("unit.active_state").unwrap_or("in an unknown state"),
        text("unit.sub_state")
            .filter(|s| Some(*s) != text("unit.active_state"))
            .map(|s| format!(" ({s})"))
            .unwrap_or_default()
    )];
    if let Some(r) = text("unit.result").filter(|r| *r != "success") {
        parts.push(format!("result {r}"));
    }
    if let Some(e) = text("unit.main_exit").filter(|e| *e != "not exited") {
        parts.push(format!("main process ended with {e}"));
    }
    if let Some(n) = u.number("unit.restarts") {
        parts.push(format!(
            "{} automatic restart{}",
            n as u64,
            if n == 1.0 { "" } else { "s" }
        ));
    }
    if let Some(s) = u.number("unit.since_start") {
        parts.push(format!("last started {} ago", ValueUnit::Seconds.format(s)));
    }
    if let (Some(m), Some(max), Some(r)) = (
        num("unit.memory").filter(|_| u.number("unit.memory").is_some()),
        u.number("unit.memory_max"),
        u.number("unit.memory_of_max"),
    ) {
        parts.push(format!(
            "memory {m} of its {} limit ({})",
            ValueUnit::Bytes.format(max),
            ValueUnit::Ratio.format(r)
        ));
    }
    if let Some(deps) = text("unit.failed_dependency") {
        parts.push(format!("dependency down: {deps}"));
    }
    let mut s = join_and(&parts);
    if let Some(j) = &u.journal {
        let _ = write!(
            s,
            "; its journal since {} UTC holds {} error{} and {} warning{}",
            j.since.format("%H:%M:%S"),
            j.errors(),
            if j.errors() == 1 { "" } else { "s" },
            j.warnings(),
            if j.warnings() == 1 { "" } else { "s" },
        );
        if j.oom_kills > 0 {
            let _ = write!(s, ", {} OOM-kill line(s)", j.oom_kills);
        }
        if j.core_dumps > 0 {
            let _ = write!(s, ", {} core-dump line(s)", j.core_dumps);
        }
        if j.access_limited.is_some() {
            s.push_str(" (only partly readable: the service account needs group systemd-journal)");
        }
    }
    Some(s)
}

/// `Some(reason)` when we cannot see enough to judge.
fn sanity_gate(ctx: &AlertContext, ev: &Evidence) -> Option<String> {
    if let PrometheusHealth::Unreachable(detail) = &ev.prometheus {
        return Some(format!(
            "monitoring is blind: {detail}. Nothing is proposed until Prometheus answers"
        ));
    }
    if let Some(scope) = &ev.scope
        && scope.job.is_none()
    {
        return Some(format!(
            "monitoring is blind: watch.{} has no job and the alert no plain job label, so Prometheus holds nothing known about the service. Nothing is proposed without evidence; set watch.{0}.job",
            scope.service.as_deref().unwrap_or("?")
        ));
    }
    let up_query = ev.get(keys::UP).map(|i| i.query.as_str()).unwrap_or("up");
    match ev.target_up {
        None => {
            let why = match ev.get(keys::UP).and_then(|i| i.error.as_deref()) {
                Some(e) => format!("the query `{up_query}` failed ({e})"),
                None => format!("`{up_query}` returns no series: Prometheus does not scrape it"),
            };
            Some(format!(
                "monitoring is blind: {why}. Nothing is proposed without evidence; check the scrape configuration"
            ))
        }
        Some(false) if ctx.alertname != TARGET_DOWN => Some(format!(
            "monitoring is blind: the last scrape failed (`{up_query}` is 0), so every other number is stale. Nothing destructive is proposed; TargetDown covers a service that is down"
        )),
        _ => None,
    }
}

fn decide_action(
    ctx: &AlertContext,
    h: &Hypothesis,
    action: ActionKind,
    allowed: &BTreeMap<String, Vec<ActionKind>>,
) -> Recommendation {
    let refused = |reason: String| Recommendation::Refused { reason };
    let Some(label) = ctx.unit_label() else {
        return refused(format!(
            "{action} would match ({}), but the alert has no `unit` label naming what to act on",
            h.id
        ));
    };
    let unit = match UnitName::parse(label) {
        Ok(u) => u,
        Err(e) => {
            return refused(format!(
                "{action} would match ({}), but the alert's `unit` label {label:?} is not a valid unit name: {e}",
                h.id
            ));
        }
    };
    match allowed.get(unit.as_str()) {
        None => refused(format!(
            "{action} would match ({}), but unit {unit} is not on the allow-list (remediation.allowed)",
            h.id
        )),
        Some(list) if !list.contains(&action) => refused(format!(
            "{action} would match ({}), but remediation.allowed permits only {} on {unit}",
            h.id,
            list.iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Some(_) => Recommendation::Act {
            action,
            unit,
            risk: h.risk,
            confidence: h.confidence,
            hypothesis: h.id.clone(),
        },
    }
}

/// Prior × (0.5 + Laplace-smoothed success rate), clamped; plus a sentence on the history.
fn adjust(
    prior: f64,
    stats: OutcomeStats,
    alertname: &str,
    action: ActionKind,
) -> (f64, Option<String>) {
    let (ok, bad) = (f64::from(stats.succeeded), f64::from(stats.failed));
    let s = (ok + 1.0) / (ok + bad + 2.0);
    let confidence = (prior * (0.5 + s)).clamp(0.01, 0.99);
    let tries = stats.succeeded + stats.failed;
    let note = (tries > 0).then(|| {
        format!(
            "{action} fixed {alertname} {} of {tries} times before",
            stats.succeeded
        )
    });
    (confidence, note)
}

/// Values by key, as conditions see them.
struct Facts<'a> {
    ev: &'a Evidence,
}

impl Facts<'_> {
    fn value(&self, key: &str) -> Option<f64> {
        if key.starts_with("unit.") {
            return self.ev.unit.as_ref()?.number(key);
        }
        if key == keys::PROMETHEUS_REACHABLE {
            return Some(match self.ev.prometheus {
                PrometheusHealth::Reachable => 1.0,
                PrometheusHealth::Unreachable(_) => 0.0,
            });
        }
        self.ev.value(key).filter(|v| v.is_finite())
    }

    fn baseline(&self, key: &str) -> Option<f64> {
        self.ev
            .get(key)
            .and_then(|i| i.baseline)
            .filter(|v| v.is_finite())
    }

    fn unit(&self, key: &str) -> ValueUnit {
        if let Some(f) = self.unit_fact(key) {
            return match f.value {
                UnitFactValue::Number { unit, .. } => unit,
                _ => ValueUnit::Count,
            };
        }
        self.ev.get(key).map(|i| i.unit).unwrap_or(ValueUnit::Count)
    }

    /// A fact of the unit's own evidence (`unit.*`).
    fn unit_fact(&self, key: &str) -> Option<&UnitFact> {
        if !key.starts_with("unit.") {
            return None;
        }
        self.ev.unit.as_ref()?.fact(key)
    }

    /// A textual `unit.*` fact, quoted (it is bounded and free of control characters already;
    /// quotes inside are turned into single ones so the quotation cannot be closed early).
    fn quoted_text(&self, key: &str) -> Option<String> {
        let t = self.ev.unit.as_ref()?.text(key)?;
        Some(format!("\"{}\"", t.replace('"', "'")))
    }

    fn label(&self, key: &str) -> String {
        if let Some(f) = self.unit_fact(key) {
            return f.label.clone();
        }
        match key {
            keys::PROMETHEUS_REACHABLE => "Prometheus reachable".into(),
            _ => self
                .ev
                .get(key)
                .map(|i| i.label.clone())
                .unwrap_or_else(|| key.to_owned()),
        }
    }

    fn fmt(&self, key: &str, v: f64) -> String {
        self.unit(key).format(v)
    }
}

/// The reasons (one per condition that held) if `entry` matches, else `None`.
fn matches(entry: &Entry, alertname: &str, facts: &Facts<'_>) -> Option<Vec<String>> {
    if !entry.alerts.is_empty() && !entry.alerts.iter().any(|a| a == alertname) {
        return None;
    }
    if entry.unless_alerts.iter().any(|a| a == alertname) {
        return None;
    }
    let mut reasons = Vec::new();
    for c in &entry.when {
        reasons.push(holds(c, facts)?);
    }
    if !entry.when_any.is_empty() {
        let any: Vec<String> = entry
            .when_any
            .iter()
            .filter_map(|c| holds(c, facts))
            .collect();
        if any.is_empty() {
            return None;
        }
        reasons.extend(any);
    }
    if !entry.alerts.is_empty() {
        reasons.insert(0, format!("{alertname} fired"));
    }
    Some(reasons)
}

/// `Some(why)` if the condition holds.
fn holds(c: &Condition, facts: &Facts<'_>) -> Option<String> {
    let label = facts.label(&c.key);
    let value = facts.value(&c.key);
    match (c.missing, value) {
        (Some(true), None) => return Some(format!("{label}: no data")),
        (Some(true), Some(_)) | (_, None) => return None,
        _ => {}
    }
    let v = value?;
    let mut parts = vec![format!("{label} is {}", facts.fmt(&c.key, v))];
    // A yes/no fact reads as itself ("target up is no"), not as "no, below yes".
    let boolean = facts.unit(&c.key) == ValueUnit::Bool;
    if let Some(t) = c.above {
        if v.partial_cmp(&t)? != std::cmp::Ordering::Greater {
            return None;
        }
        if !boolean {
            parts.push(format!("above {}", facts.fmt(&c.key, t)));
        }
    }
    if let Some(t) = c.below {
        if v.partial_cmp(&t)? != std::cmp::Ordering::Less {
            return None;
        }
        if !boolean {
            parts.push(format!("below {}", facts.fmt(&c.key, t)));
        }
    }
    let baseline = facts.baseline(&c.key);
    for (factor, above) in [(c.above_baseline, true), (c.below_baseline, false)] {
        let Some(f) = factor else { continue };
        match baseline {
            None if c.if_no_baseline => parts.push("no baseline to compare".into()),
            None => return None,
            Some(b) => {
                let ok = if above { v > f * b } else { v < f * b };
                if !ok {
                    return None;
                }
                parts.push(format!(
                    "{} {}× its baseline of {}",
                    if above { "above" } else { "below" },
                    trim_num(f),
                    facts.fmt(&c.key, b)
                ));
            }
        }
    }
    Some(join_and(&parts))
}

/// "a, above b and below c".
fn join_and(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [one] => one.clone(),
        [first, rest @ ..] => {
            let mut s = first.clone();
            for (i, p) in rest.iter().enumerate() {
                s.push_str(if i + 1 == rest.len() && rest.len() > 1 {
                    " and "
                } else {
                    ", "
                });
                s.push_str(p);
            }
            s
        }
    }
}

fn trim_num(f: f64) -> String {
    let s = format!("{f:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Replaces `{KEY}`, `{KEY.baseline}` and `{KEY.ratio}` (validated at catalog load).
fn render_advice(text: &str, facts: &Facts<'_>) -> String {
    let mut out = String::with_capacity(text.len() + 32);
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = &after[..end];
        let rendered = if let Some(key) = name.strip_suffix(".baseline") {
            facts.baseline(key).map(|b| facts.fmt(key, b))
        } else if let Some(key) = name.strip_suffix(".ratio") {
            match (facts.value(key), facts.baseline(key)) {
                (Some(v), Some(b)) if b > 0.0 => Some(format!("{:.1}×", v / b)),
                _ => None,
            }
        } else if let Some(q) = facts.quoted_text(name) {
            Some(q)
        } else {
            facts.value(name).map(|v| facts.fmt(name, v))
        };
        out.push_str(rendered.as_deref().unwrap_or("n/a"));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// How a value compares with its baseline, in words.
fn compare(facts: &Facts<'_>, key: &str, name: &str) -> Option<String> {
    let v = facts.value(key)?;
    let vs = facts.fmt(key, v);
    Some(match facts.baseline(key) {
        None => format!("{name} is {vs} (no baseline)"),
        Some(b) => {
            let bs = facts.fmt(key, b);
            // Relative bands with an absolute floor, so 0.01 → 0.03 cores is not "3× higher".
            let floor = match facts.unit(key) {
                ValueUnit::Ratio => 0.01,
                ValueUnit::Seconds => 0.005,
                ValueUnit::Cores => 0.05,
                ValueUnit::PerSecond => 0.5,
                _ => 0.0,
            };
            if (v - b).abs() <= floor || (b > 0.0 && v / b <= 1.5 && v / b >= 0.67) {
                format!("{name} is normal ({vs} vs {bs})")
            } else if v > b {
                match b > 0.0 {
                    true => format!("{name} is high: {vs}, {:.1}× its baseline of {bs}", v / b),
                    false => format!("{name} is high: {vs} against a baseline of {bs}"),
                }
            } else {
                format!("{name} is low: {vs} against a baseline of {bs}")
            }
        }
    })
}

fn explain(
    ctx: &AlertContext,
    ev: &Evidence,
    facts: &Facts<'_>,
    hypotheses: &[Hypothesis],
    advice: Option<&str>,
    rec: &Recommendation,
) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "{} has fired since {} UTC.",
        if ctx.alertname.is_empty() {
            "The alert"
        } else {
            &ctx.alertname
        },
        ctx.starts_at.format("%H:%M")
    );

    let unit = ev.unit.as_ref().and_then(unit_sentence);
    if let Recommendation::Blind { reason } = rec {
        // The gate's reason already says what to check; catalog advice would repeat it.
        let _ = write!(out, " {}.", capitalize(reason));
        if let Some(u) = unit {
            let _ = write!(out, " {}.", capitalize(&u));
        }
        return out;
    }
    if let Some(u) = &unit {
        let _ = write!(out, " {}.", capitalize(u));
    }
    let unwatched = ev.scope.as_ref().is_some_and(|s| s.service.is_none());
    if let Some(i) = ev.get(keys::ALERT_VALUE) {
        let _ = match (i.value, &i.error) {
            (Some(v), _) => write!(out, " Its expression `{}` is {} now.", i.query, trim_num(v)),
            (None, Some(e)) => write!(
                out,
                " Its expression `{}` could not be evaluated: {}.",
                i.query,
                e.trim_end_matches('.')
            ),
            (None, None) => write!(
                out,
                " Its expression `{}` returns nothing now (its condition may have cleared).",
                i.query
            ),
        };
    }

    let mut facts_said: Vec<String> = Vec::new();
    if !unwatched {
        if let Some(v) = facts.value(keys::ERROR_RATIO) {
            let vs = facts.fmt(keys::ERROR_RATIO, v);
            facts_said.push(match facts.baseline(keys::ERROR_RATIO) {
                Some(b) => format!(
                    "error ratio is {vs} against a baseline of {}",
                    facts.fmt(keys::ERROR_RATIO, b)
                ),
                None => format!("error ratio is {vs} (no baseline)"),
            });
        }
        for (key, name) in [
            (keys::REQUEST_RATE, "request rate"),
            (keys::LATENCY_P99, "p99 latency"),
            (keys::LATENCY_P50, "p50 latency"),
            (keys::CPU, "CPU"),
            (keys::MEMORY, "resident memory"),
        ] {
            if let Some(s) = compare(facts, key, name) {
                facts_said.push(s);
            }
        }
        if let Some(g) = facts.value(keys::MEMORY_GROWTH) {
            if g.abs() >= 64.0 * 1024.0 {
                facts_said.push(format!(
                    "memory {} at {}",
                    if g > 0.0 { "grows" } else { "shrinks" },
                    facts.fmt(keys::MEMORY_GROWTH, g.abs())
                ));
            }
        }
        if let (Some(fill), Some(hit)) = (
            facts.value(keys::CACHE_FILL),
            facts.value(keys::CACHE_HIT_RATIO),
        ) {
            if fill >= 0.9 {
                facts_said.push(format!(
                    "the cache is {} full with a hit ratio of {}{}",
                    facts.fmt(keys::CACHE_FILL, fill),
                    facts.fmt(keys::CACHE_HIT_RATIO, hit),
                    facts
                        .baseline(keys::CACHE_HIT_RATIO)
                        .map(|b| format!(" (baseline {})", facts.fmt(keys::CACHE_HIT_RATIO, b)))
                        .unwrap_or_default()
                ));
            }
        }
        match (facts.value(keys::UPTIME), facts.value(keys::RESTARTS)) {
            (Some(up), restarts) => {
                let r = match restarts {
                    Some(n) if n >= 1.0 => format!(
                        "{} restart{} in the last hour",
                        n as u64,
                        if n >= 2.0 { "s" } else { "" }
                    ),
                    Some(_) => "no restart in the last hour".to_owned(),
                    None => "restarts unknown".to_owned(),
                };
                facts_said.push(format!(
                    "the process has been up {} with {r}",
                    facts.fmt(keys::UPTIME, up)
                ));
            }
            (None, _) => facts_said.push("the process' uptime is unknown".into()),
        }
        if ev.target_up == Some(false) {
            facts_said.push("Prometheus' last scrape of the target failed".into());
        }
    }
    if !facts_said.is_empty() {
        let mut s = facts_said.join("; ");
        s = capitalize(&s);
        let _ = write!(out, " {s}.");
    }

    let active: Vec<&str> = [
        (keys::FAULT_ERRORS, "errors"),
        (keys::FAULT_CPU, "cpu"),
        (keys::FAULT_LATENCY, "latency"),
        (keys::FAULT_LEAK, "leak"),
    ]
    .into_iter()
    .filter(|(k, _)| facts.value(k).is_some_and(|v| v >= 1.0))
    .map(|(_, n)| n)
    .collect();
    if !active.is_empty() {
        let _ = write!(
            out,
            " Injected demo fault{} active: {}.",
            if active.len() > 1 { "s" } else { "" },
            active.join(", ")
        );
    }
    let failed: Vec<&str> = ev
        .items
        .iter()
        .filter(|i| i.error.is_some())
        .map(|i| i.label.as_str())
        .collect();
    if !failed.is_empty() {
        let _ = write!(out, " Queries that failed: {}.", failed.join(", "));
    }

    match hypotheses.first() {
        Some(h) => {
            let _ = write!(
                out,
                " Most likely: {} (confidence {:.0}%), because {}.",
                h.cause,
                h.confidence * 100.0,
                h.reasoning
            );
            if let Some(a) = advice {
                let _ = write!(out, " {}.", capitalize(a));
            }
        }
        // Not watched: the recommendation says why nothing is looked for.
        None if unwatched => {}
        None => out.push_str(" No known pattern in the catalog matches this evidence."),
    }
    if hypotheses.len() > 1 {
        let others: Vec<String> = hypotheses[1..]
            .iter()
            .map(|h| format!("{} ({:.0}%)", h.id, h.confidence * 100.0))
            .collect();
        let _ = write!(out, " Also considered: {}.", others.join(", "));
    }
    let _ = match rec {
        Recommendation::Act {
            action, unit, risk, ..
        } => write!(
            out,
            " Recommendation: {action} {unit} (risk {}), once a human approves it.",
            risk.as_str()
        ),
        Recommendation::NoAction { reason } if Some(reason.as_str()) == advice => {
            write!(out, " Recommendation: no action.")
        }
        Recommendation::NoAction { reason } => {
            write!(out, " Recommendation: no action. {}.", capitalize(reason))
        }
        Recommendation::Refused { reason } => {
            write!(out, " Recommendation refused: {reason}.")
        }
        Recommendation::Blind { .. } => Ok(()),
    };
    out
}

fn capitalize(s: &str) -> String {
    let s = s.trim_end_matches('.');
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laplace_smoothing_moves_confidence_both_ways() {
        let none = adjust(0.7, OutcomeStats::default(), "A", ActionKind::Restart);
        assert!((none.0 - 0.7).abs() < 1e-9);
        assert!(none.1.is_none());
        let good = OutcomeStats {
            succeeded: 3,
            failed: 0,
            consecutive_failures: 0,
        };
        let bad = OutcomeStats {
            succeeded: 0,
            failed: 3,
            consecutive_failures: 3,
        };
        assert!((adjust(0.7, good, "A", ActionKind::Restart).0 - 0.91).abs() < 1e-9);
        assert!((adjust(0.7, bad, "A", ActionKind::Restart).0 - 0.49).abs() < 1e-9);
        assert_eq!(adjust(0.9, good, "A", ActionKind::Restart).0, 0.99);
    }

    #[test]
    fn lists_join_like_prose() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(join_and(&v(&["a"])), "a");
        assert_eq!(join_and(&v(&["a", "b"])), "a, b");
        assert_eq!(join_and(&v(&["a", "b", "c"])), "a, b and c");
        assert_eq!(trim_num(3.0), "3");
        assert_eq!(trim_num(1.5), "1.5");
    }
}
