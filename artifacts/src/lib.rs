//! Paths of the guest components built by this crate's build script.
//!
//! Depend on this crate (as a dev-dependency) to get every playbook and
//! test guest built for `wasm32-wasip2` before your tests run.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
