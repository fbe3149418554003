//! The audit log: `<state_dir>/audit.jsonl`, append-only JSON lines in a hash chain.
//!
//! Line `n` (1-based) holds `seq = n`, the previous line's hash in `prev` (64 zeros for the
//! first) and `hash = sha256(prev ‖ canonical body)`, where the canonical body is the line's own
//! JSON with `hash` left out, fields in declaration order, no whitespace. A line must be exactly
//! its canonical serialization, so even an edit that keeps the JSON meaning (reordered keys, an
//! added field) is detected. Each append is fsynced; then `audit.jsonl.head` (replaced atomically)
//! records the last seq and hash, so cutting lines off the end is detected too. The head hash is
//! also logged (journal) at every append, an independent copy of the chain's tip.
//!
//! The chain detects edits by anyone who cannot also rewrite every later line and the head; the
//! state directory is writable only by the executor's account, which is what stops that.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aiops_core::config::ActionKind;
use aiops_core::fsutil::{self, FsError};
use aiops_core::model::UnitSnapshot;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::state::{ActionId, Actor};

/// `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Errors appending to or opening the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(
        "the audit head {path} is unreadable ({message}); run `aiops audit verify` and inspect the log"
    )]
    Head { path: PathBuf, message: String },
}

/// What an audit line records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// Who: a uid and user name, or `aiops-webhook` for the receiver's own events.
    pub actor: Actor,
    /// `proposed`, `updated`, `approved`, `executing`, `verifying`, `succeeded`, `failed`,
    /// `rejected`, `expired`, `obsolete`, `refused`, `breaker_reset`.
    pub event: String,
    pub action_id: Option<ActionId>,
    /// The unit as given (for a refused injection attempt, the raw label, JSON-escaped).
    pub unit: Option<String>,
    pub action: Option<ActionKind>,
    pub evidence_id: Option<String>,
    /// Approval overrode a stale check.
    pub forced: bool,
    pub detail: Option<String>,
    /// On the `executing` entry of a restart: the unit's forensic state just before it was
    /// restarted, a `UnitSnapshot` (aiops_core::model) serialized as JSON, at most
    /// [`MAX_UNIT_STATE_BYTES`]. Kept as a string so that the line's canonical form never
    /// depends on how floats parse back. Absent on older entries and every other event, which
    /// therefore serialize, and verify, exactly as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_state: Option<String>,
    /// Why `unit_state` is missing or shortened (the read failed, the excerpt was cut to fit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_state_note: Option<String>,
    pub prev: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

/// The bound of an entry's `unit_state`, serialized.
pub const MAX_UNIT_STATE_BYTES: usize = 32 * 1024;

impl AuditEntry {
    /// The recorded forensic state, parsed (`None` when absent or unreadable).
    pub fn unit_snapshot(&self) -> Option<UnitSnapshot> {
        serde_json::from_str(self.unit_state.as_deref()?).ok()
    }
}

/// A snapshot as [`AuditEntry::unit_state`] holds it: serialized, within `max` bytes. When it
/// is larger, the journal's error lines are dropped oldest first, then the commands of each
/// fact, until it fits; the note says what was left out. If even that does not fit, nothing is
/// kept but the note.
pub fn bounded_unit_state(snapshot: &UnitSnapshot, max: usize) -> (Option<String>, Option<String>) {
    let mut s = snapshot.clone();
    let mut notes: Vec<String> = Vec::new();
    let fits = |s: &UnitSnapshot| {
        let text = serde_json::to_string(s).expect("a snapshot always serializes");
        (text.len() <= max).then_some(text)
    };
    if let Some(t) = fits(&s) {
        return (Some(t), None);
    }
    let full = serde_json::to_string(snapshot).map_or(0, |t| t.len());
    let mut dropped = 0;
    while let Some(j) = s.journal.as_mut().filter(|j| !j.last_errors.is_empty()) {
        j.last_errors.remove(0);
        dropped += 1;
        if let Some(t) = fits(&s) {
            notes.push(format!(
                "{dropped} of the journal's oldest error lines left out to stay within {max} bytes (the whole snapshot had {full})"
            ));
            return (Some(t), Some(notes.join("; ")));
        }
    }
    if dropped > 0 {
        notes.push(format!("{dropped} journal error lines left out"));
    }
    for f in &mut s.facts {
        f.commands.clear();
    }
    notes.push(format!(
        "the facts' commands left out to stay within {max} bytes (the whole snapshot had {full})"
    ));
    match fits(&s) {
        Some(t) => (Some(t), Some(notes.join("; "))),
        None => (
            None,
            Some(format!(
                "the unit's state ({full} bytes serialized) does not fit in {max} bytes even without its journal lines; not recorded"
            )),
        ),
    }
}

