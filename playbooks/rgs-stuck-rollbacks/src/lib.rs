//! RGS: stuck rollbacks (> 5 min in `PendingWalletJob`).
//!
//! Codifies playbook 1 of the RGS incident response playbooks:
//!
//! - **Detect**: `pending_wallet_jobs{endpoint="ROLLBACK"} > 0` for 5 min
//!   (Alertmanager sends `alertname=PendingWalletJobs, endpoint=ROLLBACK`).
//! - **Triage**: the runbook's three queries: stuck jobs per operator and
//!   their age, whether the queue grows (jobs per minute), and the
//!   `last_error` breakdown; then each affected operator's failed
//!   `ROLLBACK` wallet calls.
//! - **Mitigate**, by `last_error`:
//!   - `RS_ERROR_TRANSACTION_DOES_NOT_EXIST` and
//!     `RS_ERROR_TRANSACTION_ALREADY_ROLLED_BACK`: the stake never left the
//!     player's wallet; mark the jobs completed with a manual override (a
//!     database write, approved by a human). No other code is ever marked.
//!   - 5xx or timeout: the operator's wallet is down; notify the operator,
//!     keep retrying.
//!   - the circuit breaker opened: the circuit-breaker playbook applies.
//!   - every active operator at once: likely a bug in the retry path;
//!     revert to the prior version and file SEV1 (page on-call).
//! - **Severity**: SEV2 per operator; SEV1 if more than 1 % of pending jobs
//!   are stuck rollbacks across operators, or all operators are affected.

use std::collections::BTreeMap;

use stepgate_sdk::prelude::*;

/// The config name of the RGS database (`yantra`).
const DB: &str = "rgs";
/// Pager target for SEV1: RGS on-call.
const ONCALL: &str = "rgs-oncall";
/// Channel for the RGS incident room (SEV2 goes here, not to a pager).
const INCIDENTS: &str = "rgs-incidents";
/// Channel that reaches operators' ops contacts.
const OPERATORS: &str = "rgs-operators";

/// Triage 1, verbatim but for the column names and the age in seconds.
const PER_OPERATOR: &str = "SELECT operator_id, count(*) AS jobs, \
     EXTRACT(EPOCH FROM max(age(now(), created_at)))::bigint AS oldest_seconds \
     FROM pending_wallet_jobs WHERE endpoint='ROLLBACK' AND completed_at IS NULL \
     GROUP BY 1 ORDER BY 2 DESC";
/// Triage 2: is the queue growing? Jobs per minute, newest first.
const PER_MINUTE: &str = "SELECT EXTRACT(EPOCH FROM date_trunc('minute', created_at))::bigint AS minute, \
     count(*) AS jobs FROM pending_wallet_jobs WHERE endpoint='ROLLBACK' AND completed_at IS NULL \
     GROUP BY 1 ORDER BY 1 DESC LIMIT 30";
/// Triage 3: what's the last_error? Here per operator, so each operator's
/// jobs are mitigated by their own error.
const PER_ERROR: &str = "SELECT operator_id, last_error, count(*) AS jobs FROM pending_wallet_jobs \
     WHERE endpoint='ROLLBACK' AND completed_at IS NULL GROUP BY 1, 2 ORDER BY 1, 3 DESC";
/// The operator's failed wallet calls (Mitigate, first bullet).
const WALLET_ERRORS: &str = "SELECT created_at::text AS created_at, status, response_body FROM wallet_calls \
     WHERE operator_id=$1 AND endpoint='ROLLBACK' AND succeeded=false ORDER BY created_at DESC LIMIT 20";
const ACTIVE_OPERATORS: &str = "SELECT count(*) AS active FROM operators WHERE active";
const PENDING_JOBS: &str =
    "SELECT count(*) AS pending FROM pending_wallet_jobs WHERE completed_at IS NULL";
/// The manual override: only open ROLLBACK jobs of one operator and one of
/// the two codes the runbook names.
const MARK_COMPLETED: &str = "UPDATE pending_wallet_jobs SET completed_at = now(), manual_override = true, \
     override_reason = $3 WHERE endpoint = 'ROLLBACK' AND completed_at IS NULL \
     AND operator_id = $1 AND last_error = $2";

