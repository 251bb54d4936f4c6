//! FiatRails: NoSuccessfulMints (WARNING: zero successful mints in 10 min).
//!
//! Codifies the runbook's alert response:
//!
//! - **Diagnosis**: is the API up (`GET /health`)? is the escrow contract
//!   paused (`paused()` over `eth_call`)? is the test user compliant
//!   (`isCompliant(address)` on the UserRegistry)?
//! - **Remediation**: paused → unpause (a transaction the config classes a
//!   write, decided by the admin group: it needs the ADMIN role); compliance
//!   blocking all → review the compliance settings (checklist); neither →
//!   check the M-PESA webhooks (checklist).

use stepgate_sdk::prelude::*;

const RPC: &str = "fiatrails_rpc";
const API: &str = "fiatrails_admin";
const INCIDENTS: &str = "fiatrails-incidents";

/// The example deployment's contracts and the compliant test user; an
/// alert can name others (`escrow`, `user_registry`, `test_user`).
const ESCROW: &str = "0x5fbdb2315678afecb367f032d93f642f64180aa3";
const USER_REGISTRY: &str = "0xe7f1725e7734ce288f8367e1bb143e90bb3f0512";
const TEST_USER: &str = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8";
/// The escrow's admin account (its key stays with the node).
const ADMIN_ACCOUNT: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";

/// `paused()`, `unpause()`, `isCompliant(address)`.
const PAUSED: &str = "0x5c975abb";
const UNPAUSE: &str = "0x3f4ba83a";
const IS_COMPLIANT: &str = "0xa200e5d0";

struct NoMints;

fn address(alert: &Alert, key: &str, default: &str) -> Result<String> {
    let value = alert.label(key).unwrap_or(default);
    let hex = value.strip_prefix("0x").unwrap_or("");
    if hex.len() == 40 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(Error::failed(format!(
            "`{key}` = `{value}` is not an address"
        )))
    }
}

/// A 32-byte ABI word read as a boolean.
fn word_is_true(hex: &str) -> Result<bool> {
    let digits = hex.trim_start_matches("0x");
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::failed(format!("`{hex}` is not an ABI word")));
    }
    Ok(digits.trim_start_matches('0') == "1")
}

fn eth_call(to: &str, data: &str) -> Result<String> {
    rpc::call(
        RPC,
        "eth_call",
        (serde_json::json!({ "to": to, "data": data }), "latest"),
    )
}

impl Playbook for NoMints {
    fn describe() -> Description {
        Description::new("fiatrails-no-mints", "1.0.0")
            .summary(
                "FiatRails NoSuccessfulMints: checks the API's health, whether the escrow is paused \
                 and whether compliance blocks the test user; unpauses the escrow (the admin group \
                 decides) when it is paused.",
            )
            .answers("NoSuccessfulMints")
            .rpc(RPC, "eth_call")
            .rpc(RPC, "eth_sendTransaction")
            .http(API, "GET /health")
            .notify(INCIDENTS)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let escrow = address(&alert, "escrow", ESCROW)?;
        let registry = address(&alert, "user_registry", USER_REGISTRY)?;
        let user = address(&alert, "test_user", TEST_USER)?;
        let diagnosis = step("Diagnosis", || -> Result<_> {
            let health = http::get(API, "/health");
            let paused = eth_call(&escrow, PAUSED).and_then(|w| word_is_true(&w));
            let compliant = match &paused {
                Ok(false) => Some(
                    eth_call(
                        &registry,
                        &format!("{IS_COMPLIANT}{:0>64}", user.trim_start_matches("0x")),
                    )
                    .and_then(|w| word_is_true(&w)),
                ),
                _ => None,
            };
            Ok((health, paused, compliant))
        })?;
        let (health, paused, compliant) = diagnosis;
        let api_up = matches!(&health, Ok(answer) if answer.ok());
        step("Remediation", || -> Result<Outcome> {
            let base = |summary: String| {
                Outcome::new(summary)
                    .severity("WARNING")
                    .field("api_healthy", api_up)
                    .field("escrow_paused", matches!(paused, Ok(true)))
            };
            let outcome = match (&paused, &compliant) {
                (Err(e), _) => {
                    let why = e.message();
                    pager::notify(
                        INCIDENTS,
                        &format!(
                            "WARNING NoSuccessfulMints: cannot read the escrow's paused() ({why}); the RPC may be down, see HighRPCErrorRate"
                        ),
                    )?;
                    base(format!("The escrow could not be read: {why}")).todo(
                        "Check the RPC first (HighRPCErrorRate), then run this playbook again",
                    )
                }
                (Ok(true), _) => {
                    let reason = format!(
                        "FiatRails runbook, NoSuccessfulMints remediation 1: the escrow {escrow} is paused; unpause it (requires the ADMIN role)"
                    );
                    let tx =
                        serde_json::json!({ "from": ADMIN_ACCOUNT, "to": escrow, "data": UNPAUSE });
                    let sent =
                        rpc::send::<serde_json::Value>(RPC, "eth_sendTransaction", (tx,), &reason);
                    pager::notify(
                        INCIDENTS,
                        &format!(
                            "WARNING NoSuccessfulMints: the escrow {escrow} is paused; unpause {}",
                            match &sent {
                                Ok(_) => "sent".to_owned(),
                                Err(e) => format!("NOT sent ({})", e.message()),
                            }
                        ),
                    )?;
                    let outcome = base(format!("The escrow {escrow} is paused"))
                        .field("unpaused", sent.is_ok());
                    match sent {
                        Ok(_) => outcome
                            .todo("Confirm a mint succeeds after the unpause; find out who paused the escrow and why"),
                        Err(e) => outcome.todo(format!(
                            "The unpause was not sent ({}): an admin decides whether to unpause (cast send <ESCROW> \"unpause()\")",
                            e.message()
                        )),
                    }
                }
                (Ok(false), Some(Ok(false))) => {
                    pager::notify(
                        INCIDENTS,
                        &format!(
                            "WARNING NoSuccessfulMints: the escrow is live but the test user {user} is not compliant: compliance may be blocking all mints"
                        ),
                    )?;
                    base("Compliance blocks the test user: it may block every mint".into())
                        .field("test_user_compliant", false)
                        .todo("Review the compliance settings: maxRiskScore in seed.json")
                        .todo("Verify the attestations are current")
                }
                (Ok(false), compliant) => {
                    let known = compliant.as_ref().and_then(|c| c.as_ref().ok()).copied();
                    pager::notify(
                        INCIDENTS,
                        &format!(
                            "WARNING NoSuccessfulMints: the escrow is live, the test user compliant ({}), the API {}: check the M-PESA webhooks",
                            known.map_or("unknown".to_owned(), |c| c.to_string()),
                            if api_up { "healthy" } else { "NOT healthy" }
                        ),
                    )?;
                    base("Neither paused nor blocked by compliance: check the webhooks".into())
                        .todo("If no webhooks arrive: check the M-PESA integration health")
                        .todo("Check that intents are being submitted (GET /health, API logs)")
                }
            };
            Ok(outcome)
        })
    }
}

stepgate_sdk::playbook!(NoMints);
