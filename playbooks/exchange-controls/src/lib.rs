//! The spot exchange's emergency controls (runbook §6), as the exchange
//! playbooks call them through its admin API: `SetSymbolMode`,
//! `WithdrawalsHalt`. Every action carries the reason and a ticket id, as
//! the runbook requires ("all actions must be audited with reason + ticket
//! id"). A library, not a playbook: each exchange playbook links it.
//!
//! A symbol's mode is state that several playbooks (and humans) set, so a
//! mode is only ever raised: [`raise_mode`] reads the current modes first
//! and never replaces a stronger one (a split brain's HARD_HALT is not
//! lowered to the SOFT_HALT a ledger alert asks for).

use stepgate_sdk::prelude::*;

/// The exchange database the playbooks read.
pub const DB: &str = "exchange";
/// Every symbol's current trading mode, as the engine reports it.
pub const MODES: &str = "SELECT symbol, mode FROM engine_positions ORDER BY symbol";

/// The ops policy's settlement-lag thresholds (runbook §3.2): T2 throttles,
/// T3 halts.
const SETTLEMENT_POLICY: &str = "SELECT name, value FROM ops_policy \
     WHERE name IN ('settlement_lag_t2_ms', 'settlement_lag_t3_ms') ORDER BY name";

/// T2 and T3 of the ops policy, in milliseconds; a policy without both is
/// an error (no threshold is made up).
pub fn settlement_lag_thresholds() -> Result<(i64, i64)> {
    let (mut t2, mut t3) = (None, None);
    for row in db::query(DB, SETTLEMENT_POLICY, params![])?.iter() {
        let (name, value): (String, i64) = (row.get("name")?, row.get("value")?);
        match name.as_str() {
            "settlement_lag_t2_ms" => t2 = Some(value),
            "settlement_lag_t3_ms" => t3 = Some(value),
            _ => {}
        }
    }
    t2.zip(t3).ok_or_else(|| {
        Error::failed("ops_policy has no settlement_lag_t2_ms / settlement_lag_t3_ms")
    })
}

/// The admin API's config name.
pub const ADMIN: &str = "exchange_admin";
pub const WITHDRAWALS_HALT: &str = "/admin/withdrawals/halt";
pub const SYMBOL_MODE: &str = "/admin/symbols/mode";
pub const THROTTLE: &str = "/admin/symbols/throttle";
/// Pager target and channel of the exchange on-call.
pub const ONCALL: &str = "exchange-oncall";

/// Trading modes of `SetSymbolMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    CancelOnly,
    SoftHalt,
    HardHalt,
}

impl Mode {
    /// How strongly the mode holds trading back.
    fn strength(self) -> u8 {
        match self {
            Mode::CancelOnly => 1,
            Mode::SoftHalt => 2,
            Mode::HardHalt => 3,
        }
    }

    /// Whether a symbol now in `current` (as the engine spells it) is
    /// already held at least as strongly as this mode. A mode this library
    /// does not know is taken as stronger: it is left for a human.
    fn covered_by(self, current: &str) -> bool {
        let strength = match current {
            "NORMAL" => 0,
            "CANCEL_ONLY" => Mode::CancelOnly.strength(),
            "SOFT_HALT" => Mode::SoftHalt.strength(),
            "HARD_HALT" => Mode::HardHalt.strength(),
            _ => u8::MAX,
        };
        strength >= self.strength()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::CancelOnly => "CANCEL_ONLY",
            Mode::SoftHalt => "SOFT_HALT",
            Mode::HardHalt => "HARD_HALT",
        }
    }
}

/// The symbol that stands for every symbol (a global halt).
pub const ALL_SYMBOLS: &str = "*";

/// The ticket of an incident: the alert's `ticket` label, else one made
/// from its fingerprint.
pub fn ticket(alert: &Alert) -> String {
    alert
        .label("ticket")
        .map(str::to_owned)
        .unwrap_or_else(|| format!("INC-{}", alert.fingerprint.as_deref().unwrap_or("unknown")))
}

fn post(path: &str, body: serde_json::Value, reason: &str) -> Fate {
    Fate::of_http(&http::post(ADMIN, path, &body, reason))
}

