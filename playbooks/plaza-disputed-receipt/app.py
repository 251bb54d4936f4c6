"""Plaza: disputed receipt without a verdict, in Python (it stands alone:
no Rust original).

Symptom: a dispute open longer than 5 minutes with no verdict written.
Severity: SEV-2, unless the arbitration latency budget is breached
(SEV-1: on-call paged, the CEO informed on the incident channel).

- Triage, in the runbook's order: was the dispute flagged by the screener
  for human pre-review (then it waits on an operator's acknowledgement,
  nothing is stuck)? Is the LLM provider degraded (its status page)? Is
  its `arbitration.run` job stuck (failed, retried out, or never queued)?
- Mitigation: a degraded primary provider while the arbitrator uses it:
  the incident channel is told, then the arbitrator fails over to the
  secondary (`PLAZA_ARBITRATOR_PROVIDER=secondary`, approved), unless the
  secondary is degraded too. A stuck job's manual run
  (`plaza-tools arbitrate <dispute_urn>`) is a CLI stepgate has no
  capability for: it is on the checklist with the exact command.
"""

import datetime
import re

import stepgate
from stepgate import Description, Error, Fate, Outcome, Severity, db, flags, http, pager, runbook, step

DB = "plaza"
PRIMARY_STATUS = "llm_primary_status"
SECONDARY_STATUS = "llm_secondary_status"
STATUS_PAGE = "/api/v2/status.json"
PROVIDER = "PLAZA_ARBITRATOR_PROVIDER"
ONCALL = "plaza-oncall"
INCIDENT = "incident"

# A dispute without a verdict this long breaches the arbitration latency
# budget: SEV-1.
ARBITRATION_BUDGET_SECONDS = 600
# A job retried this often without a verdict is stuck.
STUCK_ATTEMPTS = 3

DISPUTE = (
    "SELECT urn, opened_at, verdict, screener_flagged, acknowledged_at FROM disputes WHERE urn = $1"
)
JOBS = (
    "SELECT state, attempts, last_error FROM arbitration_jobs WHERE dispute_urn = $1 "
    "ORDER BY enqueued_at DESC LIMIT 1"
)
URN = re.compile(r"[A-Za-z0-9:._-]{1,128}")


def utc_ms(text):
    """An RFC 3339 UTC time (`...Z`) as milliseconds, or None."""
    if not isinstance(text, str) or not text.endswith("Z"):
        return None
    try:
        return round(datetime.datetime.fromisoformat(text[:-1] + "+00:00").timestamp() * 1000)
    except ValueError:
        return None


def provider_health(endpoint):
    """A status page's indicator (`none`, `minor`, `major`, `critical`), or
    `unknown (why)`."""
    try:
        answer = http.get(endpoint, STATUS_PAGE)
    except Error as e:
        return f"unknown ({e.message()})"
    status = answer.body.get("status") if isinstance(answer.body, dict) else None
    indicator = status.get("indicator") if isinstance(status, dict) else None
    if not answer.ok() or indicator not in ("none", "minor", "major", "critical"):
        return f"unknown (the status page answered {answer.status})"
    return indicator


def degraded(health):
    return health in ("major", "critical")


