//! Re-planning a run whose approved write went stale: what it read on old
//! data, and the approvals given for that plan, are set aside (kept in
//! `superseded`, never deleted) and the run goes back to `parked` so it
//! resumes from there on fresh data and asks again; under
//! `recheck = "decisions"` an approval carries over to the fresh request
//! when it is for the same write reached through the same calls
//! ([`StateStore::carry_over`]).

use sqlx::Row;

use serde::Deserialize;

use super::approvals::DecisionError;
use super::{StateError, StateStore};
use crate::entry::Entry;
use crate::gate::{Requirement, WriteRequest};

/// An approval request set aside by a re-plan, as `superseded` keeps it.
#[derive(Deserialize)]
struct SetAsideApproval {
    op: String,
    target: String,
    detail: String,
    /// Absent in records kept before requirements were.
    #[serde(default)]
    requirement: Option<Requirement>,
    decisions: Vec<SetAsideDecision>,
}

#[derive(Deserialize)]
struct SetAsideDecision {
    principal: String,
    approve: bool,
    #[serde(default)]
    reason: String,
}

impl SetAsideDecision {
    /// Made by a whole-plan approval: given on the reads of the plan it
    /// named, so a re-plan voids it whatever the fresh run asks.
    fn of_a_whole_plan(&self) -> bool {
        self.reason.starts_with(super::plans::WHOLE_PLAN)
    }
}

