//! One run of one playbook: a fresh store with its limits, the call into
//! `run`, and the report.
//!
//! A run holds everything it needs in its store's data ([`RunData`]); when
//! it ends, the instance and its memory are gone. Whatever a guest does
//! (loop, allocate, recurse, flood) ends this run with a [`RunEnd`] that
//! names the cause; the host and every other run carry on.

use std::sync::Arc;
use std::time::Duration;

use crate::backends::Backends;
use crate::bindings::Alert;
use crate::caps::CallCtx;
pub use crate::ending::{LimitExceeded, RunEnd, RunReport, Stopped};
use crate::engine::Engine;
use crate::gate::{Approver, Mode};
use crate::journal::{Durable, Journal, Progress};
use crate::playbook::Playbook;
use crate::report::end_json;
pub use crate::sandbox::{RunData, classify_trap, new_store};
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

/// A new run id: time-ordered, unique enough to key journals and pages.
pub fn new_run_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    format!("r{millis:012x}{:08x}", rand::random::<u32>())
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
                mode: request.mode,
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
    let mode = run.mode;
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
                mode: request.mode,
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
