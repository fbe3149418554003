//! `aiops recommend`: on-demand diagnosis.

/// Arguments of `aiops recommend`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Diagnose only this alert (by alertname); default: every alert Alertmanager reports firing.
    #[arg(long)]
    pub alert: Option<String>,
}

pub fn run(_args: &Args, _config: &aiops_core::Config, _json: bool) -> anyhow::Result<()> {
    anyhow::bail!("aiops recommend is being built (issue 4)")
}
