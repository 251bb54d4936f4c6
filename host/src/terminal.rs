//! The terminal face of a run: live progress on stderr, the approval
//! prompt, and the closing summary on stdout.
//!
//! Every value here came from a playbook, an alert or a backend: each is
//! shown through [`inert::line`] (one line, no control or bidi character),
//! and the streams themselves through [`inert::Writer`].

use std::io::{BufRead, Write};

use crate::gate::{Approver, Decision, Mode, WriteRequest};
use crate::inert::{self, line};
use crate::journal::{Entry, Progress};
use crate::report::{describe_call, error_text};
use crate::run::{RunEnd, RunReport};

/// Prints each step and call as it happens.
pub struct TerminalProgress<W: Write + Send + Sync> {
    out: inert::Writer<W>,
}

impl<W: Write + Send + Sync> TerminalProgress<W> {
    pub fn new(out: W) -> Self {
        TerminalProgress {
            out: inert::Writer::new(out),
        }
    }
}

impl<W: Write + Send + Sync> Progress for TerminalProgress<W> {
    fn step(&mut self, name: &str) {
        let _ = writeln!(self.out, "▶ {}", line(name));
    }

    fn log(&mut self, level: &str, message: &str) {
        let _ = writeln!(self.out, "    {level:<5} {}", line(message));
    }

    fn call(&mut self, entry: &Entry) {
        let _ = writeln!(self.out, "{}", call_line(entry));
        let _ = write!(self.out, "{}", guard_lines(entry));
    }
}

/// `  #3 db.query      read   auto         0.4ms  plaza: SELECT … → 1 row`
pub fn call_line(entry: &Entry) -> String {
    let (asked, answer) = describe_call(entry);
    let effect = if entry.is_write() { "WRITE" } else { "read" };
    format!(
        "  #{:<3} {:<16} {:<5}  {:<11} {:>8}  {} → {}",
        entry.seq,
        line(&entry.name()),
        effect,
        entry.gate.as_str(),
        format_duration(entry.duration_us),
        line(&asked),
        line(&answer),
    )
}

fn format_duration(us: u64) -> String {
    if us < 1000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        format!("{:.2}s", us as f64 / 1_000_000.0)
    }
}

/// The closing summary: outcome, then every write made or planned.
pub fn summary(report: &RunReport) -> String {
    let mut out = String::new();
    match &report.end {
        RunEnd::Done(outcome) => {
            out.push_str(&format!(
                "Outcome: {}{}\n",
                outcome
                    .severity
                    .as_deref()
                    .map(|s| format!("{} — ", line(s)))
                    .unwrap_or_default(),
                line(&outcome.summary)
            ));
            for (name, value) in &outcome.fields {
                let shown = match value.to_json() {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                out.push_str(&format!("  {} = {}\n", line(name), line(&shown)));
            }
            if !outcome.checklist.is_empty() {
                out.push_str("Still to do by a human:\n");
                for item in &outcome.checklist {
                    out.push_str(&format!("  [ ] {}\n", line(item)));
                }
            }
        }
        RunEnd::Failed(error) => out.push_str(&format!(
            "The playbook gave up: {}\n",
            line(&error_text(error))
        )),
        RunEnd::Limit(limit) => {
            out.push_str(&format!("Run stopped: {}\n", line(&limit.to_string())))
        }
        RunEnd::Crashed(message) => {
            out.push_str(&format!("The playbook crashed: {}\n", line(message)))
        }
        RunEnd::Stopped(stopped) => out.push_str(&format!(
            "The run stopped: {}\n",
            line(&stopped.to_string())
        )),
    }
    let writes: Vec<&Entry> = report.writes().collect();
    let heading = match report.mode {
        Mode::DryRun => "Writes this run would make (dry run: none were made)",
        Mode::Live => "Writes",
    };
    if writes.is_empty() {
        out.push_str(&format!("{heading}: none\n"));
    } else {
        out.push_str(&format!("{heading}:\n"));
        for entry in writes {
            let (asked, _) = describe_call(entry);
            let done = match entry.gate {
                Decision::DryRun => "planned",
                Decision::Auto | Decision::Approved if entry.result.get("ok").is_some() => "DONE",
                Decision::Auto | Decision::Approved => "FAILED",
                Decision::Denied => "denied",
                Decision::NotGranted => "not granted",
                Decision::Invalid => "invalid",
            };
            let reason = entry
                .args
                .get("reason")
                .and_then(|r| r.as_str())
                .unwrap_or("");
            out.push_str(&format!(
                "  #{} {:<12} {} {}",
                entry.seq,
                done,
                line(&entry.name()),
                line(&asked)
            ));
            if !reason.is_empty() && entry.name() != "pager.page" && entry.name() != "pager.notify"
            {
                out.push_str(&format!(" (reason: {})", line(reason)));
            }
            out.push('\n');
            if let Some(live) = &entry.live {
                out.push_str(&format!("        live: {}\n", line(&live.to_string())));
            }
            out.push_str(&guard_lines(entry));
        }
    }
    out
}

/// The guardrails a write tripped, one `⚑` line each, indented under it;
/// for a simulated write, what the live run would meet.
fn guard_lines(entry: &Entry) -> String {
    let would = if entry.gate == Decision::DryRun {
        "live, "
    } else {
        ""
    };
    entry
        .guard
        .iter()
        .map(|finding| format!("        ⚑ {would}{}\n", line(&finding.to_string())))
        .collect()
}

/// Asks on the terminal: shows the exact write and waits for yes or no.
pub struct TtyApprover;

#[async_trait::async_trait]
impl Approver for TtyApprover {
    async fn decide(&self, request: &WriteRequest) -> Result<(), String> {
        let prompt = if request.op == crate::state::approvals::STEP_PAUSE {
            let so_far: Vec<String> = request
                .detail
                .lines()
                .map(|l| line(l).into_owned())
                .collect();
            format!(
                "\n  STEP MODE — next step: `{}`\n  so far:\n    {}\n  Go on? [y/N] ",
                line(&request.target),
                so_far.join("\n    ")
            )
        } else {
            format!(
                "\n  APPROVAL NEEDED — playbook `{}` wants to {} on `{}`\n    exact write: {}\n    reason: {}\n  Approve? [y/N] ",
                line(&request.playbook),
                line(&request.op),
                line(&request.target),
                line(&request.detail),
                line(&request.reason)
            )
        };
        let answer = tokio::task::spawn_blocking(move || {
            inert::print_err(format_args!("{prompt}"));
            let _ = std::io::stderr().flush();
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).map(|_| line)
        })
        .await
        .map_err(|e| format!("approval prompt failed: {e}"))?
        .map_err(|e| format!("cannot read the answer: {e}"))?;
        if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            Ok(())
        } else {
            Err("refused by the operator at the terminal".to_owned())
        }
    }
}
