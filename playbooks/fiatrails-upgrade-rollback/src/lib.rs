//! FiatRails: contract upgrade rollback (a bad upgrade of the
//! ComplianceManager's proxy), walked through in step mode:
//!
//! ```text
//! stepgate run fiatrails-upgrade-rollback --alert rollback.json --live --step
//! ```
//!
//! The runbook's procedure, each step checked before the next:
//!
//! 1. **Identify**: the proxy's current implementation (`implementation()`)
//!    and the previous one, from the alert (taken from the deploy log); the
//!    previous one must have code. Already rolled back: nothing to do.
//! 2. **Test on a fork**: the operator confirms they rolled back on an Anvil
//!    fork at the block before the upgrade and `isCompliant` answered
//!    (stepgate cannot run a fork); no confirmation, no rollback.
//! 3. **Execute**: pause the ComplianceManager (recommended; an approver may
//!    refuse it), `upgradeTo(previous)`, read `implementation()` back, and
//!    unpause only once it reads the previous implementation. Every
//!    transaction is approved by two, and counts as done only once its
//!    receipt says it was mined with status 1.
//! 4. **Verify** (checklist): the smoke test, the events since the rollback,
//!    30 minutes of dashboards, the incident report.
//!
//! Every address comes from the alert's labels; none is built in.

use stepgate_sdk::prelude::*;

const RPC: &str = "fiatrails_rpc";
const INCIDENTS: &str = "fiatrails-incidents";

const IMPLEMENTATION: &str = "0x5c60da1b";
const UPGRADE_TO: &str = "0x3659cfe6";
const PAUSE: &str = "0x8456cb59";
const UNPAUSE: &str = "0x3f4ba83a";
/// The runbook's gas limit for the upgrade.
const UPGRADE_GAS: i64 = 500_000;
/// How long a sent transaction may take to be mined, and how often its
/// receipt is read meanwhile.
const RECEIPT_WAIT_SECONDS: i64 = 60;
const RECEIPT_POLL_SECONDS: i64 = 3;

struct UpgradeRollback;

/// The proxy's implementation: the last 20 bytes of one 32-byte word.
fn implementation(proxy: &str) -> Result<String> {
    let word: String = rpc::call(
        RPC,
        "eth_call",
        (
            serde_json::json!({ "to": proxy, "data": IMPLEMENTATION }),
            "latest",
        ),
    )?;
    let hex = word.strip_prefix("0x").unwrap_or("");
    if hex.len() != 64
        || !hex.chars().all(|c| c.is_ascii_hexdigit())
        || !hex.starts_with("000000000000000000000000")
    {
        return Err(Error::failed(format!(
            "implementation() answered `{word}`, not an address word (is `proxy` the proxy?)"
        )));
    }
    Ok(format!("0x{}", hex[24..].to_ascii_lowercase()))
}

/// What became of a sent transaction. `Pending` is neither done nor not
/// done: it was sent and may still be mined, so nothing may be claimed
/// about the contract's state and it must not simply be sent again.
enum Tx {
    /// Made (mined with status 1), planned (a dry run), refused or failed
    /// (never sent, or mined and reverted).
    Settled(Fate),
    Pending {
        hash: String,
        why: String,
    },
}

impl Tx {
    fn done(&self) -> bool {
        matches!(self, Tx::Settled(Fate::Made))
    }
    fn passed(&self) -> bool {
        matches!(self, Tx::Settled(fate) if fate.passed())
    }
    fn say(&self, done: &str) -> String {
        match self {
            Tx::Settled(fate) => fate.say(done),
            Tx::Pending { hash, why } => {
                format!("sent as {hash} but NOT confirmed ({why}): check it before sending again")
            }
        }
    }
}

