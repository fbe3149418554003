//! Helpers that several crates' integration tests share, so that each suite reads like the
//! domain instead of re-implementing plumbing:
//!
//! - [`slack`]: a local server speaking Slack's incoming-webhook protocol that records what it
//!   receives and can be told to fail (the one external service, faked on loopback);
//! - [`wait_until`]: wait on a condition, bounded, never on a fixed sleep;
//! - [`free_ports`]: loopback ports for programs that cannot be told to bind port 0;
//! - [`procs`]: process trees from `/proc`, and stopping a child the test started;
//! - [`tools`]: finding Prometheus, Alertmanager and other tools, and what their absence means
//!   in this run (`AIOPS_TESTS`, `CI`).

pub mod procs;
pub mod slack;
pub mod tools;

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// Waits until `cond` holds, polling every 20 ms; panics naming `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `n` distinct loopback ports that were free a moment ago (bound to port 0, then released
/// together). For programs that take a fixed port on their command line; a program that can
/// bind port 0 itself should.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound").port())
        .collect()
}
