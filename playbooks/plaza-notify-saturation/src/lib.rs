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

/// NOTIFY queue use at which the restart is due, percent.
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
            Ok((stuck, used.parse::<f64>().unwrap_or(0.0)))
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
            let saturated = used >= QUEUE_FULL_PERCENT;
            let explained = !stuck.is_empty() || saturated;
            let mut checklist = Vec::new();
            let mut restarted = false;
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
                let body = serde_json::json!({ "service": "plaza-api", "action": "restart" });
                match http::post(ADMIN, RESTART, &body, &reason) {
                    Ok(answer) if answer.ok() => restarted = true,
                    Ok(answer) => checklist.push(format!(
                        "The admin endpoint answered {}: restart plaza-api by hand",
                        answer.status
                    )),
                    Err(e) => checklist.push(format!(
                        "plaza-api was NOT restarted ({}): restart it by hand",
                        e.message()
                    )),
                }
            } else {
                checklist.push("No stuck transaction and the NOTIFY queue is not full: check Redis for stuck cache locks and that the broker process runs (systemctl status plaza-api)".to_owned());
            }
            let summary = format!(
                "{} transaction(s) idle in transaction, NOTIFY queue {used:.2}% full{}",
                stuck.len(),
                if explained { "" } else { ": not the database" }
            );
            pager::notify(
                INCIDENT,
                &format!(
                    "SEV-1 Plaza NOTIFY saturation (alert {}): {summary}. plaza-api restart: {}. Oldest: {}",
                    alert.name,
                    if restarted { "yes" } else { "no" },
                    stuck.first().map(String::as_str).unwrap_or("none")
                ),
            )?;
            checklist.push("If saturation persists: schedule the split to a dedicated broker (plaza-api --role broker-only on a separate host)".into());
            let mut outcome = Outcome::new(summary)
                .severity("SEV-1")
                .field("idle_in_transaction", stuck.len() as i64)
                .field("queue_percent_used", format!("{used:.2}"))
                .field("api_restarted", restarted);
            for item in checklist {
                outcome = outcome.todo(item);
            }
            Ok(outcome)
        })
    }
}

stepgate_sdk::playbook!(NotifySaturation);
