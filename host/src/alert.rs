//! Alerts: an Alertmanager webhook payload (version 4) or a single alert
//! object, turned into the WIT `alert` record.
//!
//! Malformed input is refused with a message that says where (line and
//! column for JSON, the field path for content); nothing is run.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::bindings::{Alert, AlertStatus};

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("the alert is not valid JSON: {0}")]
    Json(String),
    #[error("the alert is malformed: {0}")]
    Shape(String),
}

#[derive(Deserialize)]
struct Payload {
    version: Option<String>,
    status: Option<String>,
    alerts: Option<Vec<RawAlert>>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    #[serde(rename = "startsAt")]
    starts_at: Option<String>,
    fingerprint: Option<String>,
}

#[derive(Deserialize)]
struct RawAlert {
    status: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    #[serde(rename = "startsAt")]
    starts_at: Option<String>,
    fingerprint: Option<String>,
}

/// Parses a webhook payload or a single alert; returns every alert in it.
pub fn parse(text: &str) -> Result<Vec<Alert>, AlertError> {
    let payload: Payload =
        serde_json::from_str(text).map_err(|e| AlertError::Json(e.to_string()))?;
    if let Some(version) = &payload.version
        && version != "4"
    {
        return Err(AlertError::Shape(format!(
            "Alertmanager webhook version \"{version}\" is not supported; stepgate reads version \"4\""
        )));
    }
    match payload.alerts {
        Some(alerts) => {
            if alerts.is_empty() {
                return Err(AlertError::Shape("`alerts` is empty".to_owned()));
            }
            alerts
                .into_iter()
                .enumerate()
                .map(|(i, raw)| {
                    let status = raw.status.clone().or_else(|| payload.status.clone());
                    convert(&format!("alerts[{i}]"), raw, status)
                })
                .collect()
        }
        None => {
            let raw = RawAlert {
                status: payload.status,
                labels: payload.labels,
                annotations: payload.annotations,
                starts_at: payload.starts_at,
                fingerprint: payload.fingerprint,
            };
            let status = raw.status.clone();
            Ok(vec![convert("alert", raw, status)?])
        }
    }
}

fn convert(at: &str, raw: RawAlert, status: Option<String>) -> Result<Alert, AlertError> {
    let labels = raw.labels.ok_or_else(|| {
        AlertError::Shape(format!(
            "{at}: no `labels`; an alert needs at least `labels.alertname` (or send an Alertmanager payload with `alerts`)"
        ))
    })?;
    let name = labels
        .get("alertname")
        .filter(|n| !n.trim().is_empty())
        .cloned()
        .ok_or_else(|| AlertError::Shape(format!("{at}.labels.alertname is missing or empty")))?;
    let status = match status.as_deref() {
        None | Some("firing") => AlertStatus::Firing,
        Some("resolved") => AlertStatus::Resolved,
        Some(other) => {
            return Err(AlertError::Shape(format!(
                "{at}.status is \"{other}\"; expected \"firing\" or \"resolved\""
            )));
        }
    };
    let annotations = raw.annotations.unwrap_or_default();
    // A NUL cannot be stored as text (PostgreSQL refuses it), and one
    // alert that cannot be stored would fail every alert committed with it.
    for (key, value) in labels.iter().chain(&annotations) {
        if key.contains('\0') || value.contains('\0') {
            return Err(AlertError::Shape(format!(
                "{at}: label or annotation `{}` holds a NUL character",
                key.escape_debug()
            )));
        }
    }
    if raw.starts_at.as_deref().is_some_and(|s| s.contains('\0')) {
        return Err(AlertError::Shape(format!(
            "{at}.startsAt holds a NUL character"
        )));
    }
    if let Some(fingerprint) = &raw.fingerprint
        && (fingerprint.len() > MAX_FINGERPRINT || fingerprint.chars().any(|c| c.is_control()))
    {
        return Err(AlertError::Shape(format!(
            "{at}.fingerprint is longer than {MAX_FINGERPRINT} bytes or holds a control character"
        )));
    }
    Ok(Alert {
        name,
        status,
        labels: labels.into_iter().collect(),
        annotations: annotations.into_iter().collect(),
        starts_at: raw.starts_at,
        fingerprint: raw.fingerprint,
    })
}