/// `WithdrawalsHalt(on)`.
pub fn halt_withdrawals(reason: &str, ticket: &str) -> Fate {
    post(
        WITHDRAWALS_HALT,
        serde_json::json!({ "on": true, "reason": reason, "ticket": ticket }),
        reason,
    )
}

/// `SetSymbolMode(symbol, mode)`; `symbol` may be [`ALL_SYMBOLS`].
pub fn set_mode(symbol: &str, mode: Mode, reason: &str, ticket: &str) -> Fate {
    post(
        SYMBOL_MODE,
        serde_json::json!({ "symbol": symbol, "mode": mode.as_str(), "reason": reason, "ticket": ticket }),
        reason,
    )
}

/// Throttles new orders of `symbol`.
pub fn throttle(symbol: &str, reason: &str, ticket: &str) -> Fate {
    post(
        THROTTLE,
        serde_json::json!({ "symbol": symbol, "reason": reason, "ticket": ticket }),
        reason,
    )
}

/// What [`raise_mode`] did.
#[derive(Debug, Default)]
pub struct Raised {
    /// Modes set, or planned in a dry run: `BTC-USDT CANCEL_ONLY`, or
    /// `BTC-USDT CANCEL_ONLY (dry run: planned)`.
    pub set: Vec<String>,
    /// The symbols of `set`, by name.
    pub symbols: Vec<String>,
    /// Symbols already held as strongly or more: `ETH-USDT stays HARD_HALT`.
    pub kept: Vec<String>,
    /// What was not done, and what a human must do instead.
    pub not_done: Vec<String>,
}

/// Sets `symbol` (or every symbol, [`ALL_SYMBOLS`]) to `mode`, but never
/// lowers a mode: the current modes are read first, a symbol already at
/// `mode` or stronger is kept as it is, and for [`ALL_SYMBOLS`] the
/// symbols held more strongly are left out (each other one is set by
/// name). If the current modes cannot be read, nothing is set: a human
/// checks and sets it.
pub fn raise_mode(symbol: &str, mode: Mode, reason: &str, ticket: &str) -> Raised {
    raise_mode_reading(DB, symbol, mode, reason, ticket)
}

/// [`raise_mode`], with the current modes read from the database `conn`
/// (a standby, when the primary is what failed).
pub fn raise_mode_reading(
    conn: &str,
    symbol: &str,
    mode: Mode,
    reason: &str,
    ticket: &str,
) -> Raised {
    let mut raised = Raised::default();
    let current: Vec<(String, String)> = match db::query(conn, MODES, params![]).and_then(|rows| {
        rows.iter()
            .map(|r| Ok((r.get("symbol")?, r.get("mode")?)))
            .collect::<Result<Vec<_>>>()
    }) {
        Ok(current) => current,
        Err(e) => {
            raised.not_done.push(format!(
                "{symbol} is NOT set to {}: its current mode could not be read ({}), and a stronger halt must not be lowered; check the mode and set {} by hand",
                mode.as_str(),
                e.message(),
                mode.as_str()
            ));
            return raised;
        }
    };
    let stronger: Vec<&(String, String)> = current
        .iter()
        .filter(|(s, m)| (symbol == ALL_SYMBOLS || s == symbol) && mode.covered_by(m))
        .collect();
    for (s, m) in &stronger {
        raised.kept.push(format!("{s} stays {m}"));
    }
    let targets: Vec<String> = if stronger.is_empty() {
        vec![symbol.to_owned()]
    } else if symbol == ALL_SYMBOLS {
        current
            .iter()
            .filter(|(_, m)| !mode.covered_by(m))
            .map(|(s, _)| s.clone())
            .collect()
    } else {
        Vec::new()
    };
    for target in targets {
        let fate = set_mode(&target, mode, reason, ticket);
        match &fate {
            Fate::Made => raised.set.push(format!("{target} {}", mode.as_str())),
            Fate::Planned => raised
                .set
                .push(format!("{target} {} (dry run: planned)", mode.as_str())),
            not => raised.not_done.push(format!(
                "{target} is {}: do it by hand",
                not.say(&format!("set to {}", mode.as_str()))
            )),
        }
        if fate.passed() {
            raised.symbols.push(target);
        }
    }
    raised
}
