//! `bench-loop`: the whole loop on a real `aiops demo` (Prometheus, Alertmanager, the demo app
//! and the receiver, as the current user), measured in one run:
//!
//! 1. memory: resident memory of the demo app and of the receiver, idle once the stack has
//!    settled, and under stress (`aiops stress errors` with its traffic, diagnosis, approval,
//!    restart, verification), sampled every 250 ms plus the kernel's high-water mark (`VmHWM`);
//! 2. detection latency, per run: fault on (`aiops stress errors --no-traffic` + `aiops stress
//!    traffic`) → a pending action visible through `aiops --json pending` (polled every 100 ms),
//!    with the moments Prometheus made the alert active, the receiver stored the action, and the
//!    Slack-protocol sink got the message; compared with the configured floor
//!    (`aiops_assets::floor::DETECTION_FLOOR`);
//! 3. approval → verified recovery, per run: the wall time of `aiops approve ID` (restart through
//!    the demo's supervisor, then verification against the alert's own expression).
//!
//! All runs share one demo, spaced so that every fault meets the same state as the first: the
//! previous alert resolved and its notification delivered, Alertmanager's emptied group
//! collected, the cooldown over, and the rate windows holding only the demo's background
//! traffic again. A random delay of up to one scrape interval before each fault spreads the
//! faults over the scrape phase.
//!
//! Usage (see docs/BENCHMARKS.md):
//!   cargo build --release -p aiops -p aiops-webhook -p aiops-demo-app -p aiops-bench
//!   target/release/bench-loop [--runs 5] [--bin-dir target/release]
//!
//! Everything listens on 127.0.0.1 (ports picked free); every process started here is stopped
//! by pid on every exit path.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiops_assets::floor;
use aiops_bench::demo::{self, Demo, DemoOptions, KillOnDrop, slack_text};
use aiops_bench::{Memory, Table, fmt_mib};
use aiops_testkit::slack::Sink;
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::Parser;
use serde_json::Value;

const ALERT: &str = "HighErrorRatio";
const APP: &str = "aiops-demo-app";
const RECEIVER: &str = "aiops-webhook";
const MIB: u64 = 1024 * 1024;
/// Issue 5's targets.
const DETECTION_MARGIN: Duration = Duration::from_secs(2);
const RSS_TARGET: u64 = 30 * MIB;
/// Alertmanager 0.25 removes an emptied aggregation group every 30 s; until then a new alert
/// joins the old group and waits for its group_interval instead of group_wait.
const AM_GROUP_GC: Duration = Duration::from_secs(35);

#[derive(Debug, Parser)]
#[command(about = "The whole loop on a real `aiops demo`: memory, detection, recovery")]
struct Args {
    /// Directory holding aiops, aiops-demo-app and aiops-webhook, built together.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Fault → recommendation → approval runs.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Idle time after the stack is up, before the idle memory is read.
    #[arg(long, default_value_t = 60)]
    settle_secs: u64,
    /// Share of requests the fault fails (`aiops stress errors --ratio`).
    #[arg(long, default_value_t = 0.3)]
    ratio: f64,
    /// Requests per second of the stress traffic (`aiops stress`'s default is 40); 0: none, the
    /// fault meets only the demo's steady background traffic.
    #[arg(long, default_value_t = 40.0)]
    stress_rate: f64,
    /// The demo's own background traffic (`aiops demo --traffic-rate`, default 5).
    #[arg(long, default_value_t = 5.0)]
    demo_traffic_rate: f64,
    /// Minimum time between the end of one run's stress traffic and the next fault, so the
    /// rate windows (1 minute at most) hold only the background traffic again.
    #[arg(long, default_value_t = 75)]
    quiet_secs: u64,
    /// How often `aiops --json pending` is polled.
    #[arg(long, default_value_t = 100)]
    poll_ms: u64,
    /// A name for this run in the report (e.g. "before").
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Starting = 0,
    Idle = 1,
    Stress = 2,
    Quiet = 3,
}

/// One memory sample of the two processes (absent while a process restarts).
#[derive(Debug, Clone, Copy)]
struct Sample {
    phase: u8,
    app: Option<Memory>,
    receiver: Option<Memory>,
}

