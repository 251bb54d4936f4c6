//! One run of one playbook: a fresh store with its limits, the call into
//! `run`, and the report.
//!
//! A run holds everything it needs in its store's data ([`RunData`]); when
//! it ends, the instance and its memory are gone. Whatever a guest does
//! (loop, allocate, recurse, flood) ends this run with a [`RunEnd`] that
//! names the cause; the host and every other run carry on.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::backends::Backends;
use crate::bindings::Alert;
use crate::caps::CallCtx;
use crate::caps::clock::{self, RunClock};
pub use crate::ending::{LimitExceeded, RunEnd, RunReport, Stopped};
use crate::engine::{Engine, InstanceSlot, ticks};
use crate::gate::{Approver, Mode};
use crate::guest_output::GuestOutput;
use crate::journal::{Durable, Journal, Progress};
use crate::playbook::Playbook;
use crate::report::end_json;
use crate::state::StateStore;
use crate::state::runs::{Claim, NewRun, StoredEntry};

/// What starts a run.
pub struct RunRequest {
    pub alert: Alert,
    pub mode: Mode,
    pub approver: Arc<dyn Approver>,
    pub progress: Box<dyn Progress>,
    /// Chosen by the caller, or generated.
    pub run_id: Option<String>,
    /// Who started the run (a user, a token's principal, `alertmanager`),
    /// for the run record and the audit log.
    pub started_by: String,
    /// Pause at every step boundary until an operator continues.
    pub step_mode: bool,
}

