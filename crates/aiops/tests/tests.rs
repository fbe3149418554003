//! Integration tests of the `aiops` command, one binary with a module per area.

mod gate;
mod recommend;
