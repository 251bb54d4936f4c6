//! Spot exchange: settlement lag spike (SEV2, SEV1 if prolonged).
//!
//! Codifies runbook §3.2:
//!
//! - **Signal**: settlement lag p99 over T2 (throttle) or T3 (halt), the
//!   thresholds of the ops policy (`ops_policy` in the exchange database).
//! - **Immediate actions**: verify Postgres (connections, lock waits) and
//!   the ledger consumer's Kafka lag and errors; then apply the policy:
//!   throttle new orders of a symbol over T2, `SOFT_HALT` one over T3. Each
//!   control is approved, with the reason and the ticket id.
//! - Prolonged (the alert has fired for 30 minutes or more): SEV1.
//! - Scaling the consumers, shedding analytics, a DB failover: checklist.

use exchange_controls::{Mode, ONCALL, raise_mode, throttle, ticket};
use stepgate_sdk::prelude::*;

const DB: &str = "exchange";
const INCIDENTS: &str = "exchange-incidents";

const LAG: &str = "SELECT symbol, max(lag_ms_p99) AS lag_ms FROM settlement_lag \
     WHERE measured_at > now() - interval '5 minutes' GROUP BY 1 ORDER BY 2 DESC";
const PG_HEALTH: &str = "SELECT count(*) AS connections, \
     count(*) FILTER (WHERE wait_event_type = 'Lock') AS lock_waits FROM pg_stat_activity";
const KAFKA: &str = "SELECT coalesce(sum(lag), 0)::bigint AS lag, coalesce(sum(errors_5m), 0)::bigint AS errors \
     FROM kafka_consumer_lag WHERE consumer = 'ledger'";

/// Minutes of firing after which the spike counts as prolonged (a local
/// choice: the runbook says "SEV1 if prolonged" and gives no number); the
/// alert's `prolonged_minutes` annotation overrides it.
const PROLONGED_MINUTES: i64 = 30;

struct SettlementLag;

