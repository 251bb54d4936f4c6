// The drift fixture's logic, shared by `guest-drift` and its variants,
// each of which sets `VARIANT` and includes this file. A variant is the
// playbook changed on purpose, for the tests that prove `stepgate test`
// and `stepgate replay` catch the change.

use stepgate_sdk::prelude::*;

/// What a variant changes.
pub struct Variant {
    /// Held above this (in units) pauses the service.
    pub threshold: i64,
    /// Page before pausing instead of after.
    pub page_first: bool,
    /// Also notify the incident channel.
    pub notify: bool,
}

struct Drift;

fn pause(held: i64) -> Result<()> {
    flags::set("KILL_SWITCH", "1", &format!("held {held} is over {}", VARIANT.threshold))
        .map(|_| ())
}

fn page(held: i64) -> Result<()> {
    pager::page("ceo", Severity::Critical, "drift over threshold", &format!("held {held}"))
        .map(|_| ())
}

impl Playbook for Drift {
    fn describe() -> Description {
        Description::new("drift", "1.0.0")
            .summary("A fixture: pauses the service when the held sum passes a threshold.")
            .answers("DriftHigh")
            .db_read("ledger")
            .flag_write("KILL_SWITCH")
            .page("ceo")
            .notify("incident")
    }

    fn run(_alert: Alert) -> Result<Outcome> {
        let (held, paused) = step("Read", || -> Result<(i64, Option<String>)> {
            let rows = db::query("ledger", "SELECT held FROM balances WHERE id = ?1", params![1])?;
            Ok((rows.first()?.get::<i64>("held")?, flags::get("KILL_SWITCH")?))
        })?;
        if held <= VARIANT.threshold || paused.as_deref() == Some("1") {
            return Ok(Outcome::new("within threshold, or already paused")
                .severity("SEV-2")
                .field("held", held));
        }
        step("Mitigate", || -> Result<()> {
            if VARIANT.page_first {
                page(held)?;
                pause(held)?;
            } else {
                pause(held)?;
                page(held)?;
            }
            if VARIANT.notify {
                pager::notify("incident", &format!("paused at held {held}"))?;
            }
            Ok(())
        })?;
        Ok(Outcome::new("paused").severity("SEV-0").field("held", held))
    }
}

stepgate_sdk::playbook!(Drift);
