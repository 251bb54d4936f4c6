//! What a scenario run decided, against what its file expects: the
//! outcome (its summary, checklist and fields, or the error it ended
//! with), the steps and the ordered writes. Differences are
//! lines a human reads in a CI log (`-` expected, `+` got); the expected
//! section can be written from a run (`--update`, `scenario from-journal`).

use serde_json::Value as Json;

use super::values::{json_to_toml, toml_to_json};
use super::{Expect, ListMatch, TextMatch};
use crate::gate::Decision;
use crate::journal::Entry;
use crate::report::end_json;
use crate::run::RunReport;

/// The writes a run planned or made: `interface.op`, the arguments
/// journaled, and the gate decision unless it was a dry run.
fn writes(journal: &[Entry]) -> Vec<(String, Json, Option<String>)> {
    journal
        .iter()
        .filter(|e| e.is_write())
        .map(|e| {
            let gate = (e.gate != Decision::DryRun).then(|| e.gate.as_str().to_owned());
            (e.name(), e.args.clone(), gate)
        })
        .collect()
}

fn write_line(seq: usize, call: &str, args: &Json, gate: Option<&str>) -> String {
    // Keys sorted: a write is the same whatever order its arguments'
    // keys were put in.
    let args = crate::canonical::json_text(args);
    match gate {
        Some(gate) => format!("#{} {call} {args} [{gate}]", seq + 1),
        None => format!("#{} {call} {args}", seq + 1),
    }
}

/// Lines that differ, `-` expected then `+` got, position by position.
fn list_diff(title: &str, expected: &[String], got: &[String], out: &mut Vec<String>) {
    if expected == got {
        return;
    }
    out.push(format!("{title}:"));
    for i in 0..expected.len().max(got.len()) {
        match (expected.get(i), got.get(i)) {
            (Some(e), Some(g)) if e == g => out.push(format!("      {e}")),
            (e, g) => {
                if let Some(e) = e {
                    out.push(format!("    - {e}"));
                }
                if let Some(g) = g {
                    out.push(format!("    + {g}"));
                }
            }
        }
    }
}

/// How the run differs from `expect`; empty if it does not.
pub fn differences(expect: &Expect, report: &RunReport) -> Vec<String> {
    let mut out = Vec::new();
    let outcome = end_json(&report.end);
    let status = outcome["status"].as_str().unwrap_or("");
    if let Some(expected) = expect.status.as_deref().filter(|e| *e != status) {
        let why = outcome
            .get("error")
            .and_then(Json::as_str)
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        out.push(format!("status: - {expected:?}  + {status:?}{why}"));
    }
    let severity = outcome.get("severity").and_then(Json::as_str);
    if expect.severity.as_deref() != severity {
        out.push(format!(
            "severity: - {:?}  + {:?}",
            expect.severity.as_deref().unwrap_or("none"),
            severity.unwrap_or("none")
        ));
    }
    if let Some(summary) = &expect.summary {
        let got = outcome.get("summary").and_then(Json::as_str).unwrap_or("");
        match summary {
            TextMatch::Exact(summary) if got != summary => {
                out.push(format!("summary:\n  - {summary}\n  + {got}"));
            }
            TextMatch::Contains { contains } if !summary.matches(got) => {
                out.push(format!("summary does not contain {contains:?}:\n  + {got}"));
            }
            _ => {}
        }
    }
    if let Some(error) = &expect.error {
        let got = outcome.get("error").and_then(Json::as_str).unwrap_or("");
        if got != error {
            out.push(format!("error:\n  - {error}\n  + {got}"));
        }
    }
    if let Some(checklist) = &expect.checklist {
        let got: Vec<String> = outcome
            .get("checklist")
            .and_then(Json::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        match checklist {
            ListMatch::Exact(checklist) => list_diff("checklist", checklist, &got, &mut out),
            ListMatch::Contains { contains } => {
                for wanted in contains {
                    if !got.iter().any(|item| item.contains(wanted.as_str())) {
                        out.push(format!(
                            "checklist: no item contains {wanted:?}; it has:\n{}",
                            got.iter()
                                .map(|item| format!("  + {item}"))
                                .collect::<Vec<_>>()
                                .join("\n")
                        ));
                    }
                }
            }
        }
    }
    if let Some(fields) = &expect.fields {
        let got = outcome
            .get("fields")
            .and_then(Json::as_object)
            .cloned()
            .unwrap_or_default();
        let expected: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{k} = {}", toml_to_json(v)))
            .collect();
        let mut got: Vec<String> = got.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        got.sort();
        list_diff("fields", &expected, &got, &mut out);
    }
    if let Some(steps) = &expect.steps {
        list_diff("steps", steps, &report.steps, &mut out);
    }
    let Some(expected_writes) = &expect.writes else {
        return out;
    };
    let actual = writes(&report.journal);
    let expected: Vec<String> = expected_writes
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let line = write_line(i, &w.call, &toml_to_json(&w.args), w.gate.as_deref());
            with_live(line, w.live.as_deref())
        })
        .collect();
    // The gate, and what it would be live, are compared where the
    // expectation names them.
    let planned: Vec<&Entry> = report.journal.iter().filter(|e| e.is_write()).collect();
    let got: Vec<String> = actual
        .iter()
        .enumerate()
        .map(|(i, (call, args, gate))| {
            let wanted = expected_writes.get(i);
            let named = wanted.is_some_and(|w| w.gate.is_some());
            let line = write_line(i, call, args, gate.as_deref().filter(|_| named));
            let live = planned
                .get(i)
                .and_then(|e| e.live.as_ref())
                .map(ToString::to_string)
                .filter(|_| wanted.is_some_and(|w| w.live.is_some()));
            with_live(line, live.as_deref())
        })
        .collect();
    list_diff("writes", &expected, &got, &mut out);
    out
}

