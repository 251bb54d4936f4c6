//! Plaza: reconciliation drift (custodied mode).
//!
//! Codifies the section "Reconciliation drift (custodied mode)" of the Plaza
//! operations runbook:
//!
//! - **Symptom**: the ledger sum of `escrow_holds` in `held` state does not
//!   match the on-chain hot-wallet balance within tolerance.
//! - **Severity**: SEV-0 if the drift is greater than the operational buffer
//!   or unexplained; SEV-1 if bounded and explained by an in-flight
//!   transaction.
//! - **Triage**: confirm the ledger sums clean (the runbook's sum-zero
//!   query), confirm the magnitude against the live RPC, list in-flight
//!   transactions on the hot wallet.
//! - **Mitigation**: explained → wait one block, re-check. Unexplained →
//!   pause new orders in custodied mode (`PLAZA_CUSTODIED_MODE_DISABLED=1`),
//!   page the CEO, and leave the audit-log pull and the MPC signer rotation
//!   to humans (on the outcome's checklist).
//! - **Postmortem**: required for SEV-0.
//!
//! Amounts are USDC in integer micro-units (6 decimals) in the database and
//! on chain, and [`Decimal`] everywhere in between.

use std::time::Duration;

use stepgate_sdk::prelude::*;

/// The config name of the Plaza database connection.
const DB: &str = "plaza";
/// The config name of the Base JSON-RPC endpoint.
const RPC: &str = "base";
const FLAG: &str = "PLAZA_CUSTODIED_MODE_DISABLED";
/// USDC on Base, used when the alert does not name the token contract.
const BASE_USDC: &str = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913";
/// USDC has 6 decimals.
const USDC_SCALE: u32 = 6;
/// The alert fires above 1 USDC of drift (alert reference table).
const DEFAULT_TOLERANCE_USDC: i64 = 1;
/// Drift above this is SEV-0 whatever explains it.
const DEFAULT_BUFFER_USDC: i64 = 500;
/// One Base block, unless the alert's `block_time_ms` says otherwise.
const BASE_BLOCK_MS: u64 = 2_000;
/// How many blocks to wait for in-flight transactions before calling the
/// drift unexplained.
const MAX_BLOCK_WAITS: u32 = 3;

/// The runbook's ledger check, verbatim: empty means the ledger sums clean.
const LEDGER_SUM_ZERO: &str = "SELECT account_id, SUM(amount * direction) AS imbalance \
     FROM ledger_entries GROUP BY account_id HAVING SUM(amount * direction) <> 0";
const HELD_SUM: &str =
    "SELECT COALESCE(SUM(amount), 0) AS held FROM escrow_holds WHERE state = 'held'";

struct ReconciliationDrift;

/// What the playbook read from the world, once.
#[derive(Debug, Clone)]
struct Reading {
    held: Decimal,
    wallet: Decimal,
    in_flight: u64,
}

impl Reading {
    fn drift(&self) -> Decimal {
        (self.held - self.wallet).abs()
    }
}

/// The runbook's thresholds, from the alert or the defaults.
struct Thresholds {
    tolerance: Decimal,
    buffer: Decimal,
    block: Duration,
}

/// What the wallet checks need from the alert.
struct Wallet {
    address: String,
    token: String,
}

