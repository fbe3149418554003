//! Integration tests of `aiops-demo-app`: the app in-process through its library (port 0) and the
//! real binary for signals, sd_notify and process-level metrics.

mod support;

mod api;
mod faults;
mod limits;
mod process;
