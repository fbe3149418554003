//! The Alertmanager webhook receiver: it loses nothing it acknowledged, says nothing twice that
//! it can avoid, and tells a human in Slack (or in its log) what fired, why, and what to approve.
//!
//! The path of one notification, and the module for each step:
//!
//! 1. [`server`]: `POST /` checks the bearer token, content type, size, time and payload
//!    (version 4), then hands the body to the [`journal`].
//! 2. [`journal`]: one writer thread appends everything queued with one write(2) and one
//!    fdatasync (group commit) on the segmented, checksummed [`log`]; only then is the request
//!    answered 200. If the disk refuses, 503 + Retry-After.
//! 3. [`process`]: a processor thread reads durable records in order, applies the rule book
//!    ([`process::decide`]: dedup, update, reminder, resolved follow-up; an update names the
//!    alerts that joined and left), completes a truncated notification from Alertmanager's API
//!    ([`process::merge_truncated`]), asks the [`advisor`]
//!    about new firing groups off the async runtime, and commits each record as ONE entry of
//!    the [`state`] log (group state + checkpoint + outbox message, atomically).
//! 4. [`delivery`]: one worker sends the outbox FIFO to Slack (rendered by [`slack`], pure) or to
//!    the log, with backoff, Retry-After and a dead-letter file.
//!
//! [`run`] is the entry point (mini-redis style: a bound listener, the configuration, an advisor
//! and a shutdown future); `main.rs` only parses flags and sets up logging.
//!
//! State lives in `<state_dir>/webhook/`: `journal/` (received notifications), `state/`
//! (state log, snapshot, `dead-letter.jsonl`) and a `lock` file held while running.

pub mod advisor;
pub mod delivery;
pub mod disk;
pub mod gate;
pub mod journal;
pub mod log;
pub mod message;
pub mod metrics;
pub mod process;
pub mod server;
pub mod slack;
pub mod state;
pub mod units;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use aiops_core::Config;
use aiops_core::fsutil::{self, FsError};
use aiops_core::secret::{self, SecretError};
use serde::Serialize;
use tokio::net::TcpListener;

pub use advisor::{Advice, Advisor, NoAdvisor, Proposal, ProposedAction, TestAdvisor};
pub use message::{Message, MessageKind};
pub use metrics::Metrics;

/// Why the receiver could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(
        "another aiops-webhook already uses the state directory {0} (it holds {0}/lock); stop it or choose another --state-dir"
    )]
    Locked(PathBuf),
    #[error("cannot start a worker thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot read the listener's address: {0}")]
    Listener(std::io::Error),
}

/// Knobs that are not part of the configuration file.
#[derive(Debug, Clone)]
pub struct Options {
    /// The registry `/metrics` serves. Other components of the process register their own
    /// metrics on a clone of it before (or after) passing it here.
    pub registry: prometheus::Registry,
    /// Send a "still firing (reminder)" message when an unchanged firing group is re-sent at
    /// least this long after the group's last message (Alertmanager's `repeat_interval`); re-sends
    /// sooner than that are retries and produce nothing. `None` suppresses every repeat.
    /// Default: 30 minutes (half of the shipped `repeat_interval: 1h`).
    pub reminder_interval: Option<Duration>,
    /// First retry delay of a failed delivery (doubles up to `slack.max_backoff_secs`).
    pub initial_backoff: Duration,
    /// Advice computations run at once.
    pub max_advice_inflight: usize,
    /// The human gate this process hosts: its control socket is served (at
    /// `webhook.control_socket`) and its transitions are posted as messages.
    pub gate: Option<Arc<aiops_actions::Gate>>,
    /// How the watched units' `aiops_unit_*` gauges are read ([`units`]).
    pub units: UnitPolling,
}

/// How often, and with which programs, the watched units' state is read for `/metrics`.
#[derive(Debug, Clone)]
pub struct UnitPolling {
    /// Time between two reads of every watched unit.
    pub interval: Duration,
    /// `systemctl` (from `$PATH` by default; tests point it at recorded output), and the bound
    /// of each read (`limits.timeout`, `limits.max_show_bytes`).
    pub reader: aiops_diagnosis::unit_state::UnitStateReader,
}

