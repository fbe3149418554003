//! Real Prometheus and Alertmanager processes for tests and benchmarks (feature `testkit`).
//!
//! Each server runs on loopback, on a port the kernel picks (`127.0.0.1:0`; the bound address is
//! read from the server's own log line), in a temp directory, and is killed by pid when its
//! handle drops. Binaries are found on `$PATH` under Debian's and Nix's names; when one is
//! missing the constructor returns `None` so the caller can print why it skips.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// How long a server may take to start listening (a loaded 2-core CI machine is slow).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Finds the first of `names` on `$PATH`.
pub fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in names {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// A running server process; killed (by pid) and reaped on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Where its log goes (kept in the temp dir for post-mortems).
    pub log: PathBuf,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd` with its stderr piped, waits (bounded) for the exporter-toolkit line
/// `msg="Listening on" address=HOST:PORT`, and returns the running server.
fn spawn_listening(mut cmd: Command, log: PathBuf) -> std::io::Result<Server> {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = mpsc::channel::<String>();
    let log_path = log.clone();
    // The reader thread copies the log to a file for post-mortems and reports the address once.
    std::thread::spawn(move || {
        let mut file = fs::File::create(&log_path).ok();
        let mut sent = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(f) = file.as_mut() {
                use std::io::Write;
                let _ = writeln!(f, "{line}");
            }
            if !sent && line.contains("msg=\"Listening on\"") {
                if let Some(addr) = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("address="))
                {
                    let _ = tx.send(addr.to_owned());
                    sent = true;
                }
            }
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(addr) => Ok(Server {
            child,
            url: format!("http://{addr}"),
            log,
        }),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let tail = fs::read_to_string(&log).unwrap_or_default();
            Err(std::io::Error::other(format!(
                "the server did not report a listening address within {START_TIMEOUT:?}; its log:\n{tail}"
            )))
        }
    }
}

/// Polls `url` (GET) until it answers 200, at most `timeout`.
pub fn wait_ready(url: &str, timeout: Duration) -> std::io::Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .http_status_as_error(false)
        .build()
        .into();
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Ok(r) = agent.get(url).call() {
            if r.status() == 200 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(std::io::Error::other(format!(
                "{url} did not answer 200 within {timeout:?}"
            )));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// A Prometheus to start: config text, rule files, and optionally a TSDB to backfill first.
#[derive(Debug, Default)]
pub struct PrometheusSpec {
    /// `prometheus.yml` text; `rule_files` should name files written through `files`.
    pub config: String,
    /// Extra files written into the directory first (rule files), name → content.
    pub files: BTreeMap<String, String>,
    /// OpenMetrics text (ending in `# EOF`) to backfill with `promtool tsdb create-blocks-from
    /// openmetrics` before the server starts.
    pub openmetrics: Option<String>,
    /// Passed as `--query.lookback-delta` (default Prometheus' 5m).
    pub lookback_delta: Option<String>,
}

/// Starts Prometheus in `dir` (`None` if the binary is missing).
pub fn start_prometheus(dir: &Path, spec: &PrometheusSpec) -> Option<std::io::Result<Server>> {
    let bin = find_binary(&["prometheus"])?;
    Some((|| {
        fs::create_dir_all(dir)?;
        for (name, text) in &spec.files {
            fs::write(dir.join(name), text)?;
        }
        let config = dir.join("prometheus.yml");
        fs::write(&config, &spec.config)?;
        let data = dir.join("data");
        if let Some(om) = &spec.openmetrics {
            backfill(dir, om, &data)?;
        }
        let mut cmd = Command::new(bin);
        cmd.current_dir(dir)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg("--web.listen-address=127.0.0.1:0")
            // Backfilled blocks lie in the past; keep them regardless of age.
            .arg("--storage.tsdb.retention.time=100y");
        if let Some(d) = &spec.lookback_delta {
            cmd.arg(format!("--query.lookback-delta={d}"));
        }
        let server = spawn_listening(cmd, dir.join("prometheus.log"))?;
        wait_ready(&format!("{}/-/ready", server.url), START_TIMEOUT)?;
        Ok(server)
    })())
}

/// Runs `promtool tsdb create-blocks-from openmetrics` into `data`.
fn backfill(dir: &Path, openmetrics: &str, data: &Path) -> std::io::Result<()> {
    let promtool = find_binary(&["promtool"]).ok_or_else(|| {
        std::io::Error::other("promtool is not on PATH (it ships with prometheus)")
    })?;
    let input = dir.join("backfill.om");
    fs::write(&input, openmetrics)?;
    let out = Command::new(promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(data)
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "promtool backfill failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// Starts Alertmanager in `dir` with `config` (`None` if the binary is missing). Clustering is
/// off, so it opens no other port.
pub fn start_alertmanager(dir: &Path, config: &str) -> Option<std::io::Result<Server>> {
    let bin = find_binary(&["prometheus-alertmanager", "alertmanager"])?;
    Some((|| {
        fs::create_dir_all(dir)?;
        let file = dir.join("alertmanager.yml");
        fs::write(&file, config)?;
        let mut cmd = Command::new(bin);
        cmd.current_dir(dir)
            .arg(format!("--config.file={}", file.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg("--web.listen-address=127.0.0.1:0")
            .arg("--cluster.listen-address=");
        let server = spawn_listening(cmd, dir.join("alertmanager.log"))?;
        wait_ready(&format!("{}/-/ready", server.url), START_TIMEOUT)?;
        Ok(server)
    })())
}

/// An Alertmanager configuration that routes everything to a receiver with no integrations
/// (alerts are held and listed by the API, nothing is sent anywhere).
pub const QUIET_ALERTMANAGER: &str = "route:\n  receiver: quiet\nreceivers:\n  - name: quiet\n";

/// Posts one firing alert to Alertmanager's `POST /api/v2/alerts` and waits (bounded) until
/// `GET /api/v2/alerts` lists it as active.
pub fn post_alert(
    am_url: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    starts_at: DateTime<Utc>,
) -> std::io::Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let body = serde_json::json!([{
        "labels": labels,
        "annotations": annotations,
        "startsAt": starts_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "generatorURL": "http://127.0.0.1/graph",
    }]);
    agent
        .post(format!("{am_url}/api/v2/alerts"))
        .send_json(&body)
        .map_err(std::io::Error::other)?;
    let name = labels.get("alertname").cloned().unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed: serde_json::Value = agent
            .get(format!("{am_url}/api/v2/alerts"))
            .call()
            .map_err(std::io::Error::other)?
            .body_mut()
            .read_json()
            .map_err(std::io::Error::other)?;
        let found = listed.as_array().is_some_and(|a| {
            a.iter().any(|x| {
                x["labels"]["alertname"] == name.as_str() && x["status"]["state"] == "active"
            })
        });
        if found {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(std::io::Error::other(format!(
                "alert {name} not active in Alertmanager after 30 s"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
