//! The workspace root of idem: it hosts the examples (`examples/`) and the workspace-level tests (`tests/`). Use the `idem-core` crate.
