//! From an accepted alert to a run: claim it (so one dispatcher, of any
//! replica, handles it), route it, join it to the open run of the same
//! fingerprint and playbook if there is one (a resolved alert is recorded
//! there, and may cancel the run's pending approvals), else take a run
//! slot, store the run and start it. The run is stored only once a slot is
//! free, so its lease starts when it does. Also the sweeper, which resumes
//! what the state store says is ready and re-dispatches alerts a failure
//! left behind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::Shared;
use super::slots::Slot;
use crate::approvals::StoredApprover;
use crate::bindings::AlertStatus;
use crate::gate::Mode;
use crate::journal::Quiet;
use crate::routing::{Route, routes_for};
use crate::run::{RunEnd, RunReport, RunRequest, Stopped, new_run_id};
use crate::state::StateError;
use crate::state::inbox::{Accepted, Disposition};
use crate::state::runs::NewRun;

/// Who starts runs for alerts.
pub const ALERTS: &str = "alertmanager";

/// Alerts not dispatched this long after they were accepted are looked at
/// again by the sweeper.
const REDISPATCH_AFTER: Duration = Duration::from_secs(5);

pub async fn dispatcher(
    shared: Arc<Shared>,
    leftover: Vec<Accepted>,
    mut inbox: mpsc::Receiver<Vec<Accepted>>,
) {
    for accepted in leftover {
        dispatch(&shared, accepted).await;
    }
    while let Some(batch) = inbox.recv().await {
        for accepted in batch {
            dispatch(&shared, accepted).await;
        }
    }
}

/// Dispatches one alert if this dispatcher claims it, trying again on a
/// state-store failure; one that still fails goes back to the inbox, where
/// the sweeper finds it.
pub(super) async fn dispatch(shared: &Arc<Shared>, accepted: Accepted) {
    let state = shared.runtime().state.clone();
    match state.claim_alert(&accepted.id).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(alert = %accepted.id, "cannot claim an accepted alert ({e}); the sweeper tries again");
            return;
        }
    }
    let mut wait = Duration::from_millis(50);
    for attempt in 1..=5 {
        match try_dispatch(shared, &accepted).await {
            Ok(()) => return,
            Err(e) if attempt < 5 => {
                tracing::warn!(alert = %accepted.id, "dispatch failed ({e}); trying again");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => {
                tracing::error!(alert = %accepted.id, "cannot dispatch an accepted alert: {e}; the sweeper tries again");
                let _ = state.release_alert(&accepted.id).await;
            }
        }
    }
}

async fn try_dispatch(shared: &Arc<Shared>, accepted: &Accepted) -> Result<(), StateError> {
    if let Some(schedule) = accepted.schedule() {
        let Some(route) = super::schedule::route_of(&shared.runtime().config, schedule) else {
            tracing::info!(
                schedule,
                "a tick of a schedule no longer configured; not run"
            );
            return shared
                .runtime()
                .state
                .dispose(&accepted.id, Disposition::Unrouted, &[])
                .await;
        };
        return start_on(shared, accepted, &[&route]).await;
    }
    let in_force = shared.routes();
    let routes = routes_for(&in_force, &accepted.alert);
    if routes.is_empty() {
        shared.metrics.alert("none", "unrouted");
        tracing::info!(alert = %accepted.alert.name, "no route matches");
        return shared
            .runtime()
            .state
            .dispose(&accepted.id, Disposition::Unrouted, &[])
            .await;
    }
    start_on(shared, accepted, &routes).await
}

/// A run stored and holding its slot, to be spawned once the alert's fate
/// is recorded.
struct Starting {
    run_id: String,
    route: Route,
    slot: Slot,
}

/// Joins or starts the runs of a claimed alert on `routes` (its matching
/// routes, or a schedule's own), records what became of it, then starts
/// the new runs. A run stored whose start the store could not record is
/// not spawned here: it is `running` with a lease nobody renews, and the
/// sweeper takes it over when the lease lapses.
async fn start_on(
    shared: &Arc<Shared>,
    accepted: &Accepted,
    routes: &[&Route],
) -> Result<(), StateError> {
    let state = shared.runtime().state.clone();
    let resolved = accepted.alert.status == AlertStatus::Resolved;
    let mut disposition = Disposition::Attached;
    let mut run_ids = Vec::new();
    let mut starting = Vec::new();
    for &route in routes {
        let route_name = format!("{}:{}", route.index, route.playbook);
        match open_or_start(shared, accepted, route, resolved).await? {
            Found::Open(open) => {
                state
                    .append_audit(
                        &open,
                        &serde_json::json!({ "attached": { "alert": accepted.id, "status": if resolved { "resolved" } else { "firing" } } }),
                    )
                    .await?;
                if resolved {
                    state.mark_resolved(&open).await?;
                    if route.cancel_on_resolved {
                        cancel_pending(shared, &open).await?;
                    }
                    disposition = Disposition::Resolved;
                }
                shared.metrics.alert(&route_name, "attached");
                run_ids.push(open);
            }
            Found::Nothing => {
                // Resolved with nothing open: the incident ended before anything ran.
                shared.metrics.alert(&route_name, "resolved");
                disposition = Disposition::Resolved;
            }
            Found::Started(run_id, slot) => {
                shared.metrics.alert(&route_name, "started");
                disposition = Disposition::Started;
                run_ids.push(run_id.clone());
                starting.push(Starting {
                    run_id,
                    route: route.clone(),
                    slot,
                });
            }
        }
    }
    state.dispose(&accepted.id, disposition, &run_ids).await?;
    for run in starting {
        spawn_run(shared.clone(), run, accepted.alert.clone());
    }
    Ok(())
}

