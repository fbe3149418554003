//! Fairness on the control socket: what one local user can take from the others.
//!
//! The socket is mode 0666 (the kernel-reported uid is the gate, see [`crate::auth`]), so any
//! local user can connect. Each connection is classed at accept by its peer uid:
//!
//! - **Privileged** (root, members of the operators group, the executor's own account): served
//!   from a budget of their own ([`PRIVILEGED_CONNECTIONS`]), never shared with anybody else.
//! - **Everyone else** can only be told "no". They share [`UNPRIVILEGED_CONNECTIONS`], at most
//!   [`PER_UID_CONNECTIONS`] per uid; a connection over either cap is answered and closed at
//!   once. Their answers are paced per uid ([`REFUSALS_PER_SEC`] after a burst of
//!   [`REFUSAL_BURST`]), and only the first [`AUDITED_PER_WINDOW`] refusals of a uid in a
//!   [`WINDOW`] are audited one by one; the rest are counted and audited as one summary line
//!   when the window ends ("uid 1001 (bob): 4,512 more refused requests in the last 60 s").
//!
//! [`Admission`] is the bookkeeping, a plain state machine over explicit instants so that tests
//! can drive it; the server holds it behind a mutex.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Connections of privileged uids served at once (further ones wait for a slot).
pub const PRIVILEGED_CONNECTIONS: usize = 64;
/// Connections of all other uids together.
pub const UNPRIVILEGED_CONNECTIONS: usize = 16;
/// Connections of one uid that may not approve.
pub const PER_UID_CONNECTIONS: usize = 4;
/// Answers per second to one uid that may not approve, after [`REFUSAL_BURST`].
pub const REFUSALS_PER_SEC: f64 = 10.0;
pub const REFUSAL_BURST: f64 = 10.0;
/// Refusals of one uid audited one by one per [`WINDOW`]; the rest go into its summary.
pub const AUDITED_PER_WINDOW: u64 = 10;
pub const WINDOW: Duration = Duration::from_secs(60);

/// Why a connection was turned away at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnedAway {
    /// The uid already holds [`PER_UID_CONNECTIONS`].
    PerUid,
    /// Users who may not approve hold [`UNPRIVILEGED_CONNECTIONS`] together.
    AllUnprivileged,
}

/// What to do with one refusal: wait `delay` before answering, then audit it (`audit`) or only
/// count it. `closed` is the summary of the uid's previous window, due now.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusalPlan {
    pub delay: Duration,
    pub audit: bool,
    pub closed: Option<Summary>,
}

/// The refusals of one uid in one window that were not audited one by one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub uid: u32,
    /// Refused requests counted but not audited.
    pub refused: u64,
    /// Connections turned away at accept.
    pub turned_away: u64,
    /// How long the window lasted.
    pub over: Duration,
}

impl Summary {
    /// The audit detail, e.g. "4,512 more refused requests in the last 60 s, not logged one by
    /// one". The actor (uid and name) is recorded beside it.
    pub fn detail(&self) -> String {
        let mut parts = Vec::new();
        let plural = |n: u64| if n == 1 { "" } else { "s" };
        if self.refused > 0 {
            parts.push(format!(
                "{} more refused request{}",
                grouped(self.refused),
                plural(self.refused)
            ));
        }
        if self.turned_away > 0 {
            parts.push(format!(
                "{} connection{} turned away (over the limit of {PER_UID_CONNECTIONS} per user who may not approve)",
                grouped(self.turned_away),
                plural(self.turned_away)
            ));
        }
        format!(
            "{} in the last {} s, not logged one by one",
            parts.join(" and "),
            self.over.as_secs().max(1)
        )
    }
}

/// 4512 → "4,512".
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[derive(Debug)]
struct Peer {
    open: usize,
    tokens: f64,
    refilled: Instant,
    window_start: Instant,
    audited: u64,
    refused: u64,
    turned_away: u64,
}

impl Peer {
    fn new(now: Instant) -> Self {
        Self {
            open: 0,
            tokens: REFUSAL_BURST,
            refilled: now,
            window_start: now,
            audited: 0,
            refused: 0,
            turned_away: 0,
        }
    }

    /// Ends the window: its summary if anything went unaudited.
    fn close_window(&mut self, uid: u32, now: Instant) -> Option<Summary> {
        let s = (self.refused > 0 || self.turned_away > 0).then(|| Summary {
            uid,
            refused: self.refused,
            turned_away: self.turned_away,
            over: now.saturating_duration_since(self.window_start),
        });
        self.window_start = now;
        self.audited = 0;
        self.refused = 0;
        self.turned_away = 0;
        s
    }
}

/// The per-uid bookkeeping of users who may not approve.
#[derive(Debug, Default)]
pub struct Admission {
    peers: HashMap<u32, Peer>,
    open: usize,
}

impl Admission {
    /// Admits a connection of `uid` (who may not approve), or says why not. An admitted
    /// connection must be given back with [`Admission::release`].
    pub fn admit(&mut self, uid: u32, now: Instant) -> Result<(), TurnedAway> {
        let peer = self.peers.entry(uid).or_insert_with(|| Peer::new(now));
        let why = if peer.open >= PER_UID_CONNECTIONS {
            TurnedAway::PerUid
        } else if self.open >= UNPRIVILEGED_CONNECTIONS {
            TurnedAway::AllUnprivileged
        } else {
            peer.open += 1;
            self.open += 1;
            return Ok(());
        };
        peer.turned_away += 1;
        Err(why)
    }

