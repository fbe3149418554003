//! The Prometheus HTTP API client: the only code in the project that talks to Prometheus.
//!
//! Blocking (ureq 3), one HTTP call per method, every call bounded by
//! `prometheus.timeout_ms`. The client is `Sync` and shares one keep-alive connection pool, so
//! callers may run calls on scoped threads (see [`crate::evidence`]).
//!
//! - [`Prom::instant`]: `/api/v1/query`, vector and scalar results, `NaN`/`±Inf` values.
//! - [`Prom::instant_batch`]: several instant-vector queries evaluated in ONE request (see
//!   [`batch_query`]) and split back per query; the answer for each is what [`Prom::instant`]
//!   would give for it alone.
//! - [`Prom::rules`] / [`Prom::alert_rule`]: `/api/v1/rules`, to find an alert's expression.
//! - [`Prom::targets_up`]: the `up` series of one job.
//! - [`Prom::metric_names`]: `/api/v1/label/__name__/values` for a union of selectors over a
//!   time range, what evidence profiles are detected from.
//! - [`label_value`]: the PromQL string-literal escaper. Any text that did not come from our own
//!   code (an alert label, a config value) goes through it before it is part of a query.
//!
//! Errors distinguish "cannot reach Prometheus" ([`PromError::Unreachable`]) from "Prometheus
//! answered, but not with data" (HTTP, API or decode errors), because the diagnosis treats the
//! first as "monitoring is blind" and the others as a failed query.

use std::collections::BTreeMap;
use std::time::Duration;

use aiops_core::config::PrometheusConfig;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Largest response body we read (a rules listing of a big server fits easily).
const MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;

/// Largest answer to a metric-names call (about 20,000 names of typical length).
const MAX_NAMES_BODY_BYTES: u64 = 1024 * 1024;

/// ureq's input and output buffer per connection. The output buffer must hold a request's
/// head, so a GET's URL (with its query) must fit: [`Prom::instant`] sends longer queries as a
/// form POST instead.
const IO_BUFFER_BYTES: usize = 16 * 1024;

/// Queries longer than this go in a POST body rather than the URL (leaves room for the rest of
/// the request head in [`IO_BUFFER_BYTES`] after URL encoding, which can triple the length).
const MAX_GET_QUERY_BYTES: usize = 4 * 1024;

/// The label [`batch_query`] puts on every series of sub-query `i`, with the value `i`. Names
/// starting with `__` are reserved for Prometheus' internal use, so no scraped or recorded
/// series carries it (and it cannot collide with a label a query relies on).
pub const BATCH_LABEL: &str = "__aiops_item";

/// Why a Prometheus call gave no data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromError {
    /// No HTTP answer at all: connection refused, DNS, timeout, reset.
    #[error(
        "cannot reach Prometheus at {url}: {reason}; check that it runs and that prometheus.url is right"
    )]
    Unreachable { url: String, reason: String },
    /// Prometheus (or something in front of it) answered with a non-2xx status and no API error.
    #[error("Prometheus at {url} answered HTTP {status}: {body}")]
    Http {
        url: String,
        status: u16,
        body: String,
    },
    /// The API reported an error, e.g. `bad_data` for a query that does not parse.
    #[error("Prometheus rejected the request ({error_type}): {message}")]
    Api {
        url: String,
        error_type: String,
        message: String,
    },
    /// The answer was not what the API documents.
    #[error("cannot decode Prometheus' answer from {url}: {message}")]
    Decode { url: String, message: String },
}

impl PromError {
    /// Whether Prometheus could not be reached at all (as opposed to answering badly).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, PromError::Unreachable { .. })
    }
}

/// One series of an instant-query result (a scalar result is one sample without labels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    /// May be NaN or infinite: Prometheus says so explicitly and we keep it.
    pub value: f64,
}

/// Whether a rule alerts or records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    Alerting,
    Recording,
}

/// One loaded rule, as `/api/v1/rules` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Alert name or recorded metric name.
    pub name: String,
    /// The PromQL expression.
    pub query: String,
    pub kind: RuleKind,
    /// The rule group it belongs to.
    pub group: String,
    pub labels: BTreeMap<String, String>,
    /// `for:` of an alerting rule, in seconds (0 for recording rules).
    pub for_secs: f64,
}

/// A blocking client for one Prometheus server.
#[derive(Debug, Clone)]
pub struct Prom {
    agent: ureq::Agent,
    base: String,
    timeout: Duration,
}

