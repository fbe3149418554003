//! The one configuration file every aiops program reads.
//!
//! Its shape is exactly what the NixOS module's `services.aiops.settings` renders (TOML). Every
//! section and field has a default, so an empty file (or none at all) is a working loopback
//! setup. Unknown keys are errors: a typo must not silently fall back to a default.
//!
//! Secrets never live here. The file may name the *path* of a secret (`webhook.token_file`,
//! `slack.webhook_url_file`); systemd credentials in `$CREDENTIALS_DIRECTORY` take precedence (see
//! [`crate::secret`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where programs look for the configuration when neither `--config` nor `$AIOPS_CONFIG` is given.
pub const SYSTEM_CONFIG_PATH: &str = "/etc/aiops/config.toml";

/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "AIOPS_CONFIG";

/// Errors loading the configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the configuration file {path} is not valid: {message}\n  fix the file, or see docs/CONFIGURATION.md for every key"
    )]
    Parse { path: PathBuf, message: String },
    #[error("the configuration file {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Durable state: received notifications, the outbox, pending actions and the audit log.
    pub state_dir: PathBuf,
    pub demo_app: DemoAppConfig,
    pub webhook: WebhookConfig,
    pub slack: SlackConfig,
    pub prometheus: PrometheusConfig,
    pub alertmanager: AlertmanagerConfig,
    pub remediation: RemediationConfig,
    pub diagnosis: DiagnosisConfig,
    /// The services this host watches, by name (`[watch.NAME]`). Empty means the demo app
    /// alone (see [`Config::watched`]).
    pub watch: BTreeMap<String, WatchConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/aiops"),
            demo_app: DemoAppConfig::default(),
            webhook: WebhookConfig::default(),
            slack: SlackConfig::default(),
            prometheus: PrometheusConfig::default(),
            alertmanager: AlertmanagerConfig::default(),
            remediation: RemediationConfig::default(),
            diagnosis: DiagnosisConfig::default(),
            watch: BTreeMap::new(),
        }
    }
}

/// One watched service (`[watch.NAME]`; the NixOS module's `services.aiops.watch.<name>`).
///
/// Everything the loop knows about a service comes from here, never from scraped labels: its
/// alert rules (`aiops rules`) carry this entry's name as `service` and its unit as `unit`, the
/// diagnosis reads the evidence of its profiles for its job, and its actions join the allow-list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// The systemd unit that runs the service (`nginx.service`); without one, the service's
    /// own state is not read and nothing can be done to it.
    pub unit: Option<String>,
    /// The `job` label under which Prometheus scrapes it; without one, no Prometheus evidence.
    pub job: Option<String>,
    /// `host:port` targets the NixOS module adds as a scrape job named `job`. Empty: the host
    /// already scrapes the job (or it has none).
    pub targets: Vec<String>,
    /// Evidence profiles that apply (see docs/PROFILES.md). Empty: detected from the metric
    /// names Prometheus holds for the job.
    pub profiles: Vec<String>,
    /// Actions that may be carried out on `unit` once approved; merged into
    /// `remediation.allowed`.
    pub allowed_actions: Vec<ActionKind>,
    /// Whether `aiops rules` generates the generic alert rules for it. The demo app ships its
    /// own (prometheus/rules.yml), so its entry says false.
    pub alert_rules: bool,
    pub thresholds: WatchThresholds,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            unit: None,
            job: None,
            targets: Vec::new(),
            profiles: Vec::new(),
            allowed_actions: Vec::new(),
            alert_rules: true,
            thresholds: WatchThresholds::default(),
        }
    }
}

/// The limits of a watched service's generated alerts (`[watch.NAME.thresholds]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchThresholds {
    /// `HighErrorRatio` fires above this share of 5xx answers (0 to 1).
    pub error_ratio: f64,
    /// `HighLatencyP99` fires above this 99th-percentile latency, in seconds.
    pub latency_p99_seconds: f64,
    /// `UnitCrashLooping` fires at this many restarts by systemd within 5 minutes.
    pub crash_loop_restarts: u32,
    /// `UnitMemoryNearMax` fires above this share of the unit's `MemoryMax=` (0 to 1).
    pub memory_near_max: f64,
    /// How long a condition must hold before its alert fires, in seconds.
    pub for_secs: u64,
}

