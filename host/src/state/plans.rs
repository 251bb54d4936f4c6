//! Whole-plan approvals. When a live run parks on a write, a dry run of
//! the rest of it (see [`crate::runtime::Runtime::plan_ahead`]) lists the
//! writes it would go on to make: a [`RunPlan`], with a digest over the
//! run, where it starts and every write's exact arguments. An approver may
//! approve the whole list at once; the approval then counts as that
//! principal's decision on each write the run asks for, but only while
//! the run makes exactly those writes, in that order, with the same
//! arguments: the first difference, and every write after it, asks again.
//! Each write is still decided through the same rules (role, groups, no
//! self-approval, quorum), and each decision is audited.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::approvals::{DecisionError, Role};
use super::{StateError, StateStore};

/// One write of a plan: `interface.op` and its arguments as JSON text (the
/// same text an approval request's `detail` holds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedWrite {
    pub op: String,
    pub detail: String,
}

/// The writes a parked run would make from `from_seq` on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunPlan {
    pub digest: String,
    pub run_id: String,
    pub from_seq: u64,
    /// The plan digest of the request it starts at (a re-plan makes a new
    /// plan).
    pub request_digest: String,
    pub writes: Vec<PlannedWrite>,
    /// How the dry run ended (`end_json`): a plan that did not finish
    /// lists only the writes before its end.
    pub ended: serde_json::Value,
    pub at: i64,
    /// Who approved it whole, and why.
    pub approvals: Vec<PlanApproval>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanApproval {
    pub principal: String,
    pub reason: String,
    pub at: i64,
}

