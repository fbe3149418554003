//! The journal of received notifications, written with group commit.
//!
//! Request handlers hand a record and a oneshot to [`Journal::append`]; one writer thread takes
//! everything queued at that moment, appends it with one write(2), fdatasyncs once and then
//! answers every waiter. A handler answers 2xx only after the sync that covers its record, so an
//! acknowledged notification survives SIGKILL and power loss. When the write or the sync fails
//! the whole batch is answered with an error (the handler says 503 + Retry-After), the bytes are
//! cut back, and the journal reports itself unhealthy until a probe write succeeds again.
//! Before writing, the writer measures the state volume ([`crate::disk`]): notifications that
//! would leave less than the reserve free are refused (503 + Retry-After) without being written.
//!
//! Processed data does not stay: a segment is sealed at [`SEGMENT_BYTES`] (1 MiB), or as soon as
//! the processor has handled every record in it and no notification arrived for a second, and
//! the processor deletes sealed segments its durable checkpoint covers.
//!
//! A record's payload is the reception time (ms since the epoch, i64 LE) followed by the body
//! exactly as received.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use tokio::sync::oneshot;

use aiops_core::fsutil::FsError;

use crate::disk::{BelowReserve, Headroom};
use crate::log::{self, Appender};
use crate::metrics::Metrics;

/// A segment is sealed when it reaches this size: processed notifications are reclaimed in
/// steps of this much under load.
pub const SEGMENT_BYTES: u64 = 1024 * 1024;
/// Most records in one group commit (a bound on the batch buffer).
const MAX_BATCH: usize = 4096;

/// Why a notification could not be made durable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    #[error("cannot persist the notification: {0}")]
    Io(String),
    #[error("refusing the notification: {0}")]
    BelowReserve(BelowReserve),
    #[error("the journal is shutting down")]
    Closed,
}

/// A decoded journal record.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    pub received_at: DateTime<Utc>,
    pub body: Vec<u8>,
}

impl Entry {
    /// Decodes a record's payload; `None` for an empty probe record (written to test that the
    /// disk works again) or anything too short to be one of ours.
    pub fn from_record(rec: log::Record) -> Option<Self> {
        if rec.payload.len() < 8 {
            return None;
        }
        let mut head = rec.payload;
        let body = head.split_off(8);
        let ms = i64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        let received_at = Utc.timestamp_millis_opt(ms).single()?;
        Some(Self {
            seq: rec.seq,
            received_at,
            body,
        })
    }
}

/// Encodes a journal payload.
pub fn payload(received_at: DateTime<Utc>, body: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + body.len());
    p.extend_from_slice(&received_at.timestamp_millis().to_le_bytes());
    p.extend_from_slice(body);
    p
}

struct Request {
    payload: Vec<u8>,
    reply: oneshot::Sender<Result<u64, JournalError>>,
}

/// State the writer shares with the rest of the process.
#[derive(Debug)]
pub struct Shared {
    /// Highest sequence number known to be on disk.
    pub durable_seq: AtomicU64,
    pub healthy: AtomicBool,
    pub last_error: Mutex<Option<String>>,
    /// Unix ms of the writer loop's last turn (a stuck fsync stops it).
    pub heartbeat_ms: AtomicU64,
    /// The processor's durable checkpoint (set by the processor): a segment holding nothing
    /// newer is sealed when the journal is idle, so that it can be deleted.
    pub processed_seq: AtomicU64,
    /// Bytes processing one record is expected to write to the state (set by the processor
    /// from what it wrote so far): acknowledged records not processed yet hold this much of
    /// the volume in advance.
    pub record_cost: AtomicU64,
}

impl Shared {
    /// What processing the durable records the processor has not checkpointed yet is expected
    /// to write to the state volume.
    pub fn promised_bytes(&self) -> u64 {
        let backlog = self
            .durable_seq
            .load(Ordering::Acquire)
            .saturating_sub(self.processed_seq.load(Ordering::Acquire));
        backlog.saturating_mul(self.record_cost.load(Ordering::Acquire))
    }
}

/// Handle to the journal writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct Journal {
    tx: mpsc::Sender<Request>,
    pub shared: Arc<Shared>,
    dir: PathBuf,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("len", &self.payload.len())
            .finish()
    }
}

/// What opening the journal found.
#[derive(Debug)]
pub struct Opened {
    pub journal: Journal,
    pub writer: std::thread::JoinHandle<()>,
    /// The first record still in the journal.
    pub first_seq: u64,
    pub truncated_bytes: u64,
}

/// Recovers the journal in `dir` and starts its writer thread. `on_durable` is called from the
/// writer thread with the new durable sequence number after every successful sync.
/// `start_seq` numbers the first record of an empty journal (the processor's checkpoint + 1,
/// so that a journal removed by hand does not reuse numbers the state already counts as done).
pub fn open(
    dir: &Path,
    start_seq: u64,
    headroom: Headroom,
    metrics: Arc<Metrics>,
    on_durable: impl Fn(u64) + Send + 'static,
) -> Result<Opened, FsError> {
    let (appender, rec) = log::recover(dir, start_seq.max(1))?;
    // Whatever recovery kept is on disk now (or in the page cache after SIGKILL; sync it).
    let mut appender = appender;
    appender.sync()?;
    let shared = Arc::new(Shared {
        durable_seq: AtomicU64::new(rec.next_seq - 1),
        healthy: AtomicBool::new(true),
        last_error: Mutex::new(None),
        heartbeat_ms: AtomicU64::new(now_ms()),
        processed_seq: AtomicU64::new(0),
        record_cost: AtomicU64::new(0),
    });
    let (tx, rx) = mpsc::channel::<Request>();
    let writer = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || {
                writer_loop(appender, &rx, &shared, &headroom, &metrics, &on_durable);
            })
            .map_err(|e| FsError::new("cannot start the journal writer for", dir, e))?
    };
    Ok(Opened {
        journal: Journal {
            tx,
            shared,
            dir: dir.to_owned(),
        },
        writer,
        first_seq: rec.first_seq,
        truncated_bytes: rec.truncated_bytes,
    })
}

