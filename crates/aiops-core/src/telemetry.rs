//! Logging set-up, called once by each binary's `main` and nowhere else.

use tracing_subscriber::EnvFilter;

/// Installs a `tracing` subscriber writing to stderr. The filter comes from `RUST_LOG`
/// (default `info`). Under systemd (`JOURNAL_STREAM` set) timestamps and colours are left to the
/// journal.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let under_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if under_journal {
        builder.without_time().with_ansi(false).init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}
