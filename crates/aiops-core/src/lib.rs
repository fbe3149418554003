//! What the three aiops programs share.
//!
//! - [`config`]: the one typed configuration file (what the NixOS module's `settings` renders).
//! - [`secret`]: secrets from files and systemd credentials, redacted in logs.
//! - [`http`]: hyper 1.x serving with bounded header and body sizes, timeouts and graceful drain.
//! - [`systemd`]: best-effort `sd_notify` (readiness, watchdog, status).
//! - [`alertmanager`]: Alertmanager's webhook payload (version 4) and API v2 alert types.
//! - [`fsutil`]: atomic durable writes and file locks.
//! - [`model`]: evidence, diagnoses and recommendations, as stored and rendered.
//! - [`unit`](mod@unit): strictly validated systemd unit names.
//! - [`shutdown`], [`telemetry`]: signals and logging set-up for the binaries.

pub mod alertmanager;
pub mod config;
pub mod fsutil;
pub mod http;
pub mod model;
pub mod secret;
pub mod shutdown;
pub mod systemd;
pub mod telemetry;
pub mod unit;

pub use config::Config;