/// What a route found for an alert.
enum Found {
    /// The open run it joins.
    Open(String),
    /// A run stored for it, with its slot.
    Started(String, Slot),
    /// Resolved, and nothing open.
    Nothing,
}

/// The open run of the alert's fingerprint on this route, or a run stored
/// for it once a slot is free. The store allows one open run per
/// fingerprint and playbook, so when another replica stored one first,
/// this alert joins that one.
async fn open_or_start(
    shared: &Arc<Shared>,
    accepted: &Accepted,
    route: &Route,
    resolved: bool,
) -> Result<Found, StateError> {
    let state = shared.runtime().state.clone();
    for _ in 0..3 {
        if let Some(open) = state
            .open_run(&accepted.fingerprint, &route.playbook)
            .await?
        {
            return Ok(Found::Open(open));
        }
        if resolved {
            return Ok(Found::Nothing);
        }
        let slot = shared
            .slot(&route.playbook)
            .await
            .map_err(|closed| StateError::Corrupt(closed.to_string()))?;
        let run_id = new_run_id();
        let alert_json = serde_json::to_value(&accepted.alert).unwrap_or_default();
        let stored = state
            .start_run(NewRun {
                id: &run_id,
                playbook: &route.playbook,
                mode: if route.mode == Mode::Live {
                    "live"
                } else {
                    "dry-run"
                },
                alert: &alert_json,
                started_by: ALERTS,
                step_mode: route.step_mode,
                fingerprint: Some(&accepted.fingerprint),
            })
            .await;
        match stored {
            Ok(()) => return Ok(Found::Started(run_id, slot)),
            // Another replica stored one a moment ago: join it (look again).
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StateError::Corrupt(format!(
        "alert {}: the open run of its fingerprint kept changing; it is dispatched again",
        accepted.id
    )))
}

/// Runs a stored run in the background, in the slot it holds, with the
/// runtime in force now (kept for the whole run, whatever a reload does).
fn spawn_run(shared: Arc<Shared>, run: Starting, alert: crate::bindings::Alert) {
    tokio::spawn(async move {
        let Starting {
            run_id,
            route,
            slot,
        } = run;
        let _slot = slot;
        let started = Instant::now();
        let (runtime, loaded) = match shared.playbook(&route.playbook).await {
            Ok(both) => both,
            Err(why) => {
                tracing::error!(run = %run_id, "playbook `{}` does not load: {why}", route.playbook);
                let _ = shared
                    .runtime()
                    .state
                    .finish_run(
                        &run_id,
                        "crashed",
                        3,
                        &serde_json::json!({ "status": "crashed", "error": why }),
                    )
                    .await;
                return;
            }
        };
        let request = RunRequest {
            alert,
            mode: route.mode,
            approver: Arc::new(StoredApprover::new(runtime.state.clone(), ALERTS)),
            progress: Box::new(Quiet),
            run_id: Some(run_id.clone()),
            started_by: ALERTS.to_owned(),
            step_mode: route.step_mode,
        };
        let report = crate::run::run_recorded(
            &runtime.engine,
            &loaded,
            runtime.backends.clone(),
            runtime.state.clone(),
            run_id,
            request,
        )
        .await;
        ended(&shared, &report, started, 0).await;
        // The alert resolved while the run was still reading: what it
        // waits for now is cancelled as the route says.
        if route.cancel_on_resolved
            && matches!(report.end, RunEnd::Stopped(Stopped::Parked { .. }))
            && runtime
                .state
                .resolved(&report.run_id)
                .await
                .unwrap_or(false)
        {
            let _ = cancel_pending(&shared, &report.run_id).await;
        }
    });
}

/// The alert of run `run_id` resolved and its route says so: every
/// approval it waits for is denied, and the run resumes to hear it.
async fn cancel_pending(shared: &Arc<Shared>, run_id: &str) -> Result<(), StateError> {
    let state = shared.runtime().state.clone();
    let mut cancelled = false;
    for pending in state
        .pending_approvals()
        .await?
        .into_iter()
        .filter(|p| p.run_id == run_id)
    {
        let decided = state
            .record_decision(
                run_id,
                pending.seq as u64,
                "stepgate",
                false,
                "the alert resolved before the write was approved; start the playbook again if it is still needed",
            )
            .await;
        cancelled |= decided.is_ok();
    }
    if cancelled {
        resume(shared.clone(), run_id.to_owned());
    }
    Ok(())
}

/// Resumes run `run_id` in the background once it has a slot (its
/// playbook's and the server's). A run this process is resuming already is
/// left to that.
pub fn resume(shared: Arc<Shared>, run_id: String) {
    if !shared.resuming(&run_id) {
        return;
    }
    tokio::spawn(async move {
        resume_in_slot(&shared, &run_id).await;
        shared.resumed(&run_id);
    });
}

async fn resume_in_slot(shared: &Arc<Shared>, run_id: &str) {
    let state = shared.runtime().state.clone();
    let playbook = match state.run(run_id).await {
        Ok(Some(record)) => record.playbook,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(run = %run_id, "not resumed: {e}; the sweeper tries again");
            return;
        }
    };
    let Ok(_slot) = shared.slot(&playbook).await else {
        return;
    };
    let started = Instant::now();
    let before = state.journal(run_id).await.map(|j| j.len()).unwrap_or(0);
    match shared.runtime().resume(run_id, None, Box::new(Quiet)).await {
        Ok(report) => ended(shared, &report, started, before).await,
        // Another host (or replica) has it: not this one's to resume.
        Err(crate::runtime::ResumeFailed::Resume(crate::run::ResumeError::Held { .. })) => {}
        Err(e) => tracing::info!(run = %run_id, "not resumed: {e}"),
    }
}

