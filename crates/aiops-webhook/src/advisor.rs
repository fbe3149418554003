//! What the receiver asks about a new firing group: the diagnosis and, possibly, an action a
//! human can approve.
//!
//! The receiver calls [`Advisor::advise`] once per new firing group, on a blocking thread (an
//! advisor may take seconds: it queries Prometheus), and [`Advisor::resolved`] when the group
//! resolves. Both may be called again for the same notification after a crash (the receiver's
//! processing is at-least-once up to its dedup state), so implementations key what they store by
//! `message_id`, which is stable for a given notification.

use aiops_core::alertmanager::Notification;
use aiops_core::model::Diagnosis;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Diagnoses alerts and proposes actions.
pub trait Advisor: Send + Sync + 'static {
    /// Advice for a new firing group; `None` leaves the recommendation section out.
    /// `message_id` is the id of the message the advice will appear in.
    fn advise(&self, notification: &Notification, message_id: &str) -> Option<Advice>;

    /// The group resolved: actions proposed for it may become obsolete. `original_message_id`
    /// is the id passed to `advise` for this episode, if there was one.
    fn resolved(&self, notification: &Notification, original_message_id: Option<&str>) {
        let _ = (notification, original_message_id);
    }

    /// Whether [`Advisor::advise`] can return anything; `false` lets the receiver skip the
    /// trip through the blocking pool.
    fn gives_advice(&self) -> bool {
        true
    }
}

/// The advisor's answer for one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advice {
    pub diagnosis: Diagnosis,
    pub proposal: Proposal,
}

/// Whether a human is asked to approve something.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Proposal {
    /// A pending action waits for `aiops approve`.
    Action(ProposedAction),
    /// Nothing is proposed, and why (no action would help, refused by a safety limit, blind).
    None { reason: String },
    /// An action was proposed but could not be stored (the state volume full, the action
    /// store unwritable). The receiver keeps the group marked, diagnoses it again while it
    /// fires, and posts the outcome (the command to approve, or why nothing is proposed now)
    /// once the store takes it; the mark survives a restart.
    Retry { reason: String },
}

impl Proposal {
    /// Whether the receiver should ask again later.
    pub fn is_retry(&self) -> bool {
        matches!(self, Proposal::Retry { .. })
    }
}

/// A pending action as stored by the action store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposedAction {
    pub id: String,
    /// The exact command to type, e.g. `aiops approve a-1b2c3d`.
    pub approve_command: String,
    pub expires_at: DateTime<Utc>,
}

/// Gives no advice: messages carry no recommendation section.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAdvisor;

impl Advisor for NoAdvisor {
    fn advise(&self, _: &Notification, _: &str) -> Option<Advice> {
        None
    }

    fn gives_advice(&self) -> bool {
        false
    }
}

/// An advisor with canned answers, for tests and demos: it proposes restarting the alert's
/// `unit` label (when it is a valid unit name) with a fixed diagnosis, after an optional delay,
/// and records every call.
#[derive(Debug, Default)]
pub struct TestAdvisor {
    pub delay: std::time::Duration,
    pub calls: std::sync::Mutex<Vec<String>>,
}

impl TestAdvisor {
    pub fn with_delay(delay: std::time::Duration) -> Self {
        Self {
            delay,
            calls: std::sync::Mutex::default(),
        }
    }

    /// The calls so far, as `advise <groupKey>` / `resolved <groupKey>`.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The canned advice for `n` (also used by snapshot tests).
    pub fn advice_for(n: &Notification, message_id: &str, now: DateTime<Utc>) -> Advice {
        use aiops_core::model::*;
        let labels = n.common_labels.clone();
        let unit = labels
            .get("unit")
            .and_then(|u| aiops_core::unit::UnitName::parse(u).ok());
        let evidence = Evidence {
            id: "ev-000000000000".into(),
            gathered_at: now,
            prometheus_url: "http://127.0.0.1:9090".into(),
            prometheus: PrometheusHealth::Reachable,
            target_up: Some(true),
            items: vec![EvidenceItem {
                key: "error_ratio".into(),
                label: "error ratio".into(),
                unit: ValueUnit::Ratio,
                query: "job:http_request_error_ratio:rate30s{job=\"aiops-demo-app\"}".into(),
                at: now,
                value: Some(0.231),
                baseline_query: Some(
                    "avg_over_time(job:http_request_error_ratio:rate30s{job=\"aiops-demo-app\"}[1h] offset 5m)"
                        .into(),
                ),
                baseline: Some(0.004),
                error: None,
            }],
            unit: None,
            scope: None,
        };
        let (recommendation, proposal) = match unit {
            Some(unit) => {
                let id = format!(
                    "a-{}",
                    &message_id.trim_start_matches("m-")
                        [..6.min(message_id.len().saturating_sub(2))]
                );
                (
                    Recommendation::Act {
                        action: aiops_core::config::ActionKind::Restart,
                        unit,
                        risk: Risk::Low,
                        confidence: 0.8,
                        hypothesis: "bad-state".into(),
                    },
                    Proposal::Action(ProposedAction {
                        approve_command: format!("aiops approve {id}"),
                        id,
                        expires_at: now + chrono::Duration::hours(1),
                    }),
                )
            }
            None => {
                let reason = "the alert names no valid systemd unit".to_owned();
                (
                    Recommendation::Refused {
                        reason: reason.clone(),
                    },
                    Proposal::None { reason },
                )
            }
        };
        Advice {
            diagnosis: Diagnosis {
                alertname: n.alertname().unwrap_or("unknown").to_owned(),
                labels,
                evidence,
                hypotheses: vec![Hypothesis {
                    id: "bad-state".into(),
                    cause: "the process is in a bad state (errors with normal load)".into(),
                    confidence: 0.8,
                    action: Some(aiops_core::config::ActionKind::Restart),
                    risk: Risk::Low,
                    reasoning: "error ratio 23.1% against a baseline of 0.4% while traffic is normal"
                        .into(),
                }],
                recommendation,
                explanation: "The error ratio rose to 23.1% (baseline 0.4%) while the request rate stayed normal, so the process itself is most likely in a bad state. Restarting it usually clears this.".into(),
            },
            proposal,
        }
    }
}

impl Advisor for TestAdvisor {
    fn advise(&self, n: &Notification, message_id: &str) -> Option<Advice> {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("advise {}", n.group_key));
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        Some(Self::advice_for(n, message_id, Utc::now()))
    }

    fn resolved(&self, n: &Notification, _: Option<&str>) {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("resolved {}", n.group_key));
    }
}
