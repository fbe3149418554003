//! The `aiops` command.
//!
//! `main.rs` only parses arguments and maps errors to exit codes; each subcommand lives in its own
//! module with a clap `Args` struct and a `run` function:
//!
//! - [`stress`]: drive load at the demo app and switch its faults on for a bounded time.
//! - [`recommend`]: diagnose firing alerts on demand.
//! - [`gate`]: the human gate — `pending`, `show`, `approve`, `reject`, `history`, `audit`.
//! - [`demo`]: the whole stack on one machine, supervised.
//! - [`config_cmd`]: `aiops config check|show`.
//! - [`rules`]: `aiops rules`, the alert rules for the watched services.
//! - [`exit`]: exit codes, decided in one place.

pub mod cli;
pub mod config_cmd;
pub mod demo;
pub mod exit;
pub mod gate;
pub mod policy;
pub mod recommend;
pub mod rules;
pub mod stress;

use std::path::Path;

use aiops_core::Config;

/// Finds the configuration: `--config`, `$AIOPS_CONFIG`, `/etc/aiops/config.toml`, and else the
/// configuration of an `aiops demo` running for this user, so that `aiops stress` and
/// `aiops approve` in a second terminal talk to the demo without flags.
pub fn load_config(explicit: Option<&Path>) -> anyhow::Result<Config> {
    let (config, source) = Config::discover(explicit)?;
    if source.is_none()
        && let Some(path) = demo::running_demo_config()
    {
        tracing::debug!(path = %path.display(), "using the running demo's configuration");
        return Ok(Config::load(&path)?);
    }
    Ok(config)
}

/// Runs one parsed command line.
pub fn run(cli: cli::Cli) -> anyhow::Result<()> {
    let load = || load_config(cli.config.as_deref());
    match cli.command {
        cli::Command::Stress(args) => stress::run(&args, &load()?, cli.json),
        cli::Command::Recommend(args) => recommend::run(&args, &load()?, cli.json),
        cli::Command::Gate(cmd) => gate::run(cmd, &load()?, cli.json),
        cli::Command::Demo(args) => demo::run(&args),
        cli::Command::Rules => {
            print!("{}", rules::render_config(&load()?)?);
            Ok(())
        }
        cli::Command::Config { command } => {
            config_cmd::run(&command, cli.config.as_deref(), cli.json)
        }
    }
}