/// After a run ended or parked: metrics, and the approvers told of a write
/// that waits for them.
pub(super) async fn ended(shared: &Shared, report: &RunReport, started: Instant, replayed: usize) {
    let new_calls = report.journal.get(replayed..).unwrap_or_default();
    shared
        .metrics
        .run(report, started.elapsed().as_secs_f64(), new_calls);
    if let RunEnd::Stopped(Stopped::Parked { seq, .. } | Stopped::AtStep { seq, .. }) = &report.end
    {
        notify_approvers(shared, &report.run_id, *seq).await;
    }
}

async fn notify_approvers(shared: &Shared, run_id: &str, seq: u64) {
    let settings = &shared.runtime().config.server;
    let Some(channel) = &settings.notify else {
        return;
    };
    let Ok(pending) = shared.runtime().state.pending_approvals().await else {
        return;
    };
    let Some(p) = pending
        .iter()
        .find(|p| p.run_id == run_id && p.seq as u64 == seq)
    else {
        return;
    };
    let url = settings
        .public_url
        .as_deref()
        .map(|u| format!("\n  or POST {}/api/runs/{run_id}/approvals/{seq} {{\"approve\": true, \"reason\": \"…\"}}", u.trim_end_matches('/')))
        .unwrap_or_default();
    let message = if p.op == crate::state::approvals::STEP_PAUSE {
        format!(
            "Step mode: {} is paused before step `{}` (run {run_id})\nso far:\n{}\ngo on: stepgate continue {run_id}   stop: stepgate abort {run_id} --reason \"…\"{url}",
            p.playbook, p.target, p.detail
        )
    } else {
        format!(
            "Approval needed: {} wants {} on `{}` (run {run_id} #{seq}, {} of {} approvals)\nwrite: {}\nreason: {}\napprove: stepgate approve {run_id} {seq} --reason \"…\"{url}",
            p.playbook, p.op, p.target, p.approvals, p.quorum, p.detail, p.reason
        )
    };
    let sent = match shared.runtime().backends.channel(channel) {
        Ok(sink) => {
            sink.notify(channel, &message, &format!("{run_id}-{seq}-approval"))
                .await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = sent {
        tracing::warn!(run = %run_id, "approvers not told of write #{seq}: {}", e.redacted(&shared.runtime().backends));
    }
}

/// Every `every`: page due escalations, take over orphaned runs and resume
/// parked runs whose approval is settled (each in a slot, like any run),
/// and hand the dispatcher again the alerts a failure left in the inbox.
pub async fn sweeper(shared: Arc<Shared>, every: Duration) {
    loop {
        match shared.runtime().state.undispatched(REDISPATCH_AFTER).await {
            Ok(left) if !left.is_empty() => {
                // Claims keep a second copy from dispatching twice; a full
                // queue waits for the next sweep.
                let _ = shared.queue.try_send(left);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot read the inbox: {e}"),
        }
        let runtime = shared.runtime();
        match crate::sweep::escalations(&runtime).await {
            Ok(report) => {
                for error in &report.errors {
                    tracing::warn!("sweep: {error}");
                }
            }
            Err(e) => tracing::warn!("sweep failed: {e}"),
        }
        match runtime.state.resumable_runs().await {
            Ok(ready) => {
                for run_id in ready {
                    resume(shared.clone(), run_id);
                }
            }
            Err(e) => tracing::warn!("sweep: cannot list resumable runs: {e}"),
        }
        tokio::time::sleep(every).await;
    }
}