impl Playbook for ReconciliationDrift {
    fn describe() -> Description {
        Description::new("plaza-reconciliation-drift", "1.0.0")
            .summary(
                "Plaza runbook \"Reconciliation drift (custodied mode)\": checks the ledger sums clean, \
                 compares escrow holds with the hot-wallet USDC balance, waits out in-flight \
                 transactions, and on unexplained drift pauses custodied mode, pages the CEO and \
                 notifies the incident channel.",
            )
            .answers("ReconciliationDriftHigh")
            .answers("LedgerSumZeroViolation")
            .db_read(DB)
            .rpc(RPC, "eth_call")
            .rpc(RPC, "eth_getTransactionCount")
            .flag_write(FLAG)
            .page("ceo")
            .notify("incident")
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let wallet = wallet(&alert)?;
        let limits = thresholds(&alert)?;

        let triage = step("Triage", || -> Result<_> {
            let violations = ledger_violations()?;
            let reading = read_world(&wallet)?;
            runbook::info(&format!(
                "held {} USDC, hot wallet {} USDC, drift {} USDC, {} in-flight tx",
                reading.held,
                reading.wallet,
                reading.drift(),
                reading.in_flight
            ));
            Ok((violations, reading))
        });
        let (violations, mut reading) = match triage {
            Ok(both) => both,
            Err(e) => return triage_failed(&alert, &e),
        };

        if violations > 0 {
            let why =
                format!("the ledger does not sum to zero: {violations} account(s) unbalanced");
            return mitigate_unexplained(&alert, &reading, &limits, violations, &why);
        }
        if reading.drift() <= limits.tolerance {
            return Ok(outcome(
                format!(
                    "Drift of {} USDC is within the {} USDC tolerance; nothing to do",
                    reading.drift(),
                    limits.tolerance
                ),
                None,
                &reading,
                &limits,
                violations,
            ));
        }
        if reading.drift() > limits.buffer {
            let why = format!(
                "drift of {} USDC is greater than the {} USDC operational buffer",
                reading.drift(),
                limits.buffer
            );
            return mitigate_unexplained(&alert, &reading, &limits, violations, &why);
        }

        // Bounded drift: explained only while transactions are in flight.
        let mut waits = 0;
        while reading.in_flight > 0 && reading.drift() > limits.tolerance && waits < MAX_BLOCK_WAITS
        {
            reading = step("Wait one block and re-check", || -> Result<Reading> {
                runbook::sleep(limits.block)?;
                read_world(&wallet)
            })?;
            waits += 1;
        }
        if reading.drift() <= limits.tolerance {
            return Ok(outcome(
                format!(
                    "Drift was explained by in-flight transactions and cleared after {waits} block(s)"
                ),
                Some("SEV-1"),
                &reading,
                &limits,
                violations,
            ));
        }
        if reading.in_flight > 0 {
            return Ok(outcome(
                format!(
                    "Drift of {} USDC is bounded and explained by {} in-flight transaction(s); still pending after {waits} block(s)",
                    reading.drift(),
                    reading.in_flight
                ),
                Some("SEV-1"),
                &reading,
                &limits,
                violations,
            )
            .todo("Watch the in-flight transactions on Basescan and re-check the drift once they confirm")
            .todo("Read the reconciliation log: journalctl -u plaza-api -g reconciliation | tail -200"));
        }
        let why = format!(
            "drift of {} USDC with no transaction in flight on the hot wallet",
            reading.drift()
        );
        mitigate_unexplained(&alert, &reading, &limits, violations, &why)
    }
}

stepgate_sdk::playbook!(ReconciliationDrift);

fn wallet(alert: &Alert) -> Result<Wallet> {
    let address = alert.label("hot_wallet").ok_or_else(|| {
        Error::failed("the alert has no `hot_wallet` label; the reconciliation worker sends it")
    })?;
    check_address(address)?;
    let token = alert.label("usdc_contract").unwrap_or(BASE_USDC);
    check_address(token)?;
    Ok(Wallet {
        address: address.to_owned(),
        token: token.to_owned(),
    })
}

fn check_address(address: &str) -> Result<()> {
    let hex = address.strip_prefix("0x").unwrap_or("");
    if hex.len() == 40 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(Error::failed(format!(
            "`{address}` is not an Ethereum address"
        )))
    }
}

