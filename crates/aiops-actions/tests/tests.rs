//! Integration tests of the gate, one binary with a module per area.

mod audit;
mod control;
mod gate;
mod live;
mod live_demo;
mod store;
mod support;
mod systemd;
