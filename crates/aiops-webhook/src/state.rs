//! The processor's durable state: per-group dedup state, the checkpoint and the outbox, kept as
//! one append-only state log plus an occasional snapshot.
//!
//! Every processed notification becomes ONE [`Entry::Processed`] record that carries the new
//! group state, the checkpoint and the message to send (if any). Writing that one record is the
//! atomic "enqueue message + update group state + advance checkpoint" step: after a crash the
//! log holds either all of it or none of it. Deliveries append [`Entry::Delivered`] or
//! [`Entry::Dropped`]. Replaying snapshot + log rebuilds the same state.
//!
//! Compaction writes a snapshot (atomically, via `write_atomic`) that names the first state-log
//! record it does not cover, then deletes the segments before it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aiops_core::alertmanager::Status;
use aiops_core::fsutil::{self, FsError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::log::{self, Appender};
use crate::message::{Message, MessageRef, Queued};

/// The state log is compacted into a snapshot when its current segment reaches this size (or
/// twice the last snapshot, whichever is larger), so processed entries do not pile up.
pub const COMPACT_AFTER_BYTES: u64 = 1024 * 1024;
/// Groups not heard of for this long are forgotten (longer than any sane repeat_interval).
pub const GROUP_RETENTION: chrono::Duration = chrono::Duration::days(7);
/// Resolved groups are forgotten this long after they resolved.
pub const RESOLVED_RETENTION: chrono::Duration = chrono::Duration::days(1);

/// What the receiver remembers about one alert group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    pub group_key: String,
    pub status: Status,
    /// Dedup key of the last notification processed for the group.
    pub last_key: String,
    /// Journal sequence number of that notification: records at or below it are done.
    pub last_seq: u64,
    /// When the current episode began (first firing notification received).
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Fingerprints of the alerts seen firing during this episode.
    pub fingerprints: BTreeSet<String>,
    /// The episode's firing message.
    pub original: Option<MessageRef>,
    /// When a message about the group was last enqueued.
    pub last_message_at: Option<DateTime<Utc>>,
    /// The episode's advice must be asked for again: the action it proposed could not be
    /// stored. Cleared when the group resolves, a new episode begins, or the advice is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<AdviceRetry>,
    /// The firing alerts the group's last firing or update message showed, fingerprint to
    /// short name ([`crate::process::short_name`]): what the next update compares with to say
    /// which alerts joined and which left. Empty in state written before it existed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub announced: BTreeMap<String, String>,
}

/// A firing group whose proposed action could not be stored, kept until it can be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdviceRetry {
    /// The firing message whose advice failed.
    pub message_id: String,
    /// The notification the advice was asked for (what the advisor needs to ask again).
    pub notification: aiops_core::alertmanager::Notification,
    /// When the advice first failed.
    pub since: DateTime<Utc>,
}

/// One record of the state log.
#[allow(clippy::large_enum_variant)] // serialized data, mostly the big variant
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry {
    Processed {
        /// Journal sequence number of the notification.
        seq: u64,
        /// Every journal record at or below this is processed.
        checkpoint: u64,
        /// The group's new state (`None` for a record that is not a notification).
        group: Option<GroupState>,
        message: Option<Message>,
    },
    /// A message that no notification caused (the executor's news about an action).
    Outgoing {
        message: Message,
    },
    Delivered {
        id: String,
        at: DateTime<Utc>,
    },
    Dropped {
        id: String,
        at: DateTime<Utc>,
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
struct Snapshot {
    /// State-log records from this sequence number on are not covered by the snapshot.
    log_from: u64,
    checkpoint: u64,
    groups: Vec<GroupState>,
    outbox: Vec<SnapshotMessage>,
}

/// An outbox message in a snapshot: rendered (what this version writes), or a whole
/// [`Message`] (what snapshots written before the outbox held rendered messages contain).
#[allow(clippy::large_enum_variant)] // only read, once, at start
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SnapshotMessage {
    Queued(Queued),
    Message(Message),
}

/// Errors opening or writing the state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(
        "the state snapshot {path} is not valid JSON: {message}; move it away to start from the log alone"
    )]
    Snapshot { path: PathBuf, message: String },
    #[error("cannot read the state log: {0}")]
    Read(#[from] log::ReadError),
}

