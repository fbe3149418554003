//! [`Gate`]: the front door of the crate. The receiver proposes, people approve or reject, the
//! gate checks every limit, executes, verifies, audits and tells subscribers what happened.
//!
//! Locking: the state lock (flock, [`Store::lock`]) is held only for short read-check-write
//! steps; network checks happen before it and execution/verification after it. An approval is
//! decided (pending → approved → executing, booked in the limits) in one locked step, so two
//! approvals racing, in one process or in two, see each other: exactly one wins, the other reads
//! the winner's name from the file. A process-wide mutex in front of the flock keeps tasks of one
//! process from queueing on the kernel lock in a blocking thread pool.
//!
//! Every method except [`Gate::subscribe`] and [`Gate::serve_control`] blocks (files, HTTP,
//! systemctl): call them from blocking threads.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiops_core::Config;
use aiops_core::config::{ActionKind, ExecutorKind};
use aiops_core::model::{Diagnosis, OutcomeStats, Recommendation, ValueUnit};
use aiops_core::unit::UnitName;
use aiops_diagnosis::prom::Prom;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::alerts::AlertmanagerClient;
use crate::audit::{AuditError, AuditLog, Record, VerifyReport};
use crate::exec::{self, DemoExecutor, Executor, SystemdExecutor, UnitStatus};
use crate::metrics::Metrics;
use crate::state::{ACTION_SCHEMA, Action, ActionId, ActionState, Actor, AlertRef, Outcome};
use crate::store::{Store, StoreError};
use crate::verify::{self, Verification, primary_item};

/// Why a request was refused; `stale` is the only one `--force` overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    NothingPending,
    Ambiguous,
    AlreadyHandled,
    Rejected,
    Expired,
    Obsolete,
    NotAllowed,
    InvalidUnit,
    Cooldown,
    HourlyLimit,
    BreakerOpen,
    StartLimit,
    /// The unit's own state cannot be read (systemd or the demo supervisor does not answer).
    UnitUnreadable,
    /// The alert no longer fires, or its evidence no longer holds, or neither can be confirmed.
    Stale,
    Unauthorized,
    BadRequest,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NothingPending => "nothing_pending",
            Refusal::Ambiguous => "ambiguous",
            Refusal::AlreadyHandled => "already_handled",
            Refusal::Rejected => "rejected",
            Refusal::Expired => "expired",
            Refusal::Obsolete => "obsolete",
            Refusal::NotAllowed => "not_allowed",
            Refusal::InvalidUnit => "invalid_unit",
            Refusal::Cooldown => "cooldown",
            Refusal::HourlyLimit => "hourly_limit",
            Refusal::BreakerOpen => "breaker_open",
            Refusal::StartLimit => "start_limit",
            Refusal::UnitUnreadable => "unit_unreadable",
            Refusal::Stale => "stale",
            Refusal::Unauthorized => "unauthorized",
            Refusal::BadRequest => "bad_request",
        }
    }
}

/// Errors of the gate. `Refused` and `NotFound` are answers, the rest are failures.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("{message}")]
    NotFound { message: String },
    #[error("{message}")]
    Refused { reason: Refusal, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("cannot register the gate's metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// What [`Gate::propose`] did with a diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Proposal {
    /// A pending action awaits approval (new, or refreshed by a repeat of the alert).
    Pending {
        id: ActionId,
        /// `aiops approve <id>`, to paste into the message.
        approve_command: String,
        expires_at: DateTime<Utc>,
        created: bool,
    },
    /// The diagnosis proposes nothing to approve (no action helps, or monitoring is blind).
    NotActionable,
    /// An action was recommended but the gate will not offer it; the reason says why.
    Refused { reason: String },
}

/// A change worth telling people about (the receiver posts these to Slack).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateEvent {
    pub id: ActionId,
    pub state: ActionState,
    pub kind: ActionKind,
    pub unit: String,
    pub alertname: String,
    pub group_key: String,
    pub actor: Actor,
    /// One sentence for people, e.g. the verification outcome.
    pub message: String,
}

/// The end of an approval that ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    pub action: Action,
    pub fixed: bool,
    pub summary: String,
}

/// One evidence item then (when proposed) and now (re-queried).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceNow {
    pub key: String,
    pub label: String,
    pub unit: ValueUnit,
    pub query: String,
    pub then: Option<f64>,
    pub now: Option<f64>,
    pub error: Option<String>,
}

/// Why an approval would be stale, from [`Gate::staleness`].
#[derive(Debug, Clone, Default)]
struct Staleness {
    /// One sentence each; none: the alert fires and its evidence holds.
    reasons: Vec<String>,
    /// Prometheus did not answer (so verification will be blind too).
    prometheus_down: bool,
}

/// An action with everything `aiops show` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShowData {
    pub action: Action,
    pub evidence_now: Vec<EvidenceNow>,
    pub evidence_now_at: DateTime<Utc>,
    pub outcome_stats: OutcomeStats,
    /// What the audit log recorded about the unit just before it was restarted (the action's
    /// `executing` entry); `None` for an action that never ran a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_restart: Option<BeforeRestart>,
}

/// The unit's forensic state from the audit log's `executing` entry of a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BeforeRestart {
    /// The entry's sequence number and time.
    pub audit_seq: u64,
    pub at: DateTime<Utc>,
    pub snapshot: Option<aiops_core::model::UnitSnapshot>,
    /// Why the snapshot is missing or shortened.
    pub note: Option<String>,
}

/// Knobs tests turn; production uses the defaults.
#[derive(Debug, Clone)]
pub struct GateOptions {
    /// How often verification polls the unit and Prometheus.
    pub poll_interval: Duration,
    /// Overrides `remediation.verify_timeout_secs` (tests need less than a second).
    pub verify_timeout: Option<Duration>,
    /// Overrides the executor chosen by `remediation.executor`.
    pub executor: Option<Arc<dyn Executor>>,
    /// At open, fail actions a dead executor left approved/executing/verifying.
    pub recover_interrupted: bool,
}

