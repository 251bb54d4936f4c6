//! Plaza: Postgres LISTEN/NOTIFY saturation (SEV-1).
//!
//! Codifies the Plaza runbook's "Postgres LISTEN/NOTIFY saturation":
//!
//! - **Symptom**: the broker logs "notification queue full", or messages
//!   stop reaching recipients (`MessageDeliveryP99Breached`).
//! - **Triage**: the runbook's query for stuck transactions (idle in
//!   transaction, oldest first), and how full the NOTIFY queue is
//!   (`pg_notification_queue_usage()`).
//! - **Mitigation**: restart plaza-api through its admin endpoint (approved:
//!   the broker drops live connections; clients reconnect with backoff).
//!   If saturation persists, the broker-only split goes on the checklist.

use stepgate_sdk::prelude::*;

const DB: &str = "plaza_pg";
const ADMIN: &str = "plaza_admin";
const RESTART: &str = "/admin/api/restart";
const INCIDENT: &str = "incident";

/// The runbook's query, with the columns a human needs.
const STUCK: &str = "SELECT pid, usename, EXTRACT(EPOCH FROM now() - xact_start)::bigint AS open_seconds, \
     left(query, 200) AS query FROM pg_stat_activity WHERE state = 'idle in transaction' \
     ORDER BY xact_start LIMIT 20";
const QUEUE: &str =
    "SELECT (pg_notification_queue_usage() * 100)::numeric(6, 2)::text AS percent_used";

/// NOTIFY queue use at which the restart is due, percent (a local choice:
/// the runbook says "queue full" and gives no number); the alert's
/// `queue_full_percent` annotation overrides it.
const QUEUE_FULL_PERCENT: f64 = 50.0;

struct NotifySaturation;

impl Playbook for NotifySaturation {
    fn describe() -> Description {
        Description::new("plaza-notify-saturation", "1.0.0")
            .summary(
                "Plaza runbook \"Postgres LISTEN/NOTIFY saturation\" (SEV-1): finds transactions idle in \
                 transaction and how full the NOTIFY queue is; restarts plaza-api (approved) when either \
                 explains the saturation.",
            )
            .answers("MessageDeliveryP99Breached")
            .answers("NotifyQueueSaturated")
            .db_read(DB)
            .http(ADMIN, &format!("POST {RESTART}"))
            .notify(INCIDENT)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let full_at = match alert.annotation("queue_full_percent") {
            Some(text) => text
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=100.0).contains(p))
                .ok_or_else(|| {
                    Error::failed(format!(
                        "`queue_full_percent` is `{text}`, not a percentage from 0 to 100"
                    ))
                })?,
            None => QUEUE_FULL_PERCENT,
        };
        let triage = step("Triage", || -> Result<_> {
            let stuck = db::query(DB, STUCK, params![])?
                .iter()
                .map(|r| -> Result<String> {
                    Ok(format!(
                        "pid {} ({}) open {} s: {}",
                        r.get::<i64>("pid")?,
                        r.get::<Option<String>>("usename")?.unwrap_or_default(),
                        r.get::<i64>("open_seconds")?,
                        r.get::<Option<String>>("query")?.unwrap_or_default()
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            let used: String = db::query(DB, QUEUE, params![])?
                .first()?
                .get("percent_used")?;
            let used = used.parse::<f64>().map_err(|_| {
                Error::failed(format!(
                    "the NOTIFY queue use reads `{used}`, not a percentage"
                ))
            })?;
            Ok((stuck, used))
        });
        let (stuck, used) = match triage {
            Ok(t) => t,
            Err(e) => {
                return step("Escalate: triage failed", || -> Result<Outcome> {
                    pager::notify(
                        INCIDENT,
                        &format!(
                            "SEV-1 Plaza NOTIFY saturation (alert {}): pg_stat_activity could not be read ({}); triage by hand",
                            alert.name,
                            e.message()
                        ),
                    )?;
                    Ok(Outcome::new(format!("Triage failed: {}", e.message()))
                        .severity("SEV-1")
                        .todo("Run the idle-in-transaction query by hand; check Redis for stuck cache locks; systemctl status plaza-api"))
                });
            }
        };
        step("Mitigation", || -> Result<Outcome> {
            let saturated = used >= full_at;
            let explained = !stuck.is_empty() || saturated;
            let mut checklist = Vec::new();
            let mut restarted = None;
            if explained {
                let why = if stuck.is_empty() {
                    format!("the NOTIFY queue is {used:.2}% full")
                } else {
                    format!(
                        "{} transaction(s) idle in transaction, NOTIFY queue {used:.2}% full",
                        stuck.len()
                    )
                };
                let reason = format!(
                    "Plaza runbook, LISTEN/NOTIFY saturation, Mitigation: restart plaza-api ({why}); clients reconnect with backoff"
                );
                // The humans first: the restart waits for an approver.
                let told = pager::notify(
                    INCIDENT,
                    &format!(
                        "SEV-1 Plaza NOTIFY saturation (alert {}): {why}; stepgate asks an approver to restart plaza-api (live connections drop, clients reconnect); decide in stepgate now",
                        alert.name
                    ),
                );
                if let Err(e) = told {
                    checklist.push(format!(
                        "#{INCIDENT} was NOT told before the approval ({}): tell them",
                        e.message()
                    ));
                }
                let body = serde_json::json!({ "service": "plaza-api", "action": "restart" });
                let fate = Fate::of_http(&http::post(ADMIN, RESTART, &body, &reason));
                if let Some(why) = fate.why_not() {
                    checklist.push(format!(
                        "plaza-api is NOT restarted ({why}): restart it by hand"
                    ));
                }
                restarted = Some(fate);
            } else {
                checklist.push("No stuck transaction and the NOTIFY queue is not full: check Redis for stuck cache locks and that the broker process runs (systemctl status plaza-api)".to_owned());
            }
            let summary = format!(
                "{} transaction(s) idle in transaction, NOTIFY queue {used:.2}% full{}",
                stuck.len(),
                match &restarted {
                    Some(fate) => format!("; plaza-api {}", fate.say("restarted")),
                    None => ": not the database".to_owned(),
                }
            );
            pager::notify_or_note(
                INCIDENT,
                &format!(
                    "SEV-1 Plaza NOTIFY saturation (alert {}): {summary}. Oldest: {}",
                    alert.name,
                    stuck.first().map(String::as_str).unwrap_or("none")
                ),
                &mut checklist,
            );
            checklist.push("If saturation persists: schedule the split to a dedicated broker (plaza-api --role broker-only on a separate host)".into());
            let mut outcome = Outcome::new(summary)
                .severity("SEV-1")
                .field("idle_in_transaction", stuck.len() as i64)
                .field("queue_percent_used", format!("{used:.2}"))
                .field(
                    "api_restarted",
                    restarted.as_ref().is_some_and(Fate::passed),
                );
            for item in checklist {
                outcome = outcome.todo(item);
            }
            Ok(outcome)
        })
    }
}

stepgate_sdk::playbook!(NotifySaturation);
