"""loa-finn: treasury compromise (unauthorized USDC transfers from the
treasury address), in Python.

The same playbook as `playbooks/loafinn-treasury-compromise` (Rust),
written with the Python SDK: it runs the Rust version's scenarios and must
decide exactly as it does (tests/tests/languages.rs enforces it).

Codifies runbook section 1, "Treasury Compromise":

- Immediate actions: freeze mints (`credits` off) and disable x402 (`x402`
  off) through the feature-flag admin API, writes two approvers decide;
  audit the WAL's `credit_mint` entries of the last 24 h, and who got them.
- Rotating the treasury address and the recovery stay with humans: the
  outcome's checklist.

The loa-finn runbook assigns no severity levels; the outcome says CRITICAL.
"""

import stepgate
from stepgate import Description, Error, Outcome, Severity, db, from_units, http, pager, runbook, step

DB = "loa_finn"
ADMIN = "loa_admin"
FLAGS = "/api/v1/admin/feature-flags"
ONCALL = "loa-oncall"

# Step 4: the WAL's credit mints of the last 24 h, in all and by account.
MINTS_24H = (
    "SELECT count(*) AS mints, coalesce(sum(amount_micro), 0)::bigint AS minted_micro, "
    "count(DISTINCT account_id) AS accounts FROM wal_entries "
    "WHERE event_type = 'credit_mint' AND created_at > now() - interval '24h'"
)
TOP_MINTERS = (
    "SELECT account_id, count(*) AS mints, sum(amount_micro)::bigint AS minted_micro "
    "FROM wal_entries WHERE event_type = 'credit_mint' AND created_at > now() - interval '24h' "
    "GROUP BY 1 ORDER BY 3 DESC LIMIT 10"
)

# Steps 1 and 2, in the runbook's order.
FREEZE = [
    ("credits", "step 1, freeze mints: disable credit purchase"),
    ("x402", "step 2, disable x402: stop accepting new payments"),
]


def usdc(micro):
    """USDC micro-units as a decimal."""
    return from_units(micro, 6)


class TreasuryCompromise(stepgate.Playbook):
    def describe(self):
        return (
            Description("loafinn-treasury-compromise", "1.0.0")
            .summary(
                "loa-finn runbook 1, treasury compromise: freezes mints (credits) and x402 through the "
                "feature-flag admin API (two approvers), audits the WAL's credit mints of the last "
                "24 h, and pages on-call; rotating the treasury address stays with humans."
            )
            .answers("TreasuryUnauthorizedTransfer")
            .db_read(DB)
            .http(ADMIN, f"GET {FLAGS}")
            .http(ADMIN, f"POST {FLAGS}")
            .page(ONCALL)
        )

    def run(self, alert):
        checklist = []
        # The humans first: the freeze waits for two approvers.
        with step("Tell on-call"):
            try:
                pager.page(
                    ONCALL,
                    Severity.CRITICAL,
                    "loa-finn treasury compromise: stepgate asks two approvers to freeze credit mints and x402",
                    f"alert {alert.name}: approve or deny the freeze in stepgate now; a second page follows with "
                    "what was frozen and the mint audit",
                )
            except Error as e:
                checklist.append(f"On-call was NOT paged at the start ({e.message()}): call them")
        not_frozen = []
        with step("Immediate actions: freeze"):
            frozen = self.freeze(checklist, not_frozen)
        audit = None
        with step("Immediate actions: audit recent mints"):
            try:
                audit = self.audit()
            except Error as e:
                checklist.append("Audit the WAL's credit_mint entries of the last 24 h by hand (the query failed)")
                audit_text = f"mint audit failed ({e.message()})"
        if audit is not None:
            mints, minted, accounts, top = audit
            audit_text = (
                f"{mints} credit mint(s) for {usdc(minted)} USDC to {accounts} account(s) in 24 h; "
                f"top: {'; '.join(top)}"
            )
        dry_run = runbook.dry_run()
        if not frozen:
            told = "NOTHING frozen"
        elif not_frozen:
            told = "only partly frozen"
        elif dry_run:
            told = "freeze planned as listed (dry run, nothing written)"
        else:
            told = "frozen as listed"
        with step("Escalate"):
            pager.page_or_note(
                ONCALL,
                Severity.CRITICAL,
                f"loa-finn treasury compromise: {told}, rotate the treasury address",
                f"alert {alert.name} ({'no fingerprint' if alert.fingerprint is None else alert.fingerprint}): frozen: "
                f"{', '.join(frozen) if frozen else 'NOTHING'}"
                + (f"; NOT frozen: {', '.join(not_frozen)}" if not_frozen else "")
                + f". {audit_text}",
                checklist,
            )
            checklist += [
                "Rotate the treasury address: update SSM /loa-finn/production/TREASURY_ADDRESS, redeploy the ECS "
                "service, restart or wait 60 s for the x402 quote cache",
                "Recovery: verify the new treasury address, re-enable the flags one at a time, monitor for 1 hour",
            ]
            outcome = (
                Outcome(
                    f"Treasury compromise{' (dry run, nothing written)' if dry_run else ''}: "
                    f"frozen {', '.join(frozen) if frozen else 'NOTHING'}"
                    + (
                        f"; NOT frozen: {', '.join(not_frozen)} (refused or failed, see the checklist)"
                        if not_frozen
                        else ""
                    )
                    + f"; {audit_text}"
                )
                .severity("CRITICAL")
                .field("frozen", ",".join(frozen))
            )
            if audit is not None:
                mints, minted, accounts, _ = audit
                outcome.field("mints_24h", mints).field("minted_usdc_24h", usdc(minted)).field(
                    "minting_accounts_24h", accounts
                )
            for item in checklist:
                outcome.todo(item)
            return outcome

    def freeze(self, checklist, not_frozen):
        try:
            current = http.get(ADMIN, FLAGS)
        except Error:
            current = None
        frozen = []
        for flag, why in FREEZE:
            enabled = None
            if current is not None and current.ok() and isinstance(current.body, dict):
                value = current.body.get(flag)
                enabled = value if isinstance(value, bool) else None
            if enabled is False:
                frozen.append(f"{flag} (already off)")
                continue
            reason = f"loa-finn runbook, Treasury Compromise, {why}"
            try:
                answer = http.post(ADMIN, FLAGS, {"flag": flag, "enabled": False}, reason)
            except Error as e:
                not_frozen.append(flag)
                checklist.append(f"`{flag}` is NOT off ({e.message()}): disable it by hand (POST {FLAGS})")
                continue
            if answer.dry_run:
                frozen.append(f"{flag} (dry run: planned)")
            elif answer.ok():
                frozen.append(flag)
            else:
                not_frozen.append(flag)
                checklist.append(
                    f"The flag API answered {answer.status} to `{flag}` off: disable it by hand (POST {FLAGS})"
                )
        return frozen

    def audit(self):
        totals = db.query(DB, MINTS_24H).first()
        mints, minted, accounts = totals.int("mints"), totals.int("minted_micro"), totals.int("accounts")
        top = [
            f"{row.text('account_id')} {usdc(row.int('minted_micro'))} USDC in {row.int('mints')} mint(s)"
            for row in list(db.query(DB, TOP_MINTERS))[:3]
        ]
        return mints, minted, accounts, top


WitWorld = stepgate.export(TreasuryCompromise)
