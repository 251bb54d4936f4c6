//! Whole flows against the library, each file a module of this one test
//! binary: one link and one copy of wasmtime on disk instead of one per
//! file, which keeps CI's build small and quick. Add a flow as a file here
//! and a `mod` line below. `cargo test -p stepgate-tests --test flows rpc::`
//! runs one file's tests.

mod alertmanager;
mod approvals;
mod attacks;
mod console;
mod db;
mod differential;
mod flags_pager;
mod gates;
mod guardrails;
mod hostile;
mod languages;
mod logs;
mod plans;
mod plaza;
mod rpc;
mod server;
mod slack;
mod state;
mod systems;
mod whole_plan;