#[derive(Deserialize)]
struct SetAsideEntry {
    entry: Entry,
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StateError> {
    serde_json::from_str(text)
        .map_err(|e| StateError::Corrupt(format!("a re-planned run's record: {e}")))
}

/// Whether two runs of calls are the same decisions: the same calls at
/// the same positions, with the same arguments (key order aside),
/// whatever they were answered.
fn same_calls(before: &[Entry], now: &[Entry]) -> bool {
    let call = |e: &Entry| {
        (
            e.seq,
            e.name(),
            e.effect,
            crate::canonical::json_text(&e.args),
        )
    };
    before.len() == now.len() && before.iter().zip(now).all(|(a, b)| call(a) == call(b))
}

impl StateStore {
    /// Sets aside journal entries from position `from` on and the approval
    /// requests (with their decisions) of those positions, audits `why`,
    /// and parks the run. Returns which re-plan of the run this is.
    pub async fn replan(
        &self,
        run_id: &str,
        from: u64,
        why: &serde_json::Value,
    ) -> Result<i64, StateError> {
        let from = from as i64;
        let mut tx = self.begin_write().await?;
        // Only a run that just stopped as stale, and whose host still held
        // it then, is re-planned (finish_run checked the lease).
        let parked = sqlx::query(
            "UPDATE runs SET status = 'parked', ended_at = NULL, exit_code = NULL WHERE id = $1 AND status = 'stale'",
        )
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        if parked.rows_affected() != 1 {
            return Err(StateError::Corrupt(format!(
                "run `{run_id}` is not stopped as stale; it is not re-planned"
            )));
        }
        let previous: Option<i64> =
            sqlx::query_scalar("SELECT MAX(replan) FROM superseded WHERE run_id = $1")
                .bind(run_id)
                .fetch_one(&mut *tx)
                .await?;
        let replan = previous.unwrap_or(0) + 1;
        let mut set_aside = Vec::new();
        for row in
            sqlx::query("SELECT seq, phase, entry FROM journal WHERE run_id = $1 AND seq >= $2")
                .bind(run_id)
                .bind(from)
                .fetch_all(&mut *tx)
                .await?
        {
            let phase: String = row.try_get("phase")?;
            let entry: String = row.try_get("entry")?;
            let entry: crate::entry::Entry = serde_json::from_str(&entry)
                .map_err(|e| StateError::Corrupt(format!("journal entry of {run_id}: {e}")))?;
            // What was read can be read again; a write cannot be unsent.
            if entry.is_write() {
                return Err(StateError::Corrupt(format!(
                    "run `{run_id}`: a re-plan from #{from} would set aside write #{} ({phase}); it is not re-planned",
                    entry.seq
                )));
            }
            let record = serde_json::json!({ "phase": phase, "entry": entry });
            set_aside.push(("journal", row.try_get::<i64, _>("seq")?, record));
        }
        for row in sqlx::query(
            "SELECT seq, op, target, detail, reason, plan_digest, requirement FROM approval_requests WHERE run_id = $1 AND seq >= $2",
        )
        .bind(run_id)
        .bind(from)
        .fetch_all(&mut *tx)
        .await?
        {
            let seq: i64 = row.try_get("seq")?;
            let decisions = sqlx::query(
                "SELECT principal, approve, reason, at FROM approval_decisions WHERE run_id = $1 AND seq = $2 ORDER BY at",
            )
            .bind(run_id)
            .bind(seq)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|d| {
                Ok(serde_json::json!({
                    "principal": d.try_get::<String, _>("principal")?,
                    "approve": d.try_get::<i32, _>("approve")? != 0,
                    "reason": d.try_get::<String, _>("reason")?,
                    "at": d.try_get::<i64, _>("at")?,
                }))
            })
            .collect::<Result<Vec<_>, StateError>>()?;
            let record = serde_json::json!({
                "op": row.try_get::<String, _>("op")?,
                "target": row.try_get::<String, _>("target")?,
                "detail": row.try_get::<String, _>("detail")?,
                "reason": row.try_get::<String, _>("reason")?,
                "plan_digest": row.try_get::<String, _>("plan_digest")?,
                "requirement": serde_json::from_str::<serde_json::Value>(&row.try_get::<String, _>("requirement")?)
                    .unwrap_or_default(),
                "decisions": decisions,
            });
            set_aside.push(("approval", seq, record));
        }
        // Whole-plan approvals were given on the world as it was: a re-plan
        // voids them all (each write of the new plan asks again).
        for row in sqlx::query(
            "SELECT digest, principal, reason, at FROM plan_approvals WHERE run_id = $1",
        )
        .bind(run_id)
        .fetch_all(&mut *tx)
        .await?
        {
            let record = serde_json::json!({
                "plan_digest": row.try_get::<String, _>("digest")?,
                "principal": row.try_get::<String, _>("principal")?,
                "reason": row.try_get::<String, _>("reason")?,
                "at": row.try_get::<i64, _>("at")?,
            });
            set_aside.push(("plan_approval", from, record));
        }
        sqlx::query("DELETE FROM plan_approvals WHERE run_id = $1")
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        let at = self.now_ms();
        for (kind, seq, record) in &set_aside {
            sqlx::query(
                "INSERT INTO superseded (run_id, replan, kind, seq, record, at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(run_id)
            .bind(replan)
            .bind(*kind)
            .bind(*seq)
            .bind(record.to_string())
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        for table in ["journal", "approval_decisions", "approval_requests"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE run_id = $1 AND seq >= $2"
            )))
            .bind(run_id)
            .bind(from)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.append_audit(
            run_id,
            &serde_json::json!({ "replanned": { "replan": replan, "from": from, "why": why } }),
        )
        .await?;
        Ok(replan)
    }