/// The fields of an entry a caller supplies; seq, prev and hash are the log's business.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub event: String,
    pub action_id: Option<ActionId>,
    pub unit: Option<String>,
    pub action: Option<ActionKind>,
    pub evidence_id: Option<String>,
    pub forced: bool,
    pub detail: Option<String>,
    /// See [`AuditEntry::unit_state`].
    pub unit_state: Option<String>,
    pub unit_state_note: Option<String>,
}

impl Record {
    pub fn new(event: &str) -> Self {
        Self {
            event: event.to_owned(),
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
}

/// The audit log of one state directory.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
    head_path: PathBuf,
    lock_path: PathBuf,
}

/// The head file that belongs to a log file.
pub fn head_path_for(log: &Path) -> PathBuf {
    PathBuf::from(format!("{}.head", log.display()))
}

impl AuditLog {
    pub const FILE: &str = "audit.jsonl";

    /// Opens the log in `state_dir`, repairing only what a crash mid-append can leave: a torn
    /// last line that the head never acknowledged, or a head one entry behind a complete line.
    pub fn open(state_dir: &Path) -> Result<Self, AuditError> {
        fsutil::ensure_dir(state_dir)?;
        let log = Self {
            path: state_dir.join(Self::FILE),
            head_path: head_path_for(&state_dir.join(Self::FILE)),
            lock_path: state_dir.join("audit.lock"),
        };
        let _guard = fsutil::lock_exclusive(&log.lock_path)?;
        log.repair()?;
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_head(&self) -> Result<Option<Head>, AuditError> {
        match fs::read(&self.head_path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| AuditError::Head {
                    path: self.head_path.clone(),
                    message: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FsError::new("cannot read", &self.head_path, e).into()),
        }
    }

    fn write_head(&self, head: &Head) -> Result<(), AuditError> {
        let bytes = serde_json::to_vec(head).expect("a head always serializes");
        fsutil::write_atomic(&self.head_path, &bytes)?;
        Ok(())
    }

    fn repair(&self) -> Result<(), AuditError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(FsError::new("cannot read", &self.path, e).into()),
        };
        let head = self.read_head()?;
        let complete = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        let head_seq = head.as_ref().map_or(0, |h| h.seq);
        if !bytes.is_empty() && !bytes.ends_with(b"\n") && head_seq == complete {
            // The last append died before its newline and was never acknowledged in the head.
            let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            tracing::warn!(path = %self.path.display(), "dropping a torn, unacknowledged last audit line");
            let f = OpenOptions::new()
                .write(true)
                .open(&self.path)
                .map_err(|e| FsError::new("cannot open", &self.path, e))?;
            f.set_len(keep as u64)
                .and_then(|()| f.sync_all())
                .map_err(|e| FsError::new("cannot truncate", &self.path, e))?;
            return Ok(());
        }
        if complete == head_seq + 1 {
            // The append was durable but the head update was not: acknowledge it now if the line
            // chains onto the head.
            let last = bytes[..bytes.len() - 1]
                .rsplit(|&b| b == b'\n')
                .next()
                .unwrap_or_default();
            if let Ok(entry) = serde_json::from_slice::<AuditEntry>(last) {
                let prev_ok = head.as_ref().map_or(GENESIS, |h| h.hash.as_str()) == entry.prev;
                if prev_ok && entry.seq == complete && entry.hash == entry_hash(&entry) {
                    self.write_head(&Head {
                        seq: entry.seq,
                        hash: entry.hash,
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Appends one entry (fsynced, head updated) and returns it.
    pub fn append(&self, actor: &Actor, record: Record) -> Result<AuditEntry, AuditError> {
        let _guard = fsutil::lock_exclusive(&self.lock_path)?;
        let head = self.read_head()?.unwrap_or(Head {
            seq: 0,
            hash: GENESIS.to_owned(),
        });
        let mut entry = AuditEntry {
            seq: head.seq + 1,
            at: Utc::now(),
            actor: actor.clone(),
            event: record.event,
            action_id: record.action_id,
            unit: record.unit,
            action: record.action,
            evidence_id: record.evidence_id,
            forced: record.forced,
            detail: record.detail,
            unit_state: record.unit_state,
            unit_state_note: record.unit_state_note,
            prev: head.hash,
            hash: String::new(),
        };
        entry.hash = entry_hash(&entry);
        let mut line = serde_json::to_string(&entry).expect("an audit entry always serializes");
        line.push('\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|e| FsError::new("cannot open", &self.path, e))?;
        f.write_all(line.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| FsError::new("cannot append to", &self.path, e))?;
        if entry.seq == 1 {
            if let Some(dir) = self.path.parent() {
                fsutil::fsync_dir(dir)?;
            }
        }
        self.write_head(&Head {
            seq: entry.seq,
            hash: entry.hash.clone(),
        })?;
        tracing::info!(seq = entry.seq, hash = %entry.hash, event = %entry.event, actor = %entry.actor, "audit");
        Ok(entry)
    }

    /// The last `limit` entries, oldest first (unverified; use [`verify_file`] for that).
    pub fn tail(&self, limit: usize) -> Result<Vec<AuditEntry>, AuditError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(FsError::new("cannot read", &self.path, e).into()),
        };
        let entries: Vec<AuditEntry> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let skip = entries.len().saturating_sub(limit);
        Ok(entries.into_iter().skip(skip).collect())
    }

    /// Verifies this log and its head.
    pub fn verify(&self) -> VerifyReport {
        verify_file(&self.path, Some(&self.head_path))
    }
}

/// `sha256(prev ‖ canonical body)` as lowercase hex.
pub fn entry_hash(entry: &AuditEntry) -> String {
    let mut body = entry.clone();
    body.hash = String::new();
    let canonical = serde_json::to_string(&body).expect("an audit entry always serializes");
    let mut h = Sha256::new();
    h.update(entry.prev.as_bytes());
    h.update(canonical.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The result of [`verify_file`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub file: PathBuf,
    pub ok: bool,
    /// Lines that verified before the first problem (all of them when `ok`).
    pub entries: u64,
    /// The first bad line, 1-based (for a truncated tail: the first missing line).
    pub bad_line: Option<u64>,
    pub message: String,
    /// Whether the head file was checked (truncation is only detectable with it).
    pub head_checked: bool,
}

/// Verifies the chain in `log`; with `head`, also that nothing was cut off the end. A missing
/// head file next to a non-empty log is itself a failure when `head` is given.
pub fn verify_file(log: &Path, head: Option<&Path>) -> VerifyReport {
    let fail = |entries: u64, line: u64, message: String, head_checked: bool| VerifyReport {
        file: log.to_owned(),
        ok: false,
        entries,
        bad_line: Some(line),
        message,
        head_checked,
    };
    let bytes = match fs::read(log) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && head.is_some_and(|h| !h.exists()) => {
            return VerifyReport {
                file: log.to_owned(),
                ok: true,
                entries: 0,
                bad_line: None,
                message: "the audit log is empty (nothing has happened yet)".into(),
                head_checked: true,
            };
        }
        Err(e) => return fail(0, 1, format!("cannot read {}: {e}", log.display()), false),
    };
    let mut prev = GENESIS.to_owned();
    let mut n: u64 = 0;
    let torn = !bytes.is_empty() && !bytes.ends_with(b"\n");
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    if !bytes.is_empty() {
        let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
        let count = lines.len();
        for (i, raw) in lines.into_iter().enumerate() {
            let line_no = i as u64 + 1;
            if torn && i + 1 == count {
                return fail(
                    n,
                    line_no,
                    format!("line {line_no} is incomplete (an interrupted or cut write)"),
                    false,
                );
            }
            let entry: AuditEntry = match serde_json::from_slice(raw) {
                Ok(e) => e,
                Err(e) => {
                    return fail(
                        n,
                        line_no,
                        format!(
                            "line {line_no} is not a valid audit entry ({e}): it was edited or damaged"
                        ),
                        false,
                    );
                }
            };
            let canonical = serde_json::to_string(&entry).expect("serializes");
            if canonical.as_bytes() != raw {
                return fail(
                    n,
                    line_no,
                    format!("line {line_no} was edited (it is not in the form aiops writes)"),
                    false,
                );
            }
            if entry.prev != prev {
                return fail(
                    n,
                    line_no,
                    format!(
                        "line {line_no} does not chain onto line {}: a line was removed, inserted or reordered",
                        line_no - 1
                    ),
                    false,
                );
            }
            if entry.seq != line_no {
                return fail(
                    n,
                    line_no,
                    format!(
                        "line {line_no} carries seq {}: a line was removed, inserted or reordered",
                        entry.seq
                    ),
                    false,
                );
            }
            if entry.hash != entry_hash(&entry) {
                return fail(
                    n,
                    line_no,
                    format!("line {line_no} was edited (its hash does not match its content)"),
                    false,
                );
            }
            prev = entry.hash;
            n = line_no;
        }
    }
    let Some(head_path) = head else {
        return VerifyReport {
            file: log.to_owned(),
            ok: true,
            entries: n,
            bad_line: None,
            message: format!(
                "{n} entries, chain intact (no head file checked: a cut-off tail would not be noticed)"
            ),
            head_checked: false,
        };
    };
    let head: Head = match fs::read(head_path) {
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(h) => h,
            Err(e) => {
                return fail(
                    n,
                    n + 1,
                    format!("the head file {} is unreadable: {e}", head_path.display()),
                    true,
                );
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if n == 0 {
                return VerifyReport {
                    file: log.to_owned(),
                    ok: true,
                    entries: 0,
                    bad_line: None,
                    message: "the audit log is empty (nothing has happened yet)".into(),
                    head_checked: true,
                };
            }
            return fail(
                n,
                n + 1,
                format!(
                    "the head file {} is missing, so a cut-off tail cannot be ruled out",
                    head_path.display()
                ),
                true,
            );
        }
        Err(e) => {
            return fail(
                n,
                n + 1,
                format!("cannot read the head file {}: {e}", head_path.display()),
                true,
            );
        }
    };
    if head.seq > n {
        return fail(
            n,
            n + 1,
            format!(
                "the log ends after line {n} but the head records {} entries: the tail was truncated",
                head.seq
            ),
            true,
        );
    }
    if head.seq == n && head.hash != prev {
        return fail(
            n,
            n.max(1),
            format!("line {n} is not the entry the head records: the tail was replaced"),
            true,
        );
    }
    if head.seq < n {
        // One line past the head is a crash between the append and the head update (repaired
        // at the next start); more is something else writing the log.
        let lag_ok = head.seq + 1 == n;
        if !lag_ok {
            return fail(
                n,
                head.seq + 1,
                format!(
                    "the head records {} entries but the log has {n}: lines after {} were not written by aiops",
                    head.seq, head.seq
                ),
                true,
            );
        }
    }
    VerifyReport {
        file: log.to_owned(),
        ok: true,
        entries: n,
        bad_line: None,
        message: format!("{n} entries, chain intact, head matches"),
        head_checked: true,
    }
}
