//! Durable approvals: the [`Approver`] that files a request in the state
//! store and answers from the decisions recorded there. A request that is
//! not decided yet is `Pending`, which parks the run (no instance is held
//! while humans decide); the run resumes from its journal once the request
//! is decided. Deciding is [`StateStore::decide_approval`]'s business.
//!
//! `stepgate run --live` at a terminal keeps its prompt as a convenience on
//! the same records: the request is filed, and the answer typed at the
//! prompt is recorded as the decision of whoever started the run. The
//! terminal is one person who started the run, so it is asked only about
//! writes one approver of any group may settle; for a quorum above one or a
//! rule naming groups, the run parks for the principals who may.

use std::sync::Arc;

use crate::gate::{Answer, Approver, WriteRequest};
use crate::state::StateStore;
use crate::state::approvals::ApprovalStatus;

pub struct StoredApprover {
    store: Arc<StateStore>,
    /// Who started the run: may not approve its writes (except at the
    /// terminal prompt of their own run).
    started_by: String,
    /// The human at the terminal of `stepgate run`, if there is one.
    terminal: Option<Arc<dyn Approver>>,
}

impl StoredApprover {
    pub fn new(store: Arc<StateStore>, started_by: &str) -> StoredApprover {
        StoredApprover {
            store,
            started_by: started_by.to_owned(),
            terminal: None,
        }
    }

    /// Asks `terminal` about a request still pending, and records the answer.
    pub fn at_terminal(mut self, terminal: Arc<dyn Approver>) -> StoredApprover {
        self.terminal = Some(terminal);
        self
    }

    async fn ask_terminal(&self, terminal: &dyn Approver, request: &WriteRequest) -> Answer {
        let (approve, reason) = match terminal.decide(request).await {
            Ok(()) => (true, "approved at the terminal".to_owned()),
            Err(why) => (false, why),
        };
        let recorded = self
            .store
            .record_decision(
                &request.run_id,
                request.seq,
                &self.started_by,
                approve,
                &reason,
            )
            .await;
        match recorded {
            Ok(status) => answer(status),
            Err(e) => Answer::Refused(format!("the decision could not be recorded: {e}")),
        }
    }
}

impl StoredApprover {
    /// The wait for a decided approval, as a span (when telemetry is on).
    async fn trace_wait(&self, request: &WriteRequest, status: &ApprovalStatus) {
        if !crate::telemetry::exporting() {
            return;
        }
        let outcome = match status {
            ApprovalStatus::Approved { .. } => "approved",
            ApprovalStatus::Denied { .. } => "denied",
            ApprovalStatus::Pending { .. } => return,
        };
        if let Ok(Some((requested, Some(decided)))) = self
            .store
            .approval_times(&request.run_id, request.seq)
            .await
        {
            crate::telemetry::approval_wait(request.seq, requested, decided, outcome);
        }
    }
}

fn answer(status: ApprovalStatus) -> Answer {
    match status {
        ApprovalStatus::Approved { .. } => Answer::Approved,
        ApprovalStatus::Denied { by, reason } => {
            Answer::Refused(format!("denied by {by}: {reason}"))
        }
        ApprovalStatus::Pending { .. } => Answer::Pending,
    }
}

#[async_trait::async_trait]
impl Approver for StoredApprover {
    async fn decide(&self, request: &WriteRequest) -> Result<(), String> {
        match self.answer(request).await {
            Answer::Approved => Ok(()),
            Answer::Refused(why) => Err(why),
            Answer::Pending => Err("the approval is pending".to_owned()),
        }
    }

    async fn preview(&self, run_id: &str, seq: u64, preview: serde_json::Value) {
        // Shown to approvers, never decisive: a failure to keep it loses
        // only the preview.
        if let Err(e) = self.store.set_approval_preview(run_id, seq, &preview).await {
            tracing::warn!("the preview of write #{seq} was not kept: {e}");
        }
    }

    async fn answer(&self, request: &WriteRequest) -> Answer {
        let filed = match self.store.request_approval(request, &self.started_by).await {
            // A write that is the next of a whole plan someone approved is
            // decided by that approval (if the run has kept to the plan).
            Ok(ApprovalStatus::Pending { .. }) if request.findings.is_empty() => {
                match self
                    .store
                    .apply_plan_approvals(&request.run_id, request.seq)
                    .await
                {
                    Ok(()) => self
                        .store
                        .approval_status(&request.run_id, request.seq)
                        .await
                        .and_then(|s| {
                            s.ok_or_else(|| {
                                crate::state::StateError::Corrupt(
                                    "an approval request vanished".into(),
                                )
                            })
                        }),
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        match filed {
            Ok(ApprovalStatus::Pending { .. }) => match &self.terminal {
                // The terminal is one person, who started the run: it may
                // settle only what one approver of any group may settle, and
                // nothing a guardrail escalated (that needs someone else).
                Some(terminal)
                    if request.requirement.quorum <= 1
                        && request.requirement.groups.is_empty()
                        && request.findings.is_empty() =>
                {
                    self.ask_terminal(&**terminal, request).await
                }
                _ => Answer::Pending,
            },
            Ok(status) => {
                self.trace_wait(request, &status).await;
                answer(status)
            }
            // No record, no write: refuse rather than perform unrecorded.
            Err(e) => Answer::Refused(format!("the approval could not be recorded: {e}")),
        }
    }
}
