//! Spot exchange: PostgreSQL failover or corruption (SEV1/SEV2).
//!
//! Codifies runbook §3.6:
//!
//! - **Immediate actions**: freeze withdrawals; depending on impact,
//!   `CANCEL_ONLY` or `SOFT_HALT` for every symbol; verify backups and PITR
//!   readiness.
//! - The impact is read, not assumed: does the primary answer, does the
//!   standby answer (and is it still a standby), is WAL archiving current
//!   (`pg_stat_archiver`: PITR needs every segment since the last base
//!   backup)? Corruption, or no database that answers, is `SOFT_HALT`
//!   (SEV1); a lost primary with a healthy standby is `CANCEL_ONLY` while
//!   it fails over (SEV2, SEV1 when archiving is behind too).
//! - The modes are raised only (`exchange_controls::raise_mode_reading`),
//!   read from whichever database answers; when none does, no mode is set
//!   (a HARD_HALT must not be lowered blind) and a human sets it.
//! - **Recovery** (checklist): fail over to the standby if configured and
//!   rehearsed, or restore from backup/PITR and replay settlement from
//!   Kafka; rebuild the balances MV; run reconciliation.

use exchange_controls::{ALL_SYMBOLS, Mode, ONCALL, halt_withdrawals, raise_mode_reading, ticket};
use stepgate_sdk::prelude::*;

const PRIMARY: &str = "exchange";
const STANDBY: &str = "exchange_standby";

/// Archiving this far behind (seconds since the last archived WAL
/// segment, or a failure since) means PITR cannot reach the present.
const ARCHIVE_STALE_SECONDS: i64 = 900;

const ROLE: &str = "SELECT pg_is_in_recovery() AS in_recovery";
const ARCHIVER: &str = "SELECT EXTRACT(EPOCH FROM now() - last_archived_time)::bigint AS since_archived, \
     coalesce(last_failed_time > last_archived_time, false) AS failing FROM pg_stat_archiver";

struct PostgresFailover;

/// What a database answered: `None` when it did not.
struct Probe {
    primary: Option<bool>,
    standby: Option<bool>,
    /// Seconds since the last archived segment, and whether a failure
    /// came after it; `None` when no database answered.
    archive: Option<(Option<i64>, bool)>,
}

fn role(conn: &str) -> Option<bool> {
    db::query(conn, ROLE, params![])
        .and_then(|rows| rows.first()?.get::<bool>("in_recovery"))
        .ok()
}

fn archiver(conn: &str) -> Option<(Option<i64>, bool)> {
    let rows = db::query(conn, ARCHIVER, params![]).ok()?;
    let row = rows.first().ok()?;
    let since = row.get::<i64>("since_archived").ok();
    Some((since, row.get::<bool>("failing").unwrap_or(true)))
}

