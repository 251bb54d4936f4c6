//! From an accepted alert to a run: route it, join it to the open run of
//! the same fingerprint and playbook if there is one (a resolved alert is
//! recorded there, and may cancel the run's pending approvals), else store
//! a new run and start it when a run slot is free. One dispatcher per
//! server, so dedup sees every run it started. Also the sweeper, which
//! resumes what the state store says is ready.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::Shared;
use crate::approvals::StoredApprover;
use crate::bindings::AlertStatus;
use crate::gate::Mode;
use crate::journal::Quiet;
use crate::routing::routes_for;
use crate::run::{RunEnd, RunReport, RunRequest, Stopped, new_run_id};
use crate::state::inbox::{Accepted, Disposition};
use crate::state::runs::NewRun;

/// Who starts runs for alerts.
pub const ALERTS: &str = "alertmanager";

pub async fn dispatcher(
    shared: Arc<Shared>,
    leftover: Vec<Accepted>,
    mut inbox: mpsc::Receiver<Accepted>,
) {
    for accepted in leftover {
        dispatch(&shared, accepted).await;
    }
    while let Some(accepted) = inbox.recv().await {
        dispatch(&shared, accepted).await;
    }
}

/// Dispatches one alert, trying again on a state-store failure; one that
/// still fails stays `new` in the inbox and is dispatched at the next start.
async fn dispatch(shared: &Arc<Shared>, accepted: Accepted) {
    let mut wait = Duration::from_millis(50);
    for attempt in 1..=5 {
        match try_dispatch(shared, &accepted).await {
            Ok(()) => return,
            Err(e) if attempt < 5 => {
                tracing::warn!(alert = %accepted.id, "dispatch failed ({e}); trying again");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => tracing::error!(
                alert = %accepted.id,
                "cannot dispatch an accepted alert: {e}; it stays in the inbox and is dispatched at the next start"
            ),
        }
    }
}

async fn try_dispatch(
    shared: &Arc<Shared>,
    accepted: &Accepted,
) -> Result<(), crate::state::StateError> {
    let state = &shared.runtime().state;
    let in_force = shared.routes();
    let routes = routes_for(&in_force, &accepted.alert);
    if routes.is_empty() {
        shared.metrics.alert("none", "unrouted");
        tracing::info!(alert = %accepted.alert.name, "no route matches");
        return state
            .dispose(&accepted.id, Disposition::Unrouted, &[])
            .await;
    }
    start_on(shared, accepted, &routes).await
}

/// Joins or starts the runs of an accepted alert on `routes` (an alert's
/// matching routes, or a schedule's own), and records what became of it.
pub(super) async fn start_on(
    shared: &Arc<Shared>,
    accepted: &Accepted,
    routes: &[&crate::routing::Route],
) -> Result<(), crate::state::StateError> {
    let state = &shared.runtime().state;
    let resolved = accepted.alert.status == AlertStatus::Resolved;
    let mut disposition = Disposition::Attached;
    let mut run_ids = Vec::new();
    for &route in routes {
        let route_name = format!("{}:{}", route.index, route.playbook);
        let (open, run_id) = open_or_start(state, accepted, route, resolved).await?;
        if let Some(open) = open {
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
            continue;
        }
        let Some(run_id) = run_id else {
            // Resolved with nothing open: the incident ended before anything ran.
            shared.metrics.alert(&route_name, "resolved");
            disposition = Disposition::Resolved;
            continue;
        };
        shared.metrics.alert(&route_name, "started");
        disposition = Disposition::Started;
        run_ids.push(run_id.clone());
        let permit = shared.runs.clone().acquire_owned().await;
        let shared = shared.clone();
        let (playbook, mode, alert) = (route.playbook.clone(), route.mode, accepted.alert.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let started = Instant::now();
            // The runtime this run keeps, whatever a reload does meanwhile.
            let (runtime, loaded) = match shared.playbook(&playbook).await {
                Ok(both) => both,
                Err(why) => {
                    tracing::error!(run = %run_id, "playbook `{playbook}` does not load: {why}");
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
                mode,
                approver: Arc::new(StoredApprover::new(runtime.state.clone(), ALERTS)),
                progress: Box::new(Quiet),
                run_id: Some(run_id.clone()),
                started_by: ALERTS.to_owned(),
                step_mode: false,
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
        });
    }
    state.dispose(&accepted.id, disposition, &run_ids).await
}

/// The open run of the alert's fingerprint on this route, or the id of a
/// run just stored for it (none for a resolved alert). The store allows
/// one open run per fingerprint and playbook, so when another replica
/// stored one first, this alert joins that one.
async fn open_or_start(
    state: &crate::state::StateStore,
    accepted: &Accepted,
    route: &crate::routing::Route,
    resolved: bool,
) -> Result<(Option<String>, Option<String>), crate::state::StateError> {
    let open = state
        .open_run(&accepted.fingerprint, &route.playbook)
        .await?;
    if open.is_some() || resolved {
        return Ok((open, None));
    }
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
            step_mode: false,
            fingerprint: Some(&accepted.fingerprint),
        })
        .await;
    match stored {
        Ok(()) => Ok((None, Some(run_id))),
        Err(e) if e.is_conflict() => Ok((
            state
                .open_run(&accepted.fingerprint, &route.playbook)
                .await?,
            None,
        )),
        Err(e) => Err(e),
    }
}

