//! The console's pages, rendered from state-store records: the approvals
//! waiting, the runs, a run's timeline, the plan an approval rests on, and
//! a run's audit log. Pure functions from records to HTML; every outside
//! string is escaped by [`Html`] (see [`super::html`]). They decide
//! nothing: what a principal may do is the state store's answer.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value as Json;

use super::html::{Html, esc};
use crate::gate::Effect;
use crate::state::approvals::{ApprovalStatus, PendingApproval, RequestView, STEP_PAUSE};
use crate::state::audit::AuditRecord;
use crate::state::plans::RunPlan;
use crate::state::runs::{Phase, RunRecord, StoredEntry};

/// Milliseconds since the epoch as `2026-12-01 20:55:03 UTC`.
pub fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "?".to_owned())
}

/// How long ago `ms` was, roughly: `45 s`, `12 min`, `3 h`, `2 d`.
pub fn age(ms: i64, now: i64) -> String {
    let s = (now - ms).max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86400),
    }
}

fn status_badge(html: &mut Html, status: &str) {
    let class: String = status
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let _ = html.el("span", &format!("status {class}"), status);
}

fn run_link(html: &mut Html, run_id: &str) {
    html.push("<a class=\"mono\" href=\"/ui/runs/")
        .text(&path_part(run_id))
        .push("\">")
        .text(run_id)
        .push("</a>");
}

/// A run id or other outside value as one URL path segment.
pub fn path_part(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn who_may_decide(groups: &[String], started_by: &str, op: &str) -> String {
    if op == STEP_PAUSE {
        return format!("{started_by} or any approver");
    }
    let who = if groups.is_empty() {
        "any approver".to_owned()
    } else {
        format!("principals of {}", groups.join(", "))
    };
    format!("{who}, not {started_by}")
}

/// The approvals waiting, oldest first.
pub fn approvals(pending: &[PendingApproval], now: i64) -> String {
    let mut html = Html::new();
    html.push("<h1>Approvals waiting</h1>");
    if pending.is_empty() {
        html.push("<p class=\"note\" id=\"none-pending\">Nothing waits for a decision.</p>");
        return html.into_string();
    }
    html.push(
        "<table id=\"pending\"><tr><th>Waiting</th><th>Run</th><th>Playbook</th><th>Write</th>\
         <th>Reason</th><th class=\"num\">Approvals</th><th>Who may decide</th><th></th></tr>",
    );
    for p in pending {
        html.push("<tr><td class=\"num\">")
            .text(&age(p.created_at, now))
            .push("</td><td>");
        run_link(&mut html, &p.run_id);
        html.push(" #").text(&p.seq.to_string()).push("</td><td>");
        html.text(&p.playbook).push("</td><td>");
        if p.op == STEP_PAUSE {
            html.push("paused before step <code>")
                .text(&p.target)
                .push("</code>");
        } else {
            html.push("<span class=\"write\">")
                .text(&p.op)
                .push("</span> <code>")
                .text(&p.target)
                .push("</code>");
        }
        html.push("</td><td>").text(&p.reason).push("</td>");
        html.push("<td class=\"num\">")
            .text(&format!("{} of {}", p.approvals, p.quorum))
            .push("</td><td>")
            .text(&who_may_decide(&p.groups, &p.started_by, &p.op))
            .push("</td><td><a class=\"review\" href=\"/ui/runs/")
            .text(&path_part(&p.run_id))
            .push("/approvals/")
            .text(&p.seq.to_string())
            .push("\">Review plan</a></td></tr>");
    }
    html.push("</table>");
    html.into_string()
}

/// The runs, newest first.
pub fn runs(runs: &[RunRecord]) -> String {
    let mut html = Html::new();
    html.push("<h1>Runs</h1><table id=\"runs\"><tr><th>Run</th><th>Playbook</th><th>Mode</th><th>Status</th><th>Started by</th><th>Started</th></tr>");
    for run in runs {
        html.push("<tr><td>");
        run_link(&mut html, &run.id);
        html.push("</td><td>").text(&run.playbook).push("</td><td>");
        html.text(run.mode.as_str()).push("</td><td>");
        status_badge(&mut html, &run.status);
        html.push("</td><td>")
            .text(&run.started_by)
            .push("</td><td>")
            .text(&when(run.started_at))
            .push("</td></tr>");
    }
    html.push("</table>");
    html.into_string()
}

/// Whether a run may still change (the page keeps refreshing).
pub fn is_live(status: &str) -> bool {
    matches!(status, "running" | "parked" | "stale")
}

/// A run's page: what it is, its approvals, its outcome, its timeline.
pub fn run(
    run: &RunRecord,
    journal: &[StoredEntry],
    deciders: &BTreeMap<i64, Vec<String>>,
    requests: &[RequestView],
) -> String {
    let mut html = Html::new();
    html.push("<h1>")
        .text(&run.playbook)
        .push(" · run <span class=\"mono\">");
    html.text(&run.id).push("</span></h1><div class=\"card\">");
    let alertname = run.alert["name"].as_str().unwrap_or("?");
    html.push("<div>Mode <b>")
        .text(run.mode.as_str())
        .push("</b> · started by <b>")
        .text(&run.started_by)
        .push("</b> at ")
        .text(&when(run.started_at))
        .push(" for alert <b>")
        .text(alertname)
        .push("</b> · <a href=\"/ui/runs/")
        .text(&path_part(&run.id))
        .push("/audit\">Audit log</a></div></div>");
    if !requests.is_empty() {
        html.push("<h2>Approvals</h2><table id=\"requests\"><tr><th>#</th><th>Write</th><th>Status</th><th>Decisions</th><th></th></tr>");
        for r in requests {
            html.push("<tr><td class=\"num\">")
                .text(&r.seq.to_string())
                .push("</td><td><span class=\"write\">")
                .text(&r.op)
                .push("</span> <code>")
                .text(&r.target)
                .push("</code></td><td>");
            status_badge(&mut html, status_word(&r.status));
            html.push("</td><td>");
            for d in &r.decisions {
                html.text(&format!(
                    "{} {}: {}",
                    d.principal,
                    if d.approve { "approved" } else { "denied" },
                    d.reason
                ))
                .push("<br>");
            }
            html.push("</td><td><a href=\"/ui/runs/")
                .text(&path_part(&r.run_id))
                .push("/approvals/")
                .text(&r.seq.to_string())
                .push("\">Plan</a></td></tr>");
        }
        html.push("</table>");
    }
    html.push("<h2>Timeline</h2>");
    html.push(&timeline(run, journal, deciders));
    html.into_string()
}

fn status_word(status: &ApprovalStatus) -> &'static str {
    match status {
        ApprovalStatus::Pending { .. } => "pending",
        ApprovalStatus::Approved { .. } => "approved",
        ApprovalStatus::Denied { .. } => "denied",
    }
}

