//! `aiops stress`: load and faults for the demo app.

/// Arguments of `aiops stress`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: &Args, _json: bool) -> anyhow::Result<()> {
    anyhow::bail!("aiops stress is being built (issue 2)")
}
