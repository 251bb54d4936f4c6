//! Plaza: the alert table's critical reliability alerts, which page
//! on-call and the CEO: `DiskFreeCritical`, `BackupStale`,
//! `CertificateExpiringCritical`. Each is "check first" work, done here
//! before anyone is woken so the page says what was found:
//!
//! - **BackupStale** (last success > 36 h): the latest run and its error,
//!   classified as the table's three suspects: the backup script, the R2
//!   credentials, the recipient age key.
//! - **DiskFreeCritical** (< 5% free): WAL bloat is the usual cause, and
//!   the runbook allows an emergency cleanup of the WAL directory only once
//!   the backup is current. The page says whether it is, and which
//!   replication slots hold WAL back (an inactive slot is the usual culprit).
//! - **CertificateExpiringCritical** (< 3 days): renewal failed; the page
//!   says to force it and where its logs are.
//!
//! Nothing is written: the cleanup, the renewal and the backup rerun need
//! shell access stepgate does not have (they are on the checklist).

use stepgate_sdk::prelude::*;

const DB: &str = "plaza";
const PG: &str = "plaza_pg";
const ONCALL: &str = "plaza-oncall";
const CEO: &str = "ceo";
const INCIDENT: &str = "incident";

/// The alert table's threshold: a backup older than this is stale.
const BACKUP_STALE_HOURS: i64 = 36;

const LAST_SUCCESS: &str = "SELECT object_key, finished_at FROM backup_runs \
     WHERE succeeded = TRUE AND finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 1";
const LAST_RUN: &str =
    "SELECT started_at, succeeded, error FROM backup_runs ORDER BY started_at DESC LIMIT 1";
const SLOTS: &str = "SELECT slot_name, active, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained_bytes \
     FROM pg_replication_slots ORDER BY 3 DESC NULLS LAST";

struct PlatformAlerts;

/// The latest successful backup: its key and age in hours.
fn last_backup() -> Result<Option<(String, i64)>> {
    let rows = db::query(DB, LAST_SUCCESS, params![])?;
    let Ok(row) = rows.first() else {
        return Ok(None);
    };
    let key: String = row.get("object_key")?;
    let finished: String = row.get("finished_at")?;
    let at = utc_millis(&finished).ok_or_else(|| {
        Error::failed(format!(
            "backup_runs.finished_at `{finished}` is not RFC 3339 UTC"
        ))
    })?;
    Ok(Some((key, (runbook::now_millis() - at) / 3_600_000)))
}

/// Which of the table's suspects a backup error points at.
fn suspect(error: &str) -> &'static str {
    let e = error.to_ascii_lowercase();
    if [
        "accessdenied",
        "invalidaccesskeyid",
        "signaturedoesnotmatch",
        "403",
        "credential",
    ]
    .iter()
    .any(|w| e.contains(w))
    {
        "the R2 credentials"
    } else if ["age:", "recipient", "no identity"]
        .iter()
        .any(|w| e.contains(w))
    {
        "the recipient age key"
    } else {
        "the backup script (its logs)"
    }
}

fn backup_said(backup: &Result<Option<(String, i64)>>, stale_after: i64) -> (bool, String) {
    match backup {
        // A finish time in the future is not believed (a clock or a row
        // gone wrong): no backup counts as current on it.
        Ok(Some((key, hours))) if *hours < 0 => (
            false,
            format!("the last backup ({key}) has a finish time in the future: NOT trusted"),
        ),
        Ok(Some((key, hours))) if *hours <= stale_after => (
            true,
            format!("the last backup ({key}) is {hours} h old: current"),
        ),
        Ok(Some((key, hours))) => (
            false,
            format!("the last backup ({key}) is {hours} h old: NOT current"),
        ),
        Ok(None) => (false, "NO successful backup is recorded".to_owned()),
        Err(e) => (
            false,
            format!("the backup state is unknown ({})", e.message()),
        ),
    }
}

fn backup_stale(stale_after: i64, checklist: &mut Vec<String>) -> Result<String> {
    let backup = last_backup();
    let (_, said) = backup_said(&backup, stale_after);
    // Ok(None): no run recorded; Err: the question was not answered.
    let last_run = db::query(DB, LAST_RUN, params![]).and_then(|rows| {
        if rows.is_empty() {
            return Ok(None);
        }
        let row = rows.first()?;
        Ok(Some((
            row.get::<String>("started_at")?,
            row.get::<bool>("succeeded")?,
            row.get::<String>("error").ok(),
        )))
    });
    let cause = match &last_run {
        Ok(Some((started, false, error))) => {
            let error = error.as_deref().unwrap_or("no error recorded");
            let who = suspect(error);
            checklist.push(format!(
                "Check {who} first: the run of {started} failed with `{error}`"
            ));
            format!("the last run ({started}) failed: `{error}`, which points at {who}")
        }
        Ok(Some((started, true, _))) => format!("the last run ({started}) succeeded"),
        Err(e) => {
            checklist.push(format!(
                "Read the backup script's log by hand: its runs could not be read ({})",
                e.message()
            ));
            format!("the backup runs could not be read ({})", e.message())
        }
        Ok(None) => {
            checklist.push(
                "No backup run is recorded: is the nightly backup cron running at all?".to_owned(),
            );
            "no backup run is recorded at all".to_owned()
        }
    };
    checklist.push(
        "Rerun the backup by hand once the cause is fixed, and confirm the object lands in R2"
            .to_owned(),
    );
    Ok(format!("Backup stale: {said}; {cause}"))
}

