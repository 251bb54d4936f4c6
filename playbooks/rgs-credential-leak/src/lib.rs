//! RGS: operator credential leak (suspected or confirmed).
//!
//! Codifies playbook 3 of the RGS incident response playbooks. Severity is
//! always SEV1.
//!
//! - **Detect**: the operator tells us, an anomalous request pattern, or a
//!   public disclosure; the alert (`OperatorCredentialLeak`) names
//!   `operator_id` and `kid`.
//! - **Triage**: identify the credential; has it signed anything in the
//!   last 24 h; is there evidence of misuse (source IPs it was never seen
//!   from in the week before).
//! - **Mitigate**: revoke it at once (a database write a human approves),
//!   page on-call, tell the operator's compliance contact; the replacement
//!   key, the 7-day audit and any player notice stay with humans (the
//!   outcome's checklist).
//! - A key revoked before that still signs calls after its revocation is
//!   the worst case: the revocation is not enforced somewhere (a cached
//!   key, a verifier that never reloaded). It is escalated as such, never
//!   reported as "already revoked".

use std::collections::BTreeSet;

use stepgate_sdk::prelude::*;

const DB: &str = "rgs";
const ONCALL: &str = "rgs-oncall";
const OPERATORS: &str = "rgs-operators";

/// Triage 1, verbatim.
const IDENTIFY: &str = "SELECT id, kid, created_at::text AS created_at, revoked_at::text AS revoked_at \
     FROM operator_credentials WHERE operator_id=$1 AND kid=$2";
/// Triage 2: what the credential signed in the last 24 h, per hour.
const USAGE_24H: &str = "SELECT date_trunc('hour', created_at)::text AS hour, count(*) AS calls \
     FROM wallet_calls WHERE operator_id=$1 AND credential_id=$2 AND created_at > now() - interval '24h' \
     GROUP BY 1 ORDER BY 1 DESC";
/// Triage 3: where its last 24 h came from…
const IPS_24H: &str = "SELECT source_ip, count(*) AS calls FROM wallet_calls \
     WHERE credential_id=$1 AND created_at > now() - interval '24h' AND source_ip IS NOT NULL \
     GROUP BY 1 ORDER BY 2 DESC";
/// …and where it was seen in the week before.
const IPS_KNOWN: &str = "SELECT DISTINCT source_ip FROM wallet_calls \
     WHERE credential_id=$1 AND created_at <= now() - interval '24h' \
     AND created_at > now() - interval '8 days' AND source_ip IS NOT NULL";
const COMPLIANCE: &str = "SELECT name, compliance_contact FROM operators WHERE id=$1";
/// Calls a revoked credential signed after its revocation.
const SIGNED_AFTER_REVOCATION: &str = "SELECT count(w.id) AS calls, max(w.created_at)::text AS last_call \
     FROM operator_credentials c JOIN wallet_calls w ON w.credential_id = c.id \
     WHERE c.id=$1 AND c.revoked_at IS NOT NULL AND w.created_at > c.revoked_at";
/// Mitigate: immediate revocation (only if not revoked already).
const REVOKE: &str =
    "UPDATE operator_credentials SET revoked_at=now() WHERE id=$1 AND revoked_at IS NULL";

struct CredentialLeak;

struct Credential {
    id: i64,
    revoked: bool,
}

/// What the last 24 h say; `None` when the database did not answer.
struct Usage {
    calls: i64,
    new_ips: Vec<String>,
    /// Calls signed after the key's revocation, and the last one's time.
    after_revocation: (i64, Option<String>),
}

