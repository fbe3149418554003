//! The approval flow against a real supervisor and a real state directory.

use std::sync::{Arc, Barrier};

use aiops_actions::audit::AuditEntry;
use aiops_actions::{ActionState, GateError, Proposal, Refusal};
use aiops_core::config::ActionKind;

use crate::support::*;

fn pending_id(p: &Proposal) -> String {
    match p {
        Proposal::Pending { id, .. } => id.to_string(),
        other => panic!("expected a pending action, got {other:?}"),
    }
}

fn refusal(e: GateError) -> (Refusal, String) {
    match e {
        GateError::Refused { reason, message } => (reason, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn audit_events(g: &aiops_actions::Gate) -> Vec<AuditEntry> {
    g.audit_log().tail(10_000).unwrap()
}

#[test]
fn two_simultaneous_approvals_execute_exactly_once_100_times() {
    let dir = tempdir();
    let sup = Supervisor::start(dir.path());
    let c = config(dir.path(), &sup.socket);
    // Two gates on one state dir: the race crosses the in-process mutex *and* the flock.
    let a = Arc::new(gate(&c));
    let b = Arc::new(gate(&c));
    for i in 0..100 {
        let id = pending_id(
            &a.propose(
                &alert(&format!("g{i}"), UNIT),
                &diagnosis(UNIT, ActionKind::Restart),
            )
            .unwrap(),
        );
        let before = sup.restarts();
        let barrier = Arc::new(Barrier::new(2));
        let run = |g: Arc<aiops_actions::Gate>, who: aiops_actions::Actor| {
            let (barrier, id) = (barrier.clone(), id.clone());
            std::thread::spawn(move || {
                barrier.wait();
                g.approve(Some(&id), &who, true, &|_| {})
            })
        };
        let t1 = run(a.clone(), alice());
        let t2 = run(b.clone(), bob());
        let results = [t1.join().unwrap(), t2.join().unwrap()];
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "iteration {i}: {results:?}");
        assert_eq!(
            sup.restarts(),
            before + 1,
            "iteration {i}: exactly one execution"
        );
        let loser = results.into_iter().find_map(Result::err).unwrap();
        let (reason, message) = refusal(loser);
        assert_eq!(reason, Refusal::AlreadyHandled, "{message}");
        assert!(
            message.contains("already")
                && (message.contains("by alice") || message.contains("by bob")),
            "the loser is told who won: {message}"
        );
    }
}

#[test]
fn approval_after_expiry_is_refused_with_when() {
    let dir = tempdir();
    let sup = Supervisor::start(dir.path());
    let mut c = config(dir.path(), &sup.socket);
    c.remediation.action_ttl_secs = 0;
    let g = gate(&c);
    let id = pending_id(
        &g.propose(&alert("exp", UNIT), &diagnosis(UNIT, ActionKind::Restart))
            .unwrap(),
    );
    let (reason, message) = refusal(g.approve(Some(&id), &alice(), true, &|_| {}).unwrap_err());
    assert_eq!(reason, Refusal::Expired);
    assert!(
        message.contains("expired at") && message.contains(&id),
        "{message}"
    );
    assert_eq!(sup.restarts(), 0);
    let events: Vec<String> = audit_events(&g).into_iter().map(|e| e.event).collect();
    assert_eq!(events, ["proposed", "expired", "refused"]);
}

#[test]
fn approval_after_the_alert_resolved_is_refused() {
    let dir = tempdir();
    let sup = Supervisor::start(dir.path());
    let g = gate(&config(dir.path(), &sup.socket));
    let a = alert("res", UNIT);
    let id = pending_id(
        &g.propose(&a, &diagnosis(UNIT, ActionKind::Restart))
            .unwrap(),
    );
    assert_eq!(g.alert_resolved(&a.group_key).unwrap().len(), 1);
    let (reason, message) = refusal(g.approve(Some(&id), &alice(), true, &|_| {}).unwrap_err());
    assert_eq!(reason, Refusal::Obsolete);
    assert!(message.contains("resolved at"), "{message}");
    assert_eq!(sup.restarts(), 0);
}

#[test]
fn approval_inside_the_cooldown_is_refused_with_until_when() {
    let dir = tempdir();
    let sup = Supervisor::start(dir.path());
    let mut c = config(dir.path(), &sup.socket);
    c.remediation.cooldown_secs = 300;
    let g = gate(&c);
    let first = pending_id(
        &g.propose(&alert("c1", UNIT), &diagnosis(UNIT, ActionKind::Restart))
            .unwrap(),
    );
    g.approve(Some(&first), &alice(), true, &|_| {}).unwrap();
    let second = pending_id(
        &g.propose(&alert("c2", UNIT), &diagnosis(UNIT, ActionKind::Restart))
            .unwrap(),
    );
    // A restart of the receiver in between must not forget the cooldown.
    drop(g);
    let g = gate(&c);
    let (reason, message) = refusal(g.approve(Some(&second), &bob(), true, &|_| {}).unwrap_err());
    assert_eq!(reason, Refusal::Cooldown);
    assert!(
        message.contains("cooldown until") && message.contains("cooldown_secs = 300"),
        "{message}"
    );
    assert_eq!(sup.restarts(), 1);
    assert_eq!(
        g.list(false).unwrap().len(),
        1,
        "the refused action stays pending"
    );
}

#[test]
fn hourly_cap_and_breaker() {
    let dir = tempdir();
    let sup = Supervisor::start(dir.path());
    let mut c = config(dir.path(), &sup.socket);
    c.remediation.max_actions_per_hour = 2;
    c.remediation.breaker_threshold = 2;
    let g = gate(&c);
    // The restarts do not bring the unit back: failures, whatever Prometheus says.
    sup.stuck.store(true, std::sync::atomic::Ordering::SeqCst);
    for i in 0..2 {
        let id = pending_id(
            &g.propose(
                &alert(&format!("h{i}"), UNIT),
                &diagnosis(UNIT, ActionKind::Restart),
            )
            .unwrap(),
        );
        let f = g.approve(Some(&id), &alice(), true, &|_| {}).unwrap();
        assert!(!f.fixed);
        assert_eq!(f.action.state, ActionState::Failed);
        assert!(
            f.summary.contains("not fixed")
                && f.summary
                    .contains("nothing more will be done automatically"),
            "{}",
            f.summary
        );
    }
    assert_eq!(
        g.outcome_stats("HighErrorRatio", ActionKind::Restart)
            .consecutive_failures,
        2
    );
    // The breaker is open: no more proposals of this action for this alert.
    match g
        .propose(&alert("h2", UNIT), &diagnosis(UNIT, ActionKind::Restart))
        .unwrap()
    {
        Proposal::Refused { reason } => assert!(reason.contains("aiops breaker reset"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(
        g.reset_breaker("HighErrorRatio", ActionKind::Restart, &alice())
            .unwrap()
    );
    let id = pending_id(
        &g.propose(&alert("h3", UNIT), &diagnosis(UNIT, ActionKind::Restart))
            .unwrap(),
    );
    let (reason, message) = refusal(g.approve(Some(&id), &alice(), true, &|_| {}).unwrap_err());
    assert_eq!(reason, Refusal::HourlyLimit);
    assert!(message.contains("max_actions_per_hour = 2"), "{message}");
    assert_eq!(sup.restarts(), 2);
}

#[test]
fn stale_approval_is_refused_unless_forced_and_force_is_audited() {
    let dir = tempdir();
    let sup = Supervisor::start(dir.path());
    let g = gate(&config(dir.path(), &sup.socket));
    let id = pending_id(
        &g.propose(&alert("st", UNIT), &diagnosis(UNIT, ActionKind::Restart))
            .unwrap(),
    );
    let (reason, message) = refusal(g.approve(Some(&id), &alice(), false, &|_| {}).unwrap_err());
    assert_eq!(reason, Refusal::Stale);
    assert!(
        message.contains("cannot confirm that HighErrorRatio still fires")
            && message.contains("--force"),
        "{message}"
    );
    assert_eq!(sup.restarts(), 0);
    let f = g.approve(Some(&id), &alice(), true, &|_| {}).unwrap();
    assert!(f.action.forced);
    let approved = audit_events(&g)
        .into_iter()
        .find(|e| e.event == "approved")
        .unwrap();
    assert!(approved.forced);
    assert_eq!(approved.actor.name, "alice");
    assert!(approved.detail.unwrap().contains("forced past"));
}

#[test]
fn crafted_unit_labels_are_refused_at_proposal_and_audited() {
    let dir = tempdir();
    let sup = Supervisor::start(dir.path());
    let g = gate(&config(dir.path(), &sup.socket));
    for bad in [
        "x.service; reboot",
        "../../etc/passwd",
        "$(reboot).service",
        "-H.service",
    ] {
        match g
            .propose(&alert("inj", bad), &diagnosis(UNIT, ActionKind::Restart))
            .unwrap()
        {
            Proposal::Refused { reason } => assert!(reason.contains("refused"), "{bad}: {reason}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    // A valid unit that is not allow-listed.
    match g
        .propose(
            &alert("inj", "sshd.service"),
            &diagnosis("sshd.service", ActionKind::Restart),
        )
        .unwrap()
    {
        Proposal::Refused { reason } => {
            assert!(reason.contains("not in remediation.allowed"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let refused: Vec<_> = audit_events(&g)
        .into_iter()
        .filter(|e| e.event == "refused")
        .collect();
    let units: Vec<_> = refused.iter().map(|e| e.unit.clone().unwrap()).collect();
    assert_eq!(
        units,
        [
            "x.service; reboot",
            "../../etc/passwd",
            "$(reboot).service",
            "-H.service",
            "sshd.service"
        ]
    );
    assert!(g.list(true).unwrap().is_empty());
    assert_eq!(sup.restarts(), 0);
    assert!(g.audit_verify().ok);
}

#[test]
fn a_unit_no_longer_allowed_is_refused_at_execution() {
    let dir = tempdir();
    let sup = Supervisor::start(dir.path());
    let c = config(dir.path(), &sup.socket);
    let g = gate(&c);
    let id = pending_id(
        &g.propose(&alert("cfg", UNIT), &diagnosis(UNIT, ActionKind::Restart))
            .unwrap(),
    );
    drop(g);
    let mut narrowed = c;
    narrowed
        .remediation
        .allowed
        .get_mut(UNIT)
        .unwrap()
        .retain(|a| *a != ActionKind::Restart);
    let g = gate(&narrowed);
    let (reason, message) = refusal(g.approve(Some(&id), &alice(), true, &|_| {}).unwrap_err());
    assert_eq!(reason, Refusal::NotAllowed);
    assert!(message.contains("configuration changed"), "{message}");
    assert_eq!(sup.restarts(), 0);
    assert!(
        audit_events(&g).iter().any(|e| e.event == "refused"
            && e.detail.as_deref().unwrap_or("").starts_with("not_allowed"))
    );
}

#[test]
fn a_hand_edited_action_with_an_injected_unit_never_executes() {
    let dir = tempdir();
    let sup = Supervisor::start(dir.path());
    let c = config(dir.path(), &sup.socket);
    let g = gate(&c);
    let id = pending_id(
        &g.propose(&alert("edit", UNIT), &diagnosis(UNIT, ActionKind::Restart))
            .unwrap(),
    );
    let path = c.state_dir.join("actions").join(format!("{id}.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "\"unit\": \"aiops-demo-app.service\"",
            "\"unit\": \"x.service; reboot\"",
        ),
    )
    .unwrap();
    let err = g
        .approve(Some(&id), &alice(), true, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("{id}.json")) && err.contains("moved aside"),
        "{err}"
    );
    assert!(path.with_extension("json.corrupt").exists());
    assert_eq!(sup.restarts(), 0);
}

#[test]
fn repeats_update_the_one_pending_action() {
    let dir = tempdir();
    let sup = Supervisor::start(dir.path());
    let g = gate(&config(dir.path(), &sup.socket));
    let a = alert("rep", UNIT);
    let first = g
        .propose(&a, &diagnosis(UNIT, ActionKind::Restart))
        .unwrap();
    let second = g
        .propose(&a, &diagnosis(UNIT, ActionKind::Restart))
        .unwrap();
    let other_kind = g
        .propose(&a, &diagnosis(UNIT, ActionKind::ClearCache))
        .unwrap();
    assert_eq!(pending_id(&first), pending_id(&second));
    assert_ne!(pending_id(&first), pending_id(&other_kind));
    assert!(matches!(second, Proposal::Pending { created: false, .. }));
    let list = g.list(false).unwrap();
    assert_eq!(list.len(), 2);
    let restart = list.iter().find(|x| x.kind == ActionKind::Restart).unwrap();
    assert_eq!(restart.seen_count, 2);
}

#[test]
fn reject_then_approve_says_who_rejected_and_why() {
    let dir = tempdir();
    let sup = Supervisor::start(dir.path());
    let g = gate(&config(dir.path(), &sup.socket));
    let id = pending_id(
        &g.propose(&alert("rej", UNIT), &diagnosis(UNIT, ActionKind::Restart))
            .unwrap(),
    );
    let mut events = g.subscribe();
    g.reject(&id, &bob(), "deploy in progress").unwrap();
    let ev = events.try_recv().unwrap();
    assert_eq!(ev.state, ActionState::Rejected);
    let (reason, message) = refusal(g.approve(Some(&id), &alice(), true, &|_| {}).unwrap_err());
    assert_eq!(reason, Refusal::Rejected);
    assert!(
        message.contains("rejected by bob") && message.contains("deploy in progress"),
        "{message}"
    );
    let (reason, _) = refusal(g.approve(None, &alice(), true, &|_| {}).unwrap_err());
    assert_eq!(reason, Refusal::NothingPending);
}

#[test]
fn approve_without_id_needs_exactly_one_pending() {
    let dir = tempdir();
    let sup = Supervisor::start(dir.path());
    let g = gate(&config(dir.path(), &sup.socket));
    let one = pending_id(
        &g.propose(&alert("o1", UNIT), &diagnosis(UNIT, ActionKind::Restart))
            .unwrap(),
    );
    let two = pending_id(
        &g.propose(&alert("o2", UNIT), &diagnosis(UNIT, ActionKind::Restart))
            .unwrap(),
    );
    let (reason, message) = refusal(g.approve(None, &alice(), true, &|_| {}).unwrap_err());
    assert_eq!(reason, Refusal::Ambiguous);
    assert!(
        message.contains(&one) && message.contains(&two),
        "{message}"
    );
    g.reject(&two, &alice(), "dup").unwrap();
    let mut news = g.subscribe();
    let lines = std::sync::Mutex::new(Vec::new());
    let f = g
        .approve(None, &alice(), true, &|m| {
            lines.lock().unwrap().push(m.to_owned());
        })
        .unwrap();
    assert_eq!(f.action.id.as_str(), one);
    let lines = lines.into_inner().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("active again: new invocation")),
        "{lines:?}"
    );
    assert_eq!(sup.restarts(), 1);
    // The whole life is in the audit log, chained.
    let events: Vec<String> = audit_events(&g)
        .into_iter()
        .filter(|e| e.action_id.as_ref().map(|i| i.as_str()) == Some(one.as_str()))
        .map(|e| e.event)
        .collect();
    assert_eq!(
        events,
        // No Prometheus: the restart ran, whether it helped is unknown.
        [
            "proposed",
            "approved",
            "executing",
            "verifying",
            "unconfirmed"
        ]
    );
    assert!(g.audit_verify().ok);
    // The receiver posts these: the approval (with who) and then the outcome.
    let news: Vec<(ActionState, String)> = std::iter::from_fn(|| news.try_recv().ok())
        .map(|e| (e.state, e.actor.name))
        .collect();
    assert_eq!(
        news,
        [
            (ActionState::Approved, "alice".to_owned()),
            (ActionState::Unconfirmed, "aiops-webhook".to_owned())
        ]
    );
}

#[test]
fn interrupted_actions_fail_at_the_next_start() {
    let dir = tempdir();
    let sup = Supervisor::start(dir.path());
    let c = config(dir.path(), &sup.socket);
    let g = gate(&c);
    let id = pending_id(
        &g.propose(&alert("int", UNIT), &diagnosis(UNIT, ActionKind::Restart))
            .unwrap(),
    );
    // Simulate a receiver that died after approving: write the approved state by hand.
    let path = c.state_dir.join("actions").join(format!("{id}.json"));
    let mut a: aiops_actions::Action =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    a.transition(ActionState::Approved, &alice(), chrono::Utc::now(), None)
        .unwrap();
    std::fs::write(&path, serde_json::to_vec(&a).unwrap()).unwrap();
    // A second process opening the state dir while the first lives must not touch its work.
    let other = gate(&c);
    let still = other.list(true).unwrap();
    assert_eq!(still[0].state, ActionState::Approved);
    drop(other);
    drop(g);
    let g = gate(&c);
    let a = g
        .list(true)
        .unwrap()
        .into_iter()
        .find(|x| x.id.as_str() == id)
        .unwrap();
    assert_eq!(a.state, ActionState::Failed);
    assert!(a.outcome.unwrap().summary.contains("interrupted"));
}

#[test]
fn unreadable_limits_stop_everything_instead_of_resetting() {
    let dir = tempdir();
    let sup = Supervisor::start(dir.path());
    let c = config(dir.path(), &sup.socket);
    let g = gate(&c);
    let id = pending_id(
        &g.propose(&alert("lim", UNIT), &diagnosis(UNIT, ActionKind::Restart))
            .unwrap(),
    );
    let limits = c.state_dir.join("limits.json");
    std::fs::write(&limits, b"{\"schema\":1,\"runs\":[").unwrap();
    let err = g
        .approve(Some(&id), &alice(), true, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("limits.json") && err.contains("unreadable"),
        "{err}"
    );
    assert!(limits.exists(), "the file is left for a human to look at");
    assert_eq!(sup.restarts(), 0);
}

#[test]
fn a_unit_whose_state_cannot_be_read_is_not_restarted_even_forced() {
    let dir = tempdir();
    let sup = Supervisor::start(dir.path());
    let mut c = config(dir.path(), &sup.socket);
    // Nothing answers here: the executor cannot read the unit's state.
    c.remediation.demo_supervisor_socket = Some(dir.path().join("nobody-listens.sock"));
    let g = gate(&c);
    let id = pending_id(
        &g.propose(&alert("blind", UNIT), &diagnosis(UNIT, ActionKind::Restart))
            .unwrap(),
    );
    for force in [false, true] {
        let (reason, message) =
            refusal(g.approve(Some(&id), &alice(), force, &|_| {}).unwrap_err());
        assert_eq!(reason, Refusal::UnitUnreadable, "{message}");
        assert!(
            message.contains("cannot read the state of aiops-demo-app.service")
                && message.contains("--force does not override this"),
            "{message}"
        );
    }
    assert_eq!(sup.restarts(), 0);
    assert_eq!(g.list(false).unwrap().len(), 1, "still pending");
    assert!(audit_events(&g).iter().any(|e| {
        e.event == "refused"
            && e.detail
                .as_deref()
                .unwrap_or("")
                .starts_with("unit_unreadable: ")
    }));
}