fn with_live(line: String, live: Option<&str>) -> String {
    match live {
        Some(live) => format!("{line} (live: {live})"),
        None => line,
    }
}

/// What a scenario's run decided, for `stepgate test --show`: its status,
/// severity and summary, the checklist, and every write with its gate.
/// Text from the playbook is shown inert (one line each, no escapes).
pub fn shown(report: &RunReport) -> Vec<String> {
    let outcome = end_json(&report.end);
    let text = |key: &str| outcome.get(key).and_then(Json::as_str).unwrap_or("");
    let mut head = vec![text("status").to_owned()];
    head.extend(
        outcome
            .get("severity")
            .and_then(Json::as_str)
            .map(str::to_owned),
    );
    for key in ["summary", "error"] {
        if !text(key).is_empty() {
            head.push(crate::inert::line(text(key)).into_owned());
        }
    }
    let mut lines = vec![head.join(" · ")];
    let checklist = outcome.get("checklist").and_then(Json::as_array);
    for item in checklist.into_iter().flatten().filter_map(Json::as_str) {
        lines.push(format!("[ ] {}", crate::inert::line(item)));
    }
    let planned = report.journal.iter().filter(|e| e.is_write());
    for (i, ((call, args, gate), entry)) in writes(&report.journal).iter().zip(planned).enumerate()
    {
        let gate = match (gate, &entry.live) {
            (Some(gate), _) => gate.clone(),
            (None, Some(live)) => format!("dry-run; live: {live}"),
            (None, None) => "dry-run".to_owned(),
        };
        lines.push(crate::inert::line(&write_line(i, call, args, Some(&gate))).into_owned());
    }
    lines
}

/// The `[expect]` table that says what `report` decided.
pub fn expect_of(report: &RunReport) -> toml::Table {
    expect_from(&end_json(&report.end), &report.steps, &report.journal)
}

/// The `[expect]` table of a run that ended with `outcome` (as
/// `end_json` gives it), went through `steps` and journaled `journal`.
pub fn expect_from(outcome: &Json, steps: &[String], journal: &[Entry]) -> toml::Table {
    let mut expect = toml::Table::new();
    expect.insert(
        "status".into(),
        toml::Value::String(outcome["status"].as_str().unwrap_or("").to_owned()),
    );
    if let Some(severity) = outcome.get("severity").and_then(Json::as_str) {
        expect.insert("severity".into(), toml::Value::String(severity.to_owned()));
    }
    if let Some(summary) = outcome.get("summary").and_then(Json::as_str) {
        expect.insert("summary".into(), toml::Value::String(summary.to_owned()));
    }
    if let Some(error) = outcome.get("error").and_then(Json::as_str) {
        expect.insert("error".into(), toml::Value::String(error.to_owned()));
    }
    if let Some(checklist) = outcome.get("checklist").and_then(Json::as_array) {
        expect.insert(
            "checklist".into(),
            toml::Value::Array(
                checklist
                    .iter()
                    .filter_map(|i| i.as_str().map(|s| toml::Value::String(s.to_owned())))
                    .collect(),
            ),
        );
    }
    if let Some(fields) = outcome.get("fields") {
        expect.insert("fields".into(), json_to_toml(fields));
    }
    expect.insert(
        "steps".into(),
        toml::Value::Array(steps.iter().cloned().map(toml::Value::String).collect()),
    );
    let writes = writes(journal)
        .into_iter()
        .map(|(call, args, gate)| {
            let mut w = toml::Table::new();
            w.insert("call".into(), toml::Value::String(call));
            w.insert("args".into(), json_to_toml(&args));
            if let Some(gate) = gate {
                w.insert("gate".into(), toml::Value::String(gate));
            }
            toml::Value::Table(w)
        })
        .collect();
    expect.insert("writes".into(), toml::Value::Array(writes));
    expect
}

/// `text` (a scenario file) with its `[expect]` section replaced by
/// `expect`; everything else, comments included, as it was.
pub fn with_expect(text: &str, expect: &toml::Table) -> Result<String, String> {
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e| format!("{e}"))?;
    let mut wrapper = toml::Table::new();
    wrapper.insert("expect".into(), toml::Value::Table(expect.clone()));
    let rendered = toml::to_string(&wrapper).map_err(|e| e.to_string())?;
    let fresh: toml_edit::DocumentMut = rendered.parse().map_err(|e| format!("{e}"))?;
    let mut item = fresh
        .get("expect")
        .cloned()
        .ok_or("the rendered expect section is empty")?;
    doc.remove("expect");
    // The new section goes after everything else, in its own order.
    let mut next = max_position(doc.as_table()) + 1;
    if let toml_edit::Item::Table(table) = &mut item {
        renumber(table, &mut next);
        table.decor_mut().set_prefix("\n");
    }
    doc.insert("expect", item);
    Ok(doc.to_string())
}