/// The digest of a plan: the run, where it starts, the plan of the request
/// it starts at (what the run had read), and every write.
pub fn plan_digest(
    run_id: &str,
    from_seq: u64,
    request_digest: &str,
    writes: &[PlannedWrite],
) -> String {
    let text = crate::canonical::json_text(&serde_json::json!({
        "run": run_id, "from": from_seq, "request": request_digest, "writes": writes
    }));
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Whether a request's stored requirement says a guardrail escalated it.
fn guarded(requirement: &str) -> bool {
    serde_json::from_str::<crate::gate::Requirement>(requirement).is_ok_and(|r| r.guarded)
}

/// How a decision a whole-plan approval made begins its reason: a re-plan
/// voids it, even for the same write (see `StateStore::carry_over`).
pub(crate) const WHOLE_PLAN: &str = "whole plan";

/// Whether two JSON texts hold the same value, whatever the order of
/// their keys (texts stored by another version may sort them).
pub(crate) fn same_json(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Whether journaled write `entry` went through: performed (auto or
/// approved) and answered without an error. A plan is followed only
/// through writes that did.
fn went_through(entry: &crate::entry::Entry) -> bool {
    matches!(
        entry.gate,
        crate::gate::Decision::Auto | crate::gate::Decision::Approved
    ) && entry.result.get("ok").is_some()
}

fn plan_row(row: &sqlx::any::AnyRow) -> Result<RunPlan, StateError> {
    let corrupt =
        |what: &str, e: serde_json::Error| StateError::Corrupt(format!("a run plan's {what}: {e}"));
    Ok(RunPlan {
        digest: row.try_get("digest")?,
        run_id: row.try_get("run_id")?,
        from_seq: row.try_get::<i64, _>("from_seq")?.max(0) as u64,
        request_digest: row.try_get("request_digest")?,
        writes: serde_json::from_str(&row.try_get::<String, _>("writes")?)
            .map_err(|e| corrupt("writes", e))?,
        ended: serde_json::from_str(&row.try_get::<String, _>("ended")?)
            .map_err(|e| corrupt("end", e))?,
        at: row.try_get("at")?,
        approvals: Vec::new(),
    })
}

impl StateStore {
    /// Keeps a plan (once per digest).
    pub async fn put_run_plan(&self, plan: &RunPlan) -> Result<(), StateError> {
        let writes = serde_json::to_string(&plan.writes)
            .map_err(|e| StateError::Corrupt(format!("cannot encode a plan: {e}")))?;
        sqlx::query(
            "INSERT INTO run_plans (digest, run_id, from_seq, request_digest, writes, ended, at) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (digest) DO NOTHING",
        )
        .bind(&plan.digest)
        .bind(&plan.run_id)
        .bind(plan.from_seq as i64)
        .bind(&plan.request_digest)
        .bind(writes)
        .bind(plan.ended.to_string())
        .bind(plan.at)
        .execute(self.pool().await?)
        .await?;
        Ok(())
    }

    /// The plans of run `run_id`, oldest first, with their approvals.
    pub async fn run_plans(&self, run_id: &str) -> Result<Vec<RunPlan>, StateError> {
        let pool = self.pool().await?;
        let mut plans = sqlx::query(
            "SELECT digest, run_id, from_seq, request_digest, writes, ended, at FROM run_plans WHERE run_id = $1 ORDER BY at, digest",
        )
        .bind(run_id)
        .fetch_all(pool)
        .await?
        .iter()
        .map(plan_row)
        .collect::<Result<Vec<_>, _>>()?;
        for plan in &mut plans {
            plan.approvals = sqlx::query(
                "SELECT principal, reason, at FROM plan_approvals WHERE digest = $1 ORDER BY at, principal",
            )
            .bind(&plan.digest)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| {
                Ok(PlanApproval {
                    principal: row.try_get("principal")?,
                    reason: row.try_get("reason")?,
                    at: row.try_get("at")?,
                })
            })
            .collect::<Result<Vec<_>, StateError>>()?;
        }
        Ok(plans)
    }

    /// The plan of request (`run_id`, `seq`) made on its plan digest, if
    /// one was made.
    pub async fn plan_at(
        &self,
        run_id: &str,
        seq: u64,
        request_digest: &str,
    ) -> Result<Option<RunPlan>, StateError> {
        Ok(self
            .run_plans(run_id)
            .await?
            .into_iter()
            .find(|p| p.from_seq == seq && p.request_digest == request_digest))
    }

    /// Records `principal`'s approval of a whole plan (`digest`: 8+ hex
    /// digits of it) and audits it; the write the run waits on now is
    /// decided by it at once (see [`StateStore::apply_plan_approvals`]).
    pub async fn approve_plan(
        &self,
        principal: &str,
        role: Role,
        run_id: &str,
        digest: &str,
        reason: &str,
    ) -> Result<RunPlan, DecisionError> {
        if !role.may_approve() {
            return Err(DecisionError::NotAnApprover(principal.to_owned()));
        }
        if reason.trim().is_empty() {
            return Err(DecisionError::NoReason);
        }
        let plans = self.run_plans(run_id).await?;
        let newest = plans
            .last()
            .map(|p| p.digest.chars().take(12).collect::<String>());
        let digest = digest.trim();
        let Some(plan) = plans
            .into_iter()
            .find(|p| digest.len() >= 8 && p.digest.starts_with(digest))
        else {
            return Err(DecisionError::PlanChanged {
                seen: digest.to_owned(),
                now: newest.unwrap_or_else(|| "no whole plan".to_owned()),
            });
        };
        let run = self
            .run(run_id)
            .await?
            .ok_or_else(|| DecisionError::UnknownRun(run_id.to_owned()))?;
        if run.started_by == principal {
            return Err(DecisionError::SelfApproval(principal.to_owned()));
        }
        // A write a guardrail escalated is approved on its own.
        let requirement: Option<String> = sqlx::query_scalar(
            "SELECT requirement FROM approval_requests WHERE run_id = $1 AND seq = $2",
        )
        .bind(run_id)
        .bind(plan.from_seq as i64)
        .fetch_optional(self.pool().await?)
        .await?;
        if requirement.as_deref().is_some_and(guarded) {
            return Err(DecisionError::Guarded {
                run_id: run_id.to_owned(),
                seq: plan.from_seq,
            });
        }
        // Only the plan of the write the run waits on now, on the reads it
        // made before asking: not one set aside by a re-plan, nor one whose
        // first write was already decided.
        match self.approval_request(run_id, plan.from_seq).await? {
            Some(request) if request.plan_digest == plan.request_digest => {
                if !matches!(
                    request.status,
                    super::approvals::ApprovalStatus::Pending { .. }
                ) {
                    return Err(DecisionError::Decided {
                        run_id: run_id.to_owned(),
                        seq: plan.from_seq,
                    });
                }
            }
            _ => {
                return Err(DecisionError::PlanChanged {
                    seen: digest.to_owned(),
                    now: newest.unwrap_or_else(|| "no whole plan".to_owned()),
                });
            }
        }
        let inserted = sqlx::query(
            "INSERT INTO plan_approvals (digest, run_id, principal, reason, at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&plan.digest)
        .bind(run_id)
        .bind(principal)
        .bind(reason)
        .bind(self.now_ms())
        .execute(self.pool().await?)
        .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(DecisionError::Twice(principal.to_owned()));
            }
            Err(e) => return Err(e.into()),
        }
        self.append_audit(
            run_id,
            &serde_json::json!({
                "plan_approval": { "digest": plan.digest, "from_seq": plan.from_seq, "writes": plan.writes, "principal": principal, "reason": reason },
            }),
        )
        .await?;
        self.apply_plan_approvals(run_id, plan.from_seq).await?;
        Ok(plan)
    }

    /// Decides request (`run_id`, `seq`) by the whole-plan approvals it is
    /// part of: those whose plan's writes so far are exactly the writes the
    /// run made since the plan began, and whose next write is this one.
    /// Each approver's decision goes through the usual rules; one that
    /// does not count (the principal was revoked, is not in the rule's
    /// groups) is skipped.
    pub async fn apply_plan_approvals(&self, run_id: &str, seq: u64) -> Result<(), StateError> {
        let plans: Vec<RunPlan> = self
            .run_plans(run_id)
            .await?
            .into_iter()
            .filter(|p| p.from_seq <= seq && !p.approvals.is_empty())
            .collect();
        if plans.is_empty() {
            return Ok(());
        }
        let Some(row) = sqlx::query(
            "SELECT op, detail, requirement FROM approval_requests WHERE run_id = $1 AND seq = $2",
        )
        .bind(run_id)
        .bind(seq as i64)
        .fetch_optional(self.pool().await?)
        .await?
        else {
            return Ok(());
        };
        // A write a guardrail escalated has its own approvers.
        if guarded(&row.try_get::<String, _>("requirement")?) {
            return Ok(());
        }
        let asked = PlannedWrite {
            op: row.try_get("op")?,
            detail: row.try_get("detail")?,
        };
        let journal = self.journal(run_id).await?;
        for plan in plans {
            // The plan stands on the reads its first write was asked on: a
            // request filed again on other reads (a re-plan) is not its.
            let first: Option<String> = sqlx::query_scalar(
                "SELECT plan_digest FROM approval_requests WHERE run_id = $1 AND seq = $2",
            )
            .bind(run_id)
            .bind(plan.from_seq as i64)
            .fetch_optional(self.pool().await?)
            .await?;
            if first.as_deref() != Some(plan.request_digest.as_str()) {
                continue;
            }
            let made: Vec<&crate::entry::Entry> = journal
                .iter()
                .map(|s| &s.entry)
                .filter(|e| e.is_write() && e.seq >= plan.from_seq && e.seq < seq)
                .collect();
            let k = made.len();
            // Every write so far went through, and is the plan's, in order.
            let follows = made.iter().all(|e| went_through(e))
                && made.iter().zip(&plan.writes).all(|(e, w)| {
                    // The same arguments, whatever order their keys are in.
                    e.name() == w.op && same_json(&e.args.to_string(), &w.detail)
                })
                && plan
                    .writes
                    .get(k)
                    .is_some_and(|w| w.op == asked.op && same_json(&w.detail, &asked.detail));
            if !follows {
                continue;
            }
            let short: String = plan.digest.chars().take(12).collect();
            for approval in &plan.approvals {
                let Some(role) = self.principal_role(&approval.principal).await? else {
                    continue;
                };
                let decided = self
                    .decide_approval_as(
                        &approval.principal,
                        role,
                        run_id,
                        seq,
                        true,
                        &format!(
                            "{WHOLE_PLAN} {short} (write {} of {}): {}",
                            k + 1,
                            plan.writes.len(),
                            approval.reason
                        ),
                        None,
                    )
                    .await;
                match decided {
                    Ok(_) | Err(DecisionError::Twice(_)) | Err(DecisionError::Decided { .. }) => {}
                    Err(DecisionError::State(e)) => return Err(e),
                    Err(other) => tracing::info!(
                        "the whole-plan approval of {} does not count for write #{seq} of {run_id}: {other}",
                        approval.principal
                    ),
                }
            }
        }
        Ok(())
    }
}
