//! Approval requests, the decisions on them, and the principals who may
//! decide. A request carries its [`Requirement`] (from the write's gate
//! rule): it is approved once `quorum` distinct principals with an
//! approving role (and, if the rule names groups, in one of them) said yes,
//! and denied as soon as one said no. Undecided past its timeout it is
//! denied, or approved if the rule says silence is consent. While it waits,
//! its escalation chain pages the next group, which may then decide too.
//! The principal that started a run cannot decide its writes. Tokens are
//! stored only as SHA-256 hashes. Every decision and escalation is also
//! appended to the audit log.

mod escalations;
mod principals;
mod rule;

use serde::{Deserialize, Serialize};
use sqlx::Row;

pub use escalations::DueEscalation;
pub(crate) use principals::random_hex;
pub use principals::{Role, token_hash};
pub use rule::{ApprovalStatus, Cast, settle};

use super::{StateError, StateStore};
use crate::gate::{OnTimeout, Recheck, Requirement, WriteRequest};

/// A decision that was not taken, and why.
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    #[error(
        "the token is not recognised or was revoked; ask an admin for a token (`stepgate principal add`)"
    )]
    Unauthenticated,
    #[error("principal `{0}` is a viewer and may not decide approvals")]
    NotAnApprover(String),
    #[error(
        "no approval request #{seq} in run `{run_id}`; `stepgate approvals` lists the pending ones"
    )]
    Unknown { run_id: String, seq: u64 },
    #[error("approval request #{seq} of run `{run_id}` is already decided")]
    Decided { run_id: String, seq: u64 },
    #[error("`{0}` started this run and may not decide its own writes; another approver must")]
    SelfApproval(String),
    #[error("`{0}` already decided this request")]
    Twice(String),
    #[error(
        "the plan you name ({seen}) is not this request's (now {now}); look again with `stepgate approvals` (give at least 8 hex digits)"
    )]
    PlanChanged { seen: String, now: String },
    #[error(
        "principal `{principal}` is in none of the groups that may decide this request ({groups}); `stepgate approvals` shows who may"
    )]
    NotInGroup { principal: String, groups: String },
    #[error("every decision needs a reason (--reason)")]
    NoReason,
    #[error(
        "principal `{0}` may not do this: it needs the operator or admin role (`stepgate principal add NAME --role operator`)"
    )]
    NotAnOperator(String),
    #[error(
        "run `{run_id}` is not in doubt about write #{seq}; `stepgate show {run_id}` shows where it stands"
    )]
    NotInDoubt { run_id: String, seq: u64 },
    #[error(
        "write #{seq} of run `{run_id}` is recorded done after all (its commit reached the store, its answer did not reach the host): it was made, so it is not sent again; resolve it with mark-done to go on (the stored answer is kept)"
    )]
    RecordedDone { run_id: String, seq: u64 },
    #[error("no run `{0}`; `stepgate runs` lists them")]
    UnknownRun(String),
    #[error(
        "write #{seq} of run `{run_id}` was escalated by a guardrail and is approved on its own, not as part of a whole plan: `stepgate approve {run_id} {seq}` decides it"
    )]
    Guarded { run_id: String, seq: u64 },
    #[error("run `{run_id}` has already ended ({status}); there is nothing to cancel")]
    Ended { run_id: String, status: String },
    #[error("run `{run_id}` cannot be cancelled yet: {what}")]
    Busy { run_id: String, what: String },
    #[error(transparent)]
    State(#[from] StateError),
}

impl From<sqlx::Error> for DecisionError {
    fn from(e: sqlx::Error) -> Self {
        DecisionError::State(e.into())
    }
}

/// A pending request, as listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingApproval {
    pub run_id: String,
    pub seq: i64,
    pub playbook: String,
    pub op: String,
    pub target: String,
    pub detail: String,
    pub reason: String,
    pub quorum: i32,
    pub approvals: i64,
    pub started_by: String,
    /// Groups that may decide now (escalations so far included); empty: any approver.
    pub groups: Vec<String>,
    /// When it times out (ms since the epoch), and what that means.
    pub expires_at: Option<i64>,
    pub on_timeout: OnTimeout,
    /// Escalation steps paged so far, of how many.
    pub escalated: i64,
    pub escalations: usize,
    /// What the run read and decided before asking.
    pub plan: String,
    /// The digest an approval of this request is bound to.
    pub plan_digest: String,
    /// When it was filed (ms since the epoch).
    pub created_at: i64,
}

