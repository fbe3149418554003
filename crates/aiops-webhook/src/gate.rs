//! The receiver's side of the human gate: the real [`Advisor`] and the news about actions.
//!
//! [`GateAdvisor`] diagnoses each new firing group with `aiops-diagnosis` (evidence from
//! Prometheus, the catalog, past outcomes from the gate) and hands the diagnosis to
//! `aiops-actions`' [`Gate`], which stores a pending action when there is something to approve.
//! [`forward_events`] turns the gate's transitions (approved, verified, failed, rejected,
//! expired, obsolete) into outbox messages, so the outcome reaches the same channel as the
//! alert it follows up on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aiops_actions::{ActionState, AlertRef, Gate, GateEvent};
use aiops_core::alertmanager::{Notification, Status};
use aiops_diagnosis::Engine;
use aiops_diagnosis::evidence::AlertContext;
use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::advisor::{Advice, Advisor, Proposal, ProposedAction};
use crate::message::{ActionNote, Message, MessageKind};
use crate::state::{self, Entry};

/// Diagnoses new firing groups and proposes actions through the gate.
pub struct GateAdvisor {
    engine: Engine,
    gate: Arc<Gate>,
}

impl std::fmt::Debug for GateAdvisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateAdvisor").finish_non_exhaustive()
    }
}

impl GateAdvisor {
    pub fn new(engine: Engine, gate: Arc<Gate>) -> Self {
        Self { engine, gate }
    }
}

impl Advisor for GateAdvisor {
    fn advise(&self, n: &Notification, message_id: &str) -> Option<Advice> {
        // The group's first firing alert stands for the group: Alertmanager groups by
        // alertname and service, so its alerts share what the diagnosis looks at.
        let alert = n.alerts.iter().find(|a| a.status == Status::Firing)?;
        let ctx = AlertContext::from_alert(alert, Some(&n.group_key));
        let allowed = &self.gate.config().remediation.allowed;
        let diagnosis = self.engine.diagnose_alert(
            &ctx,
            |alertname, kind| self.gate.outcome_stats(alertname, kind),
            allowed,
        );
        let alert_ref = AlertRef {
            group_key: n.group_key.clone(),
            alertname: ctx.alertname,
            fingerprints: n
                .alerts
                .iter()
                .filter(|a| a.status == Status::Firing)
                .map(|a| a.fingerprint.clone())
                .collect(),
            labels: alert.labels.clone(),
            starts_at: n
                .alerts
                .iter()
                .filter(|a| a.status == Status::Firing)
                .map(|a| a.starts_at)
                .min()
                .unwrap_or(alert.starts_at),
        };
        let proposal = propose(&self.gate, &alert_ref, &diagnosis, message_id);
        // The gate stored the whole diagnosis (`aiops show` prints it); the message carries
        // what Slack may see.
        let diagnosis = for_messages(diagnosis, self.gate.config().slack.journal_excerpt);
        Some(Advice {
            diagnosis,
            proposal,
        })
    }

    fn resolved(&self, n: &Notification, _original_message_id: Option<&str>) {
        let ids = self.gate.alert_resolved(&n.group_key);
        if let Err(e) = &ids {
            tracing::error!(group = %n.group_key, error = %e, "cannot mark pending actions obsolete");
        }
        if let Ok(ids) = &ids
            && !ids.is_empty()
        {
            tracing::info!(group = %n.group_key, actions = ?ids, "pending actions are obsolete: the alert resolved");
        }
    }
}

