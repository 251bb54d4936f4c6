//! FiatRails: DLQGrowing (CRITICAL: the DLQ has > 10 items for 5+ min).
//!
//! Codifies the runbook's alert response and its "Dead-Letter Queue
//! Processing" section:
//!
//! - **Diagnosis**: read the DLQ items; is the RPC up (`eth_blockNumber`)?
//! - **Classify** each item by its last error: RPC down or a nonce issue →
//!   safe to retry; user not compliant → permanent (mark failed, the user
//!   is told and the intent refunded by a human); a contract bug → wait for
//!   the fix.
//! - **Remediation**: fix the RPC first: while it is down nothing is
//!   replayed. Otherwise the safe items are replayed in one bulk replay
//!   (the admin API's `replay-dlq`, approved), and the permanent ones are
//!   marked failed (a database write, approved).

use std::collections::BTreeMap;

use stepgate_sdk::prelude::*;

const DB: &str = "fiatrails";
const RPC: &str = "fiatrails_rpc";
const ADMIN: &str = "fiatrails_admin";
const REPLAY: &str = "/admin/dlq/replay";
const INCIDENTS: &str = "fiatrails-incidents";

const OPEN_ITEMS: &str = "SELECT id, operation, intent_id, attempts, last_error FROM dlq_items \
     WHERE status = 'open' ORDER BY created_at LIMIT 500";
const MARK_FAILED: &str =
    "UPDATE dlq_items SET status = 'failed' WHERE status = 'open' AND last_error = $1";

/// The alert's threshold (items) unless it says otherwise.
const DEFAULT_THRESHOLD: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// RPC was down, or a nonce issue since resolved: safe to retry.
    Retry,
    /// The user is not compliant: permanent.
    Permanent,
    /// A contract bug: wait for the upgrade.
    WaitForFix,
    /// Nobody knows: a human looks.
    Unknown,
}

fn classify(error: &str) -> Class {
    let e = error.to_ascii_lowercase();
    if e.contains("not compliant") {
        Class::Permanent
    } else if e.contains("rpc") || e.contains("timeout") || e.contains("nonce") {
        Class::Retry
    } else if e.contains("revert") || e.contains("contract") {
        Class::WaitForFix
    } else {
        Class::Unknown
    }
}

struct Item {
    id: String,
    last_error: String,
}

struct Dlq;

