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
//!   page the CEO (first: the pause waits for an approver), pause new
//!   orders in custodied mode (`PLAZA_CUSTODIED_MODE_DISABLED=1`), and
//!   leave the audit-log pull and the MPC signer rotation to humans (on
//!   the outcome's checklist).
//! - **LedgerSumZeroViolation** (alert table: "Halt releases; run the
//!   Reconciliation drift runbook"): the page and the checklist lead with
//!   halting releases, which the runbook names no switch for, so a human
//!   does it; then the drift runbook runs.
//! - **Postmortem**: required for SEV-0.
//!
//! **What explains a drift.** Only the hot wallet's own transactions in
//! flight, whose USDC transfers account for it (the runbook: "pending
//! sweeps and pending payouts account for some drift"): the pending
//! block's `transfer` calls on the USDC contract sent *from* the hot wallet
//! are summed, and the drift is explained when the held sum matches the
//! wallet once they land (within the tolerance). Transfers *to* the wallet
//! are not counted: anyone can broadcast one that never lands, and "explain"
//! a theft. A transaction in flight that moves a different amount, or whose
//! amount the node does not show, explains nothing: unsure, the runbook
//! escalates a level.
//!
//! **Money columns.** A ledger may store USDC as integer micro-units (6
//! decimals, as on chain) or as NUMERIC USDC (`12500.000000`); both are
//! read exactly. An integer is micro-units and a decimal with a fraction
//! is USDC, unless the alert's `ledger_amount_unit` annotation says
//! `micro` or `usdc` (a local choice, for a NUMERIC column of whole
//! numbers).

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
/// ERC-20 `transfer(address,uint256)`.
const TRANSFER: &str = "0xa9059cbb";

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
    /// Transactions the hot wallet sent that are not mined yet.
    in_flight: u64,
    /// USDC the hot wallet's own pending transfers move out of it. `None`
    /// when the node does not show the pending block.
    pending: Option<Decimal>,
}

impl Reading {
    fn drift(&self) -> Decimal {
        (self.held - self.wallet).abs()
    }

    /// The drift left once the transfers in flight land; `None` when
    /// their amounts are unknown.
    fn unaccounted(&self) -> Option<Decimal> {
        let outgoing = self.pending?;
        Some((self.held - (self.wallet - outgoing)).abs())
    }

    /// Whether transfers in flight account for the drift.
    fn explained(&self, tolerance: Decimal) -> bool {
        let moving = self.pending.is_some_and(|outgoing| !outgoing.is_zero());
        moving && self.unaccounted().is_some_and(|left| left <= tolerance)
    }
}

/// How the ledger stores money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// Integers are micro-units, decimals with a fraction USDC.
    Auto,
    Micro,
    Usdc,
}

/// The runbook's thresholds, from the alert or the defaults.
struct Thresholds {
    tolerance: Decimal,
    buffer: Decimal,
    block: Duration,
    unit: Unit,
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
            .rpc(RPC, "eth_getBlockByNumber")
            .flag_write(FLAG)
            .page("ceo")
            .notify("incident")
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let wallet = wallet(&alert)?;
        let limits = thresholds(&alert)?;
        let mut checklist = Vec::new();
        if alert.name == "LedgerSumZeroViolation" {
            // The alert table's first action, before any reading: the
            // humans halt releases (the runbook names no switch for it).
            step("Halt releases", || {
                let told = pager::page(
                    "ceo",
                    Severity::Critical,
                    "SEV-0 Plaza ledger sum-zero violation: HALT RELEASES now",
                    &format!(
                        "alert {} ({}): a ledger transaction failed sum-zero. The alert table says halt releases first (by hand: stepgate has no switch for it), then the reconciliation-drift runbook runs (its outcome is in stepgate; a second page follows only if custodied mode must be paused)",
                        alert.name,
                        alert.fingerprint.as_deref().unwrap_or("no fingerprint")
                    ),
                );
                if let Err(e) = told {
                    checklist.push(format!(
                        "The CEO and on-call were NOT paged to halt releases ({}): call them",
                        e.message()
                    ));
                }
            });
            checklist.push(
                "Halt releases now, by hand (no release may leave until the ledger sums clean)"
                    .to_owned(),
            );
        }

        let triage = step("Triage", || -> Result<_> {
            let violations = ledger_violations(limits.unit)?;
            let reading = read_world(&wallet, limits.unit)?;
            runbook::info(&format!(
                "held {} USDC, hot wallet {} USDC, drift {} USDC, {} in-flight tx, {}",
                reading.held,
                reading.wallet,
                reading.drift(),
                reading.in_flight,
                pending_text(&reading)
            ));
            Ok((violations, reading))
        });
        let (violations, mut reading) = match triage {
            Ok(both) => both,
            Err(e) => return triage_failed(&alert, &e, checklist),
        };

