//! Integration tests of the `aiops` command, one binary with a module per area.

mod demo_errors;
mod e2e;
mod gate;
mod recommend;
mod rules;
mod stress;
