//! After an action ran: did it help? Watches the unit and the alert's own expression.
//!
//! A restart counts only once the unit is `active` with a new `InvocationID` (the old process is
//! really gone). Then the alert's expression, as Prometheus has it loaded (`/api/v1/rules`), is
//! evaluated until it returns nothing (healthy) or the time is up. An empty answer counts only
//! once Prometheus has scraped the alert's job successfully after the action: a target that is
//! down, or no longer scraped, makes every rate-based expression empty too, and that silence is
//! not a recovery. When Prometheus never answers during the whole time (it is down, as when an
//! approval was forced past "cannot re-check the evidence"), nothing was verified either way:
//! the outcome is *unverified*, which is no failure and does not feed the breaker. A unit that
//! does not come back is a failure whatever Prometheus does. The outcome sentence carries
//! the primary evidence item's number: "verified: error ratio back to 0.2% 35 s after the
//! restart" or "not fixed after 180 s: error ratio still 23.0%; nothing more will be done
//! automatically".

use std::time::{Duration, Instant, SystemTime};

use aiops_core::config::ActionKind;
use aiops_core::model::{Diagnosis, EvidenceItem};
use aiops_diagnosis::prom::{Prom, label_value};

use crate::exec::{Executor, UnitStatus};
use crate::state::{Action, Outcome};

/// The evidence item that best stands for the alert: the one whose metric the alert's
/// expression uses, else the first measured one.
pub fn primary_item<'a>(
    diagnosis: &'a Diagnosis,
    alert_expr: Option<&str>,
) -> Option<&'a EvidenceItem> {
    let items = &diagnosis.evidence.items;
    if let Some(expr) = alert_expr {
        if let Some(item) = items.iter().find(|i| {
            let metric = metric_name(&i.query);
            !metric.is_empty() && expr.contains(metric)
        }) {
            return Some(item);
        }
    }
    items.iter().find(|i| i.value.is_some())
}

/// The leading metric or recording-rule name of a simple query (`job:x:rate1m{...} > 1` →
/// `job:x:rate1m`); empty for anything starting with a function or parenthesis.
fn metric_name(query: &str) -> &str {
    let q = query.trim_start();
    let end = q
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(q.len());
    let name = &q[..end];
    // `sum(`, `rate(` ... are functions, not metrics.
    if q[end..].trim_start().starts_with('(') {
        ""
    } else {
        name
    }
}

/// Words for the action in sentences.
pub fn action_words(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::Restart => "the restart",
        ActionKind::ClearCache => "the cache clear",
    }
}

/// Everything verification needs.
#[derive(Debug)]
pub struct Verification<'a> {
    pub prom: &'a Prom,
    pub executor: &'a dyn Executor,
    pub action: &'a Action,
    /// The unit's status just before the action (its invocation id must change).
    pub before: Option<&'a UnitStatus>,
    /// When the action finished (the clock of "35 s after the restart").
    pub acted_at: Instant,
    pub timeout: Duration,
    pub poll: Duration,
}