/// Refuses memory growth past the run's limit, naming the limit.
pub struct MemoryLimiter {
    limit: u64,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.limit {
            return Err(wasmtime::Error::new(LimitExceeded::Memory {
                limit: self.limit,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }

    fn instances(&self) -> usize {
        crate::engine::CORE_INSTANCES_PER_COMPONENT as usize
    }

    fn memories(&self) -> usize {
        crate::engine::MEMORIES_PER_COMPONENT as usize
    }

    fn tables(&self) -> usize {
        crate::engine::TABLES_PER_COMPONENT as usize
    }
}

/// A run's store data: its capability context and an empty, deny-all WASI.
pub struct RunData {
    pub calls: CallCtx,
    /// The pool's slot this store's instance takes, freed with the store.
    _instance: InstanceSlot,
    /// What the guest printed (for crash reports).
    pub output: GuestOutput,
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
}

impl WasiView for RunData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A new run id: time-ordered, unique enough to key journals and pages.
pub fn new_run_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    format!("r{millis:012x}{:08x}", rand::random::<u32>())
}

/// A store for one run, limits in place, in the instance slot it was
/// given (taken before the run's clock started: waiting for it is not
/// the playbook's time).
pub fn new_store(engine: &Engine, slot: InstanceSlot, calls: CallCtx) -> Store<RunData> {
    let limits = calls.limits;
    let output = GuestOutput::default();
    let data = RunData {
        _instance: slot,
        wasi: deterministic_wasi(&calls.run_id, &output, calls.clock.clone()),
        output,
        calls,
        table: ResourceTable::new(),
        limiter: MemoryLimiter {
            limit: limits.memory,
        },
    };
    let mut store = Store::new(engine.wasmtime(), data);
    store.limiter(|data| &mut data.limiter);
    // What one call may copy out of the guest: its arguments' limit with
    // room for their encoding, not wasmtime's 128 MiB (list elements that
    // all point at one guest string are copied once each).
    store.set_hostcall_fuel(hostcall_fuel(limits.argument_bytes));
    // A guest that computes without calling the host gives its thread
    // back every slice: a spinning playbook must not hold a worker (and
    // with it the hooks, the API and other runs) until its deadline.
    store.set_epoch_deadline(SLICE_TICKS.min(ticks(limits.deadline)));
    store.epoch_deadline_callback(|ctx| {
        let calls = &ctx.data().calls;
        let remaining = calls.remaining();
        if remaining.is_zero() {
            Err(wasmtime::Error::new(LimitExceeded::Deadline {
                limit: calls.limits.deadline,
            }))
        } else {
            // Time spent waiting on humans was not counted: go on for what
            // is really left, a slice at a time, yielding between slices.
            // tokio's own yield: the runtime polls its I/O and timers
            // before the guest goes on (a plain wake would poll them only
            // every few dozen slices, and a server would answer nothing).
            Ok(UpdateDeadline::YieldCustom(
                SLICE_TICKS.min(ticks(remaining)),
                Box::pin(tokio::task::yield_now()),
            ))
        }
    });
    store
}

/// Epoch ticks a guest runs between yields to the executor (one tick is
/// [`crate::engine::TICK`]).
const SLICE_TICKS: u64 = 2;

/// The bytes a guest may move to the host in one call, for arguments of
/// at most `argument_bytes` as JSON: eight times that, at least 4 MiB.
fn hostcall_fuel(argument_bytes: u64) -> usize {
    const FLOOR: usize = 4 << 20;
    usize::try_from(argument_bytes.saturating_mul(8))
        .unwrap_or(usize::MAX)
        .max(FLOOR)
}

/// No files, sockets, environment or arguments; the run's journaled time
/// (see [`crate::caps::clock`]) and randomness seeded from the run id, so a
/// guest cannot use WASI to see the outside world or to decide differently
/// on replay.
fn deterministic_wasi(run_id: &str, output: &GuestOutput, clock: RunClock) -> WasiCtx {
    use rand::SeedableRng;
    use sha2::Digest;
    let seed: [u8; 32] = sha2::Sha256::digest(run_id.as_bytes()).into();
    let mut builder = WasiCtx::builder();
    builder
        .secure_random(rand::rngs::StdRng::from_seed(seed))
        .insecure_random(rand::rngs::StdRng::from_seed(seed))
        .insecure_random_seed(u128::from_le_bytes(
            seed[..16].try_into().unwrap_or_default(),
        ))
        .wall_clock(clock::Unread)
        .monotonic_clock(clock)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .stdout(output.clone())
        .stderr(output.clone());
    builder.build()
}

/// Maps a trap to how the run ended. `printed` is what the guest wrote
/// to stdout/stderr (a panic message), which says more than the trap.
pub fn classify_trap(error: &wasmtime::Error, printed: &str) -> RunEnd {
    if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
        return RunEnd::Limit(limit.clone());
    }
    if let Some(stopped) = error.downcast_ref::<Stopped>() {
        return RunEnd::Stopped(stopped.clone());
    }
    if let Some(wasmtime::Trap::StackOverflow) = error.downcast_ref::<wasmtime::Trap>() {
        return RunEnd::Limit(LimitExceeded::Stack);
    }
    tracing::debug!("guest trap: {error:?}");
    let mut cause = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("the guest trapped: {trap}"),
        None => error.root_cause().to_string(),
    };
    if let Some(place) = trapped_in(error) {
        cause.push_str(&format!(" (in {place})"));
    }
    if printed.is_empty() {
        RunEnd::Crashed(cause)
    } else {
        RunEnd::Crashed(format!("{cause}; it printed:\n{printed}"))
    }
}

/// Where in the guest a trap happened: its innermost named functions, the
/// trap's own first. A call the sandbox answers with a trap (a toolchain's
/// stub for an import) shows as the import's shim or the function that
/// called it, e.g. `wall_clock_now ← PyTime_Time`. The names come from the
/// guest: cut short here, escaped where they are shown.
fn trapped_in(error: &wasmtime::Error) -> Option<String> {
    const FRAMES: usize = 3;
    const NAME: usize = 120;
    let trace = error.downcast_ref::<wasmtime::WasmBacktrace>()?;
    let names: Vec<String> = trace
        .frames()
        .iter()
        .filter_map(|frame| frame.func_name())
        .take(FRAMES)
        .map(|name| {
            let readable = format!("{:#}", rustc_demangle::demangle(name));
            crate::caps::cut_text(&readable, NAME)
        })
        .collect();
    (!names.is_empty()).then(|| names.join(" ← "))
}