impl Prom {
    /// A client for `config.url`; every call gives up after `config.timeout_ms`.
    pub fn new(config: &PrometheusConfig) -> Self {
        let timeout = Duration::from_millis(config.timeout_ms.max(1));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            // Prometheus puts its error (bad_data, ...) in 4xx/5xx bodies; we read them ourselves.
            .http_status_as_error(false)
            .user_agent(concat!("aiops-diagnosis/", env!("CARGO_PKG_VERSION")))
            // Answers to evidence queries are a few KiB: compressing them costs both ends CPU
            // (Prometheus sets up a gzip writer per response) and saves nothing worth having.
            .accept_encoding("")
            // ureq's 128 KiB default buffers per connection cost more to zero and fault in than
            // a whole evidence exchange; request heads and answer heads are far smaller, and
            // bodies stream through in chunks whatever their size.
            .input_buffer_size(IO_BUFFER_BYTES)
            .output_buffer_size(IO_BUFFER_BYTES)
            .build()
            .into();
        Self {
            agent,
            base: config.url.trim_end_matches('/').to_owned(),
            timeout,
        }
    }

    /// The server's base URL, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Evaluates `query` at `at` (now if `None`) through `/api/v1/query`.
    ///
    /// A vector gives one [`Sample`] per series; a scalar gives one sample without labels; an
    /// empty vector gives `Ok(vec![])`. A range vector (`up[5m]`) or a string result is a
    /// [`PromError::Decode`]: instant evidence must be a number.
    pub fn instant(
        &self,
        query: &str,
        at: Option<DateTime<Utc>>,
    ) -> Result<Vec<Sample>, PromError> {
        let url = format!("{}/api/v1/query", self.base);
        let sent = if query.len() <= MAX_GET_QUERY_BYTES {
            let mut req = self.agent.get(&url).query("query", query);
            if let Some(at) = at {
                req = req.query("time", prom_time(at));
            }
            req.call()
        } else {
            let mut form = vec![("query", query.to_owned())];
            if let Some(at) = at {
                form.push(("time", prom_time(at)));
            }
            self.agent.post(&url).send_form(form)
        };
        let data: QueryData = self.decode(&url, sent)?;
        data.into_samples().map_err(|message| PromError::Decode {
            url: url.clone(),
            message,
        })
    }

