//! Spot exchange: ledger invariant violation (SEV1).
//!
//! Codifies runbook §3.1:
//!
//! - **Signal**: `invariant_violation_total > 0`, or the engine and ledger
//!   sequences disagree and keep disagreeing.
//! - **Immediate actions**, in this order: halt withdrawals (mandatory,
//!   before anything is read); set the affected symbols to `CANCEL_ONLY`,
//!   or everything to `SOFT_HALT` when the scope is unknown (nothing points
//!   at a symbol, or the database cannot say); list the forensic bundle.
//! - **Diagnosis**: transactions that do not sum to zero, and double
//!   postings (an idempotency key posted twice).
//!
//! Every control is a write two approvers decide (money at risk), with the
//! reason and the incident's ticket id.

use exchange_controls::{ALL_SYMBOLS, Mode, ONCALL, halt_withdrawals, raise_mode, ticket};
use stepgate_sdk::prelude::*;

const DB: &str = "exchange";

const MISMATCHED: &str = "SELECT symbol, engine_seq, ledger_seq FROM engine_positions \
     WHERE engine_seq <> ledger_seq ORDER BY symbol";
const UNBALANCED: &str = "SELECT tx_id, asset, sum(amount)::text AS imbalance FROM ledger_entries \
     GROUP BY 1, 2 HAVING sum(amount) <> 0 ORDER BY 1 LIMIT 100";
const DOUBLE_POSTED: &str = "SELECT idempotency_key, count(*) AS postings FROM ledger_entries \
     GROUP BY 1 HAVING count(*) > 1 ORDER BY 1 LIMIT 100";
const RECENT_RANGE: &str = "SELECT coalesce(min(id), 0) AS first_id, coalesce(max(id), 0) AS last_id \
     FROM ledger_entries WHERE created_at > now() - interval '1 hour'";

struct LedgerInvariant;

struct Findings {
    symbols: Vec<String>,
    unbalanced: Vec<String>,
    double_posted: Vec<String>,
    range: (i64, i64),
}

