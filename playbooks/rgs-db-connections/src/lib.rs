//! RGS: DB connection exhaustion (SEV1: rgs-server becomes unavailable).
//!
//! Codifies playbook 7 of the RGS incident response playbooks:
//!
//! - **Detect**: `prisma_pool_wait_time_ms` p99 > 500 (`PrismaPoolWaitHigh`).
//! - **Triage**: connections to `yantra` against `max_connections`; their
//!   states (idle in transaction?); the oldest idle-in-transaction sessions
//!   and what they last ran.
//! - **Mitigate**: short term, restart the RGS pods (drops connections and
//!   forces a fresh pool) through the RGS admin API, approved by a human,
//!   when the database side is saturated or enough sessions sit idle in a
//!   transaction to hold the pools (a few are ended one by one by a human,
//!   not by restarting every pod); page on-call either way. Medium and
//!   long term (max connections, PgBouncer, the query that holds
//!   transactions open) go on the checklist.
//!
//! Local choices (the runbook states no number): saturation is
//! [`SATURATED_PERCENT`] of `max_connections`; the restart for idle
//! sessions needs [`RESTART_AT_IDLE_IN_TRANSACTION`] of them, or the
//! alert's `restart_at_idle_in_transaction` annotation; a session counts as
//! holding a connection once idle in a transaction for
//! [`IDLE_FOR_SECONDS`] (`idle_in_transaction_seconds`).
//!
//! Triage needs one connection to a database that may have none left:
//! the stepgate role must hold a reserved slot (PostgreSQL 16+:
//! `reserved_connections` and `pg_use_reserved_connections`), or triage
//! fails and the page says so.

use stepgate_sdk::prelude::*;

const DB: &str = "rgs";
const ONCALL: &str = "rgs-oncall";
/// The RGS admin API (config name) and its restart route.
const ADMIN: &str = "rgs_admin";
const RESTART: &str = "/admin/pods/restart";

/// Triage 1 and 2, verbatim.
const CONNECTIONS: &str =
    "SELECT count(*) AS connections FROM pg_stat_activity WHERE datname='yantra'";
const BY_STATE: &str = "SELECT coalesce(state, 'unknown') AS state, count(*) AS connections \
     FROM pg_stat_activity WHERE datname='yantra' GROUP BY 1 ORDER BY 2 DESC";
const MAX_CONNECTIONS: &str =
    "SELECT setting::bigint AS max_connections FROM pg_settings WHERE name='max_connections'";
/// Long term: the sessions holding a transaction open, oldest first.
const IDLE_IN_TRANSACTION: &str = "SELECT pid, EXTRACT(EPOCH FROM now() - xact_start)::bigint AS open_seconds, \
     left(query, 200) AS query FROM pg_stat_activity \
     WHERE datname='yantra' AND state='idle in transaction' \
     AND xact_start < now() - make_interval(secs => $1) ORDER BY xact_start LIMIT 20";

/// Connections at or past this share of `max_connections` is saturation.
pub const SATURATED_PERCENT: i64 = 90;
/// Sessions idle in a transaction that justify restarting every pod
/// (fewer are ended one by one); the alert's
/// `restart_at_idle_in_transaction` annotation overrides it.
pub const RESTART_AT_IDLE_IN_TRANSACTION: usize = 5;
/// A session idle in a transaction for less than this (seconds) is a
/// client between two statements, not one holding a connection; the
/// alert's `idle_in_transaction_seconds` annotation overrides it.
pub const IDLE_FOR_SECONDS: i64 = 60;

/// A whole-number setting from the alert's annotation `key`, at least
/// `min`; a bad value is refused by name, never replaced by the default.
fn setting<T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display>(
    alert: &Alert,
    key: &str,
    default: T,
    min: T,
) -> Result<T> {
    match alert.annotation(key) {
        None => Ok(default),
        Some(text) => text
            .trim()
            .parse::<T>()
            .ok()
            .filter(|v| *v >= min)
            .ok_or_else(|| {
                Error::failed(format!(
                    "the `{key}` annotation is `{text}`: a whole number of at least {min}"
                ))
            }),
    }
}