impl Default for WatchThresholds {
    fn default() -> Self {
        Self {
            error_ratio: 0.05,
            latency_p99_seconds: 1.0,
            crash_loop_restarts: 3,
            memory_near_max: 0.9,
            for_secs: 30,
        }
    }
}

/// The name of the built-in watched service: the demo app.
pub const DEMO_SERVICE: &str = "aiops-demo-app";

/// The demo app as a watched service (what an empty `[watch]` means).
pub fn demo_watch() -> WatchConfig {
    WatchConfig {
        unit: Some(format!("{DEMO_SERVICE}.service")),
        job: Some(DEMO_SERVICE.to_owned()),
        profiles: vec!["aiops-demo".to_owned()],
        allowed_actions: vec![ActionKind::Restart, ActionKind::ClearCache],
        alert_rules: false,
        ..WatchConfig::default()
    }
}

impl WatchConfig {
    fn validate(&self, name: &str) -> Result<(), String> {
        let at = |field: &str| format!("watch.{name}.{field}");
        if name.is_empty()
            || name.len() > 64
            || !name.as_bytes()[0].is_ascii_alphanumeric()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        {
            return Err(format!(
                "watch.{name:?}: a watched service's name must be 1 to 64 letters, digits, - or _, starting with a letter or digit"
            ));
        }
        if let Some(unit) = &self.unit {
            crate::unit::UnitName::parse(unit).map_err(|e| format!("{}: {e}", at("unit")))?;
        }
        if let Some(job) = &self.job {
            if job.is_empty() || job.len() > 128 || job.chars().any(|c| c.is_control()) {
                return Err(format!(
                    "{} = {job:?}: give the job label Prometheus scrapes the service under (1 to 128 printable characters)",
                    at("job")
                ));
            }
        }
        if !self.targets.is_empty() && self.job.is_none() {
            return Err(format!(
                "{} lists targets but {} is not set: targets are scraped as that job",
                at("targets"),
                at("job")
            ));
        }
        for t in &self.targets {
            let ok = t.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty()
                    && !host.contains(char::is_whitespace)
                    && !host.contains('/')
                    && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ok {
                return Err(format!(
                    "{} has {t:?}, which is not host:port (e.g. \"127.0.0.1:9113\")",
                    at("targets")
                ));
            }
        }
        for p in &self.profiles {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(format!(
                    "{} has {p:?}, which is not a profile name (letters, digits and -)",
                    at("profiles")
                ));
            }
        }
        if !self.allowed_actions.is_empty() && self.unit.is_none() {
            return Err(format!(
                "{} is set but {} is not: actions are carried out on that unit",
                at("allowed_actions"),
                at("unit")
            ));
        }
        let t = &self.thresholds;
        let share = |v: f64| v.is_finite() && v > 0.0 && v <= 1.0;
        if !share(t.error_ratio) {
            return Err(format!(
                "{} = {} is out of range: give a share of answers above 0 and at most 1 (default 0.05)",
                at("thresholds.error_ratio"),
                t.error_ratio
            ));
        }
        if !share(t.memory_near_max) {
            return Err(format!(
                "{} = {} is out of range: give a share of MemoryMax above 0 and at most 1 (default 0.9)",
                at("thresholds.memory_near_max"),
                t.memory_near_max
            ));
        }
        if !(t.latency_p99_seconds.is_finite() && t.latency_p99_seconds > 0.0) {
            return Err(format!(
                "{} = {} is out of range: give seconds above 0 (default 1.0)",
                at("thresholds.latency_p99_seconds"),
                t.latency_p99_seconds
            ));
        }
        if t.crash_loop_restarts == 0 {
            return Err(format!(
                "{} = 0 would fire on every start: give at least 1 (default 3)",
                at("thresholds.crash_loop_restarts")
            ));
        }
        if t.for_secs > 86_400 {
            return Err(format!(
                "{} = {} is more than a day: give seconds from 0 to 86400 (default 30)",
                at("thresholds.for_secs"),
                t.for_secs
            ));
        }
        Ok(())
    }
}

