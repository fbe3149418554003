//! `aiops stress`: drive load at the demo app and switch its faults on for a bounded time.
//!
//! Each mode (except `traffic`) first switches one of the app's faults on through its admin API
//! for `--duration` (the app ends the fault by itself when that time is up, even if this process
//! dies), then drives traffic so the fault shows in the metrics. A live progress line shows
//! requests sent and the error share seen; a summary follows at the end. Ctrl-C stops early and
//! switches the fault off again.
//!
//! Traffic is plain blocking HTTP (ureq) from `--concurrency` threads, paced to `--rate`; every
//! loop ends at the deadline or on a signal.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::exit::{self, Exit};

/// Arguments of `aiops stress`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub mode: Mode,

    /// Base URL of the demo app [default: http:// + demo_app.listen from the configuration]
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,

    /// How long to run: the fault stays on and traffic flows for this long (e.g. 90s, 5m).
    #[arg(long, global = true, default_value = "5m", value_parser = parse_duration)]
    pub duration: Duration,

    /// Concurrent clients.
    #[arg(long, global = true, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=512))]
    pub concurrency: u16,

    /// Requests per second over all clients; 0 means as fast as they can.
    #[arg(long, global = true, default_value_t = 40.0)]
    pub rate: f64,

    /// Only switch the fault on and return; send no traffic (e.g. when `aiops demo` already
    /// drives some). The app ends the fault by itself after --duration.
    #[arg(long, global = true)]
    pub no_traffic: bool,
}

/// What to break.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Mode {
    /// Only traffic: a load test, or a surge when run with a high --rate.
    Traffic,
    /// Make a share of requests answer 500.
    Errors {
        /// Share of requests that fail, 0 < ratio ≤ 1.
        #[arg(long, default_value_t = 0.3)]
        ratio: f64,
    },
    /// Burn CPU in the app.
    Cpu {
        /// Threads spinning at full speed (two make the 0.5-core alert fire within a minute even
        /// on a busy machine).
        #[arg(long, default_value_t = 2)]
        threads: u32,
    },
    /// Add latency to the app's API routes.
    Latency {
        /// Added delay per request, in milliseconds.
        #[arg(long, default_value_t = 400)]
        delay_ms: u64,
    },
    /// Leak memory slowly (the leaked memory stays until the app restarts).
    Leak {
        /// Bytes leaked per second.
        #[arg(long, default_value_t = 1024 * 1024)]
        bytes_per_sec: u64,
    },
}

impl Mode {
    /// The fault kind and its query parameters, if this mode switches a fault on.
    fn fault(&self) -> Option<(&'static str, Vec<(&'static str, String)>)> {
        match self {
            Mode::Traffic => None,
            Mode::Errors { ratio } => Some(("errors", vec![("ratio", ratio.to_string())])),
            Mode::Cpu { threads } => Some(("cpu", vec![("threads", threads.to_string())])),
            Mode::Latency { delay_ms } => {
                Some(("latency", vec![("delay_ms", delay_ms.to_string())]))
            }
            Mode::Leak { bytes_per_sec } => {
                Some(("leak", vec![("bytes_per_sec", bytes_per_sec.to_string())]))
            }
        }
    }
}