impl Playbook for CredentialLeak {
    fn describe() -> Description {
        Description::new("rgs-credential-leak", "1.0.0")
            .summary(
                "RGS playbook 3, operator credential leak (SEV1): identifies the key, reads what it \
                 signed in the last 24 h and from which new IPs, revokes it (approved), pages on-call \
                 and tells the operator's compliance contact.",
            )
            .answers("OperatorCredentialLeak")
            .db_read(DB)
            .db_write(DB)
            .page(ONCALL)
            .notify(OPERATORS)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let operator = alert
            .label("operator_id")
            .ok_or_else(|| Error::failed("the alert has no `operator_id` label"))?
            .to_owned();
        let kid = alert
            .label("kid")
            .ok_or_else(|| Error::failed("the alert has no `kid` label: which key leaked?"))?
            .to_owned();

        let (credential, usage) = step("Triage", || -> Result<_> {
            let rows = db::query(DB, IDENTIFY, params![operator.as_str(), kid.as_str()])?;
            let Some(row) = rows.iter().next() else {
                return Ok((None, None));
            };
            let revoked_at: Option<String> = row.get("revoked_at")?;
            let credential = Credential {
                id: row.get("id")?,
                revoked: revoked_at.is_some(),
            };
            let usage = match usage(&operator, credential.id) {
                Ok(usage) => Some(usage),
                Err(e) => {
                    runbook::warn(&format!("usage of the last 24 h unknown: {}", e.message()));
                    None
                }
            };
            Ok((Some(credential), usage))
        })?;

        let Some(credential) = credential else {
            return step("Escalate: unknown key", || -> Result<Outcome> {
                pager::page(
                    ONCALL,
                    Severity::Critical,
                    &format!("SEV1 RGS credential leak: {operator} has no key `{kid}`"),
                    &format!(
                        "alert {}: no operator_credentials row for {operator}/{kid}; identify the credential by hand",
                        alert.name
                    ),
                )?;
                Ok(Outcome::new(format!("No credential `{kid}` for {operator}: nothing revoked"))
                    .severity("SEV1")
                    .todo("Identify the leaked credential by hand (the kid may be mistyped) and revoke it")
                    .todo("Post-mortem within 5 business days (every SEV1)"))
            });
        };
        step("Mitigate", || {
            mitigate(&alert, &operator, &kid, &credential, usage.as_ref())
        })
    }
}

stepgate_sdk::playbook!(CredentialLeak);

fn usage(operator: &str, credential: i64) -> Result<Usage> {
    let calls: i64 = db::query(DB, USAGE_24H, params![operator, credential])?
        .iter()
        .map(|row| row.get::<i64>("calls"))
        .sum::<Result<i64>>()?;
    let known: BTreeSet<String> = db::query(DB, IPS_KNOWN, params![credential])?
        .iter()
        .map(|row| row.get::<String>("source_ip"))
        .collect::<Result<_>>()?;
    let mut new_ips = Vec::new();
    for row in db::query(DB, IPS_24H, params![credential])?.iter() {
        let ip: String = row.get("source_ip")?;
        if !known.contains(&ip) {
            new_ips.push(ip);
        }
    }
    let after = db::query(DB, SIGNED_AFTER_REVOCATION, params![credential])?;
    let after = after.first()?;
    Ok(Usage {
        calls,
        new_ips,
        after_revocation: (after.get("calls")?, after.get("last_call")?),
    })
}