fn thresholds(alert: &Alert) -> Result<Thresholds> {
    let read = |key: &str, default: i64| -> Result<Decimal> {
        match alert.annotation(key).or_else(|| alert.label(key)) {
            Some(text) => text
                .parse::<Decimal>()
                .map_err(|_| Error::failed(format!("`{key}` is `{text}`, not a decimal"))),
            None => Ok(Decimal::from(default)),
        }
    };
    let block_ms = match alert.annotation("block_time_ms") {
        Some(text) => text
            .parse::<u64>()
            .map_err(|_| Error::failed(format!("`block_time_ms` is `{text}`, not milliseconds")))?,
        None => BASE_BLOCK_MS,
    };
    Ok(Thresholds {
        tolerance: read("tolerance_usdc", DEFAULT_TOLERANCE_USDC)?,
        buffer: read("operational_buffer_usdc", DEFAULT_BUFFER_USDC)?,
        block: Duration::from_millis(block_ms),
    })
}

fn ledger_violations() -> Result<u64> {
    let rows = db::query(DB, LEDGER_SUM_ZERO, params![])?;
    for row in rows.iter() {
        let account: String = row.get("account_id")?;
        let imbalance: i64 = row.get("imbalance")?;
        runbook::warn(&format!(
            "ledger account {account} is off by {} USDC",
            Decimal::new(imbalance, USDC_SCALE)
        ));
    }
    Ok(rows.len() as u64)
}

fn read_world(wallet: &Wallet) -> Result<Reading> {
    let held_micro: i64 = db::query(DB, HELD_SUM, params![])?.first()?.get("held")?;
    Ok(Reading {
        held: Decimal::new(held_micro, USDC_SCALE),
        wallet: usdc_balance(wallet)?,
        in_flight: in_flight(&wallet.address)?,
    })
}

/// `balanceOf(hot_wallet)` on the USDC contract.
fn usdc_balance(wallet: &Wallet) -> Result<Decimal> {
    let data = format!(
        "0x70a08231{:0>64}",
        wallet.address.trim_start_matches("0x").to_ascii_lowercase()
    );
    let call = serde_json::json!({ "to": wallet.token, "data": data });
    let hex: String = rpc::call(RPC, "eth_call", (call, "latest"))?;
    let units = parse_quantity(&hex)?;
    let units = i64::try_from(units)
        .map_err(|_| Error::failed(format!("hot-wallet balance {hex} is out of range")))?;
    Ok(Decimal::new(units, USDC_SCALE))
}

/// Pending minus confirmed nonces: transactions sent but not yet mined.
fn in_flight(address: &str) -> Result<u64> {
    let pending: String = rpc::call(RPC, "eth_getTransactionCount", (address, "pending"))?;
    let latest: String = rpc::call(RPC, "eth_getTransactionCount", (address, "latest"))?;
    let (pending, latest) = (parse_quantity(&pending)?, parse_quantity(&latest)?);
    Ok(pending.saturating_sub(latest) as u64)
}

/// A JSON-RPC quantity or 32-byte word ("0x2a", "0x000…01") as a number.
fn parse_quantity(hex: &str) -> Result<u128> {
    let digits = hex
        .strip_prefix("0x")
        .ok_or_else(|| Error::failed(format!("`{hex}` is not a hex quantity")))?;
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Ok(0);
    }
    u128::from_str_radix(digits, 16)
        .map_err(|_| Error::failed(format!("`{hex}` is not a hex quantity that fits 128 bits")))
}

