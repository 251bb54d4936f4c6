//! Plaza: RPC outage (SEV-1).
//!
//! Codifies the Plaza runbook's "RPC outage" section:
//!
//! - **Triage**: confirm the outage is upstream: probe the primary and the
//!   secondary RPC provider (`eth_blockNumber`).
//! - **Mitigation**: one provider answers → the worker fails over on its
//!   own (restart it if it does not). Both out → pause auto-acceptance
//!   (`PLAZA_AUTO_ACCEPT_DISABLED=1`, approved; funding is still accepted
//!   at the API and queued). An outage past 5 minutes → post to the status
//!   page (approved: it is public).
//! - **Recovery** (checklist): once RPC returns and the queue drains,
//!   validate funding and payouts before clearing the flag.

use stepgate_sdk::prelude::*;

const PRIMARY: &str = "base";
const SECONDARY: &str = "base_secondary";
const FLAG: &str = "PLAZA_AUTO_ACCEPT_DISABLED";
const INCIDENT: &str = "incident";
const STATUS: &str = "plaza-status";
/// The runbook's threshold for telling customers.
const STATUS_AFTER_MS: i64 = 5 * 60 * 1000;

struct RpcOutage;

fn probe(endpoint: &str) -> std::result::Result<String, String> {
    rpc::call::<String>(endpoint, "eth_blockNumber", ()).map_err(|e| e.message())
}

impl Playbook for RpcOutage {
    fn describe() -> Description {
        Description::new("plaza-rpc-outage", "1.0.0")
            .summary(
                "Plaza runbook \"RPC outage\" (SEV-1): probes the primary and secondary RPC providers; \
                 when both are out, pauses auto-acceptance (PLAZA_AUTO_ACCEPT_DISABLED=1, approved) and, \
                 past 5 minutes, posts to the status page (approved).",
            )
            .answers("RpcErrorRateHigh")
            .rpc(PRIMARY, "eth_blockNumber")
            .rpc(SECONDARY, "eth_blockNumber")
            .flag_read(FLAG)
            .flag_write(FLAG)
            .notify(INCIDENT)
            .notify(STATUS)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let (primary, secondary, paused) = step("Triage", || -> Result<_> {
            Ok((
                probe(PRIMARY),
                probe(SECONDARY),
                flags::get(FLAG)?.as_deref() == Some("1"),
            ))
        })?;
        let outage_ms = alert
            .starts_at_ms()
            .map(|start| runbook::now_millis() - start);
        let minutes = outage_ms.map(|ms| ms / 60_000);
        let show = |p: &std::result::Result<String, String>| match p {
            Ok(block) => format!("up (block {block})"),
            Err(e) => format!("down ({e})"),
        };
        let seen = format!("primary {}, secondary {}", show(&primary), show(&secondary));
        step("Mitigation", || -> Result<Outcome> {
            let mut checklist = Vec::new();
            let both_out = primary.is_err() && secondary.is_err();
            let mut disabled = paused;
            if both_out && !paused {
                let reason = format!(
                    "Plaza runbook, RPC outage, Mitigation: both providers are out ({seen}); pause auto-acceptance jobs, funding stays accepted at the API"
                );
                match flags::set(FLAG, "1", &reason) {
                    Ok(_) => disabled = true,
                    Err(e) => checklist.push(format!(
                        "{FLAG}=1 is NOT set ({}): set it by hand",
                        e.message()
                    )),
                }
            }
            let mut posted = false;
            if both_out && outage_ms.is_some_and(|ms| ms > STATUS_AFTER_MS) {
                match pager::notify(
                    STATUS,
                    "Plaza: our blockchain provider is unavailable. Funding is still accepted and will be processed when it returns; payouts are delayed.",
                ) {
                    Ok(()) => posted = true,
                    Err(e) => checklist.push(format!("The status post was not made ({}): post to status.plaza.aegent.dev by hand", e.message())),
                }
            }
            let summary = match (&primary, &secondary) {
                (Ok(_), Ok(_)) => {
                    format!("Both providers answer ({seen}): the outage is local or over")
                }
                (Err(_), Ok(_)) | (Ok(_), Err(_)) => {
                    format!("One provider answers ({seen}): the worker fails over on its own")
                }
                (Err(_), Err(_)) => format!("Both providers are out ({seen})"),
            };
            pager::notify(
                INCIDENT,
                &format!(
                    "SEV-1 Plaza RPC outage (alert {}, {} min): {summary}. Auto-acceptance paused: {}. Status page: {}.",
                    alert.name,
                    minutes.map_or("?".to_owned(), |m| m.to_string()),
                    if disabled { "yes" } else { "no" },
                    if posted { "posted" } else { "not posted" }
                ),
            )?;
            if !both_out {
                checklist.push("If the worker does not fail over, restart it".into());
                checklist.push("Check the Base status page".into());
            } else {
                checklist.push("Recovery: when RPC returns, let the queue drain; validate that funding submissions and payouts process before clearing PLAZA_AUTO_ACCEPT_DISABLED".into());
                if !posted {
                    checklist.push(
                        "Post to status.plaza.aegent.dev if the outage passes 5 minutes".into(),
                    );
                }
            }
            let mut outcome = Outcome::new(summary)
                .severity("SEV-1")
                .field("primary_up", primary.is_ok())
                .field("secondary_up", secondary.is_ok())
                .field("auto_accept_disabled", disabled)
                .field("status_posted", posted);
            if let Some(m) = minutes {
                outcome = outcome.field("outage_minutes", m);
            }
            for item in checklist {
                outcome = outcome.todo(item);
            }
            Ok(outcome)
        })
    }
}

stepgate_sdk::playbook!(RpcOutage);
