//! # stepgate-sdk: write incident playbooks in Rust
//!
//! A playbook is a WebAssembly component that the stepgate host runs step by
//! step: every database query, RPC call, flag change and page goes through
//! the host, which checks it against the operator's grants, simulates writes
//! in a dry run, asks a human where policy says so, and journals everything.
//! This crate hides the WIT bindings: you write plain Rust.
//!
//! ```no_run
//! use stepgate_sdk::prelude::*;
//!
//! struct DriftCheck;
//!
//! impl Playbook for DriftCheck {
//!     fn describe() -> Description {
//!         Description::new("drift-check", "1.0.0")
//!             .summary("Compares escrow holds with the hot wallet and pauses custodied mode on unexplained drift.")
//!             .answers("ReconciliationDriftHigh")
//!             .db_read("plaza")
//!             .flag_write("PLAZA_CUSTODIED_MODE_DISABLED")
//!             .page("ceo")
//!     }
//!
//!     fn run(alert: Alert) -> Result<Outcome> {
//!         let held = step("Triage", || -> Result<Decimal> {
//!             let rows = db::query(
//!                 "plaza",
//!                 "SELECT COALESCE(SUM(amount), 0) AS held FROM escrow_holds WHERE state = ?1",
//!                 params!["held"],
//!             )?;
//!             let micro: i64 = rows.first()?.get("held")?;
//!             Ok(Decimal::new(micro, 6))
//!         })?;
//!         if held > Decimal::new(1_000, 0) {
//!             step("Mitigate", || -> Result<()> {
//!                 flags::set("PLAZA_CUSTODIED_MODE_DISABLED", "1", "runbook: unexplained drift")?;
//!                 pager::page("ceo", Severity::Critical, "Unexplained drift", &alert.name)?;
//!                 Ok(())
//!             })?;
//!         }
//!         Ok(Outcome::new(format!("{held} USDC held"))
//!             .severity("SEV-1")
//!             .field("held_usdc", held)
//!             .todo("Write the postmortem"))
//!     }
//! }
//!
//! stepgate_sdk::playbook!(DriftCheck);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the
//! `.wasm` in `target/wasm32-wasip2/release/` is the component.
//!
//! Money: use [`Decimal`], never `f64`. The host carries decimals as exact
//! text and [`Row::get`] reads them into a `Decimal` without rounding.

#![allow(clippy::new_ret_no_self)]

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The generated WIT bindings. You should not need them directly.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "playbook",
        pub_export_macro: true,
        default_bindings_module: "stepgate_sdk::bindings",
        export_macro_name: "export_playbook_world",
        generate_all,
        additional_derives: [PartialEq],
    });
}

pub use bindings::stepgate::playbook::pager::Severity;
pub use bindings::stepgate::playbook::types::{
    Alert, AlertStatus, Capability, Description, Element, Error, Outcome, RpcMethod, Value,
};
pub use rust_decimal::Decimal;

/// Everything a playbook usually needs.
pub mod prelude {
    pub use crate::{
        Alert, AlertStatus, Decimal, Description, Error, Fate, Outcome, Playbook, Result, Severity,
        Timestamp, Value, db, flags, from_units, http, pager, params, plain, rpc, runbook, step,
        utc_millis, utc_text,
    };
    pub use serde_json::{self, json};
    pub use std::time::Duration;
}

/// Results of capability calls: the error is the host's one error variant.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What you implement. Export it with [`playbook!`].
pub trait Playbook {
    /// Name, version, the alerts it answers and every capability it may use.
    /// Called at load; it must not call the host.
    fn describe() -> Description;
    /// Handles one alert.
    fn run(alert: Alert) -> Result<Outcome>;
}

/// Exports a [`Playbook`] implementation as the component's `run` and
/// `describe`.
#[macro_export]
macro_rules! playbook {
    ($ty:ty) => {
        struct __StepgatePlaybookExport;
        impl $crate::bindings::Guest for __StepgatePlaybookExport {
            fn describe() -> $crate::Description {
                <$ty as $crate::Playbook>::describe()
            }
            fn run(alert: $crate::Alert) -> ::std::result::Result<$crate::Outcome, $crate::Error> {
                <$ty as $crate::Playbook>::run(alert)
            }
        }
        $crate::bindings::export_playbook_world!(__StepgatePlaybookExport with_types_in $crate::bindings);
    };
}

impl Error {
    /// The playbook's own failure.
    pub fn failed(message: impl Into<String>) -> Error {
        Error::Failed(message.into())
    }

    /// Whether a gate or a human refused a write.
    pub fn is_denied(&self) -> bool {
        matches!(self, Error::Denied(_))
    }

    /// What went wrong, for people: `timeout: the query ran past 10s`.
    pub fn message(&self) -> String {
        let (kind, text) = match self {
            Error::NotGranted(t) => ("not granted", t),
            Error::Denied(t) => ("denied", t),
            Error::Invalid(t) => ("invalid", t),
            Error::Timeout(t) => ("timeout", t),
            Error::Backend(t) => ("backend", t),
            Error::Failed(t) => ("failed", t),
        };
        format!("{kind}: {text}")
    }
}