/// The alert of run `run_id` resolved and its route says so: every
/// approval it waits for is denied, and the run resumes to hear it.
async fn cancel_pending(
    shared: &Arc<Shared>,
    run_id: &str,
) -> Result<(), crate::state::StateError> {
    let state = &shared.runtime().state;
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

/// Resumes run `run_id` in the background, when a run slot is free.
pub fn resume(shared: Arc<Shared>, run_id: String) {
    tokio::spawn(async move {
        let _permit = shared.runs.clone().acquire_owned().await;
        let started = Instant::now();
        let before = shared
            .runtime()
            .state
            .journal(&run_id)
            .await
            .map(|j| j.len())
            .unwrap_or(0);
        match shared
            .runtime()
            .resume(&run_id, None, Box::new(Quiet))
            .await
        {
            Ok(report) => ended(&shared, &report, started, before).await,
            Err(e) => tracing::info!(run = %run_id, "not resumed: {e}"),
        }
    });
}

/// After a run ended or parked: metrics, and the approvers told of a write
/// that waits for them.
async fn ended(shared: &Shared, report: &RunReport, started: Instant, replayed: usize) {
    let new_calls = report.journal.get(replayed..).unwrap_or_default();
    shared
        .metrics
        .run(report, started.elapsed().as_secs_f64(), new_calls);
    if let RunEnd::Stopped(Stopped::Parked { seq, .. }) = &report.end {
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
    let message = format!(
        "Approval needed: {} wants {} on `{}` (run {run_id} #{seq}, {} of {} approvals)\nwrite: {}\nreason: {}\napprove: stepgate approve {run_id} {seq} --reason \"…\"{url}",
        p.playbook, p.op, p.target, p.approvals, p.quorum, p.detail, p.reason
    );
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

/// Every `every`: take over orphaned runs, resume parked runs whose
/// approval is settled, page due escalations.
pub async fn sweeper(shared: Arc<Shared>, every: Duration) {
    loop {
        let quiet = |_: &str| -> Box<dyn crate::journal::Progress> { Box::new(Quiet) };
        let started = Instant::now();
        match crate::sweep::sweep(&shared.runtime(), &quiet).await {
            Ok(report) => {
                for resumed in &report.resumed {
                    ended(&shared, resumed, started, 0).await;
                }
                for error in &report.errors {
                    tracing::warn!("sweep: {error}");
                }
            }
            Err(e) => tracing::warn!("sweep failed: {e}"),
        }
        tokio::time::sleep(every).await;
    }
}
