//! Test helpers that read like the domain: a Slack-protocol sink, a receiver on port 0,
//! notification builders, and a child process that is killed on every exit path.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiops_webhook::{Advisor, Options};
use serde_json::{Value, json};

pub use aiops_testkit::slack::{Behavior, Sink};
pub use aiops_testkit::wait_until;

pub const TOKEN: &str = "s3cret-token-for-tests";

/// One alert of a notification.
#[derive(Debug, Clone)]
pub struct A {
    pub fingerprint: String,
    pub firing: bool,
    pub starts_at: &'static str,
}

pub fn alert(fp: &str) -> A {
    A {
        fingerprint: fp.to_owned(),
        firing: true,
        starts_at: "2026-11-28T12:03:00Z",
    }
}

impl A {
    pub fn resolved(mut self) -> Self {
        self.firing = false;
        self
    }
}

/// A version-4 payload for group `group` (also its alertname) with `alerts`.
pub fn payload(group: &str, alerts: &[A]) -> Value {
    let all_resolved = alerts.iter().all(|a| !a.firing);
    let status = if all_resolved { "resolved" } else { "firing" };
    json!({
        "receiver": "aiops",
        "status": status,
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{group}\"}}"),
        "truncatedAlerts": 0,
        "groupLabels": {"alertname": group},
        "commonLabels": {"alertname": group, "service": "aiops-demo-app", "severity": "critical", "unit": "aiops-demo-app.service"},
        "commonAnnotations": {"summary": format!("{group} is happening"), "description": "Something is wrong."},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": alerts.iter().map(|a| json!({
            "status": if a.firing { "firing" } else { "resolved" },
            "labels": {"alertname": group, "service": "aiops-demo-app", "severity": "critical", "instance": format!("host-{}", a.fingerprint)},
            "annotations": {"summary": format!("{group} is happening")},
            "startsAt": a.starts_at,
            "endsAt": if a.firing { "0001-01-01T00:00:00Z" } else { "2026-11-28T12:10:00Z" },
            "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=up",
            "fingerprint": a.fingerprint,
        })).collect::<Vec<_>>(),
    })
}

/// A blocking HTTP client that never treats a status as an error.
pub fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// What a request got back.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<String>,
}

pub fn post_raw(
    addr: SocketAddr,
    path: &str,
    content_type: Option<&str>,
    token: Option<&str>,
    body: &[u8],
) -> Answer {
    let mut req = client().post(format!("http://{addr}{path}"));
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let mut resp = req.send(body).unwrap_or_else(|e| {
        panic!(
            "POST {path} (content type {content_type:?}, token {}) got no answer: {e}",
            token.is_some()
        )
    });
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        retry_after,
    }
}

/// POSTs a notification with the right token and content type.
pub fn post(addr: SocketAddr, body: &Value) -> Answer {
    post_raw(
        addr,
        "/",
        Some("application/json"),
        Some(TOKEN),
        body.to_string().as_bytes(),
    )
}

pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut resp = client()
        .get(format!("http://{addr}{path}"))
        .call()
        .expect("the receiver answers");
    (
        resp.status().as_u16(),
        resp.body_mut().read_to_string().unwrap_or_default(),
    )
}

