//! After an action ran: did it help? Watches the unit, the alert's own expression and, where the
//! service's counters restart with the process, the new process's own counters.
//!
//! # What each outcome means
//!
//! * **verified**: the service answered real requests after the action (or, where the diagnosis
//!   cannot count requests, passed its scrapes) *and* the alert's condition cleared. Counts as a
//!   success toward the breaker.
//! * **unconfirmed**, with a reason ([`UnconfirmedReason`]): the action ran, but nothing shows
//!   whether it helped: no traffic since the restart, the symptom was already gone before the
//!   action, the target was not scraped since the action, Prometheus did not answer (this was
//!   called "unverified" before; old state files still read), or no alerting rule to check.
//!   Not a failure: the breaker ignores it.
//! * **not fixed**: the symptom demonstrably persists (the alert's condition still holds, on the
//!   rate window or on the new process's counters), the target is down (its scrapes fail) after
//!   the action, or the unit did not come back. Counts as a failure.
//!
//! A restart counts only once the unit is `active` with a new `InvocationID` (the old process is
//! really gone). Then every poll takes one [`Observation`] and [`judge`] (pure) decides; at the
//! deadline the last undecided state is turned into an outcome by [`conclude`].
//!
//! # The alert's expression
//!
//! The expression as Prometheus has it loaded (`/api/v1/rules`). An empty answer counts only once
//! Prometheus has scraped the alert's job successfully after the action: a target that is down,
//! or no longer scraped, makes every rate-based expression empty too, and that silence is not a
//! recovery. The same expression, evaluated at the moment the action began, tells whether the
//! symptom was already gone before it ("unconfirmed", not "verified": the action cannot be
//! credited with it).
//!
//! # Since the restart
//!
//! A rate window (`rate(...[30s])`) still holds the old process's errors for a whole window
//! after a restart, so the expression alone clears only about 30 s later. When the diagnosis has
//! the evidence items `requests_since_start` and `error_ratio_since_start` (raw counters, which
//! restart with the process), verification reads them instead, as soon as Prometheus has scraped
//! every instance of the alert's `job` since the restart: the alert's expression with its
//! primary metric's selector replaced by the `..._since_start` item's query (the same condition
//! and threshold, on the new process's requests only) decides, once at least
//! [`MIN_REQUESTS`] real requests were answered; fewer is "no traffic". Without those items,
//! for other actions than a restart (a cache clear restarts nothing), for alerts without a `job`
//! label, for jobs without `process_start_time_seconds` or without the counters (the requests
//! query returns no series: "no traffic" needs a counter at 0), or until every instance was
//! scraped from a process started after the action, verification uses the expression alone. The
//! items
//! aggregate `by (job)` like the recording rules they stand in for, so the alert's `and on (job)`
//! clauses still match.
//!
//! Edge cases of the counter reset, and how they are handled:
//! * *The old process's last scrape.* Counters are read only when `min(process_start_time_seconds
//!   {job=J})` over the job's latest samples is after the action began: every instance's latest
//!   scrape came from a process started after the action. Its counters come from that same
//!   scrape: the demo app exposes every series from its start (at 0); with a client that creates
//!   series lazily, a series the new process does not expose yet (an old `status="500"`
//!   counter) gets a staleness marker in that scrape, so the old process's numbers drop out of
//!   the sums at once instead of lingering for the 5-minute lookback. A process that crashes
//!   and starts again during verification only resets the counters once more.
//! * *Several instances.* The minimum over all of them must be new: if any instance of the job
//!   still runs a process from before the action (another unit serving the same job), its
//!   counters include errors from before, so the since-start reading is not used and the
//!   expression decides. A new process on another address is another instance: until the old
//!   target leaves the scrape configuration (its series then go stale), the minimum stays old.
//! * *`process_start_time_seconds` precision.* Client libraries derive it from `/proc` (boot time
//!   in whole seconds plus clock ticks), so it may read up to about a second early, and the new
//!   process started *during* the action, before it finished. So the start time is compared with
//!   the moment the action began minus [`START_SLACK`], and must also be later than the job's
//!   newest start time before the action (so an old process started within the slack is never
//!   taken for the new one).
//! * *Traffic.* Requests to `/metrics` (Prometheus's scrapes) and `/healthz` are excluded by the
//!   items' queries (the demo app counts both in `http_requests_total`; neither is real traffic):
//!   with the items present and no real requests, the outcome is "unconfirmed: no traffic".
//!
//! The outcome sentence carries the primary evidence item's number: "verified: error ratio back
//! to 0.0% over the 57 requests answered since the restart, 6 s after the restart" or "not fixed
//! after 180 s: error ratio still 23.0%; nothing more will be done automatically".