/// One approval request as a whole, decided or not: what the console's
/// plan page shows.
#[derive(Debug, Clone, Serialize)]
pub struct RequestView {
    pub run_id: String,
    pub seq: i64,
    pub playbook: String,
    pub op: String,
    pub target: String,
    pub detail: String,
    pub reason: String,
    pub started_by: String,
    pub quorum: i32,
    /// Groups that may decide now; empty: any approver.
    pub groups: Vec<String>,
    pub plan: String,
    pub plan_digest: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub status: ApprovalStatus,
    /// Each decision so far, in order.
    pub decisions: Vec<DecisionRecord>,
    /// What the write's dry run said when the run parked (JSON: `{"ok":
    /// value}` or `{"error": text}`), and when.
    pub preview: Option<serde_json::Value>,
    pub previewed_at: Option<i64>,
}

/// One principal's decision on a request.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionRecord {
    pub principal: String,
    pub approve: bool,
    pub reason: String,
    pub at: i64,
    pub plan_digest: String,
}

pub(super) fn requirement(text: &str) -> Result<Requirement, StateError> {
    serde_json::from_str(text)
        .map_err(|e| StateError::Corrupt(format!("an approval request's requirement: {e}")))
}

pub(super) fn string_list(text: &str) -> Result<Vec<String>, StateError> {
    serde_json::from_str(text).map_err(|e| StateError::Corrupt(format!("a group list: {e}")))
}

/// The `op` of a step-mode pause's request.
pub const STEP_PAUSE: &str = "runbook.step";

impl StateStore {
    /// Files the request if it is new, and says where it stands.
    pub async fn request_approval(
        &self,
        request: &WriteRequest,
        started_by: &str,
    ) -> Result<ApprovalStatus, StateError> {
        let filed = sqlx::query(
            "INSERT INTO approval_requests (run_id, seq, playbook, op, target, detail, reason, quorum, started_by, status, created_at, expires_at, requirement, plan, plan_digest)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $11, $12, $13, $14)
             ON CONFLICT (run_id, seq) DO NOTHING",
        )
        .bind(&request.run_id)
        .bind(request.seq as i64)
        .bind(&request.playbook)
        .bind(&request.op)
        .bind(&request.target)
        .bind(&request.detail)
        .bind(&request.reason)
        .bind(request.requirement.quorum as i32)
        .bind(started_by)
        .bind(self.now_ms())
        .bind(
            request
                .requirement
                .timeout
                .map(|t| self.now_ms().saturating_add(t.as_millis() as i64)),
        )
        .bind(
            serde_json::to_string(&request.requirement)
                .map_err(|e| StateError::Corrupt(format!("cannot encode a requirement: {e}")))?,
        )
        .bind(&request.plan)
        .bind(&request.plan_digest)
        .execute(self.pool().await?)
        .await?;
        if filed.rows_affected() == 1 && request.requirement.recheck == Recheck::Decisions {
            // Put up again after a re-plan: the approval of the same
            // write, reached the same way, stands.
            self.carry_over(request).await?;
        }
        // An approval is for the exact write that was put up: if the run
        // now asks for a different one at this position, it is void.
        let filed = sqlx::query(
            "SELECT op, target, detail, plan_digest FROM approval_requests WHERE run_id = $1 AND seq = $2",
        )
        .bind(&request.run_id)
        .bind(request.seq as i64)
        .fetch_one(self.pool().await?)
        .await?;
        let (op, target, detail, digest): (String, String, String, String) = (
            filed.try_get("op")?,
            filed.try_get("target")?,
            filed.try_get("detail")?,
            filed.try_get("plan_digest")?,
        );
        // Requests filed before plans were recorded have none to compare.
        if !digest.is_empty() && digest != request.plan_digest {
            return Ok(ApprovalStatus::Denied {
                by: "stepgate".to_owned(),
                reason: "the run reached this write on a different plan (other reads or decisions before it) than the one put up for approval; the approval is void".to_owned(),
            });
        }
        // The same arguments whatever the order of their keys (a request
        // filed by another version may have them sorted).
        if (op.as_str(), target.as_str()) != (request.op.as_str(), request.target.as_str())
            || !super::plans::same_json(&detail, &request.detail)
        {
            return Ok(ApprovalStatus::Denied {
                by: "stepgate".to_owned(),
                reason: format!(
                    "the write differs from the one put up for approval ({op} on `{target}`: {detail}); the approval is void"
                ),
            });
        }
        self.approval_status(&request.run_id, request.seq)
            .await?
            .ok_or_else(|| StateError::Corrupt("an approval request vanished".into()))
    }