/// The demo web service that the loop watches and heals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoAppConfig {
    /// Listen address; loopback unless deliberately exposed.
    pub listen: SocketAddr,
    /// Entries the in-memory cache holds before it evicts.
    pub cache_capacity: usize,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How long a SIGTERM waits for in-flight requests before closing them.
    pub shutdown_grace_secs: u64,
    /// Longest any injected fault may run, in seconds (faults always end by themselves).
    pub max_fault_secs: u64,
}

impl Default for DemoAppConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            cache_capacity: 10_000,
            max_body_bytes: 64 * 1024,
            shutdown_grace_secs: 10,
            max_fault_secs: 3600,
        }
    }
}

/// The Alertmanager webhook receiver (and the approval executor it hosts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    pub listen: SocketAddr,
    /// Largest notification body accepted, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// A client must send its request headers within this many seconds.
    pub header_timeout_secs: u64,
    /// A client must send its whole body within this many seconds.
    pub body_timeout_secs: u64,
    /// How long a SIGTERM waits for in-flight work.
    pub shutdown_grace_secs: u64,
    /// File holding the bearer token Alertmanager must present. `$CREDENTIALS_DIRECTORY/webhook-token`
    /// wins over it. With neither, the receiver accepts unauthenticated requests and says so at start.
    pub token_file: Option<PathBuf>,
    /// Link to the Grafana dashboard, shown in messages.
    pub dashboard_url: Option<String>,
    /// Unix socket on which `aiops` asks for approvals; the peer's uid is its identity.
    pub control_socket: PathBuf,
    /// Members of this group (and root) may approve and reject.
    pub operators_group: String,
    /// MiB kept free on the state directory's volume for work already acknowledged
    /// (processing, delivery records, snapshots, pending actions): a new notification that
    /// would leave less free gets 503 + Retry-After.
    pub state_reserve_mib: u64,
    /// MiB each in-memory queue of the receiver may hold: notifications being received and
    /// waiting for their fsync, notifications read from the journal and waiting to be
    /// processed, and the outbox of rendered, undelivered messages. At the bound nothing is
    /// dropped: a notification that would not fit gets 503 + Retry-After before it is
    /// acknowledged, and processing pauses while the others wait in the journal, on disk.
    /// The unit's `MemoryMax=` is sized for the default.
    pub queue_mib: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9095)),
            max_body_bytes: 1024 * 1024,
            header_timeout_secs: 5,
            body_timeout_secs: 10,
            shutdown_grace_secs: 10,
            token_file: None,
            dashboard_url: None,
            control_socket: PathBuf::from("/run/aiops/control.sock"),
            operators_group: "aiops-operators".to_owned(),
            state_reserve_mib: 16,
            queue_mib: 16,
        }
    }
}

/// Where recommendations are posted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlackConfig {
    /// File holding the incoming-webhook URL. `$CREDENTIALS_DIRECTORY/slack-webhook-url` wins over
    /// it. With neither, messages are written readably to the log instead.
    pub webhook_url_file: Option<PathBuf>,
    /// Timeout of one delivery attempt.
    pub timeout_secs: u64,
    /// Upper bound of the retry backoff after failures (5xx, timeouts). It bounds how long a
    /// message can wait once Slack is back: keep `timeout_secs + max_backoff_secs` well under
    /// the 120 s of the `AiopsOutboxStuck` alert. A 429 waits as long as Slack's `Retry-After`.
    pub max_backoff_secs: u64,
    /// Whether messages quote the watched unit's last journal error lines (at most 3; `aiops
    /// show` prints them all). `false` keeps log lines, which may hold data, out of Slack;
    /// the unit's state and the journal's counts are posted either way.
    pub journal_excerpt: bool,
}

impl Default for SlackConfig {
    fn default() -> Self {
        Self {
            webhook_url_file: None,
            timeout_secs: 10,
            max_backoff_secs: 30,
            journal_excerpt: true,
        }
    }
}

/// The Prometheus server the diagnosis engine asks for evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    pub url: String,
    /// Timeout of one query.
    pub timeout_ms: u64,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:9090".to_owned(),
            timeout_ms: 3000,
        }
    }
}

