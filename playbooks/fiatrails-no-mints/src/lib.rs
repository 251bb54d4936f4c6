//! FiatRails: NoSuccessfulMints (WARNING: zero successful mints in 10 min).
//!
//! Codifies the runbook's alert response:
//!
//! - **Diagnosis**: is the API up (`GET /health`)? is the escrow contract
//!   paused (`paused()` over `eth_call`)? is the test user compliant
//!   (`isCompliant(address)` on the UserRegistry)?
//! - **Remediation**: paused → find who paused it and when first (the
//!   escrow's `Paused(address)` events over `eth_getLogs`): the runbook's
//!   own upgrade rollback pauses on purpose. Only when the pauser is known
//!   is an unpause proposed, a transaction the config classes a write and
//!   the admin group decides, its reason naming who paused and when;
//!   compliance blocking all → review the compliance settings (checklist);
//!   neither → check the M-PESA webhooks (checklist).
//!
//! The deployment's addresses come from the alert's labels (`escrow`,
//! `user_registry`, `test_user`, and `admin_account` for an unpause): no
//! address is built in, so a missing one is refused by name, never filled
//! in with a test chain's.

use stepgate_sdk::prelude::*;

const RPC: &str = "fiatrails_rpc";
const API: &str = "fiatrails_admin";
const INCIDENTS: &str = "fiatrails-incidents";

/// `paused()`, `unpause()`, `isCompliant(address)`.
const PAUSED: &str = "0x5c975abb";
const UNPAUSE: &str = "0x3f4ba83a";
const IS_COMPLIANT: &str = "0xa200e5d0";
/// keccak256("Paused(address)"): OpenZeppelin Pausable's event.
const PAUSED_EVENT: &str = "0x62e78cea01bee320cd4e420270b5ea74000d11b0c9f74754ebdbfc544b05a258";

struct NoMints;

/// Who paused the escrow last, and in which block: the newest
/// `Paused(address)` event it emitted. `None` when it emitted none.
fn last_pauser(escrow: &str) -> Result<Option<(String, String)>> {
    let logs: Vec<serde_json::Value> = rpc::call(
        RPC,
        "eth_getLogs",
        (serde_json::json!({
            "address": escrow,
            "topics": [PAUSED_EVENT],
            "fromBlock": "earliest",
            "toBlock": "latest",
        }),),
    )?;
    let Some(last) = logs.last() else {
        return Ok(None);
    };
    let data = last["data"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("0x");
    let block = last["blockNumber"].as_str().unwrap_or("unknown block");
    if data.len() != 64 || !data.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::failed(format!(
            "a Paused event of {escrow} carries no address (`{data}`)"
        )));
    }
    Ok(Some((format!("0x{}", &data[24..]), block.to_owned())))
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
                 and whether compliance blocks the test user; when it is paused, finds who paused it \
                 and proposes the unpause to the admin group with that in its reason.",
            )
            .answers("NoSuccessfulMints")
            .rpc(RPC, "eth_call")
            .rpc(RPC, "eth_getLogs")
            .rpc(RPC, "eth_sendTransaction")
            .http(API, "GET /health")
            .notify(INCIDENTS)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let escrow = alert.address("escrow")?;
        let registry = alert.address("user_registry")?;
        let user = alert.address("test_user")?;
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
                (Ok(true), _) => paused_escrow(&alert, &escrow, base)?,
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

/// The escrow is paused: who paused it decides what is proposed.
fn paused_escrow(alert: &Alert, escrow: &str, base: impl Fn(String) -> Outcome) -> Result<Outcome> {
    let pauser = last_pauser(escrow);
    let (by, block) = match pauser {
        Ok(Some(found)) => found,
        known => {
            let why = match known {
                Err(e) => format!("the Paused events could not be read ({})", e.message()),
                _ => "the escrow emitted no Paused event".to_owned(),
            };
            pager::notify(
                INCIDENTS,
                &format!(
                    "WARNING NoSuccessfulMints: the escrow {escrow} is paused and who paused it is unknown ({why}); no unpause is proposed"
                ),
            )?;
            return Ok(base(format!("The escrow {escrow} is paused; who paused it is unknown"))
                .field("unpause_proposed", false)
                .todo(format!("Find who paused the escrow and why ({why}); the upgrade rollback pauses on purpose"))
                .todo("Unpause only once the pause is known not to be deliberate (cast send <ESCROW> \"unpause()\" from the ADMIN account)"));
        }
    };
    let admin = alert.address("admin_account")?;
    let reason = format!(
        "FiatRails runbook, NoSuccessfulMints remediation 1: the escrow {escrow} was paused by {by} in block {block}; unpause it (requires the ADMIN role) only if that pause was not deliberate (an upgrade rollback pauses on purpose)"
    );
    let told = pager::notify(
        INCIDENTS,
        &format!(
            "WARNING NoSuccessfulMints: the escrow {escrow} was paused by {by} in block {block}; the admin group decides on an unpause in stepgate now"
        ),
    );
    let tx = serde_json::json!({ "from": admin, "to": escrow, "data": UNPAUSE });
    let sent = Fate::of(&rpc::send::<serde_json::Value>(
        RPC,
        "eth_sendTransaction",
        (tx,),
        &reason,
    ));
    let mut outcome = base(format!(
        "The escrow {escrow} is paused (by {by}, block {block}); the unpause transaction {}",
        sent.say("sent")
    ))
    .field("paused_by", by.as_str())
    .field("unpause_proposed", true)
    .field("unpause_sent", sent.passed());
    if let Err(e) = told {
        outcome = outcome.todo(format!(
            "The incident room was NOT told ({}): tell them",
            e.message()
        ));
    }
    Ok(match sent.why_not() {
        None => outcome.todo(format!(
            "Confirm paused() reads false once the transaction is mined and a mint succeeds; confirm with {by} why they paused"
        )),
        Some(why) => outcome.todo(format!(
            "The unpause was not sent ({why}): ask {by} why they paused; an admin decides whether to unpause (cast send <ESCROW> \"unpause()\")"
        )),
    })
}

stepgate_sdk::playbook!(NoMints);
