//! RGS §8: reconciliation mismatch (`MAJOR_DRIFT`).
//!
//! Codifies the runbook's section:
//!
//! - **Severity**: SEV2 if one operator drifts that day, SEV1 if several
//!   (every `MAJOR_DRIFT` row the reconcile cron wrote for the day).
//! - **Triage**: the drift's direction, ours minus theirs, in micro-units.
//!   Ours high: the transactions they have not acked are probably still in
//!   `pending_wallet_jobs`; ours low: we may have missed settlements,
//!   `wallet_calls` that failed and were never retried. Either explains
//!   the drift only when its amount is exactly the drift.
//! - **Mitigation**: explained, nothing is halted; the attribution is on
//!   the checklist. Unexplained: the incident room is told, new
//!   settlements for that operator are halted (a write a human approves),
//!   and the operator's compliance contact is asked for.

use stepgate_sdk::prelude::*;

const DB: &str = "rgs";
const ONCALL: &str = "rgs-oncall";
const INCIDENTS: &str = "rgs-incidents";
const OPERATORS: &str = "rgs-operators";

/// What the reconcile cron recorded for the day, every operator.
const DRIFTS: &str = "SELECT r.operator_id, r.currency, r.ours_micro, r.theirs_micro, o.name, o.compliance_contact, \
     o.settlements_halted FROM reconciliations r JOIN operators o ON o.id = r.operator_id \
     WHERE r.day = $1::date AND r.status = 'MAJOR_DRIFT' ORDER BY r.operator_id, r.currency";
/// Ours high: what we processed that they have not settled yet.
const PENDING: &str = "SELECT count(*) AS jobs, coalesce(sum(amount_micro), 0)::bigint AS amount_micro \
     FROM pending_wallet_jobs WHERE operator_id = $1 AND currency = $2 AND completed_at IS NULL \
     AND created_at >= $3::date AND created_at < $3::date + 1";
/// Ours low: calls that failed that day and never succeeded since.
const UNRETRIED: &str = "SELECT count(*) AS calls, coalesce(sum(f.amount_micro), 0)::bigint AS amount_micro \
     FROM wallet_calls f WHERE f.operator_id = $1 AND f.currency = $2 AND f.succeeded = false \
     AND f.created_at >= $3::date AND f.created_at < $3::date + 1 AND NOT EXISTS (SELECT 1 FROM wallet_calls s \
     WHERE s.transaction_uuid = f.transaction_uuid AND s.succeeded = true)";
/// Halts new settlements for one operator.
const HALT: &str =
    "UPDATE operators SET settlements_halted = true WHERE id = $1 AND settlements_halted = false";

struct Drift {
    operator: String,
    currency: String,
    ours: i64,
    theirs: i64,
    name: String,
    contact: Option<String>,
    halted: bool,
}

struct ReconciliationDrift;

/// Micro-units as the currency's units.
fn units(micro: impl Into<i128>) -> String {
    from_units(micro.into(), 6)
        .map(|d| d.to_string())
        .unwrap_or_default()
}

/// A label that must be there, checked against `valid`.
fn label<'a>(
    alert: &'a Alert,
    key: &str,
    valid: impl Fn(&str) -> bool,
    what: &str,
) -> Result<&'a str> {
    let value = alert
        .label(key)
        .ok_or_else(|| Error::failed(format!("the alert has no `{key}` label ({what})")))?;
    if valid(value) {
        Ok(value)
    } else {
        Err(Error::failed(format!("`{key}` = `{value}` is not {what}")))
    }
}

