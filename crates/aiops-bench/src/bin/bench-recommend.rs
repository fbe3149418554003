//! `bench-recommend`: wall time of one `aiops recommend --alert HighErrorRatio` run against a
//! local Prometheus + Alertmanager, side by side in the same run with a Python recommender of
//! the seed's design (python3 + requests: 4 instant queries, a state file, a POST to a local
//! Slack-protocol sink).
//!
//! Usage (see docs/BENCHMARKS.md):
//!   cargo build --release -p aiops -p aiops-bench
//!   target/release/bench-recommend [--runs 30] [--aiops target/release/aiops]
//!
//! `requests` is installed from PyPI into a temporary venv unless `--python` names an
//! interpreter that already has it. Everything listens on 127.0.0.1; every process started here
//! is killed by pid on exit.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aiops_diagnosis::testkit::{self, ErrorIncident};
use anyhow::{Context, bail};
use chrono::{DurationRound, Utc};
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// Timed runs of each recommender (after 3 warm-up runs each).
    #[arg(long, default_value_t = 30)]
    runs: usize,
    /// The aiops binary to time (build it with --release).
    #[arg(long, default_value = "target/release/aiops")]
    aiops: PathBuf,
    /// A python3 that has `requests`; default: a temp venv with requests from PyPI.
    #[arg(long)]
    python: Option<PathBuf>,
}

/// The seed's recommender: four instant queries, a state file, a Slack POST.
const PYTHON_RECOMMENDER: &str = r#"
import json, sys, time
import requests

prom, slack, state = sys.argv[1], sys.argv[2], sys.argv[3]
job = 'aiops-demo-app'
queries = {
    'error_ratio': f'job:http_request_error_ratio:rate1m{{job="{job}"}}',
    'latency_p99': f'job:http_request_duration_seconds:p99_1m{{job="{job}"}}',
    'cpu': f'job:process_cpu_seconds:rate1m{{job="{job}"}}',
    'request_rate': f'job:http_requests:rate1m{{job="{job}"}}',
}
values = {}
for key, q in queries.items():
    r = requests.get(f'{prom}/api/v1/query', params={'query': q}, timeout=3)
    r.raise_for_status()
    res = r.json()['data']['result']
    values[key] = float(res[0]['value'][1]) if res else None
if values['error_ratio'] and values['error_ratio'] > 0.05:
    rec = {'action': 'restart', 'unit': 'aiops-demo-app.service',
           'reason': f"error ratio {values['error_ratio']:.1%}"}
else:
    rec = {'action': None, 'reason': 'nothing abnormal'}
with open(state, 'w') as f:
    json.dump({'ts': time.time(), 'values': values, 'recommendation': rec}, f)
requests.post(slack, json={'text': f"Recommendation: {rec}"}, timeout=3).raise_for_status()
print(json.dumps(rec))
"#;

/// A Slack incoming-webhook stand-in: answers every POST `ok` and counts them.
fn slack_sink() -> anyhow::Result<(String, std::sync::Arc<std::sync::atomic::AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/services/T000/B000/XXXX", listener.local_addr()?);
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(s.try_clone().expect("clone"));
            let mut len = 0usize;
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len.min(1 << 20)];
            let _ = reader.read_exact(&mut body);
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
            );
        }
    });
    Ok((url, count))
}

fn python_with_requests(dir: &Path, explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let venv = dir.join("venv");
    let st = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .context("python3 -m venv")?;
    if !st.success() {
        bail!("python3 -m venv failed");
    }
    let st = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "requests",
        ])
        .status()
        .context("pip install requests")?;
    if !st.success() {
        bail!(
            "pip install requests failed (PyPI unreachable?); pass --python with one that has it"
        );
    }
    Ok(venv.join("bin/python"))
}

