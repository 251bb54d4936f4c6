//! Plaza: resolver-key compromise (contract mode), SEV-0.
//!
//! Codifies the runbook section "Resolver-key compromise (contract mode)":
//!
//! - **Triage**: inventory the affected orders. The escrow's `Released`
//!   events of the last [`LOOKBACK_BLOCKS`] blocks (`eth_getLogs`) are
//!   cross-referenced with the releases Plaza's resolver service recorded
//!   (`contract_releases`): a release with no record, or with another
//!   recipient or amount, is unauthorized. Their sum bounds the customer
//!   impact (made whole from Plaza reserves).
//! - **Escalation**: SEV-0 pages the CEO and on-call and tells the incident
//!   channel, with the inventory and the exact transactions for the cold
//!   multisig. An inventory that finds nothing does not stand the alert
//!   down (the records it is held against are Plaza's own): still SEV-0.
//! - Pausing the contract and rotating the resolver (`pause()`,
//!   `setResolver(new)`, then `unpause()` once verified) are signed by the
//!   cold multisig's key holders, which stepgate does not hold: they stay
//!   on the checklist, with their calldata.
//!
//! The escrow's address comes from the alert's `escrow` label: no address
//! is built in.

use stepgate_sdk::prelude::*;

const DB: &str = "plaza";
const RPC: &str = "base";
const CEO: &str = "ceo";
const ONCALL: &str = "plaza-oncall";
const INCIDENT: &str = "incident";

/// How far back the inventory looks: 24 h of Base blocks (2 s each).
const LOOKBACK_BLOCKS: i64 = 43_200;

/// keccak256("Released(bytes32,address,uint256)"): PlazaEscrow's release
/// event, order id and recipient indexed, the amount in its data.
const RELEASED_EVENT: &str = "0xc8fa66dff4b9073528c3f1bf21a8dc9a18fdf09847e88e96188bc953aef519f0";
/// `pause()` and `setResolver(address)`, for the multisig's proposal.
const PAUSE: &str = "0x8456cb59";
const SET_RESOLVER: &str = "0x4e543b26";

/// The releases Plaza's resolver service made on purpose.
const EXPECTED: &str =
    "SELECT order_id, recipient, amount FROM contract_releases WHERE escrow = $1";

/// One `Released` event.
struct Release {
    order: String,
    to: String,
    amount: i128,
    block: String,
}

struct ResolverKeyCompromise;

/// Micro-USDC as USDC.
fn usdc(micro: i128) -> String {
    from_units(micro, 6)
        .map(|d| d.to_string())
        .unwrap_or_else(|_| format!("{micro} micro-USDC"))
}

fn hex_word(text: &str) -> Option<&str> {
    let hex = text.strip_prefix("0x")?;
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(hex)
}

/// A `Released` log as the node returns it; `None` for a log that is not
/// one (a hostile or broken node is not believed).
fn release(log: &serde_json::Value) -> Option<Release> {
    let topics = log.get("topics")?.as_array()?;
    let order = hex_word(topics.get(1)?.as_str()?)?;
    let to = hex_word(topics.get(2)?.as_str()?)?;
    if !to.starts_with("000000000000000000000000") {
        return None;
    }
    let data = hex_word(log.get("data")?.as_str()?)?;
    // Amounts of 2^64 micro-USDC and more are no release Plaza could make
    // (and keep every sum of them in range).
    if data[..48].chars().any(|c| c != '0') {
        return None;
    }
    let amount = i128::from(u64::from_str_radix(&data[48..], 16).ok()?);
    Some(Release {
        order: format!("0x{}", order.to_ascii_lowercase()),
        to: format!("0x{}", to[24..].to_ascii_lowercase()),
        amount,
        block: log.get("blockNumber")?.as_str()?.to_owned(),
    })
}

/// The escrow's releases of the last `lookback` blocks.
fn recent_releases(escrow: &str, lookback: i64) -> Result<Vec<Release>> {
    let head: String = rpc::call(RPC, "eth_blockNumber", ())?;
    let head = i64::try_from(rpc::quantity(&head)?)
        .map_err(|_| Error::failed(format!("eth_blockNumber answered `{head}`")))?;
    let from = head.saturating_sub(lookback).max(0);
    let logs: Vec<serde_json::Value> = rpc::call(
        RPC,
        "eth_getLogs",
        (serde_json::json!({
            "address": escrow,
            "topics": [RELEASED_EVENT],
            "fromBlock": format!("0x{from:x}"),
            "toBlock": "latest",
        }),),
    )?;
    logs.iter()
        .map(|log| {
            release(log).ok_or_else(|| {
                Error::failed(format!(
                    "the node returned a log that is no Released event: {log}"
                ))
            })
        })
        .collect()
}

/// Plaza's recorded releases on `escrow`: (order id, recipient, amount).
fn expected_releases(escrow: &str) -> Result<Vec<(String, String, i128)>> {
    db::query(DB, EXPECTED, params![escrow])?
        .iter()
        .map(|row| {
            Ok((
                row.get::<String>("order_id")?.to_ascii_lowercase(),
                row.get::<String>("recipient")?.to_ascii_lowercase(),
                i128::from(row.get::<i64>("amount")?),
            ))
        })
        .collect()
}

