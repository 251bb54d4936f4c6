//! loa-finn: rollback to the previous launch gate.
//!
//! Codifies runbook section 4, "Gate Rollback": the runbook's table (which
//! gate rolls back to which, and the feature flags to disable) is [`GATES`],
//! as data. An operator starts it with `GateRollback{from_gate="4"}`; each
//! flag still enabled is disabled through the feature-flag admin API (a
//! write a human approves). The verification (the disabled feature's
//! endpoints answer 503, the previous gate's still work, no error spike)
//! is the outcome's checklist.

use stepgate_sdk::prelude::*;

const ADMIN: &str = "loa_admin";
const FLAGS: &str = "/api/v1/admin/feature-flags";
const INCIDENTS: &str = "loa-incidents";

/// The runbook's table: current gate, the gate it rolls back to, the flags
/// to disable.
const GATES: &[(&str, &str, &[&str])] = &[
    ("4", "2", &["x402"]),
    ("2", "1", &["nft", "onboarding"]),
    ("1", "0", &["credits"]),
    ("0", "off", &["billing"]),
];

struct GateRollback;

impl Playbook for GateRollback {
    fn describe() -> Description {
        Description::new("loafinn-gate-rollback", "1.0.0")
            .summary(
                "loa-finn runbook 4, gate rollback: disables the flags the runbook's gate table names \
                 for the current gate (each approved) through the feature-flag admin API, and lists \
                 the verification.",
            )
            .answers("GateRollback")
            .http(ADMIN, &format!("GET {FLAGS}"))
            .http(ADMIN, &format!("POST {FLAGS}"))
            .notify(INCIDENTS)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let from = alert
            .label("from_gate")
            .ok_or_else(|| Error::failed("the alert has no `from_gate` label (4, 2, 1 or 0)"))?;
        let (_, to, flags) = GATES
            .iter()
            .find(|(gate, _, _)| *gate == from)
            .ok_or_else(|| {
                Error::failed(format!(
                    "gate `{from}` is not in the runbook's rollback table (4, 2, 1, 0)"
                ))
            })?;
        let current = step("Read the flags", || http::get(ADMIN, FLAGS))?;
        if !current.ok() {
            return step("Escalate: flag API down", || -> Result<Outcome> {
                pager::notify(
                    INCIDENTS,
                    &format!(
                        "loa-finn gate rollback {from} → {to}: the feature-flag API answered {}; disable {} by hand",
                        current.status,
                        flags.join(", ")
                    ),
                )?;
                Ok(Outcome::new(format!(
                    "The flag API answered {}: nothing disabled",
                    current.status
                ))
                .severity("CRITICAL")
                .todo(format!(
                    "Disable {} by hand (POST {FLAGS})",
                    flags.join(", ")
                )))
            });
        }
        step(
            &format!("Roll back gate {from} to {to}"),
            || -> Result<Outcome> {
                let mut disabled = Vec::new();
                let mut not_disabled = Vec::new();
                let mut checklist = Vec::new();
                let (already, to_disable): (Vec<&str>, Vec<&str>) =
                    flags.iter().partition(|flag| {
                        current.body.get(**flag).and_then(|v| v.as_bool()) == Some(false)
                    });
                if !to_disable.is_empty() {
                    // The humans first: each flag waits for an approver.
                    let told = pager::notify(
                        INCIDENTS,
                        &format!(
                            "loa-finn gate rollback {from} → {to} (alert {}): stepgate asks an approver to disable {}; decide in stepgate now",
                            alert.name,
                            to_disable.join(", ")
                        ),
                    );
                    if let Err(e) = told {
                        checklist.push(format!(
                            "{INCIDENTS} was NOT told before the approvals ({}): tell them",
                            e.message()
                        ));
                    }
                }
                for flag in to_disable {
                    let reason = format!(
                        "loa-finn runbook, Gate Rollback: gate {from} rolls back to {to}, which disables `{flag}`"
                    );
                    let body = serde_json::json!({ "flag": flag, "enabled": false });
                    match Fate::of_http(&http::post(ADMIN, FLAGS, &body, &reason)).why_not() {
                        None => disabled.push(flag),
                        Some(why) => {
                            not_disabled.push(flag);
                            checklist.push(format!(
                                "`{flag}` is NOT disabled ({why}): disable it by hand (POST {FLAGS})"
                            ))
                        }
                    }
                }
                let summary = format!(
                    "Gate {from} → {to}: {} {}{}{}",
                    if runbook::dry_run() {
                        "would disable (dry run)"
                    } else {
                        "disabled"
                    },
                    if disabled.is_empty() {
                        "nothing".to_owned()
                    } else {
                        disabled.join(", ")
                    },
                    if already.is_empty() {
                        String::new()
                    } else {
                        format!(" (already off: {})", already.join(", "))
                    },
                    if not_disabled.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; NOT disabled: {} (refused or failed, see the checklist)",
                            not_disabled.join(", ")
                        )
                    }
                );
                pager::notify_or_note(
                    INCIDENTS,
                    &format!("loa-finn gate rollback (alert {}): {summary}", alert.name),
                    &mut checklist,
                );
                checklist.extend([
                    format!("Verify the endpoints of {} answer 503", flags.join(", ")),
                    format!("Verify gate {to}'s features still work"),
                    "Verify there is no error spike in CloudWatch".to_owned(),
                ]);
                let mut outcome = Outcome::new(summary)
                    .severity("WARNING")
                    .field("from_gate", from)
                    .field("to_gate", *to)
                    .field("disabled", disabled.join(","))
                    .field("already_off", already.join(","));
                for item in checklist {
                    outcome = outcome.todo(item);
                }
                Ok(outcome)
            },
        )
    }
}

stepgate_sdk::playbook!(GateRollback);