impl Default for GateOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(2),
            verify_timeout: None,
            executor: None,
            recover_interrupted: true,
        }
    }
}

/// The human gate of one state directory.
#[derive(Debug)]
pub struct Gate {
    config: Config,
    store: Store,
    audit: AuditLog,
    executor: Arc<dyn Executor>,
    prom: Prom,
    alertmanager: AlertmanagerClient,
    metrics: Metrics,
    events: broadcast::Sender<GateEvent>,
    /// Serializes this process's decisions in front of the flock.
    decide: Mutex<()>,
    options: GateOptions,
    /// Held for the gate's life when it was free at open: only its holder recovers interrupted
    /// actions, so a second process opening the same state dir never fails a live one's work.
    executor_lock: Option<aiops_core::fsutil::LockGuard>,
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn ago(t: DateTime<Utc>) -> String {
    let secs = (Utc::now() - t).num_seconds().max(0) as u64;
    crate::limits::format_duration(Duration::from_secs(secs))
}

impl Gate {
    /// Opens the state directory (creating it), registers the metrics, recovers actions a dead
    /// executor left behind.
    pub fn open(config: &Config, registry: &prometheus::Registry) -> Result<Self, GateError> {
        Self::open_with(config, registry, GateOptions::default())
    }

    pub fn open_with(
        config: &Config,
        registry: &prometheus::Registry,
        options: GateOptions,
    ) -> Result<Self, GateError> {
        let (store, _report) = Store::open(&config.state_dir)?;
        let audit = AuditLog::open(&config.state_dir)?;
        let executor: Arc<dyn Executor> = match (&options.executor, config.remediation.executor) {
            (Some(e), _) => e.clone(),
            (None, ExecutorKind::Systemd) => Arc::new(SystemdExecutor::default()),
            (None, ExecutorKind::Demo) => Arc::new(DemoExecutor::new(
                config
                    .remediation
                    .demo_supervisor_socket
                    .clone()
                    .unwrap_or_default(),
            )),
        };
        let timeout = Duration::from_millis(config.prometheus.timeout_ms.max(1));
        let executor_lock =
            aiops_core::fsutil::try_lock_exclusive(&config.state_dir.join("executor.lock"))
                .map_err(StoreError::from)?;
        let gate = Self {
            config: config.clone(),
            store,
            audit,
            executor,
            prom: Prom::new(&config.prometheus),
            alertmanager: AlertmanagerClient::new(&config.alertmanager.url, timeout),
            metrics: Metrics::register(registry)?,
            events: broadcast::channel(256).0,
            decide: Mutex::new(()),
            options,
            executor_lock,
        };
        if gate.executor_lock.is_none() {
            tracing::warn!(
                state_dir = %config.state_dir.display(),
                "another process holds this state directory's executor lock; not recovering interrupted actions"
            );
        } else if gate.options.recover_interrupted {
            gate.recover_interrupted()?;
        }
        gate.expire_due()?;
        gate.refresh_pending_gauge()?;
        Ok(gate)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn audit_log(&self) -> &AuditLog {
        &self.audit
    }

    /// Transitions as they happen (proposed, approved, rejected, expired, obsolete, succeeded,
    /// failed). Slow receivers lose the oldest events (`RecvError::Lagged`), never block the gate.
    pub fn subscribe(&self) -> broadcast::Receiver<GateEvent> {
        self.events.subscribe()
    }

    fn emit(&self, a: &Action, actor: &Actor, message: String) {
        self.emit_as(a, a.state, actor, message);
    }

    /// Like [`Gate::emit`], for a transition the action has already moved past (the approval is
    /// announced once execution has been booked).
    fn emit_as(&self, a: &Action, state: ActionState, actor: &Actor, message: String) {
        let _ = self.events.send(GateEvent {
            id: a.id.clone(),
            state,
            kind: a.kind,
            unit: a.unit.to_string(),
            alertname: a.alert.alertname.clone(),
            group_key: a.alert.group_key.clone(),
            actor: actor.clone(),
            message,
        });
    }

    fn lock_decisions(&self) -> std::sync::MutexGuard<'_, ()> {
        self.decide.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn audit_action(
        &self,
        actor: &Actor,
        event: &str,
        a: &Action,
        detail: Option<String>,
    ) -> Result<(), GateError> {
        self.audit.append(
            actor,
            Record {
                event: event.to_owned(),
                action_id: Some(a.id.clone()),
                unit: Some(a.unit.to_string()),
                action: Some(a.kind),
                evidence_id: Some(a.evidence_id().to_owned()),
                forced: a.forced,
                detail,
                ..Record::default()
            },
        )?;
        Ok(())
    }

    /// Audits a refusal, counts it, and returns it as the error to hand back.
    fn refuse(
        &self,
        actor: &Actor,
        a: Option<&Action>,
        reason: Refusal,
        message: String,
        raw_unit: Option<&str>,
    ) -> GateError {
        let record = Record {
            event: "refused".into(),
            action_id: a.map(|a| a.id.clone()),
            unit: raw_unit
                .map(str::to_owned)
                .or_else(|| a.map(|a| a.unit.to_string())),
            action: a.map(|a| a.kind),
            evidence_id: a.map(|a| a.evidence_id().to_owned()),
            forced: false,
            detail: Some(format!("{}: {message}", reason.as_str())),
            ..Record::default()
        };
        if let Err(e) = self.audit.append(actor, record) {
            tracing::error!(error = %e, "cannot audit a refusal");
        }
        GateError::Refused { reason, message }
    }

    fn refresh_pending_gauge(&self) -> Result<(), GateError> {
        let locked = self.store.lock()?;
        let n = locked
            .scan()?
            .actions
            .iter()
            .filter(|a| a.state == ActionState::Pending)
            .count();
        self.metrics.pending.set(n as i64);
        Ok(())
    }

    fn recover_interrupted(&self) -> Result<(), GateError> {
        let system = Actor::system();
        let now = Utc::now();
        let locked = self.store.lock()?;
        for mut a in locked.scan()?.actions {
            if !a.state.is_in_flight() {
                continue;
            }
            let was = a.state;
            let note = format!(
                "interrupted: the executor stopped while the action was {was}; whether it ran is unknown, check the unit"
            );
            a.outcome = Some(Outcome {
                fixed: false,
                unconfirmed: false,
                reason: None,
                summary: note.clone(),
                recovery_secs: None,
                value_after: None,
            });
            a.transition(ActionState::Failed, &system, now, Some(note.clone()))
                .map_err(|source| StoreError::Transition {
                    id: a.id.clone(),
                    source,
                })?;
            locked.update(&a)?;
            self.audit_action(&system, "failed", &a, Some(note.clone()))?;
            self.emit(&a, &system, note);
        }
        Ok(())
    }

    /// Expires pending actions past their TTL. The receiver calls it periodically; approval and
    /// listing call it first.
    pub fn expire_due(&self) -> Result<Vec<ActionId>, GateError> {
        let system = Actor::system();
        let now = Utc::now();
        let _d = self.lock_decisions();
        let locked = self.store.lock()?;
        let mut expired = Vec::new();
        for mut a in locked.scan()?.actions {
            if a.state != ActionState::Pending || a.expires_at > now {
                continue;
            }
            let note = format!(
                "not approved within {}",
                crate::limits::format_duration(Duration::from_secs(
                    self.config.remediation.action_ttl_secs
                ))
            );
            a.transition(ActionState::Expired, &system, now, Some(note.clone()))
                .map_err(|source| StoreError::Transition {
                    id: a.id.clone(),
                    source,
                })?;
            locked.update(&a)?;
            self.audit_action(&system, "expired", &a, Some(note.clone()))?;
            self.emit(&a, &system, format!("action {} expired: {note}", a.id));
            expired.push(a.id);
        }
        if !expired.is_empty() {
            drop(locked);
            self.refresh_pending_gauge()?;
        }
        Ok(expired)
    }

    /// Checks a unit against the allow-list of the configuration in force.
    fn allowed(&self, unit: &str, kind: ActionKind) -> Result<UnitName, (Refusal, String)> {
        let unit =
            UnitName::parse(unit).map_err(|e| (Refusal::InvalidUnit, format!("refused: {e}")))?;
        match self.config.remediation.allowed.get(unit.as_str()) {
            Some(actions) if actions.contains(&kind) => Ok(unit),
            Some(actions) => Err((
                Refusal::NotAllowed,
                format!(
                    "{kind} of {unit} is not allowed (remediation.allowed lists only {} for it)",
                    actions
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
            None => Err((
                Refusal::NotAllowed,
                format!(
                    "{unit} is not in remediation.allowed; aiops never acts on units outside the allow-list"
                ),
            )),
        }
    }

    /// Takes a diagnosis of a firing alert group and, if it recommends an allowed action, stores
    /// it as pending (one per group and action: a repeat refreshes the existing one).
    pub fn propose(&self, alert: &AlertRef, diagnosis: &Diagnosis) -> Result<Proposal, GateError> {
        let system = Actor::system();
        let (kind, unit) = match &diagnosis.recommendation {
            Recommendation::Act { action, unit, .. } => (*action, unit.clone()),
            other => {
                let k = match other {
                    Recommendation::NoAction { .. } => "no_action",
                    Recommendation::Blind { .. } => "blind",
                    _ => "refused",
                };
                self.metrics
                    .recommendations
                    .with_label_values(&[&alert.alertname, k])
                    .inc();
                return Ok(Proposal::NotActionable);
            }
        };
        self.metrics
            .recommendations
            .with_label_values(&[&alert.alertname, kind.as_str()])
            .inc();
        let refused = |reason: Refusal, message: String, raw: &str| {
            let _ = self.refuse(
                &system,
                None,
                reason,
                format!("{}: {message}", alert.alertname),
                Some(raw),
            );
            Ok(Proposal::Refused { reason: message })
        };
        // The alert's own unit label, if any, must be a valid name and the recommended unit.
        if let Some(label) = alert.labels.get("unit") {
            if let Err(e) = UnitName::parse(label) {
                return refused(
                    Refusal::InvalidUnit,
                    format!("the alert's unit label is refused: {e}"),
                    label,
                );
            }
            if label != unit.as_str() {
                return refused(
                    Refusal::InvalidUnit,
                    format!(
                        "the recommendation names {unit} but the alert's unit label is {label:?}"
                    ),
                    label,
                );
            }
        }
        let unit = match self.allowed(unit.as_str(), kind) {
            Ok(u) => u,
            Err((reason, message)) => return refused(reason, message, unit.as_str()),
        };
        let now = Utc::now();
        let ttl = chrono::TimeDelta::seconds(
            self.config.remediation.action_ttl_secs.min(i64::MAX as u64) as i64,
        );
        let _d = self.lock_decisions();
        let locked = self.store.lock()?;
        let limits = locked.limits()?;
        let stats = limits.outcome(&alert.alertname, kind);
        if stats.consecutive_failures >= self.config.remediation.breaker_threshold {
            drop(locked);
            return refused(
                Refusal::BreakerOpen,
                format!(
                    "{kind} of {unit} failed verification {} times in a row for {}; aiops stops proposing it (reset with `aiops breaker reset {} --action {kind}`)",
                    stats.consecutive_failures, alert.alertname, alert.alertname
                ),
                unit.as_str(),
            );
        }
        let scan = locked.scan()?;
        let same = |a: &&Action| a.alert.group_key == alert.group_key && a.kind == kind;
        if let Some(busy) = scan
            .actions
            .iter()
            .filter(same)
            .find(|a| a.state.is_in_flight())
        {
            return Ok(Proposal::Refused {
                reason: format!(
                    "action {} for this alert is already {}",
                    busy.id, busy.state
                ),
            });
        }
        if let Some(existing) = scan
            .actions
            .iter()
            .filter(same)
            .find(|a| a.state == ActionState::Pending)
        {
            let mut a = existing.clone();
            a.diagnosis = diagnosis.clone();
            a.alert = alert.clone();
            a.unit = unit;
            a.seen_count = a.seen_count.saturating_add(1);
            a.last_seen = now;
            a.updated_at = now;
            locked.update(&a)?;
            return Ok(Proposal::Pending {
                approve_command: format!("aiops approve {}", a.id),
                id: a.id,
                expires_at: a.expires_at,
                created: false,
            });
        }
        let id = locked.fresh_id();
        let a = Action {
            schema: ACTION_SCHEMA,
            id: id.clone(),
            state: ActionState::Pending,
            kind,
            unit,
            alert: alert.clone(),
            diagnosis: diagnosis.clone(),
            created_at: now,
            updated_at: now,
            seen_count: 1,
            last_seen: now,
            expires_at: now + ttl,
            forced: false,
            outcome: None,
            history: vec![crate::state::Transition {
                from: None,
                to: ActionState::Pending,
                at: now,
                by: system.clone(),
                note: None,
            }],
        };
        locked.create(&a)?;
        self.audit_action(
            &system,
            "proposed",
            &a,
            Some(format!("alert {}", alert.alertname)),
        )?;
        drop(locked);
        drop(_d);
        self.metrics
            .alert_to_recommendation
            .observe((now - alert.starts_at).num_milliseconds().max(0) as f64 / 1000.0);
        self.refresh_pending_gauge()?;
        self.emit(
            &a,
            &system,
            format!(
                "{kind} of {} proposed; approve with `aiops approve {id}`",
                a.unit
            ),
        );
        Ok(Proposal::Pending {
            approve_command: format!("aiops approve {id}"),
            id,
            expires_at: a.expires_at,
            created: true,
        })
    }

    /// The alert group resolved: its pending actions become obsolete. Returns their ids.
    pub fn alert_resolved(&self, group_key: &str) -> Result<Vec<ActionId>, GateError> {
        let system = Actor::system();
        let now = Utc::now();
        let _d = self.lock_decisions();
        let locked = self.store.lock()?;
        let mut done = Vec::new();
        for mut a in locked.scan()?.actions {
            if a.state != ActionState::Pending || a.alert.group_key != group_key {
                continue;
            }
            let note = format!("the alert resolved at {} before anyone approved", when(now));
            a.transition(ActionState::Obsolete, &system, now, Some(note.clone()))
                .map_err(|source| StoreError::Transition {
                    id: a.id.clone(),
                    source,
                })?;
            locked.update(&a)?;
            self.audit_action(&system, "obsolete", &a, Some(note.clone()))?;
            self.emit(&a, &system, format!("action {} is obsolete: {note}", a.id));
            done.push(a.id);
        }
        drop(locked);
        if !done.is_empty() {
            self.refresh_pending_gauge()?;
        }
        Ok(done)
    }

    /// How `kind` fared before for `alertname` (feeds confidence and the breaker).
    pub fn outcome_stats(&self, alertname: &str, kind: ActionKind) -> OutcomeStats {
        self.store
            .lock()
            .and_then(|l| l.limits())
            .map(|l| l.outcome(alertname, kind))
            .unwrap_or_default()
    }

    /// Pending actions (or all, newest last).
    pub fn list(&self, all: bool) -> Result<Vec<Action>, GateError> {
        self.expire_due()?;
        let locked = self.store.lock()?;
        let scan = locked.scan()?;
        for p in &scan.problems {
            tracing::error!(error = %p, "unreadable action file");
        }
        Ok(scan
            .actions
            .into_iter()
            .filter(|a| all || a.state == ActionState::Pending)
            .collect())
    }

    /// The most recently changed actions, newest first.
    pub fn history(&self, limit: usize) -> Result<Vec<Action>, GateError> {
        let mut all = self.list(true)?;
        all.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(b.id.cmp(&a.id)));
        all.truncate(limit);
        Ok(all)
    }

    fn find(&self, id: &str) -> Result<Action, GateError> {
        let parsed = ActionId::parse(id).map_err(|message| GateError::NotFound { message })?;
        if let Some(a) = self.store.lock()?.get(&parsed)? {
            return Ok(a);
        }
        let corrupt = self
            .store
            .actions_dir()
            .join(format!("{parsed}.json.corrupt"));
        Err(GateError::NotFound {
            message: if corrupt.exists() {
                format!(
                    "action {id} cannot be used: its file {}.json was unreadable and was moved aside to {} (the receiver's log says why)",
                    parsed,
                    corrupt.display()
                )
            } else {
                format!(
                    "no action {id}; list the pending ones with `aiops pending` (or `aiops history` for old ones)"
                )
            },
        })
    }

    /// An action with its evidence re-queried now.
    pub fn show(&self, id: &str) -> Result<ShowData, GateError> {
        self.expire_due()?;
        let action = self.find(id)?;
        let now = Utc::now();
        let evidence_now = action
            .diagnosis
            .evidence
            .items
            .iter()
            .map(|item| {
                let (value, error) = match self.prom.instant_value(&item.query, None) {
                    Ok(v) => (v, None),
                    Err(e) => (None, Some(e.to_string())),
                };
                EvidenceNow {
                    key: item.key.clone(),
                    label: item.label.clone(),
                    unit: item.unit,
                    query: item.query.clone(),
                    then: item.value,
                    now: value,
                    error,
                }
            })
            .collect();
        let outcome_stats = self.outcome_stats(&action.alert.alertname, action.kind);
        let before_restart = if action.kind == ActionKind::Restart {
            self.audit
                .tail(usize::MAX)?
                .into_iter()
                .rev()
                .find(|e| e.event == "executing" && e.action_id.as_ref() == Some(&action.id))
                .map(|e| BeforeRestart {
                    audit_seq: e.seq,
                    at: e.at,
                    snapshot: e.unit_snapshot(),
                    note: e.unit_state_note,
                })
        } else {
            None
        };
        Ok(ShowData {
            action,
            evidence_now,
            evidence_now_at: now,
            outcome_stats,
            before_restart,
        })
    }

    /// Why an action in `a.state` cannot be approved or rejected (it is not pending).
    fn not_pending(&self, a: &Action) -> (Refusal, String) {
        let by = |s: ActionState| a.entered(s).map(|t| (t.by.name.clone(), when(t.at)));
        match a.state {
            ActionState::Pending => (Refusal::BadRequest, format!("action {} is pending", a.id)),
            s if s.is_in_flight() => {
                let (who, at) = by(ActionState::Approved).unwrap_or_default();
                (
                    Refusal::AlreadyHandled,
                    format!(
                        "action {} was already approved by {who} at {at}; it is {s} now",
                        a.id
                    ),
                )
            }
            ActionState::Succeeded | ActionState::Failed | ActionState::Unconfirmed => {
                let (who, at) =
                    by(ActionState::Approved).unwrap_or_else(|| ("nobody".into(), "-".into()));
                let summary = a
                    .outcome
                    .as_ref()
                    .map(|o| o.summary.clone())
                    .unwrap_or_default();
                (
                    Refusal::AlreadyHandled,
                    format!(
                        "action {} was already carried out: approved by {who} at {at}, {} at {}: {summary}",
                        a.id,
                        a.state,
                        when(a.updated_at)
                    ),
                )
            }
            ActionState::Rejected => {
                let t = a.entered(ActionState::Rejected);
                (
                    Refusal::Rejected,
                    format!(
                        "action {} was rejected by {} at {}: {}",
                        a.id,
                        t.map(|t| t.by.name.as_str()).unwrap_or("?"),
                        t.map(|t| when(t.at)).unwrap_or_default(),
                        t.and_then(|t| t.note.clone()).unwrap_or_default()
                    ),
                )
            }
            ActionState::Expired => (
                Refusal::Expired,
                format!(
                    "action {} expired at {} (nobody approved it within {}); if the alert still fires, a new action is proposed with its next notification",
                    a.id,
                    when(a.expires_at.min(a.updated_at)),
                    crate::limits::format_duration(Duration::from_secs(
                        self.config.remediation.action_ttl_secs
                    ))
                ),
            ),
            ActionState::Obsolete => (
                Refusal::Obsolete,
                format!(
                    "action {} is obsolete: its alert {} resolved at {} before anyone approved it",
                    a.id,
                    a.alert.alertname,
                    a.entered(ActionState::Obsolete)
                        .map(|t| when(t.at))
                        .unwrap_or_default()
                ),
            ),
            _ => (
                Refusal::BadRequest,
                format!("action {} is {}", a.id, a.state),
            ),
        }
    }

    /// Resolves "approve with no id": the only pending action.
    fn only_pending(&self, actor: &Actor) -> Result<ActionId, GateError> {
        let pending = self.list(false)?;
        match pending.as_slice() {
            [one] => Ok(one.id.clone()),
            [] => Err(self.refuse(
                actor,
                None,
                Refusal::NothingPending,
                "nothing is pending approval; `aiops history` shows past actions".into(),
                None,
            )),
            many => Err(self.refuse(
                actor,
                None,
                Refusal::Ambiguous,
                format!(
                    "{} actions are pending; name one: {}",
                    many.len(),
                    many.iter()
                        .map(|a| format!(
                            "{} ({} {} for {})",
                            a.id, a.kind, a.unit, a.alert.alertname
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None,
            )),
        }
    }

    /// Network checks that an approval still makes sense: the alert fires and its condition
    /// holds. Returns the reasons it is stale (none: fresh).
    fn staleness(&self, a: &Action) -> Staleness {
        let mut reasons = Vec::new();
        let mut prometheus_down = false;
        match self.alertmanager.still_fires(&a.alert) {
            Ok(true) => {}
            Ok(false) => reasons.push(format!(
                "the alert {} no longer fires (Alertmanager at {} does not list it)",
                a.alert.alertname,
                self.alertmanager.url()
            )),
            Err(e) => reasons.push(format!(
                "cannot confirm that {} still fires: {e}",
                a.alert.alertname
            )),
        }
        match self.prom.alert_rule(&a.alert.alertname) {
            Ok(Some(rule)) => match self.prom.instant(&rule.query, None) {
                Ok(s) if !s.is_empty() => {}
                Ok(_) => {
                    let detail = primary_item(&a.diagnosis, Some(&rule.query))
                        .and_then(|item| {
                            let now = self.prom.instant_value(&item.query, None).ok().flatten()?;
                            Some(format!(
                                ": {} is {} now ({} when proposed)",
                                item.label,
                                item.unit.format(now),
                                item.value
                                    .map(|v| item.unit.format(v))
                                    .unwrap_or_else(|| "no data".into())
                            ))
                        })
                        .unwrap_or_default();
                    reasons.push(format!(
                        "the evidence no longer holds: the alert's condition `{}` is false now{detail}",
                        rule.query.trim()
                    ));
                }
                Err(e) => {
                    prometheus_down = true;
                    reasons.push(format!("cannot re-check the evidence: {e}"));
                }
            },
            Ok(None) => reasons.push(format!(
                "cannot re-check the evidence: Prometheus has no alerting rule {} loaded",
                a.alert.alertname
            )),
            Err(e) => {
                prometheus_down = true;
                reasons.push(format!("cannot re-check the evidence: {e}"));
            }
        }
        if !reasons.is_empty() {
            let age = Utc::now() - a.diagnosis.evidence.gathered_at;
            if age.num_seconds() > self.config.remediation.stale_after_secs as i64 {
                reasons.push(format!(
                    "the evidence was gathered {} ago",
                    ago(a.diagnosis.evidence.gathered_at)
                ));
            }
        }
        Staleness {
            reasons,
            prometheus_down,
        }
    }

    /// What `--force` gives up and what it does not, for the refusal that suggests it and for
    /// the approval that uses it.
    fn what_force_skips(&self, stale: &Staleness) -> String {
        let mut s = "--force skips only the re-checks that the alert still fires and its evidence still holds; the allow-list, cooldown, hourly cap, breaker, systemd's start limit and the unit's own state are checked all the same".to_owned();
        if stale.prometheus_down {
            s.push_str(&format!(
                ". Prometheus does not answer, so recovery cannot be verified either: unless it answers within {} s of the action, the outcome is recorded as unconfirmed (not as a failure)",
                self.options
                    .verify_timeout
                    .unwrap_or(Duration::from_secs(
                        self.config.remediation.verify_timeout_secs
                    ))
                    .as_secs()
            ));
        }
        s
    }

    /// Approves, executes and verifies an action (`id = None`: the only pending one). Blocks
    /// until verification ends; `progress` receives one line per step.
    pub fn approve(
        &self,
        id: Option<&str>,
        actor: &Actor,
        force: bool,
        progress: &dyn Fn(&str),
    ) -> Result<Finished, GateError> {
        self.expire_due()?;
        let id = match id {
            Some(id) => {
                ActionId::parse(id).map_err(|message| GateError::NotFound { message })?;
                id.to_owned()
            }
            None => self.only_pending(actor)?.to_string(),
        };
        let snapshot = self.find(&id)?;
        if snapshot.state != ActionState::Pending {
            let (reason, message) = self.not_pending(&snapshot);
            self.metrics.approvals.with_label_values(&["refused"]).inc();
            return Err(self.refuse(actor, Some(&snapshot), reason, message, None));
        }
        // Slow, read-only checks first, outside every lock.
        progress(&format!(
            "checking that {} still fires and its evidence still holds",
            snapshot.alert.alertname
        ));
        let stale = self.staleness(&snapshot);
        let before = if snapshot.kind == ActionKind::Restart {
            match self.executor.status(&snapshot.unit) {
                Ok(s) => Some(s),
                Err(e) => {
                    // Without it, nobody could tell that the restart happened (a new
                    // invocation) or whether systemd's start limit would trip.
                    self.metrics.approvals.with_label_values(&["refused"]).inc();
                    return Err(self.refuse(
                        actor,
                        Some(&snapshot),
                        Refusal::UnitUnreadable,
                        format!(
                            "cannot read the state of {} through {}: {e}. aiops does not restart a unit whose state it cannot see (it could not tell whether the restart happened, nor check systemd's start limit), and --force does not override this; check `systemctl status {}`",
                            snapshot.unit,
                            self.executor.describe(),
                            snapshot.unit
                        ),
                        None,
                    ));
                }
            }
        } else {
            None
        };
        // The unit's forensic state, read right before the locked decision and the restart
        // (bounded: at most three commands of 3 s each), goes into the `executing` entry. A read
        // that fails is recorded as such; it never stops the restart (the status read above
        // already proved the unit is there).
        let forensic = if snapshot.kind == ActionKind::Restart {
            Some(match self.executor.unit_snapshot(&snapshot.unit) {
                Some(snap) => {
                    progress(&format!(
                        "recorded the state of {} and its journal for the audit log",
                        snapshot.unit
                    ));
                    let (state, mut note) =
                        crate::audit::bounded_unit_state(&snap, crate::audit::MAX_UNIT_STATE_BYTES);
                    if !snap.errors.is_empty() {
                        let read = format!("partly unreadable: {}", snap.errors.join("; "));
                        note = Some(match note {
                            Some(n) => format!("{read}; {n}"),
                            None => read,
                        });
                    }
                    (state, note)
                }
                None => (
                    None,
                    Some(format!(
                        "{} keeps no unit state to record",
                        self.executor.describe()
                    )),
                ),
            })
        } else {
            None
        };
        let (approved, unit) =
            self.decide_approval(&id, actor, force, &stale, before.as_ref(), forensic)?;
        progress(&format!(
            "approved by {actor}{}",
            if approved.forced {
                " (forced past: ".to_owned() + &stale.reasons.join("; ") + ")"
            } else {
                String::new()
            }
        ));
        if approved.forced {
            progress(&self.what_force_skips(&stale));
        }
        Ok(self.execute(approved, &unit, before.as_ref(), progress))
    }

    /// The locked decision: every check against the state on disk, then pending → approved →
    /// executing and the run booked in the limits.
    fn decide_approval(
        &self,
        id: &str,
        actor: &Actor,
        force: bool,
        staleness: &Staleness,
        before: Option<&UnitStatus>,
        forensic: Option<(Option<String>, Option<String>)>,
    ) -> Result<(Action, UnitName), GateError> {
        let stale = &staleness.reasons;
        let refused = |a: &Action, reason: Refusal, message: String| {
            self.metrics.approvals.with_label_values(&["refused"]).inc();
            self.refuse(actor, Some(a), reason, message, None)
        };
        let _d = self.lock_decisions();
        let locked = self.store.lock()?;
        let parsed = ActionId::parse(id).map_err(|message| GateError::NotFound { message })?;
        let Some(mut a) = locked.get(&parsed)? else {
            return Err(GateError::NotFound {
                message: format!("no action {id}; list the pending ones with `aiops pending`"),
            });
        };
        let now = Utc::now();
        if a.state != ActionState::Pending {
            let (reason, message) = self.not_pending(&a);
            return Err(refused(&a, reason, message));
        }
        if a.expires_at <= now {
            drop(locked);
            drop(_d);
            self.expire_due()?;
            let a = self.find(id)?;
            let (reason, message) = self.not_pending(&a);
            return Err(refused(&a, reason, message));
        }
        let unit = match self.allowed(a.unit.as_str(), a.kind) {
            Ok(u) => u,
            Err((reason, message)) => {
                return Err(refused(
                    &a,
                    reason,
                    format!("{message}; the configuration changed since the action was proposed"),
                ));
            }
        };
        let mut limits = locked.limits()?;
        let r = &self.config.remediation;
        let stats = limits.outcome(&a.alert.alertname, a.kind);
        if stats.consecutive_failures >= r.breaker_threshold {
            return Err(refused(
                &a,
                Refusal::BreakerOpen,
                format!(
                    "the breaker is open: {} of {} failed verification {} times in a row for {}; reset it with `aiops breaker reset {} --action {}` once the cause is understood",
                    a.kind,
                    a.unit,
                    stats.consecutive_failures,
                    a.alert.alertname,
                    a.alert.alertname,
                    a.kind
                ),
            ));
        }
        if let Some(until) =
            limits.cooldown_until(a.unit.as_str(), now, Duration::from_secs(r.cooldown_secs))
        {
            return Err(refused(
                &a,
                Refusal::Cooldown,
                format!(
                    "{} is in its cooldown until {} (remediation.cooldown_secs = {}): aiops acted on it less than {} ago",
                    a.unit,
                    when(until),
                    r.cooldown_secs,
                    crate::limits::format_duration(Duration::from_secs(r.cooldown_secs))
                ),
            ));
        }
        let hour = limits.runs_last_hour(now);
        if hour >= r.max_actions_per_hour as usize {
            return Err(refused(
                &a,
                Refusal::HourlyLimit,
                format!(
                    "{hour} actions ran in the last hour (remediation.max_actions_per_hour = {}); the next slot frees at {}",
                    r.max_actions_per_hour,
                    limits
                        .hourly_slot_frees_at(now)
                        .map(when)
                        .unwrap_or_default()
                ),
            ));
        }
        if a.kind == ActionKind::Restart
            && let Some(limit) = before.and_then(|s| s.start_limit)
            && let Some(message) = limits.start_limit_would_trip(a.unit.as_str(), now, limit)
        {
            return Err(refused(&a, Refusal::StartLimit, message));
        }
        if !stale.is_empty() && !force {
            return Err(refused(
                &a,
                Refusal::Stale,
                format!(
                    "action {} is stale: {}. Approve anyway with `aiops approve {} --force` (audited as forced): {}",
                    a.id,
                    stale.join("; "),
                    a.id,
                    self.what_force_skips(staleness)
                ),
            ));
        }
        a.forced = force && !stale.is_empty();
        let note = a
            .forced
            .then(|| format!("forced past: {}", stale.join("; ")));
        a.transition(ActionState::Approved, actor, now, note.clone())
            .map_err(|source| StoreError::Transition {
                id: a.id.clone(),
                source,
            })?;
        locked.update(&a)?;
        self.audit_action(actor, "approved", &a, note)?;
        self.metrics
            .approvals
            .with_label_values(&["approved"])
            .inc();
        let system = Actor::system();
        a.transition(ActionState::Executing, &system, Utc::now(), None)
            .map_err(|source| StoreError::Transition {
                id: a.id.clone(),
                source,
            })?;
        limits.record_run(a.unit.as_str(), a.kind, now);
        // Book the run before the state says "executing": if we die between the two writes the
        // limits err on the side of caution.
        locked.save_limits(&limits)?;
        locked.update(&a)?;
        let (unit_state, unit_state_note) = forensic.unwrap_or_default();
        self.audit.append(
            &system,
            Record {
                event: "executing".to_owned(),
                action_id: Some(a.id.clone()),
                unit: Some(a.unit.to_string()),
                action: Some(a.kind),
                evidence_id: Some(a.evidence_id().to_owned()),
                forced: a.forced,
                detail: Some(format!(
                    "{} {} via {}",
                    a.kind,
                    a.unit,
                    self.executor.describe()
                )),
                unit_state,
                unit_state_note,
            },
        )?;
        drop(locked);
        drop(_d);
        let _ = self.refresh_pending_gauge();
        self.emit_as(
            &a,
            ActionState::Approved,
            actor,
            format!("{} approved {} of {}", actor.name, a.kind, a.unit),
        );
        Ok((a, unit))
    }

    /// Runs an approved action and verifies it; the end state is recorded whatever happens.
    fn execute(
        &self,
        mut a: Action,
        unit: &UnitName,
        before: Option<&UnitStatus>,
        progress: &dyn Fn(&str),
    ) -> Finished {
        let system = Actor::system();
        let approved_at = Instant::now();
        progress(&match a.kind {
            ActionKind::Restart => {
                format!("restarting {unit} through {}", self.executor.describe())
            }
            ActionKind::ClearCache => format!(
                "clearing the cache of {unit} at {}",
                self.config.remediation.demo_app_url
            ),
        });
        let ran = match a.kind {
            ActionKind::Restart => self.executor.restart(unit).map(|()| String::new()),
            ActionKind::ClearCache => exec::clear_cache(
                &self.config.remediation.demo_app_url,
                Duration::from_secs(10),
            ),
        };
        let outcome = match ran {
            Err(e) => Outcome {
                fixed: false,
                unconfirmed: false,
                reason: None,
                summary: format!(
                    "{} failed: {e}; nothing more will be done automatically",
                    verify::action_words(a.kind)
                ),
                recovery_secs: None,
                value_after: None,
            },
            Ok(_) => {
                let acted_at = Instant::now();
                let began_at = approved_at;
                if let Err(e) = self.step(&mut a, ActionState::Verifying, None) {
                    tracing::error!(error = %e, id = %a.id, "cannot record verifying");
                }
                progress(match a.kind {
                    ActionKind::Restart => "restart done; verifying",
                    ActionKind::ClearCache => "cache cleared; verifying",
                });
                let v = Verification {
                    prom: &self.prom,
                    executor: self.executor.as_ref(),
                    action: &a,
                    before,
                    began_at,
                    acted_at,
                    timeout: self.options.verify_timeout.unwrap_or(Duration::from_secs(
                        self.config.remediation.verify_timeout_secs,
                    )),
                    poll: self.options.poll_interval,
                };
                let outcome = v.run(progress);
                self.metrics
                    .verification
                    .observe(acted_at.elapsed().as_secs_f64());
                outcome
            }
        };
        if outcome.fixed {
            self.metrics
                .approval_to_recovery
                .observe(approved_at.elapsed().as_secs_f64());
        }
        let end = if outcome.fixed {
            ActionState::Succeeded
        } else if outcome.unconfirmed {
            ActionState::Unconfirmed
        } else {
            ActionState::Failed
        };
        a.outcome = Some(outcome.clone());
        if let Err(e) = self.finish(&mut a, end, &outcome) {
            tracing::error!(error = %e, id = %a.id, "cannot record the outcome");
            progress(&format!("warning: the outcome could not be recorded: {e}"));
        }
        self.metrics
            .executions
            .with_label_values(&[a.kind.as_str(), end.as_str()])
            .inc();
        self.emit(&a, &system, outcome.summary.clone());
        Finished {
            fixed: outcome.fixed,
            summary: outcome.summary,
            action: a,
        }
    }

    /// One state step of an action this process owns (under the lock, validated, audited).
    fn step(&self, a: &mut Action, to: ActionState, note: Option<String>) -> Result<(), GateError> {
        let system = Actor::system();
        let locked = self.store.lock()?;
        let outcome = a.outcome.clone();
        if let Some(disk) = locked.get(&a.id)? {
            *a = disk;
        }
        a.outcome = outcome.or(a.outcome.take());
        a.transition(to, &system, Utc::now(), note.clone())
            .map_err(|source| StoreError::Transition {
                id: a.id.clone(),
                source,
            })?;
        locked.update(a)?;
        self.audit_action(&system, to.as_str(), a, note)?;
        Ok(())
    }

    fn finish(&self, a: &mut Action, end: ActionState, outcome: &Outcome) -> Result<(), GateError> {
        self.step(a, end, Some(outcome.summary.clone()))?;
        if outcome.unconfirmed {
            // Nothing is known about whether it helped: neither a success nor a failure.
            return Ok(());
        }
        let locked = self.store.lock()?;
        let mut limits = locked.limits()?;
        limits.record_outcome(&a.alert.alertname, a.kind, outcome.fixed);
        locked.save_limits(&limits)?;
        Ok(())
    }

    /// Rejects a pending action; `reason` is recorded with the rejecter's name.
    pub fn reject(&self, id: &str, actor: &Actor, reason: &str) -> Result<Action, GateError> {
        let reason = reason.trim();
        if reason.is_empty() || reason.len() > 1000 {
            return Err(GateError::Refused {
                reason: Refusal::BadRequest,
                message: "a rejection needs a reason of 1 to 1000 characters (--reason TEXT)"
                    .into(),
            });
        }
        self.expire_due()?;
        let parsed = ActionId::parse(id).map_err(|message| GateError::NotFound { message })?;
        let _d = self.lock_decisions();
        let locked = self.store.lock()?;
        let Some(mut a) = locked.get(&parsed)? else {
            return Err(GateError::NotFound {
                message: format!("no action {id}; list the pending ones with `aiops pending`"),
            });
        };
        if a.state != ActionState::Pending {
            let (r, message) = self.not_pending(&a);
            self.metrics.approvals.with_label_values(&["refused"]).inc();
            return Err(self.refuse(actor, Some(&a), r, message, None));
        }
        a.transition(
            ActionState::Rejected,
            actor,
            Utc::now(),
            Some(reason.to_owned()),
        )
        .map_err(|source| StoreError::Transition {
            id: a.id.clone(),
            source,
        })?;
        locked.update(&a)?;
        self.audit_action(actor, "rejected", &a, Some(reason.to_owned()))?;
        drop(locked);
        drop(_d);
        self.metrics
            .approvals
            .with_label_values(&["rejected"])
            .inc();
        let _ = self.refresh_pending_gauge();
        self.emit(
            &a,
            actor,
            format!("{} rejected {} of {}: {reason}", actor.name, a.kind, a.unit),
        );
        Ok(a)
    }

    /// Closes the breaker for `alertname`/`kind` (an operator decided to try again).
    pub fn reset_breaker(
        &self,
        alertname: &str,
        kind: ActionKind,
        actor: &Actor,
    ) -> Result<bool, GateError> {
        let _d = self.lock_decisions();
        let locked = self.store.lock()?;
        let mut limits = locked.limits()?;
        let changed = limits.reset_breaker(alertname, kind);
        if changed {
            locked.save_limits(&limits)?;
            self.audit.append(
                actor,
                Record {
                    event: "breaker_reset".into(),
                    action: Some(kind),
                    detail: Some(format!("alert {alertname}")),
                    ..Record::default()
                },
            )?;
        }
        Ok(changed)
    }

    /// Verifies the audit log and its head.
    pub fn audit_verify(&self) -> VerifyReport {
        self.audit.verify()
    }
}
