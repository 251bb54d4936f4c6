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
//!
//! The outage is measured from when the errors began: Prometheus sets
//! `startsAt` only after the rule's `for:` window (the runbook's alert
//! table: "for 10 min"), so the window is added. A rule with another
//! window says so in its `for` annotation (`90s`, `5m`, `1h`).

use stepgate_sdk::prelude::*;

const PRIMARY: &str = "base";
const SECONDARY: &str = "base_secondary";
const FLAG: &str = "PLAZA_AUTO_ACCEPT_DISABLED";
const INCIDENT: &str = "incident";
const STATUS: &str = "plaza-status";
/// The runbook's threshold for telling customers.
const STATUS_AFTER_MS: i64 = 5 * 60 * 1000;
/// The alert table's `for:` window of RpcErrorRateHigh ("for 10 min"),
/// unless the alert's `for` annotation says otherwise.
const FOR_WINDOW_MS: i64 = 10 * 60 * 1000;

/// A Prometheus-style duration of one unit: `90s`, `5m`, `1h`.
fn duration_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    // The unit is the last character, whatever the text (never a panic on
    // a multi-byte one: it is simply not a unit).
    let unit_at = text.char_indices().last()?.0;
    let (number, unit) = text.split_at(unit_at);
    let n: i64 = number.parse().ok().filter(|n| *n >= 0)?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

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
        let window = match alert.annotation("for") {
            Some(text) => duration_ms(text).ok_or_else(|| {
                Error::failed(format!(
                    "the alert's `for` annotation `{text}` is not a duration like 90s, 10m or 1h"
                ))
            })?,
            None => FOR_WINDOW_MS,
        };
        // Errors began a `for:` window before the alert fired.
        let outage_ms = alert
            .starts_at_ms()
            .map(|start| runbook::now_millis() - start + window);
        let minutes = outage_ms.map(|ms| ms / 60_000);
        let show = |p: &std::result::Result<String, String>| match p {
            Ok(block) => format!("up (block {block})"),
            Err(e) => format!("down ({e})"),
        };
        let seen = format!("primary {}, secondary {}", show(&primary), show(&secondary));
        step("Mitigation", || -> Result<Outcome> {
            let mut checklist = Vec::new();
            let both_out = primary.is_err() && secondary.is_err();
            let pause = both_out && !paused;
            let post = both_out && outage_ms.is_some_and(|ms| ms > STATUS_AFTER_MS);
            if pause || post {
                // The humans first: both writes wait for an approver.
                let asks = [
                    pause.then_some("pause auto-acceptance"),
                    post.then_some("post to the status page"),
                ];
                let told = pager::notify(
                    INCIDENT,
                    &format!(
                        "SEV-1 Plaza RPC outage (alert {}): both providers are out; stepgate asks an approver to {}; decide in stepgate now",
                        alert.name,
                        asks.into_iter().flatten().collect::<Vec<_>>().join(" and ")
                    ),
                );
                if let Err(e) = told {
                    checklist.push(format!(
                        "#{INCIDENT} was NOT told before the approvals ({}): tell them",
                        e.message()
                    ));
                }
            }
            let paused_now = pause.then(|| {
                let reason = format!(
                    "Plaza runbook, RPC outage, Mitigation: both providers are out ({seen}); pause auto-acceptance jobs, funding stays accepted at the API"
                );
                let fate = Fate::of(&flags::set(FLAG, "1", &reason));
                if let Some(why) = fate.why_not() {
                    checklist.push(format!("{FLAG}=1 is NOT set ({why}): set it by hand"));
                }
                fate
            });
            let posted = post.then(|| {
                let fate = Fate::of(&pager::notify(
                    STATUS,
                    "Plaza: our blockchain provider is unavailable. Funding is still accepted and will be processed when it returns; payouts are delayed.",
                ));
                if let Some(why) = fate.why_not() {
                    checklist.push(format!(
                        "The status post was not made ({why}): post to status.plaza.aegent.dev by hand"
                    ));
                }
                fate
            });
            let summary = match (&primary, &secondary) {
                (Ok(_), Ok(_)) => {
                    format!("Both providers answer ({seen}): the outage is local or over")
                }
                (Err(_), Ok(_)) | (Ok(_), Err(_)) => {
                    format!("One provider answers ({seen}): the worker fails over on its own")
                }
                (Err(_), Err(_)) => format!(
                    "Both providers are out ({seen}); auto-acceptance {}; status page {}",
                    // What was done, from each write's own result.
                    match (&paused_now, paused) {
                        (Some(fate), _) => fate.say("paused"),
                        (None, true) => "already paused".to_owned(),
                        (None, false) => "not paused".to_owned(),
                    },
                    match &posted {
                        Some(fate) => fate.say("posted"),
                        None => "not posted yet".to_owned(),
                    }
                ),
            };
            pager::notify_or_note(
                INCIDENT,
                &format!(
                    "SEV-1 Plaza RPC outage (alert {}, {} min): {summary}",
                    alert.name,
                    minutes.map_or("?".to_owned(), |m| m.to_string()),
                ),
                &mut checklist,
            );
            if primary.is_ok() && secondary.is_ok() {
                checklist.push("Both providers answer stepgate: confirm from the worker's box that they answer there too (curl the provider; local network, DNS, the box's firewall), and read the payout worker's logs".into());
            } else if !both_out {
                checklist.push("If the worker does not fail over, restart it".into());
                checklist.push("Check the Base status page".into());
            } else {
                checklist.push("Recovery: when RPC returns, let the queue drain; validate that funding submissions and payouts process before clearing PLAZA_AUTO_ACCEPT_DISABLED".into());
                if !posted.as_ref().is_some_and(Fate::passed) {
                    checklist.push(
                        "Post to status.plaza.aegent.dev if the outage passes 5 minutes".into(),
                    );
                }
            }
            let mut outcome = Outcome::new(summary)
                .severity("SEV-1")
                .field("primary_up", primary.is_ok())
                .field("secondary_up", secondary.is_ok())
                .field(
                    "auto_accept_disabled",
                    paused || paused_now.as_ref().is_some_and(Fate::passed),
                )
                .field("status_posted", posted.as_ref().is_some_and(Fate::passed));
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
