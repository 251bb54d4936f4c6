"""FiatRails: `nonce too low`, in Python.

Codifies the runbook's "Common Issues & Fixes: nonce too low" (the API
submitted a transaction with an old nonce):

- Diagnosis: the signer's next nonce as the chain sees it, counting its
  pending transactions (`eth_getTransactionCount(signer, "pending")`, and
  "latest" for how many are pending), on the provider the API uses now
  (`FIATRAILS_RPC_PROVIDER`: after a failover, the fallback); the
  temporary override the API may already run with
  (`FIATRAILS_NONCE_OVERRIDE`); how many DLQ items failed on it.
- Temporary workaround: tell the incident channel, then set the override
  to the pending nonce (a write a human approves). An override already at
  the pending nonce is left alone: the cause is elsewhere.
- The fix is in the API's code (always fetch the pending nonce): on the
  checklist, with clearing the override once it ships and replaying the
  DLQ items that failed (the fiatrails-dlq playbook does that).
"""

import re

import stepgate
from stepgate import Description, Error, Fate, Outcome, db, flags, pager, rpc, step

DB = "fiatrails"
PRIMARY = "fiatrails_rpc"
FALLBACK = "fiatrails_rpc_fallback"
PROVIDER = "FIATRAILS_RPC_PROVIDER"
OVERRIDE = "FIATRAILS_NONCE_OVERRIDE"
INCIDENTS = "fiatrails-incidents"

NONCE_FAILURES = (
    "SELECT count(*) AS items FROM dlq_items "
    "WHERE status = 'open' AND lower(last_error) LIKE '%nonce too low%'"
)




def quantity(text, what):
    """A JSON-RPC quantity (`0x2a`) as an int: hex digits only, no sign, below
    2^63; anything else is refused."""
    if not isinstance(text, str) or not re.fullmatch(r"0x[0-9a-fA-F]{1,16}", text):
        raise Error.failed(f"{what} answered `{text}`, not a quantity")
    n = int(text[2:], 16)
    if n >= 2**63:
        raise Error.failed(f"{what} answered `{text}`, out of range for a nonce")
    return n


class NonceTooLow(stepgate.Playbook):
    def describe(self):
        return (
            Description("fiatrails-nonce-too-low", "1.0.0")
            .summary(
                "FiatRails nonce too low: reads the signer's pending and latest nonce on the provider the "
                "API uses and the override it runs with, sets FIATRAILS_NONCE_OVERRIDE to the pending "
                "nonce (approved) after telling the incident channel; the code fix stays on the checklist."
            )
            .answers("NonceTooLow")
            .db_read(DB)
            .rpc(PRIMARY, "eth_getTransactionCount")
            .rpc(FALLBACK, "eth_getTransactionCount")
            .flag_read(PROVIDER)
            .flag_read(OVERRIDE)
            .flag_write(OVERRIDE)
            .notify(INCIDENTS)
        )

    def run(self, alert):
        signer = alert.address("signer")
        checklist = []
        with step("Diagnosis"):
            endpoint = FALLBACK if flags.get(PROVIDER) == "fallback" else PRIMARY
            override = flags.get(OVERRIDE)
            try:
                failed_items = db.query(DB, NONCE_FAILURES).first().int("items")
            except Error as e:
                failed_items = None
                checklist.append(f"Count the DLQ items that failed on `nonce too low` by hand ({e.message()})")
            try:
                pending = quantity(
                    rpc.call(endpoint, "eth_getTransactionCount", [signer, "pending"]), "eth_getTransactionCount"
                )
                latest = quantity(
                    rpc.call(endpoint, "eth_getTransactionCount", [signer, "latest"]), "eth_getTransactionCount"
                )
            except Error as e:
                pending = latest = None
                nonce_error = e.message()
        items = "an unknown number of" if failed_items is None else str(failed_items)
        # No override from a nonce that is unknown, or from a provider whose
        # pending count is behind its own latest (it would be too low itself).
        problem = None
        if pending is None:
            problem = (
                f"{endpoint} did not answer the nonce ({nonce_error})",
                f"Read the pending nonce of {signer} once the RPC answers; see HighRPCErrorRate",
            )
        elif pending < latest:
            problem = (
                f"{endpoint} answered pending {pending} below latest {latest}",
                f"Read the nonce of {signer} from another provider before setting {OVERRIDE} by hand",
            )
        if problem is not None:
            why, todo = problem
            with step("Escalate: no nonce to trust"):
                summary = f"Nonce too low for {signer}: {why}; no override set"
                pager.notify_or_note(INCIDENTS, f"FiatRails {alert.name}: {summary}", checklist)
                checklist.append(todo)
                return self.outcome(summary, "CRITICAL", checklist, signer, endpoint, override, pending, latest, failed_items)
        with step("Temporary workaround: the override"):
            in_flight = pending - latest
            current = override.strip() if isinstance(override, str) else None
            if current is not None and current.isascii() and current.isdigit() and int(current) == pending:
                summary = (
                    f"Nonce too low for {signer}: the override already holds the pending nonce {pending}; "
                    "nothing changed, the cause is elsewhere"
                )
                pager.notify_or_note(
                    INCIDENTS,
                    f"FiatRails {alert.name}: {summary} ({in_flight} transaction(s) pending, {items} DLQ item(s) failed on it)",
                    checklist,
                )
                checklist.append(
                    "Look for a second process signing with the same key (a nonce taken twice), then the API's nonce code"
                )
            else:
                told = (
                    f"FiatRails {alert.name}: {signer} is at pending nonce {pending} on {endpoint} "
                    f"({in_flight} pending), the API's override is {override or 'unset'}; stepgate asks an approver "
                    f"to set {OVERRIDE}={pending}; decide in stepgate now"
                )
                pager.notify_or_note(INCIDENTS, told, checklist)
                reason = (
                    f"FiatRails runbook, nonce too low, temporary workaround: the signer {signer} is at pending "
                    f"nonce {pending} (latest {latest}); the override is {override or 'unset'}"
                )
                fate = Fate.of(lambda: flags.set(OVERRIDE, str(pending), reason))
                if not fate.passed():
                    checklist.append(f"Set {OVERRIDE}={pending} by hand, or restart the API once the nonce code is fixed")
                summary = f"Nonce too low for {signer}: {OVERRIDE} {fate.say(f'set to {pending}')}"
                pager.notify_or_note(INCIDENTS, f"FiatRails {alert.name}: {summary}", checklist)
            checklist += [
                "Fix the API: always fetch the nonce with getTransactionCount(signer, 'pending')",
                f"Clear {OVERRIDE} once the fix is deployed: an override left in place goes stale with the next transaction",
                f"Replay the {items} DLQ item(s) that failed on `nonce too low` (the fiatrails-dlq playbook)",
            ]
            return self.outcome(summary, "WARNING", checklist, signer, endpoint, override, pending, latest, failed_items)

    def outcome(self, summary, severity, checklist, signer, endpoint, override, pending, latest, failed_items):
        outcome = (
            Outcome(summary)
            .severity(severity)
            .field("signer", signer)
            .field("provider", endpoint)
            .field("override_before", override or "")
        )
        if pending is not None:
            outcome.field("pending_nonce", pending).field("latest_nonce", latest)
        if failed_items is not None:
            outcome.field("dlq_nonce_failures", failed_items)
        for item in checklist:
            outcome.todo(item)
        return outcome


WitWorld = stepgate.export(NonceTooLow)
