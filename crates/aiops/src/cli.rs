//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Safe, explainable remediation for one Linux host: recommend, approve, verify, audit.
#[derive(Debug, Parser)]
#[command(name = "aiops", version, after_help = crate::exit::HELP)]
pub struct Cli {
    /// Configuration file [default: $AIOPS_CONFIG, else /etc/aiops/config.toml if present]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Drive load at the demo app and switch its faults on for a bounded time.
    Stress(crate::stress::Args),
    /// Diagnose the alerts Alertmanager reports as firing (or one named alert) and print the
    /// recommendation with its evidence.
    Recommend(crate::recommend::Args),
    #[command(flatten)]
    Gate(crate::gate::Command),
    /// Run the whole stack (Prometheus, Alertmanager, Grafana if installed, the demo app and the
    /// receiver) on this machine as the current user.
    Demo(crate::demo::Args),
    /// Print the Prometheus alert rules for the watched services (`[watch.NAME]` with
    /// `alert_rules = true`): load the output with Prometheus' `rule_files`.
    Rules,
    /// Check or print the configuration.
    Config {
        #[command(subcommand)]
        command: crate::config_cmd::Command,
    },
}
