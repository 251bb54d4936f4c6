//! A recorded run as a scenario: the alert, every read with the answer it
//! got, and what the run decided as the expectation, so a real incident
//! becomes a regression test in one command. The recording holds no
//! secret (see `recording`), so neither does the scenario.

use serde_json::Value as Json;

use super::check::expect_from;
use super::values::{json_to_toml, to_toml};
use crate::bindings::{AlertStatus, Value};
use crate::gate::Decision;
use crate::gate::Effect;
use crate::journal::Entry;
use crate::recording::Recording;

fn string(s: &str) -> toml::Value {
    toml::Value::String(s.to_owned())
}

fn arg<'a>(entry: &'a Entry, key: &str) -> &'a str {
    entry.args.get(key).and_then(Json::as_str).unwrap_or("")
}

fn error_text(result: &Json) -> Option<String> {
    let err = result.get("err")?;
    let err: crate::bindings::WitError = serde_json::from_value(err.clone()).ok()?;
    Some(crate::report::error_text(&err))
}

/// A failed read's error as a scenario's `error = "…"` gives it: a
/// scenario's error comes back to the playbook as a backend error, which
/// adds its own `backend: ` prefix, so a backend error is written as its
/// message alone (else the test would expect `backend: backend: …`).
fn error_message(result: &Json) -> Option<String> {
    let err = result.get("err")?;
    let err: crate::bindings::WitError = serde_json::from_value(err.clone()).ok()?;
    Some(match err {
        crate::bindings::WitError::Backend(m) => m,
        other => crate::report::error_text(&other),
    })
}