/// Parses `90`, `90s`, `5m`, `1h`, `1500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; use e.g. 90s, 5m, 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}; use ms, s, m or h")),
    };
    if !(secs > 0.0 && secs <= 24.0 * 3600.0) {
        return Err(format!("{s:?} must be more than 0 and at most 24h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Latency histogram with buckets growing by 2^(1/4) from 1 µs: ~19% relative error, lock-free.
pub(crate) struct Histogram {
    buckets: Vec<AtomicU64>,
}

impl Histogram {
    const BUCKETS: usize = 128;

    pub(crate) fn new() -> Self {
        Self {
            buckets: (0..Self::BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn record(&self, d: Duration) {
        let us = d.as_micros().max(1) as f64;
        let i = ((us.log2() * 4.0).floor() as usize).min(Self::BUCKETS - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The upper bound of the bucket holding quantile `q`, or `None` without samples.
    fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_secs_f64(
                    2f64.powf((i + 1) as f64 / 4.0) / 1e6,
                ));
            }
        }
        None
    }
}

/// Request outcomes, shared by the client threads.
#[derive(Default)]
pub(crate) struct Counters {
    sent: AtomicU64,
    ok: AtomicU64,
    server_errors: AtomicU64,
    client_errors: AtomicU64,
    failed: AtomicU64,
}

/// What one run did, printed at the end (and as JSON with `--json`).
#[derive(Debug, Serialize)]
pub struct Summary {
    pub url: String,
    pub mode: String,
    pub fault: Option<String>,
    pub seconds: f64,
    pub sent: u64,
    pub ok: u64,
    pub server_errors: u64,
    pub client_errors: u64,
    /// Connection failures and timeouts (e.g. while the app restarts).
    pub failed: u64,
    /// Share of answered requests that were 5xx.
    pub error_share: f64,
    pub requests_per_second: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub interrupted: bool,
}

pub fn run(args: &Args, config: &aiops_core::Config, json: bool) -> anyhow::Result<()> {
    validate(&args.mode).map_err(|e| Exit::new(exit::USAGE, e.to_string()))?;
    let base = base_url(args.url.as_deref(), config);
    if matches!(args.mode, Mode::Traffic) && args.no_traffic {
        return Err(Exit::new(
            exit::USAGE,
            "`aiops stress traffic --no-traffic` would do nothing; drop --no-traffic",
        )
        .into());
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        return Err(Exit::new(
            exit::USAGE,
            "--rate must be 0 (unlimited) or a positive number",
        )
        .into());
    }
    if !is_loopback(&base) {
        eprintln!("note: {base} is not a loopback address; make sure you mean to load it");
    }

    let agent = agent(Duration::from_secs(5));
    preflight(&agent, &base)?;

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("install signal handler")?;
    }

    let fault = args.mode.fault();
    let fault_text = match &fault {
        Some((kind, params)) => {
            switch_on(&agent, &base, kind, params, args.duration)?;
            let settings: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let text = format!(
                "{kind} ({}) for {}",
                settings.join(", "),
                humanize(args.duration)
            );
            eprintln!("fault on: {text}; it ends by itself after that time");
            Some(text)
        }
        None => None,
    };

    let counters = Arc::new(Counters::default());
    let histogram = Arc::new(Histogram::new());
    let started = Instant::now();
    if args.no_traffic {
        // Nothing to watch: the app ends the fault by itself when its time is up.
        let summary = summarize(
            args, &base, fault_text, &counters, &histogram, started, false,
        );
        if json {
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        return Ok(());
    }
    let deadline = started + args.duration;
    let workers = {
        spawn_workers(
            &base,
            usize::from(args.concurrency),
            args.rate,
            deadline,
            &stop,
            &counters,
            &histogram,
        )
    };

    let interrupted = watch(args, &counters, &histogram, started, deadline, &stop);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    if interrupted && let Some((kind, _)) = &fault {
        switch_off(&agent, &base, kind);
    }

    let summary = summarize(
        args,
        &base,
        fault_text,
        &counters,
        &histogram,
        started,
        interrupted,
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(())
}

fn base_url(explicit: Option<&str>, config: &aiops_core::Config) -> String {
    let url = match explicit {
        Some(u) => u.to_owned(),
        None => {
            let mut addr = config.demo_app.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{addr}")
        }
    };
    url.trim_end_matches('/').to_owned()
}

fn is_loopback(url: &str) -> bool {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_idle_connections_per_host(64)
        .build()
        .into()
}

fn preflight(agent: &ureq::Agent, base: &str) -> anyhow::Result<()> {
    match agent.get(format!("{base}/healthz")).call() {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(Exit::new(
            exit::UNAVAILABLE,
            format!(
                "the demo app at {base} answered /healthz with {}; is it the aiops demo app?",
                r.status()
            ),
        )
        .into()),
        Err(e) => Err(Exit::new(
            exit::UNAVAILABLE,
            format!(
                "cannot reach the demo app at {base}: {e}\n  start it (`aiops demo`, or `systemctl start aiops-demo-app`) or point --url at it"
            ),
        )
        .into()),
    }
}

fn switch_on(
    agent: &ureq::Agent,
    base: &str,
    kind: &str,
    params: &[(&str, String)],
    duration: Duration,
) -> anyhow::Result<()> {
    let mut req = agent
        .post(format!("{base}/admin/faults/{kind}"))
        .query("duration", duration.as_secs().max(1).to_string());
    for (k, v) in params {
        req = req.query(*k, v);
    }
    let mut resp = req
        .send_empty()
        .with_context(|| format!("switch the {kind} fault on at {base}"))?;
    if !resp.status().is_success() {
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or(body);
        return Err(Exit::new(
            if resp.status().is_client_error() {
                exit::USAGE
            } else {
                exit::FAILURE
            },
            format!(
                "the demo app refused the {kind} fault ({}): {message}",
                resp.status()
            ),
        )
        .into());
    }
    Ok(())
}

fn switch_off(agent: &ureq::Agent, base: &str, kind: &str) {
    match agent.delete(format!("{base}/admin/faults/{kind}")).call() {
        Ok(r) if r.status().is_success() => eprintln!("fault off: {kind}"),
        Ok(r) => eprintln!(
            "could not switch the {kind} fault off ({}); it ends by itself",
            r.status()
        ),
        Err(e) => eprintln!("could not switch the {kind} fault off ({e}); it ends by itself"),
    }
}

/// Starts `n` client threads sending the traffic mix to `base`, `rate` requests per second in all
/// (0: unpaced), until `deadline` or `stop`. `aiops demo` uses it for its background traffic.
pub(crate) fn spawn_workers(
    base: &str,
    n: usize,
    rate: f64,
    deadline: Instant,
    stop: &Arc<AtomicBool>,
    counters: &Arc<Counters>,
    histogram: &Arc<Histogram>,
) -> Vec<std::thread::JoinHandle<()>> {
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(n as f64 / rate));
    (0..n)
        .map(|worker| {
            let base = base.to_owned();
            let stop = Arc::clone(stop);
            let counters = Arc::clone(counters);
            let histogram = Arc::clone(histogram);
            std::thread::spawn(move || {
                let agent = agent(Duration::from_secs(10));
                let mut rng = fastrand_seed(worker as u64);
                // Stagger the workers so a paced run is smooth rather than bursty.
                let mut next = Instant::now()
                    + interval.map_or(Duration::ZERO, |i| i.mul_f64(worker as f64 / n as f64));
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if let Some(i) = interval {
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep((next - now).min(deadline - now));
                            continue;
                        }
                        next += i;
                    }
                    let path = pick_path(&mut rng);
                    let t = Instant::now();
                    let result = agent.get(format!("{base}{path}")).call();
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    match result {
                        Ok(mut r) => {
                            // Drain the body so the connection is reused.
                            let _ = r.body_mut().read_to_vec();
                            histogram.record(t.elapsed());
                            let s = r.status();
                            let counter = if s.is_server_error() {
                                &counters.server_errors
                            } else if s.is_client_error() {
                                &counters.client_errors
                            } else {
                                &counters.ok
                            };
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            counters.failed.fetch_add(1, Ordering::Relaxed);
                            // An app that is restarting refuses connections: do not spin.
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })
        })
        .collect()
}

/// A tiny xorshift generator: the traffic mix needs variety, not quality.
fn fastrand_seed(worker: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    (nanos ^ (worker.wrapping_mul(0x9E37_79B9_7F4A_7C15))) | 1
}

fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// The traffic mix: mostly item reads over a small hot set (the cache sees hits and misses),
/// some searches and the front page.
fn pick_path(rng: &mut u64) -> String {
    let r = next_random(rng);
    match r % 100 {
        0..=59 => {
            // Skewed ids (the app's ids start at 1): low ids are hot.
            let id = (next_random(rng) % 64) * (next_random(rng) % 8 + 1) + 1;
            format!("/api/items/{id}")
        }
        60..=74 => {
            const WORDS: [&str; 8] = [
                "red", "blue", "green", "widget", "gadget", "small", "large", "pro",
            ];
            format!("/api/search?q={}", WORDS[(next_random(rng) % 8) as usize])
        }
        _ => "/".to_owned(),
    }
}

/// Prints the progress line until the deadline or a signal. Returns whether it was interrupted.
fn watch(
    args: &Args,
    counters: &Counters,
    histogram: &Histogram,
    started: Instant,
    deadline: Instant,
    stop: &AtomicBool,
) -> bool {
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    };
    let mut next_print = Instant::now() + every;
    loop {
        let now = Instant::now();
        if stop.load(Ordering::Relaxed) {
            if tty {
                eprintln!();
            }
            return true;
        }
        if now >= deadline {
            if tty {
                eprintln!();
            }
            return false;
        }
        if now >= next_print {
            let line = progress_line(args, counters, histogram, started);
            if tty {
                eprint!("\r\x1b[2K{line}");
                let _ = std::io::stderr().flush();
            } else {
                eprintln!("{line}");
            }
            next_print += every;
        }
        std::thread::sleep(Duration::from_millis(100).min(deadline - now));
    }
}

fn progress_line(args: &Args, c: &Counters, h: &Histogram, started: Instant) -> String {
    let elapsed = started.elapsed();
    let sent = c.sent.load(Ordering::Relaxed);
    let errors = c.server_errors.load(Ordering::Relaxed);
    let ok = c.ok.load(Ordering::Relaxed);
    let answered = ok + errors + c.client_errors.load(Ordering::Relaxed);
    let share = if answered == 0 {
        0.0
    } else {
        errors as f64 / answered as f64
    };
    let p99 = h.quantile(0.99).map_or("-".to_owned(), |d| {
        format!("{:.0} ms", d.as_secs_f64() * 1000.0)
    });
    format!(
        "[{:>4}s/{}s] sent {sent} · 2xx {ok} · 5xx {errors} ({:.1}%) · failed {} · {:.1} req/s · p99 {p99}",
        elapsed.as_secs(),
        args.duration.as_secs(),
        share * 100.0,
        c.failed.load(Ordering::Relaxed),
        sent as f64 / elapsed.as_secs_f64().max(0.001),
    )
}

fn summarize(
    args: &Args,
    base: &str,
    fault: Option<String>,
    c: &Counters,
    h: &Histogram,
    started: Instant,
    interrupted: bool,
) -> Summary {
    let seconds = started.elapsed().as_secs_f64();
    let ok = c.ok.load(Ordering::Relaxed);
    let server_errors = c.server_errors.load(Ordering::Relaxed);
    let client_errors = c.client_errors.load(Ordering::Relaxed);
    let answered = ok + server_errors + client_errors;
    let sent = c.sent.load(Ordering::Relaxed);
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    Summary {
        url: base.to_owned(),
        mode: mode_name(&args.mode).to_owned(),
        fault,
        seconds: (seconds * 10.0).round() / 10.0,
        sent,
        ok,
        server_errors,
        client_errors,
        failed: c.failed.load(Ordering::Relaxed),
        error_share: if answered == 0 {
            0.0
        } else {
            server_errors as f64 / answered as f64
        },
        requests_per_second: sent as f64 / seconds.max(0.001),
        p50_ms: h.quantile(0.5).map(ms),
        p99_ms: h.quantile(0.99).map(ms),
        interrupted,
    }
}

fn mode_name(mode: &Mode) -> &'static str {
    match mode {
        Mode::Traffic => "traffic",
        Mode::Errors { .. } => "errors",
        Mode::Cpu { .. } => "cpu",
        Mode::Latency { .. } => "latency",
        Mode::Leak { .. } => "leak",
    }
}

fn print_summary(s: &Summary) {
    let fmt_ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} ms"));
    println!(
        "{} {} against {} for {:.1} s",
        if s.interrupted {
            "stopped early:"
        } else {
            "done:"
        },
        s.mode,
        s.url,
        s.seconds
    );
    if let Some(f) = &s.fault {
        println!("  fault            {f}");
    }
    println!("  requests sent    {}", s.sent);
    println!("  answered 2xx     {}", s.ok);
    println!(
        "  answered 5xx     {} ({:.1}% of answered)",
        s.server_errors,
        s.error_share * 100.0
    );
    if s.client_errors > 0 {
        println!("  answered 4xx     {}", s.client_errors);
    }
    println!("  not answered     {}", s.failed);
    println!("  rate             {:.1} req/s", s.requests_per_second);
    println!(
        "  latency p50/p99  {} / {}",
        fmt_ms(s.p50_ms),
        fmt_ms(s.p99_ms)
    );
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s >= 60 && s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Refuses a fault setting the app would refuse anyway, before touching anything.
pub fn validate(mode: &Mode) -> anyhow::Result<()> {
    match mode {
        Mode::Errors { ratio } if !(*ratio > 0.0 && *ratio <= 1.0) => {
            bail!("--ratio must be more than 0 and at most 1 (got {ratio})")
        }
        Mode::Cpu { threads } if *threads == 0 => bail!("--threads must be at least 1"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("48h").is_err());
    }

    #[test]
    fn loopback_detection() {
        assert!(is_loopback("http://127.0.0.1:8080"));
        assert!(is_loopback("http://localhost:8080/"));
        assert!(is_loopback("http://[::1]:8080"));
        assert!(!is_loopback("http://10.0.0.5:8080"));
        assert!(!is_loopback("http://example.com"));
    }

    #[test]
    fn histogram_quantiles_are_within_a_bucket() {
        let h = Histogram::new();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p99 = h.quantile(0.99).unwrap().as_secs_f64() * 1000.0;
        assert!((99.0..=99.0 * 1.2).contains(&p99), "{p99}");
        let p50 = h.quantile(0.5).unwrap().as_secs_f64() * 1000.0;
        assert!((50.0..=50.0 * 1.2).contains(&p50), "{p50}");
        assert!(Histogram::new().quantile(0.5).is_none());
    }

    #[test]
    fn bad_fault_settings_are_refused_before_anything_happens() {
        assert!(validate(&Mode::Errors { ratio: 1.5 }).is_err());
        assert!(validate(&Mode::Errors { ratio: 0.0 }).is_err());
        assert!(validate(&Mode::Cpu { threads: 0 }).is_err());
        assert!(validate(&Mode::Errors { ratio: 0.3 }).is_ok());
    }
}