impl Default for UnitPolling {
    fn default() -> Self {
        let mut reader = aiops_diagnosis::unit_state::UnitStateReader::default();
        // A read that hangs must not hold up the others for long: each is bounded to 2 s,
        // well under the 5 s between two rounds and the rules' 15 s scrape interval.
        reader.limits.timeout = Duration::from_secs(2);
        Self {
            interval: Duration::from_secs(5),
            reader,
        }
    }
}

/// The units whose state the receiver exports: every watched service's unit
/// ([`Config::watched`]), when restarts go through systemd (`remediation.executor =
/// "systemd"`); none for the demo supervisor, which is not systemd.
pub fn polled_units(config: &Config) -> Vec<aiops_core::unit::UnitName> {
    if config.remediation.executor != aiops_core::config::ExecutorKind::Systemd {
        return Vec::new();
    }
    let mut units: Vec<aiops_core::unit::UnitName> = config
        .watched()
        .values()
        .filter_map(|w| w.unit.as_deref())
        .filter_map(|u| match aiops_core::unit::UnitName::parse(u) {
            Ok(u) => Some(u),
            Err(e) => {
                tracing::warn!(unit = u, error = %e, "not polling an invalid watched unit");
                None
            }
        })
        .collect();
    units.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    units.dedup_by(|a, b| a.as_str() == b.as_str());
    units
}

impl Default for Options {
    fn default() -> Self {
        Self {
            registry: prometheus::Registry::new(),
            reminder_interval: Some(Duration::from_secs(30 * 60)),
            initial_backoff: Duration::from_secs(1),
            max_advice_inflight: 4,
            gate: None,
            units: UnitPolling::default(),
        }
    }
}

/// Health of the moving parts, for `/healthz`, the watchdog and the status line.
#[derive(Debug)]
pub struct Health {
    pub journal: Arc<journal::Shared>,
    pub processor: Arc<process::ProcessorStatus>,
    pub delivery: Arc<delivery::DeliveryStatus>,
    pub state: Arc<state::Shared>,
    pub headroom: disk::Headroom,
}

/// A heartbeat older than this means a thread is stuck.
const STUCK_AFTER_MS: u64 = 15_000;

/// What `/healthz` answers.
#[derive(Debug, Serialize)]
pub struct HealthReport {
    pub healthy: bool,
    pub status: &'static str,
    pub problems: Vec<String>,
    pub journal_durable_seq: u64,
    pub processed_checkpoint: u64,
    pub outbox_depth: usize,
    /// What the outbox holds in memory (rendered messages), bounded by `webhook.queue_mib`.
    pub outbox_bytes: usize,
    pub outbox_oldest_age_seconds: f64,
    pub last_delivery_age_seconds: Option<f64>,
    pub last_delivery_error: Option<String>,
    /// Bytes free on the state volume (`null` if it cannot be measured).
    pub state_free_bytes: Option<u64>,
    pub state_reserve_bytes: u64,
}