/// The scenario file (TOML text) of `recording`; `gates`, the playbook's
/// gates where the config is at hand, say how many approvers (and of
/// which groups) each approved write took.
pub fn scenario_of(recording: &Recording, gates: Option<&crate::gate::Gates>) -> String {
    let mut doc = toml::Table::new();
    doc.insert(
        "description".into(),
        string(&format!(
            "Recorded run {} of {} ({})",
            recording.run_id,
            recording.playbook,
            recording.mode.as_str()
        )),
    );
    doc.insert("playbook".into(), string(&recording.playbook));
    let first_now = recording
        .journal
        .iter()
        .find(|e| e.name() == "runbook.now")
        .and_then(|e| e.result.get("ok")?.as_i64())
        .and_then(chrono::DateTime::from_timestamp_millis);
    if let Some(now) = first_now {
        doc.insert("now".into(), string(&now.to_rfc3339()));
    }
    doc.insert("alert".into(), toml::Value::Table(alert_table(recording)));
    let live = recording.mode == crate::gate::Mode::Live;
    if live {
        doc.insert("mode".into(), string("live"));
    }
    let mut approvals = Vec::new();
    let mut failing: Vec<toml::Value> = Vec::new();

    let (mut db, mut rpc, mut http) = (Vec::new(), Vec::new(), Vec::new());
    let mut flags = toml::Table::new();
    let mut unset: Vec<toml::Value> = Vec::new();
    for entry in &recording.journal {
        if entry.gate == Decision::NotGranted || entry.gate == Decision::Invalid {
            continue;
        }
        let ok = entry.result.get("ok");
        if live && entry.is_write() {
            // What the approvers decided, and pager sinks that failed.
            if let Some((decision, requirement)) = approvers_decided(entry, gates) {
                // An approval is one per approver the gate needed; a
                // denial is one approver's. The recording does not say
                // who: each is named by position, of the gate's group.
                let deciders = match decision {
                    "approve" => requirement.quorum.max(1),
                    _ => 1,
                };
                for n in 1..=deciders {
                    let mut a = toml::Table::new();
                    a.insert("call".into(), string(&entry.name()));
                    a.insert("target".into(), string(target_of(entry)));
                    a.insert("decision".into(), string(decision));
                    if deciders > 1 {
                        a.insert("by".into(), string(&format!("approver-{n}")));
                    }
                    if let Some(group) =
                        requirement.groups.first().filter(|_| decision != "timeout")
                    {
                        a.insert("groups".into(), toml::Value::Array(vec![string(group)]));
                    }
                    if let Some(why) = error_text(&entry.result) {
                        a.insert("reason".into(), string(&why));
                    }
                    approvals.push(toml::Value::Table(a));
                }
            }
            if entry.interface == "pager"
                && error_text(&entry.result).is_some()
                && entry.gate != Decision::Denied
            {
                failing.push(string(target_of(entry)));
            }
        }
        let mut answer = toml::Table::new();
        match (entry.name().as_str(), entry.effect) {
            ("db.query", _) | ("db.execute", _) => {
                let params: Vec<Value> = entry
                    .args
                    .get("params")
                    .and_then(|p| serde_json::from_value(p.clone()).ok())
                    .unwrap_or_default();
                answer.insert("conn".into(), string(arg(entry, "conn")));
                answer.insert("sql".into(), string(arg(entry, "sql")));
                answer.insert(
                    "params".into(),
                    toml::Value::Array(params.iter().map(to_toml).collect()),
                );
                if let Some(why) = error_message(&entry.result) {
                    answer.insert("error".into(), string(&why));
                } else if entry.op == "execute" {
                    answer.insert(
                        "changed".into(),
                        toml::Value::Integer(ok.and_then(Json::as_i64).unwrap_or(0)),
                    );
                } else {
                    let rows: Option<crate::bindings::stepgate::playbook::db::Rows> =
                        ok.and_then(|ok| serde_json::from_value(ok.clone()).ok());
                    let rows = rows.unwrap_or(crate::bindings::stepgate::playbook::db::Rows {
                        columns: Vec::new(),
                        rows: Vec::new(),
                    });
                    answer.insert(
                        "columns".into(),
                        toml::Value::Array(rows.columns.iter().map(|c| string(c)).collect()),
                    );
                    answer.insert(
                        "rows".into(),
                        toml::Value::Array(
                            rows.rows
                                .iter()
                                .map(|r| toml::Value::Array(r.iter().map(to_toml).collect()))
                                .collect(),
                        ),
                    );
                }
                db.push(toml::Value::Table(answer));
            }
            ("rpc.call", Effect::Read) => {
                let params: Json = serde_json::from_str(arg(entry, "params")).unwrap_or(Json::Null);
                answer.insert("endpoint".into(), string(arg(entry, "endpoint")));
                answer.insert("method".into(), string(arg(entry, "method")));
                answer.insert("params".into(), json_to_toml(&params));
                match error_message(&entry.result) {
                    Some(why) => {
                        answer.insert("error".into(), string(&why));
                    }
                    None => {
                        let text = ok.and_then(Json::as_str).unwrap_or("null");
                        let result: Json = serde_json::from_str(text).unwrap_or(Json::Null);
                        answer.insert("result".into(), json_to_toml(&result));
                    }
                }
                rpc.push(toml::Value::Table(answer));
            }
            ("rpc.http", Effect::Read) => {
                let response: Option<crate::bindings::stepgate::playbook::rpc::HttpResponse> =
                    ok.and_then(|ok| serde_json::from_value(ok.clone()).ok());
                let failed = error_message(&entry.result);
                if response.is_none() && failed.is_none() {
                    continue;
                }
                answer.insert("endpoint".into(), string(arg(entry, "endpoint")));
                answer.insert("method".into(), string(arg(entry, "method")));
                let (path, query) = super::path_and_query(arg(entry, "path"));
                answer.insert("path".into(), string(path));
                if let Some(query) = query {
                    let query = query.into_iter().map(|(k, v)| (k, string(&v))).collect();
                    answer.insert("query".into(), toml::Value::Table(query));
                }
                match (response, failed) {
                    (_, Some(why)) => {
                        answer.insert("error".into(), string(&why));
                    }
                    (Some(response), None) => {
                        answer.insert(
                            "status".into(),
                            toml::Value::Integer(i64::from(response.status)),
                        );
                        answer.insert(
                            "body".into(),
                            string(&String::from_utf8_lossy(&response.body)),
                        );
                    }
                    (None, None) => {}
                }
                http.push(toml::Value::Table(answer));
            }
            // A flag read, or a flag set (a dry run shows the value it finds).
            ("flags.get", _) | ("flags.set", _) => {
                let name = arg(entry, "name");
                if flags.contains_key(name)
                    || unset.contains(&string(name))
                    || error_text(&entry.result).is_some()
                {
                    continue;
                }
                match ok.and_then(Json::as_str) {
                    Some(value) => {
                        flags.insert(name.to_owned(), string(value));
                    }
                    None => unset.push(string(name)),
                }
            }
            _ => {}
        }
    }
    if !db.is_empty() {
        doc.insert("db".into(), toml::Value::Array(db));
    }
    if !rpc.is_empty() {
        doc.insert("rpc".into(), toml::Value::Array(rpc));
    }
    if !http.is_empty() {
        doc.insert("http".into(), toml::Value::Array(http));
    }
    if !flags.is_empty() {
        doc.insert("flags".into(), toml::Value::Table(flags));
    }
    if !unset.is_empty() {
        doc.insert("unset_flags".into(), toml::Value::Array(unset));
    }
    if !approvals.is_empty() {
        doc.insert("approvals".into(), toml::Value::Array(approvals));
    }
    if !failing.is_empty() {
        let mut pager = toml::Table::new();
        pager.insert("fail".into(), toml::Value::Array(failing));
        doc.insert("pager".into(), toml::Value::Table(pager));
    }
    doc.insert(
        "expect".into(),
        toml::Value::Table(expect_from(
            &recording.outcome,
            &recording.steps,
            &recording.journal,
        )),
    );
    // Sections in reading order: what the scenario is, the alert, the
    // world, then what is expected.
    let mut text = String::new();
    let mut head = toml::Table::new();
    for key in ["description", "playbook", "mode", "now", "unset_flags"] {
        if let Some(v) = doc.remove(key) {
            head.insert(key.into(), v);
        }
    }
    for key in [
        "",
        "alert",
        "flags",
        "db",
        "rpc",
        "http",
        "approvals",
        "pager",
        "expect",
    ] {
        let section = if key.is_empty() {
            std::mem::take(&mut head)
        } else {
            let Some(v) = doc.remove(key) else { continue };
            let mut t = toml::Table::new();
            t.insert(key.into(), v);
            t
        };
        text.push_str(&toml::to_string(&section).unwrap_or_default());
        text.push('\n');
    }
    text.trim_end().to_owned() + "\n"
}