struct DbConnections;

struct Triage {
    connections: i64,
    max_connections: i64,
    idle_in_transaction: Vec<(i64, i64, String)>,
    states: String,
}

impl Triage {
    fn saturated(&self) -> bool {
        self.connections * 100 >= self.max_connections * SATURATED_PERCENT
    }
}

impl Playbook for DbConnections {
    fn describe() -> Description {
        Description::new("rgs-db-connections", "1.0.0")
            .summary(
                "RGS playbook 7, DB connection exhaustion (SEV1): counts connections to yantra against \
                 max_connections and finds idle-in-transaction sessions; restarts the RGS pods \
                 (approved) when the database side is saturated or stuck, and pages on-call.",
            )
            .answers("PrismaPoolWaitHigh")
            .db_read(DB)
            .http(ADMIN, &format!("POST {RESTART}"))
            .page(ONCALL)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let idle_for = setting(&alert, "idle_in_transaction_seconds", IDLE_FOR_SECONDS, 0)?;
        let restart_at = setting(
            &alert,
            "restart_at_idle_in_transaction",
            RESTART_AT_IDLE_IN_TRANSACTION,
            1,
        )?;
        let triage = match step("Triage", || triage(idle_for)) {
            Ok(triage) => triage,
            Err(e) => {
                return step("Escalate: triage failed", || -> Result<Outcome> {
                    pager::page(
                        ONCALL,
                        Severity::Critical,
                        "SEV1 RGS DB connection exhaustion: the database does not answer triage",
                        &format!(
                            "alert {}: pg_stat_activity could not be read ({}). If the database is out of connections, stepgate's role has no reserved slot. Restart the RGS pods by hand if /readyz is 503 across pods.",
                            alert.name,
                            e.message()
                        ),
                    )?;
                    Ok(Outcome::new(format!("Triage failed: {}", e.message()))
                        .severity("SEV1")
                        .todo("Check the database host: is it up, is it at max_connections? (connect with a reserved or superuser slot)")
                        .todo("Give stepgate's database role a reserved connection (PostgreSQL 16+: reserved_connections and GRANT pg_use_reserved_connections), so the next triage runs on a full database")
                        .todo("Restart the RGS pods (drops connections, forces a fresh pool)")
                        .todo("Post-mortem within 5 business days (every SEV1)"))
                });
            }
        };
        step("Mitigate", || mitigate(&alert, &triage, restart_at))
    }
}

stepgate_sdk::playbook!(DbConnections);