impl Verification<'_> {
    /// Watches until healthy or the timeout; never returns early on errors (they are retried
    /// and reported if the time runs out).
    pub fn run(&self, progress: &dyn Fn(&str)) -> Outcome {
        let deadline = self.acted_at + self.timeout;
        let a = self.action;
        let words = action_words(a.kind);
        if a.kind == ActionKind::Restart {
            let before = self.before.and_then(|s| s.invocation_id.clone());
            let mut last: Option<String>;
            loop {
                match self.executor.status(&a.unit) {
                    Ok(s)
                        if s.active_state == "active"
                            && s.invocation_id.is_some()
                            && s.invocation_id != before =>
                    {
                        progress(&format!(
                            "{} is active again: new invocation {}{}",
                            a.unit,
                            short(s.invocation_id.as_deref().unwrap_or("")),
                            s.main_pid
                                .map(|p| format!(", main pid {p}"))
                                .unwrap_or_default()
                        ));
                        break;
                    }
                    Ok(s) => {
                        last = Some(format!(
                            "state {}, invocation {}",
                            s.active_state,
                            short(s.invocation_id.as_deref().unwrap_or("none"))
                        ));
                    }
                    Err(e) => last = Some(e.to_string()),
                }
                if Instant::now() >= deadline {
                    return self.failed(format!(
                        "not fixed after {} s: {} did not come back active with a new invocation ({}); nothing more will be done automatically",
                        self.timeout.as_secs(),
                        a.unit,
                        last.unwrap_or_default()
                    ), None);
                }
                std::thread::sleep(self.poll);
            }
        }
        // The wall-clock time of the action, to compare with Prometheus's sample timestamps.
        let acted_wall = SystemTime::now()
            .checked_sub(self.acted_at.elapsed())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut rule_expr: Option<String> = None;
        let mut last_problem = String::new();
        let mut last_value: Option<f64> = None;
        let mut polls: u32 = 0;
        // Whether Prometheus answered anything at all since the action.
        let mut answered = false;
        loop {
            if rule_expr.is_none() {
                match self.prom.alert_rule(&a.alert.alertname) {
                    Ok(Some(rule)) => {
                        answered = true;
                        rule_expr = Some(rule.query);
                    }
                    Ok(None) => {
                        answered = true;
                        last_problem = format!(
                            "Prometheus has no alerting rule named {} loaded, so recovery cannot be checked",
                            a.alert.alertname
                        );
                    }
                    Err(e) => {
                        last_problem = format!("cannot ask Prometheus for the alert's rule: {e}");
                    }
                }
            }
            if let Some(expr) = &rule_expr {
                let primary = primary_item(&a.diagnosis, Some(expr));
                if let Some(item) = primary {
                    if let Ok(v) = self.prom.instant_value(&item.query, None) {
                        // The latest answer, also when empty: a number from before the action
                        // must not be reported as the value after it.
                        answered = true;
                        last_value = v;
                    }
                }
                let result = self.prom.instant(expr, None);
                answered |= result.is_ok();
                match result {
                    Ok(samples) if samples.is_empty() => match self.scraped_since(acted_wall) {
                        Ok(()) => {
                            let secs = self.acted_at.elapsed().as_secs_f64();
                            let summary = match (primary, last_value) {
                                (Some(item), Some(v)) => format!(
                                    "verified: {} back to {} {secs:.0} s after {words}",
                                    item.label,
                                    item.unit.format(v)
                                ),
                                _ => format!(
                                    "verified: {}'s condition cleared {secs:.0} s after {words}",
                                    a.alert.alertname
                                ),
                            };
                            return Outcome {
                                fixed: true,
                                unverified: false,
                                summary,
                                recovery_secs: Some(secs),
                                value_after: last_value,
                            };
                        }
                        Err(problem) => last_problem = problem,
                    },
                    Ok(_) => {
                        last_problem = match (primary, last_value) {
                            (Some(item), Some(v)) => {
                                format!("{} still {}", item.label, item.unit.format(v))
                            }
                            _ => format!("{}'s condition still holds", a.alert.alertname),
                        };
                    }
                    Err(e) => last_problem = format!("cannot query Prometheus: {e}"),
                }
                if polls % 5 == 0 && !last_problem.is_empty() {
                    progress(&format!(
                        "waiting for {} to clear: {last_problem} ({:.0} s after {words})",
                        a.alert.alertname,
                        self.acted_at.elapsed().as_secs_f64()
                    ));
                }
            }
            polls += 1;
            if Instant::now() >= deadline && !answered {
                return self.unverified(&last_problem);
            }
            if Instant::now() >= deadline {
                return self.failed(
                    format!(
                        "not fixed after {} s: {last_problem}; nothing more will be done automatically",
                        self.timeout.as_secs()
                    ),
                    last_value,
                );
            }
            std::thread::sleep(
                self.poll
                    .min(deadline.saturating_duration_since(Instant::now()))
                    .max(Duration::from_millis(10)),
            );
        }
    }

    /// `Ok` when Prometheus has scraped every target of the alert's `job` successfully after
    /// `acted`; otherwise what is missing, in words. Alerts without a `job` label pass: there is
    /// no target to check, and the expression alone decides.
    fn scraped_since(&self, acted: SystemTime) -> Result<(), String> {
        let Some(job) = self.action.alert.labels.get("job") else {
            return Ok(());
        };
        // The oldest latest-scrape time over the job's targets, present only if all are up.
        let j = label_value(job);
        let query = format!("min(timestamp(up{{job={j}}})) and on() (min(up{{job={j}}}) == 1)");
        let acted_secs = acted
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        match self.prom.instant_value(&query, None) {
            Ok(Some(scraped)) if scraped > acted_secs => Ok(()),
            Ok(Some(_)) => Err(format!(
                "the alert's condition is gone, but Prometheus has not scraped job {job} since {} yet",
                action_words(self.action.kind)
            )),
            Ok(None) => Err(format!(
                "the alert's condition is gone only because job {job} is down or not scraped (its `up` is not 1), which proves nothing"
            )),
            Err(e) => Err(format!(
                "cannot ask Prometheus whether job {job} is scraped: {e}"
            )),
        }
    }

    /// Prometheus never answered: what ran is known, whether it helped is not.
    fn unverified(&self, problem: &str) -> Outcome {
        let a = self.action;
        let done = match a.kind {
            ActionKind::Restart => format!("{} is active again with a new invocation", a.unit),
            ActionKind::ClearCache => format!("the cache of {} was cleared", a.unit),
        };
        Outcome {
            fixed: false,
            unverified: true,
            summary: format!(
                "unverified: {done}, but Prometheus did not answer for {} s ({problem}), so whether {} cleared is unknown; check it yourself (aiops show {}). Not counted as a failure toward the breaker",
                self.timeout.as_secs(),
                a.alert.alertname,
                a.id
            ),
            recovery_secs: None,
            value_after: None,
        }
    }

    fn failed(&self, summary: String, value_after: Option<f64>) -> Outcome {
        Outcome {
            fixed: false,
            unverified: false,
            summary,
            recovery_secs: None,
            value_after,
        }
    }
}

/// The first 8 characters of an invocation id, enough to tell two apart in messages.
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_of_simple_queries() {
        assert_eq!(
            metric_name("job:http_request_error_ratio:rate30s{job=\"x\"}"),
            "job:http_request_error_ratio:rate30s"
        );
        assert_eq!(metric_name("sum(rate(x[1m]))"), "");
        assert_eq!(metric_name("up{job=\"a\"} == 0"), "up");
    }
}
