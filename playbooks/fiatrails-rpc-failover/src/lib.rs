//! FiatRails: HighRPCErrorRate (CRITICAL: RPC error rate > 10% for 2+ min).
//!
//! Codifies the runbook's alert response:
//!
//! - **Diagnosis**: check RPC connectivity with `eth_blockNumber` on the
//!   configured provider, and on the fallback.
//! - **Remediation**: the provider does not answer but the fallback does →
//!   switch to the fallback RPC (`FIATRAILS_RPC_PROVIDER=fallback`, a flag
//!   write a human approves; the API restarts on it). The provider answers →
//!   rate limiting or network: the incident channel gets the checks to run.
//! - **Escalation**: no RPC answers → page the infrastructure team.

use stepgate_sdk::prelude::*;

const PRIMARY: &str = "fiatrails_rpc";
const FALLBACK: &str = "fiatrails_rpc_fallback";
const FLAG: &str = "FIATRAILS_RPC_PROVIDER";
const INCIDENTS: &str = "fiatrails-incidents";
const INFRASTRUCTURE: &str = "infrastructure";

struct RpcFailover;

/// An `eth_blockNumber` probe: the block, or why there is none.
fn probe(endpoint: &str) -> std::result::Result<u64, String> {
    match rpc::call::<String>(endpoint, "eth_blockNumber", ()) {
        Ok(hex) => u64::from_str_radix(hex.trim_start_matches("0x"), 16)
            .map_err(|_| format!("answered `{hex}`, not a block number")),
        Err(e) => Err(e.message()),
    }
}

impl Playbook for RpcFailover {
    fn describe() -> Description {
        Description::new("fiatrails-rpc-failover", "1.0.0")
            .summary(
                "FiatRails HighRPCErrorRate: probes the RPC provider and the fallback with \
                 eth_blockNumber; switches to the fallback (approved flag write) when only it \
                 answers, pages infrastructure when none does.",
            )
            .answers("HighRPCErrorRate")
            .rpc(PRIMARY, "eth_blockNumber")
            .rpc(FALLBACK, "eth_blockNumber")
            .flag_read(FLAG)
            .flag_write(FLAG)
            .page(INFRASTRUCTURE)
            .notify(INCIDENTS)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let (current, primary, fallback) = step("Diagnosis", || -> Result<_> {
            let current = flags::get(FLAG)?.unwrap_or_else(|| "primary".into());
            Ok((current, probe(PRIMARY), probe(FALLBACK)))
        })?;
        let rate = alert
            .annotation("error_rate")
            .map(|r| format!(" (error rate {r})"))
            .unwrap_or_default();
        let show = |p: &std::result::Result<u64, String>| match p {
            Ok(block) => format!("block {block}"),
            Err(e) => format!("down: {e}"),
        };
        let seen = format!(
            "provider {}, fallback {}; in use: {current}",
            show(&primary),
            show(&fallback)
        );
        step("Remediation", || -> Result<Outcome> {
            let base = |summary: String| {
                Outcome::new(summary)
                    .severity("CRITICAL")
                    .field("provider_up", primary.is_ok())
                    .field("fallback_up", fallback.is_ok())
                    .field("in_use", current.as_str())
            };
            match (&primary, &fallback) {
                (Err(_), Ok(_)) if current != "fallback" => switch(
                    "fallback",
                    &format!(
                        "FiatRails runbook, HighRPCErrorRate, Remediation 1 (RPC provider issue): switch to the fallback RPC; {seen}"
                    ),
                    &format!("CRITICAL HighRPCErrorRate{rate}: {seen}"),
                    base(format!(
                        "The RPC provider is down; the fallback answers: {seen}"
                    )),
                ),
                // On the fallback, which fails, while the provider answers
                // again: back to the provider.
                (Ok(_), Err(_)) if current == "fallback" => switch(
                    "primary",
                    &format!(
                        "FiatRails runbook, HighRPCErrorRate: the api is on the fallback RPC, which does not answer, and the provider answers again; switch back to the provider; {seen}"
                    ),
                    &format!("CRITICAL HighRPCErrorRate{rate}: {seen}"),
                    base(format!(
                        "The fallback in use is down; the provider answers: {seen}"
                    )),
                ),
                (Err(_), Err(_)) => {
                    pager::page(
                        INFRASTRUCTURE,
                        Severity::Critical,
                        "FiatRails: no RPC answers (provider and fallback down); mints and webhooks are failing",
                        &format!("alert {}{rate}: {seen}", alert.name),
                    )?;
                    Ok(base(format!("No RPC answers: {seen}"))
                        .field("switched", false)
                        .todo("Infrastructure restores an RPC; meanwhile consider degraded mode (DEGRADED_MODE=true: accept intents, do not execute)")
                        .todo("Post to the status page: minting temporarily unavailable"))
                }
                (Err(_), Ok(_)) => {
                    pager::notify(
                        INCIDENTS,
                        &format!(
                            "CRITICAL HighRPCErrorRate{rate}: {seen}. The fallback is already in use and answers: look for rate limiting or network issues."
                        ),
                    )?;
                    Ok(base(format!("Already on the fallback, which answers: {seen}"))
                        .field("switched", false)
                        .todo("Check rate limiting on the fallback tier and the network (firewall/DNS)"))
                }
                (Ok(_), _) => {
                    pager::notify(
                        INCIDENTS,
                        &format!(
                            "CRITICAL HighRPCErrorRate{rate}: {seen}. The provider answers: likely rate limiting or a network issue."
                        ),
                    )?;
                    Ok(base(format!("The provider answers: {seen}"))
                        .field("switched", false)
                        .todo("If rate limiting: reduce the request rate or upgrade the RPC tier")
                        .todo("If a network issue: check firewall and DNS (ping / traceroute the provider)"))
                }
            }
        })
    }
}

/// Tells the incident channel, then switches `FLAG` to `to` (a write an
/// approver decides), says what became of it, and returns `outcome` with
/// what a human does next.
fn switch(to: &str, reason: &str, headline: &str, outcome: Outcome) -> Result<Outcome> {
    let mut checklist = Vec::new();
    // The humans first: the switch waits for an approver.
    let told = pager::notify(
        INCIDENTS,
        &format!(
            "{headline}. stepgate asks an approver to switch the api to the {to} RPC ({FLAG}={to}); decide in stepgate now"
        ),
    );
    let switched = Fate::of(&flags::set(FLAG, to, reason));
    pager::notify_or_note(
        INCIDENTS,
        &format!(
            "{headline}. The api {} to the {to} RPC{}",
            switched.say("switched"),
            if switched == Fate::Made {
                ": restart the api"
            } else {
                ""
            }
        ),
        &mut checklist,
    );
    let mut outcome = outcome;
    outcome.summary = format!(
        "{}; {}",
        outcome.summary,
        switched.say(&format!("switched to the {to}"))
    );
    let mut outcome = outcome.field("switched", switched.passed());
    if let Err(e) = told {
        checklist.insert(
            0,
            format!(
                "{INCIDENTS} was NOT told before the approval ({}): tell them",
                e.message()
            ),
        );
    }
    match switched.why_not() {
        None => checklist.extend([
            "Restart the api so it takes the new RPC (docker compose restart api)".to_owned(),
            "Watch the error rate; switch again once the other provider answers and its error rate is under 5%".to_owned(),
        ]),
        Some(why) => checklist.push(format!(
            "The switch was not made ({why}): set RPC_URL to the {to} by hand"
        )),
    }
    for item in checklist {
        outcome = outcome.todo(item);
    }
    Ok(outcome)
}

stepgate_sdk::playbook!(RpcFailover);
