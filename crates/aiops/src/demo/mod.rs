//! `aiops demo`: the whole stack on one machine.

pub mod supervisor;

use std::path::PathBuf;

/// Arguments of `aiops demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the demo keeps its rendered configuration, data and logs
    /// [default: $XDG_STATE_HOME/aiops-demo, else ~/.local/state/aiops-demo]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// The demo's default state directory.
pub fn default_state_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("aiops-demo"))
}

/// The configuration file of a demo that is running now for this user, if any: its state
/// directory holds `demo.pid` naming a live process and the `config.toml` it rendered.
pub fn running_demo_config() -> Option<PathBuf> {
    let dir = default_state_dir()?;
    let pid: i32 = std::fs::read_to_string(dir.join("demo.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    let config = dir.join("config.toml");
    (alive && config.exists()).then_some(config)
}

pub fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("aiops demo is being built (issue 5)")
}