/// The timeline fragment: status, outcome and every call, grouped by
/// step. It refreshes itself while the run is live.
pub fn timeline(
    run: &RunRecord,
    journal: &[StoredEntry],
    deciders: &BTreeMap<i64, Vec<String>>,
) -> String {
    let mut html = Html::new();
    let live = is_live(&run.status);
    html.push("<div id=\"timeline\" data-live=\"")
        .push(if live { "true" } else { "false" })
        .push("\" data-src=\"/ui/runs/")
        .text(&path_part(&run.id))
        .push("/timeline\"><p>Status ");
    status_badge(&mut html, &run.status);
    if let Some(ended) = run.ended_at {
        html.push(" · ended ").text(&when(ended));
    } else if live {
        html.push(" <span class=\"note\">(this page follows the run)</span>");
    }
    html.push("</p>");
    if let Some(outcome) = &run.outcome {
        outcome_card(&mut html, outcome);
    }
    html.push("<table class=\"calls\"><tr><th class=\"num\">#</th><th>Call</th><th>Effect</th><th>Gate</th><th class=\"num\">Took</th><th>Asked</th><th>Answer</th></tr>");
    let mut step: Option<&str> = None;
    for stored in journal {
        let e = &stored.entry;
        if e.step.as_deref() != step || (step.is_none() && stored.entry.seq == 1) {
            step = e.step.as_deref();
            if let Some(name) = step {
                html.push("<tr class=\"step-row\"><td colspan=\"7\">▶ ")
                    .text(name)
                    .push("</td></tr>");
            }
        }
        let (asked, answer) = crate::report::describe_call(e);
        html.push("<tr><td class=\"num\">")
            .text(&e.seq.to_string())
            .push("</td><td class=\"mono\">")
            .text(&e.name())
            .push("</td><td>");
        match e.effect {
            Effect::Write => html.push("<span class=\"write\">WRITE</span>"),
            Effect::Read => html.push("<span class=\"read\">read</span>"),
        };
        html.push("</td><td>").text(e.gate.as_str());
        if let Some(by) = deciders.get(&(e.seq as i64)) {
            html.push("<br><small>by ")
                .text(&by.join(", "))
                .push("</small>");
        }
        html.push("</td><td class=\"num\">")
            .text(&took(e.duration_us))
            .push("</td><td class=\"mono\">")
            .text(&asked)
            .push("</td><td class=\"mono\">");
        if stored.phase == Phase::Intended {
            html.push("<b>intended, not yet confirmed</b>");
        } else {
            html.text(&answer);
        }
        html.push("</td></tr>");
    }
    if journal.is_empty() {
        html.push("<tr><td colspan=\"7\" class=\"note\">no calls yet</td></tr>");
    }
    html.push("</table></div>");
    html.into_string()
}

