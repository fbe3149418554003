//! `bench-recommend`: wall time of one `aiops recommend --alert HighErrorRatio` run against a
//! local Prometheus + Alertmanager, side by side in the same run with a Python recommender of
//! the seed's design (python3 + requests: 4 instant queries, a state file, a POST to a local
//! Slack-protocol sink).
//!
//! Usage (see docs/BENCHMARKS.md):
//!   cargo build --release -p aiops -p aiops-bench
//!   target/release/bench-recommend [--runs 30] [--aiops target/release/aiops] [--compare OLD]
//!
//! The timed commands run interleaved (one run of each in turn), so load that drifts during the
//! bench hits all of them alike. `--compare` times a second aiops binary (e.g. a build of an
//! older commit) in the same rounds; `--hold-secs` keeps the stack up and prints how to reach it
//! instead of timing, for profiling by hand.
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
    /// A second aiops binary timed in the same rounds (e.g. one built from an older commit).
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Do not time anything: print the config path, keep Prometheus and Alertmanager up this
    /// many seconds (or until Enter), then stop them.
    #[arg(long)]
    hold_secs: Option<u64>,
}

/// The seed's recommender: four instant queries, a state file, a Slack POST.
const PYTHON_RECOMMENDER: &str = r#"
import json, sys, time
import requests

