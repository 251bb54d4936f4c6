//! RGS §9: an RNG change landed without re-certification (SEV1).
//!
//! Detected post-deploy (the RTP regression test or the test-vectors spec
//! fails on a fresh build) or as a bypassed `rng-change-gate`. Every second
//! of uptime at a post-change RTP is certification exposure, so:
//!
//! - on-call is paged first;
//! - the deploy is rolled back to the one before it (the RGS admin API,
//!   approved), unless it is no longer the live one;
//! - further deploys are frozen (`RGS_DEPLOY_FREEZE=1`, approved) until the
//!   root cause is known;
//! - compliance and legal are told: a re-certification conversation may be
//!   needed.
//!
//! The RCA questions (how the change reached main, which gate failed, how
//! to prevent it) are on the checklist.

use stepgate_sdk::prelude::*;

const ADMIN: &str = "rgs_admin";
const CURRENT: &str = "/admin/deploys/current";
const ROLLBACK: &str = "/admin/deploys/rollback";
const FREEZE: &str = "RGS_DEPLOY_FREEZE";
const ONCALL: &str = "rgs-oncall";
const COMPLIANCE: &str = "rgs-compliance";

struct RngRecert;

/// A deploy id as the RGS names them: letters, digits, `.`, `_`, `-`.
fn deploy_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
}

impl Playbook for RngRecert {
    fn describe() -> Description {
        Description::new("rgs-rng-recert", "1.0.0")
            .summary(
                "RGS §9, RNG change without re-certification (SEV1): pages on-call, rolls the deploy back to \
                 the previous one and freezes deploys (each approved), and tells compliance and legal.",
            )
            .answers("RtpRegressionFailed")
            .answers("RngCertGateBypassed")
            .http(ADMIN, &format!("GET {CURRENT}"))
            .http(ADMIN, &format!("POST {ROLLBACK}"))
            .flag_read(FREEZE)
            .flag_write(FREEZE)
            .page(ONCALL)
            .notify(COMPLIANCE)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let deploy = alert
            .label("deploy")
            .filter(|d| deploy_id(d))
            .ok_or_else(|| {
                Error::failed(
                    "the alert has no valid `deploy` label (the deploy id the RTP test failed on)",
                )
            })?
            .to_owned();
        let commit = alert
            .plain_label("commit")
            .unwrap_or("unknown commit")
            .to_owned();
        let mut checklist = Vec::new();
        let live = step("Which deploy is live?", || {
            let answer = http::get(ADMIN, CURRENT).ok().filter(|a| a.ok())?;
            let current = answer.body.get("deploy")?.as_str()?.to_owned();
            let previous = answer
                .body
                .get("previous")?
                .as_str()
                .filter(|p| deploy_id(p))
                .map(str::to_owned);
            Some((current, previous))
        });
        let frozen = flags::get(FREEZE).ok().flatten().as_deref() == Some("1");
        step("Tell on-call", || {
            pager::page_or_note(
                ONCALL,
                Severity::Critical,
                &format!(
                    "RGS SEV1: RNG change without re-certification live in deploy {deploy} ({commit})"
                ),
                "stepgate asks an approver to roll it back and freeze deploys; decide in stepgate now",
                &mut checklist,
            )
        });
        step("Mitigate", || -> Result<Outcome> {
            let rollback = match &live {
                None => {
                    checklist.push(format!("The live deploy could not be read: roll back {deploy} by hand if it is still live"));
                    "NOT rolled back (the live deploy is unknown)".to_owned()
                }
                Some((current, _)) if *current != deploy => {
                    // A later deploy may still carry the change: whether it
                    // does is not known here, so a human decides.
                    checklist.push(format!(
                        "{current} is live, not {deploy}: check whether it still carries commit {commit}; if it does, roll back to the deploy before {deploy} by hand, now"
                    ));
                    format!(
                        "NOT rolled back ({current} is live, not {deploy}: whether it carries the change is unknown)"
                    )
                }
                Some((_, None)) => {
                    checklist.push(format!(
                        "No previous deploy is recorded: roll {deploy} back by hand"
                    ));
                    "NOT rolled back (no previous deploy is recorded)".to_owned()
                }
                Some((_, Some(previous))) => {
                    let reason = format!(
                        "RGS runbook §9: deploy {deploy} ({commit}) changed the RNG without re-certification"
                    );
                    let fate = Fate::of_http(&http::post(
                        ADMIN,
                        ROLLBACK,
                        &serde_json::json!({ "from": deploy, "to": previous }),
                        &reason,
                    ));
                    if let Some(why) = fate.why_not() {
                        checklist.push(format!(
                            "The rollback to {previous} is NOT done ({why}): roll back by hand, now"
                        ));
                    }
                    format!("deploy {}", fate.say(&format!("rolled back to {previous}")))
                }
            };
            let freeze = if frozen {
                "deploys already frozen".to_owned()
            } else {
                let fate = Fate::of(&flags::set(
                    FREEZE,
                    "1",
                    &format!(
                        "RGS runbook §9: freeze deploys until the root cause of {deploy} is known"
                    ),
                ));
                if let Some(why) = fate.why_not() {
                    checklist.push(format!(
                        "Deploys are NOT frozen ({why}): freeze them by hand"
                    ));
                }
                format!("deploys {}", fate.say("frozen"))
            };
            let summary = format!(
                "RNG change without re-certification in deploy {deploy} ({commit}): {rollback}; {freeze}"
            );
            pager::notify_or_note(
                COMPLIANCE,
                &format!(
                    "RGS: {summary}. A re-certification conversation may be necessary; the exposure started with deploy {deploy}."
                ),
                &mut checklist,
            );
            checklist.extend([
                "RCA: how did the change reach main?".to_owned(),
                "RCA: which gate failed (reviewer, admin override, CI bypass)?".to_owned(),
                "Prevent it: required status checks, branch protection, CODEOWNERS on the RNG"
                    .to_owned(),
                format!("Lift {FREEZE} only once the root cause is fixed"),
            ]);
            let mut outcome = Outcome::new(summary)
                .severity("SEV1")
                .field("deploy", deploy.as_str());
            for item in checklist {
                outcome = outcome.todo(item);
            }
            Ok(outcome)
        })
    }
}

stepgate_sdk::playbook!(RngRecert);
