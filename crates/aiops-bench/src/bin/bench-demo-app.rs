//! `bench-demo-app`: the demo app against a minimal hyper hello-world, side by side in one run.
//!
//! Measures, on 127.0.0.1 only:
//! 1. `GET /` throughput and p99 of `hello-hyper` and of the app, and `GET /metrics` of the app,
//!    with `wrk --latency` (both servers up, wrk alternating between them `--rounds` times; the
//!    median round counts), and each server's RSS after its load;
//! 2. the app's `/metrics` latency scraped once a second (one kept-alive connection, as Prometheus
//!    scrapes) while 64 clients hammer its JSON API, and, as a control, hello-hyper probed the same
//!    way under 64 clients;
//! 3. time from spawn to first answered request, median of `--spawns` starts of each.
//!
//! Prints markdown tables for docs/BENCHMARKS.md and a verdict against the issue's targets.
//! Build first: `cargo build --release -p aiops-bench -p aiops-demo-app`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aiops_bench::{KeepAlive, Spawned, Table, fmt_duration, fmt_mib, http_get, percentile, wrk};
use anyhow::{Context, bail};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Benchmark aiops-demo-app against a minimal hyper server, side by side")]
struct Args {
    /// Seconds of each wrk throughput run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// wrk connections.
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// Throughput rounds (wrk alternates between the servers; the median round is reported).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Seconds of the API load during which /metrics is scraped once a second.
    #[arg(long, default_value_t = 30)]
    scrape_secs: u64,
    /// Starts of each server for the time-to-first-response median.
    #[arg(long, default_value_t = 20)]
    spawns: u32,
    /// The wrk executable.
    #[arg(long, default_value = "wrk")]
    wrk: String,
    /// The demo app binary [default: aiops-demo-app beside this program].
    #[arg(long)]
    app: Option<PathBuf>,
    /// The reference server [default: hello-hyper beside this program].
    #[arg(long)]
    hello: Option<PathBuf>,
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("cannot find this program's path")?;
    let path = me.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} does not exist; build it with `cargo build --release -p aiops-bench -p aiops-demo-app` or pass its path",
            path.display()
        );
    }
    Ok(path)
}

struct Servers {
    app: PathBuf,
    hello: PathBuf,
    /// An empty configuration file, so no system configuration changes what is measured.
    config: tempfile::NamedTempFile,
}

impl Servers {
    fn app_cmd(&self) -> Command {
        let mut c = Command::new(&self.app);
        c.arg("--config")
            .arg(self.config.path())
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("AIOPS_DEMO_LISTEN");
        c
    }

