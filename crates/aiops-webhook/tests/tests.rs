//! The receiver's integration tests (one binary; see each module).

mod support;

mod crash;
mod delivery;
mod disk;
mod idempotency;
mod inputs;
mod memory;
mod props;
mod real_stack;
mod retry;
mod slack;
mod snapshots;
mod systemd;
mod truncated;
mod units;
