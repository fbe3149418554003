//! Helpers of `bench-webhook`: a fast Slack-protocol sink, the Node relay of the seed's design,
//! the wrk script that posts Alertmanager v4 payloads, and readers of process memory and of a
//! server's Prometheus metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// A local server speaking Slack's incoming-webhook protocol (`POST` JSON → `200 ok`) that only
/// counts what it receives; it runs on its own one-thread runtime until dropped.
#[derive(Debug)]
pub struct SlackSink {
    pub addr: SocketAddr,
    received: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SlackSink {
    pub fn start() -> std::io::Result<SlackSink> {
        let received = Arc::new(AtomicU64::new(0));
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let counter = received.clone();
        let thread = std::thread::Builder::new()
            .name("slack-sink".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime");
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = addr_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = addr_tx.send(listener.local_addr());
                    tokio::pin!(stop_rx);
                    loop {
                        let stream = tokio::select! {
                            s = listener.accept() => match s { Ok((s, _)) => s, Err(_) => continue },
                            _ = &mut stop_rx => break,
                        };
                        let counter = counter.clone();
                        tokio::spawn(async move {
                            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                                let counter = counter.clone();
                                async move {
                                    let _ = req.into_body().collect().await;
                                    counter.fetch_add(1, Ordering::Relaxed);
                                    Ok::<_, Infallible>(hyper::Response::new(Full::new(
                                        Bytes::from_static(b"ok"),
                                    )))
                                }
                            });
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                });
            })?;
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| std::io::Error::other("the sink did not start"))??;
        Ok(SlackSink {
            addr,
            received,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/services/T000/B000/bench", self.addr)
    }

    /// Messages received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for SlackSink {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A relay of the seed's design with node's `http` module only: it checks the bearer token,
/// parses the Alertmanager payload, POSTs one Slack message per alert (one after the other,
/// keep-alive), answers 200 once they are sent, and persists nothing.
pub const NODE_RELAY_JS: &str = r#"'use strict';
const http = require('http');
const slack = new URL(process.env.SLACK_URL);
const token = process.env.TOKEN || '';
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
function postToSlack(text) {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify({ text });
    const req = http.request({
      host: slack.hostname, port: slack.port, path: slack.pathname, method: 'POST', agent,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    }, (res) => { res.resume(); res.on('end', () => res.statusCode === 200 ? resolve() : reject(new Error('slack ' + res.statusCode))); });
    req.on('error', reject);
    req.end(body);
  });
}
const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/healthz') { res.end('ok'); return; }
  if (req.method !== 'POST') { res.statusCode = 405; res.end(); return; }
  if (token && req.headers['authorization'] !== 'Bearer ' + token) { res.statusCode = 401; res.end(); return; }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    try {
      const n = JSON.parse(Buffer.concat(chunks).toString());
      for (const a of n.alerts) {
        const summary = (a.annotations && a.annotations.summary) || '';
        await postToSlack(`[${a.status.toUpperCase()}] ${a.labels.alertname} ${summary} (${a.labels.instance || ''})`);
      }
      res.setHeader('content-type', 'application/json');
      res.end('{"status":"ok"}');
    } catch (e) {
      res.statusCode = 500;
      res.end(String(e));
    }
  });
});
server.listen(0, '127.0.0.1', () => {
  console.error('listening on http://127.0.0.1:' + server.address().port);
});
"#;

