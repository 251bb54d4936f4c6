//! What a host does when it starts and then every little while: take over
//! runs whose host died (their lease ran out), resume parked runs whose
//! approval was decided or expired, and page the next step of the
//! escalation chain of approvals that have waited too long.
//!
//! It decides nothing itself: resuming is [`Runtime::resume`], deciding is
//! the approval records'. Several hosts may sweep the same state store at
//! once: every run and every escalation step is claimed before it is acted
//! on, so each happens once.

use crate::inert::line;
use serde::Serialize;

use crate::backends::Page;
use crate::journal::Progress;
use crate::run::RunReport;
use crate::runtime::{ResumeFailed, Runtime};
use crate::state::StateError;
use crate::state::approvals::DueEscalation;

/// What one sweep did.
#[derive(Default)]
pub struct SweepReport {
    /// Escalation pages sent.
    pub escalated: Vec<Escalated>,
    /// Runs resumed, and how each ended (or parked again).
    pub resumed: Vec<RunReport>,
    /// What could not be done; the next sweep tries again.
    pub errors: Vec<String>,
}

/// An escalation page that went out.
#[derive(Debug, Clone, Serialize)]
pub struct Escalated {
    pub run_id: String,
    pub seq: i64,
    /// 1-based step of the chain.
    pub step: usize,
    pub paged: String,
    pub page_id: String,
}

/// Sweeps once; `progress` makes the reporter of each resumed run.
pub async fn sweep(
    runtime: &Runtime,
    progress: &(dyn Fn(&str) -> Box<dyn Progress> + Sync),
) -> Result<SweepReport, StateError> {
    let mut report = escalations(runtime).await?;
    for run_id in runtime.state.resumable_runs().await? {
        match runtime.resume(&run_id, None, progress(&run_id)).await {
            Ok(resumed) => report.resumed.push(resumed),
            // Another host took it first: not an error.
            Err(ResumeFailed::Resume(crate::run::ResumeError::Held { .. })) => {}
            Err(e) => report.errors.push(format!("run {run_id}: {e}")),
        }
    }
    Ok(report)
}

/// Pages the escalation steps that are due (each claimed first, so once
/// across hosts); resumes nothing.
pub async fn escalations(runtime: &Runtime) -> Result<SweepReport, StateError> {
    let mut report = SweepReport::default();
    for due in runtime.state.due_escalations().await? {
        if !runtime.state.claim_escalation(&due).await? {
            continue;
        }
        match escalate(runtime, &due).await {
            Ok(escalated) => report.escalated.push(escalated),
            Err(why) => {
                runtime.state.release_escalation(&due).await?;
                report.errors.push(why);
            }
        }
    }
    Ok(report)
}

/// Pages the escalation step and audits it.
async fn escalate(runtime: &Runtime, due: &DueEscalation) -> Result<Escalated, String> {
    let step = due.index + 1;
    let summary = format!(
        "Approval waiting: {} wants {} on `{}` (run {} #{})",
        due.playbook,
        due.op,
        line(&due.target),
        due.run_id,
        due.seq
    );
    let details = format!(
        "write: {}\nreason: {}\ndecide: stepgate approve {} {} --reason \"…\" (or deny)\nescalation step {step}",
        line(&due.detail),
        line(&due.reason),
        due.run_id,
        due.seq
    );
    let page = Page {
        dedup_key: format!("{}-{}-escalation-{step}", due.run_id, due.seq),
        target: &due.page,
        severity: "warning",
        summary: &summary,
        details: &details,
    };
    let sink = runtime
        .backends
        .target(&due.page)
        .map_err(|e| format!("escalation of run {} #{}: {e}", due.run_id, due.seq))?;
    let page_id = sink.page(&page).await.map_err(|e| {
        format!(
            "escalation page to `{}` for run {} #{} failed: {}",
            due.page,
            due.run_id,
            due.seq,
            e.redacted(&runtime.backends)
        )
    })?;
    let escalated = Escalated {
        run_id: due.run_id.clone(),
        seq: due.seq,
        step,
        paged: due.page.clone(),
        page_id,
    };
    runtime
        .state
        .append_audit(&due.run_id, &serde_json::json!({ "escalated": escalated }))
        .await
        .map_err(|e| {
            format!(
                "escalation of run {} #{} is not audited: {e}",
                due.run_id, due.seq
            )
        })?;
    Ok(escalated)
}