        if violations > 0 {
            let why =
                format!("the ledger does not sum to zero: {violations} account(s) unbalanced");
            return mitigate_unexplained(&alert, &reading, &limits, violations, &why, checklist);
        }
        if reading.drift() <= limits.tolerance {
            return Ok(todos(
                outcome(
                    format!(
                        "Drift of {} USDC is within the {} USDC tolerance; nothing to do",
                        reading.drift(),
                        limits.tolerance
                    ),
                    None,
                    &reading,
                    &limits,
                    violations,
                ),
                checklist,
            ));
        }
        if reading.drift() > limits.buffer {
            let why = format!(
                "drift of {} USDC is greater than the {} USDC operational buffer",
                reading.drift(),
                limits.buffer
            );
            return mitigate_unexplained(&alert, &reading, &limits, violations, &why, checklist);
        }

        // Bounded drift: wait while transactions are in flight, a block
        // at a time, and re-check.
        let mut waits = 0;
        while (reading.in_flight > 0 || reading.explained(limits.tolerance))
            && reading.drift() > limits.tolerance
            && waits < MAX_BLOCK_WAITS
        {
            let again = step("Wait one block and re-check", || -> Result<Reading> {
                runbook::sleep(limits.block)?;
                read_world(&wallet, limits.unit)
            });
            reading = match again {
                Ok(reading) => reading,
                // The drift can no longer be checked: escalate as at triage.
                Err(e) => return triage_failed(&alert, &e, checklist),
            };
            waits += 1;
        }
        if reading.drift() <= limits.tolerance {
            return Ok(todos(
                outcome(
                    format!(
                        "Drift was explained by in-flight transactions and cleared after {waits} block(s)"
                    ),
                    Some("SEV-1"),
                    &reading,
                    &limits,
                    violations,
                ),
                checklist,
            ));
        }
        if reading.explained(limits.tolerance) {
            return Ok(todos(
                outcome(
                    format!(
                        "Drift of {} USDC is bounded and explained: the USDC transfers in flight ({}) account for it; still pending after {waits} block(s)",
                        reading.drift(),
                        pending_text(&reading)
                    ),
                    Some("SEV-1"),
                    &reading,
                    &limits,
                    violations,
                )
                .todo("Watch the in-flight transactions on Basescan and re-check the drift once they confirm; if they drop, the drift is unexplained (SEV-0)")
                .todo("Read the reconciliation log: journalctl -u plaza-api -g reconciliation | tail -200"),
                checklist,
            ));
        }
        let moving = reading.pending.is_some_and(|outgoing| !outgoing.is_zero());
        let why = match (moving, reading.unaccounted()) {
            (true, Some(left)) => format!(
                "drift of {} USDC that the transfers in flight do not account for ({}; {left} USDC unaccounted)",
                reading.drift(),
                pending_text(&reading)
            ),
            _ if reading.in_flight == 0 => format!(
                "drift of {} USDC with no transaction in flight on the hot wallet",
                reading.drift()
            ),
            _ => format!(
                "drift of {} USDC with {} transaction(s) in flight whose amounts the node does not show: unsure, escalated",
                reading.drift(),
                reading.in_flight
            ),
        };
        mitigate_unexplained(&alert, &reading, &limits, violations, &why, checklist)
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
    let unit = match alert.annotation("ledger_amount_unit") {
        None => Unit::Auto,
        Some("micro") => Unit::Micro,
        Some("usdc") => Unit::Usdc,
        Some(other) => {
            return Err(Error::failed(format!(
                "`ledger_amount_unit` is `{other}`: say `micro` (integer micro-units) or `usdc`"
            )));
        }
    };
    Ok(Thresholds {
        tolerance: read("tolerance_usdc", DEFAULT_TOLERANCE_USDC)?,
        buffer: read("operational_buffer_usdc", DEFAULT_BUFFER_USDC)?,
        block: Duration::from_millis(block_ms),
        unit,
    })
}