/// What the approvers decided on a live write (`approve`, `deny` or
/// `timeout`), with what its gate required of them; `None` where no
/// approver was asked: a write its gate passes on its own, or one its
/// policy or a guardrail denies. Without the playbook's gates, a denial is
/// an approver's only when its text says so.
fn approvers_decided(
    entry: &Entry,
    gates: Option<&crate::gate::Gates>,
) -> Option<(&'static str, crate::gate::Requirement)> {
    let denial = error_text(&entry.result).unwrap_or_default();
    let requirement = match gates {
        Some(gates) => {
            let guarded = crate::guard::guarded(&entry.guard);
            let (policy, requirement) =
                gates.effective(&entry.name(), target_of(entry), &entry.finer, &guarded);
            if policy != crate::gate::Policy::Approve {
                return None;
            }
            requirement
        }
        None if denial.is_empty() || denial.contains("denied by ") => {
            crate::gate::Requirement::default()
        }
        None => return None,
    };
    let decision = match entry.gate {
        Decision::Approved => "approve",
        Decision::Denied if denial.contains("denied by timeout") => "timeout",
        Decision::Denied if denial.contains("denied by ") => "deny",
        _ => return None,
    };
    Some((decision, requirement))
}

/// What a write acts on, as its gate key and approval name it.
fn target_of(entry: &Entry) -> &str {
    if entry.name() == "runbook.confirm" {
        return "confirm";
    }
    ["name", "conn", "endpoint", "target", "channel"]
        .iter()
        .find_map(|key| entry.args.get(*key).and_then(Json::as_str))
        .unwrap_or("")
}

