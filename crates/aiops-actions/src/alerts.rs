//! Alertmanager's API v2: "does the alert still fire?", asked just before an approval acts, and
//! "which alerts make up this group?", asked by the receiver when a notification was truncated.

use std::time::Duration;

use aiops_core::alertmanager::{ApiAlert, KV};
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

    /// The active alerts of one group, for a notification Alertmanager truncated (`max_alerts`):
    /// `GET /api/v2/alerts` with one `filter` matcher per group label (the value escaped as a
    /// quoted matcher string), `receiver` when given (as an anchored, escaped regex), and
    /// `active=true&silenced=false&inhibited=false` (what a notification carries).
    ///
    /// Bounded: at most [`GROUP_TIMEOUT`], a body of at most [`GROUP_MAX_BODY`] bytes, and
    /// [`GROUP_MAX_ALERTS`] alerts kept (Alertmanager lists them by fingerprint; the rest are
    /// counted in [`GroupAlerts::more`], not parsed).
    pub fn group_alerts(
        &self,
        group_labels: &KV,
        receiver: Option<&str>,
    ) -> Result<GroupAlerts, String> {
        let url = format!("{}/api/v2/alerts", self.base);
        let mut req = self
            .agent
            .get(&url)
            .query("active", "true")
            .query("silenced", "false")
            .query("inhibited", "false");
        for (name, value) in group_labels {
            req = req.query("filter", matcher(name, value)?);
        }
        if let Some(r) = receiver.filter(|r| !r.is_empty()) {
            req = req.query("receiver", regex_quote(r));
        }
        let mut resp = req
            .config()
            .timeout_global(Some(GROUP_TIMEOUT))
            .build()
            .call()
            .map_err(|e| format!("cannot reach Alertmanager at {}: {e}", self.base))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp
                .body_mut()
                .with_config()
                .limit(512)
                .read_to_string()
                .unwrap_or_default();
            return Err(format!(
                "Alertmanager at {} answered HTTP {status} to the group's alert list: {}",
                self.base,
                body.trim()
            ));
        }
        resp.body_mut()
            .with_config()
            .limit(GROUP_MAX_BODY)
            .read_json::<GroupAlerts>()
            .map_err(|e| {
                format!(
                    "cannot read the group's alert list from Alertmanager at {} (at most {} MiB): {e}",
                    self.base,
                    GROUP_MAX_BODY / (1024 * 1024)
                )
            })
    }

    /// Whether any alert of the group still fires: same fingerprint, or (for a group whose
    /// fingerprints we did not get) the same alert name and labels.
    pub fn still_fires(&self, alert: &AlertRef) -> Result<bool, String> {
        Ok(firing_match(&self.alerts()?, alert))
    }
}

/// Alerts kept from one [`AlertmanagerClient::group_alerts`] answer.
pub const GROUP_MAX_ALERTS: usize = 200;
/// The largest answer [`AlertmanagerClient::group_alerts`] reads.
pub const GROUP_MAX_BODY: u64 = 4 * 1024 * 1024;
/// How long [`AlertmanagerClient::group_alerts`] may take, connection to last byte.
pub const GROUP_TIMEOUT: Duration = Duration::from_secs(5);

/// What [`AlertmanagerClient::group_alerts`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupAlerts {
    /// At most [`GROUP_MAX_ALERTS`], in Alertmanager's order (by fingerprint).
    pub alerts: Vec<ApiAlert>,
    /// Alerts listed after those, skipped without being parsed.
    pub more: usize,
}

impl<'de> serde::Deserialize<'de> for GroupAlerts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bounded;
        impl<'de> serde::de::Visitor<'de> for Bounded {
            type Value = GroupAlerts;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of alerts")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<GroupAlerts, A::Error> {
                let mut out = GroupAlerts::default();
                while out.alerts.len() < GROUP_MAX_ALERTS {
                    match seq.next_element::<ApiAlert>()? {
                        Some(a) => out.alerts.push(a),
                        None => return Ok(out),
                    }
                }
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    out.more += 1;
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Bounded)
    }
}

/// One equality matcher of Alertmanager's `filter` parameter, `name="value"`, with `\`, `"`
/// and newlines escaped as both of Alertmanager's matcher parsers (the classic one of 0.2x and
/// the UTF-8 one of 0.27 on) read them. A label name outside Prometheus' alphabet cannot be
/// written unquoted for 0.2x, so it is refused.
pub fn matcher(name: &str, value: &str) -> Result<String, String> {
    let valid = name
        .chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
    if name.is_empty() || !valid {
        return Err(format!(
            "the group label name {name:?} cannot be used in an Alertmanager filter"
        ));
    }
    let mut out = String::with_capacity(name.len() + value.len() + 3);
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

/// `s` as a regular expression matching exactly `s` (Go's `regexp.QuoteMeta`); Alertmanager
/// anchors the `receiver` parameter itself.
pub fn regex_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_escape_quotes_backslashes_and_newlines() {
        assert_eq!(
            matcher("alertname", "HighLatencyP99").unwrap(),
            r#"alertname="HighLatencyP99""#
        );
        assert_eq!(
            matcher("service", "a\"b\\c\nd, e=}").unwrap(),
            r#"service="a\"b\\c\nd, e=}""#
        );
        assert!(matcher("bad-name", "x").is_err());
        assert!(matcher("1st", "x").is_err());
        assert!(matcher("", "x").is_err());
    }

    #[test]
    fn receiver_names_are_quoted_as_regexes() {
        assert_eq!(regex_quote("aiops"), "aiops");
        assert_eq!(regex_quote("a.b|c(d)"), r"a\.b\|c\(d\)");
    }

    fn api_alert(fp: &str) -> serde_json::Value {
        serde_json::json!({
            "labels": {"alertname": "A"}, "annotations": {},
            "startsAt": "2026-11-28T12:03:00Z", "endsAt": "2026-11-28T12:13:00Z",
            "fingerprint": fp, "status": {"state": "active", "silencedBy": [], "inhibitedBy": []},
        })
    }

    #[test]
    fn a_long_answer_keeps_the_first_alerts_and_counts_the_rest() {
        let list: Vec<_> = (0..GROUP_MAX_ALERTS + 7)
            .map(|i| api_alert(&format!("{i:016x}")))
            .collect();
        let g: GroupAlerts = serde_json::from_value(serde_json::Value::from(list)).unwrap();
        assert_eq!(g.alerts.len(), GROUP_MAX_ALERTS);
        assert_eq!(g.more, 7);
        assert_eq!(g.alerts[0].fingerprint, "0000000000000000");
        let short: GroupAlerts =
            serde_json::from_value(serde_json::json!([api_alert("ab")])).unwrap();
        assert_eq!((short.alerts.len(), short.more), (1, 0));
    }

    #[test]
    fn an_unreachable_alertmanager_is_a_clear_error() {
        let c = AlertmanagerClient::new("http://127.0.0.1:9", Duration::from_secs(1));
        let labels = KV::from([("alertname".to_owned(), "A".to_owned())]);
        let e = c.group_alerts(&labels, Some("aiops")).unwrap_err();
        assert!(
            e.contains("cannot reach Alertmanager at http://127.0.0.1:9"),
            "{e}"
        );
    }
}