/// The two codes the runbook lets us mark completed.
const OVERRIDE_CODES: [&str; 2] = [
    "RS_ERROR_TRANSACTION_DOES_NOT_EXIST",
    "RS_ERROR_TRANSACTION_ALREADY_ROLLED_BACK",
];

/// What a `last_error` means for the mitigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// The operator forgot the bet or already rolled it back: mark completed.
    Override,
    /// 5xx or a timeout: their wallet is down; notify them, keep retrying.
    WalletDown,
    /// The RGS circuit breaker opened for the operator.
    CircuitOpen,
    /// Anything else: a human classifies it.
    Unknown,
}

fn classify(error: &str) -> Class {
    let upper = error.to_ascii_uppercase();
    if OVERRIDE_CODES.contains(&upper.as_str()) {
        Class::Override
    } else if upper.contains("TIMEOUT")
        || upper
            .strip_prefix("HTTP_5")
            .is_some_and(|rest| rest.len() == 2 && rest.chars().all(|c| c.is_ascii_digit()))
    {
        Class::WalletDown
    } else if upper.contains("CIRCUIT") {
        Class::CircuitOpen
    } else {
        Class::Unknown
    }
}

/// One operator's stuck rollbacks.
struct Operator {
    id: String,
    jobs: i64,
    oldest_minutes: i64,
    /// `last_error` → jobs.
    errors: BTreeMap<String, i64>,
    failed_calls: usize,
}

impl Operator {
    fn has(&self, class: Class) -> bool {
        self.errors.keys().any(|e| classify(e) == class)
    }