fn diagnose() -> Result<Findings> {
    let symbols = db::query(DB, MISMATCHED, params![])?
        .iter()
        .map(|r| r.get::<String>("symbol"))
        .collect::<Result<Vec<_>>>()?;
    let unbalanced = db::query(DB, UNBALANCED, params![])?
        .iter()
        .map(|r| -> Result<String> {
            Ok(format!(
                "{} {} off by {}",
                r.get::<String>("tx_id")?,
                r.get::<String>("asset")?,
                r.get::<String>("imbalance")?
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let double_posted = db::query(DB, DOUBLE_POSTED, params![])?
        .iter()
        .map(|r| -> Result<String> {
            Ok(format!(
                "{} x{}",
                r.get::<String>("idempotency_key")?,
                r.get::<i64>("postings")?
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let range = db::query(DB, RECENT_RANGE, params![])?;
    let range = range.first()?;
    Ok(Findings {
        symbols,
        unbalanced,
        double_posted,
        range: (range.get("first_id")?, range.get("last_id")?),
    })
}

impl Playbook for LedgerInvariant {
    fn describe() -> Description {
        Description::new("exchange-ledger-invariant", "1.0.0")
            .summary(
                "Spot exchange §3.1, ledger invariant violation (SEV1): halts withdrawals first, sets the \
                 symbols whose engine and ledger disagree to CANCEL_ONLY (or everything to SOFT_HALT when \
                 the scope is unknown), finds unbalanced and double-posted entries, lists the forensic \
                 bundle and pages on-call.",
            )
            .answers("LedgerInvariantViolation")
            .answers("EngineLedgerSeqMismatch")
            .db_read(DB)
            .http(exchange_controls::ADMIN, &format!("POST {}", exchange_controls::WITHDRAWALS_HALT))
            .http(exchange_controls::ADMIN, &format!("POST {}", exchange_controls::SYMBOL_MODE))
            .page(ONCALL)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let ticket = ticket(&alert);
        let mut checklist = Vec::new();
        // The humans first: the controls below wait for two approvers.
        step("Tell on-call", || {
            let told = pager::page(
                ONCALL,
                Severity::Critical,
                &format!(
                    "SEV1 spot exchange ledger invariant violation ({ticket}): stepgate asks two approvers to halt withdrawals and contain trading"
                ),
                &format!(
                    "alert {}: approve or deny the withdrawal halt and the symbol modes in stepgate now; a second page follows with what was done and found",
                    alert.name
                ),
            );
            if let Err(e) = told {
                checklist.push(format!(
                    "On-call was NOT paged at the start ({}): call them",
                    e.message()
                ));
            }
        });
        let halted = step("Immediate 1: halt withdrawals", || {
            halt_withdrawals(
                "Spot exchange runbook §3.1, immediate action 1: HALT withdrawals (mandatory) on a ledger invariant violation",
                &ticket,
            )
        });
        if let Some(why) = halted.why_not() {
            checklist.push(format!(
                "Withdrawals are NOT halted ({why}): halt them by hand, now"
            ));
        }
        let findings = step("Diagnosis", diagnose);
        let mut not_set = Vec::new();
        let (scope, modes) = step("Immediate 2: contain trading", || {
            let targets: Vec<(String, Mode)> = match &findings {
                Ok(f) if !f.symbols.is_empty() => f
                    .symbols
                    .iter()
                    .map(|s| (s.clone(), Mode::CancelOnly))
                    .collect(),
                _ => vec![(ALL_SYMBOLS.to_owned(), Mode::SoftHalt)],
            };
            let scope = match &findings {
                Ok(f) if !f.symbols.is_empty() => {
                    format!("affected symbols {}", f.symbols.join(", "))
                }
                Ok(_) => "scope unknown (no symbol's sequences disagree)".to_owned(),
                Err(e) => format!(
                    "scope unknown (the ledger could not be read: {})",
                    e.message()
                ),
            };
            let mut modes = Vec::new();
            for (symbol, mode) in targets {
                let reason = format!(
                    "Spot exchange runbook §3.1, immediate action 2: {} for {symbol}; {scope}",
                    mode.as_str()
                );
                // Read before overwrite: a stronger halt (a split brain's
                // HARD_HALT) is kept, never lowered.
                let raised = raise_mode(&symbol, mode, &reason, &ticket);
                modes.extend(raised.set);
                modes.extend(raised.kept);
                if !raised.not_done.is_empty() {
                    not_set.push(symbol.clone());
                }
                checklist.extend(raised.not_done);
            }
            (scope, modes)
        });
        step("Escalate", || -> Result<Outcome> {
            let mut outcome = Outcome::new(format!(
                "Ledger invariant violation, {scope}: withdrawals {}, {}{}",
                halted.say("halted"),
                if modes.is_empty() {
                    "no symbol mode set".to_owned()
                } else {
                    modes.join(", ")
                },
                if not_set.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; NOT set: {} (see the checklist for why)",
                        not_set.join(", ")
                    )
                }
            ))
            .severity("SEV1")
            .field("withdrawals_halted", halted.passed())
            .field("symbol_modes", modes.join(","))
            .field("ticket", ticket.as_str());
            let evidence = match &findings {
                Ok(f) => {
                    outcome = outcome
                        .field("unbalanced_txs", f.unbalanced.len() as i64)
                        .field("double_postings", f.double_posted.len() as i64)
                        .field(
                            "ledger_entry_range",
                            format!("{}..{}", f.range.0, f.range.1),
                        );
                    checklist.push(format!(
                        "Forensic bundle: WAL segments + snapshots + Kafka offsets + ledger entries {}..{} + configs",
                        f.range.0, f.range.1
                    ));
                    format!(
                        "unbalanced: {}; double postings: {}",
                        if f.unbalanced.is_empty() {
                            "none".to_owned()
                        } else {
                            f.unbalanced.join("; ")
                        },
                        if f.double_posted.is_empty() {
                            "none".to_owned()
                        } else {
                            f.double_posted.join("; ")
                        }
                    )
                }
                Err(e) => {
                    checklist.push("Forensic bundle: WAL segments + snapshots + Kafka offsets + the ledger entry range (read it by hand) + configs".into());
                    format!("the ledger could not be read ({})", e.message())
                }
            };
            pager::page_or_note(
                ONCALL,
                Severity::Critical,
                &format!(
                    "SEV1 spot exchange ledger invariant violation ({ticket}): withdrawals {}, trading {}",
                    halted.say("halted"),
                    match (modes.is_empty(), not_set.is_empty(), runbook::dry_run()) {
                        (true, _, _) => "NOT contained",
                        (false, false, _) => "only partly contained (see the checklist)",
                        (false, true, true) => "would be contained (dry run)",
                        (false, true, false) => "contained",
                    }
                ),
                &format!(
                    "alert {}: {scope}. {evidence}. Modes: {}",
                    alert.name,
                    if modes.is_empty() {
                        "NONE set".to_owned()
                    } else {
                        modes.join(", ")
                    }
                ),
                &mut checklist,
            );
            checklist.extend([
                "Diagnosis: missing/double postings (unique constraint hits? consumer retries?), the latest deployments and config changes, integrity roots".to_owned(),
                "Recovery: if safe, replay settlement from the last good offset with idempotency keys; if corrupted, stop trading, rebuild balances from the ledger, apply correction entries".to_owned(),
                "Postmortem required".to_owned(),
            ]);
            for item in checklist {
                outcome = outcome.todo(item);
            }
            Ok(outcome)
        })
    }
}

stepgate_sdk::playbook!(LedgerInvariant);