/// The diagnosis as messages carry it: with `journal_excerpt` off (`slack.journal_excerpt =
/// false`), without any of the unit's journal lines (its counts stay); with it on, with the
/// newest [`crate::slack::JOURNAL_LINES`] error lines only, which is all Slack shows.
pub fn for_messages(
    mut diagnosis: aiops_core::model::Diagnosis,
    journal_excerpt: bool,
) -> aiops_core::model::Diagnosis {
    if let Some(j) = diagnosis
        .evidence
        .unit
        .as_mut()
        .and_then(|u| u.journal.as_mut())
    {
        if journal_excerpt {
            let extra = j
                .last_errors
                .len()
                .saturating_sub(crate::slack::JOURNAL_LINES);
            j.last_errors.drain(..extra);
        } else {
            j.last_errors.clear();
            j.last_oom_kill = None;
            j.last_core_dump = None;
        }
    }
    diagnosis
}

/// Hands `diagnosis` to the gate and says what came of it. A failure to store the action is a
/// [`Proposal::Retry`]: the receiver asks again while the alert fires.
fn propose(
    gate: &Gate,
    alert_ref: &AlertRef,
    diagnosis: &aiops_core::model::Diagnosis,
    message_id: &str,
) -> Proposal {
    match gate.propose(alert_ref, diagnosis) {
        Ok(aiops_actions::Proposal::Pending {
            id,
            approve_command,
            expires_at,
            ..
        }) => Proposal::Action(ProposedAction {
            id: id.to_string(),
            approve_command,
            expires_at,
        }),
        Ok(aiops_actions::Proposal::NotActionable) => Proposal::None {
            reason: not_actionable_reason(&diagnosis.recommendation),
        },
        Ok(aiops_actions::Proposal::Refused { reason }) => Proposal::None { reason },
        Err(e) => {
            tracing::error!(group = %alert_ref.group_key, message_id, error = %e, "cannot store the proposed action");
            Proposal::Retry {
                reason: format!(
                    "the action could not be stored ({e}); the receiver diagnoses this alert again while it fires and posts the command to approve here once the action is stored"
                ),
            }
        }
    }
}

fn not_actionable_reason(r: &aiops_core::model::Recommendation) -> String {
    use aiops_core::model::Recommendation as R;
    match r {
        R::NoAction { reason } | R::Blind { reason } | R::Refused { reason } => reason.clone(),
        R::Act { .. } => "nothing to approve".to_owned(),
    }
}

/// How long an action's news waits for the group's firing message to be committed, so that it
/// never overtakes the message it follows up on.
const WAIT_FOR_ORIGINAL: Duration = Duration::from_secs(10);

/// States worth a message. `pending` is announced by the firing message itself; `executing` and
/// `verifying` are steps the approver watches live in `aiops approve`.
fn newsworthy(s: ActionState) -> bool {
    matches!(
        s,
        ActionState::Approved
            | ActionState::Succeeded
            | ActionState::Failed
            | ActionState::Unconfirmed
            | ActionState::Rejected
            | ActionState::Expired
            | ActionState::Obsolete
    )
}

/// Posts the gate's transitions as outbox messages until the gate is dropped. Runs on its own
/// thread; each message is one durable state-log entry, delivered in order after the group's
/// earlier messages.
pub fn forward_events(
    gate: &Gate,
    shared: Arc<state::Shared>,
    dashboard_url: Option<String>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let mut rx = gate.subscribe();
    std::thread::Builder::new()
        .name("gate-events".into())
        .spawn(move || {
            loop {
                let event = match rx.blocking_recv() {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "action news fell behind; some were not posted (the audit log has them)");
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                if !newsworthy(event.state) {
                    continue;
                }
                let message = action_message(&event, &shared, dashboard_url.clone());
                let result = {
                    let mut store = shared.lock();
                    store
                        .append(&Entry::Outgoing { message })
                        .and_then(|()| store.sync().map(|_| ()))
                };
                match result {
                    Ok(()) => shared.changed.notify_all(),
                    Err(e) => tracing::error!(action = %event.id, error = %e, "cannot queue the action's news"),
                }
            }
        })
}

