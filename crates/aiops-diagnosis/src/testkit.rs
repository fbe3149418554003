//! Real Prometheus and Alertmanager processes for tests and benchmarks (feature `testkit`).
//!
//! Each server runs on loopback, on a port the kernel picks (`127.0.0.1:0`; the bound address is
//! read from the server's own log line), in a temp directory, and is killed by pid when its
//! handle drops. Binaries are found on `$PATH` under Debian's and Nix's names (the first
//! directory that has one wins, so a directory put first selects a version); when one is missing,
//! or the run is hermetic (`AIOPS_TESTS=hermetic`), the constructor returns `None` and the caller
//! reports it with `aiops_testkit::tools::missing`, which fails the test when tools are required.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aiops_testkit::tools::find;
use chrono::{DateTime, Utc};

/// How long a server may take to start listening (a loaded 2-core CI machine is slow).
const START_TIMEOUT: Duration = Duration::from_secs(60);

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
    let bin = find(&["prometheus"])?;
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
    let promtool = find(&["promtool"]).ok_or_else(|| {
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
    let bin = find(&["prometheus-alertmanager", "alertmanager"])?;
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

/// A recorded history of the demo app for backfilling: steady traffic for a baseline period,
/// then an error incident (a share of requests fail and the `errors` fault is on).
#[derive(Debug, Clone)]
pub struct ErrorIncident {
    pub job: String,
    pub instance: String,
    /// First sample.
    pub start: DateTime<Utc>,
    /// When the errors begin.
    pub incident_at: DateTime<Utc>,
    /// Last sample.
    pub end: DateTime<Utc>,
    /// Requests per second, before and during the incident.
    pub rps: f64,
    /// Share of requests that fail during the incident.
    pub error_ratio: f64,
    /// When the process started (before `start`: no restart in the window).
    pub process_start: DateTime<Utc>,
    /// Scrape interval of the recording.
    pub step_secs: i64,
}

impl ErrorIncident {
    /// OpenMetrics text (what `promtool tsdb create-blocks-from openmetrics` reads), including
    /// the `up` series a scrape would have written. `dead_job`, if given, is a second job whose
    /// `up` is 0 throughout.
    pub fn openmetrics(&self, dead_job: Option<&str>) -> String {
        let step = self.step_secs.max(1);
        let times: Vec<i64> = (0..)
            .map(|i| self.start.timestamp() + i * step)
            .take_while(|t| *t <= self.end.timestamp())
            .collect();
        let t_inc = self.incident_at.timestamp();
        // Cumulative counts at each time, integrating piecewise-constant rates.
        let ok_rate = |t: i64| {
            if t >= t_inc {
                self.rps * (1.0 - self.error_ratio)
            } else {
                self.rps
            }
        };
        let err_rate = |t: i64| {
            if t >= t_inc {
                self.rps * self.error_ratio
            } else {
                0.0
            }
        };
        let cumulative = |rate: &dyn Fn(i64) -> f64| -> Vec<f64> {
            let mut acc = 1000.0;
            times
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    if i > 0 {
                        acc += rate(*t) * step as f64;
                    }
                    acc
                })
                .collect()
        };
        let ok = cumulative(&ok_rate);
        let err = cumulative(&err_rate);
        let base = format!("job=\"{}\",instance=\"{}\"", self.job, self.instance);
        let series = |name: &str, labels: &str, values: &dyn Fn(usize, i64) -> f64| {
            let mut out = String::new();
            for (i, t) in times.iter().enumerate() {
                out.push_str(&format!("{name}{{{labels}}} {} {t}\n", values(i, *t)));
            }
            out
        };
        let mut text = String::new();
        // Families must be contiguous; each `series` call appends one series.
        text.push_str("# TYPE http_requests counter\n");
        text.push_str(&series(
            "http_requests_total",
            &format!("{base},method=\"GET\",route=\"/\",status=\"200\""),
            &|i, _| ok[i],
        ));
        text.push_str(&series(
            "http_requests_total",
            &format!("{base},method=\"GET\",route=\"/\",status=\"500\""),
            &|i, _| err[i],
        ));
        // Every request takes under 5 ms: p50 and p99 sit in the first bucket.
        text.push_str("# TYPE http_request_duration_seconds histogram\n");
        let total: Vec<f64> = ok.iter().zip(&err).map(|(a, b)| a + b).collect();
        for le in ["0.005", "0.05", "0.25", "1.0", "+Inf"] {
            text.push_str(&series(
                "http_request_duration_seconds_bucket",
                &format!("{base},method=\"GET\",route=\"/\",le=\"{le}\""),
                &|i, _| total[i],
            ));
        }
        text.push_str(&series(
            "http_request_duration_seconds_count",
            &format!("{base},method=\"GET\",route=\"/\""),
            &|i, _| total[i],
        ));
        text.push_str(&series(
            "http_request_duration_seconds_sum",
            &format!("{base},method=\"GET\",route=\"/\""),
            &|i, _| total[i] * 0.002,
        ));
        let t0 = times[0];
        text.push_str("# TYPE process_cpu_seconds counter\n");
        text.push_str(&series("process_cpu_seconds_total", &base, &|_, t| {
            5.0 + 0.04 * (t - t0) as f64
        }));
        text.push_str("# TYPE process_resident_memory_bytes gauge\n");
        text.push_str(&series("process_resident_memory_bytes", &base, &|_, _| {
            41_943_040.0
        }));
        text.push_str("# TYPE process_start_time_seconds gauge\n");
        let started = self.process_start.timestamp() as f64;
        text.push_str(&series("process_start_time_seconds", &base, &|_, _| {
            started
        }));
        text.push_str("# TYPE demo_fault_active gauge\n");
        for kind in ["errors", "cpu", "latency", "leak"] {
            text.push_str(&series(
                "demo_fault_active",
                &format!("{base},kind=\"{kind}\""),
                &|_, t| {
                    if kind == "errors" && t >= t_inc {
                        1.0
                    } else {
                        0.0
                    }
                },
            ));
        }
        text.push_str("# TYPE demo_cache_entries gauge\n");
        text.push_str(&series("demo_cache_entries", &base, &|_, _| 3000.0));
        text.push_str("# TYPE demo_cache_capacity gauge\n");
        text.push_str(&series("demo_cache_capacity", &base, &|_, _| 10000.0));
        text.push_str("# TYPE demo_cache_hits counter\n");
        text.push_str(&series("demo_cache_hits_total", &base, &|i, _| ok[i] * 0.9));
        text.push_str("# TYPE demo_cache_misses counter\n");
        text.push_str(&series("demo_cache_misses_total", &base, &|i, _| {
            ok[i] * 0.1
        }));
        text.push_str("# TYPE up gauge\n");
        text.push_str(&series("up", &base, &|_, _| 1.0));
        if let Some(dead) = dead_job {
            text.push_str(&series(
                "up",
                &format!("job=\"{dead}\",instance=\"127.0.0.1:1\""),
                &|_, _| 0.0,
            ));
        }
        text.push_str("# EOF\n");
        text
    }
}