/// Like `fsutil::write_atomic`, but streams the JSON into the temporary file instead of
/// building it in memory first (a snapshot of many groups is megabytes). Returns its size.
fn write_json_atomic(path: &Path, value: &impl Serialize) -> Result<u64, FsError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| FsError::new("cannot create", &tmp, e))?;
        let mut w = std::io::BufWriter::with_capacity(64 * 1024, file);
        serde_json::to_writer(&mut w, value)
            .map_err(std::io::Error::from)
            .and_then(|()| w.flush())
            .map_err(|e| FsError::new("cannot write", &tmp, e))?;
        let file = w
            .into_inner()
            .map_err(|e| FsError::new("cannot write", &tmp, e.into_error()))?;
        file.sync_all()
            .map_err(|e| FsError::new("cannot fsync", &tmp, e))?;
        let len = file
            .metadata()
            .map_err(|e| FsError::new("cannot stat", &tmp, e))?
            .len();
        std::fs::rename(&tmp, path)
            .map_err(|e| FsError::new("cannot rename into place", path, e))?;
        fsutil::fsync_dir(dir)?;
        Ok(len)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The store shared by the processor (writes) and the delivery worker (reads the outbox).
#[derive(Debug)]
pub struct Shared {
    pub store: std::sync::Mutex<Store>,
    /// Signalled when messages become deliverable or on shutdown.
    pub changed: std::sync::Condvar,
    /// Something was appended without a sync (deliveries); the processor syncs it soon.
    pub dirty: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub fn new(store: Store) -> Self {
        Self {
            store: std::sync::Mutex::new(store),
            changed: std::sync::Condvar::new(),
            dirty: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Locks the store (a panic elsewhere does not make the state unusable).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The processor's state, in memory and on disk.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    log: Appender,
    checkpoint: u64,
    groups: HashMap<String, GroupState>,
    /// Messages durable in the state log and not yet delivered, in order, rendered.
    outbox: VecDeque<Queued>,
    outbox_ids: HashSet<String>,
    /// What the outbox holds in memory ([`Queued::bytes`]).
    outbox_bytes: usize,
    /// Messages written but not yet synced: invisible to delivery until [`Store::sync`].
    staged: Vec<Queued>,
    dead_letter_path: PathBuf,
    last_snapshot_bytes: u64,
    /// Running average of the bytes one processed notification writes to the state log.
    entry_bytes: u64,
    /// A write failed; the message says what.
    pub last_error: Option<String>,
}

/// How replaying the state went.
#[derive(Debug, Clone, Copy)]
pub struct Replayed {
    pub entries: u64,
    pub truncated_bytes: u64,
}

impl Store {
    /// Opens (or creates) the state in `dir`.
    pub fn open(dir: &Path) -> Result<(Self, Replayed), StateError> {
        fsutil::ensure_dir(dir)?;
        let log_dir = dir.join("log");
        let snap_path = dir.join("snapshot.json");
        let snapshot = match std::fs::read(&snap_path) {
            Ok(bytes) => Some(serde_json::from_slice::<Snapshot>(&bytes).map_err(|e| {
                StateError::Snapshot {
                    path: snap_path.clone(),
                    message: e.to_string(),
                }
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(FsError::new("cannot read", &snap_path, e).into()),
        };
        let _ = fsutil::remove_stale_temporaries(dir);
        let log_from = snapshot.as_ref().map_or(1, |s| s.log_from);
        let (appender, rec) = log::recover(&log_dir, log_from)?;
        let mut store = Self {
            dir: dir.to_owned(),
            log: appender,
            checkpoint: 0,
            groups: HashMap::new(),
            outbox: VecDeque::new(),
            outbox_ids: HashSet::new(),
            outbox_bytes: 0,
            staged: Vec::new(),
            dead_letter_path: dir.join("dead-letter.jsonl"),
            last_snapshot_bytes: 0,
            entry_bytes: 0,
            last_error: None,
        };
        if let Some(s) = snapshot {
            store.checkpoint = s.checkpoint;
            for g in s.groups {
                store.groups.insert(g.group_key.clone(), g);
            }
            for m in s.outbox {
                store.enqueue(match m {
                    SnapshotMessage::Queued(q) => q,
                    SnapshotMessage::Message(m) => Queued::render(&m),
                });
            }
        }
        let mut entries = 0;
        let mut reader = log::Reader::new(&log_dir, log_from.max(rec.first_seq));
        loop {
            let batch = reader.read(rec.next_seq.saturating_sub(1), 1024)?;
            if batch.is_empty() {
                break;
            }
            for r in batch {
                match serde_json::from_slice::<Entry>(&r.payload) {
                    Ok(e) => {
                        store.apply(&e);
                        entries += 1;
                    }
                    Err(e) => {
                        tracing::error!(seq = r.seq, error = %e, "skipping an unreadable state-log record");
                    }
                }
            }
        }
        store.publish_staged();
        store.log.sync()?;
        Ok((
            store,
            Replayed {
                entries,
                truncated_bytes: rec.truncated_bytes,
            },
        ))
    }

    fn enqueue(&mut self, m: Queued) {
        if self.outbox_ids.insert(m.id.clone()) {
            self.outbox_bytes += m.bytes();
            self.outbox.push_back(m);
        }
    }

    /// Stages `m`, rendered, unless it is queued already.
    fn stage(&mut self, m: &Message) {
        if !self.outbox_ids.contains(&m.id) && !self.staged.iter().any(|s| s.id == m.id) {
            self.staged.push(Queued::render(m));
        }
    }

    fn apply(&mut self, e: &Entry) {
        match e {
            Entry::Processed {
                checkpoint,
                group,
                message,
                ..
            } => {
                self.checkpoint = self.checkpoint.max(*checkpoint);
                if let Some(g) = group {
                    self.groups.insert(g.group_key.clone(), g.clone());
                }
                if let Some(m) = message {
                    self.stage(m);
                }
            }
            Entry::Outgoing { message: m } => self.stage(m),
            Entry::Delivered { id, .. } | Entry::Dropped { id, .. } => {
                self.staged.retain(|m| m.id != *id);
                self.forget(id);
            }
        }
    }

    /// Removes a message from the outbox in memory only.
    pub fn forget(&mut self, id: &str) {
        if self.outbox_ids.remove(id) {
            if self.outbox.front().is_some_and(|m| m.id == id) {
                if let Some(m) = self.outbox.pop_front() {
                    self.outbox_bytes -= m.bytes();
                }
            } else {
                let mut freed = 0;
                self.outbox.retain(|m| {
                    let keep = m.id != id;
                    if !keep {
                        freed += m.bytes();
                    }
                    keep
                });
                self.outbox_bytes -= freed;
            }
        }
    }

    fn publish_staged(&mut self) {
        for m in std::mem::take(&mut self.staged) {
            self.enqueue(m);
        }
    }

    /// Appends `entry` (write(2), not yet synced) and applies it. On error nothing is applied.
    pub fn append(&mut self, entry: &Entry) -> Result<(), FsError> {
        let bytes = serde_json::to_vec(entry).expect("state entries always serialize");
        match self.log.write([bytes.as_slice()]) {
            Ok(_) => {
                self.last_error = None;
                if matches!(entry, Entry::Processed { .. }) {
                    let n = (log::HEADER_LEN + bytes.len()) as u64;
                    self.entry_bytes = if self.entry_bytes == 0 {
                        n
                    } else {
                        (self.entry_bytes * 15 + n) / 16
                    };
                }
                self.apply(entry);
                Ok(())
            }
            Err(e) => {
                self.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Makes everything appended durable and hands the staged messages to delivery; returns
    /// how many messages became deliverable.
    pub fn sync(&mut self) -> Result<usize, FsError> {
        if let Err(e) = self.log.sync() {
            self.last_error = Some(e.to_string());
            return Err(e);
        }
        let staged = std::mem::take(&mut self.staged);
        let n = staged.len();
        for m in staged {
            self.enqueue(m);
        }
        Ok(n)
    }

    pub fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    pub fn group(&self, key: &str) -> Option<&GroupState> {
        self.groups.get(key)
    }

    /// Groups marked for advice again ([`GroupState::retry`]).
    pub fn retry_groups(&self) -> Vec<String> {
        self.groups
            .values()
            .filter(|g| g.retry.is_some())
            .map(|g| g.group_key.clone())
            .collect()
    }

    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    /// The next message to deliver.
    pub fn front(&self) -> Option<&Queued> {
        self.outbox.front()
    }

    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// What the outbox holds in memory, in bytes ([`Queued::bytes`]).
    pub fn outbox_bytes(&self) -> usize {
        self.outbox_bytes
    }

    /// Reception time of the oldest undelivered message.
    pub fn oldest(&self) -> Option<DateTime<Utc>> {
        self.outbox.front().map(|m| m.created_at)
    }

    /// Records a delivery (write(2) only: it survives SIGKILL; the next sync covers power loss).
    pub fn delivered(&mut self, id: &str) -> Result<(), FsError> {
        self.append(&Entry::Delivered {
            id: id.to_owned(),
            at: Utc::now(),
        })
    }

    /// Gives up on a message: appends it to `dead-letter.jsonl` and records the drop.
    /// The record keeps the message as it was rendered (what Slack refused).
    pub fn dropped(&mut self, m: &Queued, reason: &str) -> Result<(), FsError> {
        let slack = serde_json::from_str::<serde_json::Value>(&m.slack)
            .unwrap_or_else(|_| serde_json::Value::String(m.slack.clone()));
        let line = serde_json::json!({
            "at": Utc::now(), "reason": reason,
            "message": {"id": m.id, "kind": m.kind, "created_at": m.created_at, "slack": slack, "text": m.text},
        });
        let mut bytes = serde_json::to_vec(&line).expect("always serializes");
        bytes.push(b'\n');
        let path = &self.dead_letter_path;
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut f| f.write_all(&bytes))
            .map_err(|e| FsError::new("cannot append to", path, e))?;
        self.append(&Entry::Dropped {
            id: m.id.clone(),
            at: Utc::now(),
            reason: reason.to_owned(),
        })
    }

    /// What processing one notification writes to the state log, on average (0: none yet).
    pub fn entry_bytes(&self) -> u64 {
        self.entry_bytes
    }

    /// Bytes in the state log's current segment.
    pub fn log_bytes(&self) -> u64 {
        self.log.segment_len()
    }

    /// Writes a snapshot and drops the state-log segments it covers, if the log has grown past
    /// `max_bytes`. Forgets groups that are long over.
    pub fn compact_if_over(&mut self, max_bytes: u64) -> Result<bool, FsError> {
        // At least twice the last snapshot, so that snapshot writing stays amortized when there
        // are many groups.
        if self.log.segment_len() < max_bytes.max(2 * self.last_snapshot_bytes) {
            return Ok(false);
        }
        self.compact()?;
        Ok(true)
    }

    /// Compaction when the state volume is short of space: as soon as the log holds half a
    /// snapshot (at least 64 KiB), whatever [`COMPACT_AFTER_BYTES`] says, so that processed
    /// entries give their space back before new notifications are refused for lack of it.
    pub fn compact_under_pressure(&mut self) -> Result<bool, FsError> {
        if self.log.segment_len() < (64 * 1024).max(self.last_snapshot_bytes / 2) {
            return Ok(false);
        }
        self.compact()?;
        Ok(true)
    }

    /// See [`Store::compact_if_over`].
    pub fn compact(&mut self) -> Result<(), FsError> {
        let now = Utc::now();
        self.groups.retain(|_, g| {
            let horizon = if g.status == Status::Resolved {
                RESOLVED_RETENTION
            } else {
                GROUP_RETENTION
            };
            now - g.last_seen < horizon
        });
        self.log.rotate()?;
        self.publish_staged();
        // Serialized from references: a snapshot of many groups must not double them in memory.
        #[derive(Serialize)]
        struct SnapshotRef<'a> {
            log_from: u64,
            checkpoint: u64,
            groups: Vec<&'a GroupState>,
            outbox: &'a VecDeque<Queued>,
        }
        let snapshot = SnapshotRef {
            log_from: self.log.next_seq(),
            checkpoint: self.checkpoint,
            groups: self.groups.values().collect(),
            outbox: &self.outbox,
        };
        self.last_snapshot_bytes = write_json_atomic(&self.dir.join("snapshot.json"), &snapshot)?;
        log::compact(self.log.dir(), self.log.next_seq())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageKind;

    fn message(id: &str, group: &str) -> Message {
        let body = format!(
            r#"{{"version":"4","groupKey":"{group}","status":"firing","alerts":[{{"status":"firing","startsAt":"2026-11-28T12:00:00Z","endsAt":"0001-01-01T00:00:00Z","fingerprint":"f"}}]}}"#
        );
        Message {
            id: id.into(),
            kind: MessageKind::Firing,
            created_at: Utc::now(),
            notification: aiops_core::alertmanager::Notification::parse(body.as_bytes()).unwrap(),
            advice: None,
            original: None,
            new_alerts: 1,
            dashboard_url: None,
            action: None,
            truncation: None,
            changes: Default::default(),
        }
    }

    fn group(key: &str, seq: u64) -> GroupState {
        GroupState {
            group_key: key.into(),
            status: Status::Firing,
            last_key: "k".into(),
            last_seq: seq,
            first_seen: Utc::now(),
            last_seen: Utc::now(),
            fingerprints: ["f".to_owned()].into(),
            original: None,
            last_message_at: None,
            retry: None,
            announced: Default::default(),
        }
    }

    #[test]
    fn snapshot_and_log_replay_to_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        for i in 1..=5u64 {
            let g = format!("g{i}");
            store
                .append(&Entry::Processed {
                    seq: i,
                    checkpoint: i,
                    group: Some(group(&g, i)),
                    message: Some(message(&format!("m-{i}"), &g)),
                })
                .unwrap();
        }
        assert_eq!(store.sync().unwrap(), 5);
        store.delivered("m-1").unwrap();
        store.compact().unwrap();
        // After the snapshot: more entries in the fresh log segment.
        store.delivered("m-2").unwrap();
        store
            .append(&Entry::Processed {
                seq: 6,
                checkpoint: 6,
                group: Some(group("g6", 6)),
                message: Some(message("m-6", "g6")),
            })
            .unwrap();
        store.sync().unwrap();
        drop(store);
        let (store, _) = Store::open(dir.path()).unwrap();
        assert_eq!(store.checkpoint(), 6);
        assert_eq!(store.groups(), 6);
        assert_eq!(store.group("g3").unwrap().last_seq, 3);
        let ids: Vec<&str> = store.outbox.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["m-3", "m-4", "m-5", "m-6"]);
        let bytes: usize = store.outbox.iter().map(Queued::bytes).sum();
        assert_eq!(store.outbox_bytes(), bytes);
        assert_eq!(
            log::list_segments(&dir.path().join("log")).unwrap().len(),
            1
        );
    }
}
