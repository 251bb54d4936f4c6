//! From an accepted alert to a run: claim it (so one dispatcher, of any
//! replica, handles it), route it, join it to the open run of the same
//! fingerprint and playbook if there is one (a resolved alert is recorded
//! there, and may cancel the run's pending approvals), else take a run
//! slot, store the run and start it.
//!
//! Alerts go through [`lanes`](super::lanes): one fingerprint at a time, in
//! order, different fingerprints side by side; the repeats a lane holds of
//! an incident whose runs are open are attached together, in one commit.
//! Every wait (for a run slot,
//! for the playbook to load) happens before any run of the alert is
//! stored, so a run's lease starts when it does and no sweep takes it for
//! an orphan. Also the sweeper, which resumes what the state store says is
//! ready and re-dispatches alerts a failure left behind.

use crate::inert::line;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::slots::Slot;
use super::{Executing, Loaded, Shared};
use crate::approvals::StoredApprover;
use crate::bindings::AlertStatus;
use crate::journal::Quiet;
use crate::routing::{Route, routes_for};
use crate::run::{RunEnd, RunReport, RunRequest, Stopped, new_run_id};
use crate::state::StateError;
use crate::state::inbox::{Accepted, AlertRun, Disposition, Repeat, Repeated, attached_record};
use crate::state::runs::NewRun;

/// Who starts runs for alerts.
pub const ALERTS: &str = "alertmanager";

/// Alerts not dispatched this long after they were accepted are looked at
/// again by the sweeper.
const REDISPATCH_AFTER: Duration = Duration::from_secs(5);

/// Fingerprints dispatched side by side, at most.
const MAX_LANES: usize = 256;

pub async fn dispatcher(
    shared: Arc<Shared>,
    leftover: Vec<Accepted>,
    mut inbox: mpsc::Receiver<Vec<Accepted>>,
) {
    let for_lanes = shared.clone();
    let lanes = super::lanes::Lanes::new(MAX_LANES, move |alerts| {
        let shared = for_lanes.clone();
        async move { dispatch_in_order(&shared, alerts).await }
    });
    for accepted in leftover {
        lanes.push(accepted).await;
    }
    while let Some(batch) = inbox.recv().await {
        for accepted in batch {
            lanes.push(accepted).await;
        }
    }
}

/// Dispatches `alerts`, the alerts of one fingerprint a lane had queued,
/// in order. While at least two plain repeats head the queue (firing
/// alerts whose routes all match, none silenced), they are attached to
/// their incident's open runs in one state-store transaction; the first
/// one that is not a repeat (the incident's first alert, a resolved one,
/// one a maintenance window silences) is dispatched on its own, and the
/// rest are tried together again. So a burst of repeats costs one commit,
/// not a claim, lookups, an audit append and a disposition each.
async fn dispatch_in_order(shared: &Arc<Shared>, alerts: Vec<Accepted>) {
    let mut queue = std::collections::VecDeque::from(alerts);
    let mut together = true;
    while !queue.is_empty() {
        if together {
            match attach_together(shared, queue.make_contiguous()).await {
                Ok(0) => {}
                Ok(settled) => {
                    queue.drain(..settled);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(
                        "cannot attach repeated alerts together ({e}); each is dispatched on its own"
                    );
                    together = false;
                }
            }
        }
        if let Some(next) = queue.pop_front() {
            dispatch(shared, next).await;
        }
    }
}

