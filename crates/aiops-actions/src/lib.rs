//! The human gate: nothing changes on the host until a named person approves, and every step is
//! checked, executed without a shell, verified and audited.
//!
//! - [`gate`]: [`Gate`], the front door: propose, approve, reject, expire, verify, subscribe.
//! - [`state`]: the action record and the state machine ([`state::check_transition`]).
//! - [`store`]: one JSON file per action under `<state_dir>/actions/`, atomic writes, flock.
//! - [`audit`]: the hash-chained `audit.jsonl` and its verifier.
//! - [`limits`]: cooldown, hourly cap, breaker and systemd start limit, persisted in `limits.json`.
//! - [`exec`]: executors (systemctl, the demo supervisor, the app's cache endpoint).
//! - [`verify`]: after an action, watch the unit and the alert's expression until healthy.
//! - [`alerts`]: asks Alertmanager whether an alert still fires.
//! - [`control`]: the unix control socket (server in the receiver, client for the CLI).
//! - [`admission`]: fairness on that socket: budgets per class and per uid, paced and
//!   summarised refusals.
//! - [`auth`]: who may approve (root or a member of the operators group, by `SO_PEERCRED`).
//! - [`policy`]: the polkit rule confining the executor account to the allow-list.
//! - [`supervisor_protocol`]: the wire format between the demo executor and `aiops demo`.
//! - [`metrics`]: the gate's Prometheus metrics.
//!
//! Architecture invariants: only [`exec`] changes anything outside the state directory; only
//! the state lock's holder writes actions or limits; every state change goes through
//! [`state::check_transition`] and is audited; a unit name is re-validated and checked against
//! the allow-list both when an action is proposed and when it is approved.

pub mod admission;
pub mod alerts;
pub mod audit;
pub mod auth;
pub mod control;
pub mod exec;
pub mod gate;
pub mod limits;
pub mod metrics;
pub mod policy;
pub mod state;
pub mod store;
pub mod supervisor_protocol;
pub mod verify;

pub use gate::{Finished, Gate, GateError, GateEvent, GateOptions, Proposal, Refusal};
pub use state::{Action, ActionId, ActionState, Actor, AlertRef, Outcome, UnconfirmedReason};
