//! What a finished run reports: exit code, the `--json` document, and the
//! one-line descriptions of calls that the terminal view uses.

use serde_json::{Value as Json, json};

use crate::bindings::WitError;
use crate::ending::{RunEnd, RunReport, Stopped};
use crate::entry::Entry;
use crate::gate::Decision;

/// The exit codes, where callers have always found them.
pub use crate::exit;

impl RunReport {
    pub fn exit_code(&self) -> u8 {
        match &self.end {
            RunEnd::Done(_) => exit::DONE,
            RunEnd::Failed(WitError::Denied(_)) => exit::DENIED,
            RunEnd::Failed(_) if self.journal.iter().any(|e| e.gate == Decision::Denied) => {
                exit::DENIED
            }
            RunEnd::Failed(_) | RunEnd::Crashed(_) => exit::PLAYBOOK_ERROR,
            RunEnd::Limit(_) => exit::LIMIT,
            RunEnd::Stopped(
                Stopped::Parked { .. } | Stopped::AtStep { .. } | Stopped::HostStopping { .. },
            ) => exit::PARKED,
            RunEnd::Stopped(_) => exit::STOPPED,
        }
    }

    /// The writes the run made, or in a dry run would have made.
    pub fn writes(&self) -> impl Iterator<Item = &Entry> {
        self.journal.iter().filter(|e| e.is_write())
    }

    /// The `--json` document.
    pub fn to_json(&self) -> Json {
        json!({
            "run_id": self.run_id,
            "playbook": self.playbook,
            "mode": self.mode.as_str(),
            "outcome": end_json(&self.end),
            "steps": self.steps,
            "journal": self.journal,
        })
    }
}

/// How a run ended, as JSON (`status` is `done`, `failed`, `limit` or
/// `crashed`).
pub fn end_json(end: &RunEnd) -> Json {
    match end {
        RunEnd::Done(outcome) => json!({
            "status": "done",
            "summary": outcome.summary,
            "severity": outcome.severity,
            "fields": outcome.fields.iter().map(|(k, v)| (k.clone(), v.to_json())).collect::<serde_json::Map<_, _>>(),
            "checklist": outcome.checklist,
        }),
        RunEnd::Failed(error) => {
            json!({ "status": "failed", "error": error_text(error), "kind": error_kind(error) })
        }
        RunEnd::Limit(limit) => json!({ "status": "limit", "error": limit.to_string() }),
        RunEnd::Crashed(message) => json!({ "status": "crashed", "error": message }),
        RunEnd::Stopped(stopped @ Stopped::InDoubt { .. }) => {
            json!({ "status": "in-doubt", "error": stopped.to_string() })
        }
        RunEnd::Stopped(stopped @ Stopped::Diverged { .. }) => {
            json!({ "status": "diverged", "error": stopped.to_string() })
        }
        RunEnd::Stopped(
            stopped @ (Stopped::Parked { .. }
            | Stopped::AtStep { .. }
            | Stopped::HostStopping { .. }),
        ) => {
            json!({ "status": "parked", "error": stopped.to_string() })
        }
        RunEnd::Stopped(stopped @ Stopped::Aborted { .. }) => {
            json!({ "status": "aborted", "error": stopped.to_string() })
        }
        RunEnd::Stopped(stopped @ Stopped::Stale { .. }) => {
            json!({ "status": "stale", "error": stopped.to_string() })
        }
    }
}

pub fn error_kind(error: &WitError) -> &'static str {
    match error {
        WitError::NotGranted(_) => "not-granted",
        WitError::Denied(_) => "denied",
        WitError::Invalid(_) => "invalid",
        WitError::Timeout(_) => "timeout",
        WitError::Backend(_) => "backend",
        WitError::Failed(_) => "failed",
    }
}

pub fn error_text(error: &WitError) -> String {
    match error {
        WitError::NotGranted(m)
        | WitError::Denied(m)
        | WitError::Invalid(m)
        | WitError::Timeout(m)
        | WitError::Backend(m)
        | WitError::Failed(m) => format!("{}: {m}", error_kind(error)),
    }
}

fn cut(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut s: String = one_line.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

fn arg<'a>(entry: &'a Entry, key: &str) -> &'a str {
    entry.args.get(key).and_then(Json::as_str).unwrap_or("")
}

/// What the call did, in one line: `(what it asked, what came back)`.
/// What a run has read and decided so far, one line a call (the last 40),
/// for an operator deciding whether it goes on (step mode).
pub fn so_far(entries: &[Entry]) -> String {
    const SHOWN: usize = 40;
    let skipped = entries.len().saturating_sub(SHOWN);
    let mut lines = Vec::new();
    if skipped > 0 {
        lines.push(format!("({skipped} earlier calls not shown)"));
    }
    for entry in &entries[skipped..] {
        let (asked, answer) = describe_call(entry);
        lines.push(format!(
            "#{} {} {asked} → {answer} [{}]",
            entry.seq,
            entry.name(),
            entry.gate.as_str()
        ));
    }
    if lines.is_empty() {
        "no calls yet".to_owned()
    } else {
        lines.join("\n")
    }
}

