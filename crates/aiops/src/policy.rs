//! `aiops policy polkit`: the polkit rule that lets the executor's service account restart the
//! allow-listed units and nothing else. The text comes from
//! [`aiops_actions::policy::render_polkit_rule`]; its format is documented there, and the NixOS
//! module renders the same bytes.

/// Policy subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the polkit rule (install as /etc/polkit-1/rules.d/50-aiops.rules).
    Polkit {
        /// The account the executor (aiops-webhook) runs as.
        #[arg(long, default_value = aiops_actions::policy::DEFAULT_USER)]
        user: String,
    },
}

pub fn run(cmd: &Command, config: &aiops_core::Config) -> anyhow::Result<()> {
    match cmd {
        Command::Polkit { user } => {
            anyhow::ensure!(
                !user.is_empty()
                    && user
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')),
                "--user {user:?} is not a plain user name"
            );
            print!(
                "{}",
                aiops_actions::policy::render_polkit_rule(&config.remediation, user)
            );
        }
    }
    Ok(())
}
