//! The spot exchange's emergency controls (runbook §6), as the exchange
//! playbooks call them through its admin API: `SetSymbolMode`,
//! `WithdrawalsHalt`. Every action carries the reason and a ticket id, as
//! the runbook requires ("all actions must be audited with reason + ticket
//! id"). A library, not a playbook: each exchange playbook links it.

use stepgate_sdk::prelude::*;

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

/// What became of a control: made (or planned in a dry run), or not, and why.
pub type Done = std::result::Result<(), String>;

fn post(path: &str, body: serde_json::Value, reason: &str) -> Done {
    match http::post(ADMIN, path, &body, reason) {
        Ok(answer) if answer.ok() => Ok(()),
        Ok(answer) => Err(format!("the admin API answered {}", answer.status)),
        Err(e) => Err(e.message()),
    }
}

/// `WithdrawalsHalt(on)`.
pub fn halt_withdrawals(reason: &str, ticket: &str) -> Done {
    post(
        WITHDRAWALS_HALT,
        serde_json::json!({ "on": true, "reason": reason, "ticket": ticket }),
        reason,
    )
}

/// `SetSymbolMode(symbol, mode)`; `symbol` may be [`ALL_SYMBOLS`].
pub fn set_mode(symbol: &str, mode: Mode, reason: &str, ticket: &str) -> Done {
    post(
        SYMBOL_MODE,
        serde_json::json!({ "symbol": symbol, "mode": mode.as_str(), "reason": reason, "ticket": ticket }),
        reason,
    )
}

/// Throttles new orders of `symbol`.
pub fn throttle(symbol: &str, reason: &str, ticket: &str) -> Done {
    post(
        THROTTLE,
        serde_json::json!({ "symbol": symbol, "reason": reason, "ticket": ticket }),
        reason,
    )
}
