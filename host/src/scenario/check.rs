//! What a scenario run decided, against what its file expects: the
//! outcome (its summary, checklist and fields, or the error it ended
//! with), the steps and the ordered writes. Differences are
//! lines a human reads in a CI log (`-` expected, `+` got); the expected
//! section can be written from a run (`--update`, `scenario from-journal`).

use serde_json::Value as Json;

use super::Expect;
use super::values::{json_to_toml, toml_to_json};
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
    if status != expect.status {
        let why = outcome
            .get("error")
            .and_then(Json::as_str)
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        out.push(format!("status: - {:?}  + {status:?}{why}", expect.status));
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
        if got != summary {
            out.push(format!("summary:\n  - {summary}\n  + {got}"));
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
        list_diff("checklist", checklist, &got, &mut out);
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
    let actual = writes(&report.journal);
    let expected: Vec<String> = expect
        .writes
        .iter()
        .enumerate()
        .map(|(i, w)| write_line(i, &w.call, &toml_to_json(&w.args), w.gate.as_deref()))
        .collect();
    // The gate is compared where the expectation names it.
    let got: Vec<String> = actual
        .iter()
        .enumerate()
        .map(|(i, (call, args, gate))| {
            let named = expect.writes.get(i).is_some_and(|w| w.gate.is_some());
            write_line(i, call, args, gate.as_deref().filter(|_| named))
        })
        .collect();
    list_diff("writes", &expected, &got, &mut out);
    out
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
