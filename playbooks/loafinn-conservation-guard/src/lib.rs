//! loa-finn §3: conservation guard failure.
//!
//! Indicators: `conservation_guard_state = 0`, HARD_FAIL logs. The runbook's
//! first rule is a refusal: **do not set EVALUATOR_BYPASS=true**, which
//! disables all invariant checking. This playbook has no grant to any flag
//! and sets none; it reads whether the bypass is on (the feature-flag
//! admin API) and escalates if somebody set it.
//!
//! - **Triage**: the guard's state from the billing health endpoint
//!   (`fail`, or `degraded` when the evaluator does not compile) and the
//!   failing invariant (the alert's `invariant` label, from the HARD_FAIL
//!   log, or the health answer's); negative costs in the WAL of the last
//!   hour (`cost_non_negative`'s evidence).
//! - **Escalation**: on-call is paged with what the invariant means and
//!   where to look; `degraded` retries by itself every 3 s, so it is told
//!   to the incident channel unless it lasts.
//! - **Recovery** (checklist): fix the root cause (code or data); the guard
//!   recovers by itself once the evaluator compiles; verify `circuit=closed`.

use stepgate_sdk::prelude::*;

const DB: &str = "loa_finn";
const ADMIN: &str = "loa_admin";
const HEALTH: &str = "/api/v1/admin/billing/health";
const FLAGS: &str = "/api/v1/admin/feature-flags";
const ONCALL: &str = "loa-oncall";
const INCIDENTS: &str = "loa-incidents";

/// A `degraded` guard that has fired this long is paged, not only told.
const DEGRADED_PAGE_MINUTES: i64 = 15;

const NEGATIVE_COSTS: &str = "SELECT count(*) AS entries, count(DISTINCT account_id) AS accounts FROM wal_entries \
     WHERE amount_micro < 0 AND created_at > now() - interval '1 hour'";

/// The runbook's invariants and what each failing one means.
const INVARIANTS: &[(&str, &str)] = &[
    (
        "budget_conservation",
        "spending exceeds limits: find the accounts over budget",
    ),
    (
        "cost_non_negative",
        "a negative cost was recorded: likely a bug, check the latest deploy",
    ),
    (
        "reserve_within_allocation",
        "a reserve exceeds its allocation",
    ),
    ("entitlement_valid", "an entitlement is in an invalid state"),
    (
        "rate_consistency",
        "the exchange rate drifted between reserve and commit",
    ),
];

struct ConservationGuard;

impl Playbook for ConservationGuard {
    fn describe() -> Description {
        Description::new("loafinn-conservation-guard", "1.0.0")
            .summary(
                "loa-finn runbook 3, conservation guard failure: reads the guard's state and failing \
                 invariant, whether EVALUATOR_BYPASS is on (never sets it), and negative WAL costs; pages \
                 on-call with what the invariant means.",
            )
            .answers("ConservationGuardFailed")
            .db_read(DB)
            .http(ADMIN, &format!("GET {HEALTH}"))
            .http(ADMIN, &format!("GET {FLAGS}"))
            .page(ONCALL)
            .notify(INCIDENTS)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let page_after = alert.setting("degraded_page_minutes", DEGRADED_PAGE_MINUTES)?;
        let (state, invariant, bypass, negative) = step("Triage", || {
            let health = http::get(ADMIN, HEALTH).ok().filter(|h| h.ok());
            let state = health
                .as_ref()
                .and_then(|h| {
                    h.body
                        .get("conservation_guard")?
                        .as_str()
                        .and_then(plain)
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| "unknown".to_owned());
            // From the alert or the health answer: a plain name only.
            let invariant = alert
                .plain_label("invariant")
                .map(str::to_owned)
                .or_else(|| {
                    health
                        .as_ref()?
                        .body
                        .get("invariant")?
                        .as_str()
                        .and_then(plain)
                        .map(str::to_owned)
                });
            let bypass = http::get(ADMIN, FLAGS)
                .ok()
                .filter(|f| f.ok())
                .and_then(|f| f.body.get("evaluator_bypass")?.as_bool());
            let negative = db::query(DB, NEGATIVE_COSTS, params![])
                .and_then(|rows| {
                    let row = rows.first()?;
                    Ok((row.get::<i64>("entries")?, row.get::<i64>("accounts")?))
                })
                .ok();
            (state, invariant, bypass, negative)
        });
        step("Escalate", || -> Result<Outcome> {
            let mut checklist = Vec::new();
            let meaning = match invariant.as_deref() {
                None => "the failing invariant is not known: read the HARD_FAIL log".to_owned(),
                Some(name) => match INVARIANTS.iter().find(|(n, _)| *n == name) {
                    Some((_, meaning)) => format!("`{name}`: {meaning}"),
                    None => format!("`{name}`, an invariant the runbook does not list"),
                },
            };
            let evidence = match negative {
                Some((0, _)) => "no negative cost in the WAL in the last hour".to_owned(),
                Some((entries, accounts)) => format!(
                    "{entries} negative-cost WAL entries from {accounts} account(s) in the last hour"
                ),
                None => "the WAL could not be read".to_owned(),
            };
            let bypass_said = match bypass {
                Some(true) => "EVALUATOR_BYPASS IS ON: no invariant is being checked",
                Some(false) => "EVALUATOR_BYPASS is off",
                None => "EVALUATOR_BYPASS unknown (the flag API did not say)",
            };
            let fired_minutes = alert
                .starts_at_ms()
                .map(|start| (runbook::now_millis() - start) / 60_000);
            let degraded = state == "degraded";
            let lasting = fired_minutes.is_some_and(|m| m >= page_after);
            let page = !degraded || lasting || bypass == Some(true);
            let severity = if page { "CRITICAL" } else { "WARNING" };
            let summary = if degraded {
                format!(
                    "Conservation guard degraded (the evaluator does not compile{}); {bypass_said}",
                    fired_minutes
                        .map(|m| format!(", {m} min"))
                        .unwrap_or_default()
                )
            } else {
                format!("Conservation guard {state}: {meaning}; {evidence}; {bypass_said}")
            };
            if page {
                pager::page_or_note(
                    ONCALL,
                    Severity::Critical,
                    &format!("loa-finn conservation guard: {summary}"),
                    "do NOT set EVALUATOR_BYPASS=true: it disables all invariant checking",
                    &mut checklist,
                );
            }
            pager::notify_or_note(
                INCIDENTS,
                &format!("loa-finn {}: {summary}", alert.name),
                &mut checklist,
            );
            if bypass == Some(true) {
                checklist.push("Find who set EVALUATOR_BYPASS and why; unset it as soon as the invariant is understood".to_owned());
            }
            if degraded {
                checklist.push("Check the constraint expressions for JavaScript syntax errors and review the latest deploy; the evaluator retries every 3 s".to_owned());
            } else {
                checklist.push(format!(
                    "Fix the root cause of {meaning} (a code fix or a data correction)"
                ));
            }
            checklist
                .push("Verify the `circuit=closed` log entry once the guard recovers".to_owned());
            let mut outcome = Outcome::new(summary)
                .severity(severity)
                .field("guard", state.as_str())
                .field("invariant", invariant.as_deref().unwrap_or(""))
                .field("bypass_on", bypass == Some(true));
            for item in checklist {
                outcome = outcome.todo(item);
            }
            Ok(outcome)
        })
    }
}

stepgate_sdk::playbook!(ConservationGuard);