fn triage(idle_for: i64) -> Result<Triage> {
    let connections: i64 = db::query(DB, CONNECTIONS, params![])?
        .first()?
        .get("connections")?;
    let max_connections: i64 = db::query(DB, MAX_CONNECTIONS, params![])?
        .first()?
        .get("max_connections")?;
    let states = db::query(DB, BY_STATE, params![])?
        .iter()
        .map(|row| -> Result<String> {
            Ok(format!(
                "{} {}",
                row.get::<String>("state")?,
                row.get::<i64>("connections")?
            ))
        })
        .collect::<Result<Vec<_>>>()?
        .join(", ");
    let idle_in_transaction = db::query(DB, IDLE_IN_TRANSACTION, params![idle_for])?
        .iter()
        .map(|row| -> Result<(i64, i64, String)> {
            Ok((
                row.get("pid")?,
                row.get("open_seconds")?,
                row.get::<Option<String>>("query")?.unwrap_or_default(),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    runbook::info(&format!(
        "{connections} of {max_connections} connections to yantra ({states}); {} idle in transaction",
        idle_in_transaction.len()
    ));
    Ok(Triage {
        connections,
        max_connections,
        idle_in_transaction,
        states,
    })
}

fn mitigate(alert: &Alert, triage: &Triage, restart_at: usize) -> Result<Outcome> {
    let stuck = !triage.idle_in_transaction.is_empty();
    let db_side = triage.saturated() || triage.idle_in_transaction.len() >= restart_at;
    let mut checklist = Vec::new();
    let mut restarted = None;
    if stuck && !db_side {
        checklist.push(format!(
            "{} session(s) idle in transaction, fewer than {restart_at}: no pod restart; end them one by one (SELECT pg_terminate_backend(pid) for pid {}) and watch the pool wait",
            triage.idle_in_transaction.len(),
            triage
                .idle_in_transaction
                .iter()
                .map(|(pid, _, _)| pid.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if db_side {
        let why = if triage.saturated() {
            format!(
                "{} of {} connections are in use",
                triage.connections, triage.max_connections
            )
        } else {
            format!(
                "{} session(s) idle in transaction hold connections",
                triage.idle_in_transaction.len()
            )
        };
        let reason = format!(
            "RGS playbook 7 (DB connection exhaustion), Mitigate short-term: restart the RGS pods to drop connections and force a fresh pool; {why}"
        );
        // The humans first: the restart waits for an approver.
        let told = pager::page(
            ONCALL,
            Severity::Critical,
            "SEV1 RGS DB connection exhaustion: stepgate asks to restart the RGS pods",
            &format!(
                "alert {}: {why}; approve or deny the pod restart in stepgate now; a second page follows with what was done",
                alert.name
            ),
        );
        if let Err(e) = told {
            checklist.push(format!(
                "On-call was NOT paged before the restart ({}): call them",
                e.message()
            ));
        }
        let body = serde_json::json!({ "service": "rgs-server", "action": "restart" });
        let fate = Fate::of_http(&http::post(ADMIN, RESTART, &body, &reason));
        if let Some(why) = fate.why_not() {
            checklist.push(format!(
                "The RGS pods were NOT restarted ({why}): restart them by hand if they stay unavailable"
            ));
        }
        restarted = Some(fate);
    } else if !stuck {
        checklist.push(
            "The database side is healthy: look for pods stuck holding connections (infinite loop, slow query)".to_owned(),
        );
    }
    let summary = format!(
        "{} of {} connections to yantra, {} idle in transaction{}",
        triage.connections,
        triage.max_connections,
        triage.idle_in_transaction.len(),
        match (&restarted, stuck) {
            (Some(fate), _) => format!("; RGS pods {}", fate.say("restarted")),
            (None, true) => ": too few to restart every pod, end them one by one".to_owned(),
            (None, false) => ": database side healthy".to_owned(),
        }
    );
    pager::page_or_note(
        ONCALL,
        Severity::Critical,
        &format!(
            "SEV1 RGS DB connection exhaustion: {}",
            match (&restarted, stuck) {
                (Some(fate), _) => format!("RGS pods {}", fate.say("restarted")),
                (None, true) => "sessions idle in transaction, end them by hand".to_owned(),
                (None, false) => "database side healthy, check the pods".to_owned(),
            }
        ),
        &format!(
            "alert {}: {summary} ({}). Oldest idle in transaction: {}",
            alert.name,
            triage.states,
            triage
                .idle_in_transaction
                .first()
                .map(|(pid, secs, query)| format!("pid {pid}, open {secs} s: {query}"))
                .unwrap_or_else(|| "none".into())
        ),
        &mut checklist,
    );
    if stuck {
        checklist.push(
            "Identify the query that holds transactions open (Prisma logs at debug level); the oldest ones are in the page".into(),
        );
    }
    checklist.extend([
        "Medium term: raise Postgres max_connections or put PgBouncer in front".to_owned(),
        "RCA: saturation curve (connection count over time), the query that held transactions open, whether PgBouncer would have absorbed it".to_owned(),
        "Post-mortem within 5 business days (every SEV1)".to_owned(),
    ]);
    let mut outcome = Outcome::new(summary)
        .severity("SEV1")
        .field("connections", triage.connections)
        .field("max_connections", triage.max_connections)
        .field(
            "idle_in_transaction",
            triage.idle_in_transaction.len() as i64,
        )
        .field("saturated", triage.saturated())
        .field(
            "pods_restarted",
            restarted.as_ref().is_some_and(Fate::passed),
        );
    for item in checklist {
        outcome = outcome.todo(item);
    }
    Ok(outcome)
}