fn took(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.1} s", us as f64 / 1e6)
    } else if us >= 1000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else {
        format!("{us} µs")
    }
}

fn outcome_card(html: &mut Html, outcome: &Json) {
    html.push("<div class=\"card\" id=\"outcome\"><b>Outcome</b> ");
    if let Some(status) = outcome["status"].as_str() {
        status_badge(html, status);
    }
    for key in ["severity", "summary", "error", "reason", "message"] {
        if let Some(text) = outcome[key].as_str() {
            html.push(" · ").text(text);
        }
    }
    if let Some(fields) = outcome["fields"].as_object().filter(|f| !f.is_empty()) {
        html.push("<ul>");
        for (name, value) in fields {
            let value = match value {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            html.push("<li>")
                .text(&format!("{name} = {value}"))
                .push("</li>");
        }
        html.push("</ul>");
    }
    if let Some(todo) = outcome["checklist"].as_array().filter(|t| !t.is_empty()) {
        html.push("<div>Still to do by a human:</div><ul>");
        for t in todo {
            html.push("<li>")
                .text(t.as_str().unwrap_or(&t.to_string()))
                .push("</li>");
        }
        html.push("</ul>");
    }
    html.push("</div>");
}

/// What the page around a decision form needs to know of the viewer.
pub struct Deciding<'a> {
    pub principal: &'a str,
    pub may_approve: bool,
    pub csrf: &'a str,
}

/// The plan an approval rests on: the write (and what it would change),
/// the reads, the digest, the decisions so far, and the form.
pub fn plan(r: &RequestView, whole: Option<&RunPlan>, viewer: &Deciding<'_>, now: i64) -> String {
    let mut html = Html::new();
    let step_pause = r.op == STEP_PAUSE;
    html.push("<h1>")
        .text(&r.playbook)
        .push(" asks to ")
        .text(if step_pause { "go on into step" } else { &r.op })
        .push(" <code>")
        .text(&r.target)
        .push("</code></h1>");
    html.push("<div class=\"card\">Run ");
    run_link(&mut html, &r.run_id);
    html.push(" #")
        .text(&r.seq.to_string())
        .push(" · started by <b>")
        .text(&r.started_by)
        .push("</b> · waiting ")
        .text(&age(r.created_at, now))
        .push(" · ");
    status_badge(&mut html, status_word(&r.status));
    if let ApprovalStatus::Pending { approvals, quorum } = &r.status {
        html.text(&format!(" {approvals} of {quorum} approvals"));
    }
    html.push(" · who may decide: ")
        .text(&who_may_decide(&r.groups, &r.started_by, &r.op));
    if let Some(at) = r.expires_at {
        html.push(" · expires ").text(&when(at));
    }
    html.push("</div>");

    html.push("<h2>Reason</h2><p id=\"reason\">")
        .text(&r.reason)
        .push("</p>");
    if !step_pause {
        html.push("<h2>The write</h2>");
        write_card(&mut html, r);
    }
    html.push("<h2>What the run read and decided before asking</h2><pre id=\"reads\">")
        .text(if step_pause { &r.detail } else { &r.plan })
        .push("</pre>");
    html.push("<p>Plan digest <code id=\"digest\">")
        .text(&r.plan_digest)
        .push("</code> <span class=\"note\">(your decision is bound to it)</span></p>");
    if !r.decisions.is_empty() {
        html.push("<h2>Decisions</h2><ul id=\"decisions\">");
        for d in &r.decisions {
            html.push("<li>")
                .text(&format!(
                    "{} {} at {}: {}",
                    d.principal,
                    if d.approve { "approved" } else { "denied" },
                    when(d.at),
                    d.reason
                ))
                .push("</li>");
        }
        html.push("</ul>");
    }
    decide_form(&mut html, r, viewer);
    if let Some(whole) = whole.filter(|w| w.writes.len() > 1) {
        whole_plan(&mut html, r, whole, viewer);
    }
    html.into_string()
}

