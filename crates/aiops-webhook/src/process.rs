//! From journal records to outbox messages: deduplication, the per-group rules, and advice.
//!
//! [`decide`] is the pure rule book. The [`Processor`] runs on its own thread: it reads durable
//! journal records in order, asks the advisor (on tokio's blocking pool) for each new firing
//! group, and commits each record as one state-log entry. Records of a group whose advice is
//! still being computed wait in that group's queue, so a group's messages keep the journal's
//! order while other groups proceed. A notification Alertmanager truncated (`truncatedAlerts`)
//! first has its group's alerts fetched from Alertmanager's API the same way (off the thread,
//! bounded, the group's later records waiting behind it) and merged in ([`merge_truncated`]),
//! so the rule book, the advisor and the message see the whole group.
//!
//! Idempotency: a group remembers the journal sequence number of the last record processed for
//! it (`last_seq`), and the dedup key of that notification. After a crash the processor resumes
//! at the checkpoint (every record at or below it is done), skips records a group has already
//! seen, and a notification whose dedup key equals the group's last key produces no message.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use aiops_actions::alerts::{AlertmanagerClient, GroupAlerts};
use aiops_core::alertmanager::{Alert, ApiAlert, KV, Notification, Status};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::advisor::{Advice, Advisor};
use crate::journal::{self, now_ms};
use crate::log;
use crate::message::{Changes, Message, MessageKind, MessageRef, Truncation};
use crate::metrics::Metrics;
use crate::state::{self, Entry, GroupState};

/// The dedup key: a hash of the group key, the group status and every alert's (fingerprint,
/// status, startsAt, endsAt), alerts sorted. Alertmanager re-sending the same notification, or
/// repeating an unchanged group, yields the same key. The processor computes it over a
/// truncated notification once it is completed ([`merge_truncated`]): the key is then the whole
/// group's, so an alert that joins or leaves among those Alertmanager left out changes it.
pub fn dedup_key(n: &Notification) -> String {
    let mut alerts: Vec<String> = n
        .alerts
        .iter()
        .map(|a| {
            format!(
                "{}\u{1f}{}\u{1f}{}\u{1f}{}",
                a.fingerprint,
                a.status.as_str(),
                a.starts_at.timestamp_millis(),
                a.ends_at.timestamp_millis()
            )
        })
        .collect();
    alerts.sort_unstable();
    let mut h = Sha256::new();
    h.update(n.group_key.as_bytes());
    h.update([0x1e]);
    h.update(n.status.as_str().as_bytes());
    h.update(n.truncated_alerts.to_le_bytes());
    for a in &alerts {
        h.update([0x1e]);
        h.update(a.as_bytes());
    }
    hex(&h.finalize()[..16])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A message id derived from what the message is about, so re-processing makes the same id.
pub fn message_id(kind: MessageKind, group_key: &str, key: &str, seq: u64) -> String {
    let mut h = Sha256::new();
    h.update(kind.as_str().as_bytes());
    h.update([0]);
    h.update(group_key.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    if kind == MessageKind::Reminder {
        // Reminders repeat an unchanged key; the journal position tells them apart.
        h.update(seq.to_le_bytes());
    }
    format!("m-{}", hex(&h.finalize()[..6]))
}

/// The id of the message that gives a group's advice again (stable, so a retry after a crash
/// makes the same message).
fn readvice_id(group_key: &str, retry_of: &str) -> String {
    message_id(MessageKind::Advice, group_key, retry_of, 0)
}

/// How long to wait before asking again after `failures` failed tries: 5 s, doubling, at most
/// five minutes.
fn retry_delay(failures: u32) -> Duration {
    Duration::from_secs(5u64.saturating_mul(1 << failures.min(6)).min(300))
}

/// Characters kept of one alert's short name.
const SHORT_NAME_MAX: usize = 100;

/// How an update names an alert: `HighLatencyP99 on aiops-demo-app:8080` (the alert name and
/// its `instance`, else its `unit`, else the start of its fingerprint), at most 100 characters.
pub fn short_name(a: &Alert) -> String {
    let name = a.labels.get("alertname").map_or("alert", String::as_str);
    let place = a
        .labels
        .get("instance")
        .or_else(|| a.labels.get("unit"))
        .filter(|v| !v.is_empty());
    let s = match place {
        Some(p) => format!("{name} on {p}"),
        None => format!(
            "{name} {}",
            a.fingerprint.chars().take(8).collect::<String>()
        ),
    };
    if s.chars().count() <= SHORT_NAME_MAX {
        return s;
    }
    let mut cut: String = s.chars().take(SHORT_NAME_MAX - 1).collect();
    cut.push('…');
    cut
}

/// Whether a notification left alerts out that the receiver should fetch: a firing group
/// Alertmanager truncated (`truncatedAlerts` > 0, its receiver's `max_alerts`).
pub fn needs_fetch(n: &Notification) -> bool {
    n.status == Status::Firing && n.truncated_alerts > 0
}

/// A notification completed with the group's alerts from Alertmanager's API
/// ([`AlertmanagerClient::group_alerts`]): the alerts it carried, then each fetched alert it
/// did not carry (same fingerprint: the notification's copy wins); `truncatedAlerts` becomes
/// the number still missing (those over the fetch's bound), and the common labels and
/// annotations are recomputed over all of them (Alertmanager computes them over the alerts it
/// sent). When the fetch failed, the notification stays as it was and the error is kept.
pub fn merge_truncated(
    n: &Notification,
    fetched: Result<GroupAlerts, String>,
) -> (Notification, Truncation) {
    let truncated = n.truncated_alerts;
    let group = match fetched {
        Ok(g) => g,
        Err(e) => {
            let t = Truncation {
                truncated,
                fetched: 0,
                error: Some(e),
            };
            return (n.clone(), t);
        }
    };
    let mut out = n.clone();
    let mut seen: HashSet<String> = n.alerts.iter().map(|a| a.fingerprint.clone()).collect();
    let mut added = 0;
    for a in group.alerts {
        if a.fingerprint.is_empty() || !seen.insert(a.fingerprint.clone()) {
            continue;
        }
        out.alerts.push(from_api(a));
        added += 1;
    }
    out.truncated_alerts = group.more as u64;
    if !out.alerts.is_empty() {
        out.common_labels = common(out.alerts.iter().map(|a| &a.labels));
        out.common_annotations = common(out.alerts.iter().map(|a| &a.annotations));
    }
    let t = Truncation {
        truncated,
        fetched: added,
        error: None,
    };
    (out, t)
}

/// An API alert as a notification carries it: firing, without an end (Alertmanager sends
/// `0001-01-01T00:00:00Z` for a firing alert's `endsAt`).
fn from_api(a: ApiAlert) -> Alert {
    Alert {
        status: Status::Firing,
        labels: a.labels,
        annotations: a.annotations,
        starts_at: a.starts_at,
        ends_at: DateTime::<Utc>::from_timestamp(-62_135_596_800, 0).unwrap_or_default(),
        generator_url: a.generator_url,
        fingerprint: a.fingerprint,
    }
}

/// The pairs every one of `sets` holds.
fn common<'a>(mut sets: impl Iterator<Item = &'a KV>) -> KV {
    let Some(first) = sets.next() else {
        return KV::new();
    };
    let mut out = first.clone();
    for s in sets {
        out.retain(|k, v| s.get(k) == Some(v));
    }
    out
}

/// What to do with one notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The message to send, if any.
    pub kind: Option<MessageKind>,
    pub message_id: Option<String>,
    /// Why no message is sent.
    pub suppressed: Option<&'static str>,
    /// A new firing group: ask the advisor before sending.
    pub needs_advice: bool,
    /// The group resolved: tell the advisor.
    pub resolved: bool,
    /// Alerts whose fingerprints the group had not shown before.
    pub new_alerts: usize,
    /// For an update: the alerts that joined and left since the group's last message.
    pub changes: Changes,
    /// The group's state after this notification (the firing message's reference is filled in
    /// at commit).
    pub state: GroupState,
}