/// The Alertmanager `aiops recommend` asks which alerts fire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertmanagerConfig {
    pub url: String,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:9093".to_owned(),
        }
    }
}

/// Who carries out an approved restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecutorKind {
    /// `systemctl restart UNIT`, confined by polkit to the allow-list.
    Systemd,
    /// The `aiops demo` supervisor restarts its child process.
    Demo,
}

/// An action the tool may recommend and, once approved, carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    /// Restart the systemd unit.
    Restart,
    /// Clear the service's in-memory cache through its admin endpoint.
    ClearCache,
}

impl ActionKind {
    pub const ALL: [ActionKind; 2] = [ActionKind::Restart, ActionKind::ClearCache];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Restart => "restart",
            ActionKind::ClearCache => "clear-cache",
        }
    }

    /// The systemd verb (polkit's `action.lookup("verb")`) this action needs, if any.
    pub fn systemd_verb(self) -> Option<&'static str> {
        match self {
            ActionKind::Restart => Some("restart"),
            ActionKind::ClearCache => None,
        }
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ActionKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ActionKind::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown action {s:?}; known actions: restart, clear-cache"))
    }
}

/// The human gate and its safety limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemediationConfig {
    pub executor: ExecutorKind,
    /// Socket of the `aiops demo` supervisor (executor = "demo").
    pub demo_supervisor_socket: Option<PathBuf>,
    /// Unit name → actions that may be carried out on it. Nothing else can ever run.
    pub allowed: BTreeMap<String, Vec<ActionKind>>,
    /// Base URL of the demo app, for `clear-cache`.
    pub demo_app_url: String,
    /// A pending action not approved within this many seconds expires.
    pub action_ttl_secs: u64,
    /// Minimum time between two actions on the same unit.
    pub cooldown_secs: u64,
    /// At most this many actions run in any hour, over all units.
    pub max_actions_per_hour: u32,
    /// After this many failed verifications in a row for one alert and action, stop proposing it.
    pub breaker_threshold: u32,
    /// How long verification watches for recovery before declaring the fix failed.
    pub verify_timeout_secs: u64,
    /// Approval refuses an action whose evidence is older than this unless forced.
    pub stale_after_secs: u64,
}

impl Default for RemediationConfig {
    fn default() -> Self {
        let mut allowed = BTreeMap::new();
        allowed.insert(
            "aiops-demo-app.service".to_owned(),
            vec![ActionKind::Restart, ActionKind::ClearCache],
        );
        Self {
            executor: ExecutorKind::Systemd,
            demo_supervisor_socket: None,
            allowed,
            demo_app_url: "http://127.0.0.1:8080".to_owned(),
            action_ttl_secs: 3600,
            cooldown_secs: 300,
            max_actions_per_hour: 6,
            breaker_threshold: 3,
            verify_timeout_secs: 180,
            stale_after_secs: 900,
        }
    }
}

/// The diagnosis engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiagnosisConfig {
    /// A catalog file replacing the built-in one (same format as `crates/aiops-diagnosis/catalog.toml`).
    pub catalog_file: Option<PathBuf>,
    /// The window before the alert that serves as the baseline.
    pub baseline_secs: u64,
    /// Extra evidence profiles (same format as `crates/aiops-diagnosis/profiles.toml`); a
    /// profile named like a built-in one replaces it.
    pub profiles_file: Option<PathBuf>,
    /// Whether the built-in profiles are available; `false`: only those of `profiles_file`.
    pub builtin_profiles: bool,
}

impl Default for DiagnosisConfig {
    fn default() -> Self {
        Self {
            catalog_file: None,
            baseline_secs: 3600,
            profiles_file: None,
            builtin_profiles: true,
        }
    }
}