pub fn describe_call(entry: &Entry) -> (String, String) {
    let asked = match entry.name().as_str() {
        "db.query" | "db.execute" => {
            format!("{}: {}", arg(entry, "conn"), cut(arg(entry, "sql"), 70))
        }
        "rpc.call" => format!(
            "{} {} {}",
            arg(entry, "endpoint"),
            arg(entry, "method"),
            cut(arg(entry, "params"), 50)
        ),
        "rpc.http" => format!(
            "{} {} {}",
            arg(entry, "endpoint"),
            arg(entry, "method"),
            cut(arg(entry, "path"), 60)
        ),
        "flags.get" => arg(entry, "name").to_owned(),
        "flags.set" => format!("{} = {:?}", arg(entry, "name"), arg(entry, "value")),
        "pager.page" => format!(
            "{} [{}] {}",
            arg(entry, "target"),
            arg(entry, "severity"),
            cut(arg(entry, "summary"), 60)
        ),
        "pager.notify" => format!(
            "#{}: {}",
            arg(entry, "channel"),
            cut(arg(entry, "message"), 60)
        ),
        "runbook.sleep" => format!(
            "{} ms",
            entry.args.get("millis").cloned().unwrap_or(Json::Null)
        ),
        "runbook.confirm" => cut(arg(entry, "question"), 70),
        "runbook.step" => format!("go on into `{}`", cut(arg(entry, "name"), 60)),
        _ => cut(&entry.args.to_string(), 70),
    };
    let mut answer = match (entry.result.get("ok"), entry.result.get("err")) {
        (Some(ok), _) => describe_ok(entry, ok),
        (_, Some(err)) => format!("ERROR {}", cut(&describe_err(err), 120)),
        _ => String::new(),
    };
    // Say which URL answered once it is not the first: a fail-over is news.
    if let Some(via) = entry.via.as_deref().filter(|v| !v.starts_with("url #1 ")) {
        answer.push_str(&format!(" (via {via})"));
    }
    // Every part came from a playbook or a backend: one inert line each.
    (
        crate::inert::line(&asked).into_owned(),
        crate::inert::line(&answer).into_owned(),
    )
}

fn describe_ok(entry: &Entry, ok: &Json) -> String {
    let dry = entry.gate == Decision::DryRun;
    match entry.name().as_str() {
        "db.query" => {
            use crate::bindings::stepgate::playbook::db::Rows;
            match serde_json::from_value::<Rows>(ok.clone()) {
                // One row: show it, it is usually the figure a decision
                // rests on (a sum, a count).
                Ok(rows) if rows.rows.len() == 1 => {
                    let values = rows.columns.iter().zip(&rows.rows[0]).map(|(c, v)| {
                        let shown = match v.to_json() {
                            Json::String(s) => s,
                            other => other.to_string(),
                        };
                        format!("{c}={shown}")
                    });
                    cut(
                        &format!("1 row: {}", values.collect::<Vec<_>>().join(", ")),
                        80,
                    )
                }
                Ok(rows) => format!("{} rows", rows.rows.len()),
                Err(_) => "rows".to_owned(),
            }
        }
        "db.execute" => {
            let n = ok.as_u64().unwrap_or(0);
            if dry {
                format!("would change {n} rows (rolled back)")
            } else {
                format!("changed {n} rows")
            }
        }
        "flags.set" => {
            let was = ok.as_str().map_or("unset".to_owned(), |v| format!("{v:?}"));
            if dry {
                format!("not set (dry run); now {was}")
            } else {
                format!("set; was {was}")
            }
        }
        "flags.get" => ok.as_str().map_or("unset".to_owned(), |v| format!("{v:?}")),
        "pager.page" => ok.as_str().unwrap_or("").to_owned(),
        "pager.notify" if dry => "not sent (dry run)".to_owned(),
        "rpc.call" => cut(ok.as_str().unwrap_or(""), 60),
        "rpc.http" if dry => "not sent (dry run)".to_owned(),
        "rpc.http" => format!(
            "HTTP {}",
            ok.get("status").and_then(Json::as_u64).unwrap_or(0)
        ),
        _ if ok.is_null() => "ok".to_owned(),
        _ => cut(&ok.to_string(), 60),
    }
}

fn describe_err(err: &Json) -> String {
    match err.as_object().and_then(|o| o.iter().next()) {
        Some((kind, message)) => format!(
            "{}: {}",
            kind.to_lowercase().replace('_', "-"),
            message.as_str().unwrap_or("")
        ),
        None => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::Effect;

    fn rpc_entry(via: Option<&str>) -> Entry {
        Entry {
            seq: 3,
            step: None,
            interface: "rpc".into(),
            op: "call".into(),
            args: json!({ "endpoint": "base", "method": "eth_blockNumber", "params": "[]" }),
            effect: Effect::Read,
            gate: Decision::Auto,
            result: json!({ "ok": "\"0x10\"" }),
            via: via.map(str::to_owned),
            idempotency_key: None,
            rechecked: None,
            target: None,
            finer: Vec::new(),
            guard: Vec::new(),
            live: None,
            duration_us: 10,
        }
    }

    #[test]
    fn a_fail_over_shows_which_url_answered() {
        let (asked, answer) = describe_call(&rpc_entry(Some("url #2 (10.0.0.2:8545)")));
        assert_eq!(asked, "base eth_blockNumber []");
        assert_eq!(answer, "\"0x10\" (via url #2 (10.0.0.2:8545))");
        let (_, answer) = describe_call(&rpc_entry(Some("url #1 (10.0.0.1:8545)")));
        assert_eq!(answer, "\"0x10\"");
    }
}