use std::time::{Duration, Instant, SystemTime};

use aiops_core::config::ActionKind;
use aiops_core::model::{Diagnosis, EvidenceItem};
use aiops_diagnosis::evidence::keys;
use aiops_diagnosis::prom::{Prom, label_value};
use chrono::{DateTime, Utc};

use crate::exec::{Executor, UnitStatus};
use crate::state::{Action, Outcome, UnconfirmedReason};

/// Fewer real requests than this since the restart are "no traffic": too few to say the
/// service answers again.
pub const MIN_REQUESTS: f64 = 5.0;

/// How early `process_start_time_seconds` may read against the moment the action began.
pub const START_SLACK: Duration = Duration::from_secs(2);

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

/// `expr` with every selector of `metric` (the name and its `{...}` matchers, if any) replaced
/// by `(replacement)`; `None` when the metric does not occur as a whole name.
pub fn substitute(expr: &str, metric: &str, replacement: &str) -> Option<String> {
    if metric.is_empty() {
        return None;
    }
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = String::with_capacity(expr.len() + replacement.len());
    let mut rest = expr;
    let mut found = false;
    while let Some(pos) = rest.find(metric) {
        // The character before, also across a skipped occurrence (`mm` holds no `m`).
        let before_ok = rest[..pos]
            .chars()
            .next_back()
            .or_else(|| out.chars().next_back())
            .is_none_or(|c| !name_char(c));
        let after = &rest[pos + metric.len()..];
        if !before_ok || after.chars().next().is_some_and(name_char) {
            out.push_str(&rest[..pos + metric.len()]);
            rest = after;
            continue;
        }
        let mut end = 0;
        if after.starts_with('{') {
            // Matchers end at the first `}` outside a quoted value.
            let mut quoted = false;
            let mut escaped = false;
            let mut close = None;
            for (i, c) in after.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' if quoted => escaped = true,
                    '"' => quoted = !quoted,
                    '}' if !quoted => {
                        close = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            end = close? + 1;
        }
        out.push_str(&rest[..pos]);
        out.push('(');
        out.push_str(replacement);
        out.push(')');
        rest = &after[end..];
        found = true;
    }
    out.push_str(rest);
    found.then_some(out)
}

/// Words for the action in sentences.
pub fn action_words(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::Restart => "the restart",
        ActionKind::ClearCache => "the cache clear",
    }
}

/// Whether Prometheus has scraped the alert's job since the action.
#[derive(Debug, Clone, PartialEq)]
pub enum Scrape {
    /// The alert has no `job` label: no target to check, the expression alone decides.
    NoJob,
    /// Every target of the job was scraped successfully after the action.
    Since,
    /// Not every target was scraped since the action (yet).
    NotSince,
    /// A target's latest scrape failed (`up` 0), or the job has no `up` series at all.
    Down,
    /// Prometheus did not say (the query failed): the text.
    Unknown(String),
}

/// The new process's own counters, read since the restart.
#[derive(Debug, Clone, PartialEq)]
pub struct SinceStart {
    /// Real requests answered since the restart.
    pub requests: f64,
    /// The alert's condition on those counters: `Some(true)` holds, `Some(false)` clear, `None`
    /// unknown (query failed, or the expression could not be rewritten).
    pub holds: Option<bool>,
    /// The primary item's since-start value (e.g. the error ratio over those requests).
    pub value: Option<f64>,
}

/// What one poll after the action saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Whether Prometheus answered at all in this poll.
    pub answered: bool,
    /// Whether an alerting rule of the alert's name is loaded (`None`: not known yet).
    pub rule_loaded: Option<bool>,
    /// The alert's expression: `Some(true)` returns series, `Some(false)` empty.
    pub firing: Option<bool>,
    pub scrape: Scrape,
    /// Present only when the diagnosis has the since-start items and every instance of the job
    /// was scraped from a process started after the action.
    pub since_start: Option<SinceStart>,
}