    /// Evaluates every query of `queries` at `at` in ONE `/api/v1/query` request and returns,
    /// for each, the samples [`Prom::instant`] would return for it alone (same values, same
    /// labels; only the order of several series of one query may differ, as it may between two
    /// runs of the same query).
    ///
    /// Every query must yield an instant vector (a scalar, a string or a range vector makes the
    /// whole batch fail with Prometheus' `bad_data`), and any query that fails fails the batch:
    /// callers that must not lose the others then ask each query on its own (as
    /// [`crate::evidence`] does). The request is a form POST, so a long batch meets no URL
    /// length limit of Prometheus or of a proxy in front of it.
    pub fn instant_batch(
        &self,
        queries: &[&str],
        at: Option<DateTime<Utc>>,
    ) -> Result<Vec<Vec<Sample>>, PromError> {
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        let url = format!("{}/api/v1/query", self.base);
        let batch = batch_query(queries);
        let mut form = vec![("query", batch)];
        if let Some(at) = at {
            form.push(("time", prom_time(at)));
        }
        let data: QueryData = self.decode(&url, self.agent.post(&url).send_form(form))?;
        let decode = |message: String| PromError::Decode {
            url: url.clone(),
            message,
        };
        if data.result_type != "vector" {
            return Err(decode(format!(
                "a batched query returned a {:?}, not a vector",
                data.result_type
            )));
        }
        let mut out = vec![Vec::new(); queries.len()];
        for mut sample in data.into_samples().map_err(decode)? {
            let i = sample
                .labels
                .remove(BATCH_LABEL)
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|i| *i < queries.len())
                .ok_or_else(|| {
                    decode(format!(
                        "a series of the batched answer has no valid {BATCH_LABEL} label: {:?}",
                        sample.labels
                    ))
                })?;
            out[i].push(sample);
        }
        Ok(out)
    }

    /// The value of a query that yields at most one series: `None` for an empty result. With
    /// several series the first (in Prometheus' order) wins; use [`Prom::instant`] to see them all.
    pub fn instant_value(
        &self,
        query: &str,
        at: Option<DateTime<Utc>>,
    ) -> Result<Option<f64>, PromError> {
        Ok(self.instant(query, at)?.first().map(|s| s.value))
    }

    /// Every loaded rule, alerting and recording, through `/api/v1/rules`.
    pub fn rules(&self) -> Result<Vec<Rule>, PromError> {
        let url = format!("{}/api/v1/rules", self.base);
        let data: RulesData = self.decode(&url, self.agent.get(&url).call())?;
        let mut out = Vec::new();
        for group in data.groups {
            for r in group.rules {
                let kind = match r.kind.as_str() {
                    "alerting" => RuleKind::Alerting,
                    "recording" => RuleKind::Recording,
                    other => {
                        return Err(PromError::Decode {
                            url,
                            message: format!("rule {:?} has unknown type {other:?}", r.name),
                        });
                    }
                };
                out.push(Rule {
                    name: r.name,
                    query: r.query,
                    kind,
                    group: group.name.clone(),
                    labels: r.labels,
                    for_secs: r.duration,
                });
            }
        }
        Ok(out)
    }

    /// The alerting rule named `alertname`, if Prometheus has one loaded.
    pub fn alert_rule(&self, alertname: &str) -> Result<Option<Rule>, PromError> {
        Ok(self
            .rules()?
            .into_iter()
            .find(|r| r.kind == RuleKind::Alerting && r.name == alertname))
    }

    /// The `up` series of `job` at `at`: empty when Prometheus does not scrape that job at all.
    /// `job` is escaped, so any text is safe here.
    pub fn targets_up(
        &self,
        job: &str,
        at: Option<DateTime<Utc>>,
    ) -> Result<Vec<Sample>, PromError> {
        self.instant(&format!("up{{job={}}}", label_value(job)), at)
    }

    /// The metric names of the series any of `selectors` matches between `start` and `end`,
    /// sorted, in ONE call of `/api/v1/label/__name__/values` (`match[]` once per selector;
    /// Prometheus 2.24 and later). Bounded by `prometheus.timeout_ms` and a 1 MiB answer.
    /// Selectors are PromQL: build them with [`label_value`] for any value.
    pub fn metric_names(
        &self,
        selectors: &[String],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<String>, PromError> {
        let url = format!("{}/api/v1/label/__name__/values", self.base);
        let mut req = self
            .agent
            .get(&url)
            .query("start", prom_time(start))
            .query("end", prom_time(end));
        for s in selectors {
            req = req.query("match[]", s);
        }
        self.decode_limited(&url, req.call(), MAX_NAMES_BODY_BYTES)
    }

    /// Reads and decodes the answer to a request sent (GET or POST) to `url`.
    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, PromError> {
        self.decode_limited(url, sent, MAX_BODY_BYTES)
    }

    /// [`Prom::decode`] reading at most `limit` bytes of the answer.
    fn decode_limited<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        limit: u64,
    ) -> Result<T, PromError> {
        let mut resp = sent.map_err(|e| self.transport_error(url, &e))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_string()
            .map_err(|e| match e {
                ureq::Error::Timeout(_) | ureq::Error::Io(_) => self.transport_error(url, &e),
                other => PromError::Decode {
                    url: url.to_owned(),
                    message: other.to_string(),
                },
            })?;
        decode_envelope(url, status, &body)
    }

    fn transport_error(&self, url: &str, e: &ureq::Error) -> PromError {
        let reason = match e {
            ureq::Error::Timeout(_) => format!("no answer within {} ms", self.timeout.as_millis()),
            other => other.to_string(),
        };
        PromError::Unreachable {
            url: url.to_owned(),
            reason,
        }
    }
}

/// Decodes Prometheus' `{"status": ..., "data": ...}` envelope, turning API errors into
/// [`PromError::Api`] whatever the HTTP status.
fn decode_envelope<T: serde::de::DeserializeOwned>(
    url: &str,
    status: u16,
    body: &str,
) -> Result<T, PromError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Envelope<T> {
        status: String,
        data: Option<T>,
        error_type: Option<String>,
        error: Option<String>,
    }
    match serde_json::from_str::<Envelope<serde_json::Value>>(body) {
        Ok(env) if env.status == "error" || env.error.is_some() => Err(PromError::Api {
            url: url.to_owned(),
            error_type: env.error_type.unwrap_or_else(|| "unknown".into()),
            message: env.error.unwrap_or_default(),
        }),
        Ok(env) if (200..300).contains(&status) && env.status == "success" => {
            let data = env.data.ok_or_else(|| PromError::Decode {
                url: url.to_owned(),
                message: "status is success but there is no data".into(),
            })?;
            serde_json::from_value(data).map_err(|e| PromError::Decode {
                url: url.to_owned(),
                message: e.to_string(),
            })
        }
        Ok(env) if (200..300).contains(&status) => Err(PromError::Decode {
            url: url.to_owned(),
            message: format!("unexpected status {:?}", env.status),
        }),
        _ if !(200..300).contains(&status) => Err(PromError::Http {
            url: url.to_owned(),
            status,
            body: excerpt(body),
        }),
        Ok(_) => unreachable!("every Ok case is matched above"),
        Err(e) => Err(PromError::Decode {
            url: url.to_owned(),
            message: format!("{e} in {:?}", excerpt(body)),
        }),
    }
}

