//! Cancelling a run: an operator ends a run that is still open (running,
//! parked, in doubt or stale) for good, with a reason. The run's record
//! says `cancelled` (exit code 7, who and why in its outcome), every
//! approval it waits for is denied so nobody is asked any more, and the
//! cancel is audited.
//!
//! A run that is executing somewhere stops at its next journaled write:
//! the cancel takes its lease in the same transaction, and no write is made
//! without recording it under that lease first. So after `cancel` answers,
//! no write of the run reaches a backend.

use serde::Serialize;

use super::approvals::DecisionError;
use super::{StateStore, now_ms};

/// The exit code a cancelled run records.
const CANCELLED_EXIT: i32 = crate::report::exit::STOPPED as i32;

/// A cancel that was made.
#[derive(Debug, Clone, Serialize)]
pub struct Cancelled {
    pub run_id: String,
    /// The run's status before it.
    pub was: String,
    pub by: String,
    /// The approval requests denied with it.
    pub approvals_denied: usize,
}

impl StateStore {
    /// Cancels run `run_id` in the name of the operator `token` names.
    pub async fn cancel_run(
        &self,
        token: &str,
        run_id: &str,
        reason: &str,
    ) -> Result<Cancelled, DecisionError> {
        let by = self.authorize_operator(token).await?;
        if reason.trim().is_empty() {
            return Err(DecisionError::NoReason);
        }
        let mut tx = self.begin_write().await?;
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?;
        let was = status.ok_or_else(|| DecisionError::UnknownRun(run_id.to_owned()))?;
        if !matches!(was.as_str(), "running" | "parked" | "in-doubt" | "stale") {
            return Err(DecisionError::Ended {
                run_id: run_id.to_owned(),
                status: was,
            });
        }
        let outcome = serde_json::json!({
            "status": "cancelled",
            "summary": format!("cancelled by {by}: {reason}"),
            "cancelled": { "by": by, "reason": reason, "was": was },
        });
        sqlx::query(
            "UPDATE runs SET status = 'cancelled', exit_code = $1, outcome = $2, ended_at = $3, lease_owner = NULL, lease_until = NULL
             WHERE id = $4",
        )
        .bind(CANCELLED_EXIT)
        .bind(outcome.to_string())
        .bind(now_ms())
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut approvals_denied = 0;
        for pending in self
            .pending_approvals()
            .await?
            .into_iter()
            .filter(|p| p.run_id == run_id)
        {
            let denied = self
                .record_decision(
                    run_id,
                    pending.seq as u64,
                    &by,
                    false,
                    &format!("the run was cancelled: {reason}"),
                )
                .await;
            approvals_denied += usize::from(denied.is_ok());
        }
        let cancelled = Cancelled {
            run_id: run_id.to_owned(),
            was,
            by,
            approvals_denied,
        };
        self.append_audit(
            run_id,
            &serde_json::json!({ "cancelled": cancelled, "reason": reason }),
        )
        .await?;
        Ok(cancelled)
    }
}