/// Sends a transaction and waits for its receipt: a hash is not a done
/// transaction. Made only once mined with status 1; mined with another
/// status is a failure (reverted); no receipt within
/// [`RECEIPT_WAIT_SECONDS`] is pending.
fn send(from: &str, to: &str, data: String, gas: Option<i64>, reason: &str) -> Tx {
    let mut tx = serde_json::json!({ "from": from, "to": to, "data": data });
    if let Some(gas) = gas {
        tx["gas"] = serde_json::json!(format!("0x{gas:x}"));
    }
    let sent = rpc::send::<serde_json::Value>(RPC, "eth_sendTransaction", (tx,), reason);
    let hash = match &sent {
        Ok(serde_json::Value::String(hash)) if !runbook::dry_run() => hash.clone(),
        Ok(other) if !runbook::dry_run() => {
            return Tx::Settled(Fate::Failed(format!(
                "eth_sendTransaction answered {other}, not a transaction hash"
            )));
        }
        _ => return Tx::Settled(Fate::of(&sent)),
    };
    let pending = |why: String| Tx::Pending {
        hash: hash.clone(),
        why,
    };
    let mut waited = 0;
    loop {
        let receipt = match rpc::call::<serde_json::Value>(
            RPC,
            "eth_getTransactionReceipt",
            (hash.as_str(),),
        ) {
            Ok(receipt) => receipt,
            Err(e) => return pending(format!("its receipt could not be read: {}", e.message())),
        };
        match receipt.get("status").and_then(|s| s.as_str()) {
            Some("0x1") => return Tx::Settled(Fate::Made),
            Some(status) => {
                return Tx::Settled(Fate::Failed(format!(
                    "{hash} was mined and reverted (status {status})"
                )));
            }
            None if !receipt.is_null() => return pending("its receipt has no status".to_owned()),
            None => {}
        }
        if waited >= RECEIPT_WAIT_SECONDS {
            return pending(format!("not mined after {waited} s"));
        }
        if let Err(e) = runbook::sleep(std::time::Duration::from_secs(RECEIPT_POLL_SECONDS as u64))
        {
            return pending(format!(
                "not mined after {waited} s; no more waiting: {}",
                e.message()
            ));
        }
        waited += RECEIPT_POLL_SECONDS;
    }
}