fn alert_table(recording: &Recording) -> toml::Table {
    let alert = &recording.alert;
    let mut t = toml::Table::new();
    t.insert("name".into(), string(&alert.name));
    if alert.status == AlertStatus::Resolved {
        t.insert("resolved".into(), toml::Value::Boolean(true));
    }
    let pairs = |list: &[(String, String)], skip: &str| {
        toml::Value::Table(
            list.iter()
                .filter(|(k, _)| k != skip)
                .map(|(k, v)| (k.clone(), string(v)))
                .collect(),
        )
    };
    t.insert("labels".into(), pairs(&alert.labels, "alertname"));
    t.insert("annotations".into(), pairs(&alert.annotations, ""));
    if let Some(at) = &alert.starts_at {
        t.insert("starts_at".into(), string(at));
    }
    if let Some(f) = &alert.fingerprint {
        t.insert("fingerprint".into(), string(f));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::{Alert, WitError};

    fn failed_read(seq: u64, name: &str, args: Json) -> Entry {
        let error = WitError::Backend("connection refused".into());
        let result = serde_json::json!({ "err": serde_json::to_value(error).unwrap() });
        Entry::example(seq, name, Effect::Read, Decision::Auto, args, result)
    }

    fn recording(mode: crate::gate::Mode, journal: Vec<Entry>) -> Recording {
        Recording {
            stepgate_recording: crate::recording::FORMAT,
            run_id: "r1".into(),
            playbook: "p".into(),
            mode,
            step_mode: false,
            alert: Alert {
                name: "A".into(),
                status: AlertStatus::Firing,
                labels: Vec::new(),
                annotations: Vec::new(),
                starts_at: None,
                fingerprint: None,
            },
            outcome: serde_json::json!({}),
            steps: Vec::new(),
            journal,
        }
    }

    /// A write approved under a gate of quorum two, of one group, becomes
    /// two approvals by distinct approvers of that group (the scenario
    /// decides as the server did); a denial stays one approver's.
    #[test]
    fn an_approved_write_takes_as_many_approvers_as_its_gate() {
        let gate = crate::gate::GateRule {
            quorum: Some(2),
            groups: vec!["admins".into()],
            ..crate::gate::GateRule::bare(crate::gate::Policy::Approve)
        };
        let gates = crate::gate::Gates::from_config(&std::collections::BTreeMap::from([
            ("default".to_owned(), gate),
            (
                "flags.set:FROZEN".to_owned(),
                crate::gate::GateRule::bare(crate::gate::Policy::Deny),
            ),
        ]))
        .unwrap();
        let write = |seq, flag: &str, gate, denial: Option<&str>| {
            let args = serde_json::json!({ "name": flag, "value": "1", "reason": "r" });
            let result = match denial {
                Some(why) => serde_json::json!({
                    "err": serde_json::to_value(WitError::Denied(why.into())).unwrap()
                }),
                None => serde_json::json!({ "ok": null }),
            };
            let mut entry = Entry::example(seq, "flags.set", Effect::Write, gate, args, result);
            entry.target = Some(flag.into());
            entry
        };
        // Refused with no approver asked: by its gate's policy, and by a
        // guardrail. Neither is an approver's decision to replay.
        let by_policy = write(3, "FROZEN", Decision::Denied, Some("policy denies"));
        let mut by_guardrail = write(4, "KILL", Decision::Denied, Some("guardrail"));
        by_guardrail.guard = vec![crate::gate::Finding {
            rule: "too-many".into(),
            over: crate::gate::Over::Deny,
            quorum: None,
            why: "3 writes in 1m, limit 2".into(),
        }];
        let rec = recording(
            crate::gate::Mode::Live,
            vec![
                write(1, "KILL", Decision::Approved, None),
                write(2, "KILL", Decision::Denied, Some("denied by bob: not now")),
                by_policy,
                by_guardrail,
            ],
        );
        let doc: toml::Table = scenario_of(&rec, Some(&gates)).parse().unwrap();
        let approvals: Vec<crate::scenario::ApprovalAnswer> = doc["approvals"]
            .clone()
            .try_into()
            .unwrap_or_else(|e| panic!("{doc}: {e}"));
        use crate::scenario::ApprovalDecision::{Approve, Deny};
        let decided: Vec<_> = approvals
            .iter()
            .map(|a| (a.by.as_str(), a.decision, a.groups.as_slice()))
            .collect();
        let admins = ["admins".to_owned()];
        assert_eq!(
            decided,
            [
                ("approver-1", Approve, &admins[..]),
                ("approver-2", Approve, &admins[..]),
                ("an approver", Deny, &admins[..]),
            ]
        );
    }

    /// A read that failed at its backend becomes an `error` answer that,
    /// played back, fails with the same text: `backend: connection
    /// refused`, not `backend: backend: connection refused`.
    #[test]
    fn a_backend_error_is_written_as_its_message_alone() {
        let recording = recording(
            crate::gate::Mode::DryRun,
            vec![
                failed_read(
                    1,
                    "db.query",
                    serde_json::json!({ "conn": "ledger", "sql": "SELECT 1", "params": [] }),
                ),
                failed_read(
                    2,
                    "rpc.call",
                    serde_json::json!({ "endpoint": "node", "method": "eth_blockNumber", "params": "[]" }),
                ),
                failed_read(
                    3,
                    "rpc.http",
                    serde_json::json!({ "endpoint": "queue", "method": "GET", "path": "/jobs?state=failed&q=a%20b", "headers": [], "body": "" }),
                ),
            ],
        );
        let doc: toml::Table = scenario_of(&recording, None).parse().unwrap();
        // An HTTP read's query string is written decoded, as `query`.
        let http = &doc["http"][0];
        assert_eq!(http["path"].as_str(), Some("/jobs"), "{doc}");
        assert_eq!(http["query"]["state"].as_str(), Some("failed"), "{doc}");
        assert_eq!(http["query"]["q"].as_str(), Some("a b"), "{doc}");
        for section in ["db", "rpc", "http"] {
            assert_eq!(
                doc[section][0]["error"].as_str(),
                Some("connection refused"),
                "{section}: {doc}"
            );
        }
    }
}