/// Runs `playbook` once. With a state store, the run, every journal entry
/// (writes as intended before their backend is called) and an audit record
/// of every write are stored as the run goes.
pub async fn run(
    engine: &Engine,
    playbook: &Playbook,
    backends: Arc<Backends>,
    state: Option<Arc<StateStore>>,
    request: RunRequest,
) -> RunReport {
    let run_id = request.run_id.clone().unwrap_or_else(new_run_id);
    if let Some(store) = &state {
        let alert = serde_json::to_value(&request.alert).unwrap_or_default();
        let started = store
            .start_run(NewRun {
                id: &run_id,
                playbook: &playbook.name,
                mode: mode_name(request.mode),
                alert: &alert,
                started_by: &request.started_by,
                step_mode: request.step_mode,
                fingerprint: None,
                inbox_id: None,
            })
            .await;
        if let Err(e) = started {
            return RunReport {
                run_id,
                playbook: playbook.name.clone(),
                mode: request.mode,
                end: RunEnd::Crashed(format!(
                    "the run was not started: the state store cannot record it: {e}"
                )),
                journal: Vec::new(),
                steps: Vec::new(),
            };
        }
    }
    execute(
        engine,
        playbook,
        backends,
        state,
        run_id,
        request,
        Journaled::default(),
    )
    .await
    .0
}

/// What a resumed (or replayed) run answers from: its stored journal, and
/// the write it was parked on past the journal's end (it must get back to
/// it).
#[derive(Default)]
pub(crate) struct Journaled {
    pub replay: Vec<StoredEntry>,
    pub parked_on: Option<(u64, String)>,
    /// Replaying a recording: a call past the journal's end is a divergence,
    /// never a live call.
    pub only: bool,
    /// A dry run that predicts the live run it continues (the playbook is
    /// told it is live; every write is still simulated).
    pub predicting: bool,
}

/// Runs a playbook whose run record the caller has already stored (the
/// server stores it first, so dedup sees the run before it starts).
pub async fn run_recorded(
    engine: &Engine,
    playbook: &Playbook,
    backends: Arc<Backends>,
    state: Arc<StateStore>,
    run_id: String,
    request: RunRequest,
) -> RunReport {
    execute(
        engine,
        playbook,
        backends,
        Some(state),
        run_id,
        request,
        Journaled::default(),
    )
    .await
    .0
}

/// How many times one resume re-plans a run whose approvals keep going
/// stale before it gives up (the run ends as `stale`).
pub const MAX_REPLANS: u32 = 3;

