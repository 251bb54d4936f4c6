//! Plaza: the backup restore procedure (the quarterly disaster-recovery
//! rehearsal), as a playbook an operator walks through in step mode:
//!
//! ```text
//! stepgate run plaza-backup-restore --alert examples/alerts/plaza-backup-restore.json --live --step
//! ```
//!
//! Each of the runbook's manual steps (spin up a box, pull the dump,
//! decrypt, restore, migrate forward, tear down) is a `runbook::confirm`:
//! the operator does it, then answers (approves: done; denies: it failed,
//! and the rehearsal stops there with what is left). What a machine can
//! check, it checks: which backup is the latest (and so the RPO the
//! rehearsal proves), and the smoke test against the restored API (a
//! sandbox order, then the read path, the funding path, the message
//! delivery path and the reputation lookup). The outcome documents the
//! wall-clock time against the 4-hour RTO and the backup's age against the
//! 15-minute RPO, as the runbook asks.

use stepgate_sdk::prelude::*;

const DB: &str = "plaza";
const RESTORED: &str = "plaza_restore";
const INCIDENT: &str = "incident";

/// The runbook's targets.
const RTO_MINUTES: i64 = 240;
const RPO_MINUTES: i64 = 15;

const LATEST_BACKUP: &str = "SELECT object_key, finished_at FROM backup_runs \
     WHERE succeeded = TRUE AND finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 1";

struct BackupRestore;

/// A manual step: the operator does it, then answers. `Ok(false)` when
/// they say it did not work.
fn manual(name: &str, what: &str) -> Result<bool> {
    step(name, || {
        runbook::confirm(&format!("{what}: done, and did it work?"))
    })
}