fn is_day(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

fn drifts(day: &str) -> Result<Vec<Drift>> {
    db::query(DB, DRIFTS, params![day])?
        .iter()
        .map(|r| {
            Ok(Drift {
                operator: r.get("operator_id")?,
                currency: r.get("currency")?,
                ours: r.get("ours_micro")?,
                theirs: r.get("theirs_micro")?,
                name: r.get("name")?,
                contact: r.get::<String>("compliance_contact").ok(),
                halted: r.get("settlements_halted")?,
            })
        })
        .collect()
}

/// (rows, amount) of a count-and-sum query.
fn count_sum(sql: &str, drift: &Drift, day: &str, count: &str) -> Result<(i64, i64)> {
    let rows = db::query(
        DB,
        sql,
        params![drift.operator.as_str(), drift.currency.as_str(), day],
    )?;
    let row = rows.first()?;
    Ok((row.get(count)?, row.get("amount_micro")?))
}

impl Playbook for ReconciliationDrift {
    fn describe() -> Description {
        Description::new("rgs-reconciliation-drift", "1.0.0")
            .summary(
                "RGS §8, reconciliation MAJOR_DRIFT: attributes the drift (ours high: unsettled pending jobs; \
                 ours low: failed calls never retried), and when nothing accounts for it halts new \
                 settlements for the operator (approved) and asks for their compliance contact.",
            )
            .answers("ReconciliationMajorDrift")
            .db_read(DB)
            .db_write(DB)
            .page(ONCALL)
            .notify(INCIDENTS)
            .notify(OPERATORS)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let operator = label(
            &alert,
            "operator",
            |v| !v.is_empty() && v.len() <= 64,
            "an operator id",
        )?;
        let currency = label(
            &alert,
            "currency",
            |v| v.len() == 3 && v.bytes().all(|c| c.is_ascii_uppercase()),
            "a currency code",
        )?;
        let day = label(&alert, "day", is_day, "a day (YYYY-MM-DD)")?;
        let (all, drift) = step("Triage: the day's drifts", || -> Result<_> {
            let all = drifts(day)?;
            let drift = all
                .iter()
                .position(|d| d.operator == operator && d.currency == currency)
                .ok_or_else(|| Error::failed(format!("no MAJOR_DRIFT is recorded for {operator} {currency} on {day}: was the reconcile run again?")))?;
            Ok((all, drift))
        })?;
        let drift = &all[drift];
        let operators: std::collections::BTreeSet<&str> =
            all.iter().map(|d| d.operator.as_str()).collect();
        let severity = if operators.len() > 1 { "SEV1" } else { "SEV2" };
        // In i128: the difference of two i64 amounts cannot overflow there.
        let delta = i128::from(drift.ours) - i128::from(drift.theirs);
        let who = format!("{} ({operator})", drift.name);
        let what = format!(
            "{who} {currency} {day}: ours {} vs theirs {} ({}{})",
            units(drift.ours),
            units(drift.theirs),
            if delta > 0 {
                "ours high by "
            } else {
                "ours low by "
            },
            units(delta.abs())
        );
        let attributed = step("Triage: attribute it", || -> Result<(String, bool)> {
            if delta > 0 {
                let (jobs, amount) = count_sum(PENDING, drift, day, "jobs")?;
                Ok((
                    format!(
                        "{jobs} pending wallet job(s) for {} not yet settled on their side",
                        units(amount)
                    ),
                    i128::from(amount) == delta,
                ))
            } else {
                let (calls, amount) = count_sum(UNRETRIED, drift, day, "calls")?;
                Ok((
                    format!(
                        "{calls} failed wallet call(s) for {} never retried",
                        units(amount)
                    ),
                    i128::from(amount) == -delta,
                ))
            }
        });
        let mut checklist = Vec::new();
        let (found, explained) = match attributed {
            Ok(found) => found,
            Err(e) => (
                format!("the attribution query failed ({})", e.message()),
                false,
            ),
        };
        let others = if operators.len() > 1 {
            format!("; {} operators drift that day", operators.len())
        } else {
            String::new()
        };
        // SEV1 (several operators drift): on-call is paged in every branch.
        let page_sev1 = |details: &str, checklist: &mut Vec<String>| {
            if severity == "SEV1" {
                pager::page_or_note(
                    ONCALL,
                    Severity::Critical,
                    &format!(
                        "RGS SEV1: MAJOR_DRIFT for {} operators on {day}",
                        operators.len()
                    ),
                    details,
                    checklist,
                );
            }
        };
        if explained {
            return step("Explained", || -> Result<Outcome> {
                let summary =
                    format!("{severity} {what}: explained by {found}; nothing halted{others}");
                page_sev1(&summary, &mut checklist);
                pager::notify_or_note(
                    INCIDENTS,
                    &format!("RGS {}: {summary}", alert.name),
                    &mut checklist,
                );
                checklist.push(if delta > 0 {
                    "Cross-check the pending jobs against their file; they should reconcile on the next day's close".to_owned()
                } else {
                    "Retry the failed calls (or enter a manual correction) and re-run the reconcile".to_owned()
                });
                Ok(outcome(summary, severity, delta, explained, checklist))
            });
        }
        step("Mitigate: halt settlements", || -> Result<Outcome> {
            page_sev1(&what, &mut checklist);
            let halt = if drift.halted {
                "settlements already halted".to_owned()
            } else {
                pager::notify_or_note(
                    INCIDENTS,
                    &format!(
                        "RGS {}: {what} is unexplained ({found}); stepgate asks an approver to halt new settlements for {who}; decide in stepgate now",
                        alert.name
                    ),
                    &mut checklist,
                );
                let reason = format!("RGS runbook §8: {what}, unexplained ({found})");
                let fate = Fate::of(&db::execute(DB, HALT, params![operator], &reason));
                if let Some(why) = fate.why_not() {
                    checklist.push(format!(
                        "New settlements for {who} are NOT halted ({why}): halt them by hand"
                    ));
                }
                format!("new settlements {}", fate.say("halted"))
            };
            let contact = drift
                .contact
                .as_deref()
                .unwrap_or("NO compliance contact on record");
            pager::notify_or_note(
                OPERATORS,
                &format!(
                    "{who}: the {day} {currency} settlement does not reconcile ({what}); the RGS escalates to your compliance contact ({contact})"
                ),
                &mut checklist,
            );
            let summary = format!(
                "{severity} {what}: unexplained ({found}); {halt}; compliance contact asked for{others}"
            );
            pager::notify_or_note(
                INCIDENTS,
                &format!("RGS {}: {summary}", alert.name),
                &mut checklist,
            );
            if drift.contact.is_none() {
                checklist.push(format!("{who} has no compliance contact on record: find one through the account manager"));
            }
            checklist.push("RCA: the drift in micro-units and percent, the transactions that account for it, whether it needs a manual correction entry".to_owned());
            Ok(outcome(summary, severity, delta, explained, checklist))
        })
    }
}

fn outcome(
    summary: String,
    severity: &str,
    delta: i128,
    explained: bool,
    checklist: Vec<String>,
) -> Outcome {
    let mut outcome = Outcome::new(summary)
        .severity(severity)
        .field("drift", units(delta))
        .field("explained", explained);
    for item in checklist {
        outcome = outcome.todo(item);
    }
    outcome
}

stepgate_sdk::playbook!(ReconciliationDrift);
