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
//!   call into `run`, and the report. [`sandbox`] is the store it runs in
//!   (data, limits, fixed clocks, traps); [`ending`] says how a run ends.
//! - [`caps`] implements the WIT interfaces: one file per interface, each
//!   call going through the one shared path (scope, gate, journal).
//! - [`scope`], [`guard`], [`gate`], [`journal`]: what may be touched,
//!   the limits a platform team sets once (rate limits, blast radius,
//!   freezes, Cedar policies), whether a write happens, and the record of
//!   every call ([`entry`] is one journaled call); [`approvals`] files approval
//!   requests in the state store and parks the run until they are decided.
//! - [`backends`] are the drivers behind a trait per capability; they decide
//!   no policy.
//! - [`canonical`] writes JSON with its keys sorted, for whatever is
//!   hashed or compared as text; [`sql_names`] names tables as each
//!   database engine resolves them; [`units`] reads "30s" and "64MiB".
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

// Declared from the top of the chain down: a module uses only those
// declared below it (`host/tests/layering.rs` holds it, with the uses that
// still point up listed until they are moved).

// What the binary and the server call: commands, faces, whole jobs.
pub mod authoring;
pub mod doctor;
pub mod policy_test;
pub mod server;
// Taking over, resuming and escalating what waits.
pub mod sweep;
// Scenarios, replays and recordings of runs.
pub mod scenario;
// (replay reads recordings)
pub mod replay;
// (recording keeps a run's journal)
pub mod recording;
// The terminal's view of a run.
pub mod terminal;
// A host's runtime: engine, backends, state, and the runs it starts.
pub mod runtime;
// One run of one playbook.
pub mod run;
// Loading a component and checking it against its grants.
pub mod playbook;
// The store a playbook runs in: its data, limits, fixed clocks, traps.
pub mod sandbox;
// wasmtime: compilation, the compile cache, the epoch ticker.
pub mod engine;
// The WIT interfaces, each call through scope, gate and journal.
pub mod caps;
// What may be touched.
pub mod scope;
// Approval requests: filing them, parking the run.
pub mod approvals;
// The record of every call.
pub mod journal;
// How a run ended, as people see it: exit codes, `--json`, call lines.
pub mod report;
// How a run ends, and the token that parks runs when the host stops.
pub mod ending;
// Alerts in; the drivers behind each capability.
pub mod alert;
pub mod backends;
// The run -> step -> call spans over OTLP.
pub mod telemetry;
// `stepgate.toml`: it parses and validates, and embeds the words of the
// modules below it (their rules, routes, where the store is).
pub mod config;
// The limits a platform team sets once.
pub mod guard;
// Which playbook an alert starts.
pub mod routing;
// The host's own store.
pub mod state;
// One journaled call, the unit the journal, the store and replays share.
pub mod entry;
// The WIT bindings.
pub mod bindings;
// Whether a write happens: the policy words the config embeds, the
// decision the journal and the state store record.
pub mod gate;
// Leaves: canonical JSON, exit codes, guest output, text made inert,
// secrets, SQL names, durations and sizes.
pub mod canonical;
pub mod exit;
pub mod guest_output;
pub mod inert;
pub mod secret;
pub mod sql_names;
pub mod units;