fn disk_free(alert: &Alert, stale_after: i64, checklist: &mut Vec<String>) -> Result<String> {
    let host = alert.plain_label("instance").unwrap_or("the database host");
    let free = alert
        .annotation("free_percent")
        .and_then(plain)
        .map(|p| format!(" ({p}% free)"))
        .unwrap_or_default();
    let backup = last_backup();
    let (current, said) = backup_said(&backup, stale_after);
    let slots = db::query(PG, SLOTS, params![]).and_then(|rows| {
        rows.iter()
            .map(|r| {
                Ok((
                    r.get::<String>("slot_name")?,
                    r.get::<bool>("active")?,
                    r.get::<i64>("retained_bytes").unwrap_or(0),
                ))
            })
            .collect::<Result<Vec<_>>>()
    });
    let slots_said = match &slots {
        Ok(slots) => {
            let idle: Vec<String> = slots
                .iter()
                .filter(|(_, active, bytes)| !active && *bytes > 0)
                .map(|(name, _, bytes)| format!("{name} ({} MiB)", bytes / (1 << 20)))
                .collect();
            if idle.is_empty() {
                "no inactive replication slot holds WAL back".to_owned()
            } else {
                checklist.push(format!(
                    "Inactive replication slot(s) hold WAL back: {}; drop one only if its consumer is gone for good (SELECT pg_drop_replication_slot('<name>'))",
                    idle.join(", ")
                ));
                format!(
                    "inactive replication slot(s) hold WAL back: {}",
                    idle.join(", ")
                )
            }
        }
        Err(e) => format!("the replication slots are unknown ({})", e.message()),
    };
    if current {
        checklist.push("The backup is current: an emergency cleanup of /var/lib/postgresql/wal is allowed (archived segments only); then old logs and backup tarballs".to_owned());
    } else {
        checklist.push("Do NOT truncate /var/lib/postgresql/wal: the backup is not current. Free old logs and backup tarballs first, take a backup, then clean up".to_owned());
    }
    Ok(format!(
        "Disk free critical on {host}{free}: {said}; {slots_said}"
    ))
}

fn certificate(alert: &Alert, checklist: &mut Vec<String>) -> Result<String> {
    let domain = alert
        .plain_label("domain")
        .or_else(|| alert.plain_label("instance"))
        .unwrap_or("a Plaza domain");
    let days = alert
        .annotation("expires_in_days")
        .and_then(plain)
        .map(|d| format!("expires in {d} day(s)"))
        .unwrap_or_else(|| "expires in under 3 days".to_owned());
    checklist.push(format!(
        "Read the ACME renewal log in Caddy for {domain}: why did renewal fail?"
    ));
    checklist.push(
        "Force the renewal (caddy reload --force on the edge host), then confirm the new expiry"
            .to_owned(),
    );
    Ok(format!(
        "TLS certificate of {domain} {days}: automatic renewal has failed"
    ))
}

impl Playbook for PlatformAlerts {
    fn describe() -> Description {
        Description::new("plaza-platform-alerts", "1.0.0")
            .summary(
                "Plaza DiskFreeCritical, BackupStale and CertificateExpiringCritical: checks first what the \
                 alert table says to (the backup's age and last error, the WAL-holding replication slots, \
                 whether a WAL cleanup is allowed) and pages on-call and the CEO with it; writes nothing.",
            )
            .answers("DiskFreeCritical")
            .answers("BackupStale")
            .answers("CertificateExpiringCritical")
            .db_read(DB)
            .db_read(PG)
            .page(ONCALL)
            .page(CEO)
            .notify(INCIDENT)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let stale_after = alert.setting("backup_stale_hours", BACKUP_STALE_HOURS)?;
        let mut checklist = Vec::new();
        let summary = step("Check first", || match alert.name.as_str() {
            "BackupStale" => backup_stale(stale_after, &mut checklist),
            "DiskFreeCritical" => disk_free(&alert, stale_after, &mut checklist),
            "CertificateExpiringCritical" => certificate(&alert, &mut checklist),
            other => Err(Error::failed(format!(
                "`{other}` is not an alert this playbook answers"
            ))),
        })?;
        step("Page on-call and the CEO", || {
            let mut told = Vec::new();
            for target in [ONCALL, CEO] {
                pager::page_or_note(
                    target,
                    Severity::Critical,
                    &format!("Plaza {}: {summary}", alert.name),
                    "critical: on-call + CEO (alert table)",
                    &mut told,
                );
            }
            pager::notify_or_note(
                INCIDENT,
                &format!("Plaza {}: {summary}", alert.name),
                &mut told,
            );
            told.append(&mut checklist);
            let mut outcome = Outcome::new(summary.clone()).severity("SEV-1");
            for item in told {
                outcome = outcome.todo(item);
            }
            Ok(outcome)
        })
    }
}

stepgate_sdk::playbook!(PlatformAlerts);
