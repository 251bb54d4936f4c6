//! loa-finn: treasury compromise (unauthorized USDC transfers from the
//! treasury address).
//!
//! Codifies runbook section 1, "Treasury Compromise":
//!
//! - **Immediate actions**: freeze mints (`credits` off) and disable x402
//!   (`x402` off) through the feature-flag admin API: writes two approvers
//!   decide (the gravest action in the runbook); audit the recent mints:
//!   the WAL's `credit_mint` entries of the last 24 h, and who got them.
//! - Rotating the treasury address (SSM parameter, redeploy, x402 quote
//!   cache) and the recovery (verify the new address, re-enable flags one at
//!   a time, watch for an hour) stay with humans: the outcome's checklist.
//!
//! The loa-finn runbook assigns no severity levels; the outcome says
//! CRITICAL.

use stepgate_sdk::prelude::*;

const DB: &str = "loa_finn";
const ADMIN: &str = "loa_admin";
const FLAGS: &str = "/api/v1/admin/feature-flags";
const ONCALL: &str = "loa-oncall";

/// Step 4: the WAL's credit mints of the last 24 h, in all and by account.
const MINTS_24H: &str = "SELECT count(*) AS mints, coalesce(sum(amount_micro), 0)::bigint AS minted_micro, \
     count(DISTINCT account_id) AS accounts FROM wal_entries \
     WHERE event_type = 'credit_mint' AND created_at > now() - interval '24h'";
const TOP_MINTERS: &str = "SELECT account_id, count(*) AS mints, sum(amount_micro)::bigint AS minted_micro \
     FROM wal_entries WHERE event_type = 'credit_mint' AND created_at > now() - interval '24h' \
     GROUP BY 1 ORDER BY 3 DESC LIMIT 10";

/// Steps 1 and 2, in the runbook's order.
const FREEZE: [(&str, &str); 2] = [
    ("credits", "step 1, freeze mints: disable credit purchase"),
    ("x402", "step 2, disable x402: stop accepting new payments"),
];

struct TreasuryCompromise;

/// USDC micro-units as a decimal.
fn usdc(micro: i64) -> Decimal {
    Decimal::new(micro, 6)
}

