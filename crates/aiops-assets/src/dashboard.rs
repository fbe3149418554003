//! The dashboard's queries as Grafana would send them, for tests that run every panel against a
//! live Prometheus (the assets' own test with the demo app; the end-to-end test with the whole
//! loop, where the receiver's panels have data too).

use serde_json::Value;

use crate::GRAFANA_DASHBOARD_AIOPS_JSON;

/// One query of the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Where it comes from, for messages: `panel "Error ratio" A`.
    pub origin: String,
    /// The expression as written in the dashboard (Grafana variables included).
    pub expr: String,
    /// An instant query (stat panels) rather than a range query.
    pub instant: bool,
}

impl Query {
    /// Reads the receiver's metrics, which exist only once aiops-webhook runs.
    pub fn is_loop(&self) -> bool {
        self.expr.contains("aiops_")
    }
}

/// The dashboard, parsed.
pub fn dashboard() -> Value {
    serde_json::from_str(GRAFANA_DASHBOARD_AIOPS_JSON).expect("aiops.json is JSON (tested)")
}

/// Every target of every panel, plus the annotation queries.
pub fn queries(d: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                origin: format!(
                    "panel {:?} {}",
                    p["title"].as_str().unwrap_or(""),
                    t["refId"].as_str().unwrap_or("")
                ),
                expr: t["expr"].as_str().unwrap_or_default().to_owned(),
                instant: t["instant"] == true,
            });
        }
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(expr) = a["expr"].as_str() {
            out.push(Query {
                origin: format!("annotation {:?}", a["name"].as_str().unwrap_or("")),
                expr: expr.to_owned(),
                instant: false,
            });
        }
    }
    out
}

/// `expr` with Grafana's variables replaced as Grafana would for the default view; `None` if a
/// variable is left that this function does not know.
pub fn substitute(expr: &str, d: &Value) -> Option<String> {
    let mut e = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "5s")
        .replace("$__range", "30m");
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        let name = v["name"].as_str()?;
        let value = v["current"]["value"].as_str()?;
        e = e
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    (!e.contains('$')).then_some(e)
}
