//! RGS §4: clock skew spike (> 10 s sustained), SEV2 for the affected
//! operator.
//!
//! - **Triage**, the runbook's three questions, from the signature
//!   rejections of the last 30 minutes (`clock_skew_outside_window`, the
//!   request's `Timestamp` header against our clock): whose clock (one
//!   operator, or every operator skewed the same way: ours)? One-sided or
//!   bidirectional? One host or all of the operator's?
//! - **Attacker**: a single request far in the past or future (more than
//!   [`ATTACK_SKEW_SECONDS`]) is a replay or spoof attempt, not a clock:
//!   §3 (credential leak, SEV1) applies; on-call is paged and no window is
//!   widened.
//! - **Our drift**: on-call (infra) is paged to restart chronyd on the
//!   affected host; no window is widened.
//! - **Operator-side drift**: their ops are told (Chrony or cloud NTP);
//!   short term, `SIGNATURE_WINDOW_SECONDS` is widened to cover the skew
//!   (approved), never past the runbook's 60 s; a skew beyond that is left
//!   to the operator's fix.

use stepgate_sdk::prelude::*;

const DB: &str = "rgs";
const ONCALL: &str = "rgs-oncall";
const INCIDENTS: &str = "rgs-incidents";
const OPERATORS: &str = "rgs-operators";
const WINDOW: &str = "SIGNATURE_WINDOW_SECONDS";

/// The runbook's ceiling for the signature window.
const MAX_WINDOW_SECONDS: i64 = 60;
/// Margin added to the worst skew when the window is widened.
const WINDOW_MARGIN_SECONDS: i64 = 5;
/// A request skewed further than this is an attack, not a clock.
const ATTACK_SKEW_SECONDS: i64 = 3600;

const REJECTIONS: &str = "SELECT operator_id, host, count(*) AS rejections, \
     min(EXTRACT(EPOCH FROM request_ts - server_ts))::bigint AS min_skew, \
     max(EXTRACT(EPOCH FROM request_ts - server_ts))::bigint AS max_skew \
     FROM signature_rejections WHERE reason = 'clock_skew_outside_window' \
     AND created_at > now() - interval '30 minutes' GROUP BY 1, 2 ORDER BY 1, 2";

struct ClockSkew;

struct Host {
    operator: String,
    host: String,
    rejections: i64,
    min: i64,
    max: i64,
}

#[derive(Debug, PartialEq)]
enum Verdict {
    Attack,
    Ours,
    Operators,
    Nothing,
}

fn verdict(hosts: &[Host], attack_after: i64) -> Verdict {
    if hosts.is_empty() {
        return Verdict::Nothing;
    }
    if hosts
        .iter()
        .any(|h| h.min.saturating_abs() > attack_after || h.max.saturating_abs() > attack_after)
    {
        return Verdict::Attack;
    }
    let operators: std::collections::BTreeSet<&str> =
        hosts.iter().map(|h| h.operator.as_str()).collect();
    let ahead = hosts.iter().all(|h| h.min > 0);
    let behind = hosts.iter().all(|h| h.max < 0);
    if operators.len() > 1 && (ahead || behind) {
        Verdict::Ours
    } else {
        Verdict::Operators
    }
}

fn direction(hosts: &[&Host]) -> &'static str {
    if hosts.iter().all(|h| h.min > 0) {
        "ahead of our clock (one-sided)"
    } else if hosts.iter().all(|h| h.max < 0) {
        "behind our clock (one-sided)"
    } else {
        "both ahead and behind (bidirectional)"
    }
}