impl Playbook for PostgresFailover {
    fn describe() -> Description {
        Description::new("exchange-postgres-failover", "1.0.0")
            .summary(
                "Spot exchange §3.6, Postgres failover or corruption: probes the primary, the standby and \
                 WAL archiving, freezes withdrawals and sets CANCEL_ONLY or SOFT_HALT by impact (two \
                 approvers, never lowering a stronger mode), and pages on-call with PITR readiness.",
            )
            .answers("PostgresPrimaryDown")
            .answers("PostgresCorruptionSuspected")
            .db_read(PRIMARY)
            .db_read(STANDBY)
            .http(exchange_controls::ADMIN, &format!("POST {}", exchange_controls::WITHDRAWALS_HALT))
            .http(exchange_controls::ADMIN, &format!("POST {}", exchange_controls::SYMBOL_MODE))
            .page(ONCALL)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let ticket = ticket(&alert);
        let stale_after = alert.setting("archive_stale_seconds", ARCHIVE_STALE_SECONDS)?;
        let corruption = alert.name == "PostgresCorruptionSuspected";
        let probe = step("Probe the databases", || Probe {
            primary: role(PRIMARY),
            standby: role(STANDBY),
            archive: archiver(PRIMARY).or_else(|| archiver(STANDBY)),
        });
        // Reads go where a database answers: the primary, else the standby.
        let reads = if probe.primary.is_some() {
            PRIMARY
        } else {
            STANDBY
        };
        let standby_ready = probe.standby == Some(true);
        let pitr_ready =
            matches!(probe.archive, Some((Some(since), false)) if since <= stale_after);
        let (mode, severity, impact) = if corruption {
            (Mode::SoftHalt, "SEV1", "corruption suspected".to_owned())
        } else if probe.primary.is_none() && probe.standby.is_none() {
            (
                Mode::SoftHalt,
                "SEV1",
                "neither the primary nor the standby answers".to_owned(),
            )
        } else if probe.primary.is_none() {
            let word = if standby_ready {
                "a standby ready to promote"
            } else {
                "the standby already promoted"
            };
            (
                Mode::CancelOnly,
                if pitr_ready { "SEV2" } else { "SEV1" },
                format!("the primary is down, {word}"),
            )
        } else {
            (
                Mode::CancelOnly,
                "SEV2",
                "the primary answers again (a failover in progress or done)".to_owned(),
            )
        };
        let pitr = match probe.archive {
            None => "PITR readiness unknown (no database answered pg_stat_archiver)".to_owned(),
            Some((None, _)) => "PITR NOT ready: no WAL segment was ever archived".to_owned(),
            Some((Some(since), failing)) if failing || since > stale_after => format!(
                "PITR NOT ready: the last WAL segment was archived {since} s ago{}",
                if failing {
                    " and archiving fails since"
                } else {
                    ""
                }
            ),
            Some((Some(since), _)) => format!("PITR ready: WAL archived {since} s ago"),
        };
        let mut checklist = Vec::new();
        // The humans first: the freeze waits for two approvers.
        step("Tell on-call", || {
            pager::page_or_note(
                ONCALL,
                Severity::Critical,
                &format!(
                    "{severity} spot exchange Postgres ({ticket}): {impact}; stepgate asks two approvers to freeze withdrawals and set {} on every symbol",
                    mode.as_str()
                ),
                &format!("alert {}: {pitr}; decide in stepgate now", alert.name),
                &mut checklist,
            )
        });
        step("Immediate actions", || -> Result<Outcome> {
            let reason = format!("spot exchange runbook §3.6 ({ticket}): {impact}");
            let withdrawals = halt_withdrawals(&reason, &ticket);
            let raised = raise_mode_reading(reads, ALL_SYMBOLS, mode, &reason, &ticket);
            if let Some(why) = withdrawals.why_not() {
                checklist.push(format!(
                    "Withdrawals are NOT frozen ({why}): freeze them by hand (WithdrawalsHalt on)"
                ));
            }
            checklist.extend(raised.not_done.iter().cloned());
            let every = |text: &String| match text.strip_prefix("* ") {
                Some(rest) => format!("every symbol {rest}"),
                None => text.clone(),
            };
            let mut modes = Vec::new();
            if !raised.set.is_empty() {
                modes.push(format!(
                    "modes {}",
                    raised.set.iter().map(every).collect::<Vec<_>>().join(", ")
                ));
            }
            if !raised.kept.is_empty() {
                modes.push(format!("kept {}", raised.kept.join(", ")));
            }
            if modes.is_empty() {
                modes.push(format!("NO symbol set to {}", mode.as_str()));
            }
            let modes = modes.join("; ");
            let refused = !raised.not_done.is_empty() || !withdrawals.passed();
            let summary = format!(
                "Postgres: {impact}: withdrawals {}; {modes}{}; {pitr}",
                withdrawals.say("frozen"),
                if refused {
                    " (refused or failed, see the checklist)"
                } else {
                    ""
                }
            );
            pager::page_or_note(
                ONCALL,
                Severity::Critical,
                &format!("{severity} spot exchange Postgres ({ticket}): {summary}"),
                &format!("modes read from `{reads}`"),
                &mut checklist,
            );
            if !pitr_ready {
                checklist.push(
                    "Verify the last base backup and fix WAL archiving before relying on PITR"
                        .to_owned(),
                );
            }
            checklist.extend([
                "Fail over to the standby only if it is configured and the failover rehearsed".to_owned(),
                "If recovery is required: restore from backup/PITR, then replay settlement from Kafka".to_owned(),
                "Rebuild the balances MV and run reconciliation before lifting the halt".to_owned(),
            ]);
            let mut outcome = Outcome::new(summary)
                .severity(severity)
                .field("ticket", ticket.as_str())
                .field("mode", mode.as_str())
                .field("primary_up", probe.primary.is_some())
                .field("standby_up", probe.standby.is_some())
                .field("pitr_ready", pitr_ready)
                .field("symbols_set", raised.symbols.join(","));
            for item in checklist {
                outcome = outcome.todo(item);
            }
            Ok(outcome)
        })
    }
}

stepgate_sdk::playbook!(PostgresFailover);