/// The value of a metric sample line (exact name with labels), e.g.
/// `aiops_slack_deliveries_total{outcome="dropped"}`.
pub fn metric(addr: SocketAddr, sample: &str) -> f64 {
    let (_, text) = get(addr, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Writes a configuration for a receiver with the token and (optionally) the sink's URL, with
/// retries capped at 1 s.
pub fn write_config(dir: &Path, slack_url: Option<&str>, extra: &str) -> PathBuf {
    write_config_with_backoff(dir, slack_url, extra, Some(1))
}

/// [`write_config`] with retries capped at `max_backoff_secs` (`None`: the shipped default).
pub fn write_config_with_backoff(
    dir: &Path,
    slack_url: Option<&str>,
    extra: &str,
    max_backoff_secs: Option<u64>,
) -> PathBuf {
    let token = dir.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    // The control socket lives in the test's own directory, and Prometheus and Alertmanager
    // point at the discard port (connection refused at once): the real advisor then says
    // "monitoring is blind" quickly, which is all these tests need from it.
    let mut text = format!(
        "state_dir = {:?}\n[webhook]\ntoken_file = {:?}\nheader_timeout_secs = 1\nbody_timeout_secs = 1\nshutdown_grace_secs = 5\ndashboard_url = \"http://127.0.0.1:3000/d/aiops\"\ncontrol_socket = {:?}\n{extra}\n[prometheus]\nurl = \"http://127.0.0.1:9\"\ntimeout_ms = 500\n[alertmanager]\nurl = \"http://127.0.0.1:9\"\n",
        dir.join("state"),
        token,
        dir.join("control.sock"),
    );
    if let Some(url) = slack_url {
        let f = dir.join("slack-url");
        std::fs::write(&f, url).unwrap();
        text.push_str(&format!(
            "[slack]\nwebhook_url_file = {f:?}\ntimeout_secs = 2\n"
        ));
        if let Some(secs) = max_backoff_secs {
            text.push_str(&format!("max_backoff_secs = {secs}\n"));
        }
    }
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A receiver running in this process (its own runtime on a thread), on port 0.
pub struct Receiver {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Receiver {
    pub fn start(dir: &Path, slack_url: Option<&str>, advisor: Arc<dyn Advisor>) -> Self {
        Self::start_with(dir, slack_url, advisor, fast_options())
    }

    pub fn start_with(
        dir: &Path,
        slack_url: Option<&str>,
        advisor: Arc<dyn Advisor>,
        options: Options,
    ) -> Self {
        Self::start_with_backoff(dir, slack_url, advisor, options, Some(1))
    }

    /// [`Receiver::start_with`], retries capped at `max_backoff_secs` (`None`: the default).
    pub fn start_with_backoff(
        dir: &Path,
        slack_url: Option<&str>,
        advisor: Arc<dyn Advisor>,
        options: Options,
        max_backoff_secs: Option<u64>,
    ) -> Self {
        Self::start_configured(dir, slack_url, advisor, options, max_backoff_secs, "")
    }

    /// [`Receiver::start_with_backoff`] with `extra` TOML added to the configuration (after
    /// the `[webhook]` keys, so it may open tables of its own).
    pub fn start_configured(
        dir: &Path,
        slack_url: Option<&str>,
        advisor: Arc<dyn Advisor>,
        options: Options,
        max_backoff_secs: Option<u64>,
        extra: &str,
    ) -> Self {
        let config_path = write_config_with_backoff(dir, slack_url, extra, max_backoff_secs);
        let config = aiops_core::Config::load(&config_path).unwrap();
        Self::start_config(dir, config, None, advisor, options)
    }

    /// A receiver with `config` (see [`write_config`]), serving on `listener` when given (so
    /// that its address can go into another component's configuration first) or on port 0.
    pub fn start_config(
        dir: &Path,
        config: aiops_core::Config,
        listener: Option<std::net::TcpListener>,
        advisor: Arc<dyn Advisor>,
        options: Options,
    ) -> Self {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = match listener {
                    Some(l) => {
                        l.set_nonblocking(true).unwrap();
                        tokio::net::TcpListener::from_std(l).unwrap()
                    }
                    None => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
                };
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                aiops_webhook::run_with(listener, config, advisor, options, async {
                    let _ = stop_rx.await;
                })
                .await
                .map_err(|e| e.to_string())
            })
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let r = Self {
            addr,
            dir: dir.to_owned(),
            stop: Some(stop),
            thread: Some(thread),
        };
        wait_until(
            Duration::from_secs(10),
            "the receiver to be healthy",
            || get(addr, "/healthz").0 == 200,
        );
        r
    }

    /// Stops gracefully and returns what `run` returned.
    pub fn stop(mut self) -> Result<(), String> {
        self.stop.take().map(|s| s.send(()));
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Options with short delays for tests.
pub fn fast_options() -> Options {
    Options {
        initial_backoff: Duration::from_millis(50),
        ..Options::default()
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct ChildGuard {
    pub child: Option<Child>,
    pub addr: Option<SocketAddr>,
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ChildGuard {
    /// Starts the real `aiops-webhook` binary with `config`, optionally through `prefix`
    /// (e.g. `prlimit --fsize=...`), and waits for its "listening on" line.
    pub fn webhook(config: &Path, prefix: &[&str]) -> Self {
        let bin = env!("CARGO_BIN_EXE_aiops-webhook");
        let mut cmd = if let Some((first, rest)) = prefix.split_first() {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        } else {
            Command::new(bin)
        };
        cmd.arg("--config")
            .arg(config)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("RUST_LOG", "info")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start aiops-webhook");
        let stderr = child.stderr.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        {
            // Without a Slack URL the messages themselves go to stdout.
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        let _ = tx.send(rest.trim().parse::<SocketAddr>().unwrap());
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let mut guard = Self {
            child: Some(child),
            addr: None,
            log: log.clone(),
        };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => guard.addr = Some(addr),
            Err(_) => panic!(
                "aiops-webhook did not start; its log:\n{}",
                log.lock().unwrap().join("\n")
            ),
        }
        guard
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr.unwrap()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A prefix for [`ChildGuard::webhook`] that runs the receiver in a mount namespace of its own
/// (`unshare -rm`, no root needed) with a tmpfs of `mib` MiB over `state_dir`: a small state
/// volume with real statvfs figures and real ENOSPC. `None` when the host cannot do that.
/// The test reaches the volume through `/proc/PID/root` (see [`ChildGuard::in_namespace`]).
pub fn small_volume(state_dir: &Path, mib: u64) -> Option<Vec<String>> {
    let works = Command::new("unshare")
        .args(["-rm", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        return None;
    }
    std::fs::create_dir_all(state_dir).unwrap();
    let script = format!(
        "mount -t tmpfs -o size={mib}m,mode=0700 aiops-state {state_dir:?} && exec \"$0\" \"$@\""
    );
    Some(vec![
        "unshare".into(),
        "-rm".into(),
        "sh".into(),
        "-c".into(),
        script,
    ])
}

impl ChildGuard {
    /// `path` as the child sees it (through its mount namespace).
    pub fn in_namespace(&self, path: &Path) -> PathBuf {
        let rel = path.strip_prefix("/").unwrap_or(path);
        PathBuf::from(format!("/proc/{}/root", self.pid())).join(rel)
    }
}

/// Bytes in the files under `dir` (recursively).
pub fn du(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map_while(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