impl Playbook for ClockSkew {
    fn describe() -> Description {
        Description::new("rgs-clock-skew", "1.0.0")
            .summary(
                "RGS §4, clock skew spike: whose clock (an operator's, ours, or an attacker's), one-sided or \
                 not, which hosts; tells the operator and widens SIGNATURE_WINDOW_SECONDS to cover their skew \
                 (approved, never past 60 s), or pages on-call for our drift or a replay attempt.",
            )
            .answers("SignatureClockSkew")
            .db_read(DB)
            .flag_read(WINDOW)
            .flag_write(WINDOW)
            .page(ONCALL)
            .notify(INCIDENTS)
            .notify(OPERATORS)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let max_window = alert
            .setting("max_window_seconds", MAX_WINDOW_SECONDS)?
            .min(MAX_WINDOW_SECONDS);
        let attack_after = alert.setting("attack_skew_seconds", ATTACK_SKEW_SECONDS)?;
        let hosts = step("Triage: whose clock?", || -> Result<Vec<Host>> {
            db::query(DB, REJECTIONS, params![])?
                .iter()
                .map(|r| {
                    Ok(Host {
                        operator: r.get("operator_id")?,
                        host: r.get("host")?,
                        rejections: r.get("rejections")?,
                        min: r.get("min_skew")?,
                        max: r.get("max_skew")?,
                    })
                })
                .collect()
        })?;
        // Unset or unreadable: the RGS default applies, which stepgate does
        // not know, so it must not "widen" to a smaller value.
        // An unreadable flag store must not stop the page for an attack or
        // our own clock: the window is read leniently, and unknown is None.
        let current: Option<i64> = flags::get(WINDOW)
            .ok()
            .flatten()
            .and_then(|v| v.trim().parse().ok());
        let mut checklist = Vec::new();
        let found = verdict(&hosts, attack_after);
        let worst = hosts
            .iter()
            .map(|h| h.min.saturating_abs().max(h.max.saturating_abs()))
            .max()
            .unwrap_or(0);
        let (summary, severity) = step("Mitigate", || -> Result<(String, &str)> {
            Ok(match found {
                Verdict::Nothing => {
                    let s = "No clock-skew rejection in the last 30 minutes: the spike is over"
                        .to_owned();
                    pager::notify_or_note(
                        INCIDENTS,
                        &format!("RGS {}: {s}", alert.name),
                        &mut checklist,
                    );
                    (s, "SEV3")
                }
                Verdict::Attack => {
                    let s = format!(
                        "A request skewed {worst} s (over {attack_after} s): a replay or spoof attempt, not a clock; no window widened"
                    );
                    pager::page_or_note(
                        ONCALL,
                        Severity::Critical,
                        &format!("RGS clock skew: {s}"),
                        "treat it as §3 (credential leak): check the key that signed it",
                        &mut checklist,
                    );
                    checklist.push("Run §3 (operator credential leak) for the key that signed the skewed requests".to_owned());
                    (s, "SEV1")
                }
                Verdict::Ours => {
                    let all: Vec<&Host> = hosts.iter().collect();
                    let s = format!(
                        "Every affected operator is skewed {} by up to {worst} s: our clock drifts; no window widened",
                        direction(&all)
                    );
                    pager::page_or_note(
                        ONCALL,
                        Severity::Error,
                        &format!("RGS clock skew: {s}"),
                        "restart ntpd/chronyd on the affected RGS host and check its NTP status",
                        &mut checklist,
                    );
                    checklist.push("Restart ntpd/chronyd on the affected RGS host; check the host's NTP status".to_owned());
                    (s, "SEV2")
                }
                Verdict::Operators => {
                    let mut said = Vec::new();
                    let operators: std::collections::BTreeSet<&str> =
                        hosts.iter().map(|h| h.operator.as_str()).collect();
                    for op in &operators {
                        let theirs: Vec<&Host> =
                            hosts.iter().filter(|h| h.operator == *op).collect();
                        let names: Vec<&str> = theirs.iter().map(|h| h.host.as_str()).collect();
                        let n: i64 = theirs.iter().map(|h| h.rejections).sum();
                        let text = format!(
                            "{op}: {n} rejection(s), {} on {}",
                            direction(&theirs),
                            names.join(", ")
                        );
                        pager::notify_or_note(
                            OPERATORS,
                            &format!(
                                "{op}: {n} of your requests were rejected for clock skew ({}, hosts {}); please run Chrony or your cloud's NTP on them",
                                direction(&theirs),
                                names.join(", ")
                            ),
                            &mut checklist,
                        );
                        said.push(text);
                    }
                    let needed = worst.saturating_add(WINDOW_MARGIN_SECONDS);
                    let window = if let Some(current) = current.filter(|c| needed <= *c) {
                        format!("{WINDOW} ({current} s) already covers it")
                    } else if needed > max_window {
                        checklist.push(format!("A {worst} s skew is beyond the {max_window} s the runbook allows: the operator must fix their clock"));
                        format!(
                            "{WINDOW} NOT widened: {needed} s would pass the {max_window} s ceiling"
                        )
                    } else if let Some(current) = current {
                        pager::notify_or_note(
                            INCIDENTS,
                            &format!(
                                "RGS {}: operator clock skew up to {worst} s; stepgate asks an approver to widen {WINDOW} from {current} to {needed} s (global, every operator); decide in stepgate now",
                                alert.name
                            ),
                            &mut checklist,
                        );
                        let reason = format!(
                            "RGS runbook §4: operator clock skew up to {worst} s; short-term widening, at most {max_window} s"
                        );
                        let fate = Fate::of(&flags::set(WINDOW, &needed.to_string(), &reason));
                        if let Some(why) = fate.why_not() {
                            checklist.push(format!("{WINDOW} is NOT widened ({why}): the operator's requests keep failing until their clock is fixed"));
                        }
                        if fate.passed() {
                            checklist.push(format!("Narrow {WINDOW} back to {current} s once the operator's clock is fixed"));
                        }
                        format!(
                            "{WINDOW} {}",
                            fate.say(&format!("widened from {current} to {needed} s"))
                        )
                    } else {
                        checklist.push(format!(
                            "{WINDOW} is unset (the RGS default applies): check the default, and widen it to {needed} s by hand only if that is wider"
                        ));
                        format!(
                            "{WINDOW} NOT widened: it is unset, and the RGS default is not known here"
                        )
                    };
                    let s = format!(
                        "Operator clock skew up to {worst} s ({}); {window}",
                        said.join("; ")
                    );
                    pager::notify_or_note(
                        INCIDENTS,
                        &format!("RGS {}: {s}", alert.name),
                        &mut checklist,
                    );
                    (s, "SEV2")
                }
            })
        })?;
        checklist.push("RCA: the source of the drift, its duration, and whether money-path rejections retried successfully".to_owned());
        let mut outcome = Outcome::new(summary)
            .severity(severity)
            .field("worst_skew_seconds", worst)
            .field("verdict", format!("{found:?}").to_ascii_lowercase());
        for item in checklist {
            outcome = outcome.todo(item);
        }
        Ok(outcome)
    }
}

stepgate_sdk::playbook!(ClockSkew);