impl Health {
    pub fn report(&self) -> HealthReport {
        let now = journal::now_ms();
        let mut problems = Vec::new();
        if !self.journal.healthy.load(Ordering::Acquire) {
            let e = self
                .journal
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_default();
            problems.push(format!("journal not writable: {e}"));
        }
        if now.saturating_sub(self.journal.heartbeat_ms.load(Ordering::Acquire)) > STUCK_AFTER_MS {
            problems.push("journal writer stuck".into());
        }
        if now.saturating_sub(self.processor.heartbeat_ms.load(Ordering::Acquire)) > STUCK_AFTER_MS
            && !self.processor.stop.load(Ordering::Acquire)
        {
            problems.push("processor stuck".into());
        }
        if let Some(e) = self.processor.error() {
            problems.push(format!("processor: {e}"));
        }
        if let Err(e) = self.headroom.check(self.journal.promised_bytes()) {
            problems.push(format!("{e}: new notifications are refused"));
        }
        if self.processor.disk_low.load(Ordering::Acquire) {
            problems.push(
                "processing waits: less than half the state volume's reserve is free".to_owned(),
            );
        }
        let space = self.headroom.space().ok();
        let (checkpoint, depth, outbox_bytes, oldest) = {
            let s = self.state.lock();
            (s.checkpoint(), s.outbox_len(), s.outbox_bytes(), s.oldest())
        };
        let last = self.delivery.last_delivery_ms.load(Ordering::Acquire);
        HealthReport {
            healthy: problems.is_empty(),
            status: if problems.is_empty() {
                "ok"
            } else {
                "unhealthy"
            },
            problems,
            journal_durable_seq: self.journal.durable_seq.load(Ordering::Acquire),
            processed_checkpoint: checkpoint,
            outbox_depth: depth,
            outbox_bytes,
            outbox_oldest_age_seconds: oldest.map_or(0.0, |t| {
                (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
            }),
            last_delivery_age_seconds: (last > 0).then(|| now.saturating_sub(last) as f64 / 1000.0),
            last_delivery_error: self
                .delivery
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            state_free_bytes: space.map(|s| s.free),
            state_reserve_bytes: self.headroom.reserve(),
        }
    }

    pub fn healthy(&self) -> bool {
        self.report().healthy
    }

    pub(crate) fn update_gauges(&self, m: &Metrics) {
        if let Ok(space) = self.headroom.space() {
            m.state_free
                .set(i64::try_from(space.free).unwrap_or(i64::MAX));
            m.state_size
                .set(i64::try_from(space.size).unwrap_or(i64::MAX));
        }
        m.state_reserve
            .set(i64::try_from(self.headroom.reserve()).unwrap_or(i64::MAX));
        let s = self.state.lock();
        m.outbox_depth.set(s.outbox_len() as i64);
        m.outbox_bytes
            .set(i64::try_from(s.outbox_bytes()).unwrap_or(i64::MAX));
        m.outbox_oldest_age.set(s.oldest().map_or(0.0, |t| {
            (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
        }));
    }

    /// `ok; outbox 0; last delivery 3 s ago`.
    pub fn status_line(&self) -> String {
        let r = self.report();
        let mut s = String::from(r.status);
        if !r.problems.is_empty() {
            s.push_str(&format!(" ({})", r.problems.join("; ")));
        }
        s.push_str(&format!("; outbox {}", r.outbox_depth));
        match r.last_delivery_age_seconds {
            Some(age) => s.push_str(&format!("; last delivery {age:.0} s ago")),
            None => s.push_str("; no delivery yet"),
        }
        s
    }
}

/// `webhook.queue_mib` in bytes.
fn queue_bytes(config: &Config) -> usize {
    usize::try_from(config.webhook.queue_mib.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
}

/// Serves until `shutdown` resolves, with default [`Options`].
pub async fn run(
    listener: TcpListener,
    config: Config,
    advisor: Arc<dyn Advisor>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    run_with(listener, config, advisor, Options::default(), shutdown).await
}

/// Serves until `shutdown` resolves: recovers the journal and state, starts the workers,
/// reports readiness to systemd, and on shutdown stops accepting, finishes in-flight requests
/// and the current processing step, syncs, and returns within `webhook.shutdown_grace_secs`.
pub async fn run_with(
    listener: TcpListener,
    config: Config,
    advisor: Arc<dyn Advisor>,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let addr: SocketAddr = listener.local_addr().map_err(Error::Listener)?;
    let base = config.state_dir.join("webhook");
    fsutil::ensure_dir(&base)?;
    let _lock = fsutil::try_lock_exclusive(&base.join("lock"))?
        .ok_or_else(|| Error::Locked(base.clone()))?;

    let token = match secret::load(secret::WEBHOOK_TOKEN, config.webhook.token_file.as_deref())? {
        Some((token, source)) => {
            tracing::info!(?source, "bearer token required on POST /");
            Some(token)
        }
        None => {
            tracing::warn!(
                "NO BEARER TOKEN CONFIGURED: anyone who can reach {addr} can post notifications. Set webhook.token_file or the webhook-token credential."
            );
            None
        }
    };
    let sink = match secret::load(
        secret::SLACK_WEBHOOK_URL,
        config.slack.webhook_url_file.as_deref(),
    )? {
        Some((url, source)) => {
            tracing::info!(?source, "delivering messages to Slack");
            delivery::Sink::slack(url, Duration::from_secs(config.slack.timeout_secs.max(1)))
        }
        None => {
            tracing::info!("no Slack URL configured: messages are written to this log");
            delivery::Sink::Log
        }
    };

    let metrics = Arc::new(Metrics::new(options.registry.clone()));
    let headroom = disk::Headroom::new(
        &base,
        config.webhook.state_reserve_mib.saturating_mul(1024 * 1024),
    );
    let (store, replayed) = state::Store::open(&base.join("state"))?;
    tracing::info!(
        entries = replayed.entries,
        checkpoint = store.checkpoint(),
        groups = store.groups(),
        outbox = store.outbox_len(),
        "state recovered"
    );
    let state = Arc::new(state::Shared::new(store));

    let (events_tx, events_rx) = mpsc::channel();
    let pstatus = Arc::new(process::ProcessorStatus::default());
    pstatus
        .heartbeat_ms
        .store(journal::now_ms(), Ordering::Release);
    let opened = {
        let tx = events_tx.clone();
        let pstatus = pstatus.clone();
        let start = state.lock().checkpoint() + 1;
        journal::open(
            &base.join("journal"),
            start,
            headroom.clone(),
            metrics.clone(),
            move |_| {
                if !pstatus.wake_queued.swap(true, Ordering::AcqRel) {
                    let _ = tx.send(process::Event::Durable);
                }
            },
        )?
    };
    tracing::info!(
        durable_seq = opened.journal.durable_seq(),
        first_seq = opened.first_seq,
        truncated_bytes = opened.truncated_bytes,
        "journal recovered"
    );
    let journal = opened.journal.clone();

    let grace = Duration::from_secs(config.webhook.shutdown_grace_secs.max(1));
    let processor = process::Processor::new(
        journal.dir().to_owned(),
        journal.shared.clone(),
        state.clone(),
        advisor,
        tokio::runtime::Handle::current(),
        metrics.clone(),
        process::Settings {
            reminder: options.reminder_interval,
            dashboard_url: config.webhook.dashboard_url.clone(),
            max_inflight: options.max_advice_inflight,
            headroom: headroom.clone(),
            queue_bytes: queue_bytes(&config),
            alertmanager: Some(aiops_actions::alerts::AlertmanagerClient::new(
                &config.alertmanager.url,
                aiops_actions::alerts::GROUP_TIMEOUT,
            )),
        },
        pstatus.clone(),
        (events_tx.clone(), events_rx),
        opened.first_seq,
    );
    let processor_thread = std::thread::Builder::new()
        .name("processor".into())
        .spawn(move || processor.run(grace / 3))
        .map_err(Error::Thread)?;

    let dstatus = Arc::new(delivery::DeliveryStatus::default());
    let delivery_thread = {
        let state = state.clone();
        let metrics = metrics.clone();
        let dstatus = dstatus.clone();
        let backoff = delivery::Backoff {
            initial: options.initial_backoff,
            max: Duration::from_secs(config.slack.max_backoff_secs.max(1)),
        };
        std::thread::Builder::new()
            .name("delivery".into())
            .spawn(move || delivery::run(&sink, &state, &metrics, backoff, &dstatus))
            .map_err(Error::Thread)?
    };

    let (gate_stop_tx, gate_stop_rx) = tokio::sync::watch::channel(false);
    let gate_tasks = match &options.gate {
        Some(gate) => {
            let forwarder =
                gate::forward_events(gate, state.clone(), config.webhook.dashboard_url.clone())
                    .map_err(Error::Thread)?;
            let socket = config.webhook.control_socket.clone();
            let mut stop = gate_stop_rx.clone();
            let gate = gate.clone();
            let control = tokio::spawn(async move {
                gate.serve_control(&socket, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
            });
            Some((forwarder, control))
        }
        None => None,
    };

    // The watched units' own state, as the `aiops_unit_*` series the generated rules read.
    let units_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let units_thread = {
        let units = polled_units(&config);
        if !units.is_empty() {
            tracing::info!(units = ?units.iter().map(|u| u.as_str()).collect::<Vec<_>>(), interval = ?options.units.interval, "exporting the watched units' state as aiops_unit_*");
        }
        let unit_metrics = units::UnitMetrics::register(&options.registry);
        units::spawn_poller(
            unit_metrics,
            options.units.reader.clone(),
            units,
            options.units.interval,
            units_stop.clone(),
        )
        .map_err(Error::Thread)?
    };

    let health = Arc::new(Health {
        journal: journal.shared.clone(),
        processor: pstatus.clone(),
        delivery: dstatus.clone(),
        state: state.clone(),
        headroom,
    });
    let app = Arc::new(server::App {
        journal,
        token,
        metrics: metrics.clone(),
        max_body_bytes: config.webhook.max_body_bytes,
        body_timeout: Duration::from_secs(config.webhook.body_timeout_secs.max(1)),
        health: health.clone(),
        in_flight: server::InFlight::new(queue_bytes(&config)),
    });

    tracing::info!("listening on http://{addr}");
    aiops_core::systemd::ready(&format!("listening on {addr}; {}", health.status_line()));
    let watchdog = {
        let health = health.clone();
        aiops_core::systemd::spawn_watchdog(move || {
            let r = health.report();
            // A journal that refuses writes is reported, not restarted: a restart cannot fix a
            // full disk. Stuck threads are what the watchdog is for.
            !r.problems.iter().any(|p| p.ends_with("stuck"))
        })
    };
    let status_task = {
        let health = health.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                aiops_core::systemd::status(&health.status_line());
            }
        })
    };

    let limits = aiops_core::http::Limits {
        header_timeout: Duration::from_secs(config.webhook.header_timeout_secs.max(1)),
        shutdown_grace: grace / 2,
        ..aiops_core::http::Limits::default()
    };
    let stop_started = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let shutdown = {
        let stop_started = stop_started.clone();
        async move {
            shutdown.await;
            *stop_started.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            tracing::info!("shutting down: no new connections; finishing in-flight requests");
            aiops_core::systemd::stopping("shutting down");
        }
    };
    let handler = {
        let app = app.clone();
        move |req| server::handle(app.clone(), req)
    };
    let drained = aiops_core::http::serve(listener, limits, handler, shutdown).await;
    let started = stop_started
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or_else(Instant::now);
    let deadline = started + grace.saturating_sub(Duration::from_millis(200));
    units_stop.store(true, Ordering::Release);

    // The control socket stops taking approvals; one already running finishes its step.
    let _ = gate_stop_tx.send(true);
    drop(gate_stop_rx);
    if let Some((_forwarder, control)) = gate_tasks {
        match tokio::time::timeout_at(deadline.into(), control).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "the control socket failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "the control socket task panicked"),
            Err(_) => tracing::warn!("the control socket did not stop within the grace period"),
        }
        // The forwarder thread ends with the gate (when the last handle is dropped); its
        // messages are durable once queued, so it is not waited for.
    }