    fn errors_text(&self) -> String {
        self.errors
            .iter()
            .map(|(e, n)| format!("{e} x{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

struct Triage {
    operators: Vec<Operator>,
    growing: bool,
    active_operators: i64,
    pending_jobs: i64,
}

impl Triage {
    fn stuck(&self) -> i64 {
        self.operators.iter().map(|o| o.jobs).sum()
    }

    /// Every active operator has stuck rollbacks (and there is more than one).
    fn all_operators(&self) -> bool {
        self.active_operators >= 2 && self.operators.len() as i64 >= self.active_operators
    }

    fn severity(&self) -> &'static str {
        let cross_cutting = self.operators.len() > 1 && self.stuck() * 100 > self.pending_jobs;
        if self.all_operators() || cross_cutting {
            "SEV1"
        } else {
            "SEV2"
        }
    }
}

struct StuckRollbacks;

impl Playbook for StuckRollbacks {
    fn describe() -> Description {
        Description::new("rgs-stuck-rollbacks", "1.0.0")
            .summary(
                "RGS playbook 1, stuck rollbacks: triages the ROLLBACK queue with the runbook's three \
                 queries, marks jobs completed with a manual override only for \
                 RS_ERROR_TRANSACTION_DOES_NOT_EXIST and RS_ERROR_TRANSACTION_ALREADY_ROLLED_BACK, \
                 notifies operators whose wallet answers 5xx or times out, and pages on-call (SEV1) \
                 when every operator is affected.",
            )
            .answers("PendingWalletJobs")
            .db_read(DB)
            .db_write(DB)
            .page(ONCALL)
            .notify(INCIDENTS)
            .notify(OPERATORS)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let triage = match step("Triage", triage) {
            Ok(triage) => triage,
            Err(e) => return triage_failed(&alert, &e),
        };
        if triage.operators.is_empty() {
            return Ok(Outcome::new(
                "No ROLLBACK job is pending any more: the queue drained on its own",
            )
            .severity("SEV2")
            .field("stuck_rollbacks", 0)
            .todo("Note in the alert's ticket that the queue drained before triage"));
        }
        step("Mitigate", || mitigate(&alert, &triage))
    }
}

stepgate_sdk::playbook!(StuckRollbacks);

fn triage() -> Result<Triage> {
    let mut operators = Vec::new();
    for row in db::query(DB, PER_OPERATOR, params![])?.iter() {
        let oldest: i64 = row.get("oldest_seconds")?;
        operators.push(Operator {
            id: row.get("operator_id")?,
            jobs: row.get("jobs")?,
            oldest_minutes: oldest / 60,
            errors: BTreeMap::new(),
            failed_calls: 0,
        });
    }
    let minutes = db::query(DB, PER_MINUTE, params![])?;
    let newest: Option<i64> = match minutes.iter().next() {
        Some(row) => Some(row.get("minute")?),
        None => None,
    };
    let now_s = runbook::now_millis() / 1000;
    let growing = newest.is_some_and(|minute| now_s - minute < 5 * 60);
    for row in db::query(DB, PER_ERROR, params![])?.iter() {
        let id: String = row.get("operator_id")?;
        let error: Option<String> = row.get("last_error")?;
        let jobs: i64 = row.get("jobs")?;
        if let Some(op) = operators.iter_mut().find(|o| o.id == id) {
            op.errors
                .insert(error.unwrap_or_else(|| "(none)".into()), jobs);
        }
    }
    for op in &mut operators {
        op.failed_calls = db::query(DB, WALLET_ERRORS, params![op.id.as_str()])?.len();
        runbook::info(&format!(
            "{}: {} stuck rollback(s), oldest {} min, errors {}; {} failed ROLLBACK wallet call(s)",
            op.id,
            op.jobs,
            op.oldest_minutes,
            op.errors_text(),
            op.failed_calls
        ));
    }
    let active_operators: i64 = db::query(DB, ACTIVE_OPERATORS, params![])?
        .first()?
        .get("active")?;
    let pending_jobs: i64 = db::query(DB, PENDING_JOBS, params![])?
        .first()?
        .get("pending")?;
    Ok(Triage {
        operators,
        growing,
        active_operators,
        pending_jobs,
    })
}

fn mitigate(alert: &Alert, triage: &Triage) -> Result<Outcome> {
    let severity = triage.severity();
    let mut marked = 0u64;
    let mut refused = Vec::new();
    let mut checklist = Vec::new();
    // Every active operator at once: the runbook says the fault is ours
    // (the retry path), so no operator's jobs are overridden and no
    // operator is told their wallet is failing.
    let ours = triage.all_operators();
    // The humans first: they are paged or told before any override
    // parks the run for approval.
    let summary = format!(
        "{} stuck rollback(s) across {} operator(s) ({} active), queue {}",
        triage.stuck(),
        triage.operators.len(),
        triage.active_operators,
        if triage.growing { "growing" } else { "stable" }
    );
    let overrides_due: i64 = triage
        .operators
        .iter()
        .flat_map(|op| op.errors.iter())
        .filter(|(error, _)| !ours && classify(error) == Class::Override)
        .map(|(_, jobs)| *jobs)
        .sum();
    let details = format!(
        "alert {} ({}): {summary}. {}{}",
        alert.name,
        alert.fingerprint.as_deref().unwrap_or("no fingerprint"),
        triage
            .operators
            .iter()
            .map(|o| format!("{}: {} job(s), {}", o.id, o.jobs, o.errors_text()))
            .collect::<Vec<_>>()
            .join("; "),
        if overrides_due > 0 {
            format!(
                ". stepgate asks an approver to mark {overrides_due} job(s) completed by manual override (the operator has no stake to refund); decide in stepgate now"
            )
        } else {
            String::new()
        }
    );
    if triage.all_operators() {
        pager::page_or_note(
            ONCALL,
            Severity::Critical,
            "SEV1 RGS stuck rollbacks at every operator: likely a bug in the retry path, revert to the prior version",
            &details,
            &mut checklist,
        );
        checklist.insert(
            0,
            "Revert rgs-server to the prior version (every operator at once points at the retry path) and file SEV1".into(),
        );
    } else if severity == "SEV1" {
        pager::page_or_note(
            ONCALL,
            Severity::Critical,
            "SEV1 RGS stuck rollbacks: more than 1% of pending jobs, across operators",
            &details,
            &mut checklist,
        );
    } else {
        pager::notify_or_note(
            INCIDENTS,
            &format!("{severity} RGS stuck rollbacks: {details}"),
            &mut checklist,
        );
    }
    for op in &triage.operators {
        for (error, jobs) in &op.errors {
            if ours || classify(error) != Class::Override {
                continue;
            }
            let reason = format!(
                "RGS playbook 1 (stuck rollbacks), Mitigate: {error} means the operator has no stake to refund; \
                 mark {jobs} pending ROLLBACK job(s) of {} completed with a manual override",
                op.id
            );
            let override_reason = format!("manual override by stepgate: {error}");
            match db::execute(
                DB,
                MARK_COMPLETED,
                params![op.id.as_str(), error.as_str(), override_reason],
                &reason,
            ) {
                Ok(n) => marked += n,
                // Refused or failed: the jobs stay pending, a human decides.
                Err(e) => refused.push(format!("{} ({error}): {}", op.id, e.message())),
            }
        }
        if !ours && op.has(Class::WalletDown) {
            pager::notify_or_note(
                OPERATORS,
                &format!(
                    "{}: your wallet is failing our ROLLBACK calls ({}); {} rollback(s) pending, oldest {} min. \
                     We keep retrying; please check your wallet service.",
                    op.id,
                    op.errors_text(),
                    op.jobs,
                    op.oldest_minutes
                ),
                &mut checklist,
            );
        }
        if op.has(Class::CircuitOpen) {
            checklist.push(format!(
                "{}: the circuit breaker opened; follow the circuit-breaker playbook (§5)",
                op.id
            ));
        }
        for (error, jobs) in op
            .errors
            .iter()
            .filter(|(e, _)| classify(e) == Class::Unknown)
        {
            checklist.push(format!(
                "{}: classify `{error}` ({jobs} job(s)) by hand from its wallet_calls rows",
                op.id
            ));
        }
    }
    for r in &refused {
        checklist.push(format!(
            "The manual override was NOT made for {r}; decide by hand"
        ));
    }
    checklist.extend([
        "RCA: what was the operator's failure mode?".to_owned(),
        "RCA: did our classifier treat an unknown response as retryable correctly?".to_owned(),
        "RCA: how long did it take to detect (alert latency + human response), and what monitor would reduce it?".to_owned(),
    ]);
    if severity == "SEV1" {
        checklist.push("Post-mortem within 5 business days (every SEV1)".into());
    }
    let mut overridden = match (marked, runbook::dry_run()) {
        (0, _) => String::new(),
        (n, true) => format!("; {n} job(s) would be marked completed by manual override (dry run)"),
        (n, false) => format!("; {n} job(s) marked completed by manual override"),
    };
    if !refused.is_empty() {
        overridden.push_str(&format!(
            "; {} manual override(s) NOT made (refused or failed, see the checklist)",
            refused.len()
        ));
    }
    let mut outcome = Outcome::new(format!("{summary}{overridden}"))
        .severity(severity)
        .field("stuck_rollbacks", triage.stuck())
        .field("operators_affected", triage.operators.len() as i64)
        .field("active_operators", triage.active_operators)
        .field("pending_jobs", triage.pending_jobs)
        .field("growing", triage.growing)
        .field("marked_completed", marked as i64)
        .field(
            "oldest_minutes",
            triage
                .operators
                .iter()
                .map(|o| o.oldest_minutes)
                .max()
                .unwrap_or(0),
        );
    for item in checklist {
        outcome = outcome.todo(item);
    }
    Ok(outcome)
}

/// The database did not answer the triage: a human runs it.
fn triage_failed(alert: &Alert, error: &Error) -> Result<Outcome> {
    step("Escalate: triage failed", || -> Result<Outcome> {
        let details = format!(
            "alert {} ({}): the triage queries failed ({}). Run them by hand on yantra.",
            alert.name,
            alert.fingerprint.as_deref().unwrap_or("no fingerprint"),
            error.message()
        );
        pager::page(
            ONCALL,
            Severity::Error,
            "RGS stuck rollbacks: automated triage failed, triage by hand",
            &details,
        )?;
        Ok(Outcome::new(format!("Triage failed: {}", error.message()))
            .severity("SEV2")
            .todo("Run the three triage queries of playbook 1 by hand")
            .todo("Check the database itself (see playbook 7, DB connection exhaustion)"))
    })
}