/// Backfills the recording rules of `rules_file` over `[start, end]` by evaluating them against
/// `server` (`promtool tsdb create-blocks-from rules`), writing blocks into `data`. Restart the
/// server afterwards so it loads them.
pub fn backfill_rules(
    server: &Server,
    rules_file: &Path,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    eval_interval: &str,
    data: &Path,
) -> std::io::Result<()> {
    let promtool = find(&["promtool"]).ok_or_else(|| {
        std::io::Error::other("promtool is not on PATH (it ships with prometheus)")
    })?;
    let out_dir = data.with_file_name(format!(
        "rules-out-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let _ = fs::remove_dir_all(&out_dir);
    let out = Command::new(promtool)
        .args(["tsdb", "create-blocks-from", "rules"])
        .arg(format!("--start={}", start.timestamp()))
        .arg(format!("--end={}", end.timestamp()))
        .arg(format!("--url={}", server.url))
        .arg(format!("--eval-interval={eval_interval}"))
        .arg(format!("--output-dir={}", out_dir.display()))
        .arg(rules_file)
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "promtool rules backfill failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    for entry in fs::read_dir(&out_dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            fs::rename(entry.path(), data.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Prometheus holding `history` (raw series *and* recording rules from `rules_file`, evaluated
/// over the whole history), with `rules_file` loaded and a long lookback so that "now" sees the
/// last recorded samples. `None` if prometheus/promtool are missing.
pub fn prometheus_with_history(
    dir: &Path,
    openmetrics: &str,
    rules_file: &Path,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Option<std::io::Result<Server>> {
    find(&["promtool"])?;
    let rules = fs::read_to_string(rules_file).ok()?;
    let raw = PrometheusSpec {
        config: "global:\n  evaluation_interval: 1h\n".into(),
        openmetrics: Some(openmetrics.to_owned()),
        lookback_delta: Some("1h".into()),
        ..Default::default()
    };
    let data = dir.join("data");
    // Two passes: promtool evaluates rules against the server, so a rule built on another
    // recording rule (the error ratio) only sees that rule's output once it has been loaded.
    let mut spec = raw;
    for _pass in 0..2 {
        let server = match start_prometheus(dir, &spec)? {
            Ok(s) => s,
            Err(e) => return Some(Err(e)),
        };
        if let Err(e) = backfill_rules(&server, rules_file, start, end, "15s", &data) {
            return Some(Err(e));
        }
        drop(server);
        spec.openmetrics = None;
    }
    let with_rules = PrometheusSpec {
        config: "global:\n  evaluation_interval: 1h\nrule_files: [rules.yml]\n".into(),
        files: [("rules.yml".to_owned(), rules)].into(),
        openmetrics: None,
        lookback_delta: Some("1h".into()),
    };
    start_prometheus(dir, &with_rules)
}

/// A unit snapshot from `systemctl show` and `journalctl` output recorded on a real host
/// (tests/systemd/: myapp OOM-killed, then dumping core), its journal read from 03:00 UTC on
/// 2026-12-02 and collected at `at`.
pub fn recorded_unit_snapshot(at: DateTime<Utc>) -> aiops_core::model::UnitSnapshot {
    use crate::unit_state::{
        JournalReading, Limits, ShowReading, StartLimitCheck, UnitEvidence, journal_command,
        parse_show, show_command, summarize_journal,
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/systemd");
    let unit = aiops_core::unit::UnitName::parse("myapp.service").expect("a valid unit name");
    let read =
        |name: &str| fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let show = read("show-myapp-oom-killed.txt");
    let journal = read("journal-myapp-oom-coredump.json");
    let since: DateTime<Utc> = "2026-12-02T03:00:00Z".parse().expect("a valid time");
    let state = parse_show(&show).expect("the recorded output parses");
    let summary = summarize_journal(journal.lines(), since, &Limits::default());
    let start_limit = StartLimitCheck::assess(Some(&state), Some(&summary), at);
    UnitEvidence {
        unit: unit.clone(),
        collected_at: at,
        show: Ok(ShowReading {
            command: show_command(Path::new("systemctl"), &unit),
            state,
        }),
        journal: Ok(JournalReading {
            command: journal_command(Path::new("journalctl"), &unit, since, 1000),
            summary,
        }),
        start_limit,
        dependencies: None,
    }
    .snapshot()
}
