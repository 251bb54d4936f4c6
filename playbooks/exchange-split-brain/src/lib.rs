//! Spot exchange: split brain suspected (SEV1).
//!
//! Codifies runbook §3.3:
//!
//! - **Signal**: duplicate seq, divergent state hashes from the standby, or
//!   conflicting leadership / fencing-token anomalies; the alert names the
//!   `symbol` (or symbols, comma-separated) and the engine `group`.
//! - **Immediate actions**: `HARD_HALT` the affected symbols (approved by
//!   two), then confirm only one leader holds the lease and the fencing
//!   token; evidence (WAL + lease logs) is preserved by humans.
//! - **Recovery** (checklist): the authoritative leader is the one with the
//!   highest durable seq and a valid fencing token; restart or replace the
//!   other; resume in `CANCEL_ONLY`, then NORMAL after validation.
//! - **Gate G1**: a stale-leader rejection (`FENCING_TOKEN`) means: verify
//!   the lease / token source before any manual recovery.

use exchange_controls::{Mode, ONCALL, set_mode, ticket};
use stepgate_sdk::prelude::*;

const DB: &str = "exchange";

const LEASES: &str = "SELECT node, fencing_token, durable_seq, (lease_until > now()) AS live \
     FROM engine_leases WHERE symbol_group = $1 ORDER BY fencing_token DESC";

struct SplitBrain;

struct Lease {
    node: String,
    token: i64,
    seq: i64,
    live: bool,
}