/// The writes the run would go on to make from this one (a dry run of the
/// rest), as one list, and the form that approves them as one.
fn whole_plan(html: &mut Html, r: &RequestView, whole: &RunPlan, viewer: &Deciding<'_>) {
    html.push("<h2>The whole plan from here</h2><div class=\"card\" id=\"whole-plan\"><p>A dry run of the rest of the run would make these ")
        .text(&whole.writes.len().to_string())
        .push(" writes, in this order. Approved as one, each passes while the run makes exactly these; the first difference asks again.</p><ol>");
    for w in &whole.writes {
        html.push("<li><span class=\"write\">")
            .text(&w.op)
            .push("</span> <code>")
            .text(&w.detail)
            .push("</code></li>");
    }
    html.push("</ol>");
    if let Some(ended) = whole.ended["error"].as_str() {
        html.push("<p class=\"note\">The dry run stopped early: ")
            .text(ended)
            .push("</p>");
    }
    html.push("<p>Whole-plan digest <code id=\"whole-digest\">")
        .text(&whole.digest)
        .push("</code></p>");
    for a in &whole.approvals {
        html.push("<p class=\"note\">")
            .text(&format!(
                "{} approved the whole plan: {}",
                a.principal, a.reason
            ))
            .push("</p>");
    }
    let may = viewer.may_approve
        && r.started_by != viewer.principal
        && matches!(r.status, ApprovalStatus::Pending { .. })
        && !whole
            .approvals
            .iter()
            .any(|a| a.principal == viewer.principal);
    if may {
        let _ = write!(
            html.raw(),
            "<form method=\"post\" action=\"/ui/runs/{}/plan\" class=\"decide\" id=\"approve-all\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <input type=\"hidden\" name=\"plan\" value=\"{}\">\
             <label for=\"why-all\">Reason (required)</label>\
             <textarea id=\"why-all\" name=\"reason\" required maxlength=\"2000\"></textarea>\
             <div class=\"buttons\"><button class=\"approve\" type=\"submit\">Approve all {} writes</button></div></form>",
            esc(&path_part(&r.run_id)),
            esc(viewer.csrf),
            esc(&whole.digest),
            whole.writes.len()
        );
    }
    html.push("</div>");
}

fn decide_form(html: &mut Html, r: &RequestView, viewer: &Deciding<'_>) {
    if !matches!(r.status, ApprovalStatus::Pending { .. }) {
        html.push("<p class=\"note\" id=\"settled\">This request is settled.</p>");
        return;
    }
    if !viewer.may_approve {
        html.push("<p class=\"note\" id=\"cannot-decide\">Your role may not decide approvals.</p>");
        return;
    }
    if r.started_by == viewer.principal && r.op != STEP_PAUSE {
        html.push("<p class=\"note\" id=\"cannot-decide\">You started this run: another approver must decide its writes.</p>");
        return;
    }
    if r.decisions.iter().any(|d| d.principal == viewer.principal) {
        html.push("<p class=\"note\" id=\"cannot-decide\">You decided this request already; it waits for others.</p>");
        return;
    }
    let _ = write!(
        html.raw(),
        "<h2>Your decision</h2><form method=\"post\" action=\"/ui/runs/{}/approvals/{}\" class=\"decide\" id=\"decide\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"plan\" value=\"{}\">\
         <label for=\"why\">Reason (required, goes to the audit log)</label>\
         <textarea id=\"why\" name=\"reason\" required maxlength=\"2000\"></textarea>\
         <div class=\"buttons\"><button class=\"approve\" type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>\
         <button class=\"deny\" type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></div></form>",
        esc(&path_part(&r.run_id)),
        r.seq,
        esc(viewer.csrf),
        esc(&r.plan_digest)
    );
}

