//! `aiops demo`: the whole stack on one machine.

/// Arguments of `aiops demo`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("aiops demo is being built (issue 5)")
}
