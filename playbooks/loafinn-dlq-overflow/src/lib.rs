//! loa-finn: billing DLQ overflow (`billing_pending_reconciliation_count >
//! 10`, entries in `billing:dlq:poison`).
//!
//! Codifies runbook section 2, "DLQ Overflow":
//!
//! - **Circuit breaker**: billing circuit-breaks after a DLQ overflow;
//!   verify the conservation guard is `degraded` and new reserves get 503.
//! - **Investigate**: arrakis health, Redis connectivity, the poison
//!   entries' errors.
//! - **Admin resolution**, per poisoned entry: its billing WAL entry must
//!   exist; arrakis confirms the finalize → mark it FINALIZE_ACKED; arrakis
//!   has no record → void it and release its held credits. Each is a
//!   database write a human approves; nothing is resolved while arrakis is
//!   down.
//! - Clearing the queue and watching the guard return to `ready` stay with
//!   humans (checklist). The runbook assigns no severity; the outcome says
//!   CRITICAL while the breaker is tripped.

use stepgate_sdk::prelude::*;

const DB: &str = "loa_finn";
const ADMIN: &str = "loa_admin";
const BILLING_HEALTH: &str = "/api/v1/admin/billing/health";
const ARRAKIS: &str = "arrakis";
const INCIDENTS: &str = "loa-incidents";

/// Unresolved entries, and voided ones whose credits are still held (a
/// resolution left half done, by an earlier version or by hand): a re-run
/// finishes those.
const POISON: &str = "SELECT p.entry_id, p.wal_entry_id, p.error, (w.id IS NOT NULL) AS wal_exists, \
     (p.resolution IS NOT NULL) AS voided \
     FROM billing_dlq_poison p LEFT JOIN wal_entries w ON w.id = p.wal_entry_id \
     WHERE p.resolution IS NULL OR (p.resolution = 'VOIDED' AND EXISTS \
     (SELECT 1 FROM held_credits h WHERE h.wal_entry_id = p.wal_entry_id AND h.released_at IS NULL)) \
     ORDER BY p.created_at LIMIT 100";
const ACK: &str = "UPDATE billing_dlq_poison SET resolution = 'FINALIZE_ACKED' \
     WHERE entry_id = $1 AND resolution IS NULL";
/// Voiding an entry and releasing its held credits, as one statement: one
/// approval, one transaction, so a refusal can never leave one without the
/// other. On an entry already voided it releases what is still held.
///
/// The credits are released only if the entry is voided, by this statement
/// or before it: an entry someone marked FINALIZE_ACKED while the approval
/// waited keeps its credits (the finalize happened).
const VOID_AND_RELEASE: &str = "WITH voided AS (UPDATE billing_dlq_poison SET resolution = 'VOIDED' \
     WHERE entry_id = $1 AND resolution IS NULL RETURNING entry_id) \
     UPDATE held_credits SET released_at = now() WHERE wal_entry_id = $2 AND released_at IS NULL \
     AND (EXISTS (SELECT 1 FROM voided) OR EXISTS (SELECT 1 FROM billing_dlq_poison \
     WHERE entry_id = $1 AND resolution = 'VOIDED'))";

struct DlqOverflow;

struct Poisoned {
    entry: String,
    wal: Option<i64>,
    wal_exists: bool,
    error: String,
    /// Voided already, its credits still held: only the release is left.
    voided: bool,
}