/// Why a run cannot be resumed.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("no run `{0}` in the state store; `stepgate runs` lists them")]
    Unknown(String),
    #[error("run `{id}` already ended ({status}); only a `running` or `parked` run resumes")]
    Ended { id: String, status: String },
    #[error(
        "run `{0}` stopped on a write in doubt; check its backend, then `stepgate resolve {0} SEQ retry|mark-done` (`stepgate show {0}` shows the write)"
    )]
    InDoubt(String),
    #[error(
        "run `{id}` is being run by host {by} (its lease runs until {until}); if that host is gone, try again once the lease has run out"
    )]
    Held {
        id: String,
        by: String,
        until: String,
    },
    #[error("run `{id}`: {message}")]
    Corrupt { id: String, message: String },
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// Continues a run that the host stopped tracking (it crashed, or was
/// killed): the component runs again from the start, every call the
/// journal holds is answered from it, and the run goes on live where the
/// journal ends. A write stored as intended but not done stops the run as
/// in doubt; a playbook that asks for different calls stops it as diverged.
pub async fn resume(
    engine: &Engine,
    playbook: &Playbook,
    backends: Arc<Backends>,
    state: Arc<StateStore>,
    run_id: &str,
    approver: Arc<dyn Approver>,
    progress: Box<dyn Progress>,
) -> Result<RunReport, ResumeError> {
    match state.claim_run(run_id).await? {
        Claim::Taken => {}
        Claim::Unknown => return Err(ResumeError::Unknown(run_id.to_owned())),
        Claim::Ended(status) if status == "in-doubt" => {
            return Err(ResumeError::InDoubt(run_id.to_owned()));
        }
        Claim::Ended(status) => {
            return Err(ResumeError::Ended {
                id: run_id.to_owned(),
                status,
            });
        }
        Claim::Held { by, until } => {
            return Err(ResumeError::Held {
                id: run_id.to_owned(),
                by,
                until: chrono::DateTime::from_timestamp_millis(until)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default(),
            });
        }
    }
    let run = state
        .run(run_id)
        .await?
        .ok_or_else(|| ResumeError::Unknown(run_id.to_owned()))?;
    let corrupt = |message: String| ResumeError::Corrupt {
        id: run_id.to_owned(),
        message,
    };
    let alert: Alert = serde_json::from_value(run.alert.clone())
        .map_err(|e| corrupt(format!("stored alert: {e}")))?;
    let mode = match run.mode.as_str() {
        "live" => Mode::Live,
        "dry-run" => Mode::DryRun,
        other => return Err(corrupt(format!("unknown mode `{other}`"))),
    };
    let mut progress = progress;
    let mut replans = 0;
    loop {
        let journal = state.journal(run_id).await?;
        // The write the run was parked on, past the end of its journal.
        let last = journal.last().map_or(0, |e| e.entry.seq);
        let parked_on = state
            .parked_on(run_id)
            .await?
            .filter(|(seq, _)| *seq > last);
        let request = RunRequest {
            alert: alert.clone(),
            mode,
            approver: approver.clone(),
            progress,
            run_id: Some(run_id.to_owned()),
            started_by: run.started_by.clone(),
            step_mode: run.step_mode,
        };
        let (report, returned) = execute(
            engine,
            playbook,
            backends.clone(),
            Some(state.clone()),
            run_id.to_owned(),
            request,
            Journaled {
                replay: journal,
                parked_on,
                only: false,
                predicting: false,
            },
        )
        .await;
        progress = returned;
        let RunEnd::Stopped(stopped @ Stopped::Stale { read, .. }) = &report.end else {
            return Ok(report);
        };
        if replans == MAX_REPLANS {
            return Ok(report);
        }
        // The approval was for a world that is gone: set the stale part of
        // the plan aside and run on from it with fresh reads.
        replans += 1;
        progress.log("warn", &format!("{stopped}; re-planning on fresh data"));
        state
            .replan(run_id, *read, &crate::report::end_json(&report.end))
            .await?;
        if state.claim_run(run_id).await? != Claim::Taken {
            return Ok(report);
        }
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::DryRun => "dry-run",
        Mode::Live => "live",
    }
}

/// Renews this host's lease on a run while it runs (every third of the
/// lease), so no other host takes it over; stops when dropped.
struct LeaseKeeper(tokio::task::JoinHandle<()>);

