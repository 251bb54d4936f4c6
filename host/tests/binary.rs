//! The `stepgate` binary's whole flows, each file a module of this one test
//! binary: one link and one copy of wasmtime on disk instead of one per
//! file, which keeps CI's build small and quick. Add a flow as a file here
//! and a `mod` line below.

mod support;

mod authoring;
mod cli;
mod crash;
mod doctor;
mod kill_loop;
mod layering;
mod readme;
mod replicas;
mod scenarios;
mod serve;
mod telemetry;
