//! RGS: pending job queue growth (non-rollback).
//!
//! Codifies playbook 6 of the RGS incident response playbooks:
//!
//! - **Detect**: `pending_wallet_jobs > 1000` for 10 min
//!   (`PendingWalletJobsDepth`). SEV2 while the depth is over the threshold.
//! - **Triage**: the runbook's query (open jobs by endpoint and operator);
//!   whether attempts still increment (a job attempted in the last 5 min);
//!   whether one operator swamps the queue.
//! - **Mitigate**, in this order: single-operator swamp → treat as an
//!   operator outage: notify the operator (the circuit breaker should stop
//!   new inflow); it comes first because one operator's failing wallet
//!   puts its jobs in backoff, which looks like a stopped runner. Runner
//!   stopped → restart the RGS through its admin API (approved, incidents
//!   told first; a graceful shutdown drains the queue, a forced kill
//!   leaves jobs for the next process, both safe). Genuine backlog → scale
//!   out (checklist).
//!
//! Local choice (the runbook states no number): one operator holding
//! [`SWAMP_PERCENT`] of the queue swamps it.

use stepgate_sdk::prelude::*;

const DB: &str = "rgs";
const INCIDENTS: &str = "rgs-incidents";
const OPERATORS: &str = "rgs-operators";
const ADMIN: &str = "rgs_admin";
const RESTART: &str = "/admin/pods/restart";

/// Triage 1, verbatim.
const BY_ENDPOINT_OPERATOR: &str = "SELECT endpoint, operator_id, count(*) AS jobs FROM pending_wallet_jobs \
     WHERE completed_at IS NULL GROUP BY 1,2 ORDER BY 3 DESC LIMIT 20";
/// Triage 2: are attempts incrementing? Per operator, so a swamping
/// operator's jobs in backoff do not hide (or fake) a stopped runner.
/// The 5 minutes are a local choice (see the README).
const ATTEMPTS: &str = "SELECT operator_id, count(*) AS depth, \
     count(*) FILTER (WHERE last_attempt_at > now() - interval '5 minutes') AS attempted_recently \
     FROM pending_wallet_jobs WHERE completed_at IS NULL GROUP BY 1 ORDER BY 1";

/// The alert's threshold unless it says otherwise.
const DEFAULT_THRESHOLD: i64 = 1000;
/// One operator holding this share of the queue swamps it.
pub const SWAMP_PERCENT: i64 = 80;

struct PendingQueue;

struct Triage {
    depth: i64,
    attempted_recently: i64,
    /// (operator, jobs) over all endpoints, largest first.
    operators: Vec<(String, i64)>,
    /// (operator, open jobs, attempted in the last 5 minutes).
    attempts: Vec<(String, i64, i64)>,
    breakdown: String,
}

impl Triage {
    /// No job attempted in 5 minutes, judged on the jobs of every operator
    /// but a swamping one (whose jobs may all sit in backoff behind its
    /// failing wallet); with only that operator's jobs, it cannot be told.
    fn runner_stopped(&self) -> bool {
        let swamping = self.swamp().map(|(operator, _)| operator.as_str());
        let (open, attempted) = self
            .attempts
            .iter()
            .filter(|(operator, _, _)| Some(operator.as_str()) != swamping)
            .fold((0, 0), |(o, a), (_, open, tried)| (o + open, a + tried));
        open > 0 && attempted == 0
    }

    fn swamp(&self) -> Option<&(String, i64)> {
        self.operators
            .first()
            .filter(|(_, jobs)| jobs * 100 >= self.depth * SWAMP_PERCENT)
    }
}

impl Playbook for PendingQueue {
    fn describe() -> Description {
        Description::new("rgs-pending-queue", "1.0.0")
            .summary(
                "RGS playbook 6, pending job queue growth: finds who fills the queue and whether the \
                 runner still attempts jobs; restarts a stopped runner (approved), treats a \
                 single-operator swamp as that operator's outage, and leaves scaling to humans.",
            )
            .answers("PendingWalletJobsDepth")
            .db_read(DB)
            .http(ADMIN, &format!("POST {RESTART}"))
            .notify(INCIDENTS)
            .notify(OPERATORS)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let threshold = match alert
            .annotation("threshold")
            .or_else(|| alert.label("threshold"))
        {
            Some(text) => text
                .parse::<i64>()
                .map_err(|_| Error::failed(format!("`threshold` is `{text}`, not a job count")))?,
            None => DEFAULT_THRESHOLD,
        };
        let triage = match step("Triage", triage) {
            Ok(triage) => triage,
            Err(e) => {
                return step("Escalate: triage failed", || -> Result<Outcome> {
                    pager::notify(
                        INCIDENTS,
                        &format!(
                            "SEV2 RGS pending job queue over {threshold}: the triage queries failed ({}); triage by hand",
                            e.message()
                        ),
                    )?;
                    Ok(Outcome::new(format!("Triage failed: {}", e.message()))
                        .severity("SEV2")
                        .todo("Run the queue triage by hand; check the runner's process health"))
                });
            }
        };
        if triage.depth <= threshold {
            return Ok(Outcome::new(format!(
                "The queue holds {} job(s), not over {threshold} any more: it drained",
                triage.depth
            ))
            .severity("SEV3")
            .field("depth", triage.depth)
            .field("attempted_recently", triage.attempted_recently)
            .todo("Note the depth-over-time curve in the ticket"));
        }
        step("Mitigate", || mitigate(&alert, threshold, &triage))
    }
}