    /// `Some` (and counted) when `uid` already holds its share: only uids that may not approve
    /// have one, so the caller can turn the connection away before looking the uid up.
    pub fn full(&mut self, uid: u32) -> Option<TurnedAway> {
        let peer = self.peers.get_mut(&uid)?;
        (peer.open >= PER_UID_CONNECTIONS).then(|| {
            peer.turned_away += 1;
            TurnedAway::PerUid
        })
    }

    pub fn release(&mut self, uid: u32) {
        if let Some(peer) = self.peers.get_mut(&uid)
            && peer.open > 0
        {
            peer.open -= 1;
            self.open -= 1;
        }
    }

    /// Books one refusal of `uid`: how long to wait before answering (the uid's pace), and
    /// whether to audit it one by one.
    pub fn refusal(&mut self, uid: u32, now: Instant) -> RefusalPlan {
        let peer = self.peers.entry(uid).or_insert_with(|| Peer::new(now));
        let closed = if now.saturating_duration_since(peer.window_start) >= WINDOW {
            peer.close_window(uid, now)
        } else {
            None
        };
        let elapsed = now.saturating_duration_since(peer.refilled).as_secs_f64();
        peer.tokens = (peer.tokens + elapsed * REFUSALS_PER_SEC).min(REFUSAL_BURST);
        peer.refilled = now;
        // A negative balance is a queue of answers already promised; each waits its turn.
        peer.tokens -= 1.0;
        let delay = if peer.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-peer.tokens / REFUSALS_PER_SEC)
        };
        let audit = peer.audited < AUDITED_PER_WINDOW;
        if audit {
            peer.audited += 1;
        } else {
            peer.refused += 1;
        }
        RefusalPlan {
            delay,
            audit,
            closed,
        }
    }

    /// The summaries of windows that ended by `now` (all windows when `all`, at shutdown);
    /// forgets uids with nothing open and nothing left to report.
    pub fn due(&mut self, now: Instant, all: bool) -> Vec<Summary> {
        let mut out = Vec::new();
        for (uid, peer) in &mut self.peers {
            if all || now.saturating_duration_since(peer.window_start) >= WINDOW {
                out.extend(peer.close_window(*uid, now));
            }
        }
        self.peers.retain(|_, p| {
            let tokens = p.tokens
                + now.saturating_duration_since(p.refilled).as_secs_f64() * REFUSALS_PER_SEC;
            p.open > 0
                || p.refused > 0
                || p.turned_away > 0
                || p.audited > 0
                || tokens < REFUSAL_BURST
        });
        out.sort_by_key(|s| s.uid);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_holds_at_most_its_share_of_connections() {
        let mut a = Admission::default();
        let now = Instant::now();
        for _ in 0..PER_UID_CONNECTIONS {
            a.admit(1001, now).unwrap();
        }
        assert_eq!(a.admit(1001, now), Err(TurnedAway::PerUid));
        a.release(1001);
        a.admit(1001, now).unwrap();
        // Other uids fill the shared budget, then nobody else gets in.
        let mut uid = 2000;
        while a.open < UNPRIVILEGED_CONNECTIONS {
            a.admit(uid, now).unwrap();
            uid += 1;
        }
        assert_eq!(a.admit(9999, now), Err(TurnedAway::AllUnprivileged));
    }

    #[test]
    fn refusals_are_paced_and_summarised_per_window() {
        let mut a = Admission::default();
        let t0 = Instant::now();
        let plans: Vec<RefusalPlan> = (0..100).map(|_| a.refusal(1001, t0)).collect();
        // The burst is answered at once, the rest queue at the uid's pace.
        assert!(
            plans[..REFUSAL_BURST as usize]
                .iter()
                .all(|p| p.delay.is_zero())
        );
        let last = plans.last().unwrap().delay;
        assert!(
            last >= Duration::from_secs(8) && last <= Duration::from_secs(10),
            "{last:?}"
        );
        let audited = plans.iter().filter(|p| p.audit).count() as u64;
        assert_eq!(audited, AUDITED_PER_WINDOW);
        // Another uid is not slowed down by the first.
        assert!(a.refusal(1002, t0).delay.is_zero());
        assert!(a.due(t0 + Duration::from_secs(1), false).is_empty());
        let due = a.due(t0 + WINDOW, false);
        assert_eq!(
            due,
            vec![Summary {
                uid: 1001,
                refused: 100 - AUDITED_PER_WINDOW,
                turned_away: 0,
                over: WINDOW,
            }]
        );
        assert_eq!(
            due[0].detail(),
            "90 more refused requests in the last 60 s, not logged one by one"
        );
        // The next window audits again.
        assert!(a.refusal(1001, t0 + WINDOW + WINDOW).audit);
    }

    #[test]
    fn a_refusal_after_the_window_brings_its_summary() {
        let mut a = Admission::default();
        let t0 = Instant::now();
        for _ in 0..AUDITED_PER_WINDOW + 3 {
            a.refusal(7, t0);
        }
        let _ = a.admit(7, t0);
        let plan = a.refusal(7, t0 + WINDOW + Duration::from_secs(1));
        let s = plan.closed.unwrap();
        assert_eq!((s.refused, s.turned_away), (3, 0));
        assert!(plan.audit);
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(4512), "4,512");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }
}