prom, slack, state = sys.argv[1], sys.argv[2], sys.argv[3]
job = 'aiops-demo-app'
queries = {
    'error_ratio': f'job:http_request_error_ratio:rate30s{{job="{job}"}}',
    'latency_p99': f'job:http_request_duration_seconds:p99_30s{{job="{job}"}}',
    'cpu': f'job:process_cpu_seconds:rate30s{{job="{job}"}}',
    'request_rate': f'job:http_requests:rate30s{{job="{job}"}}',
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

/// Runs every command 3 times as a warm-up (each must succeed), then `runs` rounds of one timed
/// run of each command in turn. Returns each command's times, sorted.
fn time_interleaved(
    runs: usize,
    cmds: &mut [&mut dyn FnMut() -> Command],
) -> anyhow::Result<Vec<Vec<Duration>>> {
    for _ in 0..3 {
        for cmd in cmds.iter_mut() {
            let out = cmd().output()?;
            if !out.status.success() {
                bail!(
                    "warm-up run failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    let mut times = vec![Vec::with_capacity(runs); cmds.len()];
    for _ in 0..runs {
        for (cmd, times) in cmds.iter_mut().zip(&mut times) {
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
    }
    for t in &mut times {
        t.sort();
    }
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
    for bin in std::iter::once(&args.aiops).chain(&args.compare) {
        if !bin.is_file() {
            bail!(
                "{} not found: build it first with `cargo build --release -p aiops`",
                bin.display()
            );
        }
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
    let starts_at = incident.incident_at + chrono::Duration::minutes(1);
    testkit::post_alert(&am.url, &labels, &BTreeMap::new(), starts_at)?;
    // Alertmanager resolves an alert without endsAt after its resolve_timeout (5 min): keep it
    // firing, as Prometheus would, for as long as the bench runs.
    let (stop_refresh, stopped) = std::sync::mpsc::channel::<()>();
    let refresher = {
        let am_url = am.url.clone();
        std::thread::spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(Duration::from_secs(60))
            {
                if let Err(e) = testkit::post_alert(&am_url, &labels, &BTreeMap::new(), starts_at) {
                    eprintln!("cannot re-post the alert to keep it firing: {e}");
                }
            }
        })
    };
    let result = run_bench(&args, dir.path(), &prom.url, &am.url);
    drop(stop_refresh);
    let _ = refresher.join();
    result
}

fn run_bench(args: &Args, dir: &Path, prom_url: &str, am_url: &str) -> anyhow::Result<()> {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[prometheus]\nurl = {:?}\n[alertmanager]\nurl = {:?}\n",
            dir.join("state"),
            prom_url,
            am_url
        ),
    )?;
    if let Some(secs) = args.hold_secs {
        println!(
            "Prometheus {} and Alertmanager {} (one firing HighErrorRatio) are up for {secs} s; try:\n  {} --config {} recommend --alert HighErrorRatio",
            prom_url,
            am_url,
            args.aiops.display(),
            config.display()
        );
        // Until the time is up or a line arrives on stdin (EOF, e.g. from /dev/null, does not
        // stop it, so the mode also works in the background).
        let (line_tx, line_rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).unwrap_or(0) > 0 {
                let _ = line_tx.send(());
            }
            // On EOF the sender stays alive so the wait below runs to its timeout.
            std::mem::forget(line_tx);
        });
        let _ = line_rx.recv_timeout(Duration::from_secs(secs));
        return Ok(());
    }
    let (slack, posts) = slack_sink()?;
    eprintln!("preparing python3 + requests ...");
    let python = python_with_requests(dir, args.python.clone())?;
    // The same service watched without configured profiles: the engine detects them from the
    // job's metric names first (one more request to Prometheus).
    let config_detect = dir.join("config-detect.toml");
    std::fs::write(
        &config_detect,
        format!(
            "{}[watch.aiops-demo-app]\nunit = \"aiops-demo-app.service\"\njob = \"aiops-demo-app\"\nallowed_actions = [\"restart\", \"clear-cache\"]\nalert_rules = false\n",
            std::fs::read_to_string(&config)?
        ),
    )?;
    let script = dir.join("recommender.py");
    std::fs::write(&script, PYTHON_RECOMMENDER)?;
    let state = dir.join("state.json");

    let aiops_cmd_with = |bin: &Path, config: &Path| {
        let mut c = Command::new(bin);
        c.arg("--config")
            .arg(config)
            .args(["recommend", "--alert", "HighErrorRatio"])
            .env("RUST_LOG", "warn");
        c
    };
    let aiops_cmd = |bin: &Path| aiops_cmd_with(bin, &config);
    let mut rust = || aiops_cmd(&args.aiops);
    let mut rust_detect = || aiops_cmd_with(&args.aiops, &config_detect);
    let mut rust_compare = || aiops_cmd(args.compare.as_deref().unwrap_or(&args.aiops));
    let mut py = || {
        let mut c = Command::new(&python);
        c.arg(&script).arg(prom_url).arg(&slack).arg(&state);
        c
    };
    let mut py_noop = || {
        let mut c = Command::new(&python);
        c.args(["-c", "import requests"]);
        c
    };
    let mut names = vec![format!(
        "`aiops recommend --alert HighErrorRatio` (Rust, {}: the demo app's configured profile, 18 evidence items, 2 batched queries + Alertmanager, the unit read from systemd)",
        args.aiops.display()
    )];
    names.push(
        "the same with the profiles detected (no `profiles` in its [watch] entry: one more request)"
            .into(),
    );
    let mut cmds: Vec<&mut dyn FnMut() -> Command> = vec![&mut rust, &mut rust_detect];
    if let Some(old) = &args.compare {
        names.push(format!("the same with {}", old.display()));
        cmds.push(&mut rust_compare);
    }
    names.push("Python seed design (python3 + requests: 4 queries, state file, Slack POST)".into());
    names.push("  of which `python3 -c 'import requests'` alone".into());
    cmds.push(&mut py);
    cmds.push(&mut py_noop);

    eprintln!(
        "timing {} interleaved rounds of {} commands ...",
        args.runs,
        cmds.len()
    );
    let load_before = load_average();
    let times = time_interleaved(args.runs, &mut cmds)?;
    let load_after = load_average();
    let sent = posts.load(std::sync::atomic::Ordering::Relaxed);
    if sent < args.runs + 3 {
        bail!(
            "the Python recommender posted {sent} Slack messages, expected {}",
            args.runs + 3
        );
    }

    println!("| recommender | median | p90 | min |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, t) in names.iter().zip(&times) {
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.1} ms |",
            ms(pct(t, 0.5)),
            ms(pct(t, 0.9)),
            ms(t[0])
        );
    }
    println!(
        "\nruns: {} interleaved rounds after 3 warm-ups; Prometheus {} and Alertmanager {} on loopback; load average {load_before} before, {load_after} after",
        args.runs, prom_url, am_url
    );
    Ok(())
}

/// The 1-minute load average, to say how busy the machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}