impl Playbook for Dlq {
    fn describe() -> Description {
        Description::new("fiatrails-dlq", "1.0.0")
            .summary(
                "FiatRails DLQGrowing: classifies the dead-letter items by their last error, replays \
                 the safe ones in one approved bulk replay once the RPC answers, marks permanent \
                 failures (users no longer compliant) failed, and leaves contract bugs for the fix.",
            )
            .answers("DLQGrowing")
            .db_read(DB)
            .db_write(DB)
            .rpc(RPC, "eth_blockNumber")
            .http(ADMIN, &format!("POST {REPLAY}"))
            .notify(INCIDENTS)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let threshold = alert
            .annotation("threshold")
            .and_then(|t| t.parse().ok())
            .unwrap_or(DEFAULT_THRESHOLD);
        let (items, rpc) = step("Diagnosis", || -> Result<_> {
            let items = db::query(DB, OPEN_ITEMS, params![])?
                .iter()
                .map(|row| -> Result<Item> {
                    Ok(Item {
                        id: row.get("id")?,
                        last_error: row.get("last_error")?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let rpc = rpc::call::<String>(RPC, "eth_blockNumber", ()).map_err(|e| e.message());
            Ok((items, rpc))
        })?;
        let mut by_class: BTreeMap<Class, Vec<&Item>> = BTreeMap::new();
        for item in &items {
            by_class
                .entry(classify(&item.last_error))
                .or_default()
                .push(item);
        }
        let count = |class| by_class.get(&class).map_or(0, Vec::len) as i64;
        let base = |summary: String| {
            Outcome::new(summary)
                .severity("CRITICAL")
                .field("dlq_depth", items.len() as i64)
                .field("safe_to_retry", count(Class::Retry))
                .field("permanent", count(Class::Permanent))
                .field("wait_for_fix", count(Class::WaitForFix))
                .field("unknown", count(Class::Unknown))
                .field("rpc_up", rpc.is_ok())
        };
        if items.len() <= threshold {
            return Ok(base(format!(
                "{} item(s) in the DLQ, not over {threshold}: the auto-retry is draining it",
                items.len()
            ))
            .severity("WARNING"));
        }
        step("Remediation", || -> Result<Outcome> {
            let mut checklist = Vec::new();
            let mut replayed = 0i64;
            let mut marked = 0u64;
            // Permanent failures do not depend on the RPC.
            let mut permanent_errors: Vec<&str> = by_class
                .get(&Class::Permanent)
                .map(|items| items.iter().map(|i| i.last_error.as_str()).collect())
                .unwrap_or_default();
            permanent_errors.sort();
            permanent_errors.dedup();
            for error in permanent_errors {
                let reason = format!(
                    "FiatRails runbook, Dead-Letter Queue Processing: `{error}` is permanent; mark those items failed"
                );
                match db::execute(DB, MARK_FAILED, params![error], &reason) {
                    Ok(n) => marked += n,
                    Err(e) if e.is_denied() => checklist.push(format!(
                        "Marking `{error}` items failed was refused ({})",
                        e.message()
                    )),
                    Err(e) => return Err(e),
                }
            }
            if marked > 0 {
                checklist.push("Notify the users no longer compliant, and refund their intents (refundIntent, operator key)".to_owned());
            }
            let retry: Vec<String> = by_class
                .get(&Class::Retry)
                .map(|items| items.iter().map(|i| i.id.clone()).collect())
                .unwrap_or_default();
            match (&rpc, retry.is_empty()) {
                (Err(e), _) => checklist.insert(
                    0,
                    format!("Fix the RPC first (it does not answer: {e}; see HighRPCErrorRate), then replay the {} safe item(s)", retry.len()),
                ),
                (Ok(_), true) => {}
                (Ok(block), false) => {
                    let reason = format!(
                        "FiatRails runbook, DLQGrowing remediation 3 / bulk replay: {} item(s) failed on RPC or nonce errors and the RPC answers again (block {block}); replay them",
                        retry.len()
                    );
                    let body = serde_json::json!({ "item_ids": retry });
                    match http::post(ADMIN, REPLAY, &body, &reason) {
                        Ok(answer) if answer.ok() => replayed = retry.len() as i64,
                        Ok(answer) => checklist.push(format!("The bulk replay answered {}: replay by hand (node scripts/replay-dlq.js)", answer.status)),
                        Err(e) if e.is_denied() => checklist.push(format!("The bulk replay was refused ({})", e.message())),
                        Err(e) => return Err(e),
                    }
                }
            }
            if count(Class::WaitForFix) > 0 {
                checklist.push(format!(
                    "{} item(s) hit a contract bug: they wait for the upgrade; check the intent status on-chain (getIntentStatus) before any replay",
                    count(Class::WaitForFix)
                ));
            }
            if count(Class::Unknown) > 0 {
                checklist.push(format!(
                    "{} item(s) with an unknown error: inspect them by hand",
                    count(Class::Unknown)
                ));
            }
            checklist.push(
                "Watch the DLQ depth for the next hour; the auto-retry runs every 10 minutes"
                    .to_owned(),
            );
            let summary = format!(
                "{} DLQ item(s): {} safe to retry ({}), {} permanent (marked failed: {marked}), {} waiting for a contract fix, {} unknown",
                items.len(),
                retry.len(),
                // What happened to them, from the replay's own result.
                match (&rpc, retry.is_empty(), replayed > 0) {
                    (Err(_), _, _) => "held: the RPC is down",
                    (Ok(_), true, _) => "none to replay",
                    (Ok(_), false, true) => "replayed",
                    (Ok(_), false, false) => "NOT replayed",
                },
                count(Class::Permanent),
                count(Class::WaitForFix),
                count(Class::Unknown)
            );
            pager::notify(
                INCIDENTS,
                &format!("CRITICAL DLQGrowing (alert {}): {summary}", alert.name),
            )?;
            let mut outcome = base(summary)
                .field("replayed", replayed)
                .field("marked_failed", marked as i64);
            for item in checklist {
                outcome = outcome.todo(item);
            }
            Ok(outcome)
        })
    }
}

stepgate_sdk::playbook!(Dlq);
