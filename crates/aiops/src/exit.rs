//! Exit codes, decided in one place. Scripts can rely on them; they are listed in `aiops --help`.

use std::process::ExitCode;

/// Everything went as asked.
pub const OK: u8 = 0;
/// Something failed (I/O, network, a bug); the message says what.
pub const FAILURE: u8 = 1;
/// The command line was wrong (clap uses 2 as well).
pub const USAGE: u8 = 2;
/// The request was understood and refused: stale, expired, cooldown, not allowed, not yours.
pub const REFUSED: u8 = 3;
/// No such action or alert.
pub const NOT_FOUND: u8 = 4;
/// The action ran but verification says the problem is not fixed.
pub const NOT_FIXED: u8 = 5;
/// The aiops service (or Prometheus/Alertmanager, for `recommend`) could not be reached.
pub const UNAVAILABLE: u8 = 6;
/// The action ran but nothing confirmed whether it helped (no traffic, symptom already gone,
/// not scraped, Prometheus not answering): check by hand; not a failure.
pub const UNCONFIRMED: u8 = 7;

/// Shown at the end of `aiops --help`.
pub const HELP: &str = "Exit codes: 0 ok, 1 failure, 2 usage, 3 refused, 4 not found, 5 not fixed, 6 service unavailable, 7 ran but unconfirmed";

/// An error that carries its exit code; `main` prints it and exits with the code.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl Exit {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// The exit code for an error: its [`Exit`] code if it carries one, else [`FAILURE`].
pub fn code_of(err: &anyhow::Error) -> ExitCode {
    ExitCode::from(
        err.downcast_ref::<Exit>()
            .map(|e| e.code)
            .unwrap_or(FAILURE),
    )
}
