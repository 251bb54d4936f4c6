//! Writes in doubt and how an operator settles them. A write stored as
//! intended but never as done may or may not have reached its backend; the
//! host never guesses. An operator checks the backend and says which:
//! `retry` (it did not happen: send it again, through its gate) or
//! `mark-done` (it happened: the playbook is given the result the operator
//! supplies). Either way the run goes back to `parked`, ready to resume,
//! and the resolution is appended to the audit log with who and why.
//!
//! One case is settled by the store itself: a write whose done row was
//! committed although the host was told the commit failed (the connection
//! was lost during COMMIT). The store holds its answer, so it was made: it
//! may be marked done (the stored answer is kept), never sent again.

use serde::{Deserialize, Serialize};

use super::approvals::DecisionError;
use super::runs::Phase;
use super::{StateError, StateStore};
use crate::entry::Entry;

/// What the operator found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resolution {
    /// The write did not reach its backend: send it again.
    Retry,
    /// The write took effect; the playbook gets this as its result.
    MarkDone(serde_json::Value),
}

/// The write a run is in doubt about.
#[derive(Debug, Clone, PartialEq)]
pub struct InDoubt {
    pub run_id: String,
    pub entry: Entry,
    /// The store holds the write as done after all (its commit reached
    /// the store, its answer did not reach the host): it was made, and
    /// `entry` holds the backend's answer.
    pub recorded: bool,
}

impl InDoubt {
    /// What the backend answered, when the store holds the write as done
    /// after all: the journaled result without its `ok` wrapper, in the
    /// form an operator's mark-done gives. `None` while it is not recorded.
    pub fn recorded_answer(&self) -> Option<serde_json::Value> {
        if !self.recorded {
            return None;
        }
        let result = &self.entry.result;
        Some(match result.as_object() {
            Some(fields) if fields.len() == 1 => fields.get("ok").unwrap_or(result).clone(),
            _ => result.clone(),
        })
    }
}

impl StateStore {
    /// The write run `run_id` stopped in doubt on, if it did.
    pub async fn in_doubt(&self, run_id: &str) -> Result<Option<InDoubt>, StateError> {
        let Some(run) = self.run(run_id).await? else {
            return Ok(None);
        };
        if run.status != "in-doubt" {
            return Ok(None);
        }
        // The write it stopped on is its last entry: every entry before a
        // write is stored before it is sent, none after.
        let last = self.journal(run_id).await?.pop();
        Ok(last
            .filter(|stored| stored.phase == Phase::Intended || stored.entry.is_write())
            .map(|stored| InDoubt {
                run_id: run_id.to_owned(),
                recorded: stored.phase == Phase::Done,
                entry: stored.entry,
            }))
    }

    /// Write `seq` of run `run_id`, if the run stopped in doubt on it.
    pub async fn in_doubt_about(&self, run_id: &str, seq: u64) -> Result<InDoubt, DecisionError> {
        self.in_doubt(run_id)
            .await?
            .filter(|d| d.entry.seq == seq)
            .ok_or_else(|| DecisionError::NotInDoubt {
                run_id: run_id.to_owned(),
                seq,
            })
    }

