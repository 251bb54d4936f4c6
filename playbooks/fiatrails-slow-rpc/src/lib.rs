//! FiatRails: SlowRPCCalls (WARNING: p95 RPC latency > 2 s for 5+ min).
//!
//! The runbook's diagnosis compares block numbers ("check for block lag,
//! compare with a public block explorer"): here, the provider the API uses
//! (`FIATRAILS_RPC_PROVIDER`) against the other configured provider.
//!
//! - The provider in use lags the other by more than [`LAG_BLOCKS`], or
//!   does not answer while the other does: the provider is slow. The
//!   incident channel is told, then the API switches to the other provider
//!   (approved), the runbook's "switch to a faster RPC".
//! - The provider in use not behind: the chain is congested or the latency is
//!   regional. Neither is told apart by a block number, and both remedies
//!   (longer timeouts and fewer retries; a closer provider) are
//!   configuration changes, so they go on the checklist.

use stepgate_sdk::prelude::*;

const PRIMARY: &str = "fiatrails_rpc";
const FALLBACK: &str = "fiatrails_rpc_fallback";
const PROVIDER: &str = "FIATRAILS_RPC_PROVIDER";
const INCIDENTS: &str = "fiatrails-incidents";

/// The provider in use more than this many blocks behind the other is slow.
const LAG_BLOCKS: i64 = 3;

struct SlowRpc;

fn head(endpoint: &str) -> Option<i64> {
    let hex: String = rpc::call(endpoint, "eth_blockNumber", ()).ok()?;
    let digits = hex.strip_prefix("0x")?;
    (!digits.is_empty() && digits.len() <= 15).then(|| i64::from_str_radix(digits, 16).ok())?
}

impl Playbook for SlowRpc {
    fn describe() -> Description {
        Description::new("fiatrails-slow-rpc", "1.0.0")
            .summary(
                "FiatRails SlowRPCCalls: compares the provider the API uses with the other one by block \
                 number; a lagging or silent provider is switched away from (approved) after telling the \
                 incident channel; congestion or regional latency stays on the checklist.",
            )
            .answers("SlowRPCCalls")
            .rpc(PRIMARY, "eth_blockNumber")
            .rpc(FALLBACK, "eth_blockNumber")
            .flag_read(PROVIDER)
            .flag_write(PROVIDER)
            .notify(INCIDENTS)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let lag_blocks = alert.setting("lag_blocks", LAG_BLOCKS)?;
        let (in_use, other, heads) = step("Diagnosis: block lag", || -> Result<_> {
            let on_fallback = flags::get(PROVIDER)?.as_deref() == Some("fallback");
            let (in_use, other) = if on_fallback {
                ("fallback", "primary")
            } else {
                ("primary", "fallback")
            };
            let endpoint = |name: &str| if name == "primary" { PRIMARY } else { FALLBACK };
            Ok((
                in_use,
                other,
                (head(endpoint(in_use)), head(endpoint(other))),
            ))
        })?;
        let shown = |h: Option<i64>| {
            h.map(|b| format!("block {b}"))
                .unwrap_or_else(|| "no answer".to_owned())
        };
        let seen = format!(
            "{in_use} (in use) {}, {other} {}",
            shown(heads.0),
            shown(heads.1)
        );
        let mut checklist = Vec::new();
        let slow = match heads {
            (None, Some(_)) => true,
            (Some(used), Some(best)) => best - used > lag_blocks,
            _ => false,
        };
        step("Remediation", || -> Result<Outcome> {
            let summary = if slow {
                pager::notify_or_note(
                    INCIDENTS,
                    &format!(
                        "FiatRails {}: the provider in use is slow ({seen}); stepgate asks an approver to switch the API to {other}; decide in stepgate now",
                        alert.name
                    ),
                    &mut checklist,
                );
                let reason = format!(
                    "FiatRails runbook, SlowRPCCalls: provider slow ({seen}): switch to the faster RPC"
                );
                let fate = Fate::of(&flags::set(PROVIDER, other, &reason));
                if let Some(why) = fate.why_not() {
                    checklist.push(format!(
                        "The API is NOT switched to {other} ({why}): switch it by hand"
                    ));
                }
                format!(
                    "The provider in use is slow ({seen}): the API {}",
                    fate.say(&format!("switched to {other}"))
                )
            } else if heads.1.is_none() && heads.0.is_some() {
                checklist.push(format!("The {other} provider does not answer either: no switch; if calls stay slow, look at the chain and the network"));
                format!("No faster provider ({seen}): nothing switched")
            } else if heads.0.is_none() {
                checklist.push(
                    "Neither provider answers: see HighRPCErrorRate and degraded mode".to_owned(),
                );
                format!("Neither provider answers ({seen}): nothing switched")
            } else {
                checklist.extend([
                    "The provider in use keeps up with the other: if the chain is congested, raise the RPC timeout and lower the retry frequency".to_owned(),
                    "If the latency is regional, move the API to a geographically closer provider".to_owned(),
                ]);
                let near = match heads {
                    (Some(used), Some(best)) if used < best => {
                        format!("within {lag_blocks} block(s) of")
                    }
                    _ => "not behind".to_owned(),
                };
                format!(
                    "The provider in use is {near} the other ({seen}): chain congestion or regional latency; nothing switched"
                )
            };
            pager::notify_or_note(
                INCIDENTS,
                &format!("FiatRails {}: {summary}", alert.name),
                &mut checklist,
            );
            let mut outcome = Outcome::new(summary)
                .severity("WARNING")
                .field("provider_in_use", in_use);
            for item in checklist {
                outcome = outcome.todo(item);
            }
            Ok(outcome)
        })
    }
}

stepgate_sdk::playbook!(SlowRpc);