fn time_runs(runs: usize, mut cmd: impl FnMut() -> Command) -> anyhow::Result<Vec<Duration>> {
    for _ in 0..3 {
        let out = cmd().output()?;
        if !out.status.success() {
            bail!(
                "warm-up run failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut c = cmd();
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let t = Instant::now();
        let st = c.status()?;
        times.push(t.elapsed());
        if !st.success() {
            bail!("a timed run failed with {st}");
        }
    }
    times.sort();
    Ok(times)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.aiops.is_file() {
        bail!(
            "{} not found: build it first with `cargo build --release -p aiops`",
            args.aiops.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../prometheus/rules.yml");
    let end = (Utc::now() - chrono::Duration::seconds(30))
        .duration_trunc(chrono::Duration::seconds(15))?;
    let start = end - chrono::Duration::minutes(80);
    let incident = ErrorIncident {
        job: "aiops-demo-app".into(),
        instance: "127.0.0.1:8080".into(),
        start,
        incident_at: end - chrono::Duration::minutes(10),
        end,
        rps: 12.0,
        error_ratio: 0.25,
        process_start: start - chrono::Duration::hours(3),
        step_secs: 15,
    };
    eprintln!("starting Prometheus with a backfilled incident and Alertmanager ...");
    let prom = testkit::prometheus_with_history(
        &dir.path().join("prom"),
        &incident.openmetrics(None),
        &rules,
        start,
        end,
    )
    .context("prometheus/promtool not on PATH")??;
    let am = testkit::start_alertmanager(&dir.path().join("am"), testkit::QUIET_ALERTMANAGER)
        .context("alertmanager not on PATH")??;
    let labels: BTreeMap<String, String> = [
        ("alertname", "HighErrorRatio"),
        ("job", "aiops-demo-app"),
        ("service", "aiops-demo-app"),
        ("severity", "critical"),
        ("unit", "aiops-demo-app.service"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    testkit::post_alert(
        &am.url,
        &labels,
        &BTreeMap::new(),
        incident.incident_at + chrono::Duration::minutes(1),
    )?;
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[prometheus]\nurl = {:?}\n[alertmanager]\nurl = {:?}\n",
            dir.path().join("state"),
            prom.url,
            am.url
        ),
    )?;
    let (slack, posts) = slack_sink()?;
    eprintln!("preparing python3 + requests ...");
    let python = python_with_requests(dir.path(), args.python.clone())?;
    let script = dir.path().join("recommender.py");
    std::fs::write(&script, PYTHON_RECOMMENDER)?;
    let state = dir.path().join("state.json");

    eprintln!("timing {} runs each ...", args.runs);
    let rust = time_runs(args.runs, || {
        let mut c = Command::new(&args.aiops);
        c.arg("--config")
            .arg(&config)
            .args(["recommend", "--alert", "HighErrorRatio"])
            .env("RUST_LOG", "warn");
        c
    })?;
    let py = time_runs(args.runs, || {
        let mut c = Command::new(&python);
        c.arg(&script).arg(&prom.url).arg(&slack).arg(&state);
        c
    })?;
    let py_noop = time_runs(args.runs, || {
        let mut c = Command::new(&python);
        c.args(["-c", "import requests"]);
        c
    })?;
    let sent = posts.load(std::sync::atomic::Ordering::Relaxed);
    if sent < args.runs + 3 {
        bail!(
            "the Python recommender posted {sent} Slack messages, expected {}",
            args.runs + 3
        );
    }

    println!("| recommender | median | p90 | min |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, t) in [
        (
            "`aiops recommend --alert HighErrorRatio` (Rust, 16 evidence items, 24 concurrent queries + Alertmanager)",
            &rust,
        ),
        (
            "Python seed design (python3 + requests: 4 queries, state file, Slack POST)",
            &py,
        ),
        ("  of which `python3 -c 'import requests'` alone", &py_noop),
    ] {
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.1} ms |",
            ms(pct(t, 0.5)),
            ms(pct(t, 0.9)),
            ms(t[0])
        );
    }
    println!(
        "\nruns: {} each after 3 warm-ups; Prometheus {} and Alertmanager {} on loopback",
        args.runs, prom.url, am.url
    );
    Ok(())
}
