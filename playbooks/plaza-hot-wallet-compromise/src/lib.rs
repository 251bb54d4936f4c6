//! Plaza: hot-wallet compromise, suspected (SEV-0).
//!
//! Codifies the Plaza runbook's "Hot-wallet compromise (suspected)":
//!
//! - **Symptom**: an unauthorized signing event in the MPC audit log, or an
//!   unexpected outflow from the hot wallet.
//! - **Triage**, as the runbook orders it: page the CEO first (SEV-0: all
//!   hands); pause the API (stop plaza-api through its admin endpoint, a
//!   write two approvers decide); pause the escrow contract if contract
//!   mode is in use: `PlazaEscrow.pause()` must come from the cold
//!   multisig, which the runbook keeps offline, so the playbook reads
//!   `paused()` and, if it is not paused, proposes the exact transaction to
//!   the key holders (checklist) instead of sending it; take a balance
//!   snapshot (ETH and USDC of the hot wallet); page the CEO again with
//!   what was done.
//! - A flag store that does not answer does not stop the run: contract
//!   mode is then taken as in use.
//! - Addresses come from the alert's labels (`hot_wallet`, `escrow`); there
//!   are no defaults.
//! - **Mitigation** (checklist): sweep the rest to cold through a fresh
//!   signer, rotate the MPC key, notify customers, file the report counsel
//!   directs; resume only after a full reconciliation and a forensic.

use stepgate_sdk::prelude::*;

const RPC: &str = "base";
const ADMIN: &str = "plaza_admin";
const STOP: &str = "/admin/api/stop";
const FLAG_CONTRACT_MODE: &str = "PLAZA_CONTRACT_MODE_ENABLED";
/// USDC on Base (the token's own, mainnet address).
const BASE_USDC: &str = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913";
/// `paused()`, `pause()`, `balanceOf(address)`.
const PAUSED: &str = "0x5c975abb";
const PAUSE: &str = "0x8456cb59";
const BALANCE_OF: &str = "0x70a08231";

struct HotWalletCompromise;

/// ETH (18 decimals) and USDC (6) of the hot wallet.
fn snapshot(wallet: &str) -> Result<(Decimal, Decimal)> {
    let wei = rpc::quantity(&rpc::call::<String>(
        RPC,
        "eth_getBalance",
        (wallet, "latest"),
    )?)?;
    let data = format!(
        "{BALANCE_OF}{:0>64}",
        wallet.trim_start_matches("0x").to_ascii_lowercase()
    );
    let usdc = rpc::quantity(&rpc::call::<String>(
        RPC,
        "eth_call",
        (
            serde_json::json!({ "to": BASE_USDC, "data": data }),
            "latest",
        ),
    )?)?;
    // A node's answer is hostile: a balance too large for a Decimal is an
    // error, never a panic or a wrapped number.
    let exact = |units: u128, scale: u32| -> Result<Decimal> {
        let units = i128::try_from(units)
            .map_err(|_| Error::failed(format!("a balance of {units} units is out of range")))?;
        Ok(Decimal::try_from_i128_with_scale(units, scale)?)
    };
    Ok((exact(wei, 18)?.normalize(), exact(usdc, 6)?))
}

impl Playbook for HotWalletCompromise {
    fn describe() -> Description {
        Description::new("plaza-hot-wallet-compromise", "1.0.0")
            .summary(
                "Plaza runbook \"Hot-wallet compromise (suspected)\" (SEV-0): pages the CEO, stops plaza-api \
                 (two approvers), reads whether the escrow is paused and proposes the pause to the cold \
                 multisig's key holders, snapshots the hot wallet's ETH and USDC, and pages the CEO again; \
                 the sweep, key rotation and customer notice stay with humans.",
            )
            .answers("HotWalletUnauthorizedSigning")
            .answers("HotWalletUnexpectedOutflow")
            .http(ADMIN, &format!("POST {STOP}"))
            .rpc(RPC, "eth_call")
            .rpc(RPC, "eth_getBalance")
            .flag_read(FLAG_CONTRACT_MODE)
            .page("ceo")
            .notify("incident")
    }

