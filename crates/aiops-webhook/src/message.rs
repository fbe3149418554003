//! A message: [`Message`] is everything needed to render it, as the state log records it;
//! [`Queued`] is what the outbox holds in memory, rendered once when it is queued.

use aiops_core::alertmanager::{Notification, Status};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::advisor::Advice;

/// Why a message is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// A group started firing.
    Firing,
    /// A firing group changed: alerts were added or some resolved.
    Update,
    /// An unchanged firing group was re-sent after the reminder interval.
    Reminder,
    /// The group resolved.
    Resolved,
    /// A human or the executor moved an action on: approved, rejected, verified, failed,
    /// expired or obsolete. `Message::action` says which.
    Action,
    /// Advice for a firing group given after its firing message, because the action proposed
    /// then could not be stored ([`crate::advisor::Proposal::Retry`]).
    Advice,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Firing => "firing",
            MessageKind::Update => "update",
            MessageKind::Reminder => "reminder",
            MessageKind::Resolved => "resolved",
            MessageKind::Action => "action",
            MessageKind::Advice => "advice",
        }
    }
}

/// Enough of an earlier message to refer to it (Slack incoming webhooks cannot thread).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRef {
    pub id: String,
    pub title: String,
    pub at: DateTime<Utc>,
}

/// One message to deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `m-` and 12 hex digits, derived from the notification; shown in the message.
    pub id: String,
    pub kind: MessageKind,
    /// When the notification that caused it was received.
    pub created_at: DateTime<Utc>,
    pub notification: Notification,
    pub advice: Option<Advice>,
    /// The firing message this one follows up on.
    pub original: Option<MessageRef>,
    /// Alerts in this notification whose fingerprints the group had not shown before.
    #[serde(default)]
    pub new_alerts: usize,
    pub dashboard_url: Option<String>,
    /// For [`MessageKind::Action`]: what happened to the action. Such a message's
    /// `notification` carries only the group's identity (group key and labels, no alerts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionNote>,
    /// Alertmanager truncated the notification (`truncatedAlerts` > 0): what the receiver
    /// fetched from its API to complete it, or why it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncation: Option<Truncation>,
    /// For [`MessageKind::Update`]: the alerts that joined or left since the group's last
    /// message.
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub changes: Changes,
}

/// What became of the alerts Alertmanager left out of a notification (its `max_alerts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncation {
    /// `truncatedAlerts` of the notification as received.
    pub truncated: u64,
    /// Alerts fetched from Alertmanager's API that the notification did not carry (they are
    /// in the message's notification now).
    pub fetched: usize,
    /// Why the group's alerts could not be fetched; the notification then holds only what
    /// Alertmanager sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Short names ([`crate::process::short_name`]) of the alerts that joined a firing group and
/// of those that left it, at most [`Changes::LISTED`] of each; the counts are complete.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    pub joined: Vec<String>,
    pub joined_count: usize,
    pub left: Vec<String>,
    pub left_count: usize,
}

impl Changes {
    /// Names kept of each list.
    pub const LISTED: usize = 10;

    /// From every name of each list (sorted, then cut to [`Changes::LISTED`]).
    pub fn new(mut joined: Vec<String>, mut left: Vec<String>) -> Self {
        let (joined_count, left_count) = (joined.len(), left.len());
        for names in [&mut joined, &mut left] {
            names.sort_unstable();
            names.truncate(Self::LISTED);
        }
        Self {
            joined,
            joined_count,
            left,
            left_count,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.joined_count == 0 && self.left_count == 0
    }
}

/// What happened to a pending action, as the executor reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionNote {
    pub action_id: String,
    /// `approved`, `rejected`, `succeeded`, `failed`, `unconfirmed` (`unverified` in older journals), `expired` or `obsolete`.
    pub state: String,
    /// `restart` or `clear-cache`.
    pub action: String,
    pub unit: String,
    /// Who moved it: a person's user name, or `aiops-webhook` for the executor itself.
    pub actor: String,
    /// One sentence with the numbers, e.g. the verification outcome.
    pub text: String,
}

impl Message {
    pub fn group_key(&self) -> &str {
        &self.notification.group_key
    }

    pub fn status(&self) -> Status {
        self.notification.status
    }
}

/// A message as the outbox holds it in memory until it is delivered: rendered once, when it is
/// queued, so that a group of thousands of alerts costs its few kilobytes of Block Kit and text
/// (Slack's limits bound them) instead of its parsed notification, about three times the
/// notification's size, per queued message. The state log keeps the whole [`Message`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    pub id: String,
    pub kind: MessageKind,
    /// When the notification that caused it was received.
    pub created_at: DateTime<Utc>,
    /// The Slack payload, JSON text ([`crate::slack::slack_payload`]).
    pub slack: String,
    /// The plain-text rendering for the log sink ([`crate::slack::plain_text`]).
    pub text: String,
}

impl Queued {
    pub fn render(m: &Message) -> Self {
        Self {
            id: m.id.clone(),
            kind: m.kind,
            created_at: m.created_at,
            slack: crate::slack::slack_payload(m).to_string(),
            text: crate::slack::plain_text(m),
        }
    }

    /// What it holds in memory, about (the outbox's byte bound counts this).
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.id.len() + self.slack.len() + self.text.len()
    }
}