/// An amount of USDC from a ledger column, as [`Unit`] says it is
/// stored. A float is refused: money is never a float.
fn usdc(row: &db::Row<'_>, column: &str, unit: Unit) -> Result<Decimal> {
    let (amount, micro) = match (row.value(column)?, unit) {
        (Value::Int(n), unit) => (Decimal::from(*n), unit != Unit::Usdc),
        (Value::Decimal(text), unit) => {
            let amount: Decimal = text.parse().map_err(|_| {
                Error::failed(format!("`{column}` is `{text}`, not a decimal amount"))
            })?;
            let micro = match unit {
                Unit::Micro => true,
                Unit::Usdc => false,
                Unit::Auto => !text.contains('.'),
            };
            (amount, micro)
        }
        (other, _) => {
            return Err(Error::failed(format!(
                "`{column}` holds {other:?}: an amount must be an integer (micro-units) or a decimal (USDC), never a float or text"
            )));
        }
    };
    let mut amount = amount;
    if micro {
        // Exactly a millionth: the digits stay, the point moves.
        amount
            .set_scale(amount.scale() + USDC_SCALE)
            .map_err(|_| Error::failed(format!("`{column}` is too precise to be USDC")))?;
    }
    // Shown with USDC's 6 decimals, never rounded.
    if amount.scale() < USDC_SCALE {
        amount.rescale(USDC_SCALE);
    }
    Ok(amount)
}

fn ledger_violations(unit: Unit) -> Result<u64> {
    let rows = db::query(DB, LEDGER_SUM_ZERO, params![])?;
    for row in rows.iter() {
        let account: String = row.get("account_id")?;
        let imbalance = usdc(&row, "imbalance", unit)?;
        runbook::warn(&format!(
            "ledger account {account} is off by {imbalance} USDC"
        ));
    }
    Ok(rows.len() as u64)
}

fn read_world(wallet: &Wallet, unit: Unit) -> Result<Reading> {
    let held = db::query(DB, HELD_SUM, params![])?;
    Ok(Reading {
        held: usdc(&held.first()?, "held", unit)?,
        wallet: usdc_balance(wallet)?,
        in_flight: in_flight(&wallet.address)?,
        pending: pending_transfers(wallet),
    })
}

/// The USDC the hot wallet's own pending transactions move out: its
/// `transfer` calls on the token in the pending block. `None` when the
/// node does not show the pending block. A transaction this cannot read
/// (not a transfer, a short or odd call) is skipped: it moves no USDC.
fn pending_transfers(wallet: &Wallet) -> Option<Decimal> {
    let block: serde_json::Value =
        rpc::call(RPC, "eth_getBlockByNumber", ("pending", true)).ok()?;
    let mut outgoing = Decimal::new(0, USDC_SCALE);
    for tx in block.get("transactions")?.as_array()? {
        let text = |key: &str| tx.get(key).and_then(|v| v.as_str()).unwrap_or("");
        let (from, to, input) = (text("from"), text("to"), text("input"));
        if !from.eq_ignore_ascii_case(&wallet.address) || !to.eq_ignore_ascii_case(&wallet.token) {
            continue;
        }
        if let Some(amount) = transfer_amount(input) {
            outgoing += amount;
        }
    }
    Some(outgoing)
}

/// The USDC a `transfer(address,uint256)` call moves, if `input` is one.
fn transfer_amount(input: &str) -> Option<Decimal> {
    // 0x, the selector, two 32-byte words.
    if input.len() != 2 + 8 + 128 || !input.is_char_boundary(10) {
        return None;
    }
    let (selector, args) = input.split_at(10);
    if !selector.eq_ignore_ascii_case(TRANSFER) {
        return None;
    }
    let units = parse_quantity(&format!("0x{}", args.get(64..)?)).ok()?;
    Some(Decimal::new(i64::try_from(units).ok()?, USDC_SCALE))
}

/// The transfers in flight, for people.
fn pending_text(reading: &Reading) -> String {
    match reading.pending {
        Some(outgoing) => {
            format!("{outgoing} USDC going out in the hot wallet's transfers in flight")
        }
        None => "the node does not show the transfers in flight".to_owned(),
    }
}

