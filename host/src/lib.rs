//! stepgate: incident playbooks as sandboxed WebAssembly components.
//!
//! Data flows one way through the modules, and no module reaches back up
//! the chain:
//!
//! ```text
//! alert -> run -> caps (capability call) -> scope -> gate -> journal -> backends
//! ```
//!
//! - [`config`] reads `stepgate.toml` and rejects what it does not understand.
//! - [`alert`] turns an Alertmanager payload (or a single alert) into the
//!   WIT `alert` record.
//! - [`engine`] owns wasmtime: compilation, the on-disk compile cache, the
//!   pooling allocator and the epoch ticker. It knows no capability.
//! - [`playbook`] loads a component, asks it to `describe()` itself and
//!   checks what it needs against its grants.
//! - [`run`] drives one run of one playbook: a fresh store, limits, the
//!   call into `run`, and the report.
//! - [`caps`] implements the WIT interfaces: one file per interface, each
//!   call going through the one shared path (scope, gate, journal).
//! - [`scope`], [`guard`], [`gate`], [`journal`]: what may be touched,
//!   the limits a platform team sets once (rate limits, blast radius,
//!   freezes, Cedar policies), whether a write happens, and the record of
//!   every call; [`approvals`] files approval
//!   requests in the state store and parks the run until they are decided.
//! - [`backends`] are the drivers behind a trait per capability; they decide
//!   no policy.
//! - [`canonical`] writes JSON with its keys sorted, for whatever is
//!   hashed or compared as text.
//! - [`inert`] makes text from playbooks, alerts and backends safe to show
//!   a human (terminal escapes, bidi overrides, Slack markup).
//! - [`secret`] resolves URLs, keys and headers from env or files and masks
//!   them in everything the host shows.
//! - [`state`] is the host's own store: runs, journals (writes stored as
//!   intended before they happen), the hash-chained audit log, built-in
//!   flags; SQLite or PostgreSQL. Runs are leased to the host running
//!   them, so no run is ever run by two hosts.
//! - [`authoring`] is for playbook authors, not runs: `stepgate new` and
//!   `stepgate build` in Rust, Python and JavaScript, and telling a built
//!   component's language.
//! - [`sweep`] is what a host does at start and every little while: take
//!   over runs whose host died, resume parked runs whose approval is
//!   settled, page due escalations.
//! - [`policy_test`] judges recorded runs' writes by the rules in force
//!   (`stepgate policy test`).
//! - [`telemetry`] exports the run → step → call spans over OTLP, a run
//!   joined to its alert's trace (off unless configured).
//! - [`doctor`] checks a config against its world (`stepgate doctor`):
//!   every store, connection, endpoint, sink and component, changing
//!   nothing.
//! - [`server`] is `stepgate serve`: alerts in, runs out, and the faces
//!   approvers decide through (the REST API, the web console, Slack), all
//!   through one decision path that records and never executes.

pub mod alert;
pub mod approvals;
pub mod authoring;
pub mod backends;
pub mod bindings;
pub mod canonical;
pub mod caps;
pub mod config;
pub mod doctor;
pub mod engine;
pub mod gate;
pub mod guard;
pub mod guest_output;
pub mod inert;
pub mod journal;
pub mod playbook;
pub mod policy_test;
pub mod recording;
pub mod replay;
pub mod report;
pub mod routing;
pub mod run;
pub mod runtime;
pub mod scenario;
pub mod scope;
pub mod secret;
pub mod server;
pub mod state;
pub mod sweep;
pub mod telemetry;
pub mod terminal;