/// The ledger or the chain did not answer: the drift the worker reported
/// cannot be checked. Unsure between SEV-1 and SEV-0, the runbook escalates
/// a level: propose the custodied-mode pause (a human approves it or not)
/// and page the CEO.
fn triage_failed(alert: &Alert, error: &Error) -> Result<Outcome> {
    step("Mitigate: drift unverified", || -> Result<Outcome> {
        let why = format!("the drift could not be verified ({})", error.message());
        let reason = format!(
            "Plaza runbook, Reconciliation drift, Mitigation: {why}; unsure, so escalate one level: pause new orders in custodied mode"
        );
        let paused = flags::set(FLAG, "1", &reason);
        let details = format!(
            "alert {} ({}): {why}. Custodied mode paused: {}. Verify the drift by hand: ledger sum-zero query, hot-wallet balance on Basescan.",
            alert.name,
            alert.fingerprint.as_deref().unwrap_or("no fingerprint"),
            if paused.is_ok() { "yes" } else { "NO" }
        );
        pager::page(
            "ceo",
            Severity::Critical,
            "SEV-0 Plaza reconciliation drift unverified: triage failed, custodied mode paused",
            &details,
        )?;
        pager::notify(
            "incident",
            &format!("SEV-0 Plaza reconciliation drift (unverified): {details}"),
        )?;
        let outcome = Outcome::new(format!("Drift unverified: {why}"))
            .severity("SEV-0")
            .field("postmortem_required", true)
            .todo("Verify the drift by hand: the ledger sum-zero query, the hot-wallet USDC balance, in-flight transactions on Basescan")
            .todo("Lift PLAZA_CUSTODIED_MODE_DISABLED if the drift turns out bounded and explained");
        Ok(match paused {
            Ok(_) => outcome,
            Err(e) => outcome.todo(format!(
                "Custodied mode is NOT paused ({}): decide by hand",
                e.message()
            )),
        })
    })
}

/// SEV-0: pause custodied mode, page the CEO, tell the incident channel.
fn mitigate_unexplained(
    alert: &Alert,
    reading: &Reading,
    limits: &Thresholds,
    violations: u64,
    why: &str,
) -> Result<Outcome> {
    step("Mitigate: unexplained drift", || -> Result<Outcome> {
        let reason = format!(
            "Plaza runbook, Reconciliation drift, Mitigation (unexplained): pause new orders in custodied mode; {why}"
        );
        let paused = flags::set(FLAG, "1", &reason);
        if let Err(e) = &paused {
            runbook::error(&format!("could not set {FLAG}=1: {e}"));
        }
        let details = format!(
            "alert {} ({}): {why}. Held in escrow {} USDC, hot wallet {} USDC, {} in-flight tx. Custodied mode paused: {}.",
            alert.name,
            alert.fingerprint.as_deref().unwrap_or("no fingerprint"),
            reading.held,
            reading.wallet,
            reading.in_flight,
            if paused.is_ok() { "yes" } else { "NO" },
        );
        pager::page(
            "ceo",
            Severity::Critical,
            "SEV-0 Plaza reconciliation drift: custodied mode paused, decision needed on customer communications",
            &details,
        )?;
        pager::notify(
            "incident",
            &format!("SEV-0 Plaza reconciliation drift: {details}"),
        )?;

        let mut outcome = outcome(
            format!("Unexplained drift: {why}"),
            Some("SEV-0"),
            reading,
            limits,
            violations,
        );
        outcome = match paused {
            Ok(_) => outcome.todo(format!("Reload plaza-api so {FLAG}=1 takes effect (new orders fall through to contract mode)")),
            Err(e) => outcome.todo(format!("Custodied mode is NOT paused ({e}): set {FLAG}=1 and reload plaza-api by hand")),
        };
        Ok(outcome
            .todo("Pull the audit log for the last 24 hours; look for unauthorized signer use")
            .todo("Rotate the MPC signer: new signing key, sweep all hot-wallet balance to cold; resume only after the discrepancy is reconciled")
            .todo("CEO decides on customer communications")
            .todo("Postmortem required (SEV-0); public postmortem if the drift was real"))
    })
}

fn outcome(
    summary: String,
    severity: Option<&str>,
    reading: &Reading,
    limits: &Thresholds,
    violations: u64,
) -> Outcome {
    let mut outcome = Outcome::new(summary)
        .field("held_usdc", reading.held)
        .field("hot_wallet_usdc", reading.wallet)
        .field("drift_usdc", reading.drift())
        .field("tolerance_usdc", limits.tolerance)
        .field("operational_buffer_usdc", limits.buffer)
        .field("in_flight_txs", reading.in_flight as i64)
        .field("ledger_violations", violations as i64)
        .field("postmortem_required", severity == Some("SEV-0"));
    if let Some(severity) = severity {
        outcome = outcome.severity(severity);
    }
    outcome
}