/// `outcome` with `checklist` first on its checklist.
fn todos(mut outcome: Outcome, checklist: Vec<String>) -> Outcome {
    for item in checklist {
        outcome = outcome.todo(item);
    }
    outcome
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
fn triage_failed(alert: &Alert, error: &Error, checklist: Vec<String>) -> Result<Outcome> {
    step("Mitigate: drift unverified", || -> Result<Outcome> {
        let why = format!("the drift could not be verified ({})", error.message());
        let reason = format!(
            "Plaza runbook, Reconciliation drift, Mitigation: {why}; unsure, so escalate one level: pause new orders in custodied mode"
        );
        let (paused, mut checklist) = pause_custodied(alert, &why, &reason, checklist);
        let details = format!(
            "alert {} ({}): {why}. Custodied mode {}. Verify the drift by hand: ledger sum-zero query, hot-wallet balance on Basescan.",
            alert.name,
            alert.fingerprint.as_deref().unwrap_or("no fingerprint"),
            paused.say("paused")
        );
        pager::page_or_note(
            "ceo",
            Severity::Critical,
            &format!(
                "SEV-0 Plaza reconciliation drift unverified: triage failed, custodied mode {}",
                paused.say("paused")
            ),
            &details,
            &mut checklist,
        );
        pager::notify_or_note(
            "incident",
            &format!("SEV-0 Plaza reconciliation drift (unverified): {details}"),
            &mut checklist,
        );
        checklist.extend([
            "Verify the drift by hand: the ledger sum-zero query, the hot-wallet USDC balance, in-flight transactions on Basescan".to_owned(),
            "Lift PLAZA_CUSTODIED_MODE_DISABLED if the drift turns out bounded and explained".to_owned(),
        ]);
        Ok(todos(
            Outcome::new(format!(
                "Drift unverified: {why}; custodied mode {}",
                paused.say("paused")
            ))
            .severity("SEV-0")
            .field("custodied_mode_paused", paused.passed())
            .field("postmortem_required", true),
            checklist,
        ))
    })
}

/// The humans first (the CEO is paged: the pause waits for an approver),
/// then `PLAZA_CUSTODIED_MODE_DISABLED=1`. Returns the pause's fate and
/// the checklist with what a human must do if it was not made.
fn pause_custodied(
    alert: &Alert,
    why: &str,
    reason: &str,
    mut checklist: Vec<String>,
) -> (Fate, Vec<String>) {
    let told = pager::page(
        "ceo",
        Severity::Critical,
        "SEV-0 Plaza reconciliation drift: stepgate asks to pause custodied mode",
        &format!(
            "alert {}: {why}. Approve or deny the custodied-mode pause ({FLAG}=1) in stepgate now; a second page follows with what was done",
            alert.name
        ),
    );
    if let Err(e) = told {
        checklist.push(format!(
            "The CEO was NOT paged before the pause ({}): call them",
            e.message()
        ));
    }
    let paused = Fate::of(&flags::set(FLAG, "1", reason));
    match paused.why_not() {
        None => checklist.push(format!(
            "Reload plaza-api so {FLAG}=1 takes effect (new orders fall through to contract mode)"
        )),
        Some(why) => checklist.push(format!(
            "Custodied mode is NOT paused ({why}): set {FLAG}=1 and reload plaza-api by hand, or decide otherwise"
        )),
    }
    (paused, checklist)
}

/// SEV-0: pause custodied mode, page the CEO, tell the incident channel.
fn mitigate_unexplained(
    alert: &Alert,
    reading: &Reading,
    limits: &Thresholds,
    violations: u64,
    why: &str,
    checklist: Vec<String>,
) -> Result<Outcome> {
    step("Mitigate: unexplained drift", || -> Result<Outcome> {
        let reason = format!(
            "Plaza runbook, Reconciliation drift, Mitigation (unexplained): pause new orders in custodied mode; {why}"
        );
        let (paused, mut checklist) = pause_custodied(alert, why, &reason, checklist);
        let details = format!(
            "alert {} ({}): {why}. Held in escrow {} USDC, hot wallet {} USDC, {} in-flight tx. Custodied mode {}.",
            alert.name,
            alert.fingerprint.as_deref().unwrap_or("no fingerprint"),
            reading.held,
            reading.wallet,
            reading.in_flight,
            paused.say("paused"),
        );
        pager::page_or_note(
            "ceo",
            Severity::Critical,
            &format!(
                "SEV-0 Plaza reconciliation drift: custodied mode {}, decision needed on customer communications",
                paused.say("paused")
            ),
            &details,
            &mut checklist,
        );
        pager::notify_or_note(
            "incident",
            &format!("SEV-0 Plaza reconciliation drift: {details}"),
            &mut checklist,
        );
        checklist.extend([
            "Pull the audit log for the last 24 hours; look for unauthorized signer use".to_owned(),
            "Rotate the MPC signer: new signing key, sweep all hot-wallet balance to cold; resume only after the discrepancy is reconciled".to_owned(),
            "CEO decides on customer communications".to_owned(),
            "Postmortem required (SEV-0); public postmortem if the drift was real".to_owned(),
        ]);
        Ok(todos(
            outcome(
                format!(
                    "Unexplained drift: {why}; custodied mode {}",
                    paused.say("paused")
                ),
                Some("SEV-0"),
                reading,
                limits,
                violations,
            )
            .field("custodied_mode_paused", paused.passed()),
            checklist,
        ))
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
        .field(
            "unaccounted_usdc",
            reading
                .unaccounted()
                .map_or_else(|| "unknown".to_owned(), |d| d.to_string()),
        )
        .field("ledger_violations", violations as i64)
        .field("postmortem_required", severity == Some("SEV-0"));
    if let Some(severity) = severity {
        outcome = outcome.severity(severity);
    }
    outcome
}
