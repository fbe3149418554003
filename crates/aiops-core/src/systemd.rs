//! Best-effort `sd_notify`: readiness, status, watchdog and stopping.
//!
//! Every function here is a no-op outside systemd (no `$NOTIFY_SOCKET`) and never fails the
//! caller: a service that cannot tell systemd it is ready is still a working service, and
//! systemd's own start timeout will say so.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// `READY=1` with a `STATUS=` line. Call once the service actually answers requests.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A `STATUS=` line shown by `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// `STOPPING=1`, sent when a graceful shutdown begins.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`), if any and meant for this process.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Pings the watchdog at half the requested interval for as long as `healthy()` says so.
///
/// The task runs on the caller's runtime, so a hung runtime (or a stopped process) stops the
/// pings and systemd restarts the service; `healthy` adds a service-specific check on top.
/// Returns `None` when no watchdog is configured.
pub fn spawn_watchdog<F>(healthy: F) -> Option<tokio::task::JoinHandle<()>>
where
    F: Fn() -> bool + Send + 'static,
{
    let interval = watchdog_interval()?;
    let period = (interval / 2).max(Duration::from_millis(50));
    tracing::info!(?interval, "systemd watchdog enabled");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if healthy() {
                send(&[NotifyState::Watchdog]);
            } else {
                tracing::warn!("health check failed; withholding the watchdog ping");
            }
        }
    }))
}