impl Playbook for ResolverKeyCompromise {
    fn describe() -> Description {
        Description::new("plaza-resolver-key-compromise", "1.0.0")
            .summary(
                "Plaza resolver-key compromise (SEV-0): inventories the escrow's releases of the last 24 h \
                 against the releases Plaza made, pages the CEO and the incident channel with the \
                 unauthorized ones and their sum; pausing the contract and rotating the resolver stay \
                 with the cold multisig's key holders.",
            )
            .answers("UnauthorizedResolverRelease")
            .db_read(DB)
            .rpc(RPC, "eth_blockNumber")
            .rpc(RPC, "eth_getLogs")
            .page(CEO)
            .page(ONCALL)
            .notify(INCIDENT)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let escrow = alert.address("escrow")?;
        let lookback = alert.setting("lookback_blocks", LOOKBACK_BLOCKS)?;
        let inventory = step("Triage: inventory the releases", || -> Result<_> {
            let releases = recent_releases(&escrow, lookback)?;
            let expected = expected_releases(&escrow)?;
            Ok(releases
                .into_iter()
                .filter(|r| {
                    !expected
                        .iter()
                        .any(|(o, to, a)| *o == r.order && *to == r.to && *a == r.amount)
                })
                .collect::<Vec<_>>())
        });
        step("Escalate", || -> Result<Outcome> {
            let mut checklist = Vec::new();
            let multisig = [
                format!(
                    "Pause the escrow from the cold multisig: {escrow} `pause()` (calldata {PAUSE})"
                ),
                format!(
                    "Rotate the resolver from the cold multisig: {escrow} `setResolver(new_address)` (selector {SET_RESOLVER}); verify it, then unpause"
                ),
            ];
            let (severity, summary, details) = match &inventory {
                Err(e) => (
                    "SEV-0",
                    format!(
                        "Resolver-key compromise on {escrow}: the release inventory failed ({}); treat every recent release as suspect",
                        e.message()
                    ),
                    "inventory by hand: the escrow's Released events against Plaza's expected releases".to_owned(),
                ),
                // The alert says unauthorized calls were seen; an inventory
                // that finds none does not clear it (the records it is held
                // against are Plaza's own): SEV-0 until a human does.
                Ok(unauthorized) if unauthorized.is_empty() => (
                    "SEV-0",
                    format!(
                        "Resolver-key compromise alert on {escrow}: every Released event of the last {lookback} blocks matches a release Plaza recorded; the alert stands until a human clears it"
                    ),
                    "no unauthorized release found in the inventory: confirm the alert's source (the release monitor, an outside report) before standing down".to_owned(),
                ),
                Ok(unauthorized) => {
                    let total: i128 = unauthorized.iter().map(|r| r.amount).sum();
                    (
                        "SEV-0",
                        format!(
                            "Resolver-key compromise on {escrow}: {} unauthorized release(s), {} USDC",
                            unauthorized.len(),
                            usdc(total)
                        ),
                        unauthorized
                            .iter()
                            .map(|r| format!("order {} → {} {} USDC (block {})", r.order, r.to, usdc(r.amount), r.block))
                            .collect::<Vec<_>>()
                            .join("; "),
                    )
                }
            };
            // SEV-0: all hands, the CEO and on-call.
            for target in [CEO, ONCALL] {
                pager::page_or_note(
                    target,
                    Severity::Critical,
                    &format!("{severity} {summary}: the cold multisig must pause the escrow now"),
                    &format!("alert {}: {details}", alert.name),
                    &mut checklist,
                );
            }
            pager::notify_or_note(
                INCIDENT,
                &format!("{severity} {summary}. {details}"),
                &mut checklist,
            );
            checklist.extend(multisig);
            if let Some(unauthorized) = inventory.as_ref().ok().filter(|u| !u.is_empty()) {
                let total: i128 = unauthorized.iter().map(|r| r.amount).sum();
                checklist.push(format!(
                    "Make whole the {} affected order(s) from Plaza reserves: {} USDC in all",
                    unauthorized.len(),
                    usdc(total)
                ));
            }
            checklist.push("Resume only after the new resolver is in place and verified; postmortem (public if customers lost funds)".to_owned());
            let mut outcome = Outcome::new(summary)
                .severity(severity)
                .field("escrow", escrow.as_str());
            if let Ok(unauthorized) = &inventory {
                let total: i128 = unauthorized.iter().map(|r| r.amount).sum();
                outcome = outcome
                    .field("unauthorized_releases", unauthorized.len() as i64)
                    .field("unauthorized_usdc", usdc(total))
                    .field(
                        "orders",
                        unauthorized
                            .iter()
                            .map(|r| r.order.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                    );
            }
            for item in checklist {
                outcome = outcome.todo(item);
            }
            Ok(outcome)
        })
    }
}

stepgate_sdk::playbook!(ResolverKeyCompromise);