/// The longest fingerprint an alert may carry (Alertmanager's are 16 hex
/// digits).
const MAX_FINGERPRINT: usize = 256;

/// The alert a single run answers: the first firing one, else the first.
pub fn pick(alerts: Vec<Alert>) -> Option<Alert> {
    let firing = alerts.iter().position(|a| a.status == AlertStatus::Firing);
    let mut alerts = alerts;
    match firing {
        Some(i) => Some(alerts.swap_remove(i)),
        None => alerts.into_iter().next(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nul_or_an_unstorable_fingerprint_is_refused_naming_it() {
        for (body, needle) in [
            (
                r#"{"labels": {"alertname": "A", "x": "a\u0000b"}}"#,
                "`x` holds a NUL",
            ),
            (
                r#"{"labels": {"alertname": "A"}, "annotations": {"s\u0000": "v"}}"#,
                "NUL",
            ),
            (
                r#"{"labels": {"alertname": "A"}, "fingerprint": "a\u0000b"}"#,
                "alert.fingerprint",
            ),
            (
                r#"{"labels": {"alertname": "A"}, "fingerprint": "a\nb"}"#,
                "control character",
            ),
        ] {
            let err = parse(body).unwrap_err().to_string();
            assert!(err.contains(needle), "{body}: {err}");
        }
        let long = format!(
            r#"{{"labels": {{"alertname": "A"}}, "fingerprint": "{}"}}"#,
            "f".repeat(257)
        );
        assert!(parse(&long).is_err());
        let fine = format!(
            r#"{{"labels": {{"alertname": "A"}}, "fingerprint": "{}"}}"#,
            "f".repeat(256)
        );
        assert_eq!(
            parse(&fine).unwrap()[0]
                .fingerprint
                .as_deref()
                .map(str::len),
            Some(256)
        );
    }

    #[test]
    fn alertmanager_payload_parses() {
        let alerts = parse(
            r#"{"version":"4","status":"firing","receiver":"stepgate","groupKey":"{}:{}",
                "commonLabels":{"alertname":"ReconciliationDriftHigh"},
                "alerts":[{"status":"firing","labels":{"alertname":"ReconciliationDriftHigh","severity":"critical"},
                           "annotations":{"summary":"drift"},"startsAt":"2026-11-23T09:00:00Z","fingerprint":"abc"}]}"#,
        )
        .unwrap();
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_eq!(a.name, "ReconciliationDriftHigh");
        assert_eq!(a.status, AlertStatus::Firing);
        assert_eq!(a.fingerprint.as_deref(), Some("abc"));
        assert!(a.labels.contains(&("severity".into(), "critical".into())));
        assert_eq!(a.annotations, vec![("summary".into(), "drift".into())]);
    }

    #[test]
    fn single_alert_parses_and_status_defaults_to_firing() {
        let alerts = parse(r#"{"labels":{"alertname":"LedgerSumZeroViolation"}}"#).unwrap();
        assert_eq!(alerts[0].name, "LedgerSumZeroViolation");
        assert_eq!(alerts[0].status, AlertStatus::Firing);
    }

    #[test]
    fn malformed_alerts_say_what_is_wrong() {
        let cases = [
            ("{", "not valid JSON"),
            ("[]", "not valid JSON"),
            (r#"{"alerts":[]}"#, "empty"),
            (
                r#"{"alerts":[{"labels":{}}]}"#,
                "alerts[0].labels.alertname",
            ),
            (r#"{"annotations":{}}"#, "no `labels`"),
            (
                r#"{"labels":{"alertname":"X"},"status":"maybe"}"#,
                "\"maybe\"",
            ),
            (r#"{"version":"3","alerts":[]}"#, "version \"3\""),
            (r#"{"labels":{"alertname":7}}"#, "not valid JSON"),
        ];
        for (text, needle) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn pick_prefers_firing() {
        let alerts = parse(
            r#"{"alerts":[{"status":"resolved","labels":{"alertname":"A"}},{"status":"firing","labels":{"alertname":"B"}}]}"#,
        )
        .unwrap();
        assert_eq!(pick(alerts).unwrap().name, "B");
    }
}
