//! FiatRails: HMAC secret rotation, planned or on a suspected compromise,
//! with zero downtime: both secrets are accepted during a transition, then
//! the old one is revoked.
//!
//! **A secret's value never passes through this playbook.** The operator
//! stores the new secret in the secrets manager; stepgate handles only its
//! *reference* (`fiatrails/hmac-secret-v2`), which the API resolves. The
//! flags `FIATRAILS_HMAC_SECRET_REF` (the primary) and
//! `FIATRAILS_HMAC_SECRET_NEW_REF` (the second secret accepted during the
//! transition) hold references only, and a label that does not look like
//! one is refused.
//!
//! Two alerts drive the phases:
//!
//! - **`HmacRotationStart`** (sent by an operator, with `reason` =
//!   `scheduled` or `compromise` and `new_secret_ref`): the incident
//!   channel is told; the operator confirms the new secret is stored; dual
//!   verification is switched on (`FIATRAILS_HMAC_SECRET_NEW_REF`), the
//!   rotation recorded with its revocation date (7 days; a compromise
//!   [`COMPROMISE_TRANSITION_HOURS`]), and the API's clients told that date.
//!   Each write is approved.
//! - **`HmacRotationPhase`** (a daily schedule): the open rotation's
//!   progress, with how often each secret verified a request in the last
//!   24 h. Once its date has come, the old secret is revoked (the new
//!   reference becomes the primary, the second is cleared, the rotation
//!   closed; each approved), unless clients still use it after a planned
//!   rotation: then the revocation is held and the stragglers chased. A
//!   compromised secret is revoked regardless.

use stepgate_sdk::prelude::*;

const DB: &str = "fiatrails";
const PRIMARY_REF: &str = "FIATRAILS_HMAC_SECRET_REF";
const NEW_REF: &str = "FIATRAILS_HMAC_SECRET_NEW_REF";
const INCIDENTS: &str = "fiatrails-incidents";
const CLIENTS: &str = "fiatrails-clients";
const INFRA: &str = "infrastructure";

/// The runbook's transition: old and new accepted for 7 days.
const TRANSITION_HOURS: i64 = 168;
/// A compromised secret's transition: as short as the clients can bear.
const COMPROMISE_TRANSITION_HOURS: i64 = 24;

const OPEN: &str = "SELECT id, reason, old_secret_ref, new_secret_ref, \
     EXTRACT(EPOCH FROM revoke_after - now())::bigint AS seconds_left, revoke_after::text AS revoke_after \
     FROM hmac_rotations WHERE phase = 'dual' ORDER BY id";
const RECORD: &str = "INSERT INTO hmac_rotations (reason, old_secret_ref, new_secret_ref, phase, started_at, revoke_after) \
     VALUES ($1, $2, $3, 'dual', now(), now() + make_interval(hours => $4::int))";
const CLOSE: &str = "UPDATE hmac_rotations SET phase = 'revoked', revoked_at = now() WHERE id = $1 AND phase = 'dual'";
const USES: &str = "SELECT coalesce(sum(verifications), 0)::bigint AS uses FROM hmac_verification_counts \
     WHERE secret_ref = $1 AND hour > now() - interval '24 hours'";

struct HmacRotation;

/// A secrets-manager reference: lower-case letters, digits and `/._-`.
/// Anything else (a value pasted by mistake) is refused.
fn reference(text: &str, what: &str) -> Result<String> {
    let ok = !text.is_empty()
        && text.len() <= 128
        && text
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"/._-".contains(&c))
        && text.bytes().any(|c| c == b'/');
    if ok {
        Ok(text.to_owned())
    } else {
        Err(Error::failed(format!(
            "{what} is not a secrets-manager reference like `fiatrails/hmac-secret-v2` (never put a secret's value in an alert)"
        )))
    }
}

struct Open {
    id: i64,
    reason: String,
    old: String,
    new: String,
    seconds_left: i64,
    revoke_after: String,
}

fn open_rotations() -> Result<Vec<Open>> {
    db::query(DB, OPEN, params![])?
        .iter()
        .map(|r| {
            Ok(Open {
                id: r.get("id")?,
                reason: r.get("reason")?,
                old: r.get("old_secret_ref")?,
                new: r.get("new_secret_ref")?,
                seconds_left: r.get("seconds_left")?,
                revoke_after: r.get("revoke_after")?,
            })
        })
        .collect()
}

