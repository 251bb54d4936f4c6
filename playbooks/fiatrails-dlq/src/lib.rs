//! FiatRails: DLQGrowing (CRITICAL: the DLQ has > 10 items for 5+ min).
//!
//! Codifies the runbook's alert response and its "Dead-Letter Queue
//! Processing" section:
//!
//! - **Diagnosis**: read the DLQ items (with each intent's user); which RPC
//!   provider does the API use now (`FIATRAILS_RPC_PROVIDER`, set by the
//!   HighRPCErrorRate failover), and does it answer (`eth_blockNumber`)?
//! - **Classify** each item by its last error: RPC down or a nonce issue →
//!   safe to retry; user not compliant → re-checked (`isCompliant` on the
//!   UserRegistry: KYC attestations lag, so a user refused an hour ago may
//!   be compliant now); a contract bug → wait for the fix.
//! - **Remediation**: the incident channel is told first. While the RPC is
//!   down nothing is replayed and nobody is marked failed (the re-check
//!   needs it). Otherwise the safe items and the users compliant again are
//!   replayed in one bulk replay (the admin API's `replay-dlq`, approved),
//!   and the items of users still not compliant are marked failed (one
//!   approved database write, by item id).
//!
//! The UserRegistry's address comes from the alert's `user_registry`
//! label; without it no item is marked failed (a human re-checks).

use std::collections::BTreeMap;

use stepgate_sdk::prelude::*;

const DB: &str = "fiatrails";
const PRIMARY: &str = "fiatrails_rpc";
const FALLBACK: &str = "fiatrails_rpc_fallback";
/// Which provider the API uses: unset or `primary`, or `fallback`.
const PROVIDER: &str = "FIATRAILS_RPC_PROVIDER";
const ADMIN: &str = "fiatrails_admin";
const REPLAY: &str = "/admin/dlq/replay";
const INCIDENTS: &str = "fiatrails-incidents";
/// `isCompliant(address)` on the UserRegistry.
const IS_COMPLIANT: &str = "0xa200e5d0";

const OPEN_ITEMS: &str = "SELECT d.id, d.last_error, m.user_address FROM dlq_items d \
     LEFT JOIN mint_intents m ON m.intent_id = d.intent_id \
     WHERE d.status = 'open' ORDER BY d.created_at LIMIT 500";
/// `$1`: the ids, comma-separated (one statement, one approval).
const MARK_FAILED: &str = "UPDATE dlq_items SET status = 'failed' \
     WHERE status = 'open' AND id = ANY(string_to_array($1, ','))";

/// The alert's threshold (items) unless it says otherwise.
const DEFAULT_THRESHOLD: u64 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// RPC was down, or a nonce issue since resolved: safe to retry.
    Retry,
    /// The user was not compliant: re-checked before anything is done.
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
    user: Option<String>,
}

/// The provider the API uses now, and whether it answers (its block).
struct Rpc {
    endpoint: &'static str,
    block: std::result::Result<String, String>,
    /// Why the provider in use is not known for sure, if it is not.
    unsure: Option<String>,
}

impl Rpc {
    fn up(&self) -> bool {
        self.block.is_ok()
    }
}

fn probe() -> Rpc {
    let (endpoint, unsure) = match flags::get(PROVIDER) {
        Ok(Some(p)) if p == "fallback" => (FALLBACK, None),
        Ok(None) => (PRIMARY, None),
        Ok(Some(p)) if p == "primary" => (PRIMARY, None),
        Ok(Some(p)) => (
            PRIMARY,
            Some(format!("{PROVIDER} is `{p}`, neither primary nor fallback")),
        ),
        Err(e) => (
            PRIMARY,
            Some(format!("{PROVIDER} could not be read ({})", e.message())),
        ),
    };
    let block = rpc::call::<String>(endpoint, "eth_blockNumber", ()).map_err(|e| e.message());
    Rpc {
        endpoint,
        block,
        unsure,
    }
}

/// Whether `user` is compliant now, as the UserRegistry says.
fn compliant(rpc: &Rpc, registry: &str, user: &str) -> std::result::Result<bool, String> {
    let hex = user.strip_prefix("0x").unwrap_or(user);
    if hex.len() != 40 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("`{user}` is not an address"));
    }
    let call = serde_json::json!({ "to": registry, "data": format!("{IS_COMPLIANT}{:0>64}", hex.to_ascii_lowercase()) });
    let word: String =
        rpc::call(rpc.endpoint, "eth_call", (call, "latest")).map_err(|e| e.message())?;
    // Exactly one 32-byte word, 0 or 1: an empty `0x` (no contract at the
    // address: a wrong label or network) is not a "no".
    let digits = word.strip_prefix("0x").unwrap_or("");
    if digits.len() != 64 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "isCompliant answered `{word}`, not one 32-byte word (is `user_registry` the UserRegistry on this network?)"
        ));
    }
    match digits.trim_start_matches('0') {
        "" => Ok(false),
        "1" => Ok(true),
        _ => Err(format!("isCompliant answered `{word}`, not a boolean")),
    }
}