fn max_position(table: &toml_edit::Table) -> isize {
    let mut max = table.position().unwrap_or(0);
    for (_, item) in table.iter() {
        match item {
            toml_edit::Item::Table(t) => max = max.max(max_position(t)),
            toml_edit::Item::ArrayOfTables(a) => {
                for t in a.iter() {
                    max = max.max(max_position(t));
                }
            }
            _ => {}
        }
    }
    max
}

fn renumber(table: &mut toml_edit::Table, next: &mut isize) {
    table.set_position(Some(*next));
    *next += 1;
    for (_, item) in table.iter_mut() {
        match item {
            toml_edit::Item::Table(t) => renumber(t, next),
            toml_edit::Item::ArrayOfTables(a) => {
                for t in a.iter_mut() {
                    renumber(t, next);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::Outcome;
    use crate::gate::Mode;
    use crate::run::RunEnd;

    fn report() -> RunReport {
        RunReport {
            run_id: "r".into(),
            playbook: "p".into(),
            mode: Mode::DryRun,
            end: RunEnd::Done(Outcome {
                summary: "Held 500 over 100: custodied mode would be paused (dry run)".into(),
                severity: None,
                fields: Vec::new(),
                checklist: vec![
                    "Rotate the MPC signer".into(),
                    "Write the postmortem".into(),
                ],
            }),
            journal: vec![Entry::example(
                1,
                "flags.set",
                crate::gate::Effect::Write,
                Decision::DryRun,
                serde_json::json!({ "name": "KILL", "value": "1" }),
                serde_json::json!({ "ok": null }),
            )],
            steps: Vec::new(),
        }
    }

    fn differences_for(expect: &str) -> Vec<String> {
        let expect: Expect = toml::from_str(expect).unwrap_or_else(|e| panic!("{expect}: {e}"));
        differences(&expect, &report())
    }

    /// What `[expect]` leaves out is not compared; a summary or checklist
    /// is compared exactly, or by what it must contain.
    #[test]
    fn expectations_compare_what_they_give() {
        assert_eq!(differences_for(""), Vec::<String>::new());
        assert_eq!(
            differences_for(
                r#"
summary = { contains = "custodied mode would be paused" }
checklist = { contains = ["postmortem", "MPC"] }
"#
            ),
            Vec::<String>::new()
        );
        let wrong = differences_for(
            r#"
status = "failed"
summary = { contains = "was paused" }
checklist = { contains = ["customers"] }
writes = []
"#,
        );
        assert_eq!(wrong.len(), 5, "{wrong:#?}");
        assert!(
            wrong[0].starts_with("status: - \"failed\"  + \"done\""),
            "{wrong:#?}"
        );
        assert!(
            wrong[1].contains("does not contain \"was paused\""),
            "{wrong:#?}"
        );
        assert!(
            wrong[2].contains("no item contains \"customers\""),
            "{wrong:#?}"
        );
        assert_eq!(wrong[3], "writes:");
        assert!(wrong[4].starts_with("    + #1 flags.set"), "{wrong:#?}");
        let exact = differences_for(
            r#"
status = "done"
summary = "Held 500 over 100: custodied mode would be paused (dry run)"
checklist = ["Rotate the MPC signer"]
"#,
        );
        assert_eq!(
            exact,
            [
                "checklist:",
                "      Rotate the MPC signer",
                "    + Write the postmortem"
            ]
        );
    }

    /// A dry-run write's `live` is compared where the expectation gives it.
    #[test]
    fn what_a_write_would_meet_live_is_compared_when_given() {
        let mut planned = report();
        planned.journal[0].live = Some(crate::gate::LiveGate::of(
            crate::gate::Policy::Approve,
            &crate::gate::Requirement {
                quorum: 2,
                ..Default::default()
            },
        ));
        let expect = |live: &str| -> Expect {
            toml::from_str(&format!(
                r#"writes = [{{ call = "flags.set", args = {{ name = "KILL", value = "1" }}, live = "{live}" }}]"#
            ))
            .unwrap()
        };
        assert!(differences(&expect("approve (quorum 2)"), &planned).is_empty());
        let wrong = differences(&expect("auto"), &planned);
        assert!(
            wrong
                .iter()
                .any(|l| l.contains("(live: approve (quorum 2))")),
            "{wrong:#?}"
        );
    }

    #[test]
    fn show_gives_the_outcome_checklist_and_writes() {
        assert_eq!(
            shown(&report()),
            [
                "done · Held 500 over 100: custodied mode would be paused (dry run)",
                "[ ] Rotate the MPC signer",
                "[ ] Write the postmortem",
                r#"#1 flags.set {"name":"KILL","value":"1"} [dry-run]"#,
            ]
        );
    }
}
