//! Delivering the outbox: one worker thread, FIFO, so messages of a group arrive in order.
//!
//! The head of the outbox is retried until it is delivered or dropped: connection errors,
//! timeouts and 5xx back off exponentially with jitter up to `slack.max_backoff_secs`; a 429
//! waits as long as its `Retry-After` says; any other 4xx (Slack's `invalid_blocks`,
//! `invalid_payload`, ...) is permanent: the message goes to `dead-letter.jsonl` and the worker
//! moves on.
//!
//! Semantics: at least once, with a one-syscall window. After Slack's 200 the worker appends the
//! "delivered" record with a plain write(2) at once; that survives SIGKILL (the page cache
//! belongs to the kernel) and is fsynced shortly after. Only a crash between Slack's answer and
//! that write(2), or a power loss before the fsync, sends a message twice; every message shows
//! its id so a human (or the sink) can spot the duplicate.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aiops_core::secret::Secret;

use crate::message::Message;
use crate::metrics::Metrics;
use crate::slack;
use crate::state;

/// Where messages go.
#[derive(Debug, Clone)]
pub enum Sink {
    /// A Slack incoming webhook (or anything speaking its protocol).
    Slack { url: Secret, agent: ureq::Agent },
    /// No Slack URL configured: one readable INFO event per message.
    Log,
}

impl Sink {
    pub fn slack(url: Secret, timeout: Duration) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .user_agent("aiops-webhook")
            .build()
            .into();
        Sink::Slack { url, agent }
    }

    fn send(&self, m: &Message) -> Outcome {
        match self {
            Sink::Log => {
                // The message itself goes to stdout, readable and uncluttered (`aiops demo`
                // shows the receiver's stdout in its terminal; under systemd it lands in the
                // journal); the log gets one line saying so.
                let text = slack::plain_text(m);
                let mut out = std::io::stdout().lock();
                let written = writeln!(out, "\n{text}\n").and_then(|()| out.flush());
                match written {
                    Ok(()) => tracing::info!(
                        message_id = %m.id,
                        kind = m.kind.as_str(),
                        "message written to stdout (no Slack URL configured)"
                    ),
                    // Nobody reads stdout any more: the log keeps the message instead.
                    Err(e) => tracing::info!(
                        message_id = %m.id,
                        kind = m.kind.as_str(),
                        error = %e,
                        "message (no Slack URL configured; stdout failed)\n{text}"
                    ),
                }
                Outcome::Delivered
            }
            Sink::Slack { url, agent } => {
                let body = slack::slack_payload(m).to_string();
                let result = agent
                    .post(url.expose())
                    .header("content-type", "application/json")
                    .send(body.as_bytes());
                let mut resp = match result {
                    Ok(r) => r,
                    Err(e) => {
                        return Outcome::Retry {
                            after: None,
                            why: format!("cannot reach Slack: {e}"),
                        };
                    }
                };
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let text = resp
                    .body_mut()
                    .with_config()
                    .limit(64 * 1024)
                    .read_to_string()
                    .unwrap_or_default();
                let text = text.trim().chars().take(200).collect::<String>();
                match status {
                    200..=299 => {
                        if text != "ok" {
                            tracing::warn!(message_id = %m.id, status, body = %text, "Slack answered 2xx without \"ok\"; counting it as delivered");
                        }
                        Outcome::Delivered
                    }
                    429 => Outcome::Retry {
                        after: Some(retry_after.unwrap_or(Duration::from_secs(1))),
                        why: format!("Slack rate limit (429): {text}"),
                    },
                    408 | 500..=599 => Outcome::Retry {
                        after: None,
                        why: format!("Slack answered {status}: {text}"),
                    },
                    400..=499 => Outcome::Permanent(format!("Slack answered {status}: {text}")),
                    _ => Outcome::Retry {
                        after: None,
                        why: format!("unexpected answer {status}: {text}"),
                    },
                }
            }
        }
    }
}

/// How one attempt went.
#[derive(Debug)]
enum Outcome {
    Delivered,
    Retry {
        after: Option<Duration>,
        why: String,
    },
    Permanent(String),
}

/// Backoff settings.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait before attempt `attempt + 1`: exponential, capped, with jitter in [50%, 100%].
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max);
        let half = base / 2;
        half + Duration::from_nanos(fastrand::u64(0..=half.as_nanos() as u64))
    }
}

/// Delivery status shared with `/healthz` and the status line.
#[derive(Debug, Default)]
pub struct DeliveryStatus {
    /// Unix ms of the last delivery (0: none yet).
    pub last_delivery_ms: AtomicU64,
    pub stop: AtomicBool,
    pub last_error: std::sync::Mutex<Option<String>>,
}

/// The delivery loop; returns when `status.stop` is set.
pub fn run(
    sink: &Sink,
    state: &Arc<state::Shared>,
    metrics: &Metrics,
    backoff: Backoff,
    status: &DeliveryStatus,
) {
    let mut attempt: u32 = 0;
    loop {
        let m = {
            let mut store = state.lock();
            loop {
                if status.stop.load(Ordering::Acquire) {
                    return;
                }
                if let Some(m) = store.front() {
                    break m.clone();
                }
                store = state
                    .changed
                    .wait_timeout(store, Duration::from_secs(1))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        };
        match sink.send(&m) {
            Outcome::Delivered => {
                // Record the delivery before sending anything else: moving on without the record
                // would send this message again after a restart. While the disk refuses (full,
                // read-only), keep trying; nothing else can be recorded meanwhile either.
                let mut store = state.lock();
                let mut warned = false;
                while let Err(e) = store.delivered(&m.id) {
                    if status.stop.load(Ordering::Acquire) {
                        tracing::error!(message_id = %m.id, error = %e, "delivered, but cannot record it before shutdown; it may be sent again after a restart");
                        store.forget(&m.id);
                        break;
                    }
                    if !warned {
                        tracing::error!(message_id = %m.id, error = %e, "delivered, but cannot record it yet; retrying before anything else is sent");
                        *status.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(format!("cannot record a delivery: {e}"));
                        warned = true;
                    }
                    store = state
                        .changed
                        .wait_timeout(store, Duration::from_millis(500))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                state.dirty.store(true, Ordering::Release);
                drop(store);
                metrics.deliveries.with_label_values(&["delivered"]).inc();
                status
                    .last_delivery_ms
                    .store(crate::journal::now_ms(), Ordering::Release);
                *status.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                attempt = 0;
            }
            Outcome::Retry { after, why } => {
                metrics.deliveries.with_label_values(&["retried"]).inc();
                let wait = after
                    .map(|a| a.clamp(Duration::from_millis(100), Duration::from_secs(3600)))
                    .unwrap_or_else(|| backoff.delay(attempt));
                tracing::warn!(message_id = %m.id, attempt, ?wait, "delivery failed, retrying: {why}");
                *status.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                attempt = attempt.saturating_add(1);
                let store = state.lock();
                let _ = state
                    .changed
                    .wait_timeout_while(store, wait, |_| !status.stop.load(Ordering::Acquire));
            }
            Outcome::Permanent(why) => {
                metrics.deliveries.with_label_values(&["dropped"]).inc();
                tracing::error!(message_id = %m.id, "Slack refused the message for good; it is kept in dead-letter.jsonl: {why}");
                let mut store = state.lock();
                if let Err(e) = store.dropped(&m, &why) {
                    tracing::error!(message_id = %m.id, error = %e, "cannot record the dropped message");
                    store.forget(&m.id);
                }
                state.dirty.store(true, Ordering::Release);
                attempt = 0;
            }
        }
    }
}