/// The UserRegistry from the alert's `user_registry` label.
fn registry(alert: &Alert) -> std::result::Result<String, String> {
    let value = alert.label("user_registry").ok_or(
        "the alert has no `user_registry` label (add the UserRegistry's address to the alert rule)",
    )?;
    let hex = value.strip_prefix("0x").unwrap_or("");
    if hex.len() == 40 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(format!("`user_registry` = `{value}` is not an address"))
    }
}

struct Dlq;

impl Playbook for Dlq {
    fn describe() -> Description {
        Description::new("fiatrails-dlq", "1.0.0")
            .summary(
                "FiatRails DLQGrowing: classifies the dead-letter items by their last error, \
                 re-checks the compliance of users refused as not compliant, replays the safe ones \
                 in one approved bulk replay once the RPC provider the API uses answers, marks the \
                 users still not compliant failed, and leaves contract bugs for the fix.",
            )
            .answers("DLQGrowing")
            .db_read(DB)
            .db_write(DB)
            .flag_read(PROVIDER)
            .rpc(PRIMARY, "eth_blockNumber")
            .rpc(PRIMARY, "eth_call")
            .rpc(FALLBACK, "eth_blockNumber")
            .rpc(FALLBACK, "eth_call")
            .http(ADMIN, &format!("POST {REPLAY}"))
            .notify(INCIDENTS)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let threshold: u64 = alert
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
                        user: row.get("user_address")?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((items, probe()))
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
                .field("rpc_up", rpc.up())
                .field("rpc_provider", rpc.endpoint)
        };
        if items.len() as u64 <= threshold {
            return Ok(base(format!(
                "{} item(s) in the DLQ, not over {threshold}: the auto-retry is draining it",
                items.len()
            ))
            .severity("WARNING"));
        }
        let mut checklist = Vec::new();
        if let Some(why) = &rpc.unsure {
            checklist.push(format!(
                "Which RPC provider the API uses is not known ({why}); stepgate probed {}",
                rpc.endpoint
            ));
        }
        let Rechecked {
            retry,
            failed,
            again,
            held,
        } = step("Re-check compliance", || {
            recheck(&alert, &rpc, &by_class, &mut checklist)
        });
        step("Remediation", || -> Result<Outcome> {
            if rpc.up() && (!retry.is_empty() || !failed.is_empty()) {
                // The humans first: both writes wait for an approver.
                let mut asks = Vec::new();
                if !retry.is_empty() {
                    asks.push(format!("replay {} item(s)", retry.len()));
                }
                if !failed.is_empty() {
                    asks.push(format!(
                        "mark {} failed (users still not compliant)",
                        failed.len()
                    ));
                }
                let told = pager::notify(
                    INCIDENTS,
                    &format!(
                        "CRITICAL DLQGrowing (alert {}): stepgate asks an approver to {}; decide in stepgate now",
                        alert.name,
                        asks.join(" and ")
                    ),
                );
                if let Err(e) = told {
                    checklist.push(format!(
                        "{INCIDENTS} was NOT told before the approvals ({}): tell them",
                        e.message()
                    ));
                }
            }
            let marked = if failed.is_empty() {
                None
            } else {
                let reason = format!(
                    "FiatRails runbook, Dead-Letter Queue Processing: {} item(s) failed as `User not compliant` and the UserRegistry still says not compliant; mark them failed",
                    failed.len()
                );
                let result = db::execute(DB, MARK_FAILED, params![failed.join(",")], &reason);
                let fate = Fate::of(&result);
                // The rows it changed: an item the auto-retry resolved while
                // the approval waited is no longer open.
                let rows = result.unwrap_or(0);
                if let Some(why) = fate.why_not() {
                    checklist.push(format!(
                        "Marking {} failed was not done ({why}): do it by hand",
                        failed.join(", ")
                    ));
                } else {
                    if rows < failed.len() as u64 {
                        checklist.push(format!(
                            "Only {rows} of {} item(s) were still open to mark failed: check the others' status",
                            failed.len()
                        ));
                    }
                    checklist.push("Notify the users no longer compliant, and refund their intents (refundIntent, operator key)".to_owned());
                }
                Some((fate, rows))
            };
            let replayed = match (rpc.up(), retry.is_empty()) {
                (false, _) => {
                    checklist.insert(
                        0,
                        format!(
                            "Fix the RPC first ({} does not answer: {}; see HighRPCErrorRate), then replay the {} safe item(s) and re-check the {} not compliant",
                            rpc.endpoint,
                            rpc.block.as_ref().err().map_or("", String::as_str),
                            retry.len(),
                            count(Class::Permanent)
                        ),
                    );
                    None
                }
                (true, true) => None,
                (true, false) => {
                    let reason = format!(
                        "FiatRails runbook, DLQGrowing remediation 3 / bulk replay: {} item(s) failed on RPC or nonce errors or are compliant again, and {} answers (block {}); replay them",
                        retry.len(),
                        rpc.endpoint,
                        rpc.block.as_ref().map_or("?", String::as_str)
                    );
                    let body = serde_json::json!({ "item_ids": retry });
                    let fate = Fate::of_http(&http::post(ADMIN, REPLAY, &body, &reason));
                    if let Some(why) = fate.why_not() {
                        checklist.push(format!(
                            "The bulk replay was not done ({why}): replay by hand (node scripts/replay-dlq.js)"
                        ));
                    }
                    Some(fate)
                }
            };
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
            // What was done, from each write's own result.
            let replay_said = match (&replayed, rpc.up()) {
                (Some(fate), _) => fate.say("replayed"),
                (None, false) => "held: the RPC is down".to_owned(),
                (None, true) => "nothing to send".to_owned(),
            };
            let marked_said = match &marked {
                Some((fate, rows)) if fate.passed() && *rows < failed.len() as u64 => {
                    format!("only {rows} {}", fate.say("marked failed"))
                }
                Some((fate, _)) => fate.say("marked failed"),
                None => "none marked failed".to_owned(),
            };
            let summary = format!(
                "{} DLQ item(s): {} to replay, {replay_said}; {} refused as not compliant: {again} compliant again, {held} not re-checked, {} still not, {marked_said}; {} waiting for a contract fix; {} unknown",
                items.len(),
                retry.len(),
                count(Class::Permanent),
                failed.len(),
                count(Class::WaitForFix),
                count(Class::Unknown)
            );
            pager::notify_or_note(
                INCIDENTS,
                &format!("CRITICAL DLQGrowing (alert {}): {summary}", alert.name),
                &mut checklist,
            );
            // Counts of what passed: made, or planned in a dry run.
            let passed = |fate: &Option<Fate>, n: usize| match fate {
                Some(fate) if fate.passed() => n as i64,
                _ => 0,
            };
            let mut outcome = base(summary)
                .field("replayed", passed(&replayed, retry.len()))
                .field(
                    "marked_failed",
                    match &marked {
                        Some((fate, rows)) if fate.passed() => *rows as i64,
                        _ => 0,
                    },
                )
                .field("compliant_again", again as i64);
            for item in checklist {
                outcome = outcome.todo(item);
            }
            Ok(outcome)
        })
    }
}