fn excerpt(body: &str) -> String {
    const MAX: usize = 200;
    let trimmed = body.trim();
    match trimmed.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &trimmed[..i]),
        None => trimmed.to_owned(),
    }
}

/// `time=` as Prometheus takes it: Unix seconds with millisecond precision.
fn prom_time(at: DateTime<Utc>) -> String {
    let ms = at.timestamp_millis();
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryData {
    result_type: String,
    result: serde_json::Value,
}

impl QueryData {
    fn into_samples(self) -> Result<Vec<Sample>, String> {
        #[derive(Deserialize)]
        struct VectorItem {
            #[serde(default)]
            metric: BTreeMap<String, String>,
            value: (f64, String),
        }
        match self.result_type.as_str() {
            "vector" => {
                let items: Vec<VectorItem> =
                    serde_json::from_value(self.result).map_err(|e| e.to_string())?;
                items
                    .into_iter()
                    .map(|i| {
                        Ok(Sample {
                            labels: i.metric,
                            value: parse_value(&i.value.1)?,
                        })
                    })
                    .collect()
            }
            "scalar" => {
                let (_, v): (f64, String) =
                    serde_json::from_value(self.result).map_err(|e| e.to_string())?;
                Ok(vec![Sample {
                    labels: BTreeMap::new(),
                    value: parse_value(&v)?,
                }])
            }
            "matrix" => Err(
                "the query returned a range vector; instant evidence needs a function around it (e.g. rate(...[5m]))"
                    .into(),
            ),
            other => Err(format!("result type {other:?} is not a number")),
        }
    }
}

/// Prometheus encodes sample values as strings: `"0.25"`, `"NaN"`, `"+Inf"`, `"-Inf"`.
fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s
            .parse::<f64>()
            .map_err(|_| format!("sample value {s:?} is not a number")),
    }
}

#[derive(Deserialize)]
struct RulesData {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
struct RuleGroup {
    name: String,
    #[serde(default)]
    rules: Vec<ApiRule>,
}

#[derive(Deserialize)]
struct ApiRule {
    name: String,
    query: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    duration: f64,
}

/// One PromQL expression whose result is the union of the results of `queries`, each series
/// marked with [`BATCH_LABEL`]`="i"` (its query's index):
///
/// ```text
/// label_replace(
/// <query 0>
/// , "__aiops_item", "0", "", "") or label_replace(
/// <query 1>
/// , "__aiops_item", "1", "", "") or ...
/// ```
///
/// `or` keeps a right-hand series only if no left-hand series has the same label set; the
/// distinct index label makes every label set distinct, so no series of any query is dropped,
/// and a query's own labels (including `__name__`) are left as they are. The newlines end a `#`
/// comment a query may close with, so it cannot swallow the rest of the batch.
pub fn batch_query(queries: &[&str]) -> String {
    let mut out = String::with_capacity(queries.iter().map(|q| q.len() + 48).sum());
    for (i, q) in queries.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str("label_replace(\n");
        out.push_str(q);
        out.push_str("\n, \"");
        out.push_str(BATCH_LABEL);
        out.push_str("\", \"");
        out.push_str(&i.to_string());
        out.push_str("\", \"\", \"\")");
    }
    out
}