fn action_message(
    event: &GateEvent,
    shared: &state::Shared,
    dashboard_url: Option<String>,
) -> Message {
    // The firing message is committed right after the advice that proposed the action; wait
    // (bounded) for it so the news never arrives before the alert it is about.
    let deadline = Instant::now() + WAIT_FOR_ORIGINAL;
    let original = loop {
        let original = shared
            .lock()
            .group(&event.group_key)
            .and_then(|g| g.original.clone());
        if original.is_some() || Instant::now() >= deadline {
            break original;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let state = format!("{:?}", event.state).to_lowercase();
    let mut h = Sha256::new();
    h.update(event.id.to_string().as_bytes());
    h.update([0]);
    h.update(state.as_bytes());
    let id = format!(
        "m-{}",
        h.finalize()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("alertname".to_owned(), event.alertname.clone());
    labels.insert("unit".to_owned(), event.unit.clone());
    Message {
        id,
        kind: MessageKind::Action,
        created_at: Utc::now(),
        notification: Notification {
            version: "4".into(),
            group_key: event.group_key.clone(),
            truncated_alerts: 0,
            status: Status::Firing,
            receiver: String::new(),
            group_labels: Default::default(),
            common_labels: labels,
            common_annotations: Default::default(),
            external_url: String::new(),
            alerts: Vec::new(),
        },
        advice: None,
        original,
        new_alerts: 0,
        dashboard_url,
        action: Some(ActionNote {
            action_id: event.id.to_string(),
            state,
            action: event.kind.as_str().to_owned(),
            unit: event.unit.clone(),
            actor: event.actor.name.clone(),
            text: event.message.clone(),
        }),
        truncation: None,
        changes: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advisor::TestAdvisor;

    /// A real gate on a real state directory whose action store stops taking writes (its
    /// directory replaced by a file), then takes them again.
    #[test]
    fn a_store_that_refuses_the_action_gives_a_retry_and_then_the_action() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            format!(
                "state_dir = {:?}\n[remediation.allowed]\n\"aiops-demo-app.service\" = [\"restart\"]\n",
                dir.path().join("state")
            ),
        )
        .unwrap();
        let config = aiops_core::Config::load(&path).unwrap();
        let gate = Gate::open(&config, &prometheus::Registry::new()).unwrap();
        let n = Notification::parse(
            br#"{"version":"4","groupKey":"{}:{alertname=\"Full\"}","status":"firing","receiver":"aiops","groupLabels":{"alertname":"Full"},"commonLabels":{"alertname":"Full","unit":"aiops-demo-app.service"},"commonAnnotations":{},"externalURL":"","alerts":[{"status":"firing","labels":{"alertname":"Full","unit":"aiops-demo-app.service"},"annotations":{},"startsAt":"2026-12-02T08:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"","fingerprint":"f1"}]}"#,
        )
        .unwrap();
        let diagnosis = TestAdvisor::advice_for(&n, "m-000000000001", Utc::now()).diagnosis;
        let alert_ref = AlertRef {
            group_key: n.group_key.clone(),
            alertname: "Full".into(),
            fingerprints: vec!["f1".into()],
            labels: n.alerts[0].labels.clone(),
            starts_at: n.alerts[0].starts_at,
        };
        let actions = dir.path().join("state/actions");
        let away = dir.path().join("state/actions.away");
        std::fs::rename(&actions, &away).unwrap();
        std::fs::write(&actions, "not a directory").unwrap();
        match propose(&gate, &alert_ref, &diagnosis, "m-000000000001") {
            Proposal::Retry { reason } => assert!(
                reason.contains("could not be stored")
                    && reason.contains("once the action is stored"),
                "{reason}"
            ),
            other => panic!("expected a retry, got {other:?}"),
        }
        std::fs::remove_file(&actions).unwrap();
        std::fs::rename(&away, &actions).unwrap();
        match propose(&gate, &alert_ref, &diagnosis, "m-000000000001") {
            Proposal::Action(p) => assert_eq!(p.approve_command, format!("aiops approve {}", p.id)),
            other => panic!("expected the action, got {other:?}"),
        }
    }
}