/// The rule book, a pure function of the group's previous state and the notification.
///
/// - same dedup key as last time: nothing, or a reminder when `reminder` has passed since the
///   group's last message (firing groups only);
/// - firing, and the group is new or had resolved: a firing message, with advice;
/// - firing, and the group already fires: an update (alerts joined or some resolved);
/// - resolved, and the group fired: a follow-up quoting the firing message;
/// - resolved, and the group is unknown: a resolved message without a reference;
/// - resolved again with a different key: nothing.
pub fn decide(
    prev: Option<&GroupState>,
    n: &Notification,
    seq: u64,
    received_at: DateTime<Utc>,
    reminder: Option<Duration>,
) -> Decision {
    let key = dedup_key(n);
    // The firing alerts by fingerprint, with the short names a message shows.
    let announced: BTreeMap<String, String> = n
        .alerts
        .iter()
        .filter(|a| a.status == Status::Firing)
        .map(|a| (a.fingerprint.clone(), short_name(a)))
        .collect();
    let firing: BTreeSet<String> = announced.keys().cloned().collect();
    let fresh = || GroupState {
        group_key: n.group_key.clone(),
        status: n.status,
        last_key: key.clone(),
        last_seq: seq,
        first_seen: received_at,
        last_seen: received_at,
        fingerprints: firing.clone(),
        original: None,
        last_message_at: Some(received_at),
        retry: None,
        announced: announced.clone(),
    };
    let quiet = |state: GroupState, why: &'static str| Decision {
        kind: None,
        message_id: None,
        suppressed: Some(why),
        needs_advice: false,
        resolved: false,
        new_alerts: 0,
        changes: Changes::default(),
        state,
    };
    let send = |kind: MessageKind, state: GroupState| Decision {
        message_id: Some(message_id(kind, &n.group_key, &key, seq)),
        kind: Some(kind),
        suppressed: None,
        needs_advice: kind == MessageKind::Firing,
        resolved: kind == MessageKind::Resolved,
        new_alerts: 0,
        changes: Changes::default(),
        state,
    };
    match prev {
        Some(g) if g.last_key == key => {
            let mut state = g.clone();
            state.last_seq = seq;
            state.last_seen = received_at;
            let since = g.last_message_at.unwrap_or(g.first_seen);
            let due = reminder.is_some_and(|r| {
                received_at - since
                    >= chrono::Duration::from_std(r).unwrap_or(chrono::Duration::MAX)
            });
            if n.status == Status::Firing && g.status == Status::Firing && due {
                state.last_message_at = Some(received_at);
                send(MessageKind::Reminder, state)
            } else {
                quiet(state, "duplicate")
            }
        }
        Some(g) if n.status == Status::Firing && g.status == Status::Firing => {
            let mut state = g.clone();
            let new_alerts = firing.difference(&g.fingerprints).count();
            let (changes, now_announced) = changes(g, n, announced);
            state.fingerprints.extend(firing.iter().cloned());
            state.announced = now_announced;
            state.last_key = key.clone();
            state.last_seq = seq;
            state.last_seen = received_at;
            state.last_message_at = Some(received_at);
            let mut d = send(MessageKind::Update, state);
            d.new_alerts = new_alerts;
            d.changes = changes;
            d
        }
        None | Some(_) if n.status == Status::Firing => {
            let mut d = send(MessageKind::Firing, fresh());
            d.new_alerts = firing.len();
            d
        }
        Some(g) if g.status == Status::Firing => {
            let mut state = g.clone();
            state.status = Status::Resolved;
            state.retry = None;
            state.announced.clear();
            state.last_key = key.clone();
            state.last_seq = seq;
            state.last_seen = received_at;
            state.last_message_at = Some(received_at);
            send(MessageKind::Resolved, state)
        }
        None => send(MessageKind::Resolved, fresh()),
        Some(g) => {
            let mut state = g.clone();
            state.last_key = key.clone();
            state.last_seq = seq;
            state.last_seen = received_at;
            quiet(state, "already_resolved")
        }
    }
}

/// Which alerts joined and which left a firing group since its last message, and what the group
/// announces after this one. `firing` is this notification's firing alerts (fingerprint to short
/// name). A complete notification is the whole group: an announced alert it does not list as
/// firing left. A notification still truncated (the fetch failed or hit its bound) says nothing
/// about the alerts it left out, so only those it lists as resolved left, and the others stay
/// announced. State written before the announced alerts were kept has only the episode's
/// fingerprints: joined is then what those do not hold, and nothing is known to have left.
fn changes(
    prev: &GroupState,
    n: &Notification,
    firing: BTreeMap<String, String>,
) -> (Changes, BTreeMap<String, String>) {
    let complete = n.truncated_alerts == 0;
    let known = |fp: &String| {
        if prev.announced.is_empty() {
            prev.fingerprints.contains(fp)
        } else {
            prev.announced.contains_key(fp)
        }
    };
    let joined: Vec<String> = firing
        .iter()
        .filter(|(fp, _)| !known(fp))
        .map(|(_, name)| name.clone())
        .collect();
    let resolved: HashSet<&str> = n
        .alerts
        .iter()
        .filter(|a| a.status == Status::Resolved)
        .map(|a| a.fingerprint.as_str())
        .collect();
    let gone = |fp: &String| {
        if complete {
            !firing.contains_key(fp)
        } else {
            resolved.contains(fp.as_str())
        }
    };
    let left: Vec<String> = prev
        .announced
        .iter()
        .filter(|(fp, _)| gone(fp))
        .map(|(_, name)| name.clone())
        .collect();
    let now = if complete {
        firing
    } else {
        let mut now: BTreeMap<String, String> = prev
            .announced
            .iter()
            .filter(|(fp, _)| !gone(fp))
            .map(|(fp, name)| (fp.clone(), name.clone()))
            .collect();
        now.extend(firing);
        now
    };
    (Changes::new(joined, left), now)
}