/// `s` as a PromQL double-quoted string literal, quotes included: `"a\"b"`.
///
/// PromQL string literals follow Go's escaping; escaping `\`, `"` and control characters (as
/// `\n`, `\t`, ... or `\xNN`/`\u{...}` forms Go accepts) makes any input one literal that can
/// neither end early nor add matchers. Non-ASCII printable text passes through as UTF-8.
pub fn label_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            // Line/paragraph separators and other format characters are legal in Go strings,
            // but escaping them keeps queries printable in logs and Slack.
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether `s` may stand in PromQL as a label value without escaping *and* as a name we trust
/// for a job: ASCII letters, digits, `_`, `-`, `.`, `:`, 1..=128 characters. Used to decide
/// whether an alert's `job` label is taken at all (the value still goes through
/// [`label_value`]).
pub fn is_plain_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_and_scalar_results_decode() {
        let v: QueryData = decode_envelope(
            "u",
            200,
            r#"{"status":"success","data":{"resultType":"vector","result":[
              {"metric":{"job":"a"},"value":[1700000000.5,"0.25"]},
              {"metric":{},"value":[1700000000.5,"NaN"]},
              {"metric":{},"value":[1700000000.5,"+Inf"]},
              {"metric":{},"value":[1700000000.5,"-Inf"]}]}}"#,
        )
        .unwrap();
        let s = v.into_samples().unwrap();
        assert_eq!(s[0].value, 0.25);
        assert_eq!(s[0].labels["job"], "a");
        assert!(s[1].value.is_nan());
        assert_eq!(s[2].value, f64::INFINITY);
        assert_eq!(s[3].value, f64::NEG_INFINITY);

        let sc: QueryData = decode_envelope(
            "u",
            200,
            r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"3"]}}"#,
        )
        .unwrap();
        assert_eq!(sc.into_samples().unwrap()[0].value, 3.0);
    }

    #[test]
    fn api_errors_keep_their_type_and_message() {
        let e = decode_envelope::<QueryData>(
            "u",
            400,
            r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected end of input"}"#,
        )
        .err()
        .unwrap();
        assert_eq!(
            e,
            PromError::Api {
                url: "u".into(),
                error_type: "bad_data".into(),
                message: "1:5: parse error: unexpected end of input".into()
            }
        );
        let e = decode_envelope::<QueryData>("u", 502, "Bad Gateway")
            .err()
            .unwrap();
        assert!(matches!(e, PromError::Http { status: 502, .. }), "{e:?}");
        let e = decode_envelope::<QueryData>("u", 200, "<html>")
            .err()
            .unwrap();
        assert!(matches!(e, PromError::Decode { .. }), "{e:?}");
        let e = decode_envelope::<QueryData>(
            "u",
            200,
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
        )
        .unwrap()
        .into_samples()
        .unwrap_err();
        assert!(e.contains("range vector"), "{e}");
    }

    #[test]
    fn times_are_unix_seconds_with_millis() {
        let t = DateTime::parse_from_rfc3339("2026-11-28T12:03:00.123Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(prom_time(t), "1795867380.123");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("aiops-demo-app"), "\"aiops-demo-app\"");
        assert_eq!(
            label_value("a\"} or vector(1) #"),
            r#""a\"} or vector(1) #""#
        );
        assert_eq!(label_value("a\\"), r#""a\\""#);
        assert_eq!(label_value("a\nb\u{0}"), r#""a\nb\x00""#);
        assert!(is_plain_identifier("aiops-demo-app"));
        assert!(!is_plain_identifier("a\"b"));
        assert!(!is_plain_identifier(""));
        assert!(!is_plain_identifier("a b"));
    }

    /// Decodes a literal produced by [`label_value`] the way Go's strconv.Unquote would (for the
    /// escapes we emit), so the property test can check the round trip.
    fn unquote(lit: &str) -> Option<String> {
        let inner = lit.strip_prefix('"')?.strip_suffix('"')?;
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return None, // an unescaped quote would end the literal early
                '\\' => match chars.next()? {
                    '\\' => out.push('\\'),
                    '"' => out.push('"'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'x' => {
                        let h: String = chars.by_ref().take(2).collect();
                        out.push(char::from_u32(u32::from_str_radix(&h, 16).ok()?)?);
                    }
                    'u' => {
                        let h: String = chars.by_ref().take(4).collect();
                        out.push(char::from_u32(u32::from_str_radix(&h, 16).ok()?)?);
                    }
                    _ => return None,
                },
                c => out.push(c),
            }
        }
        Some(out)
    }

    proptest::proptest! {
        #[test]
        fn escaped_literals_round_trip(s in "\\PC*|[\"\\\\\\n\\x00-\\x1f]{0,8}") {
            let lit = label_value(&s);
            proptest::prop_assert_eq!(unquote(&lit), Some(s));
        }
    }
}