/// The compliance re-check's result.
#[derive(Default)]
struct Rechecked {
    /// Ids to replay: safe to retry, and users compliant again.
    retry: Vec<String>,
    /// Ids to mark failed: the users are still not compliant.
    failed: Vec<String>,
    /// Users compliant again (their items are in `retry`).
    again: usize,
    /// Items not re-checked: left open, on the checklist.
    held: usize,
}

/// Re-checks every item refused as not compliant: KYC attestations lag,
/// so the refusal may no longer hold. Nothing is marked failed without a
/// fresh `false` from the UserRegistry.
fn recheck(
    alert: &Alert,
    rpc: &Rpc,
    by_class: &BTreeMap<Class, Vec<&Item>>,
    checklist: &mut Vec<String>,
) -> Rechecked {
    let mut out = Rechecked {
        retry: by_class
            .get(&Class::Retry)
            .map(|items| items.iter().map(|i| i.id.clone()).collect())
            .unwrap_or_default(),
        ..Rechecked::default()
    };
    let refused = by_class.get(&Class::Permanent).cloned().unwrap_or_default();
    if refused.is_empty() {
        return out;
    }
    let registry = match (rpc.up(), registry(alert)) {
        (false, _) => {
            out.held = refused.len();
            return out;
        }
        (true, Err(why)) => {
            checklist.push(format!(
                "{} item(s) failed as not compliant and were NOT re-checked: {why}; re-check with isCompliant(address) before marking them failed",
                refused.len()
            ));
            out.held = refused.len();
            return out;
        }
        (true, Ok(registry)) => registry,
    };
    for item in refused {
        let answer = match &item.user {
            // The ids are marked failed as one comma-separated list.
            _ if item.id.contains(',') => Err("its id contains a comma".to_owned()),
            Some(user) => compliant(rpc, &registry, user),
            None => Err("its intent has no user address".to_owned()),
        };
        match answer {
            Ok(true) => {
                out.again += 1;
                out.retry.push(item.id.clone());
            }
            Ok(false) => out.failed.push(item.id.clone()),
            Err(why) => {
                out.held += 1;
                checklist.push(format!(
                    "{}: compliance NOT re-checked ({why}); check isCompliant by hand before marking it failed",
                    item.id
                ));
            }
        }
    }
    out
}

stepgate_sdk::playbook!(Dlq);