/// Samples the two processes every 250 ms until stopped.
struct Sampler {
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(demo_pid: u32) -> Sampler {
        let phase = Arc::new(AtomicU8::new(Phase::Starting as u8));
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (phase, stop, samples) = (phase.clone(), stop.clone(), samples.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let tree = aiops_testkit::procs::descendants(demo_pid);
                    let find = |name: &str| {
                        tree.iter()
                            .find(|&&p| aiops_testkit::procs::comm(p).as_deref() == Some(name))
                            .and_then(|&p| aiops_bench::memory(p).ok())
                    };
                    let s = Sample {
                        phase: phase.load(Ordering::Relaxed),
                        app: find(APP),
                        receiver: find(RECEIVER),
                    };
                    samples.lock().expect("sampler lock").push(s);
                    std::thread::sleep(Duration::from_millis(250));
                }
            })
        };
        Sampler {
            phase,
            stop,
            samples,
            thread: Some(thread),
        }
    }

    fn set(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    fn of(&self, phase: Phase) -> Vec<Sample> {
        self.samples
            .lock()
            .expect("sampler lock")
            .iter()
            .filter(|s| s.phase == phase as u8)
            .copied()
            .collect()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What one run measured. Durations are from the fault switched on.
#[derive(Debug)]
struct Run {
    /// Prometheus' `activeAt` of the alert (the first evaluation above the threshold).
    active: Option<f64>,
    /// The action's `created_at` (the receiver stored the recommendation).
    stored: Option<f64>,
    /// `aiops --json pending` first listed it.
    seen: Duration,
    /// The Slack-protocol sink received the message naming `aiops approve ID`.
    sink: Option<Duration>,
    /// The alert's `startsAt` as Alertmanager passed it on, minus `activeAt`.
    starts_at_minus_active: Option<f64>,
    /// Wall time of `aiops approve ID`.
    approve: Duration,
    /// Its outcome sentence ("verified: ...").
    outcome: String,
    verified: bool,
    /// When `aiops approve` started and when the stress traffic stopped.
    approved_at: Instant,
    traffic_stopped: Instant,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let missing = demo::missing_binaries(&args.bin_dir);
    if !missing.is_empty() {
        bail!(
            "{} missing in {}: build them with `cargo build --release -p aiops -p aiops-webhook -p aiops-demo-app` or pass --bin-dir",
            missing.join(", "),
            args.bin_dir.display()
        );
    }
    let bin_dir = std::fs::canonicalize(&args.bin_dir)
        .with_context(|| format!("resolve {}", args.bin_dir.display()))?;
    let load_start = loadavg();
    let versions = [
        tool_version("prometheus"),
        tool_version("alertmanager").or_else(|| tool_version("prometheus-alertmanager")),
    ];

    let dir = tempfile::tempdir().context("create a temporary directory")?;
    let sink = Sink::start();
    let url_file = dir.path().join("slack-url");
    std::fs::write(&url_file, sink.url()).context("write the Slack URL file")?;
    let started = Instant::now();
    let mut demo = Demo::start(&DemoOptions {
        bin_dir: bin_dir.clone(),
        dir: dir.path().to_owned(),
        slack_url_file: url_file,
        traffic_rate: args.demo_traffic_rate,
        ready_timeout: Duration::from_secs(90),
    })
    .context("start aiops demo (is prometheus and alertmanager installed? Debian: apt-get install prometheus prometheus-alertmanager)")?;
    eprintln!(
        "aiops demo ready in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        demo.command_line
    );
    let cooldown = cooldown_secs(&demo.config).unwrap_or(60);
    let sampler = Sampler::start(demo.pid());

    sampler.set(Phase::Idle);
    eprintln!("settling for {} s...", args.settle_secs);
    std::thread::sleep(Duration::from_secs(args.settle_secs));
    let idle = sampler.of(Phase::Idle);

    let mut runs: Vec<Run> = Vec::new();
    for i in 1..=args.runs {
        if let Some(prev) = runs.last() {
            sampler.set(Phase::Quiet);
            wait_quiet(&demo, &sink, prev, runs.len(), &args, cooldown)
                .with_context(|| format!("before run {i}"))?;
        }
        // Spread the faults over the scrape phase.
        let jitter = fastrand::u64(0..floor::SCRAPE_INTERVAL.as_millis() as u64);
        std::thread::sleep(Duration::from_millis(jitter));
        sampler.set(Phase::Stress);
        let run = one_run(&demo, &sink, &args).with_context(|| {
            format!(
                "run {i}; the demo's output ends with:\n{}",
                tail(&demo.output(), 20)
            )
        })?;
        eprintln!(
            "run {i}: detected in {:.1} s (alert active at {}, stored at {}, sink at {}); approve → {} in {:.1} s",
            run.seen.as_secs_f64(),
            secs(run.active),
            secs(run.stored),
            secs(run.sink.map(|d| d.as_secs_f64())),
            run.outcome,
            run.approve.as_secs_f64()
        );
        runs.push(run);
    }
    sampler.set(Phase::Quiet);
    let stress = sampler.of(Phase::Stress);
    drop(sampler);

    let (status, left) = demo.stop(Duration::from_secs(30))?;
    let load_end = loadavg();

    // ---- Report ----
    let floor = floor::DETECTION_FLOOR;
    let bound = floor + DETECTION_MARGIN;
    let label = if args.label.is_empty() {
        String::new()
    } else {
        format!(" ({})", args.label)
    };
    println!("\n## bench-loop{label}\n");
    println!("    {}", demo.command_line);
    let traffic = if args.stress_rate > 0.0 {
        format!(
            "aiops stress traffic --rate {} --duration 5m",
            args.stress_rate
        )
    } else {
        "none but the demo's background".to_owned()
    };
    println!(
        "    fault: aiops stress errors --ratio {} --duration 5m --no-traffic; traffic: {traffic}; the demo's background traffic: {} requests/s",
        args.ratio, args.demo_traffic_rate
    );
    println!(
        "    binaries: {}; {}; load average {} at the start, {} at the end",
        bin_dir.display(),
        versions
            .iter()
            .map(|v| v.clone().unwrap_or_else(|| "?".into()))
            .collect::<Vec<_>>()
            .join(", "),
        load_start,
        load_end
    );
    println!(
        "    floor: scrape {} s + evaluation {} s + for {} s + group_wait {} s = {} s; target floor + {} s = {} s\n",
        floor::SCRAPE_INTERVAL.as_secs(),
        floor::EVALUATION_INTERVAL.as_secs(),
        floor::ALERT_FOR.as_secs(),
        floor::GROUP_WAIT.as_secs(),
        floor.as_secs(),
        DETECTION_MARGIN.as_secs(),
        bound.as_secs()
    );

    let mut t = Table::new(&[
        "run",
        "fault → alert active",
        "fault → action stored",
        "fault → `aiops pending` shows it",
        "fault → Slack sink",
        "within floor + 2 s",
        "approve → verified",
        "outcome",
    ]);
    for (i, r) in runs.iter().enumerate() {
        t.row(vec![
            (i + 1).to_string(),
            secs(r.active),
            secs(r.stored),
            format!("{:.1} s", r.seen.as_secs_f64()),
            secs(r.sink.map(|d| d.as_secs_f64())),
            if r.seen <= bound { "yes" } else { "**no**" }.into(),
            format!("{:.1} s", r.approve.as_secs_f64()),
            r.outcome.clone(),
        ]);
    }
    println!("{}", t.render());

    let seen: Vec<Duration> = runs.iter().map(|r| r.seen).collect();
    let approve: Vec<Duration> = runs.iter().map(|r| r.approve).collect();
    let active: Vec<Duration> = runs
        .iter()
        .filter_map(|r| r.active.map(Duration::from_secs_f64))
        .collect();
    let mut t = Table::new(&["over the runs", "min", "median", "max"]);
    for (name, v) in [
        ("fault → alert active", &active),
        ("fault → `aiops pending` shows it (detection)", &seen),
        ("approve → verified", &approve),
    ] {
        t.row(vec![name.into(), stat(v, 0.0), stat(v, 0.5), stat(v, 1.0)]);
    }
    println!("{}", t.render());
    let within = runs.iter().filter(|r| r.seen <= bound).count();
    let median_seen = aiops_bench::percentile(&seen, 0.5).unwrap_or_default();
    println!(
        "Detection: median {:.1} s against floor {} s + 2 s: {}; {within} of {} runs within.",
        median_seen.as_secs_f64(),
        floor.as_secs(),
        if median_seen <= bound {
            "met"
        } else {
            "missed"
        },
        runs.len()
    );
    let starts: Vec<String> = runs
        .iter()
        .filter_map(|r| r.starts_at_minus_active)
        .map(|d| format!("{d:.1}"))
        .collect();
    println!(
        "(the startsAt Alertmanager passed on, minus Prometheus' activeAt, in s: {})\n",
        starts.join(", ")
    );

    let mem = MemoryReport::new(&idle, &stress);
    println!("{}", mem.table().render());
    println!(
        "Memory: demo app + receiver peak {} (sum of the two VmHWM peaks) against {}: {}; idle {}.",
        fmt_mib(mem.peak_sum),
        fmt_mib(RSS_TARGET),
        if mem.peak_sum < RSS_TARGET {
            "met"
        } else {
            "missed"
        },
        fmt_mib(mem.idle_sum)
    );
    let unverified = runs.iter().filter(|r| !r.verified).count();
    println!(
        "Demo stopped ({status}); processes left behind: {}; runs not verified: {unverified}.",
        if left.is_empty() {
            "none".to_owned()
        } else {
            format!("{left:?}")
        }
    );
    if !left.is_empty() {
        bail!("the demo left processes behind: {left:?}");
    }
    Ok(())
}

/// Fault on, detection, approval, verification.
fn one_run(demo: &Demo, sink: &Sink, args: &Args) -> anyhow::Result<Run> {
    let t0 = Instant::now();
    let t0_wall = Utc::now();
    let out = demo.aiops(&[
        "stress",
        "errors",
        "--ratio",
        &args.ratio.to_string(),
        "--duration",
        "5m",
        "--no-traffic",
    ])?;
    if !out.status.success() {
        bail!(
            "aiops stress errors failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // `aiops stress traffic --rate 0` would mean "unpaced": 0 here means no traffic at all (the
    // fault then meets only the demo's steady background traffic).
    let mut traffic = if args.stress_rate > 0.0 {
        Some(KillOnDrop(
            demo.aiops_command()
                .args([
                    "stress",
                    "traffic",
                    "--rate",
                    &args.stress_rate.to_string(),
                    "--duration",
                    "5m",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("start aiops stress traffic")?,
        ))
    } else {
        None
    };

    // Detection: poll `aiops --json pending` at a fixed cadence.
    let poll = Duration::from_millis(args.poll_ms);
    let deadline = t0 + Duration::from_secs(180);
    let mut tick = t0;
    let (action, seen) = loop {
        let out = demo.aiops(&["--json", "pending"])?;
        let pending: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(a) = pending
            .into_iter()
            .find(|a| a["alert"]["alertname"] == ALERT)
        {
            break (a, t0.elapsed());
        }
        if Instant::now() >= deadline {
            bail!("no pending action for {ALERT} within 180 s of the fault");
        }
        tick += poll;
        if let Some(wait) = tick.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    };
    let id = action["id"]
        .as_str()
        .context("a pending action without an id")?
        .to_owned();
    let since = |v: &Value| -> Option<f64> {
        let at = DateTime::parse_from_rfc3339(v.as_str()?).ok()?;
        Some((at.with_timezone(&Utc) - t0_wall).as_seconds_f64())
    };
    let stored = since(&action["created_at"]);
    let active_at = demo
        .prometheus_alerts(ALERT)
        .ok()
        .and_then(|a| a.first().cloned())
        .map(|a| a["activeAt"].clone());
    let active = active_at.as_ref().and_then(since);
    let starts_at_minus_active = since(&action["alert"]["starts_at"])
        .zip(active)
        .map(|(s, a)| s - a);

    // The message at the sink (posted after the action is stored).
    let needle = format!("aiops approve {id}");
    let sink_deadline = Instant::now() + Duration::from_secs(30);
    let sink_at = loop {
        let hit = sink
            .seen()
            .into_iter()
            .find(|s| s.answered == "ok" && s.at > t0 && slack_text(&s.body).contains(&needle));
        if let Some(s) = hit {
            break Some(s.at.duration_since(t0));
        }
        if Instant::now() >= sink_deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };

    // A human approves; the app restarts (which ends the fault) and recovery is verified.
    let approved_at = Instant::now();
    let out = demo.aiops(&["approve", &id])?;
    let approve = approved_at.elapsed();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let outcome = said
        .lines()
        .find(|l| l.starts_with("verified") || l.starts_with("not fixed"))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            format!(
                "exit {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
        });
    let verified = out.status.success() && outcome.starts_with("verified");
    if let Some(t) = traffic.as_mut() {
        t.stop();
    }
    Ok(Run {
        active,
        stored,
        seen,
        sink: sink_at,
        starts_at_minus_active,
        approve,
        outcome,
        verified,
        approved_at,
        traffic_stopped: Instant::now(),
    })
}

/// Waits until the next fault meets the state the first one met (see the header).
fn wait_quiet(
    demo: &Demo,
    sink: &Sink,
    prev: &Run,
    done: usize,
    args: &Args,
    cooldown: u64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let cooldown_end = prev.approved_at + Duration::from_secs(cooldown + 1);
    let windows_clean = prev.traffic_stopped + Duration::from_secs(args.quiet_secs);
    let mut why;
    loop {
        let resolved: Vec<Instant> = sink
            .seen()
            .into_iter()
            .filter(|s| {
                s.answered == "ok" && slack_text(&s.body).contains("HighErrorRatio resolved")
            })
            .map(|s| s.at)
            .collect();
        let now = Instant::now();
        why = if now < cooldown_end {
            "the cooldown".to_owned()
        } else if now < windows_clean {
            "the rate windows to hold only background traffic".to_owned()
        } else if resolved.len() < done {
            "the resolved notification".to_owned()
        } else if now < resolved[done - 1] + AM_GROUP_GC {
            "Alertmanager to collect the emptied group".to_owned()
        } else if !demo.prometheus_alerts(ALERT)?.is_empty()
            // Alertmanager's API lists only alerts that have not resolved.
            || !demo.alertmanager_alerts(ALERT)?.is_empty()
        {
            "the alert to be gone from Prometheus and Alertmanager".to_owned()
        } else {
            let pending = demo.aiops(&["--json", "pending"])?;
            let pending: Vec<Value> = serde_json::from_slice(&pending.stdout).unwrap_or_default();
            if pending.is_empty() {
                return Ok(());
            }
            "no pending action".to_owned()
        };
        if now >= deadline {
            bail!("waited 600 s for {why}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Memory figures of the two processes.
struct MemoryReport {
    rows: Vec<[String; 5]>,
    idle_sum: u64,
    peak_sum: u64,
}

impl MemoryReport {
    fn new(idle: &[Sample], stress: &[Sample]) -> MemoryReport {
        let pick = |s: &Sample, app: bool| if app { s.app } else { s.receiver };
        let mut rows = Vec::new();
        let mut idle_sum = 0;
        let mut peak_sum = 0;
        for (name, app) in [("demo app", true), ("receiver", false)] {
            let idle_now = idle.iter().rev().find_map(|s| pick(s, app)).map(|m| m.rss);
            let under: Vec<u64> = stress
                .iter()
                .filter_map(|s| pick(s, app))
                .map(|m| m.rss)
                .collect();
            let hwm = stress
                .iter()
                .chain(idle)
                .filter_map(|s| pick(s, app))
                .map(|m| m.hwm)
                .max();
            idle_sum += idle_now.unwrap_or(0);
            peak_sum += hwm.unwrap_or(0);
            rows.push([
                name.to_owned(),
                idle_now.map_or("?".into(), fmt_mib),
                median_u64(&under).map_or("?".into(), fmt_mib),
                under.iter().max().map_or("?".into(), |&b| fmt_mib(b)),
                hwm.map_or("?".into(), fmt_mib),
            ]);
        }
        let both = |s: &Sample| Some(s.app?.rss + s.receiver?.rss);
        let under: Vec<u64> = stress.iter().filter_map(both).collect();
        rows.push([
            "both together".to_owned(),
            fmt_mib(idle_sum),
            median_u64(&under).map_or("?".into(), fmt_mib),
            under.iter().max().map_or("?".into(), |&b| fmt_mib(b)),
            format!("{} (sum of peaks)", fmt_mib(peak_sum)),
        ]);
        MemoryReport {
            rows,
            idle_sum,
            peak_sum,
        }
    }

    fn table(&self) -> Table {
        let mut t = Table::new(&[
            "process",
            "idle (after settling)",
            "under stress, median",
            "under stress, max sampled",
            "peak (VmHWM)",
        ]);
        for r in &self.rows {
            t.row(r.to_vec());
        }
        t
    }
}

fn median_u64(v: &[u64]) -> Option<u64> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

fn stat(v: &[Duration], q: f64) -> String {
    aiops_bench::percentile(v, q).map_or("?".into(), |d| format!("{:.1} s", d.as_secs_f64()))
}

fn secs(v: Option<f64>) -> String {
    v.map_or("?".into(), |s| format!("{s:.1} s"))
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// The first line of `TOOL --version` (Prometheus' tools print it on stderr).
fn tool_version(tool: &str) -> Option<String> {
    let out = std::process::Command::new(tool)
        .arg("--version")
        .output()
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text.lines().next()?;
    // "prometheus, version 2.42.0+ds (branch: ...)" → "prometheus 2.42.0+ds"
    let version = line.split("version ").nth(1)?.split_whitespace().next()?;
    Some(format!("{tool} {version}"))
}

/// `remediation.cooldown_secs` from the demo's config.toml.
fn cooldown_secs(config: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(config).ok()?;
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("cooldown_secs"))?
        .split('=')
        .nth(1)?
        .trim()
        .parse()
        .ok()
}
