//! "Does the alert still fire?": Alertmanager's API v2, asked just before an approval acts.

use std::time::Duration;

use aiops_core::alertmanager::ApiAlert;
use chrono::Utc;

use crate::state::AlertRef;

/// A blocking client for `GET /api/v2/alerts`.
#[derive(Debug, Clone)]
pub struct AlertmanagerClient {
    agent: ureq::Agent,
    base: String,
}

impl AlertmanagerClient {
    pub fn new(url: &str, timeout: Duration) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            agent,
            base: url.trim_end_matches('/').to_owned(),
        }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// Every alert Alertmanager holds (active, silenced and inhibited alike: a silenced alert
    /// still fires).
    pub fn alerts(&self) -> Result<Vec<ApiAlert>, String> {
        let url = format!("{}/api/v2/alerts", self.base);
        let mut resp = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| format!("cannot reach Alertmanager at {}: {e}", self.base))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!(
                "Alertmanager at {} answered HTTP {status}",
                self.base
            ));
        }
        resp.body_mut()
            .with_config()
            .limit(16 * 1024 * 1024)
            .read_json()
            .map_err(|e| format!("cannot decode Alertmanager's alert list from {url}: {e}"))
    }

    /// Whether any alert of the group still fires: same fingerprint, or (for a group whose
    /// fingerprints we did not get) the same alert name and labels.
    pub fn still_fires(&self, alert: &AlertRef) -> Result<bool, String> {
        Ok(firing_match(&self.alerts()?, alert))
    }
}

/// The matching rule of [`AlertmanagerClient::still_fires`], pure for tests.
pub fn firing_match(alerts: &[ApiAlert], alert: &AlertRef) -> bool {
    let now = Utc::now();
    alerts.iter().any(|a| {
        let ended = a.ends_at <= now && a.ends_at.timestamp() > 0;
        let same = alert.fingerprints.contains(&a.fingerprint)
            || (a.labels.get("alertname") == Some(&alert.alertname) && a.labels == alert.labels);
        same && !ended
    })
}