    /// After a re-plan, carries the approval given before it over to
    /// `request` (just filed, at the same position) when the fresh run put
    /// up what the approvers approved: the same write, with the same
    /// arguments, under the same requirement, reached through the same
    /// calls (each with the same arguments; their answers may differ). The
    /// approvals are recorded again on the new request, each saying so,
    /// and audited; answers the approvers whose approval carried over
    /// (none: it did not, and the request waits for a decision). A
    /// decision a whole-plan approval made never carries over: the plan it
    /// approved named the reads that are gone.
    pub async fn carry_over(&self, request: &WriteRequest) -> Result<Vec<String>, StateError> {
        let pool = self.pool().await?;
        let (run_id, seq) = (request.run_id.as_str(), request.seq as i64);
        // A write a guardrail escalated is approved for what it measured
        // (bound into its plan digest): it is asked again.
        if request.requirement.guarded || !request.findings.is_empty() {
            return Ok(Vec::new());
        }
        // Only the approval the latest re-plan set aside: an earlier one
        // was given before calls a later re-plan replaced.
        let Some(row) = sqlx::query(
            "SELECT replan, record FROM superseded WHERE run_id = $1 AND kind = 'approval' AND seq = $2
             AND replan = (SELECT MAX(replan) FROM superseded WHERE run_id = $1)",
        )
        .bind(run_id)
        .bind(seq)
        .fetch_optional(pool)
        .await?
        else {
            return Ok(Vec::new());
        };
        let replan: i64 = row.try_get("replan")?;
        let was: SetAsideApproval = parse(&row.try_get::<String, _>("record")?)?;
        let same_write = was.op == request.op
            && was.target == request.target
            && super::plans::same_json(&was.detail, &request.detail)
            && was.requirement.as_ref() == Some(&request.requirement);
        let approvers: Vec<String> = was
            .decisions
            .iter()
            .filter(|d| d.approve && !d.of_a_whole_plan())
            .map(|d| d.principal.clone())
            .collect();
        let approved = was.decisions.iter().all(|d| d.approve)
            && approvers.len() >= request.requirement.quorum.max(1) as usize;
        if !same_write || !approved {
            return Ok(Vec::new());
        }
        let before: Vec<Entry> = sqlx::query_scalar::<_, String>(
            "SELECT record FROM superseded WHERE run_id = $1 AND kind = 'journal' AND replan = $2 ORDER BY seq",
        )
        .bind(run_id)
        .bind(replan)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|text| parse::<SetAsideEntry>(text).map(|r| r.entry))
        .collect::<Result<_, _>>()?;
        let from = before.first().map_or(seq, |e| e.seq as i64);
        let now: Vec<Entry> = sqlx::query_scalar::<_, String>(
            "SELECT entry FROM journal WHERE run_id = $1 AND seq >= $2 AND seq < $3 ORDER BY seq",
        )
        .bind(run_id)
        .bind(from)
        .bind(seq)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|text| parse::<Entry>(text))
        .collect::<Result<_, _>>()?;
        if !same_calls(&before, &now) {
            return Ok(Vec::new());
        }
        let reason = format!(
            "carried over from the approval before re-plan {replan}: the fresh run reached the same write, with the same arguments, through the same calls"
        );
        // Each approval is decided again in its approver's name, under
        // every rule a decision meets now: one revoked since, or no longer
        // of the gate's groups, counts for nothing, and unless the rest
        // still make the quorum nothing is carried over (the request waits
        // for a decision, whole).
        let mut deciders = Vec::new();
        for principal in &approvers {
            let Some(role) = self.principal_role(principal).await? else {
                continue;
            };
            match self
                .may_decide(principal, role, run_id, request.seq, None)
                .await
            {
                Ok(()) => deciders.push(principal.clone()),
                Err(DecisionError::State(e)) => return Err(e),
                Err(other) => tracing::info!(
                    "the approval of {principal} does not carry over to write #{seq} of {run_id}: {other}"
                ),
            }
        }
        if deciders.len() < request.requirement.quorum.max(1) as usize {
            return Ok(Vec::new());
        }
        let mut carried = Vec::new();
        for principal in &deciders {
            match self
                .record_decision(run_id, request.seq, principal, true, &reason)
                .await
            {
                Ok(_) => carried.push(principal.clone()),
                Err(DecisionError::State(e)) => return Err(e),
                // Decided meanwhile (the quorum met): nothing more to add.
                Err(_) => break,
            }
        }
        if !carried.is_empty() {
            self.append_audit(
                run_id,
                &serde_json::json!({ "carried_over": { "seq": seq, "replan": replan, "approvers": carried, "plan_digest": request.plan_digest } }),
            )
            .await?;
        }
        Ok(carried)
    }

    /// How many times run `run_id` has been re-planned.
    pub async fn replans(&self, run_id: &str) -> Result<i64, StateError> {
        let n: Option<i64> =
            sqlx::query_scalar("SELECT MAX(replan) FROM superseded WHERE run_id = $1")
                .bind(run_id)
                .fetch_one(self.pool().await?)
                .await?;
        Ok(n.unwrap_or(0))
    }
}