fn uses(secret_ref: &str) -> Option<i64> {
    db::query(DB, USES, params![secret_ref])
        .and_then(|rows| rows.first()?.get("uses"))
        .ok()
}

fn outcome(summary: String, severity: &str, checklist: Vec<String>) -> Outcome {
    checklist
        .into_iter()
        .fold(Outcome::new(summary).severity(severity), Outcome::todo)
}

fn start(alert: &Alert) -> Result<Outcome> {
    let reason = match alert.label("reason") {
        Some(r @ ("scheduled" | "compromise")) => r.to_owned(),
        other => {
            return Err(Error::failed(format!(
                "`reason` is {other:?}: scheduled or compromise"
            )));
        }
    };
    let new = reference(
        alert.label("new_secret_ref").unwrap_or(""),
        "the `new_secret_ref` label",
    )?;
    let compromise = reason == "compromise";
    let hours = if compromise {
        alert.setting("transition_hours", COMPROMISE_TRANSITION_HOURS)?
    } else {
        alert.setting("transition_hours", TRANSITION_HOURS)?
    };
    let (old, second, open) = step(
        "Read the current secrets and open rotations",
        || -> Result<_> {
            let old = flags::get(PRIMARY_REF)?.ok_or_else(|| {
                Error::failed(format!(
                    "{PRIMARY_REF} is unset: stepgate cannot tell which secret is being replaced"
                ))
            })?;
            // A flag that holds no reference is refused without echoing it:
            // it may be a secret's value pasted by mistake.
            let second = match flags::get(NEW_REF)?.filter(|v| !v.is_empty()) {
                Some(v) => Some(reference(&v, NEW_REF).map_err(|_| {
                    Error::failed(format!(
                        "{NEW_REF} holds something that is not a secrets-manager reference (not shown): clear it first"
                    ))
                })?),
                None => None,
            };
            Ok((reference(&old, PRIMARY_REF)?, second, open_rotations()?))
        },
    )?;
    if let Some(o) = open.first() {
        return Err(Error::failed(format!(
            "a rotation to {} is already in progress (until {}): finish it before starting another",
            o.new, o.revoke_after
        )));
    }
    if new == old {
        return Err(Error::failed(format!(
            "{new} is already the primary secret"
        )));
    }
    // A second secret accepted by hand is not dropped for this one.
    if let Some(second) = second.as_deref().filter(|s| *s != new) {
        return Err(Error::failed(format!(
            "{NEW_REF} already accepts {second}: finish or clear that rotation before starting one to {new}"
        )));
    }
    let mut checklist = Vec::new();
    // Sent again after an unconfirmed rollout: dual verification is on
    // already, the secret was confirmed stored then.
    let resuming = second.as_deref() == Some(new.as_str());
    let told = if resuming {
        format!(
            "FiatRails HMAC rotation ({reason}) from {old} to {new} resumed: dual verification is on; the operator confirms the rollout, then stepgate asks approvers to record it and tell the clients; decide in stepgate now"
        )
    } else {
        format!(
            "FiatRails HMAC rotation ({reason}) from {old} to {new}: the operator confirms the new secret is stored, then stepgate asks approvers to accept both secrets for {hours} h; decide in stepgate now"
        )
    };
    if compromise && !resuming {
        pager::page_or_note(
            INFRA,
            Severity::Critical,
            "FiatRails HMAC secret suspected compromised: rotation started",
            &told,
            &mut checklist,
        );
    }
    pager::notify_or_note(INCIDENTS, &told, &mut checklist);
    let severity = if compromise { "CRITICAL" } else { "WARNING" };
    let stored = resuming
        || step("1. Generate and store the new secret", || {
            runbook::confirm(&format!(
                "The new secret is generated (openssl rand -hex 32) and stored in the secrets manager as {new}, and the file is shredded?"
            ))
        })?;
    if !stored {
        checklist.push(format!("Store the new secret as {new} first (never in an alert, a flag or a log), then start the rotation again"));
        return Ok(outcome(
            format!("HMAC rotation to {new} NOT started: the new secret is not confirmed stored"),
            "WARNING",
            checklist,
        ));
    }
    let why = format!(
        "FiatRails runbook, HMAC secret rotation ({reason}): accept {old} and {new} for {hours} h"
    );
    let (dual, dual_on) = step("2. Dual verification", || {
        if second.as_deref() == Some(new.as_str()) {
            return ("already on".to_owned(), true);
        }
        let fate = Fate::of(&flags::set(NEW_REF, &new, &why));
        if let Some(why) = fate.why_not() {
            checklist.push(format!(
                "Dual verification is NOT on ({why}): nothing else was done"
            ));
        }
        (fate.say("on"), fate.passed())
    });
    // The clients switch only once the API accepts both secrets: the
    // rollout comes first (zero downtime).
    let rolled_out = dual_on
        && step("3. Roll out the API with both secrets", || {
            runbook::confirm(&format!(
                "The API is rolled out (blue-green or rolling) accepting both {old} and {new}, and its error rate is unchanged?"
            ))
        })?;
    if dual_on && !rolled_out {
        checklist.push(format!(
            "Roll the API out accepting both secrets, then send HmacRotationStart again: it records the rotation and tells the clients ({NEW_REF} already holds {new})"
        ));
    }
    step(
        "4. Record the rotation, tell the clients",
        || -> Result<Outcome> {
            let (recorded, clients) = if rolled_out {
                let recorded = Fate::of(&db::execute(
                    DB,
                    RECORD,
                    params![reason.as_str(), old.as_str(), new.as_str(), hours],
                    &why,
                ));
                if let Some(why) = recorded.why_not() {
                    checklist.push(format!("The rotation is NOT recorded ({why}): the daily phase run cannot revoke {old}; record it by hand"));
                }
                // The clients hear a revocation date only once something
                // will enforce it: the recorded rotation.
                let clients = if recorded.passed() {
                    let clients = Fate::of(&pager::notify(
                        CLIENTS,
                        &format!(
                            "HMAC secret rotation in progress: please switch to the new secret within {hours} h; the old secret is revoked after that. Your account manager has the new secret."
                        ),
                    ));
                    if let Some(why) = clients.why_not() {
                        checklist.push(format!(
                            "The API's clients are NOT told ({why}): email them the revocation date"
                        ));
                    }
                    checklist.push(format!(
                        "The daily HmacRotationPhase run revokes {old} once the transition ends"
                    ));
                    clients.say("told")
                } else {
                    checklist.push(
                        "Record the rotation, then tell the clients the revocation date".to_owned(),
                    );
                    "NOT told (nothing recorded)".to_owned()
                };
                (recorded.say("recorded"), format!("clients {clients}"))
            } else {
                ("NOT recorded".to_owned(), "clients NOT told".to_owned())
            };
            let rollout = if !dual_on {
                ""
            } else if rolled_out {
                "; rollout confirmed"
            } else {
                "; rollout NOT confirmed"
            };
            let summary = format!(
                "HMAC rotation ({reason}) from {old} to {new}: dual verification {dual}{rollout}; rotation {recorded}; {clients}"
            );
            pager::notify_or_note(INCIDENTS, &format!("FiatRails: {summary}"), &mut checklist);
            Ok(outcome(summary, severity, checklist))
        },
    )
}

