//! Alertmanager's data: the webhook notification (payload version 4) and API v2 alerts.
//!
//! Parsing is tolerant of fields we do not know (newer Alertmanagers add some, e.g.
//! `notification_reason` from 0.32 on) and strict about the ones we rely on.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Label or annotation set.
pub type KV = BTreeMap<String, String>;

/// Whether a group or an alert fires or has resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// One webhook notification, as Alertmanager POSTs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub version: String,
    pub group_key: String,
    #[serde(default)]
    pub truncated_alerts: u64,
    pub status: Status,
    #[serde(default)]
    pub receiver: String,
    #[serde(default)]
    pub group_labels: KV,
    #[serde(default)]
    pub common_labels: KV,
    #[serde(default)]
    pub common_annotations: KV,
    #[serde(rename = "externalURL", default)]
    pub external_url: String,
    pub alerts: Vec<Alert>,
}

/// One alert inside a notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: Status,
    #[serde(default)]
    pub labels: KV,
    #[serde(default)]
    pub annotations: KV,
    pub starts_at: DateTime<Utc>,
    /// Alertmanager sends `0001-01-01T00:00:00Z` for alerts without an end.
    pub ends_at: DateTime<Utc>,
    #[serde(rename = "generatorURL", default)]
    pub generator_url: String,
    pub fingerprint: String,
}

/// Why a body is not a notification we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the body is not valid JSON for an Alertmanager notification: {0}")]
    Json(String),
    #[error(
        "unsupported payload version {0:?}; this receiver speaks Alertmanager's webhook version \"4\""
    )]
    Version(String),
    #[error("groupKey is empty")]
    EmptyGroupKey,
    #[error("alerts[{0}].fingerprint is empty")]
    EmptyFingerprint(usize),
    #[error("alerts is empty and truncatedAlerts is 0: nothing to notify about")]
    NoAlerts,
}

impl Notification {
    /// Parses and validates a webhook body.
    pub fn parse(body: &[u8]) -> Result<Self, PayloadError> {
        // Check the version first so that a v3 or future payload gets the precise error even
        // when its shape differs.
        #[derive(Deserialize)]
        struct Probe {
            version: Option<serde_json::Value>,
        }
        let probe: Probe =
            serde_json::from_slice(body).map_err(|e| PayloadError::Json(e.to_string()))?;
        match probe.version {
            Some(serde_json::Value::String(v)) if v == "4" => {}
            Some(serde_json::Value::String(v)) => return Err(PayloadError::Version(v)),
            Some(other) => return Err(PayloadError::Version(other.to_string())),
            None => return Err(PayloadError::Json("missing field `version`".into())),
        }
        let n: Notification =
            serde_json::from_slice(body).map_err(|e| PayloadError::Json(e.to_string()))?;
        if n.group_key.is_empty() {
            return Err(PayloadError::EmptyGroupKey);
        }
        if let Some(i) = n.alerts.iter().position(|a| a.fingerprint.is_empty()) {
            return Err(PayloadError::EmptyFingerprint(i));
        }
        if n.alerts.is_empty() && n.truncated_alerts == 0 {
            return Err(PayloadError::NoAlerts);
        }
        Ok(n)
    }

    /// The alert name shared by the group, if any.
    pub fn alertname(&self) -> Option<&str> {
        self.common_labels
            .get("alertname")
            .or_else(|| self.group_labels.get("alertname"))
            .map(String::as_str)
    }
}

/// An alert as Alertmanager's API v2 (`GET /api/v2/alerts`) returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiAlert {
    #[serde(default)]
    pub labels: KV,
    #[serde(default)]
    pub annotations: KV,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    #[serde(rename = "generatorURL", default)]
    pub generator_url: String,
    pub fingerprint: String,
    pub status: ApiAlertStatus,
}

/// `status` of an API v2 alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiAlertStatus {
    /// `active`, `suppressed` or `unprocessed`.
    pub state: String,
    #[serde(default)]
    pub silenced_by: Vec<String>,
    #[serde(default)]
    pub inhibited_by: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const FIRING: &str = r#"{
      "receiver": "aiops", "status": "firing", "version": "4",
      "groupKey": "{}:{alertname=\"HighErrorRatio\", service=\"demo\"}",
      "truncatedAlerts": 0,
      "groupLabels": {"alertname": "HighErrorRatio", "service": "demo"},
      "commonLabels": {"alertname": "HighErrorRatio", "service": "demo", "severity": "critical", "unit": "aiops-demo-app.service"},
      "commonAnnotations": {"summary": "errors"},
      "externalURL": "http://am.example:9093",
      "alerts": [{
        "status": "firing",
        "labels": {"alertname": "HighErrorRatio", "service": "demo"},
        "annotations": {"summary": "errors"},
        "startsAt": "2026-11-28T12:03:00.123Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prom:9090/graph?g0.expr=x",
        "fingerprint": "0123456789abcdef",
        "notification_reason": "new"
      }]
    }"#;

    #[test]
    fn parses_a_real_v4_payload_with_unknown_fields() {
        let n = Notification::parse(FIRING.as_bytes()).unwrap();
        assert_eq!(n.status, Status::Firing);
        assert_eq!(n.alertname(), Some("HighErrorRatio"));
        assert_eq!(n.alerts[0].fingerprint, "0123456789abcdef");
        assert_eq!(n.external_url, "http://am.example:9093");
    }

    #[test]
    fn wrong_version_is_named() {
        let body = FIRING.replace("\"version\": \"4\"", "\"version\": \"3\"");
        assert_eq!(
            Notification::parse(body.as_bytes()),
            Err(PayloadError::Version("3".into()))
        );
    }

    #[test]
    fn garbage_is_a_json_error() {
        assert!(matches!(
            Notification::parse(b"{\"version\": \"4\""),
            Err(PayloadError::Json(_))
        ));
        assert!(matches!(
            Notification::parse(b"\xff\xfe"),
            Err(PayloadError::Json(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = Notification::parse(&bytes);
        }
    }
}