/// Attaches the plain repeats at the head of `alerts` (all of one
/// fingerprint), if there are two or more, in one transaction. Answers how
/// many alerts of the head are settled, attached or held by another
/// dispatcher: none when the first is to be dispatched on its own.
async fn attach_together(shared: &Shared, alerts: &[Accepted]) -> Result<usize, StateError> {
    let in_force = shared.routes();
    let guard = shared.runtime().config.guard.clone();
    let now = chrono::Utc::now();
    let plain = |accepted: &Accepted| {
        if accepted.schedule().is_some() || accepted.alert.status != AlertStatus::Firing {
            return None;
        }
        let routes = routes_for(&in_force, &accepted.alert);
        let unsilenced = routes.iter().all(|route| {
            guard
                .silenced(&route.playbook, &accepted.alert, now)
                .is_none()
        });
        (!routes.is_empty() && unsilenced).then_some(routes)
    };
    let head: Vec<(&Accepted, Vec<&Route>)> = alerts
        .iter()
        .map_while(|accepted| Some((accepted, plain(accepted)?)))
        .collect();
    if head.len() < 2 {
        return Ok(0);
    }
    let repeats: Vec<Repeat> = head
        .iter()
        .map(|(accepted, routes)| Repeat {
            accepted,
            playbooks: routes.iter().map(|route| route.playbook.as_str()).collect(),
        })
        .collect();
    let outcomes = shared.runtime().state.attach_repeats(&repeats).await?;
    let mut settled = 0;
    for ((_, routes), outcome) in head.iter().zip(outcomes) {
        match outcome {
            Repeated::Attached(_) => {
                for route in routes {
                    shared.metrics.alert(&route_name(route), "attached");
                }
            }
            Repeated::Taken => {}
            // Every later alert of the fingerprint is held back too.
            Repeated::Dispatch => break,
        }
        settled += 1;
    }
    Ok(settled)
}