/// The write: its arguments, and what its dry run said it would change
/// when the run parked (a flag's old → new value, rows a statement would
/// change).
fn write_card(html: &mut Html, r: &RequestView) {
    let args: Json = serde_json::from_str(&r.detail).unwrap_or(Json::String(r.detail.clone()));
    html.push("<div class=\"card\" id=\"write\">");
    let preview = r.preview.as_ref();
    let previewed = r
        .previewed_at
        .map(|at| format!(" (dry run at {})", when(at)))
        .unwrap_or_default();
    let ok = preview
        .and_then(|p| p["ok"].as_str())
        .and_then(|t| serde_json::from_str::<Json>(t).ok());
    match r.op.as_str() {
        "flags.set" => {
            html.push("<div class=\"diff\" id=\"diff\"><div>flag</div><div><code>")
                .text(args["name"].as_str().unwrap_or(&r.target))
                .push("</code></div><div>now")
                .text(&previewed)
                .push("</div><div class=\"old\"><code>");
            match &ok {
                Some(Json::String(old)) => html.text(old),
                Some(Json::Null) => html.push("(unset)"),
                _ => html.push("(not known)"),
            };
            html.push("</code></div><div>after</div><div class=\"new\"><code>")
                .text(args["value"].as_str().unwrap_or("?"))
                .push("</code></div></div>");
        }
        "db.execute" => {
            html.push(
                "<div class=\"diff\" id=\"diff\"><div>rows it changes</div><div class=\"new\">",
            );
            match &ok {
                Some(Json::Number(n)) => html.text(&format!("{n}{previewed}")),
                _ => html.push("(not known)"),
            };
            html.push("</div></div>");
        }
        _ => {}
    }
    if let Some(error) = preview.and_then(|p| p["error"].as_str()) {
        html.push("<p class=\"error\">The dry run of this write failed: ")
            .text(error)
            .push("</p>");
    }
    html.push("<table class=\"args\">");
    if let Json::Object(map) = &args {
        for (key, value) in map {
            html.push("<tr><th>").text(key).push("</th><td><pre>");
            match value {
                Json::String(s) => html.text(s),
                other => html.text(&serde_json::to_string_pretty(other).unwrap_or_default()),
            };
            html.push("</pre></td></tr>");
        }
    } else {
        html.push("<tr><td><pre>")
            .text(&r.detail)
            .push("</pre></td></tr>");
    }
    html.push("</table></div>");
}

/// A run's audit records.
pub fn audit(run_id: &str, records: &[AuditRecord]) -> String {
    let mut html = Html::new();
    html.push("<h1>Audit log of run <span class=\"mono\">")
        .text(run_id)
        .push("</span></h1>");
    html.push("<p><a href=\"/ui/runs/")
        .text(&path_part(run_id))
        .push("\">Back to the run</a> · <span class=\"note\">each record is chained to the one before (<code>stepgate audit verify</code> checks the whole chain)</span></p>");
    html.push("<table id=\"audit\"><tr><th class=\"num\">#</th><th>At</th><th>Record</th><th>Hash</th></tr>");
    for r in records {
        html.push("<tr><td class=\"num\">")
            .text(&r.seq.to_string())
            .push("</td><td>")
            .text(&when(r.at))
            .push("</td><td><pre>")
            .text(&serde_json::to_string_pretty(&r.record).unwrap_or_default())
            .push("</pre></td><td class=\"mono\">")
            .text(&r.hash.chars().take(16).collect::<String>())
            .push("…</td></tr>");
    }
    if records.is_empty() {
        html.push(
            "<tr><td colspan=\"4\" class=\"note\">nothing audited for this run yet</td></tr>",
        );
    }
    html.push("</table>");
    html.into_string()
}

/// The sign-in page.
pub fn login(login_csrf: &str, error: Option<&str>) -> String {
    let mut html = Html::new();
    html.push("<h1>Sign in</h1>");
    if let Some(error) = error {
        html.push("<p class=\"error\" id=\"error\">")
            .text(error)
            .push("</p>");
    }
    let _ = write!(
        html.raw(),
        "<form method=\"post\" action=\"/ui/login\" class=\"card\" id=\"login\">\
         <input type=\"hidden\" name=\"login_csrf\" value=\"{}\">\
         <p><label for=\"token\">Your principal's token (<code>stepgate principal add</code> printed it)</label><br>\
         <input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"off\" required></p>\
         <button type=\"submit\">Sign in</button></form>",
        esc(login_csrf)
    );
    html.into_string()
}

/// A refusal or failure, said plainly, with the way back.
pub fn problem(message: &str, back: Option<&str>) -> String {
    let mut html = Html::new();
    html.push("<p class=\"error\" id=\"error\">")
        .text(message)
        .push("</p>");
    if let Some(back) = back {
        html.push("<p><a href=\"")
            .text(back)
            .push("\">Back</a></p>");
    }
    html.into_string()
}
