//! The `aiops` command.
//!
//! `main.rs` only parses arguments and maps errors to exit codes; each subcommand lives in its own
//! module with a clap `Args` struct and a `run` function:
//!
//! - [`stress`]: drive load at the demo app and switch its faults on for a bounded time.
//! - [`recommend`]: diagnose firing alerts on demand.
//! - [`gate`]: the human gate — `pending`, `show`, `approve`, `reject`, `history`, `audit`.
//! - [`demo`]: the whole stack on one machine, supervised.
//! - [`exit`]: exit codes, decided in one place.

pub mod cli;
pub mod demo;
pub mod exit;
pub mod gate;
pub mod recommend;
pub mod stress;

use aiops_core::Config;

/// Runs one parsed command line.
pub fn run(cli: cli::Cli) -> anyhow::Result<()> {
    let load = || -> anyhow::Result<Config> {
        let (config, _source) = Config::discover(cli.config.as_deref())?;
        Ok(config)
    };
    match cli.command {
        cli::Command::Stress(args) => stress::run(&args, cli.json),
        cli::Command::Recommend(args) => recommend::run(&args, &load()?, cli.json),
        cli::Command::Gate(cmd) => gate::run(cmd, &load()?, cli.json),
        cli::Command::Demo(args) => demo::run(&args),
    }
}
