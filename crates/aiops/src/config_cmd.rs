//! `aiops config check|show`: validate and print the configuration the programs will use.

use std::path::Path;

use aiops_core::Config;

/// `aiops config ...`
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check the configuration file (unknown keys, invalid units and URLs) and say which file was
    /// used; exit 0 only when it is valid.
    Check,
    /// Print the effective configuration as TOML (defaults filled in).
    Show,
}

pub fn run(cmd: &Command, explicit: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let (config, source) = Config::discover(explicit)?;
    let (config, source) = match source {
        Some(path) => (config, Some(path)),
        None => match crate::demo::running_demo_config() {
            Some(path) => (Config::load(&path)?, Some(path)),
            None => (config, None),
        },
    };
    let origin = source.as_ref().map_or_else(
        || "no file: built-in defaults".to_owned(),
        |p| p.display().to_string(),
    );
    match cmd {
        Command::Check if json => {
            let report = serde_json::json!({ "valid": true, "source": source });
            println!("{report}");
        }
        Command::Check => println!("ok: {origin} is valid"),
        Command::Show if json => println!("{}", serde_json::to_string_pretty(&config)?),
        Command::Show => {
            println!("# {origin}");
            print!("{}", config.to_toml());
        }
    }
    Ok(())
}