    /// Where a request stands, if it exists.
    /// When the approval of write `seq` was requested, and when it was
    /// settled (its last decision, or its expiry), in ms since the epoch.
    pub async fn approval_times(
        &self,
        run_id: &str,
        seq: u64,
    ) -> Result<Option<(i64, Option<i64>)>, StateError> {
        let row = sqlx::query(
            "SELECT r.created_at AS requested,
                    COALESCE((SELECT MAX(d.at) FROM approval_decisions d WHERE d.run_id = r.run_id AND d.seq = r.seq), r.expires_at) AS settled
             FROM approval_requests r WHERE r.run_id = $1 AND r.seq = $2",
        )
        .bind(run_id)
        .bind(seq as i64)
        .fetch_optional(self.pool().await?)
        .await?;
        row.map(|row| Ok((row.try_get("requested")?, row.try_get("settled")?)))
            .transpose()
    }

    pub async fn approval_status(
        &self,
        run_id: &str,
        seq: u64,
    ) -> Result<Option<ApprovalStatus>, StateError> {
        let pool = self.pool().await?;
        let Some(row) = sqlx::query(
            "SELECT quorum, expires_at, requirement FROM approval_requests WHERE run_id = $1 AND seq = $2",
        )
        .bind(run_id)
        .bind(seq as i64)
        .fetch_optional(pool)
        .await?
        else {
            return Ok(None);
        };
        let quorum: i32 = row.try_get("quorum")?;
        let expires_at: Option<i64> = row.try_get("expires_at")?;
        let on_timeout = requirement(&row.try_get::<String, _>("requirement")?)?.on_timeout;
        let decisions = sqlx::query(
            "SELECT principal, approve, reason FROM approval_decisions WHERE run_id = $1 AND seq = $2 ORDER BY at, principal",
        )
        .bind(run_id)
        .bind(seq as i64)
        .fetch_all(pool)
        .await?;
        let decisions = decisions
            .iter()
            .map(|d| {
                Ok(Cast {
                    principal: d.try_get("principal")?,
                    approve: d.try_get::<i32, _>("approve")? != 0,
                    reason: d.try_get("reason")?,
                })
            })
            .collect::<Result<Vec<_>, StateError>>()?;
        Ok(Some(settle(
            &decisions,
            quorum.max(0) as u32,
            expires_at,
            on_timeout,
            self.now_ms(),
        )))
    }

    /// Records one principal's decision and says where the request stands.
    pub async fn decide_approval(
        &self,
        token: &str,
        run_id: &str,
        seq: u64,
        approve: bool,
        reason: &str,
    ) -> Result<ApprovalStatus, DecisionError> {
        self.decide_approval_of_plan(token, run_id, seq, approve, reason, None)
            .await
    }

    /// [`StateStore::decide_approval`], refused unless the request's plan
    /// digest starts with `plan` (what the approver looked at), when given.
    pub async fn decide_approval_of_plan(
        &self,
        token: &str,
        run_id: &str,
        seq: u64,
        approve: bool,
        reason: &str,
        plan: Option<&str>,
    ) -> Result<ApprovalStatus, DecisionError> {
        let (principal, role) = self
            .authenticate(token)
            .await?
            .ok_or(DecisionError::Unauthenticated)?;
        self.decide_approval_as(&principal, role, run_id, seq, approve, reason, plan)
            .await
    }

