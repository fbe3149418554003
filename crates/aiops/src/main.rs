use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = aiops::cli::Cli::parse();
    aiops_core::telemetry::init();
    match aiops::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("aiops: {err:#}");
            aiops::exit::code_of(&err)
        }
    }
}
