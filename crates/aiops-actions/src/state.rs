//! What a pending action is, and the one function that decides which state changes are legal.
//!
//! ```text
//! pending ──approve──▶ approved ──▶ executing ──▶ verifying ──▶ succeeded
//!    │                    │             │             └───────▶ failed
//!    ├──reject──▶ rejected │             └──────────────────────▶ failed
//!    ├──ttl─────▶ expired  └───(executor died before running)──▶ failed
//!    └──resolved▶ obsolete
//! ```
//!
//! Every state change anywhere in the crate goes through [`check_transition`]; the store refuses
//! to write an action whose new state is not reachable from the state on disk.

use std::collections::BTreeMap;
use std::fmt;

use aiops_core::config::ActionKind;
use aiops_core::model::Diagnosis;
use aiops_core::unit::UnitName;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The schema version of action files this build writes (and the newest it reads).
pub const ACTION_SCHEMA: u32 = 1;

/// A short, typeable action id: 8 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ActionId(String);

impl ActionId {
    /// Accepts exactly 8 lowercase hex digits; an id is also a file name, so nothing else passes.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.len() == 8
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not an action id (ids are 8 hex digits, e.g. 3f9c01ab); list them with `aiops pending`"
            ))
        }
    }

    /// A fresh random id (uniqueness is checked by the store under its lock).
    pub fn random() -> Self {
        Self(format!("{:08x}", fastrand::u32(..)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ActionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ActionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ActionId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Where an action is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionState {
    Pending,
    Approved,
    Executing,
    Verifying,
    Succeeded,
    Failed,
    /// The action ran, but nothing shows whether it helped (no traffic since the restart, the
    /// symptom already gone before it, the target not scraped, Prometheus not answering; see
    /// [`UnconfirmedReason`]): neither a success nor a failure, so the breaker ignores it.
    /// Files written before this state had its name say `unverified`.
    #[serde(alias = "unverified")]
    Unconfirmed,
    Rejected,
    Expired,
    Obsolete,
}

impl ActionState {
    pub const ALL: [ActionState; 10] = [
        ActionState::Pending,
        ActionState::Approved,
        ActionState::Executing,
        ActionState::Verifying,
        ActionState::Succeeded,
        ActionState::Failed,
        ActionState::Unconfirmed,
        ActionState::Rejected,
        ActionState::Expired,
        ActionState::Obsolete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::Pending => "pending",
            ActionState::Approved => "approved",
            ActionState::Executing => "executing",
            ActionState::Verifying => "verifying",
            ActionState::Succeeded => "succeeded",
            ActionState::Failed => "failed",
            ActionState::Unconfirmed => "unconfirmed",
            ActionState::Rejected => "rejected",
            ActionState::Expired => "expired",
            ActionState::Obsolete => "obsolete",
        }
    }

    /// No transition leaves a terminal state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ActionState::Succeeded
                | ActionState::Failed
                | ActionState::Unconfirmed
                | ActionState::Rejected
                | ActionState::Expired
                | ActionState::Obsolete
        )
    }

    /// Approved, executing or verifying: someone said yes and the executor owns it.
    pub fn is_in_flight(self) -> bool {
        matches!(
            self,
            ActionState::Approved | ActionState::Executing | ActionState::Verifying
        )
    }
}

impl fmt::Display for ActionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state change that is not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an action cannot go from {from} to {to}")]
pub struct TransitionError {
    pub from: ActionState,
    pub to: ActionState,
}

/// The state machine, in one place: whether `from → to` is legal.
pub fn check_transition(from: ActionState, to: ActionState) -> Result<(), TransitionError> {
    use ActionState::*;
    let ok = match from {
        Pending => matches!(to, Approved | Rejected | Expired | Obsolete),
        // Approved → failed: the executor stopped (crash, restart) before it ran the action.
        Approved => matches!(to, Executing | Failed),
        Executing => matches!(to, Verifying | Failed),
        Verifying => matches!(to, Succeeded | Failed | Unconfirmed),
        Succeeded | Failed | Unconfirmed | Rejected | Expired | Obsolete => false,
    };
    if ok {
        Ok(())
    } else {
        Err(TransitionError { from, to })
    }
}

/// Who did something: a person identified by the operating system, or the receiver itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// `None` for the system.
    pub uid: Option<u32>,
    /// The user name the OS resolved the uid to (or `uid:N` when it has none), or `aiops-webhook`.
    pub name: String,
}

impl Actor {
    /// The receiver process acting on its own (proposals, expiry, verification outcomes).
    pub fn system() -> Self {
        Self {
            uid: None,
            name: "aiops-webhook".to_owned(),
        }
    }

