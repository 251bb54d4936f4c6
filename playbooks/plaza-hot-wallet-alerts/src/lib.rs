//! Plaza: the hot wallet's money alerts that are not a compromise, from the
//! alert table: `PayoutFailureRateHigh` (critical, on-call + CEO) and
//! `HotWalletAboveCap` (warning, #plaza-alerts). Each does the table's
//! "check first" and says what it found; neither writes anything.
//!
//! - **PayoutFailureRateHigh** (> 5% of payouts failed over 15 min): the
//!   failures of the window by cause, as the table lists them (Base RPC
//!   errors, signer cap saturation, nonce conflicts), whether the Base RPC
//!   providers answer, and how many of the hot wallet's transactions are
//!   stuck pending (its pending nonce ahead of its latest).
//! - **HotWalletAboveCap** (> 50,000 USDC): the balance, what escrow holds
//!   against it, the excess to sweep, and the mode-default threshold
//!   (`PLAZA_MODE_THRESHOLD_USD`) that routes orders to custodied mode.
//!
//! The sweep to cold storage is signed by the MPC signer, which stepgate
//! has no capability for: it is on the checklist with its amount.

use stepgate_sdk::prelude::*;

const DB: &str = "plaza";
const RPC: &str = "base";
const SECONDARY: &str = "base_secondary";
const ONCALL: &str = "plaza-oncall";
const CEO: &str = "ceo";
const ALERTS: &str = "plaza-alerts";

/// USDC on Base (the token's own, mainnet address) and `balanceOf(address)`.
const BASE_USDC: &str = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913";
const BALANCE_OF: &str = "0x70a08231";
/// The alert table's cap: 50,000 USDC, in micro-units.
const HOT_WALLET_CAP_USDC: i64 = 50_000;
/// The alert table's window for the payout failure rate.
const FAILURE_WINDOW_MINUTES: i64 = 15;

const PAYOUTS: &str = "SELECT state, error FROM payouts WHERE created_at >= $1";
const HELD: &str = "SELECT CAST(coalesce(sum(amount), 0) AS BIGINT) AS held FROM escrow_holds WHERE state = 'held'";

struct HotWalletAlerts;

/// A JSON-RPC quantity as a signed amount (a node's answer is hostile:
/// out of range is an error).
fn quantity(hex: &str) -> Result<i128> {
    i128::try_from(rpc::quantity(hex)?)
        .map_err(|_| Error::failed(format!("`{hex}` is out of range")))
}

/// Micro-USDC as USDC.
fn usdc(micro: i128) -> String {
    from_units(micro, 6)
        .map(|d| d.to_string())
        .unwrap_or_else(|_| format!("{micro} micro-USDC"))
}

/// The table's causes of a failed payout.
fn cause(error: &str) -> &'static str {
    let e = error.to_ascii_lowercase();
    if e.contains("nonce") || e.contains("replacement transaction") {
        "nonce conflicts"
    } else if e.contains("cap") || e.contains("rate limit") || e.contains("quota") {
        "signer cap saturation"
    } else if e.contains("rpc")
        || e.contains("timeout")
        || e.contains("502")
        || e.contains("503")
        || e.contains("connection")
    {
        "Base RPC errors"
    } else {
        "other"
    }
}

fn answers(endpoint: &str) -> bool {
    rpc::call::<String>(endpoint, "eth_blockNumber", ()).is_ok()
}