impl Playbook for UpgradeRollback {
    fn describe() -> Description {
        Description::new("fiatrails-upgrade-rollback", "1.0.0")
            .summary(
                "FiatRails contract upgrade rollback, for step mode: checks the proxy's implementation and the \
                 previous one, asks for the fork test, then pauses, calls upgradeTo(previous), verifies and \
                 unpauses (each transaction approved by two).",
            )
            .answers("ContractUpgradeRollback")
            .rpc(RPC, "eth_call")
            .rpc(RPC, "eth_getCode")
            .rpc(RPC, "eth_getTransactionReceipt")
            .rpc(RPC, "eth_sendTransaction")
            .notify(INCIDENTS)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let proxy = alert.address("proxy")?;
        let previous = alert.address("previous_impl")?;
        let manager = alert.address("compliance_manager")?;
        let admin = alert.address("admin_account")?;
        let upgrader = alert.address("upgrader_account")?;
        let mut checklist = Vec::new();
        let current = step("1. Identify the implementations", || -> Result<String> {
            let current = implementation(&proxy)?;
            let code: String = rpc::call(RPC, "eth_getCode", (previous.as_str(), "latest"))?;
            if code.trim_start_matches("0x").is_empty() {
                return Err(Error::failed(format!(
                    "the previous implementation {previous} has no code on this chain: check the deploy log"
                )));
            }
            Ok(current)
        })?;
        let done = |summary: String, severity: &str, checklist: Vec<String>| {
            checklist.into_iter().fold(
                Outcome::new(summary)
                    .severity(severity)
                    .field("proxy", proxy.as_str()),
                Outcome::todo,
            )
        };
        if current == previous {
            return Ok(done(
                format!("The proxy {proxy} already runs {previous}: nothing to roll back"),
                "WARNING",
                checklist,
            ));
        }
        pager::notify_or_note(
            INCIDENTS,
            &format!(
                "FiatRails rollback of {proxy} from {current} to {previous}: the operator confirms the fork test, then stepgate asks two approvers to pause, upgrade and unpause; decide in stepgate now"
            ),
            &mut checklist,
        );
        let tested = step("2. Test the rollback on a fork", || {
            runbook::confirm(&format!(
                "Rolled {proxy} back to {previous} on an Anvil fork at the block before the upgrade, and isCompliant answered on a test user?"
            ))
        })?;
        if !tested {
            checklist.push(
                "Test the rollback on a fork first (runbook step 2), then run this playbook again"
                    .to_owned(),
            );
            return Ok(done(
                format!("Rollback of {proxy} NOT started: the fork test is not confirmed"),
                "CRITICAL",
                checklist,
            ));
        }
        step("3. Execute the rollback", || -> Result<Outcome> {
            let reason = format!(
                "FiatRails runbook, contract upgrade rollback: {proxy} from {current} back to {previous}"
            );
            let paused = send(
                &admin,
                &manager,
                PAUSE.to_owned(),
                None,
                &format!("{reason}: pause first (recommended)"),
            );
            match &paused {
                Tx::Settled(Fate::Failed(why)) => {
                    checklist.push(format!(
                        "The pause failed ({why}): nothing else was sent; find out why before retrying"
                    ));
                }
                Tx::Pending { hash, .. } => checklist.push(format!(
                    "The pause was sent as {hash} but is not confirmed: nothing else was sent; check it, then run this playbook again"
                )),
                _ => {}
            }
            if matches!(paused, Tx::Pending { .. } | Tx::Settled(Fate::Failed(_))) {
                return Ok(done(
                    format!(
                        "Rollback of {proxy} stopped: the pause {}",
                        paused.say("done")
                    ),
                    "CRITICAL",
                    checklist,
                ));
            }
            let data = format!("{UPGRADE_TO}{:0>64}", previous.trim_start_matches("0x"));
            let upgraded = send(&upgrader, &proxy, data, Some(UPGRADE_GAS), &reason);
            let verified = upgraded.done()
                && implementation(&proxy)
                    .map(|now| now == previous)
                    .unwrap_or(false);
            let unpause = if !paused.passed() {
                "not paused, so not unpaused".to_owned()
            } else if verified || (runbook::dry_run() && upgraded.passed()) {
                let fate = send(
                    &admin,
                    &manager,
                    UNPAUSE.to_owned(),
                    None,
                    &format!("{reason}: implementation() reads {previous}"),
                );
                if !fate.done() && !runbook::dry_run() {
                    checklist.push(format!(
                        "The ComplianceManager unpause is {}: unpause it once the rollback is verified",
                        fate.say("done")
                    ));
                }
                format!("ComplianceManager {}", fate.say("unpaused"))
            } else {
                checklist.push(
                    "The ComplianceManager stays PAUSED: the rollback is not verified".to_owned(),
                );
                "ComplianceManager left paused (the rollback is not verified)".to_owned()
            };
            match &upgraded {
                Tx::Pending { hash, .. } => checklist.push(format!(
                    "upgradeTo({previous}) was sent as {hash} but is not confirmed: check it before sending it again; implementation() decides what runs"
                )),
                Tx::Settled(fate) if !fate.passed() => checklist.push(format!(
                    "upgradeTo({previous}) is {}: read implementation() before anything else",
                    fate.say("done")
                )),
                _ if !verified && !runbook::dry_run() => checklist.push(format!(
                    "implementation() does not read {previous} after the upgrade: check the transaction"
                )),
                _ => {}
            }
            let summary = format!(
                "Rollback of {proxy} from {current} to {previous}: ComplianceManager {}; upgrade {}{}; {unpause}",
                paused.say("paused"),
                upgraded.say("done"),
                if verified { ", verified" } else { "" }
            );
            pager::notify_or_note(INCIDENTS, &format!("FiatRails: {summary}"), &mut checklist);
            checklist.extend([
                "Smoke test the critical paths: node scripts/smoke-test.js".to_owned(),
                format!("Check the events since the rollback block: cast logs --from-block <ROLLBACK_BLOCK> {proxy}"),
                "Watch the dashboards for 30 minutes".to_owned(),
                "Incident report: what went wrong in the upgrade, how it was detected, the rollback timeline, prevention".to_owned(),
            ]);
            Ok(done(
                summary,
                if verified { "WARNING" } else { "CRITICAL" },
                checklist,
            )
            .field("verified", verified))
        })
    }
}

stepgate_sdk::playbook!(UpgradeRollback);