impl Playbook for SettlementLag {
    fn describe() -> Description {
        Description::new("exchange-settlement-lag", "1.0.0")
            .summary(
                "Spot exchange §3.2, settlement lag spike: checks Postgres and the ledger consumer's \
                 Kafka lag, then applies the ops policy: throttle new orders over T2, SOFT_HALT over T3 \
                 (approved); SEV1 once the spike lasts 30 minutes.",
            )
            .answers("SettlementLagHigh")
            .db_read(DB)
            .http(exchange_controls::ADMIN, &format!("POST {}", exchange_controls::THROTTLE))
            .http(exchange_controls::ADMIN, &format!("POST {}", exchange_controls::SYMBOL_MODE))
            .page(ONCALL)
            .notify(INCIDENTS)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let ticket = ticket(&alert);
        let prolonged_minutes = match alert.annotation("prolonged_minutes") {
            Some(text) => text.parse::<i64>().ok().filter(|m| *m > 0).ok_or_else(|| {
                Error::failed(format!(
                    "`prolonged_minutes` is `{text}`, not a positive number of minutes"
                ))
            })?,
            None => PROLONGED_MINUTES,
        };
        let prolonged = alert.starts_at_ms().is_some_and(|start| {
            runbook::now_millis() - start >= prolonged_minutes.saturating_mul(60_000)
        });
        let severity = if prolonged { "SEV1" } else { "SEV2" };
        let triage = step("Verify Postgres, Kafka and the policy", || -> Result<_> {
            let (t2, t3) = exchange_controls::settlement_lag_thresholds()?;
            let lags = db::query(DB, LAG, params![])?
                .iter()
                .map(|r| -> Result<(String, i64)> { Ok((r.get("symbol")?, r.get("lag_ms")?)) })
                .collect::<Result<Vec<_>>>()?;
            let pg = db::query(DB, PG_HEALTH, params![])?;
            let pg = pg.first()?;
            let pg = format!(
                "Postgres: {} connection(s), {} waiting on locks",
                pg.get::<i64>("connections")?,
                pg.get::<i64>("lock_waits")?
            );
            let kafka = db::query(DB, KAFKA, params![])?;
            let kafka = kafka.first()?;
            let kafka = format!(
                "ledger consumer: lag {}, {} error(s) in 5 min",
                kafka.get::<i64>("lag")?,
                kafka.get::<i64>("errors")?
            );
            Ok((t2, t3, lags, pg, kafka))
        });
        let (t2, t3, lags, pg, kafka) = match triage {
            Ok(t) => t,
            Err(e) => {
                return step("Escalate: triage failed", || -> Result<Outcome> {
                    pager::page(
                        ONCALL,
                        Severity::Critical,
                        &format!(
                            "{severity} spot exchange settlement lag ({ticket}): triage failed, apply the policy by hand"
                        ),
                        &format!("alert {}: {}", alert.name, e.message()),
                    )?;
                    Ok(Outcome::new(format!("Triage failed: {}", e.message()))
                        .severity(severity)
                        .todo("Read the settlement lag per symbol and apply the policy by hand: throttle over T2, SOFT_HALT over T3"))
                });
            }
        };
        step("Apply policy", || -> Result<Outcome> {
            let mut throttled = Vec::new();
            let mut halted = Vec::new();
            let mut kept = Vec::new();
            let mut over_t3 = false;
            let mut not_applied: Vec<String> = Vec::new();
            let mut checklist = Vec::new();
            // The humans first: throttles and halts wait for an approver.
            let over = |limit: i64| -> Vec<&str> {
                lags.iter()
                    .filter(|(_, lag)| *lag > limit)
                    .map(|(s, _)| s.as_str())
                    .collect()
            };
            let (to_halt, to_throttle) = (over(t3), over(t2));
            if !to_throttle.is_empty() {
                let told = pager::notify(
                    INCIDENTS,
                    &format!(
                        "{severity} settlement lag ({ticket}): stepgate asks an approver to SOFT_HALT [{}] (over T3 {t3} ms) and throttle the others of [{}] (over T2 {t2} ms); decide in stepgate now",
                        to_halt.join(", "),
                        to_throttle.join(", ")
                    ),
                );
                if let Err(e) = told {
                    checklist.push(format!(
                        "{INCIDENTS} was NOT told before the throttles ({}): tell them",
                        e.message()
                    ));
                }
            }
            for (symbol, lag) in &lags {
                let (mode, done) = if *lag > t3 {
                    let reason = format!(
                        "Spot exchange runbook §3.2: settlement lag p99 of {symbol} is {lag} ms, over T3 ({t3} ms): SOFT_HALT"
                    );
                    over_t3 = true;
                    // Read before overwrite: a stronger halt is kept.
                    let raised = raise_mode(symbol, Mode::SoftHalt, &reason, &ticket);
                    if !raised.not_done.is_empty() {
                        not_applied.push(format!("SOFT_HALT {symbol}"));
                    }
                    halted.extend(raised.symbols);
                    kept.extend(raised.kept);
                    checklist.extend(raised.not_done);
                    continue;
                } else if *lag > t2 {
                    let reason = format!(
                        "Spot exchange runbook §3.2: settlement lag p99 of {symbol} is {lag} ms, over T2 ({t2} ms): throttle new orders"
                    );
                    ("throttle", throttle(symbol, &reason, &ticket))
                } else {
                    continue;
                };
                match done.why_not() {
                    None => throttled.push(symbol.clone()),
                    Some(why) => {
                        not_applied.push(format!("{mode} {symbol}"));
                        checklist.push(format!(
                            "{symbol}: {mode} NOT applied ({why}): do it by hand"
                        ))
                    }
                }
            }
            let mut already = if kept.is_empty() {
                String::new()
            } else {
                format!(", already held more strongly [{}]", kept.join(", "))
            };
            if !not_applied.is_empty() {
                already.push_str(&format!(
                    ", NOT applied [{}] (refused or failed, see the checklist)",
                    not_applied.join(", ")
                ));
            }
            // What was done, from each write's result; a dry run says so.
            let done = if runbook::dry_run() {
                "dry run, nothing written; planned: "
            } else {
                ""
            };
            let summary = format!(
                "Settlement lag over T2 {t2} ms / T3 {t3} ms: {done}throttled [{}], SOFT_HALT [{}]{already}. {pg}; {kafka}",
                throttled.join(", "),
                halted.join(", ")
            );
            let text = format!(
                "{severity} settlement lag ({ticket}, alert {}): {summary}",
                alert.name
            );
            // Over T3 pages, whether the halt was made, kept or failed.
            if prolonged || over_t3 {
                pager::page_or_note(
                    ONCALL,
                    Severity::Critical,
                    &format!("{severity} spot exchange settlement lag ({ticket})"),
                    &text,
                    &mut checklist,
                );
            } else {
                pager::notify_or_note(INCIDENTS, &text, &mut checklist);
            }
            checklist.extend([
                "Recovery: scale the ledger consumers if horizontally safe".to_owned(),
                "Reduce nonessential workloads (analytics sinks)".to_owned(),
                "If the DB is overloaded: add resources or fail over (only if tested)".to_owned(),
                "Lift the throttles and halts once the lag is back under T2".to_owned(),
            ]);
            let mut outcome = Outcome::new(summary)
                .severity(severity)
                .field("t2_ms", t2)
                .field("t3_ms", t3)
                .field("throttled", throttled.join(","))
                .field("soft_halted", halted.join(","))
                .field("prolonged", prolonged)
                .field("worst_lag_ms", lags.first().map_or(0, |(_, l)| *l));
            for item in checklist {
                outcome = outcome.todo(item);
            }
            Ok(outcome)
        })
    }
}

stepgate_sdk::playbook!(SettlementLag);