    fn run(alert: Alert) -> Result<Outcome> {
        // A missing label is named in the pages, never a reason not to page.
        let wallet = alert.address("hot_wallet");
        let wallet_text = match &wallet {
            Ok(wallet) => wallet.clone(),
            Err(e) => format!("an unknown hot wallet ({})", e.message()),
        };
        // Needed only if contract mode is in use; its absence is named there.
        let escrow = alert.address("escrow");
        let mut checklist = Vec::new();
        // The humans first: stopping the API waits for two approvers.
        step("Tell the CEO", || {
            let told = pager::page(
                "ceo",
                Severity::Critical,
                "SEV-0 Plaza hot-wallet compromise suspected: all hands; stepgate asks two approvers to stop plaza-api",
                &format!(
                    "alert {} on hot wallet {wallet_text}: approve or deny the API stop in stepgate now; the escrow pause goes to the cold multisig's key holders; a second page follows with what was done and the balance snapshot",
                    alert.name
                ),
            );
            if let Err(e) = told {
                checklist.push(format!(
                    "The CEO was NOT paged at the start ({}): call them",
                    e.message()
                ));
            }
        });
        let contract = step(
            "Triage 1: pause the contract (read; proposed to the cold multisig)",
            || -> Result<String> {
                match flags::get(FLAG_CONTRACT_MODE) {
                Ok(mode) if mode.as_deref() == Some("0") => {
                    return Ok("contract mode not in use".into());
                }
                Ok(_) => {}
                Err(e) => checklist.push(format!(
                    "{FLAG_CONTRACT_MODE} could not be read ({}): contract mode is taken as in use",
                    e.message()
                )),
            }
                let escrow = match &escrow {
                    Ok(escrow) => escrow,
                    Err(e) => {
                        checklist.push(format!(
                        "PlazaEscrow is NOT checked ({}): key holders check paused() and pause it from the cold multisig",
                        e.message()
                    ));
                        return Ok("NOT checked (no `escrow` label)".into());
                    }
                };
                let paused = rpc::call::<String>(
                    RPC,
                    "eth_call",
                    (
                        serde_json::json!({ "to": escrow, "data": PAUSED }),
                        "latest",
                    ),
                )
                .and_then(|w| rpc::quantity(&w));
                match paused {
                    Ok(1) => Ok("already paused".into()),
                    // The cold multisig is offline by design: the pause is
                    // proposed to its key holders, never sent from here.
                    known => {
                        let proposal = format!(
                            "Key holders: pause PlazaEscrow now from the cold multisig: to {escrow}, data {PAUSE} (pause()), then confirm paused() returns 1"
                        );
                        // At once, not behind the API stop's approval.
                        if let Err(e) = pager::notify(
                            "incident",
                            &format!("SEV-0 Plaza hot-wallet compromise: {proposal}"),
                        ) {
                            checklist.push(format!(
                            "#incident was NOT told of the escrow pause ({}): call the key holders",
                            e.message()
                        ));
                        }
                        checklist.insert(0, proposal);
                        Ok(match known {
                            Ok(_) => {
                                "NOT paused: pause proposed to the cold multisig's key holders"
                                    .into()
                            }
                            Err(e) => format!(
                                "paused() unreadable ({}): pause proposed to the cold multisig's key holders",
                                e.message()
                            ),
                        })
                    }
                }
            },
        )?;
        let api_stopped = step("Triage 2: pause the API", || {
            let reason = "Plaza runbook, Hot-wallet compromise, Triage: pause the API (systemctl stop plaza-api); new orders cannot place";
            let body = serde_json::json!({ "service": "plaza-api", "action": "stop" });
            let fate = Fate::of_http(&http::post(ADMIN, STOP, &body, reason));
            if let Some(why) = fate.why_not() {
                checklist.push(format!(
                    "plaza-api is NOT stopped ({why}): systemctl stop plaza-api"
                ));
            }
            fate
        });
        let balances = step("Triage 3: balance snapshot", || match &wallet {
            Ok(wallet) => snapshot(wallet),
            Err(e) => Err(e.clone()),
        });
        step("Escalate", || -> Result<Outcome> {
            let snap = match &balances {
                Ok((eth, usdc)) => format!("hot wallet {wallet_text}: {eth} ETH, {usdc} USDC"),
                Err(e) => {
                    checklist.push(format!("Take the balance snapshot by hand (cast balance <hot wallet>; balanceOf on USDC): {}", e.message()));
                    format!(
                        "hot wallet {wallet_text}: snapshot failed ({})",
                        e.message()
                    )
                }
            };
            let details = format!(
                "alert {} ({}): plaza-api {}; escrow: {contract}; {snap}",
                alert.name,
                alert.fingerprint.as_deref().unwrap_or("no fingerprint"),
                api_stopped.say("stopped")
            );
            pager::page_or_note(
                "ceo",
                Severity::Critical,
                "SEV-0 Plaza hot-wallet compromise suspected: all hands",
                &details,
                &mut checklist,
            );
            pager::notify_or_note(
                "incident",
                &format!("SEV-0 Plaza hot-wallet compromise: {details}"),
                &mut checklist,
            );
            checklist.extend([
                "Sweep the remaining hot-wallet balance to cold via a fresh signer (coordinate with the cold multisig key holders)".to_owned(),
                "Rotate the MPC signing key (infra/secrets/mpc.env) and restart the API".to_owned(),
                "Notify customers per the incident-communication plan in docs/legal/".to_owned(),
                "File the jurisdictional report counsel directs".to_owned(),
                "Resume only after a full ledger reconciliation against on-chain state and a documented forensic".to_owned(),
                "Postmortem required (SEV-0); public".to_owned(),
            ]);
            let mut outcome = Outcome::new(format!(
                "Hot-wallet compromise suspected: plaza-api {}; {snap}; escrow {contract}",
                api_stopped.say("stopped")
            ))
            .severity("SEV-0")
            .field("api_stopped", api_stopped.passed())
            .field("escrow", contract.as_str());
            if let Ok((eth, usdc)) = &balances {
                outcome = outcome
                    .field("hot_wallet_eth", *eth)
                    .field("hot_wallet_usdc", *usdc);
            }
            for item in checklist {
                outcome = outcome.todo(item);
            }
            Ok(outcome)
        })
    }
}

stepgate_sdk::playbook!(HotWalletCompromise);