/// Events that wake the processor.
#[derive(Debug)]
pub enum Event {
    /// The journal has new durable records.
    Durable,
    /// Advice for the group's first queued record is ready.
    Advice {
        group: String,
        advice: Option<Box<Advice>>,
    },
    /// Advice asked for again for a group whose proposed action could not be stored.
    Readvised {
        group: String,
        /// The firing message the retry is for (`AdviceRetry::message_id`).
        retry_of: String,
        advice: Option<Box<Advice>>,
    },
    /// The alerts of a truncated notification's group, fetched from Alertmanager for the
    /// group's first queued record.
    Fetched {
        group: String,
        result: Result<GroupAlerts, String>,
    },
    /// Shut down after the current step.
    Stop,
}

/// Settings of the processor.
#[derive(Debug, Clone)]
pub struct Settings {
    pub reminder: Option<Duration>,
    pub dashboard_url: Option<String>,
    /// Advice computations at once.
    pub max_inflight: usize,
    /// The state volume: processing pauses while less than half its reserve is free.
    pub headroom: crate::disk::Headroom,
    /// Bytes each in-memory queue may hold (`webhook.queue_mib`): the outbox
    /// ([`state::Store::outbox_bytes`]), the records read in one go, and the records waiting
    /// behind advice ([`HELD_FACTOR`] times their bodies). Over it, processing pauses.
    pub queue_bytes: usize,
    /// Where a truncated notification's missing alerts are fetched from
    /// ([`AlertmanagerClient::group_alerts`]); `None` leaves them out.
    pub alertmanager: Option<AlertmanagerClient>,
}

/// A record waiting in memory to be processed holds its body and its parsed notification, and
/// the parsed form takes about three times the body (measured with groups of about 1 MiB of
/// JSON: many small strings and maps): four times the body in all.
pub const HELD_FACTOR: usize = 4;

/// Liveness and errors, for `/healthz` and the watchdog.
#[derive(Debug, Default)]
pub struct ProcessorStatus {
    pub heartbeat_ms: AtomicU64,
    pub error: std::sync::Mutex<Option<String>>,
    pub stop: AtomicBool,
    /// Highest journal sequence number handled (committed or waiting for advice).
    pub handled_seq: AtomicU64,
    /// A wake-up event is already queued (the journal sends at most one at a time).
    pub wake_queued: AtomicBool,
    /// Processing waits for space on the state volume.
    pub disk_low: AtomicBool,
}

