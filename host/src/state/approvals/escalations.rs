//! Escalation chains: the steps of pending requests whose time has come,
//! each claimed once (several hosts may sweep one store) and released if
//! its page could not be sent.

use sqlx::Row;

use super::{ApprovalStatus, requirement};
use crate::state::{StateError, StateStore};

/// An escalation step whose time has come.
#[derive(Debug, Clone, PartialEq)]
pub struct DueEscalation {
    pub run_id: String,
    pub seq: i64,
    /// Position in the chain.
    pub index: usize,
    /// The pager target to page.
    pub page: String,
    pub playbook: String,
    pub op: String,
    pub target: String,
    pub detail: String,
    pub reason: String,
}

impl StateStore {
    /// Escalation steps of pending requests whose time has come and that
    /// have not been paged.
    pub async fn due_escalations(&self) -> Result<Vec<DueEscalation>, StateError> {
        let rows = sqlx::query(
            "SELECT r.run_id, r.seq, r.created_at, r.requirement, r.escalated FROM approval_requests r
             WHERE NOT EXISTS (SELECT 1 FROM runs x WHERE x.id = r.run_id AND x.status = 'cancelled')",
        )
        .fetch_all(self.pool().await?)
        .await?;
        let now = self.now_ms();
        let mut due = Vec::new();
        for row in &rows {
            let requirement = requirement(&row.try_get::<String, _>("requirement")?)?;
            let escalated = row.try_get::<i64, _>("escalated")?.max(0) as usize;
            let Some(step) = requirement.escalate.get(escalated) else {
                continue;
            };
            let created_at: i64 = row.try_get("created_at")?;
            if created_at.saturating_add(step.after.as_millis() as i64) > now {
                continue;
            }
            let (run_id, seq): (String, i64) = (row.try_get("run_id")?, row.try_get("seq")?);
            if !matches!(
                self.approval_status(&run_id, seq as u64).await?,
                Some(ApprovalStatus::Pending { .. })
            ) {
                continue;
            }
            let request = sqlx::query(
                "SELECT playbook, op, target, detail, reason FROM approval_requests WHERE run_id = $1 AND seq = $2",
            )
            .bind(&run_id)
            .bind(seq)
            .fetch_one(self.pool().await?)
            .await?;
            due.push(DueEscalation {
                index: escalated,
                page: step.page.clone(),
                playbook: request.try_get("playbook")?,
                op: request.try_get("op")?,
                target: request.try_get("target")?,
                detail: request.try_get("detail")?,
                reason: request.try_get("reason")?,
                run_id,
                seq,
            });
        }
        Ok(due)
    }

    /// Takes escalation step `index` of a request for this host; false if
    /// another host took it (or it was taken before).
    pub async fn claim_escalation(&self, due: &DueEscalation) -> Result<bool, StateError> {
        let claimed = sqlx::query(
            "UPDATE approval_requests SET escalated = $1 WHERE run_id = $2 AND seq = $3 AND escalated = $4",
        )
        .bind(due.index as i64 + 1)
        .bind(&due.run_id)
        .bind(due.seq)
        .bind(due.index as i64)
        .execute(self.pool().await?)
        .await?;
        Ok(claimed.rows_affected() == 1)
    }

    /// Gives a claimed escalation step back (its page failed): the next
    /// sweep tries again.
    pub async fn release_escalation(&self, due: &DueEscalation) -> Result<(), StateError> {
        sqlx::query(
            "UPDATE approval_requests SET escalated = $1 WHERE run_id = $2 AND seq = $3 AND escalated = $4",
        )
        .bind(due.index as i64)
        .bind(&due.run_id)
        .bind(due.seq)
        .bind(due.index as i64 + 1)
        .execute(self.pool().await?)
        .await?;
        Ok(())
    }
}
