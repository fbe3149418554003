//! What a test may need from outside the workspace (real Prometheus, Alertmanager, promtool,
//! wrk, prlimit, the wall clock), and what its absence means in this run.
//!
//! One variable decides, `AIOPS_TESTS`:
//!
//! - `hermetic`: tests that start external servers, measure wall-clock targets or need tools
//!   from outside the workspace skip themselves, saying so. This is what the Nix package's
//!   `checkPhase` runs: nothing in it can be slowed into a failure by a loaded builder.
//! - `all`: every test runs, and a test whose tool is missing **fails**. `CI` set (to anything
//!   but `false` or `0`) means the same, so a CI machine that lost a package cannot pass by
//!   skipping.
//! - unset: every test runs; a test whose tool is missing skips, saying which tool and how to
//!   install it.
//!
//! Which *version* of a tool runs is PATH's business: put a directory first on PATH to run the
//! suites against another set (`.ci/test` runs them against Debian 12's Prometheus 2.42 and
//! Alertmanager 0.25 and against the current 3.x and 0.3x).

use std::path::PathBuf;

/// What this run of the test suite asks for (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// `AIOPS_TESTS=hermetic`: no external servers, tools or wall-clock targets.
    Hermetic,
    /// Nothing set: run what the machine has, skip (saying why) what it lacks.
    Local,
    /// `AIOPS_TESTS=all` or `CI`: a missing tool is a failure.
    Required,
}

/// Reads `AIOPS_TESTS` and `CI`. An unknown `AIOPS_TESTS` value panics, naming the ones it takes.
pub fn run() -> Run {
    match std::env::var("AIOPS_TESTS").ok().as_deref() {
        Some("hermetic") => Run::Hermetic,
        Some("all") => Run::Required,
        Some("") | None => {
            let ci = std::env::var("CI").unwrap_or_default();
            if ci.is_empty() || ci == "false" || ci == "0" {
                Run::Local
            } else {
                Run::Required
            }
        }
        Some(other) => panic!(
            "AIOPS_TESTS={other:?} is not understood: use `hermetic` (skip tests that need \
             external tools or the wall clock) or `all` (run everything; a missing tool fails)"
        ),
    }
}

/// The first of `names` found on PATH, searching PATH's directories in order (so a directory put
/// first wins for every name). `None` when none is there, and always under [`Run::Hermetic`].
pub fn find(names: &[&str]) -> Option<PathBuf> {
    if run() == Run::Hermetic {
        return None;
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|p| p.is_file())
}

/// Says that the running test cannot have `tool`: fails the test under [`Run::Required`], and
/// otherwise prints why it is skipped. Call it where the test returns early.
#[track_caller]
pub fn missing(tool: &str) {
    let test = test_name();
    match run() {
        Run::Hermetic => {
            eprintln!("SKIPPED {test}: needs {tool}, and AIOPS_TESTS=hermetic runs no such test");
        }
        Run::Local => eprintln!("SKIPPED {test}: {tool} is not found ({})", install(tool)),
        Run::Required => panic!(
            "{test} needs {tool}, which is not found ({}); AIOPS_TESTS=all or CI is set, so a \
             missing tool fails instead of skipping",
            install(tool)
        ),
    }
}

/// [`find`], and [`missing`] when it finds nothing: `let Some(promtool) =
/// tools::require(&["promtool"]) else { return };`. The first name is the one reported.
#[track_caller]
pub fn require(names: &[&str]) -> Option<PathBuf> {
    let found = find(names);
    if found.is_none() {
        missing(names.first().copied().unwrap_or("a tool"));
    }
    found
}

/// Whether a test that measures wall-clock targets (or runs long, timing-sensitive stacks
/// without any external tool) runs: `false`, after saying so, under [`Run::Hermetic`].
#[track_caller]
pub fn live() -> bool {
    if run() == Run::Hermetic {
        eprintln!(
            "SKIPPED {}: measures wall-clock time, and AIOPS_TESTS=hermetic runs no such test",
            test_name()
        );
        return false;
    }
    true
}

/// The Rust test harness names each test's thread after the test.
fn test_name() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_owned(),
        _ => "this test".to_owned(),
    }
}

/// How to get `tool` on Debian/Ubuntu.
fn install(tool: &str) -> String {
    let package = match tool {
        "prometheus" | "promtool" => "prometheus",
        "alertmanager" | "prometheus-alertmanager" | "amtool" => "prometheus-alertmanager",
        "prlimit" => "util-linux",
        "aiops-webhook" | "aiops-demo-app" => {
            return "build the workspace's binaries first: `cargo test --workspace`, or \
                    `cargo build -p aiops-webhook -p aiops-demo-app` with the same profile"
                .to_owned();
        }
        other => other,
    };
    format!("Debian/Ubuntu: apt-get install {package}")
}