impl Config {
    /// Parses a configuration from TOML text. `origin` names the source in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        let mut config = config;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: origin.to_owned(),
            message,
        })?;
        config.merge_watched_actions();
        Ok(config)
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Finds the configuration: an explicit path, else `$AIOPS_CONFIG`, else
    /// [`SYSTEM_CONFIG_PATH`] if it exists, else the defaults. Returns where it came from.
    pub fn discover(explicit: Option<&Path>) -> Result<(Self, Option<PathBuf>), ConfigError> {
        if let Some(path) = explicit {
            return Ok((Self::load(path)?, Some(path.to_owned())));
        }
        if let Some(path) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
            let path = PathBuf::from(path);
            return Ok((Self::load(&path)?, Some(path)));
        }
        let system = Path::new(SYSTEM_CONFIG_PATH);
        if system.exists() {
            return Ok((Self::load(system)?, Some(system.to_owned())));
        }
        Ok((Self::default(), None))
    }

    /// Renders the configuration as TOML (used by `aiops demo` and `aiops config show`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the configuration always serializes")
    }

    /// The watched services, by name: the `[watch]` entries, or the demo app alone when there
    /// are none.
    pub fn watched(&self) -> BTreeMap<String, WatchConfig> {
        if self.watch.is_empty() {
            BTreeMap::from([(DEMO_SERVICE.to_owned(), demo_watch())])
        } else {
            self.watch.clone()
        }
    }

    /// Makes `remediation.allowed` the effective allow-list: its own entries joined by each
    /// watched unit's `allowed_actions`. Idempotent, so a rendered configuration reads back
    /// the same.
    fn merge_watched_actions(&mut self) {
        for w in self.watch.values() {
            let (Some(unit), false) = (&w.unit, w.allowed_actions.is_empty()) else {
                continue;
            };
            let list = self.remediation.allowed.entry(unit.clone()).or_default();
            for a in &w.allowed_actions {
                if !list.contains(a) {
                    list.push(*a);
                }
            }
            list.sort();
        }
    }

    fn validate(&self) -> Result<(), String> {
        for (name, w) in &self.watch {
            w.validate(name)?;
        }
        for (unit, actions) in &self.remediation.allowed {
            crate::unit::UnitName::parse(unit).map_err(|e| format!("remediation.allowed: {e}"))?;
            if actions.is_empty() {
                return Err(format!(
                    "remediation.allowed.\"{unit}\" lists no actions; remove the entry or list restart/clear-cache"
                ));
            }
        }
        if self.remediation.executor == ExecutorKind::Demo
            && self.remediation.demo_supervisor_socket.is_none()
        {
            return Err(
                "remediation.executor = \"demo\" needs remediation.demo_supervisor_socket".into(),
            );
        }
        for (key, url) in [
            ("prometheus.url", &self.prometheus.url),
            ("alertmanager.url", &self.alertmanager.url),
            ("remediation.demo_app_url", &self.remediation.demo_app_url),
        ] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("{key} = {url:?} is not an http:// or https:// URL"));
            }
        }
        if self.webhook.max_body_bytes == 0 || self.demo_app.max_body_bytes == 0 {
            return Err("max_body_bytes must be greater than 0".into());
        }
        if self.webhook.queue_mib == 0 || self.webhook.queue_mib > 64 * 1024 {
            return Err(format!(
                "webhook.queue_mib = {} is out of range: give the MiB each in-memory queue may hold, from 1 to 65536 (default 16)",
                self.webhook.queue_mib
            ));
        }
        Ok(())
    }
}

