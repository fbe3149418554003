//! `bench-webhook`: aiops-webhook against a Node relay of the seed's design, side by side in one
//! run, both posting to the same Slack-protocol sink on loopback.
//!
//! Each server gets the same wrk load: Alertmanager v4 POSTs (two alerts each, bearer token,
//! group key cycling over `--groups` values). Reported per server: notifications acknowledged
//! per second, p50/p99 latency, peak and final RSS, messages the sink received. For the receiver
//! it also checks durability: its `aiops_notifications_received_total` must equal the 2xx
//! answers wrk counted (every 2xx was fsynced first), and reports the fsyncs (group commits)
//! behind them.
//!
//! Build first: `cargo build --release -p aiops-bench -p aiops-webhook`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use aiops_bench::webhook::{self, SlackSink};
use aiops_bench::{Spawned, Table, fmt_duration, fmt_mib, wrk};
use anyhow::{Context, bail};
use clap::Parser;

const TOKEN: &str = "bench-token-0123456789";

#[derive(Debug, Parser)]
#[command(
    about = "Benchmark aiops-webhook against a Node relay of the seed's design, side by side"
)]
struct Args {
    /// Seconds of each wrk run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// wrk connections.
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// Distinct alert groups the load cycles over.
    #[arg(long, default_value_t = 1000)]
    groups: u64,
    /// Rounds (servers alternate; the best round of each is reported).
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// The wrk executable.
    #[arg(long, default_value = "wrk")]
    wrk: String,
    /// The node executable.
    #[arg(long, default_value = "node")]
    node: String,
    /// The receiver binary [default: aiops-webhook beside this program].
    #[arg(long)]
    webhook: Option<PathBuf>,
    /// State directory of the receiver [default: a temporary directory]. Put it on the disk
    /// you want to measure: the receiver fsyncs there.
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("cannot find this program's path")?;
    let path = me.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} does not exist; build it with `cargo build --release -p aiops-bench -p aiops-webhook` or pass its path",
            path.display()
        );
    }
    Ok(path)
}

