//! Integration tests of aiops-diagnosis, one binary with a module per area.

mod catalog;
mod engine;
mod evidence;
mod profiles;
mod prom;
mod unit_engine;
mod unit_state;
