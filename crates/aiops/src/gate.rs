//! The human gate: `pending`, `show`, `approve`, `reject`, `history`, `audit verify`.

/// The gate's subcommands (flattened into the top level).
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List actions waiting for approval.
    Pending,
}

pub fn run(_cmd: Command, _config: &aiops_core::Config, _json: bool) -> anyhow::Result<()> {
    anyhow::bail!("the approval commands are being built (issue 4)")
}