    /// A person identified by uid; the name is looked up in the user database.
    pub fn from_uid(uid: u32) -> Self {
        let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| format!("uid:{uid}"));
        Self {
            uid: Some(uid),
            name,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.uid {
            Some(uid) => write!(f, "{} (uid {uid})", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// The alert group an action answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRef {
    /// Alertmanager's group key: one pending action per (group, action kind).
    pub group_key: String,
    pub alertname: String,
    /// Fingerprints of the firing alerts in the group, to ask Alertmanager whether they still fire.
    pub fingerprints: Vec<String>,
    /// Labels as received: unvalidated, never used to build anything but messages.
    pub labels: BTreeMap<String, String>,
    pub starts_at: DateTime<Utc>,
}

/// One recorded state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub from: Option<ActionState>,
    pub to: ActionState,
    pub at: DateTime<Utc>,
    pub by: Actor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Why an outcome is unconfirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnconfirmedReason {
    /// The new process answered (almost) no real requests since the restart.
    NoTraffic,
    /// The alert's condition had already cleared when the action began.
    AlreadyGone,
    /// Prometheus did not scrape the alert's job since the action.
    NotScraped,
    /// Prometheus did not answer (the only reason before there were reasons).
    PrometheusSilent,
    /// No alerting rule of the alert's name is loaded, so there is nothing to check.
    NoRule,
}

impl UnconfirmedReason {
    /// Short words for messages: "unconfirmed (no traffic): ...".
    pub fn as_str(self) -> &'static str {
        match self {
            UnconfirmedReason::NoTraffic => "no traffic",
            UnconfirmedReason::AlreadyGone => "symptom already gone",
            UnconfirmedReason::NotScraped => "not scraped",
            UnconfirmedReason::PrometheusSilent => "Prometheus not answering",
            UnconfirmedReason::NoRule => "no alerting rule",
        }
    }
}

/// What verification found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub fixed: bool,
    /// Nothing shows whether the action helped: not fixed as far as anyone knows, but no
    /// failure either; the action ends `unconfirmed` and the breaker ignores it. Files written
    /// before this field had its name say `unverified` (then always: Prometheus not answering).
    #[serde(
        default,
        alias = "unverified",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub unconfirmed: bool,
    /// Why it is unconfirmed; `None` on a verified or failed outcome, and on files written
    /// before reasons existed (read it as [`UnconfirmedReason::PrometheusSilent`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<UnconfirmedReason>,
    /// One sentence with the numbers, e.g. "verified: error ratio back to 0.2% 35 s after the restart".
    pub summary: String,
    /// Seconds from approval to recovery (when fixed).
    pub recovery_secs: Option<f64>,
    /// The primary evidence item's value when verification ended.
    pub value_after: Option<f64>,
}

/// One action, as stored in `<state_dir>/actions/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub schema: u32,
    pub id: ActionId,
    pub state: ActionState,
    pub kind: ActionKind,
    pub unit: UnitName,
    pub alert: AlertRef,
    /// The latest diagnosis (a repeat of the alert refreshes it).
    pub diagnosis: Diagnosis,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// How often the alert group asked for this action while it was pending.
    pub seen_count: u32,
    pub last_seen: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Whether approval overrode a stale check (`--force`).
    #[serde(default)]
    pub forced: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Every state change, oldest first.
    pub history: Vec<Transition>,
}

impl Action {
    /// The transition that entered `state` most recently, if any.
    pub fn entered(&self, state: ActionState) -> Option<&Transition> {
        self.history.iter().rev().find(|t| t.to == state)
    }

    /// Applies a legal transition and records it.
    pub fn transition(
        &mut self,
        to: ActionState,
        by: &Actor,
        at: DateTime<Utc>,
        note: Option<String>,
    ) -> Result<(), TransitionError> {
        check_transition(self.state, to)?;
        self.history.push(Transition {
            from: Some(self.state),
            to,
            at,
            by: by.clone(),
            note,
        });
        self.state = to;
        self.updated_at = at;
        Ok(())
    }

    /// The evidence id the audit log cites.
    pub fn evidence_id(&self) -> &str {
        &self.diagnosis.evidence.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_state() -> impl Strategy<Value = ActionState> {
        proptest::sample::select(ActionState::ALL.to_vec())
    }

    proptest! {
        /// Any walk through the machine by legal steps only ever ends in a terminal state or can
        /// continue, never revisits pending, and never leaves a terminal state.
        #[test]
        fn legal_walks_are_monotonic(steps in proptest::collection::vec(any_state(), 0..20)) {
            let mut state = ActionState::Pending;
            let mut seen_approved = false;
            for to in steps {
                match check_transition(state, to) {
                    Ok(()) => {
                        prop_assert!(!state.is_terminal());
                        prop_assert_ne!(to, ActionState::Pending);
                        if to == ActionState::Succeeded {
                            // Success is only reachable through approval and verification.
                            prop_assert!(seen_approved);
                            prop_assert_eq!(state, ActionState::Verifying);
                        }
                        if to == ActionState::Executing {
                            prop_assert_eq!(state, ActionState::Approved);
                        }
                        seen_approved |= to == ActionState::Approved;
                        state = to;
                    }
                    Err(e) => {
                        prop_assert_eq!(e, TransitionError { from: state, to });
                    }
                }
            }
        }

        #[test]
        fn terminal_states_are_final(from in any_state(), to in any_state()) {
            if from.is_terminal() {
                prop_assert!(check_transition(from, to).is_err());
            }
            // Nothing goes back to pending, and nothing skips approval into execution.
            if to == ActionState::Pending || (to == ActionState::Executing && from != ActionState::Approved) {
                prop_assert!(check_transition(from, to).is_err());
            }
        }

        #[test]
        fn ids_parse_only_eight_hex_digits(s in "\\PC{0,12}") {
            let ok = ActionId::parse(&s).is_ok();
            prop_assert_eq!(ok, s.len() == 8 && s.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        }
    }

    #[test]
    fn random_ids_parse() {
        for _ in 0..100 {
            let id = ActionId::random();
            assert_eq!(ActionId::parse(id.as_str()).unwrap(), id);
        }
    }

    #[test]
    fn the_happy_path_and_refusals() {
        use ActionState::*;
        for (a, b) in [
            (Pending, Approved),
            (Approved, Executing),
            (Executing, Verifying),
            (Verifying, Succeeded),
        ] {
            check_transition(a, b).unwrap();
        }
        for (a, b) in [
            (Pending, Executing),
            (Succeeded, Pending),
            (Rejected, Approved),
            (Expired, Approved),
            (Obsolete, Approved),
        ] {
            assert!(check_transition(a, b).is_err(), "{a} -> {b}");
        }
    }
}