/// Dispatches one alert if this dispatcher claims it, trying again on a
/// state-store failure; one that still fails goes back to the inbox, where
/// the sweeper finds it. The claim is renewed while the alert waits.
async fn dispatch(shared: &Arc<Shared>, accepted: Accepted) {
    let state = shared.runtime().state.clone();
    match state.claim_alert(&accepted.id).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(alert = %accepted.id, "cannot claim an accepted alert ({e}); the sweeper tries again");
            return;
        }
    }
    // The claim is a lease as long as a run's, renewed at a third of it,
    // until this dispatch ends however it ends (a panic included).
    let _renewer = {
        let (state, id) = (state.clone(), accepted.id.clone());
        let renewer = tokio::spawn(async move {
            let every = state.lease() / 3;
            loop {
                tokio::time::sleep(every).await;
                match state.touch_claim(&id).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(alert = %id, "the claim on an accepted alert lapsed while it waited; another dispatcher may take it");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(alert = %id, "cannot renew the claim on an accepted alert: {e}")
                    }
                }
            }
        });
        AbortOnDrop(renewer)
    };
    let mut wait = Duration::from_millis(50);
    for attempt in 1..=5 {
        match try_dispatch(shared, &accepted).await {
            Ok(()) => break,
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

/// A background task stopped when its owner goes.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn try_dispatch(shared: &Arc<Shared>, accepted: &Accepted) -> Result<(), StateError> {
    if let Some(schedule) = accepted.schedule() {
        let config = shared.runtime().config.clone();
        let Some(route) = super::schedule::route_of(&config, schedule) else {
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
        if super::schedule::superseded(&config, schedule, &accepted.alert) {
            tracing::warn!(
                schedule,
                "a tick a later one superseded before it ran; recorded as missed"
            );
            shared
                .metrics
                .alert(&format!("schedule:{schedule}"), "missed");
            return shared
                .runtime()
                .state
                .dispose(&accepted.id, Disposition::Missed, &[])
                .await;
        }
        if unsilenced(shared, &accepted.alert, &[&route]).is_empty() {
            return silenced(shared, accepted).await;
        }
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
    let routes = unsilenced(shared, &accepted.alert, &routes);
    if routes.is_empty() {
        return silenced(shared, accepted).await;
    }
    start_on(shared, accepted, &routes).await
}

/// `routes` without those whose playbook a maintenance window silences
/// now; each one left out is logged and counted.
fn unsilenced<'r>(
    shared: &Shared,
    alert: &crate::bindings::Alert,
    routes: &[&'r Route],
) -> Vec<&'r Route> {
    let guard = shared.runtime().config.guard.clone();
    let now = chrono::Utc::now();
    routes
        .iter()
        .copied()
        .filter(|route| match guard.silenced(&route.playbook, alert, now) {
            None => true,
            Some(window) => {
                tracing::info!(
                    playbook = %route.playbook,
                    window = %window,
                    "a maintenance window silences this route: alert recorded, no run"
                );
                shared.metrics.alert(&route_name(route), "silenced");
                false
            }
        })
        .collect()
}

/// Records an alert every route of which is silenced.
async fn silenced(shared: &Shared, accepted: &Accepted) -> Result<(), StateError> {
    shared
        .runtime()
        .state
        .dispose(&accepted.id, Disposition::Silenced, &[])
        .await
}

/// A run stored and holding its slot, to be spawned once the alert's fate
/// is recorded.
struct Starting {
    run_id: String,
    route: Route,
    slot: Slot,
    loaded: Result<Loaded, String>,
    executing: Option<Executing>,
}

/// Joins or starts the runs of a claimed alert on `routes` (its matching
/// routes, or a schedule's own), records what became of it, then starts
/// the new runs.
///
/// First every route finds its open run, or waits for a slot and loads its
/// playbook; only then are the new runs stored, one after the other, and
/// spawned right after the alert's fate is recorded: no stored run waits.
/// A run stored whose start the store could not record is not spawned: it
/// is `running` with a lease nobody renews, and the sweeper takes it over
/// when the lease lapses.
async fn start_on(
    shared: &Arc<Shared>,
    accepted: &Accepted,
    routes: &[&Route],
) -> Result<(), StateError> {
    let state = shared.runtime().state.clone();
    let resolved = accepted.alert.status == AlertStatus::Resolved;
    let mut disposition = Disposition::Attached;
    let mut run_ids = Vec::new();
    let mut ready = Vec::new();
    let answering = state.runs_of_alert(accepted).await?;
    for &route in routes {
        match answering.of(&route.playbook) {
            // Dispatched before, and the process died between storing the
            // run and recording it: the run is this alert's own, and a
            // sweep resumes it.
            Some(AlertRun::Own(own)) => {
                disposition = Disposition::Started;
                run_ids.push(own);
            }
            Some(AlertRun::Open(open)) => {
                attach(shared, accepted, route, &open).await?;
                if resolved {
                    disposition = Disposition::Resolved;
                }
                run_ids.push(open);
            }
            None if resolved => {
                // Resolved with nothing open: the incident ended before anything ran.
                shared.metrics.alert(&route_name(route), "resolved");
                disposition = Disposition::Resolved;
            }
            None => {
                let slot = shared
                    .slot(&route.playbook)
                    .await
                    .map_err(|closed| StateError::Corrupt(closed.to_string()))?;
                let loaded = shared.playbook(&route.playbook).await;
                ready.push((route, slot, loaded));
            }
        }
    }
    let mut starting = Vec::new();
    for (route, slot, loaded) in ready {
        match store_run(shared, accepted, route).await? {
            Stored::New(run_id) => {
                shared.metrics.alert(&route_name(route), "started");
                disposition = Disposition::Started;
                run_ids.push(run_id.clone());
                starting.push(Starting {
                    executing: shared.executing(&run_id),
                    run_id,
                    route: route.clone(),
                    slot,
                    loaded,
                });
            }
            Stored::Joined(open) => {
                attach(shared, accepted, route, &open).await?;
                run_ids.push(open);
            }
        }
    }
    state.dispose(&accepted.id, disposition, &run_ids).await?;
    for run in starting {
        spawn_run(shared.clone(), run, accepted.alert.clone());
    }
    Ok(())
}

fn route_name(route: &Route) -> String {
    format!("{}:{}", route.index, route.playbook)
}

/// Attaches the alert to open run `open` (audited); a resolved alert is
/// recorded on it and, if the route says so, cancels what it waits for.
async fn attach(
    shared: &Arc<Shared>,
    accepted: &Accepted,
    route: &Route,
    open: &str,
) -> Result<(), StateError> {
    let state = shared.runtime().state.clone();
    let resolved = accepted.alert.status == AlertStatus::Resolved;
    state
        .append_audit(open, &attached_record(&accepted.id, resolved))
        .await?;
    if resolved {
        state.mark_resolved(open).await?;
        if route.cancel_on_resolved {
            cancel_pending(shared, open).await?;
        }
    }
    shared.metrics.alert(&route_name(route), "attached");
    Ok(())
}

/// What storing a run for an alert came to.
enum Stored {
    /// The run, stored.
    New(String),
    /// Another replica stored one for the fingerprint a moment ago.
    Joined(String),
}

/// Stores a run of `route` for the alert; the store allows one open run
/// per fingerprint and playbook, so when another replica stored one first,
/// the alert joins that one.
async fn store_run(
    shared: &Arc<Shared>,
    accepted: &Accepted,
    route: &Route,
) -> Result<Stored, StateError> {
    let state = shared.runtime().state.clone();
    for _ in 0..3 {
        let run_id = new_run_id();
        let alert_json = serde_json::to_value(&accepted.alert).unwrap_or_default();
        let stored = state
            .start_run(NewRun {
                id: &run_id,
                playbook: &route.playbook,
                mode: route.mode,
                alert: &alert_json,
                started_by: ALERTS,
                step_mode: route.step_mode,
                fingerprint: Some(&accepted.fingerprint),
                inbox_id: Some(&accepted.id),
            })
            .await;
        match stored {
            Ok(()) => return Ok(Stored::New(run_id)),
            Err(e) if e.is_conflict() => {
                // Another dispatcher stored this alert's run (its claim
                // lapsed and was taken), or another replica one for the
                // fingerprint.
                if let Some(AlertRun::Own(run) | AlertRun::Open(run)) =
                    state.runs_of_alert(accepted).await?.of(&route.playbook)
                {
                    return Ok(Stored::Joined(run));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(StateError::Corrupt(format!(
        "alert {}: the open run of its fingerprint kept changing; it is dispatched again",
        accepted.id
    )))
}

/// Executes stored run `run_id`, new, in the slot it holds, with the
/// runtime and playbook loaded for it; then frees the slot and tells the
/// approvers what it waits for. The one way the server runs a new run (an
/// alert's, a schedule's, one started over the API).
pub(super) async fn run_in_slot(
    shared: &Shared,
    slot: Slot,
    (runtime, playbook): Loaded,
    run_id: String,
    request: RunRequest,
) -> RunReport {
    let started = Instant::now();
    let report = crate::run::run_recorded(
        &runtime.engine,
        &playbook,
        runtime.backends.clone(),
        runtime.state.clone(),
        run_id,
        request,
    )
    .await;
    // A run that ended or parked holds no slot while approvers are told
    // (and the look-ahead of its plan waits for a slot of its own).
    drop(slot);
    ended(shared, &report, started, 0).await;
    report
}

/// Runs a stored run in the background, in the slot it holds, with the
/// runtime and playbook loaded for it (kept for the whole run, whatever a
/// reload does).
fn spawn_run(shared: Arc<Shared>, run: Starting, alert: crate::bindings::Alert) {
    let state = shared.runtime().state.clone();
    let id = run.run_id.clone();
    tokio::spawn(contained(state, id, async move {
        let Starting {
            run_id,
            route,
            slot,
            loaded,
            executing,
        } = run;
        let (runtime, loaded) = match loaded {
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
        let report = run_in_slot(&shared, slot, (runtime.clone(), loaded), run_id, request).await;
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
        drop(executing);
        resume_if_decided(&shared, &report).await;
    }));
}

/// Resumes the run of `report` if it parked on an approval request (or a
/// step pause) that was decided while this process still executed it
/// (told its approvers, planned its later writes): the decision's own
/// resume found it executing and stepped aside. Called once the
/// execution's mark is gone, so a decision that lands after the check
/// resumes the run itself. A run parked because the host is stopping is
/// left to the next start.
async fn resume_if_decided(shared: &Arc<Shared>, report: &RunReport) {
    let (RunEnd::Stopped(Stopped::Parked { seq, .. })
    | RunEnd::Stopped(Stopped::AtStep { seq, .. })) = &report.end
    else {
        return;
    };
    if shared.runtime().engine.stop_token().raised() {
        return;
    }
    let run_id = &report.run_id;
    match shared
        .runtime()
        .state
        .parked_and_decided(run_id, *seq)
        .await
    {
        Ok(true) => resume(shared.clone(), run_id.clone()),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(run = %run_id, "cannot tell whether the run may go on ({e}); the sweeper looks again")
        }
    }
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

/// Runs `work`, the execution of run `run_id`. A panic in it (a bug of the
/// host, never the playbook's: a guest's trap is an ordinary end) ends the
/// run as crashed, with the panic's message, instead of leaving it leased
/// for the sweep to take over and panic again, forever.
pub async fn contained(
    state: Arc<crate::state::StateStore>,
    run_id: String,
    work: impl std::future::Future<Output = ()>,
) {
    use futures_util::FutureExt;
    let Err(panic) = std::panic::AssertUnwindSafe(work).catch_unwind().await else {
        return;
    };
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned());
    tracing::error!(run = %run_id, "the host panicked while running it: {what}; the run is ended as crashed");
    let outcome = serde_json::json!({
        "status": "crashed",
        "error": format!("the host panicked while running this run: {what}"),
    });
    if let Err(e) = state.finish_run(&run_id, "crashed", 3, &outcome).await {
        tracing::error!(run = %run_id, "cannot record the crash: {e}");
    }
}

/// Resumes run `run_id` in the background once it has a slot (its
/// playbook's and the server's). A run this process is resuming already is
/// left to that.
pub fn resume(shared: Arc<Shared>, run_id: String) {
    // A run this process executes already (started, or being resumed) is
    // left to that execution; the mark goes when the task ends, panic or not.
    let Some(executing) = shared.executing(&run_id) else {
        return;
    };
    let state = shared.runtime().state.clone();
    tokio::spawn(contained(state, run_id.clone(), async move {
        let went_on = resume_in_slot(&shared, &run_id).await;
        drop(executing);
        // Only after a resume that made calls: one that parked again where
        // it was would otherwise be tried again, and again.
        if let Some(report) = went_on {
            resume_if_decided(&shared, &report).await;
        }
    }));
}

/// Resumes run `run_id` once it has a slot; answers its report if the
/// resume made calls the run had not made before.
async fn resume_in_slot(shared: &Arc<Shared>, run_id: &str) -> Option<RunReport> {
    let state = shared.runtime().state.clone();
    let playbook = match state.run(run_id).await {
        Ok(Some(record)) => record.playbook,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(run = %run_id, "not resumed: {e}; the sweeper tries again");
            return None;
        }
    };
    let Ok(slot) = shared.slot(&playbook).await else {
        return None;
    };
    let started = Instant::now();
    let before = state.journal(run_id).await.map(|j| j.len()).unwrap_or(0);
    let resumed = shared.runtime().resume(run_id, None, Box::new(Quiet)).await;
    drop(slot);
    match resumed {
        Ok(report) => {
            ended(shared, &report, started, before).await;
            (report.journal.len() > before).then_some(report)
        }
        // Another host (or replica) has it: not this one's to resume.
        Err(crate::runtime::ResumeFailed::Resume(crate::run::ResumeError::Held { .. })) => None,
        Err(e) => {
            tracing::info!(run = %run_id, "not resumed: {e}");
            None
        }
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
        super::slack::post_request(shared, &report.run_id, *seq).await;
        // Then the writes it would go on to make, for approving them as
        // one (once per request; a resumed run has its plan already). The
        // look-ahead runs the playbook: it waits for a slot like a run.
        if let Ok(_slot) = shared.slot(&report.playbook).await {
            shared.runtime().plan_ahead(report).await;
        }
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
            p.playbook,
            line(&p.target),
            p.detail
                .lines()
                .map(|l| line(l).into_owned())
                .collect::<Vec<_>>()
                .join("\n")
        )
    } else {
        format!(
            "Approval needed: {} wants {} on `{}` (run {run_id} #{seq}, {} of {} approvals)\nwrite: {}\nreason: {}\napprove: stepgate approve {run_id} {seq} --reason \"…\"{url}",
            p.playbook,
            p.op,
            line(&p.target),
            p.approvals,
            p.quorum,
            line(&p.detail),
            line(&p.reason)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{StateStore, runs::NewRun};

    #[tokio::test]
    async fn a_host_panic_ends_the_run_instead_of_looping() {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(StateStore::new(dir.path().join("state.db")));
        let alert = serde_json::json!({});
        state
            .start_run(NewRun {
                id: "r-panics",
                playbook: "p",
                mode: crate::gate::Mode::DryRun,
                alert: &alert,
                started_by: "test",
                step_mode: false,
                fingerprint: None,
                inbox_id: None,
            })
            .await
            .unwrap();
        contained(state.clone(), "r-panics".into(), async {
            panic!("a host bug");
        })
        .await;
        let record = state.run("r-panics").await.unwrap().unwrap();
        assert_eq!(record.status, "crashed");
        // Not leased: the sweep has nothing to take over.
        assert!(state.resumable_runs().await.unwrap().is_empty());
    }
}