    /// Settles write `seq` of an in-doubt run; the run is `parked` after
    /// and resumes like any parked run. Operators and admins only.
    pub async fn resolve_in_doubt(
        &self,
        token: &str,
        run_id: &str,
        seq: u64,
        resolution: &Resolution,
        reason: &str,
    ) -> Result<(), DecisionError> {
        let principal = self.authorize_operator(token).await?;
        if reason.trim().is_empty() {
            return Err(DecisionError::NoReason);
        }
        let in_doubt = self.in_doubt_about(run_id, seq).await?;
        let mut tx = self.begin_write().await?;
        match resolution {
            // Recorded done: it was made. Its stored answer stays, and it
            // is never sent again.
            Resolution::Retry if in_doubt.recorded => {
                return Err(DecisionError::RecordedDone {
                    run_id: run_id.to_owned(),
                    seq,
                });
            }
            Resolution::MarkDone(_) if in_doubt.recorded => {}
            Resolution::Retry => {
                sqlx::query("DELETE FROM journal WHERE run_id = $1 AND seq = $2")
                    .bind(run_id)
                    .bind(seq as i64)
                    .execute(&mut *tx)
                    .await?;
            }
            Resolution::MarkDone(value) => {
                let mut entry = in_doubt.entry.clone();
                entry.result = serde_json::json!({ "ok": value });
                let text = serde_json::to_string(&entry).map_err(|e| {
                    StateError::Corrupt(format!("cannot encode a journal entry: {e}"))
                })?;
                sqlx::query(
                    "UPDATE journal SET phase = 'done', entry = $1 WHERE run_id = $2 AND seq = $3",
                )
                .bind(text)
                .bind(run_id)
                .bind(seq as i64)
                .execute(&mut *tx)
                .await?;
            }
        }
        let moved = sqlx::query(
            "UPDATE runs SET status = 'parked', ended_at = NULL, exit_code = NULL WHERE id = $1 AND status = 'in-doubt'",
        )
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            // Someone else resolved it meanwhile.
            return Err(DecisionError::NotInDoubt {
                run_id: run_id.to_owned(),
                seq,
            });
        }
        tx.commit().await?;
        // A write recorded done keeps the answer the store holds, whatever
        // result came with the mark-done; the audit says which was kept.
        let resolution = match in_doubt.recorded_answer() {
            Some(answer) => Resolution::MarkDone(answer),
            None => resolution.clone(),
        };
        self.append_audit(
            run_id,
            &serde_json::json!({
                "resolved": {
                    "seq": seq,
                    "principal": principal,
                    "resolution": resolution,
                    "recorded": in_doubt.recorded,
                    "reason": reason,
                    "entry": in_doubt.entry,
                },
            }),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::Decision;
    use crate::gate::Effect;
    use crate::state::approvals::Role;
    use crate::state::runs::NewRun;

    fn write(seq: u64) -> Entry {
        let args = serde_json::json!({ "target": "ceo" });
        let result = serde_json::Value::Null;
        Entry::example(
            seq,
            "pager.page",
            Effect::Write,
            Decision::Auto,
            args,
            result,
        )
    }

    async fn stopped_in_doubt(store: &StateStore) {
        store
            .start_run(NewRun::example("r1", crate::gate::Mode::Live))
            .await
            .unwrap();
        store
            .put_entry("r1", Phase::Intended, &write(1))
            .await
            .unwrap();
        store
            .finish_run("r1", "in-doubt", 7, &serde_json::json!({}))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn operators_settle_a_write_in_doubt_once_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("s.db"));
        stopped_in_doubt(&store).await;
        let approver = store.add_principal("amy", Role::Approver).await.unwrap();
        let operator = store.add_principal("oscar", Role::Operator).await.unwrap();
        let done = Resolution::MarkDone(serde_json::json!("PD-1"));

        let refused = store
            .resolve_in_doubt(&approver, "r1", 1, &done, "seen")
            .await;
        assert!(matches!(refused, Err(DecisionError::NotAnOperator(name)) if name == "amy"));
        let refused = store
            .resolve_in_doubt("sg_nope", "r1", 1, &done, "seen")
            .await;
        assert!(matches!(refused, Err(DecisionError::Unauthenticated)));
        let refused = store.resolve_in_doubt(&operator, "r1", 1, &done, " ").await;
        assert!(matches!(refused, Err(DecisionError::NoReason)));
        let refused = store
            .resolve_in_doubt(&operator, "r1", 2, &done, "seen")
            .await;
        assert!(matches!(
            refused,
            Err(DecisionError::NotInDoubt { seq: 2, .. })
        ));

        store
            .resolve_in_doubt(&operator, "r1", 1, &done, "PagerDuty shows the incident")
            .await
            .unwrap();
        assert_eq!(store.run("r1").await.unwrap().unwrap().status, "parked");
        let journal = store.journal("r1").await.unwrap();
        assert_eq!(journal[0].phase, Phase::Done);
        assert_eq!(journal[0].entry.result, serde_json::json!({ "ok": "PD-1" }));
        let again = store
            .resolve_in_doubt(&operator, "r1", 1, &done, "seen")
            .await;
        assert!(matches!(again, Err(DecisionError::NotInDoubt { .. })));
        let audit = store.audit_records().await.unwrap();
        assert_eq!(
            audit.last().unwrap().record["resolved"]["principal"],
            "oscar"
        );
    }

    /// The host was told the done row's commit failed, but it reached the
    /// store (the answer was lost, the re-read failed too): the run stopped
    /// in doubt on a write the store holds as done. It is listed, is never
    /// sent again, and mark-done goes on with the answer the store holds.
    #[tokio::test]
    async fn a_write_recorded_done_after_all_is_marked_done_never_retried() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("s.db"));
        stopped_in_doubt(&store).await;
        let mut answered = write(1);
        answered.result = serde_json::json!({ "ok": "PD-7" });
        // Stored behind the run's back, as the lost commit did.
        let text = serde_json::to_string(&answered).unwrap();
        sqlx::query("UPDATE journal SET phase = 'done', entry = $1 WHERE run_id = 'r1'")
            .bind(text)
            .execute(store.pool().await.unwrap())
            .await
            .unwrap();
        let listed = store.in_doubt("r1").await.unwrap().unwrap();
        assert!(listed.recorded);
        assert_eq!(listed.entry, answered);
        let operator = store.add_principal("oscar", Role::Operator).await.unwrap();

        let retry = store
            .resolve_in_doubt(&operator, "r1", 1, &Resolution::Retry, "looks lost")
            .await;
        assert!(
            matches!(retry, Err(DecisionError::RecordedDone { seq: 1, .. })),
            "{retry:?}"
        );
        assert_eq!(store.run("r1").await.unwrap().unwrap().status, "in-doubt");
        assert_eq!(store.journal("r1").await.unwrap().len(), 1, "not forgotten");

        let guess = Resolution::MarkDone(serde_json::json!("PD-guess"));
        store
            .resolve_in_doubt(&operator, "r1", 1, &guess, "the store has it")
            .await
            .unwrap();
        assert_eq!(store.run("r1").await.unwrap().unwrap().status, "parked");
        let journal = store.journal("r1").await.unwrap();
        assert_eq!(journal[0].phase, Phase::Done);
        assert_eq!(
            journal[0].entry.result, answered.result,
            "the stored answer kept"
        );
        let audit = store.audit_records().await.unwrap();
        let resolved = &audit.last().unwrap().record["resolved"];
        assert_eq!(resolved["recorded"], true);
        assert_eq!(
            resolved["resolution"],
            serde_json::json!({ "mark-done": "PD-7" }),
            "the audit names the answer kept, not the guess, in mark-done's own form"
        );
    }

    #[tokio::test]
    async fn retry_forgets_the_intended_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("s.db"));
        stopped_in_doubt(&store).await;
        let operator = store.add_principal("oscar", Role::Admin).await.unwrap();
        store
            .resolve_in_doubt(
                &operator,
                "r1",
                1,
                &Resolution::Retry,
                "the webhook log has no such page",
            )
            .await
            .unwrap();
        assert!(store.journal("r1").await.unwrap().is_empty());
        assert_eq!(store.run("r1").await.unwrap().unwrap().status, "parked");
    }
}
