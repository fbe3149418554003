//! `aiops-webhook`: the Alertmanager receiver. Parses flags, sets up logging, runs the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

/// Receives Alertmanager notifications, persists them durably before answering, and posts
/// explained messages to Slack (or to this log when no Slack URL is configured).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Configuration file (default: $AIOPS_CONFIG, else /etc/aiops/config.toml if present).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address, overriding webhook.listen (port 0 picks a free port; the log says which).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// State directory, overriding state_dir.
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    aiops_core::telemetry::init();
    match real_main(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("aiops-webhook: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Most async worker threads the receiver starts, whatever the CPU count.
const WORKER_THREADS: usize = 16;
/// Most threads for blocking work (tokio's default is 512).
const BLOCKING_THREADS: usize = 32;

fn worker_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(WORKER_THREADS)
}

fn real_main(args: Args) -> anyhow::Result<()> {
    let (mut config, origin) = aiops_core::Config::discover(args.config.as_deref())
        .context("loading the configuration")?;
    if let Some(listen) = args.listen {
        config.webhook.listen = listen;
    }
    if let Some(dir) = args.state_dir {
        config.state_dir = dir;
    }
    tracing::info!(config = ?origin, state_dir = %config.state_dir.display(), "starting");
    // A file size limit (LimitFSIZE=) must fail writes with EFBIG, not kill the process, so
    // that the receiver answers 503 like on a full disk.
    let _ = signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    // Bounded threads, so that the unit's TasksMax= (128) is never what fails: at most
    // WORKER_THREADS workers (one per CPU below that) and BLOCKING_THREADS for blocking work
    // (fsyncs, systemctl, journal reads), instead of tokio's default of 512.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads())
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = aiops_core::http::bind(config.webhook.listen).await?;
        let shutdown = async {
            let sig = aiops_core::shutdown::signal().await;
            tracing::info!(signal = sig, "stop requested");
        };
        // The gate and the diagnosis engine register their metrics on the registry that
        // `/metrics` serves.
        let registry = prometheus::Registry::new();
        let gate = Arc::new(
            aiops_actions::Gate::open(&config, &registry)
                .context("opening the action store (pending actions, audit log, limits)")?,
        );
        let engine = aiops_diagnosis::Engine::from_config(&config)
            .context("loading the diagnosis catalog")?;
        let advisor = Arc::new(aiops_webhook::gate::GateAdvisor::new(engine, gate.clone()));
        tracing::info!(
            control_socket = %config.webhook.control_socket.display(),
            executor = ?config.remediation.executor,
            allowed = ?config.remediation.allowed,
            "human gate ready: `aiops approve` talks to the control socket"
        );
        let options = aiops_webhook::Options {
            registry,
            gate: Some(gate),
            ..aiops_webhook::Options::default()
        };
        aiops_webhook::run_with(listener, config, advisor, options, shutdown)
            .await
            .context("the receiver failed")
    })
}