class DisputedReceipt(stepgate.Playbook):
    def describe(self):
        return (
            Description("plaza-disputed-receipt", "1.0.0")
            .summary(
                "Plaza disputed receipt without a verdict: checks the screener's pre-review, the LLM providers' "
                "status pages and the arbitration.run job; fails the arbitrator over to the secondary provider "
                "(approved) when the primary is degraded; a stuck job's manual run stays on the checklist."
            )
            .answers("DisputeWithoutVerdict")
            .db_read(DB)
            .http(PRIMARY_STATUS, f"GET {STATUS_PAGE}")
            .http(SECONDARY_STATUS, f"GET {STATUS_PAGE}")
            .flag_read(PROVIDER)
            .flag_write(PROVIDER)
            .page(ONCALL)
            .notify(INCIDENT)
        )

    def run(self, alert):
        urn = alert.label("dispute_urn")
        if urn is None or not URN.fullmatch(urn):
            raise Error.failed(
                "the alert has no valid `dispute_urn` label (letters, digits and `:._-`, at most 128)"
            )
        budget = alert.setting("arbitration_budget_seconds", ARBITRATION_BUDGET_SECONDS)
        with step("Triage: the dispute"):
            dispute = db.query(DB, DISPUTE, [urn])
            if len(dispute) == 0:
                raise Error.failed(f"no dispute `{urn}` in the disputes table")
            row = dispute.first()
            opened = utc_ms(row["opened_at"])
            age = None if opened is None else (runbook.now_millis() - opened) // 1000
            verdict = row["verdict"]
            flagged = bool(row["screener_flagged"])
            acknowledged = row["acknowledged_at"] is not None
            jobs = db.query(DB, JOBS, [urn])
            job = None if len(jobs) == 0 else jobs.first()
        checklist = []
        # An age that cannot be read is escalated: unsure means one level up.
        over = age is None or age > budget
        self.headline = "dispute age unknown, escalated" if age is None else "arbitration budget breached"
        severity = "SEV-1" if over else "SEV-2"
        waited = "an unknown time" if age is None else f"{age // 60} min"
        if verdict is not None:
            with step("Resolved"):
                summary = f"Dispute {urn} has a verdict now ({verdict}) after {waited}: nothing to do"
                pager.notify_or_note(INCIDENT, f"Plaza {alert.name}: {summary}", checklist)
                return self.outcome(summary, "SEV-3", checklist, urn, age, "verdict")
        if flagged and not acknowledged:
            with step("Waiting on pre-review"):
                summary = (
                    f"{severity} dispute {urn} has waited {waited}: the screener flagged it for human pre-review, "
                    "which nobody has acknowledged; nothing is stuck"
                )
                self.tell(alert, severity, summary, checklist)
                checklist.append(f"Acknowledge dispute {urn} in the operator console (pre-review)")
                return self.outcome(summary, severity, checklist, urn, age, "pre-review")
        with step("Triage: providers and the job"):
            primary = provider_health(PRIMARY_STATUS)
            secondary = provider_health(SECONDARY_STATUS)
            current = flags.get(PROVIDER) or "primary"
        if job is None:
            job_said, stuck = "no arbitration.run job is queued", True
        else:
            state, attempts = job.text("state"), job.int("attempts")
            stuck = state == "failed" or attempts >= STUCK_ATTEMPTS
            job_said = f"its arbitration.run job is {state} after {attempts} attempt(s)" + (
                f" ({job['last_error']})" if job["last_error"] else ""
            )
        with step("Mitigate"):
            switched = None
            if current == "primary" and degraded(primary):
                if degraded(secondary) or secondary.startswith("unknown"):
                    checklist.append(
                        f"Both LLM providers are degraded or unknown (primary {primary}, secondary {secondary}): "
                        "no failover; escalate to the providers"
                    )
                else:
                    self.tell(
                        alert,
                        severity,
                        f"{severity} dispute {urn} has waited {waited}; the primary LLM provider is {primary}; "
                        f"stepgate asks an approver to fail the arbitrator over to the secondary; decide in stepgate now",
                        checklist,
                    )
                    reason = (
                        f"Plaza runbook, disputed receipt without a verdict: the primary LLM provider's status is "
                        f"{primary} and dispute {urn} has waited {waited}"
                    )
                    fate = Fate.of(lambda: flags.set(PROVIDER, "secondary", reason))
                    switched = fate.say("switched to the secondary")
                    if not fate.passed():
                        checklist.append(f"Fail the arbitrator over by hand: {PROVIDER}=secondary")
            for name, health in (("primary", primary), ("secondary", secondary)):
                if health.startswith("unknown"):
                    checklist.append(f"Check the {name} LLM provider's status page by hand (stepgate could not read it)")
            if stuck:
                checklist.append(f"Run it by hand: plaza-tools arbitrate {urn} (stepgate has no capability for the CLI)")
            summary = (
                f"{severity} dispute {urn} has waited {waited} without a verdict: {job_said}; LLM providers: "
                f"primary {primary}, secondary {secondary}, in use: {current}"
                + (f"; the arbitrator {switched}" if switched else "")
            )
            self.tell(alert, severity, summary, checklist)
            return self.outcome(summary, severity, checklist, urn, age, "stuck" if stuck else "waiting")

    def tell(self, alert, severity, message, checklist):
        if severity == "SEV-1":
            pager.page_or_note(ONCALL, Severity.ERROR, f"Plaza {alert.name}: arbitration budget breached", message, checklist)
        pager.notify_or_note(INCIDENT, f"Plaza {alert.name}: {message}", checklist)

    def outcome(self, summary, severity, checklist, urn, age, state):
        outcome = Outcome(summary).severity(severity).field("dispute_urn", urn).field("state", state)
        if age is not None:
            outcome.field("waited_seconds", age)
        for item in checklist:
            outcome.todo(item)
        return outcome


WitWorld = stepgate.export(DisputedReceipt)