/// What became of a write, in the words an outcome or a page may use: a
/// house rule is that no message claims a write that was refused, failed
/// or only planned in a dry run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// The write was made.
    Made,
    /// A dry run: the write was planned and shown, not made.
    Planned,
    /// A gate or a human refused it; the text says who and why.
    Refused(String),
    /// It could not be made (the backend failed or answered no).
    Failed(String),
}

impl Fate {
    /// The fate of a write from its result (a dry run's success is
    /// [`Fate::Planned`]).
    pub fn of<T>(result: &Result<T>) -> Fate {
        match result {
            Ok(_) if runbook::dry_run() => Fate::Planned,
            Ok(_) => Fate::Made,
            Err(e) => Fate::from_error(e),
        }
    }

    /// The fate of an HTTP write: an answer other than 2xx is a failure.
    pub fn of_http(result: &Result<http::Response>) -> Fate {
        match result {
            Ok(answer) if answer.dry_run => Fate::Planned,
            Ok(answer) if answer.ok() => Fate::Made,
            Ok(answer) => Fate::Failed(format!("the endpoint answered HTTP {}", answer.status)),
            Err(e) => Fate::from_error(e),
        }
    }

    /// The fate of a write that returned `error`.
    pub fn from_error(error: &Error) -> Fate {
        if error.is_denied() {
            Fate::Refused(error.message())
        } else {
            Fate::Failed(error.message())
        }
    }

    /// Whether the write passed: made, or planned in a dry run. Decide
    /// on this, so a dry run follows the path a live run would.
    pub fn passed(&self) -> bool {
        matches!(self, Fate::Made | Fate::Planned)
    }

    /// Why the write did not pass, if it did not.
    pub fn why_not(&self) -> Option<&str> {
        match self {
            Fate::Made | Fate::Planned => None,
            Fate::Refused(why) | Fate::Failed(why) => Some(why),
        }
    }

    /// `done` as the fate allows it to be said: for "halted", "halted",
    /// "would be halted (dry run)", "NOT halted (refused: …)" or
    /// "NOT halted (failed: …)".
    pub fn say(&self, done: &str) -> String {
        match self {
            Fate::Made => done.to_owned(),
            Fate::Planned => format!("would be {done} (dry run)"),
            Fate::Refused(why) => format!("NOT {done} (refused: {why})"),
            Fate::Failed(why) => format!("NOT {done} (failed: {why})"),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Invalid(format!("JSON: {e}"))
    }
}

impl From<rust_decimal::Error> for Error {
    fn from(e: rust_decimal::Error) -> Self {
        Error::Invalid(format!("decimal: {e}"))
    }
}

// ---------------------------------------------------------------------------
// Description and outcome builders
// ---------------------------------------------------------------------------

impl Description {
    /// A description with a name and version and nothing else yet.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Description {
        Description {
            name: name.into(),
            version: version.into(),
            summary: String::new(),
            alerts: Vec::new(),
            capabilities: Vec::new(),
        }
    }
    pub fn summary(mut self, summary: impl Into<String>) -> Self {
        self.summary = summary.into();
        self
    }
    /// An alert name this playbook answers.
    pub fn answers(mut self, alert: impl Into<String>) -> Self {
        self.alerts.push(alert.into());
        self
    }
    pub fn needs(mut self, capability: Capability) -> Self {
        self.capabilities.push(capability);
        self
    }
    pub fn db_read(self, conn: &str) -> Self {
        self.needs(Capability::DbRead(conn.into()))
    }
    pub fn db_write(self, conn: &str) -> Self {
        self.needs(Capability::DbWrite(conn.into()))
    }
    pub fn rpc(self, endpoint: &str, method: &str) -> Self {
        self.needs(Capability::Rpc(RpcMethod {
            endpoint: endpoint.into(),
            method: method.into(),
        }))
    }
    /// An HTTP route on an admin API endpoint, exactly as the config
    /// lists it: `.http("loa_admin", "POST /api/v1/admin/feature-flags")`.
    pub fn http(self, endpoint: &str, route: &str) -> Self {
        self.rpc(endpoint, route)
    }
    pub fn flag_read(self, glob: &str) -> Self {
        self.needs(Capability::FlagRead(glob.into()))
    }
    pub fn flag_write(self, glob: &str) -> Self {
        self.needs(Capability::FlagWrite(glob.into()))
    }
    pub fn page(self, target: &str) -> Self {
        self.needs(Capability::Page(target.into()))
    }
    pub fn notify(self, channel: &str) -> Self {
        self.needs(Capability::Notify(channel.into()))
    }
}

impl Outcome {
    pub fn new(summary: impl Into<String>) -> Outcome {
        Outcome {
            summary: summary.into(),
            severity: None,
            fields: Vec::new(),
            checklist: Vec::new(),
        }
    }
    /// The severity the runbook assigns, e.g. "SEV-0".
    pub fn severity(mut self, severity: impl Into<String>) -> Self {
        self.severity = Some(severity.into());
        self
    }
    /// A figure the decision rested on.
    pub fn field(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.fields.push((name.into(), value.into()));
        self
    }
    /// Something a human must still do.
    pub fn todo(mut self, item: impl Into<String>) -> Self {
        self.checklist.push(item.into());
        self
    }
}