impl LeaseKeeper {
    fn start(state: Arc<StateStore>, run_id: &str) -> LeaseKeeper {
        let run_id = run_id.to_owned();
        let every = (state.lease() / 3).max(Duration::from_millis(10));
        LeaseKeeper(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match state.renew_lease(&run_id).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::error!(run = %run_id, "this host lost its lease on the run");
                        return;
                    }
                    Err(e) => tracing::warn!(run = %run_id, "cannot renew the run's lease: {e}"),
                }
            }
        }))
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the component for a recorded (or unrecorded) run, answering the
/// first calls from `replay`, and records how it ended.
pub(crate) async fn execute(
    engine: &Engine,
    playbook: &Playbook,
    backends: Arc<Backends>,
    state: Option<Arc<StateStore>>,
    run_id: String,
    request: RunRequest,
    from: Journaled,
) -> (RunReport, Box<dyn Progress>) {
    let Journaled {
        replay,
        parked_on,
        only,
        predicting,
    } = from;
    let slot = engine.instance_slot().await;
    let journal = match &state {
        Some(store) => Journal::durable(
            request.progress,
            Durable {
                store: store.clone(),
                run_id: run_id.clone(),
                playbook: playbook.name.clone(),
                mode: mode_name(request.mode).to_owned(),
                started_by: request.started_by.clone(),
            },
        ),
        None => Journal::new(request.progress),
    };
    let calls = CallCtx::new(
        &playbook.name,
        &run_id,
        request.mode,
        playbook.scope.clone(),
        playbook.gates.clone(),
        request.approver,
        backends,
        journal,
        playbook.limits,
    )
    .with_replay(replay)
    .with_replay_only(only)
    .predicting(predicting)
    .with_parked_on(parked_on)
    .with_step_mode(request.step_mode)
    .with_stop(engine.stop_token().clone())
    .with_guardrails(
        playbook.guard.clone(),
        Some(request.alert.clone()),
        &request.started_by,
    );
    let mut store = new_store(engine, slot, calls);
    let _lease = state
        .as_ref()
        .map(|s| LeaseKeeper::start(s.clone(), &run_id));
    // Every log line of the run (steps, calls, the host's own) carries
    // its run id and playbook.
    let span = tracing::info_span!("run", run = %run_id, playbook = %playbook.name);
    crate::telemetry::join_alert_trace(&span, &request.alert);
    let end = tracing::Instrument::instrument(
        async {
            match playbook.pre.instantiate_async(&mut store).await {
                Err(e) => classify_trap(&e, &store.data().output.text()),
                Ok(instance) => match instance.call_run(&mut store, &request.alert).await {
                    Ok(Ok(outcome)) => RunEnd::Done(outcome),
                    Ok(Err(error)) => RunEnd::Failed(error),
                    Err(trap) => classify_trap(&trap, &store.data().output.text()),
                },
            }
        },
        span,
    )
    .await;
    let end = match (end, store.data().calls.unreplayed()) {
        // A resumed run that ended before asking for every call its journal
        // holds did not decide as it did before.
        (end @ (RunEnd::Done(_) | RunEnd::Failed(_)), Some(left)) => {
            let ended = match &end {
                RunEnd::Done(_) => "to finish".to_owned(),
                RunEnd::Failed(e) => format!("to fail ({})", crate::report::error_text(e)),
                _ => String::new(),
            };
            RunEnd::Stopped(Stopped::Diverged {
                seq: left.0,
                journaled: left.1,
                asked: ended,
            })
        }
        (end, _) => end,
    };
    let mut journal = store.into_data().calls.journal;
    if let Err(e) = journal.flush().await {
        tracing::error!(run = %run_id, "cannot store the last reads of the run: {e}");
    }
    let (journal, steps, progress) = journal.into_parts_and_progress();
    let report = RunReport {
        run_id,
        playbook: playbook.name.clone(),
        mode: request.mode,
        end,
        journal,
        steps,
    };
    if let Some(state) = state {
        let outcome = end_json(&report.end);
        let status = outcome["status"].as_str().unwrap_or("crashed").to_owned();
        let finished = state
            .finish_run(
                &report.run_id,
                &status,
                i32::from(report.exit_code()),
                &outcome,
            )
            .await;
        match finished {
            Ok(()) => {
                tracing::debug!(run = %report.run_id, ended = %status, "the end of the run is stored")
            }
            Err(e) => {
                tracing::error!(run = %report.run_id, "cannot record the end of the run: {e}")
            }
        }
    }
    (report, progress)
}