/// Seconds as a [`Duration`]; a small helper so call sites read as config keys.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        let c = Config::from_toml("", Path::new("t.toml")).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn defaults_round_trip_through_toml() {
        let text = Config::default().to_toml();
        let back = Config::from_toml(&text, Path::new("t.toml")).unwrap();
        assert_eq!(back, Config::default());
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let err = Config::from_toml(
            "[webhook]\nlisten_addr = \"1.2.3.4:1\"\n",
            Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("listen_addr"), "{err}");
        assert!(err.contains("t.toml"), "{err}");
    }

    #[test]
    fn a_zero_queue_bound_is_an_error_that_says_what_to_give() {
        let err = Config::from_toml("[webhook]\nqueue_mib = 0\n", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("webhook.queue_mib = 0"), "{err}");
        assert!(err.contains("from 1 to 65536"), "{err}");
        let c = Config::from_toml("[webhook]\nqueue_mib = 4\n", Path::new("t.toml")).unwrap();
        assert_eq!(c.webhook.queue_mib, 4);
    }

    #[test]
    fn allow_list_units_are_validated() {
        let err = Config::from_toml(
            "[remediation.allowed]\n\"x.service; reboot\" = [\"restart\"]\n",
            Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("remediation.allowed"), "{err}");
    }

    #[test]
    fn unknown_actions_are_rejected() {
        let err = Config::from_toml(
            "[remediation.allowed]\n\"a.service\" = [\"reboot\"]\n",
            Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("reboot"), "{err}");
    }

    #[test]
    fn a_watched_service_parses_and_its_actions_join_the_allow_list() {
        let c = Config::from_toml(
            "[watch.nginx]\nunit = \"nginx.service\"\njob = \"nginx\"\ntargets = [\"127.0.0.1:9113\"]\nprofiles = [\"nginx-exporter\"]\nallowed_actions = [\"restart\"]\n[watch.nginx.thresholds]\nerror_ratio = 0.1\n",
            Path::new("t.toml"),
        )
        .unwrap();
        let w = &c.watch["nginx"];
        assert_eq!(w.thresholds.error_ratio, 0.1);
        assert_eq!(w.thresholds.for_secs, 30);
        assert_eq!(
            c.remediation.allowed["nginx.service"],
            [ActionKind::Restart]
        );
        assert!(c.remediation.allowed.contains_key("aiops-demo-app.service"));
        assert_eq!(c.watched().keys().collect::<Vec<_>>(), ["nginx"]);
        let back = Config::from_toml(&c.to_toml(), Path::new("t.toml")).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn no_watched_service_means_the_demo_app() {
        let c = Config::default();
        let w = c.watched();
        assert_eq!(w.keys().collect::<Vec<_>>(), [DEMO_SERVICE]);
        assert_eq!(
            w[DEMO_SERVICE].unit.as_deref(),
            Some("aiops-demo-app.service")
        );
    }

    #[test]
    fn watched_service_errors_name_the_entry_and_field() {
        for (text, wants) in [
            ("[watch.a]\nunit = \"a.service; reboot\"\n", "watch.a.unit"),
            ("[watch.a]\ntargets = [\"x:1\"]\n", "watch.a.job is not set"),
            (
                "[watch.a]\njob = \"a\"\ntargets = [\"nohost\"]\n",
                "watch.a.targets has \"nohost\"",
            ),
            (
                "[watch.a]\nallowed_actions = [\"restart\"]\n",
                "watch.a.unit is not",
            ),
            (
                "[watch.a.thresholds]\nerror_ratio = 2.0\n",
                "watch.a.thresholds.error_ratio = 2",
            ),
            (
                "[watch.a.thresholds]\ncrash_loop_restarts = 0\n",
                "crash_loop_restarts = 0",
            ),
            ("[watch.\"a b\"]\n", "name must be"),
            ("[watch.a]\nunitt = \"a.service\"\n", "unitt"),
            ("[watch.a]\nallowed_actions = [\"reboot\"]\n", "reboot"),
        ] {
            let err = Config::from_toml(text, Path::new("t.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(wants), "{text}: {err}");
            assert!(err.contains("t.toml"), "{err}");
        }
    }

    #[test]
    fn diagnosis_reads_profiles_and_no_longer_takes_a_fallback_job() {
        let c = Config::from_toml(
            "[diagnosis]\nprofiles_file = \"/etc/aiops/profiles.toml\"\nbuiltin_profiles = false\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(
            c.diagnosis.profiles_file.as_deref(),
            Some(Path::new("/etc/aiops/profiles.toml"))
        );
        assert!(!c.diagnosis.builtin_profiles);
        assert!(Config::default().diagnosis.builtin_profiles);
        // `diagnosis.job` stood in for any alert without a plain job label: it is gone.
        let err = Config::from_toml("[diagnosis]\njob = \"x\"\n", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `job`"), "{err}");
    }

    #[test]
    fn demo_executor_needs_its_socket() {
        let err = Config::from_toml("[remediation]\nexecutor = \"demo\"\n", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("demo_supervisor_socket"), "{err}");
    }
}