impl Playbook for DlqOverflow {
    fn describe() -> Description {
        Description::new("loafinn-dlq-overflow", "1.0.0")
            .summary(
                "loa-finn runbook 2, DLQ overflow: verifies the billing circuit breaker tripped, checks \
                 arrakis, and resolves each poisoned entry (FINALIZE_ACKED when arrakis finalized it, \
                 else void and release its held credits), every resolution approved.",
            )
            .answers("BillingPendingReconciliationHigh")
            .db_read(DB)
            .db_write(DB)
            .http(ADMIN, &format!("GET {BILLING_HEALTH}"))
            .http(ARRAKIS, "GET /health")
            .http(ARRAKIS, "GET /api/finalizations/*")
            .notify(INCIDENTS)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let (guard, arrakis_up, redis) =
            step("Circuit breaker and investigation", || -> Result<_> {
                let health = http::get(ADMIN, BILLING_HEALTH);
                let (guard, redis) = match &health {
                    Ok(answer) if answer.ok() => (
                        answer.body["conservation_guard"]
                            .as_str()
                            .unwrap_or("unknown")
                            .to_owned(),
                        answer.body["redis"]
                            .as_str()
                            .unwrap_or("unknown")
                            .to_owned(),
                    ),
                    Ok(answer) => (
                        format!("unknown (billing health answered {})", answer.status),
                        "unknown".into(),
                    ),
                    Err(e) => (format!("unknown ({})", e.message()), "unknown".into()),
                };
                let arrakis_up = matches!(http::get(ARRAKIS, "/health"), Ok(a) if a.ok());
                Ok((guard, arrakis_up, redis))
            })?;
        let entries = step("Poisoned entries", || -> Result<Vec<Poisoned>> {
            db::query(DB, POISON, params![])?
                .iter()
                .map(|row| {
                    Ok(Poisoned {
                        entry: row.get("entry_id")?,
                        wal: row.get("wal_entry_id")?,
                        wal_exists: row.get("wal_exists")?,
                        error: row.get("error")?,
                        voided: row.get("voided")?,
                    })
                })
                .collect()
        })?;
        let tripped = guard == "degraded";
        let mut checklist = Vec::new();
        if !tripped {
            checklist.push(format!(
                "The conservation guard is `{guard}`, not `degraded`: the circuit breaker did not trip; check that new reserves are refused"
            ));
        }
        let (mut acked, mut voided, mut not_done) = (0i64, 0i64, 0i64);
        if !entries.is_empty() {
            step("Admin resolution", || -> Result<()> {
                if !arrakis_up {
                    checklist.insert(0, "arrakis does not answer /health: fix it first (curl https://arrakis.honeyjar.xyz/health), then resolve the poisoned entries".into());
                    return Ok(());
                }
                // The humans first: every resolution waits for an approver.
                let told = pager::notify(
                    INCIDENTS,
                    &format!(
                        "loa-finn billing DLQ overflow (alert {}): stepgate asks an approver to resolve {} poisoned entr{} (FINALIZE_ACKED when arrakis finalized it, else void and release its credits); decide in stepgate now",
                        alert.name,
                        entries.len(),
                        if entries.len() == 1 { "y" } else { "ies" }
                    ),
                );
                if let Err(e) = told {
                    checklist.push(format!(
                        "{INCIDENTS} was NOT told before the approvals ({}): tell them",
                        e.message()
                    ));
                }
                for e in &entries {
                    let Some(wal) = e.wal.filter(|_| e.wal_exists) else {
                        checklist.push(format!(
                            "{}: its billing WAL entry does not exist; resolve it by hand",
                            e.entry
                        ));
                        continue;
                    };
                    if e.voided {
                        let reason = format!(
                            "loa-finn runbook, DLQ Overflow, admin resolution: {} was voided but the credits of WAL entry {wal} are still held; release them",
                            e.entry
                        );
                        let released = db::execute(
                            DB,
                            VOID_AND_RELEASE,
                            params![e.entry.as_str(), wal],
                            &reason,
                        );
                        match released {
                            Ok(_) => voided += 1,
                            Err(err) => {
                                not_done += 1;
                                checklist.push(format!(
                                "{}: voided, but its held credits (WAL {wal}) are NOT released ({}): release them by hand",
                                e.entry,
                                err.message()
                            ))
                            }
                        }
                        continue;
                    }
                    let answer = match http::get(ARRAKIS, &format!("/api/finalizations/{wal}")) {
                        Ok(answer) => answer,
                        Err(err) => {
                            checklist.push(format!(
                                "{}: arrakis could not be asked about WAL entry {wal} ({}): resolve it by hand",
                                e.entry,
                                err.message()
                            ));
                            continue;
                        }
                    };
                    let finalized = answer.ok() && answer.body["status"] == "finalized";
                    let (sql, args, reason) = if finalized {
                        (
                            ACK,
                            params![e.entry.as_str()],
                            format!(
                                "loa-finn runbook, DLQ Overflow, admin resolution: arrakis confirms the finalize of WAL entry {wal}; mark {} FINALIZE_ACKED",
                                e.entry
                            ),
                        )
                    } else if answer.status == 404 {
                        (
                            VOID_AND_RELEASE,
                            params![e.entry.as_str(), wal],
                            format!(
                                "loa-finn runbook, DLQ Overflow, admin resolution: arrakis has no record of WAL entry {wal}; void {} and release the credits it holds, together",
                                e.entry
                            ),
                        )
                    } else {
                        checklist.push(format!(
                            "{}: arrakis answered {} for WAL entry {wal}; resolve it by hand",
                            e.entry, answer.status
                        ));
                        continue;
                    };
                    match db::execute(DB, sql, args, &reason) {
                        // No row: someone resolved it while the approval waited.
                        Ok(0) if finalized => {
                            not_done += 1;
                            checklist.push(format!(
                                "{}: NOT acked (it was resolved meanwhile): check its resolution",
                                e.entry
                            ))
                        }
                        Ok(_) if finalized => acked += 1,
                        Ok(_) => voided += 1,
                        Err(err) => {
                            not_done += 1;
                            checklist.push(format!(
                                "{}: NOT resolved ({}): resolve it by hand",
                                e.entry,
                                err.message()
                            ))
                        }
                    }
                }
                Ok(())
            })?;
        }
        let errors = {
            let mut errors: Vec<&str> = entries.iter().map(|e| e.error.as_str()).collect();
            errors.sort();
            errors.dedup();
            errors.join("; ")
        };
        let summary = format!(
            "{} poisoned entr{} (errors: {}); guard {guard}, arrakis {}, redis {redis}; acked {acked}, voided {voided}{}{}",
            entries.len(),
            if entries.len() == 1 { "y" } else { "ies" },
            if errors.is_empty() { "none" } else { &errors },
            if arrakis_up { "up" } else { "DOWN" },
            if runbook::dry_run() && acked + voided > 0 {
                " (dry run: planned, nothing written)"
            } else {
                ""
            },
            if not_done > 0 {
                format!(
                    "; {not_done} resolution(s) NOT made (refused or failed, see the checklist)"
                )
            } else {
                String::new()
            }
        );
        step("Notify", || {
            pager::notify(
                INCIDENTS,
                &format!(
                    "loa-finn billing DLQ overflow (alert {}): {summary}",
                    alert.name
                ),
            )
        })?;
        checklist.extend([
            "Clear the poison queue once every entry is resolved".to_owned(),
            "Verify the conservation guard goes back to `ready`, and monitor the DLQ depth for 1 hour".to_owned(),
        ]);
        let mut outcome = Outcome::new(summary)
            .severity(if tripped { "CRITICAL" } else { "WARNING" })
            .field("poisoned", entries.len() as i64)
            .field("conservation_guard", guard.as_str())
            .field("arrakis_up", arrakis_up)
            .field("acked", acked)
            .field("voided", voided);
        for item in checklist {
            outcome = outcome.todo(item);
        }
        Ok(outcome)
    }
}

stepgate_sdk::playbook!(DlqOverflow);