stepgate_sdk::playbook!(PendingQueue);

fn triage() -> Result<Triage> {
    let mut operators: Vec<(String, i64)> = Vec::new();
    let mut breakdown = Vec::new();
    for row in db::query(DB, BY_ENDPOINT_OPERATOR, params![])?.iter() {
        let endpoint: String = row.get("endpoint")?;
        let operator: String = row.get("operator_id")?;
        let jobs: i64 = row.get("jobs")?;
        breakdown.push(format!("{operator} {endpoint} {jobs}"));
        match operators.iter_mut().find(|(o, _)| *o == operator) {
            Some((_, n)) => *n += jobs,
            None => operators.push((operator, jobs)),
        }
    }
    operators.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let attempts = db::query(DB, ATTEMPTS, params![])?
        .iter()
        .map(|row| -> Result<(String, i64, i64)> {
            Ok((
                row.get("operator_id")?,
                row.get("depth")?,
                row.get("attempted_recently")?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Triage {
        depth: attempts.iter().map(|(_, open, _)| open).sum(),
        attempted_recently: attempts.iter().map(|(_, _, tried)| tried).sum(),
        operators,
        attempts,
        breakdown: breakdown.join(", "),
    })
}

fn mitigate(alert: &Alert, threshold: i64, triage: &Triage) -> Result<Outcome> {
    let mut checklist = Vec::new();
    let mut restarted = None;
    let mut diagnosis = Vec::new();
    if let Some((operator, jobs)) = triage.swamp() {
        let told = pager::notify(
            OPERATORS,
            &format!(
                "{operator}: {jobs} of our {} pending wallet jobs are yours and are not clearing; \
                 please check your wallet service (we treat it as an outage on your side)",
                triage.depth
            ),
        );
        if let Err(e) = told {
            checklist.push(format!(
                "{operator} was NOT told ({}): tell their ops contact",
                e.message()
            ));
        }
        checklist.push(format!(
            "{operator} swamps the queue: follow the circuit-breaker playbook (§5); the breaker should stop new inflow; check its failed WalletCall rows before calling it their outage"
        ));
        diagnosis.push(format!("{operator} swamps the queue"));
    }
    if triage.runner_stopped() {
        // The humans first: the restart waits for an approver.
        let told = pager::notify(
            INCIDENTS,
            &format!(
                "SEV2 RGS pending job queue (alert {}): {} open jobs and none of the other operators' jobs attempted in 5 min, the runner looks stopped; stepgate asks an approver to restart the RGS; decide in stepgate now",
                alert.name, triage.depth
            ),
        );
        if let Err(e) = told {
            checklist.push(format!(
                "{INCIDENTS} was NOT told before the approval ({}): tell them",
                e.message()
            ));
        }
        let reason = format!(
            "RGS playbook 6 (pending job queue growth), Mitigate: the runner is stopped (no attempt in 5 min on {} open jobs, judged without a swamping operator's jobs); restart the RGS",
            triage.depth
        );
        let body = serde_json::json!({ "service": "rgs-server", "action": "restart" });
        let fate = Fate::of_http(&http::post(ADMIN, RESTART, &body, &reason));
        if let Some(why) = fate.why_not() {
            checklist.push(format!(
                "The RGS is NOT restarted ({why}): restart it by hand"
            ));
        }
        diagnosis.push(format!("runner stopped, RGS {}", fate.say("restarted")));
        restarted = Some(fate);
    }
    if diagnosis.is_empty() {
        checklist.push(
            "Genuine backlog: scale horizontally (add rgs-server pods) or raise PendingJobRunner concurrency".into(),
        );
        diagnosis.push("genuine backlog".to_owned());
    }
    let diagnosis = diagnosis.join("; ");
    let summary = format!(
        "{} pending wallet job(s), over {threshold}: {diagnosis}",
        triage.depth
    );
    pager::notify_or_note(
        INCIDENTS,
        &format!(
            "SEV2 RGS pending job queue (alert {}): {summary}. {} attempted in the last 5 min. Top: {}",
            alert.name, triage.attempted_recently, triage.breakdown
        ),
        &mut checklist,
    );
    checklist.extend([
        "RCA: depth-over-time curve, drain rate once mitigated, and a monitor that would catch this earlier".to_owned(),
    ]);
    let mut outcome = Outcome::new(summary)
        .severity("SEV2")
        .field("depth", triage.depth)
        .field("attempted_recently", triage.attempted_recently)
        .field("runner_stopped", triage.runner_stopped())
        .field(
            "top_operator",
            triage
                .operators
                .first()
                .map(|(o, _)| o.clone())
                .unwrap_or_default(),
        )
        .field(
            "runner_restarted",
            restarted.as_ref().is_some_and(Fate::passed),
        );
    for item in checklist {
        outcome = outcome.todo(item);
    }
    Ok(outcome)
}