    fn hello_cmd(&self) -> Command {
        let mut c = Command::new(&self.hello);
        c.args(["--listen", "127.0.0.1:0"]);
        c
    }
}

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The API mix for the scrape test: item reads over 20,000 ids (the default cache holds
/// 10,000, so about half miss and compute) and one search in five.
const API_SCRIPT: &str = r#"
local n = 0
local words = {"blue", "oak lamp", "green", "steel", "quiet desk", "silk"}
request = function()
  n = n + 1
  if n % 5 == 0 then
    return wrk.format("GET", "/api/search?q=" .. words[(n / 5) % #words + 1]:gsub(" ", "+"))
  end
  return wrk.format("GET", "/api/items/" .. math.random(1, 20000))
end
"#;

#[derive(Debug, Default, Clone)]
struct Rounds {
    reports: Vec<wrk::Report>,
    /// The largest RSS seen after a round.
    rss: u64,
}

impl Rounds {
    fn add(&mut self, r: wrk::Report, rss: u64) {
        self.reports.push(r);
        self.rss = self.rss.max(rss);
    }

    fn rps(&self) -> Vec<f64> {
        self.reports.iter().map(|r| r.requests_per_sec).collect()
    }

    fn median_rps(&self) -> f64 {
        median(&self.rps())
    }

    fn median_of(&self, f: impl Fn(&wrk::Report) -> Duration) -> Duration {
        let v: Vec<Duration> = self.reports.iter().map(f).collect();
        percentile(&v, 0.5).unwrap_or_default()
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Runs `load` while a thread sends `GET path` to `addr` once a second on one kept-alive
/// connection (as Prometheus 2.x scrapes a target); returns wrk's report and the probe latencies.
fn probe_under_load(
    load: &wrk::Run<'_>,
    addr: std::net::SocketAddr,
    path: &'static str,
) -> anyhow::Result<(wrk::Report, Vec<Duration>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let stop = stop.clone();
        std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
            let mut samples = Vec::new();
            let mut client = KeepAlive::new(addr, Duration::from_secs(5));
            let mut next = Instant::now() + Duration::from_secs(1);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let t = Instant::now();
                let (status, body) = client.get(path)?;
                let took = t.elapsed();
                if status != 200 || body.is_empty() {
                    bail!("GET {path} answered {status} under load");
                }
                samples.push(took);
                next += Duration::from_secs(1);
            }
            Ok(samples)
        })
    };
    let report = load.run();
    stop.store(true, Ordering::Relaxed);
    let samples = prober
        .join()
        .map_err(|_| anyhow::anyhow!("the probe thread panicked"))??;
    Ok((report?, samples))
}

/// A wrk command line with the ephemeral port replaced by `PORT`.
fn generic(command: String) -> String {
    match command.find("http://127.0.0.1:") {
        Some(i) => {
            let start = i + "http://127.0.0.1:".len();
            let end = command[start..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(command.len(), |e| start + e);
            format!("{}PORT{}", &command[..start], &command[end..])
        }
        None => command,
    }
}

fn wrk_run<'a>(args: &'a Args, url: String, script: Option<&'a Path>, secs: u64) -> wrk::Run<'a> {
    wrk::Run {
        wrk: &args.wrk,
        url,
        threads: args.threads,
        connections: args.connections,
        duration: Duration::from_secs(secs),
        script,
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let servers = Servers {
        app: match &args.app {
            Some(p) => p.clone(),
            None => sibling("aiops-demo-app")?,
        },
        hello: match &args.hello {
            Some(p) => p.clone(),
            None => sibling("hello-hyper")?,
        },
        config: tempfile::NamedTempFile::new().context("cannot create a temporary config file")?,
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "bench-demo-app: {cpus} CPUs, load average {} at start",
        loadavg()
    );
    // 1. Throughput. Both servers run side by side for the whole phase and wrk alternates
    // between them, so drifting background load hits both alike; each round gives one ratio,
    // and the median round is reported.
    let mut hello_root = Rounds::default();
    let mut app_root = Rounds::default();
    let mut app_metrics = Rounds::default();
    let mut commands = Vec::new();
    let hello = Spawned::start(servers.hello_cmd(), "/", START_TIMEOUT)?;
    let app = Spawned::start(servers.app_cmd(), "/healthz", START_TIMEOUT)?;
    for round in 1..=args.rounds {
        for (server, path, into) in [
            (&hello, "/", &mut hello_root),
            (&app, "/", &mut app_root),
            (&app, "/metrics", &mut app_metrics),
        ] {
            let r = wrk_run(&args, server.url(path), None, args.duration);
            commands.push(generic(r.command_line()));
            let report = r.run()?;
            eprintln!(
                "round {round}: {} GET {path}: {:.0} req/s, p99 {}",
                server.name().rsplit('/').next().unwrap_or_default(),
                report.requests_per_sec,
                fmt_duration(report.p99)
            );
            into.add(report, server.rss_bytes()?);
        }
    }
    drop((hello, app));

    // 2. /metrics under API load, scraped once a second like Prometheus at a 1 s interval.
    let mut script = tempfile::Builder::new()
        .suffix(".lua")
        .tempfile()
        .context("cannot create the wrk script")?;
    script.write_all(API_SCRIPT.as_bytes())?;
    let app = Spawned::start(servers.app_cmd(), "/healthz", START_TIMEOUT)?;
    let api_run = wrk::Run {
        connections: 64,
        ..wrk_run(&args, app.url(""), Some(script.path()), args.scrape_secs)
    };
    commands.push(
        generic(api_run.command_line()).replace(&script.path().display().to_string(), "api.lua"),
    );
    let (api, scrapes) = probe_under_load(&api_run, app.addr, "/metrics")?;
    let rss_after_api = app.rss_bytes()?;
    let (_, metrics_body) = http_get(app.addr, "/metrics", Duration::from_secs(5))?;
    drop(app);

    // 2b. The control: the same once-a-second probe against hello-hyper under 64 clients shows
    // the latency floor this machine imposes on any server under that load.
    let hello = Spawned::start(servers.hello_cmd(), "/", START_TIMEOUT)?;
    let control_run = wrk::Run {
        connections: 64,
        ..wrk_run(&args, hello.url("/"), None, args.scrape_secs)
    };
    commands.push(generic(control_run.command_line()));
    let (control, control_probes) = probe_under_load(&control_run, hello.addr, "/")?;
    drop(hello);

    // 3. Time to first response, alternating.
    let mut first_app = Vec::new();
    let mut first_hello = Vec::new();
    for _ in 0..args.spawns {
        first_hello.push(Spawned::start(servers.hello_cmd(), "/", START_TIMEOUT)?.first_response);
        first_app.push(Spawned::start(servers.app_cmd(), "/", START_TIMEOUT)?.first_response);
    }

    // Report.
    // One ratio per round (app and hello measured back to back), and the median of those.
    let ratios: Vec<f64> = app_root
        .rps()
        .iter()
        .zip(hello_root.rps())
        .map(|(a, h)| a / h)
        .collect();
    let ratio = median(&ratios);
    let rounds = |b: &Rounds| {
        b.rps()
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let mut t = Table::new(&[
        "server, request",
        "req/s (median round)",
        "each round",
        "p50",
        "p99",
        "non-2xx",
        "RSS after load",
    ]);
    for (name, b) in [
        ("hello-hyper `GET /`", &hello_root),
        ("aiops-demo-app `GET /`", &app_root),
        ("aiops-demo-app `GET /metrics`", &app_metrics),
    ] {
        t.row(vec![
            name.into(),
            format!("{:.0}", b.median_rps()),
            rounds(b),
            fmt_duration(b.median_of(|r| r.p50)),
            fmt_duration(b.median_of(|r| r.p99)),
            b.reports.iter().map(|r| r.non_2xx).sum::<u64>().to_string(),
            fmt_mib(b.rss),
        ]);
    }
    let scrape_p50 = percentile(&scrapes, 0.5).unwrap_or_default();
    let scrape_p99 = percentile(&scrapes, 0.99).unwrap_or_default();
    let scrape_max = scrapes.iter().max().copied().unwrap_or_default();
    let mut s = Table::new(&["under 64 API clients", "value"]);
    s.row(vec![
        "API throughput (items + search)".into(),
        format!(
            "{:.0} req/s, p99 {}",
            api.requests_per_sec,
            fmt_duration(api.p99)
        ),
    ])
    .row(vec![
        format!("`/metrics` scrapes (1 s apart, {} taken)", scrapes.len()),
        format!(
            "p50 {}, p99 {}, max {}",
            fmt_duration(scrape_p50),
            fmt_duration(scrape_p99),
            fmt_duration(scrape_max)
        ),
    ])
    .row(vec![
        format!(
            "control: hello-hyper `GET /` probed the same way under 64 clients ({:.0} req/s)",
            control.requests_per_sec
        ),
        format!(
            "p50 {}, p99 {}, max {}",
            fmt_duration(percentile(&control_probes, 0.5).unwrap_or_default()),
            fmt_duration(percentile(&control_probes, 0.99).unwrap_or_default()),
            fmt_duration(control_probes.iter().max().copied().unwrap_or_default())
        ),
    ])
    .row(vec![
        "`/metrics` size after the load".into(),
        format!("{} bytes", metrics_body.len()),
    ])
    .row(vec![
        "app RSS after the API load (cache full)".into(),
        fmt_mib(rss_after_api),
    ]);
    let mut f = Table::new(&["time to first response after spawn", "median", "max"]);
    for (name, v) in [
        ("hello-hyper", &first_hello),
        ("aiops-demo-app", &first_app),
    ] {
        f.row(vec![
            name.into(),
            fmt_duration(percentile(v, 0.5).unwrap_or_default()),
            fmt_duration(v.iter().max().copied().unwrap_or_default()),
        ]);
    }
    let first_median = percentile(&first_app, 0.5).unwrap_or_default();
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let mut v = Table::new(&["target", "measured", "verdict"]);
    v.row(vec![
        "`GET /` ≥ 80% of hello-hyper req/s".into(),
        format!(
            "{:.0}% (median of the rounds' ratios: {})",
            ratio * 100.0,
            ratios
                .iter()
                .map(|r| format!("{:.0}%", r * 100.0))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        verdict(ratio >= 0.8).into(),
    ])
    .row(vec![
        "RSS < 10 MiB after `GET /` and `/metrics` load".into(),
        fmt_mib(app_root.rss.max(app_metrics.rss)),
        verdict(app_root.rss.max(app_metrics.rss) < 10 * 1024 * 1024).into(),
    ])
    .row(vec![
        "`/metrics` p99 < 5 ms at 1 s scrape with 64 API clients".into(),
        fmt_duration(scrape_p99),
        verdict(scrape_p99 < Duration::from_millis(5)).into(),
    ])
    .row(vec![
        "first response < 20 ms after spawn (median)".into(),
        fmt_duration(first_median),
        verdict(first_median < Duration::from_millis(20)).into(),
    ]);

    println!("### Throughput, latency and memory ({cpus} CPUs shared by servers and wrk)\n");
    println!("{}", t.render());
    println!("### `/metrics` while the API is under load\n");
    println!("{}", s.render());
    println!("### Start-up ({} starts each)\n", args.spawns);
    println!("{}", f.render());
    println!("### Against the targets\n");
    println!("{}", v.render());
    println!("wrk commands run (ports are chosen by the servers at each start):\n");
    commands.sort();
    commands.dedup();
    for c in &commands {
        println!("    {c}");
    }
    println!("\nwhere api.lua is:\n");
    for line in API_SCRIPT.trim().lines() {
        println!("    {line}");
    }
    println!();
    println!("Load average at the end: {}", loadavg());
    Ok(())
}
