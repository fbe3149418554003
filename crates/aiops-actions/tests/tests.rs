//! Integration tests of the gate, one binary with a module per area.