/// The sandbox order's id from the restored API's answer; anything but a
/// plain id is refused (the restored box is a copy of production data).
fn order_id(answer: &http::Response) -> Option<String> {
    let id = answer.body.get("id")?.as_str()?;
    (!id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-'))
    .then(|| id.to_owned())
}

/// The smoke test: each path's name and whether it passed (or why not).
fn smoke_test() -> Vec<(&'static str, std::result::Result<(), String>)> {
    let reason =
        "Plaza runbook, backup restore: smoke test on the restored database (sandbox order)";
    let said = |r: Result<http::Response>| match r {
        Ok(a) if a.ok() => Ok(a),
        Ok(a) => Err(format!("answered HTTP {}", a.status)),
        Err(e) => Err(e.message()),
    };
    let mut results = Vec::new();
    let order = said(http::post(
        RESTORED,
        "/v1/orders",
        &serde_json::json!({ "sandbox": true, "amount": "1.00" }),
        reason,
    ))
    .and_then(|a| {
        if a.dry_run {
            // A dry run plans the order: no id to go on with, so the
            // paths that use it are not tried.
            return Ok(None);
        }
        order_id(&a)
            .map(Some)
            .ok_or_else(|| "answered no usable order id".to_owned())
    });
    results.push((
        "sandbox order",
        order.as_ref().map(|_| ()).map_err(Clone::clone),
    ));
    let Ok(Some(id)) = order else {
        return results;
    };
    results.push((
        "read path",
        said(http::get(RESTORED, &format!("/v1/orders/{id}"))).map(|_| ()),
    ));
    results.push((
        "funding path",
        said(http::post(
            RESTORED,
            &format!("/v1/orders/{id}/fund"),
            &serde_json::json!({ "sandbox": true }),
            reason,
        ))
        .map(|_| ()),
    ));
    results.push((
        "message delivery path",
        said(http::post(
            RESTORED,
            &format!("/v1/orders/{id}/messages"),
            &serde_json::json!({ "body": "DR rehearsal" }),
            reason,
        ))
        .map(|_| ()),
    ));
    results.push((
        "reputation lookup",
        said(http::get(RESTORED, "/v1/reputation/sandbox-agent")).map(|_| ()),
    ));
    results
}

impl Playbook for BackupRestore {
    fn describe() -> Description {
        Description::new("plaza-backup-restore", "1.0.0")
            .summary(
                "Plaza backup restore (the quarterly DR rehearsal), for step mode: the operator confirms each \
                 manual step, stepgate names the backup, smoke-tests the restored API (sandbox order, read, \
                 funding, messages, reputation) and documents the wall-clock time against the RTO and RPO.",
            )
            .answers("PlazaBackupRestore")
            .answers("PlazaDrRehearsalDue")
            .db_read(DB)
            .http(RESTORED, "POST /v1/orders")
            .http(RESTORED, "GET /v1/orders/*")
            .http(RESTORED, "POST /v1/orders/*/fund")
            .http(RESTORED, "POST /v1/orders/*/messages")
            .http(RESTORED, "GET /v1/reputation/*")
            .notify(INCIDENT)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let started = runbook::now_millis();
        let rto = alert.setting("rto_minutes", RTO_MINUTES)?;
        let rpo = alert.setting("rpo_minutes", RPO_MINUTES)?;
        let mut checklist = Vec::new();
        let backup = step("Find the latest backup", || -> Result<_> {
            let rows = db::query(DB, LATEST_BACKUP, params![])?;
            let row = rows.first().map_err(|_| {
                Error::failed(
                    "no successful backup is recorded in backup_runs: there is nothing to restore",
                )
            })?;
            let key: String = row.get("object_key")?;
            // The key goes into commands an operator copies: a plain object
            // key only.
            if key.is_empty()
                || key.len() > 256
                || !key
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"/._-".contains(&c))
                || key.contains("..")
            {
                return Err(Error::failed(format!(
                    "backup_runs.object_key `{}` is not a plain object key: restore by hand",
                    key.escape_debug()
                )));
            }
            let finished: String = row.get("finished_at")?;
            let age = utc_millis(&finished)
                .map(|at| (started - at) / 60_000)
                .ok_or_else(|| {
                    Error::failed(format!(
                        "backup_runs.finished_at `{finished}` is not RFC 3339 UTC"
                    ))
                })?;
            if age < 0 {
                return Err(Error::failed(format!(
                    "backup_runs.finished_at `{finished}` is in the future: the backup record is not trusted; restore by hand"
                )));
            }
            Ok((key, age))
        })?;
        let (key, age) = backup;
        pager::notify_or_note(
            INCIDENT,
            &format!(
                "Plaza DR rehearsal ({}) started: restoring s3://plaza-backups/{key} ({age} min old); the operator confirms each step in stepgate",
                alert.name
            ),
            &mut checklist,
        );
        let steps: [(&str, String); 5] = [
            ("1. Spin up a fresh box", "Spin up a fresh Hetzner CCX23 from the standard image".to_owned()),
            ("2. Pull the dump", format!("Pull the dump: aws s3 cp s3://plaza-backups/{key} .")),
            ("3. Decrypt", "Decrypt it with the operations age key".to_owned()),
            ("4. Restore", format!("Restore it: psql plaza < {}", key.rsplit('/').next().unwrap_or(&key).trim_end_matches(".age"))),
            ("5. Migrate forward", "Start plaza-api on the restored database with PLAZA_AUTO_MIGRATE=1 and point stepgate's `plaza_restore` endpoint at it".to_owned()),
        ];
        let mut failed_at = None;
        for (name, what) in &steps {
            if !manual(name, what)? {
                failed_at = Some(*name);
                break;
            }
        }
        let smoke = match failed_at {
            None => step("6. Smoke-test the restored API", smoke_test),
            Some(_) => Vec::new(),
        };
        let smoke_failed: Vec<String> = smoke
            .iter()
            .filter_map(|(path, r)| {
                r.as_ref()
                    .err()
                    .map(|why| format!("{path} NOT verified (failed: {why})"))
            })
            .collect();
        let torn_down = manual("7. Tear down the test box", "Tear down the test box")?;
        let minutes = (runbook::now_millis() - started) / 60_000;
        let dry = if runbook::dry_run() {
            " (dry run: the steps were planned, none confirmed)"
        } else {
            ""
        };
        let result = match failed_at {
            Some(name) => format!("NOT restored: the operator reported step `{name}` failed"),
            None if runbook::dry_run() => "the restore and the smoke test planned".to_owned(),
            None if smoke_failed.is_empty() => {
                format!("restored and smoke-tested ({} paths)", smoke.len())
            }
            None => format!(
                "restored, but the smoke test failed: {}",
                smoke_failed.join("; ")
            ),
        };
        let clock = if runbook::dry_run() {
            "wall clock not measured".to_owned()
        } else if failed_at.is_some() {
            format!("{minutes} min wall clock, no restore (RTO {rto} min: NOT met)")
        } else {
            // The RTO is met by a restore that works, smoke test included.
            format!(
                "{minutes} min wall clock (RTO {rto} min: {})",
                if !smoke_failed.is_empty() {
                    "NOT met: the smoke test failed"
                } else if minutes <= rto {
                    "met"
                } else {
                    "MISSED"
                }
            )
        };
        let summary = format!(
            "Plaza DR rehearsal{dry}: {result}; {clock}; backup {age} min old (RPO {rpo} min: {})",
            if age <= rpo { "met" } else { "MISSED" }
        );
        pager::notify_or_note(INCIDENT, &summary, &mut checklist);
        if !torn_down {
            checklist.push("The test box is NOT torn down: tear it down".to_owned());
        }
        if let Some(name) = failed_at {
            checklist.push(format!("Find why `{name}` failed and rehearse again: a restore that does not work is a SEV-1 waiting to happen"));
        }
        checklist.extend(smoke_failed.iter().map(|f| format!("Smoke test: {f}")));
        checklist.push(format!("Document the wall-clock time ({minutes} min) and the backup's age ({age} min) in the DR log"));
        if age > rpo {
            checklist.push("Nightly snapshots cannot meet a 15-minute RPO: plan intra-day snapshots once volume justifies".to_owned());
        }
        let mut outcome = Outcome::new(summary)
            .severity(if failed_at.is_some() || !smoke_failed.is_empty() {
                "SEV-2"
            } else {
                "SEV-3"
            })
            .field("backup", key.as_str())
            .field("backup_age_minutes", age)
            .field("wall_clock_minutes", minutes)
            .field("restored", failed_at.is_none() && !runbook::dry_run());
        for item in checklist {
            outcome = outcome.todo(item);
        }
        Ok(outcome)
    }
}

stepgate_sdk::playbook!(BackupRestore);