/// What the alert's expression said when the action began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Before {
    /// `Some(false)`: empty then, with the target scraped: the symptom was already gone.
    pub firing: Option<bool>,
}

/// Why verification is not decided yet (and what the outcome is if the time runs out so).
#[derive(Debug, Clone, PartialEq)]
pub enum Waiting {
    /// Prometheus did not answer.
    Silent,
    /// No alerting rule of that name is loaded.
    NoRule,
    /// The counters since the restart show fewer than [`MIN_REQUESTS`] real requests.
    NoTraffic { requests: f64 },
    /// The target was not scraped since the action.
    NotScraped,
    /// The target's scrapes fail after the action.
    Down,
    /// The alert's condition still holds (on the rate window, or on the new process's counters
    /// when `since_start`).
    StillFiring { since_start: bool },
    /// Prometheus answered, but not the question (a query failed).
    Unknown,
}

/// What one observation decides.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Fixed: real requests after the action (counted, or the scrapes passed) and the
    /// condition cleared.
    Verified {
        since_start: bool,
    },
    /// The condition is clear after the action, but it was clear before it too.
    AlreadyGone,
    Waiting(Waiting),
}

/// The final word when the time runs out in `waiting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conclusion {
    Unconfirmed(UnconfirmedReason),
    NotFixed,
}

/// The decision for one observation (pure).
pub fn judge(before: Before, obs: &Observation) -> Verdict {
    if !obs.answered {
        return Verdict::Waiting(Waiting::Silent);
    }
    if obs.rule_loaded == Some(false) {
        return Verdict::Waiting(Waiting::NoRule);
    }
    let cleared = |since_start| {
        if before.firing == Some(false) {
            Verdict::AlreadyGone
        } else {
            Verdict::Verified { since_start }
        }
    };
    if let Some(s) = &obs.since_start {
        if s.requests < MIN_REQUESTS {
            // Only the scrapes reached the new process: nothing to judge by, whatever the
            // rate window says (its errors age out, and silence looks like health).
            return Verdict::Waiting(Waiting::NoTraffic {
                requests: s.requests,
            });
        }
        match s.holds {
            Some(false) => return cleared(true),
            Some(true) => {
                return Verdict::Waiting(Waiting::StillFiring { since_start: true });
            }
            // Unknown on the counters: the rate-window expression decides.
            None => {}
        }
    }
    match obs.firing {
        Some(true) => Verdict::Waiting(Waiting::StillFiring { since_start: false }),
        None => Verdict::Waiting(Waiting::Unknown),
        Some(false) => match obs.scrape {
            Scrape::Since | Scrape::NoJob => cleared(false),
            Scrape::NotSince => Verdict::Waiting(Waiting::NotScraped),
            Scrape::Down => Verdict::Waiting(Waiting::Down),
            Scrape::Unknown(_) => Verdict::Waiting(Waiting::Unknown),
        },
    }
}