impl Playbook for TreasuryCompromise {
    fn describe() -> Description {
        Description::new("loafinn-treasury-compromise", "1.0.0")
            .summary(
                "loa-finn runbook 1, treasury compromise: freezes mints (credits) and x402 through the \
                 feature-flag admin API (two approvers), audits the WAL's credit mints of the last \
                 24 h, and pages on-call; rotating the treasury address stays with humans.",
            )
            .answers("TreasuryUnauthorizedTransfer")
            .db_read(DB)
            .http(ADMIN, &format!("GET {FLAGS}"))
            .http(ADMIN, &format!("POST {FLAGS}"))
            .page(ONCALL)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let mut checklist = Vec::new();
        // The humans first: the freeze waits for two approvers.
        step("Tell on-call", || {
            let told = pager::page(
                ONCALL,
                Severity::Critical,
                "loa-finn treasury compromise: stepgate asks two approvers to freeze credit mints and x402",
                &format!(
                    "alert {}: approve or deny the freeze in stepgate now; a second page follows with what was frozen and the mint audit",
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
        let mut not_frozen: Vec<String> = Vec::new();
        let frozen = step("Immediate actions: freeze", || -> Result<Vec<String>> {
            let current = http::get(ADMIN, FLAGS);
            let mut frozen = Vec::new();
            for (flag, why) in FREEZE {
                let enabled = match &current {
                    Ok(answer) if answer.ok() => answer.body.get(flag).and_then(|v| v.as_bool()),
                    _ => None,
                };
                if enabled == Some(false) {
                    frozen.push(format!("{flag} (already off)"));
                    continue;
                }
                let reason = format!("loa-finn runbook, Treasury Compromise, {why}");
                let body = serde_json::json!({ "flag": flag, "enabled": false });
                match http::post(ADMIN, FLAGS, &body, &reason) {
                    Ok(answer) if answer.dry_run => {
                        frozen.push(format!("{flag} (dry run: planned)"))
                    }
                    Ok(answer) if answer.ok() => frozen.push(flag.to_owned()),
                    Ok(answer) => {
                        not_frozen.push(flag.to_owned());
                        checklist.push(format!(
                            "The flag API answered {} to `{flag}` off: disable it by hand (POST {FLAGS})",
                            answer.status
                        ))
                    }
                    Err(e) => {
                        not_frozen.push(flag.to_owned());
                        checklist.push(format!(
                            "`{flag}` is NOT off ({}): disable it by hand (POST {FLAGS})",
                            e.message()
                        ))
                    }
                }
            }
            Ok(frozen)
        })?;
        let audit = step("Immediate actions: audit recent mints", || -> Result<_> {
            let totals = db::query(DB, MINTS_24H, params![])?;
            let totals = totals.first()?;
            let (mints, minted, accounts): (i64, i64, i64) = (
                totals.get("mints")?,
                totals.get("minted_micro")?,
                totals.get("accounts")?,
            );
            let top = db::query(DB, TOP_MINTERS, params![])?
                .iter()
                .take(3)
                .map(|row| -> Result<String> {
                    Ok(format!(
                        "{} {} USDC in {} mint(s)",
                        row.get::<String>("account_id")?,
                        usdc(row.get("minted_micro")?),
                        row.get::<i64>("mints")?
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((mints, minted, accounts, top))
        });
        let audit_text = match &audit {
            Ok((mints, minted, accounts, top)) => format!(
                "{mints} credit mint(s) for {} USDC to {accounts} account(s) in 24 h; top: {}",
                usdc(*minted),
                top.join("; ")
            ),
            Err(e) => {
                checklist.push("Audit the WAL's credit_mint entries of the last 24 h by hand (the query failed)".into());
                format!("mint audit failed ({})", e.message())
            }
        };
        step("Escalate", || -> Result<Outcome> {
            let frozen_text = if frozen.is_empty() {
                "NOTHING".to_owned()
            } else {
                frozen.join(", ")
            };
            pager::page_or_note(
                ONCALL,
                Severity::Critical,
                &format!(
                    "loa-finn treasury compromise: {}, rotate the treasury address",
                    match (frozen.is_empty(), not_frozen.is_empty(), runbook::dry_run()) {
                        (true, _, _) => "NOTHING frozen",
                        (false, false, _) => "only partly frozen",
                        (false, true, true) =>
                            "freeze planned as listed (dry run, nothing written)",
                        (false, true, false) => "frozen as listed",
                    }
                ),
                &format!(
                    "alert {} ({}): frozen: {}{}. {audit_text}",
                    alert.name,
                    alert.fingerprint.as_deref().unwrap_or("no fingerprint"),
                    frozen_text,
                    if not_frozen.is_empty() {
                        String::new()
                    } else {
                        format!("; NOT frozen: {}", not_frozen.join(", "))
                    }
                ),
                &mut checklist,
            );
            checklist.extend([
                "Rotate the treasury address: update SSM /loa-finn/production/TREASURY_ADDRESS, redeploy the ECS service, restart or wait 60 s for the x402 quote cache".to_owned(),
                "Recovery: verify the new treasury address, re-enable the flags one at a time, monitor for 1 hour".to_owned(),
            ]);
            let mut outcome = Outcome::new(format!(
                "Treasury compromise{}: frozen {}{}; {audit_text}",
                if runbook::dry_run() {
                    " (dry run, nothing written)"
                } else {
                    ""
                },
                frozen_text,
                if not_frozen.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; NOT frozen: {} (refused or failed, see the checklist)",
                        not_frozen.join(", ")
                    )
                }
            ))
            .severity("CRITICAL")
            .field("frozen", frozen.join(","));
            if let Ok((mints, minted, accounts, _)) = &audit {
                outcome = outcome
                    .field("mints_24h", *mints)
                    .field("minted_usdc_24h", usdc(*minted))
                    .field("minting_accounts_24h", *accounts);
            }
            for item in checklist {
                outcome = outcome.todo(item);
            }
            Ok(outcome)
        })
    }
}

stepgate_sdk::playbook!(TreasuryCompromise);
