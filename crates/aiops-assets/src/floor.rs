//! The detection floor and the alert thresholds, as the files in `prometheus/` set them.
//!
//! The floor is the time from a fault to Alertmanager's first notification when the signal
//! crosses its threshold at once: the next scrape sees the fault (≤ [`SCRAPE_INTERVAL`]), the next
//! rule evaluation sees that sample (≤ [`EVALUATION_INTERVAL`]), the alert stays pending for
//! [`ALERT_FOR`], then Alertmanager waits [`GROUP_WAIT`] before notifying a new group.
//! Signals measured over a window ([`RATE_WINDOW`], [`SLOPE_WINDOW`]) may need longer to cross
//! (see `prometheus/rules.yml` and `docs/RUNBOOK.md`). The crate's tests fail when these constants
//! and the files disagree.

use std::time::Duration;

/// `global.scrape_interval` in `prometheus.yml`.
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(5);
/// `global.evaluation_interval` in `prometheus.yml`.
pub const EVALUATION_INTERVAL: Duration = Duration::from_secs(5);
/// The `for:` of every alert in `rules.yml`.
pub const ALERT_FOR: Duration = Duration::from_secs(10);
/// `route.group_wait` in `alertmanager.yml`.
pub const GROUP_WAIT: Duration = Duration::from_secs(5);
/// `route.group_interval` in `alertmanager.yml`: a changed group (new alert, resolution) is
/// notified at most this often, so a resolved notification can lag the resolution by this much.
pub const GROUP_INTERVAL: Duration = Duration::from_secs(15);
/// `route.repeat_interval` in `alertmanager.yml`.
pub const REPEAT_INTERVAL: Duration = Duration::from_secs(3600);

/// scrape + evaluation + `for` + `group_wait`: 25 s.
pub const DETECTION_FLOOR: Duration = Duration::from_secs(
    SCRAPE_INTERVAL.as_secs()
        + EVALUATION_INTERVAL.as_secs()
        + ALERT_FOR.as_secs()
        + GROUP_WAIT.as_secs(),
);

/// The window of the recording rules' rates and quantiles (`...:rate30s`, `..._30s`): 6 samples
/// at [`SCRAPE_INTERVAL`].
pub const RATE_WINDOW: Duration = Duration::from_secs(30);
/// The window of the memory slope (`...:deriv1m`): a least-squares slope over fewer points would
/// give a one-off jump more weight.
pub const SLOPE_WINDOW: Duration = Duration::from_secs(60);

/// `HighErrorRatio`: share of 5xx responses over [`RATE_WINDOW`], strictly above.
pub const ERROR_RATIO_THRESHOLD: f64 = 0.05;
/// `HighErrorRatio` also needs at least this many requests per second.
pub const ERROR_RATIO_MIN_REQUEST_RATE: f64 = 0.1;
/// `HighLatencyP99`: p99 latency in seconds, strictly above.
pub const LATENCY_P99_THRESHOLD_SECS: f64 = 0.25;
/// `HighCpuUsage`: CPU cores used on average over [`RATE_WINDOW`], strictly above.
pub const CPU_THRESHOLD_CORES: f64 = 0.5;
/// `MemoryGrowth`: resident-memory slope over [`SLOPE_WINDOW`] in bytes per second, strictly above
/// (256 KiB/s).
pub const MEMORY_GROWTH_THRESHOLD_BYTES_PER_SEC: f64 = 262_144.0;
/// `AiopsOutboxStuck`: age in seconds of the oldest undelivered message, strictly above.
pub const OUTBOX_STUCK_THRESHOLD_SECS: f64 = 120.0;

/// `AiopsStateVolumeLow`: free bytes on the state volume, strictly under this many times the
/// receiver's reserve.
pub const STATE_VOLUME_LOW_RESERVES: f64 = 2.0;

/// The alert names of `rules.yml`, each once.
pub const ALERT_NAMES: [&str; 7] = [
    "HighErrorRatio",
    "HighLatencyP99",
    "HighCpuUsage",
    "MemoryGrowth",
    "TargetDown",
    "AiopsOutboxStuck",
    "AiopsStateVolumeLow",
];

/// The recording rules of `rules.yml` (job level; shared by alerts, diagnosis and dashboard).
pub const RECORDING_RULES: [&str; 8] = [
    "job:http_requests:rate30s",
    "job:http_request_errors:rate30s",
    "job:http_request_error_ratio:rate30s",
    "job:http_request_duration_seconds:p50_30s",
    "job:http_request_duration_seconds:p99_30s",
    "job:process_cpu_seconds:rate30s",
    "job:process_resident_memory_bytes:deriv1m",
    "job:demo_cache_hit_ratio:rate30s",
];
