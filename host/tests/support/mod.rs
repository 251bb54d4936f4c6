//! What the host's process-level tests share (the modules of
//! `tests/binary.rs`, each using a part of it).
#![allow(dead_code)]

pub mod hook;
pub mod served;

/// Throwaway PostgreSQL clusters, shared with the `tests` crate.
#[path = "../../../tests/support/servers.rs"]
pub mod servers;