#[derive(Debug, Default, Clone)]
struct Best {
    report: Option<wrk::Report>,
    sink: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match &args.webhook {
        Some(p) => p.clone(),
        None => sibling("aiops-webhook")?,
    };
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| tmp.path().join("state"));
    let sink = SlackSink::start().context("starting the Slack sink")?;

    // The receiver: token and Slack URL from files, state on the chosen disk.
    std::fs::write(tmp.path().join("token"), TOKEN)?;
    std::fs::write(tmp.path().join("slack-url"), sink.url())?;
    let config = tmp.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[webhook]\ntoken_file = {:?}\n[slack]\nwebhook_url_file = {:?}\n",
            state_dir,
            tmp.path().join("token"),
            tmp.path().join("slack-url")
        ),
    )?;
    let mut cmd = Command::new(&bin);
    cmd.arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env_remove("CREDENTIALS_DIRECTORY");
    let receiver = Spawned::start(cmd, "/healthz", Duration::from_secs(20))
        .context("starting aiops-webhook")?;

    let relay_js = tmp.path().join("relay.js");
    std::fs::write(&relay_js, webhook::NODE_RELAY_JS)?;
    let mut cmd = Command::new(&args.node);
    cmd.arg(&relay_js)
        .env("SLACK_URL", sink.url())
        .env("TOKEN", TOKEN);
    let relay = Spawned::start(cmd, "/healthz", Duration::from_secs(20))
        .with_context(|| format!("starting the Node relay with {}", args.node))?;

    let script = tmp.path().join("post-v4.lua");
    std::fs::write(&script, webhook::wrk_script(TOKEN, args.groups))?;

    let run = |url: String| wrk::Run {
        wrk: &args.wrk,
        url,
        threads: args.threads,
        connections: args.connections,
        duration: Duration::from_secs(args.duration),
        script: Some(&script),
    };
    let mut best = [Best::default(), Best::default()];
    let mut acked_total = 0u64;
    let servers = [("aiops-webhook", &receiver), ("Node relay", &relay)];
    let mut command_lines = Vec::new();
    let mut all_rounds = Table::new(&[
        "round",
        "server",
        "notifications/s",
        "p50",
        "p99",
        "Slack messages sent",
    ]);
    for round in 0..args.rounds.max(1) {
        for (i, (name, server)) in servers.iter().enumerate() {
            let before = sink.received();
            let r = run(server.url("/"));
            if round == 0 {
                command_lines.push(format!("{name}: {}", r.command_line()));
            }
            let report = r.run().with_context(|| format!("wrk against {name}"))?;
            // Let the receiver's outbox drain into the sink before counting.
            std::thread::sleep(Duration::from_millis(500));
            let sunk = sink.received() - before;
            eprintln!(
                "round {round} {name}: {:.0} req/s, p99 {}, non-2xx {}, socket errors {}, sink +{sunk}",
                report.requests_per_sec,
                fmt_duration(report.p99),
                report.non_2xx,
                report.socket_errors
            );
            if i == 0 {
                acked_total += report.requests.saturating_sub(report.non_2xx);
            }
            all_rounds.row(vec![
                round.to_string(),
                (*name).to_owned(),
                format!("{:.0}", report.requests_per_sec),
                fmt_duration(report.p50),
                fmt_duration(report.p99),
                sunk.to_string(),
            ]);
            let better = best[i]
                .report
                .as_ref()
                .is_none_or(|b| report.requests_per_sec > b.requests_per_sec);
            if better {
                best[i] = Best {
                    report: Some(report),
                    sink: sunk,
                };
            }
        }
    }

    // Durability: every 2xx the receiver gave was counted after its fsync.
    let received = webhook::scrape(receiver.addr, "aiops_notifications_received_total")
        .context("reading the receiver's metrics")?;
    let commits =
        webhook::scrape(receiver.addr, "aiops_journal_commit_seconds_count").unwrap_or(0.0);
    let rss = [receiver.rss_bytes()?, relay.rss_bytes()?];
    let peak = [
        webhook::peak_rss_bytes(receiver.pid())?,
        webhook::peak_rss_bytes(relay.pid())?,
    ];

    println!("### Commands\n");
    for c in &command_lines {
        println!("- {c}");
    }
    println!(
        "\nPayload: Alertmanager v4, 2 alerts, {} bytes, bearer token; groupKey cycles over {} groups.\n",
        webhook::payload(1).len(),
        args.groups
    );
    let mut t = Table::new(&[
        "server",
        "notifications/s (2xx)",
        "p50",
        "p99",
        "non-2xx",
        "socket errors",
        "RSS after",
        "peak RSS",
        "Slack messages sent",
    ]);
    for (i, (name, _)) in servers.iter().enumerate() {
        let r = best[i].report.as_ref().expect("every server ran");
        t.row(vec![
            (*name).to_owned(),
            format!("{:.0}", r.requests_per_sec),
            fmt_duration(r.p50),
            fmt_duration(r.p99),
            r.non_2xx.to_string(),
            r.socket_errors.to_string(),
            fmt_mib(rss[i]),
            fmt_mib(peak[i]),
            best[i].sink.to_string(),
        ]);
    }
    println!("Best round of each:\n\n{}", t.render());
    println!("All rounds:\n\n{}", all_rounds.render());
    println!(
        "Receiver durability: {received:.0} notifications counted after fsync vs {acked_total} 2xx answers seen by wrk over all rounds; {commits:.0} group commits ({:.1} notifications per fdatasync).",
        if commits > 0.0 {
            received / commits
        } else {
            0.0
        }
    );

    let r = best[0].report.as_ref().expect("ran");
    let verdict = [
        (
            "≥ 10,000 notifications/s acknowledged durably",
            r.requests_per_sec >= 10_000.0,
        ),
        ("p99 < 20 ms", r.p99 < Duration::from_millis(20)),
        ("RSS < 20 MiB (peak)", peak[0] < 20 * 1024 * 1024),
        ("every 2xx was durable", (received as u64) >= acked_total),
        ("no errors", r.non_2xx == 0 && r.socket_errors == 0),
    ];
    println!("\nTargets:");
    for (what, ok) in verdict {
        println!("- {what}: {}", if ok { "met" } else { "NOT met" });
    }
    Ok(())
}
