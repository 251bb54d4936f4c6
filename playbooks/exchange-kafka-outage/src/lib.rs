//! Spot exchange §3.5: Kafka/Redpanda outage (SEV2).
//!
//! Signal: producer errors, brokers unavailable, consumer lag skyrocketing.
//! The runbook's first action is a thing *not* to do: **keep the Trading
//! Core running** (it writes its WAL and outbox; nothing is lost while
//! Kafka is down). This playbook has no grant to any trading control, so it
//! cannot halt trading; it:
//!
//! - reads how far behind publishing is (the outbox's unpublished rows and
//!   their age; the ledger consumer's lag);
//! - degrades the WebSocket edge (`EXCHANGE_WS_DEGRADED=kafka`: clients are
//!   told, and rely on snapshots after recovery), approved;
//! - pauses the noncritical consumers (`analytics`) through the admin API,
//!   approved.
//!
//! Recovery (brokers and ISR healthy, outbox publishing resumed and
//! watched, the ledger consumer caught up idempotently) is on the
//! checklist.

use exchange_controls::{ADMIN, ticket};
use stepgate_sdk::prelude::*;

const DB: &str = "exchange";
const INCIDENTS: &str = "exchange-incidents";
const DEGRADED: &str = "EXCHANGE_WS_DEGRADED";
const PAUSE: &str = "/admin/consumers/pause";
/// Consumer groups that may wait: the runbook's "noncritical consumers".
const NONCRITICAL: &[&str] = &["analytics"];

const OUTBOX: &str = "SELECT count(*) AS unpublished, \
     coalesce(EXTRACT(EPOCH FROM now() - min(created_at))::bigint, 0) AS oldest_seconds \
     FROM outbox WHERE published_at IS NULL";
const LEDGER_LAG: &str =
    "SELECT coalesce(sum(lag), 0)::bigint AS lag FROM kafka_consumer_lag WHERE consumer = 'ledger'";

struct KafkaOutage;

impl Playbook for KafkaOutage {
    fn describe() -> Description {
        Description::new("exchange-kafka-outage", "1.0.0")
            .summary(
                "Spot exchange §3.5, Kafka outage: keeps the Trading Core running (no trading control is \
                 granted), reads the outbox backlog and ledger lag, degrades the WS edge and pauses the \
                 analytics consumers (each approved) after telling the incident channel.",
            )
            .answers("KafkaUnavailable")
            .db_read(DB)
            .flag_read(DEGRADED)
            .flag_write(DEGRADED)
            .http(ADMIN, &format!("POST {PAUSE}"))
            .notify(INCIDENTS)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let ticket = ticket(&alert);
        let backlog = step("How far behind is publishing?", || {
            let outbox = db::query(DB, OUTBOX, params![]).and_then(|rows| {
                let row = rows.first()?;
                Ok((
                    row.get::<i64>("unpublished")?,
                    row.get::<i64>("oldest_seconds")?,
                ))
            });
            let lag = db::query(DB, LEDGER_LAG, params![])
                .and_then(|rows| rows.first()?.get::<i64>("lag"));
            match (outbox, lag) {
                (Ok((n, age)), Ok(lag)) => format!(
                    "{n} outbox row(s) unpublished (oldest {age} s), ledger consumer lag {lag}"
                ),
                (Ok((n, age)), Err(_)) => {
                    format!("{n} outbox row(s) unpublished (oldest {age} s), ledger lag unknown")
                }
                (Err(e), _) => format!("the outbox could not be read ({})", e.message()),
            }
        });
        // Another incident's degradation is kept, not overwritten (lifting
        // this one later would clear it).
        let degraded =
            flags::get(DEGRADED)?.filter(|v| !matches!(v.as_str(), "" | "off" | "false" | "0"));
        let mut checklist = Vec::new();
        step("Immediate actions", || -> Result<Outcome> {
            pager::notify_or_note(
                INCIDENTS,
                &format!(
                    "SEV2 spot exchange Kafka outage ({ticket}): the Trading Core keeps running; {backlog}; stepgate asks an approver to degrade the WS edge and pause {}; decide in stepgate now",
                    NONCRITICAL.join(", ")
                ),
                &mut checklist,
            );
            let reason = format!("spot exchange runbook §3.5 ({ticket}): Kafka outage");
            let ws = if let Some(earlier) = &degraded {
                if earlier != "kafka" {
                    checklist.push(format!("The WS edge was already degraded for `{earlier}`: it stays so; lift it only when both are over"));
                }
                format!("the WS edge already degraded (`{earlier}`)")
            } else {
                let fate = Fate::of(&flags::set(DEGRADED, "kafka", &reason));
                if let Some(why) = fate.why_not() {
                    checklist.push(format!("The WS edge is NOT degraded ({why}): tell clients by hand that updates pause and snapshots follow recovery"));
                }
                let told = if matches!(fate, Fate::Made) {
                    " (clients told, snapshots after recovery)"
                } else {
                    ""
                };
                format!("the WS edge {}{told}", fate.say("degraded"))
            };
            let mut paused = Vec::new();
            for group in NONCRITICAL {
                let fate = Fate::of_http(&http::post(
                    ADMIN,
                    PAUSE,
                    &serde_json::json!({ "group": group, "reason": reason, "ticket": ticket }),
                    &reason,
                ));
                if let Some(why) = fate.why_not() {
                    checklist.push(format!(
                        "The `{group}` consumers are NOT paused ({why}): pause them by hand"
                    ));
                }
                paused.push(format!("`{group}` consumers {}", fate.say("paused")));
            }
            let summary = format!(
                "Kafka outage ({ticket}): Trading Core kept running; {backlog}; {ws}; {}",
                paused.join("; ")
            );
            pager::notify_or_note(
                INCIDENTS,
                &format!("SEV2 spot exchange {summary}"),
                &mut checklist,
            );
            checklist.extend([
                "Restore the brokers; verify ISR and partitions are healthy".to_owned(),
                "Resume outbox publishing and watch the backlog drain (throttle if the brokers struggle)".to_owned(),
                match &degraded {
                    Some(earlier) if earlier != "kafka" => format!("Validate the ledger consumer catches up (it is idempotent), then resume the analytics consumers; leave EXCHANGE_WS_DEGRADED (`{earlier}`) to its own incident"),
                    _ => "Validate the ledger consumer catches up (it is idempotent), then lift EXCHANGE_WS_DEGRADED and resume the analytics consumers".to_owned(),
                },
            ]);
            let mut outcome = Outcome::new(summary)
                .severity("SEV2")
                .field("ticket", ticket.as_str());
            for item in checklist {
                outcome = outcome.todo(item);
            }
            Ok(outcome)
        })
    }
}

stepgate_sdk::playbook!(KafkaOutage);
