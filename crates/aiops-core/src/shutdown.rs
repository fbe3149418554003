//! The signal that asks a server to stop.

/// Resolves on the first SIGTERM or SIGINT and returns the signal's name.
///
/// # Panics
/// If the signal handlers cannot be installed, which only happens when the runtime has no
/// signal driver: a programming error.
pub async fn signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