    /// [`StateStore::decide_approval_of_plan`] by a principal already
    /// authenticated (a console session, a Slack user mapped to it): the
    /// same rules, whatever face the decision came through.
    #[allow(clippy::too_many_arguments)]
    pub async fn decide_approval_as(
        &self,
        principal: &str,
        role: Role,
        run_id: &str,
        seq: u64,
        approve: bool,
        reason: &str,
        plan: Option<&str>,
    ) -> Result<ApprovalStatus, DecisionError> {
        if reason.trim().is_empty() {
            return Err(DecisionError::NoReason);
        }
        self.may_decide(principal, role, run_id, seq, plan).await?;
        self.record_decision(run_id, seq, principal, approve, reason)
            .await
    }

    /// Whether `principal` (of `role`) may decide request `seq` of run
    /// `run_id` now: an approver, not the run's starter, of the groups the
    /// request names (as escalated so far), on the plan they saw (`plan`,
    /// a digest prefix, when given). Records nothing.
    pub(crate) async fn may_decide(
        &self,
        principal: &str,
        role: Role,
        run_id: &str,
        seq: u64,
        plan: Option<&str>,
    ) -> Result<(), DecisionError> {
        let principal = principal.to_owned();
        if !role.may_approve() {
            return Err(DecisionError::NotAnApprover(principal));
        }
        let row = sqlx::query(
            "SELECT started_by, requirement, escalated, op, plan_digest FROM approval_requests WHERE run_id = $1 AND seq = $2",
        )
        .bind(run_id)
        .bind(seq as i64)
        .fetch_optional(self.pool().await?)
        .await?
        .ok_or_else(|| DecisionError::Unknown {
            run_id: run_id.to_owned(),
            seq,
        })?;
        let started_by: String = row.try_get("started_by")?;
        let op: String = row.try_get("op")?;
        let digest: String = row.try_get("plan_digest")?;
        if let Some(seen) = plan.map(str::trim)
            && (seen.len() < 8 || !digest.starts_with(seen))
        {
            return Err(DecisionError::PlanChanged {
                seen: seen.to_owned(),
                now: digest.chars().take(12).collect(),
            });
        }
        // A step-mode pause is not a write: the engineer walking the run
        // through may continue it.
        if started_by == principal && op != STEP_PAUSE {
            return Err(DecisionError::SelfApproval(principal));
        }
        let eligible = requirement(&row.try_get::<String, _>("requirement")?)?
            .eligible_groups(row.try_get("escalated")?);
        if !eligible.is_empty() {
            let groups: String =
                sqlx::query_scalar("SELECT groups FROM principals WHERE name = $1")
                    .bind(&principal)
                    .fetch_one(self.pool().await?)
                    .await?;
            if !string_list(&groups)?.iter().any(|g| eligible.contains(g)) {
                return Err(DecisionError::NotInGroup {
                    principal,
                    groups: eligible.join(", "),
                });
            }
        }
        Ok(())
    }

    /// The plan digest of a request, if it exists.
    async fn plan_digest(&self, run_id: &str, seq: u64) -> Result<String, StateError> {
        Ok(sqlx::query_scalar(
            "SELECT plan_digest FROM approval_requests WHERE run_id = $1 AND seq = $2",
        )
        .bind(run_id)
        .bind(seq as i64)
        .fetch_optional(self.pool().await?)
        .await?
        .unwrap_or_default())
    }