impl Alert {
    /// A label's value, if the alert has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        find(&self.labels, key)
    }
    /// An annotation's value, if the alert has it.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        find(&self.annotations, key)
    }

    /// A playbook's named setting: the annotation `key` as a positive whole
    /// number, or `default` when the alert has no such annotation. An
    /// annotation that is not a positive whole number is refused by name.
    pub fn setting(&self, key: &str, default: i64) -> Result<i64> {
        match self.annotation(key) {
            None => Ok(default),
            Some(text) => text.trim().parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                Error::failed(format!(
                    "the annotation `{key}` is `{text}`, not a positive whole number (leave it out for the default, {default})"
                ))
            }),
        }
    }

    /// The label `key` if it is a plain name (see [`plain`]): for a host, a
    /// commit or an invariant a playbook shows humans. Anything else is
    /// `None`, never passed on.
    pub fn plain_label(&self, key: &str) -> Option<&str> {
        self.label(key).and_then(plain)
    }

    /// An Ethereum address from the label `key`, lower-cased. A missing or
    /// malformed one is refused by name: a playbook has no default address
    /// (a test chain's must never stand in for production's).
    pub fn address(&self, key: &str) -> Result<String> {
        let value = self.label(key).ok_or_else(|| {
            Error::failed(format!(
                "the alert has no `{key}` label: add the address to the alert rule's labels (stepgate has no default address)"
            ))
        })?;
        let hex = value.strip_prefix("0x").unwrap_or("");
        if hex.len() == 40 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            Ok(value.to_ascii_lowercase())
        } else {
            Err(Error::failed(format!(
                "`{key}` = `{value}` is not an address"
            )))
        }
    }

    /// When the alert started firing, in milliseconds since the Unix epoch
    /// (`startsAt`, RFC 3339 in UTC as Alertmanager sends it), if known.
    /// Compare with [`runbook::now_millis`] for how long it has fired.
    pub fn starts_at_ms(&self) -> Option<i64> {
        utc_ms(self.starts_at.as_deref()?)
    }
}

/// `text` if it is a plain name: 1 to 128 ASCII letters, digits and
/// `._:/-`. For outside text a playbook puts in a message: no markup, no
/// line breaks, no unbounded length.
pub fn plain(text: &str) -> Option<&str> {
    (!text.is_empty()
        && text.len() <= 128
        && text
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._:/-".contains(&c)))
    .then_some(text)
}

/// An amount in integer units (USDC micro-units, wei) as an exact decimal
/// with `scale` places: `from_units(12_500_000_000, 6)` is `12500.000000`.
/// An amount too large for a [`Decimal`] is an error, never a wrapped one.
pub fn from_units(units: i128, scale: u32) -> Result<Decimal> {
    Decimal::try_from_i128_with_scale(units, scale)
        .map_err(|e| Error::failed(format!("{units} units at scale {scale}: {e}")))
}

/// An RFC 3339 time in UTC (`2026-11-23T09:00:00Z`, fractions allowed) as
/// milliseconds since the Unix epoch; `None` for anything else (another
/// offset, an impossible date). For times a system stores as text.
pub fn utc_millis(rfc3339: &str) -> Option<i64> {
    utc_ms(rfc3339)
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (whole
/// seconds), the form [`utc_millis`] reads back; for comparing with times
/// a system stores as text.
pub fn utc_text(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // The civil date from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A point in time, to the millisecond. [`runbook::now`] gives the run's
/// time (journaled, so a resume or a replay sees the same instant); bind it
/// as a query parameter instead of the database's `now()`, so what a query
/// answers depends on the run, not on when it is re-read:
///
/// ```no_run
/// use stepgate_sdk::prelude::*;
///
/// fn recent_fills() -> Result<i64> {
///     let since = runbook::now() - Duration::from_secs(15 * 60);
///     let rows = db::query("ledger", "SELECT count(*) AS n FROM fills WHERE at > $1", params![since])?;
///     rows.first()?.get::<i64>("n")
/// }
/// ```
///
/// Shown and bound as RFC 3339 in UTC (`2026-11-23T09:00:00Z`, or with
/// `.250` milliseconds when there are some).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn from_millis(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// An RFC 3339 time in UTC (`2026-11-23T09:00:00Z`, fractions
    /// allowed); `None` for anything else.
    pub fn parse(rfc3339: &str) -> Option<Timestamp> {
        utc_ms(rfc3339).map(Timestamp)
    }
}

impl std::ops::Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_sub(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }
}

impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let whole = utc_text(self.0);
        match self.0.rem_euclid(1000) {
            0 => f.write_str(&whole),
            ms => write!(f, "{}.{ms:03}Z", whole.trim_end_matches('Z')),
        }
    }
}

impl From<Timestamp> for Value {
    fn from(t: Timestamp) -> Self {
        Value::Timestamp(t.to_string())
    }
}

