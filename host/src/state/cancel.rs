//! Cancelling a run: an operator ends a run that is still open (running,
//! parked, in doubt or stale) for good, with a reason. The run's record
//! says `cancelled` (exit code 7, who and why in its outcome), its pending
//! approval requests are denied and no longer listed or escalated, and the
//! cancel is audited.
//!
//! A run executing somewhere stops at its next stored call (a write it is
//! about to send, or its next batch of reads and writes that sent nothing):
//! the cancel takes its lease in the same transaction, and no write is made
//! without first recording it as intended under that lease. The cancel is
//! on disk before the operator is told it went through. A write already
//! intended and still held by a live lease is on its way to its backend:
//! the cancel is refused until it is recorded (try again in a moment). A
//! write intended by a host that died, or of a run in doubt, may or may not
//! have been made: the cancel goes through and names it, so someone checks
//! the backend.

use serde::Serialize;

use super::StateStore;
use super::approvals::DecisionError;

/// The exit code a cancelled run records.
const CANCELLED_EXIT: i32 = crate::exit::STOPPED as i32;

/// A cancel that was made.
#[derive(Debug, Clone, Serialize)]
pub struct Cancelled {
    pub run_id: String,
    /// The run's status before it.
    pub was: String,
    pub by: String,
    /// The approval requests denied with it.
    pub approvals_denied: usize,
    /// A write intended but never recorded done (its host died, or the run
    /// was in doubt): made or not, someone checks its backend.
    pub unsettled_write: Option<i64>,
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
        // What it waits for, read before it is cancelled (a cancelled run's
        // requests are no longer listed).
        let waiting: Vec<i64> = self
            .pending_approvals()
            .await?
            .into_iter()
            .filter(|p| p.run_id == run_id)
            .map(|p| p.seq)
            .collect();
        let now = self.now_ms();
        let mut tx = self.begin_durable().await?;
        // The conditional update takes the run's row (and waits for a
        // journal write holding it) before anything is read.
        let outcome_text = |was: &str, unsettled: Option<i64>| {
            serde_json::json!({
                "status": "cancelled",
                "summary": format!("cancelled by {by}: {reason}"),
                "cancelled": { "by": by, "reason": reason, "was": was, "unsettled_write": unsettled },
            })
            .to_string()
        };
        let status: Option<(String, Option<i64>)> =
            sqlx::query_as("SELECT status, lease_until FROM runs WHERE id = $1")
                .bind(run_id)
                .fetch_optional(&mut *tx)
                .await?;
        let (was, lease_until) =
            status.ok_or_else(|| DecisionError::UnknownRun(run_id.to_owned()))?;
        let updated = sqlx::query(
            "UPDATE runs SET status = 'cancelled', exit_code = $1, outcome = $2, ended_at = $3, lease_owner = NULL, lease_until = NULL
             WHERE id = $4 AND status = $5 AND status IN ('running', 'parked', 'in-doubt', 'stale')",
        )
        .bind(CANCELLED_EXIT)
        .bind(outcome_text(&was, None))
        .bind(now)
        .bind(run_id)
        .bind(&was)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            let now_status: String = sqlx::query_scalar("SELECT status FROM runs WHERE id = $1")
                .bind(run_id)
                .fetch_one(&mut *tx)
                .await?;
            return Err(
                if matches!(
                    now_status.as_str(),
                    "running" | "parked" | "in-doubt" | "stale"
                ) {
                    DecisionError::Busy {
                        run_id: run_id.to_owned(),
                        what: format!("its status changed to {now_status} meanwhile"),
                    }
                } else {
                    DecisionError::Ended {
                        run_id: run_id.to_owned(),
                        status: now_status,
                    }
                },
            );
        }
        // A write intended last and not yet recorded done.
        let last: Option<(i64, String)> = sqlx::query_as(
            "SELECT seq, phase FROM journal WHERE run_id = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(run_id)
        .fetch_optional(&mut *tx)
        .await?;
        let unsettled = last
            .filter(|(_, phase)| phase == "intended")
            .map(|(seq, _)| seq);
        if let Some(seq) = unsettled {
            let lease_live = was == "running" && lease_until.is_some_and(|until| until > now);
            if lease_live {
                tx.rollback().await?;
                return Err(DecisionError::Busy {
                    run_id: run_id.to_owned(),
                    what: format!(
                        "write #{seq} is being made right now; cancel again once it is recorded"
                    ),
                });
            }
            sqlx::query("UPDATE runs SET outcome = $1 WHERE id = $2")
                .bind(outcome_text(&was, Some(seq)))
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let mut approvals_denied = 0;
        for seq in waiting {
            let denied = self
                .record_decision(
                    run_id,
                    seq as u64,
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
            unsettled_write: unsettled,
        };
        self.append_audit(
            run_id,
            &serde_json::json!({ "cancelled": cancelled, "reason": reason }),
        )
        .await?;
        Ok(cancelled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Entry;
    use crate::gate::Decision;
    use crate::gate::Effect;
    use crate::state::approvals::Role;
    use crate::state::runs::{NewRun, Phase};

    fn write(seq: u64) -> Entry {
        let args = serde_json::json!({ "name": "F", "value": "1", "reason": "r" });
        let result = serde_json::Value::Null;
        Entry::example(
            seq,
            "flags.set",
            Effect::Write,
            Decision::Auto,
            args,
            result,
        )
    }

    async fn store_with_run(lease_ms: u64) -> (tempfile::TempDir, StateStore, String) {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("state.db"))
            .with_lease(std::time::Duration::from_millis(lease_ms));
        store
            .start_run(NewRun {
                id: "r1",
                playbook: "p",
                mode: crate::gate::Mode::Live,
                alert: &serde_json::json!({}),
                started_by: "alertmanager",
                step_mode: false,
                fingerprint: None,
                inbox_id: None,
            })
            .await
            .unwrap();
        let ops = store.add_principal("olga", Role::Operator).await.unwrap();
        (dir, store, ops)
    }

    /// A write intended under a live lease is on its way: the cancel waits
    /// for it to be recorded; once it is, the cancel goes through and the
    /// holder can record nothing more.
    #[tokio::test]
    async fn a_write_in_flight_holds_the_cancel_off_until_it_is_recorded() {
        let (_dir, store, ops) = store_with_run(30_000).await;
        store
            .put_entry("r1", Phase::Intended, &write(1))
            .await
            .unwrap();
        let refused = store.cancel_run(&ops, "r1", "stop").await.unwrap_err();
        assert!(matches!(refused, DecisionError::Busy { .. }), "{refused}");
        assert!(refused.to_string().contains("write #1"), "{refused}");
        assert_eq!(store.run("r1").await.unwrap().unwrap().status, "running");

        store.put_entry("r1", Phase::Done, &write(1)).await.unwrap();
        let cancelled = store.cancel_run(&ops, "r1", "stop").await.unwrap();
        assert_eq!(
            (cancelled.was.as_str(), cancelled.unsettled_write),
            ("running", None)
        );
        let late = store.put_entry("r1", Phase::Intended, &write(2)).await;
        assert!(
            matches!(late, Err(crate::state::StateError::LeaseLost(_))),
            "{late:?}"
        );
        let again = store.cancel_run(&ops, "r1", "stop").await.unwrap_err();
        assert!(matches!(again, DecisionError::Ended { .. }), "{again}");
    }

    /// A host that died after intending a write: the cancel goes through
    /// and names the write nobody knows the fate of.
    #[tokio::test]
    async fn a_dead_hosts_unsettled_write_is_named_by_the_cancel() {
        let (_dir, store, ops) = store_with_run(30).await;
        store
            .put_entry("r1", Phase::Intended, &write(1))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        let cancelled = store.cancel_run(&ops, "r1", "host gone").await.unwrap();
        assert_eq!(cancelled.unsettled_write, Some(1));
        let record = store.run("r1").await.unwrap().unwrap();
        assert_eq!(record.status, "cancelled");
        assert_eq!(record.outcome.unwrap()["cancelled"]["unsettled_write"], 1);
    }

    #[tokio::test]
    async fn only_operators_cancel_and_with_a_reason() {
        let (_dir, store, _ops) = store_with_run(30_000).await;
        let viewer = store.add_principal("vic", Role::Viewer).await.unwrap();
        assert!(matches!(
            store.cancel_run(&viewer, "r1", "x").await,
            Err(DecisionError::NotAnOperator(_))
        ));
        assert!(matches!(
            store.cancel_run("sg_forged", "r1", "x").await,
            Err(DecisionError::Unauthenticated)
        ));
        let ops = store.add_principal("ops2", Role::Operator).await.unwrap();
        assert!(matches!(
            store.cancel_run(&ops, "r1", "  ").await,
            Err(DecisionError::NoReason)
        ));
        assert!(matches!(
            store.cancel_run(&ops, "nope", "x").await,
            Err(DecisionError::UnknownRun(_))
        ));
    }
}
