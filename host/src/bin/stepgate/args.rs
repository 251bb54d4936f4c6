//! The command line: every subcommand, its arguments and their help, as
//! clap reads them. Argument groups several commands share (the config
//! file) are defined once and flattened in.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// `--config FILE`, `stepgate.toml` unless given.
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigFile {
    /// The config file.
    #[arg(
        long = "config",
        value_name = "CONFIG",
        default_value = "stepgate.toml"
    )]
    pub path: PathBuf,
}

/// The path itself wherever a command takes `&Path`.
impl std::ops::Deref for ConfigFile {
    type Target = PathBuf;

    fn deref(&self) -> &PathBuf {
        &self.path
    }
}

#[derive(Parser)]
#[command(
    name = "stepgate",
    version,
    about = "Run incident playbooks as sandboxed WebAssembly components, behind dry-run and approval gates"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run a playbook once against an alert. Dry run unless --live.
    Run {
        /// A playbook name from the config, or a path to a component.
        playbook: String,
        /// Alertmanager webhook payload or a single alert (JSON); `-` reads stdin.
        #[arg(long)]
        alert: String,
        /// Perform writes (each through its gate). Without it nothing is written.
        #[arg(long)]
        live: bool,
        /// Print one JSON document instead of the step-by-step view.
        #[arg(long)]
        json: bool,
        /// Step mode: pause before every step, showing what the run has
        /// read and decided so far, until you continue (at the terminal, or
        /// `stepgate continue RUN`) or abort.
        #[arg(long)]
        step: bool,
        /// Also write the run (alert, journal, outcome) to this file, for
        /// `stepgate replay` and `stepgate scenario from-journal`.
        #[arg(long)]
        record: Option<PathBuf>,
        /// Your operator token (else $STEPGATE_TOKEN): the run is started
        /// as that principal, who then cannot approve its writes. A live
        /// run without a terminal needs one.
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Show what a component says about itself and what it imports.
    Inspect {
        /// A playbook name from the config, or a path to a component.
        component: String,
        /// The config file (optional; grants are checked if given).
        #[arg(long, default_value = "stepgate.toml")]
        config: PathBuf,
    },
    /// Make a new playbook folder in Rust, Python or JavaScript (a working
    /// `describe` and `run` that pages the on-call, a dry-run and a live
    /// scenario) and register it in the config.
    New {
        /// The playbook's name: lowercase letters, digits and dashes.
        name: String,
        /// rust, python or js.
        #[arg(long, default_value = "rust")]
        lang: stepgate::authoring::Language,
        /// The folder to make it in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// stepgate's Rust SDK (sdk/rust), for Rust playbooks.
        #[arg(long, env = "STEPGATE_RUST_SDK")]
        rust_sdk: Option<PathBuf>,
        /// The config to register it in (made if absent).
        #[arg(long, default_value = "stepgate.toml")]
        config: PathBuf,
        /// Give it a pause flag of its own, in a built-in flag store the
        /// config gains, that it sets (a gated write) before it pages.
        #[arg(long)]
        kill_switch: bool,
    },
    /// Build a playbook folder into a component with its language's
    /// toolchain (cargo, componentize-py, componentize-js).
    Build {
        /// The playbook folder (Cargo.toml, app.py or app.js).
        dir: PathBuf,
        /// Where to write the component (default: DIR/target/NAME.wasm).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Continue a run whose host stopped (crashed, killed): answered from
    /// its journal up to where it stopped, then live. A write in doubt or a
    /// changed playbook stops it (exit code 7).
    Resume {
        run: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Writes waiting for approval.
    Approvals {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Approve a parked write (your token: --token-file or $STEPGATE_TOKEN).
    /// The decision is recorded; once the quorum is met, the server (or
    /// `stepgate sweep`) resumes the run.
    Approve {
        run: String,
        /// The write's position in the run (`stepgate approvals` shows
        /// it); not with --all.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        seq: Option<u64>,
        #[arg(long)]
        reason: String,
        /// The plan digest you looked at (`stepgate approvals`, 8+ hex
        /// digits): refused if the request's plan is not that one. With
        /// --all, the whole plan's digest.
        #[arg(long, required_if_eq("all", "true"))]
        plan: Option<String>,
        /// Approve the run's whole plan (every write it would make from
        /// where it waits, as `stepgate approvals` lists them): each write
        /// then passes while the run makes exactly those writes, in order.
        #[arg(long)]
        all: bool,
        /// Decide through a running `stepgate serve` (its REST API).
        #[arg(long, env = "STEPGATE_SERVER")]
        server: Option<String>,
        /// Wait for the run to go on and print how it ends (without
        /// --server: resume it in this process, which needs the config's
        /// backends).
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Deny a parked write; once resumed, the playbook gets `denied`.
    Deny {
        run: String,
        seq: u64,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        plan: Option<String>,
        #[arg(long, env = "STEPGATE_SERVER")]
        server: Option<String>,
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Settle a write in doubt (a run stopped with exit code 7 after its
    /// host died mid-write): `retry` if the backend never got it,
    /// `mark-done` if it did. Operators only; the run then resumes.
    Resolve {
        run: String,
        /// The write's position in the run (`stepgate show RUN` shows it).
        seq: u64,
        #[arg(value_enum)]
        resolution: ResolutionArg,
        #[arg(long)]
        reason: String,
        /// With mark-done: what the playbook gets as the write's result (JSON).
        #[arg(long)]
        result: Option<String>,
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Serve: alerts in over HTTP (Alertmanager webhooks), runs out,
    /// approvals over the REST API; resumes what is ready at start and
    /// every `server.sweep_every`.
    Serve {
        /// Address and port (default: `server.listen`, 127.0.0.1:9094).
        #[arg(long)]
        listen: Option<String>,
        /// The name this server holds runs and alert claims under, unique
        /// per live server (default: `server.instance`, else host name @
        /// address). Replicas that share one config set it per process,
        /// e.g. from the pod's name.
        #[arg(long, env = "STEPGATE_INSTANCE")]
        instance: Option<String>,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Run every scenario (PLAYBOOK/scenarios/*.toml) offline as a dry run
    /// and compare what each playbook decides with what it expects.
    Test {
        /// Files or directories to search (default: playbooks).
        paths: Vec<PathBuf>,
        /// Also write a JUnit XML report here.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Rewrite the [expect] section of failing scenarios to what the
        /// playbook now decides (review the diff before committing).
        #[arg(long)]
        update: bool,
        /// Only scenarios whose `playbook/name` contains this.
        #[arg(long)]
        filter: Option<String>,
        /// Print what each passing scenario's run decided: its outcome,
        /// checklist and writes (a failing one shows what differs).
        #[arg(long)]
        show: bool,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Run a (possibly new) component against a recorded run, every call
    /// answered from the recording: "same decisions", or where it differs.
    Replay {
        /// A recording (`run --record`, `export`).
        file: PathBuf,
        /// The component to replay (default: the recorded playbook's).
        #[arg(long)]
        playbook: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Write a recorded run of the state store as a recording file.
    Export {
        run: String,
        /// The file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Scenario files.
    Scenario {
        #[command(subcommand)]
        action: ScenarioAction,
        #[arg(long, default_value = "stepgate.toml", global = true)]
        config: PathBuf,
    },
    /// End an open run for good (operators): what it waits for is
    /// denied, and a run executing now stops before its next write.
    Cancel {
        run: String,
        #[arg(long)]
        reason: String,
        /// Cancel through a running `stepgate serve` (its REST API).
        #[arg(long, env = "STEPGATE_SERVER")]
        server: Option<String>,
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Step mode: let a run parked before a step go on.
    Continue {
        run: String,
        #[arg(long, default_value = "continued from the command line")]
        reason: String,
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Step mode: end a run parked before a step.
    Abort {
        run: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Once, what a host does at start and every minute: take over runs
    /// whose host died (lease ran out), resume parked runs whose approval
    /// was decided or expired, page due escalations. Safe to run from cron
    /// on several hosts.
    Sweep {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Principals who may decide approvals, and their tokens.
    Principal {
        #[command(subcommand)]
        action: PrincipalAction,
        #[arg(long, default_value = "stepgate.toml", global = true)]
        config: PathBuf,
    },
    /// List recorded runs, newest first.
    Runs {
        /// Only runs with this status: running, done, failed, limit, crashed.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long)]
        json: bool,
        /// Read from a running `stepgate serve` instead of the state store.
        #[arg(long, env = "STEPGATE_SERVER")]
        server: Option<String>,
        /// Your token, for --server (else $STEPGATE_TOKEN).
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Show one recorded run: its outcome and every call with its gate.
    Show {
        run: String,
        #[arg(long)]
        json: bool,
        #[arg(long, env = "STEPGATE_SERVER")]
        server: Option<String>,
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// The hash-chained audit log of every write.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
        #[arg(long, default_value = "stepgate.toml", global = true)]
        config: PathBuf,
    },
    /// Check a config against its world: the state store migrates, each
    /// connection opens (read-only where no playbook writes), each endpoint
    /// and sink answers, each component loads and is pinned. Changes
    /// nothing; exits 1 if any check fails.
    Doctor {
        #[command(flatten)]
        config: ConfigFile,
        /// One JSON object per check instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Gates and guardrails (rate limits, blast radius, freezes, Cedar
    /// policies) checked against recorded runs.
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
        #[arg(long, default_value = "stepgate.toml", global = true)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
pub(crate) enum PolicyAction {
    /// Judge the writes of recorded runs by the config's gates and
    /// guardrails: which would be allowed, need approval, or be denied now.
    Test {
        /// Runs to judge; none: the most recent `--last`.
        runs: Vec<String>,
        /// How many recent runs to judge when none is named.
        #[arg(long, default_value_t = 50)]
        last: i64,
        /// One JSON object per write instead of the table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum ResolutionArg {
    /// The write never reached its backend: send it again.
    Retry,
    /// The write took effect: record it as done.
    MarkDone,
}

#[derive(Subcommand)]
pub(crate) enum ScenarioAction {
    /// Turn a recording into a scenario: the alert, every answer the run
    /// got, and what it decided as the expectation.
    FromJournal {
        /// A recording (`run --record`, `export`).
        file: PathBuf,
        /// Where to write it (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub(crate) enum PrincipalAction {
    /// Add a principal; prints its token once.
    Add {
        name: String,
        /// viewer, approver, operator or admin.
        #[arg(long, default_value = "approver")]
        role: String,
        /// A group the principal belongs to (gate rules name groups); repeat for several.
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// Revoke a principal's token.
    Revoke { name: String },
}

#[derive(Subcommand)]
pub(crate) enum AuditAction {
    /// Check the chain; names the first edited, deleted or reordered record.
    Verify,
    /// Print every record as JSON lines.
    Export,
}
