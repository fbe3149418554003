//! Delivering the outbox: one worker thread, FIFO, so messages of a group arrive in order.
//!
//! The head of the outbox is retried until it is delivered or dropped: connection errors,
//! timeouts and 5xx back off exponentially with jitter up to `slack.max_backoff_secs`; a 429
//! waits as long as its `Retry-After` says (seconds or an HTTP date) and is not a failure: it
//! neither raises nor resets the failure exponent, so a burst of rate limiting does not make the
//! next 5xx wait the cap. Any other 4xx (Slack's `invalid_blocks`, `invalid_payload`, ...) is
//! permanent: the message goes to `dead-letter.jsonl` and the worker moves on.
//!
//! Worst case after an outage: no wait exceeds `slack.max_backoff_secs` (unless Slack's own
//! `Retry-After` asks for longer), so the first attempt after Slack comes back starts within that
//! cap (after the attempt in flight when it came back, at most `slack.timeout_secs`): an outage
//! of D seconds delays the oldest message by at most D + `timeout_secs` + `max_backoff_secs`
//! (D + 40 s with the defaults). Outages up to 80 s therefore stay under the 120 s of the
//! `AiopsOutboxStuck` rule ([`worst_case_wait`]); longer ones fire it, and it resolves once the
//! outbox drains.
//!
//! Semantics: at least once, with a one-syscall window. After Slack's 200 the worker appends the
//! "delivered" record with a plain write(2) at once; that survives SIGKILL (the page cache
//! belongs to the kernel) and is fsynced shortly after. Only a crash between Slack's answer and
//! that write(2), or a power loss before the fsync, sends a message twice; every message shows
//! its id so a human (or the sink) can spot the duplicate.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use aiops_core::secret::Secret;

use crate::message::Queued;
use crate::metrics::Metrics;
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

    fn send(&self, m: &Queued) -> Outcome {
        match self {
            Sink::Log => {
                // The message itself goes to stdout, readable and uncluttered (`aiops demo`
                // shows the receiver's stdout in its terminal; under systemd it lands in the
                // journal); the log gets one line saying so.
                let text = &m.text;
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
                let result = agent
                    .post(url.expose())
                    .header("content-type", "application/json")
                    .send(m.slack.as_bytes());
                let mut resp = match result {
                    Ok(r) => r,
                    Err(e) => return Outcome::Failed(format!("cannot reach Slack: {e}")),
                };
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
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
                    429 => Outcome::RateLimited {
                        after: retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
                        why: format!("Slack rate limit (429): {text}"),
                    },
                    408 | 500..=599 => Outcome::Failed(format!("Slack answered {status}: {text}")),
                    400..=499 => Outcome::Permanent(format!("Slack answered {status}: {text}")),
                    _ => Outcome::Failed(format!("unexpected answer {status}: {text}")),
                }
            }
        }
    }
}

/// How one attempt went.
#[derive(Debug)]
enum Outcome {
    Delivered,
    /// Slack is up and asks to slow down (429): wait as long as it says; not a failure.
    RateLimited {
        after: Duration,
        why: String,
    },
    /// Slack could not be reached, timed out or failed (5xx, 408): back off.
    Failed(String),
    Permanent(String),
}

/// A 429 without a usable `Retry-After` waits this long.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// A `Retry-After` is honoured within these bounds (a date in the past retries soon).
const MIN_RETRY_AFTER: Duration = Duration::from_millis(100);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The wait a `Retry-After` header asks for at `now`: delay-seconds or an HTTP date (RFC 9110
/// section 10.2.3); `None` when it is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER))
}

/// Backoff settings.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait after `failures` consecutive failures: exponential, capped, with jitter in
    /// [50%, 100%] of [`Backoff::ceiling`].
    pub fn delay(&self, failures: u32) -> Duration {
        let base = self.ceiling(failures);
        let half = base / 2;
        half + Duration::from_nanos(fastrand::u64(0..=half.as_nanos() as u64))
    }

    /// The longest [`Backoff::delay`] can be after `failures` consecutive failures.
    pub fn ceiling(&self, failures: u32) -> Duration {
        self.initial
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
            .min(self.max)
    }
}

/// The longest the oldest message can wait, from its first attempt to the start of the attempt
/// that delivers it, when Slack fails for `outage` and then answers: every failure waits its
/// [`Backoff::ceiling`], each attempt during the outage takes `attempt` (a timeout), and the
/// first attempt that starts after the outage succeeds. At most `outage + attempt +
/// backoff.max`. Rate limiting during the outage does not lengthen this (a 429 does not raise
/// the exponent) unless Slack asks for a longer `Retry-After` than the cap.
pub fn worst_case_wait(backoff: Backoff, attempt: Duration, outage: Duration) -> Duration {
    let mut t = Duration::ZERO;
    let mut failures = 0;
    // Bounded: each round advances by at least `initial` (> 0), and the cap is reached quickly.
    while t < outage && failures < 100_000 {
        t += attempt;
        failures += 1;
        t += backoff.ceiling(failures).max(Duration::from_millis(1));
    }
    t
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
    // Consecutive failed attempts at the head of the outbox (429s do not count).
    let mut failures: u32 = 0;
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
                failures = 0;
            }
            Outcome::RateLimited { after, why } => {
                metrics.deliveries.with_label_values(&["retried"]).inc();
                tracing::warn!(message_id = %m.id, wait = ?after, "rate limited, retrying as Slack asks: {why}");
                *status.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                pause(state, status, after);
            }
            Outcome::Failed(why) => {
                metrics.deliveries.with_label_values(&["retried"]).inc();
                failures = failures.saturating_add(1);
                let wait = backoff.delay(failures);
                tracing::warn!(message_id = %m.id, failures, ?wait, "delivery failed, retrying: {why}");
                *status.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                pause(state, status, wait);
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
                failures = 0;
            }
        }
    }
}

/// Waits `wait` before the next attempt, or less if the worker is told to stop.
fn pause(state: &state::Shared, status: &DeliveryStatus, wait: Duration) {
    let store = state.lock();
    let _ = state
        .changed
        .wait_timeout_while(store, wait, |_| !status.stop.load(Ordering::Acquire));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        // 784111777 is Sun, 06 Nov 1994 08:49:37 GMT (RFC 9110's example).
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        // The obsolete forms a recipient must accept.
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:50:07 1994", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(MIN_RETRY_AFTER),
            "a date in the past retries soon"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("99999999", now), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn the_first_failure_waits_the_initial_delay_and_later_ones_double_up_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        };
        let ceilings: Vec<u64> = (1..=7).map(|f| b.ceiling(f).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 30, 30]);
        for f in 1..=7 {
            let d = b.delay(f);
            assert!(d <= b.ceiling(f) && d >= b.ceiling(f) / 2, "{f}: {d:?}");
        }
    }
}