impl Playbook for SplitBrain {
    fn describe() -> Description {
        Description::new("exchange-split-brain", "1.0.0")
            .summary(
                "Spot exchange §3.3, split brain suspected (SEV1): HARD_HALTs the affected symbols (two \
                 approvers), reads the engine leases and fencing tokens, names the authoritative leader \
                 and pages on-call.",
            )
            .answers("SplitBrainSuspected")
            .db_read(DB)
            .http(exchange_controls::ADMIN, &format!("POST {}", exchange_controls::SYMBOL_MODE))
            .page(ONCALL)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let ticket = ticket(&alert);
        // A missing label is named to the humans, never a reason not to
        // page them: they halt by hand what the alert does not name.
        let symbols: Vec<String> = alert
            .label("symbol")
            .unwrap_or("")
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        let group = alert.label("group").unwrap_or("majors").to_owned();
        let signal = alert.label("reason").unwrap_or("duplicate seq").to_owned();
        let mut checklist = Vec::new();
        if symbols.is_empty() {
            checklist.push(
                "The alert names no symbol (`symbol` label): HARD_HALT the affected symbols by hand, now"
                    .to_owned(),
            );
        }
        // The humans first: the HARD_HALT waits for two approvers.
        step("Tell on-call", || {
            let told = pager::page(
                ONCALL,
                Severity::Critical,
                &format!(
                    "SEV1 spot exchange split brain suspected ({ticket}): {}",
                    if symbols.is_empty() {
                        "the alert names no symbol, HARD_HALT the affected ones by hand".to_owned()
                    } else {
                        format!(
                            "stepgate asks two approvers to HARD_HALT {}",
                            symbols.join(", ")
                        )
                    }
                ),
                &format!(
                    "alert {} ({signal}): approve or deny the HARD_HALT in stepgate now; a second page follows with the leases and the authoritative leader",
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
        let mut not_halted = Vec::new();
        let halted = step("Immediate 1: HARD_HALT", || {
            let mut halted = Vec::new();
            for symbol in &symbols {
                let reason = format!(
                    "Spot exchange runbook §3.3, immediate action 1: HARD_HALT {symbol}, split brain suspected ({signal})"
                );
                match set_mode(symbol, Mode::HardHalt, &reason, &ticket).why_not() {
                    None => halted.push(symbol.clone()),
                    Some(why) => {
                        not_halted.push(symbol.clone());
                        checklist.push(format!(
                            "{symbol} is NOT hard-halted ({why}): do it by hand, now"
                        ))
                    }
                }
            }
            halted
        });
        let leases = step(
            "Immediate 2: confirm one leader",
            || -> Result<Vec<Lease>> {
                db::query(DB, LEASES, params![group.as_str()])?
                    .iter()
                    .map(|r| {
                        Ok(Lease {
                            node: r.get("node")?,
                            token: r.get("fencing_token")?,
                            seq: r.get("durable_seq")?,
                            live: r.get("live")?,
                        })
                    })
                    .collect()
            },
        );
        step("Escalate", || -> Result<Outcome> {
            let (finding, confirmed, authoritative) = match &leases {
                Ok(leases) => {
                    let live: Vec<&Lease> = leases.iter().filter(|l| l.live).collect();
                    let best = authoritative(leases);
                    let text = leases
                        .iter()
                        .map(|l| {
                            format!(
                                "{} token {} seq {}{}",
                                l.node,
                                l.token,
                                l.seq,
                                if l.live { " LIVE" } else { "" }
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ");
                    (
                        format!("{} live lease(s) in group {group}: {text}", live.len()),
                        live.len() > 1,
                        best,
                    )
                }
                Err(e) => (
                    format!("the leases could not be read ({})", e.message()),
                    false,
                    None,
                ),
            };
            if signal.contains("FENCING_TOKEN") {
                checklist.insert(0, "Gate G1: a stale leader was rejected (FENCING_TOKEN): verify the lease/token source first, before any manual recovery".into());
            }
            match (&leases, confirmed, &authoritative) {
                (Err(_), _, _) => checklist.push(format!("Confirm by hand that only one leader of {group} holds the lease and the fencing token")),
                (Ok(_), true, Some(node)) => checklist.push(format!(
                    "Split brain confirmed: {node} has the highest durable seq and a valid fencing token; restart or replace the other node(s) and resync them from snapshot + WAL"
                )),
                (Ok(_), _, Some(node)) => checklist.push(format!("One live leader ({node}): find where the {signal} came from before resuming")),
                (Ok(leases), _, None) if leases.iter().any(|l| l.live) => checklist.push(format!(
                    "No live leader of {group} both holds the newest fencing token and has the highest durable seq: do NOT promote any node; verify the lease/token source, decide by hand from the WAL"
                )),
                (Ok(_), _, None) => checklist.push(format!("No live leader in {group}: recover leadership before resuming")),
            }
            checklist.extend([
                "Preserve the evidence: WAL + lease logs".to_owned(),
                "Resume in CANCEL_ONLY first, then NORMAL after validation".to_owned(),
                "Postmortem required (SEV1)".to_owned(),
            ]);
            pager::page_or_note(
                ONCALL,
                Severity::Critical,
                &format!(
                    "SEV1 spot exchange split brain {} ({ticket}): {}",
                    if confirmed { "CONFIRMED" } else { "suspected" },
                    hard_halted(&halted, &not_halted)
                ),
                &format!("alert {} ({signal}): {finding}", alert.name),
                &mut checklist,
            );
            let mut outcome = Outcome::new(format!(
                "Split brain {}: {finding}; {}",
                if confirmed {
                    "confirmed"
                } else {
                    "not confirmed"
                },
                hard_halted(&halted, &not_halted)
            ))
            .severity("SEV1")
            .field("hard_halted", halted.join(","))
            .field("split_brain_confirmed", confirmed)
            .field("authoritative_leader", authoritative.unwrap_or_default())
            .field("ticket", ticket.as_str());
            for item in checklist {
                outcome = outcome.todo(item);
            }
            Ok(outcome)
        })
    }
}

/// What the HARD_HALT step did, from the writes' results: halted (or
/// planned in a dry run), and not halted (refused or failed).
fn hard_halted(halted: &[String], not_halted: &[String]) -> String {
    let done = match (halted.is_empty(), runbook::dry_run()) {
        (true, _) => "NOTHING hard-halted".to_owned(),
        (false, true) => format!("would hard-halt {} (dry run)", halted.join(", ")),
        (false, false) => format!("{} hard-halted", halted.join(", ")),
    };
    if not_halted.is_empty() {
        done
    } else {
        format!(
            "{done}; NOT hard-halted: {} (refused or failed, see the checklist)",
            not_halted.join(", ")
        )
    }
}

/// The authoritative leader, as the runbook defines it: a live lease
/// with a valid fencing token (the newest issued, so the node has not
/// been fenced out) and the highest durable seq among live leases. A
/// stale leader (an older token), however far ahead its seq, is never
/// chosen; if no node meets both, there is none.
fn authoritative(leases: &[Lease]) -> Option<String> {
    let newest_token = leases.iter().map(|l| l.token).max()?;
    let highest_live_seq = leases.iter().filter(|l| l.live).map(|l| l.seq).max()?;
    let valid: Vec<&Lease> = leases
        .iter()
        .filter(|l| l.live && l.token == newest_token && l.seq == highest_live_seq)
        .collect();
    match valid.as_slice() {
        [one] => Some(one.node.clone()),
        _ => None,
    }
}

stepgate_sdk::playbook!(SplitBrain);
