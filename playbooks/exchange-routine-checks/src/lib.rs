//! Spot exchange §4: routine operations, run by `[[schedules]]` as dry
//! runs (nothing is written; the report is the run's outcome, listed by
//! `stepgate runs`).
//!
//! - **Daily**: the reconciliation summary (engine seq against ledger seq,
//!   per symbol), the invariants check (every ledger transaction sums to
//!   zero per asset) and the settlement-lag report (the last 24 h's worst
//!   p99 per symbol against the ops policy's T2 and T3). Anything out of
//!   line is a finding the live alerts should already have raised: the
//!   report says so and would page on-call.
//! - **Weekly** (restore rehearsal and chaos drills, in staging) and
//!   **monthly** (DR exercise, access review: RBAC, MFA, JIT): human work;
//!   the run is the reminder, with the checklist.

use stepgate_sdk::prelude::*;

const DB: &str = "exchange";
const ONCALL: &str = "exchange-oncall";
const INCIDENTS: &str = "exchange-incidents";

const SEQS: &str = "SELECT symbol, engine_seq, ledger_seq FROM engine_positions ORDER BY symbol";
const UNBALANCED: &str = "SELECT count(*) AS unbalanced FROM (SELECT tx_id, asset FROM ledger_entries \
     GROUP BY tx_id, asset HAVING sum(amount) <> 0) AS t";
const LAG: &str = "SELECT symbol, max(lag_ms_p99) AS lag_ms FROM settlement_lag \
     WHERE measured_at > now() - interval '24 hours' GROUP BY symbol ORDER BY symbol";

struct RoutineChecks;

/// One check's line in the report, and whether it found something.
struct Check {
    line: String,
    finding: bool,
}

fn reconciliation() -> Result<Check> {
    let mut behind = Vec::new();
    let mut ahead = Vec::new();
    let mut symbols = 0;
    for row in db::query(DB, SEQS, params![])?.iter() {
        symbols += 1;
        let (symbol, engine, ledger): (String, i64, i64) = (
            row.get("symbol")?,
            row.get("engine_seq")?,
            row.get("ledger_seq")?,
        );
        // In i128: the difference of two i64 seqs cannot overflow there.
        let gap = i128::from(engine) - i128::from(ledger);
        if gap > 0 {
            behind.push(format!("{symbol} ledger {gap} behind"));
        } else if gap < 0 {
            // The ledger ahead of the engine: postings the engine never made
            // (a double posting, §3.1's signal).
            ahead.push(format!("{symbol} ledger {} AHEAD of the engine", -gap));
        }
    }
    let mut said = Vec::new();
    if !ahead.is_empty() {
        said.push(format!(
            "{} (§3.1: postings the engine never made)",
            ahead.join(", ")
        ));
    }
    if !behind.is_empty() {
        said.push(format!(
            "{} (settlement in flight unless it persists)",
            behind.join(", ")
        ));
    }
    Ok(Check {
        finding: !ahead.is_empty(),
        line: if said.is_empty() {
            format!("reconciliation: {symbols} symbol(s), ledger seq = engine seq")
        } else {
            format!("reconciliation: {}", said.join("; "))
        },
    })
}

fn invariants() -> Result<Check> {
    let unbalanced: i64 = db::query(DB, UNBALANCED, params![])?
        .first()?
        .get("unbalanced")?;
    Ok(Check {
        finding: unbalanced > 0,
        line: if unbalanced == 0 {
            "invariants: every ledger transaction sums to zero".to_owned()
        } else {
            format!("invariants: {unbalanced} ledger transaction(s) do NOT sum to zero")
        },
    })
}

