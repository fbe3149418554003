//! A proposed action that could not be stored (the state volume full, the action store
//! unwritable) is not forgotten: the group stays marked, is diagnosed again while it fires, and
//! the command to approve is posted once the store takes the action, also after a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use aiops_core::alertmanager::Notification;
use aiops_webhook::{Advice, Advisor, Proposal, TestAdvisor};
use chrono::Utc;

use crate::support::*;

/// Gives [`TestAdvisor`]'s advice, but while `store_full` is set its proposal is the
/// receiver's "could not be stored" answer, as the receiver's gate advisor gives it.
#[derive(Debug, Default)]
struct StoreAdvisor {
    store_full: AtomicBool,
    advised: AtomicUsize,
}

impl StoreAdvisor {
    fn full() -> Arc<Self> {
        let a = Self::default();
        a.store_full.store(true, Ordering::SeqCst);
        Arc::new(a)
    }
}

impl Advisor for StoreAdvisor {
    fn advise(&self, n: &Notification, message_id: &str) -> Option<Advice> {
        self.advised.fetch_add(1, Ordering::SeqCst);
        let mut advice = TestAdvisor::advice_for(n, message_id, Utc::now());
        if self.store_full.load(Ordering::SeqCst) {
            advice.proposal = Proposal::Retry {
                reason: "the action could not be stored (No space left on device)".into(),
            };
        }
        Some(advice)
    }
}

fn text_of(sink: &Sink, i: usize) -> String {
    sink.delivered()[i].to_string()
}

#[test]
fn an_action_that_could_not_be_stored_is_proposed_again_once_the_store_takes_it() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let advisor = StoreAdvisor::full();
    let r = Receiver::start(dir.path(), Some(&sink.url()), advisor.clone());
    assert_eq!(post(r.addr, &payload("Full", &[alert("f")])).status, 200);
    wait_until(Duration::from_secs(10), "the firing message", || {
        !sink.delivered().is_empty()
    });
    let firing = text_of(&sink, 0);
    assert!(
        firing.contains("No action can be approved yet") && !firing.contains("aiops approve"),
        "{firing}"
    );
    // While the store stays full the group is asked about again, backing off, with no message.
    wait_until(Duration::from_secs(15), "a second try", || {
        advisor.advised.load(Ordering::SeqCst) >= 2
    });
    assert_eq!(sink.delivered().len(), 1, "{:?}", sink.texts());

    advisor.store_full.store(false, Ordering::SeqCst);
    wait_until(Duration::from_secs(30), "the advice again", || {
        sink.delivered().len() >= 2
    });
    let again = text_of(&sink, 1);
    assert!(again.contains("an action can now be approved"), "{again}");
    assert!(again.contains("aiops approve a-"), "{again}");
    let original = firing_id(&firing);
    assert!(
        again.contains(&original),
        "follows up on {original}: {again}"
    );
    // Given once: no more tries, no more messages.
    let tries = advisor.advised.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(advisor.advised.load(Ordering::SeqCst), tries);
    assert_eq!(sink.delivered().len(), 2, "{:?}", sink.texts());
    r.stop().unwrap();
}

#[test]
fn the_mark_survives_a_restart_and_a_resolved_group_is_not_asked_again() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let first = StoreAdvisor::full();
    let r = Receiver::start(dir.path(), Some(&sink.url()), first);
    assert_eq!(post(r.addr, &payload("Kept", &[alert("k")])).status, 200);
    assert_eq!(post(r.addr, &payload("Gone", &[alert("g")])).status, 200);
    wait_until(Duration::from_secs(10), "both firing messages", || {
        sink.delivered().len() == 2
    });
    assert_eq!(
        post(r.addr, &payload("Gone", &[alert("g").resolved()])).status,
        200
    );
    wait_until(Duration::from_secs(10), "the resolution", || {
        sink.texts().iter().any(|t| t.contains("Gone resolved"))
    });
    r.stop().unwrap();

    // Space is back by the time the receiver starts again: the marked group that still fires
    // gets its action; the resolved one is left alone.
    let second = Arc::new(StoreAdvisor::default());
    let r = Receiver::start(dir.path(), Some(&sink.url()), second.clone());
    wait_until(Duration::from_secs(15), "the advice again", || {
        sink.texts()
            .iter()
            .any(|t| t.contains("Kept: an action can now be approved"))
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        second.advised.load(Ordering::SeqCst),
        1,
        "only the group that still fires is asked again"
    );
    assert_eq!(sink.delivered().len(), 4, "{:?}", sink.texts());
    r.stop().unwrap();
}

/// The `m-` + 12 hex digits id a message shows for itself.
fn firing_id(body: &str) -> String {
    body.match_indices("m-")
        .map(|(at, _)| &body[at..(at + 14).min(body.len())])
        .find(|id| id.len() == 14 && id[2..].bytes().all(|b| b.is_ascii_hexdigit()))
        .expect("a message id")
        .to_owned()
}