fn mitigate(
    alert: &Alert,
    operator: &str,
    kid: &str,
    credential: &Credential,
    usage: Option<&Usage>,
) -> Result<Outcome> {
    let mut checklist = Vec::new();
    let mut revocation = None;
    if !credential.revoked {
        // The humans first: the revocation waits for an approver.
        let told = pager::page(
            ONCALL,
            Severity::Critical,
            &format!(
                "SEV1 RGS operator credential leak: {operator} key {kid}; stepgate asks to revoke it now"
            ),
            &format!(
                "alert {}: approve or deny the revocation of credential {} in stepgate now; a second page follows with the usage evidence",
                alert.name, credential.id
            ),
        );
        if let Err(e) = told {
            checklist.push(format!(
                "On-call was NOT paged before the revocation ({}): call them",
                e.message()
            ));
        }
        let reason = format!(
            "RGS playbook 3 (operator credential leak), Mitigate: immediate revocation of {operator}'s key {kid} (credential {})",
            credential.id
        );
        let fate = Fate::of(&db::execute(DB, REVOKE, params![credential.id], &reason));
        if let Some(why) = fate.why_not() {
            checklist.push(format!(
                "{kid} is NOT revoked ({why}): revoke it in the portal, or decide otherwise"
            ));
        }
        revocation = Some(fate);
    }
    // Revoked, and still signing: the revocation is not enforced.
    let still_signing = match usage {
        Some(Usage {
            after_revocation: (calls, last),
            ..
        }) if credential.revoked && *calls > 0 => Some(format!(
            "REVOKED BUT STILL SIGNING: {calls} call(s) after its revocation, the last at {}",
            last.as_deref().unwrap_or("?")
        )),
        _ => None,
    };
    if still_signing.is_some() {
        checklist.insert(
            0,
            format!("{kid} is revoked yet still signs: block it at the edge now (WAF / API gateway deny on kid {kid}), then find the verifier that does not enforce the revocation (cached keys? a replica that never reloaded?)"),
        );
    }
    let evidence = match usage {
        Some(u) if u.new_ips.is_empty() => {
            format!("{} call(s) in the last 24 h, no new source IP", u.calls)
        }
        Some(u) => format!(
            "{} call(s) in the last 24 h, from new source IP(s) {}",
            u.calls,
            u.new_ips.join(", ")
        ),
        None => "usage in the last 24 h unknown (the query failed)".to_owned(),
    };
    let revoked_said = match (&revocation, &still_signing) {
        (Some(fate), _) => fate.say("revoked"),
        (None, Some(signing)) => signing.clone(),
        (None, None) => "already revoked".to_owned(),
    };
    let details = format!(
        "alert {} ({}): {operator}'s key {kid}: {evidence}; {revoked_said}",
        alert.name,
        alert.fingerprint.as_deref().unwrap_or("no fingerprint"),
    );
    pager::page_or_note(
        ONCALL,
        Severity::Critical,
        &format!(
            "SEV1 RGS operator credential leak: {operator} key {kid}{}",
            if still_signing.is_some() {
                ": REVOKED BUT STILL SIGNING"
            } else {
                ""
            }
        ),
        &details,
        &mut checklist,
    );
    let contact: Option<String> = db::query(DB, COMPLIANCE, params![operator])?
        .iter()
        .next()
        .map(|row| row.get("compliance_contact"))
        .transpose()?
        .flatten();
    match &contact {
        Some(contact) => pager::notify(
            OPERATORS,
            &format!(
                "To {contact} ({operator} compliance): your RGS API key {kid} is suspected leaked and {}. {evidence}. \
                 A replacement key comes through a secure channel.",
                // External: the write's fate, never an internal reason.
                match &revocation {
                    Some(Fate::Made) | None => "has been revoked",
                    Some(Fate::Planned) => "will be revoked",
                    Some(_) => "is not revoked yet",
                }
            ),
        )?,
        None => checklist.push(format!(
            "{operator} has no compliance contact on record: find one (this is also an RCA finding)"
        )),
    }
    if usage.is_none() {
        checklist
            .push("Read the key's wallet_calls of the last 24 h by hand (the query failed)".into());
    }
    checklist.extend([
        format!("Issue a replacement (kid, secret) for {operator} through a secure channel (1Password / Vault / PGP), runbook.md §6.1"),
        format!("Audit the last 7 days of WalletCall and InboundIdempotency rows signed by {kid}; any request off a known-good session pattern is a finding"),
        "Alert players only if misuse with player impact is confirmed".into(),
        "RCA: source of the leak, dwell time (first misuse to revocation), transactions to roll back, whether MFA / IP allow-list would have prevented it".into(),
        "Post-mortem within 5 business days (every SEV1)".into(),
    ]);
    let mut outcome = Outcome::new(format!(
        "{operator}'s key {kid}: {evidence}; {revoked_said}"
    ))
    .severity("SEV1")
    .field("credential_id", credential.id)
    .field("already_revoked", credential.revoked)
    .field(
        "revoked",
        credential.revoked || revocation.as_ref().is_some_and(Fate::passed),
    )
    .field("still_signing", still_signing.is_some());
    if let Some(u) = usage {
        outcome = outcome
            .field("calls_24h", u.calls)
            .field("new_source_ips", u.new_ips.join(","))
            .field("calls_after_revocation", u.after_revocation.0);
    }
    for item in checklist {
        outcome = outcome.todo(item);
    }
    Ok(outcome)
}