fn phase() -> Result<Outcome> {
    let open = step("Read the open rotation", open_rotations)?;
    let Some(rotation) = open.into_iter().next() else {
        // Dual verification on but nothing recorded (a rollout never
        // confirmed, a record refused): the old secret would stay valid
        // for ever.
        let second = flags::get(NEW_REF).ok().flatten().filter(|v| !v.is_empty());
        if second.is_some() {
            let mut checklist = Vec::new();
            let summary = format!(
                "{NEW_REF} is set but no HMAC rotation is recorded: the old secret stays accepted until one is"
            );
            step("Report a rotation left half done", || {
                pager::notify_or_note(INCIDENTS, &format!("FiatRails: {summary}"), &mut checklist)
            });
            checklist.push("Send HmacRotationStart again with the same new_secret_ref once the API is rolled out: it records the rotation and tells the clients".to_owned());
            return Ok(outcome(summary, "WARNING", checklist));
        }
        return Ok(outcome(
            "No HMAC rotation in progress".to_owned(),
            "INFO",
            Vec::new(),
        ));
    };
    let (old_uses, new_uses) = step("Which secret do clients use?", || {
        (uses(&rotation.old), uses(&rotation.new))
    });
    let shown = |n: Option<i64>| {
        n.map(|n| n.to_string())
            .unwrap_or_else(|| "unknown".to_owned())
    };
    let usage = format!(
        "in 24 h {} verified {} request(s), {} verified {}",
        rotation.old,
        shown(old_uses),
        rotation.new,
        shown(new_uses)
    );
    let mut checklist = Vec::new();
    if rotation.seconds_left > 0 {
        let summary = format!(
            "HMAC rotation to {}: {} h of the transition left (revocation after {}); {usage}",
            rotation.new,
            rotation.seconds_left / 3600,
            rotation.revoke_after
        );
        step("Report progress", || {
            pager::notify_or_note(INCIDENTS, &format!("FiatRails: {summary}"), &mut checklist)
        });
        return Ok(outcome(summary, "INFO", checklist));
    }
    let compromise = rotation.reason == "compromise";
    if !compromise && old_uses != Some(0) {
        let summary = format!(
            "HMAC rotation to {}: the transition has ended but {usage}: revocation of {} held",
            rotation.new, rotation.old
        );
        step("Hold the revocation", || {
            pager::notify_or_note(
                INCIDENTS,
                &format!("FiatRails: {summary}; chase the clients still on it"),
                &mut checklist,
            )
        });
        checklist.push(format!("Find the clients still signing with {} and get them to switch; the next daily run revokes once nobody does", rotation.old));
        return Ok(outcome(summary, "WARNING", checklist));
    }
    step("Revoke the old secret", || -> Result<Outcome> {
        pager::notify_or_note(
            INCIDENTS,
            &format!(
                "FiatRails HMAC rotation to {}: the transition has ended ({usage}); stepgate asks an approver to revoke {}; decide in stepgate now",
                rotation.new, rotation.old
            ),
            &mut checklist,
        );
        let why = format!(
            "FiatRails runbook, HMAC secret rotation ({}): the transition has ended; {usage}",
            rotation.reason
        );
        let primary = Fate::of(&flags::set(PRIMARY_REF, &rotation.new, &why));
        let (cleared, closed) = if primary.passed() {
            let cleared = Fate::of(&flags::set(NEW_REF, "", &why));
            let closed = Fate::of(&db::execute(DB, CLOSE, params![rotation.id], &why));
            for (fate, what) in [
                (&cleared, format!("{NEW_REF} is NOT cleared")),
                (&closed, "The rotation is NOT closed".to_owned()),
            ] {
                if let Some(why) = fate.why_not() {
                    checklist.push(format!("{what} ({why}): do it by hand"));
                }
            }
            (cleared.say("cleared"), closed.say("closed"))
        } else {
            checklist.push(format!(
                "{} is NOT revoked ({}): it is still accepted",
                rotation.old,
                primary.why_not().unwrap_or("")
            ));
            ("NOT cleared".to_owned(), "NOT closed".to_owned())
        };
        if primary.passed() {
            checklist.extend([
                "Restart the API with only the new secret and watch for auth failures: there must be none".to_owned(),
                format!("Delete {} from the secrets manager", rotation.old),
                "Update seed.json's hmacSalt and record the rotation date in the change log".to_owned(),
            ]);
        }
        let summary = format!(
            "HMAC rotation to {}: {} {}; second secret {cleared}; rotation {closed}{}",
            rotation.new,
            rotation.old,
            primary.say("revoked"),
            if compromise && old_uses.is_some_and(|n| n > 0) {
                " (compromised: revoked although clients still used it)"
            } else {
                ""
            }
        );
        pager::notify_or_note(INCIDENTS, &format!("FiatRails: {summary}"), &mut checklist);
        Ok(outcome(
            summary,
            if compromise { "CRITICAL" } else { "WARNING" },
            checklist,
        ))
    })
}

impl Playbook for HmacRotation {
    fn describe() -> Description {
        Description::new("fiatrails-hmac-rotation", "1.0.0")
            .summary(
                "FiatRails HMAC secret rotation (planned or compromise) by secret references only: dual \
                 verification, the rotation recorded and the clients told (each approved), then a daily \
                 phase run that revokes the old secret once the transition ends and nobody uses it.",
            )
            .answers("HmacRotationStart")
            .answers("HmacRotationPhase")
            .db_read(DB)
            .db_write(DB)
            .flag_read(PRIMARY_REF)
            .flag_read(NEW_REF)
            .flag_write(PRIMARY_REF)
            .flag_write(NEW_REF)
            .page(INFRA)
            .notify(INCIDENTS)
            .notify(CLIENTS)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        match alert.name.as_str() {
            "HmacRotationStart" => start(&alert),
            _ => phase(),
        }
    }
}

stepgate_sdk::playbook!(HmacRotation);
