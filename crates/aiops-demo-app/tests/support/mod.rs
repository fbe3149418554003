//! Test helpers: a plain HTTP/1.1 client over `std::net`, a strict Prometheus text parser, the
//! app in-process or as the real binary, and bounded waiting.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiops_core::config::DemoAppConfig;
use aiops_demo_app::BackgroundServer;

pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// The app in-process on 127.0.0.1:0 with `config` (its `listen` is replaced).
pub fn app_with(config: &DemoAppConfig) -> BackgroundServer {
    BackgroundServer::start(&DemoAppConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..config.clone()
    })
    .expect("start the demo app in-process")
}

pub fn app() -> BackgroundServer {
    app_with(&DemoAppConfig::default())
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The `error` field of an error body.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {}", self.text()))
            .to_owned()
    }
}

/// Sends raw bytes and reads until the server closes the connection.
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.write_all(bytes)?;
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        // The server may reset a connection it refuses; what it sent first still counts.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(out),
        Err(e) => Err(e),
    }
}

pub fn parse_response(bytes: &[u8]) -> Resp {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(bytes)));
    let head = std::str::from_utf8(&bytes[..split]).expect("head is UTF-8");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Resp {
        status,
        headers,
        body: bytes[split + 4..].to_vec(),
    }
}

/// One request on a fresh connection (`Connection: close`).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    let out = raw(addr, &bytes).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    parse_response(&out)
}

pub fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[], b"")
}

pub fn post(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "POST", path, &[], b"")
}

pub fn post_json(addr: SocketAddr, path: &str, body: &str) -> Resp {
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

pub fn delete(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "DELETE", path, &[], b"")
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus text format

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed `/metrics` body.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub types: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// Samples named `name` whose labels include every pair in `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The one sample named `name` with exactly these labels.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// `get`, defaulting to 0 for a series that does not exist (yet).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Parses the labels of `{a="x",b="y"}` (without the braces), with `\\`, `\"`, `\n` escapes.
fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").ok_or("label without =\"")?;
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} repeated"));
        }
        rest = &after[end + 1..];
        rest = match rest.strip_prefix(',') {
            Some(r) => r,
            None if rest.is_empty() => rest,
            None => return Err(format!("expected , or }} after label {name}")),
        };
    }
    Ok(labels)
}

/// The family a sample belongs to (a histogram's `_bucket`, `_sum`, `_count` belong to it).
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            )
        {
            return Some(base);
        }
    }
    None
}

/// Parses the text exposition format strictly: every line is HELP, TYPE or a sample of a family
/// whose TYPE came before; names, labels, escapes and values are checked; histograms have
/// cumulative buckets ending in `+Inf` equal to `_count`.
pub fn parse_exposition(text: &str) -> Result<Exposition, String> {
    let mut exp = Exposition::default();
    for (n, line) in text.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), _) if is_metric_name(name) => {}
                (Some("TYPE"), Some(name), Some(t)) if is_metric_name(name) => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        return Err(err(format!("unknown type {t}")));
                    }
                    if exp.types.insert(name.to_owned(), t.to_owned()).is_some() {
                        return Err(err("TYPE given twice".into()));
                    }
                }
                _ => return Err(err("malformed comment".into())),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| err("no value".into()))?;
        let value = parse_value(value).ok_or_else(|| err("bad value".into()))?;
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .ok_or_else(|| err("labels not closed".into()))?;
                (name, parse_labels(inner).map_err(err)?)
            }
            None => (series, BTreeMap::new()),
        };
        if !is_metric_name(name) {
            return Err(err("bad metric name".into()));
        }
        if family_of(name, &exp.types).is_none() {
            return Err(err("sample without a TYPE line before it".into()));
        }
        if name.ends_with("_bucket") && !labels.contains_key("le") {
            return Err(err("bucket without le".into()));
        }
        exp.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    check_histograms(&exp)?;
    Ok(exp)
}

fn check_histograms(exp: &Exposition) -> Result<(), String> {
    for (family, t) in &exp.types {
        if t != "histogram" {
            continue;
        }
        let bucket = format!("{family}_bucket");
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for s in exp.samples.iter().filter(|s| s.name == bucket) {
            let mut key = s.labels.clone();
            let le = parse_value(&key.remove("le").expect("checked")).ok_or("bad le")?;
            series.entry(key).or_default().push((le, s.value));
        }
        for (labels, buckets) in series {
            let mut prev = (f64::NEG_INFINITY, 0.0);
            for &(le, count) in &buckets {
                if le <= prev.0 || count < prev.1 {
                    return Err(format!("{family}{labels:?}: buckets not cumulative"));
                }
                prev = (le, count);
            }
            let count_labels: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let count = exp
                .get(&format!("{family}_count"), &count_labels)
                .ok_or_else(|| format!("{family}{labels:?}: no _count"))?;
            if prev.0 != f64::INFINITY || prev.1 != count {
                return Err(format!("{family}{labels:?}: +Inf bucket != _count"));
            }
        }
    }
    Ok(())
}

/// GET /metrics, parsed strictly (a parse failure fails the test).
pub fn scrape(addr: SocketAddr) -> Exposition {
    let resp = get(addr, "/metrics");
    assert_eq!(resp.status, 200, "{}", resp.text());
    parse_exposition(&resp.text()).unwrap_or_else(|e| panic!("invalid exposition: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The real binary

/// The real `aiops-demo-app` binary, killed by pid when dropped.
pub struct Binary {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Binary {
    /// Starts the binary on 127.0.0.1:0 with a configuration file holding `config_toml`,
    /// extra `args` and `env`, and waits (bounded) for its "listening on" line.
    pub fn start(config_toml: &str, args: &[&str], env: &[(&str, &str)]) -> Binary {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Binary::start_raw(config_toml, &all, env)
    }

    /// Like [`Binary::start`] without the `--listen` flag.
    pub fn start_raw(config_toml: &str, args: &[&str], env: &[(&str, &str)]) -> Binary {
        let dir = tempfile::tempdir().expect("temp dir");
        let config: PathBuf = dir.path().join("config.toml");
        std::fs::write(&config, config_toml).expect("write config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aiops-demo-app"));
        cmd.arg("--config")
            .arg(&config)
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("AIOPS_DEMO_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn aiops-demo-app");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().expect("piped stderr");
        let lines = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(addr);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let mut binary = Binary {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr,
            _dir: dir,
        };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => binary.addr = a.parse().expect("address in the listening line"),
            Err(_) => panic!(
                "the binary did not report its address; stderr: {:?}",
                binary.stderr.lock().unwrap()
            ),
        }
        binary
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits"))
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).expect("signal our own child");
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
