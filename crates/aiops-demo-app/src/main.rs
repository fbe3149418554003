use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use aiops_core::{shutdown, systemd};
use anyhow::Context;
use clap::Parser;

/// The demo web service the aiops loop watches: a small JSON API with Prometheus metrics and
/// admin routes that inject time-bounded faults.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on [default: demo_app.listen from the configuration, else 127.0.0.1:8080]
    #[arg(long, env = "AIOPS_DEMO_LISTEN", value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// Configuration file [default: $AIOPS_CONFIG, else /etc/aiops/config.toml if present]
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Entries the cache holds before it evicts [default: demo_app.cache_capacity, else 10000]
    #[arg(long, value_name = "N")]
    cache_capacity: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    aiops_core::telemetry::init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(serve(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("aiops-demo-app: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let (file, origin) = aiops_core::Config::discover(args.config.as_deref())?;
    let config = aiops_demo_app::resolve_config(&file.demo_app, args.listen, args.cache_capacity);

    // Install the signal handlers before anything can say "ready": from then on a SIGTERM
    // drains instead of killing the process. Polling the future once registers them.
    let mut signal = Box::pin(shutdown::signal());
    tokio::select! {
        biased;
        name = &mut signal => anyhow::bail!("received {name} while starting"),
        () = std::future::ready(()) => {}
    }

    let listener = aiops_core::http::bind(config.listen).await?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let app = aiops_demo_app::App::new(&config);
    let stopping = async move {
        let name = signal.await;
        tracing::info!(
            signal = name,
            "stopping: no new connections; draining in-flight requests"
        );
        systemd::stopping("stopping: draining in-flight requests");
    };
    let mut server = tokio::spawn(app.clone().serve(listener, stopping));
    tracing::info!(
        config = %origin.map_or_else(|| "built-in defaults".to_owned(), |p| p.display().to_string()),
        cache_capacity = config.cache_capacity,
        "listening on http://{addr}"
    );

    tokio::select! {
        probed = aiops_demo_app::probe(addr, Duration::from_secs(5)) => {
            if let Err(e) = probed {
                // Still say ready: systemd's own checks will tell, and we may simply be
                // unreachable from ourselves (a firewall on the loopback, say).
                tracing::warn!(error = %e, "self-check failed");
            }
        }
        ended = &mut server => return finish(ended),
    }
    systemd::ready(&aiops_demo_app::status_line(addr, &[]));
    let watchdog = systemd::spawn_watchdog(|| true);

    let mut changes = app.faults().subscribe();
    let status = tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let line = aiops_demo_app::status_line(addr, &changes.borrow_and_update());
            systemd::status(&line);
        }
    });

    let ended = server.await;
    status.abort();
    if let Some(w) = watchdog {
        w.abort();
    }
    finish(ended)
}

fn finish(ended: Result<aiops_core::http::Drained, tokio::task::JoinError>) -> anyhow::Result<()> {
    let drained = ended.context("the server task failed")?;
    if drained.abandoned > 0 {
        tracing::warn!(
            abandoned = drained.abandoned,
            "stopped; some connections were still open after the grace period and were closed"
        );
    } else {
        tracing::info!("stopped after a clean drain");
    }
    Ok(())
}
