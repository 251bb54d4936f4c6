//! Spot exchange §3.4: WebSocket fan-out overload (SEV2/SEV3).
//!
//! Signal: `ws_close_total{SLOW_CONSUMER}` rising, edge CPU high, outbound
//! queues growing. The runbook's immediate actions are three edge-gateway
//! settings, each a flag here, each approved, each only ever tightened
//! (read first: a stricter value already set is kept):
//!
//! 1. aggressive conflation for book and candle updates;
//! 2. the default book depth lowered (to [`BOOK_DEPTH`]);
//! 3. stricter rate limits on subscription operations (to
//!    [`SUBSCRIBE_PER_SECOND`] per connection), to protect the server.
//!
//! Recovery (scale edge-gateway replicas, regional shards, check that the
//! trades channel is not dropped) is on the checklist.

use exchange_controls::ticket;
use stepgate_sdk::prelude::*;

const INCIDENTS: &str = "exchange-incidents";
const CONFLATION: &str = "EXCHANGE_WS_CONFLATION";
const DEPTH: &str = "EXCHANGE_WS_BOOK_DEPTH";
const SUBSCRIBE: &str = "EXCHANGE_WS_SUBSCRIBE_PER_SECOND";

/// The runbook's example depth.
const BOOK_DEPTH: i64 = 20;
/// Subscription operations per connection and second under overload.
const SUBSCRIBE_PER_SECOND: i64 = 5;

struct WsOverload;

/// One setting's change: its words for the summary, and a checklist line
/// when it did not pass.
fn tighten(
    name: &str,
    current: Option<String>,
    wanted: String,
    stricter: impl Fn(&str) -> bool,
    unset_is_looser: bool,
    reason: &str,
) -> (String, Option<String>) {
    let current = current.filter(|c| !c.trim().is_empty());
    if let Some(current) = current.as_deref().filter(|c| stricter(c)) {
        return (format!("{name} kept at {current}"), None);
    }
    // Unset: the edge's own default applies, which stepgate does not know;
    // setting a number could loosen it.
    if current.is_none() && !unset_is_looser {
        return (
            format!("{name} NOT set (unset: the edge's default is not known here)"),
            Some(format!(
                "{name} is unset: check the edge gateway's default and set {wanted} by hand if the default is looser"
            )),
        );
    }
    let fate = Fate::of(&flags::set(name, &wanted, reason));
    let said = format!("{name} {}", fate.say(&format!("set to {wanted}")));
    let todo = fate.why_not().map(|why| {
        format!("{name} is NOT set to {wanted} ({why}): set it on the edge gateway by hand")
    });
    (said, todo)
}

/// A number setting already at or under `limit`.
fn at_most(limit: i64) -> impl Fn(&str) -> bool {
    move |v: &str| v.trim().parse::<i64>().is_ok_and(|n| n > 0 && n <= limit)
}

impl Playbook for WsOverload {
    fn describe() -> Description {
        Description::new("exchange-ws-overload", "1.0.0")
            .summary(
                "Spot exchange §3.4, WebSocket fan-out overload: aggressive conflation, a lower default book \
                 depth and stricter subscription rate limits on the edge gateway (each approved, never \
                 loosened), after telling the incident channel; scaling out stays on the checklist.",
            )
            .answers("WsSlowConsumerCloses")
            .flag_read("EXCHANGE_WS_*")
            .flag_write(CONFLATION)
            .flag_write(DEPTH)
            .flag_write(SUBSCRIBE)
            .notify(INCIDENTS)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let ticket = ticket(&alert);
        let depth = alert.setting("book_depth", BOOK_DEPTH)?;
        let rate = alert.setting("subscribe_per_second", SUBSCRIBE_PER_SECOND)?;
        let severity = if alert.label("severity") == Some("critical") {
            "SEV2"
        } else {
            "SEV3"
        };
        let current = step("Read the edge settings", || -> Result<_> {
            Ok((
                flags::get(CONFLATION)?,
                flags::get(DEPTH)?,
                flags::get(SUBSCRIBE)?,
            ))
        })?;
        let mut checklist = Vec::new();
        step("Immediate actions", || -> Result<Outcome> {
            pager::notify_or_note(
                INCIDENTS,
                &format!(
                    "{severity} spot exchange WS fan-out overload ({ticket}): stepgate asks an approver to tighten conflation, book depth and subscription limits; decide in stepgate now"
                ),
                &mut checklist,
            );
            let reason = format!(
                "spot exchange runbook §3.4 ({ticket}): WS fan-out overload, slow consumers closing"
            );
            let (conflation, depth_set, subscribe) = current;
            let changes = [
                tighten(
                    CONFLATION,
                    conflation,
                    "aggressive".to_owned(),
                    |v| v == "aggressive",
                    // Aggressive is the strongest conflation: any default is looser.
                    true,
                    &reason,
                ),
                tighten(
                    DEPTH,
                    depth_set,
                    depth.to_string(),
                    at_most(depth),
                    false,
                    &reason,
                ),
                tighten(
                    SUBSCRIBE,
                    subscribe,
                    rate.to_string(),
                    at_most(rate),
                    false,
                    &reason,
                ),
            ];
            let mut said = Vec::new();
            for (words, todo) in changes {
                said.push(words);
                checklist.extend(todo);
            }
            let summary = format!("WS fan-out overload ({ticket}): {}", said.join("; "));
            pager::notify_or_note(
                INCIDENTS,
                &format!("{severity} spot exchange {summary}"),
                &mut checklist,
            );
            checklist.extend([
                "Scale the edge-gateway replicas".to_owned(),
                "Add regional WS shards if one region carries the load".to_owned(),
                "Validate that the trades channel is not being dropped (conflation is for book and candles only)".to_owned(),
                "Restore the settings once the backlog per connection is back to normal".to_owned(),
            ]);
            let mut outcome = Outcome::new(summary)
                .severity(severity)
                .field("ticket", ticket.as_str());
            for item in checklist {
                outcome = outcome.todo(item);
            }
            Ok(outcome)
        })
    }
}

stepgate_sdk::playbook!(WsOverload);