/// The outcome when the time ran out: `last` is the latest state seen while Prometheus
/// answered (`None`: it never did).
pub fn conclude(last: Option<&Waiting>) -> Conclusion {
    use UnconfirmedReason as R;
    match last {
        None | Some(Waiting::Silent) | Some(Waiting::Unknown) => {
            Conclusion::Unconfirmed(R::PrometheusSilent)
        }
        Some(Waiting::NoRule) => Conclusion::Unconfirmed(R::NoRule),
        Some(Waiting::NoTraffic { .. }) => Conclusion::Unconfirmed(R::NoTraffic),
        Some(Waiting::NotScraped) => Conclusion::Unconfirmed(R::NotScraped),
        Some(Waiting::Down) | Some(Waiting::StillFiring { .. }) => Conclusion::NotFixed,
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
    /// When the action began (a restarted process starts after this).
    pub began_at: Instant,
    /// When the action finished (the clock of "35 s after the restart").
    pub acted_at: Instant,
    pub timeout: Duration,
    pub poll: Duration,
}

/// The queries of the since-start reading, from the action's stored diagnosis.
struct SinceStartPlan {
    requests: String,
    /// The alert's expression on the since-start counters.
    condition: Option<String>,
    /// The primary item's since-start query (its value for the sentence).
    value: Option<String>,
    job: String,
}

impl Verification<'_> {
    /// Watches until decided or the timeout; never returns early on errors (they are retried
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
        // Wall-clock times of the action, to compare with Prometheus's sample timestamps.
        let wall = |i: Instant| {
            SystemTime::now()
                .checked_sub(i.elapsed())
                .unwrap_or(SystemTime::UNIX_EPOCH)
        };
        let acted_wall = wall(self.acted_at);
        let began_wall = wall(self.began_at);
        let mut rule_expr: Option<String> = None;
        let mut rule_loaded: Option<bool> = None;
        let mut before: Option<Before> = None;
        // The newest process start of the job before the action (seconds since the epoch).
        let mut old_start: Option<Option<f64>> = None;
        let mut last_problem = String::new();
        let mut last_value: Option<f64> = None;
        let mut last_known: Option<Waiting> = None;
        let mut polls: u32 = 0;
        let mut plan: Option<Option<SinceStartPlan>> = None;
        loop {
            let mut answered = false;
            if rule_expr.is_none() {
                match self.prom.alert_rule(&a.alert.alertname) {
                    Ok(Some(rule)) => {
                        answered = true;
                        rule_loaded = Some(true);
                        rule_expr = Some(rule.query);
                    }
                    Ok(None) => {
                        answered = true;
                        rule_loaded = Some(false);
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
            let mut firing = None;
            let mut scrape = Scrape::Unknown(String::new());
            let mut since_start = None;
            if let Some(expr) = &rule_expr {
                let primary = primary_item(&a.diagnosis, Some(expr));
                if before.is_none() {
                    if let Ok(s) = self.prom.instant(expr, Some(to_chrono(began_wall))) {
                        answered = true;
                        before = Some(Before {
                            firing: Some(!s.is_empty()),
                        });
                    }
                }
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
                    Ok(samples) => {
                        firing = Some(!samples.is_empty());
                        if samples.is_empty() {
                            scrape = self.scraped_since(acted_wall);
                        }
                    }
                    Err(e) => last_problem = format!("cannot query Prometheus: {e}"),
                }
                if plan.is_none() {
                    plan = Some(self.since_start_plan(expr));
                }
                if let Some(Some(plan)) = &plan {
                    if old_start.is_none() {
                        let q = format!(
                            "max(process_start_time_seconds{{job={}}})",
                            label_value(&plan.job)
                        );
                        if let Ok(v) = self.prom.instant_value(&q, Some(to_chrono(began_wall))) {
                            old_start = Some(v);
                        }
                    }
                    if let Some(old) = old_start {
                        since_start = self.read_since_start(plan, began_wall, old);
                    }
                }
            }
            let obs = Observation {
                answered,
                rule_loaded,
                firing,
                scrape,
                since_start,
            };
            let verdict = judge(before.unwrap_or(Before { firing: None }), &obs);
            let secs = self.acted_at.elapsed().as_secs_f64();
            let primary = rule_expr
                .as_deref()
                .and_then(|e| primary_item(&a.diagnosis, Some(e)));
            match verdict {
                Verdict::Verified { since_start: true } => {
                    let s = obs.since_start.as_ref().expect("judged on it");
                    let summary = match (primary, s.value) {
                        (Some(item), Some(v)) => format!(
                            "verified: {} back to {} over the {:.0} requests answered since {words}, {secs:.0} s after {words}",
                            item.label,
                            item.unit.format(v),
                            s.requests
                        ),
                        _ => format!(
                            "verified: {}'s condition cleared over the {:.0} requests answered since {words}, {secs:.0} s after {words}",
                            a.alert.alertname, s.requests
                        ),
                    };
                    return verified(summary, secs, s.value.or(last_value));
                }
                Verdict::Verified { since_start: false } => {
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
                    return verified(summary, secs, last_value);
                }
                Verdict::AlreadyGone => {
                    return self.unconfirmed(
                        UnconfirmedReason::AlreadyGone,
                        &format!(
                            "{}'s condition had already cleared when {words} began, so {words} cannot be credited with the recovery",
                            a.alert.alertname
                        ),
                        last_value,
                    );
                }
                Verdict::Waiting(w) => {
                    last_problem = match &w {
                        Waiting::Silent | Waiting::NoRule => last_problem,
                        Waiting::Unknown => match &obs.scrape {
                            Scrape::Unknown(p) if !p.is_empty() => p.clone(),
                            _ => last_problem,
                        },
                        Waiting::NoTraffic { requests } => format!(
                            "no real requests reached {} since {words} ({requests:.0} answered, fewer than {MIN_REQUESTS:.0})",
                            a.unit
                        ),
                        Waiting::NotScraped => format!(
                            "the alert's condition is gone, but Prometheus has not scraped job {} since {words} yet",
                            job_of(a).unwrap_or("?")
                        ),
                        Waiting::Down => format!(
                            "the alert's condition is gone only because job {} is down (its `up` is not 1 since {words}), which proves nothing",
                            job_of(a).unwrap_or("?")
                        ),
                        Waiting::StillFiring { since_start } => {
                            let on = if *since_start {
                                format!(" on the requests answered since {words}")
                            } else {
                                String::new()
                            };
                            let value = if *since_start {
                                obs.since_start.as_ref().and_then(|s| s.value)
                            } else {
                                last_value
                            };
                            match (primary, value) {
                                (Some(item), Some(v)) => {
                                    format!("{} still {}{on}", item.label, item.unit.format(v))
                                }
                                _ => format!("{}'s condition still holds{on}", a.alert.alertname),
                            }
                        }
                    };
                    if !matches!(w, Waiting::Silent) {
                        last_known = Some(w);
                    }
                }
            }
            // Progress only once there is an expression to wait for (Prometheus answers).
            if rule_expr.is_some() && polls % 5 == 0 && !last_problem.is_empty() {
                progress(&format!(
                    "waiting for {} to clear: {last_problem} ({secs:.0} s after {words})",
                    a.alert.alertname,
                ));
            }
            polls += 1;
            if Instant::now() >= deadline {
                return match conclude(last_known.as_ref()) {
                    Conclusion::NotFixed => self.failed(
                        format!(
                            "not fixed after {} s: {last_problem}; nothing more will be done automatically",
                            self.timeout.as_secs()
                        ),
                        last_value,
                    ),
                    Conclusion::Unconfirmed(reason) => {
                        let why = match reason {
                            UnconfirmedReason::PrometheusSilent => format!(
                                "Prometheus did not answer for {} s ({last_problem}), so whether {} cleared is unknown",
                                self.timeout.as_secs(),
                                a.alert.alertname
                            ),
                            UnconfirmedReason::NoTraffic => format!(
                                "{last_problem} in {} s, so whether {} is fixed is unknown until traffic returns",
                                self.timeout.as_secs(),
                                a.alert.alertname
                            ),
                            UnconfirmedReason::NotScraped => format!(
                                "Prometheus did not scrape job {} in the {} s since {words}, so whether {} cleared is unknown",
                                job_of(a).unwrap_or("?"),
                                self.timeout.as_secs(),
                                a.alert.alertname
                            ),
                            UnconfirmedReason::NoRule | UnconfirmedReason::AlreadyGone => {
                                last_problem
                            }
                        };
                        self.unconfirmed(reason, &why, last_value)
                    }
                };
            }
            std::thread::sleep(
                self.poll
                    .min(deadline.saturating_duration_since(Instant::now()))
                    .max(Duration::from_millis(10)),
            );
        }
    }

    /// The since-start queries when the diagnosis has them and they apply (a restart, an
    /// alert with a `job`).
    fn since_start_plan(&self, expr: &str) -> Option<SinceStartPlan> {
        let a = self.action;
        if a.kind != ActionKind::Restart {
            return None;
        }
        let job = job_of(a)?.to_owned();
        let items = &a.diagnosis.evidence.items;
        let find = |key: &str| items.iter().find(|i| i.key == key).map(|i| i.query.clone());
        let requests = find(keys::REQUESTS_SINCE_START)?;
        // The primary item's counterpart: `error_ratio` → `error_ratio_since_start`.
        let primary = primary_item(&a.diagnosis, Some(expr));
        let value = primary.and_then(|p| find(&format!("{}_since_start", p.key)));
        let condition = match (primary, &value) {
            (Some(p), Some(q)) => substitute(expr, metric_name(&p.query), q),
            _ => None,
        };
        Some(SinceStartPlan {
            requests,
            condition,
            value,
            job,
        })
    }

    /// The since-start reading, when every instance of the job runs a process started after
    /// the action began (and after the newest start before it, `old`).
    fn read_since_start(
        &self,
        plan: &SinceStartPlan,
        began: SystemTime,
        old: Option<f64>,
    ) -> Option<SinceStart> {
        let began_secs = began
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
            - START_SLACK.as_secs_f64();
        let newest_start = self
            .prom
            .instant_value(
                &format!(
                    "min(process_start_time_seconds{{job={}}})",
                    label_value(&plan.job)
                ),
                None,
            )
            .ok()??;
        if newest_start <= began_secs || old.is_some_and(|o| newest_start <= o) {
            return None;
        }
        // No series at all: the job has no such counters (another kind of service diagnosed
        // with this plan), so they say nothing, not "no traffic". A series at 0 is no traffic.
        let requests = self.prom.instant_value(&plan.requests, None).ok()??;
        let holds = plan
            .condition
            .as_ref()
            .and_then(|q| self.prom.instant(q, None).ok().map(|s| !s.is_empty()));
        let value = plan
            .value
            .as_ref()
            .and_then(|q| self.prom.instant_value(q, None).ok().flatten());
        Some(SinceStart {
            requests,
            holds,
            value,
        })
    }

    /// Whether Prometheus has scraped every target of the alert's `job` successfully after
    /// `acted`. Alerts without a `job` label: [`Scrape::NoJob`].
    fn scraped_since(&self, acted: SystemTime) -> Scrape {
        let Some(job) = job_of(self.action) else {
            return Scrape::NoJob;
        };
        // The oldest latest-scrape time over the job's targets, and whether all are up.
        let j = label_value(job);
        let query = format!("min(timestamp(up{{job={j}}})) and on() (min(up{{job={j}}}) == 1)");
        let acted_secs = acted
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        match self.prom.instant_value(&query, None) {
            Ok(Some(scraped)) if scraped > acted_secs => Scrape::Since,
            Ok(Some(_)) => Scrape::NotSince,
            Ok(None) => {
                // Down, or no `up` at all; a failed scrape after the action is "down", a job
                // with no scrape since is "not scraped".
                let last = format!("max(timestamp(up{{job={j}}}))");
                match self.prom.instant_value(&last, None) {
                    Ok(Some(t)) if t > acted_secs => Scrape::Down,
                    Ok(_) => Scrape::NotSince,
                    Err(e) => Scrape::Unknown(format!(
                        "cannot ask Prometheus whether job {job} is scraped: {e}"
                    )),
                }
            }
            Err(e) => Scrape::Unknown(format!(
                "cannot ask Prometheus whether job {job} is scraped: {e}"
            )),
        }
    }

    /// The action ran; whether it helped is not known, and why.
    fn unconfirmed(
        &self,
        reason: UnconfirmedReason,
        why: &str,
        value_after: Option<f64>,
    ) -> Outcome {
        let a = self.action;
        let done = match a.kind {
            ActionKind::Restart => format!("{} is active again with a new invocation", a.unit),
            ActionKind::ClearCache => format!("the cache of {} was cleared", a.unit),
        };
        Outcome {
            fixed: false,
            unconfirmed: true,
            reason: Some(reason),
            summary: format!(
                "unconfirmed ({}): {done}, but {why}; check it yourself (aiops show {}). Not counted as a failure toward the breaker",
                reason.as_str(),
                a.id
            ),
            recovery_secs: None,
            value_after,
        }
    }

    fn failed(&self, summary: String, value_after: Option<f64>) -> Outcome {
        Outcome {
            fixed: false,
            unconfirmed: false,
            reason: None,
            summary,
            recovery_secs: None,
            value_after,
        }
    }
}

/// A fix that worked, `secs` after the action, with the primary value measured after it.
fn verified(summary: String, secs: f64, value_after: Option<f64>) -> Outcome {
    Outcome {
        fixed: true,
        unconfirmed: false,
        reason: None,
        summary,
        recovery_secs: Some(secs),
        value_after,
    }
}

/// The alert's plain `job` label.
fn job_of(a: &Action) -> Option<&str> {
    a.alert.labels.get("job").map(String::as_str)
}

fn to_chrono(t: SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(t)
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

    #[test]
    fn the_primary_selector_is_replaced_with_its_matchers_and_nothing_else() {
        let expr = "job:http_request_error_ratio:rate30s{job=\"aiops-demo-app\"} > 0.05\nand on (job)\njob:http_requests:rate30s{job=\"aiops-demo-app\"} >= 0.1";
        assert_eq!(
            substitute(expr, "job:http_request_error_ratio:rate30s", "R").unwrap(),
            "(R) > 0.05\nand on (job)\njob:http_requests:rate30s{job=\"aiops-demo-app\"} >= 0.1"
        );
        // A `}` inside a quoted matcher value does not end the selector.
        assert_eq!(
            substitute("m{a=\"x}\\\"y\"} > 1", "m", "R").unwrap(),
            "(R) > 1"
        );
        // Whole names only; absent names give None.
        assert_eq!(substitute("mm > 1", "m", "R"), None);
        assert_eq!(
            substitute("m_total > 1 or m", "m", "R").unwrap(),
            "m_total > 1 or (R)"
        );
        assert_eq!(substitute("x > 1", "", "R"), None);
        // An unterminated selector is not rewritten.
        assert_eq!(substitute("m{a=\"b\" > 1", "m", "R"), None);
    }

    fn obs() -> Observation {
        Observation {
            answered: true,
            rule_loaded: Some(true),
            firing: Some(false),
            scrape: Scrape::Since,
            since_start: None,
        }
    }

    const FIRING: Before = Before { firing: Some(true) };

    fn since(requests: f64, holds: Option<bool>) -> Option<SinceStart> {
        Some(SinceStart {
            requests,
            holds,
            value: Some(0.0),
        })
    }

    #[test]
    fn the_new_process_counters_decide_before_the_rate_window_clears() {
        // The rate window still holds the old process's errors: the expression fires.
        let o = Observation {
            firing: Some(true),
            since_start: since(57.0, Some(false)),
            ..obs()
        };
        assert_eq!(judge(FIRING, &o), Verdict::Verified { since_start: true });
        // The condition holds on the new process's own requests: still firing, on them.
        let o = Observation {
            firing: Some(false),
            since_start: since(57.0, Some(true)),
            ..obs()
        };
        assert_eq!(
            judge(FIRING, &o),
            Verdict::Waiting(Waiting::StillFiring { since_start: true })
        );
        assert_eq!(
            conclude(Some(&Waiting::StillFiring { since_start: true })),
            Conclusion::NotFixed
        );
        // The condition could not be rewritten onto the counters: the expression decides.
        let o = Observation {
            firing: Some(true),
            since_start: since(57.0, None),
            ..obs()
        };
        assert_eq!(
            judge(FIRING, &o),
            Verdict::Waiting(Waiting::StillFiring { since_start: false })
        );
        let o = Observation {
            since_start: since(57.0, None),
            ..obs()
        };
        assert_eq!(judge(FIRING, &o), Verdict::Verified { since_start: false });
    }

    #[test]
    fn no_traffic_is_unconfirmed_even_when_the_expression_clears() {
        for requests in [0.0, MIN_REQUESTS - 1.0] {
            // The expression is empty and the target scraped: today's logic said "verified".
            let o = Observation {
                since_start: since(requests, Some(false)),
                ..obs()
            };
            let v = judge(FIRING, &o);
            assert_eq!(v, Verdict::Waiting(Waiting::NoTraffic { requests }));
            let Verdict::Waiting(w) = v else { panic!() };
            assert_eq!(
                conclude(Some(&w)),
                Conclusion::Unconfirmed(UnconfirmedReason::NoTraffic)
            );
        }
        let o = Observation {
            since_start: since(MIN_REQUESTS, Some(false)),
            ..obs()
        };
        assert_eq!(judge(FIRING, &o), Verdict::Verified { since_start: true });
    }

    #[test]
    fn a_symptom_gone_before_the_action_is_not_credited_to_it() {
        let gone = Before {
            firing: Some(false),
        };
        assert_eq!(judge(gone, &obs()), Verdict::AlreadyGone);
        let o = Observation {
            since_start: since(57.0, Some(false)),
            ..obs()
        };
        assert_eq!(judge(gone, &o), Verdict::AlreadyGone);
        // Gone before, back after: it persists, and that is a failure.
        let o = Observation {
            firing: Some(true),
            ..obs()
        };
        assert_eq!(
            judge(gone, &o),
            Verdict::Waiting(Waiting::StillFiring { since_start: false })
        );
        // Unknown before (the query failed): the after-state decides as before.
        assert_eq!(
            judge(Before { firing: None }, &obs()),
            Verdict::Verified { since_start: false }
        );
    }

    #[test]
    fn silence_is_no_recovery_and_says_why() {
        use UnconfirmedReason as R;
        let cases = [
            (
                Scrape::NotSince,
                Waiting::NotScraped,
                Conclusion::Unconfirmed(R::NotScraped),
            ),
            (Scrape::Down, Waiting::Down, Conclusion::NotFixed),
            (
                Scrape::Unknown("x".into()),
                Waiting::Unknown,
                Conclusion::Unconfirmed(R::PrometheusSilent),
            ),
        ];
        for (scrape, waiting, end) in cases {
            let o = Observation { scrape, ..obs() };
            assert_eq!(judge(FIRING, &o), Verdict::Waiting(waiting.clone()));
            assert_eq!(conclude(Some(&waiting)), end);
        }
        // No job label: nothing to scrape-check, the expression alone decides.
        let o = Observation {
            scrape: Scrape::NoJob,
            ..obs()
        };
        assert_eq!(judge(FIRING, &o), Verdict::Verified { since_start: false });
        // Prometheus never answered.
        let o = Observation {
            answered: false,
            ..obs()
        };
        assert_eq!(judge(FIRING, &o), Verdict::Waiting(Waiting::Silent));
        assert_eq!(conclude(None), Conclusion::Unconfirmed(R::PrometheusSilent));
        // No rule to check.
        let o = Observation {
            rule_loaded: Some(false),
            firing: None,
            ..obs()
        };
        assert_eq!(judge(FIRING, &o), Verdict::Waiting(Waiting::NoRule));
        assert_eq!(
            conclude(Some(&Waiting::NoRule)),
            Conclusion::Unconfirmed(R::NoRule)
        );
        // Still firing on the rate window: not fixed.
        assert_eq!(
            conclude(Some(&Waiting::StillFiring { since_start: false })),
            Conclusion::NotFixed
        );
    }

    #[test]
    fn outcomes_of_older_files_still_read() {
        let old = r#"{"fixed":false,"unverified":true,"summary":"unverified: x","recovery_secs":null,"value_after":null}"#;
        let o: Outcome = serde_json::from_str(old).unwrap();
        assert!(o.unconfirmed && !o.fixed);
        assert_eq!(o.reason, None);
        let plain = r#"{"fixed":true,"summary":"verified","recovery_secs":3.0,"value_after":0.0}"#;
        let o: Outcome = serde_json::from_str(plain).unwrap();
        assert!(o.fixed && !o.unconfirmed && o.reason.is_none());
        // New files: the reason in snake case, and a state that reads back.
        let new = Outcome {
            fixed: false,
            unconfirmed: true,
            reason: Some(UnconfirmedReason::NoTraffic),
            summary: "s".into(),
            recovery_secs: None,
            value_after: None,
        };
        let text = serde_json::to_string(&new).unwrap();
        assert!(
            text.contains(r#""unconfirmed":true,"reason":"no_traffic""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Outcome>(&text).unwrap(), new);
        let s: crate::state::ActionState = serde_json::from_str(r#""unverified""#).unwrap();
        assert_eq!(s, crate::state::ActionState::Unconfirmed);
        assert_eq!(serde_json::to_string(&s).unwrap(), r#""unconfirmed""#);
    }
}