    // Processing: finish the current step (in-flight advice gets a third of the grace).
    pstatus.stop.store(true, Ordering::Release);
    let _ = events_tx.send(process::Event::Stop);
    dstatus.stop.store(true, Ordering::Release);
    state.changed.notify_all();
    let joined = tokio::task::spawn_blocking(move || {
        let _ = processor_thread.join();
    });
    let _ = tokio::time::timeout_at(deadline.into(), joined).await;
    let joined = tokio::task::spawn_blocking(move || {
        let _ = delivery_thread.join();
    });
    if tokio::time::timeout_at(deadline.into(), joined)
        .await
        .is_err()
    {
        tracing::warn!(
            "a delivery was still in progress at the end of the grace period; it is retried at the next start"
        );
    }
    if let Err(e) = state.lock().sync() {
        tracing::error!(error = %e, "final state sync failed");
    }
    // The units poller stops within its step (100 ms) plus one bounded read.
    if let Some(t) = units_thread {
        let joined = tokio::task::spawn_blocking(move || {
            let _ = t.join();
        });
        if tokio::time::timeout_at(deadline.into(), joined)
            .await
            .is_err()
        {
            tracing::warn!("the units poller did not stop within the grace period");
        }
    }
    status_task.abort();
    if let Some(w) = watchdog {
        w.abort();
    }
    tracing::info!(abandoned = drained.abandoned, "stopped");
    Ok(())
}