fn settlement_lag() -> Result<Check> {
    let (t2, t3) = exchange_controls::settlement_lag_thresholds()?;
    let mut over = Vec::new();
    let mut finding = false;
    for row in db::query(DB, LAG, params![])?.iter() {
        let (symbol, lag): (String, i64) = (row.get("symbol")?, row.get("lag_ms")?);
        if lag > t3 {
            finding = true;
            over.push(format!("{symbol} {lag} ms (over T3 {t3})"));
        } else if lag > t2 {
            over.push(format!("{symbol} {lag} ms (over T2 {t2})"));
        }
    }
    Ok(Check {
        finding,
        line: if over.is_empty() {
            format!("settlement lag: every symbol's 24 h p99 under T2 ({t2} ms)")
        } else {
            format!("settlement lag: {}", over.join(", "))
        },
    })
}

impl Playbook for RoutineChecks {
    fn describe() -> Description {
        Description::new("exchange-routine-checks", "1.0.0")
            .summary(
                "Spot exchange §4 routine operations, for schedules: the daily reconciliation summary, \
                 invariants check and settlement-lag report; the weekly and monthly drills as reminders.",
            )
            .answers("ExchangeDailyChecks")
            .answers("ExchangeWeeklyChecks")
            .answers("ExchangeMonthlyChecks")
            .db_read(DB)
            .page(ONCALL)
            .notify(INCIDENTS)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let cadence = alert.label("cadence").unwrap_or("daily");
        let mut checklist = Vec::new();
        match cadence {
            "daily" => {
                let checks = step("Daily checks", || {
                    [
                        ("reconciliation", reconciliation as fn() -> Result<Check>),
                        ("invariants", invariants),
                        ("settlement lag", settlement_lag),
                    ]
                    .into_iter()
                    .map(|(name, check)| {
                        check().unwrap_or_else(|e| Check {
                            finding: true,
                            line: format!("{name}: NOT checked ({})", e.message()),
                        })
                    })
                    .collect::<Vec<_>>()
                });
                let findings = checks.iter().filter(|c| c.finding).count();
                let report = checks
                    .iter()
                    .map(|c| c.line.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
                let summary = format!("Daily checks: {report}");
                step("Report", || {
                    if findings > 0 {
                        pager::page_or_note(
                            ONCALL,
                            Severity::Error,
                            &format!("Spot exchange daily checks: {findings} finding(s)"),
                            &report,
                            &mut checklist,
                        );
                        checklist.push("A finding the live alerts did not raise: check the alert rules as well as the finding".to_owned());
                    }
                    pager::notify_or_note(
                        INCIDENTS,
                        &format!("Spot exchange {summary}"),
                        &mut checklist,
                    );
                });
                let mut outcome = Outcome::new(summary)
                    .severity(if findings > 0 { "SEV2" } else { "SEV3" })
                    .field("findings", findings as i64);
                for item in checklist {
                    outcome = outcome.todo(item);
                }
                Ok(outcome)
            }
            "weekly" | "monthly" => {
                let due: &[&str] = if cadence == "weekly" {
                    &[
                        "Restore rehearsal in staging (restore, replay settlement from Kafka, reconcile)",
                        "Chaos drill in staging",
                    ]
                } else {
                    &[
                        "DR exercise",
                        "Access review: RBAC roles, MFA enrolment, JIT grants",
                    ]
                };
                let summary = format!(
                    "{} checks due: {}",
                    if cadence == "weekly" {
                        "Weekly"
                    } else {
                        "Monthly"
                    },
                    due.join("; ")
                );
                step("Remind", || {
                    pager::notify_or_note(
                        INCIDENTS,
                        &format!("Spot exchange {summary}"),
                        &mut checklist,
                    )
                });
                checklist.extend(due.iter().map(|d| (*d).to_owned()));
                Ok(checklist
                    .into_iter()
                    .fold(Outcome::new(summary).severity("SEV3"), Outcome::todo))
            }
            other => Err(Error::failed(format!(
                "`cadence` is `{other}`: daily, weekly or monthly"
            ))),
        }
    }
}

stepgate_sdk::playbook!(RoutineChecks);