impl FromValue for Timestamp {
    const EXPECTED: &'static str = "a timestamp (RFC 3339 in UTC)";
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Timestamp(t) | Value::Text(t) => Timestamp::parse(t),
            _ => None,
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` as milliseconds since the Unix epoch:
/// exactly that form, a real date (no 31 February), years 0 to 9999.
fn utc_ms(rfc3339: &str) -> Option<i64> {
    let b = rfc3339.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let digits = |from: usize, to: usize| -> Option<i64> {
        let part = rfc3339.get(from..to)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (y, m, day) = (digits(0, 4)?, digits(5, 7)?, digits(8, 10)?);
    let (h, min, sec) = (digits(11, 13)?, digits(14, 16)?, digits(17, 19)?);
    // Then `Z`, or a fraction of a second and `Z`.
    let rest = rfc3339.get(19..)?;
    let millis = match rest.strip_prefix('.') {
        None if rest == "Z" => 0,
        None => return None,
        Some(fraction) => {
            let digits = fraction.strip_suffix('Z')?;
            if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|c| c.is_ascii_digit())
            {
                return None;
            }
            format!("{digits:0<3}")[..3].parse::<i64>().ok()?
        }
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m)
        || day < 1
        || day > month_days[(m - 1) as usize]
        || h > 23
        || min > 59
        || sec > 60
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(((days * 24 + h) * 60 + min) * 60_000 + sec * 1000 + millis)
}

fn find<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

// ---------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(v.into())
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Boolean(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.into())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}
impl From<Decimal> for Value {
    fn from(v: Decimal) -> Self {
        Value::Decimal(v.to_string())
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// A value as an array's element. Only the scalar types below reach it,
/// none of which converts to an array.
fn element(value: Value) -> Element {
    match value {
        Value::Boolean(b) => Element::Boolean(b),
        Value::Int(i) => Element::Int(i),
        Value::Float(f) => Element::Float(f),
        Value::Text(t) => Element::Text(t),
        Value::Bytes(b) => Element::Bytes(b),
        Value::Decimal(d) => Element::Decimal(d),
        Value::Timestamp(t) => Element::Timestamp(t),
        Value::Null | Value::Array(_) => Element::Null,
    }
}

/// A list is one parameter: `params![vec![3_i64, 7]]` for `= ANY($1)` on
/// PostgreSQL or `json_each(?1)` on SQLite. A vec, a slice or an array of
/// these types, or of `Option`s of them (an element may be null).
macro_rules! list_params {
    ($($t:ty),*) => {$(
        impl From<Vec<$t>> for Value {
            fn from(v: Vec<$t>) -> Self {
                Value::Array(v.into_iter().map(|x| element(x.into())).collect())
            }
        }
        impl From<Vec<Option<$t>>> for Value {
            fn from(v: Vec<Option<$t>>) -> Self {
                Value::Array(v.into_iter().map(|x| element(x.into())).collect())
            }
        }
        impl From<&[$t]> for Value {
            fn from(v: &[$t]) -> Self {
                Value::Array(v.iter().map(|x| element(x.clone().into())).collect())
            }
        }
        impl<const N: usize> From<[$t; N]> for Value {
            fn from(v: [$t; N]) -> Self {
                Value::Array(v.into_iter().map(|x| element(x.into())).collect())
            }
        }
    )*};
}
list_params!(i64, i32, bool, f64, &str, String, Decimal, Timestamp);

/// Statement parameters: `params![conn_id, "held", amount]`.
#[macro_export]
macro_rules! params {
    () => { ::std::vec::Vec::<$crate::Value>::new() };
    ($($value:expr),+ $(,)?) => { ::std::vec![$($crate::Value::from($value)),+] };
}

/// A Rust type a [`Value`] can be read into.
pub trait FromValue: Sized {
    fn from_value(value: &Value) -> Option<Self>;
    /// For messages.
    const EXPECTED: &'static str;
}

impl FromValue for i64 {
    const EXPECTED: &'static str = "an integer";
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Int(i) => Some(*i),
            Value::Decimal(t) | Value::Text(t) => t.parse().ok(),
            _ => None,
        }
    }
}

impl FromValue for bool {
    const EXPECTED: &'static str = "a boolean";
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Boolean(b) => Some(*b),
            Value::Int(i) => Some(*i != 0),
            _ => None,
        }
    }
}

impl FromValue for f64 {
    const EXPECTED: &'static str = "a float";
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}

impl FromValue for String {
    const EXPECTED: &'static str = "text";
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Text(t) | Value::Decimal(t) | Value::Timestamp(t) => Some(t.clone()),
            _ => None,
        }
    }
}

impl FromValue for Decimal {
    const EXPECTED: &'static str = "an exact decimal (a float is refused: money is never a float)";
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Decimal(t) | Value::Text(t) => t.parse().ok(),
            Value::Int(i) => Some(Decimal::from(*i)),
            _ => None,
        }
    }
}

impl FromValue for Vec<u8> {
    const EXPECTED: &'static str = "bytes";
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Bytes(b) => Some(b.clone()),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    const EXPECTED: &'static str = T::EXPECTED;
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Null => Some(None),
            other => T::from_value(other).map(Some),
        }
    }
}

// ---------------------------------------------------------------------------
// Capabilities
// ---------------------------------------------------------------------------

/// Databases named in the operator's config.
pub mod db {
    use super::*;
    use crate::bindings::stepgate::playbook::db as wit;

    pub use wit::Rows;

    /// Runs one read-only statement. Placeholders are `?1`, `?2` on SQLite
    /// and `$1`, `$2` on PostgreSQL; values are always bound by the host.
    pub fn query(conn: &str, sql: &str, params: impl AsRef<[Value]>) -> Result<Rows> {
        wit::query(conn, sql, params.as_ref())
    }

    /// Runs one INSERT, UPDATE or DELETE and returns the rows it changed
    /// (in a dry run: would change). `reason` lands in the journal and the
    /// audit log.
    pub fn execute(
        conn: &str,
        sql: &str,
        params: impl AsRef<[Value]>,
        reason: &str,
    ) -> Result<u64> {
        wit::execute(conn, sql, params.as_ref(), reason)
    }

    impl Rows {
        pub fn len(&self) -> usize {
            self.rows.len()
        }
        pub fn is_empty(&self) -> bool {
            self.rows.is_empty()
        }
        /// Every row.
        pub fn iter(&self) -> impl Iterator<Item = Row<'_>> {
            self.rows.iter().map(move |values| Row {
                columns: &self.columns,
                values,
            })
        }
        /// The first row, or `invalid` if there is none.
        pub fn first(&self) -> Result<Row<'_>> {
            self.iter()
                .next()
                .ok_or_else(|| Error::Invalid("the query returned no rows".into()))
        }
    }

    /// One row, with values by column name.
    #[derive(Clone, Copy)]
    pub struct Row<'a> {
        columns: &'a [String],
        values: &'a [Value],
    }

    impl<'a> Row<'a> {
        /// The raw value of `column`.
        pub fn value(&self, column: &str) -> Result<&'a Value> {
            self.columns
                .iter()
                .position(|c| c == column)
                .map(|i| &self.values[i])
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "no column `{column}`; the row has {}",
                        self.columns.join(", ")
                    ))
                })
        }

        /// The value of `column` as `T`.
        pub fn get<T: FromValue>(&self, column: &str) -> Result<T> {
            let value = self.value(column)?;
            T::from_value(value).ok_or_else(|| {
                Error::Invalid(format!(
                    "column `{column}` holds {value:?}, expected {}",
                    T::EXPECTED
                ))
            })
        }
    }
}

pub use db::Row;

/// JSON-RPC endpoints named in the operator's config.
pub mod rpc {
    use super::*;
    use crate::bindings::stepgate::playbook::rpc as wit;

    /// Calls a read method and decodes its `result`. `params` serializes to
    /// a JSON array or object; `()` sends no params.
    pub fn call<R: DeserializeOwned>(
        endpoint: &str,
        method: &str,
        params: impl Serialize,
    ) -> Result<R> {
        send(endpoint, method, params, "")
    }

    /// Calls a method the config classes as a write; `reason` is required.
    pub fn send<R: DeserializeOwned>(
        endpoint: &str,
        method: &str,
        params: impl Serialize,
        reason: &str,
    ) -> Result<R> {
        let params = match serde_json::to_value(&params)? {
            serde_json::Value::Null => "[]".to_owned(),
            other => other.to_string(),
        };
        let result = wit::call(endpoint, method, &params, reason)?;
        Ok(serde_json::from_str(&result)?)
    }

    /// A JSON-RPC quantity or 32-byte word (`0x2a`, `0x0000…02e90edd00`) as
    /// a number. A node's answer is hostile: anything that is not hex, or
    /// does not fit, is an error, never a wrapped number.
    pub fn quantity(hex: &str) -> Result<u128> {
        // At least one hex digit, nothing else (no sign, no `0x` alone: a
        // node answers `0x` for a contract that is not there).
        let all = hex
            .strip_prefix("0x")
            .filter(|d| !d.is_empty() && d.bytes().all(|c| c.is_ascii_hexdigit()))
            .ok_or_else(|| Error::failed(format!("`{hex}` is not a hex quantity")))?;
        let digits = all.trim_start_matches('0');
        if digits.is_empty() {
            return Ok(0);
        }
        u128::from_str_radix(digits, 16)
            .map_err(|_| Error::failed(format!("`{hex}` is not a quantity in range")))
    }
}

/// HTTP admin APIs named in the operator's config, with JSON bodies.
pub mod http {
    use super::*;
    use crate::bindings::stepgate::playbook::rpc as wit;

    /// An answer: its status and its body as JSON (`null` when empty or
    /// not JSON).
    #[derive(Debug, Clone)]
    pub struct Response {
        pub status: u16,
        pub body: serde_json::Value,
        /// A write in a dry run: nothing was sent (the status is 0).
        pub dry_run: bool,
    }

    impl Response {
        /// Whether the status is 2xx, or the write was planned in a dry run.
        pub fn ok(&self) -> bool {
            self.dry_run || (200..300).contains(&self.status)
        }
    }

    /// `GET path` on `endpoint`: a read.
    pub fn get(endpoint: &str, path: &str) -> Result<Response> {
        request(endpoint, "GET", path, None, "")
    }

    /// `GET path?query` on `endpoint`: a read, its query parameters
    /// encoded for you (`&[("since", &since.to_string())]`). The route
    /// the config grants must end in `?*` to allow a query string.
    pub fn get_query(endpoint: &str, path: &str, query: &[(&str, &str)]) -> Result<Response> {
        request(endpoint, "GET", &with_query(path, query), None, "")
    }

    /// `POST path` with `body` as JSON: a write unless the config classes
    /// the route a read; `reason` is required for a write.
    pub fn post(
        endpoint: &str,
        path: &str,
        body: &serde_json::Value,
        reason: &str,
    ) -> Result<Response> {
        request(endpoint, "POST", path, Some(body), reason)
    }

    /// `PUT path` with `body` as JSON: a write, with its `reason`.
    pub fn put(
        endpoint: &str,
        path: &str,
        body: &serde_json::Value,
        reason: &str,
    ) -> Result<Response> {
        request(endpoint, "PUT", path, Some(body), reason)
    }

    /// `PATCH path` with `body` as JSON: a write, with its `reason`.
    pub fn patch(
        endpoint: &str,
        path: &str,
        body: &serde_json::Value,
        reason: &str,
    ) -> Result<Response> {
        request(endpoint, "PATCH", path, Some(body), reason)
    }

    /// `DELETE path`: a write, with its `reason`.
    pub fn delete(endpoint: &str, path: &str, reason: &str) -> Result<Response> {
        request(endpoint, "DELETE", path, None, reason)
    }

    /// `path` with `query` appended as a query string, each name and value
    /// percent-encoded (all but `A-Z a-z 0-9 - . _ ~`): `/jobs?state=failed`.
    pub fn with_query(path: &str, query: &[(&str, &str)]) -> String {
        let mut out = path.to_owned();
        for (i, (name, value)) in query.iter().enumerate() {
            out.push(if i == 0 && !path.contains('?') {
                '?'
            } else {
                '&'
            });
            encode_into(&mut out, name);
            out.push('=');
            encode_into(&mut out, value);
        }
        out
    }

    fn encode_into(out: &mut String, text: &str) {
        for byte in text.bytes() {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                out.push(byte as char);
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
    }

    fn request(
        endpoint: &str,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        reason: &str,
    ) -> Result<Response> {
        let (headers, body) = match body {
            Some(json) => (
                vec![("content-type".to_owned(), "application/json".to_owned())],
                serde_json::to_vec(json)?,
            ),
            None => (Vec::new(), Vec::new()),
        };
        let answer = wit::http(
            endpoint,
            &wit::HttpRequest {
                method: method.to_owned(),
                path: path.to_owned(),
                headers,
                body,
            },
            reason,
        )?;
        Ok(Response {
            status: answer.status,
            dry_run: answer
                .headers
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case("x-stepgate-dry-run") && v == "true"),
            body: serde_json::from_slice(&answer.body).unwrap_or(serde_json::Value::Null),
        })
    }
}

/// Feature flags and kill switches.
pub mod flags {
    use super::*;
    use crate::bindings::stepgate::playbook::flags as wit;

    /// The flag's value, if set.
    pub fn get(name: &str) -> Result<Option<String>> {
        wit::get(name)
    }

    /// Sets a flag; returns the value it had before.
    pub fn set(name: &str, value: &str, reason: &str) -> Result<Option<String>> {
        wit::set(name, value, reason)
    }
}

/// Paging humans and posting to channels.
pub mod pager {
    use super::*;
    use crate::bindings::stepgate::playbook::pager as wit;

    /// Pages `target`; returns the page id.
    pub fn page(target: &str, severity: Severity, summary: &str, details: &str) -> Result<String> {
        wit::page(target, severity, summary, details)
    }

    /// Posts `message` to `channel`.
    pub fn notify(channel: &str, message: &str) -> Result<()> {
        wit::notify(channel, message)
    }

    /// Pages `target`; if the page does not go out, says so on `checklist`
    /// (with what it said), so a failing pager never costs a run its
    /// outcome and checklist.
    pub fn page_or_note(
        target: &str,
        severity: Severity,
        summary: &str,
        details: &str,
        checklist: &mut Vec<String>,
    ) {
        if let Err(e) = page(target, severity, summary, details) {
            checklist.push(not_sent(target, &e, summary));
        }
    }

    /// Posts `message` to `channel`; if it does not go out, says so on
    /// `checklist`, as [`page_or_note`].
    pub fn notify_or_note(channel: &str, message: &str, checklist: &mut Vec<String>) {
        if let Err(e) = notify(channel, message) {
            checklist.push(not_sent(channel, &e, message));
        }
    }

    fn not_sent(to: &str, error: &Error, said: &str) -> String {
        format!(
            "{to} was NOT told ({}): tell them by hand: {said}",
            error.message()
        )
    }
}

/// The run itself: logs, time, waits and human decisions.
pub mod runbook {
    use super::*;
    use crate::bindings::stepgate::playbook::runbook as wit;

    pub fn debug(message: &str) {
        wit::log(wit::Level::Debug, message)
    }
    pub fn info(message: &str) {
        wit::log(wit::Level::Info, message)
    }
    pub fn warn(message: &str) {
        wit::log(wit::Level::Warn, message)
    }
    pub fn error(message: &str) {
        wit::log(wit::Level::Error, message)
    }

    /// Milliseconds since the Unix epoch, from the host (journaled, so a
    /// replay sees the same time).
    pub fn now_millis() -> i64 {
        wit::now()
    }

    /// The run's time as a [`Timestamp`](crate::Timestamp), to bind in a
    /// query where it would say `now()`: journaled, so a resumed run (and
    /// the re-check of an approval) asks the same question.
    pub fn now() -> crate::Timestamp {
        crate::Timestamp::from_millis(wit::now())
    }

    /// Waits, e.g. one block before re-checking.
    pub fn sleep(duration: Duration) -> Result<()> {
        wit::sleep(duration.as_millis().min(u64::MAX as u128) as u64)
    }

    /// Asks a human; `false` if they (or the policy) say no.
    pub fn confirm(question: &str) -> Result<bool> {
        wit::confirm(question)
    }

    /// Whether this run is a dry run: every write is planned, none made.
    /// For wording only ("halt planned", never "halted" for a write that
    /// was not made); decide the same way in both modes.
    pub fn dry_run() -> bool {
        wit::dry_run()
    }
}

/// Runs `f` as the step `name`: the host shows and journals every call in
/// it under that name.
pub fn step<T>(name: &str, f: impl FnOnce() -> T) -> T {
    bindings::stepgate::playbook::runbook::step(name);
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_text_and_millis_round_trip() {
        for ms in [0, 1_795_424_400_000, 1_709_209_815_000, 951_782_400_000] {
            assert_eq!(utc_millis(&utc_text(ms)), Some(ms), "{}", utc_text(ms));
        }
        assert_eq!(utc_text(1_795_424_400_000), "2026-11-23T09:00:00Z");
        assert_eq!(utc_millis("2026-11-23T25:00:00Z"), None, "no hour 25");
        assert_eq!(utc_millis("2026-02-31T00:00:00Z"), None, "no 31 February");
        assert_eq!(utc_millis("2024-02-29T00:00:00Z"), Some(1_709_164_800_000));
        assert_eq!(utc_millis("2026-11-23T+9:00:00Z"), None);
        assert_eq!(utc_millis("2026-11-23T09:00:00-x:Z"), None);
        assert_eq!(
            utc_millis("99999999999999999-01-01T00:00:00Z"),
            None,
            "no overflow"
        );
    }

    #[test]
    fn query_parameters_are_encoded_for_you() {
        assert_eq!(
            http::with_query(
                "/jobs",
                &[
                    ("state", "failed"),
                    ("since", "2026-11-23T09:00:00Z"),
                    ("q", "a b&c=d/é")
                ]
            ),
            "/jobs?state=failed&since=2026-11-23T09%3A00%3A00Z&q=a%20b%26c%3Dd%2F%C3%A9"
        );
        assert_eq!(
            http::with_query("/jobs?x=1", &[("y", "2")]),
            "/jobs?x=1&y=2"
        );
        assert_eq!(http::with_query("/jobs", &[]), "/jobs");
    }

    #[test]
    fn a_timestamp_binds_as_rfc3339_to_the_millisecond() {
        let t = Timestamp::from_millis(1_795_424_400_250);
        assert_eq!(t.to_string(), "2026-11-23T09:00:00.250Z");
        assert_eq!(
            Value::from(t),
            Value::Timestamp("2026-11-23T09:00:00.250Z".into())
        );
        assert_eq!(Timestamp::parse(&t.to_string()), Some(t));
        let whole = t - Duration::from_millis(250);
        assert_eq!(whole.to_string(), "2026-11-23T09:00:00Z");
        assert_eq!(
            (whole - Duration::from_secs(15 * 60)).to_string(),
            "2026-11-23T08:45:00Z"
        );
        assert_eq!(
            Timestamp::from_value(&Value::Timestamp("2026-11-23T09:00:00Z".into())),
            Some(whole)
        );
        assert_eq!(Timestamp::from_value(&Value::Int(1)), None);
        assert_eq!(
            Timestamp::from_millis(-1).to_string(),
            "1969-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn an_address_label_is_checked_and_never_defaulted() {
        let alert = |labels: &[(&str, &str)]| Alert {
            name: "A".into(),
            status: AlertStatus::Firing,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: Vec::new(),
            starts_at: None,
            fingerprint: None,
        };
        let wallet = "0xAbCdEf0123456789aBcDeF0123456789AbCdEf01";
        assert_eq!(
            alert(&[("wallet", wallet)]).address("wallet").unwrap(),
            wallet.to_ascii_lowercase()
        );
        assert!(
            alert(&[])
                .address("wallet")
                .unwrap_err()
                .message()
                .contains("no `wallet` label")
        );
        for bad in [
            "0x1234",
            "abcdef0123456789abcdef0123456789abcdef0123",
            "0xZZcdef0123456789abcdef0123456789abcdef01",
        ] {
            assert!(
                alert(&[("wallet", bad)]).address("wallet").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn plain_names_only() {
        assert_eq!(
            plain("plaza-db-1.internal:5432"),
            Some("plaza-db-1.internal:5432")
        );
        for bad in ["", "<b>x</b>", "a b", "line\nbreak", &"x".repeat(129)] {
            assert_eq!(plain(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn units_are_exact_decimals() {
        assert_eq!(
            from_units(12_500_000_000, 6).unwrap().to_string(),
            "12500.000000"
        );
        assert_eq!(from_units(-5_000_000, 6).unwrap().to_string(), "-5.000000");
        assert!(from_units(i128::MAX, 6).is_err());
    }

    #[test]
    fn quantities_are_hex_or_refused() {
        assert_eq!(rpc::quantity("0x2a").unwrap(), 42);
        assert_eq!(rpc::quantity("0x0").unwrap(), 0);
        assert_eq!(
            rpc::quantity("0x00000000000000000000000000000000000000000000000000000002e90edd00")
                .unwrap(),
            12_500_000_000
        );
        assert!(rpc::quantity("2a").is_err(), "no 0x");
        assert!(rpc::quantity("0x").is_err(), "no digits: no contract there");
        assert!(rpc::quantity("0x+2a").is_err(), "no sign");
        assert!(rpc::quantity("0xzz").is_err());
        assert!(
            rpc::quantity(&format!("0x1{}", "0".repeat(40))).is_err(),
            "over u128"
        );
    }

    #[test]
    fn alert_start_times_parse_as_utc_milliseconds() {
        assert_eq!(utc_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(utc_ms("2026-11-23T09:00:00Z"), Some(1_795_424_400_000));
        assert_eq!(utc_ms("2024-02-29T12:30:15.250Z"), Some(1_709_209_815_250));
        assert_eq!(utc_ms("2026-11-23T09:00:00+02:00"), None, "UTC only");
        assert_eq!(utc_ms("yesterday"), None);
    }

    #[test]
    fn a_fate_never_claims_a_write_that_was_not_made() {
        assert_eq!(Fate::Made.say("halted"), "halted");
        assert_eq!(Fate::Planned.say("halted"), "would be halted (dry run)");
        let refused = Fate::from_error(&Error::Denied("policy".into()));
        assert_eq!(
            refused.say("halted"),
            "NOT halted (refused: denied: policy)"
        );
        let failed = Fate::from_error(&Error::Timeout("10s".into()));
        assert_eq!(failed.say("halted"), "NOT halted (failed: timeout: 10s)");
        assert!(Fate::Made.passed() && Fate::Planned.passed());
        assert!(!refused.passed() && !failed.passed());
        assert_eq!(failed.why_not(), Some("timeout: 10s"));
    }

    #[test]
    fn decimals_never_come_from_floats() {
        assert_eq!(Decimal::from_value(&Value::Float(0.1)), None);
        assert_eq!(
            Decimal::from_value(&Value::Decimal("12.500000".into())),
            Some(Decimal::new(12_500_000, 6))
        );
        assert_eq!(Decimal::from_value(&Value::Int(3)), Some(Decimal::from(3)));
    }

    #[test]
    fn rows_by_column_name() {
        let rows = db::Rows {
            columns: vec!["account_id".into(), "held".into()],
            rows: vec![vec![
                Value::Text("a1".into()),
                Value::Decimal("1.50".into()),
            ]],
        };
        let row = rows.first().unwrap();
        assert_eq!(row.get::<String>("account_id").unwrap(), "a1");
        assert_eq!(row.get::<Decimal>("held").unwrap(), Decimal::new(150, 2));
        let missing = row.get::<i64>("nope").unwrap_err().to_string();
        assert!(missing.contains("account_id, held"), "{missing}");
        let wrong = row.get::<i64>("account_id").unwrap_err().to_string();
        assert!(wrong.contains("expected an integer"), "{wrong}");
    }

    #[test]
    fn params_and_builders() {
        let p = params![1i64, "x", Decimal::new(5, 1), None::<i64>];
        assert_eq!(
            p,
            vec![
                Value::Int(1),
                Value::Text("x".into()),
                Value::Decimal("0.5".into()),
                Value::Null
            ]
        );
        // A list is one parameter, from a vec, a slice or an array.
        let ids = vec![3_i64, 7];
        let p = params![ids.clone(), &ids[..1], ["a", "b"], vec![Some(1_i64), None]];
        assert_eq!(
            p,
            vec![
                Value::Array(vec![Element::Int(3), Element::Int(7)]),
                Value::Array(vec![Element::Int(3)]),
                Value::Array(vec![Element::Text("a".into()), Element::Text("b".into())]),
                Value::Array(vec![Element::Int(1), Element::Null]),
            ]
        );
        let d = Description::new("p", "1")
            .answers("A")
            .db_read("plaza")
            .page("ceo");
        assert_eq!(d.alerts, ["A"]);
        assert_eq!(d.capabilities.len(), 2);
        let o = Outcome::new("s")
            .severity("SEV-1")
            .field("n", 2i64)
            .todo("t");
        assert_eq!(o.severity.as_deref(), Some("SEV-1"));
        assert_eq!(o.checklist, ["t"]);
    }
}
