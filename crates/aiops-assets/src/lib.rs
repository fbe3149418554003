//! The repository's `prometheus/` and `grafana/` files, built into the binary, and rendered into a
//! ready-to-run configuration tree for `aiops demo`.
//!
//! An installed `aiops` needs no checkout: every file of those two folders is embedded with
//! `include_str!` ([`ASSETS`]). The files themselves stay the single source of truth (promtool,
//! amtool and the NixOS module read them as they are); this crate only substitutes the defaults
//! that name a place:
//!
//! - the loopback addresses `127.0.0.1:8080` (demo app), `127.0.0.1:9095` (receiver),
//!   `127.0.0.1:9090` (Prometheus), `127.0.0.1:9093` (Alertmanager), which appear literally and
//!   only where they mean that component, and Grafana's `http_port = 3000`;
//! - the webhook token file `/etc/aiops/webhook-token` in `alertmanager.yml`;
//! - Grafana's paths under `/etc/aiops/grafana` and `/var/lib/aiops/grafana`.
//!
//! Layout:
//! - this file: [`ASSETS`] and the named files;
//! - [`dashboard`]: the dashboard's queries as Grafana sends them (for live query tests);
//! - [`floor`]: the detection floor (scrape + evaluation + `for` + `group_wait`) and the
//!   thresholds, as constants that tests compare with the files;
//! - `render`: [`Ports`], [`render()`] and the paths it returns.
//!
//! Architecture invariant: substitution is one simultaneous pass over exact needles, so a new
//! port that happens to equal another component's default can never be rewritten twice.

pub mod dashboard;
pub mod floor;
mod render;

pub use render::{DEFAULT_TOKEN_FILE, Ports, RenderError, Rendered, render, render_file};

/// One embedded file: its path in the repository and its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// Relative to the repository root, with `/` separators, e.g. `prometheus/rules.yml`.
    pub path: &'static str,
    pub contents: &'static str,
}

macro_rules! assets {
    ($($name:ident = $path:literal;)*) => {
        $(
            #[doc = concat!("`", $path, "`, as embedded.")]
            pub const $name: &str = include_str!(concat!("../../../", $path));
        )*
        /// Every file of `prometheus/` and `grafana/`, in repository order.
        pub const ASSETS: &[Asset] = &[
            $(Asset { path: $path, contents: $name },)*
        ];
    };
}

assets! {
    PROMETHEUS_YML = "prometheus/prometheus.yml";
    RULES_YML = "prometheus/rules.yml";
    ALERTMANAGER_YML = "prometheus/alertmanager.yml";
    RULE_TEST_AIOPS_OUTBOX_STUCK = "prometheus/tests/aiops_outbox_stuck.yml";
    RULE_TEST_AIOPS_STATE_VOLUME_LOW = "prometheus/tests/aiops_state_volume_low.yml";
    RULE_TEST_HIGH_CPU_USAGE = "prometheus/tests/high_cpu_usage.yml";
    RULE_TEST_HIGH_ERROR_RATIO = "prometheus/tests/high_error_ratio.yml";
    RULE_TEST_HIGH_LATENCY_P99 = "prometheus/tests/high_latency_p99.yml";
    RULE_TEST_MEMORY_GROWTH = "prometheus/tests/memory_growth.yml";
    RULE_TEST_RECORDING = "prometheus/tests/recording.yml";
    RULE_TEST_TARGET_DOWN = "prometheus/tests/target_down.yml";
    GRAFANA_INI = "grafana/grafana.ini";
    GRAFANA_DATASOURCE_YML = "grafana/provisioning/datasources/datasource.yml";
    GRAFANA_DASHBOARDS_YML = "grafana/provisioning/dashboards/dashboards.yml";
    GRAFANA_DASHBOARD_AIOPS_JSON = "grafana/dashboards/aiops.json";
}

/// The uid of the Prometheus datasource the dashboard's panels refer to.
pub const DATASOURCE_UID: &str = "aiops-prometheus";
/// The uid of the dashboard (`/d/aiops-loop` on the Grafana server), for links in messages.
pub const DASHBOARD_UID: &str = "aiops-loop";

/// The embedded file at `path` (relative to the repository root), if any.
pub fn asset(path: &str) -> Option<&'static str> {
    ASSETS.iter().find(|a| a.path == path).map(|a| a.contents)
}
