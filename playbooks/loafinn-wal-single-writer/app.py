"""loa-finn §6: WAL single-writer violation, in Python (it stands alone:
no Rust original).

Indicators: the `ecs_desired_count_drift` alarm, `CRITICAL: lock conflict`
in the logs. The runbook's rule: NEVER scale desiredCount above 1 (WAL
corruption risk). A second instance fails to take the writer lock and
answers 503 on every billing endpoint (fail-closed) while the first goes on.

- Triage: how many instances the alarm counts (`desired_count`,
  `running_count` labels), whether billing answers (the billing health
  endpoint) and whether the WAL is still being written (its newest entry's
  age): the first writer alive, or billing down.
- Action: on-call is paged to scale the ECS service back to 1 now. stepgate
  has no capability for ECS (`UpdateService` is an AWS-signed API call), so
  the command is on the checklist; nothing is written.
"""

import stepgate
from stepgate import Description, Error, Outcome, Severity, db, http, pager, runbook, step

DB = "loa_finn"
ADMIN = "loa_admin"
HEALTH = "/api/v1/admin/billing/health"
ONCALL = "loa-oncall"
INCIDENTS = "loa-incidents"

# The WAL is taken as still written when its newest entry is younger than
# this (billing writes continuously in production).
WAL_IDLE_SECONDS = 300

WAL_AGE = "SELECT EXTRACT(EPOCH FROM now() - max(created_at))::bigint AS idle_seconds FROM wal_entries"


def count(alert, key):
    """A whole-number label, or None when the alarm does not say."""
    text = alert.label(key)
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()):
        raise Error.failed(f"`{key}` = `{text}` is not a whole number of tasks")
    return int(text)


class WalSingleWriter(stepgate.Playbook):
    def describe(self):
        return (
            Description("loafinn-wal-single-writer", "1.0.0")
            .summary(
                "loa-finn runbook 6, WAL single-writer violation: reads the instance counts, billing health "
                "and the WAL's last write, and pages on-call to scale the ECS service back to 1 (stepgate "
                "cannot call ECS); never scales up."
            )
            .answers("EcsDesiredCountDrift")
            .answers("WalLockConflict")
            .db_read(DB)
            .http(ADMIN, f"GET {HEALTH}")
            .page(ONCALL)
            .notify(INCIDENTS)
        )

    def run(self, alert):
        desired = count(alert, "desired_count")
        running = count(alert, "running_count")
        idle_after = alert.setting("wal_idle_seconds", WAL_IDLE_SECONDS)
        with step("Triage"):
            try:
                health = http.get(ADMIN, HEALTH)
                billing = "answers" if health.ok() else f"answers {health.status} (fail-closed)"
                billing_up = health.ok()
            except Error as e:
                billing, billing_up = f"does not answer ({e.message()})", False
            try:
                row = db.query(DB, WAL_AGE).first()
                idle = None if row["idle_seconds"] is None else row.int("idle_seconds")
            except Error as e:
                idle, wal = None, f"the WAL's last write is unknown ({e.message()})"
            else:
                wal = "the WAL was never written" if idle is None else f"the WAL was last written {idle} s ago"
        writing = idle is not None and idle <= idle_after
        counts = [n for n in (desired, running) if n is not None]
        instances = max(counts) if counts else None
        tasks = "an unknown number of instances (the alert gives no count)" if instances is None else f"{instances} instance(s)"
        checklist = []
        with step("Immediate actions"):
            too_many = instances is None or instances > 1 or alert.name == "WalLockConflict"
            none_running = not too_many and (desired == 0 or instances == 0)
            if none_running:
                severity = "CRITICAL"
                state = f"desiredCount is {desired if desired is not None else instances}: NO instance runs ({wal}); billing {billing}: billing is down"
            elif too_many and writing:
                severity = "CRITICAL"
                state = f"{tasks}; the first writer holds the lock and writes ({wal}); billing {billing}"
            elif too_many:
                severity = "CRITICAL"
                state = f"{tasks} and NO writer is writing ({wal}); billing {billing}: billing is down"
            else:
                severity = "WARNING"
                state = f"desiredCount is back to {instances}; {wal}; billing {billing}"
            paged = ""
            if too_many or none_running:
                before = len(checklist)
                pager.page_or_note(
                    ONCALL,
                    Severity.CRITICAL,
                    "loa-finn WAL single-writer: scale the ECS service to desiredCount 1 (never more) NOW",
                    f"alert {alert.name}: {state}. Never scale above 1 (WAL corruption risk).",
                    checklist,
                )
                if len(checklist) > before:
                    paged = "; on-call NOT paged (see the checklist)"
                elif runbook.dry_run():
                    paged = "; on-call would be paged (dry run) to scale to 1"
                else:
                    paged = "; on-call paged to scale to 1"
                checklist.append(
                    "Scale to 1: aws ecs update-service --cluster <cluster> --service loa-finn --desired-count 1 "
                    "(stepgate has no ECS capability)"
                )
                if not writing:
                    checklist.append(
                        "After the scale-down, confirm the remaining task takes the writer lock (a `circuit=closed` "
                        "billing health and new WAL entries); restart it if it does not"
                    )
                checklist.append("Find what changed desiredCount (autoscaling policy, a deploy, a manual change) and pin it to 1")
            summary = f"WAL single-writer: {state}{paged}"
            pager.notify_or_note(INCIDENTS, f"loa-finn {alert.name}: {summary}", checklist)
            outcome = (
                Outcome(summary)
                .severity(severity)
                .field("instances", -1 if instances is None else instances)
                .field("billing_up", billing_up)
                .field("wal_writing", writing)
            )
            for item in checklist:
                outcome.todo(item)
            return outcome


WitWorld = stepgate.export(WalSingleWriter)