/// The Alertmanager v4 payload the wrk script sends: two alerts, like the reference
/// measurement; `%d` is the group number (the script varies it per request).
pub const PAYLOAD_TEMPLATE: &str = r#"{"receiver":"aiops","status":"firing","version":"4","groupKey":"{}:{alertname=\"HighErrorRatio\", service=\"svc-%d\"}","truncatedAlerts":0,"groupLabels":{"alertname":"HighErrorRatio","service":"svc-%d"},"commonLabels":{"alertname":"HighErrorRatio","service":"svc-%d","severity":"critical","unit":"aiops-demo-app.service"},"commonAnnotations":{"summary":"Error ratio above 5%% for svc-%d","description":"More than 5%% of requests failed over the last minute."},"externalURL":"http://127.0.0.1:9093","alerts":[{"status":"firing","labels":{"alertname":"HighErrorRatio","service":"svc-%d","severity":"critical","instance":"127.0.0.1:8080","job":"aiops-demo-app"},"annotations":{"summary":"Error ratio above 5%% for svc-%d"},"startsAt":"2026-11-28T12:03:00.123Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://127.0.0.1:9090/graph?g0.expr=job%%3Ahttp_request_error_ratio%%3Arate30s","fingerprint":"a%015d"},{"status":"firing","labels":{"alertname":"HighErrorRatio","service":"svc-%d","severity":"critical","instance":"127.0.0.1:8081","job":"aiops-demo-app"},"annotations":{"summary":"Error ratio above 5%% for svc-%d"},"startsAt":"2026-11-28T12:03:01.456Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://127.0.0.1:9090/graph?g0.expr=job%%3Ahttp_request_error_ratio%%3Arate30s","fingerprint":"b%015d"}]}"#;

/// How many `%d` the template holds.
fn placeholders() -> usize {
    PAYLOAD_TEMPLATE.matches("%d").count() + PAYLOAD_TEMPLATE.matches("%015d").count()
}

/// The payload for group `g`, as the Lua script renders it.
pub fn payload(g: u64) -> String {
    let mut out = PAYLOAD_TEMPLATE.replace("%%", "\u{0}");
    while let Some(i) = out.find("%015d") {
        out.replace_range(i..i + 5, &format!("{g:015}"));
    }
    out.replace("%d", &g.to_string()).replace('\u{0}', "%")
}

/// A wrk Lua script that POSTs [`PAYLOAD_TEMPLATE`] with a bearer token, cycling the group
/// over `groups` values (each wrk thread has its own counter, offset by its thread id).
pub fn wrk_script(token: &str, groups: u64) -> String {
    let lua_string = PAYLOAD_TEMPLATE.replace('\\', "\\\\").replace('"', "\\\"");
    let args = vec!["g"; placeholders()].join(", ");
    format!(
        r#"-- POST Alertmanager v4 notifications (2 alerts each) with a bearer token.
local counter = 0
local groups = {groups}
local template = "{lua_string}"
local tid = 0
local next_tid = 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
function request()
  counter = counter + 1
  local g = (counter * 7 + tid * 104729) % groups
  return wrk.format(nil, "/", nil, string.format(template, {args}))
end
"#
    )
}

/// Peak resident memory (`VmHWM`) of process `pid`, in bytes.
pub fn peak_rss_bytes(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| std::io::Error::other("no VmHWM line"))
}

/// The sum of the samples of metric `name` (all label sets) on `addr`'s `/metrics`.
pub fn scrape(addr: SocketAddr, name: &str) -> Option<f64> {
    let (status, body) = crate::http_get(addr, "/metrics", Duration::from_secs(5)).ok()?;
    if status != 200 {
        return None;
    }
    let text = String::from_utf8_lossy(&body);
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ')?;
        let metric = series.split('{').next()?;
        if metric == name {
            *sum.get_or_insert(0.0) += value.parse::<f64>().ok()?;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_a_valid_notification_per_group() {
        let a: serde_json::Value = serde_json::from_str(&payload(7)).unwrap();
        let b: serde_json::Value = serde_json::from_str(&payload(8)).unwrap();
        assert_eq!(a["version"], "4");
        assert_ne!(a["groupKey"], b["groupKey"]);
        assert_eq!(a["alerts"][0]["fingerprint"], "a000000000000007");
        assert!(
            a["commonAnnotations"]["summary"]
                .as_str()
                .unwrap()
                .contains("5%")
        );
        assert!(wrk_script("t", 10).contains("string.format(template, g, g"));
    }
}