impl Journal {
    /// Persists `payload` and returns its sequence number once it is durable.
    pub async fn append(&self, payload: Vec<u8>) -> Result<u64, JournalError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { payload, reply })
            .map_err(|_| JournalError::Closed)?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn durable_seq(&self) -> u64 {
        self.shared.durable_seq.load(Ordering::Acquire)
    }

    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    pub fn last_error(&self) -> Option<String> {
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

pub(crate) fn now_ms() -> u64 {
    u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0)
}

fn writer_loop(
    mut app: Appender,
    rx: &mpsc::Receiver<Request>,
    shared: &Shared,
    headroom: &Headroom,
    metrics: &Metrics,
    on_durable: &dyn Fn(u64),
) {
    let mut batch: Vec<Request> = Vec::with_capacity(64);
    loop {
        shared.heartbeat_ms.store(now_ms(), Ordering::Release);
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(first) => batch.push(first),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Idle, and every record of the segment handled: seal it so it can go.
                if shared.healthy.load(Ordering::Acquire)
                    && app.next_seq() > app.segment_first_seq()
                    && shared.processed_seq.load(Ordering::Acquire) + 1 >= app.next_seq()
                    && let Err(e) = app.rotate()
                {
                    tracing::warn!(error = %e, "cannot seal a processed journal segment");
                }
                if !shared.healthy.load(Ordering::Acquire) {
                    // Probe with a real (empty) record so that /healthz recovers without
                    // waiting for traffic, and only once writing works again.
                    let (mark_seq, mark_len) = (app.next_seq(), app.segment_len());
                    match app.write([&[][..]]).and_then(|_| app.sync()) {
                        Ok(()) => {
                            shared
                                .durable_seq
                                .store(app.next_seq() - 1, Ordering::Release);
                            on_durable(app.next_seq() - 1);
                            set_health(shared, None);
                        }
                        Err(e) => {
                            app.rewind(mark_seq, mark_len);
                            set_health(shared, Some(e.to_string()));
                        }
                    }
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        // New notifications may not eat into the reserve (see `crate::disk`), and records
        // acknowledged but not processed yet hold what their processing will write.
        if let Ok(space) = headroom.space() {
            let cost = shared.record_cost.load(Ordering::Acquire);
            let promised = shared.promised_bytes();
            let sizes = batch
                .iter()
                .map(|r| (log::HEADER_LEN + r.payload.len()) as u64 + cost);
            let admitted = Headroom::admissible(
                space.free.saturating_sub(promised),
                headroom.reserve(),
                sizes,
            );
            if admitted < batch.len() {
                let refusal = BelowReserve {
                    free: space.free,
                    reserve: headroom.reserve(),
                    promised,
                };
                tracing::warn!(
                    refused = batch.len() - admitted,
                    "{refusal}; answering 503 so Alertmanager retries"
                );
                for r in batch.drain(admitted..) {
                    let _ = r.reply.send(Err(JournalError::BelowReserve(refusal)));
                }
                if batch.is_empty() {
                    continue;
                }
            }
        }
        let started = Instant::now();
        let (mark_seq, mark_len) = (app.next_seq(), app.segment_len());
        let result = app
            .write(batch.iter().map(|r| r.payload.as_slice()))
            .and_then(|first| app.sync().map(|()| first));
        match result {
            Ok(first) => {
                let last = first + batch.len() as u64 - 1;
                shared.durable_seq.store(last, Ordering::Release);
                if !shared.healthy.load(Ordering::Acquire) {
                    set_health(shared, None);
                }
                metrics
                    .journal_sync_seconds
                    .observe(started.elapsed().as_secs_f64());
                metrics.journal_batch_records.observe(batch.len() as f64);
                on_durable(last);
                for (i, r) in batch.drain(..).enumerate() {
                    let _ = r.reply.send(Ok(first + i as u64));
                }
                if let Err(e) = app.rotate_if_over(SEGMENT_BYTES) {
                    tracing::error!(error = %e, "cannot start a new journal segment");
                }
            }
            Err(e) => {
                app.rewind(mark_seq, mark_len);
                tracing::error!(error = %e, records = batch.len(), "journal write failed; answering 503 so Alertmanager retries");
                let msg = e.to_string();
                set_health(shared, Some(msg.clone()));
                for r in batch.drain(..) {
                    let _ = r.reply.send(Err(JournalError::Io(msg.clone())));
                }
            }
        }
    }
    if let Err(e) = app.sync() {
        tracing::error!(error = %e, "final journal sync failed");
    }
}

fn set_health(shared: &Shared, error: Option<String>) {
    let healthy = error.is_none();
    let was = shared.healthy.swap(healthy, Ordering::AcqRel);
    if healthy && !was {
        tracing::info!("the journal is writable again");
    }
    *shared.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
}