fn payout_failures(alert: &Alert, wallet: &str, checklist: &mut Vec<String>) -> Result<Outcome> {
    let window = alert.setting("window_minutes", FAILURE_WINDOW_MINUTES)?;
    let since = utc_text(runbook::now_millis().saturating_sub(window.saturating_mul(60_000)));
    let (summary, worst) = step(
        "Check first",
        || -> Result<(String, Option<&'static str>)> {
            // The payouts by cause; a database that does not answer must not
            // keep the page from going out.
            let counted = (|| -> Result<(i64, Vec<(&'static str, i64)>)> {
                let mut total = 0;
                let mut by_cause: Vec<(&'static str, i64)> = Vec::new();
                for row in db::query(DB, PAYOUTS, params![since.as_str()])?.iter() {
                    total += 1;
                    if row.get::<String>("state")? == "failed" {
                        let c = cause(&row.get::<String>("error").unwrap_or_default());
                        match by_cause.iter_mut().find(|(name, _)| *name == c) {
                            Some((_, n)) => *n += 1,
                            None => by_cause.push((c, 1)),
                        }
                    }
                }
                by_cause.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
                Ok((total, by_cause))
            })();
            let rpc_said = match (answers(RPC), answers(SECONDARY)) {
                (true, true) => "both Base RPC providers answer".to_owned(),
                (true, false) => "the secondary Base RPC provider does not answer".to_owned(),
                (false, true) => "the primary Base RPC provider does not answer".to_owned(),
                (false, false) => "NEITHER Base RPC provider answers".to_owned(),
            };
            let nonce = |tag: &str| -> Result<i128> {
                quantity(&rpc::call::<String>(
                    RPC,
                    "eth_getTransactionCount",
                    (wallet, tag),
                )?)
            };
            let stuck = match (nonce("pending"), nonce("latest")) {
                (Ok(p), Ok(l)) if p > l => {
                    format!("{} transaction(s) of the hot wallet stuck pending", p - l)
                }
                (Ok(_), Ok(_)) => "no transaction of the hot wallet is pending".to_owned(),
                _ => "the hot wallet's nonces are unknown".to_owned(),
            };
            let (total, by_cause) = match counted {
                Ok(counted) => counted,
                Err(e) => {
                    return Ok((
                        format!(
                            "the payouts could not be read ({}); {rpc_said}; {stuck}",
                            e.message()
                        ),
                        None,
                    ));
                }
            };
            let failed: i64 = by_cause.iter().map(|(_, n)| n).sum();
            let causes = by_cause
                .iter()
                .map(|(c, n)| format!("{c} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            Ok((
                format!(
                    "{failed} of {total} payout(s) failed in {window} min ({}); {rpc_said}; {stuck}",
                    if causes.is_empty() {
                        "no failure recorded".to_owned()
                    } else {
                        causes
                    }
                ),
                by_cause.first().map(|(c, _)| *c),
            ))
        },
    )?;
    match worst {
        Some("Base RPC errors") => checklist.push("Base RPC errors lead: run the RPC outage section (plaza-rpc-outage answers RpcErrorRateHigh)".to_owned()),
        Some("signer cap saturation") => checklist.push("Signer cap saturation leads: slow the payout worker or raise the MPC signer's cap (a human decision)".to_owned()),
        Some("nonce conflicts") => checklist.push("Nonce conflicts lead: find the stuck transaction and replace or cancel it with the same nonce (MPC signer)".to_owned()),
        _ => checklist.push("Read the payout worker's errors: the failures match none of the table's causes, or could not be read".to_owned()),
    }
    step("Page on-call and the CEO", || {
        for target in [ONCALL, CEO] {
            pager::page_or_note(
                target,
                Severity::Critical,
                &format!("Plaza {}: {summary}", alert.name),
                "critical: on-call + CEO (alert table)",
                checklist,
            );
        }
    });
    Ok(Outcome::new(format!("Payout failure rate high: {summary}")).severity("SEV-1"))
}

fn above_cap(alert: &Alert, wallet: &str, checklist: &mut Vec<String>) -> Result<Outcome> {
    let cap = i128::from(alert.setting("cap_usdc", HOT_WALLET_CAP_USDC)?) * 1_000_000;
    let (balance, held, threshold) = step("Check first", || -> Result<_> {
        let data = format!("{BALANCE_OF}{:0>64}", wallet.trim_start_matches("0x"));
        let balance = quantity(&rpc::call::<String>(
            RPC,
            "eth_call",
            (
                serde_json::json!({ "to": BASE_USDC, "data": data }),
                "latest",
            ),
        )?)?;
        let held = db::query(DB, HELD, params![])
            .and_then(|rows| rows.first()?.get::<i64>("held"))
            .ok();
        let threshold = flags::get("PLAZA_MODE_THRESHOLD_USD").ok().flatten();
        Ok((balance, held, threshold))
    })?;
    let summary = if balance > cap {
        format!(
            "Hot wallet {wallet} holds {} USDC, {} over the {} USDC cap{}; PLAZA_MODE_THRESHOLD_USD is {}",
            usdc(balance),
            usdc(balance - cap),
            usdc(cap),
            held.map(|h| format!(" (escrow holds {} of it)", usdc(i128::from(h))))
                .unwrap_or_default(),
            threshold.as_deref().unwrap_or("unset")
        )
    } else {
        format!(
            "Hot wallet {wallet} holds {} USDC, no longer over the {} USDC cap",
            usdc(balance),
            usdc(cap)
        )
    };
    if balance > cap {
        checklist.push(format!(
            "Sweep {} USDC to cold storage (MPC signer; stepgate has no signing capability), and check why the sweep cadence let it build up",
            usdc(balance - cap)
        ));
        checklist.push("Review PLAZA_MODE_THRESHOLD_USD: a lower threshold routes large orders to contract mode instead of the hot wallet".to_owned());
    }
    step("Tell #plaza-alerts", || {
        pager::notify_or_note(
            ALERTS,
            &format!("Plaza {}: {summary}", alert.name),
            checklist,
        )
    });
    Ok(Outcome::new(summary).severity(if balance > cap { "SEV-2" } else { "SEV-3" }))
}

impl Playbook for HotWalletAlerts {
    fn describe() -> Description {
        Description::new("plaza-hot-wallet-alerts", "1.0.0")
            .summary(
                "Plaza PayoutFailureRateHigh and HotWalletAboveCap: the failed payouts by cause, the RPC \
                 providers and stuck transactions (paging on-call and the CEO), or the balance over the cap \
                 and the sweep it needs (#plaza-alerts); writes nothing.",
            )
            .answers("PayoutFailureRateHigh")
            .answers("HotWalletAboveCap")
            .db_read(DB)
            .rpc(RPC, "eth_blockNumber")
            .rpc(RPC, "eth_getTransactionCount")
            .rpc(RPC, "eth_call")
            .rpc(SECONDARY, "eth_blockNumber")
            .flag_read("PLAZA_MODE_THRESHOLD_USD")
            .page(ONCALL)
            .page(CEO)
            .notify(ALERTS)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let wallet = alert.address("hot_wallet")?;
        let mut checklist = Vec::new();
        let outcome = match alert.name.as_str() {
            "HotWalletAboveCap" => above_cap(&alert, &wallet, &mut checklist)?,
            _ => payout_failures(&alert, &wallet, &mut checklist)?,
        };
        Ok(checklist
            .into_iter()
            .fold(outcome.field("hot_wallet", wallet.as_str()), Outcome::todo))
    }
}

stepgate_sdk::playbook!(HotWalletAlerts);