impl ProcessorStatus {
    fn set_error(&self, e: Option<String>) {
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

struct Pending {
    entry: journal::Entry,
    n: Notification,
    decision: Option<Decision>,
    /// Its group's alerts are being fetched (the notification was truncated).
    fetching: bool,
    /// Set once the fetch is done: `n` is then the completed notification.
    truncation: Option<Truncation>,
}

impl Pending {
    fn new(entry: journal::Entry, n: Notification) -> Self {
        Self {
            entry,
            n,
            decision: None,
            fetching: false,
            truncation: None,
        }
    }

    /// Waits for advice or for a fetch (it heads its group's queue).
    fn busy(&self) -> bool {
        self.decision.is_some() || self.fetching
    }
}

/// The processing loop's state (runs on its own thread, see [`Processor::run`]).
pub struct Processor {
    pub journal_dir: PathBuf,
    pub journal: Arc<journal::Shared>,
    pub state: Arc<state::Shared>,
    pub advisor: Arc<dyn Advisor>,
    pub runtime: tokio::runtime::Handle,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    pub status: Arc<ProcessorStatus>,
    pub events: mpsc::Receiver<Event>,
    pub events_tx: mpsc::Sender<Event>,
    cursor: u64,
    /// Records read from the journal but not handled yet (handling pauses while the advice
    /// slots are full).
    backlog: VecDeque<(u64, Option<journal::Entry>)>,
    pending: HashMap<String, VecDeque<Pending>>,
    queued: usize,
    inflight: usize,
    /// Reception times of records committed since the last sync (for the latency histogram).
    committed: Vec<DateTime<Utc>>,
    dirty: bool,
    /// Records were handled without a state-log entry (duplicates) since the last entry.
    unrecorded: bool,
    /// Entries with messages were appended since the last sync.
    messages_staged: bool,
    /// Groups marked for advice again ([`GroupState::retry`]): when each may be tried next and
    /// how many tries failed. In memory only: after a restart every marked group is due.
    retry_next: HashMap<String, (Instant, u32)>,
    /// The group whose advice is being asked for again (one at a time).
    readvising: Option<String>,
    /// The marked groups of the state on disk have been scheduled.
    retries_loaded: bool,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("cursor", &self.cursor)
            .field("inflight", &self.inflight)
            .finish_non_exhaustive()
    }
}

/// Checkpoint-only entries and delivery records are synced at most this often.
const SYNC_EVERY: Duration = Duration::from_millis(500);
/// Undelivered messages held in memory; beyond this, processing pauses (the journal keeps the
/// notifications on disk). Slack takes about one message per second per webhook, so this is a
/// quarter of an hour of backlog.
pub const MAX_OUTBOX: usize = 1000;
/// Records read from the journal in one go.
const READ_BATCH: usize = 128;
/// Records waiting behind advice, over all groups, before reading pauses.
const MAX_QUEUED: usize = 10_000;

/// The processor stopped because it could not go on safely.
#[derive(Debug)]
struct Abandon;

impl Processor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        journal_dir: PathBuf,
        journal: Arc<journal::Shared>,
        state: Arc<state::Shared>,
        advisor: Arc<dyn Advisor>,
        runtime: tokio::runtime::Handle,
        metrics: Arc<Metrics>,
        settings: Settings,
        status: Arc<ProcessorStatus>,
        events: (mpsc::Sender<Event>, mpsc::Receiver<Event>),
        journal_first_seq: u64,
    ) -> Self {
        // Resume after the checkpoint, but never before the journal's first record (a state
        // directory restored without its journal must not wait for records that are gone).
        let checkpoint = state.lock().checkpoint();
        if journal_first_seq > checkpoint + 1 {
            tracing::warn!(
                checkpoint,
                journal_first_seq,
                "the journal starts after the processing checkpoint; records in between are gone"
            );
        }
        let cursor = (checkpoint + 1).max(journal_first_seq);
        Self {
            journal_dir,
            journal,
            state,
            advisor,
            runtime,
            metrics,
            settings,
            status,
            events_tx: events.0,
            events: events.1,
            cursor,
            backlog: VecDeque::new(),
            pending: HashMap::new(),
            queued: 0,
            inflight: 0,
            committed: Vec::new(),
            dirty: false,
            unrecorded: false,
            messages_staged: false,
            retry_next: HashMap::new(),
            readvising: None,
            retries_loaded: false,
        }
    }

    fn beat(&self) {
        self.status.heartbeat_ms.store(now_ms(), Ordering::Release);
    }

    fn stopping(&self) -> bool {
        self.status.stop.load(Ordering::Acquire)
    }

    /// Runs until [`Event::Stop`] (then finishes in-flight advice within `grace`).
    pub fn run(mut self, grace: Duration) {
        let mut reader = log::Reader::new(&self.journal_dir, self.cursor);
        let mut last_compact = Instant::now();
        let mut last_lazy_sync = Instant::now();
        let mut stop_deadline: Option<Instant> = None;
        loop {
            self.beat();
            let durable = self.journal.durable_seq.load(Ordering::Acquire);
            let slots = self.settings.max_inflight.max(1);
            // Backpressure: while the outbox is full (Slack down or slow), records stay in the
            // journal on disk instead of piling up as messages in memory.
            // Bounded in bytes as well as in messages, so large groups cannot make it large.
            let outbox_full = {
                let s = self.state.lock();
                s.outbox_len() >= MAX_OUTBOX || s.outbox_bytes() >= self.settings.queue_bytes
            };
            // Records waiting behind advice, in bytes: over the bound, they wait in the journal.
            let held_full = self.held_bytes() >= self.settings.queue_bytes;
            // The last half of the reserve is for delivery records and compaction, which give
            // space back; processing waits for them (the records stay in the journal).
            let disk_low = self.disk_low();
            let can_read = stop_deadline.is_none()
                && self.queued < MAX_QUEUED
                && !held_full
                && !outbox_full
                && !disk_low;
            if can_read && self.backlog.is_empty() && reader.next_seq() <= durable {
                match reader.read_bounded(durable, READ_BATCH, self.settings.queue_bytes) {
                    Ok(records) => {
                        self.backlog.extend(
                            records
                                .into_iter()
                                .map(|r| (r.seq, journal::Entry::from_record(r))),
                        );
                        self.status.set_error(None);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the journal");
                        self.status
                            .set_error(Some(format!("cannot read the journal: {e}")));
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
            while can_read && self.inflight < slots {
                let Some((seq, entry)) = self.backlog.pop_front() else {
                    break;
                };
                if self.handle(seq, entry).is_err() {
                    return;
                }
            }
            if stop_deadline.is_none() && !disk_low {
                self.readvise_due();
            }
            // Messages wait for a sync before delivery, so sync at once when there are any.
            // Checkpoints and delivery records only need to be durable soon (a lost one means
            // re-checking a few duplicates, or the syscall window of delivery), so they are
            // synced at most every SYNC_EVERY: fewer fsyncs competing with the journal's.
            let lazy_due = last_lazy_sync.elapsed() >= SYNC_EVERY || stop_deadline.is_some();
            if lazy_due {
                if self.checkpoint_if_behind().is_err() {
                    return;
                }
                if self.state.dirty.swap(false, Ordering::AcqRel) {
                    self.dirty = true;
                }
            }
            if (self.messages_staged || (lazy_due && self.dirty)) && self.sync().is_err() {
                return;
            }
            if lazy_due {
                last_lazy_sync = Instant::now();
            }
            if last_compact.elapsed() >= Duration::from_secs(2) {
                last_compact = Instant::now();
                // The checkpoint must be durable before journal segments it covers go.
                if self.checkpoint_if_behind().is_err() || (self.dirty && self.sync().is_err()) {
                    return;
                }
                self.compact(disk_low);
            }
            if let Some(deadline) = stop_deadline {
                if (self.inflight == 0 && self.readvising.is_none()) || Instant::now() >= deadline {
                    if self.inflight > 0 {
                        tracing::warn!(
                            inflight = self.inflight,
                            "advice still running at shutdown; those notifications are processed again at the next start"
                        );
                    }
                    let _ = self.sync();
                    return;
                }
            }
            // Do not block while there is work we may do now; never spin while waiting for
            // advice slots.
            let more = can_read
                && self.inflight < slots
                && (!self.backlog.is_empty()
                    || reader.next_seq() <= self.journal.durable_seq.load(Ordering::Acquire));
            let first = if more {
                self.events.try_recv().ok()
            } else {
                self.events.recv_timeout(Duration::from_millis(500)).ok()
            };
            // Take every event already queued, so one sync covers all their commits.
            let mut next = first;
            let mut taken = 0;
            while let Some(event) = next.take() {
                match event {
                    Event::Durable => self.status.wake_queued.store(false, Ordering::Release),
                    Event::Stop => {
                        self.status.stop.store(true, Ordering::Release);
                        stop_deadline.get_or_insert(Instant::now() + grace);
                    }
                    Event::Advice { group, advice } => {
                        let result = self.advised(&group, advice.map(|a| *a));
                        if result.is_err() {
                            return;
                        }
                    }
                    Event::Fetched { group, result } => {
                        if self.fetched(&group, result).is_err() {
                            return;
                        }
                    }
                    Event::Readvised {
                        group,
                        retry_of,
                        advice,
                    } => {
                        if self
                            .readvised(&group, &retry_of, advice.map(|a| *a))
                            .is_err()
                        {
                            return;
                        }
                    }
                }
                taken += 1;
                if taken < 1024 {
                    next = self.events.try_recv().ok();
                }
            }
        }
    }

    /// Handles the next journal record.
    fn handle(&mut self, seq: u64, entry: Option<journal::Entry>) -> Result<(), Abandon> {
        self.status.handled_seq.store(seq, Ordering::Release);
        let Some(entry) = entry else {
            // Probe records (empty) carry nothing.
            self.cursor = seq + 1;
            return self.commit_entry(seq, None, None);
        };
        let n = match Notification::parse(&entry.body) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(seq, error = %e, "skipping a journal record that does not parse");
                self.cursor = seq + 1;
                return self.commit_entry(seq, None, None);
            }
        };
        self.cursor = seq + 1;
        if let Some(q) = self.pending.get_mut(&n.group_key) {
            q.push_back(Pending::new(entry, n));
            self.queued += 1;
            return Ok(());
        }
        self.run_one(Pending::new(entry, n))
    }

    /// Decides and either commits at once or starts advice (then the record heads its
    /// group's queue). A truncated notification first has its group's alerts fetched (the
    /// record heads its group's queue meanwhile, and comes back here completed).
    fn run_one(&mut self, mut p: Pending) -> Result<(), Abandon> {
        let prev = self.state.lock().group(&p.n.group_key).cloned();
        if prev.as_ref().is_some_and(|g| p.entry.seq <= g.last_seq) {
            // Already processed before a restart.
            return Ok(());
        }
        if p.truncation.is_none()
            && needs_fetch(&p.n)
            && let Some(client) = self.settings.alertmanager.clone()
        {
            let group = p.n.group_key.clone();
            let labels = p.n.group_labels.clone();
            let receiver = p.n.receiver.clone();
            let tx = self.events_tx.clone();
            p.fetching = true;
            self.inflight += 1;
            self.pending.entry(group.clone()).or_default().push_front(p);
            self.queued += 1;
            self.runtime.spawn_blocking(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    client.group_alerts(&labels, Some(&receiver))
                }))
                .unwrap_or_else(|_| Err("the Alertmanager client panicked".to_owned()));
                let _ = tx.send(Event::Fetched { group, result });
            });
            return Ok(());
        }
        let d = decide(
            prev.as_ref(),
            &p.n,
            p.entry.seq,
            p.entry.received_at,
            self.settings.reminder,
        );
        if !d.needs_advice || !self.advisor.gives_advice() {
            return self.commit(&p.entry, p.n, d, None, p.truncation);
        }
        let group = p.n.group_key.clone();
        let advisor = self.advisor.clone();
        let tx = self.events_tx.clone();
        let n = p.n.clone();
        let id = d.message_id.clone().unwrap_or_default();
        self.inflight += 1;
        self.pending
            .entry(group.clone())
            .or_default()
            .push_front(Pending {
                decision: Some(d),
                fetching: false,
                ..p
            });
        self.queued += 1;
        self.runtime.spawn_blocking(move || {
            let advice = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                advisor.advise(&n, &id)
            }))
            .unwrap_or_else(|_| {
                tracing::error!(group = %n.group_key, "the advisor panicked; sending the message without advice");
                None
            });
            let _ = tx.send(Event::Advice {
                group,
                advice: advice.map(Box::new),
            });
        });
        Ok(())
    }

    /// Takes the first queued record of `group` (the one advice or a fetch was for); the rest
    /// stay queued, so the checkpoint stays below them while it is committed.
    fn take_first(&mut self, group: &str) -> Option<Pending> {
        let queue = self.pending.get_mut(group)?;
        let first = queue.pop_front();
        if queue.is_empty() {
            self.pending.remove(group);
        }
        if first.is_some() {
            self.queued -= 1;
        }
        first
    }

    /// Runs the records queued behind a group's first one, in order, until one waits for
    /// advice or a fetch again (the rest then wait behind it).
    fn drain(&mut self, group: &str) -> Result<(), Abandon> {
        while let Some(queue) = self.pending.get(group) {
            if queue.front().is_none_or(Pending::busy) {
                if queue.is_empty() {
                    self.pending.remove(group);
                }
                break;
            }
            let Some(p) = self.take_first(group) else {
                break;
            };
            self.run_one(p)?;
        }
        Ok(())
    }

    /// Advice arrived: commit the group's first record, then run the records queued behind it.
    fn advised(&mut self, group: &str, advice: Option<Advice>) -> Result<(), Abandon> {
        self.inflight = self.inflight.saturating_sub(1);
        let Some(first) = self.take_first(group) else {
            return Ok(());
        };
        let d = first
            .decision
            .expect("the first queued record carries its decision");
        self.commit(&first.entry, first.n, d, advice, first.truncation)?;
        self.drain(group)
    }

    /// The group's alerts arrived (or the fetch failed): complete the first record's
    /// notification with them and run it (it may wait for advice next), then the records
    /// queued behind it.
    fn fetched(&mut self, group: &str, result: Result<GroupAlerts, String>) -> Result<(), Abandon> {
        self.inflight = self.inflight.saturating_sub(1);
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .truncated_fetches
            .with_label_values(&[outcome])
            .inc();
        let Some(mut first) = self.take_first(group) else {
            return Ok(());
        };
        if let Err(e) = &result {
            tracing::warn!(group, truncated = first.n.truncated_alerts, error = %e, "cannot fetch the alerts Alertmanager left out of a notification; going on with those it sent");
        }
        let (n, truncation) = merge_truncated(&first.n, result);
        first.n = n;
        first.truncation = Some(truncation);
        first.fetching = false;
        self.run_one(first)?;
        self.drain(group)
    }

    /// What the records waiting behind advice hold in memory, about.
    fn held_bytes(&self) -> usize {
        if self.queued == 0 {
            return 0;
        }
        self.pending
            .values()
            .flat_map(|q| q.iter())
            .map(|p| p.entry.body.len().saturating_mul(HELD_FACTOR))
            .sum()
    }

    /// Every journal record at or below this is done.
    fn low_water(&self) -> u64 {
        let min_pending = self
            .pending
            .values()
            .flat_map(|q| q.iter().map(|p| p.entry.seq))
            .min();
        match min_pending {
            Some(s) => (s - 1).min(self.cursor - 1),
            None => self.cursor - 1,
        }
    }

    fn commit(
        &mut self,
        entry: &journal::Entry,
        n: Notification,
        d: Decision,
        advice: Option<Advice>,
        truncation: Option<Truncation>,
    ) -> Result<(), Abandon> {
        let mut state = d.state;
        let original = match d.kind {
            Some(MessageKind::Firing) => None,
            _ => state.original.clone(),
        };
        let resolved_call = d
            .resolved
            .then(|| (n.clone(), original.as_ref().map(|o| o.id.clone())));
        if d.kind == Some(MessageKind::Firing)
            && let (Some(a), Some(id)) = (&advice, &d.message_id)
            && a.proposal.is_retry()
        {
            tracing::warn!(group = %n.group_key, message = %id, "the proposed action could not be stored; the group is diagnosed again until it can be");
            state.retry = Some(state::AdviceRetry {
                message_id: id.clone(),
                notification: n.clone(),
                since: entry.received_at,
            });
            self.retry_next
                .insert(n.group_key.clone(), (Instant::now() + retry_delay(0), 0));
        }
        let message = match (d.kind, d.message_id) {
            (Some(kind), Some(id)) => {
                let m = Message {
                    id,
                    kind,
                    created_at: entry.received_at,
                    notification: n,
                    advice,
                    original,
                    new_alerts: d.new_alerts,
                    dashboard_url: self.settings.dashboard_url.clone(),
                    action: None,
                    truncation,
                    changes: d.changes,
                };
                if kind == MessageKind::Firing {
                    state.original = Some(MessageRef {
                        id: m.id.clone(),
                        title: crate::slack::title(&m),
                        at: m.created_at,
                    });
                }
                self.metrics
                    .messages
                    .with_label_values(&[kind.as_str()])
                    .inc();
                Some(m)
            }
            _ => {
                if let Some(why) = d.suppressed {
                    self.metrics.suppressed.with_label_values(&[why]).inc();
                }
                None
            }
        };
        if message.is_none() && d.suppressed == Some("duplicate") {
            // A pure repeat changes nothing worth a record: replaying it decides "duplicate"
            // again. The checkpoint moves past it with the next record (or a checkpoint-only
            // one, see `checkpoint_if_behind`).
            self.unrecorded = true;
        } else {
            let enqueued = message.is_some();
            self.commit_entry(entry.seq, Some(state), message)?;
            if enqueued {
                self.committed.push(entry.received_at);
            }
        }
        if let Some((n, original)) = resolved_call {
            let advisor = self.advisor.clone();
            self.runtime.spawn_blocking(move || {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    advisor.resolved(&n, original.as_deref());
                }));
            });
        }
        Ok(())
    }

    /// Asks again for the advice of one marked group that is due, if none is being asked for.
    /// Groups whose records wait for advice are left until those are done.
    fn readvise_due(&mut self) {
        if !self.retries_loaded {
            self.retries_loaded = true;
            let now = Instant::now();
            for key in self.state.lock().retry_groups() {
                self.retry_next.entry(key).or_insert((now, 0));
            }
        }
        if self.readvising.is_some() || self.retry_next.is_empty() {
            return;
        }
        let now = Instant::now();
        let Some(group) = self
            .retry_next
            .iter()
            .filter(|(g, (at, _))| *at <= now && !self.pending.contains_key(*g))
            .min_by_key(|(_, (at, _))| *at)
            .map(|(g, _)| g.clone())
        else {
            return;
        };
        let retry = self
            .state
            .lock()
            .group(&group)
            .filter(|g| g.status == Status::Firing)
            .and_then(|g| g.retry.clone());
        let Some(retry) = retry else {
            // Resolved, or a new episode began: nothing to ask any more.
            self.retry_next.remove(&group);
            return;
        };
        let advisor = self.advisor.clone();
        let tx = self.events_tx.clone();
        let id = readvice_id(&group, &retry.message_id);
        self.readvising = Some(group.clone());
        self.runtime.spawn_blocking(move || {
            let n = retry.notification;
            let advice = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                advisor.advise(&n, &id)
            }))
            .unwrap_or_else(|_| {
                tracing::error!(group = %n.group_key, "the advisor panicked when asked again");
                None
            });
            let _ = tx.send(Event::Readvised {
                group,
                retry_of: retry.message_id,
                advice: advice.map(Box::new),
            });
        });
    }

    /// The advice asked for again arrived: still not storable means try later (backing off);
    /// anything else is posted as a follow-up of the firing message and clears the mark.
    fn readvised(
        &mut self,
        group: &str,
        retry_of: &str,
        advice: Option<Advice>,
    ) -> Result<(), Abandon> {
        self.readvising = None;
        let current = self.state.lock().group(group).cloned();
        let Some(mut state) = current.filter(|g| {
            g.status == Status::Firing && g.retry.as_ref().is_some_and(|r| r.message_id == retry_of)
        }) else {
            self.retry_next.remove(group);
            return Ok(());
        };
        if let Some(a) = &advice
            && a.proposal.is_retry()
        {
            let tries = self.retry_next.get(group).map_or(0, |(_, n)| *n) + 1;
            let delay = retry_delay(tries);
            tracing::warn!(
                group,
                tries,
                retry_in_secs = delay.as_secs(),
                "the proposed action still cannot be stored"
            );
            self.retry_next
                .insert(group.to_owned(), (Instant::now() + delay, tries));
            return Ok(());
        }
        let retry = state.retry.take().expect("checked above");
        self.retry_next.remove(group);
        let now = Utc::now();
        let mut notification = retry.notification;
        notification.alerts.retain(|a| a.status == Status::Firing);
        let message = advice.map(|advice| Message {
            id: readvice_id(group, retry_of),
            kind: MessageKind::Advice,
            created_at: now,
            notification,
            advice: Some(advice),
            original: state.original.clone(),
            new_alerts: 0,
            dashboard_url: self.settings.dashboard_url.clone(),
            action: None,
            truncation: None,
            changes: Default::default(),
        });
        if message.is_some() {
            state.last_message_at = Some(now);
            self.metrics
                .messages
                .with_label_values(&[MessageKind::Advice.as_str()])
                .inc();
        }
        let seq = state.last_seq;
        self.commit_entry(seq, Some(state), message)
    }

    /// Records the checkpoint when only unrecorded duplicates moved it.
    fn checkpoint_if_behind(&mut self) -> Result<(), Abandon> {
        if !self.unrecorded {
            return Ok(());
        }
        self.unrecorded = false;
        let low = self.low_water();
        if low > self.state.lock().checkpoint() {
            self.commit_entry(low, None, None)?;
        }
        Ok(())
    }

    /// Appends one Processed entry, retrying while the disk refuses (the journal keeps the
    /// records, so nothing is lost by waiting).
    fn commit_entry(
        &mut self,
        seq: u64,
        group: Option<GroupState>,
        message: Option<Message>,
    ) -> Result<(), Abandon> {
        let has_message = message.is_some();
        let entry = Entry::Processed {
            seq,
            checkpoint: self.low_water(),
            group,
            message,
        };
        loop {
            let result = self.state.lock().append(&entry);
            match result {
                Ok(()) => {
                    self.dirty = true;
                    self.messages_staged |= has_message;
                    return Ok(());
                }
                Err(e) => self.wait_after_error(&format!("cannot write the state log: {e}"))?,
            }
        }
    }

    fn wait_after_error(&mut self, what: &str) -> Result<(), Abandon> {
        tracing::error!("{what}; retrying in 1 s");
        self.status.set_error(Some(what.to_owned()));
        self.beat();
        std::thread::sleep(Duration::from_secs(1));
        // Only the flag: events (advice results) must stay queued for the main loop.
        if self.stopping() {
            return Err(Abandon);
        }
        Ok(())
    }

    /// One fsync for everything committed since the last one; then the messages go to delivery.
    fn sync(&mut self) -> Result<(), Abandon> {
        loop {
            let result = self.state.lock().sync();
            match result {
                Ok(published) => {
                    let published = published > 0;
                    let (checkpoint, cost) = {
                        let store = self.state.lock();
                        (store.checkpoint(), store.entry_bytes())
                    };
                    self.journal
                        .processed_seq
                        .fetch_max(checkpoint, Ordering::AcqRel);
                    // A record costs its state entry, and as much again while its message
                    // waits in a snapshot of the outbox.
                    self.journal
                        .record_cost
                        .store(cost.saturating_mul(2), Ordering::Release);
                    self.dirty = false;
                    self.messages_staged = false;
                    self.status.set_error(None);
                    let now = Utc::now();
                    for at in self.committed.drain(..) {
                        let secs = (now - at).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
                        self.metrics.processing_seconds.observe(secs);
                    }
                    if published {
                        self.state.changed.notify_all();
                    }
                    return Ok(());
                }
                Err(e) => self.wait_after_error(&format!("cannot sync the state log: {e}"))?,
            }
        }
    }

    /// True while the state volume has no more than half the reserve free (then processing
    /// waits, and says so in `/healthz`).
    fn disk_low(&self) -> bool {
        let h = &self.settings.headroom;
        let low = h.space().is_ok_and(|s| s.free <= h.reserve() / 2);
        let was = self.status.disk_low.swap(low, Ordering::AcqRel);
        if low && !was {
            tracing::warn!(
                "the state volume has less than half the reserve free: processing waits for deliveries and compaction to give space back"
            );
        } else if was && !low {
            tracing::info!("the state volume has room again: processing goes on");
        }
        low
    }

    /// True while the state volume has less than twice the reserve free (what
    /// `AiopsStateVolumeLow` warns about): the state log is then compacted early.
    fn disk_pressed(&self) -> bool {
        let h = &self.settings.headroom;
        h.space()
            .is_ok_and(|s| s.free <= h.reserve().saturating_mul(2))
    }

    /// Drops journal segments the durable checkpoint covers, and compacts the state log (early
    /// when the state volume is short of space).
    fn compact(&mut self, disk_low: bool) {
        let checkpoint = {
            let mut store = self.state.lock();
            let result = if disk_low || self.disk_pressed() {
                store.compact_under_pressure()
            } else {
                store.compact_if_over(state::COMPACT_AFTER_BYTES)
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "cannot compact the state log");
            }
            store.checkpoint()
        };
        if let Err(e) = log::compact(&self.journal_dir, checkpoint + 1) {
            tracing::warn!(error = %e, "cannot remove processed journal segments");
        }
        // Lets the journal seal a fully processed segment, which the next round then removes.
        self.journal
            .processed_seq
            .fetch_max(checkpoint, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at() -> DateTime<Utc> {
        "2026-11-28T12:04:05Z".parse().unwrap()
    }

    /// (fingerprint, alertname, instance, firing)
    fn notification(alerts: &[(&str, &str, &str, bool)], truncated: u64) -> Notification {
        let firing = alerts.iter().any(|a| a.3) || truncated > 0;
        let v = json!({
            "version": "4", "receiver": "aiops",
            "groupKey": "{}:{service=\"aiops-demo-app\"}",
            "status": if firing { "firing" } else { "resolved" },
            "truncatedAlerts": truncated,
            "groupLabels": {"service": "aiops-demo-app"},
            // What Alertmanager computes over the alerts it sent.
            "commonLabels": alerts.first().map(|a| json!({"service": "aiops-demo-app", "alertname": a.1, "instance": a.2})).unwrap_or(json!({})),
            "alerts": alerts.iter().map(|(fp, name, instance, firing)| json!({
                "status": if *firing { "firing" } else { "resolved" },
                "labels": {"alertname": name, "instance": instance, "service": "aiops-demo-app"},
                "annotations": {"summary": format!("{name} on {instance}")},
                "startsAt": "2026-11-28T12:03:00Z",
                "endsAt": if *firing { "0001-01-01T00:00:00Z" } else { "2026-11-28T12:10:00Z" },
                "fingerprint": fp,
            })).collect::<Vec<_>>(),
        });
        Notification::parse(v.to_string().as_bytes()).unwrap()
    }

    fn api(fp: &str, name: &str, instance: &str) -> ApiAlert {
        serde_json::from_value(json!({
            "labels": {"alertname": name, "instance": instance, "service": "aiops-demo-app"},
            "annotations": {"summary": "from the API"},
            "startsAt": "2026-11-28T12:03:30Z", "endsAt": "2026-11-28T12:20:00Z",
            "fingerprint": fp, "status": {"state": "active"},
        }))
        .unwrap()
    }

    fn fps(n: &Notification) -> Vec<&str> {
        n.alerts.iter().map(|a| a.fingerprint.as_str()).collect()
    }

    #[test]
    fn a_truncated_notification_is_completed_from_the_api_without_duplicates() {
        let n = notification(&[("a", "HighErrorRatio", "host-a:8080", true)], 2);
        let fetched = GroupAlerts {
            alerts: vec![
                api("a", "HighErrorRatio", "host-a:8080"),
                api("b", "HighLatencyP99", "host-b:8080"),
                api("c", "HighErrorRatio", "host-c:8080"),
            ],
            more: 0,
        };
        let (m, tr) = merge_truncated(&n, Ok(fetched));
        assert_eq!(fps(&m), ["a", "b", "c"]);
        // The notification's own copy wins over the API's.
        assert_eq!(
            m.alerts[0].annotations["summary"],
            "HighErrorRatio on host-a:8080"
        );
        assert!(m.alerts.iter().all(|a| a.status == Status::Firing));
        assert_eq!(m.alerts[1].ends_at, n.alerts[0].ends_at, "firing: no end");
        assert_eq!(m.truncated_alerts, 0);
        assert_eq!(
            tr,
            Truncation {
                truncated: 2,
                fetched: 2,
                error: None
            }
        );
        // Common labels are those of all three, not of the one Alertmanager sent.
        assert_eq!(
            m.common_labels,
            KV::from([("service".to_owned(), "aiops-demo-app".to_owned())])
        );
        assert!(m.common_annotations.is_empty());
        // The whole group's dedup key differs from the truncated payload's.
        assert_ne!(dedup_key(&m), dedup_key(&n));
    }

    #[test]
    fn a_failed_fetch_keeps_the_notification_and_the_reason() {
        let n = notification(&[("a", "HighErrorRatio", "host-a:8080", true)], 2);
        let (m, tr) = merge_truncated(&n, Err("cannot reach Alertmanager".into()));
        assert_eq!(m, n);
        assert_eq!(tr.truncated, 2);
        assert_eq!(tr.fetched, 0);
        assert_eq!(tr.error.as_deref(), Some("cannot reach Alertmanager"));
    }

    #[test]
    fn alerts_over_the_fetch_bound_stay_counted_as_missing() {
        let n = notification(&[("a", "HighErrorRatio", "host-a:8080", true)], 300);
        let fetched = GroupAlerts {
            alerts: vec![api("b", "HighErrorRatio", "host-b:8080")],
            more: 99,
        };
        let (m, tr) = merge_truncated(&n, Ok(fetched));
        assert_eq!(fps(&m), ["a", "b"]);
        assert_eq!(m.truncated_alerts, 99);
        assert_eq!(tr.fetched, 1);
    }

    #[test]
    fn short_names_use_the_instance_then_the_unit_then_the_fingerprint() {
        let n = notification(
            &[(
                "0123456789abcdef",
                "HighLatencyP99",
                "aiops-demo-app:8080",
                true,
            )],
            0,
        );
        let mut a = n.alerts[0].clone();
        assert_eq!(short_name(&a), "HighLatencyP99 on aiops-demo-app:8080");
        a.labels.remove("instance");
        a.labels
            .insert("unit".into(), "aiops-demo-app.service".into());
        assert_eq!(short_name(&a), "HighLatencyP99 on aiops-demo-app.service");
        a.labels.remove("unit");
        assert_eq!(short_name(&a), "HighLatencyP99 01234567");
        a.labels.insert("instance".into(), "x".repeat(500));
        assert_eq!(short_name(&a).chars().count(), SHORT_NAME_MAX);
    }

    #[test]
    fn an_update_says_which_alerts_joined_and_which_left() {
        let first = notification(
            &[
                ("a", "HighErrorRatio", "host-a:8080", true),
                ("b", "HighErrorRatio", "host-b:8080", true),
                ("c", "HighErrorRatio", "host-c:8080", true),
            ],
            0,
        );
        let d1 = decide(None, &first, 1, at(), None);
        assert_eq!(d1.kind, Some(MessageKind::Firing));
        assert_eq!(d1.state.announced.len(), 3);
        // d joins, b and c are gone (c resolved in the notification, b no longer listed).
        let second = notification(
            &[
                ("a", "HighErrorRatio", "host-a:8080", true),
                ("c", "HighErrorRatio", "host-c:8080", false),
                ("d", "HighLatencyP99", "aiops-demo-app:8080", true),
            ],
            0,
        );
        let d2 = decide(Some(&d1.state), &second, 2, at(), None);
        assert_eq!(d2.kind, Some(MessageKind::Update));
        assert_eq!(
            d2.changes,
            Changes {
                joined: vec!["HighLatencyP99 on aiops-demo-app:8080".into()],
                joined_count: 1,
                left: vec![
                    "HighErrorRatio on host-b:8080".into(),
                    "HighErrorRatio on host-c:8080".into()
                ],
                left_count: 2,
            }
        );
        assert_eq!(d2.state.announced.keys().collect::<Vec<_>>(), ["a", "d"]);
        // The message says so, by name, instead of counting listed alerts.
        let m = Message {
            id: d2.message_id.clone().unwrap(),
            kind: MessageKind::Update,
            created_at: at(),
            notification: second,
            advice: None,
            original: None,
            new_alerts: d2.new_alerts,
            dashboard_url: None,
            action: None,
            truncation: None,
            changes: d2.changes,
        };
        let text = crate::slack::plain_text(&m);
        assert!(
            text.contains("Joined (1): HighLatencyP99 on aiops-demo-app:8080."),
            "{text}"
        );
        assert!(
            text.contains(
                "Left (2): HighErrorRatio on host-b:8080, HighErrorRatio on host-c:8080."
            ),
            "{text}"
        );
        assert!(!text.contains("listed alerts still firing"), "{text}");
    }

    #[test]
    fn a_notification_still_truncated_only_loses_the_alerts_it_lists_as_resolved() {
        let first = notification(
            &[
                ("a", "HighErrorRatio", "host-a:8080", true),
                ("b", "HighErrorRatio", "host-b:8080", true),
            ],
            0,
        );
        let d1 = decide(None, &first, 1, at(), None);
        // The fetch failed: a resolved is listed, b may be among the 3 left out.
        let second = notification(
            &[
                ("a", "HighErrorRatio", "host-a:8080", false),
                ("e", "HighErrorRatio", "host-e:8080", true),
            ],
            3,
        );
        let d2 = decide(Some(&d1.state), &second, 2, at(), None);
        assert_eq!(d2.changes.joined, ["HighErrorRatio on host-e:8080"]);
        assert_eq!(d2.changes.left, ["HighErrorRatio on host-a:8080"]);
        assert_eq!(d2.state.announced.keys().collect::<Vec<_>>(), ["b", "e"]);
    }

    #[test]
    fn state_without_announced_alerts_still_names_the_ones_that_joined() {
        let first = notification(&[("a", "HighErrorRatio", "host-a:8080", true)], 0);
        let mut old = decide(None, &first, 1, at(), None).state;
        old.announced.clear();
        let json = serde_json::to_value(&old).unwrap();
        assert!(json.get("announced").is_none());
        let old: GroupState = serde_json::from_value(json).unwrap();
        let second = notification(
            &[
                ("a", "HighErrorRatio", "host-a:8080", true),
                ("b", "HighErrorRatio", "host-b:8080", true),
            ],
            0,
        );
        let d = decide(Some(&old), &second, 2, at(), None);
        assert_eq!(d.changes.joined, ["HighErrorRatio on host-b:8080"]);
        assert_eq!(d.changes.left_count, 0);
        assert_eq!(d.state.announced.len(), 2);
    }

    #[test]
    fn many_changes_are_listed_up_to_a_bound_and_counted() {
        let many: Vec<(String, String)> = (0..40)
            .map(|i| (format!("f{i:02}"), format!("host-{i:02}:8080")))
            .collect();
        let alerts: Vec<(&str, &str, &str, bool)> = many
            .iter()
            .map(|(fp, inst)| (fp.as_str(), "HighErrorRatio", inst.as_str(), true))
            .collect();
        let first = notification(&alerts[..1], 0);
        let d1 = decide(None, &first, 1, at(), None);
        let d2 = decide(Some(&d1.state), &notification(&alerts, 0), 2, at(), None);
        assert_eq!(d2.changes.joined_count, 39);
        assert_eq!(d2.changes.joined.len(), Changes::LISTED);
    }
}