    /// Records a decision by `principal`, who has been authenticated (or is
    /// the human at the terminal of a `stepgate run`), and audits it.
    pub async fn record_decision(
        &self,
        run_id: &str,
        seq: u64,
        principal: &str,
        approve: bool,
        reason: &str,
    ) -> Result<ApprovalStatus, DecisionError> {
        match self.approval_status(run_id, seq).await? {
            Some(ApprovalStatus::Pending { .. }) => {}
            _ => {
                return Err(DecisionError::Decided {
                    run_id: run_id.to_owned(),
                    seq,
                });
            }
        }
        let digest = self.plan_digest(run_id, seq).await?;
        let inserted = sqlx::query(
            "INSERT INTO approval_decisions (run_id, seq, principal, approve, reason, at, plan_digest) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(run_id)
        .bind(seq as i64)
        .bind(principal)
        .bind(i32::from(approve))
        .bind(reason)
        .bind(self.now_ms())
        .bind(&digest)
        .execute(self.pool().await?)
        .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(DecisionError::Twice(principal.to_owned()));
            }
            Err(e) => return Err(e.into()),
        }
        let status = self
            .approval_status(run_id, seq)
            .await?
            .ok_or_else(|| StateError::Corrupt("an approval request vanished".into()))?;
        self.append_audit(
            run_id,
            &serde_json::json!({
                "approval": { "seq": seq, "principal": principal, "approve": approve, "reason": reason, "plan_digest": digest, "now": status },
            }),
        )
        .await?;
        Ok(status)
    }

    /// Who decided what on each of run `run_id`'s approval requests, by
    /// journal position: `principal` or `principal (no)`, in order.
    pub async fn deciders(
        &self,
        run_id: &str,
    ) -> Result<std::collections::BTreeMap<i64, Vec<String>>, StateError> {
        let rows = sqlx::query(
            "SELECT seq, principal, approve FROM approval_decisions WHERE run_id = $1 ORDER BY seq, at, principal",
        )
        .bind(run_id)
        .fetch_all(self.pool().await?)
        .await?;
        let mut by_seq: std::collections::BTreeMap<i64, Vec<String>> = Default::default();
        for row in &rows {
            let principal: String = row.try_get("principal")?;
            let approve: i32 = row.try_get("approve")?;
            by_seq
                .entry(row.try_get("seq")?)
                .or_default()
                .push(if approve != 0 {
                    principal
                } else {
                    format!("{principal} (no)")
                });
        }
        Ok(by_seq)
    }

    /// The last write run `run_id` asked approval for (position and the
    /// write), if any.
    pub async fn parked_on(&self, run_id: &str) -> Result<Option<(u64, String)>, StateError> {
        let row = sqlx::query(
            "SELECT seq, op, detail FROM approval_requests WHERE run_id = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(run_id)
        .fetch_optional(self.pool().await?)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let seq: i64 = row.try_get("seq")?;
        let (op, detail): (String, String) = (row.try_get("op")?, row.try_get("detail")?);
        Ok(Some((seq.max(0) as u64, format!("{op} {detail}"))))
    }

    /// Keeps what the dry run of parked write `seq` said (already
    /// redacted and cut by the caller), for approvers to see beside it.
    pub async fn set_approval_preview(
        &self,
        run_id: &str,
        seq: u64,
        preview: &serde_json::Value,
    ) -> Result<(), StateError> {
        sqlx::query(
            "UPDATE approval_requests SET preview = $1, previewed_at = $2 WHERE run_id = $3 AND seq = $4",
        )
        .bind(preview.to_string())
        .bind(self.now_ms())
        .bind(run_id)
        .bind(seq as i64)
        .execute(self.pool().await?)
        .await?;
        Ok(())
    }

    /// Approval request `seq` of run `run_id`, decided or not, with its
    /// decisions.
    pub async fn approval_request(
        &self,
        run_id: &str,
        seq: u64,
    ) -> Result<Option<RequestView>, StateError> {
        let pool = self.pool().await?;
        let Some(row) = sqlx::query(
            "SELECT playbook, op, target, detail, reason, started_by, quorum, requirement, escalated,
                    plan, plan_digest, created_at, expires_at, preview, previewed_at
             FROM approval_requests WHERE run_id = $1 AND seq = $2",
        )
        .bind(run_id)
        .bind(seq as i64)
        .fetch_optional(pool)
        .await?
        else {
            return Ok(None);
        };
        let Some(status) = self.approval_status(run_id, seq).await? else {
            return Ok(None);
        };
        let decisions = sqlx::query(
            "SELECT principal, approve, reason, at, plan_digest FROM approval_decisions WHERE run_id = $1 AND seq = $2 ORDER BY at, principal",
        )
        .bind(run_id)
        .bind(seq as i64)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|d| {
            Ok(DecisionRecord {
                principal: d.try_get("principal")?,
                approve: d.try_get::<i32, _>("approve")? != 0,
                reason: d.try_get("reason")?,
                at: d.try_get("at")?,
                plan_digest: d
                    .try_get::<Option<String>, _>("plan_digest")?
                    .unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, StateError>>()?;
        let requirement = requirement(&row.try_get::<String, _>("requirement")?)?;
        Ok(Some(RequestView {
            run_id: run_id.to_owned(),
            seq: seq as i64,
            playbook: row.try_get("playbook")?,
            op: row.try_get("op")?,
            target: row.try_get("target")?,
            detail: row.try_get("detail")?,
            reason: row.try_get("reason")?,
            started_by: row.try_get("started_by")?,
            quorum: row.try_get("quorum")?,
            groups: requirement.eligible_groups(row.try_get("escalated")?),
            plan: row
                .try_get::<Option<String>, _>("plan")?
                .unwrap_or_default(),
            plan_digest: row
                .try_get::<Option<String>, _>("plan_digest")?
                .unwrap_or_default(),
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            status,
            decisions,
            preview: row
                .try_get::<Option<String>, _>("preview")?
                .and_then(|p| serde_json::from_str(&p).ok()),
            previewed_at: row.try_get("previewed_at")?,
        }))
    }

    /// Every approval request of run `run_id` (positions), oldest first.
    pub async fn approval_seqs(&self, run_id: &str) -> Result<Vec<i64>, StateError> {
        Ok(
            sqlx::query_scalar("SELECT seq FROM approval_requests WHERE run_id = $1 ORDER BY seq")
                .bind(run_id)
                .fetch_all(self.pool().await?)
                .await?,
        )
    }

    /// Requests still waiting for decisions.
    pub async fn pending_approvals(&self) -> Result<Vec<PendingApproval>, StateError> {
        let rows = sqlx::query(
            "SELECT r.run_id, r.seq, r.playbook, r.op, r.target, r.detail, r.reason, r.quorum, r.started_by,
                    (SELECT COUNT(*) FROM approval_decisions d WHERE d.run_id = r.run_id AND d.seq = r.seq AND d.approve = 1) AS approvals,
                    (SELECT COUNT(*) FROM approval_decisions d WHERE d.run_id = r.run_id AND d.seq = r.seq AND d.approve = 0) AS denials,
                    r.expires_at, r.requirement, r.escalated, r.plan, r.plan_digest, r.created_at
             FROM approval_requests r
             WHERE NOT EXISTS (SELECT 1 FROM runs x WHERE x.id = r.run_id AND x.status = 'cancelled')
             ORDER BY r.created_at, r.run_id, r.seq",
        )
        .fetch_all(self.pool().await?)
        .await?;
        let mut pending = Vec::new();
        for row in &rows {
            let approvals: i64 = row.try_get("approvals")?;
            let denials: i64 = row.try_get("denials")?;
            let quorum: i32 = row.try_get("quorum")?;
            let expires_at: Option<i64> = row.try_get("expires_at")?;
            let expired = expires_at.is_some_and(|at| self.now_ms() > at);
            if denials > 0 || approvals >= i64::from(quorum) || expired {
                continue;
            }
            let requirement = requirement(&row.try_get::<String, _>("requirement")?)?;
            let escalated: i64 = row.try_get("escalated")?;
            pending.push(PendingApproval {
                created_at: row.try_get("created_at")?,
                plan: row.try_get("plan")?,
                plan_digest: row.try_get("plan_digest")?,
                groups: requirement.eligible_groups(escalated),
                expires_at,
                on_timeout: requirement.on_timeout,
                escalated,
                escalations: requirement.escalate.len(),
                run_id: row.try_get("run_id")?,
                seq: row.try_get("seq")?,
                playbook: row.try_get("playbook")?,
                op: row.try_get("op")?,
                target: row.try_get("target")?,
                detail: row.try_get("detail")?,
                reason: row.try_get("reason")?,
                quorum,
                approvals,
                started_by: row.try_get("started_by")?,
            });
        }
        Ok(pending)
    }
}
